"""CMake and CUDA: where CMake looks for nvcc and the CUDA libraries on Linux, what it says
when it finds none, and the rules of its ``FindCUDAToolkit`` by version.

Read by the predictions of what a vLLM build's CMake will find
(:mod:`pytest_vllm_env.facts.find_cudatoolkit`, :mod:`pytest_vllm_env.facts.torch_config`,
:mod:`pytest_vllm_env.facts.build_nvcc`) and by the verdicts on them (``cuda.nvcc-in-env``,
``nvtx.cmake-target``, ``cmake.torch-config``). Each row says which upstream file and
version it was read from, or which CMake it was measured with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pytest_vllm_env.tables.cuda_archs import version_tuple

# find_library's system dirs on Linux (x86_64), after the hints and PATH's prefixes.
SYSTEM_LIB_DIRS = ("/usr/local/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib", "/lib64", "/lib")
SYSTEM_INCLUDE_DIRS = ("/usr/local/include", "/usr/include/x86_64-linux-gnu", "/usr/include")
# CMAKE_SYSTEM_PREFIX_PATH on Linux, as a PyPI CMake prints it (3.31.10, 4.4.5); the install
# prefix (/usr/local) comes first and CMake's own data dir (no nvcc) is left out.
SYSTEM_PREFIXES: tuple[str, ...] = ("/usr/local", "/usr", "/", "/usr/X11R6", "/usr/pkg", "/opt")
# Where CUDA toolkits live outside any env, for naming one in a fix (never for a verdict).
SYSTEM_TOOLKITS: tuple[str, ...] = ("/usr/local/cuda", "/usr/local/cuda-*", "/opt/cuda")
# CMakeDetermineCXXCompiler's names on Linux, in order (3.31 and 4.4 alike).
CXX_NAMES = ("CC", "c++", "g++", "aCC", "cl", "bcc", "xlC", "icpx", "icx", "clang++")
NO_NVCC_OLD = "Failed to detect a default CUDA architecture."  # CMake < 4.1
NO_NVCC_NEW = "No CMAKE_CUDA_COMPILER could be found."  # CMake >= 4.1
# What the verdicts call torch's own copy of the module (share/cmake/Caffe2/FindCUDAToolkit.cmake).
BUNDLED = "torch's bundled Caffe2/FindCUDAToolkit.cmake"


@dataclass(frozen=True)
class FindModule:
    """The rules of the ``FindCUDAToolkit.cmake`` a build runs, where CMake's own module (by
    version) and torch's bundled copy (read from its text) differ."""

    name: str  # what the verdicts call it
    include_from_nvcc: bool = False  # 3.28+: the INCLUDES nvcc -v prints; else <root>/include
    include_preset: bool = False  # keeps a -DCUDAToolkit_INCLUDE_DIR preset (torch's copy)
    realpath_hint: bool = False  # 3.28+: libcudart's real dir is a hint too
    nvtoolsext_header: bool = False  # CUDA::nvToolsExt needs nvToolsExt.h found as well
    header_hint: bool = False  # $NVTOOLSEXT_PATH/include searched for it on Linux
    library_hint: bool = False  # $NVTOOLSEXT_PATH searched for libnvToolsExt on Linux
    nvtoolsext_until: tuple[int, int] | None = None  # not looked for from this CUDA (4.1+: 12.9)
    nvtx3: bool = False  # creates the header-only CUDA::nvtx3 (CUDA >= 10)
    path: Path | None = None

    @property
    def bundled(self) -> bool:
        return self.path is not None


def cmake_module(cmake_version: str) -> FindModule:
    """CMake's own ``Modules/FindCUDAToolkit.cmake`` of ``cmake_version`` (3.25.1 and the
    tags 3.28.0 to 4.4.0 read): ``NVTOOLSEXT_PATH`` only inside ``if(WIN32)``."""
    cm = version_tuple(cmake_version)
    return FindModule(
        name=f"CMake {cmake_version}'s FindCUDAToolkit",
        include_from_nvcc=cm >= (3, 28),
        realpath_hint=cm >= (3, 28),
        nvtoolsext_until=(12, 9) if cm >= (4, 1) else None,
        nvtx3=cm >= (3, 25),
    )
