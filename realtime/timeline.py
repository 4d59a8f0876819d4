"""Session timeline: one JSON object per line, written as it happens, reloadable after a crash.

Line 1 is `{"type": "header", ...}`; then, in the order they happen:
* `{"type": "prediction", ...EmotionPrediction}`: kind "utterance" (final) or "partial" (live window);
* `{"type": "drops", ...DropNotice, "time_s"}`: cumulative drop counters when they change;
* `{"type": "status", ...EngineStatus, "wall_utc"}`: engine state changes;
* `{"type": "summary", ...SessionSummary, "ended_utc"}`: last line of a cleanly stopped session.

Every line is flushed and fsync'd when written, so a crash (even SIGKILL or power loss)
loses at most the line being written; the reader ignores a torn last line. A timeline is
never overwritten: the writer creates a new file only (an existing path is refused) and holds
an exclusive lock on it while the session runs; the CSV export never writes onto a timeline.
Partial windows stay in the file when the utterance covering them arrives; the reloaded
`Session.view()` shows the utterance instead of them. Torch-free (the GUI imports it).
"""
from __future__ import annotations

import bisect
import csv
import gc
import json
import math
import os
import re
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from models.atomic import write_text_atomically
from models.labels import EMOTIONS
from models.safe_json import MAX_FILE_BYTES, InputFileError, check_regular_file, loads
from realtime.files import create_exclusively
from realtime.types import DropNotice, EmotionPrediction, EngineStatus, SessionSummary

FORMAT_VERSION = 1
MIN_FREE_BYTES = 5 * 1024 * 1024
# Partial windows keep coming during the VAD hangover (default 450 ms) after an utterance's
# last voiced frame; a window ending this long after the utterance still belongs to it.
DEFAULT_SUPERSEDE_TOLERANCE_S = 0.6
PREDICTION_KINDS = ("utterance", "partial")
CSV_COLUMNS = ("start_s", "end_s", "kind", "label", "confidence", *EMOTIONS, "model", "latency_ms", "uncertain")
# Exports written before the "uncertain" column (1: the model was not sure; 0: it was) may be replaced too.
_EXPORT_HEADERS = (",".join(CSV_COLUMNS), ",".join(CSV_COLUMNS[:-1]))


class TimelineError(OSError):
    """The timeline cannot be written or read; the message is one line for the user."""


def utc_now_iso() -> str:
    """Current UTC time, ISO 8601 with seconds ("2026-11-25T10:21:00Z")."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sessions_dir() -> Path:
    """The user's session folder: $XDG_DATA_HOME/ved/sessions (default ~/.local/share/ved/sessions)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ved" / "sessions"


# Dated names handed out by default_timeline_path in this process: their writer takes the next
# free -2, -3... suffix when another monitor created the same name first (O_EXCL decides who).
_DATED_NAMES: set[Path] = set()
_DATED_RE = re.compile(r"^(ved-\d{8}-\d{6})(?:-(\d+))?\.jsonl$")


