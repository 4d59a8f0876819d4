"""SAVEE, Surrey Audio-Visual Expressed Emotion (``--dataset savee``; English, acted, four men).

Layout: speaker folders ``DC/a01.wav`` (DC, JE, JK, KL, as in AudioData) or the flat variant
``DC_a01.wav``, anywhere below the root.
Labels: the code before the number (a, d, f, h, n, sa), models.labels.SAVEE_CODES; surprise (su) has
no CREMA-D class and is dropped.
Speaker: ``savee-DC`` from the name prefix or the folder; all four are men.
"""
from __future__ import annotations

import re
from pathlib import Path

from models.labels import SAVEE_CODES
from train.corpora.base import Clip, LoadOptions, LoadResult, load_named_files

NAME = "savee"
LAYOUT = "a SAVEE folder (AudioData) with DC/a01.wav, JE/sa03.wav ... or DC_a01.wav"
LABELS = SAVEE_CODES
_NAME_RE = re.compile(r"^(?:([A-Z]{2})_)?([a-z]{1,2})(\d{2})\.wav$")
_SPEAKER_RE = re.compile(r"^[A-Z]{2}$")
_DROPPED = {"su"}  # surprise has no CREMA-D class


def load(root: Path, options: LoadOptions = LoadOptions()) -> LoadResult:
    """SAVEE files below `root` (options do not apply), screened for unusable audio."""
    return load_named_files(root, "SAVEE", LAYOUT, _clip_of)


def _clip_of(path: Path) -> Clip | str | None:
    m = _NAME_RE.match(path.name)
    code = m.group(2) if m else None
    if code is None or (code not in LABELS and code not in _DROPPED):
        return "name is not a SAVEE code+number (a, d, f, h, n, sa or su then two digits, e.g. sa03.wav)"
    speaker = m.group(1) or (path.parent.name if _SPEAKER_RE.match(path.parent.name) else None)
    if speaker is None:
        return "no speaker: expected a speaker folder such as DC/ or a name such as DC_a01.wav"
    return Clip(path, LABELS[code], f"savee-{speaker}", NAME, sex="male") if code in LABELS else None
