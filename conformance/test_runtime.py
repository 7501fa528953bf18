"""The run-time layer: compilers that run inside vLLM, Triton and FlashInfer, the kernel
packages' own pins, and settings vLLM no longer reads (read from files; docs/jit.md)."""

import pytest

from pytest_vllm_env.checks import (
    deepgemm,
    flashinfer_jit,
    inductor,
    pins,
    settings_unread,
    triton_ptxas,
)
from pytest_vllm_env.plugins.runtime import no_archs_reason

pytestmark = pytest.mark.toolchain


@pytest.mark.vllm_check("triton.ptxas")
def test_triton_ptxas(vllm_env, triton_ptxas_facts, cuda_archs, cuda_archs_source, verdict):
    verdict(
        triton_ptxas.judge(
            triton_ptxas_facts, vllm_env, no_archs_reason(cuda_archs, cuda_archs_source)
        )
    )


@pytest.mark.vllm_check("inductor.python-headers")
def test_python_headers(vllm_env, python_headers, triton_ptxas_facts, verdict):
    triton = triton_ptxas_facts.version if triton_ptxas_facts else None
    verdict(inductor.python_headers(python_headers, triton, vllm_env))


@pytest.mark.vllm_check("inductor.c-compiler")
def test_c_compiler(vllm_env, host_c_compiler, triton_ptxas_facts, verdict):
    triton = triton_ptxas_facts.version if triton_ptxas_facts else None
    verdict(inductor.c_compiler(host_c_compiler, triton, vllm_env))


@pytest.mark.vllm_check("flashinfer.jit")
def test_flashinfer_jit(vllm_env, flashinfer_jit_facts, cuda_archs, cuda_archs_source, verdict):
    verdict(
        flashinfer_jit.jit(
            flashinfer_jit_facts, vllm_env, no_archs_reason(cuda_archs, cuda_archs_source)
        )
    )


@pytest.mark.vllm_check("flashinfer.kernel-wheels")
def test_flashinfer_kernel_wheels(vllm_env, flashinfer_jit_facts, verdict):
    verdict(flashinfer_jit.kernel_wheels(flashinfer_jit_facts, vllm_env))


@pytest.mark.vllm_check("deepgemm.jit")
def test_deepgemm_jit(vllm_env, deepgemm_facts, cuda_archs, cuda_archs_source, verdict):
    verdict(
        deepgemm.judge(deepgemm_facts, vllm_env, no_archs_reason(cuda_archs, cuda_archs_source))
    )


@pytest.mark.vllm_check("pins.siblings")
def test_sibling_pins(vllm_env, sibling_pins, fix_targets, verdict):
    verdict(pins.judge(sibling_pins, vllm_env, fix_targets))


@pytest.mark.vllm_check("settings.unread")
def test_settings_unread(vllm_env, vllm_settings_facts, verdict):
    verdict(settings_unread.judge(vllm_settings_facts, vllm_env))
