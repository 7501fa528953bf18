"""A Pixi env judged from pixi.lock, before `pixi install` (lock mode; docs/lock.md)."""

import pytest

from pytest_vllm_env import findings as F
from pytest_vllm_env.checks import lock, lock_cuda, lock_pypi

pytestmark = [pytest.mark.toolchain, pytest.mark.vllm_lock]


def _no_lock(vllm_env, vllm_lock):
    if vllm_lock is None:
        where = vllm_env.manifest_path or "no manifest"
        pytest.skip(f"no pixi.lock for {vllm_env.label} ({where})")


@pytest.mark.vllm_check("lock.file")
def test_lock_file(vllm_env, vllm_lock, verdict):
    _no_lock(vllm_env, vllm_lock)
    installed_ok = vllm_lock.error is None or vllm_lock.error.kind in ("version", "env", "platform")
    if vllm_env.locked is None and installed_ok:
        # pixi re-locks these itself; only a lock pixi cannot parse stops `pixi run`
        verdict(F.skipped("lock.file", f"{vllm_env.label} is installed: judged from its files"))
        return
    verdict(lock.lock_file(vllm_lock, vllm_env.manifest_path.name))


@pytest.mark.vllm_check("lock.torch-archs")
def test_torch_archs(vllm_env, vllm_lock, cuda_archs, cuda_archs_source, verdict):
    _no_lock(vllm_env, vllm_lock)
    verdict(lock_cuda.torch_archs_check(vllm_env, cuda_archs, cuda_archs_source))


@pytest.mark.vllm_check("lock.nvcc-archs")
def test_nvcc_archs(vllm_env, vllm_lock, cuda_archs, cuda_archs_source, verdict):
    _no_lock(vllm_env, vllm_lock)
    verdict(lock_cuda.nvcc_archs(vllm_env, cuda_archs, cuda_archs_source))


@pytest.mark.vllm_check("lock.cuda-match")
def test_cuda_match(vllm_env, vllm_lock, verdict):
    _no_lock(vllm_env, vllm_lock)
    verdict(lock_cuda.cuda_match(vllm_env))


@pytest.mark.vllm_check("lock.build-deps")
def test_build_deps(vllm_env, vllm_lock, verdict):
    _no_lock(vllm_env, vllm_lock)
    verdict(lock_cuda.build_deps(vllm_env))


@pytest.mark.vllm_check("lock.torch-pins")
def test_torch_pins(vllm_env, vllm_lock, verdict):
    _no_lock(vllm_env, vllm_lock)
    verdict(lock_pypi.torch_pins(vllm_env))


@pytest.mark.vllm_check("lock.wheel-tags")
def test_wheel_tags(vllm_env, vllm_lock, verdict):
    _no_lock(vllm_env, vllm_lock)
    verdict(lock_pypi.wheel_tags(vllm_env))


@pytest.mark.vllm_check("lock.installed-current")
def test_installed_current(vllm_env, vllm_lock, vllm_installed_env, verdict):
    _no_lock(vllm_env, vllm_lock)
    reason = (
        f"{vllm_env.label} is not installed ({vllm_lock.describe})"
        if vllm_installed_env is None
        else f"{vllm_lock.path.name} could not be read (lock.file)"
    )
    verdict(lock.installed_current(vllm_installed_env, vllm_lock.locked, reason))
