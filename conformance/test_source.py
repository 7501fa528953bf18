"""A vLLM source tree (--vllm-source) before its build: its stale build dir, torch's API."""

import pytest

from pytest_vllm_env.checks import source
from pytest_vllm_env.facts.source_tree import kernel_types, next_build, source_tree
from pytest_vllm_env.findings import skipped

pytestmark = pytest.mark.toolchain

NO_SOURCE = "no --vllm-source given"


@pytest.mark.vllm_check("source.cmake-cache")
def test_cmake_cache(vllm_env, vllm_source_dir, torch_cmake_config, verdict):
    if vllm_source_dir is None:
        verdict(skipped("source.cmake-cache", NO_SOURCE))
        return
    bad = source.readable(source_tree(vllm_source_dir))
    if bad is not None:
        verdict(bad)
        return
    config = (
        torch_cmake_config.config.parent
        if torch_cmake_config and torch_cmake_config.config
        else None
    )
    verdict(source.cmake_cache(next_build(vllm_env, vllm_source_dir, config)))


@pytest.mark.vllm_check("source.torch-api")
def test_torch_api(vllm_env, vllm_source_dir, vllm_source, verdict):
    if vllm_source_dir is None:
        verdict(skipped("source.torch-api", NO_SOURCE))
        return
    bad = source.readable(source_tree(vllm_source_dir))
    if bad is not None:
        verdict(bad)
        return
    types = kernel_types(vllm_env, vllm_source_dir)
    pins = vllm_source.requirements if vllm_source is not None else ()
    verdict(source.torch_api(vllm_source_dir, types, vllm_env.prefix, env=vllm_env, pins=pins))
