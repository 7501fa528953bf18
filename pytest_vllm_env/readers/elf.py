"""A small ELF64 reader: sections, the dynamic section and the dynamic symbol table.

Why not pyelftools or lief: we need four things from files of up to ~500 MB (torch's
``libtorch_cuda.so``) and must not read the payloads. This reader seeks to the section
headers at the end of the file and reads only ``.dynamic``, ``.dynsym``, ``.dynstr`` and the
version tables, so the cost grows with the symbol count, never with the kernels' bytes.

Bad input (a truncated file, a text file named ``.so``, sizes that point past the end)
raises :class:`ElfError` with a sentence, never a struct error or an unbounded read.
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import compress
from operator import not_
from pathlib import Path
from typing import BinaryIO

from pytest_vllm_env import files

MAX_TABLE = 512 * 1024 * 1024  # a symbol table larger than this is not a real library

DT_NEEDED, DT_RPATH, DT_SONAME, DT_RUNPATH = 1, 15, 14, 29
SHN_UNDEF = 0
SHT_GNU_HASH = 0x6FFFFFF6
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


def _cstr(table: bytes | _Strings, offset: int) -> str:
    if isinstance(table, _Strings):
        return table.at(offset)
    if offset >= len(table):
        return ""
    end = table.find(b"\0", offset)
    return table[offset : end if end >= 0 else len(table)].decode("utf-8", "replace")


class _Strings:
    """A string table read a string at a time: the head of libtorch_cpu.so needs a dozen
    names from its 5.4 MB ``.dynstr`` (NEEDED, SONAME, RUNPATH, version names)."""

    def __init__(self, fh: BinaryIO, offset: int, size: int) -> None:
        self.fh, self.offset, self.size = fh, offset, size

    def at(self, offset: int) -> str:
        if offset >= self.size:
            return ""
        out = b""
        pos = offset
        while pos < self.size:
            self.fh.seek(self.offset + pos)
            chunk = self.fh.read(min(256, self.size - pos))
            if not chunk:
                break
            end = chunk.find(b"\0")
            if end >= 0:
                out += chunk[:end]
                break
            out += chunk
            pos += len(chunk)
        return out.decode("utf-8", "replace")


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
        with files.open_regular(path) as fh:  # a FIFO or device is refused, never waited on
            file_size = os.fstat(fh.fileno()).st_size
            return _read_elf(fh, path, file_size, symbols, versions)
    except files.Refused as exc:  # there but not a file (a FIFO...): say which one it is
        raise ElfError(f"cannot read: {exc}") from None
    except OSError as exc:
        raise ElfError(f"cannot read: {exc.strerror or exc}") from None
    except struct.error as exc:
        raise ElfError(f"malformed ELF: {exc}") from None


def _dynsym(path: str | Path, *, gnu_hash: bool = False) -> tuple[bytes, bytes, bytes]:
    """The raw ``.dynstr``, ``.dynsym`` (whole entries only) and, with ``gnu_hash``, the
    ``.gnu.hash`` of ``path`` (empty when absent or out of bounds: never an error, the
    symbols are then read without it)."""
    path = Path(path)
    hashed = b""
    try:
        with files.open_regular(path) as fh:  # a FIFO or device is refused, never waited on
            file_size = os.fstat(fh.fileno()).st_size
            sections = read_sections(fh, file_size)
            strings, sym = sections.get(".dynstr"), sections.get(".dynsym")
            if sym is None:
                return b"", b"", b""
            dynstr = (
                _read(fh, strings.offset, strings.size, file_size, ".dynstr") if strings else b""
            )
            data = _read(fh, sym.offset, sym.size, file_size, ".dynsym")
            table = sections.get(".gnu.hash")
            if gnu_hash and table is not None and table.type == SHT_GNU_HASH:
                try:
                    hashed = _read(fh, table.offset, table.size, file_size, ".gnu.hash")
                except ElfError:
                    hashed = b""
    except OSError as exc:
        raise ElfError(f"cannot read: {exc.strerror or exc}") from None
    except struct.error as exc:
        raise ElfError(f"malformed ELF: {exc}") from None
    return dynstr, data[: len(data) // 24 * 24], hashed


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
    (:func:`read_elf`). To ask about a few names, :class:`SymbolIndex` is faster."""
    dynstr, data, _ = _dynsym(path)
    name, _info, shndx = _columns(data)
    names = {_cstr(dynstr, off) for off in compress(name, shndx)}  # shndx != SHN_UNDEF
    names.discard("")
    return names


def undefined_names(path: str | Path) -> list[tuple[str, bool]]:
    """``(name, weak)`` of each undefined dynamic symbol of ``path``, in table order (the
    first entry, the null symbol, left out): what the loader must find elsewhere."""
    dynstr, data, _ = _dynsym(path)
    name, info, shndx = _columns(data)
    rows = [i for i in compress(range(len(shndx)), map(not_, shndx)) if i]
    named = ((_cstr(dynstr, name[i]), info[i]) for i in rows)  # a few hundred, not 100,000
    return [(n, bind >> 4 == STB_WEAK) for n, bind in named if n]


