"""Faults a user can throw at `main.py --headless`, each through the real program (a subprocess).

Inputs: damaged files, odd rates and channel counts, NaN/inf and clipped samples, a 10-minute
file; models: broken bundle folders, a broken --primary. Outputs are in tests/test_reliability_outputs.py,
records (existing --out, export, cut-short input) in tests/test_records.py. User mistakes must give
exit 2 and one "error:" line, never a traceback. The SIGKILL case here only adds what
tests/test_crash.py does not cover (CSV export and SIGTERM).
Speech is real (EmoDB clips joined with silence, resampled/duplicated with soxr/numpy).
"""
from __future__ import annotations

import json
import math
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from engine_support import EMODB_RATE_HZ, REPO_ROOT, emodb_clips, make_bundle, write_speech_file
from reliability_support import assert_clean_run, assert_user_error, child_env, main_cmd, run_main, run_many
from realtime.source import END_OF_STREAM
from realtime.sources import FileSource
from realtime.timeline import load_timeline

CLIPS, LEAD_S, CLIP_S, GAP_S = 3, 0.5, 2.0, 1.5


def clip_spans(clips: int = CLIPS, lead_s: float = LEAD_S, gap_s: float = GAP_S) -> list[tuple[float, float]]:
    """Where write_speech_file put each 2.0 s clip, in seconds."""
    return [(lead_s + i * (CLIP_S + gap_s), lead_s + i * (CLIP_S + gap_s) + CLIP_S) for i in range(clips)]


def assert_one_utterance_per_clip(session, spans) -> None:
    """Each utterance lies inside one clip's span (plus VAD pre-roll and hangover), one per clip."""
    utterances = session.utterances()
    assert len(utterances) == len(spans), [(u.start_s, u.end_s) for u in utterances]
    for u, (start, end) in zip(utterances, spans):
        assert start - 0.3 <= u.start_s < u.end_s <= end + 0.7, (u.start_s, u.end_s, start, end)
        assert all(math.isfinite(v) for v in u.probs.values())
        assert abs(sum(u.probs.values()) - 1.0) < 1e-3


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def speech(emodb_dir, tmp_path_factory) -> tuple[np.ndarray, Path]:
    """3 EmoDB clips with 1.5 s gaps: (float32 [n] at 22,050 Hz, the WAV file)."""
    path = write_speech_file(emodb_dir, tmp_path_factory.mktemp("speech") / "talk.wav", CLIPS, gap_s=GAP_S,
                             lead_s=LEAD_S)
    audio, rate = sf.read(str(path), dtype="float32")
    assert rate == EMODB_RATE_HZ
    return audio, path


# ---------------------------------------------------------------- damaged input files
def test_unusable_input_files_are_one_line_errors(speech, tmp_path):
    raw = speech[1].read_bytes()
    cases = {
        "empty.wav": (b"", "audio file is empty (0 bytes)"),
        "cut-in-header.wav": (raw[:30], "cannot read cut-in-header.wav as audio"),
        "header-only.wav": (raw[:44], "header-only.wav contains no audio samples"),
        "text.wav": (b"not audio at all\n" * 50, "cannot read text.wav as audio"),
        "lfs-pointer.wav": (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 1\n",
                            "cannot read lfs-pointer.wav as audio"),
    }
    for name, (content, fragment) in cases.items():
        (tmp_path / name).write_bytes(content)
        # These fail before any model loads: the bundle is never touched (no model needed).
        result = run_main("--headless", "--input", tmp_path / name, "--out", tmp_path / "s.jsonl")
        assert_user_error(result, fragment)
        assert not (tmp_path / "s.jsonl").exists(), "no timeline for a session that never started"
    assert_user_error(run_main("--headless", "--input", tmp_path, "--out", tmp_path / "s.jsonl"),
                      "not a regular file")


RATE_CASES = [(8_000, 1), (22_050, 1), (44_100, 2), (48_000, 6), (96_000, 2)]


