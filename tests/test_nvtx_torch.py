"""NVTX as torch's CMake finds it, layout by layout (F1.1, F1.2, F1.3 and seed 001):
``nvtx.cmake-target`` follows the FindCUDAToolkit torch really runs (its bundled
``Caffe2/FindCUDAToolkit.cmake``, committed unchanged from the torch 2.6.0 wheel under
fixtures/torch_share), says what ``cmake.torch-config`` says about NVTX, never asks for a
package that is installed or cannot help, and agrees with the real CMake 4.1.2 run of a
vLLM-like project (``cmake.prediction-agrees``). The real torch wheels' files run in
tests/test_torch_cmake_integration.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from filelock import FileLock

from fixtures import nvtx_layouts
from fixtures import torch_cmake as ft
from fixtures.cuda_envs import SYSTEM_CUDA, cmake4, seed_env
from fixtures.text import lit
from pytest_vllm_env.checks import cmake_probe as probe_checks
from pytest_vllm_env.checks import nvtx
from pytest_vllm_env.facts import find_cudatoolkit, toolkit, torch_config
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.runners import cmake_probe

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider")
REAL_NVCC = pytest.mark.skipif(
    not (SYSTEM_CUDA / "bin" / "nvcc").is_file(), reason=f"needs a CUDA toolkit at {SYSTEM_CUDA}"
)
INC_ARGS = nvtx_layouts.INC_ARGS
LIBRARY_PATH = {"CMAKE_LIBRARY_PATH": "${CONDA_PREFIX}/lib"}  # F1.1's fix


@pytest.fixture(scope="session")
def layouts_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "nvtx-layouts"
    root.mkdir(exist_ok=True)
    return root


def layout_env(
    root: Path, seed: str, layout: str, family: str, extra: dict[str, str] | None = None
) -> ft.EnvBuilder:
    """``seed`` + ``layout``'s NVTX + a torch CMake tree of ``family`` + the include fixes."""
    return nvtx_layouts.layout_env(root, seed, layout, family, ft.install, extra)


def run(pytester: pytest.Pytester, prefix: Path, *args: str):
    return pytester.runpytest(
        *SUITE,
        "-k",
        "test_nvtx or test_cmake or cmake_components",
        f"--vllm-env={prefix}",
        f"--cmake={cmake4()}",
        *args,
    )


def report(pytester: pytest.Pytester, prefix: Path, *args: str) -> dict[str, dict]:
    path = pytester.path / "report.json"
    run(pytester, prefix, f"--vllm-env-report={path}", *args)
    return {c["id"]: c for c in json.loads(path.read_text())["checks"]}


# -- F1.3: header only in site-packages ---------------------------------------------------------
def test_f13_site_packages_header_and_versioned_library(pytester, layouts_root):
    """The Pixi write-up's env (torch 2.6, CUDA 12.8 layout): nvToolsExt.h only under
    site-packages (NVTOOLSEXT_PATH names it: torch's bundled module reads it, so the header is
    found) and only libnvToolsExt.so.1: no unversioned library, so no CUDA::nvToolsExt, and
    vLLM's C++ extension links torch::nvtoolsext. Both checks say so in the same words; the
    fix is cuda-nvtx-dev (not installed), and cuda.cmake-components leaves NVTX alone."""
    b = layout_env(layouts_root, "nvtx-site-packages", "f1.3", "2.6")
    sp = b.site_packages / "nvidia" / "nvtx"
    result = run(pytester, b.prefix, "-m", "toolchain")
    result.assert_outcomes(passed=1, failed=2, skipped=2)
    cause = lit(
        'The link interface of target "torch::nvtoolsext" contains: CUDA::nvToolsExt but the '
        "target was not found (linked through torch::nvtoolsext; torch's bundled "
        "Caffe2/FindCUDAToolkit.cmake: no unversioned libnvToolsExt.so in the searched dirs; "
        f"NVTOOLSEXT_PATH={sp} is searched, but find_library needs the unversioned "
        f"libnvToolsExt.so (it holds only {sp}/lib/libnvToolsExt.so.1))."
    )
    fix = lit(
        '  fix: add `cuda-nvtx-dev = "12.8.*"` to [dependencies] in pixi.toml (it ships '
        "libnvToolsExt.so next to libcudart.so, and nvToolsExt.h)"
    )
    # the 12.x seeds' nvcc is a stand-in without nvvm/: enable_language(CUDA) comes first
    before = lit(
        " (CMake stops before this: CMakeDetermineCUDACompiler: Couldn't find CUDA library "
        "root.; see cmake.torch-config)."
    )
    result.stdout.fnmatch_lines(
        [
            "*[[]nvtx.cmake-target] FAILED: torch 2.6.0's CMake needs NVTX this env does not "
            "give it: " + cause[:-1] + before,
            fix,
        ]
    )
    result.stdout.fnmatch_lines(["*[[]cmake.torch-config] FAILED: *Then: *" + cause[:-1] + "*"])
    result.stdout.fnmatch_lines(["*[[]cmake.torch-config] FAILED: *", "  fix: *" + fix[7:]])


