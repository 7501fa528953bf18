"""The CUDA toolkit inside an env: where nvcc, headers and libraries are, and whether a
vLLM or torch-extension build will find them.

Real failures these checks exist for (seeds 000/001/004): ``cudatoolkit-dev`` gave no nvcc,
so builds silently used ``/usr/local/cuda``; ``cuda-nvcc`` alone lacked
``CUDA::cuda_driver``, nvrtc and ``CUDA::nvToolsExt``; ``CUDA_HOME`` pointed at
``targets/x86_64-linux`` (headers, but no ``bin/nvcc``); a CUDA 12.4 toolkit for an RTX 5090.

:func:`read_toolkit` reads the facts (files, conda-meta, one ``nvcc --version``,
``--list-gpu-arch`` and ``-v`` run per nvcc path, cached); the other functions judge them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_vllm_env import defaults, proc
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped, warning
from pytest_vllm_env.tables.archs import Arch, parse_arch

TARGETS = "targets/x86_64-linux"
NVCC_TIMEOUT = defaults.CUDA_TOOL_TIMEOUT
# conda-forge packages whose versions must agree with nvcc (one CUDA major.minor).
CUDA_PACKAGES = (
    "cuda-version",
    "cuda-nvcc",
    "cuda-nvcc-tools",
    "cuda-toolkit",
    "cuda-cudart",
    "cuda-cudart-dev",
    "cuda-driver-dev",
    "cuda-nvrtc",
    "cuda-nvrtc-dev",
    "cuda-nvtx",
    "cuda-nvtx-dev",
    "cuda-cccl",
    "cuda-crt-dev",
    "cudatoolkit",
    "cudatoolkit-dev",
)
HEADERS = ("cuda.h", "cuda_runtime.h", "nvrtc.h", "nvToolsExt.h", "nvtx3/nvToolsExt.h")
# What CMake's FindCUDAToolkit turns into CUDA::<target>, and the conda-forge package that
# ships the unversioned link (find_library looks only for libX.so) or the stub.
COMPONENTS: dict[str, tuple[str, str]] = {
    "cudart": ("libcudart.so", "cuda-cudart-dev"),
    "cuda_driver": ("libcuda.so", "cuda-driver-dev"),
    "nvrtc": ("libnvrtc.so", "cuda-nvrtc-dev"),
    "nvToolsExt": ("libnvToolsExt.so", "cuda-nvtx-dev"),
}

# First CUDA release whose nvcc accepts each arch (NVIDIA's nvcc docs / release notes;
# measured with each release's ptxas `--help` list: 12.4.131 stops at sm_90a; 12.8.93 adds
# sm_100(a), sm_101(a), sm_120(a); 12.9.86 adds sm_103(a/f), sm_121(a/f) and every `f`
# (family) target; 13.0.88 renames sm_101 to sm_110, adds sm_88, drops everything below
# sm_75). ``None`` = still accepted.
ARCH_FIRST: dict[str, str] = {
    "5.0": "6.0", "5.2": "7.0", "5.3": "7.0", "6.0": "8.0", "6.1": "8.0", "6.2": "8.0",
    "7.0": "9.0", "7.2": "10.0", "7.5": "10.0", "8.0": "11.0", "8.6": "11.1",
    "8.7": "11.4", "8.9": "11.8", "9.0": "11.8", "9.0a": "12.0", "10.0": "12.8",
    "10.0a": "12.8", "10.1": "12.8", "10.1a": "12.8", "10.3": "12.9", "10.3a": "12.9",
    "11.0": "13.0", "11.0a": "13.0", "12.0": "12.8", "12.0a": "12.8", "12.1": "12.9",
    "12.1a": "12.9", "8.8": "13.0", "10.0f": "12.9", "10.1f": "12.9", "10.3f": "12.9",
    "11.0f": "13.0", "12.0f": "12.9", "12.1f": "12.9",
}  # fmt: skip
# Last CUDA major that still accepts an arch (CUDA 13.0 dropped everything below 7.5 and
# renamed 10.1 to 11.0).
ARCH_LAST_MAJOR: dict[str, int] = {
    **{cc: 12 for cc in ("5.0", "5.2", "5.3", "6.0", "6.1", "6.2", "7.0", "7.2", "10.1")},
    "10.1a": 12,
    "10.1f": 12,
}


def _ver(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def archs_of_toolkit(major_minor: str) -> list[Arch]:
    """The archs a CUDA ``major.minor`` nvcc accepts, from :data:`ARCH_FIRST`."""
    have = _ver(major_minor)[:2]
    result = []
    for cc, first in ARCH_FIRST.items():
        last = ARCH_LAST_MAJOR.get(cc)
        if _ver(first)[:2] <= have and (last is None or have[0] <= last):
            result.append(parse_arch(cc))
    return sorted(result)


def min_toolkit_for(arch: Arch) -> str | None:
    return ARCH_FIRST.get(arch.cc) or ARCH_FIRST.get(f"{arch.major}.{arch.minor}")


def is_known_arch(arch: Arch) -> bool:
    """An arch some CUDA release targets (:data:`ARCH_FIRST`); ``f`` (family) variants of the
    10.x and later archs count too (CUDA 12.9 added ``sm_100f``...)."""
    if arch.cc in ARCH_FIRST:
        return True
    return arch.suffix == "f" and arch.major >= 10 and f"{arch.major}.{arch.minor}" in ARCH_FIRST


def known_archs_text() -> str:
    """The archs :func:`is_known_arch` accepts, for usage errors."""
    return ", ".join(ARCH_FIRST)


# -- facts ----------------------------------------------------------------------------------
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

    @property
    def major_minor(self) -> str | None:
        return ".".join(self.version.split(".")[:2]) if self.version else None

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NvccRun:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


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

    @property
    def version(self) -> str | None:
        return self.nvcc.version if self.nvcc and self.nvcc.ok else None

    def unversioned(self, name: str) -> Path | None:
        """The ``libX.so`` CMake can find (a symlink whose target exists counts)."""
        for path in self.libraries.get(name, []):
            if path.name == name and path.exists():
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
    subject = on_path if on_path and _inside(on_path, prefix) else None
    subject = subject or (nvcc_in_env[0] if nvcc_in_env else on_path)
    nvcc = None
    if subject is not None:

        def compute() -> dict[str, Any]:
            return run_nvcc(subject, environ, timeout).to_json()

        key = f"nvcc-{subject}"
        data = cached(key, compute, [str(subject)]) if cached else compute()
        nvcc = NvccRun.from_json(data)
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
    return ToolkitFacts(
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
        torch_cuda=_torch_cuda(env),
    )


def _torch_cuda(env: PixiEnv) -> str | None:
    from pytest_vllm_env.checks.abi import read_torch_cuda, torch_root

    root = torch_root(env)
    return read_torch_cuda(root) if root else None


def run_nvcc(nvcc: Path, environ: Mapping[str, str], timeout: float = NVCC_TIMEOUT) -> NvccRun:
    """``nvcc --version``, ``--list-gpu-arch`` and ``-v`` (what CMake runs), each bounded."""
    result = proc.run([nvcc, "--version"], env=environ, timeout=timeout)
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


# -- judgements -----------------------------------------------------------------------------
def _wanted_mm(t: ToolkitFacts) -> str:
    """The CUDA a fix should pin: the env's cuda-version, else torch's own CUDA (a 12.8 nvcc
    next to a cu118 torch is a new mismatch: cuda.nvcc-torch; a venv's torch 2.11+cu130
    wants 13.0), else 12.8."""
    pinned = t.packages.get("cuda-version")
    if pinned:
        return ".".join(pinned.split(".")[:2])
    return ".".join(t.torch_cuda.split(".")[:2]) if t.torch_cuda else "12.8"


def _cuda_packages(mm: str | None, *names: str) -> list[fixes.Package]:
    return [fixes.Package(n, f"{mm}.*" if mm else "") for n in names]


def nvcc_in_env(
    env: PixiEnv,
    t: ToolkitFacts,
    need: NvccNeed | None = None,
    build: Any = None,
    cmake_version: str | None = None,
) -> Finding:
    """When the env needs nvcc (``need``; None: always), the nvcc a vLLM source build
    compiles with is there and is the one the env means. With ``build``
    (:class:`pytest_vllm_env.checks.cmake_nvcc.BuildNvcc`, the prediction of what setup.py and CMake
    pick) the verdict is :func:`pytest_vllm_env.checks.cmake_nvcc.judge`'s (F1.10); without it, nvcc
    must be inside the env and first on the activated PATH. An env that only runs prebuilt
    vLLM wheels passes without nvcc; one whose packages JIT-compile CUDA kernels gets a
    warning."""
    check = "cuda.nvcc-in-env"
    need = need or NvccNeed(required=("asked for",))
    mm = _wanted_mm(t)
    add = fixes.add(env, *_cuda_packages(mm, "cuda-nvcc", "cuda-version"))
    if not t.nvcc_in_env and not need.required:
        if need.jit:
            prebuilt = [
                pre
                for name, (_, pre) in JIT_PACKAGES.items()
                if pre and env.version_of(name) and not env.version_of(pre)
            ]
            using = (
                f": it would use the nvcc the activated PATH finds, {t.nvcc_on_path}, from "
                "outside the env (its CUDA must suit torch's)"
                if t.nvcc_on_path
                else ": those kernels fail at first use without it"
            )
            return warning(
                check,
                f"no nvcc in {t.prefix}/bin; {'; '.join(need.jit)}{using}",
                add + (f", or install {', '.join(prebuilt)} (pre-built kernels)" * bool(prebuilt)),
                jit=list(need.jit),
            )
        elsewhere = (
            f"; the activated PATH finds {t.nvcc_on_path}, which nothing here needs"
            if t.nvcc_on_path
            else ""
        )
        return passed(
            check,
            f"no nvcc in {t.prefix}/bin, and none needed: the env runs prebuilt wheels "
            "(no build tier, --vllm-source, --vllm-build-log, CUDA build packages or "
            f"JIT-compiling packages){elsewhere}",
        )
    if build is not None:
        from pytest_vllm_env.checks import cmake_nvcc  # it imports this module

        return cmake_nvcc.judge(
            env, t, build, need.required, own=owns_toolkit(env, t), cmake_version=cmake_version
        )
    if not t.nvcc_in_env:
        legacy = [p for p in ("cudatoolkit-dev", "cudatoolkit") if p in t.packages]
        why = (
            f"; {', '.join(legacy)} is installed but gives no nvcc in the env "
            "(cudatoolkit-dev downloads the toolkit outside conda's control)"
            if legacy
            else ""
        )
        outside = f"; the activated PATH finds {t.nvcc_on_path} instead" if t.nvcc_on_path else ""
        fix = add + (f" and remove {', '.join(legacy)}" if legacy else "")
        return failed(
            check,
            f"no nvcc in {t.prefix}/bin{why}{outside}",
            fix,
            searched=[str(t.prefix / "bin/nvcc"), str(t.prefix / TARGETS / "bin/nvcc")],
            nvcc_on_path=str(t.nvcc_on_path) if t.nvcc_on_path else None,
            needed_because=list(need.required),
        )
    if t.nvcc_on_path is None or not _inside(t.nvcc_on_path, t.prefix):
        first = t.nvcc_on_path or "nothing"
        return failed(
            check,
            f"nvcc is in the env ({t.nvcc_in_env[0]}) but the activated PATH finds {first} first",
            f"put {t.prefix}/bin first on PATH: remove the PATH override from "
            f"{fixes.activation_place(env)} (or the script that prepends another CUDA's bin)",
            path=t.environ.get("PATH", ""),
        )
    return passed(check, f"nvcc at {t.nvcc_on_path}, first on the activated PATH")


def nvcc_runs(env: PixiEnv, t: ToolkitFacts) -> Finding:
    """The env's nvcc answers ``--version`` in time (a broken or hanging nvcc fails builds
    late, after minutes of CMake)."""
    check = "cuda.nvcc-runs"
    if t.nvcc is None:
        return skipped(check, f"no nvcc in {t.prefix} or on the activated PATH")
    if not t.nvcc.ok:
        return error(
            check,
            f"{t.nvcc.path} does not work: {t.nvcc.problem}",
            f"reinstall it: `pixi reinstall cuda-nvcc` (or `pixi clean && pixi install`); "
            f"check that {t.nvcc.path} is an executable nvcc",
        )
    return passed(check, f"{t.nvcc.path} is CUDA {t.nvcc.version}", archs=list(t.nvcc.gpu_archs))


def version_consistent(env: PixiEnv, t: ToolkitFacts) -> Finding:
    """nvcc's version equals what conda-meta pins; all cuda-* packages share a major.minor."""
    check = "cuda.version-consistent"
    if t.broken_records:
        return error(
            check,
            "conda-meta records that do not parse: " + ", ".join(t.broken_records),
            "recreate the env: `pixi clean && pixi install`",
        )
    if not t.packages:
        return skipped(check, f"no CUDA conda packages in {t.prefix}/conda-meta")
    families: dict[str, list[str]] = {}
    for name, version in t.packages.items():
        if name in ("cudatoolkit-dev",):
            continue
        mm = ".".join(version.split(".")[:2])
        families.setdefault(mm, []).append(f"{name} {version}")
    nvcc_mm = t.nvcc.major_minor if t.nvcc and t.nvcc.ok else None
    pinned = t.packages.get("cuda-version")
    pinned_mm = ".".join(pinned.split(".")[:2]) if pinned else None
    torch_mm = ".".join(t.torch_cuda.split(".")[:2]) if t.torch_cuda else None
    # torch's CUDA breaks the tie: it cannot follow a pin, the toolkit can (F5.6: nvcc 12.9
    # beside cudatoolkit 11.8 and a cu118 torch wants 11.8, not 12.9)
    common = max(families, key=lambda k: len(families[k])) if families else None
    want = pinned_mm or (torch_mm if torch_mm in families else None) or common
    if nvcc_mm and families and nvcc_mm not in families and not pinned_mm:
        return failed(
            check,
            f"nvcc {t.nvcc.path} is CUDA {t.nvcc.version} but the env's CUDA packages are "
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(families.items()))
            + (f" (torch is built with CUDA {t.torch_cuda})" if t.torch_cuda else ""),
            fixes.add(env, *_cuda_packages(want, "cuda-version", "cuda-nvcc"), verb="pin")
            + ": one CUDA for nvcc and the cuda-* packages, and make that nvcc the one builds "
            "use (CUDA_HOME)",
            packages=[f"{k} {v}" for k, v in t.packages.items()],
            nvcc=t.nvcc.path,
        )
    want = want if pinned_mm else (nvcc_mm or want)
    if nvcc_mm and want and nvcc_mm != want:
        return failed(
            check,
            f"nvcc {t.nvcc.path} is CUDA {t.nvcc.version} but cuda-version pins {pinned}",
            fixes.add(env, *_cuda_packages(want, "cuda-version", "cuda-nvcc"), verb="pin")
            + ": one CUDA for nvcc and the cuda-* packages",
            packages=[f"{k} {v}" for k, v in t.packages.items()],
        )
    if len(families) > 1:
        others = {k: v for k, v in families.items() if k != want}
        return failed(
            check,
            f"CUDA packages from {len(families)} releases: "
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(families.items())),
            fixes.add(env, *_cuda_packages(want, "cuda-version"), verb="pin")
            + " so that "
            + ", ".join(n.split()[0] for v in others.values() for n in v)
            + f" follow CUDA {want}",
        )
    return passed(
        check, f"nvcc {t.version or '-'} and {len(t.packages)} CUDA packages agree on {want}"
    )


