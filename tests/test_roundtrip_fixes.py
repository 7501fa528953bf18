"""Issue 21's round trip through every path of :mod:`fixtures.apply`, and for the fixes made
language-aware: a conda prefix's ``conda install -p`` and ``conda env config vars set`` (its
``conda-meta/state``), a venv's ``bin/activate`` export, a Pixi manifest's ``[activation.env]``
line with the ``pixi install`` that follows; ``abi.needed``'s runtime-wheel way (the wheel at
the version the metadata asks, its lib dir on the loader's path), ``source.torch-api``'s torch
pin, ``modelopt.architecture-registered``'s vLLM pin and ``xformers.torch-pin``'s fix that
follows the run's torch. Each fix is applied to a copy of the env and the suite run again on
the copy: the verdict turns green, and so does the real thing the check models (the loader
finds the library, the torch headers define the type, the registry lists the model).

``gpu.torch-cuda``: the probe runs the env's (stand-in) torch, which the fix replaces.

Not here, and why: ``buildlog.*`` judges a log (applying a fix changes the env, not the log
of a build that already failed); ``arch.coverage``'s rebuild needs a CUDA build.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures import checkpoints as ckpts
from fixtures.apply import Applier, Catalogue, copy_tree, relocate, write_conda, write_dist
from fixtures.elf import fake_cudart, fake_soname_lib
from fixtures.envs import EnvBuilder
from fixtures.gpu_standins import TORCH, standin_env
from fixtures.vit_standin import install_vit_vllm
from fixtures.vllm_standin import install_vllm, registry_text
from pytest_vllm_env.checks import abi_cudart
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.findings import Change, changes_of
from pytest_vllm_env.readers.vllm_source import REGISTRY_PY
from tests.test_abi import conda_env, make_env, parts, venv_env  # noqa: F401 (parts: a fixture)
from tests.test_roundtrip import Built, key, round_trip, run
from tests.test_source_build import MARLIN, SCALAR_TYPES, tree

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")
RUNTIME_PIN = "nvidia-cuda-runtime-cu12==12.8.90"


def by_key(report: dict) -> dict[tuple[str, str], dict]:
    return {key(c): c for c in report["checks"]}


def apply_to_copy(
    src: Path, prefix: Path, manifest: Path | None, changes: list[Change], catalogue: Catalogue
) -> tuple[Path, list[str]]:
    """``changes`` (written for the env at ``prefix`` under ``src``) applied to a fresh copy
    of ``src``: the copy's prefix, and what was done."""
    dst = src.parent / f"{src.name}-copy"
    copy_tree(src, dst)
    moved = Path(str(prefix).replace(str(src), str(dst)))
    moved_manifest = Path(str(manifest).replace(str(src), str(dst))) if manifest else None
    done = Applier(moved, catalogue, moved_manifest).apply(relocate(changes, src, dst))
    return moved, done


# -- abi.needed: the CUDA 12 runtime beside a CUDA 13 torch -----------------------------------
@pytest.fixture(scope="module")
def cudart12(tmp_path_factory) -> bytes:
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    return fake_cudart(tmp_path_factory.mktemp("cudart12"), 12).read_bytes()


def runtime_catalogue(cudart12: bytes) -> Catalogue:
    """PyPI's nvidia-cuda-runtime-cu12: libcudart.so.12 in nvidia/cuda_runtime/lib (measured,
    12.8.90, round 11a)."""

    def runtime(prefix: Path, version: str, options: tuple[str, ...]) -> str:
        lib = {"nvidia/cuda_runtime/lib/libcudart.so.12": cudart12}
        write_dist(prefix, "nvidia-cuda-runtime-cu12", version, files=lib)
        return version

    # unpinned, pip takes the newest 12.x (nothing in the env asks for another)
    releases = {"12.8.90": [], "12.9.79": []}
    return Catalogue(
        pypi={"nvidia-cuda-runtime-cu12": runtime},
        index={"nvidia-cuda-runtime-cu12": releases},
    )


# dlopen as `import vllm._C` would after `import torch`: torch's libraries (and the CUDA 13
# runtime they need, in the env's lib/) loaded first and global, then the extension
LOAD = """
import ctypes, glob, sys
prefix, ext = sys.argv[1], sys.argv[2]
site = glob.glob(prefix + "/lib/python3*/site-packages")[0]
libs = sorted(glob.glob(prefix + "/lib/libcudart.so.*"))
for lib in libs + sorted(glob.glob(site + "/torch/lib/*.so")):
    ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
ctypes.CDLL(ext)
print("loaded")
"""