def default_timeline_path(now: datetime | None = None) -> Path:
    """sessions_dir()/ved-YYYYmmdd-HHMMSS.jsonl for the given (default: current local) time;
    -2, -3... is appended when a session of that second already exists (never overwritten). Two
    monitors started in the same second may both be given one name: TimelineWriter creates the
    file with O_EXCL and moves on to the next free suffix, so both get a timeline."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    path = sessions_dir() / f"ved-{stamp}.jsonl"
    while path.exists():
        path = _next_dated(path)
    _DATED_NAMES.add(path)
    return path


def _next_dated(path: Path) -> Path:
    """ved-STAMP.jsonl -> ved-STAMP-2.jsonl -> ved-STAMP-3.jsonl ..."""
    stamp, count = _DATED_RE.match(path.name).groups()
    return path.with_name(f"{stamp}-{int(count or 1) + 1}.jsonl")


def check_writable(path: Path, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Fail now, not an hour into a session: the path must be new, its folder creatable and
    writable with free space. An existing file is refused: it may be an earlier session."""
    folder = path.parent
    try:
        if path.is_dir():
            raise TimelineError(f"timeline path {path} is a folder; give a file name such as "
                                f"{path / 'session.jsonl'}")
        if (path.exists() or path.is_symlink()) and path not in _DATED_NAMES:
            raise TimelineError(f"timeline {path} already exists; VED never overwrites a recorded session: "
                                "give a new --out name, or leave --out out for a new dated file")
    except TimelineError:
        raise
    except OSError as exc:   # ENAMETOOLONG, ELOOP, EACCES on a parent...
        raise TimelineError(f"cannot use timeline path {path}: {exc.strerror or exc}") from None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TimelineError(f"cannot create timeline folder {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TimelineError(f"timeline folder {folder} is not writable")
    free = shutil.disk_usage(folder).free
    if free < min_free_bytes:
        raise TimelineError(f"only {free / 1e6:.1f} MB free in {folder}; need at least "
                            f"{min_free_bytes / 1e6:.0f} MB for the timeline")


class TimelineWriter:
    """Append-only JSONL writer; thread-safe; every line flushed and fsync'd.

    header: free-form settings (input, model, VAD, engine, app version...); the writer adds
    type, format_version and started_utc. The file must not exist yet (created with O_EXCL, so two
    sessions can never share one) and is flock'ed exclusively until close(). Raises TimelineError
    when the file exists or cannot be created.
    """

    def __init__(self, path: str | os.PathLike, header: dict[str, Any]) -> None:
        self.path = Path(path)
        check_writable(self.path)
        self._lock = threading.Lock()
        try:
            self._file = self._create()
        except FileExistsError:
            raise TimelineError(f"timeline {self.path} already exists; VED never overwrites a recorded "
                                "session: choose another name") from None
        except OSError as exc:
            raise TimelineError(f"cannot write timeline {self.path}: {exc.strerror or exc}") from None
        self.lines_written = 0
        self.append({"type": "header", "format_version": FORMAT_VERSION, "started_utc": utc_now_iso(),
                     **header})

    def _create(self) -> TextIO:
        """The new file (O_EXCL); a dated default name that another monitor took meanwhile moves on
        to the next free suffix."""
        while True:
            try:
                return create_exclusively(self.path)
            except FileExistsError:
                if self.path not in _DATED_NAMES:
                    raise
                self.path = _next_dated(self.path)
                _DATED_NAMES.add(self.path)

    @property
    def closed(self) -> bool:
        return self._file.closed

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line, then flush and fsync; ignored once closed."""
        line = json.dumps(record, separators=(",", ":"), allow_nan=False, default=_json_default) + "\n"
        with self._lock:
            if self._file.closed:
                return
            try:
                self._file.write(line)
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                # Disk full or device gone: the lines already synced stay valid; stop writing
                # rather than fail on every later record.
                self._close_quietly()
                raise TimelineError(f"cannot write timeline {self.path}: {exc.strerror or exc}; "
                                    "results from now on are not saved") from None
            self.lines_written += 1

    def _close_quietly(self) -> None:
        """Close after a failed write; the unwritten buffer cannot be saved either."""
        try:
            self._file.close()
        except OSError:
            pass

    def write_prediction(self, prediction: EmotionPrediction) -> None:
        self.append({"type": "prediction", **prediction.to_dict()})

    def write_drops(self, notice: DropNotice, time_s: float, reason: str = "") -> None:
        self.append({"type": "drops", "time_s": round(time_s, 3), "partial_windows": notice.partial_windows,
                     "utterances": notice.utterances, "audio_blocks": notice.audio_blocks, "reason": reason})

    def write_status(self, status: EngineStatus) -> None:
        self.append({"type": "status", "wall_utc": utc_now_iso(), "state": status.state,
                     "message": status.message, "model": status.model,
                     "fallback_active": status.fallback_active})

    def write_summary(self, summary: SessionSummary) -> None:
        self.append({"type": "summary", "ended_utc": utc_now_iso(), **summary.to_dict()})

    def close(self) -> None:
        """Idempotent."""
        with self._lock:
            if not self._file.closed:
                self._close_quietly()

    def __enter__(self) -> "TimelineWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_default(value: Any) -> Any:
    """numpy scalars and paths -> JSON types (NaN/inf are refused by allow_nan=False)."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot write {type(value).__name__} to the timeline")