def cmake_components(
    env: PixiEnv, t: ToolkitFacts, torch_needs: Mapping[str, str] | None = None
) -> Finding:
    """The libraries FindCUDAToolkit turns into the ``CUDA::`` targets a vLLM build links
    exist as ``libX.so``: ``cudart`` and ``cuda_driver`` (vLLM's CUDA extensions), ``nvrtc``
    (``${CUDA_NVRTC_LIB}`` in torch's ``TORCH_LIBRARIES``), and whatever the env's torch CMake
    links beyond them (``torch_needs``: torch 2.1's ``torch_cuda`` pulls cuBLAS, cuFFT, cuRAND).
    NVTX is left to ``nvtx.cmake-target``: whether it is needed depends on torch's version, and
    from CUDA 12.9 no package ships ``libnvToolsExt.so`` at all."""
    check = "cuda.cmake-components"
    if not t.nvcc_in_env and not t.headers:
        return skipped(check, f"no CUDA toolkit in {t.prefix} (see cuda.nvcc-in-env)")
    from pytest_vllm_env.checks.torch_cmake import (  # torch_cmake imports this module
        TARGET_LIBS,
        TARGET_PACKAGES,
    )

    wanted: dict[str, str] = {"cudart": "vLLM", "cuda_driver": "vLLM", "nvrtc": "torch"}
    for target, via in sorted((torch_needs or {}).items(), key=lambda kv: kv[0].lower()):
        name = target.removeprefix("CUDA::")
        if name != "nvToolsExt" and name in TARGET_LIBS:
            wanted.setdefault(name, via or "torch")
    missing: list[str] = []
    packages: list[str] = []
    evidence: dict[str, Any] = {}
    if "cuda_runtime.h" not in t.headers:
        missing.append("cuda_runtime.h (CUDAToolkit_INCLUDE_DIR)")
        packages.append("cuda-cudart-dev")
    for target, via in wanted.items():
        lib = f"lib{TARGET_LIBS[target][0]}.so"
        package = TARGET_PACKAGES.get(target, "cuda-toolkit")
        found = t.unversioned(lib) or _unversioned_in(t, lib)
        if found:
            evidence[f"CUDA::{target}"] = str(found)
            continue
        versioned = [str(p) for p in t.libraries.get(lib, []) if p.exists()]
        note = f" (only {', '.join(versioned)}: find_library needs {lib})" if versioned else ""
        need = f", needed by {via}" if via not in ("vLLM", "torch") else ""
        missing.append(f"CUDA::{target} ({lib}{note}{need})")
        packages.append(package)
    evidence["nvToolsExt"] = "judged by nvtx.cmake-target"
    if t.dangling:
        evidence["dangling_symlinks"] = [f"{p} -> {os.readlink(p)}" for p in t.dangling]
    if missing:
        mm = t.version and ".".join(t.version.split(".")[:2])
        return failed(
            check,
            "CMake's FindCUDAToolkit will not create: " + "; ".join(missing),
            fixes.add(env, *_cuda_packages(mm, *sorted(set(packages))))
            + ", or `cuda-toolkit` for all of them",
            searched=[str(d) for d in t.lib_dirs],
            **evidence,
        )
    if t.dangling:
        return error(
            check,
            f"dangling symlinks in the toolkit's lib dirs: {', '.join(str(p) for p in t.dangling)}",
            "reinstall the package that owns them (`pixi reinstall <pkg>`, or `pixi clean && "
            "pixi install`)",
            **evidence,
        )
    return passed(
        check, f"{', '.join(sorted(wanted))} present (NVTX: nvtx.cmake-target)", **evidence
    )


