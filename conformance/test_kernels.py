"""Kernel packages a checkpoint's layers need: will the env's vLLM pick a kernel for this
model on the target GPU from a package the env lacks (FlashInfer for Qwen3.5's Gated-DeltaNet
prefill), and refuse at the first request?"""

import pytest

from pytest_vllm_env.checks import gdn_prefill

pytestmark = pytest.mark.toolchain


@pytest.mark.vllm_check("modelopt.gdn-prefill-backend")
def test_gdn_prefill_backend(modelopt_checkpoint, vllm_gdn_rule, cuda_archs, gdn_env, verdict):
    verdict(
        gdn_prefill.gdn_prefill_backend(modelopt_checkpoint, vllm_gdn_rule, cuda_archs, gdn_env)
    )
