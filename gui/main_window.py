"""The VED monitor window: live session control, live display, session review.

Threading: engine events arrive through `EngineBridge` (a queued Qt signal), so
every slot here runs on the GUI thread. Building an engine (model loading) and
stopping it (thread joins) run in `BackgroundCall`s so the window never freezes.
The plot is redrawn by a QTimer at `REFRESH_HZ`, not per event.
"""
from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PyQt5.QtCore import QSettings, Qt, QTimer
from PyQt5.QtGui import QKeySequence
from PyQt5.QtWidgets import (QAction, QFileDialog, QMainWindow, QMessageBox, QShortcut, QSplitter,
                             QVBoxLayout, QWidget)

from gui.bridge import EngineBridge
from gui.controls import ControlBar, StatusFields, query_input_devices
from gui.model_folders import primary_title, primary_usable
from gui.model_names import ModelNames
from gui.plots import EmotionPlot, PlotConfig
from gui.review import SessionFileError, copy_session, export_session_csv, load_session, overview
from gui.session import EngineFactory, SessionController, new_session_path
from gui.settings_dialog import ModelFoldersDialog
from gui.widgets import CurrentEmotionView, ProbabilityPanel, UtteranceTable
from models.display_names import FAST_ROLE, folder_display_name
from realtime.types import DropNotice, EmotionPrediction, EngineStatus, LevelUpdate, SessionSummary

REFRESH_HZ = 25
LATENCY_WINDOW = 200
ERROR_STATES = ("error", "warning", "device-lost")
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "default"


