"""torch's CMake config as a vLLM build loads it: the prediction (``cmake.torch-config``,
``nvtx.cmake-target``), the real CMake run of a vLLM-like project (``cmake.torch-probe``,
``nvtx.cmake-probe``) and their agreement (``cmake.prediction-agrees``), on seed envs with torch
CMake trees in each release family's shape (fixtures/torch_cmake.py; the real torch files run in
tests/test_torch_cmake_integration.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fixtures import torch_cmake as ft
from fixtures.cuda_envs import SYSTEM_CUDA, cmake4, seed_env
from fixtures.text import lit
from pytest_vllm_env.checks import cmake_probe as probe_checks
from pytest_vllm_env.facts import toolkit, torch_config
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.runners import cmake_probe

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider")
REAL_NVCC = pytest.mark.skipif(
    not (SYSTEM_CUDA / "bin" / "nvcc").is_file(), reason=f"needs a CUDA toolkit at {SYSTEM_CUDA}"
)
# conda-forge keeps the headers in targets/x86_64-linux: torch's old FindCUDA needs
# CUDA_INC_PATH, its bundled FindCUDAToolkit -DCUDAToolkit_INCLUDE_DIR (vLLM >= 0.12 passes
# CMAKE_ARGS on): the two changes cmake.torch-config asks for, one after the other.
INC_PATH = 'CUDA_INC_PATH = "${CONDA_PREFIX}/targets/x86_64-linux"\n'
INC_ARGS = INC_PATH + (
    'CMAKE_ARGS = "-DCUDAToolkit_INCLUDE_DIR=${CONDA_PREFIX}/targets/x86_64-linux/include"\n'
)


@pytest.fixture(scope="session")
def seeds_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "cuda-seeds"
    root.mkdir(exist_ok=True)
    return root


def run(pytester: pytest.Pytester, prefix: Path, *args: str):
    return pytester.runpytest(
        *SUITE, "-k", "test_cmake.py or test_nvtx.py", "--vllm-env", str(prefix), "-rs", *args
    )


def _env(root: Path, seed: str, family: str, activation: str = "") -> ft.EnvBuilder:
    from filelock import FileLock

    b = seed_env(root / f"{seed}-{family}-{len(activation)}", seed)
    # once per env: another xdist worker may be running CMake on it (a reinstall under it made
    # "CMake Generate step failed" flaky)
    with FileLock(str(b.workspace) + ".torch.lock", timeout=600):
        done = b.workspace / f".torch-{family}"
        if not done.exists():
            ft.install(b, family)
            if activation:
                ft.activation(b, activation)
            done.touch()
    return b


# -- the reader ------------------------------------------------------------------------------
def test_reader_tells_the_families_apart(tmp_path):
    seen = {}
    for family in ft.FAMILIES:
        b = seed_env(tmp_path / family, "nvcc-only")
        ft.install(b, family)
        facts = torch_config.read_torch_config(PixiEnv.read(b.prefix))
        assert facts is not None and facts.legacy_findcuda and facts.caffe2_fatal_line
        seen[family] = facts
    assert not seen["2.0"].finds_cudatoolkit and seen["2.0"].libnvtoolsext_lib64
    assert seen["2.1"].fatal_targets == ["CUDA::nvToolsExt"]
    assert seen["2.1"].bundled_findcudatoolkit and seen["2.1"].libnvtoolsext_in_torch_libraries
    # torch 2.1's torch_cuda pulls cuBLAS, cuFFT, cuRAND and NVTX into a `torch` link
    closure = seen["2.1"].closure(["torch"])
    assert {"CUDA::cublas", "CUDA::cublasLt", "CUDA::cufft", "CUDA::curand"} <= set(closure)
    assert closure["CUDA::nvToolsExt"] == "torch::nvtoolsext"
    assert seen["2.6"].nvtoolsext_in_torch_libraries and seen["2.6"].nvrtc_in_torch_libraries
    assert "CUDA::cublas" not in seen["2.6"].closure(["torch"])
    assert "torch::nvtoolsext" not in seen["2.9"].interface


# -- the seed-001 env: the prediction used to blame NVTX, CMake stopped earlier ------------------
def test_seed001_env_stops_at_caffe2config_as_predicted(pytester, seeds_root):
    """The issue's case: NVTX only under site-packages and a torch 2.6 CMake tree. The real
    CMake stops at Caffe2Config.cmake (torch's FindCUDA finds no headers in a conda-forge
    layout) before NVTX; the prediction now says so first, the NVTX probe says it was not
    reached, and the two agree."""
    b = _env(seeds_root, "nvtx-site-packages", "2.6")
    result = run(pytester, b.prefix)
    result.assert_outcomes(passed=1, failed=3, skipped=2)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[cmake.torch-config] FAILED: torch 2.6.0's CMake config will stop a vLLM "
                "build: Caffe2Config.cmake:*: Your installed Caffe2 version uses CUDA but I "
                "cannot find the CUDA libraries (torch's FindCUDA (find_package(CUDA)) finds no "
                "CUDA_INCLUDE_DIRS*"
            ),
            lit('*fix: set `CUDA_INC_PATH = "${CONDA_PREFIX}/targets/x86_64-linux"` in *'),
        ]
    )
    result.stdout.fnmatch_lines(
        [lit("*[nvtx.cmake-target] FAILED: *(CMake stops before this: Caffe2Config.cmake*")]
    )
    result.stdout.fnmatch_lines(
        [
            lit("*[cmake.torch-probe] FAILED: * stopped in torch's CMake config: Caffe2Config*"),
        ]
    )
    result.stdout.fnmatch_lines(
        ["*CMake stopped before torch's NVTX part (Caffe2Config.cmake: Your installed*"]
    )
    assert not result.parseoutcomes().get("warned")  # cmake.prediction-agrees passed


def test_env_without_torch_needs_no_nvtx(pytester, seeds_root):
    """No torch: nothing in a vLLM build asks CMake for NVTX. nvtx.cmake-target used to fail
    here ("neither CUDA::nvToolsExt nor a usable CUDA::nvtx3") while the probe passed."""
    import json

    b = seed_env(seeds_root, "nvcc-only")
    report = pytester.path / "r.json"
    result = pytester.runpytest(
        *SUITE,
        "-k",
        "test_nvtx",
        "--vllm-env",
        str(b.prefix),
        "--cmake",
        str(cmake4()),
        "--vllm-env-report",
        str(report),
    )
    result.assert_outcomes(passed=2)
    checks = {c["id"]: c for c in json.loads(report.read_text())["checks"]}
    assert checks["nvtx.cmake-target"]["summary"].startswith(
        "no torch in the env: nothing in a vLLM build asks CMake for NVTX"
    )


# -- a real compiler: every stage of torch's config, predicted and run ---------------------------
@REAL_NVCC
@pytest.mark.build
@pytest.mark.parametrize(
    "family,activation,expected",
    [
        ("2.6", "", "stops at caffe2-cuda"),
        # F1.1: TorchConfig's find_library(LIBNVTOOLSEXT ... lib64/) in TORCH_LIBRARIES
        ("2.0", INC_PATH, "generates with link:CUDA::cudart, notfound:LIBNVTOOLSEXT"),
        ("2.6", INC_PATH, "stops at cudatoolkit"),
        ("2.1", INC_ARGS, "stops at nvtoolsext-fatal"),
        ("2.6", INC_ARGS, "generates with link:CUDA::nvToolsExt"),
        ("2.9", INC_ARGS, "configures and generates"),
    ],
)
def test_prediction_agrees_with_real_cmake_stage_by_stage(
    family, activation, expected, seeds_root, tmp_path
):
    """Principle 3 for torch's config: with this machine's real nvcc (enable_language(CUDA)
    compiles), the prediction and CMake 4.1.2 stop at the same place for the same cause."""
    b = _env(seeds_root, "cuda-13.0-system", family, activation)
    env = PixiEnv.read(b.prefix, name="default", manifest=b.workspace / "pixi.toml")
    t = toolkit.read_toolkit(env)
    facts = torch_config.read_torch_config(env)
    pred = torch_config.predict_config(env, t, facts, "4.1.2")
    probe = cmake_probe.run_probe(t, cmake4(), tmp_path, facts.nvtx, config=facts)
    verdict, why = probe_checks.compare_config(pred, probe)
    assert verdict == "agree", (why, probe.output[-3000:])
    assert f"predicted: {expected};" in why


@REAL_NVCC
def test_cuda13_toolkit_with_torch26_fix_is_not_cuda_nvtx_dev(pytester, seeds_root):
    """F1.2's class: a toolkit >= 12.9 has no libnvToolsExt, torch 2.5-2.7's cuda.cmake links
    CUDA::nvToolsExt, vLLM's C++ extension links ${TORCH_LIBRARIES}: generation fails. The fix
    names torch >= 2.8 or CUDA 12.8, never a package that cannot help."""
    b = _env(seeds_root, "cuda-13.0-system", "2.6", INC_ARGS)
    result = run(pytester, b.prefix, "-m", "toolchain")
    cause = lit(
        'The link interface of target "torch::nvtoolsext" contains: CUDA::nvToolsExt but the '
        "target was not found (linked through torch::nvtoolsext; torch's bundled "
        "Caffe2/FindCUDAToolkit.cmake: no nvToolsExt.h where it looks (its include dir, "
        "<root>/include) and no unversioned libnvToolsExt.so in the searched dirs)."
    )
    fix = lit(
        "fix: CUDA 13.0.88 has no NVTX v2 (libnvToolsExt was removed in 12.9; cuda-nvtx-dev "
        "12.9+ ships only nvtx3 headers), so no package can add it: use torch >= 2.8, whose "
        'CMake links no NVTX (set `torch = ">=2.8"` in [pypi-dependencies] in pixi.toml), or a '
        'CUDA 12.8 toolkit (set `cuda-version = "12.8.*"` and `cuda-nvtx-dev = "12.8.*"` in '
        "[dependencies] in pixi.toml), or define CUDA::nvToolsExt as an alias of CUDA::nvtx3 "
        "before find_package(Torch) (the workaround in vllm#20892)"
    )
    # the two checks say the same, in the same words: nvtx.cmake-target is the NVTX part of
    # cmake.torch-config's walk
    result.stdout.fnmatch_lines(
        [
            "*[[]cmake.torch-config] FAILED: torch 2.6.0's CMake config will stop a vLLM "
            "build: " + cause,
            "  " + fix,
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*[[]nvtx.cmake-target] FAILED: torch 2.6.0's CMake needs NVTX this env does not "
            "give it: " + cause,
            "  " + fix,
        ]
    )
    assert "add `cuda-nvtx-dev" not in result.stdout.str()


@REAL_NVCC
def test_torch29_builds_once_the_headers_are_found(pytester, seeds_root):
    """The passing case: torch 2.9's CMake links no NVTX; with the two include fixes the
    vLLM-like project configures and generates, and every check agrees."""
    b = _env(seeds_root, "cuda-13.0-system", "2.9", INC_ARGS)
    result = run(pytester, b.prefix)
    result.assert_outcomes(passed=5, skipped=1)  # cmake.vllm-floor: no source build declared
    result.stdout.no_fnmatch_line("*FAILED*")


@REAL_NVCC
def test_torch21_needs_cublas_and_friends(pytester, seeds_root):
    """torch 2.1's torch_cuda links caffe2::cublas/cufft/curand: a vLLM build needs
    libcublas.so, libcufft.so, libcurand.so, which cuda.cmake-components now asks for."""
    b = _env(seeds_root, "cuda-13.0-system", "2.1", INC_ARGS)
    result = pytester.runpytest(*SUITE, "-k", "cmake_components", "--vllm-env", str(b.prefix))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*CUDA::cublas (libcublas.so, needed by caffe2::cublas); CUDA::cublasLt (libcublasLt.so"
            ", needed by caffe2::cublas); CUDA::cufft (libcufft.so, needed by caffe2::cufft); "
            "CUDA::curand (libcurand.so, needed by caffe2::curand)*",
            '*fix: add `libcublas-dev = "*"`, `libcufft-dev = "*"` and `libcurand-dev = "*"` '
            "to [[]dependencies]*",
        ]
    )


def test_cuda129_nvtx_fix_never_asks_for_what_is_installed(pytester, seeds_root):
    """CUDA 12.9's cuda-nvtx-dev is installed but ships no libnvToolsExt: the old fix asked
    to add cuda-nvtx-dev (installed) and cuda.cmake-components asked for it too."""
    b = _env(seeds_root, "cuda-12.9-nvtx3", "2.6")
    result = pytester.runpytest(
        *SUITE,
        "-k",
        "nvtx_cmake_target or cmake_components",
        "--vllm-env",
        str(b.prefix),
        "-m",
        "toolchain",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*fix: CUDA 12.9.86 has no NVTX v2*cuda-nvtx-dev 12.9+ ships only nvtx3 headers*"]
    )
    assert "add `cuda-nvtx-dev" not in result.stdout.str()


def test_conda_forge_torch_reads_a_property_of_cuda_nvrtc(seeds_root, tmp_path):
    """F1.5: conda-forge's torch build stops at `get_target_property() called with non-existent
    target "CUDA::nvrtc"` (its cuda.cmake:107) when cuda-nvrtc-dev is missing. PyPI wheels have
    no such line; the reader takes it from whatever cuda.cmake is installed."""
    b = seed_env(tmp_path / "seeds", "nvcc-only")  # cudart only: no libnvrtc.so, no stub
    torch = ft.install(b, "2.6")
    cuda_cmake = torch / "share" / "cmake" / "Caffe2" / "public" / "cuda.cmake"
    cuda_cmake.write_text(
        cuda_cmake.read_text() + "get_target_property(nvrtc_location CUDA::nvrtc LOCATION)\n"
    )
    env = PixiEnv.read(b.prefix, name="default", manifest=b.workspace / "pixi.toml")
    facts = torch_config.read_torch_config(env)
    assert facts.property_targets == ["CUDA::nvrtc"]
    pred = torch_config.predict_config(env, toolkit.read_toolkit(env), facts, "4.1.2")
    blocker = next(x for x in pred.blockers if x.signature == "property:CUDA::nvrtc")
    assert blocker.message == 'get_target_property() called with non-existent target "CUDA::nvrtc"'
    assert blocker.fix.startswith('add `cuda-nvrtc-dev = "12.8.*"` to [dependencies] in pixi.toml')


# -- F1.1: LIBNVTOOLSEXT (vllm#3673) ------------------------------------------------------------
VLLM_041_UTILS = """\
function (define_gpu_extension_target GPU_MOD_NAME)
  target_link_libraries(${GPU_MOD_NAME} PRIVATE torch ${torch_python_LIBRARY}
    ${GPU_LIBRARIES})
  # Don't use `TORCH_LIBRARIES` for CUDA since it pulls in a bunch of
  # dependencies that are not necessary and may not be installed.
  if (GPU_LANGUAGE STREQUAL "CUDA")
    target_link_libraries(${GPU_MOD_NAME} PRIVATE ${CUDA_CUDA_LIB}
      ${CUDA_LIBRARIES})
  else()
    target_link_libraries(${GPU_MOD_NAME} PRIVATE ${TORCH_LIBRARIES})
  endif()
endfunction()
"""
# vLLM 0.5.4 added `_core_C`, a C++-only extension: ${TORCH_LIBRARIES} is linked again
VLLM_054_CORE = """\
define_gpu_extension_target(
  _core_C
  DESTINATION vllm
  LANGUAGE CXX
  SOURCES ${VLLM_EXT_SRC}
  WITH_SOABI)
"""


def _vllm_tree(root: Path, core_c: bool) -> Path:
    """vLLM's link lines as the 0.4.1 (no C++-only extension) and 0.5.4 sdists have them."""
    (root / "cmake").mkdir(parents=True, exist_ok=True)
    (root / "cmake" / "utils.cmake").write_text(VLLM_041_UTILS)
    (root / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.21)\n" + (VLLM_054_CORE if core_c else "")
    )
    return root


def _f11_env(root: Path, activation: str = "") -> ft.EnvBuilder:
    """vllm#3673's env rebuilt on this machine's CUDA toolkit: torch 2.1's CMake files (vLLM
    0.4.0 pinned torch 2.1.2), a toolkit whose libraries sit in lib/ (no lib64/) with
    libnvToolsExt.so beside libcudart (CUDA::nvToolsExt is found), cuBLAS/cuFFT/cuRAND links
    (torch 2.1's torch_cuda needs them; CMake only checks they exist), and PyPI's cmake."""
    from fixtures.cuda_envs import _nvtx_dev

    b = _env(root, "cuda-13.0-system", "2.1", INC_ARGS + activation)
    if not (b.prefix / "lib" / "libnvToolsExt.so").exists():
        _nvtx_dev(b)
        for name in ("libcublas.so", "libcublasLt.so", "libcufft.so", "libcurand.so"):
            for d in (b.prefix / "targets/x86_64-linux/lib", b.prefix / "lib"):
                if not (d / name).exists():
                    (d / name).write_bytes(b"")
    assert not (b.prefix / "lib64").exists()
    return b


@REAL_NVCC
def test_f11_libnvtoolsext_not_found_with_a_pypi_cmake(pytester, tmp_path):
    """F1.1 (vllm#3673): torch 2.1-2.4's TorchConfig.cmake looks for libnvToolsExt.so in CMake's
    default dirs and ${CUDA_TOOLKIT_ROOT_DIR}/lib64/ only; the conda env's lib/ is neither when
    the cmake is PyPI's (pip's build isolation). The fix names the dir to CMake."""
    b = _f11_env(tmp_path / "fail")
    result = run_config(pytester, b.prefix, "--cmake", str(cmake4()))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[cmake.torch-config] FAILED: torch 2.1.2's CMake config will stop a vLLM build:"
                " The following variables are used in this project, but they are set to "
                "NOTFOUND: LIBNVTOOLSEXT (torch 2.1.2's TorchConfig.cmake looks for "
                "libnvToolsExt.so only in CMake's default dirs (the cmake's own prefix "
            )
            + "*cmake/data) and "
            + lit(
                f"{b.prefix}/lib64/ (no such dir: a conda toolkit keeps its libraries in lib/), "
                "and puts it into TORCH_LIBRARIES, which vLLM links into its C++-only extension"
            )
            + "*",
            lit(
                '*fix: set `CMAKE_LIBRARY_PATH = "${CONDA_PREFIX}/lib"` in [activation.env] in '
                "pixi.toml (CMake's find_library searches it first*"
            ),
        ]
    )


def run_config(pytester: pytest.Pytester, prefix: Path, *args: str):
    """cmake.torch-config alone (toolchain tier)."""
    return pytester.runpytest(
        *SUITE, "-k", "test_torch_config", "-m", "toolchain", f"--vllm-env={prefix}", *args
    )


@REAL_NVCC
@pytest.mark.parametrize("how", ["CMAKE_LIBRARY_PATH", "conda cmake", "vLLM 0.4.1 source"])
def test_f11_passes_when_cmake_searches_lib_or_vllm_links_no_torch_libraries(
    pytester, tmp_path, how
):
    """The same env passes when the reporter's fix is in place, when the cmake is the env's
    own (conda-forge's: CMake searches its own prefix's lib/), or when the vLLM being built
    links the `torch` target only (vLLM #3698, 0.4.1 to 0.5.3); 0.5.4's `_core_C` fails again."""
    extra: list[str] = ["--cmake", str(cmake4())]
    activation = 'CMAKE_LIBRARY_PATH = "${CONDA_PREFIX}/lib"\n' if "LIBRARY" in how else ""
    b = _f11_env(tmp_path / how.replace(" ", "-"), activation)
    if how == "conda cmake":
        real = Path(os.path.realpath(cmake4()))
        (b.prefix / "share").mkdir(exist_ok=True)
        for item in real.parent.parent.joinpath("share").glob("cmake-*"):
            (b.prefix / "share" / item.name).symlink_to(item)
        import shutil

        shutil.copy2(real, b.prefix / "bin" / "cmake-conda")
        extra = ["--cmake", str(b.prefix / "bin" / "cmake-conda")]
    if how.startswith("vLLM"):
        extra += ["--vllm-source", str(_vllm_tree(tmp_path / "vllm-0.4.1", core_c=False))]
    result = run_config(pytester, b.prefix, *extra)
    result.assert_outcomes(passed=1)
    if how.startswith("vLLM"):
        extra[-1] = str(_vllm_tree(tmp_path / "vllm-0.5.4", core_c=True))
        again = run_config(pytester, b.prefix, *extra)
        again.assert_outcomes(failed=1)
        again.stdout.fnmatch_lines(
            ["*NOTFOUND: LIBNVTOOLSEXT*links into its C++-only extension `_core_C`*"]
        )


@REAL_NVCC
def test_f11_with_an_unreadable_vllm_cmakelists_is_an_error_in_both_checks(pytester, tmp_path):
    """Whether torch 2.1's LIBNVTOOLSEXT reaches the build depends on whether the vLLM being
    built links ${TORCH_LIBRARIES}; a FIFO CMakeLists.txt in --vllm-source hides that:
    cmake.torch-config said so (error) while nvtx.cmake-target failed on the guess that it
    does. Both say it now, in the same words and with the same fix."""
    b = _f11_env(tmp_path / "fail")
    tree = _vllm_tree(tmp_path / "vllm-0.5.4", core_c=True)
    (tree / "CMakeLists.txt").unlink()
    os.mkfifo(tree / "CMakeLists.txt")
    report = pytester.path / "report.json"
    pytester.runpytest(
        *SUITE, "-k", "test_torch_config or test_nvtx_cmake_target", "-m", "toolchain",
        f"--vllm-env={b.prefix}", "--cmake", str(cmake4()), "--vllm-source", str(tree),
        f"--vllm-env-report={report}", "--timeout=60",
    )  # fmt: skip
    checks = {c["id"]: c for c in json.loads(report.read_text())["checks"]}
    said = (
        "what the vLLM source tree links cannot be read: "
        f"{tree / 'CMakeLists.txt'}: cannot be read: not a regular file (a FIFO)"
    )
    for cid in ("cmake.torch-config", "nvtx.cmake-target"):
        f = checks[cid]
        assert f["outcome"] == "error", f
        assert said in f["summary"] and "Traceback" not in f["summary"], f
        assert f["fix"].startswith("restore the file from the vLLM release you build"), f
    assert checks["nvtx.cmake-target"]["summary"].startswith(
        "whether torch 2.1.2's LIBNVTOOLSEXT (NOTFOUND here) reaches this vLLM build is unknown: "
    ), checks["nvtx.cmake-target"]


@REAL_NVCC
@pytest.mark.build
@pytest.mark.parametrize(
    "activation,stop",
    [("", "notfound:LIBNVTOOLSEXT"), ('CMAKE_LIBRARY_PATH = "${CONDA_PREFIX}/lib"\n', None)],
)
def test_f11_prediction_agrees_with_real_cmake(tmp_path, activation, stop):
    """CMake 4.1.2 itself, on vllm#3673's layout: LIBNVTOOLSEXT NOTFOUND with PyPI's cmake,
    found once CMAKE_LIBRARY_PATH names the env's lib/ (the fix), as predicted."""
    b = _f11_env(tmp_path / "env", activation)
    env = PixiEnv.read(b.prefix, name="default", manifest=b.workspace / "pixi.toml")
    t = toolkit.read_toolkit(env)
    facts = torch_config.read_torch_config(env)
    pred = torch_config.predict_config(env, t, facts, "4.1.2", cmake=cmake4())
    probe = cmake_probe.run_probe(t, cmake4(), tmp_path / "probe", facts.nvtx, config=facts)
    verdict, why = probe_checks.compare_config(pred, probe)
    assert verdict == "agree", (why, probe.output[-3000:])
    assert (stop in probe.generate) if stop else probe.ok, probe.output[-3000:]
