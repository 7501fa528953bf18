"""The real probe behind ``nvtx.cmake-target``: run the env's CMake on a tiny project.

The project runs ``find_package(CUDAToolkit)`` with the env's activation variables and
prints which ``CUDA::`` targets exist; when the env has torch it then loads torch's CMake
(``find_package(Torch)`` through ``TorchConfig.cmake``, or torch's
``Caffe2/public/cuda.cmake`` alone when that is all there is) and links an executable to
torch's NVTX target, so that the seed-001 generate-time error shows up for real.

Nothing is written to the env: the project and the build dir live in ``workdir``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from . import proc
from .cuda import ToolkitFacts
from .env import PixiEnv
from .findings import Finding, failed, passed, skipped
from .nvtx import Prediction, TorchCudaCmake

CMAKE_TIMEOUT = 120.0
TARGETS = ("cudart", "cuda_driver", "nvrtc", "nvToolsExt", "nvtx3")
MARK = "VLLM_ENV_PROBE"

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


@dataclass
class ProbeResult:
    """What the real CMake did."""

    cmake: str
    ran: bool
    ok: bool = False  # configure + generate succeeded
    found: bool = False
    version: str = ""
    include_dirs: list[str] = field(default_factory=list)
    targets: dict[str, str] = field(default_factory=dict)
    torch_targets: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    output: str = ""
    skipped_why: str = ""

    @property
    def target_names(self) -> set[str]:
        return set(self.targets)


def cmake_version(cmake: Path, environ: dict[str, str]) -> str | None:
    result = proc.run([cmake, "--version"], env=environ, timeout=30)
    match = re.search(r"cmake version (\d+\.\d+\.\d+)", result.stdout) if result.ok else None
    return match.group(1) if match else None


def run_probe(
    t: ToolkitFacts,
    cmake: Path | None,
    workdir: Path,
    torch: TorchCudaCmake | None = None,
    *,
    timeout: float = CMAKE_TIMEOUT,
) -> ProbeResult:
    """Configure the probe project with ``cmake`` under the env's activation variables."""
    if cmake is None:
        return ProbeResult("", False, skipped_why="no cmake on the activated PATH")
    load = ""
    if torch is not None and torch.config is not None:
        load = f'find_package(Torch PATHS "{torch.config.parent}" NO_DEFAULT_PATH)'
    elif torch is not None:
        load = f'include(FindPackageHandleStandardArgs)\n  include("{torch.path}")'
    text = CMAKELISTS.format(
        # torch's cuda.cmake try_run()s a .cc file: a project that loads torch needs CXX, as
        # vLLM's own CMakeLists does (seen on the H100: "Unknown extension .cc" with C only)
        languages="C CXX" if load else "C",
        mark=MARK,
        targets=" ".join(TARGETS),
        torch=TORCH_BLOCK.format(load=load, mark=MARK) if load else "",
    )
    src = workdir / "src"
    build = workdir / "build"
    src.mkdir(parents=True, exist_ok=True)
    build.mkdir(parents=True, exist_ok=True)
    (src / "CMakeLists.txt").write_text(text)
    result = proc.run(
        [cmake, "-S", src, "-B", build, "-Wno-dev"], env=t.environ, cwd=workdir, timeout=timeout
    )
    out = result.output
    probe = ProbeResult(str(cmake), True, ok=result.ok, output=out[-4000:])
    if result.timed_out or result.launch_error:
        probe.ran = False
        probe.skipped_why = result.describe()
        return probe
    for line in out.splitlines():
        match = re.search(rf"{MARK} (\w+)=(.*)$", line)
        if not match:
            continue
        key, value = match.group(1), match.group(2).strip()
        if key == "found":
            probe.found = value.upper() in ("TRUE", "ON", "1", "YES")
        elif key == "version":
            probe.version = value
        elif key == "include":
            probe.include_dirs = [v for v in value.split(";") if v]
        elif key == "target":
            name, _, loc = value.partition(" ")
            probe.targets[name] = loc
        elif key == "torch_target":
            probe.torch_targets.append(value)
    probe.errors = _errors(out)
    return probe


def _errors(output: str) -> list[str]:
    errors = []
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("CMake Error") or "Could NOT find CUDAToolkit" in line:
            chunk = " ".join(x.strip() for x in lines[i : i + 4] if x.strip())
            errors.append(chunk[:400])
    return errors


def agree(pred: Prediction, probe: ProbeResult) -> list[str]:
    """Where the prediction and the real CMake disagree (empty when they agree)."""
    diffs = []
    if pred.found != probe.found:
        diffs.append(f"found: predicted {pred.found}, cmake {probe.found}")
    if pred.found and probe.found:
        want, got = pred.target_names, probe.target_names
        if want != got:
            diffs.append(f"targets: predicted {sorted(want)}, cmake {sorted(got)}")
    predicted_error = bool(pred.torch_error)
    real_error = any("nvToolsExt" in e for e in probe.errors)
    if predicted_error != real_error:
        diffs.append(f"torch NVTX error: predicted {predicted_error}, cmake {real_error}")
    return diffs


def probe_finding(env: PixiEnv, probe: ProbeResult, pred: Prediction | None) -> Finding:
    """``nvtx.cmake-probe``: the real CMake's targets and errors, and whether the static
    prediction (nvtx.cmake-target) matched them."""
    check = "nvtx.cmake-probe"
    if not probe.ran:
        return skipped(check, f"CMake probe not run: {probe.skipped_why}")
    evidence = {
        "cmake": probe.cmake,
        "targets": sorted(probe.targets),
        "torch_targets": probe.torch_targets,
        "errors": probe.errors,
    }
    diffs = agree(pred, probe) if pred else []
    if diffs:
        evidence["prediction_differs"] = diffs
    if not probe.ok or not probe.found:
        what = "; ".join(probe.errors) or "CUDAToolkit not found"
        return failed(
            check,
            f"{probe.cmake} failed to configure the probe: {what}",
            "see nvtx.cmake-target and cuda.cmake-components for the package to add",
            **evidence,
        )
    return passed(
        check,
        f"{probe.cmake} found CUDA {probe.version}: {', '.join(sorted(probe.targets))}",
        **evidence,
    )
