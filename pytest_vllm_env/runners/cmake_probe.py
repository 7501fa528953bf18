"""The real probe behind ``nvtx.cmake-target`` and ``cmake.torch-config``: run the env's
CMake on a tiny project that does what a vLLM source build does.

With torch's ``TorchConfig.cmake`` in the env, the project does what vLLM's CMakeLists does
(vLLM 0.6 to 0.33 read): ``find_package(Torch)`` first (no ``find_package(CUDAToolkit)``
before it, so torch's own module runs), then a library linked to ``torch ${TORCH_LIBRARIES}
CUDA::cudart CUDA::cuda_driver`` (vLLM's C++-only extension links ``${TORCH_LIBRARIES}``; its
CUDA ones ``CUDA::cudart CUDA::cuda_driver``), with ``CMAKE_ARGS`` passed on as vLLM >= 0.13's
setup.py does. Without torch it runs ``find_package(CUDAToolkit)`` and prints the ``CUDA::``
targets; with only torch's ``Caffe2/public/cuda.cmake`` (no TorchConfig) it includes that file
and links torch's NVTX target.

What CMake printed comes back as data (:mod:`pytest_vllm_env.readers.cmake_output`: its
errors classified into the signatures :mod:`pytest_vllm_env.facts.torch_config` predicts);
the verdicts on it, and on whether prediction and probe agree, are
:mod:`pytest_vllm_env.checks.cmake_probe`'s.

Nothing is written to the env: the project and the build dir live in ``workdir``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pytest_vllm_env import files, proc
from pytest_vllm_env.facts.toolkit import ToolkitFacts
from pytest_vllm_env.readers.cmake_output import (
    MARK,
    ProbeResult,
    parse_cmake_version,
    read_output,
)
from pytest_vllm_env.readers.torch_cmake import TorchCMake, TorchCudaCmake, cmake_args

CMAKE_TIMEOUT = 120.0
TARGETS = ("cudart", "cuda_driver", "nvrtc", "nvToolsExt", "nvtx3")
ALL_TARGETS = (*TARGETS, "cublas", "cublasLt", "cufft", "curand", "cuFile")
FOUND_LINES = """\
message(STATUS "{mark} found=${{CUDAToolkit_FOUND}}")
message(STATUS "{mark} version=${{CUDAToolkit_VERSION}}")
"""

CMAKELISTS = """\
cmake_minimum_required(VERSION 3.18)
project(vllm_env_probe LANGUAGES {languages})
find_package(CUDAToolkit)
message(STATUS "{mark} found=${{CUDAToolkit_FOUND}}")
message(STATUS "{mark} version=${{CUDAToolkit_VERSION}}")
message(STATUS "{mark} include=${{CUDAToolkit_INCLUDE_DIRS}}")
message(STATUS "{mark} cudart=${{CUDA_CUDART}}")
message(STATUS "{mark} nvcc=${{CUDAToolkit_NVCC_EXECUTABLE}}")
foreach(t {targets})
  if(TARGET CUDA::${{t}})
    get_target_property(loc CUDA::${{t}} IMPORTED_LOCATION)
    if(NOT loc)
      get_target_property(loc CUDA::${{t}} IMPORTED_IMPLIB)
    endif()
    message(STATUS "{mark} target=CUDA::${{t}} ${{loc}}")
  endif()
endforeach()
{torch}
"""

# A vLLM build: find_package(Torch) first, then link what vLLM's extensions link.
VLLM_BLOCK = """\
find_package(Torch PATHS "{config_dir}" NO_DEFAULT_PATH)
message(STATUS "{mark} torch_found=${{Torch_FOUND}}")
foreach(t {targets})
  if(TARGET CUDA::${{t}})
    message(STATUS "{mark} target=CUDA::${{t}}")
  endif()
endforeach()
file(WRITE "${{CMAKE_BINARY_DIR}}/probe.cc" "int vllm_env_probe() {{ return 0; }}\\n")
add_library(vllm_env_probe SHARED "${{CMAKE_BINARY_DIR}}/probe.cc")
target_link_libraries(vllm_env_probe PRIVATE
  torch {torch_libraries}CUDA::cudart CUDA::cuda_driver)
"""

TORCH_BLOCK = """\
if(CUDAToolkit_FOUND)
  {load}
  file(WRITE "${{CMAKE_BINARY_DIR}}/probe.c" "int main(void) {{ return 0; }}\\n")
  add_executable(vllm_env_probe "${{CMAKE_BINARY_DIR}}/probe.c")
  foreach(t torch::nvtx3 torch::nvtoolsext)
    if(TARGET ${{t}})
      message(STATUS "{mark} torch_target=${{t}}")
      target_link_libraries(vllm_env_probe PRIVATE ${{t}})
    endif()
  endforeach()
