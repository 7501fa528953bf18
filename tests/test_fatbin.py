"""The fatbin walker against real nvcc output, cuobjdump, and bad input; arch coverage."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from fixtures import downloads
from fixtures.elf import cuda_so, nvcc
from fixtures.envs import EnvBuilder
from fixtures.text import lit
from pytest_vllm_env.readers import fatbin
from pytest_vllm_env.readers.elf import ElfError, read_elf
from pytest_vllm_env.tables.archs import parse_arch

needs_nvcc = pytest.mark.skipif(nvcc() is None, reason="nvcc not found")

# gencode set -> the distinct (kind, arch) images nvcc must embed, and whether compressed
CASES = {
    "sass-only": (["arch=compute_80,code=sm_80", "arch=compute_90,code=sm_90"], {"sm_80", "sm_90"}),
    "ptx-only": (["arch=compute_80,code=compute_80"], {"compute_80"}),
    "sm90a+ptx120": (
        ["arch=compute_90a,code=sm_90a", "arch=compute_120,code=compute_120"],
        {"sm_90a", "compute_120"},
    ),
    "only-90a": (["arch=compute_90a,code=sm_90a"], {"sm_90a"}),
    "family-100f": (
        ["arch=compute_100f,code=sm_100f", "arch=compute_86,code=sm_86"],
        {"sm_100f", "sm_86"},
    ),
    "sm120": (["arch=compute_120,code=sm_120"], {"sm_120"}),
    "only-120a": (["arch=compute_120a,code=sm_120a"], {"sm_120a"}),
    "only-120f": (["arch=compute_120f,code=sm_120f"], {"sm_120f"}),
}


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> dict[str, Path]:
    """Each gencode set compiled once per session (plus compressed / uncompressed twins)."""
    if nvcc() is None:
        pytest.skip("nvcc not found")
    root = tmp_path_factory.mktemp("cuda")
    out = {name: cuda_so(root / f"{name}.so", gencodes) for name, (gencodes, _) in CASES.items()}
    both = ["arch=compute_75,code=sm_75", "arch=compute_90,code=compute_90"]
    out["compressed"] = cuda_so(root / "compressed.so", both, ["-Xfatbin", "-compress-all"])
    out["uncompressed"] = cuda_so(root / "uncompressed.so", both, ["--no-compress"])
    # no -gencode at all: nvcc's default arch only (sm_75 for CUDA 13), what a vLLM build
    # whose arch list came out empty produces (vLLM #49904, GB10)
    out["nvcc-default"] = cuda_so(root / "nvcc-default.so", [])
    return out


@needs_nvcc
@pytest.mark.parametrize("case", sorted(CASES))
def test_reader_lists_exactly_the_gencode_set(built, case):
    images = fatbin.read_images(built[case])
    assert {i.name for i in images} == CASES[case][1]


@needs_nvcc
def test_compressed_flag(built):
    assert all(i.compressed for i in fatbin.read_images(built["compressed"]))
    assert not any(i.compressed for i in fatbin.read_images(built["uncompressed"]))


@pytest.fixture(scope="session")
def cuobjdump() -> Path:
    try:
        root = downloads.unpacked("nvidia-cuda-cuobjdump==13.5.37")
    except Exception as exc:  # no network: say so instead of failing the suite
        pytest.skip(f"cannot fetch nvidia-cuda-cuobjdump: {exc}")
    found = next(root.rglob("bin/cuobjdump"), None)
    if found is None:
        pytest.skip("no cuobjdump in the wheel")
    return found


@needs_nvcc
@pytest.mark.parametrize("case", [*sorted(CASES), "compressed"])
def test_reader_agrees_with_cuobjdump(built, cuobjdump, case):
    import subprocess

    def listing(flag: str) -> list[str]:
        out = subprocess.run(
            [cuobjdump, flag, built[case]], capture_output=True, text=True, timeout=60
        )
        return re.findall(r"\.(sm_\d+[af]?)\.(?:cubin|ptx)", out.stdout)

    images = fatbin.read_images(built[case])
    # cuobjdump prints family (f) images under the plain name; PTX as sm_XX too.
    ours_sass = sorted(i.arch.sm.rstrip("f") for i in images if i.kind == "sass")
    ours_ptx = sorted(i.arch.sm.rstrip("f") for i in images if i.kind == "ptx")
    assert ours_sass == sorted(listing("--list-elf"))
    assert ours_ptx == sorted(listing("--list-ptx"))


# -- coverage -------------------------------------------------------------------------------
def img(kind: str, arch: str) -> fatbin.FatbinImage:
    return fatbin.FatbinImage(kind, parse_arch(arch), False)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "images, target, covered, jit",
    [
        ([img("sass", "sm_120")], "12.0", True, False),
        ([img("sass", "sm_120")], "12.1", True, False),  # same major, higher minor
        ([img("sass", "sm_90")], "12.0", False, False),  # torch cu124: no sm_120, no PTX
        ([img("sass", "sm_90a")], "9.0", True, False),
        ([img("ptx", "sm_90a")], "10.0", False, False),  # arch-specific PTX does not carry forward
        ([img("sass", "sm_90a")], "10.0", False, False),
        ([img("ptx", "sm_80")], "12.0", True, True),
        ([img("sass", "sm_86")], "8.0", False, False),  # lower minor cannot run higher SASS
        ([img("sass", "sm_100f")], "10.3", True, False),
        ([img("sass", "sm_100f")], "11.0", False, False),  # the family is the major: 10.x
        ([img("sass", "sm_120a")], "12.1", False, False),  # GB10 cannot run RTX 5090's `a`
        ([img("sass", "sm_120f")], "12.1", True, False),
        ([img("sass", "sm_121f")], "12.0", False, False),
        ([img("sass", "sm_120")], "10.0", False, False),  # never across majors
        ([img("ptx", "sm_100")], "12.1", True, True),
    ],
)
def test_arch_coverage_rules(images, target, covered, jit):
    cov = fatbin.arch_coverage(images, parse_arch(target))
    assert (cov.covered, cov.jit) == (covered, jit)


# -- bad input ------------------------------------------------------------------------------
def test_non_elf_and_truncated(tmp_path):
    text = tmp_path / "text.so"
    text.write_text("INPUT(-lfoo)\n")
    with pytest.raises(ElfError, match="not an ELF file"):
        fatbin.read_images(text)
    trunc = tmp_path / "trunc.so"
    trunc.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 20)
    with pytest.raises(ElfError, match="truncated ELF header"):
        read_elf(trunc)


@needs_nvcc
def test_truncated_real_library(built, tmp_path):
    data = built["sass-only"].read_bytes()
    cut = tmp_path / "cut.so"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ElfError, match="past the end"):
        fatbin.read_images(cut)


@needs_nvcc
def test_entry_size_past_section(built, tmp_path):
    data = bytearray(built["sass-only"].read_bytes())
    sec = read_elf(built["sass-only"]).section(".nv_fatbin")
    assert sec is not None
    entry = sec.offset + 16
    struct.pack_into("<Q", data, entry + 8, 1 << 40)  # payload size far past the section
    bad = tmp_path / "bad.so"
    bad.write_bytes(bytes(data))
    with pytest.raises(ElfError, match="past its container"):
        fatbin.read_images(bad)


def test_no_fatbin_section_is_empty():
    assert fatbin.read_images(Path("/bin/ls").resolve()) == []


# -- the conformance check -------------------------------------------------------------------
def _env_with_torch_cuda(env_builder: EnvBuilder, lib: Path) -> None:
    env_builder.python("3.12")
    env_builder.dist(
        "torch",
        "2.5.1+cu124",
        files={
            "torch/version.py": "cuda = '12.4'\n",
            "torch/lib/libtorch_cuda.so": lib.read_bytes(),
        },
    )


@needs_nvcc
def test_torch_without_sm120_fails_with_the_fix(pytester, env_builder, built):
    _env_with_torch_cuda(env_builder, built["sass-only"])
    result = pytester.runpytest(
        "--vllm-conformance",
        "-k",
        "test_arch.py",
        "--vllm-env",
        str(env_builder.prefix),
        "--cuda-arch",
        "12.0",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[arch.coverage] FAILED: torch/lib/libtorch_cuda.so "
                "has no kernels for sm_120 (12.0):"
                " it holds SASS sm_80, sm_90; PTX none*"
            ),
            # the oldest build the torch table knows to hold sm_120 (2.5.1 has none): PyPI's
            # 2.8.0, its cu128 build
            "*fix: install a torch built with sm_120 kernels (a CUDA >= 12.8 build): torch 2.8.0 "
            '(cu128): add `torch = "==2.8.0"`*',
        ]
    )


@needs_nvcc
def test_ptx_covers_newer_arch(pytester, env_builder, built):
    _env_with_torch_cuda(env_builder, built["ptx-only"])
    result = pytester.runpytest(
        "--vllm-conformance",
        "-k",
        "test_arch.py",
        "--vllm-env",
        str(env_builder.prefix),
        "--cuda-arch",
        "12.0",
        "--vllm-env-report",
        "r.json",
    )
    result.assert_outcomes(passed=1)
    checks = json.loads((pytester.path / "r.json").read_text())["checks"]
    assert checks[0]["summary"] == (
        "torch/lib/libtorch_cuda.so runs on sm_120 through PTX compute_80 (JIT-compiled at "
        "first use, then cached; whether this driver can, and at what cost: driver.ptx-jit)"
    )


def _arch_run(pytester, env_builder, *archs: str) -> tuple[pytest.RunResult, dict[str, str]]:
    args = ["--vllm-conformance", "-k", "test_arch.py", "--vllm-env", str(env_builder.prefix)]
    for a in archs:
        args += ["--cuda-arch", a]
    result = pytester.runpytest(*args, "--vllm-env-report", "r.json")
    checks = json.loads((pytester.path / "r.json").read_text())["checks"]
    return result, {c["summary"]: c["outcome"] for c in checks}


@needs_nvcc
def test_per_gpu_backend_with_other_archs_only_is_not_a_gap(pytester, env_builder, built):
    # vLLM 0.26.0 ships FA3 with sm_90a only and _qutlass_C with sm_100f only: vLLM
    # dispatches to them only on those GPUs, so an RTX 5090 target must not fail on them.
    _env_with_torch_cuda(env_builder, built["sm120"])
    so = {"vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so": built["only-90a"].read_bytes()}
    env_builder.dist("vllm", "0.26.0", files=so)
    result, said = _arch_run(pytester, env_builder, "12.0")
    result.assert_outcomes(passed=1)
    assert (
        said[
            "vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so holds kernels only for other GPUs (SASS "
            "sm_90a; PTX none): vLLM dispatches to it only on GPUs it was built for; not needed "
            "for sm_120"
        ]
        == "passed"
    )
    # the same kernels in vLLM's _C, which every run loads, are a gap
    so = {"vllm/_C.abi3.so": built["sass-only"].read_bytes()}
    env_builder.dist("vllm", "0.26.0", files=so)
    _arch_run(pytester, env_builder, "12.0")[0].assert_outcomes(failed=1)


@needs_nvcc
def test_core_library_with_only_sm120a_fails_on_gb10(pytester, env_builder, built):
    """Tried as a new user would: vllm/_C.abi3.so holding only sm_120a passed for an sm_121
    (GB10) target. `a` images run only on their own arch; `f` images on their family."""
    _env_with_torch_cuda(env_builder, built["sm120"])
    env_builder.dist("vllm", "0.26.0", files={"vllm/_C.abi3.so": built["only-120a"].read_bytes()})
    result, said = _arch_run(pytester, env_builder, "12.1", "12.0")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[arch.coverage] FAILED: vllm/_C.abi3.so has no kernels for sm_121 (12.1): it "
                "holds SASS sm_120a; PTX none (`a` images run only on their own arch*"
            ),
            '*fix: rebuild for 12.1: set `TORCH_CUDA_ARCH_LIST = "12.1"`*nvcc >= 12.9*'
            '`cuda-version = "12.9.*"`*',
        ]
    )
    assert said["vllm/_C.abi3.so runs on sm_120 via SASS sm_120a"] == "passed"
    # an sm_120f (family) build serves 12.0 and 12.1 alike
    env_builder.dist("vllm", "0.26.0", files={"vllm/_C.abi3.so": built["only-120f"].read_bytes()})
    _arch_run(pytester, env_builder, "12.1", "12.0")[0].assert_outcomes(passed=1)


@needs_nvcc
def test_build_with_no_arch_list_names_the_cause(pytester, env_builder, built):
    """vLLM #49904: on a GB10 torch's arch parser turned 12.1 into 2.0; the _C built holds only
    nvcc's default sm_75 and every arch-gated op raises "No compiled cutlass_scaled_mm"."""
    _env_with_torch_cuda(env_builder, built["sm120"])
    so = {"vllm/_C.abi3.so": built["nvcc-default"].read_bytes()}
    env_builder.dist("vllm", "0.11.1", files=so)
    result, _ = _arch_run(pytester, env_builder, "12.1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit("*[arch.coverage] FAILED: vllm/_C.abi3.so was built for nvcc's default arch only*"),
            "*No compiled cutlass_scaled_mm*capability: 121*",
            "*holds only nvcc's default arch sm_75, so the build saw no arch list*#49904*",
        ]
    )


