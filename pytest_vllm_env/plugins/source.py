"""Fixtures for the manifest's PyPI side (``pypi.*``) and a vLLM source tree (``source.*``,
``cmake.vllm-floor``): read from files, before any install or build."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_vllm_env.plugins import settings

if TYPE_CHECKING:  # the check library loads when a fixture runs, not at start-up
    from pytest_vllm_env.facts.env import PixiEnv
    from pytest_vllm_env.facts.pypi import PypiOptions
    from pytest_vllm_env.facts.source_tree import CMakeFloor


# This area's options and ini keys are declared at start by plugin.py (_add_area_options):
# the plugin itself is registered only by a run that uses it.


def pytest_configure(config: pytest.Config) -> None:
    project_path(config)  # a path that is not there is a usage error at start
    source_path(config)


# What every vLLM checkout holds at its top (setup.py since 0.1, pyproject.toml and
# CMakeLists.txt since 0.4): a folder with none of them is no vLLM source tree.
SOURCE_MARKERS = ("setup.py", "pyproject.toml", "CMakeLists.txt")


def source_path(config: pytest.Config) -> Path | None:
    """``--vllm-source`` as a path; one that is missing, a file, or a folder with none of
    :data:`SOURCE_MARKERS` is a usage error at start (it was judged as a vLLM build and
    blamed the env's CMake and torch: issue 21)."""
    value = settings.get(config, "vllm_source")
    path = settings.get_path(config, "vllm_source")
    if path is None:
        return None
    from pytest_vllm_env import files

    what = files.describe(path)
    if what != "a directory":
        why = "does not exist" if what == "missing" else f"is {what}, not a folder"
        raise pytest.UsageError(
            f"--vllm-source={value}: {path} {why}: pass the top of a vLLM checkout (the folder "
            "holding its setup.py and CMakeLists.txt)"
        )
    try:
        held = [m for m in SOURCE_MARKERS if (path / m).exists()]
    except OSError as exc:
        raise pytest.UsageError(f"--vllm-source={value}: cannot read {path}: {exc}") from None
    if not held:
        raise pytest.UsageError(
            f"--vllm-source={value}: {path} holds none of {', '.join(SOURCE_MARKERS)}: not a "
            "vLLM source tree (pass the top of a vLLM checkout)"
        )
    return path


def project_path(config: pytest.Config) -> Path | None:
    """``--vllm-project`` as a path (settings.resolve_path: the one path rule); one that does
    not exist is a usage error."""
    value = settings.get(config, "vllm_project")
    path = settings.get_path(config, "vllm_project")
    if path is None:
        return None
    if not path.exists():
        raise pytest.UsageError(f"--vllm-project={value}: no such file or folder ({path})")
    return path


@pytest.fixture(scope="session")
def pypi_settings(request: pytest.FixtureRequest, vllm_env: PixiEnv) -> PypiOptions | None:
    """The env's merged ``[pypi-options]`` and ``[pypi-dependencies]`` over its features
    (:class:`pytest_vllm_env.facts.pypi.PypiOptions`); for a venv, what its project
    declares for pip or uv (``--vllm-project``); None when neither is found."""
    from pytest_vllm_env.facts.pypi import read_options

    return read_options(vllm_env, project_path(request.config))


@pytest.fixture(scope="session")
def vllm_source_dir(request: pytest.FixtureRequest) -> Path | None:
    """The ``--vllm-source`` tree as a path (None when not given)."""
    return settings.get_path(request.config, "vllm_source")


@pytest.fixture(scope="session")
def vllm_cmake_floor(vllm_source_dir: Path | None) -> CMakeFloor:
    """The CMake a vLLM build needs (:class:`pytest_vllm_env.facts.source_tree.CMakeFloor`): read
    from the ``--vllm-source`` tree, else vLLM's current floor."""
    from pytest_vllm_env.facts.source_tree import cmake_floor

    return cmake_floor(vllm_source_dir)


@pytest.fixture(scope="session")
def vllm_built_in_env(
    pypi_settings: PypiOptions | None, vllm_source_dir: Path | None
) -> str | None:
    """Why a vLLM build would run the env's own cmake and torch: ``--vllm-source`` (built with
    ``--no-build-isolation``) or vllm declared as a source dependency with
    ``no-build-isolation``; None when no such build is declared."""
    if vllm_source_dir is not None:
        return f"a --no-build-isolation build of {vllm_source_dir}"
    if pypi_settings is None:
        return None
    dep = pypi_settings.deps.get("vllm")
    if dep and dep.kind in ("git", "path", "url-sdist") and not pypi_settings.isolated("vllm"):
        return f"vllm from {dep.kind} ({dep.where}) built with no-build-isolation"
    return None
