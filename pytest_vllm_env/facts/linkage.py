"""What the dynamic loader will do with an extension: find its libraries, its symbols and
the symbol versions it asks for. Read from ELF files only, never ``dlopen``.

Real failures this exists for:

- ``abi.needed``: a ``DT_NEEDED`` library found nowhere: "libcudart.so.12: cannot open shared
  object file" (llm-d#1402: a CUDA 13 image whose vLLM extensions were CUDA 12-linked).
- ``abi.undefined``: a symbol no library defines: a vLLM source build left its own kernel
  undefined (``cutlass_moe_mm_sm100``, vLLM #29030): "undefined symbol:
  _Z20cutlass_moe_mm_sm100RN2at6Tensor...". Torch's own symbols are ``abi.symbols``'.
- version needs (``platform.glibc``): "/lib64/libc.so.6: version `GLIBC_2.32' not found
  (required by vllm/_C.abi3.so)" (vLLM #6562, CentOS 7's glibc 2.17).

How a name is found, in the loader's order as far as it matters for a Python extension:
sonames torch has already loaded (``import torch`` comes first, and a library is matched by
soname), the extension's ``DT_RPATH``/``DT_RUNPATH`` (``$ORIGIN`` expanded),
``LD_LIBRARY_PATH`` after activation, the env's ``lib/``, then the system dirs of
``/etc/ld.so.conf`` and the defaults. Symbols are looked up in the whole closure of the
extension's ``DT_NEEDED`` (a loaded object's local scope), plus the interpreter's (Python
C API). The NVIDIA driver's ``libcuda.so.1`` lives outside any env: when it is absent (a
machine without a GPU) its names (``cu*``) are not judged.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from pytest_vllm_env import files, proc
from pytest_vllm_env.cache import stat_key
from pytest_vllm_env.readers.elf import (
    ElfError,
    ElfFile,
    SymbolIndex,
    gnu_hash,
    read_elf,
    undefined_names,
)

T = TypeVar("T")

DEFAULT_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
                "/lib", "/usr/lib")  # fmt: skip
# installed with the NVIDIA driver, never by an env
DRIVER_LIBS = ("libcuda.so.1", "libnvidia-ml.so.1")
_DRIVER_SYMBOL = re.compile(r"^cu[A-Z]\w*$")
# provided by the interpreter that imports the extension
_PYTHON_SYMBOL = re.compile(r"^_?Py[A-Z_]\w*$|^_Py")
MAX_CLOSURE = 400

# ``FactCache.get``: (name, compute, deps, *extra) -> the fact, shared by xdist workers and runs
FactGetter = Callable[..., Any]


def _stat_key(path: Path | str) -> tuple[str, int, int, int, int, int]:
    # device, inode, size, mtime and ctime: a library replaced by one of the same size and
    # mtime is read again (cache.stat_key)
    return (str(path), *stat_key(path))


# Read once per process, keyed by path and identity (a rewritten file is read again).
# The library's head (dynamic section, version tables) is cheaper to read than to fetch from
# the fact cache (48 libraries of a vLLM venv: 4 ms vs 7 ms); which of an extension's
# symbols no library defines is not (it goes through the fact cache: Resolver.unresolved).
@lru_cache(maxsize=4096)
def _head(path: str, *identity: int) -> ElfFile | str:
    try:
        return read_elf(path, symbols=False, versions=True)
    except ElfError as exc:
        return str(exc)


@lru_cache(maxsize=256)
def _index(path: str, *identity: int) -> SymbolIndex | str:
    try:
        return SymbolIndex(path)
    except ElfError as exc:
        return str(exc)


@lru_cache(maxsize=256)
def _imports(path: str, *identity: int) -> tuple[tuple[str, bool], ...] | str:
    try:
        return tuple(undefined_names(path))
    except ElfError as exc:
        return str(exc)


def head(path: Path) -> ElfFile | str:
    """``path``'s NEEDED, SONAME, RPATH/RUNPATH and version tables (an :class:`ElfFile`
    without symbols), or why it cannot be read; read once per process."""
    try:
        return _head(*_stat_key(path))
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"


def elf_of(path: Path) -> ElfFile | None:
    """:func:`head` of ``path``, None when it is not a readable ELF."""
    got = head(path)
    return got if isinstance(got, ElfFile) else None


def index(path: Path) -> SymbolIndex:
    """What ``path`` defines, to ask about a few names (:class:`SymbolIndex`), read once per
    process (torch's facts and the undefined-symbol check share it); :class:`ElfError` when
    unreadable."""
    return _read_once(_index, path)


def imports(path: Path) -> tuple[tuple[str, bool], ...]:
    """``(name, weak)`` of each undefined dynamic symbol of ``path``, read once per process;
    :class:`ElfError` when unreadable."""
    return _read_once(_imports, path)


def _read_once(read: Callable[..., T | str], path: Path) -> T:
    """``read`` (an lru_cache'd reader keyed by the file's stat) for ``path``; the error text
    it cached, or an unreadable file, as :class:`ElfError`."""
    try:
        got = read(*_stat_key(path))
    except OSError as exc:
        raise ElfError(f"cannot read: {exc.strerror or exc}") from None
    if isinstance(got, str):
        raise ElfError(got)
    return got


def forget() -> None:
    """Drop what was read (the end of a session)."""
    for cached in (_head, _index, _imports, gnu_hash):
        cached.cache_clear()


def system_dirs(conf: Path = Path("/etc/ld.so.conf")) -> list[Path]:
    """The dirs ``ldconfig`` caches: ``/etc/ld.so.conf`` (and its ``include`` globs), then the
    defaults."""
    dirs: list[Path] = []

    def read(path: Path, depth: int = 0) -> None:
        try:
            lines = files.read_text(path, files.CONFIG).splitlines()
        except OSError:
            return
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if line.startswith("include") and depth < 4:
                pattern = line.split(None, 1)[1] if " " in line else ""
                base = Path(pattern) if pattern.startswith("/") else path.parent / pattern
                # glob.glob: an include the loader cannot list is passed over, not raised
                for inc in sorted(glob.glob(str(base))):
                    read(Path(inc), depth + 1)
            elif line.startswith("/"):
                dirs.append(Path(line))

    read(conf)
    return [*dirs, *(Path(d) for d in DEFAULT_DIRS)]


def _loops(path: str) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def special(path: Path) -> str:
    """Why the loader cannot load the library at ``path`` although it found it there: a
    FIFO (its ``open`` blocks: the import hangs), a device, a directory, a symlink loop;
    "" for a regular file (readable or not: that is for the ELF reader to say)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return exc.strerror or str(exc) if exc.errno == errno.ELOOP else ""
    return "" if stat.S_ISREG(mode) else f"{files.kind_of(mode)}, not a library"


def _blocked(blocked: list[tuple[Path, str]]) -> str:
    """The error of an extension whose load would hang or fail on such a path."""
    if not blocked:
        return ""
    shown = "; ".join(f"{p}: {why}" for p, why in blocked[:5])
    return (
        f"the loader finds a needed library where no library can be read ({shown}): "
        "loading it would hang or fail there"
    )


def _expand(entries: Iterable[str], origin: Path) -> list[Path]:
    out = []
    for e in entries:
        if not e:
            continue
        e = e.replace("${ORIGIN}", str(origin)).replace("$ORIGIN", str(origin))
        out.append(Path(os.path.normpath(e)))
    return out


@dataclass
class Resolver:
    """Finds libraries and symbols for the extensions of one env (one session: what it
    found on disk is remembered)."""

    preloaded: dict[str, Path] = field(default_factory=dict)  # soname -> file torch loaded
    # what torch's own libraries need and the loader finds nowhere: `import torch` fails
    # there before any extension loads ((name, needed by) pairs)
    torch_missing: list[tuple[str, str]] = field(default_factory=list)
    ld_library_path: list[Path] = field(default_factory=list)
    env_dirs: list[Path] = field(default_factory=list)
    system: list[Path] = field(default_factory=list)
    # the cross-worker fact cache (``vllm_fact_cache.get``) for the symbol resolution, the
    # one part that reads whole symbol tables; None: computed each time
    facts: FactGetter | None = None
    _found: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], Path | None] = field(
        default_factory=dict, repr=False
    )
    _real: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def for_env(
        cls,
        prefix: Path,
        torch_libs: Iterable[Path] = (),
        environ: Mapping[str, str] | None = None,
        system: list[Path] | None = None,
        facts: FactGetter | None = None,
    ) -> Resolver:
        environ = environ or {}
        res = cls(
            ld_library_path=[Path(p) for p in environ.get("LD_LIBRARY_PATH", "").split(":") if p],
            env_dirs=[d for d in (prefix / "lib",) if d.is_dir()],
            system=system if system is not None else system_dirs(),
            facts=facts,
        )
        # `import torch` loads torch/lib and everything it needs before any extension
        for lib in torch_libs:
            elf = elf_of(lib)
            if elf is None:
                continue
            res.preloaded.setdefault(elf.soname or lib.name, lib)
        found, res.torch_missing = res.closure(list(res.preloaded.values()))
        for path in found:
            elf = elf_of(path)
            if elf is not None:
                res.preloaded.setdefault(elf.soname or path.name, path)
        return res

    def find(self, name: str, requester: Path, elf: ElfFile) -> Path | None:
        """Where the loader finds ``name`` (a ``DT_NEEDED`` entry) for ``requester``."""
        if "/" in name:
            return Path(name) if os.path.exists(name) else None
        if name in self.preloaded:
            return self.preloaded[name]
        key = (name, str(requester.parent), tuple(elf.rpath), tuple(elf.runpath))
        if key not in self._found:
            self._found[key] = self._search(name, requester, elf)
        return self._found[key]

    def _search(self, name: str, requester: Path, elf: ElfFile) -> Path | None:
        origin = requester.parent
        dirs = [] if elf.runpath else _expand(elf.rpath, origin)
        dirs += self.ld_library_path + _expand(elf.runpath, origin) + self.env_dirs + self.system
        for d in dirs:
            candidate = os.path.join(d, name)
            if os.path.exists(candidate):  # a loader skips what it cannot stat
                return d / name
            if os.path.lexists(candidate) and _loops(candidate):
                # glibc's open_path gives up on an open that fails other than ENOENT/EACCES:
                # "Too many levels of symbolic links", not a search of the next dir
                return d / name
        return None

    def realpath(self, path: Path) -> str:
        text = str(path)
        if text not in self._real:
            self._real[text] = os.path.realpath(text)
        return self._real[text]

    def closure(self, roots: list[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
        """Every library reachable through DT_NEEDED from ``roots`` (roots included), and the
        ``(name, needed by)`` pairs that were found nowhere."""
        seen: dict[str, Path] = {}
        missing: list[tuple[str, str]] = []
        queue = list(roots)
        while queue and len(seen) < MAX_CLOSURE:
            path = queue.pop(0)
            key = self.realpath(path)
            if key in seen:
                continue
            seen[key] = path
            elf = elf_of(path)
            if elf is None:
                continue
            for name in elf.needed:
                found = self.find(name, path, elf)
                if found is None:
                    missing.append((name, path.name))
                elif self.realpath(found) not in seen:
                    queue.append(found)
        return list(seen.values()), missing

    def unresolved(
        self,
        path: Path,
        libs: list[Path],
        skip: re.Pattern[str] | None = None,
        driver_absent: bool = False,
    ) -> list[str]:
        """``path``'s undefined symbols that none of ``libs`` defines (weak ones, Python's,
        those ``skip`` matches and, with ``driver_absent``, the driver's left out). Shared
        through the fact cache, keyed by every file read (size, mtime) and the rules."""

        def compute() -> list[str]:
            try:
                wanted = [
                    name
                    for name, weak in imports(path)
                    if not weak
                    and not _PYTHON_SYMBOL.match(name)
                    and not (skip is not None and skip.match(name))
                    and not (driver_absent and _DRIVER_SYMBOL.match(name))
                ]
            except ElfError:
                return []
            for lib in libs:  # a library is read only while some name is still unfound
                if not wanted:
                    break
                try:
                    found = index(lib)
                except ElfError:
                    continue  # an unreadable library defines nothing
                wanted = [name for name in wanted if not found.defines(name)]
            return wanted

        if self.facts is None:
            return compute()
        rules = (skip.pattern if skip else "", _PYTHON_SYMBOL.pattern, _DRIVER_SYMBOL.pattern)
        return self.facts("undefined-symbols", compute, [path, *libs], *rules, driver_absent)


@dataclass
class Linkage:
    """One extension as the loader sees it."""

    path: Path
    needed: dict[str, Path | None] = field(default_factory=dict)  # direct DT_NEEDED -> file
    missing_deep: list[tuple[str, str]] = field(default_factory=list)  # (name, needed by)
    unresolved: list[str] = field(default_factory=list)  # undefined symbols defined nowhere
    driver_absent: bool = False  # libcuda.so.1 not on this machine: cu* names not judged
    version_needs: dict[str, list[str]] = field(default_factory=dict)
    provider: dict[str, Path | None] = field(default_factory=dict)  # needed lib -> file
    error: str = ""
    unresolved_shown: list[str] = field(default_factory=list)  # ``unresolved`` demangled


def link(
    path: Path, resolver: Resolver, skip: re.Pattern[str] | None = None, *, symbols: bool = True
) -> Linkage:
    """Resolve ``path``'s libraries (its whole ``DT_NEEDED`` closure, as the loader walks it:
    a library found through another's RUNPATH still needs all of its own) and (``symbols``)
    its undefined symbols; ``skip`` matches symbols another check judges (torch's, for
    ``abi.symbols``)."""
    out = Linkage(path)
    elf = head(path)
    if isinstance(elf, str):
        out.error = elf
        return out
    for name in elf.needed:
        out.needed[name] = resolver.find(name, path, elf)
    out.version_needs = dict(elf.version_needs)
    out.provider = {
        name: out.needed.get(name) or resolver.find(name, path, elf) for name in elf.version_needs
    }
    blocked = [(p, why) for p in out.needed.values() if p is not None and (why := special(p))]
    if not symbols:
        out.error = _blocked(blocked)
        if not out.error:
            # the libraries of the libraries: libtorch_cuda.so's libcublas.so.12 fails the
            # import as surely as the extension's own libcudart.so.12 (issue 21)
            _, missing = resolver.closure([path])
            direct = set(out.needed)
            deep: dict[str, str] = {}
            for n, by in missing:
                if n not in DRIVER_LIBS and n not in direct:
                    deep.setdefault(n, by)
            out.missing_deep = list(deep.items())
            out.driver_absent = any(n in DRIVER_LIBS for n, _ in missing)
        return out
    libs, missing = resolver.closure([path])
    blocked += [(p, why) for p in libs[1:] if (why := special(p)) and (p, why) not in blocked]
    if blocked:
        out.error = _blocked(blocked)
        return out
    out.driver_absent = any(n in DRIVER_LIBS for n, _ in missing)
    out.missing_deep = [(n, by) for n, by in missing if n not in DRIVER_LIBS]
    out.unresolved = resolver.unresolved(path, libs[1:], skip, out.driver_absent)
    out.unresolved_shown = demangle(out.unresolved)
    return out


def demangle(names: list[str]) -> list[str]:
    """Human names via ``c++filt`` when present; otherwise the mangled names unchanged."""
    tool = shutil.which("c++filt")  # this machine's binutils: names read the same anywhere
    if not tool or not names:
        return list(names)
    out = proc.run([tool], input="\n".join(names), timeout=30)
    if out.launch_error or out.timed_out:
        return list(names)
    lines = out.stdout.splitlines()
    return lines if len(lines) == len(names) else list(names)
