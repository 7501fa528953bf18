"""List the GPU images inside a binary's ``.nv_fatbin`` section, headers only.

Layout (little-endian), as described publicly (GrigoryEvko/nvopen-tools) and checked here
against ``cuobjdump --list-elf/--list-ptx`` on nvcc 13.0 output:

- containers back to back: u32 magic ``0xBA55ED50``, u16 version, u16 header size,
  u64 size of the entries that follow (containers may be separated by zero padding);
- entries: u16 kind (1 PTX, 2 ELF/SASS), u16, u32 entry header size, u64 payload size,
  ..., u32 at +28 the arch number (80, 90, 120), u64 flags at +40.
- Flags, measured: ``0x8000`` compressed with zstd (nvcc 13), ``0x2000`` compressed with
  NVIDIA's LZ4 variant (CUDA <= 12: every image of xformers 0.0.30's ``_C.so``, which
  ``cuobjdump`` lists as compressed), ``0x100000`` arch-specific (``sm_90a``), ``0x200000``
  family-specific (``sm_100f``; cuobjdump prints it as plain ``sm_100``).

We seek from header to header and never read payloads, so listing torch's 456 MB
``libtorch_cuda.so`` costs the same as listing a 1 MB test library with as many images.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

from pytest_vllm_env import files
from pytest_vllm_env.readers.elf import ElfError, read_elf

# What a fatbin holds and which GPUs it serves is arch vocabulary (tables/archs.py): the
# torch wheel table and the coverage checks use it without reading a binary.
from pytest_vllm_env.tables.archs import Arch
from pytest_vllm_env.tables.archs import Coverage as Coverage
from pytest_vllm_env.tables.archs import FatbinImage as FatbinImage
from pytest_vllm_env.tables.archs import arch_coverage as arch_coverage
from pytest_vllm_env.tables.archs import arch_specific_only as arch_specific_only
from pytest_vllm_env.tables.archs import describe as describe
from pytest_vllm_env.tables.archs import ptx_jits_to as ptx_jits_to
from pytest_vllm_env.tables.archs import sass_runs_on as sass_runs_on

MAGIC = 0xBA55ED50
FLAG_ZSTD = 0x8000  # nvcc 13: zstd (the payload starts 28 b5 2f fd)
FLAG_LZ4 = 0x2000  # CUDA <= 12: NVIDIA's LZ4 variant (xformers 0.0.30 / 0.0.33 wheels)
FLAG_COMPRESSED = FLAG_ZSTD | FLAG_LZ4
FLAG_ARCH_SPECIFIC = 0x100000
FLAG_FAMILY = 0x200000
MAX_ENTRIES = 1_000_000


class FatbinError(ElfError):
    """The fatbin section is malformed; the message says where."""


def read_images(path: str | Path) -> list[FatbinImage]:
    """Every image in ``path``'s ``.nv_fatbin``, in file order; ``[]`` when there is none.

    Raises :class:`~pytest_vllm_env.readers.elf.ElfError` (or :class:`FatbinError`) for a file
    that is not ELF or a fatbin whose sizes point past its section.
    """
    path = Path(path)
    elf = read_elf(path, symbols=False)
    sec = elf.section(".nv_fatbin")
    if sec is None or sec.size == 0:
        return []
    try:
        with files.open_regular(path) as fh:
            fh.seek(0, 2)
            if sec.offset + sec.size > fh.tell():
                raise FatbinError(
                    f".nv_fatbin (offset {sec.offset}, {sec.size} "
                    f"bytes) runs past the end of the file"
                )
            return list(_walk(fh, sec.offset, sec.offset + sec.size))
    except OSError as exc:
        raise ElfError(f"cannot read: {exc.strerror or exc}") from None


def _walk(fh, start: int, end: int) -> Iterable[FatbinImage]:
    pos, count = start, 0
    while pos + 16 <= end:
        fh.seek(pos)
        head = fh.read(16)
        magic, _version, header_size, body = struct.unpack("<IHHQ", head)
        if magic != MAGIC:
            if magic == 0:  # zero padding between containers: find the next magic in chunks
                pos = _skip_padding(fh, pos, end)
                continue
            raise FatbinError(f"no fatbin magic at section offset {pos - start} (found {magic:#x})")
        entry, body_end = pos + header_size, pos + header_size + body
        if header_size < 16 or body_end > end:
            raise FatbinError(
                f"fatbin container at section offset {pos - start} "
                f"claims {body} bytes, past the section"
            )
        while entry + 48 <= body_end:
            fh.seek(entry)
            raw = fh.read(48)
            kind, _u, ehs, payload = struct.unpack_from("<HHIQ", raw)
            (arch_no,) = struct.unpack_from("<I", raw, 28)
            (flags,) = struct.unpack_from("<Q", raw, 40)
            if ehs < 48 or entry + ehs + payload > body_end:
                raise FatbinError(
                    f"fatbin entry at section offset {entry - start} has "
                    f"sizes ({ehs}+{payload}) past its container"
                )
            count += 1
            if count > MAX_ENTRIES:
                raise FatbinError("more than a million fatbin entries: not a real binary")
            if kind in (1, 2, 0x10):
                suffix = "a" if flags & FLAG_ARCH_SPECIFIC else "f" if flags & FLAG_FAMILY else ""
                arch = Arch(arch_no // 10, arch_no % 10, suffix)
                yield FatbinImage(
                    "ptx" if kind == 1 else "sass", arch, bool(flags & FLAG_COMPRESSED)
                )
            entry += ehs + payload
        pos = body_end


def _skip_padding(fh, pos: int, end: int) -> int:
    """The offset of the next non-zero 8-byte word (or ``end``): padding is usually a few
    bytes, a corrupt section may be megabytes of zeros, so read 64 B, then up to 64 KiB."""
    step = 64
    while pos < end:
        fh.seek(pos)
        chunk = fh.read(min(step, end - pos))
        step = min(step * 8, 65536)
        if not chunk:
            return end
        stripped = len(chunk) - len(chunk.lstrip(b"\0"))
        if stripped < len(chunk):
            return pos + stripped // 8 * 8
        pos += len(chunk)
    return end
