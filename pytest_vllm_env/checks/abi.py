"""Will vLLM's compiled extensions load against this torch?  Read, never import.

Four questions, each a check:

- ``abi.pins``: vLLM's ``Requires-Dist`` pins for torch & co. against what is installed
  (a vLLM wheel built for torch 2.11.0 next to torch 2.13.0 fails at import with
  ``undefined symbol``; pip/uv only warn when a later install breaks the pin).
- ``abi.cudart``: each extension's ``libcudart.so.N`` against torch's CUDA major.
- ``abi.symbols``: every torch-side undefined symbol of each extension is defined by the
  env's ``torch/lib/*.so`` (per extension: ``_C_stable_libtorch`` uses torch's stable C ABI,
  FA2 the C++ one, so one may load while the other does not).
- ``abi.cxx11``: the ``_GLIBCXX_USE_CXX11_ABI`` flag of an extension matches torch's.

Readers (``torch_facts``, ``extension_facts``) return facts; the judgements below take them.
Each judgement takes the env (``env=``) its fixes are written for
(:mod:`pytest_vllm_env.facts.fixes`):
a Pixi manifest's file, line and table, a conda prefix's ``conda install -p``, a venv's pip or
``uv pip`` command. Without one, fixes speak of a Pixi env whose manifest is not known.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from pytest_vllm_env import findings as F
from pytest_vllm_env.facts import fixes, linkage
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.facts.linkage import DRIVER_LIBS, Linkage
from pytest_vllm_env.findings import Finding
from pytest_vllm_env.readers.elf import ElfError, SymbolIndex

PINNED = ("torch", "torchvision", "torchaudio", "xformers", "flashinfer-python")
# Mangled names in torch's namespaces, and the C entry points of torch's stable ABI.
TORCH_SIDE = _TORCH_SIDE = re.compile(
    r"^(?:_Z(?:T[VIS])?N[KVr]*(?:3c10|2at|5torch|6caffe2)\d|aoti_torch_|torch_)"
)
EXT_PACKAGES = ("vllm", "xformers", "flash_attn")
# The env fixes are written for when a caller knows none: a Pixi env, manifest unknown.
NO_ENV = PixiEnv(prefix=Path(".pixi/envs/default"))


# -- facts -----------------------------------------------------------------------------------
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

    @property
    def owner(self) -> str:
        """``vllm``, ``xformers`` or ``flash-attn``: the package whose build this is."""
        return owner_of(_label(self.path))

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


def read_torch_cuda(root: Path) -> str | None:
    """``cuda = '13.0'`` from ``torch/version.py``: read as text, never imported."""
    try:
        text = (root / "version.py").read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return m.group(1) if m else None


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
    facts = TorchFacts(env.version_of("torch") or "?", root, read_torch_cuda(root))
    libdir = root / "lib"
    facts.libs = sorted(p for p in libdir.glob("*.so*") if p.is_file()) if libdir.is_dir() else []
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
    """Compiled ``.so`` files of vLLM, xformers and flash-attn in the env's site-packages."""
    found: list[Path] = []
    for sp in env.site_packages:
        for pkg in packages:
            folder = sp / pkg
            if folder.is_dir():
                found += sorted(p for p in _files_ending(folder, ".so") if p.is_file())
        if "flash_attn" in packages:
            found += sorted(p for p in sp.glob("flash_attn_2_cuda*.so") if p.is_file())
    return found


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
    return facts


def demangle(names: list[str]) -> list[str]:
    """Human names via ``c++filt`` when present; otherwise the mangled names unchanged."""
    tool = shutil.which("c++filt")
    if not tool or not names:
        return list(names)
    try:
        out = subprocess.run(
            [tool], input="\n".join(names), capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return list(names)
    lines = out.stdout.splitlines()
    return lines if len(lines) == len(names) else list(names)


# -- judgements ------------------------------------------------------------------------------
def _owner(label: str) -> str:
    """The package a site-packages-relative ``label`` belongs to, as users spell it."""
    top = label.split("/", 1)[0]
    if top.startswith("flash_attn"):
        return "flash-attn"
    return {"vllm": "vLLM"}.get(top, top)


def _label(path: Path, env_prefix: Path | None = None) -> str:
    if not path.is_absolute():  # a wheel member: already the readable name
        return str(path)
    parts = path.parts
    for anchor in ("site-packages", "dist-packages"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1 :])
    return path.name


