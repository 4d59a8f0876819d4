"""`evaluate` on the classes a set has: restricted argmax, six-way confusion, label spellings, errors."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from models.labels import EMOTIONS, normalise_label
from train.cli import main
from train.evaluate import score_present_classes

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = REPO_ROOT / "models" / "default"


def test_common_spellings_map_and_calm_only_on_request():
    spellings = {"angry": "anger", "Anger": "anger", "happiness": "happy", "HAPPY": "happy", "joy": "happy",
                 "sadness": "sad", "sad": "sad", "fearful": "fear", "fear": "fear", "disgusted": "disgust",
                 "disgust": "disgust", " neutral ": "neutral"}
    assert {raw: normalise_label(raw) for raw in spellings} == spellings
    assert normalise_label("calm") is None
    assert normalise_label("Calm", calm_as_neutral=True) == "neutral"
    assert normalise_label("surprise", calm_as_neutral=True) is None
    assert normalise_label("bored") is None


def test_restricted_argmax_and_six_way_confusion():
    idx = {name: i for i, name in enumerate(EMOTIONS)}
    probs = np.zeros((4, len(EMOTIONS)))
    probs[0, [idx["disgust"], idx["anger"], idx["happy"]]] = (0.5, 0.3, 0.2)   # true anger
    probs[1, [idx["happy"], idx["neutral"]]] = (0.6, 0.4)                      # true happy
    probs[2, [idx["fear"], idx["happy"], idx["sad"]]] = (0.7, 0.2, 0.1)         # true sad
    probs[3, idx["sad"]] = 0.9                                                  # true sad
    y = [idx["anger"], idx["happy"], idx["sad"], idx["sad"]]
    scores = score_present_classes(y, probs)
    assert scores.scored == ("anger", "happy", "sad")
    restricted = scores.restricted
    assert restricted.labels == ("anger", "happy", "sad")
    # restricted predictions: anger, happy, happy, sad
    assert restricted.confusion == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert restricted.accuracy == pytest.approx(0.75)
    assert restricted.macro_f1 == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    six = scores.six_way
    assert six.labels == EMOTIONS and six.accuracy == pytest.approx(0.5)
    assert six.confusion[idx["anger"]][idx["disgust"]] == 1 and six.confusion[idx["sad"]][idx["fear"]] == 1
    with pytest.raises(ValueError, match="at least two classes"):
        score_present_classes([idx["sad"]] * 2, probs[:2])


def _csv(path: Path, rows: list[tuple[Path, str, str]]) -> Path:
    """A corpus CSV whose clips are links inside its own folder (paths outside it are refused)."""
    clips = path.parent / "clips"
    clips.mkdir(exist_ok=True)
    for p, _, _ in rows:
        if not (clips / p.name).exists():
            (clips / p.name).symlink_to(p.resolve())
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label", "speaker"])
        writer.writerows((f"clips/{p.name}", label, speaker) for p, label, speaker in rows)
    return path


@pytest.fixture(scope="module")
def emodb_by_class(emodb_dir) -> dict[str, list[tuple[Path, str]]]:
    """Real EmoDB clips by class: [(path, speaker), ...]."""
    by_class: dict[str, list[tuple[Path, str]]] = {}
    with open(emodb_dir / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            label = normalise_label(row["emotion"])
            if label:
                by_class.setdefault(label, []).append((emodb_dir / row["file"], row["speaker"]))
    return by_class


def _evaluate(data: Path, out: Path, *extra: str) -> int:
    return main(["evaluate", "--bundle", str(DEFAULT_BUNDLE), "--dataset", "csv", "--data", str(data),
                 "--out", str(out), "--threads", "1", *extra])


def test_four_class_set_scores_the_classes_it_has(emodb_by_class, tmp_path, capsys):
    spelling = {"anger": "angry", "happy": "joy", "neutral": "neutral", "sad": "sadness"}
    rows = [(p, spelling[c], s) for c in spelling for p, s in emodb_by_class[c][:2]]
    out = tmp_path / "eval"
    assert _evaluate(_csv(tmp_path / "four.csv", rows), out) == 0
    printed = capsys.readouterr().out
    assert "scored classes: anger, happy, neutral, sad (4 of 6" in printed
    assert "not in the set: disgust, fear" in printed and "6-way confusion" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scored_classes"] == ["anger", "happy", "neutral", "sad"]
    restricted, six = metrics["eval"], metrics["six_way"]
    assert restricted["labels"] == ["anger", "happy", "neutral", "sad"] and restricted["n"] == 8
    assert sum(map(sum, restricted["confusion"])) == 8
    assert f"macro-F1 {restricted['macro_f1']:.3f}" in printed
    assert six["labels"] == list(EMOTIONS) and len(six["confusion"]) == 6
    assert six["confusion"][EMOTIONS.index("fear")] == [0] * 6  # no true fear clips
    # the restricted argmax can only be right where the unrestricted one is, or more often
    assert restricted["accuracy"] >= six["accuracy"]
    assert (out / "confusion.png").is_file() and (out / "confusion_six_way.png").is_file()


def test_single_class_and_unmappable_labels_are_one_line_errors(emodb_by_class, tmp_path, capsys):
    anger = emodb_by_class["anger"][:2]
    one_class = _csv(tmp_path / "one.csv", [(p, "angry", s) for p, s in anger])
    assert _evaluate(one_class, tmp_path / "e1") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "only anger" in err

    bored = _csv(tmp_path / "bored.csv", [(p, "angry", s) for p, s in anger]
                 + [(p, "bored", s) for p, s in emodb_by_class["sad"][:2]])
    assert _evaluate(bored, tmp_path / "e2") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'bored' (2 clips)" in err and "--calm-as-neutral" not in err
    assert not (tmp_path / "e2" / "metrics.json").exists()


def test_calm_counts_as_neutral_only_when_asked(emodb_by_class, tmp_path, capsys):
    rows = [(p, "angry", s) for p, s in emodb_by_class["anger"][:2]] + \
           [(p, "calm", s) for p, s in emodb_by_class["neutral"][:2]]
    data = _csv(tmp_path / "calm.csv", rows)
    assert _evaluate(data, tmp_path / "e1") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'calm'" in err and "--calm-as-neutral" in err
    assert _evaluate(data, tmp_path / "e2", "--calm-as-neutral") == 0
    assert "scored classes: anger, neutral (2 of 6" in capsys.readouterr().out
