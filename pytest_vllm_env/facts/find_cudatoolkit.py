"""FindCUDAToolkit as a vLLM build's CMake will run it, and NVTX as torch's
``Caffe2/public/cuda.cmake`` will then ask for it: a static prediction, so that the seed-001
failure is reported in seconds::

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
  to 2.13.0 read) the public cuda.cmake has no NVTX part at all: nothing to require there.

- **Which FindCUDAToolkit runs.** Every torch wheel from 2.1 to 2.13 (read: 2.1.2, 2.2.2,
  2.3.1, 2.4.1, 2.5.1, 2.6.0, 2.7.0, 2.7.1, 2.8.0, 2.9.0, 2.10.0, 2.11.0, 2.13.0) ships
  ``share/cmake/Caffe2/FindCUDAToolkit.cmake``, and ``Caffe2Config.cmake`` does
  ``list(APPEND CMAKE_MODULE_PATH "${CMAKE_CURRENT_LIST_DIR}")`` around
  ``include(public/cuda.cmake)``. ``CMAKE_MODULE_PATH`` is searched before CMake's own
  ``Modules/`` and a vLLM build puts nothing there first (vLLM 0.4.1 to 0.10.1 sdists read:
  ``find_package(Torch)`` comes first, no ``FindCUDAToolkit.cmake`` of its own), so
  ``find_package(CUDAToolkit REQUIRED)`` in torch's cuda.cmake runs **torch's copy,
  whatever CMake version runs it** (measured: CMake 3.26.4, 3.31.6 and 4.1.2 give the same
  result with the real torch 2.1.2, 2.4.1, 2.6.0 and 2.7.1 files). torch 2.0 has no such file
  and its cuda.cmake no ``find_package(CUDAToolkit)``: it finds NVTX with
  ``find_library(LIBNVTOOLSEXT libnvToolsExt.so PATHS ${CUDA_TOOLKIT_ROOT_DIR}/lib64/)``
  (:mod:`pytest_vllm_env.facts.torch_config` predicts that one). Only torch's cuda.cmake included
  on its own (no Caffe2Config) runs CMake's module.
- torch's copy (the same text in 2.5 to 2.13; 2.1 to 2.4 lack only the ``cuFile`` targets) is
  a back-port older than CMake 3.25: the include dir is ``<root>/include`` (or a
  ``-DCUDAToolkit_INCLUDE_DIR`` preset), ``CUDA::nvToolsExt`` needs **both** ``nvToolsExt.h``
  (``find_path`` in the include dir, ``<root>/include`` and ``$NVTOOLSEXT_PATH/include``,
  nothing else) and an unversioned ``libnvToolsExt.so`` (next to libcudart, ``$CUDA_PATH``,
  ``$NVTOOLSEXT_PATH``, then CMake's default dirs), reads ``NVTOOLSEXT_PATH`` **on Linux
  too**, has no CUDA 12.9 cut-off and creates no ``CUDA::nvtx3``. :func:`read_find_module`
  reads those rules from the installed file; :func:`cmake_module` gives CMake's own by
  version.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

from pytest_vllm_env import files
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.toolkit import ToolkitFacts
from pytest_vllm_env.readers.torch_cmake import (
    TORCH_CAFFE2_CONFIG,
    TORCH_CONFIG,
    TORCH_CUDA_CMAKE,
    TORCH_FIND_CUDATOOLKIT,
    TorchCudaCmake,
    appends_module_path,
    cmake_args,
    parse_cuda_cmake,
    read_find_module,
)
from pytest_vllm_env.tables.cmake_cuda import (
    BUNDLED,
    SYSTEM_LIB_DIRS,
    FindModule,
    cmake_module,
)
from pytest_vllm_env.tables.cuda_archs import version_tuple as _ver


def read_torch_cmake(env: PixiEnv) -> TorchCudaCmake | None:
    """The env's torch cuda.cmake, or None without torch (or without that file)."""
    path = env.package_file("torch", TORCH_CUDA_CMAKE)
    if path is None:
        return None
    try:
        text = files.read_text(path, files.SOURCE)
    except FileNotFoundError:
        return None
    except OSError as exc:  # there, and not a file CMake could include (issue 21: a FIFO)
        why = f"cannot be read: {exc.strerror or exc}"
        return TorchCudaCmake(path, False, False, [], None, error=f"{path}: {why}")
    facts = parse_cuda_cmake(path, text, env.package_file("torch", TORCH_CONFIG))
    if facts.finds_cudatoolkit:
        facts.bundled, why = _bundled_module(env)
        if why:  # which FindCUDAToolkit CMake takes is unknown: named, not guessed
            facts.error = f": the FindCUDAToolkit it runs cannot be known: {why}"
    return facts


