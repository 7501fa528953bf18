"""The CUDA toolkit in the env: nvcc, versions, CMake components, CUDA_HOME, target archs."""

import pytest

from pytest_vllm_env.checks import cuda, cuda_ptxas, cuda_torch
from pytest_vllm_env.checks.build_scope import not_built
from pytest_vllm_env.facts.toolkit import ptxas_runs


@pytest.mark.toolchain
@pytest.mark.vllm_check("cuda.nvcc-in-env")
def test_nvcc_in_env(
    vllm_env, cuda_toolkit, nvcc_need, build_nvcc, cmake_version_for_env, fix_targets, verdict
):
    verdict(
        cuda.nvcc_in_env(
            vllm_env, cuda_toolkit, nvcc_need, build_nvcc, cmake_version_for_env, fix_targets
        )
    )


@pytest.mark.toolchain
@pytest.mark.vllm_check("cuda.nvcc-runs")
def test_nvcc_runs(vllm_env, cuda_toolkit, verdict):
    verdict(cuda.nvcc_runs(vllm_env, cuda_toolkit))


@pytest.mark.toolchain
@pytest.mark.vllm_check("cuda.version-consistent")
def test_version_consistent(vllm_env, cuda_toolkit, fix_targets, verdict):
    verdict(cuda.version_consistent(vllm_env, cuda_toolkit, fix_targets))


@pytest.mark.toolchain
@pytest.mark.vllm_check("cuda.cmake-components")
def test_cmake_components(vllm_env, cuda_toolkit, torch_config_prediction, verdict):
    needs = torch_config_prediction.needed if torch_config_prediction else None
    verdict(cuda.cmake_components(vllm_env, cuda_toolkit, needs))


@pytest.mark.toolchain
@pytest.mark.vllm_check("cuda.cuda-home")
def test_cuda_home(vllm_env, cuda_toolkit, verdict):
    verdict(cuda.cuda_home(vllm_env, cuda_toolkit))


@pytest.mark.toolchain
@pytest.mark.vllm_check("cuda.ld-library-path")
def test_ld_library_path(vllm_env, cuda_toolkit, verdict):
    verdict(cuda.ld_library_path(vllm_env, cuda_toolkit))


@pytest.mark.toolchain
@pytest.mark.vllm_check("cuda.arch-supported")
def test_arch_supported(vllm_env, cuda_toolkit, cuda_archs, cuda_archs_source, verdict):
    verdict(cuda.arch_supported(vllm_env, cuda_toolkit, cuda_archs, cuda_archs_source))


@pytest.mark.build
@pytest.mark.vllm_check("cuda.arch-ptxas")
def test_arch_ptxas(vllm_env, cuda_toolkit, cuda_archs, tmp_path, verdict):
    runs = ptxas_runs(cuda_toolkit, cuda_archs, tmp_path)
    verdict(cuda_ptxas.arch_ptxas(vllm_env, cuda_toolkit, cuda_archs, runs))


@pytest.mark.toolchain
@pytest.mark.vllm_check("cuda.vllm-python")
def test_vllm_python(vllm_env, cuda_toolkit, verdict):
    verdict(cuda.vllm_python(vllm_env, cuda_toolkit))


@pytest.mark.toolchain
@pytest.mark.vllm_check("cuda.nvcc-torch")
def test_nvcc_matches_torch_cuda(
    vllm_env, cuda_toolkit, torch_build_nvcc, fix_targets, nvcc_need, vllm_built_in_env, verdict
):
    # torch.utils.cpp_extension compares nvcc with torch's CUDA only when something compiles
    # (a build, a JIT): a prebuilt-wheel venv failed here beside cuda.nvcc-in-env's "none
    # needed" (issue 21). Without a CUDA torch the check says why itself.
    none = (cuda_toolkit.torch_cuda or cuda_toolkit.torch_cuda_error) and not_built(
        "cuda.nvcc-torch",
        nvcc_need,
        bool(vllm_built_in_env),
        reads="or a JIT compile runs torch.utils.cpp_extension's nvcc check",
        jit=True,
    )
    if none:
        verdict(none)
        return
    nvcc, why = torch_build_nvcc
    verdict(
        cuda_torch.nvcc_torch(
            vllm_env,
            nvcc,
            why,
            vllm_env.version_of("torch"),
            cuda_toolkit.torch_cuda,
            fix_targets,
            torch_cuda_error=cuda_toolkit.torch_cuda_error,
        )
    )
