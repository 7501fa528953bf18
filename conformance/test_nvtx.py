"""NVTX as CMake will see it: the static prediction, and the real CMake probe."""

import pytest

from pytest_vllm_env.checks import cmake_probe as probe
from pytest_vllm_env.checks import nvtx
from pytest_vllm_env.checks.build_scope import not_built


@pytest.mark.toolchain
@pytest.mark.vllm_check("nvtx.cmake-target")
def test_nvtx_cmake_target(
    vllm_env,
    cuda_toolkit,
    nvtx_prediction,
    cmake_for_env,
    torch_cuda_cmake,
    torch_config_prediction,
    nvcc_need,
    vllm_built_in_env,
    verdict,
):
    # NVTX is a link target of torch's CMake config: only a build looks for it (issue 21:
    # it failed where cmake.torch-config said nothing builds)
    none = not_built(
        "nvtx.cmake-target",
        nvcc_need,
        bool(vllm_built_in_env),
        reads="links torch's NVTX target (torch's CMake config)",
    )
    if none:
        verdict(none)
        return
    verdict(
        nvtx.cmake_target(
            vllm_env,
            cuda_toolkit,
            nvtx_prediction,
            str(cmake_for_env),
            torch_cuda_cmake,
            torch_config_prediction,
        )
    )


@pytest.mark.build
@pytest.mark.vllm_check("nvtx.cmake-probe")
def test_nvtx_cmake_probe(vllm_env, cmake_probe, nvtx_prediction, verdict):
    verdict(probe.probe_finding(vllm_env, cmake_probe, nvtx_prediction))
