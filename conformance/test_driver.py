"""Can the GPU nodes' NVIDIA driver run what the env holds? (read from files; on a GPU node the
real driver is read too)"""

import pytest

from pytest_vllm_env.checks import driver as checks
from pytest_vllm_env.checks import driver_ptx

pytestmark = pytest.mark.toolchain


@pytest.mark.vllm_check("driver.version")
def test_driver_version(driver_sources, cuda_driver, verdict):
    verdict(checks.driver_version(driver_sources, cuda_driver))


@pytest.mark.vllm_check("driver.cuda-runtime")
def test_cuda_runtime(
    vllm_env, cuda_needs, driver_sources, cuda_driver, cuda_archs, fix_targets, verdict
):
    verdict(
        checks.cuda_runtime(
            cuda_needs, driver_sources, cuda_driver, vllm_env, cuda_archs, fix_targets
        )
    )


@pytest.mark.vllm_check("driver.ptx-jit")
def test_ptx_jit(
    vllm_env, cuda_binaries, cuda_archs, cuda_driver, driver_cuda, flash_attn_version, verdict
):
    verdict(
        driver_ptx.ptx_jit(
            cuda_binaries, cuda_archs, cuda_driver, driver_cuda, vllm_env, flash_attn_version
        )
    )


@pytest.mark.vllm_check("driver.compat-libcuda")
def test_compat_libcuda(vllm_env, driver_sources, cuda_driver, cuda_archs, verdict):
    verdict(checks.compat_libcuda(driver_sources, cuda_driver, cuda_archs, vllm_env))


@pytest.mark.vllm_check("vllm.flash-attn-library")
def test_flash_attn_library(flash_attn_library_finding, verdict):
    verdict(flash_attn_library_finding)
