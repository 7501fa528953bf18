"""Fixtures for the run-time layer (``triton.*``, ``flashinfer.*``, ``inductor.*``,
``deepgemm.*``, ``pins.*``, ``settings.*``): the compilers that run inside the stack, the
kernel packages' own pins and the settings the env gives vLLM, each read from the env's files
and its own package sources (docs/jit.md). Nothing is imported from the target env."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the check library loads when a fixture runs, not at start-up
    from pytest_vllm_env.cache import FactCache
    from pytest_vllm_env.facts.env import PixiEnv
    from pytest_vllm_env.facts.triton_ptxas import TritonPtxasFacts
    from pytest_vllm_env.tables.archs import Arch


def _getter(cache: FactCache):
    """``(name, compute, deps) -> value`` over the session's fact cache."""
    return lambda name, compute, deps: cache.get(name, compute, deps)


def no_archs_reason(archs: list[Arch], source: str) -> str:
    """Why an arch-dependent check is skipped (empty when there are target archs)."""
    if archs:
        return ""
    return (
        "no target arch: pass --cuda-arch (e.g. 9.0), set TORCH_CUDA_ARCH_LIST in the env's "
        f"activation, or run on a GPU node (looked at: {source})"
    )


@pytest.fixture(scope="session")
def triton_ptxas_facts(
    vllm_env: PixiEnv, cuda_archs: list[Arch], vllm_fact_cache: FactCache
) -> TritonPtxasFacts | None:
    """Triton's ptxas per target arch (:class:`pytest_vllm_env.facts.triton_ptxas.
    TritonPtxasFacts`): the binary and ``--gpu-name`` its ``make_cubin`` uses, the override
    variable after activation, each binary's CUDA release (``--version``, cached); None
    without Triton."""
    from pytest_vllm_env.facts import triton_ptxas

    return triton_ptxas.read(vllm_env, _pairs(cuda_archs), _getter(vllm_fact_cache))


@pytest.fixture(scope="session")
def sibling_pins(vllm_env: PixiEnv):
    """Every installed distribution's ``Requires-Dist`` pin of another installed one
    (:class:`pytest_vllm_env.facts.pins.PinFacts`), with markers evaluated for the env."""
    from pytest_vllm_env.facts import pins

    return pins.read(vllm_env)


@pytest.fixture(scope="session")
def vllm_settings_facts(vllm_env: PixiEnv, vllm_fact_cache: FactCache):
    """The ``VLLM_*`` variables and ``vllm serve`` options the env sets, and what its vLLM
    reads (:class:`pytest_vllm_env.facts.vllm_settings.SettingsFacts`); None without vLLM."""
    from pytest_vllm_env.facts import vllm_settings

    return vllm_settings.read(vllm_env, _getter(vllm_fact_cache))


def _pairs(archs: list[Arch]) -> list[tuple[str, int]]:
    return [(f"{a.major}.{a.minor}", a.number) for a in archs]


@pytest.fixture(scope="session")
def python_headers(vllm_env: PixiEnv):
    """The env interpreter's include dir, as Triton's ``-I`` names it, and whether
    ``Python.h`` is there (:class:`pytest_vllm_env.facts.host_build.PythonHeaders`)."""
    from pytest_vllm_env.facts import host_build

    return host_build.python_headers(vllm_env)


@pytest.fixture(scope="session")
def host_c_compiler(vllm_env: PixiEnv, triton_ptxas_facts):
    """The C compiler Triton's ``runtime/build.py`` would run in the activated env
    (:class:`pytest_vllm_env.facts.host_build.HostCompiler`); None without Triton."""
    from pytest_vllm_env.facts import host_build

    if triton_ptxas_facts is None:
        return None
    programs = triton_ptxas_facts.cc_programs or ("gcc", "clang")
    return host_build.host_compiler(vllm_env, triton_ptxas_facts.cc_variable or "CC", programs)


@pytest.fixture(scope="session")
def flashinfer_jit_facts(vllm_env: PixiEnv, cuda_archs: list[Arch], vllm_fact_cache: FactCache):
    """FlashInfer's JIT and kernel packages
    (:class:`pytest_vllm_env.facts.flashinfer_jit.FlashInferFacts`); None without it."""
    from pytest_vllm_env.facts import flashinfer_jit

    return flashinfer_jit.read(vllm_env, _pairs(cuda_archs), _getter(vllm_fact_cache))


@pytest.fixture(scope="session")
def deepgemm_facts(vllm_env: PixiEnv, cuda_archs: list[Arch], vllm_fact_cache: FactCache):
    """The DeepGEMM vLLM imports and what its JIT needs
    (:class:`pytest_vllm_env.facts.deepgemm.DeepGemmFacts`); None without it."""
    from pytest_vllm_env.facts import deepgemm

    return deepgemm.read(vllm_env, _pairs(cuda_archs), _getter(vllm_fact_cache))
