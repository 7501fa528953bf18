"""torch and the compiled extensions of vLLM, xformers and flash-attn, as their files say:
what torch exports and its CUDA and C++ ABI, what each extension needs from torch, and the
torch each package records it was built for. Read, never imported.

The ``abi.*`` verdicts on these facts are :mod:`pytest_vllm_env.checks.abi` (torch symbols,
libcudart, the C++11 ABI, pins) and :mod:`pytest_vllm_env.checks.abi_loader` (libraries and
other symbols, as the loader resolves them: :mod:`pytest_vllm_env.facts.linkage`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from pytest_vllm_env import files
from pytest_vllm_env.facts import linkage
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.linkage import demangle
from pytest_vllm_env.readers.elf import ElfError, SymbolIndex
from pytest_vllm_env.readers.torch_version import read_torch_cuda_or_why

# Mangled names in torch's namespaces, and the C entry points of torch's stable ABI.
TORCH_SIDE = _TORCH_SIDE = re.compile(
    r"^(?:_Z(?:T[VIS])?N[KVr]*(?:3c10|2at|5torch|6caffe2)\d|aoti_torch_|torch_)"
)
EXT_PACKAGES = ("vllm", "xformers", "flash_attn")


@dataclass
class TorchFacts:
    """torch as installed: version, CUDA from ``torch/version.py``, its libraries (what they
    export is asked of :attr:`exports`), the C++11 ABI flag, the libraries it cannot read."""

    version: str
    root: Path
    cuda: str | None = None
    libs: list[Path] = field(default_factory=list)
    cxx11: bool | None = None
    errors: dict[str, str] = field(default_factory=dict)
    # why torch/version.py could not be read (a FIFO...): then ``cuda`` is unknown, not None
    cuda_error: str = ""

    @cached_property
    def exports(self) -> TorchExports:
        """The torch-side names (:data:`TORCH_SIDE`) the readable ``libs`` define, asked by
        name: ``name in torch.exports``."""
        return TorchExports([lib for lib in self.libs if lib.name not in self.errors])

    def to_json(self) -> dict[str, Any]:
        """A JSON form for the cross-worker fact cache (paths as text). No symbol list: the
        41,000 torch-side names of torch 2.11 cost a cold run 90 ms to list and 20 ms to
        store, where looking up the 209 that vLLM's extensions import costs 2 ms."""
        return {
            "version": self.version,
            "root": str(self.root),
            "cuda": self.cuda,
            "libs": [str(p) for p in self.libs],
            "cxx11": self.cxx11,
            "errors": self.errors,
            "cuda_error": self.cuda_error,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TorchFacts:
        return cls(
            version=data["version"],
            root=Path(data["root"]),
            cuda=data["cuda"],
            libs=[Path(p) for p in data["libs"]],
            cxx11=data["cxx11"],
            errors=dict(data["errors"]),
            cuda_error=data.get("cuda_error", ""),
        )


class TorchExports:
    """What torch/lib exports on its side, as a set that is asked rather than listed: each
    library's dynamic symbols are looked up through its hash table, as the loader does
    (:class:`pytest_vllm_env.readers.elf.SymbolIndex`, read once per process)."""

    def __init__(self, libs: list[Path]) -> None:
        self.libs = libs
        self._indexes: list[SymbolIndex] | None = None

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or not _TORCH_SIDE.match(name):
            return False
        if self._indexes is None:
            self._indexes = []
            for lib in self.libs:
                try:
                    self._indexes.append(linkage.index(lib))
                except ElfError:
                    pass  # an unreadable library exports nothing
        return any(index.defines(name) for index in self._indexes)


@dataclass
class ExtensionFacts:
    """One compiled extension ``.so``: what it needs from torch and the CUDA runtime."""

    path: Path
    package: str
    needed: list[str] = field(default_factory=list)
    torch_symbols: list[str] = field(default_factory=list)
    error: str = ""
    # ``torch_symbols`` as people read them (``c++filt``), for the names a verdict shows
    readable: dict[str, str] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        """``vllm``, ``xformers`` or ``flash-attn``: the package whose build this is."""
        return owner_of(label(self.path))

    @property
    def cudart(self) -> str | None:
        for lib in self.needed:
            m = re.fullmatch(r"libcudart\.so\.(\d+)", lib)
            if m:
                return m.group(1)
        return None

    @property
    def cxx11(self) -> bool | None:
        """True/False from the torch-side symbols it imports; None when none takes a string."""
        if any("cxx11" in s for s in self.torch_symbols):
            return True
        if any(old_abi_string(s) for s in self.torch_symbols):
            return False
        return None

    def shown(self, names: list[str]) -> list[str]:
        """``names`` (of :attr:`torch_symbols`) demangled, as read with the extension."""
        return [self.readable.get(n, n) for n in names]


def old_abi_string(mangled: str) -> bool:
    """True when a mangled name passes ``std::string`` in the pre-C++11 ABI.

    The old ABI's string is the substitution ``Ss`` (``std::basic_string<char, ...>``; ``Sb``
    for other char types), in any position: ``RKSs`` (const&), ``OSs`` (&&), ``PKSs``, by value
    after a nested name (``...SourceLocationESs``, c10::Error's constructor in torch 2.6.0),
    as a template argument (``St6vectorISsSaISsEE``), at the very end. The new ABI spells
    ``NSt7__cxx1112basic_string...`` instead. Identifiers are length-prefixed
    (``9SsHandler``) and skipped, so a name that merely contains "Ss" does not count.
    """
    s, i, n = mangled, 0, len(mangled)
    while i < n:
        c = s[i]
        if c.isdigit():
            j = i
            while j < n and s[j].isdigit():
                j += 1
            prev = s[i - 1] if i else ""
            literal = i >= 2 and s[i - 2] == "L"  # Li5E, Lj0E: a literal value, not a length
            vector = s[i - 2 : i] == "Dv"
            if prev in ("S", "T", "A", "p") or literal or vector or not prev:
                i = j  # S12_ seq-ids, T0_ params, A3_ arrays, fp0_, Dv4_ vectors
                continue
            i = j + int(s[i:j])  # <length><identifier>: skip the identifier
            continue
        if c == "S" and s[i + 1 : i + 2] == "s" or s[i : i + 3] == "SbI":
            return True
        i += 1
    return False


def torch_root(env: PixiEnv) -> Path | None:
    dist = env.dist("torch")
    if dist is None:
        return None
    root = dist.location / "torch"
    return root if root.is_dir() else None


def _torch_side(name: str) -> bool:
    return _TORCH_SIDE.match(name) is not None


def torch_facts(env: PixiEnv) -> TorchFacts | None:
    """Read torch's version, CUDA, its libraries and its C++11 ABI flag (a torch-side
    export, of the c10, at, torch, caffe2 namespaces or the stable ABI's
    ``aoti_torch_*``/``torch_*``, that holds ``cxx11``); :attr:`TorchFacts.exports` answers
    which torch-side symbols ``torch/lib`` exports."""
    root = torch_root(env)
    if root is None:
        return None
    cuda, why = read_torch_cuda_or_why(root)
    facts = TorchFacts(env.version_of("torch") or "?", root, cuda, cuda_error=why)
    libdir = root / "lib"
    # whatever is there and is not a folder: a FIFO or dangling link where libc10.so must be is
    # a library the loader cannot map, named in ``errors`` (never passed over as absent)
    facts.libs = sorted(p for p in libdir.glob("*.so*") if _not_dir(p)) if libdir.is_dir() else []
    flags: list[bool] = []
    for lib in facts.libs:
        try:
            index = linkage.index(lib)  # read once: abi.undefined looks in the same libraries
        except ElfError as exc:
            facts.errors[lib.name] = str(exc)
            continue
        if lib.name.startswith(("libc10", "libtorch")):
            # the flag is whether any is True: once one is, the others need not be read
            flags.append(any(flags) or index.defines_any("cxx11", _torch_side))
    facts.cxx11 = any(flags) if flags else None
    return facts


def find_extensions(env: PixiEnv, packages: Iterable[str] = EXT_PACKAGES) -> list[Path]:
    """Compiled ``.so`` files of vLLM, xformers and flash-attn in the env's site-packages.

    Whatever is there under such a name and is not a folder counts: a FIFO or a dangling
    link where ``_C.abi3.so`` must be is an extension Python cannot import, so the checks
    name it (an error, :func:`extension_facts`) rather than pass over it as absent."""
    found: list[Path] = []
    for sp in env.site_packages:
        for pkg in packages:
            folder = sp / pkg
            if folder.is_dir():
                found += sorted(p for p in _files_ending(folder, ".so") if _not_dir(p))
        if "flash_attn" in packages:
            found += sorted(p for p in sp.glob("flash_attn_2_cuda*.so") if _not_dir(p))
    return found


def cudart_files(env: PixiEnv, major: str) -> list[Path]:
    """The ``libcudart.so.<major>`` files the env's CUDA runtime wheels hold
    (``site-packages/nvidia/*/lib``: ``nvidia-cuda-runtime-cu12`` puts it in
    ``nvidia/cuda_runtime/lib``, ``nvidia-cuda-runtime`` 13 in ``nvidia/cu13/lib``), found or
    not by the loader: what ``abi.cudart`` tells to put on ``LD_LIBRARY_PATH``."""
    out: list[Path] = []
    for sp in env.site_packages:
        out += sorted(p for p in sp.glob(f"nvidia/*/lib/libcudart.so.{major}") if files.regular(p))
    return out


def _not_dir(path: Path) -> bool:
    """There (even as a dangling link) and not a folder; never opens, so never blocks."""
    return os.path.lexists(path) and not path.is_dir()


def _files_ending(folder: Path, suffix: str) -> Iterable[Path]:
    """``folder.rglob("*" + suffix)`` as Python 3.11's pathlib walks it (symlinked folders not
    entered, unreadable ones passed over), in a third of the time: vLLM's tree has ~3,000
    files in ~300 folders."""
    todo = [str(folder)]
    while todo:
        where = todo.pop()
        try:
            with os.scandir(where) as entries:
                for entry in entries:
                    if entry.name.endswith(suffix):
                        yield Path(entry.path)
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            todo.append(entry.path)
                    except OSError:
                        continue
        except OSError:
            continue


def extension_facts(path: Path, package: str = "") -> ExtensionFacts:
    """What the extension at ``path`` needs (``DT_NEEDED``) and imports from torch, with the
    torch-side names demangled once (``abi.symbols`` shows the missing ones); an unreadable
    file is an :attr:`ExtensionFacts.error`."""
    facts = ExtensionFacts(path, package or path.parent.name)
    # read once per process: abi.needed/abi.undefined read the same files (linkage)
    head = linkage.head(path)
    if isinstance(head, str):
        facts.error = head
        return facts
    try:
        imported = linkage.imports(path)
    except ElfError as exc:
        facts.error = str(exc)
        return facts
    facts.needed = list(head.needed)
    facts.torch_symbols = sorted(
        {name for name, weak in imported if not weak and _TORCH_SIDE.match(name)}
    )
    facts.readable = dict(zip(facts.torch_symbols, demangle(facts.torch_symbols), strict=True))
    return facts


def owner_of(label: str) -> str:
    """``vllm``, ``xformers`` or ``flash-attn`` for a site-packages-relative ``.so`` name."""
    top = label.split("/", 1)[0]
    if top.startswith("flash_attn"):
        return "flash-attn"
    return top


def dist_name(owner: str) -> str:
    """The PyPI name of the package an extension belongs to (``vllm``, ``flash-attn``)."""
    return owner.replace("_", "-").lower()


def label(path: Path, env_prefix: Path | None = None) -> str:
    """A library's site-packages-relative name (``vllm/_C.abi3.so``), as verdicts name it; a
    wheel member (a relative path) is already that."""
    if not path.is_absolute():  # a wheel member: already the readable name
        return str(path)
    parts = path.parts
    for anchor in ("site-packages", "dist-packages"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1 :])
    return path.name


