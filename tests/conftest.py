"""Shared pytest fixtures: paths to the shared data, generated speech, thread limits."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("VED_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# main.py runs on the fast model alone unless a test passes --primary: tests of the fast path must
# not load the installed Whisper ensemble (models/primary/) in every subprocess.
os.environ.setdefault("VED_PRIMARY", "none")


@pytest.fixture(scope="session", autouse=True)
def _limit_threads():
    """Two cores on CI: keep torch from oversubscribing them."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set VED_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def emodb_dir(shared_data: Path) -> Path:
    path = shared_data / "emodb"
    if not (path / "labels.csv").is_file():
        pytest.skip(f"EmoDB copy not found at {path}")
    return path


@pytest.fixture(scope="session")
def ravdess_dir(shared_data: Path) -> Path:
    path = shared_data / "ravdess"
    if not path.is_dir():
        pytest.skip(f"RAVDESS copy not found at {path}")
    return path


@pytest.fixture(scope="session")
def crema_manifest(shared_data: Path) -> Path:
    path = shared_data / "crema-d" / "audio_manifest.csv"
    if not path.is_file():
        pytest.skip(f"CREMA-D manifest not found at {path}")
    return path


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


@pytest.fixture(scope="session")
def espeak_wav(tmp_path_factory) -> Path:
    """A few seconds of English espeak-ng speech (22,050 Hz mono WAV)."""
    if not espeak_available():
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)")
    out = tmp_path_factory.mktemp("espeak") / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(out), "-s", "150",
                    "The quick brown fox jumps over the lazy dog."], check=True)
    return out


def sine(freq_hz: float, seconds: float, rate_hz: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate_hz)) / rate_hz
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)
