"""torch's installed CMake config as a vLLM source build runs it, predicted from files.

vLLM's CMakeLists calls ``find_package(Torch)`` (vLLM 0.4.1 to 0.33 read), then links each
CUDA extension to ``torch CUDA::cudart CUDA::cuda_driver`` and each pure-C++ extension
(``cumem_allocator``, ``_core_C``, ``spinloop``, ``fs_io_C``: one in every release since 0.6)
to ``torch ${TORCH_LIBRARIES}`` (``cmake/utils.cmake``: "Don't use TORCH_LIBRARIES for CUDA",
so the ``else()`` branch does). Measured with the real vLLM 0.10.1 CMakeLists, torch 2.7.1's
real CMake files and CMake 4.1.2: the ``torch::nvtoolsext`` error comes through
``cumem_allocator`` (``LANGUAGE CXX``), together with ``CUDA_nvrtc_LIBRARY`` NOTFOUND.

What torch's files ask, in the order CMake meets it (read from the torch wheels 2.0.1 to 2.11.0,
``share/cmake``; Linux, not cross-compiling):

1. ``Caffe2/public/cuda.cmake`` runs ``find_package(CUDA)`` with torch's own copy of the old
   FindCUDA (``Modules_CUDA_fix/upstream/FindCUDA.cmake``, the same search in every 2.x):
   nvcc from ``$CUDA_TOOLKIT_ROOT``/``$CUDA_PATH``/``$CUDA_BIN_PATH`` then ``PATH`` (the
   toolkit root is nvcc's parent dir), ``device_functions.h`` in ``<root>/include``,
   ``$CUDA_PATH/include``, ``$CUDA_INC_PATH/include`` then CMake's default include dirs, and
   ``libcudart`` in ``<root>/lib64``, ``<root>/lib``, ``$CUDA_PATH``, ``$CUDA_LIB_PATH`` then
   the default dirs. A conda-forge toolkit keeps its headers only in
   ``targets/x86_64-linux/include``: not found, and ``Caffe2Config.cmake`` stops with "Your
   installed Caffe2 version uses CUDA but I cannot find the CUDA libraries" (line 90 in 2.6).
2. ``enable_language(CUDA)``: CMake compiles and links a test with nvcc (``-lcudadevrt
   -lcudart_static`` from nvcc's own ``-L`` dirs). Only the static libraries are predicted
   here; whether nvcc compiles at all is ``build.nvcc-kernel``'s question.
3. ``find_package(CUDAToolkit REQUIRED)`` with torch's bundled ``Caffe2/FindCUDAToolkit.cmake``
   (2.1 on; Caffe2Config appends its dir to ``CMAKE_MODULE_PATH``, which CMake searches before
   its own modules), whatever CMake runs it. :mod:`pytest_vllm_env.facts.find_cudatoolkit` decides
   which module runs and predicts it (one prediction for both checks): the include dir is
   ``<root>/include/cuda_runtime.h`` only, unless ``CUDAToolkit_INCLUDE_DIR`` is preset (``-D``
   in ``CMAKE_ARGS``, which vLLM >= 0.12's setup.py passes on); ``CUDA::nvToolsExt`` needs
   ``nvToolsExt.h`` as well as ``libnvToolsExt.so``, ``$NVTOOLSEXT_PATH`` counts on Linux, and
   there is no CUDA 12.9 cut-off.
4. NVTX: 2.1 to 2.4 stop with ``Failed to find nvToolsExt`` without ``CUDA::nvToolsExt``;
   2.5 to 2.7 link ``torch::nvtoolsext`` to ``CUDA::nvToolsExt`` unless an ``nvtx3`` dir is
   found (under the consumer's ``PROJECT_SOURCE_DIR``: never for vLLM); 2.0 (and
   ``TorchConfig.cmake`` 2.0 to 2.4) ``find_library(LIBNVTOOLSEXT libnvToolsExt.so PATHS
   ${CUDA_TOOLKIT_ROOT_DIR}/lib64/)``; 2.8 on: no NVTX at all. These blockers
   (:data:`NVTX_SIGNATURES`) are also ``nvtx.cmake-target``'s verdict, in the same words.
5. Generate time: every ``CUDA::`` target reachable from what vLLM links must exist
   (``torch_cuda``'s link interface in ``Caffe2Targets.cmake``: 2.1 pulls ``caffe2::cublas``,
   ``caffe2::cufft``, ``caffe2::curand`` and ``torch::nvtoolsext``), and
   ``${CUDA_NVRTC_LIB}`` in ``TORCH_LIBRARIES`` must not be NOTFOUND (``libnvrtc.so``).

:func:`read_torch_config` reads the files (:mod:`pytest_vllm_env.readers.torch_cmake` parses
them); :func:`predict_config` walks them as CMake will, a fact with the blockers in the order a
user meets them; ``cmake.torch-config`` (:mod:`pytest_vllm_env.checks.torch_cmake`) judges it.
The probe (:mod:`pytest_vllm_env.runners.cmake_probe`) runs the same thing for real; the check
``cmake.prediction-agrees`` compares the two.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pytest_vllm_env import files
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.find_cudatoolkit import (
    Prediction,
    dedup_paths,
    find_lib,
    nvtoolsext_cause,
    nvtoolsext_fix,
    nvtx_v2_fix,
    predict,
    read_torch_cmake,
)
from pytest_vllm_env.facts.toolkit import ToolkitFacts
from pytest_vllm_env.readers.torch_cmake import SHARE, TorchCMake, cmake_args, parse_torch_cmake
from pytest_vllm_env.readers.vllm_build import VllmLinks
from pytest_vllm_env.tables.cmake_cuda import SYSTEM_INCLUDE_DIRS, SYSTEM_LIB_DIRS, cmake_module
from pytest_vllm_env.tables.cuda_archs import version_tuple as _ver
from pytest_vllm_env.tables.cuda_libs import TARGET_LIBS, TARGET_PACKAGES

# What vLLM links: torch, ${TORCH_LIBRARIES} (through its C++-only extension) and, for the
# CUDA extensions, CUDA::cudart and CUDA::cuda_driver.
VLLM_LINKS = ("torch", "${TORCH_LIBRARIES}", "CUDA::cudart", "CUDA::cuda_driver")

# The blockers that are about NVTX: torch 2.1-2.4's FATAL, 2.5-2.7's torch::nvtoolsext link,
# 2.0-2.4's TorchConfig LIBNVTOOLSEXT (F1.1).
# what to change where the vLLM source tree's CMake files cannot be read (cmake.torch-config,
# nvtx.cmake-target)
VLLM_SOURCE_FIX = (
    "restore the file from the vLLM release you build (`git checkout -- .` in a git clone), "
    "or pass --vllm-source=PATH of an intact tree"
)
NVTX_SIGNATURES = ("nvtoolsext-fatal", "link:CUDA::nvToolsExt", "notfound:LIBNVTOOLSEXT")


def read_torch_config(env: PixiEnv) -> TorchCMake | None:
    """The env's torch CMake files, or None without torch or without ``share/cmake``."""
    dist = env.dist("torch")
    if dist is None:
        return None
    root = dist.location / SHARE
    if not root.is_dir():
        return None
    config = _existing(root / "Torch" / "TorchConfig.cmake")
    caffe2 = _existing(root / "Caffe2" / "Caffe2Config.cmake")
    cuda = _existing(root / "Caffe2" / "public" / "cuda.cmake")
    facts = TorchCMake(root, dist.version, config, caffe2, cuda)

    def read(path: Path | None) -> str:  # there and unreadable: named in facts.unreadable
        text, why = files.read_text_if_present(path, files.SOURCE) if path else (None, "")
        if why:
            facts.unreadable.append(why)
        return text or ""

    targets = [read(p) for p in sorted((root / "Caffe2").glob("Caffe2Targets*.cmake"))]
    parse_torch_cmake(facts, read(cuda), read(config), read(caffe2), targets)
    facts.nvtx = read_torch_cmake(env)
    # the one reader of which FindCUDAToolkit runs (find_cudatoolkit.py): Caffe2Config's module
    # path
    facts.bundled_findcudatoolkit = bool(facts.nvtx and facts.nvtx.bundled)
    return facts


