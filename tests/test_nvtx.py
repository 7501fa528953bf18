"""The nvtx area: the static prediction of FindCUDAToolkit + torch's cuda.cmake, the real
CMake probe, and that the two agree on every seed env where cmake runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fixtures.cuda_envs import SEEDS, cmake4, seed_env
from fixtures.text import lit
from pytest_vllm_env.checks import cmake_probe as probe_checks
from pytest_vllm_env.checks import nvtx
from pytest_vllm_env.facts import find_cudatoolkit, toolkit
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.readers import torch_cmake as torch_files
from pytest_vllm_env.runners import cmake_probe
from pytest_vllm_env.tables import cmake_cuda, cuda_archs

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider")
SYSTEM_CMAKE = shutil.which("cmake")
INCLUDE_ARG = "-DCUDAToolkit_INCLUDE_DIR={}/targets/x86_64-linux/include"  # vLLM >= 0.13


@pytest.fixture(scope="session")
def seeds_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "cuda-seeds"
    root.mkdir(exist_ok=True)
    return root


def run(pytester: pytest.Pytester, prefix: Path, *args: str):
    return pytester.runpytest(*SUITE, "-k", "test_nvtx", "--vllm-env", str(prefix), *args)


def _read(root: Path, seed: str) -> tuple[PixiEnv, toolkit.ToolkitFacts]:
    b = seed_env(root, seed)
    env = PixiEnv.read(b.prefix, name="default", manifest=b.workspace / "pixi.toml")
    return env, toolkit.read_toolkit(env)


def test_good_env_prediction_and_probe_pass(pytester, seeds_root):
    env = seed_env(seeds_root, "good-12.8")
    result = run(pytester, env.prefix)
    result.assert_outcomes(passed=2)


def test_nvtx_only_in_site_packages_breaks_torch(pytester, seeds_root):
    """Seed 001: NVTOOLSEXT_PATH does not help on Linux; cuda-nvtx-dev does."""
    b = seed_env(seeds_root, "nvtx-site-packages")
    result = run(pytester, b.prefix)
    result.assert_outcomes(failed=2)  # the prediction, and the real CMake agreeing
    sp = b.site_packages
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[nvtx.cmake-target] FAILED: torch's cuda.cmake needs CUDA::nvToolsExt, which "
                "CMake 4.1.2's FindCUDAToolkit will not create: no unversioned libnvToolsExt.so "
                f"in the searched dirs (NVTX found only at {sp}/nvidia/nvtx/include/nvToolsExt.h"
                f", {sp}/nvidia/nvtx/lib/libnvToolsExt.so.1); NVTOOLSEXT_PATH=*nvidia/nvtx is "
                "ignored: CMake's FindCUDAToolkit reads it only on Windows (torch's bundled "
                "copy, used through TorchConfig.cmake, reads it). CMake will say: "
                'The link interface of target "torch::nvtoolsext" contains: CUDA::nvToolsExt '
                "but the target was not found"
            ),
            lit('*fix: add `cuda-nvtx-dev = "12.8.*"` to [dependencies] in pixi.toml*'),
            f"*searched_libnvToolsExt.so: {b.prefix}/lib*",
        ]
    )
    result.stdout.fnmatch_lines(
        [lit('*[nvtx.cmake-probe] FAILED: *The link interface of target "torch::nvtoolsext"*')]
    )
    assert "prediction_differs" not in result.stdout.str()


@pytest.mark.skipif(SYSTEM_CMAKE is None, reason="no cmake on this machine's PATH")
def test_old_cmake_misses_conda_include_dir(pytester, seeds_root):
    """Seed 004's root cause: CMake < 3.28 looks only in <root>/include."""
    version = cmake_probe.cmake_version(Path(SYSTEM_CMAKE), dict(os.environ))
    if not version or cuda_archs.version_tuple(version) >= (3, 28):
        pytest.skip(f"system cmake is {version}, not < 3.28")
    b = seed_env(seeds_root, "cuda-home-targets")
    result = run(pytester, b.prefix, "-k", "cmake_target", "--cmake", SYSTEM_CMAKE)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                f"*[nvtx.cmake-target] FAILED: CMake {version}'s FindCUDAToolkit will fail: "
                "Could NOT find CUDAToolkit (missing: CUDAToolkit_INCLUDE_DIR)"
            ),
            lit(
                f"*fix: CMake {version} looks only in {b.prefix}/include: add "
                '`cmake = ">=3.28"` to [dependencies] in pixi.toml*'
            ),
        ]
    )


