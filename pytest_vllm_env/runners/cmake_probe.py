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

The errors are classified into the same signatures
:mod:`pytest_vllm_env.checks.torch_cmake` predicts (``caffe2-cuda``, ``cudatoolkit``,
``compiler-id``, ``nvtoolsext-fatal``, ``link:CUDA::X``, ``notfound:VAR``), so that
prediction and probe can be compared in outcome and cause.

Nothing is written to the env: the project and the build dir live in ``workdir``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pytest_vllm_env import files, proc
from pytest_vllm_env.checks.cuda import ToolkitFacts
from pytest_vllm_env.checks.nvtx import Prediction, TorchCudaCmake
from pytest_vllm_env.checks.torch_cmake import ConfigPrediction, TorchCMake, cmake_args
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.findings import Finding, failed, passed, skipped, warning

CMAKE_TIMEOUT = 120.0
TARGETS = ("cudart", "cuda_driver", "nvrtc", "nvToolsExt", "nvtx3")
ALL_TARGETS = (*TARGETS, "cublas", "cublasLt", "cufft", "curand", "cuFile")
FOUND_LINES = """\
message(STATUS "{mark} found=${{CUDAToolkit_FOUND}}")
message(STATUS "{mark} version=${{CUDAToolkit_VERSION}}")
"""
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
    mode: str = "cudatoolkit"  # "vllm": find_package(Torch) and vLLM's links
    configured: bool = False  # "-- Configuring done" (errors after it are generate-time)
    stop: str | None = None  # signature of the configure-time error CMake stopped at
    generate: list[str] = field(default_factory=list)  # signatures of generate-time errors
    torch_found: bool = False  # find_package(Torch) returned: the CUDA:: targets were printed

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
    config: TorchCMake | None = None,
    timeout: float = CMAKE_TIMEOUT,
    torch_libraries: bool = True,
) -> ProbeResult:
    """Configure the probe project with ``cmake`` under the env's activation variables: a
    vLLM-like project when ``config`` has a TorchConfig.cmake, else the FindCUDAToolkit one.
    ``torch_libraries=False``: link the ``torch`` target without ``${TORCH_LIBRARIES}``, as
    vLLM 0.4.1-0.5.3 do (``torch_cmake.read_vllm_links``)."""
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
    if result.timed_out or result.launch_error:
        probe.ran = False
        probe.skipped_why = result.describe()
        return probe
    probe.configured = "-- Configuring done" in out
    probe.stop, probe.generate = classify(out)
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
        elif key == "torch_found":
            probe.torch_found = value.upper() in ("TRUE", "ON", "1", "YES")
    probe.errors = _errors(out)
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


def _errors(output: str) -> list[str]:
    errors = []
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("CMake Error") or "Could NOT find CUDAToolkit" in line:
            chunk = " ".join(x.strip() for x in lines[i : i + 4] if x.strip())
            errors.append(chunk[:400])
    return errors


# Configure-time errors, in the order torch's config can meet them (see torch_cmake).
STOP_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("cmake-minimum", re.compile(r"CMake [\d.]+ or higher is required")),
    ("caffe2-cuda", re.compile(r"uses CUDA but I cannot find the CUDA")),
    (
        "compiler-id",
        re.compile(
            r"CMakeDetermineCompilerId|Failed to detect a default CUDA architecture|"
            r"Couldn't find CUDA library root|"
            r"No CMAKE_CUDA_COMPILER could be found|CUDA compiler identification is unknown"
        ),
    ),
    ("cudatoolkit", re.compile(r"Could NOT find CUDAToolkit")),
    ("nvtoolsext-fatal", re.compile(r"Failed to find nvToolsExt")),
)
STAGES = ("cmake-minimum", "caffe2-cuda", "compiler-id", "cudatoolkit", "nvtoolsext-fatal")