def _bundled_module(env: PixiEnv) -> tuple[FindModule | None, str]:
    """torch's ``Caffe2/FindCUDAToolkit.cmake``, when ``Caffe2Config.cmake`` appends its own
    dir to ``CMAKE_MODULE_PATH`` before it includes ``public/cuda.cmake``; and why one of the
    two could not be read ("" when both were, or are absent)."""
    config, why = env.package_text_or_why("torch", TORCH_CAFFE2_CONFIG)
    if why:
        return None, why
    if not appends_module_path(config or ""):
        return None, ""
    path = env.package_file("torch", TORCH_FIND_CUDATOOLKIT)
    text, why = env.package_text_or_why("torch", TORCH_FIND_CUDATOOLKIT)
    if path is None or text is None:
        return None, why
    return read_find_module(path, text), ""


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
    module: str = ""  # which FindCUDAToolkit.cmake (CMake's own, or torch's bundled copy)
    nvtoolsext_header: str | None = None  # nvToolsExt.h, where the module needs one
    why_no_nvtoolsext: str = ""  # why CUDA::nvToolsExt is not created, in the module's terms
    # what it lacked: "cuda-version" (4.1+ with CUDA >= 12.9), "header", "library"
    nvtoolsext_missing: str = ""
    nvtoolsext_library: str | None = None  # libnvToolsExt.so found (even without the header)
    # the nvToolsExt.h / nvtx3/nvToolsExt.h in the include dirs, once the toolkit is found
    nvtx_headers: list[str] = field(default_factory=list)
    # $NVTOOLSEXT_PATH/lib*/libnvToolsExt.so.*: what the hint holds instead of libnvToolsExt.so
    hint_libraries: list[str] = field(default_factory=list)

    @property
    def target_names(self) -> set[str]:
        return set(self.targets)


