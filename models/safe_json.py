"""Hostile-input rule for every JSON and CSV file VED reads (bundles, ensembles, folds, metrics,
timelines, corpus CSVs): bounded parsing, a small schema check, one line naming file and field.

    check_regular_file(path, what)      FIFO, device or folder given as a file -> InputFileError (never opened)
    read_json(path, schema=None)        regular file -> parsed, schema-checked value
    loads(text, source, schema=None)    the same for text already read (a timeline line)
    validate(value, schema, source)     type check against a schema (below)
    read_csv_rows(table)                a corpus CSV's rows (UTF-8, columns file,label,speaker)
    csv_row(row, table, line, allow_outside) -> (Path, label, speaker) of one corpus CSV row

Limits: nesting depth MAX_DEPTH, integers of at most MAX_INT_DIGITS digits, strings of at most
MAX_FIELD_CHARS characters, files of at most MAX_FILE_BYTES; NaN and Infinity (and floats that
overflow to them, 1e999) are refused. Python's json would recurse 100,000 levels deep and
overflow the stack, and parse a 10 MB integer in quadratic time.

Schemas: a type (str, int, float = any finite number, bool, dict, list, object = anything), a
tuple of alternatives (`(str, None)`), `[item_schema]` (a list of such items), `{str: schema}`
(an object whose values all match), or `{"key": schema, "key?": schema}` (these keys, "?" =
optional; other keys are allowed). Torch-free.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

MAX_DEPTH = 64
MAX_INT_DIGITS = 40
MAX_FIELD_CHARS = 1 << 20
MAX_FILE_BYTES = 256 << 20
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


class InputFileError(ValueError):
    """A file VED reads is unusable or hostile; the message is one line naming the file (and field)."""


def check_regular_file(path: str | os.PathLike, what: str = "input file") -> os.stat_result:
    """stat (never open) `path`: it must be a regular file (symlinks followed). Returns its stat."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise InputFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = ("a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode)
                else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "a socket")
        raise InputFileError(f"{what} {path} is {kind}, not a regular file")
    return info


def read_text(path: str | os.PathLike, what: str = "input file", max_bytes: int = MAX_FILE_BYTES) -> str:
    """UTF-8 text of a regular file of at most max_bytes; InputFileError (naming the file) otherwise."""
    info = check_regular_file(path, what)
    if info.st_size > max_bytes:
        raise InputFileError(f"{what} {path} is {info.st_size / 1e6:.0f} MB; VED reads at most "
                             f"{max_bytes / 1e6:.0f} MB")
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise InputFileError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None


