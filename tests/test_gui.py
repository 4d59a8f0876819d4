"""Qt monitor window (pytest-qt, offscreen): build, devices, live replay through the real
engine and a real classifier, stop, review, exports, settings checks, no torch in gui/."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("pytestqt")
from PyQt5.QtCore import QPointF, QSettings, Qt  # noqa: E402
from PyQt5.QtWidgets import QFileDialog  # noqa: E402

from gui.app import build_window  # noqa: E402
from gui.plots import PlotConfig, SeriesBuffer  # noqa: E402
from models.labels import EMOTIONS  # noqa: E402
from realtime.devices import InputDevice  # noqa: E402
from realtime.timeline import TimelineWriter, load_timeline  # noqa: E402
from realtime.types import EmotionPrediction, SessionSummary  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = REPO_ROOT / "models" / "default"
ENGINE_THREAD_PREFIXES = ("ved-inference", "ved-segmenter", "ved-file-reader", "ved-gui-")


# ---------------------------------------------------------------- fixtures
@pytest.fixture
def settings(tmp_path) -> QSettings:
    return QSettings(str(tmp_path / "ved-settings.ini"), QSettings.IniFormat)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    """The trained default bundle when present, else an untrained conformer-v3.2 bundle."""
    if (DEFAULT_BUNDLE / "bundle.json").is_file():
        return DEFAULT_BUNDLE
    import torch

    from models.bundle import save_bundle
    from models.registry import build_model

    torch.manual_seed(0)
    model = build_model("conformer-v3.2").eval()
    return save_bundle(tmp_path_factory.mktemp("bundle") / "untrained", model, "conformer-v3.2")


@pytest.fixture(scope="module")
def classifier(bundle_dir):
    from models.loader import load_classifier

    return load_classifier(str(bundle_dir), device="cpu")


@pytest.fixture(scope="module")
def emodb_speech(emodb_dir, tmp_path_factory) -> Path:
    """Four real EmoDB clips (anger, sadness, happiness, neutral of speaker 03) joined with 1 s silences."""
    rows = list(csv.DictReader(open(emodb_dir / "labels.csv", encoding="utf-8")))
    wanted, clips, rate = ["anger", "sadness", "happiness", "neutral"], [], 0
    for emotion in wanted:
        row = next(r for r in rows if r["emotion"] == emotion and r["speaker"] == "03")
        audio, rate = sf.read(emodb_dir / row["file"], dtype="float32")
        clips += [np.zeros(rate, np.float32), audio]
    out = tmp_path_factory.mktemp("replay") / "emodb4.wav"
    sf.write(out, np.concatenate(clips + [np.zeros(rate, np.float32)]), rate)
    return out


def make_factory(classifier, pace: str, calls: list):
    """Engine factory following gui/app.py's contract, with the real engine and file source."""
    from realtime.engine import Engine, EngineConfig
    from realtime.sources import FileSource

    def factory(source, model_choice, listener, *, timeline_path, **model_dirs):
        calls.append((source, model_choice, timeline_path, model_dirs))
        audio = FileSource(source, pace=pace)
        timeline = TimelineWriter(timeline_path, {"input": audio.description, "model": model_choice})
        return Engine(audio, classifier, EngineConfig(), timeline=timeline, listener=listener)

    return factory


def engine_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(ENGINE_THREAD_PREFIXES)]


def write_session(path: Path, utterances: int = 3, partials_each: int = 4) -> Path:
    rng = np.random.default_rng(1)
    with TimelineWriter(path, {"input": "synthetic"}) as writer:
        for u in range(utterances):
            start = 3.0 * u
            for k in range(partials_each):
                writer.write_prediction(EmotionPrediction.from_probs(
                    start, start + 0.5 * (k + 1), rng.dirichlet(np.ones(6)), "conformer", 40.0, kind="partial"))
            writer.write_prediction(EmotionPrediction.from_probs(
                start, start + 2.0, rng.dirichlet(np.ones(6)), "conformer", 90.0 + u))
        writer.write_summary(SessionSummary(utterances, utterances * partials_each, 40, 90, 0, 0, 0, 0.0))
    return path


