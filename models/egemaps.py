"""eGeMAPS v02 functionals (88 values per clip) from openSMILE, with an on-disk cache.

    egemaps(wave)                         float32 [T] 16 kHz -> float32 [88]
    egemaps_batch(waves)                  list of [T_i]      -> float32 [N, 88]
    cached_egemaps(paths, cache_dir)      audio files        -> float32 [N, 88] (cache keyed by path+mtime+size)

openSMILE fills clips shorter than about 0.1 s with NaN; such clips are
zero-padded (centred) to `min_clip_ms` first, and any value that is still not
finite becomes 0, so callers always get 88 finite numbers.
"""
from __future__ import annotations

import hashlib
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

EGEMAPS_DIM = 88
FEATURE_SET = "eGeMAPSv02"


@dataclass(frozen=True)
class EgemapsConfig:
    """Input rate and the length short clips are padded to before openSMILE sees them."""

    sample_rate_hz: int = 16_000
    min_clip_ms: float = 250.0

    def __post_init__(self) -> None:
        if self.sample_rate_hz <= 0:
            raise ValueError(f"sample_rate_hz must be > 0, got {self.sample_rate_hz}")
        if self.min_clip_ms < 100.0:
            raise ValueError(f"min_clip_ms must be >= 100 (openSMILE needs ~0.1 s), got {self.min_clip_ms}")


class EgemapsExtractor:
    """Wraps one opensmile.Smile (created on first use); thread-safe through a lock."""

    def __init__(self, config: EgemapsConfig | None = None) -> None:
        self.config = config or EgemapsConfig()
        self._smile = None
        self._lock = threading.Lock()

    def _get_smile(self):
        if self._smile is None:
            import opensmile

            self._smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                          feature_level=opensmile.FeatureLevel.Functionals)
        return self._smile

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """wave: float mono [T] at config.sample_rate_hz -> float32 [88]."""
        signal = np.asarray(wave, dtype=np.float32).reshape(-1)
        min_samples = int(self.config.min_clip_ms * self.config.sample_rate_hz / 1000)
        if signal.shape[0] < min_samples:
            missing = min_samples - signal.shape[0]
            signal = np.pad(signal, (missing // 2, missing - missing // 2))
        with self._lock:
            smile = self._get_smile()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Segment too short")
                values = smile.process_signal(signal, self.config.sample_rate_hz).to_numpy()
        values = values.reshape(-1).astype(np.float32)
        if values.shape[0] != EGEMAPS_DIM:
            raise RuntimeError(f"openSMILE returned {values.shape[0]} eGeMAPS values, expected {EGEMAPS_DIM}")
        return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)

    def batch(self, waves: Sequence[np.ndarray], progress: bool = False) -> np.ndarray:
        """list of [T_i] -> float32 [N, 88]."""
        rows = [self(w) for w in tqdm(waves, desc="eGeMAPS", unit="clip", disable=not progress)]
        return np.stack(rows) if rows else np.zeros((0, EGEMAPS_DIM), dtype=np.float32)


_DEFAULT: EgemapsExtractor | None = None
_DEFAULT_LOCK = threading.Lock()


def default_extractor() -> EgemapsExtractor:
    """Process-wide extractor at 16 kHz (openSMILE set up once, lazily)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = EgemapsExtractor()
        return _DEFAULT


def egemaps(wave: np.ndarray) -> np.ndarray:
    """float32 16 kHz mono [T] -> float32 [88] eGeMAPS v02 functionals."""
    return default_extractor()(wave)


def egemaps_batch(waves: Sequence[np.ndarray], progress: bool = False) -> np.ndarray:
    """list of float32 16 kHz mono [T_i] -> float32 [N, 88]."""
    return default_extractor().batch(waves, progress=progress)


def read_mono_16k(path: str | Path) -> np.ndarray:
    """Read an audio file with soundfile, mix to mono, resample to 16 kHz (soxr) -> float32 [T]."""
    import soundfile as sf
    import soxr

    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != 16_000:
        mono = soxr.resample(mono, rate, 16_000)
    return np.ascontiguousarray(mono, dtype=np.float32)


def cache_key(path: str | Path) -> str:
    """sha1 of absolute path + mtime_ns + size + feature set: changes when the file does."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    text = f"{resolved}|{stat.st_mtime_ns}|{stat.st_size}|{FEATURE_SET}"
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def cached_egemaps(paths: Sequence[str | Path], cache_dir: str | Path,
                   load_wave: Callable[[Path], np.ndarray] = read_mono_16k,
                   progress: bool = True) -> np.ndarray:
    """eGeMAPS for audio files -> float32 [N, 88], computing only files not cached yet.

    Each file's vector is stored as `<cache_dir>/<cache_key>.npy`; a changed
    file (new mtime or size) gets a new key. `load_wave` must return float32
    16 kHz mono (default: soundfile + soxr). A corrupt cache entry is recomputed.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in tqdm(paths, desc="eGeMAPS (cached)", unit="clip", disable=not progress):
        entry = cache / f"{cache_key(path)}.npy"
        row = _read_entry(entry)
        if row is None:
            row = egemaps(load_wave(Path(path)))
            tmp = entry.with_name(entry.stem + ".tmp.npy")
            np.save(tmp, row)
            tmp.replace(entry)
        rows.append(row)
    return np.stack(rows) if rows else np.zeros((0, EGEMAPS_DIM), dtype=np.float32)


def _read_entry(entry: Path) -> np.ndarray | None:
    if not entry.is_file():
        return None
    try:
        row = np.load(entry)
    except (OSError, ValueError, EOFError):
        return None
    if row.shape != (EGEMAPS_DIM,) or not np.isfinite(row).all():
        return None
    return row.astype(np.float32, copy=False)