@dataclass
class Session:
    """A reloaded timeline.

    predictions: every prediction line in file order (utterances and partials);
    superseded: per prediction, True for a partial window replaced by the utterance covering it;
    drops/statuses: raw records; summary: the summary record, None when the session did
    not stop cleanly; torn_lines: unparseable or malformed lines skipped (0 or 1 after a crash;
    a prediction whose values have the wrong types counts here too).
    """

    path: Path
    header: dict[str, Any]
    predictions: list[EmotionPrediction] = field(default_factory=list)
    superseded: list[bool] = field(default_factory=list)
    drops: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    torn_lines: int = 0

    def utterances(self) -> list[EmotionPrediction]:
        return [p for p in self.predictions if p.kind == "utterance"]

    def partials(self) -> list[EmotionPrediction]:
        """Every partial window in the file, superseded or not."""
        return [p for p in self.predictions if p.kind == "partial"]

    def view(self) -> list[EmotionPrediction]:
        """What a reviewer sees: utterances, plus partials no utterance replaced, in file order."""
        return [p for p, gone in zip(self.predictions, self.superseded) if not gone]

    @property
    def complete(self) -> bool:
        """True when the session ended with a summary line."""
        return self.summary is not None

    @property
    def duration_s(self) -> float:
        return max((p.end_s for p in self.predictions), default=0.0)


def mark_superseded(predictions: list[EmotionPrediction],
                    tolerance_s: float = DEFAULT_SUPERSEDE_TOLERANCE_S) -> list[bool]:
    """For each prediction, True if it is a partial window replaced by an utterance.

    A window is replaced when it starts inside an utterance's span (contiguous pieces of a
    monologue cut at max length are merged) and ends at most `tolerance_s` after it: windows
    keep coming during the VAD hangover, after the utterance's last voiced frame.
    O((U + P) log U).
    """
    spans = sorted((p.start_s, p.end_s) for p in predictions if p.kind == "utterance")
    merged: list[list[float]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1] + 1e-3:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    starts = [span[0] for span in merged]
    flags = []
    for p in predictions:
        if p.kind != "partial":
            flags.append(False)
            continue
        i = bisect.bisect_right(starts, p.start_s + 1e-3) - 1
        flags.append(i >= 0 and p.start_s < merged[i][1] and p.end_s <= merged[i][1] + tolerance_s)
    return flags


def _supersede_tolerance(header: dict[str, Any]) -> float:
    """The session's VAD hangover (+0.1 s for frame rounding) when the header records it."""
    vad = header.get("vad")
    hangover_ms = vad.get("hangover_ms") if isinstance(vad, dict) else None
    if isinstance(hangover_ms, (int, float)) and hangover_ms >= 0:
        return hangover_ms / 1000.0 + 0.1
    return DEFAULT_SUPERSEDE_TOLERANCE_S


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _prediction(r: dict[str, Any]) -> EmotionPrediction:
    """Positional construction (about twice as fast as from_dict on a 20,000-line reload) of a
    well-typed record; ValueError for a line whose values have the wrong types or are not finite."""
    start_s, end_s, probs, label, latency_ms = r["start_s"], r["end_s"], r["probs"], r["label"], r["latency_ms"]
    model, kind = r["model"], r.get("kind", "utterance")
    if not (_is_number(start_s) and _is_number(end_s) and _is_number(latency_ms) and isinstance(probs, dict)
            and isinstance(label, str) and isinstance(model, str) and kind in PREDICTION_KINDS
            and all(isinstance(k, str) and _is_number(v) for k, v in probs.items()) and label in probs):
        raise ValueError("malformed prediction")
    return EmotionPrediction(start_s, end_s, probs, label, model, latency_ms, kind,
                             r.get("queue_depth", 0), r.get("fallback", False) is True,
                             r.get("uncertain", False) is True)