# -- fixes, in the env's own language (pytest_vllm_env.facts.fixes) -------------------------------
TORCH_INDEX = "https://download.pytorch.org/whl"
VLLM_INDEX = "https://wheels.vllm.ai"  # per release and CUDA: <VLLM_INDEX>/0.26.0/cu130


def _dist_name(owner: str) -> str:
    """The PyPI name of the package an extension belongs to (``vllm``, ``flash-attn``)."""
    return owner.replace("_", "-").lower()


def _unreadable(env: PixiEnv, path: Path, name: str) -> str:
    """The fix for an extension that cannot be read: reinstall its package, or, for a member
    of a wheel judged before install (``--vllm-wheel``), rebuild the wheel."""
    if not path.is_absolute():
        return f"rebuild the wheel (`pip wheel`, `uv build`): its member {name} is not a library"
    owner = _dist_name(owner_of(name))
    return f"reinstall {owner}, which installed {name}: {fixes.reinstall(env, owner, pypi=True)}"


def _torch_spec(built: str) -> str:
    """``==2.11.0`` for a torch an extension was built for; ``==2.2.*`` for a flash-attn
    wheel's ``torch2.2``; a local label (``+cu126``: an index's build) is left to the index."""
    release = built.split("+", 1)[0]
    return f"=={release}.*" if release.count(".") == 1 else f"=={release}"


def _torch_package(env: PixiEnv, spec: str) -> Package:
    """torch at ``spec``: PyPI's ``torch``, or conda-forge's ``pytorch`` where the env's torch
    came from conda-forge (a PyPI pin beside it would install a second torch over it)."""
    if env.conda("pytorch") is not None:
        return Package("pytorch", spec)
    return Package("torch", spec, pypi=True)


def _pin_torch(env: PixiEnv, built: str) -> str:
    return fixes.pin(env, _torch_package(env, _torch_spec(built)))


def _torch_for_cuda(env: PixiEnv, release: str | None, major: str) -> str:
    """The fix that installs torch ``release`` built for CUDA ``major``: PyPI's own wheel
    when PyPI's default variant is that CUDA (torch 2.11.0 is cu130 there), else the PyTorch
    index of the newest such variant the arch table knows
    (:mod:`pytest_vllm_env.facts.torch_archs`)."""
    from pytest_vllm_env.facts import torch_archs

    version = (release or "").split("+", 1)[0]
    if env.conda("pytorch") is not None:
        # conda-forge's pytorch builds follow cuda-version (and a CPU one has build `cpu_*`)
        return (
            fixes.pin(env, Package("cuda-version", f"{major}.*"))
            + " and ask for a CUDA build of conda-forge's pytorch (build string `cuda*`)"
        )
    if not version:
        place = fixes.deps_place(env, pypi=True)
        return (
            f"install torch built for CUDA {major} (the release the extension's package pins: "
            f"abi.pins names it), from {TORCH_INDEX}/cu{major}<minor> ({place})"
        )
    pypi = torch_archs.pypi_variant(version)
    torch = Package("torch", f"=={version}", pypi=True)
    if pypi and pypi.startswith(f"cu{major}"):
        return fixes.pin(env, torch) + f" (PyPI's torch {version} is its {pypi} build)"
    rel = torch_archs.release_of(version)
    variants = sorted(
        {
            r.variant
            for r in torch_archs.ROWS
            if r.release == rel and r.variant.startswith(f"cu{major}")
        },
        key=lambda v: int(v[2:]),
    )
    if variants:
        return fixes.pin(env, torch, index=f"{TORCH_INDEX}/{variants[-1]}")
    return (
        f"install torch {version} built for CUDA {major} from {TORCH_INDEX}/cu{major}<minor> "
        f"(the arch table knows no CUDA {major} build of torch {rel}): "
        + fixes.pin(env, torch, index=f"{TORCH_INDEX}/cu{major}<minor>")
    )


