"""torch's CMake config as a vLLM source build loads it: the static prediction, vLLM's CMake
floor, the real CMake run of a vLLM-like project, and whether prediction and probe agree."""

import pytest

from pytest_vllm_env.checks import cmake_floor, torch_cmake
from pytest_vllm_env.checks import cmake_probe as probe
from pytest_vllm_env.checks.build_scope import not_built


@pytest.mark.toolchain
@pytest.mark.vllm_check("cmake.torch-config")
def test_torch_config(
    vllm_env,
    torch_cmake_config,
    torch_config_prediction,
    cmake_version_for_env,
    nvcc_need,
    vllm_built_in_env,
    verdict,
):
    # Only a source build loads torch's CMake config: a venv that runs vLLM's wheels
    # failed here ("will stop a vLLM build") with nothing to build.
    none = not_built(
        "cmake.torch-config",
        nvcc_need,
        bool(vllm_built_in_env),
        reads="reads torch's CMake config",
    )
    if none:
        verdict(none)
        return
    verdict(
        torch_cmake.config_finding(
            vllm_env, torch_cmake_config, torch_config_prediction, cmake_version_for_env
        )
    )


@pytest.mark.toolchain
@pytest.mark.vllm_check("cmake.vllm-floor")
def test_vllm_cmake_floor(
    vllm_env, cmake_for_env, cmake_version_for_env, vllm_cmake_floor, vllm_built_in_env, verdict
):
    verdict(
        cmake_floor.cmake_version_floor(
            vllm_env, cmake_for_env, cmake_version_for_env, vllm_cmake_floor, vllm_built_in_env
        )
    )


@pytest.mark.build
@pytest.mark.vllm_check("cmake.torch-probe")
def test_torch_probe(cmake_probe, verdict):
    verdict(probe.torch_probe_finding(cmake_probe))


@pytest.mark.build
@pytest.mark.vllm_check("cmake.prediction-agrees")
def test_prediction_agrees(cmake_probe, torch_config_prediction, nvtx_prediction, verdict):
    verdict(probe.agreement_finding(torch_config_prediction, nvtx_prediction, cmake_probe))
