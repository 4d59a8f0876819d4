"""The six CREMA-D emotion classes and the mappings of every dataset onto them.

Torch-free: every part of VED may import this module.
"""
from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("anger", "disgust", "fear", "happy", "neutral", "sad")
NUM_CLASSES = len(EMOTIONS)
LABEL_TO_INDEX: dict[str, int] = {name: i for i, name in enumerate(EMOTIONS)}

CREMA_D_CODES: dict[str, str] = {
    "ANG": "anger", "DIS": "disgust", "FEA": "fear",
    "HAP": "happy", "NEU": "neutral", "SAD": "sad",
}
# EmoDB letter -> CREMA-D class; "L" (boredom) has no CREMA-D class and is dropped.
EMODB_CODES: dict[str, str] = {
    "W": "anger", "E": "disgust", "A": "fear", "F": "happy", "N": "neutral", "T": "sad",
}
# RAVDESS emotion code -> CREMA-D class; calm (02) and surprised (08) have none.
RAVDESS_CODES: dict[str, str] = {
    "01": "neutral", "03": "happy", "04": "sad", "05": "anger", "06": "fear", "07": "disgust",
}
# Free-text names seen in CSVs (e.g. shared EmoDB labels.csv) -> CREMA-D class.
LABEL_ALIASES: dict[str, str] = {
    **{name: name for name in EMOTIONS},
    "angry": "anger", "happiness": "happy", "sadness": "sad", "fearful": "fear",
    "disgusted": "disgust", "ang": "anger", "dis": "disgust", "fea": "fear",
    "hap": "happy", "neu": "neutral",
}


def normalise_label(raw: str) -> str | None:
    """Map a free-text label to a CREMA-D class name, or None when it has none."""
    return LABEL_ALIASES.get(raw.strip().lower())