@needs_nvcc
def test_unknown_library_with_arch_specific_kernels_only_is_a_warning(pytester, env_builder, built):
    _env_with_torch_cuda(env_builder, built["sm120"])
    so = {"vllm/_custom_new_C.abi3.so": built["only-90a"].read_bytes()}
    env_builder.dist("vllm", "0.26.0", files=so)
    result, said = _arch_run(pytester, env_builder, "12.0")
    assert result.parseoutcomes().get("warned") == 1
    assert any(k.startswith("vllm/_custom_new_C.abi3.so holds only arch-specific") for k in said)


def test_coverage_names_the_generic_image_when_both_exist():
    # libtorch_cuda 2.11 holds 444 sm_90 images and 4 sm_90a ones (FACTS)
    images = [
        fatbin.FatbinImage("sass", parse_arch("9.0a"), False),
        fatbin.FatbinImage("sass", parse_arch("9.0"), False),
    ]
    cov = fatbin.arch_coverage(images, parse_arch("9.0"))
    assert cov.covered and cov.via is not None and cov.via.name == "sm_90"


def test_no_target_arch_skips_with_reason(pytester, env_builder):
    env_builder.python("3.12")
    env_builder.dist(
        "torch", "2.11.0", files={"torch/lib/libtorch_cuda.so": Path("/bin/ls").read_bytes()}
    )
    result = pytester.runpytest(
        "--vllm-conformance", "-k", "test_arch.py", "--vllm-env", str(env_builder.prefix), "-rs"
    )
    result.assert_outcomes(skipped=1)


