"""The gpu tier: the GPU against the env's binaries, torch on the GPU (FP8 too), and vLLM
loading each --modelopt-checkpoint for real, against its BF16 --reference-checkpoint."""

import pytest

from pytest_vllm_env import gpu
from pytest_vllm_env.plugins.gpu import quantization_for

pytestmark = pytest.mark.gpu


@pytest.mark.vllm_check("gpu.device-coverage")
def test_gpu_covered_by_binaries(
    visible_gpus, gpu_binaries, cuda_archs, cuda_archs_source, verdict
):
    verdict(gpu.device_coverage(visible_gpus, gpu_binaries, cuda_archs, cuda_archs_source))


@pytest.mark.vllm_check("gpu.torch-cuda")
def test_torch_uses_gpu(vllm_env, gpu_torch_probe, verdict):
    if not gpu_torch_probe.problem and not gpu_torch_probe.data.get("available"):
        if gpu_torch_probe.data.get("cuda") and not gpu_torch_probe.data.get("exception"):
            pytest.skip("no GPU visible to the target env's torch")
    verdict(gpu.torch_cuda(gpu_torch_probe, vllm_env.python))


@pytest.mark.vllm_check("gpu.torch-fp8")
def test_torch_fp8_scaled_mm(vllm_env, gpu_torch_probe, require_gpu, verdict):
    verdict(gpu.torch_fp8(gpu_torch_probe, vllm_env.python))


@pytest.mark.vllm_check("gpu.vllm-generate")
def test_vllm_loads_and_generates(modelopt_checkpoint, vllm_checkpoint_runs, verdict):
    verdict(
        gpu.vllm_generates(
            vllm_checkpoint_runs,
            str(modelopt_checkpoint.path),
            quantization_for(modelopt_checkpoint),
        )
    )


@pytest.mark.vllm_check("gpu.vllm-reference")
def test_vllm_matches_reference(
    request,
    modelopt_checkpoint,
    modelopt_checkpoint_specs,
    reference_checkpoints,
    vllm_logprob_tolerance,
    verdict,
):
    index = modelopt_checkpoint_specs.index(modelopt_checkpoint.spec)
    ref, problem = gpu.pair_reference(index, len(modelopt_checkpoint_specs), reference_checkpoints)
    if problem is not None:
        verdict(problem)
        return
    if not ref:
        verdict(gpu.vllm_reference(gpu.ProbeResult(""), None, "", ""))
        return
    runs = request.getfixturevalue("vllm_checkpoint_runs")  # loads only when there is a ref
    verdict(
        gpu.vllm_reference(
            runs[0],
            request.getfixturevalue("vllm_reference_run")(ref),
            str(modelopt_checkpoint.path),
            ref,
            vllm_logprob_tolerance,
        )
    )
