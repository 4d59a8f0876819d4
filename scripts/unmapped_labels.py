"""How a trained model reads the clips whose label has no CREMA-D class (RAVDESS calm and surprised,
EmoDB boredom): the share of each predicted class, per label. A model with a speaker baseline
hears each speaker's clips of every label in file order, as one session. The measurement behind the choice, in
docs/results/cross-corpus.md, of dropping those clips rather than mapping them onto a class.

  python scripts/unmapped_labels.py BUNDLE_OR_ENSEMBLE --ravdess ../shared/data/ravdess-speech \\
      --emodb ../shared/data/emodb
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.audio_file import read_mono_16k  # noqa: E402
from models.labels import EMOTIONS  # noqa: E402

UNMAPPED = {"ravdess": ("label", ("calm", "surprised")), "emodb": ("emotion", ("boredom",))}


def speaker_sessions(corpus: str, root: Path) -> list[list[tuple[Path, str]]]:
    """Every clip of `corpus` (its shared labels.csv) as (file, label), one list per speaker in file order."""
    column, _ = UNMAPPED[corpus]
    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    sessions: dict[str, list[tuple[Path, str]]] = {}
    for r in rows:
        sessions.setdefault(r["speaker"], []).append((root / r["file"], r[column]))
    return list(sessions.values())


def predicted_classes(classifier, corpus: str, root: Path) -> dict[str, list[int]]:
    """label -> predicted class index of each clip whose label has no CREMA-D class. A model that
    learns its speaker hears each speaker's clips (all labels) in file order, as one session."""
    wanted = UNMAPPED[corpus][1]
    out: dict[str, list[int]] = {label: [] for label in wanted}
    for session in speaker_sessions(corpus, root):
        classifier.reset_session()
        for path, label in session:
            if label in wanted or classifier.learns_speaker:
                probs = classifier.predict_utterance([read_mono_16k(path)])
                if label in wanted:
                    out[label].append(int(probs[0].argmax()))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, help="a bundle or ensemble folder")
    parser.add_argument("--ravdess", type=Path, help="the shared ravdess-speech folder (labels.csv + Actor_NN/)")
    parser.add_argument("--emodb", type=Path, help="the shared emodb folder (labels.csv + wav/)")
    ns = parser.parse_args()
    from models.loader import load_classifier

    classifier = load_classifier(str(ns.bundle), device="cpu")
    print("| corpus | label | clips | " + " | ".join(EMOTIONS) + " |")
    print("|" + "---|" * (3 + len(EMOTIONS)))
    for corpus, root in (("ravdess", ns.ravdess), ("emodb", ns.emodb)):
        if root is None:
            continue
        for label, classes in predicted_classes(classifier, corpus, root).items():
            shares = np.bincount(classes, minlength=len(EMOTIONS)) / len(classes)
            print(f"| {corpus} | {label} | {len(classes)} | " + " | ".join(f"{s:.2f}" for s in shares) + " |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
