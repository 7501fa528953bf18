"""The gpu tier: the GPU against the env's binaries, torch on the GPU (FP8 too), and vLLM
loading each --modelopt-checkpoint and each --vllm-checkpoint (any format) for real: does it
load, is what it computes right (with no reference, and against its BF16
--reference-checkpoint), and did the toolchain tier predict what happened? A folder given as
both options is loaded once; each option's tests judge that load with its own tier's
findings (modelopt.* / quant.*)."""

import pytest

from pytest_vllm_env.checks import gpu_device, gpu_prediction, gpu_vllm_load, gpu_vllm_output

pytestmark = pytest.mark.gpu


@pytest.mark.vllm_check("gpu.device-coverage")
def test_gpu_covered_by_binaries(
    vllm_env, visible_gpus, gpu_binaries, cuda_archs, cuda_archs_source, verdict
):
    verdict(
        gpu_device.device_coverage(
            visible_gpus, gpu_binaries, cuda_archs, cuda_archs_source, env=vllm_env
        )
    )


@pytest.mark.vllm_check("gpu.torch-cuda")
def test_torch_uses_gpu(vllm_env, gpu_torch_probe, fix_targets, verdict):
    if not gpu_torch_probe.problem and not gpu_torch_probe.data.get("available"):
        if gpu_torch_probe.data.get("cuda") and not gpu_torch_probe.data.get("exception"):
            pytest.skip("no GPU visible to the target env's torch")
    verdict(
        gpu_device.torch_cuda(gpu_torch_probe, vllm_env.python, env=vllm_env, targets=fix_targets)
    )


@pytest.mark.vllm_check("gpu.torch-fp8")
def test_torch_fp8_scaled_mm(vllm_env, gpu_torch_probe, require_gpu, fix_targets, verdict):
    verdict(
        gpu_device.torch_fp8(gpu_torch_probe, vllm_env.python, env=vllm_env, targets=fix_targets)
    )


# -- per checkpoint: each --modelopt-checkpoint and each --vllm-checkpoint (compressed-tensors,
# fine-grained FP8, MXFP4, ModelOpt), on its one load (gpu_checkpoint: plugins/gpu.py)
@pytest.mark.vllm_check("gpu.vllm-generate")
def test_vllm_loads_and_generates(gpu_checkpoint, vllm_checkpoint_runs, vllm_env, request, verdict):
    producer = True  # a --modelopt-checkpoint: ModelOpt's config classes
    if not gpu_checkpoint.modelopt:  # its format's, as the quant plan reads its config
        producer = request.getfixturevalue("vllm_checkpoint_plan").producer
    verdict(
        gpu_vllm_load.vllm_generates(
            vllm_checkpoint_runs, str(gpu_checkpoint.checkpoint.path), producer, env=vllm_env
        )
    )


@pytest.mark.vllm_check("gpu.vllm-sane")
def test_vllm_output_sane(gpu_checkpoint, vllm_checkpoint_runs, verdict):
    path = str(gpu_checkpoint.checkpoint.path)
    verdict(gpu_vllm_output.vllm_sane(vllm_checkpoint_runs[0], path))


@pytest.mark.vllm_check("gpu.vllm-perplexity")
def test_vllm_perplexity(gpu_checkpoint, vllm_checkpoint_runs, vllm_perplexity_exponent, verdict):
    verdict(
        gpu_vllm_output.vllm_perplexity(
            vllm_checkpoint_runs[0], str(gpu_checkpoint.checkpoint.path), vllm_perplexity_exponent
        )
    )


@pytest.mark.vllm_check("gpu.vllm-known-answer")
def test_vllm_known_answer(gpu_checkpoint, vllm_checkpoint_runs, verdict):
    path = str(gpu_checkpoint.checkpoint.path)
    verdict(gpu_vllm_output.vllm_known_answer(vllm_checkpoint_runs[0], path))


@pytest.mark.vllm_check("gpu.kv-scales-loaded")
def test_vllm_kv_scales_loaded(gpu_checkpoint, vllm_checkpoint_runs, request, verdict):
    from pytest_vllm_env.findings import skipped

    ckpt = gpu_checkpoint.checkpoint
    if gpu_checkpoint.modelopt:
        scales, _ = request.getfixturevalue("modelopt_scales")
    elif request.getfixturevalue("vllm_checkpoint_plan").producer == "modelopt":
        scales, _ = request.getfixturevalue("vllm_checkpoint_scales")
    else:  # the KV-scale names it holds the layers to are ModelOpt's
        reason = "not a ModelOpt checkpoint: the KV scales judged here are ModelOpt's"
        verdict(skipped("gpu.kv-scales-loaded", f"{ckpt.label}: {reason}"))
        return
    verdict(gpu_vllm_output.vllm_kv_scales(vllm_checkpoint_runs[0], str(ckpt.path), scales))


@pytest.mark.vllm_check("gpu.vllm-reference")
def test_vllm_matches_reference(vllm_reference_verdict, verdict):
    verdict(vllm_reference_verdict)


@pytest.mark.vllm_check("gpu.prediction-agrees")
def test_prediction_agrees(
    gpu_checkpoint,
    vllm_checkpoint_runs,
    vllm_perplexity_exponent,
    vllm_reference_verdict,
    gpu_checkpoint_prediction,
    verdict,
):
    path = str(gpu_checkpoint.checkpoint.path)
    run = vllm_checkpoint_runs[0]
    judged = [
        gpu_vllm_output.vllm_sane(run, path),
        gpu_vllm_output.vllm_perplexity(run, path, vllm_perplexity_exponent),
        gpu_vllm_output.vllm_known_answer(run, path),
        vllm_reference_verdict,
    ]
    verdict(gpu_prediction.prediction_agrees(gpu_checkpoint_prediction, run, judged, path))
