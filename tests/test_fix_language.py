# ruff: noqa: E501  (expected fixes are kept whole: they are what users read)
"""Every family's fix in the env's own language (issue 21): the suite run on a Pixi env, a
pyproject workspace, a conda prefix and a venv (pip, and uv's), and the words of each fix
asserted. A venv gets pip/uv commands and exports, never a pixi.toml edit; a pyproject
workspace gets ``[tool.pixi.*]`` tables; a conda prefix ``conda install -p`` and ``conda env
config vars set``. Families: the build-log judge (``buildlog.*``), the gpu tier
(``gpu.torch-cuda``, ``gpu.vllm-generate``'s load errors), ``modelopt.architecture-registered``,
``source.torch-api``, ``arch.coverage``, ``xformers.*``, ``cuda.vllm-python`` and
``env.conda-meta``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fixtures import checkpoints as ckpts
from fixtures import pixi_locks as L
from fixtures.envs import EnvBuilder
from fixtures.gpu_standins import standin_env
from fixtures.vit_standin import install_vit_vllm
from fixtures.vllm_standin import install_vllm
from pytest_vllm_env.checks import coverage_arch, gpu_device, gpu_vllm_load
from pytest_vllm_env.checks import xformers_torch as XT
from pytest_vllm_env.checks.abi_fixes import editable_build
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.gpu_probe import BinaryImages, ProbeResult
from pytest_vllm_env.facts.targets import FixTargets
from pytest_vllm_env.tables.archs import FatbinImage, parse_arch
from tests.test_gpu import GOOD, fake_python
from tests.test_gpu import checkpoints as gpu_checkpoints
from tests.test_source_build import MARLIN, SCALAR_TYPES, tree

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider")
LOGS = Path(__file__).parent.parent / "fixtures" / "buildlogs"
KINDS = ["pixi", "pyproject", "conda", "venv", "uv"]


def builder(kind: str, root: Path) -> EnvBuilder:
    """An empty env of ``kind`` under ``root`` (fill it, then :func:`finish`)."""
    if kind in ("pixi", "pyproject"):
        return EnvBuilder(root / "ws")
    if kind == "conda":
        return EnvBuilder(root, "envs/x", bare=True)
    return EnvBuilder(root, "venv", bare=True)


def finish(kind: str, b: EnvBuilder, manifest: str = "[dependencies]\n") -> Path:
    """Lay out what makes ``b``'s env of ``kind``: the workspace manifest (pixi.toml, or
    pyproject.toml's [tool.pixi] tables), nothing for a conda prefix, and for a venv what
    `python -m venv` / `uv venv` leave (no conda-meta, a pyvenv.cfg)."""
    if kind == "pixi":
        b.manifest(manifest)
    elif kind == "pyproject":
        b.manifest(manifest.replace("[", "[tool.pixi."), kind="pyproject")
    elif kind in ("venv", "uv"):
        shutil.rmtree(b.prefix / "conda-meta")
        (b.prefix / "pyvenv.cfg").write_text(
            "home = /usr/bin\nversion = 3.12.3\n" + ("uv = 0.13.9\n" if kind == "uv" else "")
        )
    return b.prefix


def read_env(kind: str, b: EnvBuilder) -> PixiEnv:
    """The env as the suite reads it (its manifest and env name for a Pixi workspace)."""
    if kind in ("pixi", "pyproject"):
        manifest = b.workspace / ("pixi.toml" if kind == "pixi" else "pyproject.toml")
        return PixiEnv.read(b.prefix, name="default", manifest=manifest)
    return PixiEnv.read(b.prefix)


def fixes_by_id(pytester: pytest.Pytester, prefix: Path, *args: str) -> dict[str, str]:
    """check id -> its fix (the bad verdicts of the run), from the JSON report."""
    report = pytester.path / "r.json"
    pytester.runpytest(*SUITE, f"--vllm-env={prefix}", f"--vllm-env-report={report}", *args)
    checks = json.loads(report.read_text())["checks"]
    return {c["id"]: c["fix"] for c in checks if c.get("fix")}


def assert_language(kind: str, fix: str, prefix: Path) -> None:
    """The words every fix of ``kind`` uses, and those it never does."""
    if kind == "pixi":
        assert "pixi.toml" in fix, fix  # a table of it, or `pixi ... --manifest-path` it
        assert "pip install" not in fix and "conda install" not in fix, fix
    elif kind == "pyproject":
        assert "[tool.pixi." in fix and "pyproject.toml" in fix, fix
        assert "pixi.toml" not in fix.replace("pyproject.toml", ""), fix
    elif kind == "conda":
        # conda install -p / conda env config vars set -p, and pip for PyPI packages
        assert f"-p {prefix}" in fix or f"{prefix}/bin/python3 -m pip install" in fix, fix
        assert "pixi.toml" not in fix and "[dependencies]" not in fix, fix
    else:
        assert "pixi.toml" not in fix and "[dependencies]" not in fix, fix
        assert "[activation.env]" not in fix and "[pypi-dependencies]" not in fix, fix
        if kind == "uv":
            assert f"uv pip install --python {prefix}" in fix or "export `" in fix, fix
        else:
            assert f"{prefix}/bin/python3 -m pip install" in fix or "export `" in fix, fix


# -- buildlog.* ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_build_log_fixes_in_the_env_language(pytester, tmp_path, kind):
    """The build-log judge's fixes are written for the judged env: a venv's nvcc is the
    system toolkit's (exported CUDA_HOME/PATH), its MAX_JOBS an export; a Pixi env's are
    manifest lines at the run's CUDA (torch's 12.6 here)."""
    b = builder(kind, tmp_path)
    b.python("3.12")
    b.dist("torch", "2.6.0+cu126", files={"torch/version.py": "cuda = '12.6'\n"})
    prefix = finish(kind, b)
    logs = []
    for name in ("nvcc_missing.log", "oom_killed.log", "float8_e8m0.log", "vllm_python.log"):
        logs.append(f"--vllm-build-log={LOGS / name}")
    found = fixes_by_id(pytester, prefix, "-k", "test_build_logs", *logs)
    assert set(found) == {
        "buildlog.nvcc-missing",
        "buildlog.oom",
        "buildlog.torch-too-old",
        "buildlog.vllm-python",
    }
    for fix in found.values():
        assert_language(kind, fix, prefix)
    nvcc, oom = found["buildlog.nvcc-missing"], found["buildlog.oom"]
    torch, python = found["buildlog.torch-too-old"], found["buildlog.vllm-python"]
    if kind == "pixi":
        assert 'add `cuda-nvcc = "12.6.*"` to [dependencies] in pixi.toml' in nvcc
        assert 'set `CUDA_HOME = "${CONDA_PREFIX}"` in [activation.env] in pixi.toml' in nvcc
        assert 'set `MAX_JOBS = "2"` in [activation.env] in pixi.toml' in oom
        assert 'add `torch = ">=2.7"` to [pypi-dependencies] in pixi.toml' in torch
        assert "`no-build-isolation = [...]` of [pypi-options] in pixi.toml" in python
    elif kind == "pyproject":
        assert 'add `cuda-nvcc = "12.6.*"` to [tool.pixi.dependencies] in pyproject.toml' in nvcc
        assert "[tool.pixi.activation.env] in pyproject.toml" in oom
    elif kind == "conda":
        assert f'`conda install -p {prefix} -c conda-forge "cuda-nvcc=12.6.*"`' in nvcc
        assert f"`conda env config vars set -p {prefix} CUDA_HOME={prefix}`" in nvcc
        assert f"`conda env config vars set -p {prefix} MAX_JOBS=2`" in oom
        assert f'`{prefix}/bin/python3 -m pip install "torch>=2.7"`' in torch
    else:
        # a venv has no CUDA toolkit of its own: the system's CUDA 12.6, exported
        assert "export `CUDA_HOME=/usr/local/cuda-12.6`" in nvcc and "CONDA_PREFIX" not in nvcc
        assert "export `MAX_JOBS=2`" in oom and f"{prefix}/bin/activate" in oom
        pip = (
            f"uv pip install --python {prefix}"
            if kind == "uv"
            else f"{prefix}/bin/python3 -m pip install"
        )
        assert f'`{pip} "torch>=2.7"`' in torch
        assert f"`{pip} --no-build-isolation" in python


# -- gpu.* -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pixi", "pyproject", "conda", "venv"])
def test_gpu_torch_fix_in_the_env_language_at_the_run_target(pytester, tmp_path, kind):
    """gpu.torch-cuda on a CPU-only torch 2.11.0 next to vLLM 0.26.0 (torch==2.11.0): the fix
    installs the run's one torch (vLLM's pin; PyPI's 2.11.0 is its CUDA 13.0 build) in the
    env's own language, as abi.pins would."""
    b = builder(kind, tmp_path)
    data = dict(GOOD, torch="2.11.0+cpu", cuda=None, available=False, devices=[])
    b.python("3.12", executable=str(fake_python(tmp_path, f"echo '{json.dumps(data)}'")))
    b.dist("torch", "2.11.0+cpu", files={"torch/version.py": "cuda = None\n"})
    b.dist("vllm", "0.26.0", requires=["torch==2.11.0"])
    prefix = finish(kind, b)
    found = fixes_by_id(pytester, prefix, "-m", "gpu", "-k", "test_gpu.py and test_torch_uses_gpu")
    fix = found["gpu.torch-cuda"]
    assert_language(kind, fix, prefix)
    assert fix.startswith("install a CUDA build of torch: ")
    if kind == "pixi":
        assert (
            'add `torch = { version = "==2.11.0", index = "https://download.pytorch.org/whl/cu130" '
            "}` to [pypi-dependencies] in pixi.toml" in fix
        )
    elif kind == "venv":
        # pip keeps an installed 2.11.0+cpu for "torch==2.11.0": the reinstall is forced, from
        # the index of the target's CUDA build (one that served the CPU build would again)
        assert fix.endswith(
            f"`{prefix}/bin/python3 -m pip install --index-url https://download.pytorch.org/whl/"
            'cu130 --force-reinstall "torch==2.11.0"`'
        )


