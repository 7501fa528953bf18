"""Fixtures for the xformers area: would Qwen2.5-VL's vision tower use xformers, and does it
work?  The decision is read from the env's own vLLM source (pytest_vllm_env.readers.vllm_vit) and
judged by pytest_vllm_env.checks.xformers; the gpu check runs a probe with the target env's
Python."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the check library loads when a fixture runs, not at start-up
    from pytest_vllm_env.checks.xformers import Decision, Installed
    from pytest_vllm_env.facts.env import PixiEnv
    from pytest_vllm_env.facts.gpu_probe import ProbeResult
    from pytest_vllm_env.readers.vllm_vit import VitSource
    from pytest_vllm_env.tables.archs import Arch


@pytest.fixture(scope="session")
def vit_attn_source(vllm_env: PixiEnv, vllm_fact_cache) -> VitSource | None:
    """What the env's vLLM source says about Qwen2.5-VL's vision attention backend (the rule,
    with the file:function it was read from); None when vLLM is not installed."""
    from pytest_vllm_env.readers.vllm_vit import SOURCES, VitSource, read_vit_tree

    dist = vllm_env.dist("vllm")
    if dist is None:
        return None
    root = dist.location
    data = vllm_fact_cache.get(
        "vllm-vit-attn-source",
        lambda: read_vit_tree(root).to_json(),
        [root / rel for rel in SOURCES],
    )
    return VitSource.from_json(data)


@pytest.fixture(scope="session")
def vit_attn_installed(vllm_env: PixiEnv) -> Installed:
    """The env's attention packages as the decision needs them: torch, flash-attn, xformers,
    triton, flashinfer-python, vLLM's bundled vllm_flash_attn, vLLM's own xformers pin."""
    from pytest_vllm_env.checks.xformers import Installed

    return Installed(
        torch=vllm_env.version_of("torch"),
        flash_attn=vllm_env.version_of("flash-attn"),
        xformers=vllm_env.version_of("xformers"),
        triton=vllm_env.version_of("triton"),
        flashinfer=vllm_env.version_of("flashinfer-python"),
        vllm_flash_attn=_has_bundled_fa(vllm_env),
        vllm_xformers_pin=_vllm_pin(vllm_env, "xformers"),
    )


def _has_bundled_fa(env: PixiEnv) -> bool:
    folder = env.package_file("vllm", "vllm/vllm_flash_attn")
    return bool(folder and any(folder.glob("*.so")))


def _vllm_pin(env: PixiEnv, name: str) -> str | None:
    dist = env.dist("vllm")
    for req in dist.requires if dist else ():
        head = req.split(";", 1)[0].strip()
        if head.lower().startswith(name) and "extra ==" not in req:
            return head[len(name) :].strip() or None
    return None


@pytest.fixture(scope="session")
def xformers_decisions(
    vllm_env: PixiEnv,
    vit_attn_source: VitSource | None,
    vit_attn_installed: Installed,
    cuda_archs: list[Arch],
) -> list[Decision]:
    """The vision backend per target arch (one undecided-by-arch entry when no arch is
    known); VLLM_ATTENTION_BACKEND is read from the env's activation. Skips when vLLM is
    not installed."""
    from pytest_vllm_env.checks.xformers import decide

    if vit_attn_source is None:
        pytest.skip(f"vLLM is not installed in {vllm_env.prefix}")
    env_backend = vllm_env.environ().get("VLLM_ATTENTION_BACKEND") or None
    targets: list[Arch | None] = list(cuda_archs) or [None]
    return [decide(vit_attn_source, a, vit_attn_installed, env_backend) for a in targets]


@pytest.fixture(scope="session")
def xformers_probe(vllm_env: PixiEnv) -> ProbeResult:
    """The target env's Python running probes/xformers_check.py: xformers' attention vs
    torch SDPA on the GPU (max abs diff)."""
    from pytest_vllm_env.runners import gpu

    return gpu.run_probe(vllm_env.python, "xformers_check.py", env=vllm_env.environ(), timeout=300)