@needs_nvcc
def test_section_of_zeros_lists_nothing_quickly(built, tmp_path):
    data = bytearray(built["compressed"].read_bytes())
    sec = read_elf(built["compressed"]).section(".nv_fatbin")
    assert sec is not None
    data[sec.offset : sec.offset + sec.size] = bytes(sec.size)
    zeros = tmp_path / "zeros.so"
    zeros.write_bytes(bytes(data))
    assert fatbin.read_images(zeros) == []


@needs_nvcc
def test_garbage_instead_of_magic(built, tmp_path):
    data = bytearray(built["compressed"].read_bytes())
    sec = read_elf(built["compressed"]).section(".nv_fatbin")
    assert sec is not None
    data[sec.offset : sec.offset + 4] = b"JUNK"
    bad = tmp_path / "junk.so"
    bad.write_bytes(bytes(data))
    with pytest.raises(ElfError, match="no fatbin magic"):
        fatbin.read_images(bad)


# -- the arch rules against the real tool ---------------------------------------------------
def _ptxas() -> Path | None:
    found = nvcc()
    ptxas = Path(found).resolve().with_name("ptxas") if found else None
    return ptxas if ptxas and ptxas.exists() else None


PTX_TARGETS = ["sm_80", "sm_90a", "sm_100", "sm_100a", "sm_100f", "sm_103f", "sm_120",
               "sm_120a", "sm_120f", "sm_121f"]  # fmt: skip
