"""Past sessions: load a timeline for review, copy it, export it as CSV.

Thin, torch-free helpers over realtime.timeline so the window code stays about
widgets. Every failure is a `SessionFileError` with a one-line message.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from realtime.timeline import Session, TimelineError, export_csv, load_timeline


class SessionFileError(OSError):
    """A session file could not be read, copied or exported (one-line message)."""


@dataclass(frozen=True)
class SessionOverview:
    """What the window shows about a loaded session."""

    path: Path
    utterances: int
    partials: int
    duration_s: float
    complete: bool
    torn_lines: int
    input_description: str

    def text(self) -> str:
        state = "complete" if self.complete else "no summary (stopped abruptly)"
        torn = f", {self.torn_lines} unreadable line(s) skipped" if self.torn_lines else ""
        source = f" from {self.input_description}" if self.input_description else ""
        return (f"{self.path.name}{source}: {self.utterances} utterances, {self.partials} live windows, "
                f"{self.duration_s:.1f} s, {state}{torn}")


def load_session(path: str | os.PathLike) -> Session:
    """Read a timeline file; raises SessionFileError (one line) when it is unusable."""
    try:
        return load_timeline(path)
    except TimelineError as exc:
        raise SessionFileError(str(exc)) from None


def overview(session: Session) -> SessionOverview:
    header = session.header
    source = header.get("input") or header.get("source") or ""
    return SessionOverview(path=Path(session.path), utterances=len(session.utterances()),
                           partials=len(session.partials()), duration_s=session.duration_s,
                           complete=session.complete, torn_lines=session.torn_lines,
                           input_description=str(source) if not isinstance(source, dict) else
                           str(source.get("description", "")))


def copy_session(source: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Save As: copy the timeline file (it may still be growing; the copy is a snapshot)."""
    source, destination = Path(source), Path(destination)
    if source.resolve() == destination.resolve():
        raise SessionFileError(f"{destination} is the session file itself; choose another name")
    try:
        shutil.copyfile(source, destination)
    except OSError as exc:
        raise SessionFileError(f"cannot copy session to {destination}: {exc.strerror or exc}") from None
    return destination


def export_session_csv(source: str | os.PathLike, destination: str | os.PathLike) -> int:
    """Export every prediction of a timeline file as CSV rows; returns the row count."""
    session = load_session(source)
    try:
        return export_csv(session, destination)
    except TimelineError as exc:
        raise SessionFileError(str(exc)) from None
