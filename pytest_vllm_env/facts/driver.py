"""What the driver layer is judged from: the machine's NVIDIA driver, the ``libcuda.so.1`` the
loader would take for the env, and what the env's CUDA binaries need of a driver.

Three ways to see the driver on a GPU node (the plugin asks all of them; the check compares):
NVML (``runners/node.py`` runs ``probes/nvml_node.py``: the driver version and the CUDA
version it supports, the GPU names), ``/proc/driver/nvidia/version`` (the kernel module), and
the file name of the ``libcuda.so.1`` the loader takes (``libcuda.so.580.159.04``).

Where the loader finds ``libcuda.so.1`` for a process of the env, in glibc's order as far as it
matters here (``ld.so(8)``): ``LD_LIBRARY_PATH`` after activation, then the requesting
object's ``RUNPATH`` (a conda env's ``libcudart`` has ``$ORIGIN``: the env's ``lib/``), then the
dirs ``ldconfig`` caches from ``/etc/ld.so.conf``, then the defaults. A forward-compatibility
``libcuda`` (NVIDIA's ``cuda-compat-M-m`` package in ``/usr/local/cuda-M.m/compat``, or
conda-forge's ``cuda-compat`` in ``$PREFIX/cuda-compat``, which its activation script links
into ``$PREFIX/lib``: conda-forge/cuda-compat-feedstock ``recipe/activate.sh``) takes over
from the driver's own only where one of these puts it first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_vllm_env import files
from pytest_vllm_env.facts.binaries import torch_root
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.readers.elf import ElfError
from pytest_vllm_env.readers.fatbin_ptx import read_binary
from pytest_vllm_env.readers.torch_version import read_torch_cuda_or_why
from pytest_vllm_env.tables.driver import cuda_of_isa, parse_cuda

PROC_VERSION = Path("/proc/driver/nvidia/version")
DEVICE_NODES = (Path("/dev/nvidiactl"), Path("/dev/nvidia0"))
LD_SO_CONF = Path("/etc/ld.so.conf")
DEFAULT_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
                "/lib", "/usr/lib")  # fmt: skip
# "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  Thu ..." and the open modules'
# "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build ..."
_PROC = re.compile(r"^NVRM version:.*?Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", re.M)
_LIBCUDA_FILE = re.compile(r"^libcuda\.so\.(\d{3,4}(?:\.\d+){1,2})$")
# conda-forge's nvidia-cuda-runtime wheels: -cu11/-cu12 in the name up to CUDA 12, none from 13
RUNTIME_DISTS = ("nvidia-cuda-runtime", "nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu11")
RUNTIME_CONDA = ("cuda-cudart", "cudatoolkit")
COMPAT_CONDA = ("cuda-compat-impl", "cuda-compat")


# -- the machine's driver ------------------------------------------------------------------------
def parse_proc_version(text: str) -> str | None:
    """The kernel module's version from ``/proc/driver/nvidia/version``'s text."""
    match = _PROC.search(text or "")
    return match.group(1) if match else None


def read_proc_driver(path: Path = PROC_VERSION) -> tuple[str | None, str]:
    """``(version, problem)`` from ``/proc/driver/nvidia/version``; problem '' when read."""
    try:
        text = files.read_text(path, files.CONFIG)
    except FileNotFoundError:
        return None, f"{path} is absent (no NVIDIA kernel module loaded here)"
    except OSError as exc:
        return None, f"{path}: {exc.strerror or exc}"
    version = parse_proc_version(text)
    return version, "" if version else f"{path} names no kernel module version"


def driver_present(proc: Path = PROC_VERSION, nodes: Iterable[Path] = DEVICE_NODES) -> bool:
    """Whether this machine has an NVIDIA kernel driver (so NVML is worth asking)."""
    return any(os.path.exists(p) for p in (proc, *nodes))


@dataclass(frozen=True)
class NodeDriver:
    """What this machine says about its driver; every field None where it said nothing, with
    the reason in the ``*_problem`` fields."""

    nvml_driver: str | None = None
    nvml_cuda: str | None = None  # "13.0": nvmlSystemGetCudaDriverVersion
    nvml_problem: str = "not asked"
    proc_driver: str | None = None
    proc_problem: str = "not read"
    gpus: tuple[str, ...] = ()  # NVML names: "NVIDIA H100 80GB HBM3"


# -- which libcuda the loader takes ----------------------------------------------------------
@dataclass(frozen=True)
class Libcuda:
    """A ``libcuda.so.1`` on the loader's path: where, which file it is, how the dir got there."""

    path: str
    real: str
    version: str | None  # "580.95.05" from the real file's name
    via: str  # "LD_LIBRARY_PATH (set by the env's activation)", "ld.so.conf (/etc/...)"...
    compat: bool  # a forward-compatibility copy (a compat dir, the env's cuda-compat)
    package: str = ""  # the env's conda package that put it there (cuda-compat-impl 570.124.06)