def test_f13_fixed_by_cuda_nvtx_dev(pytester, layouts_root):
    """The fix applied (cuda-nvtx-dev: the unversioned link and the header beside the
    toolkit's): the prediction passes and names the module that made the target."""
    from fixtures.cuda_envs import _nvtx_dev

    b = seed_env(layouts_root / "f13-fixed", "nvtx-site-packages")
    with FileLock(str(b.workspace) + ".layout.lock", timeout=600):
        if not (b.workspace / ".layout").exists():
            nvtx_layouts.apply(b, "f1.3")
            os.remove(b.prefix / "lib" / "libnvToolsExt.so.1")
            os.remove(b.prefix / "targets/x86_64-linux/lib/libnvToolsExt.so.1")
            _nvtx_dev(b)
            ft.install(b, "2.6")
            ft.activation(b, "".join(f'{k} = "{v}"\n' for k, v in INC_ARGS.items()))
            (b.workspace / ".layout").touch()
    checks = report(pytester, b.prefix, "-m", "toolchain")
    assert checks["nvtx.cmake-target"]["outcome"] == "passed"
    assert checks["nvtx.cmake-target"]["summary"] == (
        "torch 2.6.0's CMake finds the NVTX it links: CUDA::nvToolsExt -> "
        f"{b.prefix}/lib/libnvToolsExt.so (torch's bundled Caffe2/FindCUDAToolkit.cmake)"
    )
    # what remains for cmake.torch-config is the stand-in nvcc's missing nvvm/, no NVTX
    assert "nvToolsExt" not in checks["cmake.torch-config"]["summary"]


@pytest.mark.parametrize("hint", [False, True], ids=["no-hint", "NVTOOLSEXT_PATH"])
def test_f13b_header_only_in_site_packages(pytester, layouts_root, hint):
    """The library beside libcudart but nvToolsExt.h only in site-packages: CMake's own module
    would make CUDA::nvToolsExt (it checks no header), torch's bundled one does not, so the
    check fails and names NVTOOLSEXT_PATH, which that module reads on Linux; with it set,
    it passes."""
    extra = {"NVTOOLSEXT_PATH": "${CONDA_PREFIX}/" + nvtx_layouts.SITE_NVTX} if hint else None
    b = layout_env(layouts_root, "nvtx-site-packages", "f1.3b", "2.6", extra)
    checks = report(pytester, b.prefix, "-m", "toolchain")
    target = checks["nvtx.cmake-target"]
    if hint:
        assert target["outcome"] == "passed", target["summary"]
        return
    assert target["outcome"] == "failed"
    assert (
        "it needs nvToolsExt.h too and finds none where it looks (its include dir, "
        in (target["summary"])
    )
    assert target["fix"].startswith(
        'set `NVTOOLSEXT_PATH = "${CONDA_PREFIX}/lib/python3.12/site-packages/nvidia/nvtx"` in '
        "[activation.env] in pixi.toml (torch's bundled Caffe2/FindCUDAToolkit.cmake looks for "
        "nvToolsExt.h in $NVTOOLSEXT_PATH/include on Linux too; it is at "
    )


