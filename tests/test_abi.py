"""abi.* checks against g++-built fake torch libraries and extensions (real ELF, real symbols)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from fixtures.elf import fake_extension, fake_torch
from fixtures.envs import EnvBuilder
from fixtures.text import lit
from pytest_vllm_env import abi

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")


@pytest.fixture(scope="session")
def parts(tmp_path_factory) -> dict[str, Path]:
    """Built once per session: CUDA and CPU-only torch libs; extensions for each variant."""
    root = tmp_path_factory.mktemp("abi")
    cuda = fake_torch(root / "torch-cuda")
    cpu = fake_torch(root / "torch-cpu", with_cuda=False)
    return {
        "torch-cuda": cuda,
        "torch-cpu": cpu,
        "ext": fake_extension(root / "ext" / "_C.abi3.so", cuda),
        "ext-old-abi": fake_extension(root / "old" / "_C.abi3.so", cuda, cxx11=0),
        "ext-cuda12": fake_extension(root / "c12" / "_C.abi3.so", cuda, cuda_major=12),
    }


def make_env(
    builder: EnvBuilder,
    parts: dict[str, Path],
    *,
    torch: str = "2.11.0+cu130",
    torch_cuda: str | None = "13.0",
    libs: str = "torch-cuda",
    ext: str = "ext",
    vllm: str = "0.26.0",
) -> Path:
    builder.python("3.12")
    files: dict[str, bytes | str] = {"torch/version.py": f"cuda = {torch_cuda!r}\n"}
    for lib in parts[libs].glob("*.so"):
        files[f"torch/lib/{lib.name}"] = lib.read_bytes()
    builder.dist("torch", torch, files=files)
    builder.dist(
        "vllm",
        vllm,
        requires=["torch==2.11.0", "xformers; extra == 'video'"],
        files={"vllm/_C.abi3.so": parts[ext].read_bytes()},
    )
    return builder.prefix


def run(pytester, prefix: Path) -> pytest.RunResult:
    return pytester.runpytest("--vllm-conformance", "-k", "test_abi", "--vllm-env", str(prefix))


def test_matching_torch_passes(pytester, env_builder, parts):
    result = run(pytester, make_env(env_builder, parts))
    result.assert_outcomes(passed=5)


def test_cpu_torch_of_another_version_fails_naming_missing_symbols(pytester, env_builder, parts):
    prefix = make_env(env_builder, parts, torch="2.13.0", torch_cuda=None, libs="torch-cpu")
    result = run(pytester, prefix)
    result.assert_outcomes(failed=3, passed=2)  # pins, cudart, symbols; cxx11 and source floor ok
    result.stdout.fnmatch_lines(
        [
            lit("*[abi.pins] FAILED: vllm requires torch==2.11.0 but the env has torch 2.13.0*"),
            lit(
                "*[abi.cudart] FAILED: vllm/_C.abi3.so needs "
                "libcudart.so.13 but torch is a CPU-only build*"
            ),
            lit(
                "*[abi.symbols] FAILED: vllm/_C.abi3.so: resolved 2 of 3 torch symbols; 1 missing"
                " (likely cause: built for torch 2.11.0, env has 2.13.0)*"
            ),
            "*missing: c10::cuda::device_count()*",
        ]
    )


def test_old_cxx_abi_extension_fails(pytester, env_builder, parts):
    result = run(pytester, make_env(env_builder, parts, ext="ext-old-abi"))
    result.stdout.fnmatch_lines(
        [
            "*missing: c10::check(std::basic_string<char*",
            lit(
                "*[abi.cxx11] FAILED: vllm/_C.abi3.so was built with "
                "_GLIBCXX_USE_CXX11_ABI=0,*with 1*"
            ),
        ]
    )
    result.assert_outcomes(failed=2, passed=3)


def test_cudart_major_mismatch(pytester, env_builder, parts):
    result = run(pytester, make_env(env_builder, parts, ext="ext-cuda12"))
    result.assert_outcomes(failed=1, passed=4)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[abi.cudart] FAILED: vllm/_C.abi3.so was built for CUDA "
                "12 (libcudart.so.12); torch*CUDA 13.0*"
            )
        ]
    )


def test_non_elf_extension_is_an_error_not_a_traceback(pytester, env_builder, parts):
    prefix = make_env(env_builder, parts)
    (env_builder.site_packages / "vllm" / "_C.abi3.so").write_text("not a library\n")
    result = run(pytester, prefix)
    result.stdout.fnmatch_lines([lit("*[abi.symbols] ERROR: vllm/_C.abi3.so: not an ELF file*")])
    assert "Traceback" not in result.stdout.str()


def test_source_build_needs_torch_27():
    bad = abi.source_torch_floor("0.10.1", "2.6.0")
    assert bad.outcome == "failed" and "Float8_e8m0fnu" in bad.summary
    assert abi.source_torch_floor("0.8.5", "2.6.0").outcome == "passed"
    assert abi.source_torch_floor("0.26.0", "2.11.0+cu130").outcome == "passed"


def test_pins_accept_local_labels():
    (ok,) = abi.pins(["torch==2.11.0"], {"torch": "2.11.0+cu130"})
    assert ok.outcome == "passed"
    (bad,) = abi.pins(["torchvision==0.26.0"], {"torchvision": "0.25.0+cu128"})
    assert bad.outcome == "failed" and "torchvision" in bad.fix


def test_source_tree_pin_the_env_cannot_meet(pytester, env_builder, tmp_path):
    env_builder.python("3.12")
    env_builder.dist("torch", "2.6.0+cu124")
    tree = tmp_path / "vllm-src"
    (tree / "requirements").mkdir(parents=True)
    (tree / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["torch == 2.11.0", "wheel"]\n'
    )
    (tree / "requirements" / "cuda.txt").write_text("# comment\ntorch==2.11.0\nxformers\n")
    result = pytester.runpytest(
        "--vllm-conformance", "-k", "test_source_build", f"--vllm-env={env_builder.prefix}",
        f"--vllm-source={tree}",
    )  # fmt: skip
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*the source tree needs torch==2.11.0 (pyproject.toml*) but the env has torch 2.6.0*",
            "*the source tree needs torch==2.11.0 (requirements/cuda.txt:2)*",
        ]
    )


def test_source_tree_met(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[build-system]\nrequires = ["torch == 2.11.0"]\n')
    tree = abi.read_source_tree(tmp_path)
    assert [f.outcome for f in abi.source_tree_torch(tree, "2.11.0+cu130")] == ["passed"]
    (tmp_path / "pyproject.toml").write_text("[build-system\n")
    bad = abi.source_tree_torch(abi.read_source_tree(tmp_path), "2.11.0")
    assert bad[0].outcome == "error"


def test_torch_symbols_are_read_once_and_reread_when_torch_changes(pytester, env_builder, parts):
    # xdist workers and later runs share torch's ~97,000 exported names through the fact cache
    prefix = make_env(env_builder, parts)
    cache = pytester.path / "cache"

    def again() -> pytest.RunResult:
        return pytester.runpytest(
            "--vllm-conformance",
            "-k",
            "test_abi",
            "--vllm-env",
            str(prefix),
            "-o",
            f"cache_dir={cache}",
        )

    again().assert_outcomes(passed=5)
    (entry,) = cache.rglob("torch-facts-*.json")
    # doctor the cached fact: a run that reads it (instead of the libraries) now misses symbols
    data = json.loads(entry.read_text())
    data["value"]["exports"] = []
    entry.write_text(json.dumps(data))
    again().assert_outcomes(passed=4, failed=1)
    # a changed torch library is a new key: the facts are read from the files again
    lib = next((env_builder.site_packages / "torch" / "lib").glob("*.so"))
    os.utime(lib, ns=(lib.stat().st_atime_ns, lib.stat().st_mtime_ns + 10**9))
    again().assert_outcomes(passed=5)
