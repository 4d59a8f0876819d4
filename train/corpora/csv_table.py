"""A table of the user's own clips (``--dataset csv``).

Layout: a CSV file, or a folder holding ``labels.csv``, with columns file,label,speaker; ``file`` is
relative to the CSV's folder.
Labels: free text through models.labels.normalise_label (angry/anger, joy/happiness/happy ...);
"calm" only with calm_as_neutral; a row whose label has no class is skipped with one line.
Speaker: the ``speaker`` column as written.
(Not named csv.py: that would shadow the standard library's csv wherever this folder is on sys.path.)
"""
from __future__ import annotations

import csv
from pathlib import Path

from models.labels import EMOTIONS, LABEL_ALIASES, normalise_label
from train.corpora.base import Clip, DataError, LoadOptions, LoadResult, SkippedFile, screen

NAME = "csv"
LAYOUT = "a CSV file or a folder holding labels.csv, columns file,label,speaker"
LABELS = LABEL_ALIASES


def load(root: Path, options: LoadOptions = LoadOptions()) -> LoadResult:
    """Clips listed in the table at `root`, screened for unusable audio (options.calm_as_neutral)."""
    root = Path(root)
    table = root / "labels.csv" if root.is_dir() else root
    if not table.is_file():
        raise DataError(f"{root} is neither a CSV file nor a folder holding labels.csv (columns file,label,speaker)")
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"file", "label", "speaker"} <= set(rows[0]):
        raise DataError(f"{table} needs the columns file, label and speaker")
    result = LoadResult([])
    candidates = []
    for row in rows:
        path = table.parent / row["file"]
        label = normalise_label(row["label"], options.calm_as_neutral)
        if label is None:
            result.unmapped_labels.append(row["label"])
            result.skipped.append(SkippedFile(str(path), f"label {row['label']!r} is not one of {EMOTIONS}"))
        elif not path.is_file():
            result.missing.append(str(path))
        else:
            candidates.append(Clip(path, label, row["speaker"], NAME))
    screen(candidates, result)
    return result