def predict(
    t: ToolkitFacts,
    cmake_version: str,
    torch: TorchCudaCmake | None = None,
    *,
    system_lib_dirs: tuple[str, ...] = SYSTEM_LIB_DIRS,
    presets: dict[str, str] | None = None,
    module: FindModule | None = None,
) -> Prediction:
    """Mirror the FindCUDAToolkit a build runs (torch's bundled copy when the env's torch
    brings one, else CMake's own of ``cmake_version``; ``module`` forces one) and torch's NVTX
    choice. ``presets``: ``-D`` values (default: the env's ``CMAKE_ARGS``)."""
    env = t.environ
    rules = module or (torch.module(cmake_version) if torch else cmake_module(cmake_version))
    presets = cmake_args(env) if presets is None else presets
    pred = Prediction(cmake_version, False, module=rules.name)
    nvcc = _find_nvcc(env)
    if nvcc is None:
        root_var = env.get("CUDAToolkit_ROOT")
        pred.why_not_found = (
            f"no nvcc under CUDAToolkit_ROOT={root_var}"
            if root_var
            else "no nvcc on PATH, in $CUDA_PATH/bin or /usr/local/cuda/bin"
        )
        return _torch(pred, torch)
    pred.nvcc = str(nvcc)
    run = t.nvcc if t.nvcc and os.path.realpath(t.nvcc.path) == os.path.realpath(nvcc) else None
    bin_dir = Path(run.top) / "bin" if run and run.top else nvcc.parent
    root = Path(os.path.normpath(bin_dir.parent))
    pred.root = str(root)
    pred.version = run.version if run else None
    # include dirs
    nvcc_includes = rules.include_from_nvcc and run is not None and bool(run.includes)
    if nvcc_includes and run:
        pred.include_dirs = list(run.includes)
    elif os.path.isfile(root / "include" / "cuda_runtime.h"):
        pred.include_dirs = [str(root / "include")]
    elif rules.include_preset and presets.get("CUDAToolkit_INCLUDE_DIR"):
        # a cache preset survives: the bundled module only sets it when <root>/include holds
        # cuda_runtime.h
        pred.include_dirs = [presets["CUDAToolkit_INCLUDE_DIR"]]
    pred.searched["cuda_runtime.h"] = (
        list(run.includes) if nvcc_includes and run else [str(root / "include")]
    )
    # cudart
    path_prefixes = [
        os.path.dirname(os.path.normpath(p))
        for p in env.get("PATH", "").split(os.pathsep)
        if p and os.path.basename(os.path.normpath(p)) == "bin"
    ]
    prefix_dirs = [d for p in path_prefixes for d in (f"{p}/lib64", f"{p}/lib")]
    if rules.include_from_nvcc:
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
        return _torch(pred, torch)
    pred.found = True
    lib_dir = os.path.dirname(pred.cudart)
    hints = [lib_dir] + ([os.path.realpath(lib_dir)] if rules.realpath_hint else [])
    if env.get("CUDA_PATH"):
        hints.append(env["CUDA_PATH"])
    for target, names in (
        ("cudart", ["cudart"]),
        ("cuda_driver", ["cuda_driver", "cuda"]),
        ("nvrtc", ["nvrtc"]),
        ("nvToolsExt", ["nvToolsExt", "nvToolsExt64", "nvToolsExt64_1"]),
    ):
        key = f"lib{names[0] if target != 'cuda_driver' else 'cuda'}.so"
        if target == "nvToolsExt":
            found = _nvtoolsext(pred, rules, hints, prefix_dirs, system_lib_dirs, env)
        else:
            first, stubs = _lib_dirs(hints, prefix_dirs, system_lib_dirs)
            pred.searched[key] = dedup_paths(first + stubs)
            found = next(
                (f for n in names if (f := find_lib(n, first) or find_lib(n, stubs))), None
            )
        if found:
            pred.targets[f"CUDA::{target}"] = found
    if rules.nvtx3 and _ver(pred.version) >= (10, 0):
        pred.targets["CUDA::nvtx3"] = ";".join(pred.include_dirs)
    pred.nvtx_headers = [
        str(Path(d) / h)
        for d in pred.include_dirs
        for h in ("nvToolsExt.h", "nvtx3/nvToolsExt.h")
        if os.path.isfile(os.path.join(d, h))
    ]
    return _torch(pred, torch)


def _lib_dirs(
    hints: list[str], prefix_dirs: list[str], system_lib_dirs: tuple[str, ...]
) -> tuple[list[str], list[str]]:
    """``_CUDAToolkit_find_and_add_import_lib``'s dirs: the hints with their suffixes, then
    CMake's defaults; the ``stubs`` dirs only after all of them."""
    first = (
        [d for h in hints for d in (f"{h}/nvidia/current", f"{h}/lib64", f"{h}/lib", h)]
        + prefix_dirs
        + list(system_lib_dirs)
    )
    stubs = [d for h in hints for d in (f"{h}/lib64/stubs", f"{h}/lib/stubs", f"{h}/stubs")]
    stubs += [f"{d}/stubs" for d in prefix_dirs + list(system_lib_dirs)]
    return first, stubs