def _flashinfer_died(where: str) -> ProbeResult:
    return ProbeResult(
        "vllm_generate.py",
        data={
            "exception": "ModuleNotFoundError: No module named 'flashinfer'",
            "tokens": None,
            "exception_frame": {"file": f"/x/site-packages/vllm/{where}", "line": 1, "code": ""},
        },
    )


@pytest.mark.parametrize("kind", ["pixi", "venv"])
def test_vllm_load_fixes_in_the_env_language(tmp_path, kind):
    """gpu.vllm-generate's load errors: flashinfer-python at the version vLLM's metadata
    pins, and the sampler's variable, in the env's language."""
    b = builder(kind, tmp_path)
    b.python("3.12")
    b.dist("vllm", "0.26.0", requires=["torch==2.11.0", "flashinfer-python==0.6.1"])
    prefix = finish(kind, b)
    env = read_env(kind, b)
    other = gpu_vllm_load.vllm_generates([_flashinfer_died("attention/x.py")], "m", env=env)
    sampler = gpu_vllm_load.vllm_generates([_flashinfer_died("v1/sample/ops/x.py")], "m", env=env)
    for f in (other, sampler):
        assert_language(kind, f.fix, prefix)
    if kind == "pixi":
        assert (
            'add `flashinfer-python = "==0.6.1"` to [pypi-dependencies] in pixi.toml' in other.fix
        )
        assert (
            'set `VLLM_USE_FLASHINFER_SAMPLER = "0"` in [activation.env] in pixi.toml'
            in sampler.fix
        )
        assert [c.line for c in other.changes] == ['flashinfer-python = "==0.6.1"']
    else:
        assert f'`{prefix}/bin/python3 -m pip install "flashinfer-python==0.6.1"`' in other.fix
        assert "export `VLLM_USE_FLASHINFER_SAMPLER=0`" in sampler.fix
        assert [c.kind for c in sampler.changes] == ["export"]


