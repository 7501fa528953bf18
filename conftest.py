"""Root conftest for the suite's own tests: pytester, the env builder, and the opt-in tiers.

``integration`` tests (real wheel downloads) run only with ``--run-integration`` or
``VLLM_ENV_INTEGRATION=1``; ``fleet`` tests (a local multi-node Ray cluster: ~10 raylet and
GCS processes, about a minute on 2 cores) only with ``--run-fleet`` or ``VLLM_ENV_FLEET=1``;
everything else runs by default and must stay fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.envs import EnvBuilder
from fixtures.golden import golden_reports  # noqa: F401  (autouse; off unless VLLM_ENV_GOLDEN_DIR)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-integration",
        action="store_true",
        default=False,
        help="run the opt-in integration tier (downloads real torch/vLLM wheels, cached)",
    )
    parser.addoption(
        "--run-fleet",
        action="store_true",
        default=False,
        help="run the opt-in fleet tier (a local multi-node Ray cluster; needs .[fleet])",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fleet: starts a local multi-node Ray cluster (opt-in)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tiers = {
        "integration": config.getoption("--run-integration")
        or os.environ.get("VLLM_ENV_INTEGRATION") == "1",
        "fleet": config.getoption("--run-fleet") or os.environ.get("VLLM_ENV_FLEET") == "1",
    }
    for tier, wanted in tiers.items():
        if wanted:
            continue
        skip = pytest.mark.skip(reason=f"{tier} tier: pass --run-{tier}")
        for item in items:
            if tier in item.keywords:
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