endif()
"""


def cmake_version(cmake: Path, environ: dict[str, str]) -> str | None:
    """``cmake --version`` of ``cmake`` (its ``X.Y.Z``), or None when it does not run."""
    result = proc.run([cmake, "--version"], env=environ, timeout=30)
    return parse_cmake_version(result.stdout) if result.ok else None


def run_probe(
    t: ToolkitFacts,
    cmake: Path | None,
    workdir: Path,
    torch: TorchCudaCmake | None = None,
    *,
    config: TorchCMake | None = None,
    timeout: float = CMAKE_TIMEOUT,
    torch_libraries: bool = True,
) -> ProbeResult:
    """Configure the probe project with ``cmake`` under the env's activation variables: a
    vLLM-like project when ``config`` has a TorchConfig.cmake, else the FindCUDAToolkit one.
    ``torch_libraries=False``: link the ``torch`` target without ``${TORCH_LIBRARIES}``, as
    vLLM 0.4.1-0.5.3 do (:func:`pytest_vllm_env.readers.vllm_build.read_vllm_links`)."""
    if cmake is None:
        return ProbeResult("", False, skipped_why="no cmake on the activated PATH")
    extra: list[str] = []
    if config is not None and config.config is not None:
        mode = "vllm"
        text = (
            "cmake_minimum_required(VERSION 3.18)\nproject(vllm_env_probe LANGUAGES C CXX)\n"
            + VLLM_BLOCK.format(
                config_dir=config.config.parent,
                mark=MARK,
                targets=" ".join(ALL_TARGETS),
                torch_libraries="${TORCH_LIBRARIES} " if torch_libraries else "",
            )
            + FOUND_LINES.format(mark=MARK)
        )
        extra = [f"-D{k}={v}" for k, v in cmake_args(t.environ).items()]
    else:
        mode = "cudatoolkit"
        load = ""
        if torch is not None and torch.config is not None:
            load = f'find_package(Torch PATHS "{torch.config.parent}" NO_DEFAULT_PATH)'
        elif torch is not None:
            load = f'include(FindPackageHandleStandardArgs)\n  include("{torch.path}")'
        text = CMAKELISTS.format(
            # torch's cuda.cmake try_run()s a .cc file: a project that loads torch needs CXX,
            # as vLLM's own CMakeLists does (seen on the H100: "Unknown extension .cc" with C)
            languages="C CXX" if load else "C",
            mark=MARK,
            targets=" ".join(TARGETS),
            torch=TORCH_BLOCK.format(load=load, mark=MARK) if load else "",
        )
    loaded = config.config if config is not None and config.config is not None else None
    if loaded is None and torch is not None:
        loaded = torch.config or torch.path
    blocked = _special_files(loaded.parent.parent) if loaded is not None else []
    if blocked:
        # cmake would open them while loading torch's config: a FIFO blocks it until the
        # timeout (minutes), and what it then says blames nothing
        return ProbeResult(
            str(cmake),
            False,
            mode=mode,
            skipped_why="not run: torch's CMake files hold what no CMake file can be ("
            + "; ".join(blocked[:5])
            + "): cmake would block or fail reading them",
        )
    src = workdir / "src"
    build = workdir / "build"
    src.mkdir(parents=True, exist_ok=True)
    build.mkdir(parents=True, exist_ok=True)
    (src / "CMakeLists.txt").write_text(text)
    result = proc.run(
        [cmake, "-S", src, "-B", build, "-Wno-dev", *extra],
        env=t.environ,
        cwd=workdir,
        timeout=timeout,
    )
    out = result.output
    probe = ProbeResult(str(cmake), True, ok=result.ok, output=out[-6000:], mode=mode)
    if result.timed_out or result.launch_error or result.not_run:
        probe.ran = False
        probe.skipped_why = result.describe()
        return probe
    read_output(probe, out)
    return probe


def _special_files(folder: Path, limit: int = 10_000) -> list[str]:
    """``path: a FIFO`` for each entry under ``folder`` that is neither a regular file nor a
    folder (symlinks followed; a loop counts), looking at no more than ``limit`` entries."""
    found: list[str] = []
    seen = 0
    for root, dirs, names in os.walk(folder):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            seen += 1
            if seen > limit:
                return found
            what = files.describe(Path(root) / name)
            if what not in ("a regular file", "a directory", "a dangling symlink"):
                found.append(f"{Path(root) / name}: {what}")
    return found