def _libcuda_in(folder: Path, via: str, compat: bool, package: str = "") -> Libcuda | None:
    candidate = folder / "libcuda.so.1"
    if not files.regular(candidate):
        return None
    real = os.path.realpath(candidate)
    match = _LIBCUDA_FILE.match(os.path.basename(real))
    is_compat = compat or any("compat" in part for part in (*Path(real).parts, *folder.parts))
    return Libcuda(str(candidate), real, match.group(1) if match else None, via, is_compat, package)


def ld_so_conf_dirs(conf: Path = LD_SO_CONF) -> list[tuple[Path, str]]:
    """``(dir, the conf file naming it)`` for ``/etc/ld.so.conf`` and its ``include`` globs."""
    out: list[tuple[Path, str]] = []

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
                try:
                    found = sorted(base.parent.glob(base.name))
                except OSError:
                    found = []
                for inc in found:
                    read(inc, depth + 1)
            elif line.startswith("/"):
                out.append((Path(line), str(path)))

    read(conf)
    return out


def libcuda_search(
    env: PixiEnv,
    environ: Mapping[str, str],
    *,
    conf: Path = LD_SO_CONF,
    defaults: Iterable[str] = DEFAULT_DIRS,
) -> list[Libcuda]:
    """Every ``libcuda.so.1`` a process of ``env`` could load, in the loader's order: the
    first is the one it takes. ``environ`` is the env after activation."""
    found: list[Libcuda] = []
    seen: set[str] = set()
    inherited = set(_path_list(env.base_environ.get("LD_LIBRARY_PATH", "")))
    compat_pkg = next((env.conda(n) for n in COMPAT_CONDA if env.conda(n)), None)
    package = f"{compat_pkg.name} {compat_pkg.version}" if compat_pkg else ""

    def add(folder: Path, via: str, compat: bool = False, pkg: str = "") -> None:
        key = os.path.normpath(str(folder))
        if key in seen:
            return
        seen.add(key)
        in_env = _inside(folder, env.prefix)
        hit = _libcuda_in(folder, via, compat, pkg or (package if in_env else ""))
        if hit is not None:
            found.append(hit)

    for entry in _path_list(environ.get("LD_LIBRARY_PATH", "")):
        how = "inherited by the run" if entry in inherited else "set by the env's activation"
        add(Path(entry), f"LD_LIBRARY_PATH ({how})")
    add(env.prefix / "lib", "the env's lib/ (RUNPATH $ORIGIN of a conda libcudart)")
    compat_dir = env.prefix / "cuda-compat"
    if compat_pkg is not None and _links_compat_at_activation(env.prefix):
        # conda-forge's activate.sh links cuda-compat/* into lib/ when the env is activated
        add(compat_dir, "the env's cuda-compat/ (its activation links it into lib/)", True)
    for folder, conf_file in ld_so_conf_dirs(conf):
        add(folder, f"ld.so.conf ({conf_file})")
    for folder in defaults:
        add(Path(folder), "a default library dir")
    return found


