"""ModelOpt checkpoints, header-only: will the env's vLLM accept each --modelopt-checkpoint?"""

import pytest

from pytest_vllm_env.checks import modelopt

pytestmark = pytest.mark.toolchain


@pytest.mark.vllm_check("modelopt.files-readable")
def test_files_readable(modelopt_checkpoint, verdict):
    verdict(modelopt.files_readable(modelopt_checkpoint))


@pytest.mark.vllm_check("modelopt.quant-config")
def test_quant_config(modelopt_checkpoint, verdict):
    verdict(modelopt.quant_config(modelopt_checkpoint))


@pytest.mark.vllm_check("modelopt.quant-algo-supported")
def test_quant_algo_supported(modelopt_checkpoint, vllm_modelopt_source, vllm_env, verdict):
    version = vllm_env.version_of("vllm")
    verdict(modelopt.quant_algo_supported(modelopt_checkpoint, vllm_modelopt_source, version))


@pytest.mark.vllm_check("modelopt.tensors-complete")
def test_tensors_complete(
    modelopt_checkpoint,
    modelopt_scales,
    modelopt_weight_samples,
    vllm_modelopt_source,
    vllm_kv_naming,
    vllm_env,
    verdict,
):
    scales, _ = modelopt_scales
    verdict(
        modelopt.tensors_complete(
            modelopt_checkpoint,
            scales,
            modelopt_weight_samples,
            vllm_modelopt_source,
            vllm_kv_naming,
            vllm_env.version_of("vllm"),
        )
    )


@pytest.mark.vllm_check("modelopt.shapes-match-config")
def test_shapes_match_config(modelopt_checkpoint, verdict):
    verdict(modelopt.shapes_match_config(modelopt_checkpoint))


@pytest.mark.vllm_check("modelopt.scales-sane")
def test_scales_sane(modelopt_checkpoint, modelopt_scales, verdict):
    values, unread = modelopt_scales
    verdict(modelopt.scales_sane(modelopt_checkpoint, values, unread))


@pytest.mark.vllm_check("modelopt.architecture-registered")
def test_architecture_registered(modelopt_checkpoint, vllm_model_registry, vllm_env, verdict):
    version = vllm_env.version_of("vllm")
    verdict(
        modelopt.architecture_registered(
            modelopt_checkpoint, vllm_model_registry, version, env=vllm_env
        )
    )


@pytest.mark.vllm_check("modelopt.min-capability")
def test_min_capability(
    modelopt_checkpoint, vllm_modelopt_source, vllm_env, cuda_archs, cuda_archs_source, verdict
):
    version = vllm_env.version_of("vllm")
    verdict(
        modelopt.min_capability(
            modelopt_checkpoint, vllm_modelopt_source, version, cuda_archs, cuda_archs_source
        )
    )


@pytest.mark.vllm_check("modelopt.vision-tower")
def test_vision_tower(modelopt_checkpoint, vllm_model_registry, vllm_env, cuda_archs, verdict):
    version = vllm_env.version_of("vllm")
    verdict(modelopt.vision_tower(modelopt_checkpoint, vllm_model_registry, version, cuda_archs))