# -- modelopt.architecture-registered ------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pixi", "pyproject", "venv", "uv"])
def test_architecture_fix_pins_the_last_vllm_in_the_env_language(pytester, tmp_path, kind):
    b = builder(kind, tmp_path)
    install_vllm(b)
    prefix = finish(kind, b, '[pypi-dependencies]\nvllm = "==0.26.0"\n')
    ckpt = ckpts.llama()
    ckpt.config["architectures"] = ["FuyuForCausalLM"]
    folder = ckpt.write(tmp_path / "fuyu")
    found = fixes_by_id(
        pytester, prefix, "-m", "toolchain", "-k", "test_architecture_registered",
        f"--modelopt-checkpoint={folder}", "--cuda-arch=9.0",
    )  # fmt: skip
    fix = found["modelopt.architecture-registered"]
    assert_language(kind, fix, prefix)
    if kind == "pixi":
        assert (
            'in pixi.toml line 7 ([pypi-dependencies]), replace `vllm = "==0.26.0"` with `vllm = "==0.25.0"`'
            in fix
        )
    elif kind == "pyproject":
        assert 'replace `vllm = "==0.26.0"` with `vllm = "==0.25.0"`' in fix
    else:
        assert '"vllm==0.25.0"' in fix


# -- source.torch-api ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pixi", "conda", "venv"])
def test_torch_api_fix_installs_the_tree_pin_in_the_env_language(pytester, tmp_path, kind):
    """F1.12 with the tree's pin still there (requirements/cuda.txt: torch==2.7.1): the fix
    installs that torch, in the env's language."""
    b = builder(kind, tmp_path)
    b.python()
    b.dist(
        "torch",
        "2.6.0",
        files={"torch/include/c10/core/ScalarType.h": SCALAR_TYPES.format(extra="")},
    )
    prefix = finish(kind, b, '[pypi-dependencies]\ntorch = "==2.6.0"\n')
    src = tree(tmp_path, {"quantization/gptq_marlin/gptq_marlin.cu": MARLIN})
    (src / "requirements").mkdir()
    (src / "requirements" / "cuda.txt").write_text("torch==2.7.1\n")
    found = fixes_by_id(pytester, prefix, "-k", "test_torch_api", f"--vllm-source={src}")
    fix = found["source.torch-api"]
    assert_language(kind, fix, prefix)
    assert fix.startswith(
        "install the torch the tree pins (requirements/cuda.txt:1: torch==2.7.1): "
    )
    if kind == "pixi":
        assert 'replace `torch = "==2.6.0"` with `torch = "==2.7.1"`' in fix
    elif kind == "conda":
        assert f'`{prefix}/bin/python3 -m pip install "torch==2.7.1"`' in fix