def _links_compat_at_activation(prefix: Path) -> bool:
    folder = prefix / "etc" / "conda" / "activate.d"
    try:
        return any("compat" in p.name for p in folder.iterdir())
    except OSError:
        return False


def _path_list(value: str) -> list[str]:
    return [p for p in value.split(":") if p]


def _inside(path: Path, prefix: Path) -> bool:
    try:
        Path(os.path.normpath(path)).relative_to(os.path.normpath(prefix))
    except ValueError:
        return False
    return True


def compat_packages(env: PixiEnv) -> list[str]:
    """The env's conda forward-compatibility packages: ``cuda-compat 12.8.1``..."""
    return [f"{p.name} {p.version}" for n in COMPAT_CONDA if (p := env.conda(n))]


# -- what the env's CUDA binaries need --------------------------------------------------------
@dataclass(frozen=True)
class BinaryFacts:
    """One CUDA binary as the driver layer reads it: the ``libcudart.so.N`` it links, and its
    fatbin containers, each a list of ``(kind, arch, isa)``: ``("ptx", "8.0", "9.0")``,
    ``("sass", "9.0a", None)``. JSON round-trips (the fact cache)."""

    path: str
    cudart: int | None = None
    containers: tuple[tuple[tuple[str, str, str | None], ...], ...] = ()
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "cudart": self.cudart, "error": self.error,
                "containers": [[list(i) for i in c] for c in self.containers]}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BinaryFacts:
        return cls(
            str(data["path"]),
            data.get("cudart"),
            tuple(tuple((str(k), str(a), i) for k, a, i in c) for c in data["containers"]),
            str(data.get("error", "")),
        )

    @property
    def isas(self) -> list[str]:
        """Every PTX ISA version its PTX images carry (``9.0``), newest last."""
        found = {i for c in self.containers for k, _, i in c if k == "ptx" and i}
        return sorted(found, key=lambda v: tuple(int(p) for p in v.split(".")))


def binary_facts(path: Path) -> BinaryFacts:
    """Read ``path`` (never raises: an unreadable file is ``error``)."""
    try:
        binary = read_binary(path)
    except ElfError as exc:
        if os.path.islink(path) and not os.path.exists(path):  # say what it is, not ENOENT
            return BinaryFacts(str(path), error=f"a dangling symlink to {os.readlink(path)}")
        return BinaryFacts(str(path), error=str(exc))
    cudart = next(
        (int(m.group(1)) for n in binary.needed if (m := re.match(r"^libcudart\.so\.(\d+)$", n))),
        None,
    )
    containers = tuple(
        tuple(
            (
                i.image.kind,
                i.image.arch.cc,
                f"{i.isa[0]}.{i.isa[1]}" if i.isa else None,
            )
            for i in c.images
        )
        for c in binary.containers
    )
    return BinaryFacts(str(path), cudart, containers)


def torch_cuda_libraries(root: Path | None) -> list[Path]:
    """``torch/lib/*.so*``: where torch's kernels (``libtorch_cuda.so``...) are."""
    if root is None:
        return []
    try:
        # a FIFO or dangling link there is a library that cannot be read: kept, so that
        # binary_facts names it (BinaryFacts.error), never passed over as absent
        return sorted(
            p for p in (root / "lib").glob("*.so*") if files.lexists(p) and not p.is_dir()
        )
    except OSError:
        return []


@dataclass(frozen=True)
class CudaNeed:
    """One thing in the env that needs a driver of some CUDA version: ``cuda`` (major, minor)
    with minor None where it cannot be read; ``package`` names what a fix changes."""

    subject: str
    major: int
    minor: int | None
    where: str
    kind: str  # "cudart", "torch", "extension"
    package: str = ""
    # why the file that says this need's CUDA could not be read (a FIFO or device where
    # torch/version.py must be): the need is unknown, not absent; ``where`` names the file
    error: str = ""

    @property
    def text(self) -> str:
        return f"{self.major}.{self.minor}" if self.minor is not None else f"{self.major}.x"


