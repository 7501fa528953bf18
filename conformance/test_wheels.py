"""Built vLLM wheels (``--vllm-wheel``), judged without installing them."""

import pytest

from pytest_vllm_env import findings as F
from pytest_vllm_env.checks import platform_floor, wheels
from pytest_vllm_env.facts.platform import host_glibc

pytestmark = pytest.mark.toolchain


@pytest.mark.vllm_check("wheel.all")
def test_built_wheels(vllm_env, vllm_wheels, torch_facts, cuda_archs, tmp_path, verdict):
    if not vllm_wheels:
        verdict(F.skipped("wheel.all", "no --vllm-wheel given"))
        return
    out = []
    for i, whl in enumerate(vllm_wheels):
        out += wheels.judge_wheel(
            whl,
            python_version=vllm_env.python_version,
            torch=torch_facts,
            targets=cuda_archs,
            scratch=tmp_path / str(i),
            host_glibc=host_glibc(),
            floor=platform_floor.pixi_floor(vllm_env.manifest, vllm_env.name),
            env=vllm_env,
        )
    verdict(out)
