"""Round 11a's three xformers 0.0.35 pairings with torch 2.11.0+cu130 (docs/gpu-runs.md), replayed
on stand-ins built here: the verdicts the suite gives must be the ones
``fixtures/measured/xformers_h100.json`` records as right (``verdicts_now``), i.e. what xformers
did on the H100. What the stand-ins keep of the real ``_C.so`` files: the ``DT_NEEDED``
libcudart (``.so.12`` PyPI, ``.so.13`` built here), no RUNPATH, and torch-side imports from the
stable C ABI only (``aoti_torch_*``; the real one has 70 such, no C++ name). ``xformers.attention``
is the GPU's to say (recorded, not replayed here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fixtures.envs import EnvBuilder
from fixtures.vit_standin import install_vit_vllm

ROOT = Path(__file__).resolve().parents[1]
MEASURED = json.loads((ROOT / "fixtures" / "measured" / "xformers_h100.json").read_text())
PAIRINGS = {p["name"]: p for p in MEASURED["pairings"]}
STATIC = ("abi.cudart", "abi.symbols", "abi.needed", "xformers.torch-pin")  # toolchain tier

# xformers 0.0.35's ops, as far as the checks read them: the stable C ABI and the CUDA runtime
STABLE_OPS = """
extern "C" int aoti_torch_get_current_cuda_stream(void **out);
extern "C" int cudaGetDeviceCount(int *);
extern "C" int xf_ops(void) { void *s; int n = 0; cudaGetDeviceCount(&n);
                              return aoti_torch_get_current_cuda_stream(&s) + n; }
"""
# an xformers built the old way (<= 0.0.34): it imports torch's C++ API
CXX_OPS = """
#include <string>
namespace c10 { int check(const std::string &msg); }
extern "C" int cudaGetDeviceCount(int *);
extern "C" int xf_ops(void) { int n = 0; cudaGetDeviceCount(&n); return c10::check("x") + n; }
"""

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")


def pairing_env(root: Path, name: str, ops: str = STABLE_OPS) -> EnvBuilder:
    """vLLM 0.10.1.1's ViT files (XFORMERS on sm 9.0 without flash-attn), torch 2.11.0 (CUDA
    13.0, its libcudart.so.13 in torch/lib as PyPI's loads it), and xformers 0.0.35 as the
    pairing ``name`` had it."""
    from fixtures.elf import cxx_extension, fake_cudart, fake_torch

    pairing = PAIRINGS[name]
    build = MEASURED["builds"][pairing["build"]]
    b = EnvBuilder(root)
    install_vit_vllm(b, "0.10", torch="2.11.0")
    sp = b.site_packages
    (sp / "torch").mkdir(exist_ok=True)
    (sp / "torch" / "version.py").write_text("cuda = '13.0'\n")
    lib = fake_torch(sp / "torch" / "lib")
    fake_cudart(lib, 13)
    major = int(build["needed_cudart"].rsplit(".", 1)[1])
    stub = fake_cudart(root / "stubs", major)
    b.dist(
        "xformers",
        "0.0.35",
        requires=[build.get("requires_torch", "torch>=2.10"), "numpy"],
        files={"xformers/cpp_lib.json": json.dumps({"version": build["cpp_lib_json"]})},
    )
    cxx_extension(sp / "xformers" / "_C.so", ops, [stub])
    if pairing["LD_LIBRARY_PATH"]:  # nvidia-cuda-runtime-cu12's lib dir, on the env's path
        runtime = fake_cudart(sp / "nvidia" / "cuda_runtime" / "lib", 12)
        b.file(
            "etc/conda/env_vars.d/cu12.json",
            json.dumps({"LD_LIBRARY_PATH": str(runtime.parent)}),
        )
    return b


def verdicts(pytester: pytest.Pytester, b: EnvBuilder) -> dict[str, dict]:
    """The static checks on ``xformers/_C.so`` (and the pin), as the JSON report gives them."""
    report = pytester.path / "report.json"
    pytester.runpytest(
        "--vllm-conformance", "-p", "no:randomly", "-m", "toolchain", "--cuda-arch", "9.0",
        "-k", "test_xformers_torch_pin or test_cudart or test_symbols or test_needed_libraries",
        "--vllm-env", str(b.prefix), "--vllm-env-report", str(report),
    )  # fmt: skip
    out = {}
    for c in json.loads(report.read_text())["checks"]:
        if c["id"] == "xformers.torch-pin" or "xformers/_C.so" in c.get("summary", ""):
            out[c["id"]] = c
    return out


@needs_gxx
@pytest.mark.parametrize("name", sorted(PAIRINGS))
def test_pairing_verdicts_are_what_the_h100_did(pytester, tmp_path, name):
    got = verdicts(pytester, pairing_env(tmp_path / "ws", name))
    want = {k: v for k, v in PAIRINGS[name]["verdicts_now"].items() if k in STATIC}
    assert {k: got[k]["outcome"] for k in want} == want, {k: got[k]["summary"] for k in got}


@needs_gxx
def test_pypi_alone_names_the_runtime_fix_that_worked(pytester, tmp_path):
    """Nothing provides libcudart.so.12: abi.cudart fails, and its fix holds what made the H100
    load it (nvidia-cuda-runtime-cu12's lib dir on LD_LIBRARY_PATH) beside one-CUDA builds."""
    b = pairing_env(tmp_path / "ws", "pypi")
    b.manifest()
    cudart = verdicts(pytester, b)["abi.cudart"]
    assert "nothing in the env provides libcudart.so.12" in cudart["summary"]
    assert '`nvidia-cuda-runtime-cu12 = "*"`' in cudart["fix"], cudart["fix"]
    assert (
        'set `LD_LIBRARY_PATH = "${CONDA_PREFIX}/lib/python3.12/site-packages/nvidia/'
        'cuda_runtime/lib:$LD_LIBRARY_PATH"`' in cudart["fix"]
    ), cudart["fix"]


@needs_gxx
def test_runtime_held_but_not_on_the_path_says_only_the_path(pytester, tmp_path):
    """nvidia-cuda-runtime-cu12 installed, LD_LIBRARY_PATH not set: still fails (the loader
    does not search site-packages/nvidia), and the fix is the one line that was missing."""
    b = pairing_env(tmp_path / "ws", "pypi")
    held = b.site_packages / "nvidia" / "cuda_runtime" / "lib"
    from fixtures.elf import fake_cudart

    fake_cudart(held, 12)
    cudart = verdicts(pytester, b)["abi.cudart"]
    assert cudart["outcome"] == "failed"
    assert f"put {held} (held, but not where the loader looks) on the path" in cudart["fix"]
    assert "nvidia-cuda-runtime-cu12" not in cudart["fix"]


@needs_gxx
def test_cxx_abi_build_for_another_torch_is_still_pinned(pytester, tmp_path):
    """The stable ABI is what frees 0.0.35: the same pairing with ops that import torch's C++
    API (as xformers <= 0.0.34 did) is held to cpp_lib.json's build."""
    got = verdicts(pytester, pairing_env(tmp_path / "ws", "pypi-cu12", ops=CXX_OPS))
    assert got["xformers.torch-pin"]["outcome"] == "failed", got["xformers.torch-pin"]
    assert "built for torch 2.10.0+cu128" in got["xformers.torch-pin"]["summary"]