# ---------------------------------------------------------------- tests
def test_gui_modules_do_not_import_torch():
    code = ("import sys; import gui.app, gui.main_window, gui.plots, gui.review, gui.settings_dialog, "
            "gui.session, gui.controls; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_window_builds_with_six_curves_and_the_default_model(qtbot, settings, tmp_path):
    window = build_window(lambda *a, **k: None, None, settings)
    qtbot.addWidget(window)
    assert set(window.plot.final_curves) == set(EMOTIONS) == set(window.plot.partial_curves)
    assert window.controls.model_choice() == "default"
    shipped = json.loads((REPO_ROOT / "models" / "default" / "bundle.json").read_text())["model"]["name"]
    assert window.controls.model_combo.currentText() == "Conformer (fast)"   # a name a user can read
    row = window.controls.model_combo.findData("default")
    assert window.controls.model_combo.itemData(row, Qt.ToolTipRole) == f"{shipped} (default)"  # and what it is
    assert not window.controls.primary_available()
    assert window.phase == "idle"
    assert not window.actions["save_as"].isEnabled()


def test_space_bar_reaches_start_stop_while_the_window_length_box_has_focus(qtbot, settings):
    window = build_window(lambda *a, **k: None, None, settings)
    qtbot.addWidget(window)
    window.show()
    spin = window.controls.window_spin
    spin.setFocus()
    qtbot.waitUntil(spin.hasFocus, timeout=5_000)
    before = spin.value()
    with qtbot.waitSignal(window.space_shortcut.activated, timeout=2_000):
        qtbot.keyClick(spin, Qt.Key_Space)
    assert spin.value() == before and " " not in spin.lineEdit().text().strip(" s")


def test_device_list_fills_and_prefers_default(qtbot, settings, monkeypatch):
    devices = [InputDevice(0, "Built-in Mic", 2, 44100.0, False), InputDevice(3, "USB Headset", 1, 16000.0, True)]
    monkeypatch.setattr("gui.controls.list_input_devices", lambda: list(devices))
    monkeypatch.setattr("gui.controls.rescan_devices", lambda: None)
    window = build_window(lambda *a, **k: None, None, settings)
    qtbot.addWidget(window)
    combo = window.controls.device_combo
    assert combo.count() == 2 and "USB Headset" in combo.currentText()
    assert window.controls.selected_device().index == 3
    import argparse

    for wanted in ("built-in", "0", 0):
        chosen = build_window(lambda *a, **k: None, argparse.Namespace(device=wanted), settings)
        qtbot.addWidget(chosen)
        assert chosen.controls.selected_device().name == "Built-in Mic"
    devices.append(InputDevice(7, "New Webcam Mic", 1, 48000.0, False))
    qtbot.mouseClick(window.controls.refresh_button, Qt.LeftButton)
    assert combo.count() == 3 and window.controls.selected_device().index == 3


def test_no_devices_shows_reason_and_start_refuses(qtbot, settings, monkeypatch):
    from realtime.devices import DeviceError

    def broken():
        raise DeviceError("audio input unavailable: no PortAudio")

    monkeypatch.setattr("gui.controls.list_input_devices", broken)
    window = build_window(lambda *a, **k: pytest.fail("factory must not be called"), None, settings)
    qtbot.addWidget(window)
    assert "no PortAudio" in window.controls.device_combo.currentText()
    window.toggle_running()
    assert window.phase == "idle" and "Replay" in window.status.error.text()


def test_replay_real_audio_through_real_engine_then_stop_and_review(qtbot, settings, tmp_path, bundle_dir,
                                                                   emodb_speech):
    """Uses main.py's factory (realtime.wiring.gui_engine_factory): real-time replay, real model."""
    from realtime.engine import EngineConfig
    from realtime.wiring import gui_engine_factory

    calls: list = []
    real_factory = gui_engine_factory(EngineConfig(), str(bundle_dir), "cpu")

    def factory(source, model_choice, listener, **options):
        calls.append((source, model_choice, options))
        return real_factory(source, model_choice, listener, **options)

    window = build_window(factory, None, settings)
    window.sessions_dir = str(tmp_path / "sessions")
    qtbot.addWidget(window)
    window.show()
    levels: list = []
    window.bridge.event.connect(lambda e: levels.append(e) if type(e).__name__ == "LevelUpdate" else None)
    window.start_session(str(emodb_speech))
    qtbot.waitUntil(lambda: window.phase == "running", timeout=60_000)
    assert calls[0][0] == str(emodb_speech) and calls[0][1] == "default"

    def two_utterances_and_all_curves():
        lengths = window.plot.curve_lengths()
        return window.table.rowCount() >= 2 and all(final > 0 for final, _ in lengths.values())

    qtbot.waitUntil(two_utterances_and_all_curves, timeout=60_000)
    engine, resets = window.engine, []
    engine_reset = engine.reset_speaker
    engine.reset_speaker = lambda: (resets.append(1), engine_reset())
    assert window.actions["new_speaker"].isEnabled()
    window.actions["new_speaker"].trigger()   # Session -> New speaker
    assert resets == [1] and "new speaker" in window.status.state.text()
    assert window.current.emotion in EMOTIONS and window.current.label.text().startswith(
        window.current.emotion.upper())
    assert max(e.rms_dbfs for e in levels) > -40 and any(e.speech for e in levels)
    assert any(not e.speech for e in levels)
    assert window.status.latency.text().endswith(" ms")

    window.setFocus()
    qtbot.keyClick(window, Qt.Key_Space)  # space bar = Stop
    qtbot.waitUntil(lambda: window.phase == "idle", timeout=30_000)
    qtbot.waitUntil(lambda: not engine_threads(), timeout=10_000)
    assert window.status.state.text().startswith("stopped")
    assert not window.actions["new_speaker"].isEnabled()

    session = load_timeline(window.session_path)
    assert session.complete and len(session.utterances()) >= 2
    assert window.open_session(window.session_path)
    counts = window.plot.point_counts()
    assert counts == {"final": len(session.utterances()), "partial": len(session.partials())}
    assert all(final == len(session.utterances()) for final, _ in window.plot.curve_lengths().values())
    assert window.table.rowCount() == len(session.utterances())


def test_fast_replay_stops_by_itself_when_the_file_ends(qtbot, settings, tmp_path, classifier, emodb_speech):
    window = build_window(make_factory(classifier, "fast", []), None, settings)
    window.sessions_dir = str(tmp_path / "sessions")
    qtbot.addWidget(window)
    window.start_session(str(emodb_speech))
    qtbot.waitUntil(lambda: window.phase == "running", timeout=60_000)
    qtbot.waitUntil(lambda: window.phase == "idle", timeout=120_000)
    qtbot.waitUntil(lambda: not engine_threads(), timeout=10_000)
    session = load_timeline(window.session_path)
    assert session.complete
    assert window.table.rowCount() == len(session.utterances()) >= 3
    assert window.last_summary is not None and window.last_summary.utterances == len(session.utterances())


def test_closing_while_the_model_loads_still_stops_the_engine(qtbot, settings, tmp_path, classifier,
                                                            emodb_speech):
    real_factory, loading = make_factory(classifier, "realtime", []), threading.Event()

    def slow_factory(*args, **kwargs):
        loading.set()
        threading.Event().wait(1.0)  # a slow model load
        return real_factory(*args, **kwargs)

    window = build_window(slow_factory, None, settings)
    window.sessions_dir = str(tmp_path / "sessions")
    qtbot.addWidget(window)
    window.start_session(str(emodb_speech))
    assert loading.wait(10) and window.phase == "starting"
    window.close()
    assert not engine_threads()
    assert load_timeline(window.session_path).complete


def test_events_from_an_engine_thread_reach_status_bar_meter_and_indicator(qtbot, settings):
    from realtime.types import DropNotice, EngineStatus, LevelUpdate

    window = build_window(lambda *a, **k: None, None, settings)
    qtbot.addWidget(window)
    events = [EngineStatus("running", "listening", "conformer-v3.2"), LevelUpdate(1.0, -12.0, True),
              DropNotice(2, 0, 1), EngineStatus("device-lost", "no audio from USB Mic for 2.0 s", "conformer-v3.2"),
              EngineStatus("running", "audio input resumed", "wavlm", fallback_active=True)]
    sender = threading.Thread(target=lambda: [window.bridge.listener(e) for e in events], name="fake-engine")
    sender.start()
    sender.join(5)
    qtbot.waitUntil(lambda: window.bridge.events_received == len(events) and "resumed at" in
                    window.status.error.text(), timeout=5_000)
    assert window.status.error.text().startswith("device-lost: no audio from USB Mic for 2.0 s")
    assert window.status.drops.text() == "drops: 3"
    assert window.status.model.text() == "model: WavLM (FALLBACK)" and window.status.model.toolTip() == "wavlm"
    assert window.controls.speech_indicator.speech and window.controls.level_meter.value == -12


def test_factory_error_is_one_line_and_window_stays_usable(qtbot, settings, tmp_path):
    def factory(*args, **kwargs):
        raise FileNotFoundError("bundle folder not found: models/default")

    window = build_window(factory, None, settings)
    window.sessions_dir = str(tmp_path)
    qtbot.addWidget(window)
    window.start_session(None)
    qtbot.waitUntil(lambda: window.phase == "idle" and bool(window.status.error.text()), timeout=10_000)
    assert window.status.error.text() == "FileNotFoundError: bundle folder not found: models/default"
    assert window.controls.start_button.isEnabled() and window.controls.start_button.text() == "Start"


def test_review_click_shows_probabilities_and_exports(qtbot, settings, tmp_path, monkeypatch):
    path = write_session(tmp_path / "past.jsonl")
    window = build_window(lambda *a, **k: None, None, settings)
    qtbot.addWidget(window)
    window.resize(1200, 800)
    window.show()
    qtbot.waitExposed(window)
    assert window.open_session(str(path))
    assert window.plot.point_counts() == {"final": 3, "partial": 12}
    second = load_timeline(path).utterances()[1]
    window.plot.refresh()
    view_box = window.plot.plot_item.vb
    scene_pos = view_box.mapViewToScene(QPointF(0.5 * (second.start_s + second.end_s), 0.5))
    widget_pos = window.plot.plot_widget.mapFromScene(scene_pos)
    with qtbot.waitSignal(window.plot.utterance_clicked, timeout=5_000) as clicked:
        qtbot.mouseClick(window.plot.plot_widget.viewport(), Qt.LeftButton, pos=widget_pos)
    assert clicked.args[0] == second
    for name in EMOTIONS:
        assert window.details.value_of(name) == pytest.approx(second.probs[name], abs=1e-3)

    targets = {"csv": tmp_path / "out.csv", "png": tmp_path / "plot.png", "jsonl": tmp_path / "copy.jsonl"}
    monkeypatch.setattr(QFileDialog, "getSaveFileName",
                        lambda _parent, title, *_a: (str(targets[{"Export CSV": "csv", "Export plot": "png"}
                                                                 .get(title, "jsonl")]), ""))
    window.export_csv_dialog()
    window.export_png_dialog()
    window.save_session_dialog()
    assert len(list(csv.reader(open(targets["csv"])))) == 1 + 15
    assert targets["png"].stat().st_size > 1000
    assert targets["jsonl"].read_bytes() == path.read_bytes()


def test_series_buffer_grows_then_discards_oldest_half():
    buffer = SeriesBuffer(max_points=32, initial_capacity=4)
    for i in range(40):
        buffer.append(float(i), np.full(6, i / 40, np.float32))
    assert len(buffer) <= 32 and buffer.times[-1] == 39.0
    assert np.all(np.diff(buffer.times) > 0) and buffer.times[0] >= 8.0
    buffer.break_line()
    assert np.isnan(buffer.values[-1]).all() and buffer.finite_count() == len(buffer) - 1
    with pytest.raises(ValueError, match="window_s"):
        PlotConfig(window_s=0.1)


def test_no_display_is_a_one_line_error(monkeypatch):
    from gui.app import check_display

    monkeypatch.setattr(sys, "platform", "linux")
    for name in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="--headless"):
        check_display()
    monkeypatch.setenv("DISPLAY", ":0")
    check_display()