def _existing(path: Path) -> Path | None:
    """``path`` when anything is there (a FIFO too: then unreadable, not absent)."""
    return path if files.lexists(path) else None


# -- the walk ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Blocker:
    """One error CMake will report: ``signature`` is what :mod:`cmake_probe` finds in the
    real output for the same cause (``caffe2-cuda``, ``cudatoolkit``, ``nvtoolsext-fatal``,
    ``link:CUDA::nvToolsExt``, ``notfound:CUDA_nvrtc_LIBRARY`` ...)."""

    signature: str
    message: str  # what CMake will say
    cause: str  # why, in terms of the env's files
    fix: str


@dataclass
class ConfigPrediction:
    """What torch's CMake config will do inside a vLLM build."""

    torch_version: str | None
    stop: Blocker | None = None  # the configure-time error that ends the run
    generate: list[Blocker] = field(default_factory=list)  # generate-time errors
    # every blocker, in the order a user would meet them fixing one after the other
    blockers: list[Blocker] = field(default_factory=list)
    complete: bool = True  # False: the walk stopped where the model ends (see not_modelled)
    not_modelled: list[str] = field(default_factory=list)
    legacy_root: str | None = None
    legacy_include: str | None = None
    legacy_cudart: str | None = None
    targets: dict[str, str] = field(default_factory=dict)  # CUDA:: targets torch's run creates
    needed: dict[str, str] = field(default_factory=dict)  # CUDA::X -> which torch target needs it
    searched: dict[str, list[str]] = field(default_factory=dict)
    torch_libraries: bool = True  # the vLLM being built links ${TORCH_LIBRARIES}
    torch_libraries_why: str = ""
    # --vllm-source's CMakeLists.txt or cmake/utils.cmake there and unreadable (issue 21)
    vllm_error: str = ""
    # torch's CMake files there and unreadable ("path: cannot be read: why"): the walk past
    # them is a guess, which cmake.torch-config and nvtx.cmake-target name instead
    torch_unreadable: list[str] = field(default_factory=list)
    cmake_prefix: str | None = None  # the cmake's own install prefix (searched by find_library)
    cudatoolkit: Prediction | None = None  # find_package(CUDAToolkit) as torch's cuda.cmake runs it
    libnvtoolsext: str | None = None  # TorchConfig's LIBNVTOOLSEXT, where it looked and found one

    @property
    def ok(self) -> bool:
        return not self.blockers

    def block(self, blocker: Blocker, *, configure: bool = True) -> None:
        """Record a blocker; the first configure-time one is where CMake stops."""
        self.blockers.append(blocker)
        if configure and self.stop is None:
            self.stop = blocker
        elif not configure and self.stop is None:
            self.generate.append(blocker)

    @property
    def nvtx_blockers(self) -> list[Blocker]:
        """The errors about NVTX (``nvtx.cmake-target`` reports these, in these words)."""
        return [b for b in self.blockers if b.signature in NVTX_SIGNATURES]

    @property
    def signatures(self) -> list[str]:
        if self.stop:
            return [self.stop.signature]
        return sorted(b.signature for b in self.generate)