DEVICES = ["9.0", "10.0", "10.3", "11.0", "12.0", "12.1"]


@pytest.mark.skipif(_ptxas() is None, reason="no ptxas next to nvcc")
def test_ptx_rule_agrees_with_ptxas(tmp_path):
    """``ptx_jits_to`` against CUDA 13's own ptxas, which states the rule in `--help` ("PTX for
    .target sm_XYf can be compiled to GPU targets sm_XZ... where Z >= Y and sm_XY and sm_XZ
    belong in same family. PTX with .target sm_XYa can only be compiled to GPU target
    sm_XYa"): each PTX target assembled for each device's full arch (sm_XYa, what the driver
    JIT targets on that GPU)."""
    import subprocess

    ptxas = _ptxas()
    disagree = []
    for target in PTX_TARGETS:
        src = tmp_path / f"{target}.ptx"
        src.write_text(
            f".version 9.0\n.target {target}\n.address_size 64\n"
            ".visible .entry k()\n{\n  ret;\n}\n"
        )
        for device in DEVICES:
            dev = parse_arch(device)
            out = subprocess.run(
                [ptxas, f"-arch={dev.sm}a", src, "-o", tmp_path / "o.cubin"],
                capture_output=True,
                timeout=60,
            )
            real = out.returncode == 0
            ours = fatbin.ptx_jits_to(parse_arch(target), dev)
            if real != ours:
                disagree.append(f"{target} -> {device}: ptxas {real}, rule {ours}")
    assert not disagree, disagree


