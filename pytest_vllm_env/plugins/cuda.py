"""Fixtures and settings for the cuda and nvtx areas.

``cuda_toolkit`` reads the env's CUDA toolkit once per session (nvcc runs are cached per
nvcc path in ``vllm_fact_cache``); ``cmake_for_env`` / ``nvtx_prediction`` give the static
prediction of CMake's FindCUDAToolkit; ``cmake_probe`` runs the real CMake (``build`` tier).
The fixtures gather facts (``pytest_vllm_env.facts``) and run tools (``runners``); the tests
in ``conformance/`` hand them to the checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_vllm_env.defaults import CUDA_TOOL_TIMEOUT
from pytest_vllm_env.plugins import settings

if TYPE_CHECKING:  # the check library loads when a fixture runs, not at start-up
    from pytest_vllm_env.cache import FactCache
    from pytest_vllm_env.facts import build_nvcc as build_facts
    from pytest_vllm_env.facts import find_cudatoolkit, toolkit, torch_config
    from pytest_vllm_env.facts.env import PixiEnv
    from pytest_vllm_env.readers import torch_cmake
    from pytest_vllm_env.runners import cmake_probe as probe_mod


# This area's options and ini keys are declared at start by plugin.py (_add_area_options):
# the plugin itself is registered only by a run that uses it.


def _timeout(config: pytest.Config) -> float:
    return settings.get_number(config, "cuda_tool_timeout", CUDA_TOOL_TIMEOUT)


def pytest_configure(config: pytest.Config) -> None:
    _timeout(config)  # a bad number is a usage error at start, not in the first test
    _check_cmake(config)


def _check_cmake(config: pytest.Config) -> None:
    """``--cmake`` must be a CMake: a path that is not an executable file, or a program whose
    ``--version`` says no CMake version, is a usage error at start (it was passed over without
    a word, and the NVTX prediction skipped: issue 21). Not run with ``--vllm-static`` (it
    may lie in a judged env: its version then comes from its package, or nothing runs it)."""
    value = settings.get(config, "cmake")
    path = settings.get_path(config, "cmake")
    if path is None:
        return  # (and nothing of ours is imported: a run without --cmake loads no reader)
    import os

    from pytest_vllm_env import files, proc
    from pytest_vllm_env.plugins.session import static_mode
    from pytest_vllm_env.readers.cmake_output import parse_cmake_version

    what = files.describe(path)
    if what != "a regular file" or not os.access(path, os.X_OK):
        why = {"a regular file": "is not executable", "missing": "does not exist"}.get(
            what, f"is {what}"
        )
        raise pytest.UsageError(f"--cmake={value}: {path} {why}: pass the path of a cmake")
    if static_mode(config):
        return  # --vllm-static: the envs are not located yet; cmake_version_for_env decides
    result = proc.run([path, "--version"], timeout=_timeout(config))
    if result.ok and parse_cmake_version(result.stdout):
        return
    if result.timed_out:
        how = (
            f"`{path} --version` did not answer within {_timeout(config):g} s "
            "(--cuda-tool-timeout; raise it on a slow machine)"
        )
    elif result.launch_error:
        how = f"`{path} --version` could not start: {result.launch_error}"
    else:
        how = f"`{path} --version` exited {result.returncode} and printed no `cmake version X.Y.Z`"
    raise pytest.UsageError(f"--cmake={value}: {how}: not a CMake")


@pytest.fixture(scope="session")
def cuda_toolkit(
    request: pytest.FixtureRequest, vllm_env: PixiEnv, vllm_fact_cache: FactCache
) -> toolkit.ToolkitFacts:
    """The env's CUDA toolkit (:class:`pytest_vllm_env.facts.toolkit.ToolkitFacts`): nvcc in the env
    and on the activated PATH, its version, ``--list-gpu-arch`` and ``-v`` dirs (run once per
    nvcc path and cached, killed after ``--cuda-tool-timeout``), the cuda-* conda-meta
    versions, include/lib dirs (``include/``, ``targets/x86_64-linux/{include,lib}``,
    ``lib/stubs``), key headers and libraries, dangling symlinks and ptxas."""
    from pytest_vllm_env.facts import toolkit

    timeout = _timeout(request.config)
    return toolkit.read_toolkit(
        vllm_env, lambda n, c, d: vllm_fact_cache.get(n, c, d, timeout), timeout=timeout
    )


@pytest.fixture(scope="session")
def nvcc_need(request: pytest.FixtureRequest, vllm_env: PixiEnv) -> toolkit.NvccNeed:
    """Why this env needs its own nvcc (:class:`pytest_vllm_env.facts.toolkit.NvccNeed`): what the
    user asked (build-tier tests in this run, ``--vllm-source``, ``--vllm-build-log``) and
    what the env holds (CUDA build packages, a manifest that declares ``cuda-nvcc``,
    packages that JIT-compile kernels such as flashinfer-python). Empty for an env that
    only runs prebuilt wheels: ``cuda.nvcc-in-env`` then passes without nvcc."""
    from pytest_vllm_env.facts import toolkit

    asked = []
    if any(item.get_closest_marker("build") for item in request.session.items):
        asked.append("build-tier tests run (-m build)")
    if settings.get(request.config, "vllm_source"):
        asked.append("--vllm-source: vLLM is to be built from source")
    if settings.get_list(request.config, "vllm_build_log"):
        asked.append("--vllm-build-log: a vLLM build is judged")
    return toolkit.nvcc_need(vllm_env, asked)


@pytest.fixture(scope="session")
def build_nvcc(
    request: pytest.FixtureRequest,
    cuda_toolkit: toolkit.ToolkitFacts,
    nvcc_need: toolkit.NvccNeed,
    vllm_fact_cache: FactCache,
    vllm_source_dir: Path | None,
) -> build_facts.BuildNvcc | None:
    """What a vLLM source build compiles with
    (:class:`pytest_vllm_env.facts.build_nvcc.BuildNvcc`): the ``$CUDA_HOME/bin/nvcc``
    setup.py runs, and the nvcc CMake takes, for the
    ``--vllm-source`` tree's setup.py, else for vLLM < 0.8.3 (CMake's own search) and >= 0.8.3
    (``-DCMAKE_CUDA_COMPILER`` from torch's CUDA_HOME); each nvcc run once, cached. None when
    nothing in the env needs an nvcc (no build asked for, no CUDA build packages)."""
    from pytest_vllm_env.facts import build_nvcc as build_facts

    if not nvcc_need.required:
        return None
    timeout = _timeout(request.config)
    return build_facts.read_build_nvcc(
        cuda_toolkit,
        vllm_source_dir,
        lambda n, c, d: vllm_fact_cache.get(n, c, d, timeout),
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def cmake_for_env(request: pytest.FixtureRequest, vllm_env: PixiEnv) -> Path | None:
    """The cmake a build in the env would run: ``--cmake``, else the activated PATH's;
    None when there is none (nvtx checks then skip and say so)."""
    given = settings.get_path(request.config, "cmake")
    if given:
        return given
    return vllm_env.which("cmake")


@pytest.fixture(scope="session")
def cmake_version_for_env(
    vllm_env: PixiEnv,
    cmake_for_env: Path | None,
    cuda_toolkit: toolkit.ToolkitFacts,
    vllm_fact_cache: FactCache,
) -> str | None:
    """``cmake --version`` of ``cmake_for_env`` (cached per cmake path), or None. With
    ``--vllm-static`` a cmake of the env is not run: its version comes from the package that
    installed it (:func:`pytest_vllm_env.facts.static_tools.cmake_version_from_files`), and a
    cmake from outside the env runs with the shell's environment, not the env's activation."""
    from pytest_vllm_env.facts import static_tools
    from pytest_vllm_env.runners import cmake_probe as probe_mod

    if cmake_for_env is None:
        return None
    cm = cmake_for_env
    if vllm_env.static and static_tools.inside(cm, vllm_env.prefix):
        return static_tools.cmake_version_from_files(vllm_env, cm)[0]
    environ = dict(vllm_env.base_environ) if vllm_env.static else cuda_toolkit.environ

    def compute() -> str | None:
        return probe_mod.cmake_version(cm, environ)

    return vllm_fact_cache.get(f"cmake-version-{cm}", compute, [str(cm)])


@pytest.fixture(scope="session")
def torch_cuda_cmake(
    vllm_env: PixiEnv, torch_cmake_config: torch_cmake.TorchCMake | None
) -> torch_cmake.TorchCudaCmake | None:
    """What the env's torch ``share/cmake/Caffe2/public/cuda.cmake`` asks for NVTX, and which
    FindCUDAToolkit it runs (torch's bundled copy, 2.1 on); None without torch."""
    from pytest_vllm_env.facts import find_cudatoolkit

    if torch_cmake_config is not None:
        return torch_cmake_config.nvtx  # read once, the same facts cmake.torch-config uses
    return find_cudatoolkit.read_torch_cmake(vllm_env)


@pytest.fixture(scope="session")
def nvtx_prediction(
    cuda_toolkit: toolkit.ToolkitFacts,
    cmake_version_for_env: str | None,
    torch_cuda_cmake: torch_cmake.TorchCudaCmake | None,
) -> find_cudatoolkit.Prediction | None:
    """The static prediction of FindCUDAToolkit (and torch's NVTX choice) for the env's
    CMake version (:func:`pytest_vllm_env.facts.find_cudatoolkit.predict`); None without a
    working cmake."""
    from pytest_vllm_env.facts import find_cudatoolkit

    if not cmake_version_for_env:
        return None
    return find_cudatoolkit.predict(cuda_toolkit, cmake_version_for_env, torch_cuda_cmake)


@pytest.fixture(scope="session")
def cmake_probe(
    request: pytest.FixtureRequest,
    cuda_toolkit: toolkit.ToolkitFacts,
    cmake_for_env: Path | None,
    torch_cuda_cmake: torch_cmake.TorchCudaCmake | None,
    torch_cmake_config: torch_cmake.TorchCMake | None,
    tmp_path_factory: pytest.TempPathFactory,
    vllm_source_dir: Path | None,
) -> probe_mod.ProbeResult:
    """The real CMake run (:class:`pytest_vllm_env.runners.cmake_probe.ProbeResult`) on a generated
    project, with the env's activation variables, in a temp dir (never in the env): with
    torch's TorchConfig.cmake, what a vLLM build does (``find_package(Torch)``, then a library
    linked to ``torch ${TORCH_LIBRARIES} CUDA::cudart CUDA::cuda_driver``, ``CMAKE_ARGS``
    passed on); else ``find_package(CUDAToolkit)`` and torch's NVTX target."""
    from pytest_vllm_env.readers import vllm_build
    from pytest_vllm_env.runners import cmake_probe as probe_mod

    workdir = tmp_path_factory.mktemp("cmake-probe")
    return probe_mod.run_probe(
        cuda_toolkit,
        cmake_for_env,
        workdir,
        torch_cuda_cmake,
        config=torch_cmake_config,
        timeout=max(_timeout(request.config), probe_mod.CMAKE_TIMEOUT),
        torch_libraries=vllm_build.read_vllm_links(vllm_source_dir).torch_libraries,
    )


@pytest.fixture(scope="session")
def torch_cmake_config(vllm_env: PixiEnv) -> torch_cmake.TorchCMake | None:
    """What the env's torch ``share/cmake`` asks of a vLLM build
    (:class:`pytest_vllm_env.readers.torch_cmake.TorchCMake`): old FindCUDA, bundled
    FindCUDAToolkit, NVTX rules, the ``CUDA::`` targets its link interfaces name; None without
    torch."""
    from pytest_vllm_env.facts import torch_config

    return torch_config.read_torch_config(vllm_env)


@pytest.fixture(scope="session")
def torch_config_prediction(
    vllm_env: PixiEnv,
    cuda_toolkit: toolkit.ToolkitFacts,
    cmake_version_for_env: str | None,
    torch_cmake_config: torch_cmake.TorchCMake | None,
    cmake_for_env: Path | None,
    vllm_source_dir: Path | None,
) -> torch_config.ConfigPrediction | None:
    """The static prediction of torch's CMake config inside a vLLM build (where CMake stops,
    the generate-time errors, the ``CUDA::`` targets torch needs); None without torch's
    TorchConfig.cmake or without a working cmake. What vLLM links is read from
    ``--vllm-source`` when given (vLLM 0.4.1-0.5.3 link no ``${TORCH_LIBRARIES}``)."""
    from pytest_vllm_env.facts import torch_config
    from pytest_vllm_env.readers import vllm_build

    if torch_cmake_config is None or torch_cmake_config.config is None:
        return None
    if not cmake_version_for_env:
        return None
    return torch_config.predict_config(
        vllm_env,
        cuda_toolkit,
        torch_cmake_config,
        cmake_version_for_env,
        cmake=cmake_for_env,
        vllm=vllm_build.read_vllm_links(vllm_source_dir),
    )