def _nvtoolsext(
    pred: Prediction,
    rules: FindModule,
    hints: list[str],
    prefix_dirs: list[str],
    system_lib_dirs: tuple[str, ...],
    env: dict[str, str],
) -> str | None:
    """``CUDA::nvToolsExt``'s library as ``rules`` look for it (None: no target), with
    :attr:`Prediction.why_no_nvtoolsext` set when there is none."""
    assert pred.version
    if rules.nvtoolsext_until and _ver(pred.version) >= rules.nvtoolsext_until:
        until = ".".join(map(str, rules.nvtoolsext_until))
        pred.nvtoolsext_missing = "cuda-version"
        pred.why_no_nvtoolsext = (
            f"it does not look for it with CUDA >= {until} "
            f'("nvToolsExt is removed starting in {until}")'
        )
        return None
    hint = env.get("NVTOOLSEXT_PATH")
    if hint:
        # only versioned files there: nvtoolsext_cause says so (find_library needs libX.so)
        # glob.glob passes over a folder it cannot list, as CMake's find_library does
        pattern = os.path.join(glob.escape(hint), "lib*", "libnvToolsExt.so.*")
        pred.hint_libraries = sorted(glob.glob(pattern))
    if rules.nvtoolsext_header:
        dirs = [pred.include_dirs[0], str(pred.root)] + (
            [hint] if hint and rules.header_hint else []
        )
        header_dirs = dedup_paths([d for x in dirs for d in (f"{x}/include", x)])
        pred.searched["nvToolsExt.h"] = header_dirs
        pred.nvtoolsext_header = next(
            (
                str(Path(d) / "nvToolsExt.h")
                for d in header_dirs
                if os.path.isfile(os.path.join(d, "nvToolsExt.h"))
            ),
            None,
        )
    lib_hints = hints + ([hint] if hint and rules.library_hint else [])
    first, stubs = _lib_dirs(lib_hints, prefix_dirs, system_lib_dirs)
    pred.searched["libnvToolsExt.so"] = dedup_paths(first + stubs)
    names = ("nvToolsExt", "nvToolsExt64", "nvToolsExt64_1")
    lib = next((f for n in names if (f := find_lib(n, first) or find_lib(n, stubs))), None)
    pred.nvtoolsext_library = lib
    if rules.nvtoolsext_header and pred.nvtoolsext_header is None:
        looked = "its include dir, <root>/include" + (", $NVTOOLSEXT_PATH/include" if hint else "")
        if lib is None:
            # neither: the package that brings the library brings the header too
            pred.nvtoolsext_missing = "library"
            pred.why_no_nvtoolsext = (
                f"no nvToolsExt.h where it looks ({looked}) and no unversioned "
                "libnvToolsExt.so in the searched dirs"
            )
        else:
            pred.nvtoolsext_missing = "header"
            pred.why_no_nvtoolsext = (
                f"it needs nvToolsExt.h too and finds none where it looks ({looked}), though "
                f"its library {lib} is there"
            )
        return None
    if lib is None:
        pred.nvtoolsext_missing = "library"
        pred.why_no_nvtoolsext = "no unversioned libnvToolsExt.so in the searched dirs"
    return lib


def _torch(pred: Prediction, torch: TorchCudaCmake | None) -> Prediction:
    if torch is None or not pred.found:
        return pred  # torch's cuda.cmake runs only after CUDAToolkit was found
    nvtx3_found = False
    for raw in torch.nvtx3_paths:
        if "PROJECT_SOURCE_DIR" in raw:
            continue  # the consumer's source tree: a vLLM or extension build has no such dir
        dirs = pred.include_dirs if "INCLUDE_DIRS" in raw else [raw]
        if any(os.path.isdir(os.path.join(d, "nvtx3")) for d in dirs):
            nvtx3_found = True
    needs = torch.wants_nvtoolsext and not nvtx3_found
    pred.torch_needs_nvtoolsext = needs
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


# -- why no CUDA::nvToolsExt, and what gives one (nvtx.cmake-target and cmake.torch-config) --
def nvtoolsext_cause(t: ToolkitFacts, pred: Prediction, elsewhere: list[str] | None = None) -> str:
    """Why the module made no ``CUDA::nvToolsExt``, where NVTX is instead (``elsewhere``), and
    what ``NVTOOLSEXT_PATH`` did."""
    why = pred.why_no_nvtoolsext or "no unversioned libnvToolsExt.so in the searched dirs"
    if elsewhere:
        why += f" (NVTX found only at {', '.join(elsewhere)})"
    hint = t.environ.get("NVTOOLSEXT_PATH")
    if not hint or pred.nvtoolsext_missing == "cuda-version":
        return why
    if pred.module != BUNDLED:
        return (
            f"{why}; NVTOOLSEXT_PATH={hint} is ignored: CMake's FindCUDAToolkit reads it only "
            "on Windows (torch's bundled copy, used through TorchConfig.cmake, reads it)"
        )
    if pred.nvtoolsext_missing != "library":
        return why  # $NVTOOLSEXT_PATH/include is in the header dirs it names
    versioned = pred.hint_libraries
    holds = f" (it holds only {', '.join(versioned)})" if versioned else ""
    return (
        f"{why}; NVTOOLSEXT_PATH={hint} is searched, but find_library needs the unversioned "
        f"libnvToolsExt.so{holds}"
    )


