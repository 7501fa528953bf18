"""NVTX as CMake will see it: a static prediction of FindCUDAToolkit and of torch's
``Caffe2/public/cuda.cmake``, so that the seed-001 failure is reported in seconds::

    The link interface of target "torch::nvtoolsext" contains: CUDA::nvToolsExt
    but the target was not found.

What the prediction follows (read from upstream source, Linux, not cross-compiling):

- CMake ``Modules/FindCUDAToolkit.cmake`` 3.25.1 (``/usr/share/cmake-3.25``) and the
  Kitware/CMake tags v3.28.0 ... v4.4.0:

  * nvcc: ``CUDAToolkit_ROOT`` (``<root>/bin/nvcc``, nothing else if set), else
    ``find_program(nvcc)`` on PATH, then ``$CUDA_PATH/bin``, then ``/usr/local/cuda/bin``.
    The toolkit root is ``#$ TOP=`` from ``nvcc -v __cmake_determine_cuda``, else nvcc's
    parent dir.
  * Include dir: before 3.28 only ``<root>/include/cuda_runtime.h`` counts (a conda-forge
    env keeps it in ``targets/x86_64-linux/include``: FACTS.md measured the failure); from
    3.28 the ``INCLUDES`` dirs that ``nvcc -v`` prints (conda-forge's nvcc.profile names
    ``targets/x86_64-linux/include``). ``targets/<arch>`` itself is only used when
    cross-compiling (or, from 4.2, without nvcc).
  * Libraries: ``find_library`` looks for the unversioned ``libX.so`` only, in the dir of
    libcudart, ``$CUDA_PATH``, the ``<prefix>/lib`` of each ``<prefix>/bin`` on PATH and the
    system dirs, then in ``stubs`` dirs. ``CUDA::nvToolsExt`` exists only when
    ``libnvToolsExt.so`` is found (no header check), and from 4.1 only for CUDA < 12.9.
    **``NVTOOLSEXT_PATH`` is read only on Windows** (``if(WIN32)`` around it in every
    version read), so on Linux it does not help.
  * ``CUDA::nvtx3`` (header-only, since 3.25) is created for CUDA >= 10.0 with the toolkit's
    include dirs, whether or not ``nvtx3/`` is there.

- torch's installed ``share/cmake/Caffe2/public/cuda.cmake`` (2.x): it looks for an
  ``nvtx3`` dir with ``find_path(nvtx3_dir NAMES nvtx3 PATHS ...)``; in the wheels the path
  is ``${PROJECT_SOURCE_DIR}/third_party/NVTX/c/include``, i.e. inside *your* project, so
  it is not found and torch falls back to ``torch::nvtoolsext`` -> ``CUDA::nvToolsExt``.
  We read the env's own file rather than trust a version table. From torch 2.8 (wheels 2.8.0
  to 2.14 read) the public cuda.cmake has no NVTX part at all: nothing to require there.
- torch also ships its own ``share/cmake/Caffe2/FindCUDAToolkit.cmake`` (3.25-era; torch
  2.14.1's looks for ``nvToolsExt.h`` and ``libnvToolsExt.so`` under ``$NVTOOLSEXT_PATH`` on
  every platform). ``Caffe2Config.cmake`` appends its dir to ``CMAKE_MODULE_PATH`` around
  ``public/cuda.cmake``; we model only that module's NVTOOLSEXT_PATH rule. The rest of
  torch's own CUDA discovery (``find_package(CUDA)``, ``enable_language(CUDA)``, that module's
  include-dir rule) is not predicted: the real probe (``nvtx.cmake-probe`` with
  ``find_package(Torch)``) is the judge there.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pytest_vllm_env import fixes
from pytest_vllm_env.checks.cuda import TARGETS, ToolkitFacts, _ver
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.findings import Finding, failed, passed, skipped

SYSTEM_LIB_DIRS = ("/usr/local/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib", "/lib64", "/lib")
TORCH_CUDA_CMAKE = "torch/share/cmake/Caffe2/public/cuda.cmake"
TORCH_CONFIG = "torch/share/cmake/Torch/TorchConfig.cmake"
TORCH_FIND_CUDATOOLKIT = "torch/share/cmake/Caffe2/FindCUDAToolkit.cmake"


@dataclass
class TorchCudaCmake:
    """What the env's torch's cuda.cmake asks of the toolkit."""

    path: Path
    wants_nvtoolsext: bool  # links torch::nvtoolsext to CUDA::nvToolsExt (as a fallback)
    fatal_without_nvtoolsext: bool  # older: FATAL_ERROR "Failed to find nvToolsExt"
    nvtx3_paths: list[str]  # where it looks for an nvtx3 dir first
    config: Path | None  # TorchConfig.cmake, for the real probe
    # torch's own copy of FindCUDAToolkit.cmake (share/cmake/Caffe2), which Caffe2Config puts
    # on CMAKE_MODULE_PATH; in torch 2.14.1 it looks for nvToolsExt.h and the library under
    # $NVTOOLSEXT_PATH on every platform, unlike CMake's own module.
    vendored_reads_nvtoolsext_path: bool = False


def read_torch_cmake(env: PixiEnv) -> TorchCudaCmake | None:
    """The env's torch cuda.cmake, or None without torch (or without that file)."""
    path = env.package_file("torch", TORCH_CUDA_CMAKE)
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    probes = re.findall(r"find_path\(\s*nvtx3_dir\s+NAMES\s+nvtx3\s+PATHS\s+([^)]*)\)", text)
    if "if(USE_SYSTEM_NVTX)" in text and len(probes) > 1:
        # torch's own build option; a consumer of the installed file never sets it, so the
        # else() branch is the one that runs.
        probes = probes[1:]
    paths = []
    for raw in probes[:1]:
        paths = [p.strip('"') for p in raw.replace("NO_DEFAULT_PATH", "").split()]
    vendored_text = env.package_text("torch", TORCH_FIND_CUDATOOLKIT) or ""
    return TorchCudaCmake(
        path=path,
        wants_nvtoolsext="CUDA::nvToolsExt" in text,
        fatal_without_nvtoolsext="Failed to find nvToolsExt" in text,
        nvtx3_paths=paths,
        config=env.package_file("torch", TORCH_CONFIG),
        vendored_reads_nvtoolsext_path="find_path(CUDAToolkit_nvToolsExt_INCLUDE_DIR"
        in vendored_text
        and "ENV NVTOOLSEXT_PATH" in vendored_text,
    )


