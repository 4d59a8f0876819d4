"""Corpus registry: every ``--dataset`` name maps to the one module that loads it, imported on first use.

Each module in this package states its NAME, LAYOUT, LABELS (its label codes -> the six classes) and
speaker id in its docstring, and has ``load(root, options) -> LoadResult`` (base.CorpusModule).
To add a corpus: write ``train/corpora/<name>.py`` like ravdess.py and add one row to CORPORA.

    load_datasets(names, roots, manifest, require_all_classes, calm_as_neutral)  -> LoadResult
    parse_dataset_names(["emodb+ravdess"])                                       -> ["emodb", "ravdess"]
    corpus(name)                                                                 -> its module
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

from models.labels import EMOTIONS
from train.corpora.base import (AudioCache, Clip, CorpusModule, DataError, LoadOptions, LoadResult, SkippedFile,
                                class_counts, provenance)

# --dataset name -> module in this package (import path train.corpora.<module>)
CORPORA: dict[str, str] = {
    "crema-d": "crema_d",
    "emodb": "emodb",
    "ravdess": "ravdess",
    "csv": "csv_table",
    "tess": "tess",
    "savee": "savee",
    "iemocap": "iemocap",
}
DATASET_NAMES: tuple[str, ...] = tuple(CORPORA)

__all__ = ["AudioCache", "CORPORA", "Clip", "CorpusModule", "DATASET_NAMES", "DataError", "LoadOptions",
           "LoadResult", "SkippedFile", "class_counts", "corpus", "corpus_names", "load_datasets",
           "parse_dataset_names", "provenance"]


def corpus_names() -> tuple[str, ...]:
    """The --dataset choices, in registry order."""
    return DATASET_NAMES


def _module_of(name: str) -> str:
    if name not in CORPORA:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")
    return CORPORA[name]


def corpus(name: str) -> CorpusModule:
    """The module that loads corpus `name`; DataError (one line, listing the choices) for an unknown name."""
    return importlib.import_module(f"{__name__}.{_module_of(name)}")  # type: ignore[return-value]


def parse_dataset_names(values: list[str]) -> list[str]:
    """['emodb+ravdess'] or ['emodb,ravdess'] or ['emodb', 'ravdess'] -> ['emodb', 'ravdess'];
    DataError (listing the choices) for a name the registry does not know."""
    names = [n.strip() for v in values for n in re.split(r"[+,]", v) if n.strip()]
    for name in names:
        _module_of(name)
    return names


def load_datasets(names: list[str], roots: list[Path], manifest: Path | None = None,
                  require_all_classes: bool = True, calm_as_neutral: bool = False) -> LoadResult:
    """Load and concatenate several corpora (names[i] lives in roots[i]).

    manifest: CREMA-D only (audio_manifest.csv or flac_manifest.csv).
    calm_as_neutral: RAVDESS calm and CSV "calm" labels count as neutral (otherwise dropped).
    require_all_classes: DataError when a class has no usable clip in all of them together."""
    if len(names) != len(roots):
        raise DataError(f"got {len(names)} dataset name(s) but {len(roots)} --data folder(s); give one folder per dataset")
    options = LoadOptions(manifest=manifest, calm_as_neutral=calm_as_neutral)
    total = LoadResult([])
    for name, root in zip(names, roots):
        total.extend(corpus(name).load(Path(root), options))
    if require_all_classes:
        counts = class_counts(total.clips)
        absent = [c for c in EMOTIONS if counts[c] == 0]
        if absent:
            raise DataError(f"class(es) {', '.join(absent)} have no usable clips in {', '.join(map(str, roots))}")
    return total