def classify(output: str) -> tuple[str | None, list[str]]:
    """The real CMake output as (configure-time stop, generate-time errors), in the
    signatures :mod:`pytest_vllm_env.checks.torch_cmake` predicts."""
    configured = "-- Configuring done" in output
    head, _, tail = output.partition("-- Configuring done")
    generate: list[str] = []
    text = tail if configured else head
    # blocks of "CMake Error ..." up to the next blank-line-separated error
    link = re.finditer(
        r'(?:link interface of target\s+"[^"]+"\s+contains:|Target\s+"[^"]+"\s+links to:)'
        r"\s+(\S+)\s+but the target was not found",
        text,
    )
    generate += [f"link:{m.group(1)}" for m in link]
    for block in re.finditer(r"set to NOTFOUND\.[^\n]*\n(?:[^\n]*\n)(.*?)(?:\n\n|\Z)", text, re.S):
        for line in block.group(1).splitlines():
            m = re.match(r"^(\w+)(?: \(ADVANCED\))?\s*$", line.strip())
            if m:
                generate.append(f"notfound:{m.group(1)}")
    prop = re.search(r'get_target_property\(\) called with non-existent target\s+"([^"]+)"', text)
    if configured:
        return None, sorted(set(generate))
    first: tuple[int, str] | None = None
    for sig, pattern in STOP_PATTERNS:
        m = pattern.search(head)
        if m and (first is None or m.start() < first[0]):
            first = (m.start(), sig)
    if prop and (first is None or prop.start() < first[0]):
        first = (prop.start(), f"property:{prop.group(1)}")
    if first is None:
        err = re.search(r"CMake Error[^\n]*\n\s*([^\n]+)", head)
        return (f"other:{err.group(1).strip()[:120]}" if err else "other"), []
    return first[1], []


def compare_config(pred: ConfigPrediction, probe: ProbeResult) -> tuple[str, str]:
    """``("agree" | "differ" | "not-comparable", why)``: outcome and cause of the prediction
    against the real CMake run of the vLLM-like project."""
    predicted = (
        f"stops at {pred.stop.signature}"
        if pred.stop
        else (
            "generates with " + ", ".join(b.signature for b in pred.generate)
            if pred.generate
            else "configures and generates"
        )
    )
    real = (
        f"stops at {probe.stop}"
        if probe.stop
        else (
            "generates with " + ", ".join(probe.generate)
            if probe.generate
            else "configures and generates"
        )
    )
    detail = f"predicted: {predicted}; CMake: {real}"
    pred_stage = (
        STAGES.index(pred.stop.signature)
        if pred.stop and pred.stop.signature in STAGES
        else len(STAGES)
    )
    if probe.stop == "compiler-id" and pred_stage > STAGES.index("compiler-id"):
        return "not-comparable", (
            f"{detail}. CMake could not compile with nvcc in enable_language(CUDA), which the "
            "prediction assumes works (build.nvcc-kernel compiles for real)"
        )
    if not pred.complete and not pred.stop:
        return "not-comparable", f"{detail}. Not predicted: {'; '.join(pred.not_modelled)}"
    if pred.stop or probe.stop:
        same = bool(pred.stop and probe.stop == pred.stop.signature)
        return ("agree" if same else "differ"), detail
    same = sorted(b.signature for b in pred.generate) == sorted(probe.generate)
    nvtx = _nvtoolsext_differs(pred, probe)
    if nvtx:
        return "differ", f"{detail}; {nvtx}"
    return ("agree" if same else "differ"), detail


def _nvtoolsext_differs(pred: ConfigPrediction, probe: ProbeResult) -> str:
    """Whether FindCUDAToolkit made ``CUDA::nvToolsExt`` as predicted (which module runs is
    the prediction's to get right: torch's bundled copy, not CMake's own), once the real
    find_package(Torch) got far enough to print the targets."""
    if not probe.torch_found or pred.cudatoolkit is None:
        return ""
    want = "CUDA::nvToolsExt" in pred.targets
    got = "CUDA::nvToolsExt" in probe.targets
    if want == got:
        return ""
    return (
        f"CUDA::nvToolsExt: predicted {'made' if want else 'not made'} by "
        f"{pred.cudatoolkit.module}, CMake {'made' if got else 'did not make'} it"
    )


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
    """``nvtx.cmake-probe``: what the real CMake did about NVTX. In a vLLM-like run that
    stopped before torch's NVTX part, NVTX was not reached: skipped, naming the stop
    (``cmake.torch-probe`` reports it)."""
    check = "nvtx.cmake-probe"
    if not probe.ran:
        return skipped(check, f"CMake probe not run: {probe.skipped_why}")
    evidence = {
        "cmake": probe.cmake,
        "targets": sorted(probe.targets),
        "torch_targets": probe.torch_targets,
        "errors": probe.errors,
    }
    if probe.mode == "vllm":
        nvtx = [g for g in probe.generate if "nvToolsExt" in g or "LIBNVTOOLSEXT" in g]
        if probe.stop == "nvtoolsext-fatal":
            nvtx = ["nvtoolsext-fatal"]
        if nvtx:
            return failed(
                check,
                f"{probe.cmake}: torch's CMake needs NVTX and CMake has none: "
                + "; ".join(_describe(n) for n in nvtx),
                "see nvtx.cmake-target for the change",
                **evidence,
            )
        if probe.stop:
            return skipped(
                check,
                f"CMake stopped before torch's NVTX part ({_describe(probe.stop)}): see "
                "cmake.torch-probe",
                **evidence,
            )
        return passed(
            check, f"{probe.cmake}: torch's CMake found all the NVTX it links", **evidence
        )
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