@dataclass
class Prediction:
    """What FindCUDAToolkit (and torch's cuda.cmake) will do, with the paths searched."""

    cmake_version: str
    found: bool
    nvcc: str | None = None
    root: str | None = None
    version: str | None = None
    include_dirs: list[str] = field(default_factory=list)
    cudart: str | None = None
    targets: dict[str, str] = field(default_factory=dict)  # "CUDA::nvToolsExt" -> library
    searched: dict[str, list[str]] = field(default_factory=dict)
    why_not_found: str = ""
    torch_needs_nvtoolsext: bool | None = None
    torch_error: str = ""

    @property
    def target_names(self) -> set[str]:
        return set(self.targets)


def predict(
    t: ToolkitFacts,
    cmake_version: str,
    torch: TorchCudaCmake | None = None,
    *,
    system_lib_dirs: tuple[str, ...] = SYSTEM_LIB_DIRS,
) -> Prediction:
    """Mirror FindCUDAToolkit (and torch's NVTX choice) for ``cmake_version``."""
    env = t.environ
    cm = _ver(cmake_version)
    pred = Prediction(cmake_version, False)
    nvcc = _find_nvcc(env)
    if nvcc is None:
        root_var = env.get("CUDAToolkit_ROOT")
        pred.why_not_found = (
            f"no nvcc under CUDAToolkit_ROOT={root_var}"
            if root_var
            else "no nvcc on PATH, in $CUDA_PATH/bin or /usr/local/cuda/bin"
        )
        return _torch(pred, torch, t)
    pred.nvcc = str(nvcc)
    run = t.nvcc if t.nvcc and os.path.realpath(t.nvcc.path) == os.path.realpath(nvcc) else None
    bin_dir = Path(run.top) / "bin" if run and run.top else nvcc.parent
    root = Path(os.path.normpath(bin_dir.parent))
    pred.root = str(root)
    pred.version = run.version if run else None
    # include dirs
    if cm >= (3, 28) and run and run.includes:
        pred.include_dirs = list(run.includes)
    elif (root / "include" / "cuda_runtime.h").is_file():
        pred.include_dirs = [str(root / "include")]
    pred.searched["cuda_runtime.h"] = (
        list(run.includes) if cm >= (3, 28) and run and run.includes else [str(root / "include")]
    )
    # cudart
    path_prefixes = [
        os.path.dirname(os.path.normpath(p))
        for p in env.get("PATH", "").split(os.pathsep)
        if p and os.path.basename(os.path.normpath(p)) == "bin"
    ]
    prefix_dirs = [d for p in path_prefixes for d in (f"{p}/lib64", f"{p}/lib")]
    if cm >= (3, 28):
        extra = list(run.libraries if run else ()) + [str(root)]
        cudart_dirs = prefix_dirs + [d for e in extra for d in (f"{e}/lib64", e)]
    else:
        cudart_dirs = prefix_dirs + [f"{root}/lib64", f"{root}/lib"]
    cudart_dirs += list(system_lib_dirs)
    stub_dirs = [f"{d}/stubs" for d in cudart_dirs]
    pred.cudart = find_lib("cudart", cudart_dirs) or find_lib("cudart", stub_dirs)
    pred.searched["libcudart.so"] = dedup_paths(cudart_dirs)
    if not pred.include_dirs or not pred.cudart or not pred.version:
        missing = [
            n
            for n, ok in (
                ("CUDAToolkit_INCLUDE_DIR", pred.include_dirs),
                ("CUDA_CUDART", pred.cudart),
                ("CUDAToolkit_VERSION", pred.version),
            )
            if not ok
        ]
        pred.why_not_found = f"Could NOT find CUDAToolkit (missing: {' '.join(missing)})"
        return _torch(pred, torch, t)
    pred.found = True
    lib_dir = os.path.dirname(pred.cudart)
    hints = [lib_dir] + ([os.path.realpath(lib_dir)] if cm >= (3, 28) else [])
    if env.get("CUDA_PATH"):
        hints.append(env["CUDA_PATH"])
    first = (
        [d for h in hints for d in (f"{h}/nvidia/current", f"{h}/lib64", f"{h}/lib", h)]
        + prefix_dirs
        + list(system_lib_dirs)
    )
    stubs = [d for h in hints for d in (f"{h}/lib64/stubs", f"{h}/lib/stubs", f"{h}/stubs")]
    stubs += [f"{d}/stubs" for d in prefix_dirs + list(system_lib_dirs)]
    for target, names in (
        ("cudart", ["cudart"]),
        ("cuda_driver", ["cuda_driver", "cuda"]),
        ("nvrtc", ["nvrtc"]),
        ("nvToolsExt", ["nvToolsExt", "nvToolsExt64"]),
    ):
        if target == "nvToolsExt" and cm >= (4, 1) and _ver(pred.version) >= (12, 9):
            continue  # FindCUDAToolkit 4.1+: "nvToolsExt is removed starting in 12.9"
        found = None
        for name in names:
            found = find_lib(name, first) or find_lib(name, stubs)
            if found:
                break
        pred.searched[f"lib{names[0] if target != 'cuda_driver' else 'cuda'}.so"] = dedup_paths(
            first + stubs
        )
        if found:
            pred.targets[f"CUDA::{target}"] = found
    if cm >= (3, 25) and _ver(pred.version) >= (10, 0):
        pred.targets["CUDA::nvtx3"] = ";".join(pred.include_dirs)
    return _torch(pred, torch, t)