@dataclass(frozen=True)
class BuiltFor:
    """The torch an extension was compiled against, and where that was read."""

    torch: str | None  # "2.11.0", "2.7.0+cu126" (xformers' cpp_lib.json), "2.2" (flash-attn tag)
    where: str = ""
    cxx11: bool | None = None  # flash-attn wheel names say cxx11abiTRUE/FALSE
    owner: str = ""


_FA_WHEEL = re.compile(r"\+cu(\d+)torch(\d+\.\d+)cxx11abi(TRUE|FALSE)", re.I)


def built_for(env: PixiEnv, owner: str) -> BuiltFor:
    """What each package records about the torch it was built for: vLLM and xformers pin it in
    ``Requires-Dist`` (``torch==2.11.0``), xformers' ``cpp_lib.json`` names the exact build
    (``2.7.0+cu126``), and a flash-attn wheel installed from a release asset keeps its name in
    ``direct_url.json`` (``flash_attn-2.5.7+cu122torch2.2cxx11abiFALSE-...whl``). Not vLLM's
    pin for every extension: that blamed the wrong torch for xformers and flash-attn."""
    dist = env.dist(owner)
    if dist is None:
        return BuiltFor(None, owner=owner)
    if owner == "xformers":
        try:
            data = files.load_json(dist.location / "xformers" / "cpp_lib.json")
            value = data["version"]["torch"]
            if isinstance(value, str):
                return BuiltFor(value, "xformers/cpp_lib.json", owner=owner)
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if owner == "flash-attn":
        try:
            url = files.load_json(dist.path / "direct_url.json").get("url", "")
        except (OSError, ValueError, AttributeError):
            url = ""
        m = _FA_WHEEL.search(url or "")
        if m:
            return BuiltFor(
                m.group(2),
                f"the flash-attn wheel name in direct_url.json ({url.rsplit('/', 1)[-1]})",
                m.group(3).upper() == "TRUE",
                owner,
            )
        return BuiltFor(None, owner=owner)
    pin = torch_pin_of(dist.requires)
    return BuiltFor(pin, f"{owner}'s Requires-Dist", owner=owner) if pin else BuiltFor(None)


def torch_pin_of(requires: Iterable[str]) -> str | None:
    """``2.11.0`` from ``torch==2.11.0``: the torch an extension was built for."""
    for line in requires:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(req.name) == "torch":
            for spec in req.specifier:
                if spec.operator == "==":
                    return spec.version
    return None