class MainWindow(QMainWindow):
    """Monitor window. `engine_factory` follows the contract in gui/app.py."""

    def __init__(self, engine_factory: EngineFactory, settings: QSettings,
                 sessions_dir: str | None = None, preferred_device: str | int | None = None,
                 timeline_out: str | None = None) -> None:
        """timeline_out: main.py --out, the timeline file of the first session (later ones: -2, -3...)."""
        super().__init__()
        self.setWindowTitle("VED — Voice Emotion Detective")
        self.engine_factory = engine_factory
        self.settings = settings
        self.sessions_dir = sessions_dir
        self.timeline_out = timeline_out
        self.session_path = ""
        self.reviewing = False
        self._latencies: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)
        self.last_summary: SessionSummary | None = None
        self._active_error = ""
        self.model_names = ModelNames()

        self.bridge = EngineBridge(self)
        self.bridge.event.connect(self.on_engine_event)
        self.session = SessionController(engine_factory, self.bridge.listener, self)
        self.session.phase_changed.connect(self._on_phase)
        self.session.started.connect(self._on_started)
        self.session.failed.connect(self._on_failed)
        self.session.stopped.connect(self._on_stopped)
        self.session.warning.connect(self.status_warning)
        self._build_widgets()
        self._build_menus()
        self._restore_settings(preferred_device)

        self.refresh_timer = QTimer(self)
        self.refresh_timer.setInterval(int(1000 / REFRESH_HZ))
        self.refresh_timer.timeout.connect(self.plot.refresh)
        self.refresh_timer.start()

    # ------------------------------------------------------------------ layout
    def _build_widgets(self) -> None:
        self.controls = ControlBar()
        self.plot = EmotionPlot(PlotConfig())
        self.table = UtteranceTable()
        self.current = CurrentEmotionView()
        self.details = ProbabilityPanel()
        left = QSplitter(Qt.Vertical)
        left.addWidget(self.plot)
        left.addWidget(self.table)
        left.setStretchFactor(0, 5)
        left.setStretchFactor(1, 2)
        self.table.setMinimumHeight(150)
        right = QSplitter(Qt.Vertical)
        right.addWidget(self.current)
        right.addWidget(self.details)
        self.splitter = QSplitter(Qt.Horizontal)
        self.splitter.addWidget(left)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(0, 4)
        self.splitter.setStretchFactor(1, 1)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.controls)
        layout.addWidget(self.splitter, 1)
        self.setCentralWidget(central)
        self.status = StatusFields(self.statusBar())
        self._name_model_choice("default", folder_display_name(DEFAULT_MODEL_DIR, FAST_ROLE))

        self.controls.start_button.clicked.connect(self.toggle_running)
        self.controls.refresh_button.clicked.connect(lambda: self.refresh_devices(rescan=True))
        self.controls.settings_button.clicked.connect(self.open_model_folders)
        self.controls.window_spin.valueChanged.connect(self.plot.set_window_s)
        self.controls.smooth_check.toggled.connect(self.plot.set_smoothed)
        self.plot.utterance_clicked.connect(self.details.show_prediction)
        self.table.itemSelectionChanged.connect(self._on_table_selection)
        self.space_shortcut = QShortcut(QKeySequence(Qt.Key_Space), self)
        self.space_shortcut.activated.connect(self.toggle_running)

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.actions: dict[str, QAction] = {}
        for key, title, slot, shortcut in (
                ("open", "&Open session…", self.open_session_dialog, QKeySequence.Open),
                ("replay", "&Replay audio file…", self.replay_file_dialog, "Ctrl+R"),
                ("save_as", "&Save session as…", self.save_session_dialog, QKeySequence.SaveAs),
                ("export_csv", "Export &CSV…", self.export_csv_dialog, "Ctrl+E"),
                ("export_png", "Export plot &PNG…", self.export_png_dialog, "Ctrl+P"),
                ("quit", "&Quit", self.close, QKeySequence.Quit)):
            action = QAction(title, self)
            action.setShortcut(QKeySequence(shortcut))
            action.triggered.connect(slot)
            file_menu.addAction(action)
            self.actions[key] = action
        speaker = QAction("New &speaker (forget the voice baseline)", self)
        speaker.setShortcut(QKeySequence("Ctrl+Shift+N"))
        speaker.setToolTip("the primary learns each speaker's voice over the session; say so when someone "
                           "else starts talking")
        speaker.triggered.connect(self.new_speaker)
        self.menuBar().addMenu("&Session").addAction(speaker)
        self.actions["new_speaker"] = speaker
        settings_menu = self.menuBar().addMenu("&Settings")
        folders = QAction("&Model folders…", self)
        folders.triggered.connect(self.open_model_folders)
        settings_menu.addAction(folders)
        self._update_actions()

    def status_warning(self, message: str) -> None:
        self.status.set_error(message)

    def _update_actions(self) -> None:
        idle = self.phase == "idle"
        self.actions["open"].setEnabled(idle)
        self.actions["replay"].setEnabled(idle)
        has_session = bool(self.session_path)
        self.actions["save_as"].setEnabled(has_session)
        self.actions["export_csv"].setEnabled(has_session)
        self.actions["new_speaker"].setEnabled(self.phase == "running")

    def new_speaker(self) -> None:
        """The speaker changed: the running engine's primary forgets the voice it learnt."""
        if self.phase == "running" and self.engine is not None:
            self.engine.reset_speaker()
            self.status.set_state("running", "new speaker: voice baseline reset")

    # ------------------------------------------------------------------ settings
    def _restore_settings(self, preferred_device: str | int | None) -> None:
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1300, 820)
        splitter = self.settings.value("window/splitter")
        if splitter is not None:
            self.splitter.restoreState(splitter)
        window_s = float(self.settings.value("plot/window_s", 60.0))
        self.controls.window_spin.setValue(window_s)
        self.plot.set_window_s(self.controls.window_spin.value())
        self.refresh_devices(rescan=False, preferred=preferred_device)
        # "models/ensemble_dir": the key older VEDs saved the (WavLM) primary under
        primary_dir = self.settings.value("models/primary_dir", self.settings.value("models/ensemble_dir", ""))
        self._apply_model_folders(str(primary_dir), str(self.settings.value("models/backbone_dir", "")))
        self.controls.select_model(str(self.settings.value("models/choice", "default")))
        self.controls.smooth_check.setChecked(str(self.settings.value("plot/smoothed", "false")).lower() == "true")

    def save_settings(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/splitter", self.splitter.saveState())
        self.settings.setValue("plot/window_s", self.controls.window_spin.value())
        self.settings.setValue("plot/smoothed", self.controls.smooth_check.isChecked())
        device = self.controls.selected_device()
        if device is not None:
            self.settings.setValue("input/device_name", device.name)
        self.settings.setValue("models/choice", self.controls.model_choice())
        self.settings.setValue("models/primary_dir", self.primary_dir)
        self.settings.setValue("models/backbone_dir", self.backbone_dir)
        self.settings.sync()

    def refresh_devices(self, rescan: bool = True, preferred: str | int | None = None) -> None:
        devices, error = query_input_devices(rescan)
        if preferred is None:
            current = self.controls.selected_device()
            preferred = current.name if current else self.settings.value("input/device_name")
        self.controls.set_devices(devices, error, preferred)
        if error:
            self.status.set_error(error)

    def _apply_model_folders(self, primary_dir: str, backbone_dir: str) -> None:
        self.primary_dir, self.backbone_dir = primary_dir, backbone_dir
        self.controls.set_primary(primary_title(primary_dir), primary_usable(primary_dir, backbone_dir))
        self._name_model_choice("primary", folder_display_name(primary_dir) if primary_dir else "")

    def _name_model_choice(self, key: str, readable: str) -> None:
        """Show the selector entry by its readable name ("Whisper ensemble"), its technical title
        ("whisper-ultimate tiny.en + base ×10 (primary)") as the entry's tooltip."""
        combo = self.controls.model_combo
        row = combo.findData(key)
        combo.setItemData(row, combo.itemText(row), Qt.ToolTipRole)
        if readable:
            combo.setItemText(row, readable)

    def _use_model_names(self, names: ModelNames) -> None:
        """How this session's model ids read in the status bar, the current view, table and panel."""
        self.model_names = self.current.names = self.table.names = self.details.names = names

    def _show_model(self, model_id: str, fallback_active: bool) -> None:
        self.status.set_model(self.model_names.readable(model_id) if model_id else "", fallback_active)
        self.status.model.setToolTip(model_id)   # the internal id, as the timeline header records it

    def open_model_folders(self) -> ModelFoldersDialog:
        dialog = ModelFoldersDialog(self.primary_dir, self.backbone_dir, self)
        dialog.accepted.connect(lambda: self._apply_model_folders(dialog.primary_dir, dialog.backbone_dir))
        dialog.open()
        return dialog

    # ------------------------------------------------------------------ session control
    @property
    def phase(self) -> str:
        return self.session.phase

    @property
    def engine(self) -> Any:
        return self.session.engine

    def toggle_running(self) -> None:
        if self.phase == "idle":
            device = self.controls.selected_device()
            if device is None:
                self.status.set_error("no microphone to start; use File → Replay audio file…")
                return
            self.start_session(device.index)
        elif self.phase in ("running", "starting"):
            self.session.stop()

    def start_session(self, source: str | int | None) -> None:
        """Start a live session from a device index, an audio file path, or None (default input)."""
        if self.phase != "idle":
            return
        self._reset_live_view()
        model_choice = self.controls.model_choice()
        options = ({"primary_dir": self.primary_dir, "backbone_dir": self.backbone_dir or None}
                   if model_choice == "primary" else {})
        self.session_path = str(new_session_path(self.sessions_dir, out=self.timeline_out))
        self.status.set_state("starting", f"loading {self.controls.model_combo.currentText()}")
        self.session.start(source, model_choice, self.session_path, options)

    def stop_session(self) -> None:
        self.session.stop()

    def _on_started(self, timeline_path: str) -> None:
        try:   # the engine wrote the header (its models' ids and readable names) before it started
            self._use_model_names(ModelNames(load_session(timeline_path).header))
        except SessionFileError:
            self._use_model_names(ModelNames())
        self.status.set_session(timeline_path)
        self._update_actions()

    def _on_failed(self, message: str) -> None:
        self.session_path = ""
        self.status.set_error(message)
        self.status.set_state("idle")
        self._update_actions()

    def _on_stopped(self, summary: SessionSummary | None) -> None:
        self.plot.show_all()
        self.controls.level_meter.set_level(float("-inf"))   # nothing is listening any more
        if summary is not None:
            self._show_summary(summary)
            self.status.set_state("stopped", f"{summary.utterances} utterances")
        else:
            self.status.set_state("stopped")

    def _on_phase(self, phase: str) -> None:
        busy = phase == "stopping" or (phase == "starting" and self.session.stop_requested)
        self.controls.set_running(phase in ("running", "starting"), busy=busy)
        if phase == "stopping":
            self.status.set_state("stopping")
        self._update_actions()

    def _reset_live_view(self) -> None:
        self.reviewing = False
        self.plot.clear()
        self.plot.set_following(True)
        self.table.clear_rows()
        self.current.reset()
        self._latencies.clear()
        self.last_summary = None
        self.status.set_error("")
        self._active_error = ""
        self.status.set_latency_p95(None)
        self.status.set_drops(0, 0, 0)
        self.status.set_model("", False)
        self.controls.level_meter.set_level(float("-inf"))

    # ------------------------------------------------------------------ engine events
    def on_engine_event(self, event: object) -> None:
        """Slot for EngineBridge.event (GUI thread)."""
        if isinstance(event, EmotionPrediction):
            self._on_prediction(event)
        elif isinstance(event, LevelUpdate):
            self.controls.level_meter.set_level(event.rms_dbfs)
            self.controls.speech_indicator.set_speech(event.speech)
            self.plot.note_time(event.time_s)
        elif isinstance(event, EngineStatus):
            self._on_status(event)
        elif isinstance(event, DropNotice):
            self.status.set_drops(event.partial_windows, event.utterances, event.audio_blocks,
                                  self.bridge.events_dropped)
        elif isinstance(event, SessionSummary):
            self._show_summary(event)

    def _on_prediction(self, prediction: EmotionPrediction) -> None:
        self.plot.add_prediction(prediction)
        self.current.show_prediction(prediction)
        if prediction.kind != "partial":
            self.table.add_prediction(prediction)
            self.details.show_prediction(prediction)
        self._latencies.append(prediction.latency_ms)
        self.status.set_latency_p95(float(np.percentile(np.asarray(self._latencies), 95)))
        self._show_model(prediction.model, prediction.fallback)

    def _on_status(self, status: EngineStatus) -> None:
        self.status.set_state(status.state, status.message)
        if status.model:
            self._show_model(status.model, status.fallback_active)
        if status.state in ERROR_STATES:
            self._active_error = f"{status.state}: {status.message}" if status.message else status.state
            self.status.set_error(self._active_error)
        elif status.state == "running" and self._active_error:
            # Keep the problem visible after recovery: the user may have missed it.
            self.status.set_error(f"{self._active_error} (resumed at {time.strftime('%H:%M:%S')})")
            self._active_error = ""

    def _show_summary(self, summary: SessionSummary) -> None:
        self.last_summary = summary
        if summary.utterances or summary.partials:
            self.status.set_latency_p95(summary.latency_p95_ms)
        self.status.set_drops(summary.dropped_partials, summary.dropped_utterances,
                              summary.dropped_audio_blocks, self.bridge.events_dropped)

    # ------------------------------------------------------------------ review
    def open_session(self, path: str) -> bool:
        """Show a saved timeline in the plot and table; False (with a message) on failure."""
        if self.phase != "idle":
            self.status.set_error("stop the running session before opening another")
            return False
        try:
            session = load_session(path)
        except SessionFileError as exc:
            self.status.set_error(str(exc))
            return False
        self._reset_live_view()
        self._use_model_names(ModelNames(session.header))
        self.reviewing = True
        self.session_path = str(path)
        self.plot.load_predictions(session.predictions)
        self.table.set_predictions(session.utterances())
        utterances = session.utterances()
        if utterances:
            self.current.show_prediction(utterances[-1])
        info = overview(session)
        self.status.set_state("review", info.text())
        self.status.set_session(self.session_path)
        self._update_actions()
        return True

    def _on_table_selection(self) -> None:
        prediction = self.table.selected_prediction()
        if prediction is not None:
            self.details.show_prediction(prediction)
            self.plot.select_utterance(prediction)

    def _ask_path(self, title: str, pattern: str, save: bool, suffix: str = "") -> str:
        start = str(self.settings.value("paths/last_dir", str(Path.home())))
        if save:
            path, _ = QFileDialog.getSaveFileName(self, title, start, pattern)
            if path and suffix and not Path(path).suffix:
                path += suffix
        else:
            path, _ = QFileDialog.getOpenFileName(self, title, start, pattern)
        if path:
            self.settings.setValue("paths/last_dir", str(Path(path).parent))
        return path

    def open_session_dialog(self) -> None:
        path = self._ask_path("Open session", "VED timelines (*.jsonl);;All files (*)", save=False)
        if path:
            self.open_session(path)

    def replay_file_dialog(self) -> None:
        path = self._ask_path("Replay audio file", "Audio (*.wav *.flac *.ogg *.mp3);;All files (*)",
                              save=False)
        if path:
            self.start_session(path)

    def save_session_dialog(self) -> None:
        path = self._ask_path("Save session as", "VED timelines (*.jsonl)", save=True, suffix=".jsonl")
        if path:
            self._report(lambda: copy_session(self.session_path, path), f"session saved to {path}")

    def export_csv_dialog(self) -> None:
        path = self._ask_path("Export CSV", "CSV (*.csv)", save=True, suffix=".csv")
        if path:
            self._report(lambda: export_session_csv(self.session_path, path), f"CSV written to {path}")

    def export_png_dialog(self) -> None:
        path = self._ask_path("Export plot", "PNG image (*.png)", save=True, suffix=".png")
        if path:
            self._report(lambda: self.plot.export_png(path), f"plot written to {path}")

    def _report(self, action: Callable[[], Any], done: str) -> None:
        try:
            action()
        except OSError as exc:
            self.status.set_error(str(exc))
            QMessageBox.warning(self, "VED", str(exc))
            return
        self.statusBar().showMessage(done, 8000)

    # ------------------------------------------------------------------ shutdown
    def shutdown(self) -> None:
        """Stop everything synchronously (window closing); idempotent."""
        self.refresh_timer.stop()
        self.session.shutdown()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt API name)
        self.save_settings()
        self.hide()  # shutting down may wait for a model that is still loading
        self.shutdown()
        super().closeEvent(event)
