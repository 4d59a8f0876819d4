"""TESS, the Toronto emotional speech set (``--dataset tess``; English, acted, two women).

Layout: ``OAF_word_emotion.wav`` / ``YAF_word_emotion.wav`` anywhere below the root, usually in
speaker_emotion folders (``OAF_angry/OAF_back_angry.wav``); a folder that disagrees with the name
(another speaker or emotion) marks a mislabelled file, which is skipped.
Labels: the emotion word through models.labels.normalise_label; pleasant surprise (``ps``) has no
CREMA-D class and is dropped.
Speaker: ``tess-OAF`` or ``tess-YAF``; both are women.
"""
from __future__ import annotations

import re
from pathlib import Path

from models.labels import LABEL_ALIASES, normalise_label
from train.corpora.base import Clip, LoadOptions, LoadResult, load_named_files

NAME = "tess"
LAYOUT = "a TESS folder with OAF_angry/OAF_back_angry.wav and the like"
LABELS = LABEL_ALIASES
_NAME_RE = re.compile(r"^(OAF|YAF)_([a-z]+)_([a-z_]+)\.wav$", re.IGNORECASE)
_FOLDER_RE = re.compile(r"^(OAF|YAF)_([a-z_]+)$", re.IGNORECASE)
# Pleasant surprise has no CREMA-D class; files say "ps", folders spell it out.
_DROPPED = {"ps", "pleasant_surprise", "pleasant_surprised"}


def _emotion(token: str) -> str | None | bool:
    """CREMA-D class of a TESS emotion token; None for pleasant surprise; False when unknown."""
    token = token.lower()
    if token in _DROPPED:
        return None
    return normalise_label(token) or False


def load(root: Path, options: LoadOptions = LoadOptions()) -> LoadResult:
    """TESS files below `root` (options do not apply), screened for unusable audio."""
    return load_named_files(root, "TESS", LAYOUT, _clip_of)


def _clip_of(path: Path) -> Clip | str | None:
    """A speaker_emotion parent folder must agree with the name."""
    m = _NAME_RE.match(path.name)
    emotion = _emotion(m.group(3)) if m else False
    if emotion is False:
        return ("name is not a TESS OAF|YAF_word_emotion.wav name "
                "(emotions angry, disgust, fear, happy, neutral, ps, sad)")
    speaker = m.group(1).upper()
    folder = _FOLDER_RE.match(path.parent.name)
    if folder:
        folder_emotion = _emotion(folder.group(2))
        if folder.group(1).upper() != speaker or (folder_emotion is not False and folder_emotion != emotion):
            return f"name says {speaker} {m.group(3)} but the folder {path.parent.name} says otherwise (mislabelled?)"
    return None if emotion is None else Clip(path, emotion, f"tess-{speaker}", NAME, sex="female")
