"""End to end through a real (virtual) microphone: PulseAudio null sink + remap source, read by
PortAudio's 'pulse' device in `main.py --headless` running as a real subprocess, fed with real
English speech played by paplay (six shared CREMA-D clips, one per emotion and actor, 1.5 s of
silence between), stopped with SIGINT. Skips, with the reason, only where such a device cannot be
created or the shared CREMA-D audio is absent.
"""
from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine_support import REPO_ROOT, make_bundle, offline_utterances
from pulse_support import VirtualMic
from realtime.timeline import load_timeline

GAP_S = 1.5


@pytest.fixture(scope="module")
def virtual_mic():
    mic = VirtualMic()
    try:
        reason = mic.start()
        if reason:
            pytest.skip(reason)
        listed = subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), "--list-devices"], cwd=REPO_ROOT,
                                env=mic.env, capture_output=True, text=True, timeout=60)
        if listed.returncode != 0 or "pulse" not in listed.stdout:
            pytest.skip(f"PortAudio shows no 'pulse' input (is libasound2-plugins installed?): "
                        f"{(listed.stdout + listed.stderr).strip()[-300:]}")
        yield mic
    finally:
        mic.stop()


def crema_clips(shared_data: Path) -> list[Path]:
    """The first clip (by name) of each emotion, each from a different actor: six English sentences."""
    manifest = shared_data / "crema-d" / "flac_manifest.csv"
    if not manifest.is_file():
        pytest.skip(f"shared CREMA-D audio not found at {manifest.parent}")
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: r["file"])
    picked: list[dict] = []
    for emotion in ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD"):
        picked.append(next(r for r in rows if r["emotion"] == emotion
                           and r["actor"] not in {p["actor"] for p in picked}))
    return [manifest.parent / "AudioFLAC" / r["file"] for r in picked]


@pytest.fixture(scope="module")
def played_speech(shared_data, tmp_path_factory) -> tuple[Path, int]:
    """(WAV at 16 kHz, number of clips): six CREMA-D clips separated by GAP_S of silence."""
    clips = crema_clips(shared_data)
    gap = np.zeros(int(GAP_S * 16_000), np.float32)
    parts = [gap]
    for path in clips:
        audio, rate = sf.read(str(path), dtype="float32")
        assert rate == 16_000, path
        parts += [audio, gap]
    parts.append(gap)
    out = tmp_path_factory.mktemp("played") / "speech.wav"
    sf.write(str(out), np.concatenate(parts), 16_000, subtype="PCM_16")
    return out, len(clips)


def _timeline_has(path: Path, fragment: str) -> bool:
    return path.exists() and fragment in path.read_text()


def test_monitor_hears_speech_through_a_virtual_microphone(virtual_mic, played_speech, tmp_path):
    wav, spoken = played_speech
    audio, rate = sf.read(str(wav), dtype="float32")
    offline = len(offline_utterances(audio))
    bundle = make_bundle(tmp_path / "bundle")
    out = tmp_path / "timeline.jsonl"
    env = {**virtual_mic.env, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "main.py"), "--headless", "--device", "pulse",
                                "--model", str(bundle), "--out", str(out)], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None and not _timeline_has(out, '"state":"running"'):
            time.sleep(0.2)
        assert process.poll() is None, process.communicate()[1]
        assert _timeline_has(out, '"state":"running"'), "the monitor never started listening"
        virtual_mic.play(wav, timeout_s=120)
        # The last item ends GAP_S * 2 before the end of the file: hangover has passed; let the
        # worker finish the final utterance before stopping.
        settle = time.monotonic() + 10
        while time.monotonic() < settle and len(load_timeline(out).utterances()) < offline:
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr and "stopped by signal" in stderr, stderr
    session = load_timeline(out)
    assert session.header["input_kind"] == "microphone"
    assert "pulse" in session.header["input"], session.header["input"]
    assert session.complete and session.torn_lines == 0
    assert out.read_text().splitlines()[-1].startswith('{"type":"summary"')
    utterances = session.utterances()
    # One prediction per played clip: the offline segmenter on the same file agrees.
    assert offline == spoken
    assert len(utterances) == spoken, [(u.start_s, u.end_s) for u in utterances]
    assert session.summary["utterances"] == len(utterances)
    assert session.summary["dropped_utterances"] == 0 and session.summary["dropped_audio_blocks"] == 0
    starts = [u.start_s for u in utterances]
    assert starts == sorted(starts)
    assert all(0.3 <= u.end_s - u.start_s <= 5.0 for u in utterances)
    # Gaps between utterances are the played silences (1.5 s), not drop-outs.
    assert all(b.start_s - a.end_s >= 0.8 for a, b in zip(utterances, utterances[1:]))
    print(f"virtual microphone: {spoken} CREMA-D clips played, {len(utterances)} utterances heard "
          f"(offline segmenter on the same file: {offline})")
    printed = [line for line in stdout.splitlines() if " s  " in line]
    assert len(printed) == len(utterances)