def nvtoolsext_fix(env: PixiEnv, t: ToolkitFacts, pred: Prediction | None) -> str:
    """The change that gives torch's cuda.cmake a CUDA::nvToolsExt, or the way around it where
    no package can; never "add cuda-nvtx-dev" when it is installed (``cuda.cmake-components``
    leaves NVTX to this) or cannot help (CUDA >= 12.9)."""
    version = (pred.version if pred else None) or t.version or "0"
    mm = ".".join((version if version != "0" else "12.8").split(".")[:2])
    if pred and pred.nvtoolsext_missing == "header" and pred.nvtoolsext_library:
        header = t.nvtx_header
        if header is not None:
            return (
                fixes.set_var(env, "NVTOOLSEXT_PATH", _conda_relative(t, header.parent.parent))
                + f" ({BUNDLED} looks for nvToolsExt.h in $NVTOOLSEXT_PATH/include on Linux too;"
                f" it is at {header})"
            )
        if "cuda-nvtx-dev" not in env.conda_packages and _ver(version) < (12, 9):
            return (
                fixes.add(env, fixes.Package("cuda-nvtx-dev", f"{mm}.*"))
                + " (it ships nvToolsExt.h)"
            )
    if _ver(version) >= (12, 9):
        return nvtx_v2_fix(env, version)
    if "cuda-nvtx-dev" in env.conda_packages:
        plain = [
            str(p)
            for p in t.libraries.get("libnvToolsExt.so", [])
            if p.name == "libnvToolsExt.so" and p in t.present
        ]
        where = f" (it is at {', '.join(plain)})" if plain else " (its libnvToolsExt.so is missing)"
        searched = pred.searched.get("libnvToolsExt.so", []) if pred else []
        return (
            f"cuda-nvtx-dev is installed but CMake does not look where its library is{where}: "
            f"searched {', '.join(searched[:4])} ...; make "
            "the env's nvcc and libcudart the ones CMake finds (cuda.nvcc-in-env, "
            "cuda.cmake-components), or `pixi reinstall cuda-nvtx-dev` if the file is gone"
        )
    return (
        fixes.add(env, fixes.Package("cuda-nvtx-dev", f"{mm}.*"))
        + " (it ships libnvToolsExt.so next to libcudart.so, and nvToolsExt.h)"
    )


def nvtx_v2_fix(env: PixiEnv, version: str) -> str:
    """CUDA >= 12.9: NVTX v2 is gone, so no package can bring ``libnvToolsExt.so`` back."""
    return (
        f"CUDA {version} has no NVTX v2 (libnvToolsExt was removed in 12.9; cuda-nvtx-dev "
        "12.9+ ships only nvtx3 headers), so no package can add it: use torch >= 2.8, whose "
        "CMake links no NVTX ("
        + fixes.add(env, fixes.Package("torch", ">=2.8", pypi=True), verb="set")
        + "), or a CUDA 12.8 toolkit ("
        + fixes.add(
            env,
            fixes.Package("cuda-version", "12.8.*"),
            fixes.Package("cuda-nvtx-dev", "12.8.*"),
            verb="set",
        )
        + "), or define CUDA::nvToolsExt as an alias of CUDA::nvtx3 before find_package(Torch) "
        "(the workaround in vllm#20892)"
    )


def _conda_relative(t: ToolkitFacts, path: Path) -> str:
    try:
        return "${CONDA_PREFIX}/" + str(path.relative_to(t.prefix))
    except ValueError:
        return str(path)
