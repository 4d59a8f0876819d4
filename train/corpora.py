"""Loaders for corpora in the layouts they ship in: TESS, SAVEE and IEMOCAP.

Each returns a `LoadResult` of clips labelled with the six CREMA-D classes (models.labels).
Classes without a CREMA-D counterpart are dropped by design (TESS pleasant surprise, SAVEE
surprise, IEMOCAP frustration/surprise/fear/disgust/other); files whose name or label does not
follow the corpus convention, or disagrees with its folder, are skipped with one line each.

* ``tess``: ``OAF_word_emotion.wav`` / ``YAF_word_emotion.wav`` in speaker_emotion folders
  (``OAF_angry/OAF_back_angry.wav``); the two speakers are OAF and YAF, both women.
* ``savee``: ``DC/a01.wav`` (speaker folders DC, JE, JK, KL; codes a, d, f, h, n, sa, su) or the
  flat ``DC_a01.wav`` variant; all four speakers are men.
* ``iemocap``: ``Session1..5/dialog/EmoEvaluation/*.txt`` label files and
  ``Session*/sentences/wav/<dialog>/<turn>.wav``; ang, hap+exc, neu, sad are kept. A speaker is a
  session and a sex (``Ses01F_impro01_M003`` is the male actor of session 1), so folds can be
  sex-balanced.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from models.labels import IEMOCAP_CODES, SAVEE_CODES, normalise_label
from train.datasets import Clip, DataError, LoadResult, SkippedFile, _check_folder, _screen

# ------------------------------------------------------------------ TESS
_TESS_NAME_RE = re.compile(r"^(OAF|YAF)_([a-z]+)_([a-z_]+)\.wav$", re.IGNORECASE)
_TESS_FOLDER_RE = re.compile(r"^(OAF|YAF)_([a-z_]+)$", re.IGNORECASE)
# Pleasant surprise has no CREMA-D class; files say "ps", folders spell it out.
_TESS_DROPPED = {"ps", "pleasant_surprise", "pleasant_surprised"}


def _tess_emotion(token: str) -> str | None | bool:
    """CREMA-D class of a TESS emotion token; None for pleasant surprise; False when unknown."""
    token = token.lower()
    if token in _TESS_DROPPED:
        return None
    return normalise_label(token) or False


def load_tess(root: Path) -> LoadResult:
    """TESS files anywhere below `root`; a speaker_emotion parent folder must agree with the name."""
    root = Path(root)
    _check_folder(root, "a TESS folder with OAF_angry/OAF_back_angry.wav and the like")
    result = LoadResult([])
    candidates = []
    for path in sorted(root.rglob("*.wav")):
        if path.name.startswith("._"):
            continue  # macOS resource forks travel with many copies of these corpora
        m = _TESS_NAME_RE.match(path.name)
        emotion = _tess_emotion(m.group(3)) if m else False
        if emotion is False:
            result.skipped.append(SkippedFile(str(path), "name is not a TESS OAF|YAF_word_emotion.wav name "
                                              "(emotions angry, disgust, fear, happy, neutral, ps, sad)"))
            continue
        speaker = m.group(1).upper()
        folder = _TESS_FOLDER_RE.match(path.parent.name)
        if folder:
            folder_emotion = _tess_emotion(folder.group(2))
            if folder.group(1).upper() != speaker or (folder_emotion is not False and folder_emotion != emotion):
                result.skipped.append(SkippedFile(str(path), f"name says {speaker} {m.group(3)} but the folder "
                                                  f"{path.parent.name} says otherwise (mislabelled?)"))
                continue
        if emotion is not None:
            candidates.append((path, Clip(path, emotion, f"tess-{speaker}", "tess", sex="female")))
    if not candidates:
        raise DataError(f"no TESS clips in {root} (expected OAF_angry/OAF_back_angry.wav, YAF_sad/YAF_bite_sad.wav ...)")
    _screen(candidates, result)
    return result


# ------------------------------------------------------------------ SAVEE
_SAVEE_NAME_RE = re.compile(r"^(?:([A-Z]{2})_)?([a-z]{1,2})(\d{2})\.wav$")
_SAVEE_SPEAKER_RE = re.compile(r"^[A-Z]{2}$")
_SAVEE_DROPPED = {"su"}  # surprise has no CREMA-D class


def load_savee(root: Path) -> LoadResult:
    """SAVEE speaker folders (DC/a01.wav) or flat DC_a01.wav files anywhere below `root`."""
    root = Path(root)
    _check_folder(root, "a SAVEE folder (AudioData) with DC/a01.wav, JE/sa03.wav and the like")
    result = LoadResult([])
    candidates = []
    for path in sorted(root.rglob("*.wav")):
        if path.name.startswith("._"):
            continue
        m = _SAVEE_NAME_RE.match(path.name)
        code = m.group(2) if m else None
        if code is None or (code not in SAVEE_CODES and code not in _SAVEE_DROPPED):
            result.skipped.append(SkippedFile(str(path), "name is not a SAVEE code+number "
                                              "(a, d, f, h, n, sa or su then two digits, e.g. sa03.wav)"))
            continue
        speaker = m.group(1) or (path.parent.name if _SAVEE_SPEAKER_RE.match(path.parent.name) else None)
        if speaker is None:
            result.skipped.append(SkippedFile(str(path), "no speaker: expected a speaker folder such as DC/ "
                                              "or a name such as DC_a01.wav"))
            continue
        if code in SAVEE_CODES:
            candidates.append((path, Clip(path, SAVEE_CODES[code], f"savee-{speaker}", "savee", sex="male")))
    if not candidates:
        raise DataError(f"no SAVEE clips in {root} (expected DC/a01.wav, JE/sa03.wav ... or DC_a01.wav)")
    _screen(candidates, result)
    return result


# ------------------------------------------------------------------ IEMOCAP
# "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]"
_IEMOCAP_LINE_RE = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(\S+)\s+(\S+)\s+\[")
_IEMOCAP_TURN_RE = re.compile(r"^Ses(\d{2})[FM]_.+_([FM])\d{3}$")
_IEMOCAP_SESSION_RE = re.compile(r"^Session\d$")
_IEMOCAP_CATEGORIES = {"ang", "hap", "exc", "neu", "sad", "fru", "sur", "fea", "dis", "oth", "xxx"}


def _iemocap_sessions(root: Path) -> list[Path]:
    if _IEMOCAP_SESSION_RE.match(root.name):
        return [root]
    return sorted(p for p in root.iterdir() if p.is_dir() and _IEMOCAP_SESSION_RE.match(p.name))


def load_iemocap(root: Path) -> LoadResult:
    """IEMOCAP_full_release (or one SessionN folder): EmoEvaluation labels + sentences/wav."""
    root = Path(root)
    _check_folder(root, "IEMOCAP_full_release with Session1..Session5")
    sessions = _iemocap_sessions(root)
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
                m = _IEMOCAP_LINE_RE.match(line)
                if not m:
                    continue  # evaluator detail lines (C-E1:, A-F1: ...) and blank lines
                turn, code = m.group(1), m.group(2)
                labelled.add(turn)  # even when unusable: its audio is reported once, via this line
                speaker = _IEMOCAP_TURN_RE.match(turn)
                if speaker is None or code not in _IEMOCAP_CATEGORIES:
                    result.skipped.append(SkippedFile(f"{label_file}:{lineno}", f"turn {turn!r} / category "
                                                      f"{code!r} is not an IEMOCAP turn name and category "
                                                      "(ang, hap, exc, neu, sad ...)"))
                    continue
                label = IEMOCAP_CODES.get(code)
                if label is None:
                    continue  # frustration, surprise, fear, disgust, other, no agreement: dropped by convention
                wav = session / "sentences" / "wav" / turn.rsplit("_", 1)[0] / f"{turn}.wav"
                if not wav.is_file():
                    result.missing.append(str(wav))
                    continue
                candidates.append((wav, Clip(wav, label, f"iemocap-Ses{speaker.group(1)}{speaker.group(2)}",
                                             "iemocap", sex="female" if speaker.group(2) == "F" else "male")))
        for wav in sorted((session / "sentences" / "wav").glob("*/*.wav")):
            if not wav.name.startswith("._") and wav.stem not in labelled:
                result.skipped.append(SkippedFile(str(wav), "no label for this turn in dialog/EmoEvaluation"))
    if not candidates:
        raise DataError(f"no labelled IEMOCAP turns (ang, hap, exc, neu, sad) with audio in {root}")
    _screen(candidates, result)
    return result


LOADERS: dict[str, Callable[[Path], LoadResult]] = {"tess": load_tess, "savee": load_savee, "iemocap": load_iemocap}


def load_corpus(name: str, root: Path) -> LoadResult:
    """Load corpus `name` (tess, savee or iemocap) from `root`."""
    return LOADERS[name](root)