# -- F1.1: vllm#3673's conda layout, CMake 4.1.2 ----------------------------------------------
@REAL_NVCC
def test_f11_torch21_blames_libnvtoolsext_not_the_fatal(pytester, layouts_root):
    """The disagreement this fixes: F1.1's layout, torch 2.1, CMake 4.1.2 (CUDA 13). CMake's
    own 4.1 module would skip nvToolsExt for CUDA >= 12.9, so the check said "Failed to find
    nvToolsExt"; torch's bundled module (what runs) has no such cut-off and finds header and
    library: real CMake passes that and stops at TorchConfig's LIBNVTOOLSEXT (lib64 only).
    nvtx.cmake-target now says exactly that, with cmake.torch-config's fix."""
    b = layout_env(layouts_root, "cuda-13.0-system", "f1.1", "2.1")
    checks = report(pytester, b.prefix, "-m", "toolchain")
    target = checks["nvtx.cmake-target"]
    assert target["outcome"] == "failed"
    assert "Failed to find nvToolsExt" not in target["summary"]
    assert target["summary"].startswith(
        "torch 2.1.2's CMake needs NVTX this env does not give it: The following variables are "
        "used in this project, but they are set to NOTFOUND: LIBNVTOOLSEXT (torch 2.1.2's "
        "TorchConfig.cmake looks for libnvToolsExt.so only in CMake's default dirs"
    )
    assert target["fix"] == checks["cmake.torch-config"]["fix"]
    assert target["fix"].startswith('set `CMAKE_LIBRARY_PATH = "${CONDA_PREFIX}/lib"`')


@REAL_NVCC
@pytest.mark.parametrize("family", ["2.0", "2.1", "2.6"])
def test_f11_passes_with_the_fix(pytester, layouts_root, family):
    """With CMAKE_LIBRARY_PATH (F1.1's fix) torch 2.0's and 2.1's LIBNVTOOLSEXT is found, and
    torch 2.1's and 2.6's CUDA::nvToolsExt comes from torch's bundled module."""
    b = layout_env(layouts_root, "cuda-13.0-system", "f1.1", family, LIBRARY_PATH)
    checks = report(pytester, b.prefix, "-m", "toolchain")
    summary = checks["nvtx.cmake-target"]["summary"]
    assert checks["nvtx.cmake-target"]["outcome"] == "passed", summary
    version = ft.VERSIONS[family]
    made = (
        f"CUDA::nvToolsExt -> {b.prefix}/lib/libnvToolsExt.so (torch's bundled "
        "Caffe2/FindCUDAToolkit.cmake)"
    )
    libnvtoolsext = f"LIBNVTOOLSEXT -> {b.prefix}/lib/libnvToolsExt.so (TorchConfig.cmake)"
    want = {"2.0": [libnvtoolsext], "2.1": [made, libnvtoolsext], "2.6": [made]}[family]
    assert summary == f"torch {version}'s CMake finds the NVTX it links: " + "; ".join(want)


@REAL_NVCC
def test_torch20_libnvtoolsext_is_judged(pytester, layouts_root):
    """torch 2.0 (no FindCUDAToolkit at all): its NVTX is TorchConfig's LIBNVTOOLSEXT; without
    the fix nvtx.cmake-target fails on it, as cmake.torch-config and real CMake do."""
    b = layout_env(layouts_root, "cuda-13.0-system", "f1.1", "2.0")
    checks = report(pytester, b.prefix, "-m", "toolchain")
    assert checks["nvtx.cmake-target"]["outcome"] == "failed"
    assert "NOTFOUND: LIBNVTOOLSEXT" in checks["nvtx.cmake-target"]["summary"]
    assert checks["nvtx.cmake-target"]["evidence"]["module"].startswith("none: torch's cuda")