def _write_damaged(audio: np.ndarray, path: Path) -> Path:
    """NaN and +-inf bursts in the 1st clip, the 2nd clip 40x beyond full scale (float WAV keeps them)."""
    audio = audio.copy()
    start = int((LEAD_S + 0.5) * EMODB_RATE_HZ)
    audio[start:start + 200] = np.nan
    audio[start + 5000:start + 5100] = np.inf
    audio[start + 9000:start + 9010] = -np.inf
    second = int((LEAD_S + CLIP_S + GAP_S) * EMODB_RATE_HZ)
    audio[second:second + 2 * EMODB_RATE_HZ] *= 40.0
    sf.write(str(path), audio, EMODB_RATE_HZ, subtype="FLOAT")
    return path


def _write_rate_variant(audio: np.ndarray, path: Path, rate_hz: int, channels: int) -> Path:
    """Speech on the first and last channel (a phone near one mic of a 5.1 recorder), noise elsewhere."""
    mono = soxr.resample(audio, EMODB_RATE_HZ, rate_hz).astype(np.float32)
    rng = np.random.default_rng(3)
    frames = np.stack([mono if c in (0, channels - 1) else 1e-3 * rng.standard_normal(len(mono)).astype(np.float32)
                       for c in range(channels)], axis=1)
    sf.write(str(path), frames, rate_hz, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def file_sessions(bundle, speech, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path, Path]]:
    """Every odd-but-usable file replayed by main.py (concurrently, to keep the suite short):
    name -> (result, timeline path, audio path)."""
    folder = tmp_path_factory.mktemp("odd-files")
    raw = speech[1].read_bytes()
    files = {"truncated": folder / "truncated.wav", "damaged": _write_damaged(speech[0], folder / "damaged.wav")}
    files["truncated"].write_bytes(raw[: len(raw) * 2 // 5])          # header still claims the full 12.5 s
    for rate_hz, channels in RATE_CASES:
        files[f"{rate_hz}-{channels}"] = _write_rate_variant(speech[0], folder / f"speech-{rate_hz}-{channels}ch.flac",
                                                            rate_hz, channels)
    outs = {name: folder / f"{name}.jsonl" for name in files}
    results = run_many([("--headless", "--input", files[name], "--pace", "fast", "--model", bundle,
                         "--out", outs[name]) for name in files])
    return {name: (result, outs[name], files[name]) for name, result in zip(files, results)}


def test_truncated_wav_plays_the_part_that_is_there(file_sessions):
    result, out, path = file_sessions["truncated"]
    assert_clean_run(result)
    kept_s = (path.stat().st_size - 44) / 2 / EMODB_RATE_HZ
    session = load_timeline(out)
    assert session.complete
    whole_clips = [span for span in clip_spans() if span[1] <= kept_s]
    assert len(session.utterances()) in (len(whole_clips), len(whole_clips) + 1)   # +1: the clip cut in half
    assert session.utterances()[-1].end_s <= kept_s + 0.1
    warnings = [line for line in result.stderr.splitlines() if line.startswith("[warning]")]
    assert len(warnings) == 1 and "header declares (truncated?)" in warnings[0], result.stderr


def test_nan_inf_and_clipped_samples_are_repaired(file_sessions):
    result, out, path = file_sessions["damaged"]
    source = FileSource(path, pace="fast")
    q: queue.Queue = queue.Queue(maxsize=10_000)
    source.start(q, threading.Event())
    while q.get(timeout=30) is not END_OF_STREAM:
        pass
    source.stop(timeout_s=5)
    assert source.nonfinite_samples >= 310 * 16_000 // EMODB_RATE_HZ     # counted at 16 kHz
    assert source.clipped_samples > 16_000                              # most of a 2 s clip
    assert "NaN/inf samples were replaced" in source.warning and "clipped" in source.warning
    assert_clean_run(result)
    assert f"[warning] {path.name}: {source.warning}" in result.stderr
    session = load_timeline(out)
    assert session.complete
    assert_one_utterance_per_clip(session, clip_spans())


@pytest.mark.parametrize("rate_hz,channels", RATE_CASES)
def test_any_rate_and_channel_count(file_sessions, rate_hz, channels):
    result, out, _ = file_sessions[f"{rate_hz}-{channels}"]
    assert_clean_run(result)
    session = load_timeline(out)
    assert f"{rate_hz} Hz, {channels} ch" in session.header["input"]
    assert "[warning]" not in result.stderr    # a healthy file is not "repaired"
    assert session.complete and session.summary["dropped_utterances"] == 0
    assert_one_utterance_per_clip(session, clip_spans())


def test_ten_minute_file_streams_in_bounded_memory(bundle, emodb_dir, tmp_path):
    """10 min at 48 kHz stereo is 230 MB as float32: loading it whole would show as RSS growth."""
    clips = emodb_clips(emodb_dir, 200)
    parts = []
    for path in clips:
        audio, _ = sf.read(str(path), dtype="float32")
        parts += [audio, np.zeros(EMODB_RATE_HZ, np.float32)]      # 2.0 s clip + 1.0 s gap
    mono = soxr.resample(np.concatenate(parts), EMODB_RATE_HZ, 48_000).astype(np.float32)
    long_file = tmp_path / "ten-minutes.flac"
    sf.write(str(long_file), np.stack([mono, mono], axis=1), 48_000, subtype="PCM_16")
    assert sf.info(str(long_file)).duration >= 599
    out = tmp_path / "s.jsonl"
    process = subprocess.Popen(main_cmd("--headless", "--input", long_file, "--pace", "fast", "--model", bundle,
                                        "--out", out, "--no-partials"),
                               cwd=REPO_ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    # (utterance lines in the timeline so far, RSS bytes) while the session runs; sampling stops at
    # the summary line: interpreter shutdown (torch finalisers) briefly adds ~100 MB, not the session.
    samples: list[tuple[int, int]] = []
    status = Path(f"/proc/{process.pid}/status")
    deadline = time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline:
        try:
            rss_kb = next(int(line.split()[1]) for line in status.read_text().splitlines()
                          if line.startswith("VmRSS:"))
            text = out.read_text() if out.exists() else ""
        except (OSError, StopIteration, ValueError):
            break   # the process is exiting
        if '"type":"summary"' in text:
            break
        done = text.count('"kind":"utterance"')
        samples.append((done, rss_kb * 1024))
        time.sleep(0.25)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0 and "Traceback" not in stderr, stderr
    session = load_timeline(out)
    assert session.complete and session.summary["dropped_utterances"] == 0
    # The VAD may split a clip at a long inner pause; allow 3% either way, never a lost stretch.
    assert abs(len(session.utterances()) - len(clips)) <= 0.03 * len(clips), len(session.utterances())
    assert session.utterances()[-1].end_s > 590
    streaming = [rss for done, rss in samples if done >= 10]
    assert len(streaming) >= 5, f"too few RSS samples while streaming: {samples[-3:]}"
    growth_mb = (max(streaming) - streaming[0]) / 1e6
    print(f"10-minute 48 kHz stereo FLAC: {len(session.utterances())} utterances for {len(clips)} clips, "
          f"RSS {streaming[0] / 1e6:.0f} MB -> peak {max(streaming) / 1e6:.0f} MB while streaming")
    assert growth_mb < 60, f"RSS grew {growth_mb:.0f} MB while streaming a 10-minute file"


# ---------------------------------------------------------------- broken models
def _bundle_variant(bundle: Path, target: Path, edit) -> Path:
    import shutil

    shutil.copytree(bundle, target)
    edit(target)
    return target


def _edit_json(key_path: tuple[str, ...], value):
    def edit(folder: Path) -> None:
        meta = json.loads((folder / "bundle.json").read_text())
        node = meta
        for key in key_path[:-1]:
            node = node[key]
        node[key_path[-1]] = value
        (folder / "bundle.json").write_text(json.dumps(meta))
    return edit


def _truncate_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


BROKEN_BUNDLES = {
    "bad-json": (lambda f: (f / "bundle.json").write_text('{"format_version": 1, "kind": '), "is not valid JSON"),
    "truncated-weights": (_truncate_weights, "is corrupt or truncated"),
    "no-weights": (lambda f: (f / "model.safetensors").unlink(), "missing its weights file"),
    "wrong-shapes": (_edit_json(("model", "args", "d_model"), 96), "do not match the architecture"),
    "label-map": (_edit_json(("labels",), ["anger", "boredom", "fear", "happy", "neutral", "sad"]),
                  "does not match VED's classes"),
    "unknown-model": (_edit_json(("model", "name"), "conformer-v9"), "unknown model 'conformer-v9'"),
}


def _is_torch_bundle(bundle: Path) -> bool:
    return (bundle / "bundle.json").is_file() and (bundle / "model.safetensors").is_file()


def test_broken_bundles_are_one_line_errors(bundle, speech, tmp_path):
    if not _is_torch_bundle(bundle):
        pytest.skip(f"{bundle} is not a single torch bundle; the damage recipes here assume one")
    cases = {"missing": (tmp_path / "missing", "model bundle not found")}
    for name, (edit, fragment) in BROKEN_BUNDLES.items():
        cases[name] = (_bundle_variant(bundle, tmp_path / name, edit), fragment)
    results = run_many([("--headless", "--input", speech[1], "--model", folder, "--out", tmp_path / f"{name}.jsonl")
                        for name, (folder, _) in cases.items()])
    for (name, (_, fragment)), result in zip(cases.items(), results):
        assert_user_error(result, fragment)
        assert not (tmp_path / f"{name}.jsonl").exists(), name


def test_broken_primary_falls_back_to_the_embedded_model(bundle, speech, tmp_path):
    if not _is_torch_bundle(bundle):
        pytest.skip(f"{bundle} is not a single torch bundle; the damage recipes here assume one")
    ensemble = tmp_path / "broken-ensemble"
    _bundle_variant(bundle, ensemble / "fold0", _truncate_weights)
    (ensemble / "ensemble.json").write_text(json.dumps(
        {"format_version": 1, "kind": "ensemble", "members": ["fold0"], "shared_backbone": False,
         "backbone_dir": None}))
    primaries = (ensemble, tmp_path / "no-such-ensemble")
    results = run_many([("--headless", "--input", speech[1], "--pace", "fast", "--model", bundle,
                         "--primary", primary, "--out", tmp_path / f"{primary.name}.jsonl") for primary in primaries])
    for primary, result in zip(primaries, results):
        out = tmp_path / f"{primary.name}.jsonl"
        assert_clean_run(result)
        notes = [line for line in result.stderr.splitlines() if line.startswith("[error] primary model")]
        assert len(notes) == 1 and "running on fallback" in notes[0], result.stderr
        session = load_timeline(out)
        assert session.complete and session.summary["fallback_share"] == 1.0
        fallback_name = session.header["model"]["name"]
        assert {u.model for u in session.utterances()} == {fallback_name}
        assert_one_utterance_per_clip(session, clip_spans())


# ---------------------------------------------------------------- killed sessions
def test_killed_session_exports_and_sigterm_stops_cleanly(bundle, emodb_dir, tmp_path):
    """tests/test_crash.py covers SIGKILL reload and SIGINT; this adds CSV export of a killed
    session and SIGTERM (what systemd or `kill` sends) as a clean stop."""
    audio = write_speech_file(emodb_dir, tmp_path / "long.wav", 12, gap_s=1.0)
    outs = {sig: tmp_path / f"{sig.name}.jsonl" for sig in (signal.SIGKILL, signal.SIGTERM)}
    processes = {sig: subprocess.Popen(main_cmd("--headless", "--input", audio, "--pace", "realtime", "--model",
                                                bundle, "--out", out), cwd=REPO_ROOT, env=child_env(),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for sig, out in outs.items()}
    results = {}
    for sig, process in processes.items():
        out = outs[sig]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (not out.exists() or out.read_text().count('"kind":"utterance"') < 2):
            time.sleep(0.2)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=60)
        results[sig] = (process.returncode, stderr, out)
    code, _, killed = results[signal.SIGKILL]
    assert code == -signal.SIGKILL
    exported = run_main("--export-csv", killed, tmp_path / "killed.csv")
    assert exported.returncode == 0 and "Traceback" not in exported.stderr
    assert "did not end cleanly" in exported.stdout
    rows = (tmp_path / "killed.csv").read_text().splitlines()
    assert len(rows) - 1 == len(load_timeline(killed).predictions) >= 2
    code, stderr, stopped = results[signal.SIGTERM]
    assert code == 0 and "Traceback" not in stderr and "stopped by signal" in stderr, stderr
    session = load_timeline(stopped)
    assert session.complete and session.torn_lines == 0 and len(session.utterances()) >= 2
