"""Root conftest for the suite's own tests: pytester, the env builder, and the opt-in tiers.

``integration`` tests (real wheel downloads) run only with ``--run-integration`` or
``VLLM_ENV_INTEGRATION=1``; everything else runs by default and must stay fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.envs import EnvBuilder


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-integration",
        action="store_true",
        default=False,
        help="run the opt-in integration tier (downloads real torch/vLLM wheels, cached)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = config.getoption("--run-integration") or os.environ.get("VLLM_ENV_INTEGRATION") == "1"
    if wanted:
        return
    skip = pytest.mark.skip(reason="integration tier: pass --run-integration")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def parts_cache() -> Iterator[Path]:
    """Pin the download cache before ``pytester`` points HOME at a temp dir (else a test
    that fetches real wheels would download them again into that HOME)."""
    from fixtures import downloads

    mp = pytest.MonkeyPatch()
    root = downloads.cache_root()
    mp.setenv("PYTEST_VLLM_ENV_CACHE", str(root))
    yield root
    mp.undo()


@pytest.fixture
def env_builder(tmp_path: Path) -> EnvBuilder:
    """A Pixi-layout env tree at ``tmp_path/.pixi/envs/default`` to fill per test."""
    return EnvBuilder(tmp_path)
