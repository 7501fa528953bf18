"""Real wheels (opt-in, --run-integration): vLLM 0.26.0 against torch 2.11.0 (its pin, CUDA 13)
passes; against torch 2.13.0 (PyPI's default, +cu130 here) the FA2 extension, built on torch's
unstable C++ ABI, fails naming the missing symbols while ``_C_stable_libtorch`` (stable ABI)
still resolves: verdicts per extension."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fixtures import downloads
from fixtures.text import lit
from fixtures.wheels import members

pytestmark = pytest.mark.integration

TORCH_PART = re.compile(
    r"^torch/(version\.py|lib/lib(c10|c10_cuda|torch|torch_cpu|torch_cuda)\.so)$"
)
VLLM_PART = re.compile(
    r"^vllm/(_C_stable_libtorch|_moe_C_stable_libtorch|vllm_flash_attn/_vllm_fa2_C)"
)
CUDART = "libcudart.so.13"


def wanted(name: str) -> bool:
    """The wheel members this env is made of. The download cache is shared: other tests extract
    other members of the same wheels into it (vLLM 0.26.0's deep_gemm, FlashMLA...), and an env
    made of everything there judged extensions these tests never asked for."""
    vllm = bool(VLLM_PART.match(name)) and name.endswith(".so")
    return bool(TORCH_PART.match(name)) or vllm or name.endswith(CUDART)


def torch_parts(version: str) -> Path:
    return members(downloads.wheel(f"torch=={version}"), lambda n: bool(TORCH_PART.match(n)))


# Session fixtures: extracted before pytester moves HOME (and with it the download cache).
@pytest.fixture(scope="session")
def torch_roots() -> dict[str, Path]:
    return {v: torch_parts(v) for v in ("2.11.0", "2.13.0")}


@pytest.fixture(scope="session")
def cudart_parts() -> Path:
    """PyPI's CUDA 13 runtime (torch 2.11's cuda-toolkit[cudart]): nvidia/cu13/lib, where
    torch's RPATH ($ORIGIN/../../nvidia/cu13/lib) finds libcudart.so.13 for every extension."""
    return members(downloads.wheel("nvidia-cuda-runtime==13.0.96"), wanted)


@pytest.fixture(scope="session")
def vllm_parts() -> Path:
    return members(downloads.wheel("vllm==0.26.0"), wanted)


def make_env(
    env_builder, torch_root: Path, torch_version: str, vllm_root: Path, *extra: Path
) -> Path:
    env_builder.python("3.12")
    env_builder.dist("torch", torch_version)
    env_builder.dist("vllm", "0.26.0", requires=["torch==2.11.0"])
    sp = env_builder.site_packages
    for root in (torch_root, vllm_root, *extra):
        for f in root.rglob("*"):
            if f.is_file() and wanted(f.relative_to(root).as_posix()):
                dest = sp / f.relative_to(root)
                if dest.exists():  # the dist-info written above wins over a cached one
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.symlink_to(f)
    return env_builder.prefix


def run(pytester, prefix):
    """The abi and arch checks, less abi.needed: this env holds only the torch libraries the
    symbols come from (not libtorch_nvshmem.so, cuBLAS, cuDNN, NCCL...), so the load closure
    fails here by construction (tests/test_fix_entries.py judges that case)."""
    return pytester.runpytest(
        "--vllm-conformance", "-k", "(test_abi.py or test_arch.py) and not test_needed_libraries",
        "--vllm-env", str(prefix),
        "--cuda-arch", "12.0", "--cuda-arch", "9.0", "-rs",
    )  # fmt: skip


def test_vllm_026_loads_against_torch_211(
    pytester, env_builder, vllm_parts, torch_roots, cudart_parts
):
    prefix = make_env(env_builder, torch_roots["2.11.0"], "2.11.0", vllm_parts, cudart_parts)
    result = run(pytester, prefix)
    # abi.undefined is skipped: torch's cuBLAS/cuDNN/NCCL wheels are not in this env;
    # abi.source-torch too: nothing here builds vLLM (build_scope)
    result.assert_outcomes(passed=5, skipped=2)


def test_vllm_026_against_torch_213_names_missing_symbols(
    pytester, env_builder, vllm_parts, torch_roots, cudart_parts
):
    prefix = make_env(env_builder, torch_roots["2.13.0"], "2.13.0", vllm_parts, cudart_parts)
    result = run(pytester, prefix)
    result.assert_outcomes(failed=2, passed=3, skipped=2)  # pins and symbols
    result.stdout.fnmatch_lines(
        [
            lit("*[abi.pins] FAILED: vllm requires torch==2.11.0 but the env has torch 2.13.0*"),
            lit(
                "*[abi.symbols] FAILED: vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so: resolved 81 of 83"
                " torch symbols; 2 missing (likely cause: built for torch 2.11.0 (vllm's "
                "Requires-Dist), env has 2.13.0)*"
            ),
            "*missing: c10::impl::cow::materialize_cow_storage(c10::StorageImpl&)*",
        ]
    )
