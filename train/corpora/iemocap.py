"""IEMOCAP (``--dataset iemocap``; English, acted dyadic sessions).

Layout: ``IEMOCAP_full_release`` (or one ``SessionN`` folder): ``Session1..5/dialog/EmoEvaluation/*.txt``
label files and ``Session*/sentences/wav/<dialog>/<turn>.wav``.
Labels: the consensus category of each turn, models.labels.IEMOCAP_CODES (ang, hap+exc, neu, sad);
frustration, surprise, fear, disgust, other and no agreement are dropped by convention.
Speaker: a session and a sex, ``iemocap-Ses01M`` for the male actor of session 1 (from the turn name
``Ses01F_impro01_M003``), so folds can be sex-balanced.
"""
from __future__ import annotations

import re
from pathlib import Path

from models.labels import IEMOCAP_CODES
from train.corpora.base import Clip, DataError, LoadOptions, LoadResult, SkippedFile, check_folder, screen

NAME = "iemocap"
LAYOUT = "IEMOCAP_full_release with Session1..Session5"
LABELS = IEMOCAP_CODES
# "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]"
_LINE_RE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(\S+)\s+(\S+)\s+\[")
_TURN_RE = re.compile(r"^Ses(\d{2})[FM]_.+_([FM])\d{3}$")
_SESSION_RE = re.compile(r"^Session\d$")
_CATEGORIES = {"ang", "hap", "exc", "neu", "sad", "fru", "sur", "fea", "dis", "oth", "xxx"}


def _sessions(root: Path) -> list[Path]:
    if _SESSION_RE.match(root.name):
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and _SESSION_RE.match(p.name))


def load(root: Path, options: LoadOptions = LoadOptions()) -> LoadResult:
    """Labelled IEMOCAP turns with audio below `root` (options do not apply), screened for unusable audio."""
    root = check_folder(root, LAYOUT)
    sessions = _sessions(root)
    if not sessions:
        raise DataError(f"no IEMOCAP sessions in {root} (expected Session1..Session5 with "
                        "dialog/EmoEvaluation/*.txt and sentences/wav/)")
    result = LoadResult([])
    candidates = []
    for session in sessions:
        labelled: set[str] = set()
        for label_file in sorted((session / "dialog" / "EmoEvaluation").glob("*.txt")):
            if label_file.name.startswith("._"):
                continue
            for lineno, line in enumerate(label_file.read_text(errors="replace").splitlines(), 1):
                m = _LINE_RE.match(line)
                if not m:
                    continue  # evaluator detail lines (C-E1:, A-F1: ...) and blank lines
                turn, code = m.group(1), m.group(2)
                labelled.add(turn)  # even when unusable: its audio is reported once, via this line
                speaker = _TURN_RE.match(turn)
                if speaker is None or code not in _CATEGORIES:
                    result.skipped.append(SkippedFile(f"{label_file}:{lineno}", f"turn {turn!r} / category "
                                                      f"{code!r} is not an IEMOCAP turn name and category "
                                                      "(ang, hap, exc, neu, sad ...)"))
                    continue
                label = LABELS.get(code)
                if label is None:
                    continue  # frustration, surprise, fear, disgust, other, no agreement: dropped by convention
                wav = session / "sentences" / "wav" / turn.rsplit("_", 1)[0] / f"{turn}.wav"
                if not wav.is_file():
                    result.missing.append(str(wav))
                    continue
                candidates.append(Clip(wav, label, f"iemocap-Ses{speaker.group(1)}{speaker.group(2)}", NAME,
                                       sex="female" if speaker.group(2) == "F" else "male"))
        for wav in sorted((session / "sentences" / "wav").glob("*/*.wav")):
            if not wav.name.startswith("._") and wav.stem not in labelled:
                result.skipped.append(SkippedFile(str(wav), "no label for this turn in dialog/EmoEvaluation"))
    if not candidates:
        raise DataError(f"no labelled IEMOCAP turns (ang, hap, exc, neu, sad) with audio in {root}")
    screen(candidates, result)
    return result