def predict_config(
    env: PixiEnv,
    t: ToolkitFacts,
    torch: TorchCMake,
    cmake_version: str,
    *,
    system_lib_dirs: tuple[str, ...] = SYSTEM_LIB_DIRS,
    system_include_dirs: tuple[str, ...] = SYSTEM_INCLUDE_DIRS,
    cmake: Path | None = None,
    vllm: VllmLinks | None = None,
) -> ConfigPrediction:
    """Walk torch's CMake config for a vLLM consumer; see the module docstring for the order.
    ``cmake`` is the cmake the build runs (its install prefix is a find_library dir); ``vllm``
    what the vLLM being built links (:func:`read_vllm_links`; default: ``${TORCH_LIBRARIES}``
    too, as every vLLM since 0.5.4 does)."""
    environ = t.environ
    presets = cmake_args(environ)
    out = ConfigPrediction(torch.version)
    vllm = vllm or VllmLinks()
    out.torch_libraries, out.torch_libraries_why = vllm.torch_libraries, vllm.why
    out.vllm_error = vllm.error
    out.torch_unreadable = list(torch.unreadable)
    cmake_prefix = cmake_install_prefix(cmake)
    out.cmake_prefix = str(cmake_prefix) if cmake_prefix else None
    path_prefixes = _path_prefixes(environ)
    # 1. torch's old FindCUDA
    root = presets.get("CUDA_TOOLKIT_ROOT_DIR") or _legacy_root(environ)
    out.legacy_root = root
    if torch.legacy_findcuda:
        include_dirs = [f"{root}/include"] if root else []
        include_dirs += [
            f"{environ[v]}/include" for v in ("CUDA_PATH", "CUDA_INC_PATH") if environ.get(v)
        ]
        include_dirs += [f"{p}/include" for p in path_prefixes] + list(system_include_dirs)
        out.searched["device_functions.h"] = dedup_paths(include_dirs)
        out.legacy_include = next(
            (d for d in dedup_paths(include_dirs) if os.path.isfile(f"{d}/device_functions.h")),
            None,
        )
        lib_dirs = [f"{root}/lib64", f"{root}/lib"] if root else []
        for var in ("CUDA_PATH", "CUDA_LIB_PATH"):
            if environ.get(var):
                lib_dirs += [f"{environ[var]}/lib64", f"{environ[var]}/lib"]
        lib_dirs += [f"{p}/lib" for p in path_prefixes] + list(system_lib_dirs)
        out.searched["libcudart.so (FindCUDA)"] = dedup_paths(lib_dirs)
        out.legacy_cudart = find_lib("cudart", dedup_paths(lib_dirs))
        missing = [
            n
            for n, ok in (
                ("CUDA_TOOLKIT_ROOT_DIR", root),
                ("CUDA_INCLUDE_DIRS", out.legacy_include),
                ("CUDA_CUDART_LIBRARY", out.legacy_cudart),
            )
            if not ok
        ]
        if missing:
            line = f":{torch.caffe2_fatal_line}" if torch.caffe2_fatal_line else ""
            targets_inc = t.prefix / "targets/x86_64-linux/include"
            if "CUDA_INCLUDE_DIRS" in missing and (targets_inc / "device_functions.h").is_file():
                fix = (
                    fixes.set_var(env, "CUDA_INC_PATH", "${CONDA_PREFIX}/targets/x86_64-linux")
                    + " (torch's FindCUDA looks for device_functions.h in $CUDA_INC_PATH/include; "
                    "a conda-forge toolkit has no headers in $CONDA_PREFIX/include)"
                )
            elif root is None:
                fix = (
                    fixes.add(env, fixes.Package("cuda-nvcc", f"{_mm(t)}.*"))
                    + " (no nvcc on PATH or in $CUDA_PATH)"
                )
            else:
                fix = fixes.add(env, fixes.Package("cuda-cudart-dev", f"{_mm(t)}.*"))
            out.block(
                Blocker(
                    "caffe2-cuda",
                    f"Caffe2Config.cmake{line}: Your installed Caffe2 version uses CUDA but I "
                    "cannot find the CUDA libraries",
                    f"torch's FindCUDA (find_package(CUDA)) finds no {' '.join(missing)} "
                    f"(Could NOT find CUDA (missing: {' '.join(missing)}))",
                    fix,
                )
            )
    # 2. enable_language(CUDA): only the static runtime its test link needs is predicted
    if torch.enables_cuda:
        top = Path(t.nvcc.top) if t.nvcc and t.nvcc.top else None
        if top is not None and not os.path.isdir(top / "nvvm" / "libdevice"):
            # CMake's CUDA toolkit search takes the dir holding nvvm/libdevice as the
            # "library root" (Modules/Internal/CMakeCUDAFindToolkit.cmake, 3.26 to 4.4)
            out.block(
                Blocker(
                    "compiler-id",
                    "CMakeDetermineCUDACompiler: Couldn't find CUDA library root.",
                    f"enable_language(CUDA) needs {top}/nvvm/libdevice next to nvcc; it is "
                    "missing (an nvcc without its nvvm part)",
                    "install the whole compiler (the `cuda-nvcc` package brings nvvm/ with it; a "
                    "bare nvcc binary or a partial toolkit does not): "
                    + fixes.add(env, fixes.Package("cuda-nvcc", f"{_mm(t)}.*")),
                )
            )
        nvcc_libs = list(t.nvcc.libraries) if t.nvcc else []
        missing_static = [
            f"lib{n}.a"
            for n in ("cudadevrt", "cudart_static")
            if nvcc_libs and not any(os.path.isfile(f"{d}/lib{n}.a") for d in nvcc_libs)
        ]
        if missing_static:
            out.block(
                Blocker(
                    "compiler-id",
                    "CMakeDetermineCompilerId: Compiling the CUDA compiler identification source "
                    "file failed (ld: cannot find -lcudadevrt / -lcudart_static)",
                    f"enable_language(CUDA) links its test with nvcc's -L dirs "
                    f"({', '.join(nvcc_libs)}), which hold no {', '.join(missing_static)}",
                    fixes.add(env, fixes.Package("cuda-cudart-static", f"{_mm(t)}.*"))
                    + " (or `cuda-cudart-dev`, which depends on it)",
                )
            )
        out.not_modelled.append(
            "enable_language(CUDA): that nvcc compiles at all (build.nvcc-kernel runs it)"
        )
    if not torch.finds_cudatoolkit:
        # torch 2.0 finds the CUDA libraries with the old FindCUDA alone and makes no CUDA::
        # targets: the first CUDA:: target vLLM links is missing (CMake names the first one per
        # target), and TorchConfig's LIBNVTOOLSEXT lookup follows (real torch 2.0.1 + CMake
        # 4.1.2: "link:CUDA::cudart, notfound:LIBNVTOOLSEXT"). No vLLM release builds against
        # torch 2.0 (vLLM's CMake build starts with torch 2.1).
        out.block(
            Blocker(
                "link:CUDA::cudart",
                "Target links to: CUDA::cudart but the target was not found",
                f"torch {torch.version}'s CMake runs no find_package(CUDAToolkit), so no CUDA:: "
                "target exists for vLLM's extensions",
                f"install the torch the vLLM tag pins (torch {torch.version} predates vLLM's "
                "CMake build, which starts with torch 2.1): "
                + fixes.add(env, fixes.Package("torch", ">=2.1", pypi=True), verb="set"),
            ),
            configure=False,
        )
        _libnvtoolsext(out, env, t, torch, root, presets, cmake_prefix, system_lib_dirs)
        return out
    # 3. find_package(CUDAToolkit REQUIRED), torch's bundled copy or CMake's own (nvtx.py
    # decides which, and reads its rules); the CUDA:: targets vLLM links come from it.
    pred = predict(t, cmake_version, torch.nvtx, system_lib_dirs=system_lib_dirs, presets=presets)
    if torch.finds_cudatoolkit and not pred.found:
        inc = t.prefix / "targets/x86_64-linux/include"
        fix = fixes.add(env, fixes.Package("cuda-cudart-dev", f"{_mm(t)}.*"))
        include_fix = (
            "CUDAToolkit_INCLUDE_DIR" in pred.why_not_found and (inc / "cuda_runtime.h").is_file()
        )
        if include_fix:
            fix = (
                fixes.set_var(
                    env,
                    "CMAKE_ARGS",
                    "-DCUDAToolkit_INCLUDE_DIR=${CONDA_PREFIX}/targets/x86_64-linux/include",
                )
                + f" (vLLM >= 0.12 passes CMAKE_ARGS to cmake; {pred.module} looks only in "
                f"{pred.root}/include)"
            )
        out.block(
            Blocker(
                "cudatoolkit",
                pred.why_not_found or "Could NOT find CUDAToolkit",
                f"{pred.module} (find_package(CUDAToolkit REQUIRED) in torch's cuda.cmake): "
                f"{pred.why_not_found}",
                fix,
            )
        )
        # the rest as if it had been found: with the fix in place, else CMake's own module
        # with nvcc's include dirs
        if include_fix:
            fixed = {**presets, "CUDAToolkit_INCLUDE_DIR": str(inc)}
            pred = predict(
                t, cmake_version, torch.nvtx, system_lib_dirs=system_lib_dirs, presets=fixed
            )
        if not pred.found:
            pred = predict(
                t,
                "3.28.0",
                torch.nvtx,
                system_lib_dirs=system_lib_dirs,
                module=cmake_module("3.28.0"),
            )
    out.cudatoolkit = pred
    out.targets = dict(pred.targets)
    _more_targets(out, pred, system_lib_dirs)
    # 4. configure-time NVTX / target checks
    for target in torch.fatal_targets:
        if target not in out.targets:
            nvtx = "nvToolsExt" in target
            out.block(
                _missing_target_blocker(
                    env,
                    t,
                    target,
                    "nvtoolsext-fatal" if nvtx else f"fatal:{target}",
                    "Failed to find nvToolsExt" if nvtx else f"{target} not found",
                    f"torch's cuda.cmake stops unless FindCUDAToolkit created {target}",
                    pred,
                )
            )
    for target in torch.property_targets:
        if target not in out.targets:
            out.block(
                _missing_target_blocker(
                    env,
                    t,
                    target,
                    f"property:{target}",
                    f'get_target_property() called with non-existent target "{target}"',
                    "torch's cuda.cmake reads a property of it",
                    pred,
                )
            )
    # 5. generate time: what vLLM links, through torch's link interfaces
    start = ["torch"]
    if torch.nvtoolsext_in_torch_libraries and out.torch_libraries and not pred_nvtx3_found(torch):
        start.append("torch::nvtoolsext")  # TorchConfig: if(TARGET torch::nvtoolsext) append
    needed = torch.closure(start)
    needed.update({"CUDA::cudart": "", "CUDA::cuda_driver": ""})
    out.needed = needed
    direct_reported = False
    link_order = {"CUDA::cudart": 0, "CUDA::cuda_driver": 1}  # vLLM's target_link_libraries
    for target, via in sorted(
        needed.items(), key=lambda kv: (kv[1] == "", link_order.get(kv[0], 2), kv[0])
    ):
        if target in out.targets:
            continue
        if not via:
            # CMake names the first missing item of one target_link_libraries only
            if direct_reported:
                continue
            direct_reported = True
        if via:
            sig, msg = (
                f"link:{target}",
                (
                    f'The link interface of target "{via}" contains: {target} but the target was '
                    "not found"
                ),
            )
        else:
            sig, msg = f"link:{target}", f"Target links to: {target} but the target was not found"
        out.block(
            _missing_target_blocker(
                env, t, target, sig, msg, f"linked through {via or 'vLLM'}", out.cudatoolkit
            ),
            configure=False,
        )
    if out.torch_libraries and torch.nvrtc_in_torch_libraries and "CUDA::nvrtc" not in out.targets:
        out.block(
            Blocker(
                "notfound:CUDA_nvrtc_LIBRARY",
                "The following variables are used in this project, but they are set to "
                "NOTFOUND: CUDA_nvrtc_LIBRARY",
                "TorchConfig.cmake puts ${CUDA_NVRTC_LIB} into TORCH_LIBRARIES, which vLLM's "
                "C++ extension links; no unversioned libnvrtc.so was found",
                fixes.add(env, fixes.Package("cuda-nvrtc-dev", f"{_mm(t)}.*")),
            ),
            configure=False,
        )
    _libnvtoolsext(out, env, t, torch, root, presets, cmake_prefix, system_lib_dirs)
    return out


