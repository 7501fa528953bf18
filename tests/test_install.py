"""The plugin works from an installed wheel in another project, not only from this checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.envs import EnvBuilder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with pytest-vllm-env installed from a wheel built from this tree."""
    base = tmp_path_factory.mktemp("wheel")
    quiet = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", base / "dist", ROOT],
        check=True,
        timeout=300,
        **quiet,
    )
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    wheels = sorted((base / "dist").glob("pytest_vllm_env-*.whl"))
    assert len(wheels) == 1, wheels
    done = subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "-q", wheels[0]],
        timeout=600,
        **quiet,
    )
    assert done.returncode == 0, done.stdout
    return venv


def test_the_wheel_carries_the_suite(installed_venv):
    where = subprocess.run(
        [
            installed_venv / "bin" / "python",
            "-c",
            "import conformance; print(conformance.__file__)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert where.stdout.startswith(str(installed_venv)), where


def test_bundled_suite_runs_from_an_installed_wheel(installed_venv, tmp_path):
    env = EnvBuilder(tmp_path / "ws")
    env.python()
    env.broken_record()
    project = tmp_path / "elsewhere"
    project.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "CONDA_"))}
    for args in (["--pyargs", "conformance"], ["--vllm-conformance"]):
        done = subprocess.run(
            [
                installed_venv / "bin" / "python",
                "-m",
                "pytest",
                *args,
                "-m",
                "toolchain",
                "-p",
                "no:cacheprovider",
                "--vllm-env",
                env.prefix,
            ],
            cwd=project,
            env=clean,
            capture_output=True,
            text=True,
            timeout=300,
        )
        out = done.stdout + done.stderr
        assert done.returncode == 1, out  # the broken record fails env.conda-meta
        assert "[env.conda-meta] ERROR" in out
        assert "FAILED ../test_env.py::test_conda_meta_readable" in out, out
        # the bare env also has no nvcc: the CUDA tier judges it from the installed wheel too
        assert "[cuda.nvcc-in-env] FAILED" in out
        assert "Traceback" not in out
