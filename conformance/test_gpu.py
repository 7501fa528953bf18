"""The gpu tier: torch on the GPU, and vLLM loading a reference checkpoint for real."""

import json
from pathlib import Path

import pytest

from pytest_vllm_env import gpu
from pytest_vllm_env.plugins.gpu import _probe_timeout, vllm_runs

pytestmark = pytest.mark.gpu


@pytest.mark.vllm_check("gpu.torch-cuda")
def test_torch_uses_gpu(vllm_env, gpu_torch_probe, verdict):
    if not gpu_torch_probe.problem and not gpu_torch_probe.data.get("available"):
        if gpu_torch_probe.data.get("cuda") and not gpu_torch_probe.data.get("exception"):
            pytest.skip("no GPU visible to the target env's torch")
    verdict(gpu.torch_cuda(gpu_torch_probe, vllm_env.python))


@pytest.mark.vllm_check("gpu.vllm-generate")
def test_vllm_loads_and_generates(request, vllm_env, reference_checkpoints, require_gpu, verdict):
    if not reference_checkpoints:
        verdict(gpu.vllm_generates([], "", None))
        return
    for ckpt in reference_checkpoints:
        quant = "modelopt" if (Path(ckpt) / "hf_quant_config.json").is_file() else None
        runs = vllm_runs(vllm_env, ckpt, quant, _probe_timeout(request.config))
        print(json.dumps([r.data for r in runs]))
        verdict(gpu.vllm_generates(runs, ckpt, quant))
