"""Real torch wheels' CMake files and real vLLM sdists (opt-in, --run-integration; about 3.5 GB
of torch wheels, cached): the prediction of torch's CMake config agrees with the real CMake in
outcome and cause, release by release; the seed-001 env stops at torch 2.6.0's
Caffe2Config.cmake:90; vLLM 0.10.1's kernels need torch 2.7's scalar types."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fixtures import downloads, nvtx_layouts
from fixtures import torch_cmake as ft
from fixtures.cuda_envs import SYSTEM_CUDA, _nvtx_dev, cmake4, seed_env
from fixtures.text import lit
from pytest_vllm_env.checks import cmake_probe as probe_checks
from pytest_vllm_env.checks import nvtx
from pytest_vllm_env.facts import find_cudatoolkit, toolkit, torch_config
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.readers import torch_cmake as torch_files
from pytest_vllm_env.runners import cmake_probe

pytestmark = pytest.mark.integration
SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider", "-rs")
REAL_NVCC = pytest.mark.skipif(
    not (SYSTEM_CUDA / "bin" / "nvcc").is_file(), reason=f"needs a CUDA toolkit at {SYSTEM_CUDA}"
)
INC_PATH = {"CUDA_INC_PATH": "{P}/targets/x86_64-linux"}
INC_ARGS = {
    **INC_PATH,
    "CMAKE_ARGS": "-DCUDAToolkit_INCLUDE_DIR={P}/targets/x86_64-linux/include",
}
TORCHES = ("2.0.1", "2.1.2", "2.4.1", "2.6.0", "2.7.1", "2.9.0")


@pytest.fixture(scope="session")
def torch_wheels() -> dict[str, Path]:
    """Downloaded before pytester moves HOME (cached under ~/.cache/pytest-vllm-env)."""
    return {
        v: downloads.wheel(
            f"torch=={v}", python_version="3.11" if v.startswith(("2.0", "2.1")) else "3.12"
        )
        for v in TORCHES
    }


def _predict_and_probe(b, variant: dict[str, str], workdir: Path):
    env = PixiEnv.read(b.prefix, name="default", manifest=b.workspace / "pixi.toml")
    t = toolkit.read_toolkit(env)
    t.environ.update({k: v.replace("{P}", str(b.prefix)) for k, v in variant.items()})
    facts = torch_config.read_torch_config(env)
    pred = torch_config.predict_config(env, t, facts, "4.1.2")
    probe = cmake_probe.run_probe(t, cmake4(), workdir, facts.nvtx, config=facts)
    return pred, probe


@REAL_NVCC
@pytest.mark.parametrize("version", TORCHES)
@pytest.mark.parametrize("variant", [{}, INC_PATH, INC_ARGS], ids=["plain", "incpath", "inc+args"])
def test_real_torch_cmake_prediction_agrees(version, variant, torch_wheels, tmp_path):
    """Each real torch's CMake files, loaded as vLLM loads them, with this machine's real
    CUDA 13 compiler in a conda-forge layout: prediction and CMake 4.1.2 agree. torch 2.0.1
    with its FindCUDA satisfied reproduces F1.1's error for real: LIBNVTOOLSEXT NOTFOUND
    (TorchConfig looks only in ${CUDA_TOOLKIT_ROOT_DIR}/lib64/ and the default dirs)."""
    b = seed_env(tmp_path / "seeds", "cuda-13.0-system")
    ft.install_real(b, version)
    pred, probe = _predict_and_probe(b, variant, tmp_path / "probe")
    verdict, why = probe_checks.compare_config(pred, probe)
    assert verdict == "agree", (why, probe.output[-3000:])
    if version.startswith("2.0.") and variant:
        assert "notfound:LIBNVTOOLSEXT" in probe.generate, why


@REAL_NVCC
def test_real_torch271_with_nvtx_v2_generates(torch_wheels, tmp_path):
    """The passing case of F1.2's class: libnvToolsExt.so next to libcudart (cuda-nvtx-dev
    12.8's layout, from PyPI's nvidia-nvtx-cu12) gives torch 2.7.1's cuda.cmake its
    CUDA::nvToolsExt: predicted and real CMake both configure and generate."""
    b = seed_env(tmp_path / "seeds", "cuda-13.0-system")
    _nvtx_dev(b)
    ft.install_real(b, "2.7.1")
    pred, probe = _predict_and_probe(b, INC_ARGS, tmp_path / "probe")
    assert probe_checks.compare_config(pred, probe) == (
        "agree",
        "predicted: configures and generates; CMake: configures and generates",
    ), probe.output[-3000:]


def test_seed001_with_real_torch260_stops_at_caffe2config90(pytester, torch_wheels, tmp_path):
    """The issue's measurement, now predicted: seed 001 (NVTX only under site-packages) with
    torch 2.6.0's real CMake files and CMake 4.1.2 stops at Caffe2Config.cmake:90."""
    b = seed_env(tmp_path / "seeds", "nvtx-site-packages")
    ft.install_real(b, "2.6.0")
    result = pytester.runpytest(
        *SUITE, "-k", "test_cmake.py or test_nvtx.py", f"--vllm-env={b.prefix}"
    )
    result.assert_outcomes(passed=1, failed=3, skipped=2)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[cmake.torch-config] FAILED: torch 2.6.0's CMake config will stop a vLLM "
                "build: Caffe2Config.cmake:90: Your installed Caffe2 version uses CUDA but I "
                "cannot find the CUDA libraries*"
            )
        ]
    )
    result.stdout.fnmatch_lines(["*CMake stopped before torch's NVTX part*"])
    assert not result.parseoutcomes().get("warned")


