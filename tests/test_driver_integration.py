"""The driver layer against real parts (opt-in, --run-integration): PyPI's torch 2.11.0+cu130 and
vLLM 0.26.0 judged for the device's driver (580.159.04, CUDA 13.0) and for an R550 node; PTX from
PyPI's nvcc 13.5 (ISA 9.5), which 580.x refuses (measured on the H100: 222); the PTX ISA reader
against ``cuobjdump -ptx`` on real extensions, compressed with zstd (CUDA 13) and LZ4 (CUDA 12)."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from fixtures import downloads
from fixtures.ptx import nvcc_135, ptx_only_so, ptx_text
from fixtures.wheels import members
from pytest_vllm_env.readers import fatbin_ptx

pytestmark = pytest.mark.integration

TORCH_PART = re.compile(
    r"^torch/(version\.py|lib/lib(c10|c10_cuda|torch|torch_cpu|torch_cuda)\.so)$"
)
SUITE = (
    "--vllm-conformance",
    "-p",
    "no:randomly",
    "-p",
    "no:cacheprovider",
    "-k",
    "test_driver.py",
)


# Session fixtures: extracted before pytester moves HOME (and with it the download cache).
@pytest.fixture(scope="session")
def torch211() -> Path:
    return members(downloads.wheel("torch==2.11.0"), lambda n: bool(TORCH_PART.match(n)))


@pytest.fixture(scope="session")
def vllm026() -> Path:
    """Every compiled extension of vLLM 0.26.0 (FA2, FA3, _C, _moe_C, _flashmla_C, DeepGEMM)."""
    return members(
        downloads.wheel("vllm==0.26.0"), lambda n: n.startswith("vllm/") and n.endswith(".so")
    )


@pytest.fixture(scope="session")
def cudart13() -> Path:
    return members(
        downloads.wheel("nvidia-cuda-runtime==13.0.96"),
        lambda n: n.endswith("libcudart.so.13") or n.endswith("METADATA"),
    )


@pytest.fixture(scope="session")
def nvcc135() -> Path:
    try:
        return nvcc_135()
    except Exception as exc:  # no network: say so instead of failing the suite
        pytest.skip(f"cannot assemble nvcc 13.5 from PyPI: {exc}")


@pytest.fixture(scope="session")
def cuobjdump() -> Path:
    root = downloads.unpacked("nvidia-cuda-cuobjdump==13.5.37")
    return next(root.rglob("bin/cuobjdump"))


def real_env(b, torch_root: Path, vllm_root: Path, cudart: Path) -> Path:
    b.python("3.12")
    b.dist("torch", "2.11.0+cu130")
    b.dist("vllm", "0.26.0", requires=["torch==2.11.0"])
    b.dist("nvidia-cuda-runtime", "13.0.96")
    for root in (torch_root, vllm_root, cudart):
        for f in root.rglob("*"):
            dest = b.site_packages / f.relative_to(root)
            if f.is_file() and ".dist-info" not in str(dest) and not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.symlink_to(f)
    return b.prefix


def findings(pytester, prefix: Path, *args: str) -> list[dict]:
    import json

    report = pytester.path / "report.json"
    pytester.runpytest(*SUITE, f"--vllm-env={prefix}", f"--vllm-env-report={report}", *args)
    return json.loads(report.read_text())["checks"]


def test_real_torch_211_vllm_026_on_the_devices_driver_has_no_failure(
    pytester, env_builder, torch211, vllm026, cudart13
):
    """The issue's acceptance case: torch 2.11.0+cu130 / vLLM 0.26.0, --cuda-arch=9.0,
    --cuda-driver=580.159.04: no failure from this layer (the device runs it)."""
    prefix = real_env(env_builder, torch211, vllm026, cudart13)
    checks = findings(pytester, prefix, "--cuda-arch=9.0", "--cuda-driver=580.159.04")
    bad = [c for c in checks if c["outcome"] in ("failed", "error")]
    assert not bad, bad
    ids = {c["id"] for c in checks if c["outcome"] in ("passed", "warning")}
    # vllm.flash-attn-library (round 13): the real wheel holds _vllm_fa3_C, which 9.0 runs
    assert ids == {"driver.version", "driver.cuda-runtime", "driver.ptx-jit",
                   "driver.compat-libcuda", "vllm.flash-attn-library"}, checks  # fmt: skip
    fa = next(c for c in checks if c["id"] == "vllm.flash-attn-library")
    assert fa["outcome"] == "passed", fa
    runtime = [c["summary"] for c in checks if c["id"] == "driver.cuda-runtime"]
    assert any(
        s.startswith("torch 2.11.0+cu130: CUDA 13.0 runs on driver 580.159.04") for s in runtime
    )


def test_real_torch_211_vllm_026_on_an_r550_node_fails(pytester, env_builder, torch211, vllm026,
                                                      cudart13):  # fmt: skip
    """The same env for a node on R550 (CUDA 12.4): cudart 13 refuses to start, and vLLM's
    PTX-only modules for sm_90 are ISA 9.0, which R550 cannot JIT."""
    prefix = real_env(env_builder, torch211, vllm026, cudart13)
    checks = findings(pytester, prefix, "--cuda-arch=9.0", "--cuda-driver=550.144.03")
    failed = {c["id"] for c in checks if c["outcome"] == "failed"}
    assert failed == {"driver.cuda-runtime", "driver.ptx-jit"}, checks


def test_nvcc_135_ptx_is_isa_95_and_fails_on_driver_580(pytester, env_builder, nvcc135, tmp_path):
    """nvcc 13.5 writes PTX ISA 9.5 (its `-ptx` first `.version` line and the fatbin header
    agree); on 580.159.04 (CUDA 13.0, ISA 9.0) it is refused: measured 222 on the H100."""
    assert re.search(r"^\.version 9\.5$", ptx_text(nvcc135), re.M)
    lib = ptx_only_so(tmp_path / "ptx95.so", compiler=nvcc135, cudart="static")
    [[image]] = [c.images for c in fatbin_ptx.read_containers(lib) if c.images]
    assert (image.image.name, image.isa, image.isa_from) == ("compute_90", (9, 5), "header")
    env_builder.python("3.12")
    env_builder.dist("vllm", "0.26.0", files={"vllm/_C.abi3.so": lib.read_bytes()})
    checks = findings(pytester, env_builder.prefix, "--cuda-arch=9.0", "--cuda-driver=580.159.04",
                      "-k", "ptx_jit")  # fmt: skip
    [check] = checks
    assert check["outcome"] == "failed", check
    assert "JITs PTX up to ISA 9.0: CUDA_ERROR_UNSUPPORTED_PTX_VERSION" in check["summary"]
    assert "(ISA 9.5 is CUDA 13.5's)" in check["summary"]
    assert check["fix"].startswith(
        "upgrade the GPU nodes' NVIDIA driver to one made for CUDA >= 13.5"
    )


def _cuobjdump_isas(cuobjdump: Path, lib: Path) -> Counter:
    out = subprocess.run([str(cuobjdump), "-ptx", str(lib)], capture_output=True, text=True,
                         timeout=600).stdout  # fmt: skip
    return Counter(re.findall(r"^\.version (\d+\.\d+)$", out, re.M))


@pytest.mark.parametrize(
    "wheel, member",
    [
        ("vllm==0.26.0", "vllm/_moe_C_stable_libtorch.abi3.so"),  # zstd, ISA 9.0
        ("xformers==0.0.30", "xformers/_C.so"),  # CUDA 12 LZ4, ISA 8.5
    ],
)
def test_isa_reader_agrees_with_cuobjdump(cuobjdump, wheel, member):
    """Every PTX image's ISA as read from its entry header is the `.version` line cuobjdump
    prints after decompressing it."""
    root = members(downloads.wheel(wheel), lambda n: n == member)
    lib = root / member
    ours = Counter(
        f"{i.isa[0]}.{i.isa[1]}"
        for c in fatbin_ptx.read_containers(lib)
        for i in c.images
        if i.image.kind == "ptx"
    )
    assert ours and ours == _cuobjdump_isas(cuobjdump, lib)