def _libnvtoolsext(
    out: ConfigPrediction,
    env: PixiEnv,
    t: ToolkitFacts,
    torch: TorchCMake,
    root: str | None,
    presets: dict[str, str],
    cmake_prefix: Path | None,
    system_lib_dirs: tuple[str, ...],
) -> None:
    """F1.1 (vllm#3673): ``find_library(LIBNVTOOLSEXT libnvToolsExt.so PATHS
    ${CUDA_TOOLKIT_ROOT_DIR}/lib64/)``, put into ``TORCH_LIBRARIES`` by torch 2.0-2.4's
    TorchConfig.cmake. A conda toolkit has ``lib/``, no ``lib64/``; and on Linux CMake does not
    turn PATH's ``<prefix>/bin`` into ``<prefix>/lib`` (measured, CMake 3.26.4 and 4.1.2):
    ``$CONDA_PREFIX/lib`` is searched only when the cmake that runs is installed in the env
    (its own prefix is in ``CMAKE_SYSTEM_PREFIX_PATH``) or ``CMAKE_LIBRARY_PATH`` /
    ``CMAKE_PREFIX_PATH`` name it. The reporter's cmake came from PyPI (pip's build isolation),
    so the ``libnvToolsExt.so`` that FindCUDAToolkit had found next to libcudart was not."""
    if not (torch.libnvtoolsext_lib64 and torch.libnvtoolsext_in_torch_libraries):
        return
    if not out.torch_libraries:
        return  # the vLLM being built links the `torch` target only (vLLM #3698, 0.4.1-0.5.3)
    dirs = _find_library_dirs(t.environ, presets, cmake_prefix, system_lib_dirs)
    dirs += [f"{root}/lib64"] if root else []
    searched = dedup_paths(dirs)
    out.searched["libnvToolsExt.so (LIBNVTOOLSEXT)"] = searched
    found = next((d for d in searched if os.path.isfile(f"{d}/libnvToolsExt.so")), None)
    if found is not None:
        out.libnvtoolsext = str(Path(found) / "libnvToolsExt.so")
        return
    have = t.unversioned("libnvToolsExt.so")
    where = (
        f"{root}/lib64/ (no such dir: a conda toolkit keeps its libraries in lib/)"
        if root and not os.path.isdir(f"{root}/lib64")
        else f"{root}/lib64/"
    )
    cmake = (
        f"the cmake's own prefix {cmake_prefix}"
        if cmake_prefix is not None
        else "not the env's lib/: the cmake is not installed in the env"
    )
    cause = (
        f"torch {torch.version}'s TorchConfig.cmake looks for libnvToolsExt.so only in CMake's "
        f"default dirs ({cmake}) and {where}, and puts it into TORCH_LIBRARIES, which "
        f"{out.torch_libraries_why}"
    )
    if have is not None:
        cause += f"; the env's {have} is in none of them"
    fix = _libnvtoolsext_fix(env, t, have)
    out.block(
        Blocker(
            "notfound:LIBNVTOOLSEXT",
            "The following variables are used in this project, but they are set to "
            "NOTFOUND: LIBNVTOOLSEXT",
            cause,
            fix,
        ),
        configure=False,
    )


