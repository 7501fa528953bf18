"""Paths from the environment that cannot be looked into (issue 21): a PATH entry the user
may not stat was a traceback from the nvcc lookup. The real tools pass over what they cannot
stat (a shell's PATH search, CMake's find_program, the loader's LD_LIBRARY_PATH walk), so the
checks do too: the verdict is the one a folder that is not there gets, never an error."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from fixtures.cuda_envs import seed_env

# A component longer than NAME_MAX: stat fails with ENAMETOOLONG for root too, and pathlib's
# is_file/exists/glob raise on it as on EACCES (the lookups below must not).
UNSTATABLE = "/tmp/" + "x" * 300
VARIABLES = {
    "PATH": "{}/bin",
    "LD_LIBRARY_PATH": "{}/lib",
    "CUDA_HOME": "{}",
    "CUDA_PATH": "{}",
    "CUDACXX": "{}/bin/nvcc",
    "NVTOOLSEXT_PATH": "{}",
    "CMAKE_PREFIX_PATH": "{}",
    "PIP_CONFIG_FILE": "{}/pip.conf",
    "UV_CONFIG_FILE": "{}/uv.toml",
    "XDG_CONFIG_HOME": "{}",
}
SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider", "--cuda-arch=12.0")
# Root passes every permission check: without these two capabilities it does not (the
# kernel's DAC checks then apply to uid 0 as to anyone).
NO_DAC = (
    "setpriv", "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
)  # fmt: skip


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the seed envs these tests judge."""
    return tmp_path_factory.mktemp("seeds")


@pytest.fixture
def closed(tmp_path: Path):
    """A folder (with bin/ and lib/) that this user may not look into; mode 000."""
    folder = tmp_path / "closed"
    (folder / "bin").mkdir(parents=True)
    (folder / "lib").mkdir()
    folder.chmod(0)
    yield folder
    folder.chmod(0o755)


def _as_a_user() -> tuple[str, ...]:
    """The command prefix that makes permissions apply to this process's children."""
    if os.geteuid() != 0:
        return ()
    if not shutil.which("setpriv"):
        pytest.skip("root without setpriv: permissions cannot be made to apply")
    return NO_DAC


def _run(pytester, monkeypatch, prefix: Path, base: str) -> pytest.RunResult:
    for name, value in VARIABLES.items():
        value = value.format(base)
        if name in ("PATH", "LD_LIBRARY_PATH"):
            value = os.pathsep.join([value, os.environ.get(name, "")]).rstrip(os.pathsep)
        monkeypatch.setenv(name, value)
    return pytester.run(
        *_as_a_user(), sys.executable, "-m", "pytest", *SUITE, "-m", "not gpu and not integration",
        f"--vllm-env={prefix}",
    )  # fmt: skip


def _outcomes(result: pytest.RunResult) -> dict[str, int]:
    return {k: v for k, v in result.parseoutcomes().items() if not k.startswith("warn")}


@pytest.mark.parametrize("seed", ["cudatoolkit-dev", "good-12.8"])
def test_a_folder_that_cannot_be_looked_into_is_passed_over(
    pytester, monkeypatch, seeds, closed, seed
):
    # One such entry in PATH (and CUDA_HOME, LD_LIBRARY_PATH...) made 18 checks errors:
    # PermissionError from pathlib. cudatoolkit-dev has no nvcc, so the lookup walks the
    # whole PATH; good-12.8 reaches CMake's and torch's searches too.
    prefix = seed_env(seeds, seed).prefix
    absent = _run(pytester, monkeypatch, prefix, str(closed.parent / "absent"))
    unreadable = _run(pytester, monkeypatch, prefix, str(closed))
    text = unreadable.stdout.str() + unreadable.stderr.str()
    assert "PermissionError" not in text and "Traceback" not in text
    assert "errors" not in unreadable.parseoutcomes()
    assert _outcomes(unreadable) == _outcomes(absent)


def test_the_shell_style_lookups_never_raise(tmp_path):
    from pytest_vllm_env import proc
    from pytest_vllm_env.facts.build import build_nvcc
    from pytest_vllm_env.facts.build_nvcc import cmake_search

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvcc").write_text("#!/bin/sh\n")
    (bin_dir / "nvcc").chmod(0o755)
    path = os.pathsep.join([f"{UNSTATABLE}/bin", str(bin_dir)])
    assert proc.which("nvcc", path) == bin_dir / "nvcc"
    assert cmake_search({"PATH": path}).nvcc == bin_dir / "nvcc"
    assert build_nvcc({"CUDA_HOME": UNSTATABLE}, None)[0] is None