# -- arch.coverage --------------------------------------------------------------------------------
def test_arch_coverage_fixes_in_the_env_language(tmp_path):
    """A vLLM library with only sm_120a on a GB10 (12.1): rebuild for 12.1 (the variable in
    the env's language) or a wheel built for it; a torch without sm_120 SASS: torch from the
    PyTorch index of a CUDA 12.8 build, as a pip command for a venv."""
    target = parse_arch("12.1")
    images = [FatbinImage("sass", parse_arch("12.0a"), False)]
    for kind in ("pixi", "venv"):
        b = builder(kind, tmp_path / kind)
        b.python()
        b.dist("torch", "2.6.0+cu124")
        prefix = finish(kind, b)
        env = read_env(kind, b)
        (ext,) = coverage_arch.coverage("vllm/_C.abi3.so", images, [target], env=env)
        (torch,) = coverage_arch.coverage("torch/lib/libtorch_cuda.so", images, [target], env=env)
        for f in (ext, torch):
            assert f.outcome == "failed" and f.changes, f
            assert_language(kind, f.fix, prefix)
        if kind == "venv":
            assert "export `TORCH_CUDA_ARCH_LIST=12.1`" in ext.fix
            # torch 2.6 has no CUDA 12.8 build: the oldest release that serves sm_120 is
            # PyPI's 2.8.0 (its cu128 build, tables/torch_archs.py)
            assert torch.fix.endswith(
                f'torch 2.8.0 (cu128): `{prefix}/bin/python3 -m pip install "torch==2.8.0"`'
            )
        else:
            assert 'set `TORCH_CUDA_ARCH_LIST = "12.1"` in [activation.env] in pixi.toml' in ext.fix


