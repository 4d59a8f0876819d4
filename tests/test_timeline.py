"""Timeline: JSONL write/reload round trip, superseded partials, CSV export, torn lines, speed."""
from __future__ import annotations

import csv
import gc
import json
from datetime import datetime

import numpy as np
import pytest

from models.labels import EMOTIONS
from realtime.timeline import (CSV_COLUMNS, FORMAT_VERSION, TimelineError, TimelineWriter, default_timeline_path,
                               export_csv, load_timeline, mark_superseded)
from realtime.types import DropNotice, EmotionPrediction, EngineStatus, SessionSummary


def prediction(start_s, end_s, kind="utterance", seed=0, model="m", latency_ms=12.5, fallback=False):
    probs = np.random.default_rng(seed).dirichlet(np.ones(len(EMOTIONS)))
    return EmotionPrediction.from_probs(start_s, end_s, probs, model=model, latency_ms=latency_ms, kind=kind,
                                        queue_depth=seed % 3, fallback=fallback)


def write_session(path):
    preds = [prediction(0.5, 1.5, "partial", 1), prediction(0.5, 2.0, "partial", 2),
             prediction(0.5, 2.3, "utterance", 3, model="primary"),
             prediction(3.0, 4.0, "partial", 4), prediction(3.0, 4.5, "partial", 5),
             prediction(3.0, 4.2, "utterance", 6, model="fallback", fallback=True),
             prediction(6.0, 7.0, "partial", 7)]   # speech still going when the session ended
    with TimelineWriter(path, {"input": "file: x.wav", "vad": {"hangover_ms": 450}}) as writer:
        writer.write_status(EngineStatus("running", "listening", model="primary"))
        for p in preds:
            writer.write_prediction(p)
        writer.write_drops(DropNotice(2, 0, 1), time_s=5.0, reason="queue full")
        writer.write_summary(SessionSummary(2, 5, 10.0, 12.0, 2, 0, 1, 0.5, {"primary": 1, "fallback": 1}))
    return preds


def test_round_trip_restores_every_record(tmp_path):
    path = tmp_path / "s.jsonl"
    preds = write_session(path)
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["type"] == "header" and header["format_version"] == FORMAT_VERSION
    assert header["input"] == "file: x.wav" and header["started_utc"].endswith("Z")
    session = load_timeline(path)
    assert session.predictions == preds
    assert session.torn_lines == 0 and session.complete
    assert [p.kind for p in session.utterances()] == ["utterance", "utterance"]
    assert len(session.partials()) == 5
    assert session.drops[0]["partial_windows"] == 2 and session.drops[0]["audio_blocks"] == 1
    assert session.statuses[0]["state"] == "running"
    assert session.summary["models"] == {"primary": 1, "fallback": 1}


def test_utterance_replaces_its_partials_in_the_view_only(tmp_path):
    path = tmp_path / "s.jsonl"
    preds = write_session(path)
    session = load_timeline(path)
    # The partial ending at 4.5 s lies in the hangover after the utterance ending at 4.2 s.
    assert session.superseded == [True, True, False, True, True, False, False]
    assert session.view() == [preds[2], preds[5], preds[6]]
    assert len(session.partials()) == 5   # still in the file, marked as partial


def test_supersede_respects_tolerance_and_merges_cut_pieces():
    cut_a = prediction(0.0, 10.0)
    cut_b = prediction(10.0, 14.0)
    inside_cut = prediction(9.0, 11.0, "partial")
    far_after = prediction(13.0, 15.0, "partial")
    other = prediction(20.0, 21.0, "partial")
    assert mark_superseded([cut_a, cut_b, inside_cut, far_after, other], tolerance_s=0.5) == \
        [False, False, True, False, False]
    assert mark_superseded([cut_a, cut_b, far_after], tolerance_s=1.5)[2]


