"""The build-nvcc prediction against real tools (opt-in, --run-integration): PyPI's CMake
3.31.6 and 4.1.2 on a vLLM-shaped project that loads torch 2.5.1+cu124's own CMake files (its
``Caffe2/public/cuda.cmake`` calls ``enable_language(CUDA)``, where F1.10 stops), this
machine's CUDA toolkit in the places a build may or may not look; and the vLLM sdists whose
setup.py decides whether CMake searches at all.

This machine has an nvcc wrapper in ``/usr/local/bin``, a system prefix CMake searches; the
reporter's machine did not. The cases pass ``CMAKE_IGNORE_PATH`` for that directory to both
CMake and the prediction (CMake's own way to leave a directory out). It also shows why: torch's
FindCUDA takes the first nvcc it finds for the toolkit root, and ``/usr/local/bin/nvcc`` makes
that ``/usr/local`` (no ``include/cuda.h``): "Could NOT find CUDA", and torch never enables
CUDA. The system-prefix case therefore runs on ``project(CXX)`` + ``enable_language(CUDA)``,
the same call torch makes.
"""

from __future__ import annotations

import re
import subprocess
import zipfile
from pathlib import Path

import pytest

from fixtures import downloads
from fixtures.cuda_envs import SYSTEM_CUDA
from pytest_vllm_env.facts import build_nvcc
from pytest_vllm_env.readers import vllm_build
from pytest_vllm_env.tables import cmake_cuda

pytestmark = pytest.mark.integration
REAL_NVCC = SYSTEM_CUDA / "bin" / "nvcc"
CMAKES = {"3.31.6": cmake_cuda.NO_NVCC_OLD, "4.1.2": cmake_cuda.NO_NVCC_NEW}
PROJECT = """\
cmake_minimum_required(VERSION 3.21)
# vLLM's own start (0.4.1 to 0.13): CXX only; torch's config enables CUDA
project(vllm_extensions LANGUAGES CXX)
find_package(Torch REQUIRED PATHS "{torch}" NO_DEFAULT_PATH)
"""
# What torch's Caffe2/public/cuda.cmake does, without its FindCUDA in front
PLAIN = """\
cmake_minimum_required(VERSION 3.21)
project(vllm_extensions LANGUAGES CXX)
enable_language(CUDA)
"""


@pytest.fixture(scope="session")
def torch_cmake_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """torch 2.5.1+cu124's share/cmake (the reporter's torch), out of the real wheel."""
    whl = downloads.wheel("torch==2.5.1", python_version="3.12")
    out = tmp_path_factory.mktemp("torch251")
    with zipfile.ZipFile(whl) as zf:
        for name in zf.namelist():
            if name.startswith("torch/share/cmake/"):
                zf.extract(name, out)
    return out / "torch" / "share" / "cmake" / "Torch"


@pytest.fixture(scope="session")
def cmakes() -> dict[str, Path]:
    return {
        v: downloads.unpacked(f"cmake=={v}") / "cmake" / "data" / "bin" / "cmake" for v in CMAKES
    }


