"""Every shipped and archived bundle keeps loading and predicts exactly what it predicted before
models/bundle.py became the one owner of the bundle format (issue 36).

The reference (tests/data/bundle_reference_probs.json) holds only probabilities, computed by the
code before that refactor on 3 CREMA-D clips and 2 EmoDB clips (the Whisper ensemble in
models/primary on 2 of them: its encoders are slow on a CPU).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.bundle import holds_model, is_ensemble_folder, peek_bundle_meta, peek_ensemble_meta
from models.loader import load_classifier

REPO = Path(__file__).resolve().parent.parent
REFERENCE = json.loads((Path(__file__).parent / "data" / "bundle_reference_probs.json").read_text())
ATOL = 1e-6


def _clip(shared_data: Path, name: str) -> np.ndarray:
    import soundfile as sf

    from realtime.resample import resample_to_16k

    corpus, _, rest = name.partition("/")
    folder = shared_data / ("crema-d/AudioFLAC" if corpus == "crema-d" else corpus)
    if not (folder / rest).is_file():
        pytest.skip(f"shared clip {folder / rest} not found")
    audio, rate = sf.read(folder / rest, dtype="float32")
    return audio if rate == 16_000 else resample_to_16k(audio, rate)


def test_the_reference_covers_every_shipped_and_archived_bundle():
    shipped = {"default", "primary"} | {f"archive/{p.name}" for p in (REPO / "models" / "archive").iterdir()
                                        if holds_model(p)}
    assert shipped == set(REFERENCE["bundles"]), "a bundle was shipped or archived without a reference"


@pytest.mark.parametrize("key", sorted(REFERENCE["bundles"]))
def test_shipped_bundle_predicts_as_before_the_refactor(shared_data, key):
    pinned = REFERENCE["bundles"][key]
    folder = REPO / pinned["folder"]
    classifier = load_classifier(folder, device="cpu")
    assert classifier.checkpoint_hash == pinned["checkpoint_hash"], (
        f"{folder} holds other weights than when the reference was computed; recompute its row of "
        "tests/data/bundle_reference_probs.json with the code of the commit that ships them")
    clips = [_clip(shared_data, REFERENCE["clips"][i]) for i in pinned["clips"]]
    probs = np.asarray(classifier.predict(clips), dtype=np.float64)
    np.testing.assert_allclose(probs, np.array(pinned["probs"]), rtol=0, atol=ATOL)


def test_shipped_folders_are_readable_without_loading_them():
    """The JSON-only view the GUI and the benches use agrees with what the loader reads."""
    primary = peek_ensemble_meta(REPO / "models" / "primary")
    assert is_ensemble_folder(REPO / "models" / "primary") and primary["kind"] == "ensemble"
    assert all(peek_bundle_meta(REPO / "models" / "primary" / m)["labels"][0] == "anger"
               for m in primary["members"])
    assert peek_bundle_meta(REPO / "models" / "default")["format_version"] == 2
    assert peek_bundle_meta(REPO / "models" / "primary") is None
