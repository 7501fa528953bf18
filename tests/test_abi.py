"""abi.* checks against g++-built fake torch libraries and extensions (real ELF, real symbols)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from fixtures.elf import (
    DRIVER_AND_PYTHON_SRC,
    UNDEFINED_KERNEL_SRC,
    cxx_extension,
    fake_cudart,
    fake_extension,
    fake_soname_lib,
    fake_torch,
)
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
    cudart = fake_cudart(root / "cudart", 13)
    driver = fake_soname_lib(
        root / "driver", "libcuda.so.1", 'extern "C" int cuInit(unsigned f) { return 0; }\n'
    )
    return {
        "torch-cuda": cuda,
        "torch-cpu": cpu,
        "cudart13": cudart,
        "ext": fake_extension(root / "ext" / "_C.abi3.so", cuda),
        "ext-old-abi": fake_extension(root / "old" / "_C.abi3.so", cuda, cxx11=0),
        "ext-cuda12": fake_extension(root / "c12" / "_C.abi3.so", cuda, cuda_major=12),
        "ext-undefined-kernel": cxx_extension(
            root / "undef" / "_C.abi3.so", UNDEFINED_KERNEL_SRC, [cudart]
        ),
        "ext-driver": cxx_extension(
            root / "drv" / "cumem_allocator.abi3.so", DRIVER_AND_PYTHON_SRC, [cudart, driver]
        ),
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
    member: str = "vllm/_C.abi3.so",
) -> Path:
    builder.python("3.12")
    # conda-forge's cuda-cudart puts libcudart.so.13 in $PREFIX/lib
    builder.file("lib/libcudart.so.13", parts["cudart13"].read_bytes())
    files: dict[str, bytes | str] = {"torch/version.py": f"cuda = {torch_cuda!r}\n"}
    for lib in parts[libs].glob("*.so"):
        files[f"torch/lib/{lib.name}"] = lib.read_bytes()
    builder.dist("torch", torch, files=files)
    builder.dist(
        "vllm",
        vllm,
        requires=["torch==2.11.0", "xformers; extra == 'video'"],
        files={member: parts[ext].read_bytes()},
    )
    return builder.prefix


def run(pytester, prefix: Path) -> pytest.RunResult:
    return pytester.runpytest("--vllm-conformance", "-k", "test_abi", "--vllm-env", str(prefix))


def test_matching_torch_passes(pytester, env_builder, parts):
    result = run(pytester, make_env(env_builder, parts))
    result.assert_outcomes(passed=7)


def test_cpu_torch_of_another_version_fails_naming_missing_symbols(pytester, env_builder, parts):
    prefix = make_env(env_builder, parts, torch="2.13.0", torch_cuda=None, libs="torch-cpu")
    result = run(pytester, prefix)
    result.assert_outcomes(failed=3, passed=4)  # pins, cudart, symbols; the others ok
    result.stdout.fnmatch_lines(
        [
            lit("*[abi.pins] FAILED: vllm requires torch==2.11.0 but the env has torch 2.13.0*"),
            lit(
                "*[abi.cudart] FAILED: vllm/_C.abi3.so needs "
                "libcudart.so.13 but torch is a CPU-only build*"
            ),
            lit(
                "*[abi.symbols] FAILED: vllm/_C.abi3.so: resolved 2 of 3 torch symbols; 1 missing"
                " (likely cause: built for torch 2.11.0 (vllm's Requires-Dist), env has 2.13.0)*"
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
    result.assert_outcomes(failed=2, passed=5)


def test_cudart_major_mismatch(pytester, env_builder, parts):
    """vLLM #44335 / #52300 / llm-d#1402 (F2.7, F2.8): an extension for one CUDA major next to
    a torch of the other: "libcudart.so.12: cannot open shared object file"."""
    result = run(pytester, make_env(env_builder, parts, ext="ext-cuda12"))
    result.assert_outcomes(failed=2, passed=4, skipped=1)  # abi.undefined: cudart not found
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[abi.cudart] FAILED: vllm/_C.abi3.so was built for CUDA "
                "12 (libcudart.so.12); torch*CUDA 13.0*"
            ),
            lit(
                "*[abi.needed] FAILED: vllm/_C.abi3.so needs libcudart.so.12, found nowhere the "
                'loader looks: import fails with "libcudart.so.12: cannot open shared object '
                'file: No such file or directory"*'
            ),
            lit(
                "*fix: vllm/_C.abi3.so was built for CUDA 12, torch 2.11.0+cu130 is CUDA 13.0 "
                "(abi.cudart): install vLLM's CUDA 13 wheel: add `vllm = { version = "
                '"==0.26.0", index = "https://wheels.vllm.ai/0.26.0/cu130" }` to '
                "[pypi-dependencies] in pixi.toml*"
            ),
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
    # xdist workers and later runs share torch's facts (its libraries, CUDA, C++ ABI flag)
    # through the fact cache; what the libraries export is looked up in them by name
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

    again().assert_outcomes(passed=7)
    (entry,) = cache.rglob("torch-facts-*.json")
    # doctor the cached fact: a run that reads it (instead of the libraries) now finds no
    # torch library, so no torch symbol
    data = json.loads(entry.read_text())
    assert "exports" not in data["value"]  # 41,000 names for torch 2.11: looked up instead
    data["value"]["libs"] = []
    entry.write_text(json.dumps(data))
    again().assert_outcomes(passed=6, failed=1)
    # a changed torch library is a new key: the facts are read from the files again
    lib = next((env_builder.site_packages / "torch" / "lib").glob("*.so"))
    os.utime(lib, ns=(lib.stat().st_atime_ns, lib.stat().st_mtime_ns + 10**9))
    again().assert_outcomes(passed=7)


def test_undefined_symbols_are_resolved_once_and_again_when_a_library_changes(
    pytester, env_builder, parts
):
    """abi.undefined's answer (which imports no library defines) is shared through the fact
    cache, keyed by the extension and every library of its DT_NEEDED closure: a later run
    reads no symbol table; a changed library anywhere in the closure is read again."""
    prefix = make_env(env_builder, parts, ext="ext-driver", member="vllm/cumem_allocator.abi3.so")
    cache = pytester.path / "cache"

    def again() -> pytest.RunResult:
        return pytester.runpytest(
            "--vllm-conformance", "-k", "undefined", f"--vllm-env={prefix}",
            "-o", f"cache_dir={cache}",
        )  # fmt: skip

    again().assert_outcomes(passed=1)
    (entry,) = cache.rglob("undefined-symbols-*.json")
    data = json.loads(entry.read_text())
    assert data["value"] == []
    data["value"] = ["_Z20cutlass_moe_mm_sm100RN2at6TensorE"]
    entry.write_text(json.dumps(data))
    result = again()
    result.assert_outcomes(failed=1)  # the doctored answer was read, not recomputed
    result.stdout.fnmatch_lines(["*undefined symbol: _Z20cutlass_moe_mm_sm100*"])
    # libcudart.so.13 (in the env's lib/, needed by the extension) changes: read again
    cudart = prefix / "lib" / "libcudart.so.13"
    os.utime(cudart, ns=(cudart.stat().st_atime_ns, cudart.stat().st_mtime_ns + 10**9))
    again().assert_outcomes(passed=1)


def test_source_build_left_its_own_kernel_undefined(pytester, env_builder, parts):
    """vLLM #29030 (F2.5): a source build for "8.0 8.6 8.9 9.0 12.0" defined
    ENABLE_CUTLASS_MOE_SM100 globally; _C.abi3.so calls cutlass_moe_mm_sm100, compiled nowhere.
    abi.symbols (torch's namespace) passed it; the loader refuses."""
    prefix = make_env(env_builder, parts, ext="ext-undefined-kernel", vllm="0.11.1")
    result = run(pytester, prefix)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[abi.undefined] FAILED: vllm/_C.abi3.so: 1 symbol(s) defined by no library it "
                'loads: import fails with "undefined symbol: _Z20cutlass_moe_mm_sm100RN2at6'
                'TensorERKS0_S3_S3_S3_S3_S3_S3_S3_S3_bb"*'
            ),
            "*fix: the build compiled a caller of sm_100-only kernels without the kernels*"
            "rebuild with 10.0 in `TORCH_CUDA_ARCH_LIST`*",
            "*undefined: cutlass_moe_mm_sm100(at::Tensor&, at::Tensor const&*",
        ]
    )
    assert "[abi.symbols] FAILED" not in result.stdout.str()