def test_missing_cmake_is_a_usage_error(pytester, seeds_root, tmp_path):
    """A --cmake that is not there: a usage error at start. It skipped both NVTX checks (the
    prediction and the probe), passing over the option the user gave (issue 21)."""
    b = seed_env(seeds_root, "good-12.8")
    result = run(pytester, b.prefix, f"--cmake={tmp_path / 'no-cmake'}", "-rs")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"ERROR: --cmake={tmp_path / 'no-cmake'}: * does not exist: pass the path of a cmake"]
    )


def _cmakes(seed_prefix: Path) -> list[Path]:
    own = seed_prefix / "bin" / "cmake"
    found = [own if own.exists() else cmake4()]
    if SYSTEM_CMAKE:
        found.append(Path(SYSTEM_CMAKE))
    return found


@pytest.mark.build
@pytest.mark.parametrize("seed", SEEDS)
def test_prediction_matches_real_cmake(seed, seeds_root, tmp_path):
    """Principle 3: the static prediction and the real CMake agree, per seed and cmake."""
    env, t = _read(seeds_root, seed)
    torch = find_cudatoolkit.read_torch_cmake(env)
    for i, cm in enumerate(_cmakes(env.prefix)):
        version = cmake_probe.cmake_version(cm, t.environ)
        assert version, f"{cm} does not run"
        pred = find_cudatoolkit.predict(t, version, torch)
        probe = cmake_probe.run_probe(t, cm, tmp_path / str(i), torch)
        assert probe.ran, probe.skipped_why
        assert probe_checks.agree(pred, probe) == [], (cm, version, probe.output[-2000:])


def test_torch_that_finds_nvtx3_in_the_toolkit_needs_no_nvtoolsext(seeds_root, tmp_path):
    env, t = _read(seeds_root, "nvcc-only")
    cmake_file = tmp_path / "cuda.cmake"
    cmake_file.write_text(
        "find_path(nvtx3_dir NAMES nvtx3 PATHS ${CUDA_INCLUDE_DIRS})\n"
        "set_property(TARGET torch::nvtoolsext PROPERTY INTERFACE_LINK_LIBRARIES "
        "CUDA::nvToolsExt)\n"
    )
    torch = torch_files.TorchCudaCmake(cmake_file, True, False, ["${CUDA_INCLUDE_DIRS}"], None)
    pred = find_cudatoolkit.predict(t, "4.1.2", torch)
    assert pred.found and "CUDA::nvToolsExt" not in pred.targets
    # nvcc-only has no nvtx3/ headers: torch falls back and fails
    assert pred.torch_needs_nvtoolsext and pred.torch_error
    (t.prefix / "targets/x86_64-linux/include/nvtx3").mkdir(exist_ok=True)
    try:
        pred = find_cudatoolkit.predict(t, "4.1.2", torch)
        assert pred.torch_needs_nvtoolsext is False and not pred.torch_error
    finally:
        (t.prefix / "targets/x86_64-linux/include/nvtx3").rmdir()


def test_reads_the_branch_a_consumer_runs(env_builder):
    env_builder.python()
    env_builder.dist(
        "torch",
        "2.11.0",
        files={
            "torch/share/cmake/Caffe2/public/cuda.cmake": (
                "if(USE_SYSTEM_NVTX)\n"
                "  find_path(nvtx3_dir NAMES nvtx3 PATHS ${CUDA_INCLUDE_DIRS})\n"
                "else()\n"
                '  find_path(nvtx3_dir NAMES nvtx3 PATHS "${PROJECT_SOURCE_DIR}/third_party/'
                'NVTX/c/include" NO_DEFAULT_PATH)\n'
                "endif()\n"
                "set_property(TARGET torch::nvtoolsext PROPERTY INTERFACE_LINK_LIBRARIES "
                "CUDA::nvToolsExt)\n"
            )
        },
    )
    torch = find_cudatoolkit.read_torch_cmake(PixiEnv.read(env_builder.prefix))
    assert torch is not None and torch.wants_nvtoolsext
    assert torch.nvtx3_paths == ["${PROJECT_SOURCE_DIR}/third_party/NVTX/c/include"]


