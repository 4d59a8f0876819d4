"""Dataset loaders: every corpus becomes a list of `Clip`s labelled with the six CREMA-D classes.

Supported layouts:
* ``crema-d``: the official ``AudioWAV`` folder or the lossless ``AudioFLAC`` copy
  (``ActorID_Sentence_Emotion_Level.wav|.flac``), optionally verified against ``audio_manifest.csv``
  or ``flac_manifest.csv``; see train/crema_d.py.
* ``emodb``: the shared layout (``labels.csv`` + ``wav/``) or a plain folder of ``SSTTTEv.wav`` files;
  boredom is dropped.
* ``ravdess``: ``MM-VC-EM-IN-ST-RE-AC.wav`` names; calm and surprised are dropped.
* ``csv``: a CSV file (or a folder holding ``labels.csv``) with columns ``file,label,speaker``.
* ``tess``, ``savee``, ``iemocap``: the layouts those corpora ship in; see train/corpora.py.

Unusable audio (Git LFS pointers, non-RIFF files, truncated or undecodable clips, silence) is
skipped and listed with a reason, never fed to training.
"""
from __future__ import annotations

import csv
import hashlib
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from models.labels import (CREMA_D_CODES, EMODB_CODES, EMOTIONS, RAVDESS_CODES,
                           normalise_label)

SAMPLE_RATE_HZ = 16_000
DATASET_NAMES = ("crema-d", "emodb", "ravdess", "csv", "tess", "savee", "iemocap")
LFS_MAGIC = b"version https://git-lfs"
SILENCE_RMS_FLOOR = 1e-4  # about -80 dBFS: digital silence or a dead microphone


class DataError(ValueError):
    """A user-facing data problem (wrong folder, missing class...); the message is one clear line."""


@dataclass(frozen=True)
class Clip:
    """One labelled recording. label is one of models.labels.EMOTIONS."""

    path: Path
    label: str
    speaker: str
    dataset: str
    sex: str | None = None  # "male" / "female" where the corpus says (fold sex balance), else None


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


@dataclass
class LoadResult:
    """Clips that passed every check, plus what was skipped and why.

    waves: float32 16 kHz [T] samples of clips a loader already decoded while checking them
    (path -> samples); AudioCache starts from these so no clip is decoded twice.
    """

    clips: list[Clip]
    skipped: list[SkippedFile] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unmapped_labels: list[str] = field(default_factory=list)  # csv: raw label of each row with no class
    waves: dict[Path, np.ndarray] = field(default_factory=dict)

    def class_counts(self) -> dict[str, int]:
        return class_counts(self.clips)

    def skip_report(self) -> str:
        lines = [f"skipped {len(self.skipped)} file(s), {len(self.missing)} listed in the manifest are missing"]
        lines += [f"  skipped {s.path}: {s.reason}" for s in self.skipped]
        lines += [f"  missing {m}" for m in self.missing[:50]]
        if len(self.missing) > 50:
            lines.append(f"  ... and {len(self.missing) - 50} more missing")
        return "\n".join(lines)


# ------------------------------------------------------------------ file-name parsers
@dataclass(frozen=True)
class CremaName:
    actor: str
    sentence: str
    emotion: str  # CREMA-D class name
    level: str


@dataclass(frozen=True)
class EmodbName:
    speaker: str
    text: str
    emotion: str | None  # None for boredom (no CREMA-D class)
    version: str


@dataclass(frozen=True)
class RavdessName:
    actor: str
    emotion: str | None  # None for calm / surprised
    intensity: str
    statement: str
    repetition: str


_CREMA_RE = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})\.(?:wav|flac)$")
_EMODB_RE = re.compile(r"^(\d{2})([a-z]\d{2})([WLEAFTN])([a-z])\.wav$")
_RAVDESS_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})\.wav$")


def parse_crema_name(name: str) -> CremaName | None:
    """'1001_DFA_ANG_XX.wav' (or .flac) -> CremaName; None when the name does not follow the pattern."""
    m = _CREMA_RE.match(name)
    if not m or m.group(3) not in CREMA_D_CODES:
        return None
    return CremaName(m.group(1), m.group(2), CREMA_D_CODES[m.group(3)], m.group(4))


def parse_emodb_name(name: str) -> EmodbName | None:
    """'03a01Wa.wav' -> EmodbName(speaker '03', text 'a01', 'anger', 'a')."""
    m = _EMODB_RE.match(name)
    if not m:
        return None
    return EmodbName(m.group(1), m.group(2), EMODB_CODES.get(m.group(3)), m.group(4))


