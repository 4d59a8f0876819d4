"""openSMILE utterance functionals, with an on-disk cache.

Two feature sets (FEATURE_SETS): "eGeMAPSv02" (88 values, the default and the
reference baseline's set) and "ComParE_2016" (6373 values: spectral, MFCC,
voicing and energy descriptors with many more statistics; the stronger set on
few speakers). F = the set's dimension.

    functionals(wave, feature_set)                  float32 [T] 16 kHz -> float32 [F]
    egemaps_batch(waves)                            list of [T_i]      -> float32 [N, 88]
    functionals_batch(waves, feature_set)           list of [T_i]      -> float32 [N, F]
    cached_functionals(paths, cache_dir, feature_set) audio files      -> float32 [N, F]
                                                    (cache keyed by file content + set)

openSMILE fills clips shorter than about 0.1 s with NaN; such clips are
zero-padded (centred) to `min_clip_ms` first, and any value that is still not
finite becomes 0, so callers always get F finite numbers.
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

from models.atomic import save_npy_atomically
from models.audio_file import read_mono_16k
from models.config_checks import check_fields

EGEMAPS_DIM = 88
FEATURE_SET = "eGeMAPSv02"
FEATURE_SETS = {"eGeMAPSv02": EGEMAPS_DIM, "ComParE_2016": 6373}


def feature_dim(feature_set: str) -> int:
    """Number of functionals in `feature_set`; unknown names raise ValueError listing the choices."""
    try:
        return FEATURE_SETS[feature_set]
    except KeyError:
        raise ValueError(f"unknown openSMILE feature set {feature_set!r}; "
                         f"choose one of: {', '.join(FEATURE_SETS)}") from None


@dataclass(frozen=True)
class FunctionalsConfig:
    """Feature set, input rate and the length short clips are padded to before openSMILE sees them."""

    sample_rate_hz: int = 16_000
    min_clip_ms: float = 250.0
    feature_set: str = FEATURE_SET

    def __post_init__(self) -> None:
        check_fields(self, {"min_clip_ms": (0.0, 60_000.0)})
        feature_dim(self.feature_set)
        if self.sample_rate_hz <= 0:
            raise ValueError(f"sample_rate_hz must be > 0, got {self.sample_rate_hz}")
        if self.min_clip_ms < 100.0:
            raise ValueError(f"min_clip_ms must be >= 100 (openSMILE needs ~0.1 s), got {self.min_clip_ms}")


class FunctionalsExtractor:
    """Wraps one opensmile.Smile for config.feature_set (created on first use); thread-safe through a lock."""

    def __init__(self, config: FunctionalsConfig | None = None) -> None:
        self.config = config or FunctionalsConfig()
        self._smile = None
        self._lock = threading.Lock()

    def _get_smile(self):
        if self._smile is None:
            import opensmile

            self._smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, self.config.feature_set),
                                          feature_level=opensmile.FeatureLevel.Functionals)
        return self._smile

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """wave: float mono [T] at config.sample_rate_hz -> float32 [F]."""
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
        expected = feature_dim(self.config.feature_set)
        if values.shape[0] != expected:
            raise RuntimeError(f"openSMILE returned {values.shape[0]} {self.config.feature_set} values, "
                               f"expected {expected}")
        return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)

    def batch(self, waves: Sequence[np.ndarray], progress: bool = False) -> np.ndarray:
        """list of [T_i] -> float32 [N, F]."""
        rows = [self(w) for w in tqdm(waves, desc=self.config.feature_set, unit="clip", disable=not progress)]
        dim = feature_dim(self.config.feature_set)
        return np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float32)


_DEFAULTS: dict[str, FunctionalsExtractor] = {}
_DEFAULT_LOCK = threading.Lock()


def default_extractor(feature_set: str = FEATURE_SET) -> FunctionalsExtractor:
    """Process-wide extractor per feature set at 16 kHz (openSMILE set up once, lazily)."""
    with _DEFAULT_LOCK:
        if feature_set not in _DEFAULTS:
            _DEFAULTS[feature_set] = FunctionalsExtractor(FunctionalsConfig(feature_set=feature_set))
        return _DEFAULTS[feature_set]


def functionals(wave: np.ndarray, feature_set: str = FEATURE_SET) -> np.ndarray:
    """float32 16 kHz mono [T] -> float32 [F] functionals (eGeMAPS v02 [88] by default)."""
    return default_extractor(feature_set)(wave)


def egemaps_batch(waves: Sequence[np.ndarray], progress: bool = False) -> np.ndarray:
    """list of float32 16 kHz mono [T_i] -> float32 [N, 88]."""
    return default_extractor().batch(waves, progress=progress)


def functionals_batch(waves: Sequence[np.ndarray], feature_set: str, progress: bool = False) -> np.ndarray:
    """list of float32 16 kHz mono [T_i] -> float32 [N, F] for `feature_set`."""
    return default_extractor(feature_set).batch(waves, progress=progress)


def cache_key(path: str | Path, feature_set: str = FEATURE_SET) -> str:
    """sha1 of the file's bytes + feature set: changes when the content does.

    Not keyed on path or mtime, because a corpus copied afresh (new mtimes, another folder) must
    still hit the cache: hashing ~50 KB of FLAC is far cheaper than one openSMILE extraction."""
    digest = hashlib.sha1(f"{feature_set}|".encode("utf-8"))
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_functionals(paths: Sequence[str | Path], cache_dir: str | Path,
                   load_wave: Callable[[Path], np.ndarray] = read_mono_16k,
                   progress: bool = True, feature_set: str = FEATURE_SET) -> np.ndarray:
    """Functionals (eGeMAPS by default) for audio files -> float32 [N, F], computing only files not cached yet.

    Each file's vector is stored as `<cache_dir>/<cache_key>.npy`; a file whose
    content changes gets a new key. Jobs may share `cache_dir`: each writes its own
    temporary file, so two computing the same entry both succeed. `load_wave` must return float32
    16 kHz mono (default: soundfile + soxr). A corrupt cache entry is recomputed.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    dim = feature_dim(feature_set)
    rows = []
    for path in tqdm(paths, desc=f"{feature_set} (cached)", unit="clip", disable=not progress):
        entry = cache / f"{cache_key(path, feature_set)}.npy"
        row = _read_entry(entry, dim)
        if row is None:
            row = functionals(load_wave(Path(path)), feature_set)
            save_npy_atomically(entry, row)
        rows.append(row)
    return np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float32)


def _read_entry(entry: Path, dim: int) -> np.ndarray | None:
    if not entry.is_file():
        return None
    try:
        row = np.load(entry)
    except (OSError, ValueError, EOFError):
        return None
    if row.shape != (dim,) or not np.isfinite(row).all():
        return None
    return row.astype(np.float32, copy=False)
