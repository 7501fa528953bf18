"""A small ELF64 reader: sections, the dynamic section and the dynamic symbol table.

Why not pyelftools or lief: we need four things from files of up to ~500 MB (torch's
``libtorch_cuda.so``) and must not read the payloads. This reader seeks to the section
headers at the end of the file and reads only ``.dynamic``, ``.dynsym``, ``.dynstr`` and the
version tables, so the cost grows with the symbol count, never with the kernels' bytes.

Bad input (a truncated file, a text file named ``.so``, sizes that point past the end)
raises :class:`ElfError` with a sentence, never a struct error or an unbounded read.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate, compress, count
from operator import add, not_
from pathlib import Path
from typing import BinaryIO

MAX_TABLE = 512 * 1024 * 1024  # a symbol table larger than this is not a real library

DT_NEEDED, DT_RPATH, DT_SONAME, DT_RUNPATH = 1, 15, 14, 29
SHN_UNDEF = 0
STB_WEAK = 2


class ElfError(Exception):
    """The file is not a readable ELF64 little-endian object; the message says why."""


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    offset: int
    size: int
    link: int
    entsize: int


@dataclass(frozen=True)
class Symbol:
    """One ``.dynsym`` entry: ``defined`` when it has a section, ``version`` from versym."""

    name: str
    defined: bool
    weak: bool
    version: str = ""


@dataclass
class ElfFile:
    """What we read from one shared object."""

    path: Path
    sections: dict[str, Section] = field(default_factory=dict)
    needed: list[str] = field(default_factory=list)
    soname: str = ""
    runpath: list[str] = field(default_factory=list)
    rpath: list[str] = field(default_factory=list)
    symbols: list[Symbol] = field(default_factory=list)
    # ".gnu.version_d" names this object defines (GLIBC_2.34 in libc.so.6), and
    # ".gnu.version_r": library -> the versions of it this object needs (what the loader checks:
    # "version `GLIBC_2.32' not found (required by ...)")
    version_defs: list[str] = field(default_factory=list)
    version_needs: dict[str, list[str]] = field(default_factory=dict)

    def section(self, name: str) -> Section | None:
        return self.sections.get(name)

    @property
    def defined(self) -> set[str]:
        return {s.name for s in self.symbols if s.defined}

    @property
    def undefined(self) -> list[Symbol]:
        return [s for s in self.symbols if not s.defined and s.name]


def _check(offset: int, size: int, file_size: int, what: str) -> None:
    if offset < 0 or size < 0 or offset + size > file_size:
        raise ElfError(
            f"{what} at offset {offset} size {size} points past the end ({file_size} bytes)"
        )
    if size > MAX_TABLE:
        raise ElfError(f"{what} claims {size} bytes, more than any real library holds")


def _read(fh: BinaryIO, offset: int, size: int, file_size: int, what: str) -> bytes:
    _check(offset, size, file_size, what)
    fh.seek(offset)
    data = fh.read(size)
    if len(data) != size:
        raise ElfError(f"{what} is truncated")
    return data


def _cstr(table: bytes, offset: int) -> str:
    if offset >= len(table):
        return ""
    end = table.find(b"\0", offset)
    return table[offset : end if end >= 0 else len(table)].decode("utf-8", "replace")


def read_sections(fh: BinaryIO, file_size: int) -> dict[str, Section]:
    head = fh.read(64)
    if len(head) < 64 or head[:4] != b"\x7fELF":
        raise ElfError(
            "not an ELF file (no \\x7fELF magic)"
            if head[:4] != b"\x7fELF"
            else "truncated ELF header"
        )
    if head[4] != 2 or head[5] != 1:
        raise ElfError(
            "not a 64-bit little-endian ELF (only x86_64/aarch64 Linux objects are read)"
        )
    (shoff,) = struct.unpack_from("<Q", head, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", head, 0x3A)
    if shnum == 0 or shentsize < 64:
        raise ElfError("ELF has no section headers")
    raw = _read(fh, shoff, shnum * shentsize, file_size, "section header table")
    entries = [struct.unpack_from("<IIQQQQIIQQ", raw, i * shentsize) for i in range(shnum)]
    if shstrndx >= shnum:
        raise ElfError("section name table index is out of range")
    names = entries[shstrndx]
    strtab = _read(fh, names[4], names[5], file_size, "section name table")
    sections: dict[str, Section] = {}
    for name_off, typ, _flags, _addr, off, size, link, _info, _align, entsize in entries:
        name = _cstr(strtab, name_off)
        sections.setdefault(name, Section(name, typ, off, size if typ != 8 else 0, link, entsize))
    return sections


def read_elf(path: str | Path, *, symbols: bool = True, versions: bool = False) -> ElfFile:
    """Read sections, NEEDED/RUNPATH/RPATH/SONAME and (optionally) the dynamic symbols; the
    version tables come with the symbols, or alone with ``versions``."""
    path = Path(path)
    try:
        file_size = path.stat().st_size
        with path.open("rb") as fh:
            return _read_elf(fh, path, file_size, symbols, versions)
    except OSError as exc:
        raise ElfError(f"cannot read: {exc.strerror or exc}") from None
    except struct.error as exc:
        raise ElfError(f"malformed ELF: {exc}") from None


def _dynsym(path: str | Path) -> tuple[bytes, bytes]:
    """The raw ``.dynstr`` and ``.dynsym`` (whole entries only) of ``path``."""
    path = Path(path)
    try:
        file_size = path.stat().st_size
        with path.open("rb") as fh:
            sections = read_sections(fh, file_size)
            strings, sym = sections.get(".dynstr"), sections.get(".dynsym")
            if sym is None:
                return b"", b""
            dynstr = (
                _read(fh, strings.offset, strings.size, file_size, ".dynstr") if strings else b""
            )
            data = _read(fh, sym.offset, sym.size, file_size, ".dynsym")
    except OSError as exc:
        raise ElfError(f"cannot read: {exc.strerror or exc}") from None
    except struct.error as exc:
        raise ElfError(f"malformed ELF: {exc}") from None
    return dynstr, data[: len(data) // 24 * 24]


def _names(dynstr: bytes, offsets: list[int]) -> list[str]:
    """The strings at ``offsets`` of a string table. Most names start right after a NUL, so
    one split of the table finds them (in C); an offset inside a string (the linker shares a
    name's tail with a longer one) is read on its own."""
    if not dynstr.isascii():  # byte offsets are character offsets only in ASCII
        return [_cstr(dynstr, off) for off in offsets]
    parts = dynstr.decode("ascii").split("\0")
    # part i starts at (the lengths of parts 0..i-1) + i separators
    at = map(add, accumulate(map(len, parts), initial=0), count())
    starts = dict(zip(at, parts, strict=False))
    names = list(map(starts.get, offsets))
    if None in names:
        pairs = zip(names, offsets, strict=True)
        names = [n if n is not None else _cstr(dynstr, off) for n, off in pairs]
    return names  # type: ignore[return-value]


def _columns(data: bytes) -> tuple[Sequence[int], Sequence[int], Sequence[int]]:
    """``st_name``, ``st_info`` and ``st_shndx`` of each 24-byte ``Elf64_Sym``, as columns."""
    if sys.byteorder == "little":  # only little-endian ELF is read: a cast is the layout
        view = memoryview(data)
        return view.cast("I")[0::6], view.cast("B")[4::24], view.cast("H")[3::12]
    rows = list(struct.iter_unpack("<IBBHQQ", data))
    return [r[0] for r in rows], [r[1] for r in rows], [r[3] for r in rows]


def defined_names(path: str | Path) -> set[str]:
    """The names of the dynamic symbols ``path`` defines, and nothing else: what torch's
    libraries export (~100,000 names for torch 2.11), without a :class:`Symbol` per entry
    (:func:`read_elf`) or a Python step per name: the toolchain tier's cold start."""
    dynstr, data = _dynsym(path)
    name, _info, shndx = _columns(data)
    names = set(_names(dynstr, list(compress(name, shndx))))  # shndx != SHN_UNDEF
    names.discard("")
    return names


def undefined_names(path: str | Path) -> list[tuple[str, bool]]:
    """``(name, weak)`` of each undefined dynamic symbol of ``path``, in table order (the
    first entry, the null symbol, left out): what the loader must find elsewhere."""
    dynstr, data = _dynsym(path)
    name, info, shndx = _columns(data)
    rows = [i for i in compress(range(len(shndx)), map(not_, shndx)) if i]
    names = _names(dynstr, [name[i] for i in rows])
    return [(n, info[i] >> 4 == STB_WEAK) for n, i in zip(names, rows, strict=True) if n]


def _read_elf(
    fh: BinaryIO, path: Path, file_size: int, want_symbols: bool, want_versions: bool = False
) -> ElfFile:
    elf = ElfFile(path, read_sections(fh, file_size))
    dynstr_sec = elf.sections.get(".dynstr")
    dynstr = (
        _read(fh, dynstr_sec.offset, dynstr_sec.size, file_size, ".dynstr") if dynstr_sec else b""
    )
    dyn = elf.sections.get(".dynamic")
    if dyn:
        data = _read(fh, dyn.offset, dyn.size, file_size, ".dynamic")
        for tag, val in struct.iter_unpack("<qQ", data[: len(data) // 16 * 16]):
            if tag == 0:
                break
            if tag == DT_NEEDED:
                elf.needed.append(_cstr(dynstr, val))
            elif tag == DT_SONAME:
                elf.soname = _cstr(dynstr, val)
            elif tag == DT_RUNPATH:
                elf.runpath = _cstr(dynstr, val).split(":")
            elif tag == DT_RPATH:
                elf.rpath = _cstr(dynstr, val).split(":")
    sym = elf.sections.get(".dynsym")
    if sym and not want_symbols and want_versions:
        # the same checks, in the same order, as a full read: a file that a full read
        # refuses is refused here too, with the same sentence
        _check(sym.offset, sym.size, file_size, ".dynsym")
        _version_names(fh, elf.sections, dynstr, file_size, elf)
        versym_sec = elf.sections.get(".gnu.version")
        if versym_sec:
            _check(versym_sec.offset, versym_sec.size, file_size, ".gnu.version")
    if want_symbols and sym:
        data = _read(fh, sym.offset, sym.size, file_size, ".dynsym")
        versions = _version_names(fh, elf.sections, dynstr, file_size, elf)
        versym_sec = elf.sections.get(".gnu.version")
        versym = (
            _read(fh, versym_sec.offset, versym_sec.size, file_size, ".gnu.version")
            if versym_sec
            else b""
        )
        count = len(data) // 24
        for i, (name_off, info, _other, shndx, _value, _size) in enumerate(
            struct.iter_unpack("<IBBHQQ", data[: count * 24])
        ):
            if i == 0:
                continue
            ver = ""
            if 2 * i + 2 <= len(versym):
                ver = versions.get(struct.unpack_from("<H", versym, 2 * i)[0] & 0x7FFF, "")
            elf.symbols.append(
                Symbol(_cstr(dynstr, name_off), shndx != SHN_UNDEF, info >> 4 == STB_WEAK, ver)
            )
    return elf


def _version_names(
    fh: BinaryIO,
    sections: dict[str, Section],
    dynstr: bytes,
    file_size: int,
    elf: ElfFile | None = None,
) -> dict[int, str]:
    """Version index -> name, from ``.gnu.version_d`` (defined) and ``_r`` (needed)."""
    names: dict[int, str] = {}
    verdef = sections.get(".gnu.version_d")
    if verdef:
        data = _read(fh, verdef.offset, verdef.size, file_size, ".gnu.version_d")
        pos, seen = 0, 0
        while pos + 20 <= len(data) and seen < 65536:
            _v, _flags, ndx, cnt, _hash, aux, nxt = struct.unpack_from("<HHHHIII", data, pos)
            if cnt and pos + aux + 8 <= len(data):
                names[ndx] = _cstr(dynstr, struct.unpack_from("<I", data, pos + aux)[0])
                if elf is not None and not _flags & 1:  # VER_FLG_BASE names the file itself
                    elf.version_defs.append(names[ndx])
            if not nxt:
                break
            pos, seen = pos + nxt, seen + 1
    verneed = sections.get(".gnu.version_r")
    if verneed:
        data = _read(fh, verneed.offset, verneed.size, file_size, ".gnu.version_r")
        pos, seen = 0, 0
        while pos + 16 <= len(data) and seen < 65536:
            _v, cnt, file_off, aux, nxt = struct.unpack_from("<HHIII", data, pos)
            apos = pos + aux
            wanted = elf.version_needs.setdefault(_cstr(dynstr, file_off), []) if elf else []
            for _ in range(min(cnt, 4096)):
                if apos + 16 > len(data):
                    break
                _h, _f, other, name, anext = struct.unpack_from("<IHHII", data, apos)
                names[other] = _cstr(dynstr, name)
                wanted.append(names[other])
                if not anext:
                    break
                apos += anext
            if not nxt:
                break
            pos, seen = pos + nxt, seen + 1
    return names