def _for_torch_cuda(env: PixiEnv, owner: str, torch: TorchFacts, vllm_version: str | None) -> str:
    """Install ``owner``'s build for torch's CUDA major (vLLM's per-release wheel index)."""
    major = (torch.cuda or "").split(".")[0]
    if owner == "vllm":
        tag = "cu" + (torch.cuda or "").replace(".", "")
        version = vllm_version or env.version_of("vllm")
        release = Version(version).public if version and _is_version(version) else ""
        url = f"{VLLM_INDEX}/{release or '<version>'}/{tag}"
        vllm = Package("vllm", f"=={release}" if release else "", pypi=True)
        return f"vLLM's CUDA {major} wheel: " + fixes.pin(env, vllm, index=url, extra=True)
    if owner == "flash-attn":
        return _rebuild(owner, owner, torch, env)
    if owner == "xformers":
        version = env.version_of("xformers")
        tag = "cu" + (torch.cuda or "").replace(".", "")
        xf = Package("xformers", f"=={version.split('+', 1)[0]}" if version else "", pypi=True)
        return f"the xformers build for CUDA {major}: " + fixes.pin(
            env, xf, index=f"{TORCH_INDEX}/{tag}"
        )
    return f"the {owner} build for CUDA {major} ({fixes.deps_place(env, pypi=True)})"


def _is_version(text: str) -> bool:
    try:
        Version(text)
    except InvalidVersion:
        return False
    return True


def _vllm_rebuild(env: PixiEnv, torch: TorchFacts) -> str:
    """vLLM's own recipe for an existing torch (docs, "Use an existing PyTorch installation"):
    ``python use_existing_torch.py`` drops the checkout's torch pins, then a build without
    isolation compiles against the env's torch."""
    return (
        f"rebuild vLLM against torch {torch.version}: in a vLLM checkout run `python "
        "use_existing_torch.py`, then " + fixes.rebuild(env, "vllm", source="<vLLM checkout>")
    )


def pins(
    requires: Iterable[str],
    installed: dict[str, str | None],
    who: str = "vllm",
    *,
    env: PixiEnv | None = None,
) -> list[Finding]:
    """``abi.pins``: each pinned package's installed version satisfies ``who``'s specifier;
    the fix pins it in ``env``'s language (the manifest line that declares it, or pip)."""
    env = env or NO_ENV
    out: list[Finding] = []
    for line in requires:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        name = canonicalize_name(req.name)
        if name not in PINNED or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        have = installed.get(name)
        cid = "abi.pins"
        if have is None:
            if name == "torch":
                out.append(
                    F.failed(
                        cid,
                        f"{who} requires {req}, torch is not installed",
                        fixes.add(env, _torch_package(env, str(req.specifier))),
                    )
                )
            continue
        try:
            ok = SpecifierSet(str(req.specifier), prereleases=True).contains(
                Version(have), prereleases=True
            )
        except InvalidVersion:
            ok = False
        if ok:
            out.append(F.passed(cid, f"{name} {have} satisfies {who}'s {req}"))
        else:
            out.append(
                F.failed(
                    cid,
                    f"{who} requires {req} but the env has {name} {have}",
                    fixes.pin(
                        env,
                        _torch_package(env, str(req.specifier))
                        if name == "torch"
                        else Package(name, str(req.specifier), pypi=True),
                    )
                    + f", or install the {who} release built for {name} {have}",
                    requirement=str(req),
                    installed=have,
                )
            )
    if not out:
        out.append(F.skipped("abi.pins", f"{who} pins none of {', '.join(PINNED)}"))
    return out


