"""A vLLM source tree before its build (``--vllm-source``): its stale build dir
(``source.cmake-cache``), torch's C++ API (``source.torch-api``) and vLLM's CMake floor
(``cmake.vllm-floor``), each checked against what the real CMake does."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from fixtures import downloads
from fixtures.cuda_envs import SYSTEM_CUDA, cmake4, seed_env
from fixtures.envs import EnvBuilder
from fixtures.text import lit

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider", "-rs")
BUILD_TEMP = "build/temp.linux-x86_64-cpython-312"
# The lines of vLLM's CMakeLists and setup.py these checks read (0.9 to 0.33, in their shape).
CMAKELISTS = """\
cmake_minimum_required(VERSION 3.26)
project(vllm_extensions LANGUAGES CXX)
if (VLLM_PYTHON_EXECUTABLE)
  message(STATUS "python: ${VLLM_PYTHON_EXECUTABLE}")
else()
  message(FATAL_ERROR
    "Please set VLLM_PYTHON_EXECUTABLE to the path of the desired python version"
    " before running cmake configure.")
endif()
if(ENABLE_CUDA)
  enable_language(CUDA)
endif()
"""
SETUP_PY = """\
# the two cmake arguments of vLLM's setup.py (0.9+) these checks read
cmake_args += ["-DVLLM_PYTHON_EXECUTABLE={}".format(sys.executable)]
cmake_args += [f"-DCMAKE_CUDA_COMPILER={CUDA_HOME}/bin/nvcc"]
"""
# the generator the next build picks in an env without its own ninja (setup.py: -G Ninja
# when `ninja` runs, else CMake's default)
GENERATOR = "Ninja" if shutil.which("ninja") else "Unix Makefiles"
REAL_NVCC = pytest.mark.skipif(
    not (SYSTEM_CUDA / "bin" / "nvcc").is_file(), reason=f"needs a CUDA toolkit at {SYSTEM_CUDA}"
)


@pytest.fixture(scope="session")
def seeds_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "cuda-seeds"
    root.mkdir(exist_ok=True)
    return root


def tree(tmp_path: Path, csrc: dict[str, str] | None = None) -> Path:
    src = tmp_path / "vllm"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(CMAKELISTS)
    (src / "setup.py").write_text(SETUP_PY)
    for rel, text in (csrc or {}).items():
        (src / "csrc" / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / "csrc" / rel).write_text(text)
    return src


def configure(cmake: Path, src: Path, *args: str, env: dict[str, str] | None = None):
    return subprocess.run(
        [str(cmake), "-S", str(src), "-B", str(src / BUILD_TEMP), "-Wno-dev", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def run(pytester: pytest.Pytester, prefix: Path, src: Path, k: str, *args: str):
    return pytester.runpytest(
        *SUITE, "-k", k, "--vllm-env", str(prefix), "--vllm-source", str(src), *args
    )


# -- F1.4: a stale cache and a new CUDA compiler lose VLLM_PYTHON_EXECUTABLE ------------------
@REAL_NVCC
def test_stale_cache_with_another_nvcc_loses_vllm_python(pytester, seeds_root, tmp_path):
    """The seed write-up's "Please set VLLM_PYTHON_EXECUTABLE" while setup.py passes it:
    the build dir was configured with another nvcc; setup.py's -DCMAKE_CUDA_COMPILER makes
    CMake wipe the cache and re-run configure without the other -D options. Predicted from
    the files, then reproduced with the real CMake 4.1.2."""
    first = seed_env(seeds_root, "cuda-13.0-system")  # the nvcc of the first attempt
    now = seed_env(seeds_root, "cuda-13.0-real-nvcc")  # the env the next build runs in
    src = tree(tmp_path)
    done = configure(
        cmake4(),
        src,
        "-G",
        GENERATOR,
        f"-DCMAKE_CUDA_COMPILER={first.prefix}/bin/nvcc",
        "-DVLLM_PYTHON_EXECUTABLE=/usr/bin/python3",
        "-DENABLE_CUDA=ON",
        env={"PATH": f"{first.prefix}/bin:{os.environ['PATH']}"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = run(pytester, now.prefix, src, "cmake_cache")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                f"*[source.cmake-cache] FAILED: {src}/{BUILD_TEMP}/CMakeCache.txt: it caches "
                f"CMAKE_CUDA_COMPILER={first.prefix}/bin/nvcc while setup.py will pass "
                f"{now.prefix}/bin/nvcc (CUDA_HOME={now.prefix}): CMake deletes the cache and "
                "re-runs configure without setup.py's other -D options, and vLLM stops with "
                '"Please set VLLM_PYTHON_EXECUTABLE*'
            ),
            lit(
                "*fix: delete the stale build dir before building again: "
                f"`rm -rf {src}/{BUILD_TEMP}`"
            ),
        ]
    )
    # what the real CMake does with the next build's arguments
    again = configure(
        cmake4(),
        src,
        "-G",
        GENERATOR,
        f"-DCMAKE_CUDA_COMPILER={now.prefix}/bin/nvcc",
        "-DVLLM_PYTHON_EXECUTABLE=/usr/bin/python3",
    )
    out = again.stdout + again.stderr
    assert again.returncode != 0
    assert "You have changed variables that require your cache to be deleted" in out
    assert "Please set VLLM_PYTHON_EXECUTABLE" in out


def test_generator_change_is_refused(pytester, seeds_root, tmp_path):
    """A build dir made without ninja, then ninja installed: setup.py passes -G Ninja and
    CMake refuses ("Does not match the generator used previously")."""
    env = seed_env(seeds_root, "good-12.8")
    b = EnvBuilder(tmp_path / "ws")
    b.python()
    b.manifest("[dependencies]\n")
    ninja = b.file("bin/ninja", "#!/bin/sh\necho 1.12.1\n")
    ninja.chmod(0o755)
    src = tree(tmp_path)
    done = configure(cmake4(), src, "-G", "Unix Makefiles", "-DVLLM_PYTHON_EXECUTABLE=x")
    assert done.returncode == 0, done.stderr
    result = run(pytester, b.prefix, src, "cmake_cache")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*it was generated with Unix Makefiles, the next build uses Ninja (ninja is on the "
            'activated PATH): CMake refuses ("Does not match the generator used previously: '
            'Unix Makefiles")*'
        ]
    )
    again = configure(cmake4(), src, "-G", "Ninja", "-DVLLM_PYTHON_EXECUTABLE=x")
    assert "Does not match the generator used previously" in again.stdout + again.stderr
    del env


def test_fresh_and_matching_build_dirs_pass(pytester, tmp_path):
    b = EnvBuilder(tmp_path / "ws")
    b.python()
    b.manifest("[dependencies]\n")
    src = tree(tmp_path)
    run(pytester, b.prefix, src, "cmake_cache").assert_outcomes(passed=1)
    done = configure(cmake4(), src, "-G", GENERATOR, "-DVLLM_PYTHON_EXECUTABLE=x")
    assert done.returncode == 0, done.stderr
    run(pytester, b.prefix, src, "cmake_cache").assert_outcomes(passed=1)


# -- F1.12: the tree uses torch API the env's torch does not have -----------------------------
SCALAR_TYPES = """\
#define AT_FORALL_SCALAR_TYPES_WITH_COMPLEX_AND_QINTS(_) \\
  _(uint8_t, Byte) /* 0 */                               \\
  _(at::BFloat16, BFloat16) /* 15 */                     \\
  _(c10::Float8_e5m2, Float8_e5m2) /* 23 */              \\
  _(c10::Float8_e4m3fn, Float8_e4m3fn) /* 24 */          \\
  _(uint16_t, UInt16) /* 27 */                           \\
{extra}
"""
MARLIN = "if (b_type == at::ScalarType::Float8_e4m3fn) {}\nauto s = at::Float8_e8m0fnu;\n"


@pytest.mark.parametrize("has_e8m0", [False, True])
def test_torch_api_the_kernels_use(pytester, tmp_path, has_e8m0):
    """F1.12: vLLM >= 0.9's marlin uses at::Float8_e8m0fnu (torch 2.7); torch 2.6 has none, and
    use_existing_torch.py has removed the pins that would have said so."""
    b = EnvBuilder(tmp_path / "ws")
    b.python()
    b.manifest("[dependencies]\n")
    extra = "  _(c10::Float8_e8m0fnu, Float8_e8m0fnu) /* 44 */" if has_e8m0 else ""
    b.dist(
        "torch",
        "2.7.1" if has_e8m0 else "2.6.0",
        files={"torch/include/c10/core/ScalarType.h": SCALAR_TYPES.format(extra=extra)},
    )
    src = tree(tmp_path, {"quantization/gptq_marlin/gptq_marlin.cu": MARLIN})
    result = run(pytester, b.prefix, src, "torch_api")
    if has_e8m0:
        result.assert_outcomes(passed=1)
        return
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[source.torch-api] FAILED: vLLM's kernels use Float8_e8m0fnu "
                "(csrc/quantization/gptq_marlin/gptq_marlin.cu:2), which torch 2.6.0's "
                'c10/core/ScalarType.h does not define: nvcc will stop with "enum '
                'c10::ScalarType has no member Float8_e8m0fnu"'
            ),
        ]
    )


# -- vLLM's CMake floor ------------------------------------------------------------------------
def test_cmake_below_vllm_floor(pytester, tmp_path):
    """CMake 3.25.0 (PyPI, real) in the env: vLLM's cmake_minimum_required(VERSION 3.26)
    stops it; the verdict quotes what the real CMake prints."""
    cmake325 = downloads.unpacked("cmake==3.25.0") / "cmake" / "data" / "bin" / "cmake"
    b = EnvBuilder(tmp_path / "ws")
    b.python()
    b.manifest('[dependencies]\ncmake = "3.25.*"\n')
    (b.prefix / "bin" / "cmake").symlink_to(cmake325)
    src = tree(tmp_path)
    result = run(pytester, b.prefix, src, "cmake_floor")
    result.assert_outcomes(failed=1)
    quoted = "CMake 3.26 or higher is required.  You are running version 3.25.0"
    result.stdout.fnmatch_lines(
        [
            f"*[[]cmake.vllm-floor] FAILED: *(CMake 3.25.0); vLLM needs CMake >= 3.26*{quoted}*",
            lit(
                '*fix: in pixi.toml line 7 ([dependencies]), replace `cmake = "3.25.*"` with '
                '`cmake = ">=3.26"`'
            ),
        ]
    )
    real = configure(b.prefix / "bin" / "cmake", src)
    assert quoted in real.stdout + real.stderr


def test_cmake_floor_met_and_not_asked(pytester, tmp_path):
    b = EnvBuilder(tmp_path / "ws")
    b.python()
    b.manifest("[dependencies]\n")
    (b.prefix / "bin" / "cmake").symlink_to(cmake4())
    run(pytester, b.prefix, tree(tmp_path), "cmake_floor").assert_outcomes(passed=1)
    # no source build declared: nothing to judge
    result = pytester.runpytest(*SUITE, "-k", "cmake_floor", "--vllm-env", str(b.prefix))
    result.assert_outcomes(skipped=1)


def test_cmake_floor_from_the_manifest(pytester, tmp_path, monkeypatch):
    """vllm declared as a source dependency built without isolation uses the env's cmake
    (none here, and none on a PATH that holds only bash: this machine's cmake is hidden)."""
    bare = tmp_path / "bare-bin"
    bare.mkdir()
    (bare / "bash").symlink_to(shutil.which("bash") or "/bin/bash")
    monkeypatch.setenv("PATH", str(bare))
    b = EnvBuilder(tmp_path / "ws")
    b.python()
    b.manifest(
        textwrap.dedent(
            """
            [pypi-options]
            no-build-isolation = ["vllm"]
            [pypi-dependencies]
            vllm = { path = "./vllm", editable = true }
            """
        )
    )
    result = pytester.runpytest(*SUITE, "-k", "cmake_floor", "--vllm-env", str(b.prefix))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*vllm from path ([[]pypi-dependencies]) built with no-build-isolation runs `cmake`*"]
    )
