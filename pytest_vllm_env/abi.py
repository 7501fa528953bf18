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
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from . import findings as F
from .elf import ElfError, defined_names, read_elf
from .env import PixiEnv
from .findings import Finding

PINNED = ("torch", "torchvision", "torchaudio", "xformers", "flashinfer-python")
# Mangled names in torch's namespaces, and the C entry points of torch's stable ABI.
_TORCH_SIDE = re.compile(
    r"^(?:_Z(?:T[VIS])?N[KVr]*(?:3c10|2at|5torch|6caffe2)\d|aoti_torch_|torch_)"
)
_OLD_STRING = re.compile(r"(?:RKSs|PKSs|KSs|Ss[EI_])")
EXT_PACKAGES = ("vllm", "xformers", "flash_attn")


# -- facts -----------------------------------------------------------------------------------
@dataclass
class TorchFacts:
    """torch as installed: version, CUDA from ``torch/version.py``, exported symbols."""

    version: str
    root: Path
    cuda: str | None = None
    libs: list[Path] = field(default_factory=list)
    exports: set[str] = field(default_factory=set)
    cxx11: bool | None = None
    errors: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON form for the cross-worker fact cache (symbols sorted, paths as text)."""
        return {
            "version": self.version,
            "root": str(self.root),
            "cuda": self.cuda,
            "libs": [str(p) for p in self.libs],
            "exports": sorted(self.exports),
            "cxx11": self.cxx11,
            "errors": self.errors,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TorchFacts:
        return cls(
            data["version"],
            Path(data["root"]),
            data["cuda"],
            [Path(p) for p in data["libs"]],
            set(data["exports"]),
            data["cxx11"],
            dict(data["errors"]),
        )


@dataclass
class ExtensionFacts:
    """One compiled extension ``.so``: what it needs from torch and the CUDA runtime."""

    path: Path
    package: str
    needed: list[str] = field(default_factory=list)
    torch_symbols: list[str] = field(default_factory=list)
    error: str = ""

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
        if any(_OLD_STRING.search(s) for s in self.torch_symbols):
            return False
        return None


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


def torch_facts(env: PixiEnv) -> TorchFacts | None:
    """Read torch's version, CUDA and the union of torch-side symbols (c10, at, torch,
    caffe2 namespaces; the stable ABI's ``aoti_torch_*``/``torch_*``) ``torch/lib`` exports."""
    root = torch_root(env)
    if root is None:
        return None
    facts = TorchFacts(env.version_of("torch") or "?", root, read_torch_cuda(root))
    libdir = root / "lib"
    facts.libs = sorted(p for p in libdir.glob("*.so*") if p.is_file()) if libdir.is_dir() else []
    flags: list[bool] = []
    for lib in facts.libs:
        try:
            defined = defined_names(lib)
        except ElfError as exc:
            facts.errors[lib.name] = str(exc)
            continue
        # Only torch-side names can be asked for (abi.symbols looks up an extension's
        # torch-side imports): 40,928 of torch 2.11's 102,046 exports, and a fact-cache entry
        # a third the size (its JSON was 10 MB, most of the toolchain tier's cold start).
        side = {s for s in defined if _TORCH_SIDE.match(s)}
        facts.exports |= side
        if lib.name.startswith(("libc10", "libtorch")):
            flags.append(any("cxx11" in s for s in side))
    facts.cxx11 = any(flags) if flags else None
    return facts


def find_extensions(env: PixiEnv, packages: Iterable[str] = EXT_PACKAGES) -> list[Path]:
    """Compiled ``.so`` files of vLLM, xformers and flash-attn in the env's site-packages."""
    found: list[Path] = []
    for sp in env.site_packages:
        for pkg in packages:
            folder = sp / pkg
            if folder.is_dir():
                found += sorted(p for p in folder.rglob("*.so") if p.is_file())
        if "flash_attn" in packages:
            found += sorted(p for p in sp.glob("flash_attn_2_cuda*.so") if p.is_file())
    return found


def extension_facts(path: Path, package: str = "") -> ExtensionFacts:
    facts = ExtensionFacts(path, package or path.parent.name)
    try:
        elf = read_elf(path)
    except ElfError as exc:
        facts.error = str(exc)
        return facts
    facts.needed = elf.needed
    facts.torch_symbols = sorted(
        {s.name for s in elf.undefined if not s.weak and _TORCH_SIDE.match(s.name)}
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


def pins(
    requires: Iterable[str], installed: dict[str, str | None], who: str = "vllm"
) -> list[Finding]:
    """``abi.pins``: each pinned package's installed version satisfies ``who``'s specifier."""
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
                        f"add `torch {req.specifier}` to the env (pixi.toml [pypi-dependencies])",
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
                    f'pin `{name} = "{req.specifier}"` in pixi.toml '
                    f"[pypi-dependencies] (or install the {who} "
                    f"release built for {name} {have})",
                    requirement=str(req),
                    installed=have,
                )
            )
    if not out:
        out.append(F.skipped("abi.pins", f"{who} pins none of {', '.join(PINNED)}"))
    return out


