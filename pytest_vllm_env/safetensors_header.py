"""Read a ``.safetensors`` file's header, and only the bytes of the tensors asked for.

The format (huggingface/safetensors, ``docs``): an unsigned little-endian 64-bit header
length N, then N bytes of UTF-8 JSON mapping each tensor name to ``{"dtype", "shape",
"data_offsets": [begin, end]}`` (offsets relative to the byte after the header), plus an
optional ``"__metadata__"`` object of strings; then the data.

Why our own reader rather than the ``safetensors`` package: the package's ``safe_open``
memory-maps the whole file and stops at the first problem with a terse Rust error; we want
a verdict that names the file and says what is wrong (truncated, absurd header length,
overlapping offsets, unknown dtype), a bound on what we read, and no dependency on torch
or numpy for the handful of scale tensors whose bytes we decode. The stdlib does all of it
in ~150 lines, and a header costs one ``read`` of N bytes whatever the size of the weights.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

# The safetensors library refuses headers over 100 MB (MAX_HEADER_SIZE); so do we: a
# corrupt length field must not make us allocate gigabytes.
MAX_HEADER_BYTES = 100_000_000
# dtype -> bits per element (safetensors' Dtype enum, including the sub-byte float types).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U16": 16,
    "I16": 16,
    "F16": 16,
    "BF16": 16,
    "U32": 32,
    "I32": 32,
    "F32": 32,
    "U64": 64,
    "I64": 64,
    "F64": 64,
    "C64": 64,
}


class SafetensorsError(Exception):
    """The file is not a valid safetensors file; the message names the file and the fault."""

    def __init__(self, path: Path | str, what: str) -> None:
        super().__init__(f"{path}: {what}")
        self.path = Path(path)
        self.what = what


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a header; ``begin``/``end`` are absolute byte offsets in ``file``."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int
    file: Path

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    """What a header says: the tensors, the metadata, and where the data starts."""

    path: Path
    header_bytes: int
    file_size: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)


def read_header(path: Path | str, *, max_header_bytes: int = MAX_HEADER_BYTES) -> SafetensorsHeader:
    """Parse and validate the header of ``path``; raise :class:`SafetensorsError`.

    Validated: the length field against the file size and ``max_header_bytes``; the JSON;
    every entry's dtype, shape and offsets; that offsets lie inside the data, do not
    overlap, match ``numel * dtype size``, and together cover the data exactly (a
    shorter file is a truncated download; the safetensors library refuses both).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(8)
            if len(head) < 8:
                raise SafetensorsError(path, f"truncated: {size} bytes, not even a header length")
            (length,) = struct.unpack("<Q", head)
            if length > max_header_bytes:
                raise SafetensorsError(
                    path,
                    f"header length field says {length} bytes (limit {max_header_bytes}): "
                    "not a safetensors file, or a corrupt one",
                )
            if 8 + length > size:
                raise SafetensorsError(
                    path,
                    f"truncated: the header length field says {length} bytes but the file "
                    f"has only {size - 8} after it",
                )
            raw = fh.read(length)
    except OSError as exc:
        raise SafetensorsError(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SafetensorsError(path, f"header is not JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise SafetensorsError(path, "header is JSON but not an object")
    return _validate(path, parsed, length, size)


def _validate(path: Path, parsed: dict, length: int, size: int) -> SafetensorsHeader:
    data_start = 8 + length
    data_len = size - data_start
    metadata: dict[str, str] = {}
    raw_meta = parsed.pop("__metadata__", None)
    if raw_meta is not None:
        if not isinstance(raw_meta, dict):
            raise SafetensorsError(path, "__metadata__ is not an object")
        metadata = {str(k): str(v) for k, v in raw_meta.items()}
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in parsed.items():
        where = f"tensor {name!r}"
        if not isinstance(entry, dict):
            raise SafetensorsError(path, f"{where}: entry is not an object")
        dtype = entry.get("dtype")
        shape = entry.get("shape")
        offsets = entry.get("data_offsets")
        if dtype not in DTYPE_BITS:
            raise SafetensorsError(path, f"{where}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise SafetensorsError(path, f"{where}: shape {shape!r} is not a list of sizes")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_count(o) for o in offsets)
            or offsets[0] > offsets[1]
        ):
            raise SafetensorsError(path, f"{where}: data_offsets {offsets!r} is not [begin, end]")
        begin, end = offsets
        if end > data_len:
            raise SafetensorsError(
                path,
                f"truncated: {where} ends at data byte {end} but the file holds only "
                f"{data_len} data bytes",
            )
        bits = math.prod(shape) * DTYPE_BITS[dtype]
        if (bits + 7) // 8 != end - begin:
            raise SafetensorsError(
                path,
                f"{where}: {dtype} {shape} needs {(bits + 7) // 8} bytes but data_offsets "
                f"span {end - begin}",
            )
        spans.append((begin, end, name))
        tensors[name] = TensorInfo(
            name, dtype, tuple(shape), data_start + begin, data_start + end, path
        )
    spans.sort()
    cursor = 0
    previous = ""
    for begin, end, name in spans:
        if begin < cursor:
            raise SafetensorsError(
                path, f"tensor {name!r} overlaps tensor {previous!r} (data bytes {begin}..{end})"
            )
        if begin > cursor:
            raise SafetensorsError(
                path, f"gap in the data: nothing covers data bytes {cursor}..{begin}"
            )
        cursor, previous = end, name
    if cursor != data_len:
        raise SafetensorsError(
            path, f"the tensors cover {cursor} data bytes but the file holds {data_len}"
        )
    return SafetensorsHeader(path, length, size, tensors, metadata)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# -- the few bytes we do read: scale tensors ------------------------------------------------
# Scales are scalars or per-channel vectors; anything bigger than this is not a scale and
# would break the promise that the cost does not grow with the weights.
MAX_SCALE_BYTES = 16 * 1024 * 1024
_FLOAT_FORMATS = {"F32": "f", "F16": "e", "F64": "d"}


def read_floats(tensor: TensorInfo, *, limit: int = MAX_SCALE_BYTES) -> list[float]:
    """Decode an F32/F16/BF16/F64 tensor's values; raise SafetensorsError (too big,
    unreadable) or ValueError (a dtype that is not a float we decode)."""
    if tensor.nbytes > limit:
        raise SafetensorsError(
            tensor.file,
            f"tensor {tensor.name!r} is {tensor.nbytes} bytes; not read (limit {limit})",
        )
    if tensor.dtype not in _FLOAT_FORMATS and tensor.dtype != "BF16":
        raise ValueError(f"{tensor.dtype} is not a float dtype this reader decodes")
    try:
        with open(tensor.file, "rb") as fh:
            fh.seek(tensor.begin)
            data = fh.read(tensor.nbytes)
    except OSError as exc:
        raise SafetensorsError(tensor.file, f"cannot read: {exc.strerror or exc}") from None
    if len(data) != tensor.nbytes:
        raise SafetensorsError(tensor.file, f"truncated while reading tensor {tensor.name!r}")
    if tensor.dtype == "BF16":
        # bfloat16 is the top half of a float32.
        count = len(data) // 2
        halves = struct.unpack(f"<{count}H", data)
        return list(
            struct.unpack(f"<{count}f", struct.pack(f"<{count}I", *(h << 16 for h in halves)))
        )
    fmt = _FLOAT_FORMATS[tensor.dtype]
    return list(struct.unpack(f"<{len(data) // struct.calcsize(fmt)}{fmt}", data))
