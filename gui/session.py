"""Life cycle of one live session: build + start the engine, poll for the end of a
replayed file, stop, shut down. Slow steps run in BackgroundCalls; results come
back as Qt signals on the GUI thread. Phases: idle -> starting -> running ->
stopping -> idle (a failed start goes straight back to idle).
"""
from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from PyQt5.QtCore import QObject, QTimer, pyqtSignal

from gui.bridge import BackgroundCall, CallResult, one_line_error
from realtime.timeline import default_timeline_path
from realtime.types import SessionSummary

STOP_TIMEOUT_S = 5.0
BUILD_JOIN_TIMEOUT_S = 60.0
END_POLL_MS = 250

EngineFactory = Callable[..., Any]


def build_and_start(factory: EngineFactory, source: str | int | None, model_choice: str,
                    listener: Callable[[object], None], options: dict[str, Any],
                    cancelled: threading.Event | None = None) -> Any:
    """Worker thread: build the engine (see gui/app.py) and start it (start() warms up models).

    When `cancelled` is set meanwhile (the window closed during a slow model load), the
    engine is stopped right away so its timeline still gets a summary; returns None then.
    """
    engine = factory(source, model_choice, listener, **options)
    try:
        engine.start()
    except BaseException:
        engine.stop(timeout_s=STOP_TIMEOUT_S)  # closes the timeline and joins whatever started
        raise
    if cancelled is not None and cancelled.is_set():
        engine.stop(timeout_s=STOP_TIMEOUT_S)
        return None
    return engine


def new_session_path(sessions_dir: str | None, now: datetime | None = None, out: str | None = None) -> Path:
    """A fresh timeline path: `out` (main.py --out) when given, as headless writes it; else a dated
    name in sessions_dir (default: the user's session folder). Never an existing file: names have
    1 s resolution and a window records several sessions under one --out, so add -2, -3... on a clash."""
    path = Path(out) if out else default_timeline_path(now)
    if sessions_dir and not out:
        path = Path(sessions_dir) / path.name
    candidate, counter = path, 1
    while candidate.exists():
        counter += 1
        candidate = path.with_name(f"{path.stem}-{counter}{path.suffix}")
    return candidate


class SessionController(QObject):
    """Owns the engine of the current live session.

    Signals (GUI thread): phase_changed(str); started(str timeline path);
    failed(str one-line message; the session did not start);
    stopped(object: SessionSummary or None); warning(str: problem while stopping).
    """

    phase_changed = pyqtSignal(str)
    started = pyqtSignal(str)
    failed = pyqtSignal(str)
    stopped = pyqtSignal(object)
    warning = pyqtSignal(str)

    def __init__(self, engine_factory: EngineFactory, listener: Callable[[object], None],
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.engine_factory = engine_factory
        self.listener = listener
        self.engine: Any = None
        self.timeline_path = ""
        self._phase = "idle"
        self._stop_requested = False
        self._calls: list[BackgroundCall] = []
        self._cancelled = threading.Event()
        self._end_timer = QTimer(self)
        self._end_timer.setInterval(END_POLL_MS)
        self._end_timer.timeout.connect(self.poll_end)
        self._end_timer.start()

    @property
    def phase(self) -> str:
        return self._phase

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def start(self, source: str | int | None, model_choice: str, timeline_path: str,
              model_options: dict[str, Any] | None = None) -> bool:
        """Begin building the engine; False when a session is already on."""
        if self._phase != "idle":
            return False
        self.timeline_path = timeline_path
        options = {"timeline_path": timeline_path, **(model_options or {})}
        factory, listener, cancelled = self.engine_factory, self.listener, self._cancelled
        self._set_phase("starting")
        self._run("build", lambda: build_and_start(factory, source, model_choice, listener, options, cancelled))
        return True

    def stop(self) -> None:
        """Ask the session to stop (also while it is still starting); idempotent."""
        if self._phase == "starting":
            self._stop_requested = True
            self._set_phase("starting")
        elif self._phase == "running" and self.engine is not None:
            engine = self.engine
            self._set_phase("stopping")
            self._run("stop", lambda: engine.stop(timeout_s=STOP_TIMEOUT_S))

    def poll_end(self) -> None:
        """A replayed file ends by itself: stop once the engine reports all work done."""
        if self._phase == "running" and self.engine is not None and self.engine.wait(0):
            self.stop()

    def shutdown(self, timeout_s: float = STOP_TIMEOUT_S, build_timeout_s: float = BUILD_JOIN_TIMEOUT_S) -> None:
        """Synchronous stop for window close; idempotent.

        A model still loading is waited for (up to build_timeout_s): abandoning a thread
        inside torch at interpreter exit aborts the process and loses the timeline summary.
        """
        self._end_timer.stop()
        self._cancelled.set()
        for call in list(self._calls):
            call.join(build_timeout_s if call.tag == "build" else timeout_s)
            built = call.result.value if call.tag == "build" and call.result is not None else None
            if built is not None and self.engine is None:
                self.engine = built  # started, but its result signal will never be delivered
        if self.engine is not None:
            try:
                self.engine.stop(timeout_s=timeout_s)
            except Exception as exc:  # closing anyway; say why the timeline may lack a summary
                self.warning.emit(one_line_error(exc))
            self.engine = None
        self._phase = "idle"

    def _run(self, tag: str, fn: Callable[[], Any]) -> None:
        call = BackgroundCall(tag, fn, self)
        call.finished.connect(self._on_done)
        self._calls.append(call)
        call.start()

    def _on_done(self, result: CallResult) -> None:
        finished = [c for c in self._calls if not c.running]
        self._calls = [c for c in self._calls if c.running]
        for call in finished:
            call.deleteLater()
        if result.tag == "build":
            self._on_built(result)
        else:
            self._on_stopped(result)

    def _on_built(self, result: CallResult) -> None:
        if result.error:
            self.engine, self._stop_requested, self.timeline_path = None, False, ""
            self._set_phase("idle")
            self.failed.emit(result.error)
            return
        if result.value is None:  # cancelled by shutdown(); the worker already stopped it
            self._set_phase("idle")
            return
        self.engine = result.value
        self._set_phase("running")
        self.started.emit(self.timeline_path)
        if self._stop_requested:
            self.stop()

    def _on_stopped(self, result: CallResult) -> None:
        engine, self.engine = self.engine, None
        self._stop_requested = False
        if result.error:
            self.warning.emit(f"while stopping: {result.error}")
        summary = result.value if isinstance(result.value, SessionSummary) else None
        if summary is None and engine is not None:
            try:
                summary = engine.summary()
            except Exception as exc:  # the summary is informative only
                self.warning.emit(f"no session summary: {one_line_error(exc)}")
        self._set_phase("idle")
        self.stopped.emit(summary)

    def _set_phase(self, phase: str) -> None:
        self._phase = phase
        self.phase_changed.emit(phase)