def cudart(
    ext: ExtensionFacts,
    torch: TorchFacts | None,
    toolkit: str | None = None,
    *,
    env: PixiEnv | None = None,
    built: BuiltFor | str | None = None,
    vllm_version: str | None = None,
) -> Finding:
    """``abi.cudart``: the extension's libcudart major equals torch's CUDA major (and the
    toolkit's). ``built``: the torch the extension's package pins (the release to install
    when torch is absent)."""
    env = env or NO_ENV
    cid, name = "abi.cudart", _label(ext.path)
    if ext.error:
        return F.error(
            cid, f"{name}: {ext.error}", _unreadable(env, ext.path, name), path=str(ext.path)
        )
    major = ext.cudart
    if major is None:
        return F.skipped(cid, f"{name} does not link libcudart.so.N", needed=ext.needed)
    if torch is None or not torch.cuda:
        pin = built.torch if isinstance(built, BuiltFor) else built
        release = torch.version if torch is not None else pin
        return F.failed(
            cid,
            f"{name} needs libcudart.so.{major} but torch is "
            + ("absent" if torch is None else "a CPU-only build"),
            f"install a CUDA {major} build of torch: {_torch_for_cuda(env, release, major)}",
        )
    if torch.cuda.split(".")[0] != major:
        owner = owner_of(name)
        return F.failed(
            cid,
            f"{name} was built for CUDA {major} (libcudart.so.{major}); "
            f"torch {torch.version} is CUDA {torch.cuda}",
            f"install {_for_torch_cuda(env, owner, torch, vllm_version)}; or a torch built for "
            f"CUDA {major}: {_torch_for_cuda(env, torch.version, major)}",
        )
    if toolkit and toolkit.split(".")[0] != major:
        return F.failed(
            cid,
            f"{name} and torch use CUDA {major}, the env's toolkit is CUDA {toolkit}",
            fixes.pin(env, Package("cuda-version", f"{major}.*"))
            + " so nvcc and cudart match torch",
        )
    return F.passed(cid, f"{name}: libcudart.so.{major} matches torch CUDA {torch.cuda}")


@dataclass(frozen=True)
class BuiltFor:
    """The torch an extension was compiled against, and where that was read."""

    torch: str | None  # "2.11.0", "2.7.0+cu126" (xformers' cpp_lib.json), "2.2" (flash-attn tag)
    where: str = ""
    cxx11: bool | None = None  # flash-attn wheel names say cxx11abiTRUE/FALSE
    owner: str = ""


_FA_WHEEL = re.compile(r"\+cu(\d+)torch(\d+\.\d+)cxx11abi(TRUE|FALSE)", re.I)


def owner_of(label: str) -> str:
    """``vllm``, ``xformers`` or ``flash-attn`` for a site-packages-relative ``.so`` name."""
    top = label.split("/", 1)[0]
    if top.startswith("flash_attn"):
        return "flash-attn"
    return top


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
        import json

        try:
            data = json.loads((dist.location / "xformers" / "cpp_lib.json").read_text())
            value = data["version"]["torch"]
            if isinstance(value, str):
                return BuiltFor(value, "xformers/cpp_lib.json", owner=owner)
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if owner == "flash-attn":
        import json

        try:
            url = json.loads((dist.path / "direct_url.json").read_text()).get("url", "")
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


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version.split("+", 1)[0])[:3])


def _same_release(built: str, installed: str) -> bool:
    """``2.2`` (a flash-attn tag) matches 2.2.x; ``2.7.0+cu126`` matches 2.7.0 (+any)."""
    want, have = _release(built), _release(installed)
    return have[: len(want)] == want


def _rebuild(name: str, owner: str, torch: TorchFacts, env: PixiEnv | None = None) -> str:
    """The fix that gives ``owner`` a build made for the env's torch, in ``env``'s language."""
    env = env or NO_ENV
    if owner == "flash-attn":
        minor = ".".join(torch.version.split("+", 1)[0].split(".")[:2])
        flag = "TRUE" if torch.cxx11 else "FALSE"
        py = (env.python_version or "").split(".")[:2]
        cp = f"cp{''.join(py)}" if len(py) == 2 else ""
        tail = f"{cp}-{cp}-linux_x86_64.whl" if cp else "...whl"
        cu = (torch.cuda or "12").split(".")[0]
        asset = f"flash_attn-<version>+cu{cu}torch{minor}cxx11abi{flag}-{tail}"
        url = fixes.pin(env, Package("flash-attn", pypi=True), url="<asset URL>")
        return (
            f"install the flash-attn wheel built for torch {minor} (release assets of "
            f"https://github.com/Dao-AILab/flash-attention/releases are named `{asset}`): {url}; "
            f"or build it against this torch: {fixes.rebuild(env, 'flash-attn')}"
        )
    if owner == "xformers":
        from pytest_vllm_env.checks.xformers import xformers_for_torch

        want = xformers_for_torch(torch.version)
        if want:
            line = fixes.pin(env, Package("xformers", f"=={want}", pypi=True))
        else:
            line = f"the xformers release that pins it, in {fixes.deps_place(env, pypi=True)}"
        return (
            f"install the xformers built for torch {torch.version}: {line} (xformers.torch-pin "
            "names the index for CUDA variants)"
        )
    if owner == "vllm":
        return _vllm_rebuild(env, torch)
    return f"rebuild {name} against the installed torch {torch.version}: " + fixes.rebuild(
        env, _dist_name(owner)
    )