# -- F1.2: CUDA >= 12.9 with cuda-nvtx-dev installed (nvtx3 only) ----------------------------------
@REAL_NVCC
@pytest.mark.parametrize("family", ["2.1", "2.6", "2.9"])
def test_f12_never_asks_for_the_installed_cuda_nvtx_dev(pytester, layouts_root, family):
    """cuda-nvtx-dev 13.0 is installed and ships no libnvToolsExt: torch 2.1 stops at
    "Failed to find nvToolsExt", 2.6 at the torch::nvtoolsext link, 2.9 needs none. The fix
    names torch >= 2.8 or CUDA 12.8, and cuda.cmake-components (which leaves NVTX to this
    check) does not ask for cuda-nvtx-dev either."""
    b = layout_env(layouts_root, "cuda-13.0-system", "f1.2", family)
    checks = report(pytester, b.prefix, "-m", "toolchain")
    target = checks["nvtx.cmake-target"]
    assert checks["cuda.cmake-components"]["outcome"] == "passed"
    assert checks["cuda.cmake-components"]["evidence"]["nvToolsExt"] == (
        "judged by nvtx.cmake-target"
    )
    text = json.dumps(checks)
    assert "add `cuda-nvtx-dev" not in text
    if family == "2.9":
        assert target["outcome"] == "passed", target["summary"]
        return
    assert target["outcome"] == "failed"
    first = {"2.1": "Failed to find nvToolsExt", "2.6": 'The link interface of target "torch'}
    assert target["summary"].startswith(
        f"torch {ft.VERSIONS[family]}'s CMake needs NVTX this env does not give it: "
        + first[family]
    )
    assert target["fix"].startswith("CUDA 13.0.88 has no NVTX v2")


# -- seed 001 (NVTX only under site-packages, torch 2.6, no include fixes) -------------------------
def test_seed001_names_the_earlier_stop(pytester, layouts_root):
    """Seed 001 with torch 2.6's CMake: Caffe2Config stops first (cmake.torch-config); the NVTX
    verdict is what comes after the include fixes, and says CMake stops before it."""
    b = seed_env(layouts_root / "seed001", "nvtx-site-packages")
    with FileLock(str(b.workspace) + ".layout.lock", timeout=600):
        if not (b.workspace / ".layout").exists():
            ft.install(b, "2.6")
            (b.workspace / ".layout").touch()
    checks = report(pytester, b.prefix, "-m", "toolchain")
    target = checks["nvtx.cmake-target"]
    assert target["outcome"] == "failed"
    assert "CMake stops before this: Caffe2Config.cmake:" in target["summary"]
    assert (
        "NVTOOLSEXT_PATH=" in target["summary"]
        and "is searched, but find_library" in (target["summary"])
    )
    assert target["fix"].startswith('add `cuda-nvtx-dev = "12.8.*"`')


# -- the real CMake: prediction and probe agree, layout by layout ---------------------------------
CASES = [
    ("f1.1", "2.1", None, "generates with notfound:LIBNVTOOLSEXT"),
    ("f1.1", "2.1", LIBRARY_PATH, "configures and generates"),
    ("f1.1", "2.6", None, "configures and generates"),
    ("f1.2", "2.1", None, "stops at nvtoolsext-fatal"),
    ("f1.2", "2.6", None, "generates with link:CUDA::nvToolsExt"),
    ("f1.3", "2.1", None, "stops at nvtoolsext-fatal"),
    ("f1.3b", "2.6", None, "generates with link:CUDA::nvToolsExt"),
    (
        "f1.3b",
        "2.6",
        {"NVTOOLSEXT_PATH": "${CONDA_PREFIX}/" + nvtx_layouts.SITE_NVTX},
        "configures",
    ),
]


