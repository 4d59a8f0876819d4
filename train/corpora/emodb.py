"""EmoDB, the Berlin Database of Emotional Speech (``--dataset emodb``; German, acted).

Layout: the shared copy (``labels.csv`` with columns file,speaker,emotion + ``wav/``) or a plain
folder of ``SSTTTEv.wav`` files anywhere below the root (``03a01Wa.wav``).
Labels: the emotion letter of the name (W, E, A, F, N, T), models.labels.EMODB_CODES, or the
``emotion`` column of labels.csv; boredom (L) has no CREMA-D class and is dropped.
Speaker: the two-digit speaker number (``03``).
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from models.labels import EMODB_CODES, normalise_label
from train.corpora.base import Clip, DataError, LoadOptions, LoadResult, check_folder, load_named_files, screen

NAME = "emodb"
LAYOUT = "an EmoDB folder with labels.csv + wav/ or files like 03a01Wa.wav"
LABELS = EMODB_CODES
_NAME_RE = re.compile(r"^(\d{2})([a-z]\d{2})([WLEAFTN])([a-z])\.wav$")


@dataclass(frozen=True)
class EmodbName:
    speaker: str
    text: str
    emotion: str | None  # None for boredom (no CREMA-D class)
    version: str


def parse_emodb_name(name: str) -> EmodbName | None:
    """'03a01Wa.wav' -> EmodbName(speaker '03', text 'a01', 'anger', 'a')."""
    m = _NAME_RE.match(name)
    if not m:
        return None
    return EmodbName(m.group(1), m.group(2), LABELS.get(m.group(3)), m.group(4))


def load(root: Path, options: LoadOptions = LoadOptions()) -> LoadResult:
    """EmoDB clips below `root` (options do not apply), screened for unusable audio."""
    root = check_folder(root, LAYOUT)
    labels_csv = root / "labels.csv"
    if not labels_csv.is_file():
        return load_named_files(root, "EmoDB", LAYOUT, _clip_of)
    result = LoadResult([])
    candidates = _from_table(labels_csv, result)
    if not candidates:
        raise DataError(f"no EmoDB clips in {root} (expected {LAYOUT})")
    screen(candidates, result)
    return result


def _from_table(labels_csv: Path, result: LoadResult) -> list[Clip]:
    """Clips of the rows of the shared copy's labels.csv; listed files that are absent go to result.missing."""
    with open(labels_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"file", "speaker", "emotion"} <= set(rows[0]):
        raise DataError(f"{labels_csv} needs the columns file, speaker and emotion")
    candidates = []
    for row in rows:
        label = normalise_label(row["emotion"])
        path = labels_csv.parent / row["file"]
        if label is None:
            continue  # boredom has no CREMA-D class
        if not path.is_file():
            result.missing.append(str(path))
            continue
        candidates.append(Clip(path, label, row["speaker"].zfill(2), NAME))
    return candidates


def _clip_of(path: Path) -> Clip | str | None:
    parsed = parse_emodb_name(path.name)
    if parsed is None:
        return "name is not an EmoDB SSTTTEv.wav name"
    return None if parsed.emotion is None else Clip(path, parsed.emotion, parsed.speaker, NAME)