def symbols(
    ext: ExtensionFacts,
    torch: TorchFacts | None,
    built: BuiltFor | str | None = None,
    *,
    env: PixiEnv | None = None,
) -> Finding:
    """``abi.symbols``: every torch-side undefined symbol of ``ext`` is exported by torch/lib."""
    env = env or NO_ENV
    cid, name = "abi.symbols", _label(ext.path)
    if isinstance(built, str) or built is None:
        built = BuiltFor(built, "vLLM's Requires-Dist" if built else "", owner=owner_of(name))
    if ext.error:
        return F.error(
            cid, f"{name}: {ext.error}", _unreadable(env, ext.path, name), path=str(ext.path)
        )
    if torch is None:
        return F.skipped(cid, f"torch is not installed; cannot resolve {name}")
    need = ext.torch_symbols
    if not need:
        return F.skipped(cid, f"{name} imports no torch symbols")
    missing = [s for s in need if s not in torch.exports]
    if not missing:
        return F.passed(
            cid,
            f"{name}: resolved {len(need)} of {len(need)} torch symbols in torch {torch.version}",
        )
    owner = built.owner or owner_of(name)
    other = bool(built.torch) and not _same_release(built.torch or "", torch.version)
    cause = (
        f"built for torch {built.torch} ({built.where}), env has {torch.version}"
        if other
        else (
            f"built against a different torch build than "
            f"{torch.version} (C++ ABI flag, CUDA variant)"
            + (f"; {built.where} says {built.torch}" if built.torch else "")
        )
    )
    if other and owner == "vllm":
        fix = (
            f"install the torch it was built for: {_pin_torch(env, built.torch or '')}; or "
            + _rebuild(name, owner, torch, env)
        )
    elif other:
        fix = (
            _rebuild(name, owner, torch, env)
            + f"; or install torch {built.torch}, which it was built for: "
            + _pin_torch(env, built.torch or "")
        )
    else:
        fix = _rebuild(name, owner, torch, env)
    return F.failed(
        cid,
        f"{name}: resolved {len(need) - len(missing)} of {len(need)} torch symbols; "
        f"{len(missing)} missing (likely cause: {cause})",
        fix,
        missing=demangle(missing),
    )


def cxx11(ext: ExtensionFacts, torch: TorchFacts | None, *, env: PixiEnv | None = None) -> Finding:
    """``abi.cxx11``: ``_GLIBCXX_USE_CXX11_ABI`` of ``ext`` equals torch's."""
    env = env or NO_ENV
    cid, name = "abi.cxx11", _label(ext.path)
    if ext.error:
        return F.error(
            cid, f"{name}: {ext.error}", _unreadable(env, ext.path, name), path=str(ext.path)
        )
    if torch is None or torch.cxx11 is None:
        return F.skipped(cid, "torch's C++11 ABI flag could not be read (no libc10/libtorch)")
    flag = ext.cxx11
    if flag is None:
        return F.skipped(
            cid, f"{name} passes no std::string across torch's API; the flag does not matter"
        )
    if flag == torch.cxx11:
        return F.passed(cid, f"{name}: _GLIBCXX_USE_CXX11_ABI={int(flag)} like torch")
    owner = owner_of(name)
    if owner == "flash-attn":
        fix = _rebuild(name, owner, torch, env)
    elif owner == "vllm":
        # vLLM #13608: torch 2.6.0+cu124 is the old ABI, 2.6.0+cu126 and 2.7+ the new one
        fix = (
            f"{_vllm_rebuild(env, torch)} (it then gets -D_GLIBCXX_USE_CXX11_ABI="
            f"{int(torch.cxx11)}); or install the torch variant it was built with (PyPI torch "
            "2.6.0+cu124 and older use the old ABI, 2.6.0+cu126 and 2.7+ the new one)"
        )
    else:
        fix = (
            f"rebuild {name} against this torch, so it gets -D_GLIBCXX_USE_CXX11_ABI="
            f"{int(torch.cxx11)} (torch.compiled_with_cxx11_abi()): "
            + fixes.rebuild(env, _dist_name(owner))
            + "; or install the torch build with the matching ABI"
        )
    return F.failed(
        cid,
        f"{name} was built with _GLIBCXX_USE_CXX11_ABI={int(flag)}, "
        f"torch {torch.version} with {int(torch.cxx11)}",
        fix,
    )


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