def _check_shape(text: str, source: str) -> None:
    """Nesting depth and string lengths, checked before json sees the text."""
    if len(text) <= MAX_FIELD_CHARS and text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth = 0
    for token in _TOKENS.finditer(text):
        char = token.group()
        if char[0] == '"':
            if len(char) > MAX_FIELD_CHARS + 2:
                raise InputFileError(f"{source}: a string of {len(char) - 2:,} characters (limit {MAX_FIELD_CHARS:,})")
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise InputFileError(f"{source}: nested more than {MAX_DEPTH} levels deep")
        else:
            depth -= 1


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise InputFileError(f"an integer of {len(text)} digits (limit {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InputFileError(f"the number {text[:20]} overflows")
    return value


def _parse_constant(name: str) -> Any:
    raise InputFileError(f"{name} is not a number JSON allows")


# Built once: json.loads with any hook argument would build a new decoder for every call.
_STRICT = json.JSONDecoder(parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
_FAST = json.JSONDecoder(parse_constant=_parse_constant)


def loads(text: str, source: str, schema: Any = None, number_hooks: bool = True) -> Any:
    """Parse JSON text within the limits, then check it against `schema` (None: any value).

    number_hooks False (a timeline's many small lines, twice as fast): integers are bounded only by
    Python's own 4,300-digit limit and a float that overflows becomes inf, so the caller must check
    the numbers it uses are finite; NaN and Infinity are still refused."""
    _check_shape(text, source)
    try:
        value = (_STRICT if number_hooks else _FAST).decode(text)
    except InputFileError as exc:
        raise InputFileError(f"{source}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{source} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except (RecursionError, ValueError) as exc:   # belt and braces: the scan above should have caught these
        raise InputFileError(f"{source} cannot be parsed ({type(exc).__name__})") from None
    if schema is not None:
        validate(value, schema, source)
    return value


def read_json(path: str | os.PathLike, schema: Any = None, what: str = "JSON file") -> Any:
    """A regular JSON file -> value checked against `schema`; InputFileError naming file and field."""
    return loads(read_text(path, what), str(path), schema)


def _type_name(schema: Any) -> str:
    if isinstance(schema, tuple):
        return " or ".join(_type_name(s) for s in schema)
    if isinstance(schema, list):
        items = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}.get(schema[0], "items")
        return "a list" if items == "items" else f"a list of {items}"
    if isinstance(schema, dict):
        return "an object"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "an object",
            list: "a list", None: "null"}.get(schema, str(schema))


def _found(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _matches(value: Any, schema: Any) -> bool:
    if schema is object:
        return True
    if schema is None:
        return value is None
    if isinstance(schema, tuple):
        return any(_matches(value, s) for s in schema)
    if isinstance(schema, list):
        return isinstance(value, list)
    if isinstance(schema, dict):
        return isinstance(value, dict)
    if schema is float:
        return type(value) in (int, float)
    if schema is int:
        return type(value) is int
    return type(value) is schema


def validate(value: Any, schema: Any, source: str, where: str = "") -> None:
    """InputFileError "SOURCE: field WHERE must be ..., found ..." for the first mismatch."""
    if not _matches(value, schema):
        field = f"field {where!r}" if where else "the document"
        raise InputFileError(f"{source}: {field} must be {_type_name(schema)}, found {_found(value)}")
    if isinstance(schema, tuple):
        schema = next(s for s in schema if _matches(value, s))
    if isinstance(schema, list):
        for i, item in enumerate(value):
            validate(item, schema[0], source, f"{where}[{i}]")
    elif isinstance(schema, dict) and len(schema) == 1 and next(iter(schema)) is str:
        for key, item in value.items():
            validate(item, schema[str], source, f"{where}.{key}" if where else key)
    elif isinstance(schema, dict):
        for key, sub in schema.items():
            name, optional = (key[:-1], True) if key.endswith("?") else (key, False)
            path = f"{where}.{name}" if where else name
            if name not in value:
                if not optional:
                    raise InputFileError(f"{source}: field {path!r} is missing")
                continue
            validate(value[name], sub, source, path)


# ---------------------------------------------------------------- schemas of the files train reads
EVAL_SCHEMA = {"macro_f1": float, "accuracy": float, "uar": float, "n": int, "labels": [str],
               "confusion": [[int]],
               "per_class": {str: {"precision": float, "recall": float, "f1": float, "support": int}}}
FOLDS_SCHEMA = {"folds": [{"test_files": [str], "test_speakers?": [str]}], "speaker_fold?": {str: int},
                "k?": int, "assignment_sha256?": (str, None)}
FOLD_METRICS_SCHEMA = {"model": str, "eval": EVAL_SCHEMA, "history?": (list, None), "best_epoch?": (int, None),
                       "wall_time_s?": (float, None), "test_speakers?": ([str], None),
                       "test_predictions?": [int]}
RUN_METRICS_SCHEMA = {"model": str, "eval": (EVAL_SCHEMA, None), "history?": (list, None),
                      "best_epoch?": (int, None), "wall_time_s?": (float, None)}
CV_METRICS_SCHEMA = {"model": str, "summary?": {"macro_f1": {"values": [float]}, "folds?": int},
                     "oof?": EVAL_SCHEMA, "training?": (dict, None), "data?": (dict, None),
                     "fold_wall_time_s?": ([float], None)}
ENSEMBLE_SCHEMA = {"members": [str], "shared_backbone?": (bool, None), "name?": (str, None)}
BUNDLE_SCHEMA = {"format_version": int, "kind": str, "model": {"name": str, "args?": dict},
                 "labels": [str], "feature?": (dict, None), "sample_rate_hz": int, "fold?": (int, None),
                 "metrics?": (dict, None), "training?": (dict, None), "data?": (dict, None)}


# ---------------------------------------------------------------- corpus CSV rows
CSV_COLUMNS = ("file", "label", "speaker")


def read_csv_rows(table: Path) -> list[dict[str | None, Any]]:
    """The rows of a corpus CSV (a regular UTF-8 file, a BOM allowed) as csv.DictReader dicts;
    InputFileError naming the file when it is not readable text or lacks the file,label,speaker columns."""
    import csv
    import io

    text = read_text(table, "CSV file").removeprefix("\ufeff")
    try:
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise InputFileError(f"{table} is not a readable CSV ({exc})") from None
    if not rows or not set(CSV_COLUMNS) <= set(rows[0]):
        raise InputFileError(f"{table} needs the columns file, label and speaker")
    return rows


def outside_folder(name: str, folder: Path) -> bool:
    """True for a CSV `file` entry that leaves the CSV's `folder` (judged on the text: `..` past its
    top, or an absolute path elsewhere; a symlink inside the folder is the user's own choice)."""
    top = os.path.abspath(folder)
    return not os.path.abspath(os.path.join(top, name)).startswith(top.rstrip(os.sep) + os.sep)


def csv_row(row: dict[str | None, Any], table: Path, line: int, allow_outside: bool = False) -> tuple[Path, str, str]:
    """One row of a corpus CSV (read_csv_rows; `line` = its 1-based line in the file, the header
    is line 1) -> (audio path, label, speaker).

    The audio path is relative to the CSV's folder (or absolute) and must lie inside that folder
    unless allow_outside. InputFileError "TABLE line N: ..." for a short row, an
    empty or oversized field, or a path outside the folder."""
    if any(not isinstance(row.get(k), str) for k in CSV_COLUMNS):
        raise InputFileError(f"{table} line {line}: needs the three columns file,label,speaker")
    for key in CSV_COLUMNS:
        if not row[key].strip():
            raise InputFileError(f"{table} line {line}: column {key!r} is empty")
        if len(row[key]) > 4096 or "\0" in row[key]:
            raise InputFileError(f"{table} line {line}: column {key!r} is not a usable value")
    name = row["file"]
    if not allow_outside and outside_folder(name, table.parent):
        raise InputFileError(f"{table} line {line}: file {name!r} is outside the CSV's folder; move the audio "
                             "under it, or pass --allow-outside-paths")
    return table.parent / name, row["label"], row["speaker"]