def _unversioned_in(t: ToolkitFacts, lib: str) -> Path | None:
    """Libraries beyond :data:`COMPONENTS` (cuBLAS ...), looked up in the env's lib dirs."""
    for d in t.lib_dirs:
        candidate = d / lib
        if candidate.exists():
            return candidate
    return None


def cuda_home(env: PixiEnv, t: ToolkitFacts) -> Finding:
    """CUDA_HOME/CUDA_PATH after activation hold bin/nvcc and include/cuda.h: what
    torch.utils.cpp_extension and vLLM's setup.py take as the toolkit."""
    check = "cuda.cuda-home"
    # a venv's toolkit is the system's; a conda or Pixi env's is the env itself
    home = "/usr/local/cuda" if fixes.kind_of(env) == "venv" else "${CONDA_PREFIX}"
    set_home = fixes.set_var(env, "CUDA_HOME", home)
    problems: list[str] = []
    checked: dict[str, str] = {}
    for var in ("CUDA_HOME", "CUDA_PATH"):
        value = t.environ.get(var)
        if not value:
            continue
        checked[var] = value
        root = Path(value)
        lacks = [rel for rel in ("bin/nvcc",) if not (root / rel).exists()]
        # conda-forge keeps the headers in targets/x86_64-linux/include, where the env's
        # nvcc.profile points nvcc; either place serves torch's and vLLM's builds.
        if not any((root / d / "cuda.h").exists() for d in ("include", f"{TARGETS}/include")):
            lacks.append("include/cuda.h")
        if lacks:
            where = env.activation.sources.get(var, "the outer environment")
            problems.append(f"{var}={value} (set by {where}) has no {' or '.join(lacks)}")
    if problems:
        return failed(
            check,
            "; ".join(problems),
            f"{set_home} (nvcc is in bin/, and nvcc finds the targets/x86_64-linux headers itself)",
            **checked,
        )
    if not checked:
        if not t.nvcc_in_env:
            return skipped(check, f"no CUDA_HOME/CUDA_PATH and no nvcc in {t.prefix}")
        # torch falls back to `which nvcc`/..; correct only while PATH finds the env's nvcc.
        if t.nvcc_on_path and _inside(t.nvcc_on_path, t.prefix):
            return passed(check, "CUDA_HOME unset; torch falls back to the env's nvcc on PATH")
        return failed(
            check,
            "CUDA_HOME and CUDA_PATH are unset and PATH does not find the env's nvcc",
            set_home,
        )
    return passed(check, ", ".join(f"{k}={v}" for k, v in checked.items()) + " hold a toolkit")