@contextmanager
def _cyclic_gc_paused():
    """A 2-hour timeline is ~30,000 small acyclic records; in a process with a large heap (torch,
    a long session) the cyclic collector would rescan that heap many times while they are built,
    doubling the reload time. Reference counting still frees everything."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_timeline(path: str | os.PathLike) -> Session:
    """Read a timeline; skips torn, unparseable or hostile lines (counted: nested too deep, NaN,
    huge fields; models.safe_json), raises TimelineError when unusable. Only a regular file is
    opened (a FIFO would block forever), and only up to models.safe_json.MAX_FILE_BYTES."""
    path = Path(path)
    try:
        info = check_regular_file(path, "timeline")
        if info.st_size > MAX_FILE_BYTES:
            raise InputFileError(f"timeline {path} is {info.st_size / 1e6:.0f} MB; VED reads at most "
                                 f"{MAX_FILE_BYTES / 1e6:.0f} MB")
        with open(path, "r", encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except InputFileError as exc:
        raise TimelineError(str(exc)) from None
    except OSError as exc:
        raise TimelineError(f"cannot read timeline {path}: {exc.strerror or exc}") from None
    with _cyclic_gc_paused():
        return _parse_timeline(path, lines)


def _parse_timeline(path: Path, lines: list[str]) -> Session:
    records, torn = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = loads(line, str(path), number_hooks=False)
        except InputFileError:
            torn += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            torn += 1
    if not records or records[0].get("type") != "header":
        raise TimelineError(f"{path} is not a VED timeline (no header line)")
    session = Session(path=path, header=records[0], torn_lines=torn)
    for record in records[1:]:
        kind = record.get("type")
        if kind == "prediction":
            try:
                session.predictions.append(_prediction(record))
            except (KeyError, TypeError, ValueError):
                session.torn_lines += 1
        elif kind == "drops":
            session.drops.append(record)
        elif kind == "status":
            session.statuses.append(record)
        elif kind == "summary":
            session.summary = record
    session.superseded = mark_superseded(session.predictions, _supersede_tolerance(session.header))
    return session


def check_export_target(session: Session, path: Path) -> None:
    """The CSV may replace an earlier export, never the timeline itself or any other file."""
    try:
        if path.resolve() == session.path.resolve() or (path.exists() and os.path.samefile(path, session.path)):
            raise TimelineError(f"the CSV target {path} is the timeline itself; give another name such as "
                                f"{session.path.stem}-export.csv")
        if path.is_dir():
            raise TimelineError(f"the CSV target {path} is a folder; give a file name")
        if path.exists() and not path.is_file():   # a FIFO or device: never opened
            raise TimelineError(f"the CSV target {path} is not a regular file; give a file name")
        if path.exists():
            with open(path, "r", encoding="utf-8", errors="replace", newline="") as handle:
                first = handle.readline().rstrip("\r\n")
            if first not in _EXPORT_HEADERS:
                raise TimelineError(f"{path} exists and is not a VED CSV export; VED does not overwrite it: "
                                    "choose another name")
    except TimelineError:
        raise
    except OSError as exc:
        raise TimelineError(f"cannot write CSV {path}: {exc.strerror or exc}") from None


def export_csv(session: Session, path: str | os.PathLike) -> int:
    """One row per prediction (all kinds, file order) with CSV_COLUMNS; returns rows written.

    Written to a temporary file and renamed into place, so an earlier export is replaced whole or
    not at all. Refuses (TimelineError) to write onto the timeline itself or onto any existing
    file that is not an earlier VED export. A prediction that cannot be formatted is skipped
    (rows written < len(session.predictions)).
    """
    path = Path(path)
    check_export_target(session, path)
    written = 0

    def write(handle) -> None:
        nonlocal written
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for p in session.predictions:
            try:
                row = [f"{p.start_s:.3f}", f"{p.end_s:.3f}", p.kind, p.label, f"{p.confidence:.4f}",
                       *(f"{p.probs.get(name, 0.0):.4f}" for name in EMOTIONS), p.model, f"{p.latency_ms:.1f}",
                       "1" if p.uncertain else "0"]
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            writer.writerow(row)
            written += 1

    try:
        write_text_atomically(path, write, newline="")
    except OSError as exc:
        raise TimelineError(f"cannot write CSV {path}: {exc.strerror or exc}") from None
    return written

