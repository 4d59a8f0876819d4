"""`python -m train loco` end to end on real audio: train on EmoDB, score the RAVDESS clips it never
heard, with the per-speaker baseline as trained and frozen after five utterances."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from train.cli import main
from train.loco import confusion_share
from train.evaluate import score


def _emodb_subset(emodb_dir: Path, folder: Path, per_speaker: int = 12) -> Path:
    """The shared EmoDB layout with the first `per_speaker` clips of each speaker (links, not copies)."""
    import csv

    with open(emodb_dir / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    kept: list[dict[str, str]] = []
    for speaker in sorted({r["speaker"] for r in rows}):
        kept += [r for r in rows if r["speaker"] == speaker and r["emotion"] != "boredom"][:per_speaker]
    (folder / "wav").mkdir(parents=True)
    for row in kept:
        (folder / row["file"]).symlink_to((emodb_dir / row["file"]).resolve())
    with open(folder / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return folder


@pytest.fixture(scope="module")
def loco_run(tmp_path_factory, emodb_dir: Path, ravdess_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("loco")
    emodb = _emodb_subset(emodb_dir, root / "emodb")
    code = main(["loco", "--dataset", "emodb", "--data", str(emodb), "--dataset", "ravdess",
                 "--data", str(ravdess_dir), "--hold-out", "ravdess", "--model", "whisper-ultimate",
                 "--model-arg", "encoder=tiny.en", "--model-arg", "frame_pool=4", "--model-arg", "lstm_hidden=16",
                 "--model-arg", "attention_hidden=8", "--epochs", "2", "--speaker-baseline", "all",
                 "--cache-dir", str(root / "cache"), "--threads", "1", "--out", str(root / "run")])
    assert code == 0
    return root / "run"


def test_the_held_out_corpus_is_scored_and_never_trained_on(loco_run: Path):
    summary = json.loads((loco_run / "loco.json").read_text())
    record = summary["holdouts"]["ravdess"]
    assert record["trained_on"] == ["emodb"] and record["held_out"] == "ravdess"
    assert set(record["scores"]) == {"baseline", "baseline-first5"}
    for scores in record["scores"].values():
        assert 0.0 <= scores["macro_f1"] <= 1.0
        assert sum(map(sum, scores["eval"]["confusion"])) == scores["eval"]["n"] > 0
    bundle = json.loads((loco_run / "holdout-ravdess" / "bundle.json").read_text())
    assert not [s for s in bundle["data"]["speakers"] if s.startswith("ravdess")]
    assert bundle["training"]["speaker_baseline"] == {"max_utterances": None}


def test_the_held_out_model_loads_as_one_that_learns_its_speaker(loco_run: Path):
    from models.loader import load_classifier

    assert load_classifier(loco_run / "holdout-ravdess", "cpu").learns_speaker


def test_confusion_share_reads_a_row_of_the_matrix():
    result = score([5, 5, 5, 5, 4, 4], [1, 1, 5, 0, 1, 4])
    assert confusion_share(result, "sad", "disgust") == 0.5
    assert confusion_share(result, "neutral", "disgust") == 0.5
    assert confusion_share(score([0, 1], [0, 1]), "sad", "disgust") is None
