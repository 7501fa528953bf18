"""The env itself: readable records, a Python, a manifest that parses, activation that runs."""

import pytest

from pytest_vllm_env.checks import env

pytestmark = pytest.mark.toolchain


@pytest.mark.vllm_check("env.conda-meta")
def test_conda_meta_readable(vllm_env, verdict):
    verdict(env.conda_meta_readable(vllm_env))


@pytest.mark.vllm_check("env.python")
def test_python_found(vllm_env, verdict):
    verdict(env.python_found(vllm_env))


@pytest.mark.vllm_check("env.site-packages")
def test_site_packages_readable(vllm_env, verdict):
    verdict(env.site_packages_readable(vllm_env))


@pytest.mark.vllm_check("env.manifest")
def test_manifest_parses(vllm_env, verdict):
    verdict(env.manifest_parses(vllm_env))


@pytest.mark.vllm_check("env.activation")
def test_activation_runs(vllm_env, verdict):
    verdict(env.activation_runs(vllm_env))