def parse_ravdess_name(name: str, calm_as_neutral: bool = False) -> RavdessName | None:
    """'03-01-05-01-01-01-01.wav' -> RavdessName(actor '01', 'anger', ...); calm (02) is neutral
    only with calm_as_neutral."""
    m = _RAVDESS_RE.match(name)
    if not m:
        return None
    emotion = "neutral" if calm_as_neutral and m.group(3) == "02" else RAVDESS_CODES.get(m.group(3))
    return RavdessName(m.group(7), emotion, m.group(4), m.group(5), m.group(6))


# ------------------------------------------------------------------ audio checks
def wav_problem(path: Path, silence_rms_floor: float = SILENCE_RMS_FLOOR) -> str | None:
    """Why the file cannot be used as training audio, or None when it is fine."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if head.startswith(LFS_MAGIC):
        return "Git LFS pointer file, not audio (run `git lfs pull`)"
    if not head.startswith(b"RIFF") or head[8:12] != b"WAVE":
        return "not a RIFF/WAVE file"
    declared = _declared_wav_bytes(path)
    if declared is not None and declared > size:
        return f"truncated: header declares {declared} bytes, file has {size}"
    try:
        audio, _ = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        return f"cannot be decoded ({exc})"
    if audio.size == 0:
        return "no samples"
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    if rms < silence_rms_floor:
        return f"silent (RMS {rms:.2e} below {silence_rms_floor:.0e})"
    return None


def _declared_wav_bytes(path: Path) -> int | None:
    """End offset of the data chunk as the header declares it (None when there is no data chunk)."""
    with open(path, "rb") as f:
        f.seek(12)
        offset = 12
        while True:
            header = f.read(8)
            if len(header) < 8:
                return None
            chunk_id, chunk_size = header[:4], struct.unpack("<I", header[4:])[0]
            offset += 8
            if chunk_id == b"data":
                return offset + chunk_size
            offset += chunk_size + (chunk_size & 1)
            f.seek(offset)


# ------------------------------------------------------------------ loaders
def _check_folder(root: Path, what: str) -> None:
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist (expected {what})")


def _screen(candidates: list[tuple[Path, Clip]], result: LoadResult) -> None:
    for path, clip in candidates:
        problem = wav_problem(path)
        if problem:
            result.skipped.append(SkippedFile(str(path), problem))
        else:
            result.clips.append(clip)


def load_emodb(root: Path) -> LoadResult:
    """Shared EmoDB layout (labels.csv + wav/) or a plain folder of SSTTTEv.wav files."""
    root = Path(root)
    _check_folder(root, "an EmoDB folder with labels.csv + wav/ or files like 03a01Wa.wav")
    result = LoadResult([])
    candidates = []
    labels_csv = root / "labels.csv"
    if labels_csv.is_file():
        with open(labels_csv, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or not {"file", "speaker", "emotion"} <= set(rows[0]):
            raise DataError(f"{labels_csv} needs the columns file, speaker and emotion")
        for row in rows:
            label = normalise_label(row["emotion"])
            path = root / row["file"]
            if label is None:
                continue  # boredom has no CREMA-D class
            if not path.is_file():
                result.missing.append(str(path))
                continue
            candidates.append((path, Clip(path, label, row["speaker"].zfill(2), "emodb")))
    else:
        for path in sorted(root.rglob("*.wav")):
            parsed = parse_emodb_name(path.name)
            if parsed is None:
                result.skipped.append(SkippedFile(str(path), "name is not an EmoDB SSTTTEv.wav name"))
            elif parsed.emotion is not None:
                candidates.append((path, Clip(path, parsed.emotion, parsed.speaker, "emodb")))
    if not candidates:
        raise DataError(f"no EmoDB clips in {root} (expected labels.csv + wav/ or files like 03a01Wa.wav)")
    _screen(candidates, result)
    return result


def load_ravdess(root: Path, calm_as_neutral: bool = False) -> LoadResult:
    """RAVDESS files anywhere below `root` (Actor_XX folders or flat)."""
    root = Path(root)
    _check_folder(root, "a RAVDESS folder with files like 03-01-05-01-01-01-01.wav")
    result = LoadResult([])
    candidates = []
    for path in sorted(root.rglob("*.wav")):
        parsed = parse_ravdess_name(path.name, calm_as_neutral)
        if parsed is None:
            result.skipped.append(SkippedFile(str(path), "name is not a RAVDESS MM-VC-EM-IN-ST-RE-AC.wav name"))
        elif parsed.emotion is not None:
            candidates.append((path, Clip(path, parsed.emotion, f"ravdess-{parsed.actor}", "ravdess")))
    if not candidates:
        raise DataError(f"no RAVDESS clips in {root} (expected files like 03-01-05-01-01-01-01.wav)")
    _screen(candidates, result)
    return result


def load_csv(root: Path, calm_as_neutral: bool = False) -> LoadResult:
    """A CSV with columns file,label,speaker (file relative to the CSV's folder), or a folder holding labels.csv.

    Labels go through models.labels.normalise_label (angry/anger, joy/happiness/happy ...)."""
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
        label = normalise_label(row["label"], calm_as_neutral)
        if label is None:
            result.unmapped_labels.append(row["label"])
            result.skipped.append(SkippedFile(str(path), f"label {row['label']!r} is not one of {EMOTIONS}"))
        elif not path.is_file():
            result.missing.append(str(path))
        else:
            candidates.append((path, Clip(path, label, row["speaker"], "csv")))
    _screen(candidates, result)
    return result


def parse_dataset_names(values: list[str]) -> list[str]:
    """['emodb+ravdess'] or ['emodb,ravdess'] or ['emodb', 'ravdess'] -> ['emodb', 'ravdess']."""
    names = [n.strip() for v in values for n in re.split(r"[+,]", v) if n.strip()]
    for name in names:
        if name not in DATASET_NAMES:
            raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASET_NAMES)}")
    return names


def load_datasets(names: list[str], roots: list[Path], manifest: Path | None = None,
                  require_all_classes: bool = True, calm_as_neutral: bool = False) -> LoadResult:
    """Load and concatenate several datasets (names[i] lives in roots[i]).

    calm_as_neutral: RAVDESS calm and CSV "calm" labels count as neutral (otherwise dropped)."""
    if len(names) != len(roots):
        raise DataError(f"got {len(names)} dataset name(s) but {len(roots)} --data folder(s); give one folder per dataset")
    total = LoadResult([])
    for name, root in zip(names, roots):
        if name == "crema-d":
            from train.crema_d import load_crema_d  # imports this module's types

            part = load_crema_d(root, manifest)
        elif name == "emodb":
            part = load_emodb(root)
        elif name == "ravdess":
            part = load_ravdess(root, calm_as_neutral)
        elif name == "csv":
            part = load_csv(root, calm_as_neutral)
        else:
            from train.corpora import load_corpus  # tess, savee, iemocap; imports this module's types

            part = load_corpus(name, root)
        total.clips += part.clips
        total.skipped += part.skipped
        total.missing += part.missing
        total.unmapped_labels += part.unmapped_labels
        total.waves.update(part.waves)
    if require_all_classes:
        counts = class_counts(total.clips)
        absent = [c for c in EMOTIONS if counts[c] == 0]
        if absent:
            raise DataError(f"class(es) {', '.join(absent)} have no usable clips in {', '.join(map(str, roots))}")
    return total


def class_counts(clips: list[Clip]) -> dict[str, int]:
    counts = {c: 0 for c in EMOTIONS}
    for clip in clips:
        counts[clip.label] += 1
    return counts


def provenance(clips: list[Clip], names: list[str], roots: list[Path]) -> dict:
    """Data provenance for bundle.json: which files, speakers and classes a model saw."""
    files = sorted(str(c.path.resolve()) for c in clips)
    return {
        "dataset": "+".join(names),
        "root": [str(Path(r).resolve()) for r in roots],
        "files": len(files),
        "speakers": sorted({c.speaker for c in clips}),
        "class_counts": class_counts(clips),
        "sha256_file_list": hashlib.sha256("\n".join(files).encode()).hexdigest(),
    }


class AudioCache:
    """Reads clips as float32 mono 16 kHz (soxr resampling), each file once per run.

    preloaded: path -> samples a loader already decoded (LoadResult.waves); those are not read again.
    """

    def __init__(self, preloaded: dict[Path, np.ndarray] | None = None) -> None:
        self._waves: dict[Path, np.ndarray] = dict(preloaded or {})

    def load(self, path: Path) -> np.ndarray:
        """Returns float32 [samples] at 16 kHz."""
        wave = self._waves.get(path)
        if wave is None:
            wave = load_wave_16k(path)
            self._waves[path] = wave
        return wave


def load_wave_16k(path: Path) -> np.ndarray:
    """Any soundfile-readable file -> float32 mono [samples] at 16 kHz."""
    import soxr

    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE_HZ:
        mono = soxr.resample(mono, rate, SAMPLE_RATE_HZ, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def __getattr__(name: str):
    """`from train.datasets import load_crema_d` keeps working; it lives in train/crema_d.py."""
    if name == "load_crema_d":
        from train.crema_d import load_crema_d

        return load_crema_d
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
