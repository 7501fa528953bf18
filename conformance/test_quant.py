"""Quantized checkpoints of any format, header-only: will the env's vLLM build, load and run
each --vllm-checkpoint (compressed-tensors, fine-grained FP8, MXFP4, ModelOpt) on the target
GPUs? docs/quant-formats.md says what each check judges."""

import pytest

from pytest_vllm_env.checks import modelopt, quant_config, quant_kernels, quant_tensors

pytestmark = pytest.mark.toolchain


@pytest.mark.vllm_check("quant.config")
def test_qfmt_config(
    vllm_checkpoint, vllm_checkpoint_plan, vllm_quant_source, vllm_env, request, verdict
):
    version = vllm_env.version_of("vllm")
    modelopt_source = None
    if vllm_checkpoint_plan.producer == "modelopt":
        modelopt_source = request.getfixturevalue("vllm_modelopt_source")
    verdict(
        quant_config.quant_config(
            vllm_checkpoint, vllm_checkpoint_plan, vllm_quant_source, version, modelopt_source
        )
    )


@pytest.mark.vllm_check("quant.tensors-complete")
def test_qfmt_tensors(
    vllm_checkpoint,
    vllm_checkpoint_plan,
    vllm_checkpoint_scales,
    vllm_checkpoint_samples,
    request,
    verdict,
):
    judged = None
    if vllm_checkpoint_plan.producer == "modelopt":
        judged = modelopt.tensors_complete(
            vllm_checkpoint,
            vllm_checkpoint_scales[0],
            vllm_checkpoint_samples,
            request.getfixturevalue("vllm_modelopt_source"),
            request.getfixturevalue("vllm_kv_naming"),
        )
    verdict(quant_tensors.tensors_complete(vllm_checkpoint, vllm_checkpoint_plan, judged))


@pytest.mark.vllm_check("quant.scales-sane")
def test_qfmt_scales(vllm_checkpoint, vllm_checkpoint_plan, vllm_checkpoint_scales, verdict):
    values, unread = vllm_checkpoint_scales
    producer = vllm_checkpoint_plan.producer
    verdict(quant_tensors.scales_sane(vllm_checkpoint, values, unread, producer))


@pytest.mark.vllm_check("quant.min-capability")
def test_qfmt_capability(
    vllm_checkpoint, vllm_checkpoint_plan, vllm_env, cuda_archs, cuda_archs_source, request, verdict
):
    version = vllm_env.version_of("vllm")
    source = None
    if vllm_checkpoint_plan.producer == "modelopt":
        source = request.getfixturevalue("vllm_modelopt_source")
    verdict(
        quant_config.min_capability(
            vllm_checkpoint, vllm_checkpoint_plan, version, cuda_archs, cuda_archs_source, source
        )
    )


@pytest.mark.vllm_check("quant.kernel-arch")
def test_qfmt_kernel_arch(
    vllm_checkpoint,
    vllm_checkpoint_plan,
    vllm_env,
    cuda_archs,
    cuda_archs_source,
    vllm_quant_packages,
    vllm_quant_source,
    vllm_launch,
    vllm_triton_kernels,
    verdict,
):
    version = vllm_env.version_of("vllm")
    verdict(
        quant_kernels.kernel_arch(
            vllm_checkpoint,
            vllm_checkpoint_plan,
            version,
            cuda_archs,
            cuda_archs_source,
            vllm_quant_packages,
            vllm_quant_source.kernel_lists,
            tp=vllm_launch.tensor_parallel_size,
            moe_backend=vllm_launch.moe_backend,
            triton_kernels=vllm_triton_kernels,
        )
    )