# -- xformers' own dispatch (F4.3) ----------------------------------------------------------
def flash3_py(minimum: str, maximum: str | None) -> str:
    """The lines of xformers' ``ops/fmha/flash3.py`` that decide FA3 dispatch, as 0.0.30
    (minimum (9, 0), no maximum) and 0.0.33+ (minimum (8, 0), maximum (9, 0)) ship them."""
    cap = f"    CUDA_MAXIMUM_COMPUTE_CAPABILITY = {maximum}\n" if maximum else ""
    return (
        "@register_operator\nclass FwOp(AttentionFwOpBase):\n"
        '    OPERATOR = get_operator("xformers_flash3", "flash_fwd")\n'
        f"    CUDA_MINIMUM_COMPUTE_CAPABILITY = {minimum}\n{cap}"
        "    SUPPORTED_MAX_K = 256\n\n\n@register_operator\nclass BwOp(AttentionBwOpBase):\n"
        "    CUDA_MINIMUM_COMPUTE_CAPABILITY = FwOp.CUDA_MINIMUM_COMPUTE_CAPABILITY\n"
    )


def _xformers_env(env_builder, built, flash3: str, fa3_name="xformers/_C_flashattention3.so"):
    _env_with_torch_cuda(env_builder, built["sm120"])
    env_builder.dist(
        "xformers",
        "0.0.30",
        requires=["torch==2.7.0"],
        files={
            "xformers/_C.so": built["sm120"].read_bytes(),
            fa3_name: built["only-90a"].read_bytes(),
            "xformers/ops/fmha/flash3.py": flash3,
        },
    )


@needs_nvcc
def test_xformers_fa3_dispatched_on_blackwell_fails(pytester, env_builder, built):
    """xformers#1329 / vLLM #21272: xformers 0.0.30's FA3 is Hopper-only (sm_90a) and its
    dispatcher takes it on any GPU >= 9.0: "no kernel image is available" on an RTX 5090."""
    _xformers_env(env_builder, built, flash3_py("(9, 0)", None))
    result, said = _arch_run(pytester, env_builder, "12.0", "9.0", "8.6")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[arch.coverage] FAILED: xformers dispatches FA3 on sm_120 (flash3.FwOp accepts "
                "every capability >= (9, 0)*which xformers/_C_flashattention3.so holds only as "
                "sm_90a*"
            ),
            "*fix: use an xformers whose flash3.FwOp stops at 9.0 (0.0.33 and later*",
        ]
    )
    assert said["xformers/_C_flashattention3.so runs on sm_90 via SASS sm_90a"] == "passed"
    assert any(k.startswith("xformers/_C_flashattention3.so is not used on sm_86") for k in said)


