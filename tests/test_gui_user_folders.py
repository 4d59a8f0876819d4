"""The user's own folders stay untouched by tests (settings, sessions), `--out` names the window's
session as it names the headless one, and the level meter is empty when there is no level."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")
from conftest import REAL_CONFIG, REPO_ROOT, folder_state, user_folders_state  # noqa: E402
from gui.app import build_window  # noqa: E402
from gui.widgets import METER_FLOOR_DBFS, LevelMeter  # noqa: E402
from realtime.timeline import load_timeline  # noqa: E402
from realtime.types import LevelUpdate  # noqa: E402


def test_window_settings_go_to_the_tests_own_config_folder(qtbot, private_user_folders):
    before = user_folders_state()
    window = build_window(lambda *a, **k: None, None)    # the default QSettings, as `python main.py` uses
    qtbot.addWidget(window)
    window.controls.window_spin.setValue(3600)
    window.close()                                        # closing saves the settings
    written = private_user_folders["config"] / "VED" / "VED Monitor.conf"
    assert written.is_file() and "window_s=3600" in written.read_text(encoding="utf-8")
    assert user_folders_state() == before
    assert not (REAL_CONFIG / "VED" / "VED Monitor.conf").is_file() or \
        "window_s=3600" not in (REAL_CONFIG / "VED" / "VED Monitor.conf").read_text(encoding="utf-8")
    reopened = build_window(lambda *a, **k: None, None)   # and reads them back from there
    qtbot.addWidget(reopened)
    assert reopened.controls.window_spin.value() == 3600


def test_the_folder_guard_notices_a_new_or_changed_file(tmp_path):
    (tmp_path / "VED").mkdir()
    before = folder_state(tmp_path)
    (tmp_path / "VED" / "VED Monitor.conf").write_text("[plot]\nwindow_s=3600\n", encoding="utf-8")
    assert folder_state(tmp_path) != before
    after_write = folder_state(tmp_path)
    (tmp_path / "VED" / "VED Monitor.conf").write_text("[plot]\nwindow_s=60.0\n", encoding="utf-8")
    assert folder_state(tmp_path) != after_write


def test_a_subprocess_writes_its_default_timeline_in_the_tests_data_folder(private_user_folders, espeak_wav):
    before = user_folders_state()
    result = subprocess.run([sys.executable, str(REPO_ROOT / "main.py"), "--headless", "--input", str(espeak_wav),
                             "--pace", "fast"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    sessions = list((private_user_folders["data"] / "ved" / "sessions").glob("ved-*.jsonl"))
    assert len(sessions) == 1 and load_timeline(sessions[0]).complete
    assert user_folders_state() == before


def test_level_meter_is_empty_before_any_level_and_for_silence(qtbot):
    meter = LevelMeter()
    qtbot.addWidget(meter)
    assert meter.value == METER_FLOOR_DBFS and meter.text.text() == "-inf dB"
    meter.set_level(-12.4)
    assert meter.value == -12 and meter.text.text() == "-12 dB"
    for no_level in (float("-inf"), float("nan"), -300.0):
        meter.set_level(-12.4)
        meter.set_level(no_level)
        assert meter.value == METER_FLOOR_DBFS and meter.text.text() == "-inf dB"


def test_the_window_meter_empties_when_a_new_session_starts(qtbot, tmp_path):
    from PyQt5.QtCore import QSettings

    window = build_window(lambda *a, **k: None, None, QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    qtbot.addWidget(window)
    assert window.controls.level_meter.value == METER_FLOOR_DBFS
    window.on_engine_event(LevelUpdate(1.0, -20.0, True))
    assert window.controls.level_meter.value == -20
    window._reset_live_view()
    assert window.controls.level_meter.value == METER_FLOOR_DBFS


def test_out_names_the_windows_sessions_as_headless_does(qtbot, tmp_path, espeak_wav):
    import main

    out = tmp_path / "talks" / "session.jsonl"
    args = main.build_parser().parse_args(["--out", str(out), "--plot-window-s", "30"])
    args.primary = None
    factory, gui_args = main.gui_launch(args)
    from PyQt5.QtCore import QSettings

    window = build_window(factory, gui_args, QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    qtbot.addWidget(window)
    paths = []
    for _ in range(2):                     # a second session in the same window never overwrites the first
        window.start_session(str(espeak_wav))
        qtbot.waitUntil(lambda: window.phase == "running", timeout=60_000)
        qtbot.waitUntil(lambda: window.phase == "idle", timeout=120_000)
        paths.append(Path(window.session_path))
    assert paths == [out, out.with_name("session-2.jsonl")]
    assert all(load_timeline(p).complete for p in paths)
    assert sorted(p.name for p in out.parent.iterdir()) == ["session-2.jsonl", "session.jsonl"]


def test_an_existing_out_file_is_refused_before_the_window_opens(tmp_path, capsys):
    import main

    existing = tmp_path / "session.jsonl"
    existing.write_text("{}\n", encoding="utf-8")
    assert main.main(["--primary", "none", "--out", str(existing)]) == main.EXIT_USER
    assert "already exists" in capsys.readouterr().err
    assert existing.read_text(encoding="utf-8") == "{}\n"