def _libnvtoolsext_fix(env: PixiEnv, t: ToolkitFacts, have: Path | None) -> str:
    """Name the dir that holds libnvToolsExt.so to CMake (``CMAKE_LIBRARY_PATH`` reaches every
    find_library, through pip's build isolation too); add NVTX first when there is none."""
    if have is None:
        v2 = _nvtx_v2_fix(env, t)
        if v2:
            return v2
    lib_dir = have.parent if have is not None else t.prefix / "lib"
    try:
        value = "${CONDA_PREFIX}/" + str(lib_dir.relative_to(t.prefix))
    except ValueError:
        value = str(lib_dir)
    parts = []
    if have is None:
        parts.append(fixes.add(env, fixes.Package("cuda-nvtx-dev", f"{_mm(t)}.*")))
    parts.append(
        fixes.set_var(env, "CMAKE_LIBRARY_PATH", value)
        + " (CMake's find_library searches it first; vllm#3673's conda env needed exactly this)"
    )
    return (
        "; then ".join(parts) + ", or use torch >= 2.5 (its TorchConfig.cmake has no LIBNVTOOLSEXT)"
    )


def _find_library_dirs(
    environ: dict[str, str],
    presets: dict[str, str],
    cmake_prefix: Path | None,
    system_lib_dirs: tuple[str, ...],
) -> list[str]:
    """Where ``find_library`` looks on Linux before its ``PATHS``: ``-DCMAKE_PREFIX_PATH`` /
    ``-DCMAKE_LIBRARY_PATH``, the same environment variables, then ``CMAKE_SYSTEM_PREFIX_PATH``
    (``/usr/local``, ``/usr``, ``/``, cmake's own install prefix, ``/opt``...) and the system
    dirs. PATH's entries are searched as they are (``bin/``), not as ``<prefix>/lib``."""
    dirs: list[str] = []
    for source in (presets, environ):
        for p in _split(source.get("CMAKE_PREFIX_PATH", ""), source is presets):
            dirs += [f"{p}/lib64", f"{p}/lib"]
        dirs += _split(source.get("CMAKE_LIBRARY_PATH", ""), source is presets)
    dirs += _split(environ.get("LIB", ""), False)
    prefixes = ["/usr/local", "/usr", ""]
    if cmake_prefix is not None:
        prefixes.append(str(cmake_prefix))
    prefixes += ["/usr/X11R6", "/usr/pkg", "/opt"]
    for p in prefixes:
        dirs += [f"{p}/lib/x86_64-linux-gnu", f"{p}/lib64", f"{p}/lib"]
    return dirs + list(system_lib_dirs)


