"""The benchmark front door (`python -m bench`) and the soak's building blocks, at small sizes."""
from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading

import numpy as np
import pytest

import bench.__main__ as front_door
from bench.report import MISS, NOT_MEASURED, PASS, REPORTED, TargetCheck
from bench.soak import LoopingSpeechSource, SoakConfig, rss_growth, timeline_reload
from engine_support import REPO_ROOT
from realtime.source import END_OF_STREAM


def test_looping_source_streams_exactly_the_requested_audio():
    rng = np.random.default_rng(0)
    clips = [(0.3 * rng.standard_normal(16_000)).astype(np.float32),
             (0.3 * rng.standard_normal(24_000)).astype(np.float32)]
    source = LoopingSpeechSource(clips, total_s=20.0, pace="fast", block_ms=100)
    q: queue.Queue = queue.Queue(maxsize=4)   # small: the fast source must wait, never drop
    source.start(q, threading.Event())
    blocks = []
    while (item := q.get(timeout=10)) is not END_OF_STREAM:
        blocks.append(item)
    source.stop()
    source.stop()
    assert sum(len(b.samples) for b in blocks) == 20 * 16_000
    assert np.allclose([b.start_s for b in blocks], [i * 0.1 for i in range(len(blocks))])
    assert source.dropped_blocks == 0
    # Each clip is 1-1.5 s after a 0.6-2.0 s gap: 20 s holds between 5 and 10 whole clips.
    assert 5 <= source.clips_completed <= 10
    loud = [np.abs(b.samples).max() > 3_000 for b in blocks]
    assert 0.2 < np.mean(loud) < 0.8, "speech and silence should alternate"


def test_rss_growth_compares_first_and_last_windows():
    cfg = SoakConfig(minutes=10, warmup_audio_s=60, window_audio_s=120)
    samples = [{"audio_s": float(t), "rss_mb": 500.0 + (40.0 if t >= 480 else 0.0) + (300.0 if t < 30 else 0.0)}
               for t in range(0, 601, 5)]
    result = rss_growth(samples, 600.0, cfg)
    assert result["rss_growth_mb"] == 40.0          # the warm-up spike is ignored
    assert rss_growth([], 600.0, cfg)["rss_growth_mb"] is None


def test_timeline_reload_counts_what_it_wrote(tmp_path):
    result = timeline_reload(hours=0.05, partials_per_utterance=2, folder=tmp_path)
    assert result["utterances"] == 180 and result["partials"] == 360
    assert result["shown_in_review"] == 180          # every partial superseded by its utterance
    assert 0 < result["reload_s"] < 30


def test_target_verdicts():
    assert TargetCheck("p95", 42.0, "<=", 50, "ms").verdict == PASS
    assert TargetCheck("p95", 51.0, "<=", 50, "ms").verdict == MISS
    assert TargetCheck("drops", 0, "==", 0).verdict == PASS
    assert TargetCheck("drops", None, "==", 0).verdict == NOT_MEASURED
    assert TargetCheck("cost", 2.0, "report", 0).verdict == REPORTED
    with pytest.raises(ValueError, match="comparison"):
        TargetCheck("x", 1.0, "~", 1)


def test_unavailable_and_failing_benchmarks_do_not_abort(monkeypatch, tmp_path):
    ctx = front_door.BenchContext(quick=True, threads=1, data_dir=tmp_path, data_note="", scratch=tmp_path,
                                  soak_minutes=1, soak_pace="fast")
    missing = front_door.run_one("train_cv", ctx)  # tmp_path holds no shared corpus
    assert missing.status == "not available" and "emodb" in missing.error

    def broken(ctx, module):
        raise RuntimeError("model exploded\nsecond line")

    monkeypatch.setitem(front_door.RUNNERS, "vad_cost", broken)
    failed = front_door.run_one("vad_cost", ctx)
    assert failed.status == "error" and failed.error.startswith("RuntimeError: model exploded second line")
    assert "\n" not in failed.error
    report = front_door.render([missing, failed], front_door.machine_info(1), ctx, "none")
    assert "not available: needs the shared copy of the default model's corpus" in report
    assert "error: RuntimeError" in report


@pytest.mark.parametrize("name", ["crema_replay", "speculation", "pipeline"])
def test_benchmarks_with_a_fallback_get_the_fast_model_when_run_alone(monkeypatch, tmp_path, name):
    """`--only crema_replay` alone once ran the primary with no fallback folder."""
    seen = {}

    def record(ctx, module):
        seen["model_dir"] = ctx.model_dir
        return front_door.BenchOutcome(name, "ok", table="", checks=[])

    monkeypatch.setitem(front_door.RUNNERS, name, record)
    monkeypatch.setattr(front_door, "find_model", lambda scratch: ("/fast/model", "fast model under test"))
    monkeypatch.setattr(front_door, "find_data", lambda scratch: (tmp_path, "no audio"))
    assert front_door.main(["--only", name, "--out", str(tmp_path / "r.json")]) == 0
    assert seen["model_dir"] == "/fast/model"


