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

import math
import os
import struct
import sys
from dataclasses import dataclass, field
from itertools import chain, compress, count, groupby, repeat
from operator import add, and_, itemgetter, mul, rshift, sub
from pathlib import Path
from typing import NamedTuple

from pytest_vllm_env import files

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


class TensorInfo(NamedTuple):
    """One tensor of a header; ``begin``/``end`` are absolute byte offsets in ``file``.

    A NamedTuple: a 100 GB checkpoint has thousands of tensors and the whole verdict must
    cost about what parsing the JSON does (benchmarks/modelopt_headers.py)."""

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
        with files.open_regular(path) as fh:  # a FIFO or /dev/zero is refused, not read
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
        parsed = files.loads_json(raw)  # bytes: json detects UTF-8 itself, no decoded copy
    except (UnicodeDecodeError, ValueError) as exc:
        raise SafetensorsError(path, f"header is not JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise SafetensorsError(path, "header is JSON but not an object")
    return _validate(path, parsed, length, size)


def _validate(path: Path, parsed: dict, length: int, size: int) -> SafetensorsHeader:
    """Validate with whole-list operations (loops in C: ``map``, slices, set and list
    comparisons); on any doubt, redo it entry by entry to name the first bad tensor. This is
    what keeps the verdict near the cost of ``json.loads`` on a 100 GB checkpoint."""
    data_start = 8 + length
    raw_meta = parsed.get("__metadata__")
    entries = parsed
    if raw_meta is not None:
        entries = dict(parsed)
        del entries["__metadata__"]
    try:
        names = list(entries)
        values = list(entries.values())
        dtypes = list(map(_GET_DTYPE, values))
        shapes = list(map(_GET_SHAPE, values))
        offsets = list(map(_GET_OFFSETS, values))
        ok = (
            (raw_meta is None or isinstance(raw_meta, dict))
            and set(dtypes) <= _WHOLE_BYTES.keys()
            and set(map(type, shapes)) <= {list}
            and set(map(type, offsets)) <= {list}
            and set(map(len, offsets)) <= {2}
        )
        if ok:
            dims = list(chain.from_iterable(shapes))
            flat = list(chain.from_iterable(offsets))
            ok = set(map(type, dims)) <= {int} and set(map(type, flat)) <= {int}
            ok = ok and min(dims, default=0) >= 0
        if ok:
            begins, ends = flat[0::2], flat[1::2]
            expected = list(map(mul, map(math.prod, shapes), map(_WHOLE_BYTES.__getitem__, dtypes)))
            # Sizes equal numel * itemsize (so end >= begin), and each tensor ends where the
            # next begins: no overlap, no gap. The safetensors writer lists tensors in data
            # order, so this holds in header order; any other order is checked sorted.
            in_order = flat[1:-1:2] == flat[2::2]
            spans = flat if in_order else list(chain.from_iterable(sorted(offsets)))
            ok = (
                list(map(sub, ends, begins)) == expected
                and (
                    spans[0] == 0 and spans[-1] == size - data_start
                    if spans
                    else size == data_start
                )
                and spans[1:-1:2] == spans[2::2]
            )
    except (TypeError, KeyError, IndexError, AttributeError, ValueError):
        ok = False
    if not ok:
        return _validate_slowly(path, dict(parsed), length, size)
    metadata = {str(k): str(v) for k, v in raw_meta.items()} if raw_meta else {}
    absolute = list(map(add, flat, repeat(data_start)))
    # tuple.__new__ on the NamedTuple class: built in C, no Python __new__ per tensor.
    rows = zip(
        names,
        dtypes,
        map(tuple, shapes),
        absolute[0::2],
        absolute[1::2],
        repeat(path),
        strict=False,
    )
    tensors = dict(zip(names, map(tuple.__new__, repeat(TensorInfo), rows), strict=False))
    return SafetensorsHeader(path, length, size, tensors, metadata)


_GET_DTYPE, _GET_SHAPE, _GET_OFFSETS = (itemgetter(k) for k in ("dtype", "shape", "data_offsets"))
# Sub-byte dtypes (F4, F6) take the entry-by-entry path, which rounds up to whole bytes.
_WHOLE_BYTES = {d: b // 8 for d, b in DTYPE_BITS.items() if b % 8 == 0}


def _validate_slowly(path: Path, parsed: dict, length: int, size: int) -> SafetensorsHeader:
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


def decode_floats(dtype: str, data: bytes) -> list[float]:
    """F32/F16/F64/BF16 bytes -> floats; ValueError for other dtypes."""
    if dtype == "BF16":
        # bfloat16 is the top half of a float32.
        count = len(data) // 2
        halves = struct.unpack(f"<{count}H", data)
        widened = struct.pack(f"<{count}I", *(h << 16 for h in halves))
        return list(struct.unpack(f"<{count}f", widened))
    fmt = _FLOAT_FORMATS.get(dtype)
    if fmt is None:
        raise ValueError(f"{dtype} is not a float dtype this reader decodes")
    return list(struct.unpack(f"<{len(data) // struct.calcsize(fmt)}{fmt}", data))


def read_floats(tensor: TensorInfo, *, limit: int = MAX_SCALE_BYTES) -> list[float]:
    """Decode one F32/F16/BF16/F64 tensor's values; raise SafetensorsError (too big,
    unreadable) or ValueError (a dtype that is not a float we decode)."""
    return read_many_floats([tensor], limit=limit)[tensor.name]


# Scales lie next to each other in real files (the safetensors writer puts the largest
# dtypes first, so every F32 scale of a shard is in one run): merging ranges closer than
# this turns a thousand reads into one per shard without reading weights.
COALESCE_GAP = 64 * 1024
_F32_NATIVE = sys.byteorder == "little" and struct.calcsize("f") == 4


def read_many_floats(
    tensors: list[TensorInfo], *, limit: int = MAX_SCALE_BYTES
) -> dict[str, list[float]]:
    """Values of many small float tensors: one open per file, one read per run of
    neighbouring tensors, and (for F32, the usual scale dtype) one decode per run; raise
    SafetensorsError naming the first that cannot be read. Whole-list operations only:
    a 100 GB checkpoint has thousands of scales."""
    if not tensors:
        return {}
    sizes = list(map(sub, map(_END, tensors), map(_BEGIN, tensors)))
    if max(sizes) > limit:
        tensor = tensors[sizes.index(max(sizes))]
        raise SafetensorsError(
            tensor.file,
            f"tensor {tensor.name!r} is {tensor.nbytes} bytes; not read (limit {limit})",
        )
    unknown = set(map(_DTYPE, tensors)) - _FLOAT_FORMATS.keys() - {"BF16"}
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]} is not a float dtype this reader decodes")
    values: dict[str, list[float]] = {}
    for group in _by_file(tensors):
        file = group[0].file
        begins = list(map(_BEGIN, group))
        ends = list(map(_END, group))
        gaps = map(sub, begins[1:], ends[:-1])
        cuts = list(compress(count(1), map(COALESCE_GAP.__lt__, gaps)))
        try:
            fh = files.open_regular(file)
        except OSError as exc:
            raise SafetensorsError(file, f"cannot read: {exc.strerror or exc}") from None
        fd = fh.fileno()
        try:
            for start, stop in zip([0, *cuts], [*cuts, len(group)], strict=True):
                first, last = begins[start], ends[stop - 1]
                data = os.pread(fd, last - first, first)
                if len(data) != last - first:
                    raise SafetensorsError(
                        file, f"truncated while reading tensor {group[start].name!r}"
                    )
                run = group[start:stop]
                offs = list(map(sub, begins[start:stop], repeat(first)))
                if (
                    _F32_NATIVE
                    and set(map(_DTYPE, run)) == {"F32"}
                    and not any(map(and_, offs, repeat(3)))
                ):
                    # The usual case: every scale F32, decoded in one go and sliced.
                    floats = memoryview(data)[: len(data) & ~3].cast("f").tolist()
                    names = map(_NAME, run)
                    if offs == list(range(0, len(data), 4)) and set(
                        map(sub, ends[start:stop], begins[start:stop])
                    ) == {4}:
                        # ModelOpt's per-tensor scales: back-to-back F32 scalars.
                        values.update(zip(names, map(list, zip(floats)), strict=True))
                        continue
                    stops = map(rshift, map(sub, ends[start:stop], repeat(first)), repeat(2))
                    slices = map(slice, map(rshift, offs, repeat(2)), stops)
                    values.update(zip(names, map(floats.__getitem__, slices), strict=True))
                else:
                    for t, o in zip(run, offs, strict=True):
                        values[t.name] = decode_floats(t.dtype, data[o : o + t.nbytes])
        except OSError as exc:
            raise SafetensorsError(file, f"cannot read: {exc.strerror or exc}") from None
        finally:
            fh.close()
    return values