def real_load(env: PixiEnv) -> subprocess.CompletedProcess[str]:
    """The real dynamic loader on the env's vLLM ``_C``, in the environment the env's
    activation gives (its ``LD_LIBRARY_PATH``: pixi's [activation.env], conda's env vars, a
    venv's ``bin/activate``)."""
    ext = next(env.prefix.glob("lib/python3*/site-packages/vllm/_C.abi3.so"))
    return subprocess.run(
        [sys.executable, "-c", LOAD, str(env.prefix), str(ext)],
        env=env.environ(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def pin_runtime_in_vllm(prefix: Path) -> None:
    """The owning package asks for the runtime in its metadata (the pin the fix must take)."""
    meta = next(prefix.glob("lib/python3.*/site-packages/vllm-*.dist-info")) / "METADATA"
    meta.write_text(meta.read_text() + f"Requires-Dist: {RUNTIME_PIN}\n")


@needs_gxx
@pytest.mark.parametrize("kind", ["venv", "uv", "conda", "pixi"])
def test_cuda_runtime_wheel_way_turns_abi_needed_green(
    pytester,
    tmp_path,
    parts,  # noqa: F811 (the fixture imported from test_abi)
    cudart12,
    kind,
):
    """vLLM's _C built for CUDA 12 beside torch 2.11.0+cu130: "libcudart.so.12: cannot open
    shared object file". abi.needed names two ways; the second is the runtime wheel at the
    version vLLM's metadata asks and its lib dir on LD_LIBRARY_PATH, in the env's language (a
    venv: pip/uv and bin/activate; a conda prefix: pip and `conda env config vars set`; a
    Pixi env: [pypi-dependencies] and [activation.env], then `pixi install`). Applied to a
    copy, the loader finds libcudart.so.12 and abi.needed passes (abi.cudart: two runtimes
    in one process, a warning: it works, measured in round 11a); and the real loader, which
    refused the extension before, loads it in the copy as the env activates."""
    src = tmp_path / "original"
    manifest = None
    if kind == "pixi":
        builder = EnvBuilder(src)
        prefix = make_env(builder, parts, ext="ext-cuda12")
        manifest = builder.manifest('[pypi-dependencies]\ntorch = "==2.11.0"\nvllm = "==0.26.0"\n')
    elif kind == "conda":
        prefix = conda_env(src, parts, ext="ext-cuda12")
    else:
        prefix = venv_env(src, parts, uv=kind == "uv", ext="ext-cuda12")
    pin_runtime_in_vllm(prefix)
    subject = ("abi.needed", "vllm/_C.abi3.so")
    before = by_key(run(pytester, prefix, "test_abi"))[subject]
    assert before["outcome"] == "failed"
    env = PixiEnv.read(prefix, name="default" if manifest else None, manifest=manifest)
    sp = env.site_packages[0]
    way = abi_cudart.provide_runtime(env, "12", (), sp, "vllm")
    assert f"; or keep both and {way}" in before["fix"]
    assert f"{RUNTIME_PIN}, as vllm 0.26.0's Requires-Dist asks" in way
    assert "LD_LIBRARY_PATH" in way
    kinds = [c.kind for c in changes_of(way)]
    assert (
        kinds
        == {
            "venv": ["pip", "export"],
            "uv": ["uv", "export"],
            "conda": ["pip", "conda-var"],
            "pixi": ["manifest-line", "manifest-line"],
        }[kind]
    )
    # the real loader, as the env activates: "libcudart.so.12: cannot open shared object file"
    assert "libcudart.so.12" in real_load(env).stderr
    catalogue = runtime_catalogue(cudart12)
    moved, done = apply_to_copy(src, prefix, manifest, list(changes_of(way)), catalogue)
    assert "pip: nvidia-cuda-runtime-cu12==12.8.90" in done
    after = by_key(run(pytester, moved, "test_abi"))
    assert after[subject]["outcome"] == "passed"
    assert after[("abi.cudart", "vllm/_C.abi3.so")]["outcome"] == "warning"
    # and the real loader, in the copy activated as the fix set it, loads the extension
    moved_manifest = Path(str(manifest).replace(str(src), f"{src}-copy")) if manifest else None
    copy = PixiEnv.read(moved, name="default" if manifest else None, manifest=moved_manifest)
    loaded = real_load(copy)
    assert loaded.stdout.strip() == "loaded", loaded.stderr


@needs_gxx
def test_a_venv_missing_its_cuda_runtime_gets_the_wheel_and_the_path(
    pytester,
    tmp_path,
    parts,  # noqa: F811 (the fixture imported from test_abi)
    cudart12,
):
    """A venv whose vLLM _C needs libcudart.so.12 and whose torch is a CPU build: nothing
    provides it. The fix (data, applied by the round trip) is the runtime wheel and its lib
    dir on the loader's path, never a manifest line; abi.needed turns green."""

    def build(root: Path) -> Built:
        prefix = venv_env(root, parts, ext="ext-cuda12", torch="2.11.0+cpu", torch_cuda=None,
                          libs="torch-cpu")  # fmt: skip
        return prefix, None

    after, _ = round_trip(pytester, tmp_path, build, runtime_catalogue(cudart12), "test_needed")
    assert after == {("abi.needed", "vllm/_C.abi3.so"): "passed"}


# -- conda install -p: a conda prefix missing libcublas ----------------------------------------
@needs_gxx
def test_conda_install_fix_turns_green(pytester, tmp_path, parts):  # noqa: F811
    """vLLM's _C needs libcublas.so.13 in a conda prefix: `conda install -p PREFIX
    "libcublas" "cuda-version=13.0.*"` (conda-forge's libcublas lays it out in PREFIX/lib,
    where the loader looks); applied, abi.needed passes."""
    cublas = fake_soname_lib(
        tmp_path / "cb",
        "libcublas.so.13",
        'extern "C" int cublasCreate_v2(void **h) { return 0; }\n',
    ).read_bytes()

    def libcublas(prefix: Path, spec: str, options: tuple[str, ...]) -> str:
        (prefix / "lib" / "libcublas.so.13").write_bytes(cublas)
        write_conda(prefix, "libcublas", "13.0.0.19", ["lib/libcublas.so.13"])
        return "13.0.0.19"

    def build(root: Path) -> Built:
        return conda_env(root, parts, ext="ext-cublas"), None

    catalogue = Catalogue(conda={"libcublas": libcublas})
    after, advice = round_trip(pytester, tmp_path, build, catalogue, "test_needed")
    assert after == {("abi.needed", "vllm/_C.abi3.so"): "passed"}
    assert advice == []


# -- source.torch-api: the tree's torch pin --------------------------------------------------------
def headers_catalogue() -> Catalogue:
    """torch 2.7.1 from PyPI: its c10/core/ScalarType.h defines Float8_e8m0fnu."""

    def torch(prefix: Path, version: str, options: tuple[str, ...]) -> str:
        header = SCALAR_TYPES.format(extra="  _(c10::Float8_e8m0fnu, Float8_e8m0fnu) /* 44 */")
        write_dist(prefix, "torch", version, files={"torch/include/c10/core/ScalarType.h": header})
        return version

    return Catalogue(pypi={"torch": torch})


@pytest.mark.parametrize("kind", ["pixi", "venv"])
def test_torch_api_fix_turns_green(pytester, tmp_path, kind):
    src = tree(tmp_path, {"quantization/gptq_marlin/gptq_marlin.cu": MARLIN})
    (src / "requirements").mkdir()
    (src / "requirements" / "cuda.txt").write_text("torch==2.7.1\n")

    def build(root: Path) -> Built:
        b = EnvBuilder(root) if kind == "pixi" else EnvBuilder(root, "venv", bare=True)
        b.python()
        header = SCALAR_TYPES.format(extra="")
        b.dist("torch", "2.6.0", files={"torch/include/c10/core/ScalarType.h": header})
        if kind == "pixi":
            return b.prefix, b.manifest('[pypi-dependencies]\ntorch = "==2.6.0"\n')
        shutil.rmtree(b.prefix / "conda-meta")
        (b.prefix / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.12.3\n")
        return b.prefix, None

    after, advice = round_trip(
        pytester, tmp_path, build, headers_catalogue(), "test_torch_api", (f"--vllm-source={src}",)
    )
    assert after == {("source.torch-api", ""): "passed"}
    assert advice == []


# -- modelopt.architecture-registered: the last vLLM that supports the model -------------------
@pytest.mark.parametrize("kind", ["pixi", "venv"])
def test_architecture_fix_turns_green(pytester, tmp_path, kind):
    ckpt = ckpts.llama()
    ckpt.config["architectures"] = ["FuyuForCausalLM"]
    folder = ckpt.write(tmp_path / "fuyu")

    def vllm(prefix: Path, version: str, options: tuple[str, ...]) -> str:
        registry = registry_text(["LlamaForCausalLM", "FuyuForCausalLM"], [], {})
        write_dist(prefix, "vllm", version, files={REGISTRY_PY: registry})
        return version

    def build(root: Path) -> Built:
        b = EnvBuilder(root) if kind == "pixi" else EnvBuilder(root, "venv", bare=True)
        install_vllm(b)
        if kind == "pixi":
            return b.prefix, b.manifest('[pypi-dependencies]\nvllm = "==0.26.0"\n')
        shutil.rmtree(b.prefix / "conda-meta")
        (b.prefix / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.12.3\n")
        return b.prefix, None

    after, _ = round_trip(
        pytester, tmp_path, build, Catalogue(pypi={"vllm": vllm}), "test_architecture_registered",
        ("-m", "toolchain", f"--modelopt-checkpoint={folder}", "--cuda-arch=9.0"),
    )  # fmt: skip
    assert after == {("modelopt.architecture-registered", ""): "passed"}


# -- xformers.torch-pin and abi.pins: one torch ---------------------------------------------------
def test_xformers_build_fix_and_abi_pins_turn_green_together(pytester, tmp_path):
    """xformers' ops built for 2.10.0+cu128 beside torch 2.11.0, under a vLLM 0.10.1.1 that
    pins torch 2.7.1: each fix, applied alone, installs the same torch 2.7.1 (and xformers'
    the xformers built for it), so applying xformers.torch-pin's also turns abi.pins green."""

    def torch(prefix: Path, version: str, options: tuple[str, ...]) -> str:
        write_dist(prefix, "torch", version, files={"torch/version.py": "cuda = '12.6'\n"})
        return version

    def xformers(prefix: Path, version: str, options: tuple[str, ...]) -> str:
        cpp = {"version": {"cuda": 1206, "torch": "2.7.1+cu126", "python": "3.12.0"}}
        write_dist(prefix, "xformers", version, ["numpy", "torch==2.7.1"],
                   files={"xformers/cpp_lib.json": json.dumps(cpp)})  # fmt: skip
        return version

    def build(root: Path) -> Built:
        b = EnvBuilder(root)
        install_vit_vllm(b, "0.10", torch="2.11.0")
        (b.site_packages / "torch").mkdir(exist_ok=True)
        (b.site_packages / "torch" / "version.py").write_text("cuda = '13.0'\n")
        cpp = {"version": {"cuda": 1208, "torch": "2.10.0+cu128", "python": "3.10.19"}}
        b.dist("xformers", "0.0.35", requires=["torch>=2.10", "numpy"],
               files={"xformers/cpp_lib.json": json.dumps(cpp)})  # fmt: skip
        return b.prefix, b.manifest('[pypi-dependencies]\ntorch = "==2.11.0"\n')

    catalogue = Catalogue(pypi={"torch": torch, "xformers": xformers})
    after, _ = round_trip(
        pytester, tmp_path, build, catalogue, "test_xformers_torch_pin or test_pins",
        ("--cuda-arch=9.0",),
    )  # fmt: skip
    assert set(after.values()) == {"passed"}
    assert {k for k, _ in after} == {"xformers.torch-pin", "abi.pins"}
    # the copy xformers.torch-pin's fix was applied to (it holds the xformers built for
    # 2.7.1): abi.pins is green there too
    (copy,) = [
        p
        for p in tmp_path.glob("copy*/.pixi/envs/default")
        if list(p.glob("lib/python3.*/site-packages/xformers-0.0.31.dist-info"))
    ]
    again = run(pytester, copy, "test_xformers_torch_pin or test_pins", "--cuda-arch=9.0")
    assert {c["id"]: c["outcome"] for c in again["checks"]} == {
        "xformers.torch-pin": "passed",
        "abi.pins": "passed",
    }


# -- gpu.torch-cuda: a CPU-only torch under a vLLM that pins torch 2.11.0 ---------------------
@pytest.mark.parametrize("kind", ["pixi", "venv"])
def test_cpu_torch_fix_turns_gpu_torch_cuda_green(pytester, tmp_path, kind):
    """The stand-in torch (fixtures/gpu_standins.py: what the probe imports) is a CPU build;
    the fix installs torch 2.11.0's cu130 build from its index, which the catalogue lays out
    as a stand-in that sees the H100: the probe, run again on the copy, passes."""

    def torch(prefix: Path, version: str, options: tuple[str, ...]) -> str:
        assert options and "whl/cu130" in options[0], options  # the CUDA build's index
        write_dist(prefix, "torch", version, files={
            "torch/__init__.py": TORCH,
            "torch/_standin.json": json.dumps({"devices": [["NVIDIA H100 80GB HBM3", [9, 0]]]}),
        })  # fmt: skip
        return version

    def build(root: Path) -> Built:
        b = EnvBuilder(root) if kind == "pixi" else EnvBuilder(root, "venv", bare=True)
        standin_env(b, torch={"version": "2.11.0+cpu", "cuda": None, "devices": []})
        b.dist("vllm", "0.26.0", requires=["torch==2.11.0"])
        if kind == "pixi":
            return b.prefix, b.manifest("[pypi-dependencies]\n")
        shutil.rmtree(b.prefix / "conda-meta")
        (b.prefix / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.12.3\n")
        return b.prefix, None

    after, advice = round_trip(
        pytester, tmp_path, build, Catalogue(pypi={"torch": torch}),
        "test_gpu.py and test_torch_uses_gpu", ("-m", "gpu"),
    )  # fmt: skip
    assert after == {("gpu.torch-cuda", ""): "passed"}
    assert advice == []