def test_bridge_is_bounded_drops_oldest_and_wakes_the_gui_thread_once(qtbot):
    from gui.bridge import EngineBridge

    bridge = EngineBridge(max_pending=4)
    got: list = []
    bridge.event.connect(got.append)
    sender = threading.Thread(target=lambda: [bridge.listener(i) for i in range(10)])
    sender.start()
    sender.join(5)
    assert got == [] and bridge.events_received == 10 and bridge.events_dropped == 6
    qtbot.waitUntil(lambda: got == [6, 7, 8, 9], timeout=5_000)
    bridge.listener(10)
    qtbot.waitUntil(lambda: got[-1] == 10, timeout=5_000)


def test_smooth_toggle_draws_the_smoothed_utterance_trace(qtbot, settings):
    from realtime.smoothing import ProbabilitySmoother

    window = build_window(lambda *a, **k: None, None, settings)
    qtbot.addWidget(window)
    rng = np.random.default_rng(4)
    utterances = [EmotionPrediction.from_probs(2.5 * u, 2.5 * u + 2.0, rng.dirichlet(np.ones(6)), "m", 50.0)
                  for u in range(5)]
    for prediction in utterances:
        window.plot.add_prediction(prediction)
    window.plot.refresh()
    raw = window.plot.final_curves["anger"].getData()[1].copy()
    np.testing.assert_allclose(raw, [p.probs["anger"] for p in utterances], rtol=1e-6)
    window.controls.smooth_check.setChecked(True)
    smoother = ProbabilitySmoother()
    expected = [smoother.push(p)[0].probs["anger"] for p in utterances]
    drawn = window.plot.final_curves["anger"].getData()[1]
    np.testing.assert_allclose(drawn, expected, rtol=1e-6)
    assert not np.allclose(drawn, raw)
    window.controls.smooth_check.setChecked(False)
    np.testing.assert_allclose(window.plot.final_curves["anger"].getData()[1], raw, rtol=1e-6)
    window.save_settings()
    assert str(settings.value("plot/smoothed")).lower() == "false"