def source_torch_floor(
    vllm_version: str, torch_version: str | None, *, env: PixiEnv | None = None
) -> Finding:
    """``abi.source-torch``: vLLM >= 0.9 sources need torch >= 2.7 (``at::Float8_e8m0fnu``)."""
    env = env or NO_ENV
    floor = _torch_package(env, ">=2.7")
    cid = "abi.source-torch"
    try:
        v = Version(vllm_version)
    except InvalidVersion:
        return F.error(
            cid,
            f"vLLM version {vllm_version!r} is not a version",
            "check the vLLM tag or source tree",
        )
    if v < Version("0.9"):
        return F.passed(cid, f"vLLM {vllm_version} predates the torch >= 2.7 requirement")
    if torch_version is None:
        return F.failed(
            cid,
            f"building vLLM {vllm_version} needs torch >= 2.7; torch is not installed",
            fixes.add(env, floor) + " (or the exact torch that vLLM release pins)",
        )
    if Version(torch_version).release < (2, 7):
        return F.failed(
            cid,
            f"vLLM {vllm_version} uses at::Float8_e8m0fnu, added in "
            f"torch 2.7; the env has torch {torch_version}",
            fixes.pin(env, floor) + "; or build vLLM 0.8.5 (the last release for torch 2.6)",
        )
    return F.passed(cid, f"torch {torch_version} >= 2.7, as vLLM {vllm_version} needs")


@dataclass
class SourceTree:
    """The torch requirements a vLLM source tree builds against, with where each was read."""

    root: Path
    requirements: list[tuple[str, str]] = field(default_factory=list)  # (file:line, requirement)
    error: str = ""


def read_source_tree(root: Path) -> SourceTree:
    """torch pins from ``pyproject.toml`` ``[build-system].requires`` and
    ``requirements/cuda.txt`` (``requirements-cuda.txt`` in older trees); never raises."""
    import tomllib

    tree = SourceTree(root)
    if not root.is_dir():
        tree.error = f"{root} is not a directory"
        return tree
    pyproject = root / "pyproject.toml"
    try:
        data = tomllib.loads(pyproject.read_text(errors="replace")) if pyproject.is_file() else {}
    except (tomllib.TOMLDecodeError, OSError) as exc:
        tree.error = f"{pyproject}: {exc}"
        return tree
    for line in data.get("build-system", {}).get("requires", []) or []:
        if isinstance(line, str) and re.match(r"^\s*torch\b(?![-_\w])", line):
            tree.requirements.append(("pyproject.toml [build-system].requires", line))
    for rel in ("requirements/cuda.txt", "requirements-cuda.txt"):
        path = root / rel
        if not path.is_file():
            continue
        for no, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if re.match(r"^\s*torch\s*[=<>~!]", line):
                tree.requirements.append((f"{rel}:{no}", line.split("#")[0].strip()))
    return tree


def source_tree_torch(
    tree: SourceTree, torch_version: str | None, *, env: PixiEnv | None = None
) -> list[Finding]:
    """``abi.source-torch`` for a source tree: its torch pins are met before the build starts
    (a `pip install -e .` without build isolation otherwise fails deep in the CUDA build)."""
    env = env or NO_ENV
    cid = "abi.source-torch"
    if tree.error:
        return [F.error(cid, tree.error, "point --vllm-source at a vLLM checkout")]
    if not tree.requirements:
        return [F.skipped(cid, f"{tree.root} names no torch requirement")]
    out = []
    for where, line in tree.requirements:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            out.append(F.error(cid, f"{where}: {line!r} is not a requirement", f"fix {where}"))
            continue
        if torch_version is None:
            out.append(
                F.failed(
                    cid,
                    f"{where} needs {req}; torch is not installed",
                    fixes.add(env, _torch_package(env, str(req.specifier))) + " before building",
                )
            )
            continue
        if req.specifier.contains(Version(torch_version), prereleases=True):
            out.append(F.passed(cid, f"torch {torch_version} meets {where}: {req}"))
        else:
            out.append(
                F.failed(
                    cid,
                    f"the source tree needs {req} ({where}) but the env has torch {torch_version}",
                    fixes.pin(env, _torch_package(env, str(req.specifier)))
                    + "; or check out the vLLM tag made for the installed torch",
                )
            )
    return out


