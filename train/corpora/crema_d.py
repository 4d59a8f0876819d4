"""CREMA-D (``--dataset crema-d``): the official ``AudioWAV`` folder or the lossless ``AudioFLAC`` copy.

Layout: ``ActorID_Sentence_Emotion_Level.wav`` or ``.flac`` in one folder (``1001_DFA_ANG_XX.wav``).
Labels: the emotion code of the name (ANG, DIS, FEA, HAP, NEU, SAD), models.labels.CREMA_D_CODES.
Speaker: the actor id (``1001``); sex from ``VideoDemographics.csv`` next to the audio folder or one
level up, so the fold builder can balance sex across folds.

Two manifests verify what is on disk (``--manifest``):
* ``audio_manifest.csv`` (file,actor,...,bytes,sha256): size and sha256 of each official WAV file;
* ``flac_manifest.csv`` (file,wav_file,...,frames,pcm_sha256,...): frame count and sha256 of the
  decoded samples as little-endian int16, which is the same for a FLAC clip and the WAV it came from,
  so it verifies either folder.

Every clip is decoded exactly once: the check (header, decode, sample hash, silence) keeps the decoded
float32 16 kHz samples in ``LoadResult.waves`` so training does not decode again. A clip that fails a
check is skipped with one line saying why; nothing is dropped silently.
"""
from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from models.audio_file import to_mono_16k
from models.labels import CREMA_D_CODES
from train.corpora.base import (SILENCE_RMS_FLOOR, Clip, DataError, LoadOptions, LoadResult, SkippedFile,
                                check_folder, header_problem, silence_problem)

NAME = "crema-d"
LAYOUT = "the CREMA-D AudioWAV or AudioFLAC folder with files like 1001_DFA_ANG_XX.wav"
LABELS = CREMA_D_CODES
DEMOGRAPHICS_CSV = "VideoDemographics.csv"
_NAME_HINT = "ActorID_Sentence_Emotion_Level.wav or .flac, e.g. 1001_DFA_ANG_XX.wav, as in the official AudioWAV folder"
_NAME_RE = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})\.(?:wav|flac)$")


@dataclass(frozen=True)
class CremaName:
    actor: str
    sentence: str
    emotion: str  # CREMA-D class name
    level: str


def parse_crema_name(name: str) -> CremaName | None:
    """'1001_DFA_ANG_XX.wav' (or .flac) -> CremaName; None when the name does not follow the pattern."""
    m = _NAME_RE.match(name)
    if not m or m.group(3) not in LABELS:
        return None
    return CremaName(m.group(1), m.group(2), LABELS[m.group(3)], m.group(4))


def load(root: Path, options: LoadOptions = LoadOptions()) -> LoadResult:
    """CREMA-D clips (.wav and/or .flac) in `root`, checked and decoded once.

    options.manifest: audio_manifest.csv (file size + sha256) or flac_manifest.csv (decoded int16 sha256);
    files it does not list are skipped, files it lists that are absent go to `missing`.
    Returns clips labelled with the six classes, speaker = actor id, sex from VideoDemographics.csv.
    """
    from tqdm import tqdm

    root, manifest = check_folder(root, LAYOUT), options.manifest
    files = sorted([*root.glob("*.wav"), *root.glob("*.flac")])
    parsed = {p: parse_crema_name(p.name) for p in files}
    if not any(parsed.values()):
        raise DataError(f"no CREMA-D files in {root} (expected {_NAME_HINT})")
    rows, kind = _read_manifest(manifest) if manifest else ({}, None)
    if rows and not any(p.name in rows for p in files):
        raise DataError(f"none of the {len(files)} files in {root} is listed in {manifest} (use flac_manifest.csv "
                        "for AudioFLAC, audio_manifest.csv or flac_manifest.csv for AudioWAV)")
    sex = read_demographics([root, root.parent, *([Path(manifest).parent] if manifest else [])])
    result = LoadResult([])
    for path in tqdm(files, desc="checking CREMA-D clips", unit="clip", disable=not options.progress):
        name = parsed[path]
        if name is None:
            result.skipped.append(SkippedFile(str(path), f"name is not {_NAME_HINT}"))
            continue
        row = rows.get(path.name)
        if rows and row is None:
            result.skipped.append(SkippedFile(str(path), "not listed in the manifest"))
            continue
        problem = _file_mismatch(path, row) if kind == "file" else None
        wave = None
        if problem is None:
            wave, problem = decode_checked(path, row if kind == "pcm" else None)
        if problem:
            result.skipped.append(SkippedFile(str(path), problem))
            continue
        result.clips.append(Clip(path, name.emotion, name.actor, NAME, sex.get(name.actor)))
        result.waves[path] = wave
    present = {p.name for p in files}
    listed = {row["file"]: row for row in rows.values()}  # one entry per manifest row
    result.missing = sorted(f for f, row in listed.items()
                            if f not in present and row.get("wav_file", f) not in present)
    return result