def cuda_needs(
    env: PixiEnv, extensions: Iterable[BinaryFacts] = (), site: Iterable[Path] = ()
) -> list[CudaNeed]:
    """The CUDA runtime versions the env holds, torch's CUDA, and each extension's: from
    conda-meta (``cuda-cudart``), the PyPI runtime wheels (``nvidia-cuda-runtime``), torch's
    ``version.py`` and each extension's ``libcudart.so.N`` with the CUDA its PTX says
    (ISA 9.0: built by CUDA 13.0)."""
    out: list[CudaNeed] = []
    for name in RUNTIME_CONDA:
        pkg = env.conda(name)
        cuda = parse_cuda(pkg.version) if pkg else None
        if pkg and cuda:
            where = f"conda-meta {pkg.name}-{pkg.version}-{pkg.build}"
            out.append(CudaNeed(f"{name} {pkg.version}", cuda[0], cuda[1], where, "cudart", name))
    for name in RUNTIME_DISTS:
        dist = env.dist(name)
        cuda = parse_cuda(dist.version) if dist else None
        if dist and cuda:
            where = f"{dist.path.name}"
            out.append(CudaNeed(f"{dist.name} {dist.version}", cuda[0], cuda[1], where, "cudart",
                                dist.name))  # fmt: skip
    root = torch_root(env)
    torch_cuda, why = read_torch_cuda_or_why(root) if root else (None, "")
    cuda = parse_cuda(torch_cuda or "")
    owner = "pytorch" if env.conda("pytorch") else "torch"
    if root is not None and why:  # a FIFO or device at version.py: unknown, not CPU-only
        version = env.version_of("torch") or "?"
        where = str(root / "version.py")
        out.append(CudaNeed(f"torch {version}", 0, None, where, "torch", owner, error=why))
    elif root is not None and cuda:
        version = env.version_of("torch") or "?"
        out.append(CudaNeed(f"torch {version}", cuda[0], cuda[1], "torch/version.py", "torch",
                            owner))  # fmt: skip
    prefixes = [str(p) for p in site]
    for ext in extensions:
        if ext.error:
            continue
        isas = ext.isas
        built = cuda_of_isa(tuple(int(p) for p in isas[-1].split("."))) if isas else None
        if ext.cudart is not None:
            major, minor = ext.cudart, built[1] if built and built[0] == ext.cudart else None
            where = f"NEEDED libcudart.so.{ext.cudart}"
        elif built is not None:  # no libcudart.so.N: cudart linked in, of the CUDA that built it
            major, minor = built
            where = "no libcudart.so.N in NEEDED (the CUDA runtime linked statically)"
        else:
            continue
        if isas:
            where += f"; PTX ISA {isas[-1]} in its fatbin" + (
                f" (written by CUDA {built[0]}.{built[1]})" if built else ""
            )
        name = _label(ext.path, prefixes)
        out.append(CudaNeed(name, major, minor, where, "extension", _owner(name)))
    return out


def _label(path: str, prefixes: list[str]) -> str:
    for sp in prefixes:
        if path.startswith(sp.rstrip("/") + "/"):
            return path[len(sp.rstrip("/")) + 1 :]
    return path


def _owner(label: str) -> str:
    top = label.split("/", 1)[0]
    return "flash-attn" if top.startswith("flash_attn") else top


def label(path: str, site: Iterable[Path]) -> str:
    """``vllm/_C.abi3.so`` for a file under one of the env's site-packages."""
    return _label(path, [str(p) for p in site])


@dataclass
class DriverSources:
    """Everything the driver checks read, gathered by the plugin (a fact, not a verdict)."""

    option: str | None = None  # --cuda-driver as given
    node: NodeDriver = field(default_factory=NodeDriver)
    libcuda: list[Libcuda] = field(default_factory=list)  # loader order: [0] is taken
    compat_packages: list[str] = field(default_factory=list)
