"""Top control bar (input picker, model selector, Start/Stop, window length, level)
and the status bar fields of the monitor window."""
from __future__ import annotations

from pathlib import Path

from PyQt5.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QPushButton, QStatusBar,
                             QToolButton, QWidget)

from gui.model_folders import PRIMARY_UNSET_TITLE
from models.bundle import peek_bundle_meta
from gui.widgets import LevelMeter, SpaceIsStartStop, SpeechIndicator
from realtime.devices import DeviceError, InputDevice, list_input_devices, rescan_devices

DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parent.parent / "models" / "default"
# Keys saved by older VEDs: "conformer" (the first default's name),
# "wavlm-ensemble" before the primary could be any ensemble (Whisper heads too).
LEGACY_MODEL_KEYS = {"conformer": "default", "wavlm-ensemble": "primary"}


def default_model_title(bundle_dir: Path = DEFAULT_BUNDLE_DIR) -> str:
    """"conformer-v3.1 (default)": the architecture the shipped bundle records (JSON only, no torch)."""
    model = (peek_bundle_meta(bundle_dir) or {}).get("model")
    name = model.get("name") if isinstance(model, dict) else None
    return f"{name} (default)" if isinstance(name, str) else "default model (models/default)"


def model_choices(bundle_dir: Path = DEFAULT_BUNDLE_DIR) -> tuple[tuple[str, str], ...]:
    """(key, title) of the model selector; keys are what gui/app.py's engine factory receives."""
    return (("default", default_model_title(bundle_dir)), ("primary", PRIMARY_UNSET_TITLE))


def query_input_devices(rescan: bool) -> tuple[list[InputDevice], str]:
    """Input devices from the audio layer, and a one-line error ('' when the query worked).

    rescan: re-initialise PortAudio first so newly plugged devices appear (only while
    no stream is open; the window disables the button during a session).
    """
    try:
        if rescan:
            rescan_devices()
        return list_input_devices(), ""
    except DeviceError as exc:
        return [], str(exc).splitlines()[0]


def device_title(device: InputDevice) -> str:
    default = " [default]" if device.is_default else ""
    return f"{device.name} (#{device.index}, {device.default_samplerate_hz / 1000:.1f} kHz){default}"


def preferred_row(devices: list[InputDevice], preferred: str | int | None) -> int:
    """Row to preselect: `preferred` as an index ("3" or 3), exact name, or name part
    (case-insensitive); otherwise the system default input; otherwise the first."""
    default_row = next((row for row, d in enumerate(devices) if d.is_default), 0)
    if preferred is None or not str(preferred).strip():
        return default_row
    wanted = str(preferred).strip()
    if wanted.isdigit():
        return next((row for row, d in enumerate(devices) if d.index == int(wanted)), default_row)
    lowered = wanted.lower()
    for matches in ((lambda d: d.name == wanted), (lambda d: lowered in d.name.lower())):
        row = next((row for row, d in enumerate(devices) if matches(d)), None)
        if row is not None:
            return row
    return default_row