DESCRIBE = {
    "cmake-minimum": "cmake_minimum_required refused this CMake",
    "caffe2-cuda": "Caffe2Config.cmake: Your installed Caffe2 version uses CUDA but I cannot "
    "find the CUDA libraries",
    "compiler-id": "enable_language(CUDA) could not compile with nvcc",
    "cudatoolkit": "Could NOT find CUDAToolkit",
    "nvtoolsext-fatal": "Failed to find nvToolsExt",
}


def _describe(signature: str) -> str:
    if signature in DESCRIBE:
        return DESCRIBE[signature]
    kind, _, what = signature.partition(":")
    if kind == "link":
        return f"{what} linked but the target was not found"
    if kind == "notfound":
        return f"{what} is NOTFOUND"
    if kind == "property":
        return f'get_target_property() called with non-existent target "{what}"'
    return what or signature


def torch_probe_finding(probe: ProbeResult) -> Finding:
    """``cmake.torch-probe``: the real CMake loaded torch's config as vLLM does and generated
    (or where it stopped)."""
    check = "cmake.torch-probe"
    if not probe.ran:
        return skipped(check, f"CMake probe not run: {probe.skipped_why}")
    if probe.mode != "vllm":
        return skipped(check, "no torch TorchConfig.cmake in the env: nothing to load")
    evidence = {"cmake": probe.cmake, "errors": probe.errors, "output_tail": probe.output[-1500:]}
    if probe.stop:
        return failed(
            check,
            f"{probe.cmake} stopped in torch's CMake config: {_describe(probe.stop)}",
            "see cmake.torch-config for the change",
            **evidence,
        )
    if probe.generate:
        return failed(
            check,
            f"{probe.cmake} configured torch's CMake but generation failed: "
            + "; ".join(_describe(g) for g in probe.generate),
            "see cmake.torch-config for the change",
            **evidence,
        )
    return passed(check, f"{probe.cmake} loaded torch's CMake and linked like vLLM", **evidence)


def agreement_finding(
    pred: ConfigPrediction | None, nvtx_pred: Prediction | None, probe: ProbeResult
) -> Finding:
    """``cmake.prediction-agrees``: the static predictions (``cmake.torch-config``,
    ``nvtx.cmake-target``) and the real CMake agree in outcome and cause. A disagreement is a
    defect of the prediction, not of the env: a warning that says which to trust (the probe)."""
    check = "cmake.prediction-agrees"
    if not probe.ran:
        return skipped(check, f"CMake probe not run: {probe.skipped_why}")
    if probe.mode == "vllm":
        if pred is None:
            return skipped(check, "no prediction of torch's CMake config to compare")
        verdict, why = compare_config(pred, probe)
        if verdict == "not-comparable":
            return skipped(check, why)
        if verdict == "agree":
            return passed(check, f"prediction and {probe.cmake} agree: {why}")
        return warning(
            check,
            f"prediction and {probe.cmake} disagree ({why}); trust the real CMake "
            "(cmake.torch-probe)",
            "report this env to pytest-vllm-env with both verdicts: the static prediction "
            "missed a rule of torch's CMake files",
            probe_errors=probe.errors,
        )
    if nvtx_pred is None:
        return skipped(check, "no prediction to compare (no cmake version)")
    diffs = agree(nvtx_pred, probe)
    if diffs:
        return warning(
            check,
            f"prediction and {probe.cmake} disagree: {'; '.join(diffs)}; trust the real CMake "
            "(nvtx.cmake-probe)",
            "report this env to pytest-vllm-env with both verdicts",
        )
    return passed(check, f"prediction and {probe.cmake} agree on FindCUDAToolkit and NVTX")
