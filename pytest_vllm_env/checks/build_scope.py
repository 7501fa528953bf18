"""One story for "does anything build here?": the checks whose subject is a source build.

``cuda.nvcc-in-env`` decides it (:func:`pytest_vllm_env.facts.toolkit.nvcc_need`: the build
tier, ``--vllm-source``, ``--vllm-build-log``, CUDA build packages in the env, vLLM declared
as a source dependency) and says "none needed: the env runs prebuilt wheels" when nothing
does. Checks that judge what only a build reads (torch's CMake config, its NVTX target, the
nvcc ``torch.utils.cpp_extension`` compares with torch, a vLLM release's source-build torch
floor) then skip with a reference to it, instead of failing beside it: issue 21 saw a
``pip install vllm`` venv get "nothing here needs nvcc" next to a failing ``cuda.nvcc-torch``,
and ``nvtx.cmake-target`` failing where ``cmake.torch-config`` said no build happens.
"""

from __future__ import annotations

from pytest_vllm_env.facts.toolkit import NvccNeed
from pytest_vllm_env.findings import Finding, skipped

DECIDED_BY = "cuda.nvcc-in-env"
WHAT_BUILDS = (
    "no build tier, --vllm-source, --vllm-build-log, CUDA build packages or source dependency"
)


def builds(need: NvccNeed, built_in_env: bool = False, *, jit: bool = False) -> bool:
    """Whether anything compiles CUDA here: a build (``need.required``, or vLLM built from a
    source dependency in the env) or, with ``jit``, a package that compiles at first use."""
    return bool(need.required) or built_in_env or (jit and bool(need.jit))


def not_built(
    cid: str, need: NvccNeed, built_in_env: bool = False, *, reads: str, jit: bool = False
) -> Finding | None:
    """The skip for check ``cid`` when nothing builds (``reads``: what only a build reads),
    naming the check that decided it; None when something builds."""
    if builds(need, built_in_env, jit=jit):
        return None
    return skipped(
        cid,
        f"no vLLM build here ({WHAT_BUILDS}; {DECIDED_BY}: the env runs prebuilt wheels): "
        f"only a build {reads}",
        decided_by=DECIDED_BY,
    )
