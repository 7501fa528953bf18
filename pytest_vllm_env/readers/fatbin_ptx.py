"""The fatbin of a binary per container (one per compiled translation unit), with the PTX ISA
version of each PTX image: what the driver must JIT, and whether it can.

:mod:`pytest_vllm_env.readers.fatbin` lists a binary's images as one set, which answers "does
any kernel run on this arch"; the driver loads each container (module) on its own, so a binary
whose containers mostly hold ``sm_90`` SASS may still JIT a few from ``compute_80`` PTX on an
H100 (vLLM 0.26.0's ``_moe_C``: 14 of 37 containers are ``sm_80 + sm_120f + compute_80``).

The ISA version of a PTX image is read from its entry header: the u16 pair at +24 (minor,
major), which ``fatbinary`` writes from the PTX text's ``.version`` line. Measured: PTX
texts with ``.version`` 8.4, 9.0 and 9.5 wrapped by nvcc 13.0's ``fatbinary`` give (8, 4),
(9, 0), (9, 5); every uncompressed PTX image of xformers 0.0.30 (8.5) and 0.0.33.post1 (8.7)
and of nvcc 13.0/13.5 output agrees with its ``.version`` line. So a compressed payload (zstd
since CUDA 13, flag 0x8000; an LZ4 variant before, flag 0x2000) need not be decompressed;
where a payload is plain text its ``.version`` line is read too, and it wins.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pytest_vllm_env import files
from pytest_vllm_env.readers.elf import ElfError, read_elf
from pytest_vllm_env.readers.fatbin import (
    FLAG_ARCH_SPECIFIC,
    FLAG_COMPRESSED,
    FLAG_FAMILY,
    MAGIC,
    MAX_ENTRIES,
    FatbinError,
    FatbinImage,
)
from pytest_vllm_env.tables.archs import Arch

_VERSION_LINE = re.compile(rb"^[ \t]*\.version[ \t]+(\d+)\.(\d+)", re.M)
TEXT_PEEK = 4096  # the .version line comes after a few comment lines


@dataclass(frozen=True)
class Image:
    """One image of a container: ``image`` as :mod:`readers.fatbin` names it, and for PTX its
    ISA version (``(9, 0)``) and where that was read (``text`` or ``header``)."""

    image: FatbinImage
    isa: tuple[int, int] | None = None
    isa_from: str = ""


@dataclass(frozen=True)
class Container:
    """One fatbin container (a module the driver loads as a whole)."""

    images: tuple[Image, ...]


@dataclass(frozen=True)
class Binary:
    """A shared object's ``DT_NEEDED`` names and its fatbin containers."""

    needed: tuple[str, ...]
    containers: tuple[Container, ...]


def read_binary(path: str | Path) -> Binary:
    """:func:`read_containers` and the ``DT_NEEDED`` list (``libcudart.so.13``) of ``path``."""
    elf = read_elf(path, symbols=False)
    return Binary(tuple(elf.needed), tuple(_read(Path(path), elf)))


def read_containers(path: str | Path) -> list[Container]:
    """Every fatbin container of ``path``'s ``.nv_fatbin``, in file order; ``[]`` without one.

    Raises :class:`~pytest_vllm_env.readers.elf.ElfError` (or
    :class:`~pytest_vllm_env.readers.fatbin.FatbinError`) for a file that is not ELF or a fatbin
    whose sizes point past its section."""
    return _read(Path(path), read_elf(path, symbols=False))


def _read(path: Path, elf) -> list[Container]:
    sec = elf.section(".nv_fatbin")
    if sec is None or sec.size == 0:
        return []
    try:
        with files.open_regular(path) as fh:
            fh.seek(0, 2)
            if sec.offset + sec.size > fh.tell():
                raise FatbinError(f".nv_fatbin ({sec.size} bytes) runs past the end of the file")
            return list(_containers(fh, sec.offset, sec.offset + sec.size))
    except OSError as exc:
        raise ElfError(f"cannot read: {exc.strerror or exc}") from None


def _containers(fh, start: int, end: int) -> Iterator[Container]:
    pos, count = start, 0
    while pos + 16 <= end:
        fh.seek(pos)
        magic, _version, header_size, body = struct.unpack("<IHHQ", fh.read(16))
        if magic != MAGIC:
            if magic == 0:  # zero padding between containers
                pos = _next_nonzero(fh, pos, end)
                continue
            raise FatbinError(f"no fatbin magic at section offset {pos - start} (found {magic:#x})")
        entry, body_end = pos + header_size, pos + header_size + body
        if header_size < 16 or body_end > end:
            raise FatbinError(f"fatbin container at section offset {pos - start} runs past it")
        images: list[Image] = []
        while entry + 48 <= body_end:
            fh.seek(entry)
            raw = fh.read(48)
            kind, _u, ehs, payload = struct.unpack_from("<HHIQ", raw)
            minor, major = struct.unpack_from("<HH", raw, 24)
            (arch_no,) = struct.unpack_from("<I", raw, 28)
            (flags,) = struct.unpack_from("<Q", raw, 40)
            if ehs < 48 or entry + ehs + payload > body_end:
                raise FatbinError(f"fatbin entry at section offset {entry - start} runs past it")
            count += 1
            if count > MAX_ENTRIES:
                raise FatbinError("more than a million fatbin entries: not a real binary")
            if kind in (1, 2, 0x10):
                suffix = "a" if flags & FLAG_ARCH_SPECIFIC else "f" if flags & FLAG_FAMILY else ""
                compressed = bool(flags & FLAG_COMPRESSED)
                img = FatbinImage(
                    "ptx" if kind == 1 else "sass",
                    Arch(arch_no // 10, arch_no % 10, suffix),
                    compressed,
                )
                if kind == 1:
                    isa, where = (major, minor), "header"
                    if not compressed:
                        fh.seek(entry + ehs)
                        found = _VERSION_LINE.search(fh.read(min(payload, TEXT_PEEK)))
                        if found:
                            isa, where = (int(found.group(1)), int(found.group(2))), "text"
                    images.append(Image(img, isa, where))
                else:
                    images.append(Image(img))
            entry += ehs + payload
        yield Container(tuple(images))
        pos = body_end


def _next_nonzero(fh, pos: int, end: int) -> int:
    """The offset of the next non-zero 8-byte word (or ``end``), read in growing chunks: the
    padding between containers is a few bytes, a corrupt section may be megabytes of zeros."""
    step = 64
    while pos < end:
        fh.seek(pos)
        chunk = fh.read(min(step, end - pos))
        if not chunk:
            return end
        stripped = len(chunk) - len(chunk.lstrip(b"\0"))
        if stripped < len(chunk):
            return pos + stripped // 8 * 8
        pos += len(chunk)
        step = min(step * 8, 65536)
    return end
