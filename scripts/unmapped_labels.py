"""How a trained model reads the clips whose label has no CREMA-D class (RAVDESS calm and surprised,
EmoDB boredom): the share of each predicted class, per label. The measurement behind the choice, in
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


def unmapped_clips(corpus: str, root: Path) -> dict[str, list[Path]]:
    """label -> files of `corpus` (its shared labels.csv) whose label has no CREMA-D class."""
    column, labels = UNMAPPED[corpus]
    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {label: [root / r["file"] for r in rows if r[column] == label] for label in labels}


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
        for label, files in unmapped_clips(corpus, root).items():
            probs = np.concatenate([classifier.predict([read_mono_16k(p) for p in files[i:i + 16]])
                                    for i in range(0, len(files), 16)])
            shares = np.bincount(probs.argmax(1), minlength=len(EMOTIONS)) / len(files)
            print(f"| {corpus} | {label} | {len(files)} | " + " | ".join(f"{s:.2f}" for s in shares) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
