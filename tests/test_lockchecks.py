"""The lock.* judgements one by one: each real failure reproduced from a lock, with its fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures import pixi_locks as L
from pytest_vllm_env.checks import coverage_arch, lock, lock_cuda, lock_pypi
from pytest_vllm_env.facts.env import EnvSpec, PixiEnv
from pytest_vllm_env.facts.lock_env import open_env
from pytest_vllm_env.facts.lockfacts import torch_build
from pytest_vllm_env.readers import fatbin
from pytest_vllm_env.readers.manifest_lines import ManifestLines
from pytest_vllm_env.tables import torch_archs
from pytest_vllm_env.tables.archs import parse_arch

SM120 = [parse_arch("12.0")]
MANIFEST = """\
[workspace]
name = "ws"
channels = ["conda-forge"]
platforms = ["linux-64"]

[dependencies]
python = "3.12.*"
{deps}
[pypi-dependencies]
{pypi}
"""


def locked_env(
    tmp_path: Path, packages, deps: str = "", pypi: str = "", extra: str = ""
) -> PixiEnv:
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    manifest = ws / "pixi.toml"
    manifest.write_text(MANIFEST.format(deps=deps, pypi=pypi) + extra)
    L.LockBuilder(6).add("default", L.python_base() + list(packages)).write(ws / "pixi.lock")
    spec = EnvSpec(ws / ".pixi" / "envs" / "default", "default", manifest, str(manifest))
    return open_env(spec, platform="linux-64")


def outcomes(findings) -> list[str]:
    return [f.outcome for f in findings]


def torch_wheel(
    version: str, requires=(), index: str | None = None, tags="cp312-cp312-manylinux_2_28_x86_64"
):
    return L.wheel("torch", version, tags, list(requires), ">=3.9", index)


# -- torch's arch list ----------------------------------------------------------------------------
def test_cpu_only_torch_fails_every_target(tmp_path):
    env = locked_env(
        tmp_path,
        [torch_wheel("2.9.1+cpu", index=f"{L.TORCH_INDEX}/cpu")],
        pypi='torch = { version = "==2.9.1", index = "https://download.pytorch.org/whl/cpu" }\n',
    )
    [f] = lock_cuda.torch_archs_check(env, SM120, "--cuda-arch")
    assert f.outcome == "failed"
    assert f.summary == "torch 2.9.1+cpu in pixi.lock is a CPU-only build: no kernels for sm_120"
    assert (
        'in pixi.toml line 10 ([pypi-dependencies]), replace `torch = { version = "==2.9.1"'
        in f.fix
    )
    assert 'index = "https://download.pytorch.org/whl/cu128" }`' in f.fix


def test_pypi_torch_without_local_version_gets_its_variant_from_requires_dist(tmp_path):
    # PyPI's torch 2.7.1 is the cu126 build: its metadata pins nvidia-cuda-runtime-cu12==12.6.77
    requires = ["nvidia-cuda-runtime-cu12==12.6.77 ; platform_machine == 'x86_64'"]
    env = locked_env(tmp_path, [torch_wheel("2.7.1", requires)], pypi='torch = "==2.7.1"\n')
    build = torch_build(env.locked.locked)
    assert (build.variant, build.how) == ("cu126", "its CUDA wheels in requires_dist")
    [f] = lock_cuda.torch_archs_check(env, SM120, "--cuda-arch")
    assert f.outcome == "failed"
    assert f.summary.startswith(
        "torch 2.7.1 (cu126, its CUDA wheels in requires_dist) (pixi.lock) "
        "has no kernels for sm_120"
    )
    assert 'replace `torch = "==2.7.1"` with `torch = { version = ">=2.8"' in f.fix
    [ok] = lock_cuda.torch_archs_check(env, [parse_arch("8.0")], "--cuda-arch")
    assert ok.outcome == "passed" and "via SASS sm_80" in ok.summary


def test_torch_2_11_metadata_names_cuda_13_through_cuda_toolkit(tmp_path):
    requires = ["cuda-toolkit[cublas,cudart,cufft,nvrtc,nvtx]==13.0.2 ; platform_system == 'Linux'"]
    env = locked_env(tmp_path, [torch_wheel("2.11.0", requires)])
    assert torch_build(env.locked.locked).variant == "cu130"
    [f] = lock_cuda.torch_archs_check(env, SM120, "TORCH_CUDA_ARCH_LIST")
    assert f.outcome == "passed"


def test_release_missing_from_the_table_is_judged_by_the_toolkit_bound(tmp_path):
    env = locked_env(tmp_path, [torch_wheel("2.5.1+cu124", index=f"{L.TORCH_INDEX}/cu124")])
    failed, unknown = lock_cuda.torch_archs_check(
        env, [parse_arch("12.0"), parse_arch("9.0")], "--cuda-arch"
    )
    assert failed.outcome == "failed"
    assert "CUDA 12.4's nvcc cannot generate sm_120 code (it needs CUDA >= 12.8)" in failed.summary
    assert unknown.outcome == "skipped"
    assert "the arch table has no row for torch 2.5.1+cu124" in unknown.summary


def test_conda_forge_pytorch_follows_cuda_version(tmp_path):
    pytorch = L.Conda("pytorch", "2.6.0", "cuda126_generic_py312_h7c5e9d1_200")
    env = locked_env(
        tmp_path,
        [pytorch, L.Conda("cuda-version", "12.6", "h7480c83_3", "noarch")],
        deps='cuda-version = "12.6.*"\npytorch = "*"\n',
    )
    [f] = lock_cuda.torch_archs_check(env, SM120, "--cuda-arch")
    assert f.outcome == "failed"
    assert f.summary.startswith(
        "pytorch 2.6.0 (cu126, build cuda126_generic_py312_h7c5e9d1_200) (pixi.lock) "
        "has no kernels for sm_120"
    )
    assert 'replace `cuda-version = "12.6.*"` with `cuda-version = "12.8.*"`' in f.fix


def test_no_torch_and_no_target_skip(tmp_path):
    env = locked_env(tmp_path, [])
    assert lock_cuda.torch_archs_check(env, SM120, "--cuda-arch")[0].summary == (
        "pixi.lock has no torch for env 'default'"
    )
    env = locked_env(tmp_path, [torch_wheel("2.9.1+cu128", index=f"{L.TORCH_INDEX}/cu128")])
    assert outcomes(lock_cuda.torch_archs_check(env, [], "none")) == ["skipped"]


def test_an_arch_list_is_an_arch_list(tmp_path):
    """The table row and a fatbin with the same kernels get the same verdict from the same
    function (nvcc-built library: sm_80 and sm_90 SASS, no PTX)."""
    from fixtures.elf import cuda_so, nvcc

    if nvcc() is None:
        pytest.skip("no nvcc on this machine")
    lib = cuda_so(
        tmp_path / "k.so",
        ["arch=compute_80,code=sm_80", "arch=compute_90,code=sm_90"],
    )
    row = torch_archs.TorchArchs("9.9", "cu999", ("sm_80", "sm_90"), (), "test")
    for target in ("12.0", "8.6", "9.0"):
        archs = [parse_arch(target)]
        from_binary = coverage_arch.coverage("x", fatbin.read_images(lib), archs)
        from_table = coverage_arch.coverage("x", row.images(), archs)
        assert [(f.outcome, f.summary, dict(f.evidence)) for f in from_binary] == [
            (f.outcome, f.summary, dict(f.evidence)) for f in from_table
        ]


# -- nvcc, CUDA releases, build deps -------------------------------------------------------------
def test_nvcc_12_8_targets_sm_120_and_12_4_does_not(tmp_path):
    env = locked_env(tmp_path, L.cuda_nvcc("12.8.93", "12.8.90"), deps='cuda-nvcc = "12.8.*"\n')
    assert outcomes(lock_cuda.nvcc_archs(env, SM120, "--cuda-arch")) == ["passed"]
    env = locked_env(tmp_path, L.cuda_nvcc("12.4.131", "12.4.127"), deps='cuda-nvcc = "12.4.*"\n')
    [f] = lock_cuda.nvcc_archs(env, [parse_arch("12.1")], "--cuda-arch")
    assert f.outcome == "failed" and "it needs CUDA >= 12.9" in f.summary
    assert 'replace `cuda-nvcc = "12.4.*"` with `cuda-nvcc = "12.9.*"`' in f.fix


def test_torch_cuda_major_against_the_toolkit(tmp_path):
    torch = torch_wheel("2.6.0+cu124", index=f"{L.TORCH_INDEX}/cu124")
    env = locked_env(
        tmp_path,
        [torch, *L.cuda_nvcc("13.0.88", "13.0.96")],
        deps='cuda-version = "13.0.*"\ncuda-nvcc = "13.0.*"\n',
        pypi='torch = { version = "==2.6.0", index = "https://download.pytorch.org/whl/cu124" }\n',
    )
    found = lock_cuda.cuda_match(env)
    assert outcomes(found) == ["passed", "failed"]
    failed = found[1]
    assert failed.summary == (
        "torch 2.6.0+cu124 is built with CUDA 12.4, the locked toolkit is CUDA 13.0: building "
        'extensions (vLLM, flash-attn) fails with "The detected CUDA version (13.0) mismatches '
        'the version that was used to compile PyTorch (12.4)"'
    )
    assert 'replace `cuda-version = "13.0.*"` with `cuda-version = "12.4.*"`' in failed.fix
    assert (
        'torch = { version = ">=2.9", index = "https://download.pytorch.org/whl/cu130" }'
        in failed.fix
    )
    env = locked_env(tmp_path, [torch, *L.cuda_nvcc("12.8.93", "12.8.90")])
    assert "torch only warns about the minor difference" in lock_cuda.cuda_match(env)[1].summary


def test_mixed_cuda_releases_in_the_lock(tmp_path):
    packages = L.cuda_nvcc("12.8.93", "12.8.90") + [L.Conda("cuda-nvrtc-dev", "12.4.127", "h0_0")]
    env = locked_env(tmp_path, packages, deps='cuda-version = "12.8.*"\n')
    [f] = lock_cuda.cuda_match(env)[:1]
    assert f.outcome == "failed" and f.id == "lock.cuda-match"
    assert "CUDA packages from 2 releases" in f.summary


@pytest.mark.parametrize(
    ("cmake", "extra", "outcome", "says"),
    [
        ("3.25.1", "", "failed", "vLLM's CMakeLists.txt requires CMake >= 3.26"),
        ("3.27.9", "", "failed", "before 3.28 FindCUDAToolkit looks for cuda_runtime.h only"),
        (
            "3.27.9",
            '[activation.env]\nCUDAToolkit_ROOT = "${CONDA_PREFIX}/targets/x86_64-linux"\n',
            "passed",
            "finds the targets/x86_64-linux layout",
        ),
        ("3.31.6", "", "passed", "cmake 3.31.6 (conda) finds the targets/x86_64-linux layout"),
    ],
)
def test_cmake_version(tmp_path, cmake, extra, outcome, says):
    packages = L.cuda_toolkit() + L.nvtx_dev("12.8.90") + L.build_tools(cmake)
    env = locked_env(tmp_path, packages, deps='cmake = ">=3.20"\n', extra=extra)
    deps, tool = lock_cuda.build_deps(env)
    assert deps.outcome == "passed"
    assert tool.outcome == outcome and says in tool.summary
    if outcome == "failed":
        assert (
            'in pixi.toml line 8 ([dependencies]), replace `cmake = ">=3.20"` '
            'with `cmake = ">=3.28"`' in tool.fix
        )


def test_no_nvcc_builds_nothing(tmp_path):
    env = locked_env(tmp_path, [torch_wheel("2.9.1+cu128", index=f"{L.TORCH_INDEX}/cu128")])
    for check in (lock_cuda.build_deps, lambda e: lock_cuda.nvcc_archs(e, SM120, "x")):
        [f] = check(env)
        assert f.outcome == "skipped" and "it builds no CUDA code" in f.summary


# -- pins -----------------------------------------------------------------------------------------
def test_vllm_pin_overridden_in_the_lock(tmp_path):
    # a [pypi-options.dependency-overrides] torch = "==2.7.1" next to vLLM 0.8.5 (torch==2.6.0)
    vllm = L.wheel(
        "vllm", "0.8.5", "cp38-abi3-manylinux1_x86_64", L.VLLM_085_REQUIRES, "<3.13,>=3.9"
    )
    torch = torch_wheel("2.7.1+cu126", index=f"{L.TORCH_INDEX}/cu126")
    env = locked_env(tmp_path, [vllm, torch], pypi='vllm = "==0.8.5"\ntorch = "==2.7.1"\n')
    found = lock_pypi.torch_pins(env)
    bad = [f for f in found if f.outcome == "failed"]
    assert [f.summary for f in bad] == [
        "vllm 0.8.5 requires torch==2.6.0 but the env has torch 2.7.1+cu126"
    ]
    assert bad[0].fix.startswith(
        'in pixi.toml line 11 ([pypi-dependencies]), replace `torch = "==2.7.1"` '
        'with `torch = "==2.6.0"`'
        ', or lock the vllm release built for torch 2.7.1+cu126 (pixi.toml:10 `vllm = "==0.8.5"`)'
    )


@pytest.mark.parametrize(
    ("flash", "torch", "outcome"),
    [
        # real-world F5.3: flash-attn 2.8.0.post2 (cxx11 ABI) next to torch 2.6.0+cu124
        ("2.8.0.post2+cu12torch2.6cxx11abiTRUE", "2.6.0+cu124", "failed"),
        ("2.7.4.post1+cu12torch2.6cxx11abiFALSE", "2.6.0+cu124", "passed"),
        # F5.5: built for another torch
        ("2.8.3+cu12torch2.7cxx11abiTRUE", "2.8.0+cu128", "failed"),
        ("2.8.3+cu12torch2.8cxx11abiTRUE", "2.8.0+cu128", "passed"),
    ],
)
def test_flash_attn_wheel_tags_against_torch(tmp_path, flash, torch, outcome):
    variant = torch.partition("+")[2]
    packages = [
        torch_wheel(torch, index=f"{L.TORCH_INDEX}/{variant}"),
        L.Pypi(
            "flash-attn",
            flash,
            f"https://github.com/Dao-AILab/flash-attention/releases/download/v2/flash_attn-{flash}-cp312-cp312-linux_x86_64.whl",
        ),
    ]
    env = locked_env(tmp_path, packages)
    [f] = lock_pypi.torch_pins(env)
    assert f.outcome == outcome, f.summary
    if outcome == "failed":
        assert (
            "undefined symbol" in f.summary and "lock the flash-attn wheel made for torch" in f.fix
        )


# -- wheels and sdists ----------------------------------------------------------------------------
def test_wheel_for_another_python(tmp_path):
    env = locked_env(
        tmp_path, [L.wheel("xformers", "0.0.29.post2", "cp311-cp311-manylinux_2_28_x86_64")]
    )
    [f] = lock_pypi.wheel_tags(env)
    assert f.outcome == "failed"
    assert (
        "xformers-0.0.29.post2-cp311-cp311-manylinux_2_28_x86_64.whl: "
        "Python tag cp311/cp311 does not fit Python 3.12.9" in f.summary
    )
    assert 'set the Python the wheels are for (pixi.toml:7 `python = "3.12.*"`)' in f.fix


def test_requires_python_and_platform_tags(tmp_path):
    vllm = L.wheel("vllm", "0.8.5", "cp38-abi3-manylinux1_x86_64", (), "<3.12,>=3.9")
    arm = L.wheel("numpy", "2.2.4", "cp312-cp312-manylinux_2_17_aarch64")
    abi3 = L.wheel("blake3", "1.0.4", "cp38-abi3-manylinux_2_17_x86_64")
    [f] = lock_pypi.wheel_tags(locked_env(tmp_path, [vllm, arm, abi3]))
    assert "vllm 0.8.5 requires Python <3.12,>=3.9" in f.summary
    assert "platform tag manylinux_2_17_aarch64 is not for x86_64" in f.summary
    assert "blake3" not in f.summary


def test_vllm_locked_as_an_sdist(tmp_path):
    # prefix-dev/pixi#5266: vLLM 0.13.0 wheels are manylinux_2_31; Pixi assumed glibc 2.28
    env = locked_env(tmp_path, [L.sdist("vllm", "0.13.0", ["torch==2.9.0"])])
    tags, sdist = lock_pypi.wheel_tags(env)
    assert tags.outcome == "passed" and sdist.outcome == "failed"
    assert "vLLM 0.13.0 is locked as an sdist (vllm-0.13.0.tar.gz)" in sdist.summary
    assert '`[system-requirements]` `libc = "2.31"` to pixi.toml' in sdist.fix


def test_flash_attn_sdist_and_build_isolation(tmp_path):
    # F5.2: Pixi's isolated build of flash-attn: "No module named 'torch'"
    env = locked_env(
        tmp_path,
        [L.sdist("flash-attn", "2.8.3", ["torch", "einops"])],
        pypi='flash-attn = "==2.8.3"\n',
    )
    [_, f] = lock_pypi.wheel_tags(env)
    assert f.outcome == "failed" and "No module named 'torch'" in f.summary
    assert "add 'flash-attn' to `no-build-isolation` under [pypi-options] in pixi.toml" in f.fix
    env = locked_env(
        tmp_path,
        [L.sdist("flash-attn", "2.8.3", ["torch"])],
        extra='\n[pypi-options]\nno-build-isolation = ["flash-attn"]\n',
    )
    [_, w] = lock_pypi.wheel_tags(env)
    assert w.outcome == "warning" and "compiles it" in w.summary


# -- the installed env against its lock ------------------------------------------------------------
def test_installed_current_compares_conda_and_pypi(tmp_path, env_builder):
    builder = L.seed_004_lock()
    L.install(builder, "rtx5090-vllm", env_builder)
    from pytest_vllm_env.readers.pixilock import parse_lock

    locked = parse_lock(builder.text()).env("rtx5090-vllm", "linux-64")
    installed = PixiEnv.read(env_builder.prefix, name="rtx5090-vllm")
    assert lock.installed_current(installed, locked).outcome == "passed"
    (env_builder.prefix / "conda-meta" / "cuda-nvtx-dev-12.8.90-ha770c72_1.json").unlink()
    (env_builder.prefix / "conda-meta" / "cmake-4.0.3-h74e3db0_0.json").unlink()
    env_builder.conda("cmake", "3.31.6", "h74e3db0_1")
    installed = PixiEnv.read(env_builder.prefix, name="rtx5090-vllm")
    f = lock.installed_current(installed, locked)
    assert f.outcome == "warning"
    assert "cuda-nvtx-dev 12.8.90 not installed" in f.evidence["differences"]
    assert "cmake 3.31.6-h74e3db0_1 installed, 4.0.3-h74e3db0_0 locked" in f.evidence["differences"]


# -- manifest lines ------------------------------------------------------------------------------
def test_manifest_lines_follow_features_and_pyproject(tmp_path):
    from pytest_vllm_env.readers.pixi import load_manifest

    manifest = L.seed_004(tmp_path / "ws")
    ml = ManifestLines(load_manifest(manifest), "rtx5090-vllm")
    found = ml.find("torch", "pypi-dependencies")
    assert (found.line, found.table) == (21, "[tool.pixi.feature.rtx5090.pypi-dependencies]")
    assert ml.where("python", "dependencies") == 'pyproject.toml:12 `python = "3.12.*"`'
    assert ml.add_table("dependencies") == "[tool.pixi.feature.rtx5090.dependencies]"
    text = manifest.read_text().replace("dependencies = []", 'dependencies = [\n  "Torch>=2.9",\n]')
    manifest.write_text(text)
    ml = ManifestLines(load_manifest(manifest), "default")
    assert str(ml.find("torch", "pypi-dependencies")) == 'pyproject.toml:6 `"Torch>=2.9",`'
