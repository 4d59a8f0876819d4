"""Read the variables of a CTranslate2 `model.bin` into numpy arrays, without CTranslate2.

The layout (CTranslate2 src/models/model.cc `Model::load`, written by
python/ctranslate2/specs/model_spec.py), all integers little-endian:

    uint32 binary_version                (>= 4 here: every variable carries its dtype id)
    string spec_name, uint32 spec_revision
    uint32 num_variables, then per variable:
        string name, uint8 rank, uint32 dims[rank], uint8 dtype_id, uint32 num_bytes, bytes data
    uint32 num_aliases, then per alias: string alias, string variable_name

A string is uint16 length (null terminator included) followed by the bytes.
`read_ct2_variables` checks that the file is whole (no bytes missing or left over), so a
truncated or padded file is reported rather than half-loaded.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

# CTranslate2's DataType enum (include/ctranslate2/types.h).
_DTYPES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
MIN_BINARY_VERSION = 4  # older files store an item size instead of a dtype id
MAX_BINARY_VERSION = 6  # newest layout checked against this reader


class CT2FormatError(ValueError):
    """The bytes are not a CTranslate2 model.bin this reader understands (one line)."""


@dataclass(frozen=True)
class CT2Model:
    """spec: e.g. "WhisperSpec"; variables: name -> array (float16/32 kept as stored,
    bfloat16 widened to float32); aliases: alias -> variable name."""

    binary_version: int
    spec: str
    spec_revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


class _Cursor:
    def __init__(self, blob: memoryview) -> None:
        self.blob, self.pos = blob, 0

    def take(self, count: int) -> memoryview:
        if self.pos + count > len(self.blob):
            raise CT2FormatError(f"model.bin ends early: needed {count} bytes at offset {self.pos}, "
                                 f"file has {len(self.blob)} (truncated?)")
        part = self.blob[self.pos:self.pos + count]
        self.pos += count
        return part

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (length,) = self.unpack("H")
        raw = bytes(self.take(length))
        try:
            return raw.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError:
            raise CT2FormatError(f"model.bin holds a non-UTF-8 name near offset {self.pos}") from None


def _array(raw: memoryview, dtype_name: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    if dtype_name == "bfloat16":  # numpy has no bfloat16: its bits are the top half of a float32
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        values = bits.view(np.float32)
    else:
        values = np.frombuffer(raw, dtype=np.dtype(dtype_name).newbyteorder("<"))
    if values.size != int(np.prod(shape, dtype=np.int64)):
        raise CT2FormatError(f"variable {name!r}: {values.size} values for shape {list(shape)}")
    return values.reshape(shape).copy()


def read_ct2_variables(blob: bytes | memoryview, prefix: str = "") -> CT2Model:
    """Parse a whole model.bin held in memory; keep only variables whose name starts with prefix.

    Raises CT2FormatError naming the first problem (unsupported version, unknown dtype,
    truncated or trailing bytes).
    """
    cur = _Cursor(memoryview(blob))
    (version,) = cur.unpack("I")
    if not MIN_BINARY_VERSION <= version <= MAX_BINARY_VERSION:
        raise CT2FormatError(f"model.bin has CTranslate2 binary version {version}; this reader supports "
                             f"{MIN_BINARY_VERSION}..{MAX_BINARY_VERSION}")
    spec = cur.string()
    (revision,) = cur.unpack("I")
    (count,) = cur.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = cur.string()
        (rank,) = cur.unpack("B")
        shape = cur.unpack(f"{rank}I") if rank else ()
        dtype_id, num_bytes = cur.unpack("BI")
        if dtype_id not in _DTYPES:
            raise CT2FormatError(f"variable {name!r} has unknown CTranslate2 dtype id {dtype_id}")
        raw = cur.take(num_bytes)
        if name.startswith(prefix):
            variables[name] = _array(raw, _DTYPES[dtype_id], tuple(shape), name)
    (num_aliases,) = cur.unpack("I")
    aliases = {}
    for _ in range(num_aliases):
        alias = cur.string()
        aliases[alias] = cur.string()
    if cur.pos != len(cur.blob):
        raise CT2FormatError(f"model.bin has {len(cur.blob) - cur.pos} unexpected bytes after its last entry")
    return CT2Model(version, spec, revision, variables, aliases)
