"""RAVDESS speech (``--dataset ravdess``; English, acted, 24 actors).

Layout: ``MM-VC-EM-IN-ST-RE-AC`` names anywhere below the root (``Actor_NN/`` folders or flat), as
the official 48 kHz WAV files (``03-01-05-01-01-01-01.wav``) or as the shared 16 kHz Ogg Opus copy
(``../shared/data/ravdess-speech/Actor_NN/*.opus``); the names carry the labels.
Labels: the emotion field EM, models.labels.RAVDESS_CODES; calm (02) and surprised (08) have no
CREMA-D class and are dropped, unless calm_as_neutral maps calm to neutral.
Speaker: ``ravdess-AC`` from the actor field; sex from the actor id (odd ids are male).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from models.labels import RAVDESS_CODES
from train.corpora.base import Clip, LoadOptions, LoadResult, load_named_files

NAME = "ravdess"
LAYOUT = "a RAVDESS folder with files like Actor_01/03-01-05-01-01-01-01.wav or .opus"
LABELS = RAVDESS_CODES
CALM_CODE = "02"
_NAME_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})\.(?:wav|opus)$")


@dataclass(frozen=True)
class RavdessName:
    actor: str
    emotion: str | None  # None for calm / surprised
    intensity: str
    statement: str
    repetition: str


def parse_ravdess_name(name: str, calm_as_neutral: bool = False) -> RavdessName | None:
    """'03-01-05-01-01-01-01.wav' (or .opus) -> RavdessName(actor '01', 'anger', ...); calm (02) is
    neutral only with calm_as_neutral."""
    m = _NAME_RE.match(name)
    if not m:
        return None
    emotion = "neutral" if calm_as_neutral and m.group(3) == CALM_CODE else LABELS.get(m.group(3))
    return RavdessName(m.group(7), emotion, m.group(4), m.group(5), m.group(6))


def load(root: Path, options: LoadOptions = LoadOptions()) -> LoadResult:
    """RAVDESS .wav and .opus files below `root`, screened for unusable audio (options.calm_as_neutral)."""

    def clip_of(path: Path) -> Clip | str | None:
        parsed = parse_ravdess_name(path.name, options.calm_as_neutral)
        if parsed is None:
            return "name is not a RAVDESS MM-VC-EM-IN-ST-RE-AC.wav name"
        if parsed.emotion is None:
            return None
        sex = "male" if int(parsed.actor) % 2 else "female"
        return Clip(path, parsed.emotion, f"ravdess-{parsed.actor}", NAME, sex)

    return load_named_files(root, "RAVDESS", LAYOUT, clip_of, (".wav", ".opus"))