def _read_elf(
    fh: BinaryIO, path: Path, file_size: int, want_symbols: bool, want_versions: bool = False
) -> ElfFile:
    elf = ElfFile(path, read_sections(fh, file_size))
    dynstr_sec = elf.sections.get(".dynstr")
    dynstr: bytes | _Strings = b""
    if dynstr_sec and want_symbols:
        dynstr = _read(fh, dynstr_sec.offset, dynstr_sec.size, file_size, ".dynstr")
    elif dynstr_sec:  # the same check; then only the names asked for are read
        _check(dynstr_sec.offset, dynstr_sec.size, file_size, ".dynstr")
        dynstr = _Strings(fh, dynstr_sec.offset, dynstr_sec.size)
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
    dynstr: bytes | _Strings,
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


@lru_cache(maxsize=65536)
def gnu_hash(name: bytes) -> int:
    """The GNU hash of a symbol name (``dl_new_hash``): what ``.gnu.hash`` is keyed by."""
    h = 5381
    for c in name:
        h = (h * 33 + c) & 0xFFFFFFFF
    return h


class _Malformed(Exception):
    pass


class SymbolIndex:
    """The dynamic symbols ``path`` defines, asked about a few names at a time.

    A name is looked up as the dynamic loader does, in the ``.gnu.hash`` table: its bloom
    filter, its bucket, then the chain of entries with that hash, so that torch 2.11's
    102,000 exports are never turned into Python strings to answer 200 questions (that was
    most of the toolchain tier's cold start). Symbols before the table's first hashed entry
    are read one by one; a file without ``.gnu.hash`` (or with a malformed one) and a
    non-ASCII name are answered from every name, as :func:`defined_names` reads them.
    Unreadable files raise :class:`ElfError` with :func:`defined_names`' sentences.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._dynstr, data, hashed = _dynsym(path, gnu_hash=True)
        self._name, _info, self._shndx = _columns(data)
        self._all: set[str] | None = None
        self._known: dict[str, bool] = {}
        self._hashed = False
        try:
            self._read_hash(hashed, len(self._shndx))
        except (_Malformed, struct.error, ValueError, TypeError):
            self._hashed = False

    def _read_hash(self, data: bytes, nsyms: int) -> None:
        if len(data) < 16:
            return
        nbuckets, symoffset, bloom_size, shift = struct.unpack_from("<IIII", data, 0)
        buckets_at = 16 + 8 * bloom_size
        chains_at = buckets_at + 4 * nbuckets
        if not nbuckets or not bloom_size or symoffset > nsyms:
            raise _Malformed
        if chains_at + 4 * (nsyms - symoffset) > len(data):
            raise _Malformed
        view = memoryview(data)
        self._bloom = view[16:buckets_at].cast("Q")
        self._buckets = view[buckets_at:chains_at].cast("I")
        self._chains = view[chains_at : chains_at + 4 * (nsyms - symoffset)].cast("I")
        self._nbuckets, self._symoffset, self._shift = nbuckets, symoffset, shift
        # entries the table does not hash (locals, and undefined ones on most linkers)
        low = compress(self._name[:symoffset], self._shndx[:symoffset])
        self._low = {_cstr(self._dynstr, off) for off in low}
        self._hashed = sys.byteorder == "little"

    def names(self) -> set[str]:
        """Every defined name (what :func:`defined_names` returns)."""
        if self._all is None:
            self._all = {_cstr(self._dynstr, off) for off in compress(self._name, self._shndx)}
            self._all.discard("")
        return self._all

    def defines(self, name: str) -> bool:
        """True when a defined dynamic symbol of the file is called ``name``."""
        known = self._known.get(name)
        if known is None:
            known = self._known[name] = self._lookup(name)
        return known

    def _lookup(self, name: str) -> bool:
        if not name:
            return False
        if not self._hashed or not name.isascii():
            return name in self.names()
        if name in self._low:
            return True
        key = name.encode("ascii")
        try:
            return self._chain(key, gnu_hash(key))
        except (_Malformed, IndexError):
            self._hashed = False
            return name in self.names()

    def _chain(self, key: bytes, h: int) -> bool:
        word = self._bloom[(h >> 6) % len(self._bloom)]
        if not (word >> (h & 63)) & (word >> ((h >> self._shift) & 63)) & 1:
            return False
        i = self._buckets[h % self._nbuckets]
        if i == 0:
            return False
        if i < self._symoffset:
            raise _Malformed
        wanted, size, table = key + b"\0", len(key) + 1, self._dynstr
        while True:
            h2 = self._chains[i - self._symoffset]
            if h2 | 1 == h | 1 and self._shndx[i]:
                at = self._name[i]
                got = table[at : at + size]
                # a name ends at its NUL, or at the end of a table that lacks the last one
                if got == wanted or (at + size - 1 == len(table) and got == key):
                    return True
            if h2 & 1:
                return False
            i += 1

    def defines_any(self, needle: str, keep: Callable[[str], bool]) -> bool:
        """True when some defined name contains ``needle`` and ``keep(name)``. Only the
        strings of the table that hold ``needle`` are looked at: a name containing it starts
        in such a string, at or before its last occurrence there."""
        table, mark = self._dynstr, needle.encode()
        if not mark or not table.isascii():
            return any(needle in n and keep(n) for n in self.names())
        starts: set[int] | None = None
        pos = table.find(mark)
        while pos >= 0:
            begin = table.rfind(b"\0", 0, pos) + 1
            end = table.find(b"\0", pos)
            end = len(table) if end < 0 else end
            last = table.rfind(mark, begin, end)
            if starts is None:
                starts = set(compress(self._name, self._shndx))
            for at in range(begin, last + 1):
                if at in starts and keep(name := _cstr(table, at)) and needle in name:
                    return True
            pos = table.find(mark, end)
        return False
