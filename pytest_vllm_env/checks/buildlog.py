"""The build-log judge: name the known failure in a vLLM build log and say what to change.

A failed ``pip install vllm`` from source ends in hundreds of lines; the cause is one line
somewhere in the middle. Each :class:`Rule` is one real-world failure class with the text
that identifies it and its fix. :func:`pytest_vllm_env.readers.buildlog.read_log` reads (never
decides); :func:`judge` decides.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from pytest_vllm_env.checks.abi_fixes import NO_ENV, torch_package
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.facts.targets import FixTargets
from pytest_vllm_env.findings import Finding, error, failed, passed
from pytest_vllm_env.readers.buildlog import BuildLog


@dataclass(frozen=True)
class Rule:
    id: str
    pattern: re.Pattern[str]
    summary: str
    # the fix, written for the env the log's build ran in and the run's torch/CUDA target
    fix: Callable[[PixiEnv, FixTargets | None], str]


def _cuda_spec(targets: FixTargets | None) -> str:
    """``12.8.*``: the run's one CUDA (torch's), for a toolkit package; "" when unknown."""
    return f"{targets.cuda}.*" if targets is not None and targets.cuda else ""


def _rebuild(env: PixiEnv) -> str:
    # the build against the env's own torch, in the env's language (pixi's no-build-isolation
    # and reinstall, pip/uv --no-build-isolation in the activated venv or conda prefix)
    return fixes.rebuild(env, "vllm", source="<vLLM checkout>")


def _nvtx_fix(env: PixiEnv, targets: FixTargets | None) -> str:
    return fixes.otherwise(
        fixes.add(env, Package("cuda-nvtx-dev", _cuda_spec(targets)))
        + " (it brings lib/libnvToolsExt.so and nvToolsExt.h)",
        "point NVTOOLSEXT_PATH at a dir holding both: "
        + fixes.set_var(env, "NVTOOLSEXT_PATH", "<dir>"),
    )


def _python_fix(env: PixiEnv, targets: FixTargets | None) -> str:
    return (
        "delete the vLLM checkout's stale build dir (`rm -rf build/`) and build again with the "
        f"env's Python: {_rebuild(env)}; setting VLLM_PYTHON_EXECUTABLE in the environment has "
        "no effect"
    )


def _torch_fix(env: PixiEnv, targets: FixTargets | None) -> str:
    # at::Float8_e8m0fnu came with torch 2.7 (c10/core/ScalarType.h); the run's target torch
    # when it has it (vLLM's pin), else the floor
    if targets is not None and targets.torch and _at_least(targets.torch, "2.7"):
        torch = targets.torch_fix(env)
    else:
        torch = fixes.pin(env, torch_package(env, ">=2.7"))
    return (
        "install the torch this vLLM release requires (its requirements/cuda.txt; "
        f"at::Float8_e8m0fnu is in torch >= 2.7): {torch}; then build it without isolation: "
        + _rebuild(env)
    )


def _nvcc_fix(env: PixiEnv, targets: FixTargets | None) -> str:
    cuda = targets.cuda if targets is not None and targets.cuda else "torch's CUDA"
    nvcc = fixes.add(env, Package("cuda-nvcc", _cuda_spec(targets)))
    steps = [nvcc]
    if fixes.kind_of(env) != "venv":  # a venv's nvcc is the system toolkit's (add says where)
        steps.append(fixes.set_var(env, "CUDA_HOME", "${CONDA_PREFIX}"))
    return (
        f"give the build an nvcc of CUDA {cuda}: "
        + fixes.join(steps, " and ")
        + " (CMake searches PATH for nvcc and never reads CUDA_HOME; torch's cpp_extension "
        "reads CUDA_HOME)"
    )


def _oom_fix(env: PixiEnv, targets: FixTargets | None) -> str:
    return (
        "lower the parallelism: "
        + fixes.join(
            [fixes.set_var(env, "MAX_JOBS", "2"), fixes.set_var(env, "NVCC_THREADS", "1")],
            " and ",
        )
        + ", or build for fewer archs via TORCH_CUDA_ARCH_LIST"
    )


def _at_least(version: str, floor: str) -> bool:
    try:
        return Version(version.split("+", 1)[0]) >= Version(floor)
    except InvalidVersion:
        return False


RULES: tuple[Rule, ...] = (
    Rule(
        "buildlog.nvtx-target",
        re.compile(r"torch::nvtoolsext.{0,80}CUDA::nvToolsExt.{0,40}target was not found", re.S),
        "CMake found no CUDA::nvToolsExt: libnvToolsExt.so (unversioned) or its header is "
        "missing, so torch's Caffe2 cuda.cmake cannot link torch::nvtoolsext",
        _nvtx_fix,
    ),
    Rule(
        "buildlog.vllm-python",
        re.compile(r"VLLM_PYTHON_EXECUTABLE|Please set VLLM_PYTHON_EXECUTABLE"),
        "vLLM's CMakeLists lost VLLM_PYTHON_EXECUTABLE: setup.py passes it on the cmake command "
        "line, so it is gone only when CMake re-ran configure after wiping a stale cache (a "
        "build dir configured with another CUDA compiler)",
        _python_fix,
    ),
    Rule(
        "buildlog.torch-too-old",
        re.compile(r"Float8_e8m0fnu"),
        "vLLM's kernels use at::Float8_e8m0fnu, which the env's torch does not have "
        "(torch older than 2.7)",
        _torch_fix,
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
        _nvcc_fix,
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
        _oom_fix,
    ),
)


def judge(
    log: BuildLog, env: PixiEnv | None = None, targets: FixTargets | None = None
) -> list[Finding]:
    """One finding per matched failure class; ``buildlog.clean`` when none matched. Fixes
    are written for ``env`` (the env the build ran in; a Pixi env of unknown manifest without
    one) and point at the run's torch/CUDA ``targets``."""
    env = env or NO_ENV
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
                    rule.fix(env, targets),
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
