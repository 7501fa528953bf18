"""Settings, fixtures and the lock-mode gate for the ``lock.*`` checks.

``--vllm-env NAME`` naming a Pixi env of the manifest that is not installed is judged from
the ``pixi.lock`` next to the manifest (lock mode); ``--vllm-from-lock`` asks for that also
for an installed env (CI before ``pixi install``); ``--pixi-platform`` picks the platform
(default: this machine's). In lock mode, checks that read installed files skip and say so;
tests marked ``vllm_lock`` (the ``lock.*`` checks) judge the lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from _pytest.outcomes import Skipped

from pytest_vllm_env.plugins import settings

if TYPE_CHECKING:  # the check library loads when a fixture runs, not at start-up
    from pytest_vllm_env.facts.env import PixiEnv
    from pytest_vllm_env.facts.lock_env import LockSource

# This area's options and ini keys are declared at start by plugin.py (_add_area_options),
# and its marker (vllm_lock) by plugin.MARKERS: the plugin itself is registered only by a run
# that uses it.


def pytest_configure(config: pytest.Config) -> None:
    platform = settings.get(config, "pixi_platform")
    if not platform:
        return
    from pytest_vllm_env.readers.pixilock import PLATFORMS

    if platform not in PLATFORMS:
        raise pytest.UsageError(
            f"--pixi-platform: {platform!r} is not a Pixi platform; use one of "
            + ", ".join(PLATFORMS[:10])
        )


def from_lock(config: pytest.Config) -> bool:
    """``--vllm-from-lock`` / ``vllm_from_lock``."""
    option = config.getoption("vllm_from_lock", default=None)
    return bool(option) if option is not None else bool(config.getini("vllm_from_lock"))


def platform(config: pytest.Config) -> str:
    """``--pixi-platform``, else this machine as Pixi names it."""
    from pytest_vllm_env.readers.pixilock import current_platform

    return settings.get(config, "pixi_platform") or current_platform()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Lock mode: a check that reads installed files has nothing to read. It skips, saying so,
    # before its fixtures run (they would read a prefix that does not exist, or find another
    # nvcc on PATH), instead of failing an env that is not installed yet.
    if "vllm_env" not in getattr(item, "fixturenames", ()) or item.get_closest_marker("vllm_lock"):
        return
    env = _env_of(item)
    if env is not None and env.locked is not None:
        from pytest_vllm_env.plugins.verdict import CHECK_KEY

        mark = item.get_closest_marker("vllm_check")
        if mark and mark.args and all(k != CHECK_KEY for k, _ in item.user_properties):
            item.user_properties.append((CHECK_KEY, str(mark.args[0])))
        raise Skipped(
            f"{env.locked.describe}; this check reads the installed env's files (the lock.* "
            "checks judge the lock)",
            _use_item_location=True,
        )


def _env_of(item: pytest.Item) -> PixiEnv | None:
    from pytest_vllm_env.facts.env import EnvError
    from pytest_vllm_env.plugins.session import state

    st = state(item.config)
    callspec = getattr(item, "callspec", None)
    spec = callspec.params.get("vllm_env") if callspec else None
    try:
        return st.env(spec or st.specs()[0])
    except EnvError:
        return None  # the vllm_env fixture reports it


@pytest.fixture(scope="session")
def vllm_lock(request: pytest.FixtureRequest, vllm_env: PixiEnv) -> LockSource | None:
    """pixi.lock as read for the judged env (:class:`pytest_vllm_env.facts.lock_env.LockSource`):
    in lock mode the lock the env was read from; for an installed Pixi env the lock next to
    its manifest (for ``lock.installed-current``); None without a manifest or a lock."""
    from pytest_vllm_env.facts.lock_env import lock_present, read_source
    from pytest_vllm_env.readers.pixilock import lock_path

    if vllm_env.locked is not None:
        return vllm_env.locked
    if not vllm_env.name or not vllm_env.manifest_path:
        return None
    path = lock_path(vllm_env.manifest_path)
    if not lock_present(path):
        return None
    return read_source(path, vllm_env.name, platform(request.config), forced=False, installed=True)


@pytest.fixture(scope="session")
def vllm_installed_env(vllm_env: PixiEnv) -> PixiEnv | None:
    """The judged env as installed: ``vllm_env`` itself, or in lock mode the env read from its
    files when ``--vllm-from-lock`` was given for an installed one; None when not installed."""
    from pytest_vllm_env.facts.env import EnvError, PixiEnv
    from pytest_vllm_env.facts.lock_env import is_installed

    if vllm_env.locked is None:
        return vllm_env
    if not is_installed(vllm_env.prefix):
        return None
    try:
        return PixiEnv.read(vllm_env.prefix, name=vllm_env.name, manifest=vllm_env.manifest_path)
    except EnvError:
        return None