@needs_nvcc
def test_xformers_fa3_capped_at_hopper_passes(pytester, env_builder, built):
    _xformers_env(env_builder, built, flash3_py("(8, 0)", "(9, 0)"), "xformers/flash_attn_3/_C.so")
    result, said = _arch_run(pytester, env_builder, "12.0")
    result.assert_outcomes(passed=1)
    assert (
        "xformers/flash_attn_3/_C.so is not used on sm_120: flash3.FwOp stops at capability "
        "(9, 0) (xformers/ops/fmha/flash3.py)" in said
    )


def test_read_fa3_dispatch_of_unreadable_source(tmp_path):
    from pytest_vllm_env.readers.xformers_fa3 import read_fa3_dispatch

    assert not read_fa3_dispatch(tmp_path).readable
    (tmp_path / "ops" / "fmha").mkdir(parents=True)
    (tmp_path / "ops" / "fmha" / "flash3.py").write_text(flash3_py("(8, 0)", "(9, 0)"))
    got = read_fa3_dispatch(tmp_path)
    assert (got.minimum, got.maximum) == ((8, 0), (9, 0))


def _set_flag_on_every_entry(src: Path, dest: Path, flag: int) -> int:
    """A copy of ``src`` whose fatbin entries all carry ``flag`` (OR-ed into the u64 at +40):
    how CUDA <= 12's nvcc marks the images it compressed with its LZ4 variant (0x2000)."""
    data = bytearray(src.read_bytes())
    sec = read_elf(src).section(".nv_fatbin")
    assert sec is not None
    pos, end, n = sec.offset, sec.offset + sec.size, 0
    while pos + 16 <= end:
        magic, _v, header, body = struct.unpack_from("<IHHQ", data, pos)
        if magic != fatbin.MAGIC:
            pos += 8
            continue
        entry, body_end = pos + header, pos + header + body
        while entry + 48 <= body_end:
            _kind, _u, ehs, payload = struct.unpack_from("<HHIQ", data, entry)
            (flags,) = struct.unpack_from("<Q", data, entry + 40)
            struct.pack_into("<Q", data, entry + 40, flags | flag)
            n += 1
            entry += ehs + payload
        pos = body_end
    dest.write_bytes(bytes(data))
    return n


@needs_nvcc
def test_lz4_flag_counts_as_compressed(built, tmp_path):
    """0x2000 is the LZ4 flag of CUDA <= 12 fatbins (every image of xformers 0.0.30's
    ``_C.so``, which ``cuobjdump`` lists as compressed): both readers must take it as
    compressed, and the PTX reader must then trust the entry header's ISA rather than read
    a PTX text that is not there in clear."""
    from pytest_vllm_env.readers import fatbin_ptx

    plain = fatbin_ptx.read_binary(built["uncompressed"])
    ptx = [i for c in plain.containers for i in c.images if i.image.kind == "ptx"]
    assert ptx and all(i.isa_from == "text" for i in ptx)  # read in clear before
    lz4 = tmp_path / "lz4.so"
    assert _set_flag_on_every_entry(built["uncompressed"], lz4, 0x2000) >= 2
    assert fatbin.FLAG_LZ4 == 0x2000 and fatbin.FLAG_LZ4 & fatbin.FLAG_COMPRESSED
    images = fatbin.read_images(lz4)
    assert {i.name for i in images} == {"sm_75", "compute_90"}
    assert all(i.compressed for i in images)
    packed = [
        i for c in fatbin_ptx.read_binary(lz4).containers for i in c.images if i.image.kind == "ptx"
    ]
    assert packed and all(i.image.compressed and i.isa_from == "header" for i in packed)
    assert {i.isa for i in packed} == {i.isa for i in ptx}  # the header says what the text did