def _torch(pred: Prediction, torch: TorchCudaCmake | None, t: ToolkitFacts) -> Prediction:
    if torch is None or not pred.found:
        return pred  # torch's cuda.cmake runs only after CUDAToolkit was found
    nvtx3_found = False
    for raw in torch.nvtx3_paths:
        if "PROJECT_SOURCE_DIR" in raw:
            continue  # the consumer's source tree: a vLLM or extension build has no such dir
        dirs = pred.include_dirs if "INCLUDE_DIRS" in raw else [raw]
        if any((Path(d) / "nvtx3").is_dir() for d in dirs):
            nvtx3_found = True
    needs = torch.wants_nvtoolsext and not nvtx3_found
    pred.torch_needs_nvtoolsext = needs
    hint = t.environ.get("NVTOOLSEXT_PATH")
    if (
        needs
        and "CUDA::nvToolsExt" not in pred.targets
        and hint
        and (torch.vendored_reads_nvtoolsext_path)
    ):
        # torch's bundled module: header under <hint>/include, then find_library with the
        # hint (unversioned libnvToolsExt.so only, as everywhere).
        header = any(
            (Path(d) / "nvToolsExt.h").is_file()
            for d in [*pred.include_dirs, f"{pred.root}/include", f"{hint}/include"]
        )
        lib = find_lib("nvToolsExt", [f"{hint}/lib64", f"{hint}/lib", hint])
        pred.searched["NVTOOLSEXT_PATH"] = [f"{hint}/include", f"{hint}/lib64", f"{hint}/lib"]
        if header and lib:
            pred.targets["CUDA::nvToolsExt"] = lib
    if needs and "CUDA::nvToolsExt" not in pred.targets:
        pred.torch_error = (
            "Failed to find nvToolsExt"
            if torch.fatal_without_nvtoolsext
            else 'The link interface of target "torch::nvtoolsext" contains: CUDA::nvToolsExt '
            "but the target was not found"
        )
    return pred


