"""Entry point of the desktop monitor: `run_gui(engine_factory, args) -> exit code`.

main.py calls `from gui.app import run_gui; return run_gui(engine_factory, args)`.
The GUI never imports torch: everything that loads models lives behind the factory.

Engine factory contract
-----------------------
    engine_factory(source, model_choice, listener, *, timeline_path,
                   primary_dir=None, backbone_dir=None) -> Engine

* source: `int` = input device index (microphone, as listed by
  realtime.devices.list_input_devices()); `str` = path of an audio file to
  replay at real-time pace (FileSource(path, pace="realtime")); `None` = the
  default input device.
* model_choice: "default" (the shipped fast bundle, models/default/) or
  "primary" (then primary_dir and backbone_dir are passed: folders the user or
  main.py chose and the GUI checked from their JSON: an ensemble's JSON + its
  member bundles, or one bundle (models/bundle.py); a backbone folder with config.json,
  weights and preprocessor_config.json only when the members record one, i.e.
  WavLM / Wav2Vec2 heads; Whisper heads need none, backbone_dir may be None).
  The engine runs the primary with the default model as its fallback.
* listener: pass it to Engine(listener=...); it is thread-safe and never blocks.
* timeline_path: where the engine's TimelineWriter must write this session
  (chosen by the GUI in realtime.timeline.sessions_dir() or args.sessions_dir).
* Returns a constructed, NOT started Engine. The GUI calls the factory and
  then `start()` on a worker thread (model loading/warm-up is slow), polls
  `wait(0)` on the GUI thread (True when a replayed file is finished), calls
  `stop(timeout_s=...)` on a worker thread and shows the SessionSummary it
  returns (or `summary()`).
* Errors: raise any Exception with a one-line message (BundleError,
  DeviceError, AudioFileError, TimelineError, EngineError...); the GUI shows it
  in the status bar and stays usable.

args (an argparse.Namespace; every attribute optional):
  device (int | str | None): preselect an input device by index or name;
  file (str | None): replay this audio file as soon as the window opens;
  model (str): "default" or "primary" (the old key "wavlm-ensemble" still works);
  window_s (float): visible seconds of the live plot;
  sessions_dir (str | None): folder for session timelines;
  out (str | None): main.py --out: the first session's timeline file, as headless writes it
    (a later session in the same window: the same name with -2, -3...);
  primary_dir (str | None): the primary's folder (main.py: --primary, default models/primary/);
  backbone_dir (str | None): backbone folder for WavLM / Wav2Vec2 primaries;
  session (str | None): a timeline to open for review at start-up.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Any, Callable

SETTINGS_ORGANISATION = "VED"
SETTINGS_APPLICATION = "VED Monitor"


def _option(args: Any, name: str, default: Any = None) -> Any:
    value = getattr(args, name, default) if args is not None else default
    return default if value is None else value


def build_window(engine_factory: Callable[..., Any], args: Any = None, settings: Any = None):
    """Create (not show) the MainWindow configured from args; needs a QApplication.

    settings: a QSettings; default QSettings("VED", "VED Monitor") (tests pass an ini file).
    """
    from PyQt5.QtCore import QSettings

    from gui.controls import LEGACY_MODEL_KEYS
    from gui.main_window import MainWindow

    if settings is None:
        settings = QSettings(SETTINGS_ORGANISATION, SETTINGS_APPLICATION)
    window = MainWindow(engine_factory, settings, sessions_dir=_option(args, "sessions_dir"),
                        preferred_device=_option(args, "device"), timeline_out=_option(args, "out"))
    primary_dir = _option(args, "primary_dir")
    backbone_dir = _option(args, "backbone_dir")
    if primary_dir or backbone_dir:
        window._apply_model_folders(str(primary_dir or window.primary_dir), str(backbone_dir or window.backbone_dir))
    model = _option(args, "model")
    if model:
        window.controls.select_model(str(model))
        if window.controls.model_choice() != LEGACY_MODEL_KEYS.get(str(model), str(model)):
            window.status.set_error(f"model {model!r} is not available; using "
                                    f"{window.controls.model_combo.currentText()} (check the primary's folder "
                                    "in Settings → Model folders)")
    window_s = _option(args, "window_s")
    if window_s:
        window.controls.window_spin.setValue(float(window_s))
    return window


def check_display() -> None:
    """Raise ValueError (one line) when Qt would abort for lack of a display (Linux, no X/Wayland)."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ValueError("no display found (DISPLAY is not set): use --headless, or run the window "
                         "under `xvfb-run -a python main.py`")


def run_gui(engine_factory: Callable[..., Any], args: Any = None) -> int:
    """Show the monitor and run the Qt event loop; returns the process exit code.

    Raises ValueError (one line) when there is no display to show a window on.
    """
    from PyQt5.QtCore import QTimer
    from PyQt5.QtWidgets import QApplication

    check_display()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(SETTINGS_ORGANISATION)
    app.setApplicationName(SETTINGS_APPLICATION)
    window = build_window(engine_factory, args)
    window.show()
    session = _option(args, "session")
    replay = _option(args, "file")
    if session:
        QTimer.singleShot(0, lambda: window.open_session(str(session)))
    elif replay:
        QTimer.singleShot(0, lambda: window.start_session(str(replay)))
    previous = {sig: signal.signal(sig, lambda *_: window.close()) for sig in (signal.SIGINT, signal.SIGTERM)}
    # Python runs signal handlers only between bytecodes; an idle Qt loop never returns to Python,
    # so a cheap timer wakes it up and Ctrl+C / kill close the window cleanly (timeline summary written).
    wake = QTimer(window)
    wake.timeout.connect(lambda: None)
    wake.start(200)
    try:
        return int(app.exec_())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