class ControlBar(QWidget):
    """Input picker + refresh, model selector + settings, Start/Stop, window length, meter, speech light."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.device_combo = QComboBox()
        self.device_combo.setMinimumWidth(220)
        self.device_combo.setToolTip("microphone to listen to")
        self.refresh_button = QToolButton()
        self.refresh_button.setText("⟳")
        self.refresh_button.setToolTip("Rescan audio input devices")
        self.model_combo = QComboBox()
        for key, title in model_choices():
            self.model_combo.addItem(title, key)
        self.model_combo.setToolTip("the fast default model, or the accurate primary (its folder: "
                                    "Settings → Model folders); the fast model is the primary's fallback")
        self.settings_button = QToolButton()
        self.settings_button.setText("…")
        self.settings_button.setToolTip("Model folders (the primary, and a backbone for WavLM heads)")
        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Start/stop listening (space bar)")
        self.start_button.setMinimumWidth(90)
        self.window_spin = QDoubleSpinBox()
        self.window_spin.setRange(5.0, 3600.0)
        self.window_spin.setDecimals(0)
        self.window_spin.setSingleStep(10.0)
        self.window_spin.setSuffix(" s")
        self.window_spin.setToolTip("visible time window of the live plot, in seconds")
        self.smooth_check = QCheckBox("Smooth")
        self.smooth_check.setToolTip("draw the utterance trace exponentially smoothed (newest weighs 0.4; "
                                     "restarts after 3 s of silence)")
        self._space_filter = SpaceIsStartStop(self)
        self.window_spin.installEventFilter(self._space_filter)
        self.level_meter = LevelMeter()
        self.speech_indicator = SpeechIndicator()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        for widget in (QLabel("Input"), self.device_combo, self.refresh_button, QLabel("Model"),
                       self.model_combo, self.settings_button, self.start_button, QLabel("Window"),
                       self.window_spin, self.smooth_check):
            layout.addWidget(widget)
        layout.addStretch(1)
        layout.addWidget(self.level_meter)
        layout.addWidget(self.speech_indicator)
        self.devices: list[InputDevice] = []

    def set_devices(self, devices: list[InputDevice], error: str, preferred: str | int | None) -> None:
        """Fill the picker; select `preferred` (device name or index) if present, else the default."""
        self.devices = list(devices)
        self.device_combo.clear()
        if not devices:
            self.device_combo.addItem(error or "(no input devices)", None)
            self.device_combo.setEnabled(False)
            return
        self.device_combo.setEnabled(True)
        for device in devices:
            self.device_combo.addItem(device_title(device), device.index)
        self.device_combo.setCurrentIndex(preferred_row(devices, preferred))

    def selected_device(self) -> InputDevice | None:
        row = self.device_combo.currentIndex()
        return self.devices[row] if 0 <= row < len(self.devices) else None

    def set_primary(self, title: str, available: bool) -> None:
        """Title the primary entry (e.g. "whisper-ultimate tiny.en ×5 (primary)") and enable or
        disable it (the selection falls back to the default model when disabled)."""
        row = self.model_combo.findData("primary")
        self.model_combo.setItemText(row, title)
        self.model_combo.model().item(row).setEnabled(available)
        if not available and self.model_combo.currentIndex() == row:
            self.model_combo.setCurrentIndex(self.model_combo.findData("default"))

    def primary_available(self) -> bool:
        row = self.model_combo.findData("primary")
        return self.model_combo.model().item(row).isEnabled()

    def model_choice(self) -> str:
        return str(self.model_combo.currentData())

    def select_model(self, key: str) -> None:
        """Select by key ("default", "primary" or a legacy key) when that entry is enabled."""
        row = self.model_combo.findData(LEGACY_MODEL_KEYS.get(key, key))
        if row >= 0 and self.model_combo.model().item(row).isEnabled():
            self.model_combo.setCurrentIndex(row)

    def set_running(self, running: bool, busy: bool = False) -> None:
        """running: a session is on; busy: starting or stopping (button disabled meanwhile)."""
        self.start_button.setText("Stop" if running else "Start")
        self.start_button.setEnabled(not busy)
        for widget in (self.device_combo, self.refresh_button, self.model_combo, self.settings_button):
            widget.setEnabled(not running and not busy)
        if not self.devices:
            self.device_combo.setEnabled(False)


class StatusFields:
    """Permanent status bar fields: state, model (+fallback), latency p95, drops, error, session file."""

    def __init__(self, status_bar: QStatusBar) -> None:
        self.state = QLabel("idle")
        self.model = QLabel("model: —")
        self.latency = QLabel("p95 latency: —")
        self.drops = QLabel("drops: 0")
        self.error = QLabel("")
        self.error.setStyleSheet("color: #b00020;")
        self.session = QLabel("")
        for label in (self.state, self.model, self.latency, self.drops, self.session):
            label.setStyleSheet("padding: 0 6px; border-left: 1px solid #c8c8c8;")
        for label in (self.state, self.model, self.latency, self.drops):
            status_bar.addPermanentWidget(label)
        status_bar.addWidget(self.error, 1)
        status_bar.addPermanentWidget(self.session)

    def set_state(self, state: str, message: str = "") -> None:
        self.state.setText(f"{state}: {message}" if message else state)

    def set_model(self, model: str, fallback_active: bool) -> None:
        if fallback_active:
            self.model.setText(f"model: {model or '—'} (FALLBACK)")
            self.model.setStyleSheet("padding: 0 6px; border-left: 1px solid #c8c8c8; "
                                     "color: #b26a00; font-weight: bold;")
        else:
            self.model.setText(f"model: {model or '—'}")
            self.model.setStyleSheet("padding: 0 6px; border-left: 1px solid #c8c8c8;")

    def set_latency_p95(self, latency_ms: float | None) -> None:
        self.latency.setText("p95 latency: —" if latency_ms is None else f"p95 latency: {latency_ms:.0f} ms")

    def set_drops(self, partial_windows: int, utterances: int, audio_blocks: int, display_events: int = 0) -> None:
        total = partial_windows + utterances + audio_blocks + display_events
        self.drops.setText(f"drops: {total}")
        self.drops.setToolTip(f"{partial_windows} live windows, {utterances} utterances, "
                              f"{audio_blocks} audio blocks, {display_events} display events dropped "
                              "(queues full)")
        self.drops.setStyleSheet("padding: 0 6px; border-left: 1px solid #c8c8c8;"
                                 + (" color: #b26a00;" if total else ""))

    def set_error(self, message: str) -> None:
        self.error.setText(message)

    def set_session(self, path: str) -> None:
        self.session.setText(f"session: {path}" if path else "")
        self.session.setToolTip(path)