def _find_nvcc(env: dict[str, str]) -> Path | None:
    root = env.get("CUDAToolkit_ROOT")
    if root:
        return _first_exe([f"{root}/bin/nvcc", f"{root}/nvcc"])
    candidates = [f"{p}/nvcc" for p in env.get("PATH", "").split(os.pathsep) if p]
    if env.get("CUDA_PATH"):
        candidates.append(f"{env['CUDA_PATH']}/bin/nvcc")
    candidates.append("/usr/local/cuda/bin/nvcc")
    return _first_exe(candidates)


def _first_exe(candidates: list[str]) -> Path | None:
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return Path(c)
    return None


def find_lib(name: str, dirs: list[str]) -> str | None:
    """``lib<name>.so`` (else ``.a``) in the first of ``dirs`` holding it, as CMake's
    ``find_library`` looks."""
    for d in dirs:
        for suffix in (".so", ".a"):
            candidate = os.path.join(d, f"lib{name}{suffix}")
            if os.path.isfile(candidate):
                return os.path.normpath(candidate)
    return None


def dedup_paths(items: list[str]) -> list[str]:
    """The paths normalised, first occurrence kept, order kept."""
    return list(dict.fromkeys(os.path.normpath(i) for i in items))


# -- judgement ------------------------------------------------------------------------------
def cmake_target(
    env: PixiEnv,
    t: ToolkitFacts,
    pred: Prediction | None,
    cmake: str,
    torch_cmake: TorchCudaCmake | None = None,
    earlier: str = "",
) -> Finding:
    """NVTX as CMake will see it, and what the env's torch then requires. Nothing in a vLLM
    build asks for NVTX but torch's CMake (vLLM's own CMakeLists names none, 0.4 to 0.33), so
    without torch, or with a torch whose CMake links no NVTX (2.8 on), this passes.
    ``earlier`` names an error torch's config will stop at before its NVTX part
    (``cmake.torch-config``), so that the verdict says which comes first."""
    check = "nvtx.cmake-target"
    if pred is None:
        where = "no cmake on the activated PATH" if cmake == "None" else f"{cmake} does not run"
        return skipped(check, f"{where}: no CMake version to predict FindCUDAToolkit for")
    mm = ".".join((pred.version or t.version or "12.8").split(".")[:2])
    evidence = {
        "cmake": pred.cmake_version,
        "nvcc": pred.nvcc,
        "toolkit_root": pred.root,
        "include_dirs": pred.include_dirs,
        "targets": sorted(pred.targets),
        "searched_libnvToolsExt.so": pred.searched.get("libnvToolsExt.so", []),
    }
    if not pred.found:
        return failed(
            check,
            f"CMake {pred.cmake_version}'s FindCUDAToolkit will fail: {pred.why_not_found}",
            _not_found_fix(env, t, pred, mm),
            **evidence,
        )
    nvtx_header = [
        str(Path(d) / h)
        for d in pred.include_dirs
        for h in ("nvToolsExt.h", "nvtx3/nvToolsExt.h")
        if (Path(d) / h).is_file()
    ]
    evidence["nvtx_headers"] = nvtx_header
    elsewhere = _nvtx_elsewhere(env)
    if elsewhere:
        evidence["nvtx_outside_toolkit"] = elsewhere
    if pred.torch_error:
        hint = t.environ.get("NVTOOLSEXT_PATH")
        vendored = bool(torch_cmake and torch_cmake.vendored_reads_nvtoolsext_path)
        ignored = ""
        if hint and vendored:
            ignored = (
                f" NVTOOLSEXT_PATH={hint} is read by torch's bundled FindCUDAToolkit.cmake, "
                "but it holds no unversioned libnvToolsExt.so (find_library needs it)."
            )
        elif hint:
            ignored = (
                f" NVTOOLSEXT_PATH={hint} is ignored: CMake's FindCUDAToolkit reads it only "
                "on Windows."
            )
        found_at = f" (NVTX found only at {', '.join(elsewhere)})" if elsewhere else ""
        first = f" (CMake stops before this: {earlier}; see cmake.torch-config)" if earlier else ""
        return failed(
            check,
            f"torch's cuda.cmake needs CUDA::nvToolsExt, which CMake {pred.cmake_version} will "
            f"not create: no libnvToolsExt.so in the searched dirs{found_at}.{ignored} "
            f"CMake will say: {pred.torch_error}{first}",
            _nvtoolsext_fix(env, t, pred, mm),
            **evidence,
        )
    if "CUDA::nvToolsExt" in pred.targets:
        return passed(
            check,
            f"CUDA::nvToolsExt -> {pred.targets['CUDA::nvToolsExt']}"
            + (", CUDA::nvtx3" if "CUDA::nvtx3" in pred.targets else ""),
            **evidence,
        )
    if "CUDA::nvtx3" in pred.targets and any("nvtx3" in h for h in nvtx_header):
        return passed(check, "CUDA::nvtx3 (header-only) with nvtx3/ headers", **evidence)
    why = (
        "no torch in the env"
        if torch_cmake is None
        else f"torch {env.version_of('torch')}'s CMake links no NVTX"
    )
    return passed(
        check,
        f"{why}: nothing in a vLLM build asks CMake for NVTX (no CUDA::nvToolsExt is needed)",
        **evidence,
    )


