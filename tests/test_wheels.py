"""wheel.* on built wheels: tags, torch pin, RECORD, and the abi/arch checks on members."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fixtures.elf import cuda_so, fake_extension, fake_torch, nvcc
from fixtures.text import lit
from fixtures.wheels import build_wheel

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")


@pytest.fixture(scope="session")
def so(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("whl")
    libs = fake_torch(root / "torch")
    out = {"torch": libs, "ext": fake_extension(root / "e" / "_C.abi3.so", libs)}
    if nvcc():
        out["sm80"] = cuda_so(root / "k" / "sm80.so", ["arch=compute_80,code=sm_80"])
    return out


def env_with_torch(env_builder, so, version="2.11.0+cu130") -> Path:
    env_builder.python("3.12")
    files: dict[str, bytes | str] = {"torch/version.py": "cuda = '13.0'\n"}
    for lib in so["torch"].glob("*.so"):
        files[f"torch/lib/{lib.name}"] = lib.read_bytes()
    env_builder.dist("torch", version, files=files)
    return env_builder.prefix


def run(pytester, prefix, whl, *args):
    return pytester.runpytest(
        "--vllm-conformance", "-k", "test_built_wheels", "--vllm-env", str(prefix),
        "--vllm-wheel", str(whl), *args,
    )  # fmt: skip


def test_good_wheel_passes(pytester, env_builder, so, tmp_path):
    whl = build_wheel(tmp_path / "dist", {"vllm/_C.abi3.so": so["ext"].read_bytes()})
    result = run(pytester, env_with_torch(env_builder, so), whl)
    result.assert_outcomes(passed=1)


def test_tampered_record_fails(pytester, env_builder, so, tmp_path):
    whl = build_wheel(
        tmp_path / "dist", {"vllm/_C.abi3.so": so["ext"].read_bytes()}, tamper="vllm/_C.abi3.so"
    )
    result = run(pytester, env_with_torch(env_builder, so), whl)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([lit("*[wheel.record] FAILED: RECORD does not match 1 member(s)*")])


def test_torch_pin_the_env_cannot_meet(pytester, env_builder, so, tmp_path):
    whl = build_wheel(tmp_path / "dist", {"vllm/_C.abi3.so": so["ext"].read_bytes()})
    result = run(pytester, env_with_torch(env_builder, so, "2.13.0"), whl)
    result.stdout.fnmatch_lines(
        [lit("*[wheel.pins] FAILED: vllm requires torch==2.11.0 but the env has torch 2.13.0*")]
    )


def test_torch_pin_fix_names_the_env_manifest_line(pytester, env_builder, so, tmp_path):
    """The wheel is judged for the env it is meant for: its fix rewrites that env's pixi.toml
    line (7: `torch = "==2.13.0"`), not a generic "pin it in pixi.toml"."""
    whl = build_wheel(tmp_path / "dist", {"vllm/_C.abi3.so": so["ext"].read_bytes()})
    prefix = env_with_torch(env_builder, so, "2.13.0")
    env_builder.manifest('[pypi-dependencies]\ntorch = "==2.13.0"\n')
    result = run(pytester, prefix, whl)
    result.stdout.fnmatch_lines(
        [
            lit("*[wheel.pins] FAILED: vllm requires torch==2.11.0 but the env has torch 2.13.0"),
            '  fix: in pixi.toml line 7 ([[]pypi-dependencies]), replace `torch = "==2.13.0"` '
            'with `torch = "==2.11.0"`, or install the vllm release built for torch 2.13.0',
        ]
    )


def test_member_that_is_not_elf_is_an_error(pytester, env_builder, so, tmp_path):
    whl = build_wheel(tmp_path / "dist", {"vllm/_C.abi3.so": b"PK not a library"})
    result = run(pytester, env_with_torch(env_builder, so), whl)
    result.stdout.fnmatch_lines(
        [
            lit("*[wheel.symbols] ERROR: vllm/_C.abi3.so: not an ELF file*"),
            # the wheel is broken, not the env: nothing to reinstall there
            "  fix: rebuild the wheel (`pip wheel`, `uv build`): its member vllm/_C.abi3.so is "
            "not a library",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_wrong_python_tag_fails(pytester, env_builder, so, tmp_path):
    whl = build_wheel(tmp_path / "dist", {}, tag="cp313-cp313-manylinux_2_28_x86_64")
    result = run(pytester, env_with_torch(env_builder, so), whl)
    result.stdout.fnmatch_lines([lit("*[wheel.tags] FAILED: *no tag fits CPython 3.12*")])


@pytest.mark.skipif(nvcc() is None, reason="nvcc not found")
def test_wheel_member_without_target_arch_fails(pytester, env_builder, so, tmp_path):
    whl = build_wheel(tmp_path / "dist", {"vllm/_moe_C.abi3.so": so["sm80"].read_bytes()})
    result = run(pytester, env_with_torch(env_builder, so), whl, "--cuda-arch", "12.0")
    result.stdout.fnmatch_lines(
        [lit("*[wheel.coverage] FAILED: vllm/_moe_C.abi3.so has no kernels for sm_120*")]
    )


def test_not_a_zip(pytester, env_builder, so, tmp_path):
    bad = tmp_path / "vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl"
    bad.write_text("truncated")
    result = run(pytester, env_with_torch(env_builder, so), bad)
    result.stdout.fnmatch_lines([lit("*[wheel.record] ERROR: *is not a readable zip*")])


def test_manylinux_tag_above_the_pixi_floor_fails(pytester, env_builder, so, tmp_path):
    """prefix-dev/pixi#5266's wheel (manylinux_2_31) given to a Pixi env at the default 2.28."""
    whl = build_wheel(
        tmp_path / "dist",
        {"vllm/_C.abi3.so": so["ext"].read_bytes()},
        version="0.13.0",
        tag="cp38-abi3-manylinux_2_31_x86_64",
    )
    prefix = env_with_torch(env_builder, so)
    env_builder.manifest("")
    result = run(pytester, prefix, whl)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[wheel.tags] FAILED: vllm-0.13.0-cp38-abi3-manylinux_2_31_x86_64.whl: its "
                "manylinux tag needs glibc 2.31, the env's Pixi floor is 2.28 (pixi's default*"
            ),
            lit('*fix: set `libc = "2.31"` in [system-requirements] of pixi.toml*'),
        ]
    )
    env_builder.manifest('[system-requirements]\nlibc = "2.31"\n')
    assert "[wheel.tags] FAILED" not in run(pytester, prefix, whl).stdout.str()


def test_manylinux_tag_above_this_machine_fails(pytester, env_builder, so, tmp_path):
    whl = build_wheel(tmp_path / "dist", {}, tag="cp38-abi3-manylinux_2_99_x86_64")
    result = run(pytester, env_with_torch(env_builder, so), whl)
    result.stdout.fnmatch_lines(
        [lit("*[wheel.tags] FAILED: *needs glibc 2.99, this machine has*pip refuses it*")]
    )