def test_same_verdicts_under_xdist(pytester, seeds_root):
    import json

    b = seed_env(seeds_root, "nvtx-site-packages")
    args = ("-k", "test_cuda or test_nvtx", "--vllm-env", str(b.prefix), "--cuda-arch", "12.0")
    serial, parallel = pytester.path / "s.json", pytester.path / "p.json"
    pytester.runpytest_subprocess(*SUITE, *args, "--vllm-env-report", str(serial))
    pytester.runpytest_subprocess(*SUITE, *args, "-n", "2", "--vllm-env-report", str(parallel))

    def verdicts(path):
        data = json.loads(path.read_text())["checks"]
        return sorted((c["id"], c["outcome"], c["summary"]) for c in data)

    assert verdicts(serial) == verdicts(parallel)
    assert ("nvtx.cmake-target", "failed") in {v[:2] for v in verdicts(serial)}


def test_the_fix_works_cuda_nvtx_dev(pytester, tmp_path):
    """Apply the verdict's fix (cuda-nvtx-dev) to seed 001: prediction and CMake pass."""
    from fixtures import cuda_envs

    b = seed_env(tmp_path, "nvtx-site-packages")
    cuda_envs._nvtx_dev(b)
    result = run(pytester, b.prefix)
    result.assert_outcomes(passed=2)


def _bundled() -> cmake_cuda.FindModule:
    """torch's real bundled module (the 2.6.0 wheel's, committed under fixtures/torch_share)."""
    from fixtures.torch_cmake import BUNDLED_FIND_CUDATOOLKIT

    return torch_files.read_find_module(
        BUNDLED_FIND_CUDATOOLKIT, BUNDLED_FIND_CUDATOOLKIT.read_text()
    )


def test_reads_the_rules_of_torchs_module_and_of_cmakes_own():
    """The rules that differ, read from the files: torch's copy needs nvToolsExt.h, reads
    NVTOOLSEXT_PATH on Linux, has no CUDA 12.9 cut-off and no CUDA::nvtx3; CMake 4.1.2's own
    module, read the same way, matches the version table (cmake_module)."""
    torch = _bundled()
    assert torch.bundled and torch.nvtoolsext_header and torch.header_hint
    assert torch.library_hint and torch.nvtoolsext_until is None and not torch.nvtx3
    assert not torch.include_from_nvcc and torch.include_preset
    real = cmake4().resolve().parent.parent / "share" / "cmake-4.1" / "Modules"
    own = torch_files.read_find_module(
        real / "FindCUDAToolkit.cmake", (real / "FindCUDAToolkit.cmake").read_text(), "x"
    )
    table = cmake_cuda.cmake_module("4.1.2")
    for name in (
        "include_from_nvcc",
        "realpath_hint",
        "nvtoolsext_header",
        "header_hint",
        "library_hint",
        "nvtoolsext_until",
        "nvtx3",
    ):
        assert getattr(own, name) == getattr(table, name), name


