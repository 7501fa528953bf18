"""The plugin dropped into someone else's repo: their pytest.ini, their rootdir, their own
packages and options, bad option values; and never a write into the judged env."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.envs import EnvBuilder

ARCH_TEST = """
def test_arch(cuda_archs):
    assert [a.cc for a in cuda_archs] == ["9.0"]
"""


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A folder that shares only ``/`` with pytest's tmp dirs (where pytest's rootdir lands
    on the env itself when an env path is taken for a test path)."""
    for base in ("/dev/shm", "/var/tmp"):
        if os.path.isdir(base) and os.access(base, os.W_OK):
            folder = Path(tempfile.mkdtemp(prefix="vllm-env-", dir=base))
            break
    else:
        pytest.skip("no writable folder outside /tmp")
    common = os.path.commonpath([folder, tempfile.gettempdir()])
    if common != "/":
        pytest.skip(f"{folder} and the tmp dir share {common}")
    yield folder
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


# -- bug 1: --opt PATH and pytest's rootdir ----------------------------------------------
def test_space_form_that_drops_the_repos_ini_is_a_usage_error(pytester, env_builder):
    env_builder.python()
    pytester.makeini("[pytest]\ncuda_arch = 9.0\n")
    pytester.makepyfile(ARCH_TEST)
    result = pytester.runpytest("--vllm-env", str(env_builder.prefix))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: pytest-vllm-env: pytest chose its ini file before it knew that our "
            f"options take a value, and took `--vllm-env {env_builder.prefix}` for a test "
            "path*pytest-dev/pytest#8846*"
            f"no ini file instead of {pytester.path / 'tox.ini'}. Write the option with `=`: "
            f"`--vllm-env={env_builder.prefix}`"
        ]
    )
    # the = form reads the repo's ini
    pytester.runpytest(f"--vllm-env={env_builder.prefix}").assert_outcomes(passed=1)


def test_every_path_option_is_guarded(pytester, env_builder, tmp_path):
    env_builder.python()
    pytester.makeini("[pytest]\ncuda_arch = 9.0\n")
    pytester.makepyfile(ARCH_TEST)
    wheel = tmp_path / "vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"")
    manifest = env_builder.manifest()
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    for option, value in (
        ("--modelopt-checkpoint", checkpoint),
        ("--pixi-manifest", manifest),
        ("--vllm-wheel", wheel),
    ):
        result = pytester.runpytest(f"--vllm-env={env_builder.prefix}", option, str(value))
        assert result.ret == pytest.ExitCode.USAGE_ERROR, option
        result.stderr.fnmatch_lines([f"*Write the option with `=`: `{option}={value}`"])


def test_space_form_without_any_ini_keeps_the_rootdir(pytester, env_builder):
    env_builder.python()
    pytester.makepyfile("def test_a(vllm_env):\n    pass\n")
    result = pytester.runpytest("--vllm-env", str(env_builder.prefix))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"rootdir: {pytester.path}"])


def test_space_form_never_roots_pytest_in_the_env(pytester, outside_tmp):
    # The env and the working directory share only "/": pytest's rootdir was the env
    # itself, and .pytest_cache (with our fact cache) was written into it.
    env = EnvBuilder(outside_tmp, bare=True)
    env.python()
    pytester.makepyfile("def test_a(vllm_env):\n    pass\n")
    before = sorted(str(p) for p in outside_tmp.rglob("*"))
    result = pytester.runpytest("--vllm-env", str(env.prefix))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"rootdir: {pytester.path}"])
    assert sorted(str(p) for p in outside_tmp.rglob("*")) == before


def test_run_from_inside_the_env_writes_no_cache_into_it(pytester, env_builder):
    # pytest's rootdir is the judged env: its cache (last-failed, node ids) goes elsewhere.
    env_builder.python()
    env_builder.broken_record()
    os.chdir(env_builder.prefix)
    result = pytester.runpytest("--vllm-conformance", "-m", "toolchain", "--vllm-env=.")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            f"rootdir: {env_builder.prefix}",
            f"vllm-env: pytest's cache moved to *: {env_builder.prefix}/.pytest_cache is "
            f"inside the judged env {env_builder.prefix}",
        ]
    )
    assert not (env_builder.prefix / ".pytest_cache").exists()
