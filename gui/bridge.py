"""Thread boundary between the engine and the Qt widgets.

The engine calls its listener from its own threads. Qt widgets may only be
touched from the GUI thread, so the listener handed to the engine is
`EngineBridge.listener`: it only puts the event into a bounded queue and wakes
the GUI thread with a queued Qt signal (cheap, never blocks); the GUI thread
receives each event in a slot connected to `EngineBridge.event`.

`BackgroundCall` runs a slow callable (building an engine loads models and
imports torch; stopping joins threads) off the GUI thread and reports the
result back through a signal, again without touching widgets from the worker.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable

from PyQt5.QtCore import QObject, Qt, pyqtSignal

from realtime.source import put_dropping_oldest


class EngineBridge(QObject):
    """Hands engine events (any thread) to the GUI thread through a bounded queue.

    listener() never blocks: it puts into a queue of `max_pending` events (dropping the
    oldest when the GUI thread is stalled, counted in `events_dropped`) and emits one
    queued wake-up signal only when none is in flight. On the GUI thread the wake-up
    drains the queue and re-emits every event through `event` (connect slots there).
    """

    event = pyqtSignal(object)
    _wake = pyqtSignal()

    def __init__(self, parent: QObject | None = None, max_pending: int = 4096) -> None:
        super().__init__(parent)
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._lock = threading.Lock()
        self._wake_pending = False
        self._received = 0
        self._dropped = 0
        self._wake.connect(self.drain, Qt.QueuedConnection)

    def listener(self, engine_event: object) -> None:
        """Engine listener: safe to call from any thread; never blocks the caller."""
        dropped = put_dropping_oldest(self._queue, engine_event)
        with self._lock:
            self._received += 1
            self._dropped += dropped
            wake, self._wake_pending = not self._wake_pending, True
        if wake:
            self._wake.emit()

    def drain(self) -> int:
        """GUI thread: deliver every queued event through `event`; returns how many."""
        with self._lock:
            self._wake_pending = False  # before draining: later puts must wake us again
        delivered = 0
        while True:
            try:
                engine_event = self._queue.get_nowait()
            except queue.Empty:
                return delivered
            self.event.emit(engine_event)
            delivered += 1

    @property
    def events_received(self) -> int:
        with self._lock:
            return self._received

    @property
    def events_dropped(self) -> int:
        with self._lock:
            return self._dropped


@dataclass(frozen=True)
class CallResult:
    """Outcome of a BackgroundCall: exactly one of value/error is meaningful.

    tag: the caller's label ("build", "stop") so one slot can serve several calls.
    error: one-line message when the callable raised, else "".
    """

    tag: str
    value: Any = None
    error: str = ""


class BackgroundCall(QObject):
    """Run `fn()` on a daemon thread; `finished` carries a CallResult on the GUI thread."""

    finished = pyqtSignal(object)

    def __init__(self, tag: str, fn: Callable[[], Any], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._tag = tag
        self._fn = fn
        self._thread: threading.Thread | None = None
        self.result: CallResult | None = None  # also kept here for callers that join() instead

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"ved-gui-{self._tag}", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def tag(self) -> str:
        return self._tag

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            result = CallResult(self._tag, value=self._fn())
        except Exception as exc:  # reported to the user as one line, the GUI keeps running
            result = CallResult(self._tag, error=one_line_error(exc))
        self.result = result
        self.finished.emit(result)


def one_line_error(exc: BaseException) -> str:
    """'ExceptionType: first line of the message' for status bars and dialogs."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
