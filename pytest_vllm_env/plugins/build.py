"""Fixtures and settings for the build tier (``build.*``): real compiles per target arch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_vllm_env.defaults import BUILD_TIMEOUT
from pytest_vllm_env.plugins import settings

if TYPE_CHECKING:  # the check library loads when a fixture runs, not at start-up
    from pytest_vllm_env.checks.cuda import ToolkitFacts
    from pytest_vllm_env.facts.build import ExtensionBuild, KernelBuild
    from pytest_vllm_env.facts.env import PixiEnv
    from pytest_vllm_env.tables.archs import Arch


# This area's options and ini keys are declared at start by plugin.py (_add_area_options):
# the plugin itself is registered only by a run that uses it.


def _build_timeout(config: pytest.Config) -> float:
    return settings.get_number(config, "build_timeout", BUILD_TIMEOUT)


def pytest_configure(config: pytest.Config) -> None:
    _build_timeout(config)  # a bad number is a usage error at start, not in the first test


_built: dict[tuple[str, str], ExtensionBuild] = {}


@pytest.fixture(scope="session")
def torch_extension_build(request: pytest.FixtureRequest, vllm_env: PixiEnv, tmp_path_factory):
    """``torch_extension_build(arch)``: the target env's Python builds a tiny CUDA extension
    with ``torch.utils.cpp_extension`` for ``arch`` (``TORCH_CUDA_ARCH_LIST`` set to it,
    the env's activation applied, built under pytest's tmp dir) and, on a GPU of that arch,
    runs it; a :class:`pytest_vllm_env.facts.build.ExtensionBuild` (the probe's report, the
    ``.so`` it built read), built once per arch and session."""
    from pytest_vllm_env.facts.build import extension_build
    from pytest_vllm_env.runners import gpu

    timeout = _build_timeout(request.config)

    def build(arch: Arch) -> ExtensionBuild:
        key = (str(vllm_env.prefix), arch.cc)
        if key not in _built:
            where: Path = tmp_path_factory.mktemp(f"torch-ext-{arch.sm}")
            run = gpu.run_probe(
                vllm_env.python,
                "build_ext.py",
                [str(where), arch.cc],
                env=vllm_env.environ(),
                timeout=timeout,
            )
            _built[key] = extension_build(run.problem, run.data, run.output_tail)
        return _built[key]

    return build


@pytest.fixture
def nvcc_kernel_build(request: pytest.FixtureRequest, cuda_toolkit: ToolkitFacts, tmp_path: Path):
    """``nvcc_kernel_build(arch)``: a 5-line kernel compiled for ``arch`` with the nvcc torch's
    cpp_extension would use in the activated env, under this test's tmp dir; a
    :class:`pytest_vllm_env.facts.build.KernelBuild` (the run, and the ``.so`` read)."""
    from pytest_vllm_env.plugins.cuda import _timeout
    from pytest_vllm_env.runners.nvcc_kernel import kernel_build

    timeout = _timeout(request.config)

    def build(arch: Arch) -> KernelBuild:
        return kernel_build(
            cuda_toolkit.environ,
            cuda_toolkit.nvcc_on_path,
            cuda_toolkit.version,
            arch,
            tmp_path / arch.sm,
            timeout,
        )

    return build