# -- the loader: libraries and symbols beyond torch's -----------------------------------------
_CUDA_LIB = re.compile(
    r"^lib(cudart|cublas|cublasLt|cufft|curand|cusparse|cusolver|nvrtc|nvJitLink)\.so\.(\d+)"
)
# soname stem -> (conda-forge package, PyPI package). On PyPI the CUDA <= 12 libraries are
# `<name>-cu12`, the CUDA 13 ones plain `<name>` versioned by the library (the `-cu13` names
# are stubs: "DEPRECATED: Use nvidia-cuda-runtime instead").
_CUDA_PACKAGES = {
    "cudart": ("cuda-cudart", "nvidia-cuda-runtime"),
    "cublas": ("libcublas", "nvidia-cublas"),
    "cublasLt": ("libcublas", "nvidia-cublas"),
    "cufft": ("libcufft", "nvidia-cufft"),
    "curand": ("libcurand", "nvidia-curand"),
    "cusparse": ("libcusparse", "nvidia-cusparse"),
    "cusolver": ("libcusolver", "nvidia-cusolver"),
    "nvrtc": ("cuda-nvrtc", "nvidia-cuda-nvrtc"),
    "nvJitLink": ("libnvjitlink", "nvidia-nvjitlink"),
}
# Libraries whose soname major is the CUDA major; the others are not (CUDA 12 ships
# libcufft.so.11 and libcusolver.so.11, CUDA 12 and 13 both libcurand.so.10).
_CUDA_MAJOR_SONAME = {"cudart", "cublas", "cublasLt", "nvrtc", "nvJitLink"}


def _cuda_major_of(link: Linkage, torch: TorchFacts | None) -> str | None:
    """The CUDA major a library the extension needs must come from: torch's, else the one of
    the extension's own libcudart.so.N."""
    if torch is not None and torch.cuda:
        return torch.cuda.split(".")[0]
    for lib in link.needed:
        m = re.fullmatch(r"libcudart\.so\.(\d+)", lib)
        if m:
            return m.group(1)
    return None


def _cuda_library_fix(env: PixiEnv, stem: str, soname_major: str, major: str | None) -> str:
    """The packages that provide ``lib<stem>.so.<soname_major>`` for CUDA ``major``: the
    conda-forge one (with ``cuda-version``) where the env takes conda packages, the PyPI one."""
    conda, pypi = _CUDA_PACKAGES[stem]
    major = major or (soname_major if stem in _CUDA_MAJOR_SONAME else None)
    if major is None:
        wheel = Package(pypi, f"=={soname_major}.*", pypi=True)
    elif int(major) <= 12:
        wheel = Package(f"{pypi}-cu{major}", pypi=True)
    else:
        wheel = Package(pypi, f"=={soname_major}.*", pypi=True)
    if fixes.kind_of(env) == "venv":
        return fixes.add(env, wheel)
    if major is not None and int(major) < 12:  # conda-forge's CUDA 11 is one package
        packages = [Package("cudatoolkit", f"{major}.*")]
    else:
        packages = [Package(conda)]
        have = (env.version_of("cuda-version") or "").split(".")[0]
        if major is not None and have != major:
            packages.append(Package("cuda-version", f"{major}.*"))
    return f"{fixes.add(env, *packages)}; or from PyPI, {fixes.add(env, wheel)}"