def _split(value: str, cmake_list: bool) -> list[str]:
    """A ``-D`` value is a CMake list (``;``); an environment variable a PATH-like list."""
    return [v for v in value.split(";" if cmake_list else os.pathsep) if v]


def cmake_install_prefix(cmake: Path | None) -> Path | None:
    """The prefix a cmake binary is installed in (``<prefix>/bin/cmake`` beside
    ``<prefix>/share/cmake-X.Y``, symlinks resolved, as CMake finds its own root): a conda-forge
    cmake in the env gives the env's prefix, whose ``lib/`` every find_library then searches. A
    PyPI cmake (an entry-point script, or ``site-packages/cmake/data``) gives none of the env's."""
    if cmake is None:
        return None
    real = Path(os.path.realpath(cmake))
    top = real.parent.parent
    try:
        has_root = any(top.glob("share/cmake-*/Modules"))
    except OSError:
        has_root = False
    return top if real.parent.name == "bin" and has_root else None


def _nvtx_v2_fix(env: PixiEnv, t: ToolkitFacts) -> str:
    if _ver(t.version or "0") < (12, 9):
        return ""
    return nvtx_v2_fix(env, t.version or "12.9")


def pred_nvtx3_found(torch: TorchCMake) -> bool:
    """torch 2.5-2.7: an nvtx3 dir found where its installed cuda.cmake looks (never the
    consumer's PROJECT_SOURCE_DIR)."""
    if torch.nvtx is None:
        return False
    for raw in torch.nvtx.nvtx3_paths:
        if "PROJECT_SOURCE_DIR" in raw:
            continue
        if os.path.isdir(f"{raw}/nvtx3"):
            return True
    return False