def ld_library_path(env: PixiEnv, t: ToolkitFacts) -> Finding:
    """LD_LIBRARY_PATH, when set, holds the env's lib dir before any other CUDA's."""
    check = "cuda.ld-library-path"
    value = t.environ.get("LD_LIBRARY_PATH", "")
    own = {str(t.prefix / "lib"), str(t.prefix / TARGETS / "lib")}
    entries = [e for e in value.split(os.pathsep) if e]
    if not entries:
        return passed(check, "LD_LIBRARY_PATH unset: the env's RPATHs find its libraries")
    first_own = next((i for i, e in enumerate(entries) if os.path.normpath(e) in own), None)
    foreign = [
        (i, e)
        for i, e in enumerate(entries)
        if os.path.normpath(e) not in own
        and (Path(e) / "libcudart.so").exists() | any(Path(e).glob("libcudart.so.*"))
    ]
    if foreign and (first_own is None or foreign[0][0] < first_own):
        where = env.activation.sources.get("LD_LIBRARY_PATH", "the outer environment")
        return failed(
            check,
            f"LD_LIBRARY_PATH (set by {where}) puts {foreign[0][1]}, another CUDA's libraries, "
            f"before {t.prefix}/lib",
            fixes.set_var(env, "LD_LIBRARY_PATH", "${CONDA_PREFIX}/lib:${LD_LIBRARY_PATH}")
            + f", or drop {foreign[0][1]}",
            LD_LIBRARY_PATH=value,
        )
    return passed(check, f"LD_LIBRARY_PATH holds no other CUDA ahead of {t.prefix}/lib")