def needed(
    link: Linkage,
    torch: TorchFacts | None,
    vllm_version: str | None = None,
    *,
    env: PixiEnv | None = None,
    built: BuiltFor | str | None = None,
) -> Finding:
    """``abi.needed``: every ``DT_NEEDED`` library of the extension is found where the loader
    looks (torch's already-loaded libraries, RUNPATH, LD_LIBRARY_PATH, the env, the system)."""
    env = env or NO_ENV
    cid, name = "abi.needed", _label(link.path)
    if link.error:
        return F.error(cid, f"{name}: {link.error}", _unreadable(env, link.path, name))
    missing = [lib for lib, path in link.needed.items() if path is None and lib not in DRIVER_LIBS]
    driver = [lib for lib, path in link.needed.items() if path is None and lib in DRIVER_LIBS]
    note = (
        {"not_on_this_machine": f"{', '.join(driver)} (installed by the NVIDIA driver)"}
        if driver
        else {}
    )
    if not missing:
        return F.passed(cid, f"{name}: all {len(link.needed)} needed libraries are found", **note)
    first = missing[0]
    m = _CUDA_LIB.match(first)
    owner = owner_of(name)
    versioned = m is not None and m.group(1) in _CUDA_MAJOR_SONAME
    if versioned and torch is not None and torch.cuda and torch.cuda.split(".")[0] != m.group(2):
        fix = (
            f"{name} was built for CUDA {m.group(2)}, torch {torch.version} is CUDA "
            f"{torch.cuda} (abi.cudart): install "
            + _for_torch_cuda(env, owner, torch, vllm_version)
        )
    elif m:
        fix = f"add the CUDA library that provides {first}: " + _cuda_library_fix(
            env, m.group(1), m.group(2), _cuda_major_of(link, torch)
        )
    elif first.startswith(("libc10", "libtorch")):
        pin = built.torch if isinstance(built, BuiltFor) else built
        torch_pkg = _torch_package(env, _torch_spec(pin) if pin else "")
        fix = f"install the torch {owner} was built for: {fixes.add(env, torch_pkg)}"
    else:
        fix = (
            f"add the package that provides {first} to {fixes.deps_place(env)}, or "
            f"reinstall {owner}: {fixes.reinstall(env, _dist_name(owner), pypi=True)}"
        )
    return F.failed(
        cid,
        f"{name} needs {', '.join(missing)}, found nowhere the loader looks: import fails with "
        f'"{first}: cannot open shared object file: No such file or directory"',
        fix,
        **note,
    )


def undefined(link: Linkage, *, env: PixiEnv | None = None) -> Finding:
    """``abi.undefined``: every undefined symbol that is not torch's (``abi.symbols`` judges
    those) is defined by a library in the extension's ``DT_NEEDED`` closure or by Python."""
    env = env or NO_ENV
    cid, name = "abi.undefined", _label(link.path)
    if link.error:
        return F.error(cid, f"{name}: {link.error}", _unreadable(env, link.path, name))
    if link.missing_deep:
        libs = ", ".join(sorted({n for n, _ in link.missing_deep}))
        return F.skipped(cid, f"{name}: cannot resolve its symbols while {libs} is not found")
    if not link.unresolved:
        return F.passed(cid, f"{name}: every symbol it imports is defined by a library it needs")
    shown = demangle(link.unresolved)
    owner = owner_of(name)
    release = _released(env, owner)
    arch = next((m for s in shown if (m := re.search(r"_sm(\d{2,3})[af]?(?!\d)", s))), None)
    if arch:
        n = int(arch.group(1))
        cc = f"{n // 10}.{n % 10}"
        fix = (
            f"the build compiled a caller of sm_{n}-only kernels without the kernels (vLLM "
            f"#29030: a global -DENABLE_..._SM{n} while TORCH_CUDA_ARCH_LIST had no {cc}): "
            f"rebuild with {cc} in `TORCH_CUDA_ARCH_LIST` ({fixes.activation_place(env)}) from a "
            f"clean tree (remove build/); or install the released {owner} wheel: {release}"
        )
    else:
        fix = (
            f"a build left {owner}'s own symbols undefined: install the released {owner} "
            f"wheel ({release}), or rebuild it from a clean tree (remove build/) against this env"
        )
    return F.failed(
        cid,
        f"{name}: {len(shown)} symbol(s) defined by no library it loads: import fails with "
        f'"undefined symbol: {link.unresolved[0]}"',
        fix,
        undefined=shown,
    )


def _released(env: PixiEnv, owner: str) -> str:
    """The fix that swaps a local build of ``owner`` for its released wheel: the release of
    the version installed (``0.11.1`` for ``0.11.1.dev5+g1234``) in the env's language."""
    dist = _dist_name(owner)
    version = env.version_of(dist)
    release = Version(version).base_version if version and _is_version(version) else ""
    return fixes.pin(env, Package(dist, f"=={release}" if release else "", pypi=True))