def test_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "s.jsonl"
    preds = write_session(path)
    text = path.read_text().splitlines(keepends=True)
    # Simulate a crash in the middle of writing the summary line.
    path.write_text("".join(text[:-1]) + text[-1][: len(text[-1]) // 2])
    session = load_timeline(path)
    assert session.torn_lines == 1
    assert session.predictions == preds
    assert not session.complete


def test_csv_export_has_one_row_per_prediction(tmp_path):
    path = tmp_path / "s.jsonl"
    preds = write_session(path)
    out = tmp_path / "s.csv"
    assert export_csv(load_timeline(path), out) == len(preds)
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert len(rows) == len(preds)
    for row, p in zip(rows, preds):
        assert row["kind"] == p.kind and row["label"] == p.label and row["model"] == p.model
        assert float(row["start_s"]) == pytest.approx(p.start_s, abs=1e-3)
        assert float(row["confidence"]) == pytest.approx(p.confidence, abs=1e-4)
        assert sum(float(row[name]) for name in EMOTIONS) == pytest.approx(1.0, abs=1e-3)


def test_not_a_timeline_and_missing_file_raise_timeline_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "prediction"}\n')
    with pytest.raises(TimelineError, match="not a VED timeline"):
        load_timeline(bad)
    with pytest.raises(TimelineError, match="cannot read"):
        load_timeline(tmp_path / "missing.jsonl")


def test_unwritable_location_fails_at_construction(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TimelineError, match="cannot create timeline folder"):
        TimelineWriter(blocker / "sub" / "s.jsonl", {})
    with pytest.raises(TimelineError, match="is a folder"):
        TimelineWriter(tmp_path, {})


def test_writes_after_close_are_ignored(tmp_path):
    path = tmp_path / "s.jsonl"
    writer = TimelineWriter(path, {})
    writer.write_prediction(prediction(0, 1))
    writer.close()
    writer.write_prediction(prediction(1, 2))
    writer.close()
    assert len(load_timeline(path).predictions) == 1


def test_default_path_is_in_the_user_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    path = default_timeline_path()
    assert path.parent == tmp_path / "ved" / "sessions"
    assert path.name.startswith("ved-") and path.suffix == ".jsonl" and len(path.stem) == len("ved-20260101-120000")
    noon = datetime(2026, 1, 1, 12, 0, 0)
    first = default_timeline_path(noon)
    TimelineWriter(first, {}).close()           # a session started in the same second already exists
    second = default_timeline_path(noon)
    assert first.name == "ved-20260101-120000.jsonl" and second.name == "ved-20260101-120000-2.jsonl"


def test_two_hour_timeline_reloads_completely_and_leaves_the_collector_on(tmp_path):
    """~7,000 utterances + 14,000 partials (2 h of talk). Reload time is a benchmark target
    (`python -m bench --only soak`); here: every record back, partials superseded, and the cyclic
    garbage collector (paused while parsing) enabled again, also after a failed load."""
    path = tmp_path / "long.jsonl"
    rng = np.random.default_rng(0)
    lines = [json.dumps({"type": "header", "format_version": 1, "started_utc": "2026-01-01T00:00:00Z"})]
    t = 0.0
    for i in range(7_000):
        start, end = t, t + 0.7
        for k in range(2):
            partial = EmotionPrediction.from_probs(start, start + 0.3 * (k + 1), rng.dirichlet(np.ones(6)),
                                                   model="fallback", latency_ms=15.0, kind="partial")
            lines.append(json.dumps({"type": "prediction", **partial.to_dict()}))
        utterance = EmotionPrediction.from_probs(start, end, rng.dirichlet(np.ones(6)), model="primary",
                                                 latency_ms=120.0)
        lines.append(json.dumps({"type": "prediction", **utterance.to_dict()}))
        t += 1.03
    path.write_text("\n".join(lines) + "\n")
    assert gc.isenabled()
    session = load_timeline(path)
    assert gc.isenabled()
    assert len(session.utterances()) == 7_000 and len(session.partials()) == 14_000
    assert sum(session.superseded) == 14_000
    (tmp_path / "bad.jsonl").write_text('{"type": "prediction"}\n')
    with pytest.raises(TimelineError):
        load_timeline(tmp_path / "bad.jsonl")
    assert gc.isenabled()


# ---------------------------------------------------------------- durability and never overwriting
def test_every_line_is_flushed_then_fsynced_once(tmp_path, monkeypatch):
    """One fsync per line, each after the line reached the file (a missing flush would fsync an
    empty kernel buffer while the line still sits in Python's)."""
    import realtime.timeline as timeline

    path = tmp_path / "s.jsonl"
    seen: list[int] = []
    real_fsync = timeline.os.fsync

    def counting_fsync(fd):
        seen.append(len(path.read_bytes().splitlines()))   # what another reader sees right now
        real_fsync(fd)

    monkeypatch.setattr(timeline.os, "fsync", counting_fsync)
    preds = write_session(path)
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + 1 + len(preds) + 1 + 1         # header, status, predictions, drops, summary
    assert seen == list(range(1, len(lines) + 1))


def test_an_existing_timeline_is_never_overwritten(tmp_path):
    path = tmp_path / "s.jsonl"
    write_session(path)
    before = path.read_bytes()
    with pytest.raises(TimelineError, match="already exists; VED never overwrites"):
        TimelineWriter(path, {})
    (tmp_path / "link.jsonl").symlink_to(path)
    with pytest.raises(TimelineError, match="already exists"):
        TimelineWriter(tmp_path / "link.jsonl", {})
    assert path.read_bytes() == before


def test_the_writer_holds_an_exclusive_lock_until_closed(tmp_path):
    from realtime.files import create_exclusively, is_locked

    path = tmp_path / "s.jsonl"
    writer = TimelineWriter(path, {})
    assert is_locked(path)
    writer.close()
    assert not is_locked(path)
    with pytest.raises(FileExistsError):        # O_EXCL: a second session cannot even open it
        create_exclusively(path)


def test_export_never_writes_onto_its_source_or_a_foreign_file(tmp_path):
    path = tmp_path / "s.jsonl"
    write_session(path)
    before = path.read_bytes()
    session = load_timeline(path)
    with pytest.raises(TimelineError, match="is the timeline itself"):
        export_csv(session, path)
    (tmp_path / "alias.jsonl").symlink_to(path)
    with pytest.raises(TimelineError, match="is the timeline itself"):
        export_csv(session, tmp_path / "alias.jsonl")
    other = tmp_path / "notes.csv"
    other.write_text("my own notes\n")
    with pytest.raises(TimelineError, match="is not a VED CSV export"):
        export_csv(session, other)
    assert path.read_bytes() == before and other.read_text() == "my own notes\n"
    out = tmp_path / "s.csv"
    assert export_csv(session, out) == export_csv(session, out) == len(session.predictions)   # re-export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias.jsonl", "notes.csv", "s.csv", "s.jsonl"]


def test_a_failing_export_leaves_the_earlier_export_whole(tmp_path, monkeypatch):
    import models.atomic as atomic

    path = tmp_path / "s.jsonl"
    write_session(path)
    out = tmp_path / "s.csv"
    export_csv(load_timeline(path), out)
    before = out.read_bytes()

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    with pytest.raises(TimelineError, match="No space left"):
        export_csv(load_timeline(path), out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv", "s.jsonl"]   # no temporary file left


@pytest.mark.parametrize("field,value", [("start_s", "0.5"), ("end_s", None), ("probs", [0.5, 0.5]),
                                         ("probs", {"anger": "high"}), ("label", 3), ("latency_ms", True),
                                         ("kind", "final"), ("label", "boredom"), ("start_s", 1e999)])
def test_malformed_prediction_lines_are_skipped_counted_and_the_rest_exported(tmp_path, field, value):
    path = tmp_path / "s.jsonl"
    preds = write_session(path)
    lines = path.read_text().splitlines()
    record = json.loads(lines[3])
    record[field] = value
    lines[3] = json.dumps(record)        # json writes 1e999 as Infinity, which the reader parses
    path.write_text("\n".join(lines) + "\n")
    session = load_timeline(path)
    assert session.torn_lines == 1 and session.predictions == preds[:1] + preds[2:]
    assert export_csv(session, tmp_path / "s.csv") == len(preds) - 1
