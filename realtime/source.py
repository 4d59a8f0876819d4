"""The audio-source interface: anything that produces 16 kHz mono int16 blocks.

A source owns its own thread (file reader) or callback (sounddevice) and puts
`AudioBlock`s into a bounded queue it is given. When the queue is full a live
source drops the oldest block and counts it (the callback never blocks); a file
source replaying as fast as possible waits instead (nothing to lose).
The end of the stream is one `END_OF_STREAM` item.
"""
from __future__ import annotations

import queue
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

TARGET_RATE_HZ = 16_000


@dataclass(frozen=True)
class AudioBlock:
    """samples: int16 mono at 16 kHz, shape [n]; start_s on the stream's sample clock."""

    start_s: float
    samples: np.ndarray = field(repr=False)


END_OF_STREAM = object()


def put_dropping_oldest(q: queue.Queue, item: object) -> int:
    """Put without blocking; when full, drop the oldest item first. Returns items dropped."""
    dropped = 0
    while True:
        try:
            q.put_nowait(item)
            return dropped
        except queue.Full:
            try:
                q.get_nowait()
                dropped += 1
            except queue.Empty:
                pass


class AudioSource(ABC):
    """A stream of 16 kHz mono int16 audio.

    description: human text for the timeline header ("mic: USB Audio (index 3)").
    dropped_blocks: blocks dropped because the output queue was full.
    cut_short: why a file could not be read to its end ("" when it was, and for a microphone).
    status_listener: optional callable(state: str, message: str) the source calls
        on device loss / reconnect; set by the engine before start().
    """

    description: str = ""
    dropped_blocks: int = 0
    cut_short: str = ""

    def __init__(self) -> None:
        self.status_listener = None

    @abstractmethod
    def start(self, out_q: "queue.Queue", stop_event: threading.Event) -> None:
        """Begin producing AudioBlocks into out_q until exhausted or stop_event is set."""

    @abstractmethod
    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop producing; idempotent; joins any thread with a timeout."""

    @property
    def is_live(self) -> bool:
        """True for a microphone (real-time, drop on overflow); False for files."""
        return False

    @property
    def input_path(self) -> str | None:
        """The audio file being read; None for a microphone."""
        return None


class ThreadedSource(AudioSource):
    """A source whose producer is one daemon thread running `_run(out_q, stop_event)`.

    start() launches it (once); stop() sets `_stop` and joins with a timeout (idempotent,
    safe from the producer thread itself). `_run` must end soon after `_stop` or
    `stop_event` is set and put END_OF_STREAM last.
    """

    thread_name = "ved-source"

    def __init__(self) -> None:
        super().__init__()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self, out_q: "queue.Queue", stop_event: threading.Event) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__}.start() called twice")
        self._thread = threading.Thread(target=self._run, args=(out_q, stop_event), name=self.thread_name,
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    @abstractmethod
    def _run(self, out_q: "queue.Queue", stop_event: threading.Event) -> None:
        """The producer thread's body."""