def _read_manifest(manifest: Path) -> tuple[dict[str, dict[str, str]], str]:
    """-> (rows by file name, kind): kind "file" checks bytes+sha256 of the file, "pcm" the decoded samples.

    A pcm manifest is indexed by both its FLAC name and its wav_file name (same samples)."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise DataError(f"manifest {manifest} does not exist (expected audio_manifest.csv or flac_manifest.csv)")
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = set(rows[0]) if rows else set()
    if {"file", "pcm_sha256"} <= columns:
        by_name = {row["file"]: row for row in rows}
        by_name.update({row["wav_file"]: row for row in rows if row.get("wav_file")})
        return by_name, "pcm"
    if {"file", "bytes", "sha256"} <= columns:
        return {row["file"]: row for row in rows}, "file"
    raise DataError(f"manifest {manifest} needs the columns file,bytes,sha256 (audio_manifest.csv) "
                    "or file,pcm_sha256 (flac_manifest.csv)")


def _file_mismatch(path: Path, row: dict[str, str]) -> str | None:
    """Size / sha256 of the file itself against audio_manifest.csv."""
    size = path.stat().st_size
    if row.get("bytes") and int(row["bytes"]) != size:
        return f"size {size} bytes differs from the manifest's {row['bytes']}"
    if row.get("sha256"):
        if hashlib.sha256(path.read_bytes()).hexdigest() != row["sha256"].lower():
            return "sha256 differs from the manifest"
    return None


def pcm_sha256(samples: np.ndarray) -> str:
    """sha256 of int16 samples [T] or [T, C] (interleaved) as little-endian bytes, as in flac_manifest.csv."""
    return hashlib.sha256(np.ascontiguousarray(samples, dtype="<i2").tobytes()).hexdigest()


def decode_checked(path: Path, row: dict[str, str] | None = None,
                   silence_rms_floor: float = SILENCE_RMS_FLOOR) -> tuple[np.ndarray | None, str | None]:
    """Decode one clip and check it -> (float32 mono 16 kHz [T], None) or (None, why it is unusable).

    Checks: Git LFS pointer, container magic (RIFF/WAVE or fLaC), truncated WAV, decodable, not empty,
    frames and pcm_sha256 against a flac_manifest.csv `row` when given, not silent. Decodes as int16
    (what pcm_sha256 hashes), then converts like models.audio_file.read_mono_16k: the same samples.
    """
    problem = header_problem(path)
    if problem:
        return None, problem
    try:
        samples, rate = sf.read(str(path), dtype="int16", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        return None, f"cannot be decoded ({exc})"
    if samples.size == 0:
        return None, "no samples"
    if row is not None:
        if row.get("frames") and int(row["frames"]) != samples.shape[0]:
            return None, f"{samples.shape[0]} frames decoded, the manifest says {row['frames']}"
        if pcm_sha256(samples) != row["pcm_sha256"].lower():
            return None, "decoded samples differ from the manifest's pcm_sha256"
    audio = samples.astype(np.float32) / np.float32(32768.0)  # soundfile's own int16 -> float32 scaling
    problem = silence_problem(audio, silence_rms_floor)
    if problem:
        return None, problem
    return to_mono_16k(audio, rate), None


def read_demographics(folders: list[Path]) -> dict[str, str]:
    """Actor id -> "male" / "female" from the first VideoDemographics.csv found in `folders` ({} if none)."""
    for folder in folders:
        table = Path(folder) / DEMOGRAPHICS_CSV
        if table.is_file():
            with open(table, newline="") as f:
                return {row["ActorID"].strip(): row["Sex"].strip().lower()
                        for row in csv.DictReader(f) if row.get("ActorID") and row.get("Sex")}
    return {}
