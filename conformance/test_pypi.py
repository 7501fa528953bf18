"""The manifest's PyPI options, judged before any install: index order, build isolation."""

import pytest

from pytest_vllm_env.checks import pypi

pytestmark = pytest.mark.toolchain


@pytest.mark.vllm_check("pypi.index-order")
def test_index_order(vllm_env, pypi_settings, verdict):
    verdict(pypi.index_order(vllm_env, pypi_settings))


@pytest.mark.vllm_check("pypi.build-isolation")
def test_build_isolation(vllm_env, pypi_settings, verdict):
    verdict(pypi.build_isolation(vllm_env, pypi_settings))