def read_float_sample(tensor: TensorInfo, *, values: int = 65536, chunks: int = 64) -> list[float]:
    """About ``values`` values of a float tensor (F32/F16/BF16), read as ``chunks`` evenly
    spaced runs: enough to tell which domain a weight's numbers are in (FP8-grid values
    or dequantized ones) without reading a whole weight. Raise SafetensorsError or
    ValueError like :func:`read_floats`."""
    width = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}.get(tensor.dtype)
    if width is None:
        raise ValueError(f"{tensor.dtype} is not a float dtype this reader decodes")
    total = tensor.nbytes // width
    if total <= values:
        return read_floats(tensor, limit=max(tensor.nbytes, 1))
    per = max(values // chunks, 1)
    step = total // chunks
    out: list[float] = []
    try:
        fh = files.open_regular(tensor.file)
    except OSError as exc:
        raise SafetensorsError(tensor.file, f"cannot read: {exc.strerror or exc}") from None
    fd = fh.fileno()
    try:
        for i in range(chunks):
            offset = tensor.begin + i * step * width
            data = os.pread(fd, per * width, offset)
            if len(data) != per * width:
                raise SafetensorsError(tensor.file, f"truncated while reading {tensor.name!r}")
            out.extend(decode_floats(tensor.dtype, data))
    except OSError as exc:
        raise SafetensorsError(tensor.file, f"cannot read: {exc.strerror or exc}") from None
    finally:
        fh.close()
    return out


def _by_file(tensors: list[TensorInfo]) -> list[list[TensorInfo]]:
    """The tensors grouped by file (files in path order), each group by offset. Grouped by
    the identity of the ``file`` object (one per header) with integer keys sorted in C:
    comparing thousands of Paths costs a Python call each. Equal paths held by different
    objects only make an extra group, read on its own."""
    ids, begins = map(id, map(_FILE, tensors)), map(_BEGIN, tensors)
    keys = sorted(zip(ids, begins, range(len(tensors)), strict=False))
    groups = [
        list(map(tensors.__getitem__, map(_THIRD, run))) for _, run in groupby(keys, key=_FIRST)
    ]
    groups.sort(key=lambda group: group[0].file)
    return groups


_NAME, _DTYPE, _BEGIN, _END, _FILE = (itemgetter(i) for i in (0, 1, 3, 4, 5))
_FIRST, _THIRD = itemgetter(0), itemgetter(2)
