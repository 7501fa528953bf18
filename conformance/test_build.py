"""The build tier: real compiles for each target arch, checked for that arch's SASS."""

import pytest

from pytest_vllm_env import findings as F
from pytest_vllm_env.checks import build

pytestmark = pytest.mark.build

NO_ARCH = "no target arch known: pass --cuda-arch=12.0 or set TORCH_CUDA_ARCH_LIST"


@pytest.mark.vllm_check("build.nvcc-kernel")
def test_nvcc_builds_for_each_arch(vllm_env, cuda_archs, nvcc_kernel_build, verdict):
    if not cuda_archs:
        verdict(F.skipped("build.nvcc-kernel", NO_ARCH))
        return
    verdict([build.nvcc_kernel(vllm_env, nvcc_kernel_build(a), a) for a in cuda_archs])


@pytest.mark.vllm_check("build.torch-extension")
def test_torch_extension_builds_for_each_arch(vllm_env, cuda_archs, torch_extension_build, verdict):
    if not cuda_archs:
        verdict(F.skipped("build.torch-extension", NO_ARCH))
        return
    if vllm_env.dist("torch") is None:
        verdict(F.skipped("build.torch-extension", f"torch is not installed in {vllm_env.prefix}"))
        return
    verdict([build.torch_extension(vllm_env, torch_extension_build(a), a) for a in cuda_archs])


# build tier only (it compiles), though it needs a GPU: `-m gpu` must not start a compile
@pytest.mark.vllm_check("build.extension-runs")
def test_torch_extension_runs_on_the_gpu(vllm_env, cuda_archs, torch_extension_build, verdict):
    if not cuda_archs or vllm_env.dist("torch") is None:
        verdict(F.skipped("build.extension-runs", "no torch extension to run (no arch or torch)"))
        return
    verdict([build.extension_runs(torch_extension_build(a), a) for a in cuda_archs])
