"""The build-log judge: name the known failure in a vLLM build log and say what to change.

A failed ``pip install vllm`` from source ends in hundreds of lines; the cause is one line
somewhere in the middle. Each :class:`Rule` is one real-world failure class with the text
that identifies it and its fix. :func:`pytest_vllm_env.readers.buildlog.read_log` reads (never
decides); :func:`judge` decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pytest_vllm_env.findings import Finding, error, failed, passed
from pytest_vllm_env.readers.buildlog import BuildLog


@dataclass(frozen=True)
class Rule:
    id: str
    pattern: re.Pattern[str]
    summary: str
    fix: str


RULES: tuple[Rule, ...] = (
    Rule(
        "buildlog.nvtx-target",
        re.compile(r"torch::nvtoolsext.{0,80}CUDA::nvToolsExt.{0,40}target was not found", re.S),
        "CMake found no CUDA::nvToolsExt: libnvToolsExt.so (unversioned) or its header is "
        "missing, so torch's Caffe2 cuda.cmake cannot link torch::nvtoolsext",
        "add `cuda-nvtx-dev` to pixi.toml [dependencies] (it brings lib/libnvToolsExt.so and "
        "nvToolsExt.h), or set NVTOOLSEXT_PATH in [activation.env] to a dir with both",
    ),
    Rule(
        "buildlog.vllm-python",
        re.compile(r"VLLM_PYTHON_EXECUTABLE|Please set VLLM_PYTHON_EXECUTABLE"),
        "vLLM's CMakeLists lost VLLM_PYTHON_EXECUTABLE: setup.py passes it on the cmake command "
        "line, so it is gone only when CMake re-ran configure after wiping a stale cache (a "
        "build dir configured with another CUDA compiler)",
        "delete the vLLM checkout's stale build dir (`rm -rf build/`) and build again with the "
        "env's Python (`pixi run python -m pip install --no-build-isolation -e .`); setting "
        "VLLM_PYTHON_EXECUTABLE in the environment has no effect",
    ),
    Rule(
        "buildlog.torch-too-old",
        re.compile(r"Float8_e8m0fnu"),
        "vLLM's kernels use at::Float8_e8m0fnu, which the env's torch does not have "
        "(torch older than 2.7)",
        "pin the torch version this vLLM release requires (its requirements/cuda.txt) in "
        "pixi.toml and build with --no-build-isolation",
    ),
    Rule(
        "buildlog.nvcc-missing",
        # CMake < 4.1 says "Failed to detect a default CUDA architecture" when it found no
        # nvcc at all (F1.10, instructlab#3144; measured 3.26 to 4.0), and also for a
        # -DCMAKE_CUDA_COMPILER naming no file
        re.compile(
            r"Failed to find nvcc|No CMAKE_CUDA_COMPILER could be found|"
            r"Failed to detect a default CUDA architecture|"
            r"CMAKE_CUDA_COMPILER:\s+\S+\s+is not a full path to an existing compiler|"
            r"Could not find (?:the )?compiler (?:set|specified) in (?:the )?environment "
            r"variable CUDACXX|"
            r"nvcc: (?:command )?not found|CUDA_HOME environment variable is not set"
        ),
        "the build found no nvcc (CUDA compiler)",
        "add `cuda-nvcc` (same major.minor as torch.version.cuda) to pixi.toml [dependencies] "
        "and set CUDA_HOME=$CONDA_PREFIX in [activation.env]; in a pip venv, export "
        "CUDA_HOME=/usr/local/cuda-X.Y and PATH=$CUDA_HOME/bin:$PATH where you build (CMake "
        "searches PATH for nvcc and never reads CUDA_HOME)",
    ),
    Rule(
        "buildlog.oom",
        re.compile(
            r"Killed signal terminated program|virtual memory exhausted|"
            r"std::bad_alloc|out of memory|\bKilled\b.*(?:cicc|ptxas|cc1plus|nvcc)|"
            r"Killed\s*$",
            re.M | re.I,
        ),
        "a compiler process was killed or ran out of memory (too many parallel nvcc jobs)",
        "lower the parallelism: set MAX_JOBS=2 (and NVCC_THREADS=1) in [activation.env] or the "
        "build command, or build for fewer archs via TORCH_CUDA_ARCH_LIST",
    ),
)


def judge(log: BuildLog) -> list[Finding]:
    """One finding per matched failure class; ``buildlog.clean`` when none matched."""
    if log.problem:
        return [
            error(
                "buildlog.readable",
                f"cannot read build log {log.path}: {log.problem}",
                "pass the text log of the failed build to --vllm-build-log (what `pip install` "
                "printed, e.g. `pip install -v . 2>&1 | tee build.log`)"
                if log.problem.startswith("not a text log")
                else "pass an existing, readable file to --vllm-build-log",
            )
        ]
    found: list[Finding] = []
    lines = log.text.splitlines()
    for rule in RULES:
        m = rule.pattern.search(log.text)
        if m:
            line_no = log.text.count("\n", 0, m.start()) + 1
            found.append(
                failed(
                    rule.id,
                    rule.summary,
                    rule.fix,
                    log=f"{log.path}:{line_no}",
                    line=lines[line_no - 1].strip() if line_no <= len(lines) else "",
                )
            )
    if found:
        return found
    if re.search(
        r"(?m)^\s*(?:CMake Error|error:|ERROR:)|Failed to build|\berror: command\b", log.text
    ):
        first = re.search(r"(?m)^.*(?:CMake Error|error:|ERROR:|Failed to build).*$", log.text)
        return [
            failed(
                "buildlog.unknown-error",
                "the build failed with an error this judge does not know",
                "read the first error line below; file it with the log if it is an env problem",
                first_error=first[0].strip() if first else "",
            )
        ]
    return [passed("buildlog.clean", f"no known failure in {log.path}")]
