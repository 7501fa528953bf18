"""Fixtures and settings for the build tier (``build.*``): real compiles per target arch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_vllm_env.defaults import BUILD_TIMEOUT
from pytest_vllm_env.plugins import settings

if TYPE_CHECKING:  # the check library loads when a fixture runs, not at start-up
    from pytest_vllm_env.facts.env import PixiEnv
    from pytest_vllm_env.runners import gpu
    from pytest_vllm_env.tables.archs import Arch


def pytest_addoption(parser: pytest.Parser) -> None:
    settings.add_setting(
        parser,
        "--build-timeout",
        f"seconds one torch extension build may take before it is killed; {BUILD_TIMEOUT:.0f}",
        metavar="SECONDS",
    )


def _build_timeout(config: pytest.Config) -> float:
    return settings.get_number(config, "build_timeout", BUILD_TIMEOUT)


def pytest_configure(config: pytest.Config) -> None:
    _build_timeout(config)  # a bad number is a usage error at start, not in the first test


_built: dict[tuple[str, str], gpu.ProbeResult] = {}


@pytest.fixture(scope="session")
def torch_extension_build(request: pytest.FixtureRequest, vllm_env: PixiEnv, tmp_path_factory):
    """``torch_extension_build(arch)``: the target env's Python builds a tiny CUDA extension
    with ``torch.utils.cpp_extension`` for ``arch`` (``TORCH_CUDA_ARCH_LIST`` set to it,
    the env's activation applied, built under pytest's tmp dir) and, on a GPU of that arch,
    runs it; a :class:`pytest_vllm_env.runners.gpu.ProbeResult`, built once per arch and session."""
    from pytest_vllm_env.runners import gpu

    timeout = _build_timeout(request.config)

    def build(arch: Arch) -> gpu.ProbeResult:
        key = (str(vllm_env.prefix), arch.cc)
        if key not in _built:
            where: Path = tmp_path_factory.mktemp(f"torch-ext-{arch.sm}")
            _built[key] = gpu.run_probe(
                vllm_env.python,
                "build_ext.py",
                [str(where), arch.cc],
                env=vllm_env.environ(),
                timeout=timeout,
            )
        return _built[key]

    return build