def test_front_door_runs_one_benchmark_and_writes_json(tmp_path):
    out = tmp_path / "results.json"
    result = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "vad_cost", "--out", str(out)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "## Targets" in result.stdout and "VAD + resampling CPU per second of audio" in result.stdout
    assert "Machine:" in result.stdout and "Audio:" in result.stdout
    payload = json.loads(out.read_text())
    assert payload["benchmarks"]["vad_cost"]["status"] == "ok"
    assert payload["machine"]["usable_cores"] >= 1 and payload["machine"]["cpu"]
    rows = payload["benchmarks"]["vad_cost"]["result"]["rows"]
    assert all(row["ms_per_audio_s"] > 0 for row in rows)
    bad = subprocess.run([sys.executable, "-m", "bench", "--only", "vad_cost", "--out", "/proc/x/y.json"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "cannot write results" in bad.stderr


def test_train_cv_bench_replays_the_recorded_recipe_as_cv(tmp_path):
    from bench import train_cv

    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps({"training": {"command": (
        "python -m train fit --dataset emodb --data ../shared/data/emodb --model doublestream-v4 "
        "--model-arg d_model=64 --epochs 30 --cache-dir /tmp/c --threads 1 --resume --out models/default")}}))
    fit_args = train_cv.recorded_command(tmp_path)
    argv = train_cv.cv_argv(fit_args, tmp_path / "data", tmp_path / "out", tmp_path / "cache", 2, epochs=2)
    assert argv[1:4] == ["-m", "train", "cv"]
    assert argv[4:12] == ["--dataset", "emodb", "--model", "doublestream-v4", "--model-arg", "d_model=64",
                          "--epochs", "30"]
    assert argv[12:] == ["--epochs", "2", "--data", str(tmp_path / "data" / "emodb"), "--out", str(tmp_path / "out"),
                         "--cache-dir", str(tmp_path / "cache"), "--threads", "2"]
    assert train_cv.recorded_command()[:1] == ["--dataset"]     # the shipped default records its recipe
    bundle.write_text(json.dumps({"training": {"command": (
        "python -m train fit --dataset crema-d --data ../shared/data/crema-d/AudioFLAC --manifest m.csv "
        "--model whisper-ultimate --augment microphone --out models/default")}}))
    argv = train_cv.cv_argv(train_cv.recorded_command(tmp_path), tmp_path, tmp_path / "out", tmp_path / "c", 2)
    assert argv[4:14] == ["--dataset", "crema-d", "--model", "whisper-ultimate", "--augment", "microphone",
                          "--manifest", str(tmp_path / "crema-d/flac_manifest.csv"), "--folds", "5"]
    assert argv[14:16] == ["--data", str(tmp_path / "crema-d/AudioFLAC")]
    bundle.write_text(json.dumps({"training": {"command": "python -m train fit --dataset tess --data x --model cnn"}}))
    with pytest.raises(ValueError, match="shared copies of emodb, crema-d"):
        train_cv.cv_argv(train_cv.recorded_command(tmp_path), tmp_path, tmp_path / "out", tmp_path / "c", 2)
    bundle.write_text(json.dumps({"training": {}}))
    with pytest.raises(FileNotFoundError, match="records no training command"):
        train_cv.recorded_command(tmp_path)


def test_crema_replay_file_is_16k_and_reproducible(shared_data, tmp_path):
    import soundfile as sf

    from bench.pipeline import write_replay_file

    if not (shared_data / "crema-d" / "AudioFLAC").is_dir():
        pytest.skip("shared CREMA-D audio not found")
    wav = tmp_path / "replay.wav"
    clips = write_replay_file(wav, 30.0, shared_data, seed=1, corpus="crema-d")
    info = sf.info(str(wav))
    assert info.samplerate == 16_000 and abs(info.duration - 30.0) < 0.01
    assert 5 <= clips <= 15  # 2-3 s clips with 0.8-2 s gaps
    assert write_replay_file(tmp_path / "again.wav", 30.0, shared_data, seed=1, corpus="crema-d") == clips
    assert sf.read(str(wav))[0].tobytes() == sf.read(str(tmp_path / "again.wav"))[0].tobytes()
    with pytest.raises(ValueError, match="choose one of"):
        write_replay_file(wav, 1.0, shared_data, corpus="tess")