def arch_supported(
    env: PixiEnv, t: ToolkitFacts, archs: Sequence[Arch], source: str
) -> list[Finding]:
    """nvcc can generate code for each target arch (12.0 needs CUDA >= 12.8)."""
    check = "cuda.arch-supported"
    if not archs:
        return [
            skipped(
                check, "no target arch: pass --cuda-arch (e.g. 12.0) or set TORCH_CUDA_ARCH_LIST"
            )
        ]
    if t.nvcc is None or not t.nvcc.ok:
        return [skipped(check, f"no working nvcc in {t.prefix} (see cuda.nvcc-in-env)")]
    listed = {a.removeprefix("compute_") for a in t.nvcc.gpu_archs}
    how = "`nvcc --list-gpu-arch`" if listed else "the arch table (nvcc has no --list-gpu-arch)"
    known = listed or {f"{a.number}" for a in archs_of_toolkit(t.nvcc.major_minor or "0.0")}
    findings = []
    for arch in archs:
        need = min_toolkit_for(arch)
        # --list-gpu-arch names no a/f variants: 12.8 lists compute_120 yet refuses 12.0f
        too_old = bool(arch.suffix and need and _ver(need) > _ver(t.version or "0"))
        if str(arch.number) in known and not too_old:
            findings.append(passed(check, f"CUDA {t.version} can target {arch.sm} ({how})"))
            continue
        last = ARCH_LAST_MAJOR.get(arch.cc)
        if need is None:  # from TORCH_CUDA_ARCH_LIST (--cuda-arch refuses unknown archs)
            findings.append(
                failed(
                    check,
                    f"{arch.sm} ({arch.cc}, from {source}) is not an arch any CUDA release targets",
                    f"drop {arch.cc} from {source}; known archs: {known_archs_text()}",
                    decided_by=how,
                    nvcc=t.nvcc.path,
                )
            )
            continue
        if _ver(need) > _ver(t.version or "0"):
            fix = fixes.add(env, *_cuda_packages(need, "cuda-version", "cuda-nvcc"), verb="set")
        elif last is not None and _ver(t.version or "0")[0] > last:
            fix = (
                f"drop {arch.cc} from {source}: CUDA {t.version} no longer targets it; "
                f"use CUDA {last}.x"
            )
        else:
            fix = (
                f"drop {arch.cc} from {source}, or reinstall the toolkit: CUDA {t.version} "
                f"should list {arch.compute} in `nvcc --list-gpu-arch`"
            )
        if t.torch_cuda and _ver(need)[:1] != _ver(t.torch_cuda)[:1]:
            # a CUDA 12.8 nvcc beside a cu118 torch only moves the failure (cuda.nvcc-torch)
            fix += (
                f", and a torch built for CUDA {need} (torch is CUDA {t.torch_cuda}): "
                f'`torch = {{ version = "...", index = "https://download.pytorch.org/whl/cu'
                f'{need.replace(".", "")}" }}` in {fixes.deps_place(env, pypi=True)}'
            )
        findings.append(
            failed(
                check,
                f"CUDA {t.version} nvcc cannot generate code for {arch.sm} ({arch.cc}, from "
                f"{source}); it needs CUDA >= {need}"
                + (f" and <= {last}.x" if last is not None else ""),
                fix,
                decided_by=how,
                nvcc=t.nvcc.path,
            )
        )
    return findings


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