# -- xformers.*, cuda.vllm-python, env.conda-meta ---------------------------------------------
@pytest.mark.parametrize("kind", ["pyproject", "conda", "venv"])
def test_xformers_fixes_in_the_env_language(pytester, tmp_path, kind):
    """vLLM 0.10's Qwen2.5-VL vision tower uses xformers on an H100 and none is installed:
    the xformers built for torch 2.7.1, in the env's language (pyproject.toml's
    [tool.pixi.pypi-dependencies], a pip command); xformers.attention's the same."""
    b = builder(kind, tmp_path)
    install_vit_vllm(b, "0.10")
    prefix = finish(kind, b, "[pypi-dependencies]\n")
    found = fixes_by_id(
        pytester, prefix, "-m", "toolchain", "-k", "test_xformers.py", "--cuda-arch=9.0"
    )
    fix = found["xformers.decision"]
    assert_language(kind, fix, prefix)
    if kind == "pyproject":
        assert (
            'add `xformers = "==0.0.31"` to [tool.pixi.pypi-dependencies] in pyproject.toml' in fix
        )
    else:
        assert f'`{prefix}/bin/python3 -m pip install "xformers==0.0.31"`' in fix
    probe = ProbeResult("xformers_check.py", data={"xformers": None, "torch": "2.7.1+cu126"})
    missing = XT.attention(probe, [], "python", env=read_env(kind, b))
    assert missing.outcome == "failed" and missing.changes
    assert "0.0.31" in missing.fix
    assert_language(kind, missing.fix, prefix)


@pytest.mark.parametrize("kind", ["pixi", "venv", "uv"])
def test_editable_build_in_the_env_language(tmp_path, kind):
    """cuda.vllm-python's fix: build with the env's own interpreter, named by path."""
    b = builder(kind, tmp_path)
    b.python()
    prefix = finish(kind, b)
    command = editable_build(read_env(kind, b))
    if kind == "pixi":
        assert command.startswith("`pixi run python -m pip install --no-build-isolation -e .`")
    elif kind == "uv":
        assert command == f"`uv pip install --python {prefix} --no-build-isolation -e .`"
    else:
        assert command == f"`{prefix}/bin/python3 -m pip install --no-build-isolation -e .`"


def test_half_written_conda_prefix_is_recreated_with_conda(pytester, tmp_path):
    b = builder("conda", tmp_path)
    b.python()
    b.broken_record()
    found = fixes_by_id(pytester, finish("conda", b), "-k", "test_env.py")
    fix = found["env.conda-meta"]
    assert "pixi" not in fix and f"conda env update -p {b.prefix}" in fix


def test_xformers_stable_abi_newer_than_torch_follows_the_run_target(tmp_path):
    """xformers' stable-ABI ops target torch 2.10 (cpp_lib.json), the venv holds 2.9.0: where
    the run installs torch 2.11.0 (its one target) the fix is that torch (the text every other
    check gives) and the xformers built for it; without a target, the xformers built for the
    installed torch, or a torch that new. pip commands, never a manifest line."""
    b = builder("venv", tmp_path)
    b.python()
    b.dist("torch", "2.9.0")
    prefix = finish("venv", b)
    env = read_env("venv", b)
    pip = f"{prefix}/bin/python3 -m pip install"
    args = ([], "0.0.35", ["torch>=2.9"], "2.9.0", "2.10.0+cu128", "12.8", True, None)
    ops = ["aoti_torch_get_current_cuda_stream"]
    target = FixTargets(
        torch="2.11.0", torch_installed="2.9.0", cuda="13.0", variant="cu130", pypi_variant="cu130"
    )
    moved = XT.torch_pin(*args, ops, env=env, targets=target)
    assert moved.outcome == "failed"
    assert moved.fix == (
        f'`{pip} "torch==2.11.0"` and `{pip} "xformers==0.0.35"` (built for torch 2.11.0 (cu130))'
    )
    assert [c.specs for c in moved.changes] == [("torch==2.11.0",), ("xformers==0.0.35",)]
    alone = XT.torch_pin(*args, ops, env=env)
    assert alone.fix == (
        f'`{pip} "xformers==0.0.33.post1"` (built for torch 2.9.0); or install torch that new or '
        f'later: `{pip} "torch>=2.10"`'
    )