def _more_targets(
    out: ConfigPrediction, pred: Prediction, system_lib_dirs: tuple[str, ...]
) -> None:
    """Targets beyond the four :func:`nvtx.predict` models (cuBLAS and friends): the same
    ``find_library`` of the unversioned name next to libcudart, ``$CUDA_PATH`` and the system."""
    if not pred.cudart:
        return
    lib_dir = os.path.dirname(pred.cudart)
    dirs = [lib_dir, os.path.realpath(lib_dir), *system_lib_dirs]
    for target, names in TARGET_LIBS.items():
        key = f"CUDA::{target}"
        if key in out.targets or target in ("cudart", "cuda_driver", "nvrtc", "nvToolsExt"):
            continue
        for name in names:
            found = find_lib(name, dirs)
            if found:
                out.targets[key] = found
                break


def _missing_target_blocker(
    env: PixiEnv,
    t: ToolkitFacts,
    target: str,
    signature: str,
    message: str,
    cause: str,
    pred: Prediction | None,
) -> Blocker:
    name = target.removeprefix("CUDA::")
    package = TARGET_PACKAGES.get(name, "cuda-toolkit")
    installed = package in env.conda_packages
    mm = _mm(t)
    libs = TARGET_LIBS.get(name, (name,))
    if name == "nvToolsExt":
        # one judge of NVTX fixes (nvtx.py), so that nvtx.cmake-target says the same
        return Blocker(
            signature,
            message,
            f"{cause}; {pred.module}: {nvtoolsext_cause(t, pred)}" if pred else cause,
            nvtoolsext_fix(env, t, pred),
        )
    if installed:
        where = os.path.dirname(pred.cudart) if pred and pred.cudart else "?"
        fix = (
            f"{package} is installed but no unversioned lib{libs[0]}.so is where CMake looks "
            f"(next to libcudart: {where}): reinstall it ({fixes.reinstall(env, package)}) or "
            f"check its version matches CUDA {mm}"
        )
    else:
        fix = fixes.add(env, fixes.Package(package, f"{mm}.*"))
    return Blocker(signature, message, f"{cause}; FindCUDAToolkit found no lib{libs[0]}.so", fix)