@pytest.mark.parametrize("torch_version,ok", [("2.6.0", False), ("2.7.1", True)])
def test_vllm_0101_kernels_against_real_torch_headers(
    pytester, torch_wheels, tmp_path, torch_version, ok
):
    """F1.12 with the real files: vLLM 0.10.1's csrc (PyPI sdist) against the real
    c10/core/ScalarType.h of torch 2.6.0 (no Float8_e8m0fnu) and 2.7.1."""
    src = downloads.sdist("vllm", "0.10.1")
    b = seed_env(tmp_path / "seeds", "good-12.8")
    ft.install_real(b, torch_version)
    result = pytester.runpytest(
        *SUITE, "-k", "torch_api", f"--vllm-env={b.prefix}", f"--vllm-source={src}"
    )
    if ok:
        result.assert_outcomes(passed=1)
        return
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*[[]source.torch-api] FAILED: vLLM's kernels use Float8_e8m0fnu (csrc/*.cu*"]
    )


def test_vllm_0101_cmake_floor_with_real_cmake325(pytester, tmp_path):
    src = downloads.sdist("vllm", "0.10.1")
    cmake325 = downloads.unpacked("cmake==3.25.0") / "cmake" / "data" / "bin" / "cmake"
    b = seed_env(tmp_path / "seeds", "good-12.8")
    os.remove(b.prefix / "bin" / "cmake")
    (b.prefix / "bin" / "cmake").symlink_to(cmake325)
    result = pytester.runpytest(
        *SUITE, "-k", "cmake_floor", f"--vllm-env={b.prefix}", f"--vllm-source={src}"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*vLLM needs CMake >= 3.26 (*cmake_minimum_required)*"])


# -- NVTX per layout, with the real torch files and three real CMakes ---------------------------
MATRIX_TORCHES = ("2.0.1", "2.1.2", "2.4.1", "2.6.0", "2.7.1", "2.9.0")
MATRIX_CMAKES = ("3.26.4", "3.31.6", "4.1.2")
HINT = {"NVTOOLSEXT_PATH": "${CONDA_PREFIX}/" + nvtx_layouts.SITE_NVTX}
LAYOUT_CASES = [
    ("f1.1", None),
    ("f1.2", None),
    ("f1.3", None),
    ("f1.3b", None),
    ("f1.3b", HINT),
]


@pytest.fixture(scope="session")
def nvtx_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "nvtx-real"
    root.mkdir(exist_ok=True)
    return root


@REAL_NVCC
@pytest.mark.parametrize("version", MATRIX_TORCHES)
@pytest.mark.parametrize(
    "layout,extra", LAYOUT_CASES, ids=[f"{c[0]}{'-hint' if c[1] else ''}" for c in LAYOUT_CASES]
)
def test_nvtx_prediction_agrees_with_real_cmake(layout, extra, version, torch_wheels, nvtx_root):
    """Every real torch release family x F1.1/F1.2/F1.3 layouts x CMake 3.26.4, 3.31.6 and 4.1.2:
    the prediction (torch's bundled FindCUDAToolkit where Caffe2Config puts it first, its NVTX
    rules) agrees with real CMake in outcome and cause, CUDA::nvToolsExt included, and
    nvtx.cmake-target's outcome is nvtx.cmake-probe's. The CMake version changes nothing here:
    torch's module runs, whichever CMake runs it (measured)."""
    b = nvtx_layouts.layout_env(
        nvtx_root, "cuda-13.0-system", layout, version, ft.install_real, extra
    )
    env = PixiEnv.read(b.prefix, name="default", manifest=b.workspace / "pixi.toml")
    t = toolkit.read_toolkit(env)
    facts = torch_config.read_torch_config(env)
    assert (facts.nvtx.bundled is not None) == (version != "2.0.1")
    outcomes = set()
    for cm in MATRIX_CMAKES:
        cmake = downloads.unpacked(f"cmake=={cm}") / "cmake" / "data" / "bin" / "cmake"
        pred = torch_config.predict_config(env, t, facts, cm, cmake=cmake)
        probe = cmake_probe.run_probe(
            t,
            cmake,
            nvtx_root / f"probe-{layout}-{bool(extra)}-{version}-{cm}",
            facts.nvtx,
            config=facts,
        )
        verdict, why = probe_checks.compare_config(pred, probe)
        assert verdict == "agree", (cm, why, probe.output[-3000:])
        npred = find_cudatoolkit.predict(t, cm, facts.nvtx)
        assert probe_checks.agreement_finding(pred, npred, probe).outcome == "passed"
        target = nvtx.cmake_target(env, t, npred, str(cmake), facts.nvtx, pred)
        real = probe_checks.probe_finding(env, probe, npred)
        assert target.outcome == real.outcome, (cm, target.summary, real.summary)
        outcomes.add((why.split("; CMake: ")[1], target.outcome))
    assert len(outcomes) == 1, outcomes  # the same for every CMake version


@pytest.mark.parametrize("version", ["2.1.2", "2.4.1", "2.6.0", "2.7.1", "2.9.0"])
def test_committed_bundled_module_is_the_wheels(version, torch_wheels):
    """fixtures/torch_share's FindCUDAToolkit.cmake (and its 2.1 variant) is byte for byte the
    file in the real wheels; the reader finds the same rules in each."""
    import zipfile

    python = "3.11" if version.startswith(("2.0.", "2.1.")) else "3.12"
    whl = downloads.wheel(f"torch=={version}", python_version=python)
    with zipfile.ZipFile(whl) as zf:
        real = zf.read("torch/share/cmake/Caffe2/FindCUDAToolkit.cmake").decode()
        caffe2 = zf.read("torch/share/cmake/Caffe2/Caffe2Config.cmake").decode()
    family = "2.1" if version < "2.5" else "2.6"
    assert ft.bundled_module(family) == real
    assert 'list(APPEND CMAKE_MODULE_PATH "${CMAKE_CURRENT_LIST_DIR}")' in caffe2
    rules = torch_files.read_find_module(Path("x"), real)
    assert rules.nvtoolsext_header and rules.header_hint and rules.library_hint
    assert rules.nvtoolsext_until is None and not rules.nvtx3 and not rules.include_from_nvcc