def test_torchs_bundled_module_reads_nvtoolsext_path(seeds_root, tmp_path):
    """torch's bundled FindCUDAToolkit.cmake reads NVTOOLSEXT_PATH on Linux too: seed 001's
    site-packages NVTX gives it the header but only libnvToolsExt.so.1 (no target); a hint dir
    with the unversioned link passes."""
    env, t = _read(seeds_root, "nvtx-site-packages")
    torch = find_cudatoolkit.read_torch_cmake(env)
    assert torch is not None and torch.bundled is None  # cuda.cmake alone: CMake's module
    torch.bundled = _bundled()
    pred = find_cudatoolkit.predict(t, "4.1.2", torch)
    # its include dir is <root>/include only: a conda-forge layout needs the preset
    assert not pred.found and "CUDAToolkit_INCLUDE_DIR" in pred.why_not_found
    t.environ["CMAKE_ARGS"] = INCLUDE_ARG.format(t.prefix)
    pred = find_cudatoolkit.predict(t, "4.1.2", torch)
    assert pred.module == cmake_cuda.BUNDLED and pred.torch_error
    assert pred.nvtoolsext_missing == "library"
    assert pred.nvtoolsext_header == str(env.site_packages[0] / "nvidia/nvtx/include/nvToolsExt.h")
    finding = nvtx.cmake_target(env, t, pred, "cmake", torch)
    assert (
        "is searched, but find_library needs the unversioned libnvToolsExt.so (it holds only "
        f"{env.site_packages[0]}/nvidia/nvtx/lib/libnvToolsExt.so.1)" in finding.summary
    )
    assert finding.fix.startswith('add `cuda-nvtx-dev = "12.8.*"` to [dependencies]')
    hint = tmp_path / "nvtx"
    (hint / "include").mkdir(parents=True)
    (hint / "include" / "nvToolsExt.h").write_text("")
    (hint / "lib").mkdir()
    (hint / "lib" / "libnvToolsExt.so").write_bytes(b"")
    t.environ["NVTOOLSEXT_PATH"] = str(hint)
    pred = find_cudatoolkit.predict(t, "4.1.2", torch)
    assert not pred.torch_error
    assert pred.targets["CUDA::nvToolsExt"] == str(hint / "lib" / "libnvToolsExt.so")


def test_torchs_bundled_module_needs_the_header_cmakes_does_not(tmp_path):
    """The library beside libcudart, nvToolsExt.h only in site-packages (F1.3's env once
    cuda-nvtx-dev's unversioned link is there): CMake's own module makes CUDA::nvToolsExt,
    torch's bundled copy does not; its fix is NVTOOLSEXT_PATH (F1.3's), which it reads."""
    from fixtures import cuda_envs, downloads

    b = seed_env(tmp_path, "nvtx-site-packages")
    nv = downloads.unpacked(cuda_envs.NVTX) / "nvidia" / "nvtx" / "lib" / "libnvToolsExt.so.1"
    cuda_envs._lib(b, nv, "libnvToolsExt.so.1", dev=True)
    env = PixiEnv.read(b.prefix, name="default", manifest=b.workspace / "pixi.toml")
    t = toolkit.read_toolkit(env)
    del t.environ["NVTOOLSEXT_PATH"]
    torch = find_cudatoolkit.read_torch_cmake(env)
    own = find_cudatoolkit.predict(t, "4.1.2", torch)
    assert "CUDA::nvToolsExt" in own.targets and not own.torch_error
    torch.bundled = _bundled()
    t.environ["CMAKE_ARGS"] = INCLUDE_ARG.format(t.prefix)
    pred = find_cudatoolkit.predict(t, "4.1.2", torch)
    assert "CUDA::nvToolsExt" not in pred.targets and pred.torch_error
    assert pred.nvtoolsext_missing == "header" and pred.nvtoolsext_library
    finding = nvtx.cmake_target(env, t, pred, "cmake", torch)
    assert "it needs nvToolsExt.h too and finds none where it looks (its include dir" in (
        finding.summary
    )
    assert finding.fix.startswith(
        'set `NVTOOLSEXT_PATH = "${CONDA_PREFIX}/lib/python3.12/site-packages/nvidia/nvtx"` in '
        "[activation.env] in pixi.toml (torch's bundled Caffe2/FindCUDAToolkit.cmake looks for "
        "nvToolsExt.h in $NVTOOLSEXT_PATH/include on Linux too"
    )
    t.environ["NVTOOLSEXT_PATH"] = str(b.site_packages / "nvidia" / "nvtx")  # the fix
    pred = find_cudatoolkit.predict(t, "4.1.2", torch)
    assert pred.targets["CUDA::nvToolsExt"] == str(b.prefix / "lib" / "libnvToolsExt.so")
