"""The shipped models (models/default, the fast model; models/primary, the accurate ensemble) still
work: each scores well above chance on a fixed set of clips of the corpus it was trained on,
against a threshold derived from its own recorded CV.

Nothing here names a corpus or a score: the bundle's provenance (`data.dataset`, `data.root`,
`data.speakers`) says which clips it learned from, and its `cv_metrics.json` (or `metrics.cv`)
records the speaker-independent CV macro-F1. Replacing the bundle by a retrained one keeps this
test meaningful; replacing it by random or broken weights makes it fail.

Threshold: the clips are held in (speakers the final model was trained on), so a working model
scores at or above its held-out CV figure. 6 clips per class (36) give a macro-F1 standard error
of about 0.08, so the floor is the recorded CV minus 0.15 (about two standard errors), and never
below chance (1/6) + 0.25. Random weights score near or below chance.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA
from models.labels import EMOTIONS
from realtime.wiring import DEFAULT_BUNDLE_DIR, DEFAULT_PRIMARY_DIR

CLIPS_PER_CLASS = 6
CHANCE = 1.0 / len(EMOTIONS)
MARGIN_BELOW_CV = 0.15
MARGIN_ABOVE_CHANCE = 0.25
SHIPPED = {"fast model": DEFAULT_BUNDLE_DIR, "primary": DEFAULT_PRIMARY_DIR}


def shipped_meta(folder: Path) -> dict:
    """bundle.json of a single bundle, or of an ensemble's first member (the members share the
    corpus; their speakers are that member's training speakers)."""
    if (folder / "ensemble.json").is_file():
        first = json.loads((folder / "ensemble.json").read_text())["members"][0]
        return json.loads((folder / first / "bundle.json").read_text())
    bundle_json = folder / "bundle.json"
    if not bundle_json.is_file():
        pytest.fail(f"no shipped model: {bundle_json} is missing")
    return json.loads(bundle_json.read_text())


def recorded_cv_macro_f1(folder: Path, meta: dict) -> float:
    """The speaker-independent CV macro-F1 the bundle records (mean over folds)."""
    cv_file = folder / "cv_metrics.json"
    if cv_file.is_file():
        value = json.loads(cv_file.read_text())["summary"]["macro_f1"]
        return float(value["mean"] if isinstance(value, dict) else value)
    cv = (meta.get("metrics") or {}).get("cv") or {}
    value = cv.get("macro_f1")
    if value is None:
        pytest.fail(f"{folder} records no cross-validated macro-F1 (cv_metrics.json or metrics.cv.macro_f1); "
                    "a shipped model must say how good it is")
    return float(value["mean"] if isinstance(value, dict) else value)


def _name_parser(dataset: str):
    """dataset name -> filename -> (speaker, class) or None."""
    from train.corpora.crema_d import parse_crema_name
    from train.corpora.emodb import parse_emodb_name
    from train.corpora.ravdess import parse_ravdess_name

    parsers = {
        "emodb": lambda name: (lambda n: n and (n.speaker, n.emotion))(parse_emodb_name(name)),
        "crema-d": lambda name: (lambda n: n and (n.actor, n.emotion))(parse_crema_name(name)),
        "ravdess": lambda name: (lambda n: n and (n.actor, n.emotion))(parse_ravdess_name(name)),
    }
    if dataset not in parsers:
        pytest.skip(f"the shipped model was trained on {dataset!r}; this test knows the file names of "
                    f"{', '.join(parsers)} only")
    return parsers[dataset]


def _local_root(recorded: str) -> Path | None:
    """The recorded data folder, or the same folder inside this machine's shared data copy
    (CI clones the project elsewhere, with shared/ beside it)."""
    path = Path(recorded)
    if path.is_dir():
        return path
    parts = path.parts
    for i in range(len(parts) - 1):
        if parts[i:i + 2] == ("shared", "data"):
            candidate = SHARED_DATA.joinpath(*parts[i + 2:])
            return candidate if candidate.is_dir() else None
    return None


def held_in_clips(meta: dict) -> list[tuple[Path, str]]:
    """A fixed set: per class, CLIPS_PER_CLASS files of the training speakers, evenly spread over
    the sorted file list (so several speakers and sentences appear)."""
    data = meta.get("data") or {}
    names = str(data.get("dataset", "")).split("+")
    roots = data.get("root") or []
    if not names[0] or len(names) != len(roots):
        pytest.fail(f"the shipped bundle's provenance does not say what it was trained on: {data}")
    speakers = set(data.get("speakers") or [])
    by_class: dict[str, list[Path]] = {label: [] for label in EMOTIONS}
    for name, recorded in zip(names, roots):
        root = _local_root(recorded)
        if root is None:
            pytest.skip(f"training data {recorded} of the shipped model is not on this machine")
        parse = _name_parser(name)
        for path in sorted([*root.rglob("*.wav"), *root.rglob("*.flac")]):
            parsed = parse(path.name)
            if parsed and parsed[1] in by_class and (not speakers or parsed[0] in speakers):
                by_class[parsed[1]].append(path)
    chosen = []
    for label, paths in by_class.items():
        if len(paths) < CLIPS_PER_CLASS:
            pytest.skip(f"only {len(paths)} {label} clips of the training corpus are on this machine")
        picks = np.linspace(0, len(paths) - 1, CLIPS_PER_CLASS).round().astype(int)
        chosen += [(paths[i], label) for i in picks]
    return chosen


@pytest.mark.parametrize("role", SHIPPED)
def test_shipped_model_scores_well_above_chance_on_its_training_corpus(role):
    from realtime.wiring import load_model
    from models.audio_file import read_mono_16k as load_wave_16k

    folder = SHIPPED[role]
    meta = shipped_meta(folder)
    cv = recorded_cv_macro_f1(folder, meta)
    clips = held_in_clips(meta)
    classifier = load_model(str(folder), compute="cpu")
    probs = classifier.predict([load_wave_16k(path) for path, _ in clips])   # one batch: ~2x faster
    assert probs.shape == (len(clips), len(EMOTIONS)) and np.isfinite(probs).all()
    predicted = [EMOTIONS[i] for i in probs.argmax(axis=1)]
    truth = [label for _, label in clips]
    from sklearn.metrics import f1_score

    score = f1_score(truth, predicted, labels=list(EMOTIONS), average="macro", zero_division=0)
    floor = max(cv - MARGIN_BELOW_CV, CHANCE + MARGIN_ABOVE_CHANCE)
    print(f"shipped {role}: macro-F1 {score:.3f} on {len(clips)} held-in clips (recorded CV {cv:.3f}, floor {floor:.3f})")
    assert score >= floor, (f"the shipped {role} scores macro-F1 {score:.3f} on {len(clips)} clips of its own training "
                            f"corpus; its recorded CV is {cv:.3f}, so at least {floor:.3f} was expected")
