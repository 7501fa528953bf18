"""Fixtures and settings for the gpu, build and buildlog tiers."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_vllm_env import gpu, settings
from pytest_vllm_env.env import PixiEnv


def pytest_addoption(parser: pytest.Parser) -> None:
    settings.add_setting(
        parser,
        "--reference-checkpoint",
        "checkpoint dir the gpu tier loads in vLLM and generates from",
        multiple=True,
    )
    settings.add_setting(
        parser, "--vllm-build-log", "build log(s) of vLLM to judge (buildlog tier)", multiple=True
    )
    settings.add_setting(
        parser, "--vllm-probe-timeout", "seconds a gpu probe (one vLLM load) may take; 600"
    )


def _probe_timeout(config: pytest.Config) -> float:
    try:
        return float(settings.get(config, "vllm_probe_timeout") or 600)
    except ValueError:
        return 600.0


@pytest.fixture(scope="session")
def gpu_torch_probe(request: pytest.FixtureRequest, vllm_env: PixiEnv) -> gpu.ProbeResult:
    """The target env's torch probed in a subprocess (version, CUDA, devices, a matmul)."""
    return gpu.run_probe(
        vllm_env.python,
        "torch_check.py",
        env=vllm_env.environ(),
        timeout=min(_probe_timeout(request.config), 300),
    )


@pytest.fixture(scope="session")
def reference_checkpoints(request: pytest.FixtureRequest) -> list[str]:
    """Checkpoint dirs from --reference-checkpoint (relative to the rootdir)."""
    base = Path(str(request.config.rootpath))
    return [str(base / p) for p in settings.get_list(request.config, "reference_checkpoint")]


@pytest.fixture(scope="session")
def vllm_build_logs(request: pytest.FixtureRequest) -> list[Path]:
    """Build logs from --vllm-build-log (globs allowed, relative to the rootdir)."""
    pats = settings.get_list(request.config, "vllm_build_log")
    return [Path(p) for p in settings.expand_globs(pats, request.config.rootpath)]


@pytest.fixture
def require_gpu(gpu_torch_probe: gpu.ProbeResult) -> None:
    """Skip (with the reason) when the target env's torch sees no GPU."""
    if gpu_torch_probe.problem or not gpu_torch_probe.data.get("devices"):
        pytest.skip(
            "no GPU visible to the target env's torch: "
            + (gpu_torch_probe.problem or str(gpu_torch_probe.data.get("exception", "none")))
        )


def vllm_runs(env: PixiEnv, checkpoint: str, quant: str | None, timeout: float, n: int = 2):
    """``n`` vLLM load+generate probes, each in its own process (one load per process)."""
    environ = dict(env.environ())
    environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    return [
        gpu.run_probe(
            env.python, "vllm_generate.py", [checkpoint, quant or ""], env=environ, timeout=timeout
        )
        for _ in range(n)
    ]
