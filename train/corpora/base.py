"""What every corpus module shares: the clip and result types, the one-line data error, the audio
checks that screen out unusable files, provenance, and the per-run audio cache.

Unusable audio (Git LFS pointers, wrong container, truncated or undecodable clips, silence) is
skipped and listed with a reason, never fed to training.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Protocol

import numpy as np
import soundfile as sf

from models.audio_file import read_mono_16k
from models.labels import EMOTIONS

LFS_MAGIC = b"version https://git-lfs"
SILENCE_RMS_FLOOR = 1e-4  # about -80 dBFS: digital silence or a dead microphone
# suffix -> (magic bytes at offset 0, what the file should be); anything else must be RIFF/WAVE
_CONTAINERS = {".opus": (b"OggS", "an Ogg Opus file"), ".flac": (b"fLaC", "a FLAC file")}


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

    def extend(self, other: "LoadResult") -> None:
        """Append another corpus's clips, skips, missing files and decoded waves."""
        self.clips += other.clips
        self.skipped += other.skipped
        self.missing += other.missing
        self.unmapped_labels += other.unmapped_labels
        self.waves.update(other.waves)

    def skip_report(self) -> str:
        lines = [f"skipped {len(self.skipped)} file(s), {len(self.missing)} listed in the manifest are missing"]
        lines += [f"  skipped {s.path}: {s.reason}" for s in self.skipped]
        lines += [f"  missing {m}" for m in self.missing[:50]]
        if len(self.missing) > 50:
            lines.append(f"  ... and {len(self.missing) - 50} more missing")
        return "\n".join(lines)


@dataclass(frozen=True)
class LoadOptions:
    """What the command line may ask of a corpus loader; each corpus uses the fields that apply.

    manifest: CREMA-D audio_manifest.csv or flac_manifest.csv to verify the files against.
    calm_as_neutral: RAVDESS calm and CSV "calm" labels count as neutral (otherwise dropped).
    progress: show a progress bar where a loader decodes every clip (CREMA-D).
    """

    manifest: Path | None = None
    calm_as_neutral: bool = False
    progress: bool = True


class CorpusModule(Protocol):
    """What a module in train/corpora/ provides (the registry imports it by name)."""

    NAME: str  # the --dataset name
    LAYOUT: str  # the folder layout it reads, one line (used in error messages)
    LABELS: Mapping[str, str]  # the corpus's own label code -> models.labels class

    def load(self, root: Path, options: LoadOptions = LoadOptions()) -> LoadResult: ...


# ------------------------------------------------------------------ audio checks
def header_problem(path: Path) -> str | None:
    """Why the file's first bytes are not the audio its suffix says (LFS pointer, wrong container,
    truncated WAV), or None."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    if head.startswith(LFS_MAGIC):
        return "Git LFS pointer file, not audio (run `git lfs pull`)"
    magic, what = _CONTAINERS.get(path.suffix.lower(), (None, None))
    if magic is not None:
        return None if head.startswith(magic) else f"not {what}"
    if not head.startswith(b"RIFF") or head[8:12] != b"WAVE":
        return "not a RIFF/WAVE file"
    declared = declared_wav_bytes(path)
    if declared is not None and declared > size:
        return f"truncated: header declares {declared} bytes, file has {size}"
    return None


def silence_problem(wave: np.ndarray, silence_rms_floor: float = SILENCE_RMS_FLOOR) -> str | None:
    """'silent (...)' when the RMS of float samples (any shape) is below the floor, else None."""
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    return f"silent (RMS {rms:.2e} below {silence_rms_floor:.0e})" if rms < silence_rms_floor else None


def audio_problem(path: Path, silence_rms_floor: float = SILENCE_RMS_FLOOR) -> str | None:
    """Why the file cannot be used as training audio, or None when it is fine."""
    problem = header_problem(path)
    if problem:
        return problem
    try:
        audio, _ = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        return f"cannot be decoded ({exc})"
    if audio.size == 0:
        return "no samples"
    return silence_problem(audio, silence_rms_floor)


def declared_wav_bytes(path: Path) -> int | None:
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


def check_folder(root: Path, layout: str) -> Path:
    """`root` as a Path; DataError when it is not a folder (`layout`: what it should hold)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist (expected {layout})")
    return root


def audio_files(root: Path, suffixes: tuple[str, ...] = (".wav",)) -> list[Path]:
    """Files below `root` with one of `suffixes`, sorted; macOS resource forks (``._name``), which travel
    with many copies of these corpora and hold no audio, are left out."""
    return sorted(p for suffix in suffixes for p in root.rglob(f"*{suffix}") if not p.name.startswith("._"))


def screen(candidates: list[Clip], result: LoadResult) -> None:
    """Add each candidate to result.clips when its audio is usable, else to result.skipped with why."""
    for clip in candidates:
        problem = audio_problem(clip.path)
        if problem:
            result.skipped.append(SkippedFile(str(clip.path), problem))
        else:
            result.clips.append(clip)


def load_named_files(root: Path, title: str, layout: str, clip_of: Callable[[Path], Clip | str | None],
                     suffixes: tuple[str, ...] = (".wav",)) -> LoadResult:
    """The corpora whose file names carry the labels: every audio file below `root` goes through
    `clip_of(path)` -> its Clip, a reason to skip it (str), or None when its class is dropped by design;
    the clips are then screened. DataError when no file gives a clip (title: the corpus, in messages)."""
    root = check_folder(root, layout)
    result = LoadResult([])
    candidates = []
    for path in audio_files(root, suffixes):
        outcome = clip_of(path)
        if isinstance(outcome, str):
            result.skipped.append(SkippedFile(str(path), outcome))
        elif outcome is not None:
            candidates.append(outcome)
    if not candidates:
        raise DataError(f"no {title} clips in {root} (expected {layout})")
    screen(candidates, result)
    return result


# ------------------------------------------------------------------ what the clips add up to
def class_counts(clips: list[Clip]) -> dict[str, int]:
    counts = {c: 0 for c in EMOTIONS}
    for clip in clips:
        counts[clip.label] += 1
    return counts


def provenance(clips: list[Clip], names: list[str], roots: list[Path]) -> dict:
    """Data provenance for a bundle's JSON: which files, speakers and classes a model saw."""
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
    """Reads clips as float32 mono 16 kHz (models.audio_file.read_mono_16k), each file once per run.

    preloaded: path -> samples a loader already decoded (LoadResult.waves); those are not read again.
    """

    def __init__(self, preloaded: dict[Path, np.ndarray] | None = None) -> None:
        self._waves: dict[Path, np.ndarray] = dict(preloaded or {})

    def load(self, path: Path) -> np.ndarray:
        """Returns float32 [samples] at 16 kHz."""
        wave = self._waves.get(path)
        if wave is None:
            wave = read_mono_16k(path)
            self._waves[path] = wave
        return wave