@pytest.mark.parametrize("kind", ["pixi", "venv"])
def test_vllm_load_fix_through_the_suite_in_the_env_language(pytester, tmp_path, kind):
    """The gpu tier's load (the stand-in vLLM dies with "No module named 'flashinfer'", as
    the H100 saw): gpu.vllm-generate's fix adds flashinfer-python in the env's language."""
    b = builder(kind, tmp_path)
    standin_env(b, vllm={"llama-fp8": {"raise": {"type": "ModuleNotFoundError"}}})
    prefix = finish(kind, b, "[pypi-dependencies]\n")
    fp8, _ = gpu_checkpoints(tmp_path)
    found = fixes_by_id(
        pytester, prefix, "-m", "gpu", "-k", "test_gpu.py and test_vllm_loads_and_generates",
        f"--modelopt-checkpoint={fp8}",
    )  # fmt: skip
    fix = found["gpu.vllm-generate"]
    assert_language(kind, fix, prefix)
    if kind == "pixi":
        assert 'add `flashinfer-python = "*"` to [pypi-dependencies] in pixi.toml' in fix
    else:
        assert f'`{prefix}/bin/python3 -m pip install "flashinfer-python"`' in fix


@pytest.mark.parametrize("kind", ["pixi", "venv"])
def test_device_coverage_fixes_in_the_env_language(tmp_path, kind):
    """gpu.device-coverage: a torch without sm_90 kernels on an H100 (PyPI's 2.11.0 has
    them), a GPU off TORCH_CUDA_ARCH_LIST, a binary that cannot be read."""
    b = builder(kind, tmp_path)
    b.python()
    b.dist("torch", "2.11.0")
    b.dist("vllm", "0.26.0")
    prefix = finish(kind, b)
    env = read_env(kind, b)
    h100 = [("NVIDIA H100", parse_arch("9.0"))]
    sm80 = [FatbinImage("sass", parse_arch("8.0"), False)]
    torch = gpu_device.device_coverage(
        h100, [BinaryImages("torch/lib/libtorch_cuda.so", sm80)], env=env
    )
    arch_list = gpu_device.device_coverage(
        h100, [], [parse_arch("8.0")], "TORCH_CUDA_ARCH_LIST", env=env
    )
    broken = gpu_device.device_coverage(
        h100, [BinaryImages("vllm/_C.abi3.so", None, "not an ELF file")], env=env
    )
    for f in (torch, arch_list, broken):
        assert f.outcome in ("failed", "error") and f.changes, f
        assert_language(kind, f.fix, prefix)
    if kind == "venv":
        pip = f"{prefix}/bin/python3 -m pip install"
        assert torch.fix.endswith(
            f'torch 2.11.0 (cu130): `{pip} --force-reinstall "torch==2.11.0"`'
        )
        assert "export `TORCH_CUDA_ARCH_LIST=8.0 9.0`" in arch_list.fix
        assert f"`{pip} --force-reinstall vllm`" in broken.fix
    else:
        assert 'add `torch = "==2.11.0"` to [pypi-dependencies] in pixi.toml' in torch.fix
        assert (
            'set `TORCH_CUDA_ARCH_LIST = "8.0 9.0"` in [activation.env] in pixi.toml'
            in arch_list.fix
        )
        assert "`pixi reinstall -e default --manifest-path" in broken.fix


def test_build_log_is_judged_in_lock_mode_too(pytester, tmp_path):
    """A Pixi env judged from pixi.lock (not installed): a build log is a file of its own and
    is still judged, its fix written for the workspace (pyproject.toml's [tool.pixi] tables)."""
    manifest = L.seed_004(tmp_path / "ws")
    report = pytester.path / "r.json"
    pytester.runpytest(
        *SUITE, "-k", "test_build_logs", f"--pixi-manifest={manifest}",
        "--vllm-env=rtx5090-vllm", f"--vllm-build-log={LOGS / 'oom_killed.log'}",
        f"--vllm-env-report={report}",
    )  # fmt: skip
    (check,) = json.loads(report.read_text())["checks"]
    assert (check["id"], check["outcome"]) == ("buildlog.oom", "failed")
    assert 'set `MAX_JOBS = "2"` in [tool.pixi.' in check["fix"]
    assert "pyproject.toml" in check["fix"]