def test_driver_and_python_symbols_are_not_the_envs(pytester, env_builder, parts):
    """libcuda.so.1 comes with the NVIDIA driver (absent on a machine without a GPU) and
    PyModule_Create2 with the interpreter: neither is a missing library or symbol."""
    prefix = make_env(env_builder, parts, ext="ext-driver", member="vllm/cumem_allocator.abi3.so")
    result = pytester.runpytest(
        "--vllm-conformance", "-k", "needed or undefined", "--vllm-env", str(prefix),
        "--vllm-env-report", "r.json",
    )  # fmt: skip
    result.assert_outcomes(passed=2)
    checks = json.loads((pytester.path / "r.json").read_text())["checks"]
    needed = next(c for c in checks if c["id"] == "abi.needed")
    assert "libcuda.so.1" in needed["evidence"]["not_on_this_machine"]


def test_torch_exports_are_asked_by_name(env_builder, parts):
    """torch's exports are looked up, not listed: exactly the torch-side names its libraries
    define are in ``torch_facts.exports`` (what abi.symbols asks), nothing they only import."""
    from pytest_vllm_env.elf import defined_names, undefined_names
    from pytest_vllm_env.env import PixiEnv

    facts = abi.torch_facts(PixiEnv.read(make_env(env_builder, parts)))
    assert facts is not None and facts.cxx11 is True and not facts.errors
    assert "exports" not in facts.to_json()
    asked = 0
    for lib in facts.libs:
        for name in defined_names(lib):
            assert (name in facts.exports) == bool(abi.TORCH_SIDE.match(name)), name
            asked += bool(abi.TORCH_SIDE.match(name))
        for name, _weak in undefined_names(lib):
            assert name not in facts.exports, name
    assert asked == 3  # c10::check, c10::cuda::device_count, aoti_torch_get_current_cuda_stream
    assert "_ZN3c104cuda12device_countEv" in facts.exports
    assert (
        "_ZN3c104cuda12device_countEv"
        not in abi.TorchFacts.from_json(facts.to_json() | {"libs": []}).exports
    )