def wrapper(directory: Path, name: str = "nvcc") -> Path:
    """An nvcc in ``directory`` that runs the real one (a symlink would move nvcc.profile)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f'#!/bin/sh\nexec "{REAL_NVCC}" "$@"\n')
    path.chmod(0o755)
    return path


def configure(cmake: Path, torch: Path | None, work: Path, env: dict[str, str], *args: str) -> str:
    """Configure the vLLM-shaped project (``torch`` None: :data:`PLAIN`); CMake's output."""
    src, build = work / "src", work / "build"
    src.mkdir(parents=True, exist_ok=True)
    (src / "CMakeLists.txt").write_text(PROJECT.format(torch=torch) if torch else PLAIN)
    done = subprocess.run(
        [cmake, "-S", src, "-B", build, "--fresh", *args],
        env={"HOME": str(work), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.stdout + done.stderr


def chosen(output: str) -> str | None:
    """The CUDA compiler CMake took, from its own report line."""
    m = re.search(r"-- Check for working CUDA compiler: (\S+)", output)
    return m.group(1) if m else None


IGNORE = "/usr/local/bin"


def _cases(tmp: Path) -> list[tuple[str, dict[str, str], str | None]]:
    """(name, environment, CMAKE_IGNORE_PATH) for the old-vLLM route: CMake searches."""
    base = "/usr/bin:/bin"
    cxx = tmp / "cxx"
    wrapper(cxx)
    (cxx / "g++").symlink_to("/usr/bin/g++")
    return [
        ("f1.10-no-nvcc", {"PATH": base}, IGNORE),
        ("f1.10-cuda-home-only", {"PATH": base, "CUDA_HOME": str(SYSTEM_CUDA)}, IGNORE),
        ("system-prefix", {"PATH": base}, None),
        ("path", {"PATH": f"{SYSTEM_CUDA}/bin:{base}"}, IGNORE),
        ("cudacxx", {"PATH": base, "CUDACXX": str(REAL_NVCC)}, IGNORE),
        ("cudacxx-missing", {"PATH": base, "CUDACXX": str(tmp / "none/nvcc")}, IGNORE),
        ("cuda-path", {"PATH": base, "CUDA_PATH": str(SYSTEM_CUDA)}, IGNORE),
        ("cxx-dir-before-path", {"PATH": f"{SYSTEM_CUDA}/bin:{base}", "CXX": str(cxx / "g++")},
         IGNORE),
        # a whole toolkit: torch's FindCUDA takes the root of the first nvcc it finds, and a
        # lone wrapper's root has no cuda.h ("Could NOT find CUDA" before enable_language)
        ("cmake-prefix-path", {"PATH": base, "CMAKE_PREFIX_PATH": str(SYSTEM_CUDA)}, IGNORE),
    ]  # fmt: skip


@pytest.mark.skipif(not REAL_NVCC.is_file(), reason=f"needs a CUDA toolkit at {SYSTEM_CUDA}")
@pytest.mark.parametrize("version", CMAKES)
def test_cmake_search_prediction_agrees_with_real_cmake(version, cmakes, torch_cmake_dir, tmp_path):
    """vLLM < 0.8.3: every case predicted (the nvcc, or none and CMake's message) is what real
    CMake does inside torch 2.5.1's enable_language(CUDA). F1.10 reproduces: 3.31.6 stops at
    CMakeDetermineCUDACompiler.cmake:266, the reporter's line, also with CUDA_HOME set."""
    disagree = []
    for name, environ, ignore in _cases(tmp_path):
        presets = {"CMAKE_IGNORE_PATH": ignore} if ignore else {}
        pick = build_nvcc.cmake_search(environ, presets)
        args = [f"-DCMAKE_IGNORE_PATH={ignore}"] if ignore else []
        torch = None if ignore is None else torch_cmake_dir
        out = configure(cmakes[version], torch, tmp_path / name, environ, *args)
        real = chosen(out)
        if pick.nvcc is not None:
            ok = real == str(pick.nvcc)
        elif pick.stop:
            ok = real is None and "environment variable CUDACXX" in out
        else:
            ok = real is None and CMAKES[version] in out
        if not ok:
            disagree.append(f"{name}: predicted {pick.nvcc or pick.stop or 'none'}, CMake {real}")
    assert not disagree, disagree
    if version == "3.31.6":
        out = configure(cmakes[version], torch_cmake_dir, tmp_path / "again",
                        {"PATH": "/usr/bin:/bin"}, f"-DCMAKE_IGNORE_PATH={IGNORE}")  # fmt: skip
        assert "CMakeDetermineCUDACompiler.cmake:266 (message)" in out
        assert "cuda.cmake:47 (enable_language)" in out


@pytest.mark.skipif(not REAL_NVCC.is_file(), reason=f"needs a CUDA toolkit at {SYSTEM_CUDA}")
@pytest.mark.parametrize("version", CMAKES)
def test_cuda_home_route_agrees_with_real_cmake(version, cmakes, torch_cmake_dir, tmp_path):
    """vLLM >= 0.8.3 passes -DCMAKE_CUDA_COMPILER={CUDA_HOME}/bin/nvcc: with torch's CUDA_HOME
    right, CMake takes it with nvcc on no PATH; with a CUDA_HOME holding no nvcc, CMake stops
    (< 4.1 again with "Failed to detect a default CUDA architecture")."""
    for name, environ in (
        ("home", {"PATH": "/usr/bin:/bin", "CUDA_HOME": str(SYSTEM_CUDA)}),
        ("bad-home", {"PATH": "/usr/bin:/bin", "CUDA_HOME": str(tmp_path / "no-cuda")}),
    ):
        pick = build_nvcc.pick_for(vllm_build.NEW_VLLM, environ)
        nvcc, _ = build_nvcc.build_nvcc(environ)
        args = (f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DCMAKE_IGNORE_PATH={IGNORE}")
        out = configure(cmakes[version], torch_cmake_dir, tmp_path / name, environ, *args)
        if pick.nvcc is not None:
            assert chosen(out) == str(pick.nvcc), out
        else:
            said = cmake_cuda.NO_NVCC_OLD if version == "3.31.6" else "is not a full path"
            assert chosen(out) is None and said in out and said in pick.stop, out


@pytest.mark.parametrize(
    ("version", "cuda_home", "cmake_args"),
    [
        ("0.5.4", False, False),  # the era of F1.10's fork (2024-08)
        ("0.8.2", False, False),
        ("0.8.3", True, False),  # vLLM PR #15725
        ("0.11.0", True, False),
        ("0.12.0", True, True),
    ],
)
def test_read_setup_on_real_sdists(version, cuda_home, cmake_args):
    setup = vllm_build.read_setup(downloads.sdist("vllm", version))
    assert setup is not None
    assert (setup.cuda_home, setup.cmake_args) == (cuda_home, cmake_args)
