"""Fixtures for the binaries area (``abi.*``, ``arch.*``): torch's facts and the extensions.

All of it is read from files; nothing is imported from the target env.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the check library loads when a fixture runs, not at start-up
    from pytest_vllm_env.cache import FactCache
    from pytest_vllm_env.checks import abi
    from pytest_vllm_env.facts.env import PixiEnv


@pytest.fixture(scope="session")
def torch_facts(vllm_env: PixiEnv, vllm_fact_cache: FactCache) -> abi.TorchFacts | None:
    """torch as installed in the target env (:class:`pytest_vllm_env.checks.abi.TorchFacts`):
    version, CUDA from ``torch/version.py``, the torch-side symbols ``torch/lib/*.so``
    export and its C++11 ABI flag; ``None`` when torch is not installed. Read once and shared
    through ``vllm_fact_cache``; what the libraries export is looked up by name in their
    symbol hash tables (``torch_facts.exports``), never listed."""
    from pytest_vllm_env.checks import abi

    root = abi.torch_root(vllm_env)
    if root is None:
        return None
    lib = root / "lib"
    deps = sorted(str(p) for p in lib.glob("*.so*")) if lib.is_dir() else []
    deps.append(str(root / "version.py"))

    def compute() -> dict | None:
        facts = abi.torch_facts(vllm_env)
        return facts.to_json() if facts else None

    data = vllm_fact_cache.get(
        "torch-facts", compute, deps, vllm_env.version_of("torch"), str(root)
    )
    return abi.TorchFacts.from_json(data) if data else None


@pytest.fixture(scope="session")
def extension_paths(vllm_env: PixiEnv) -> list[Path]:
    """Compiled extension ``.so`` files of vLLM, xformers and flash-attn in the env."""
    from pytest_vllm_env.checks import abi

    return abi.find_extensions(vllm_env)


@pytest.fixture(scope="session")
def extensions(extension_paths: list[Path]) -> list[abi.ExtensionFacts]:
    """:class:`pytest_vllm_env.checks.abi.ExtensionFacts` for each of ``extension_paths``."""
    from pytest_vllm_env.checks import abi

    return [abi.extension_facts(p) for p in extension_paths]


@pytest.fixture(scope="session")
def vllm_torch_pin(vllm_env: PixiEnv) -> str | None:
    """The ``torch==X`` version the installed vLLM pins (the torch it was built for)."""
    from pytest_vllm_env.checks import abi

    dist = vllm_env.dist("vllm")
    return abi.torch_pin_of(dist.requires) if dist else None


def pytest_addoption(parser: pytest.Parser) -> None:
    from pytest_vllm_env.plugins.settings import add_setting

    add_setting(
        parser,
        "--vllm-source",
        "a vLLM source tree (checkout of a tag) to judge before building it: its torch pins "
        "(pyproject.toml, requirements/cuda.txt) and scalar types against the env's torch, "
        "its build/ CMake cache, its CMake floor",
        metavar="DIR",
    )


@pytest.fixture(scope="session")
def vllm_source(request: pytest.FixtureRequest) -> abi.SourceTree | None:
    """The ``--vllm-source`` tree's torch requirements (:class:`abi.SourceTree`), or None."""
    from pytest_vllm_env.checks import abi
    from pytest_vllm_env.plugins import settings

    path = settings.get_path(request.config, "vllm_source")
    return abi.read_source_tree(path) if path else None


@pytest.fixture(scope="session")
def torch_build_nvcc(cuda_toolkit, vllm_fact_cache: FactCache, request: pytest.FixtureRequest):
    """``(NvccRun | None, why)``: the nvcc ``torch.utils.cpp_extension`` would build with
    (``CUDA_HOME``/``CUDA_PATH``, else ``nvcc`` on the activated PATH, else
    ``/usr/local/cuda``), run once and cached per path."""
    from pytest_vllm_env.checks import cuda_torch
    from pytest_vllm_env.plugins import settings

    timeout = settings.get_number(request.config, "cuda_tool_timeout", 30.0)
    return cuda_torch.read_build_nvcc(
        cuda_toolkit, lambda n, c, d: vllm_fact_cache.get(n, c, d, timeout), timeout
    )


@pytest.fixture(scope="session")
def library_resolver(vllm_env: PixiEnv, vllm_fact_cache: FactCache):
    """A :class:`pytest_vllm_env.facts.linkage.Resolver` for the env: finds libraries where the
    loader would (torch's already-loaded libraries, RUNPATH, the activated LD_LIBRARY_PATH,
    the env's lib/, /etc/ld.so.conf dirs) and reads each file once; which undefined symbols
    no library defines is shared through ``vllm_fact_cache`` (keyed by every file read)."""
    from pytest_vllm_env.checks import abi
    from pytest_vllm_env.facts.linkage import Resolver

    root = abi.torch_root(vllm_env)
    libs = sorted((root / "lib").glob("*.so*")) if root and (root / "lib").is_dir() else []
    return Resolver.for_env(vllm_env.prefix, libs, vllm_env.environ(), facts=vllm_fact_cache.get)


def pytest_sessionfinish(session: pytest.Session) -> None:
    # The symbol tables read this session (20 MB for a vLLM venv's torch) are of no use
    # after it: a pytest run that goes on (pytester, other suites) should not hold them.
    linkage = sys.modules.get("pytest_vllm_env.facts.linkage")
    if linkage is not None:
        linkage.forget()
