"""The nvtx area: the static prediction of FindCUDAToolkit + torch's cuda.cmake, the real
CMake probe, and that the two agree on every seed env where cmake runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fixtures.cuda_envs import SEEDS, cmake4, seed_env
from fixtures.text import lit
from pytest_vllm_env.checks import cuda, nvtx
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.runners import cmake_probe

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider")
SYSTEM_CMAKE = shutil.which("cmake")


@pytest.fixture(scope="session")
def seeds_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "cuda-seeds"
    root.mkdir(exist_ok=True)
    return root


def run(pytester: pytest.Pytester, prefix: Path, *args: str):
    return pytester.runpytest(*SUITE, "-k", "test_nvtx", "--vllm-env", str(prefix), *args)


def _read(root: Path, seed: str) -> tuple[PixiEnv, cuda.ToolkitFacts]:
    b = seed_env(root, seed)
    env = PixiEnv.read(b.prefix, name="default", manifest=b.workspace / "pixi.toml")
    return env, cuda.read_toolkit(env)


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
                "CMake 4.1.2 will not create: no libnvToolsExt.so in the searched dirs (NVTX "
                f"found only at {sp}/nvidia/nvtx/include/nvToolsExt.h, "
                f"{sp}/nvidia/nvtx/lib/libnvToolsExt.so.1). NVTOOLSEXT_PATH=*nvidia/nvtx is "
                "ignored: CMake's FindCUDAToolkit reads it only on Windows. CMake will say: "
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
    if not version or cuda._ver(version) >= (3, 28):
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


def test_missing_cmake_skips_saying_so(pytester, seeds_root, tmp_path):
    b = seed_env(seeds_root, "good-12.8")
    result = run(pytester, b.prefix, "--cmake", str(tmp_path / "no-cmake"), "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*no-cmake does not run: no CMake version to predict*"])
    result.stdout.fnmatch_lines(["*CMake probe not run: `*no-cmake -S *` could not start*"])


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
    torch = nvtx.read_torch_cmake(env)
    for i, cm in enumerate(_cmakes(env.prefix)):
        version = cmake_probe.cmake_version(cm, t.environ)
        assert version, f"{cm} does not run"
        pred = nvtx.predict(t, version, torch)
        probe = cmake_probe.run_probe(t, cm, tmp_path / str(i), torch)
        assert probe.ran, probe.skipped_why
        assert cmake_probe.agree(pred, probe) == [], (cm, version, probe.output[-2000:])


def test_torch_that_finds_nvtx3_in_the_toolkit_needs_no_nvtoolsext(seeds_root, tmp_path):
    env, t = _read(seeds_root, "nvcc-only")
    cmake_file = tmp_path / "cuda.cmake"
    cmake_file.write_text(
        "find_path(nvtx3_dir NAMES nvtx3 PATHS ${CUDA_INCLUDE_DIRS})\n"
        "set_property(TARGET torch::nvtoolsext PROPERTY INTERFACE_LINK_LIBRARIES "
        "CUDA::nvToolsExt)\n"
    )
    torch = nvtx.TorchCudaCmake(cmake_file, True, False, ["${CUDA_INCLUDE_DIRS}"], None)
    pred = nvtx.predict(t, "4.1.2", torch)
    assert pred.found and "CUDA::nvToolsExt" not in pred.targets
    # nvcc-only has no nvtx3/ headers: torch falls back and fails
    assert pred.torch_needs_nvtoolsext and pred.torch_error
    (t.prefix / "targets/x86_64-linux/include/nvtx3").mkdir(exist_ok=True)
    try:
        pred = nvtx.predict(t, "4.1.2", torch)
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
    torch = nvtx.read_torch_cmake(PixiEnv.read(env_builder.prefix))
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


def test_torch_bundled_findcudatoolkit_reads_nvtoolsext_path(seeds_root, tmp_path):
    """torch's own FindCUDAToolkit.cmake (torch 2.14.1 ships one) reads NVTOOLSEXT_PATH on
    Linux too; seed 001's site-packages NVTX still fails (only libnvToolsExt.so.1), and a
    hint dir with the unversioned link passes."""
    env, t = _read(seeds_root, "nvtx-site-packages")
    torch = nvtx.read_torch_cmake(env)
    assert torch is not None and not torch.vendored_reads_nvtoolsext_path
    torch.vendored_reads_nvtoolsext_path = True
    pred = nvtx.predict(t, "4.1.2", torch)
    assert pred.torch_error and pred.searched["NVTOOLSEXT_PATH"]
    finding = nvtx.cmake_target(env, t, pred, "cmake", torch)
    assert "read by torch's bundled FindCUDAToolkit.cmake, but it holds no unversioned" in (
        finding.summary
    )
    hint = tmp_path / "nvtx"
    (hint / "include").mkdir(parents=True)
    (hint / "include" / "nvToolsExt.h").write_text("")
    (hint / "lib").mkdir()
    (hint / "lib" / "libnvToolsExt.so").write_bytes(b"")
    t.environ["NVTOOLSEXT_PATH"] = str(hint)
    pred = nvtx.predict(t, "4.1.2", torch)
    assert not pred.torch_error
    assert pred.targets["CUDA::nvToolsExt"] == str(hint / "lib" / "libnvToolsExt.so")