def cudart(ext: ExtensionFacts, torch: TorchFacts | None, toolkit: str | None = None) -> Finding:
    """``abi.cudart``: the extension's libcudart major equals "
    "torch's CUDA major (and the toolkit's)."""
    cid, name = "abi.cudart", _label(ext.path)
    if ext.error:
        return F.error(
            cid,
            f"{name}: {ext.error}",
            f"reinstall the package that owns {name}",
            path=str(ext.path),
        )
    major = ext.cudart
    if major is None:
        return F.skipped(cid, f"{name} does not link libcudart.so.N", needed=ext.needed)
    if torch is None or not torch.cuda:
        return F.failed(
            cid,
            f"{name} needs libcudart.so.{major} but torch is "
            + ("absent" if torch is None else "a CPU-only build"),
            f"install a CUDA {major}.x torch build (e.g. torch "
            f"from the cu{major}x index) in the env",
        )
    if torch.cuda.split(".")[0] != major:
        return F.failed(
            cid,
            f"{name} was built for CUDA {major} (libcudart.so.{major}); "
            f"torch {torch.version} is CUDA {torch.cuda}",
            f"use a {_owner(name)} build for CUDA {torch.cuda.split('.')[0]}, "
            f"or a torch built for CUDA {major}.x",
        )
    if toolkit and toolkit.split(".")[0] != major:
        return F.failed(
            cid,
            f"{name} and torch use CUDA {major}, the env's toolkit is CUDA {toolkit}",
            f'set `cuda-version = "{major}.*"` in pixi.toml '
            f"[dependencies] so nvcc and cudart match torch",
        )
    return F.passed(cid, f"{name}: libcudart.so.{major} matches torch CUDA {torch.cuda}")


def symbols(ext: ExtensionFacts, torch: TorchFacts | None, built_for: str | None = None) -> Finding:
    """``abi.symbols``: every torch-side undefined symbol of ``ext`` is exported by torch/lib."""
    cid, name = "abi.symbols", _label(ext.path)
    if ext.error:
        return F.error(
            cid,
            f"{name}: {ext.error}",
            f"reinstall the package that owns {name}",
            path=str(ext.path),
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
    other = bool(built_for) and built_for != torch.version.split("+")[0]
    cause = (
        f"built for torch {built_for}, env has {torch.version}"
        if other
        else (
            f"built against a different torch build than "
            f"{torch.version} (C++ ABI flag, CUDA variant)"
        )
    )
    fix = (
        f'install the torch it was built for (`torch = "=={built_for}"` in pixi.toml '
        f"[pypi-dependencies]), or rebuild {name} against torch {torch.version}"
        if other
        else f"rebuild {name} against the installed torch {torch.version} (no build isolation)"
    )
    return F.failed(
        cid,
        f"{name}: resolved {len(need) - len(missing)} of {len(need)} torch symbols; "
        f"{len(missing)} missing (likely cause: {cause})",
        fix,
        missing=demangle(missing),
    )


def cxx11(ext: ExtensionFacts, torch: TorchFacts | None) -> Finding:
    """``abi.cxx11``: ``_GLIBCXX_USE_CXX11_ABI`` of ``ext`` equals torch's."""
    cid, name = "abi.cxx11", _label(ext.path)
    if ext.error:
        return F.error(
            cid,
            f"{name}: {ext.error}",
            f"reinstall the package that owns {name}",
            path=str(ext.path),
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
    return F.failed(
        cid,
        f"{name} was built with _GLIBCXX_USE_CXX11_ABI={int(flag)}, "
        f"torch {torch.version} with {int(torch.cxx11)}",
        f"rebuild {name} with "
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch.cxx11)} (torch.compiled_with_cxx11_abi()), "
        "or install the torch build with the matching ABI",
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


def source_torch_floor(vllm_version: str, torch_version: str | None) -> Finding:
    """``abi.source-torch``: vLLM >= 0.9 sources need torch >= 2.7 (``at::Float8_e8m0fnu``)."""
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
            'add `torch = ">=2.7"` (the version vLLM pins) to pixi.toml',
        )
    if Version(torch_version).release < (2, 7):
        return F.failed(
            cid,
            f"vLLM {vllm_version} uses at::Float8_e8m0fnu, added in "
            f"torch 2.7; the env has torch {torch_version}",
            'set `torch = ">=2.7"` in pixi.toml, or build vLLM '
            "0.8.5 (the last release for torch 2.6)",
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


def source_tree_torch(tree: SourceTree, torch_version: str | None) -> list[Finding]:
    """``abi.source-torch`` for a source tree: its torch pins are met before the build starts
    (a `pip install -e .` without build isolation otherwise fails deep in the CUDA build)."""
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
                    f'add `torch = "{req.specifier}"` to pixi.toml before building',
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
                    f'set `torch = "{req.specifier}"` in pixi.toml [pypi-dependencies], or check '
                    "out the vLLM tag made for the installed torch",
                )
            )
    return out