def arch_ptxas(
    env: PixiEnv, t: ToolkitFacts, archs: Sequence[Arch], workdir: Path
) -> list[Finding]:
    """The real probe behind cuda.arch-supported: the env's ptxas assembles for each arch."""
    check = "cuda.arch-ptxas"
    if not archs:
        return [skipped(check, "no target arch: pass --cuda-arch")]
    if t.ptxas is None:
        return [skipped(check, f"no ptxas in {t.prefix}/bin")]
    findings = []
    for arch in archs:
        result = ptxas_accepts(t.ptxas, arch, workdir, t.environ)
        if result.ok:
            findings.append(passed(check, f"{t.ptxas} assembles for {arch.sm}"))
        else:
            need = min_toolkit_for(arch) or "a newer CUDA"
            findings.append(
                failed(
                    check,
                    f"{t.ptxas} refuses {arch.sm}: {result.describe()}",
                    fixes.add(env, *_cuda_packages(need, "cuda-version"), verb="set"),
                )
            )
    return findings


def vllm_python(env: PixiEnv, t: ToolkitFacts) -> Finding:
    """For a vLLM source build: the Python CMake gets is ``sys.executable`` of the process
    running vLLM's setup.py (``-DVLLM_PYTHON_EXECUTABLE={sys.executable}``, every release from
    0.4.1 to 0.33 read), i.e. the ``python`` (or ``pip``) the activated PATH finds. The
    ``VLLM_PYTHON_EXECUTABLE`` environment variable is read by neither setup.py nor
    CMakeLists.txt: setting it changes nothing."""
    check = "cuda.vllm-python"
    if env.python is None:
        return skipped(check, f"no Python in {env.prefix}")
    chosen = proc.which("python", t.environ.get("PATH"))
    variable = t.environ.get("VLLM_PYTHON_EXECUTABLE")
    where = env.activation.sources.get("VLLM_PYTHON_EXECUTABLE", "the outer environment")
    note = (
        f"; VLLM_PYTHON_EXECUTABLE={variable} (set by {where}) has no effect: vLLM's setup.py "
        "passes -DVLLM_PYTHON_EXECUTABLE=<the Python running it> and its CMakeLists never reads "
        "the environment variable"
        if variable
        else ""
    )
    if chosen is None or not _same_python(chosen, env):
        set_by = env.activation.sources.get("PATH", "the outer environment")
        return failed(
            check,
            f"`python` on the activated PATH is {chosen or 'not found'}, not the env's "
            f"{env.python}: `python -m pip install -e .` would run vLLM's setup.py, and hand "
            f"CMake, that interpreter{note}",
            f"build with the env's interpreter: `pixi run python -m pip install "
            f"--no-build-isolation -e .` (or `{env.python} -m pip ...`); and drop the PATH "
            f"entry ahead of {env.prefix}/bin (set by {set_by})",
        )
    return passed(
        check, f"`python` on the activated PATH is the env's ({chosen}): CMake gets it{note}"
    )


# -- helpers --------------------------------------------------------------------------------
def _inside(path: Path, prefix: Path) -> bool:
    try:
        return Path(os.path.abspath(path)).is_relative_to(prefix) or Path(
            os.path.realpath(path)
        ).is_relative_to(os.path.realpath(prefix))
    except OSError:
        return False


def _same_python(candidate: Path, env: PixiEnv) -> bool:
    if _inside(candidate, env.prefix):
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
