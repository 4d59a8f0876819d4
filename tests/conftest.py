"""Shared pytest fixtures: the user's own folders kept out of reach, paths to the shared data,
generated speech, thread limits."""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
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

# The user's real folders, resolved before any test redirects XDG_*: the suite must leave them as it
# found them (the window saves QSettings to REAL_CONFIG/VED, sessions go to REAL_DATA/ved/sessions).
REAL_CONFIG = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
REAL_DATA = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
_REAL_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
# Caches stay readable where they are: redirecting XDG_CACHE_HOME must not hide downloaded weights.
os.environ.setdefault("HF_HOME", str(_REAL_CACHE / "huggingface"))
os.environ.setdefault("TORCH_HOME", str(_REAL_CACHE / "torch"))
# Session-scoped fixtures and collection run before any per-test fixture: they get one shared
# private set (espeak-ng and PortAudio's pulse client write a runtime link under XDG_CONFIG_HOME).
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="ved-test-home-"))
atexit.register(shutil.rmtree, _SESSION_HOME, True)
for _name in ("config", "data", "cache"):
    (_SESSION_HOME / _name).mkdir()
    os.environ[f"XDG_{_name.upper()}_HOME"] = str(_SESSION_HOME / _name)


def folder_state(root: Path, max_entries: int = 20_000) -> dict[str, tuple[int, int]]:
    """{relative path: (size bytes, mtime ns)} of every entry under root ({} when root is missing)."""
    state: dict[str, tuple[int, int]] = {}
    if not root.is_dir():
        return state
    for path in root.rglob("*"):
        try:
            info = path.lstat()
        except OSError:   # vanished meanwhile
            continue
        state[str(path.relative_to(root))] = (info.st_size, info.st_mtime_ns)
        if len(state) >= max_entries:
            break
    return state


def user_folders_state() -> dict[str, object]:
    """What the suite must not change: VED's own settings and data trees in full, and the names at
    the top of ~/.config and ~/.local/share (other programs' files there change on their own)."""
    return {"config/VED": folder_state(REAL_CONFIG / "VED"), "data/ved": folder_state(REAL_DATA / "ved"),
            "config names": sorted(p.name for p in REAL_CONFIG.glob("*")) if REAL_CONFIG.is_dir() else [],
            "data names": sorted(p.name for p in REAL_DATA.glob("*")) if REAL_DATA.is_dir() else []}


@pytest.fixture(scope="session", autouse=True)
def _user_folders_untouched():
    """Fails the run (an error at the end) when any test wrote the user's settings or data folders."""
    before = user_folders_state()
    yield
    after = user_folders_state()
    changed = [key for key in before if before[key] != after[key]]
    assert not changed, f"the test suite changed the user's own folders: {changed}"


@pytest.fixture(autouse=True)
def private_user_folders(tmp_path_factory, monkeypatch) -> dict[str, Path]:
    """Every test gets its own XDG config/data/cache folders (child processes inherit them), and
    QSettings in this process writes there too: Qt reads XDG_CONFIG_HOME only once per process."""
    root = tmp_path_factory.mktemp("home")
    folders = {name: root / name for name in ("config", "data", "cache")}
    for name, folder in folders.items():
        folder.mkdir()
        monkeypatch.setenv(f"XDG_{name.upper()}_HOME", str(folder))
    try:
        from PyQt5.QtCore import QSettings
    except ImportError:
        return folders
    for fmt in (QSettings.NativeFormat, QSettings.IniFormat):
        QSettings.setPath(fmt, QSettings.UserScope, str(folders["config"]))
        QSettings.setPath(fmt, QSettings.SystemScope, str(root / "system-config"))
    return folders


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


@pytest.fixture(autouse=True)
def _qt_objects_collected_in_their_own_test(request):
    """A GUI test's deleted windows are garbage-collected before the next test runs Qt's event loop:
    a collection that lands inside a later test's event processing can hand pyqtgraph a resize
    event for a label whose C++ object is gone (a segfault, seen in the full suite only)."""
    yield
    if "qtbot" in request.fixturenames:
        import gc

        from PyQt5.QtWidgets import QApplication

        app = QApplication.instance()
        if app is not None:
            app.processEvents()
            gc.collect()
            app.processEvents()