def _nvtoolsext_fix(env: PixiEnv, t: ToolkitFacts, pred: Prediction, mm: str) -> str:
    """The change that gives torch's cuda.cmake a CUDA::nvToolsExt, or the way around it
    where no package can (never "add cuda-nvtx-dev" when it is installed or useless)."""
    version = _ver(pred.version or t.version or "0")
    if version >= (12, 9):
        return (
            f"CUDA {pred.version} has no NVTX v2 (libnvToolsExt was removed in 12.9; "
            "cuda-nvtx-dev 12.9+ ships only nvtx3 headers), so no package can add it: use "
            f'torch >= 2.8, whose CMake links no NVTX (`torch = ">=2.8"`), or pin '
            f'`cuda-version = "12.8.*"` in {fixes.deps_place(env)}, or define CUDA::nvToolsExt '
            "as an alias of "
            "CUDA::nvtx3 before find_package(Torch) (the workaround in vllm#20892)"
        )
    if "cuda-nvtx-dev" in env.conda_packages:
        plain = [
            str(p)
            for p in t.libraries.get("libnvToolsExt.so", [])
            if p.name == "libnvToolsExt.so" and p.exists()
        ]
        where = f" (it is at {', '.join(plain)})" if plain else " (its libnvToolsExt.so is missing)"
        return (
            f"cuda-nvtx-dev is installed but CMake does not look where its library is{where}: "
            f"searched {', '.join(pred.searched.get('libnvToolsExt.so', [])[:4])} ...; make "
            "the env's nvcc and libcudart the ones CMake finds (cuda.nvcc-in-env, "
            "cuda.cmake-components), or `pixi reinstall cuda-nvtx-dev` if the file is gone"
        )
    return (
        fixes.add(env, fixes.Package("cuda-nvtx-dev", f"{mm}.*"))
        + " (it ships libnvToolsExt.so next to libcudart.so)"
    )


def _not_found_fix(env: PixiEnv, t: ToolkitFacts, pred: Prediction, mm: str) -> str:
    if pred.nvcc is None or (pred.root and not Path(pred.root).is_relative_to(t.prefix)):
        return (
            fixes.add(env, fixes.Package("cuda-nvcc", f"{mm}.*"))
            + " so that CMake finds the env's nvcc"
        )
    if not pred.include_dirs and (t.prefix / TARGETS / "include" / "cuda_runtime.h").is_file():
        return (
            f"CMake {pred.cmake_version} looks only in {pred.root}/include: "
            + fixes.add(env, fixes.Package("cmake", ">=3.28"))
            + " (it reads nvcc's include dirs), or pass "
            f"-DCUDAToolkit_INCLUDE_DIR={t.prefix}/{TARGETS}/include"
        )
    return fixes.add(env, fixes.Package("cuda-cudart-dev", f"{mm}.*"))


def _nvtx_elsewhere(env: PixiEnv) -> list[str]:
    """PyPI's nvidia-nvtx-cu12 layout (site-packages/nvidia/nvtx): seed 001's only NVTX."""
    found = []
    for sp in env.site_packages:
        for rel in ("nvidia/nvtx/include/nvToolsExt.h", "nvidia/nvtx/lib/libnvToolsExt.so.1"):
            if (sp / rel).exists():
                found.append(str(sp / rel))
    return found
