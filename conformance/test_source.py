"""A vLLM source tree (--vllm-source) before its build: its stale build dir, torch's API."""

import pytest

from pytest_vllm_env.checks import source_build
from pytest_vllm_env.findings import skipped

pytestmark = pytest.mark.toolchain

NO_SOURCE = "no --vllm-source given"


@pytest.mark.vllm_check("source.cmake-cache")
def test_cmake_cache(vllm_env, vllm_source_dir, torch_cmake_config, verdict):
    if vllm_source_dir is None:
        verdict(skipped("source.cmake-cache", NO_SOURCE))
        return
    bad = source_build.readable(vllm_source_dir)
    config = (
        torch_cmake_config.config.parent
        if torch_cmake_config and torch_cmake_config.config
        else None
    )
    verdict(bad or source_build.cmake_cache(vllm_env, vllm_source_dir, config))


@pytest.mark.vllm_check("source.torch-api")
def test_torch_api(vllm_env, vllm_source_dir, verdict):
    if vllm_source_dir is None:
        verdict(skipped("source.torch-api", NO_SOURCE))
        return
    verdict(
        source_build.readable(vllm_source_dir) or source_build.torch_api(vllm_env, vllm_source_dir)
    )
