"""The CUDA toolkit inside an env: where nvcc, headers and libraries are, what nvcc says of
itself, and why the env needs an nvcc at all.

Real failures these facts serve (seeds 000/001/004): ``cudatoolkit-dev`` gave no nvcc, so
builds silently used ``/usr/local/cuda``; ``cuda-nvcc`` alone lacked ``CUDA::cuda_driver``,
nvrtc and ``CUDA::nvToolsExt``; ``CUDA_HOME`` pointed at ``targets/x86_64-linux`` (headers,
but no ``bin/nvcc``); a CUDA 12.4 toolkit for an RTX 5090.

:func:`read_toolkit` reads the facts (files, conda-meta, one ``nvcc --version``,
``--list-gpu-arch`` and ``-v`` run per nvcc path, cached), everything the ``cuda.*`` checks
(:mod:`pytest_vllm_env.checks.cuda`) ask included: which of the env's libraries exist, what
``CUDA_HOME``/``CUDA_PATH`` and ``LD_LIBRARY_PATH`` hold, the ``python`` the activated PATH
finds, where NVTX is. :func:`ptxas_runs` is the real ptxas run behind ``cuda.arch-ptxas``.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_vllm_env import defaults, proc
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.binaries import torch_root
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.static_tools import nvcc_from_files
from pytest_vllm_env.readers.torch_version import read_torch_cuda_or_why
from pytest_vllm_env.tables.archs import Arch
from pytest_vllm_env.tables.cuda_libs import COMPONENTS, CUDA_PACKAGES, HEADERS, TARGET_LIBS

TARGETS = "targets/x86_64-linux"
NVCC_TIMEOUT = defaults.CUDA_TOOL_TIMEOUT
# Where a CUDA_HOME/CUDA_PATH must hold nvcc and cuda.h: conda-forge keeps the headers in
# targets/x86_64-linux/include, where the env's nvcc.profile points nvcc; either place
# serves torch's and vLLM's builds.
HOME_FILES = ("bin/nvcc", "include/cuda.h", f"{TARGETS}/include/cuda.h")


@dataclass(frozen=True)
class NvccRun:
    """What one nvcc said; JSON-able so it can be cached per nvcc path."""

    path: str
    ok: bool
    version: str | None = None  # "12.8.93"
    problem: str = ""  # how --version failed: not executable, timed out, no version line
    gpu_archs: tuple[str, ...] = ()  # "compute_120" ... from --list-gpu-arch
    top: str | None = None  # "#$ TOP=" from nvcc -v: what CMake takes as the toolkit root
    includes: tuple[str, ...] = ()  # -I dirs from nvcc -v (nvcc.profile INCLUDES)
    libraries: tuple[str, ...] = ()  # -L dirs from nvcc -v (nvcc.profile LIBRARIES)
    # --vllm-static: why it was not run; ``version`` then comes from the env's files
    # (facts/static_tools.py), and ``version_from`` says which
    not_run: str = ""
    version_from: str = ""
    timed_out: float = 0.0  # killed after this many seconds (--cuda-tool-timeout); 0: it was not

    @property
    def major_minor(self) -> str | None:
        return ".".join(self.version.split(".")[:2]) if self.version else None

    @property
    def known(self) -> bool:
        """Its version is known: it ran, or (not run: --vllm-static) the files say it."""
        return bool(self.version) and (self.ok or bool(self.not_run))

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NvccRun:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class LdEntry:
    """One ``LD_LIBRARY_PATH`` entry: whether it is the env's own lib dir, and whether it
    holds a ``libcudart.so`` (another CUDA's runtime, when it is not the env's)."""

    path: str
    own: bool
    cudart: bool


@dataclass
class ToolkitFacts:
    """The CUDA toolkit as installed in (or missing from) one env."""

    prefix: Path
    nvcc_in_env: list[Path]  # bin/nvcc and targets/.../bin/nvcc that exist
    nvcc_on_path: Path | None  # what the activated PATH finds
    nvcc: NvccRun | None  # the run of nvcc_on_path if in the env, else of the env's own
    packages: dict[str, str]  # cuda-* conda package -> version
    broken_records: list[str]  # conda-meta records that did not parse
    include_dirs: list[Path]
    lib_dirs: list[Path]
    headers: dict[str, Path]  # "cuda.h" -> first dir holding it
    libraries: dict[str, list[Path]]  # "libcudart.so" -> every file of that name (or .so.N)
    dangling: list[Path]  # symlinks in lib dirs pointing nowhere
    ptxas: Path | None
    environ: dict[str, str] = field(repr=False, default_factory=dict)
    torch_cuda: str | None = None  # torch/version.py's cuda: what a fix must keep (cu118 torch)
    torch_cuda_error: str = ""  # torch/version.py there and unreadable (a FIFO): unknown CUDA
    # what the checks ask of the files above, read with them (a check reads no file)
    present: frozenset[Path] = frozenset()  # the entries of ``libraries`` whose target exists
    in_lib_dirs: dict[str, Path] = field(default_factory=dict)  # "libcublas.so" -> first dir's
    dangling_to: dict[Path, str] = field(default_factory=dict)  # dangling symlink -> its target
    on_path_in_env: bool = False  # nvcc_on_path is the env's (symlinks resolved)
    owned: bool = False  # the env means its own nvcc (:func:`owns_toolkit`)
    home_files: dict[str, frozenset[str]] = field(default_factory=dict)  # CUDA_HOME -> HOME_FILES
    ld_library_path: list[LdEntry] = field(default_factory=list)
    python_on_path: Path | None = None  # the `python` the activated PATH finds
    python_is_env: bool = False  # ... and it is the env's interpreter
    runtime_in_targets: bool = False  # targets/x86_64-linux/include/cuda_runtime.h exists
    nvtx_header: Path | None = None  # an nvToolsExt.h in an include/ dir (toolkit or PyPI's)
    nvtx_outside: list[str] = field(default_factory=list)  # PyPI's nvidia/nvtx files
    # the env read (for an nvcc that was not run: its version is read from the env's files)
    env: Any = field(default=None, repr=False, compare=False)

    @property
    def version(self) -> str | None:
        return self.nvcc.version if self.nvcc and self.nvcc.known else None

    def unversioned(self, name: str) -> Path | None:
        """The ``libX.so`` CMake can find (a symlink whose target exists counts)."""
        for path in self.libraries.get(name, []):
            if path.name == name and path in self.present:
                return path
        return None


def read_toolkit(
    env: PixiEnv,
    cached: Callable[[str, Callable[[], Any], Sequence[str]], Any] | None = None,
    *,
    timeout: float = NVCC_TIMEOUT,
) -> ToolkitFacts:
    """Read the env's toolkit; ``cached(name, compute, deps)`` is ``vllm_fact_cache.get``."""
    prefix = env.prefix
    environ = env.environ()
    nvcc_in_env = [p for p in (prefix / "bin/nvcc", prefix / TARGETS / "bin/nvcc") if _lexists(p)]
    on_path = proc.which("nvcc", environ.get("PATH"))
    on_path_in_env = bool(on_path and inside(on_path, prefix))
    subject = on_path if on_path_in_env else None
    subject = subject or (nvcc_in_env[0] if nvcc_in_env else on_path)
    nvcc = None
    if subject is not None:

        def compute() -> dict[str, Any]:
            return run_nvcc(subject, environ, timeout).to_json()

        key = f"nvcc-{subject}"
        data = cached(key, compute, [str(subject)]) if cached else compute()
        nvcc = NvccRun.from_json(data)
        if nvcc.not_run:  # --vllm-static: what the env's files say of it
            nvcc = dataclasses.replace(nvcc, **nvcc_from_files(env, subject))
    packages = {n: env.conda_packages[n].version for n in CUDA_PACKAGES if n in env.conda_packages}
    broken = [str(p.path) for p in env.problems if p.path.parent.name == "conda-meta"]
    include_dirs = [d for d in (prefix / "include", prefix / TARGETS / "include") if d.is_dir()]
    lib_dirs = [
        d
        for d in (
            prefix / "lib",
            prefix / "lib64",
            prefix / "lib/stubs",
            prefix / TARGETS / "lib",
            prefix / TARGETS / "lib/stubs",
        )
        if d.is_dir()
    ]
    headers: dict[str, Path] = {}
    for name in HEADERS:
        for d in include_dirs:
            if (d / name).is_file():
                headers.setdefault(name, d)
    libraries: dict[str, list[Path]] = {}
    dangling: list[Path] = []
    for d in lib_dirs:
        try:
            entries = sorted(d.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.is_symlink() and not entry.exists():
                dangling.append(entry)
            for lib, _pkg in COMPONENTS.values():
                if entry.name == lib or entry.name.startswith(lib + "."):
                    libraries.setdefault(lib, []).append(entry)
    ptxas = next((p for p in (prefix / "bin/ptxas",) if p.exists()), None)
    python = proc.which("python", environ.get("PATH"))
    torch_cuda, torch_cuda_error = _torch_cuda(env)
    facts = ToolkitFacts(
        prefix=prefix,
        nvcc_in_env=nvcc_in_env,
        nvcc_on_path=on_path,
        nvcc=nvcc,
        packages=packages,
        broken_records=broken,
        include_dirs=include_dirs,
        lib_dirs=lib_dirs,
        headers=headers,
        libraries=libraries,
        dangling=dangling,
        ptxas=ptxas,
        environ=environ,
        torch_cuda=torch_cuda,
        torch_cuda_error=torch_cuda_error,
        present=frozenset(p for found in libraries.values() for p in found if p.exists()),
        in_lib_dirs=_in_lib_dirs(lib_dirs),
        dangling_to={p: os.readlink(p) for p in dangling},
        on_path_in_env=on_path_in_env,
        home_files=_home_files(environ),
        ld_library_path=_ld_library_path(environ, prefix),
        python_on_path=python,
        python_is_env=python is not None and _same_python(python, env),
        runtime_in_targets=(prefix / TARGETS / "include" / "cuda_runtime.h").is_file(),
        nvtx_outside=_nvtx_outside(env),
        env=env,
    )
    facts.nvtx_header = _nvtoolsext_header(env, facts)
    facts.owned = owns_toolkit(env, facts)
    return facts


def _torch_cuda(env: PixiEnv) -> tuple[str | None, str]:
    """torch's CUDA, and why ``torch/version.py`` could not be read ("" when it was or torch
    is absent)."""
    root = torch_root(env)
    return read_torch_cuda_or_why(root) if root else (None, "")


def _in_lib_dirs(lib_dirs: list[Path]) -> dict[str, Path]:
    """The first of the env's lib dirs holding each ``CUDA::`` target's unversioned library
    (cuBLAS and the others beyond :data:`COMPONENTS`, which torch's CMake may link)."""
    found: dict[str, Path] = {}
    for names in TARGET_LIBS.values():
        lib = f"lib{names[0]}.so"
        for d in lib_dirs:
            candidate = d / lib
            if os.path.exists(candidate):  # a dir of LD_LIBRARY_PATH may be closed to us
                found[lib] = candidate
                break
    return found


def _home_files(environ: Mapping[str, str]) -> dict[str, frozenset[str]]:
    """Which of :data:`HOME_FILES` ``CUDA_HOME`` and ``CUDA_PATH`` hold, when set."""
    out: dict[str, frozenset[str]] = {}
    for var in ("CUDA_HOME", "CUDA_PATH"):
        value = environ.get(var)
        if value:
            out[var] = frozenset(
                rel for rel in HOME_FILES if os.path.exists(os.path.join(value, rel))
            )
    return out


def _ld_library_path(environ: Mapping[str, str], prefix: Path) -> list[LdEntry]:
    """``LD_LIBRARY_PATH``'s entries: the env's own lib dirs, and which hold a libcudart."""
    own = {str(prefix / "lib"), str(prefix / TARGETS / "lib")}
    entries = [e for e in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if e]
    out = []
    for e in entries:
        mine = os.path.normpath(e) in own
        cudart = not mine and (
            # an entry we may not look into is passed over, as the loader does
            os.path.exists(os.path.join(e, "libcudart.so"))
            or bool(glob.glob(os.path.join(glob.escape(e), "libcudart.so.*")))
        )
        out.append(LdEntry(e, mine, cudart))
    return out


def _nvtoolsext_header(env: PixiEnv, t: ToolkitFacts) -> Path | None:
    """An ``nvToolsExt.h`` the env has in an ``include/`` dir (the toolkit's, or PyPI's
    ``site-packages/nvidia/nvtx/include``), for ``NVTOOLSEXT_PATH``."""
    candidates = [d / "nvToolsExt.h" for d in t.include_dirs]
    candidates += [sp / "nvidia/nvtx/include/nvToolsExt.h" for sp in env.site_packages]
    return next((c for c in candidates if os.path.isfile(c) and c.parent.name == "include"), None)


def _nvtx_outside(env: PixiEnv) -> list[str]:
    """PyPI's nvidia-nvtx-cu12 layout (site-packages/nvidia/nvtx): seed 001's only NVTX."""
    found = []
    for sp in env.site_packages:
        for rel in ("nvidia/nvtx/include/nvToolsExt.h", "nvidia/nvtx/lib/libnvToolsExt.so.1"):
            if (sp / rel).exists():
                found.append(str(sp / rel))
    return found


def run_nvcc(nvcc: Path, environ: Mapping[str, str], timeout: float = NVCC_TIMEOUT) -> NvccRun:
    """``nvcc --version``, ``--list-gpu-arch`` and ``-v`` (what CMake runs), each bounded."""
    result = proc.run([nvcc, "--version"], env=environ, timeout=timeout)
    if result.not_run:
        return NvccRun(str(nvcc), False, not_run=result.not_run)
    if result.timed_out:
        return NvccRun(str(nvcc), False, problem=result.describe(), timed_out=timeout)
    if not result.ok:
        return NvccRun(str(nvcc), False, problem=result.describe())
    match = re.search(r"release \S+ V(\d+\.\d+\.\d+)", result.stdout) or re.search(
        r"\bV(\d+\.\d+\.\d+)", result.stdout
    )
    if not match:
        return NvccRun(
            str(nvcc), False, problem=f"no version in `nvcc --version`: {result.output[:200]}"
        )
    archs: tuple[str, ...] = ()
    listed = proc.run([nvcc, "--list-gpu-arch"], env=environ, timeout=timeout)
    if listed.ok:
        archs = tuple(w for w in listed.stdout.split() if w.startswith("compute_"))
    # CMake's FindCUDAToolkit runs exactly this to find the toolkit root (#$ TOP=) and, from
    # CMake 3.28, the include and library dirs nvcc itself uses.
    verbose = proc.run([nvcc, "-v", "__cmake_determine_cuda"], env=environ, timeout=timeout)
    text = verbose.output
    top = re.search(r"^#\$ TOP=(.*)$", text, re.M)
    includes = re.search(r"^#\$ INCLUDES=(.*)$", text, re.M)
    libraries = re.search(r"^#\$ LIBRARIES=(.*)$", text, re.M)
    return NvccRun(
        str(nvcc),
        True,
        match.group(1),
        gpu_archs=archs,
        top=os.path.normpath(top.group(1)) if top else None,
        includes=tuple(_flag_dirs(includes.group(1), "-I")) if includes else (),
        libraries=tuple(_flag_dirs(libraries.group(1), "-L")) if libraries else (),
    )


def _flag_dirs(text: str, flag: str) -> list[str]:
    return [os.path.normpath(m) for m in re.findall(rf'"?{flag}([^"\s]+)"?', text)]


# -- run or build: does this env need nvcc? ---------------------------------------------------
# conda-forge packages that say the env is meant to build CUDA code (seed 000: cudatoolkit-dev
# was installed for a vLLM source build that then used /usr/local/cuda).
BUILD_PACKAGES = (
    "cuda-nvcc",
    "cuda-nvcc-tools",
    "cuda-toolkit",
    "cuda-compiler",
    "cudatoolkit-dev",
    "cuda-cudart-dev",
    "cuda-nvrtc-dev",
    "cuda-nvtx-dev",
    "cuda-driver-dev",
)
# Python packages that compile CUDA kernels with nvcc while the env runs: FlashInfer builds
# every kernel at first use unless flashinfer-jit-cache holds them pre-built; DeepGEMM
# JIT-compiles its GEMMs. vLLM works without them on most paths: a missing nvcc is a warning.
JIT_PACKAGES: dict[str, tuple[str, str | None]] = {
    "flashinfer-python": ("compiles its kernels with nvcc at first use", "flashinfer-jit-cache"),
    "deep-gemm": ("JIT-compiles its GEMM kernels with nvcc", None),
}


@dataclass(frozen=True)
class NvccNeed:
    """Why this env needs its own nvcc: ``required`` reasons (a source build, the build tier,
    CUDA build packages) make a missing nvcc a failure; ``jit`` ones (a package compiling
    kernels while vLLM runs) a warning; none: the env only runs prebuilt wheels."""

    required: tuple[str, ...] = ()
    jit: tuple[str, ...] = ()


def nvcc_need(env: PixiEnv, asked: Sequence[str] = ()) -> NvccNeed:
    """What the env holds and what the user ``asked`` (``-m build``, ``--vllm-source``,
    ``--vllm-build-log``, each already phrased as a reason) say about needing nvcc."""
    required = list(asked)
    held = [p for p in BUILD_PACKAGES if p in env.conda_packages]
    if held:
        required.append(f"the env holds {', '.join(held)}: it is meant to build CUDA code")
    declared = fixes.declared_in(env, fixes.Package("cuda-nvcc"))
    if declared and "cuda-nvcc" not in held:
        required.append(f"cuda-nvcc is declared in {declared}")
    jit = []
    for name, (does, prebuilt) in JIT_PACKAGES.items():
        version = env.version_of(name)
        if version and not (prebuilt and env.version_of(prebuilt)):
            jit.append(f"{name} {version} {does}")
    return NvccNeed(tuple(required), tuple(jit))


def owns_toolkit(env: PixiEnv, t: ToolkitFacts) -> bool:
    """The env means its own nvcc: it has one, or (a conda or Pixi env) it holds CUDA build
    packages or declares cuda-nvcc. A pip venv's toolkit is the system's."""
    if t.nvcc_in_env:
        return True
    if not env.is_conda:
        return False
    held = any(p in env.conda_packages for p in BUILD_PACKAGES)
    return held or fixes.declared_in(env, fixes.Package("cuda-nvcc")) is not None


def probe_ptx(arch: Arch) -> str:
    """A kernel that does nothing. PTX ISA 7.8 (CUDA 11.8) is read by every ptxas from 11.8
    on; ``.target`` may not be above ``-arch``, so it is the arch itself below sm_75."""
    target = f"sm_{min(arch.number, 75)}"
    return (
        f".version 7.8\n.target {target}\n.address_size 64\n"
        ".visible .entry vllm_env_probe()\n{\n  ret;\n}\n"
    )


def ptxas_accepts(
    ptxas: Path, arch: Arch, workdir: Path, environ: Mapping[str, str]
) -> proc.ProcResult:
    """Assemble a tiny PTX for ``arch`` with the env's real ptxas."""
    src = workdir / f"probe_{arch.sm}.ptx"
    src.write_text(probe_ptx(arch))
    return proc.run(
        [ptxas, f"-arch={arch.sm}", src, "-o", workdir / f"probe_{arch.sm}.cubin"],
        env=environ,
        timeout=NVCC_TIMEOUT,
    )


@dataclass(frozen=True)
class PtxasRun:
    """Whether the env's ptxas assembled a tiny PTX for one arch, and how it ended."""

    arch: Arch
    ok: bool
    how: str  # the run's one-line description (its last line of output when it failed)
    not_run: str = ""  # --vllm-static: why it was not run
    timed_out: bool = False  # killed at the timeout: says nothing of the arch


def ptxas_runs(t: ToolkitFacts, archs: Sequence[Arch], workdir: Path) -> list[PtxasRun]:
    """The real probe behind ``cuda.arch-supported``: the env's ptxas assembles for each arch
    (nothing run without ptxas)."""
    if t.ptxas is None:
        return []
    runs = []
    for arch in archs:
        result = ptxas_accepts(t.ptxas, arch, workdir, t.environ)
        runs.append(PtxasRun(arch, result.ok, result.describe(), result.not_run, result.timed_out))
    return runs


def inside(path: Path, prefix: Path) -> bool:
    """``path`` lies in ``prefix``, as written or with symlinks resolved."""
    try:
        return Path(os.path.abspath(path)).is_relative_to(prefix) or Path(
            os.path.realpath(path)
        ).is_relative_to(os.path.realpath(prefix))
    except OSError:
        return False


def _same_python(candidate: Path, env: PixiEnv) -> bool:
    if inside(candidate, env.prefix):
        return True
    try:
        return env.python is not None and os.path.samefile(candidate, env.python)
    except OSError:
        return False


def _lexists(path: Path) -> bool:
    try:
        return os.path.lexists(path)
    except OSError:
        return False
