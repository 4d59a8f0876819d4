"""CREMA-D loader: the official ``AudioWAV`` folder or the lossless ``AudioFLAC`` copy.

Two manifests verify what is on disk (pass either with ``--manifest``):
* ``audio_manifest.csv`` (file,actor,...,bytes,sha256): size and sha256 of each official WAV file;
* ``flac_manifest.csv`` (file,wav_file,...,frames,pcm_sha256,...): frame count and sha256 of the
  decoded samples as little-endian int16, which is the same for a FLAC clip and the WAV it came from,
  so it verifies either folder.

Every clip is decoded exactly once: the check (header, decode, sample hash, silence) keeps the decoded
float32 16 kHz samples in ``LoadResult.waves`` so training does not decode again. A clip that fails a
check is skipped with one line saying why; nothing is dropped silently.
Actor sex comes from ``VideoDemographics.csv`` (next to the audio folder or one level up) so the
fold builder can balance sex across folds.
"""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import soundfile as sf

from train.datasets import (LFS_MAGIC, SAMPLE_RATE_HZ, SILENCE_RMS_FLOOR, Clip, DataError, LoadResult,
                            SkippedFile, _declared_wav_bytes, parse_crema_name)

DEMOGRAPHICS_CSV = "VideoDemographics.csv"
_NAME_HINT = "ActorID_Sentence_Emotion_Level.wav or .flac, e.g. 1001_DFA_ANG_XX.wav, as in the official AudioWAV folder"


def load_crema_d(root: Path, manifest: Path | None = None, progress: bool = True) -> LoadResult:
    """CREMA-D clips (.wav and/or .flac) in `root`, checked and decoded once.

    manifest: audio_manifest.csv (file size + sha256) or flac_manifest.csv (decoded int16 sha256);
    files it does not list are skipped, files it lists that are absent go to `missing`.
    Returns clips labelled with the six classes, speaker = actor id, sex from VideoDemographics.csv.
    """
    from tqdm import tqdm

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist (expected the CREMA-D AudioWAV or AudioFLAC folder "
                        "with files like 1001_DFA_ANG_XX.wav)")
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
    for path in tqdm(files, desc="checking CREMA-D clips", unit="clip", disable=not progress):
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
        result.clips.append(Clip(path, name.emotion, name.actor, "crema-d", sex.get(name.actor)))
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
    frames and pcm_sha256 against a flac_manifest.csv `row` when given, not silent.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as exc:
        return None, f"unreadable ({exc.strerror})"
    if head.startswith(LFS_MAGIC):
        return None, "Git LFS pointer file, not audio (run `git lfs pull`)"
    if path.suffix.lower() == ".flac":
        if not head.startswith(b"fLaC"):
            return None, "not a FLAC file"
    elif not head.startswith(b"RIFF") or head[8:12] != b"WAVE":
        return None, "not a RIFF/WAVE file"
    else:
        declared, size = _declared_wav_bytes(path), path.stat().st_size
        if declared is not None and declared > size:
            return None, f"truncated: header declares {declared} bytes, file has {size}"
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
    wave = (samples.astype(np.float32) / np.float32(32768.0)).mean(axis=1)
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    if rms < silence_rms_floor:
        return None, f"silent (RMS {rms:.2e} below {silence_rms_floor:.0e})"
    if rate != SAMPLE_RATE_HZ:
        import soxr

        wave = soxr.resample(wave, rate, SAMPLE_RATE_HZ, quality="HQ")
    return np.ascontiguousarray(wave, dtype=np.float32), None


def read_demographics(folders: list[Path]) -> dict[str, str]:
    """Actor id -> "male" / "female" from the first VideoDemographics.csv found in `folders` ({} if none)."""
    for folder in folders:
        table = Path(folder) / DEMOGRAPHICS_CSV
        if table.is_file():
            with open(table, newline="") as f:
                return {row["ActorID"].strip(): row["Sex"].strip().lower()
                        for row in csv.DictReader(f) if row.get("ActorID") and row.get("Sex")}
    return {}