def _legacy_root(environ: dict[str, str]) -> str | None:
    """CUDA_TOOLKIT_ROOT_DIR as torch's FindCUDA derives it: nvcc from $CUDA_TOOLKIT_ROOT,
    $CUDA_PATH, $CUDA_BIN_PATH (bin/, bin64/), then PATH, then /usr/local/cuda, /opt/cuda."""
    candidates = []
    for var in ("CUDA_TOOLKIT_ROOT", "CUDA_PATH", "CUDA_BIN_PATH"):
        if environ.get(var):
            candidates += [f"{environ[var]}/bin/nvcc", f"{environ[var]}/bin64/nvcc"]
    candidates += [f"{p}/nvcc" for p in environ.get("PATH", "").split(os.pathsep) if p]
    candidates += ["/usr/local/cuda/bin/nvcc", "/opt/cuda/bin/nvcc"]
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return re.sub(r"/bin(64)?/?$", "", os.path.dirname(os.path.normpath(c)))
    return None


def _path_prefixes(environ: dict[str, str]) -> list[str]:
    return [
        os.path.dirname(os.path.normpath(p))
        for p in environ.get("PATH", "").split(os.pathsep)
        if p and os.path.basename(os.path.normpath(p)) in ("bin", "sbin")
    ]


def _mm(t: ToolkitFacts) -> str:
    return ".".join((t.version or t.packages.get("cuda-version") or "12.8").split(".")[:2])