@REAL_NVCC
@pytest.mark.build
@pytest.mark.parametrize(
    "layout,family,extra,expected", CASES, ids=[f"{c[0]}-{c[1]}-{bool(c[2])}" for c in CASES]
)
def test_prediction_and_real_cmake_agree_per_layout(
    layout, family, extra, expected, layouts_root, tmp_path
):
    """CMake 4.1.2 on each layout (this machine's CUDA 13 compiler in a conda-forge layout,
    torch's real bundled FindCUDAToolkit): cmake.torch-config's prediction and the real run
    agree in outcome and cause, CUDA::nvToolsExt included (cmake.prediction-agrees), and
    nvtx.cmake-target's outcome is nvtx.cmake-probe's."""
    b = layout_env(layouts_root, "cuda-13.0-system", layout, family, extra)
    env = PixiEnv.read(b.prefix, name="default", manifest=b.workspace / "pixi.toml")
    t = toolkit.read_toolkit(env)
    facts = torch_config.read_torch_config(env)
    pred = torch_config.predict_config(env, t, facts, "4.1.2", cmake=cmake4())
    probe = cmake_probe.run_probe(t, cmake4(), tmp_path, facts.nvtx, config=facts)
    verdict, why = probe_checks.compare_config(pred, probe)
    assert verdict == "agree", (why, probe.output[-3000:])
    assert f"predicted: {expected}" in why
    npred = find_cudatoolkit.predict(t, "4.1.2", facts.nvtx)
    agreement = probe_checks.agreement_finding(pred, npred, probe)
    assert agreement.outcome == "passed", agreement.summary
    target = nvtx.cmake_target(env, t, npred, str(cmake4()), facts.nvtx, pred)
    real = probe_checks.probe_finding(env, probe, npred)
    assert target.outcome == real.outcome, (target.summary, real.summary)
    if probe.torch_found:
        assert ("CUDA::nvToolsExt" in probe.targets) == ("CUDA::nvToolsExt" in pred.targets)


@REAL_NVCC
@pytest.mark.build
def test_prediction_agrees_reports_a_wrong_module(layouts_root, tmp_path):
    """Principle 3 guarded: had the prediction used CMake 4.1.2's own module (the old defect),
    cmake.prediction-agrees would say so (CUDA::nvToolsExt predicted missing, CMake made it)."""
    b = layout_env(layouts_root, "cuda-13.0-system", "f1.1", "2.6")
    env = PixiEnv.read(b.prefix, name="default", manifest=b.workspace / "pixi.toml")
    t = toolkit.read_toolkit(env)
    facts = torch_config.read_torch_config(env)
    assert facts.nvtx is not None and facts.nvtx.bundled is not None
    facts.nvtx.bundled = None  # the old model: CMake's own FindCUDAToolkit
    pred = torch_config.predict_config(env, t, facts, "4.1.2", cmake=cmake4())
    facts.nvtx.bundled = find_cudatoolkit.read_torch_cmake(env).bundled
    probe = cmake_probe.run_probe(t, cmake4(), tmp_path, facts.nvtx, config=facts)
    finding = probe_checks.agreement_finding(pred, None, probe)
    assert finding.outcome == "warning"
    assert (
        "CUDA::nvToolsExt: predicted not made by CMake 4.1.2's FindCUDAToolkit, CMake made it"
        in finding.summary
    )


@REAL_NVCC
@pytest.mark.build
def test_f11_suite_run_prediction_and_probe_agree(pytester, layouts_root):
    """The issue's case end to end, the suite as users run it (toolchain and build tiers, CMake
    4.1.2): nvtx.cmake-target and nvtx.cmake-probe fail for the same cause (LIBNVTOOLSEXT), and
    cmake.prediction-agrees passes; it used to pass while nvtx.cmake-target blamed
    "Failed to find nvToolsExt"."""
    b = layout_env(layouts_root, "cuda-13.0-system", "f1.1", "2.1")
    checks = report(pytester, b.prefix, "-m", "toolchain or build")
    assert checks["nvtx.cmake-target"]["outcome"] == "failed"
    assert "NOTFOUND: LIBNVTOOLSEXT" in checks["nvtx.cmake-target"]["summary"]
    assert checks["nvtx.cmake-probe"]["outcome"] == "failed"
    assert "LIBNVTOOLSEXT is NOTFOUND" in checks["nvtx.cmake-probe"]["summary"]
    assert checks["cmake.prediction-agrees"]["outcome"] == "passed", checks[
        "cmake.prediction-agrees"
    ]["summary"]
    assert checks["cmake.prediction-agrees"]["summary"].endswith(
        "predicted: generates with notfound:LIBNVTOOLSEXT; CMake: generates with "
        "notfound:LIBNVTOOLSEXT"
    )
