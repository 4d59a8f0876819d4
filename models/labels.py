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
    "hap": "happy", "neu": "neutral", "joy": "happy",
}
# "calm" (RAVDESS, some CSVs) is not neutral speech by default; it maps only when the user
# says so (--calm-as-neutral).
CALM_LABEL = "calm"
# SAVEE file-name prefix -> CREMA-D class; "su" (surprise) has none.
SAVEE_CODES: dict[str, str] = {
    "a": "anger", "d": "disgust", "f": "fear", "h": "happy", "n": "neutral", "sa": "sad",
}
# IEMOCAP EmoEvaluation category -> CREMA-D class, the usual 4-class convention
# (excited merged into happy); frustration, surprise, other and xxx have none.
IEMOCAP_CODES: dict[str, str] = {
    "ang": "anger", "hap": "happy", "exc": "happy", "neu": "neutral", "sad": "sad",
}


def normalise_label(raw: str, calm_as_neutral: bool = False) -> str | None:
    """Map a free-text label to a CREMA-D class name, or None when it has none.

    calm_as_neutral: map "calm" to neutral (off by default: calm is a class of its own)."""
    key = raw.strip().lower()
    if key == CALM_LABEL:
        return "neutral" if calm_as_neutral else None
    return LABEL_ALIASES.get(key)
