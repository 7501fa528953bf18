"""Built vLLM wheels (``--vllm-wheel``), judged without installing them."""

import pytest

from pytest_vllm_env import findings as F
from pytest_vllm_env.checks import platform_floor, wheels
from pytest_vllm_env.facts.platform import host_glibc

pytestmark = pytest.mark.toolchain


@pytest.mark.vllm_check("wheel.all")
def test_built_wheels(vllm_env, vllm_wheel_facts, torch_facts, cuda_archs, verdict):
    if not vllm_wheel_facts:
        verdict(F.skipped("wheel.all", "no --vllm-wheel given"))
        return
    out = []
    for whl in vllm_wheel_facts:
        out += wheels.judge_wheel(
            whl,
            python_version=vllm_env.python_version,
            torch=torch_facts,
            targets=cuda_archs,
            host_glibc=host_glibc(),
            floor=platform_floor.pixi_floor(vllm_env.manifest, vllm_env.name),
            env=vllm_env,
        )
    verdict(out)
