"""The xformers fallback: would Qwen2.5-VL's vision tower use xformers with this env's vLLM on
the target GPU, is it installed with a matching torch, and does it compute on the GPU?"""

import pytest

from pytest_vllm_env.checks import xformers, xformers_torch
from pytest_vllm_env.facts.binaries import label, torch_root
from pytest_vllm_env.readers.torch_version import read_torch_cuda_or_why
from pytest_vllm_env.readers.xformers_build import read_build_torch_or_why


@pytest.mark.toolchain
@pytest.mark.vllm_check("xformers.decision")
def test_vision_backend_decision(
    vllm_env, vit_attn_source, xformers_decisions, vit_attn_installed, verdict
):
    verdict(
        xformers.decision_finding(
            vit_attn_source,
            xformers_decisions,
            vit_attn_installed,
            vllm_env.version_of("vllm"),
            env=vllm_env,
        )
    )


@pytest.mark.toolchain
@pytest.mark.vllm_check("xformers.torch-pin")
def test_xformers_torch_pin(vllm_env, xformers_decisions, extensions, fix_targets, verdict):
    dist = vllm_env.dist("xformers")
    # what xformers' ops import from torch: the stable C ABI alone pins no exact build
    ops = [e for e in extensions if label(e.path) == "xformers/_C.so" and not e.error]
    built, built_why = read_build_torch_or_why(dist.location / "xformers") if dist else (None, "")
    root = torch_root(vllm_env)
    torch_cuda, cuda_why = read_torch_cuda_or_why(root) if root else (None, "")
    verdict(
        xformers_torch.torch_pin(
            xformers_decisions,
            dist.version if dist else None,
            dist.requires if dist else (),
            vllm_env.version_of("torch"),
            built,
            torch_cuda,
            (pin := xformers_torch.vllm_xformers_requirement(vllm_env.dist("vllm"))) is not None,
            pin,
            ops[0].torch_symbols if ops else None,
            env=vllm_env,
            targets=fix_targets,
            unreadable=[why for why in (built_why, cuda_why) if why],
        )
    )


@pytest.mark.gpu
@pytest.mark.vllm_check("xformers.attention")
def test_xformers_attention(vllm_env, xformers_decisions, require_gpu, request, verdict):
    if not xformers.uses_xformers(xformers_decisions):
        pytest.skip("the vision tower does not use xformers here (xformers.decision)")
    probe = request.getfixturevalue("xformers_probe")
    verdict(
        xformers_torch.attention(
            probe, xformers_decisions, str(vllm_env.python or ""), env=vllm_env
        )
    )
