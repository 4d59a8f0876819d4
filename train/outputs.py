"""The output rule of every `python -m train` subcommand: nothing a user has is written over unasked.

    check_out(out, inputs, overwrite, own_run, what)   refuse (OutputRefused, one line) or return
    staged_folder(out)                                 context: write into a hidden sibling, renamed into place
    write_text(path, text) / write_json(path, doc)     one file, temporary sibling + fsync + rename

The rule (docs/reliability.md):
* an `--out` that exists and is not this command's own resumable run is refused unless `--overwrite`;
* even with `--overwrite`, a timeline (a file whose first line is a VED session header, or a folder
  holding one), anything under the repository's models/ folder (shipped and archived bundles) and
  any input of the same command (the path itself, an existing folder or file inside it, or one
  that holds it) are never written over;
* outputs are written to a temporary sibling and renamed into place when complete, so a failure
  leaves nothing half-written (and, with --overwrite, the old output whole).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from models.atomic import _fsync_folder as fsync_folder  # the one best-effort folder fsync
from models.atomic import write_text_atomically

REPO_MODELS = Path(__file__).resolve().parent.parent / "models"
_TIMELINE_SCAN_LIMIT = 2000   # files looked at under a folder --out before it may be replaced


class OutputRefused(ValueError):
    """An output path the rule refuses; the message is one line naming it."""


def _resolved(path: Path) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):   # a symlink loop
        return Path(os.path.abspath(path))


def is_timeline(path: Path) -> bool:
    """True for a regular file whose first line is a VED session header ({"type": "header", ...})."""
    from models.safe_json import InputFileError, check_regular_file, loads

    try:
        check_regular_file(path)
        with open(path, "rb") as handle:
            first = handle.readline(1 << 16)
        record = loads(first.decode("utf-8", "replace"), str(path))
    except (InputFileError, OSError):
        return False
    return isinstance(record, dict) and record.get("type") == "header" and "format_version" in record


def _timeline_inside(folder: Path) -> Path | None:
    for count, path in enumerate(folder.rglob("*.jsonl")):
        if count >= _TIMELINE_SCAN_LIMIT:
            break
        if is_timeline(path):
            return path
    return None


def protected(out: Path, inputs: Iterable[Path] = ()) -> str | None:
    """Why `out` may never be written over, even with --overwrite; None when it may."""
    target = _resolved(out)
    if target == REPO_MODELS or target.is_relative_to(REPO_MODELS) or REPO_MODELS.is_relative_to(target):
        return "it is a shipped or archived model under models/ (copy it elsewhere to change it)"
    for source in inputs if os.path.lexists(out) else ():   # a new path inside an input folder harms nothing
        src = _resolved(Path(source))
        if target == src:
            return f"it is an input of this command ({source})"
        if target.is_relative_to(src):
            return f"it is inside an input of this command ({source})"
        if src.is_relative_to(target):
            return f"it holds an input of this command ({source})"
    if is_timeline(out):
        return "it is a recorded VED session timeline"
    if out.is_dir() and not out.is_symlink():
        found = _timeline_inside(out)
        if found is not None:
            return f"it holds a recorded VED session timeline ({found})"
    return None


def check_out(out: Path, inputs: Iterable[Path] = (), overwrite: bool = False, own_run: bool = False,
              what: str = "--out") -> None:
    """Apply the rule to `out` before any work starts; OutputRefused (one line) when it is broken.
    own_run: `out` is this command's own resumable run (cv/fit --resume, cv --fold jobs) or its own
    earlier output that it updates (a report file with report markers)."""
    out = Path(out)
    folder = next((p for p in out.absolute().parents if os.path.lexists(p)), None)
    if folder is not None and not folder.is_dir():
        raise OutputRefused(f"{what} {out} cannot be made: {folder} is a file, not a folder")
    reason = protected(out, inputs)
    if reason:
        raise OutputRefused(f"{what} {out} is never written over: {reason}")
    if os.path.lexists(out) and not own_run and not overwrite:
        kind = "folder" if out.is_dir() else "file"
        raise OutputRefused(f"{what} {out} already exists ({kind}); pick a new name, or pass --overwrite to "
                            "replace it")


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield an empty folder `PARENT/.NAME.staging-<random>/NAME` (same leaf name, so reports and
    ensembles written inside name it right); when the block succeeds it is renamed to `out`,
    replacing whatever is there (the caller checked with check_out); when it fails, it is removed
    and `out` is untouched."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=f".{out.name[:200]}.staging-", dir=out.parent))
    stage = holder / out.name
    stage.mkdir()
    try:
        yield stage
        publish(stage, out)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def publish(stage: Path, out: Path) -> None:
    """Rename the finished `stage` folder to `out`; an existing `out` is moved aside first and
    removed only once the new one is in place (a crash in between leaves both, never neither)."""
    old = None
    if os.path.lexists(out):
        old = Path(tempfile.mkdtemp(prefix=f".{out.name[:200]}.replaced-", dir=out.parent))
        os.replace(out, old / "old")
    os.replace(stage, out)
    fsync_folder(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
    """Write a text file through a temporary sibling (fsync'd, then renamed over `path`)."""
    write_text_atomically(path, lambda handle: handle.write(text))


def write_json(path: Path, doc: Any) -> None:
    """JSON (indent 1) written atomically. A NaN or infinite number (a diverged loss in a history)
    is written as null: the file stays valid JSON and the rest of the result is kept."""
    try:
        text = json.dumps(doc, indent=1, sort_keys=False, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite_or_null(doc), indent=1, sort_keys=False, allow_nan=False)
    write_text(path, text)


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    if hasattr(value, "tolist"):   # numpy scalars and arrays
        return _finite_or_null(value.tolist())
    return value
