# ruff: noqa: E501  (expected messages are kept whole: they are what users read)
"""The xformers checks, run as users run them: the conformance suite against fixture envs whose
vLLM vision-attention files are stand-ins with each generation's real rule (docs/xformers.md)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from fixtures.envs import EnvBuilder
from fixtures.text import lit
from fixtures.vit_standin import install_vit_vllm, vit_files
from pytest_vllm_env.checks import xformers as X
from pytest_vllm_env.checks import xformers_torch as XT
from pytest_vllm_env.facts.gpu_probe import ProbeResult
from pytest_vllm_env.readers import vllm_vit as R
from pytest_vllm_env.tables.archs import parse_arch

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-k", "test_xformers.py")


def run(pytester: pytest.Pytester, env: EnvBuilder, *, arch: str | None = "9.0", tier="toolchain"):
    args = [*SUITE, "-m", tier, "-rs", "--vllm-env", str(env.prefix)]
    if arch:
        args += ["--cuda-arch", arch]
    report = pytester.path / "report.json"
    result = pytester.runpytest(*args, "--vllm-env-report", str(report))
    assert "Traceback" not in result.stdout.str()
    return result


def checks(pytester: pytest.Pytester) -> dict[str, dict]:
    data = json.loads((pytester.path / "report.json").read_text())["checks"]
    return {c["id"]: c for c in data}


# -- the decision, per vLLM generation -------------------------------------------------------
@pytest.mark.parametrize(
    ("layout", "arch", "flash_attn", "backend"),
    [
        ("0.8", "9.0", None, "XFORMERS"),
        ("0.8", "9.0", "2.7.4", "FLASH_ATTN"),
        ("0.8", "7.5", "2.7.4", "XFORMERS"),
        ("0.10", "9.0", None, "XFORMERS"),
        ("0.10", "12.0", "2.8.3", "FLASH_ATTN"),
        ("0.10", "7.0", None, "XFORMERS"),
        ("0.12", "9.0", None, "FLASH_ATTN"),
        ("0.12", "7.5", None, "TORCH_SDPA"),
        ("0.26", "9.0", None, "FLASH_ATTN"),
        ("0.26", "7.5", None, "TORCH_SDPA"),
    ],
)
def test_decide_per_generation(layout, arch, flash_attn, backend):
    src = R.read_vit_source(vit_files(layout))
    d = X.decide(src, parse_arch(arch), X.Installed(flash_attn=flash_attn, vllm_flash_attn=True))
    assert d.backend == backend, d.reason
    assert d.uses_xformers is (backend == "XFORMERS")


def test_env_var_overrides_where_vllm_reads_it():
    inst = X.Installed()
    old = R.read_vit_source(vit_files("0.10"))
    assert X.decide(old, parse_arch("9.0"), inst, "TORCH_SDPA").backend == "TORCH_SDPA"
    new = R.read_vit_source(vit_files("0.26"))
    assert not new.env_var_honoured  # 0.26 reads only mm_encoder_attn_backend for the ViT
    assert X.decide(new, parse_arch("9.0"), inst, "TORCH_SDPA").backend == "FLASH_ATTN"


def test_xformers_for_torch_table():
    assert X.xformers_for_torch("2.7.1+cu126") == "0.0.31"
    assert X.xformers_for_torch("2.11.0+cu130") == "0.0.35"
    assert X.xformers_for_torch("2.5.1") is None


# -- conformance runs ------------------------------------------------------------------------
def test_qwen25vl_needs_xformers_but_missing_fails_with_fix(pytester, env_builder):
    """The real-world failure (seed 004): vLLM 0.10 on an H100, no flash-attn, no xformers."""
    install_vit_vllm(env_builder, "0.10")
    result = run(pytester, env_builder)
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[xformers.decision] FAILED: vLLM 0.10.1.1's Qwen2.5-VL vision tower would use xformers (sm 9.0: XFORMERS: the PyPI flash-attn package is not installed, so vLLM logs \"Current `vllm-flash-attn` has a bug inside vision module*"
            ),
            lit(
                '*fix: add `xformers = "==0.0.31"` to [pypi-dependencies] in pixi.toml (the xformers release built for the env\'s torch 2.7.1)*flash-attn*'
            ),
        ]
    )
    assert "vllm/platforms/cuda.py:CudaPlatformBase.get_vit_attn_backend" in result.stdout.str()


def test_xformers_installed_with_matching_torch_passes(pytester, env_builder):
    install_vit_vllm(env_builder, "0.10", xformers="0.0.31")
    result = run(pytester, env_builder)
    result.assert_outcomes(passed=2)
    found = checks(pytester)
    assert "uses XFORMERS and xformers 0.0.31 is installed" in found["xformers.decision"]["summary"]
    assert (
        found["xformers.torch-pin"]["summary"]
        == "xformers 0.0.31 requires torch==2.7.1; torch is 2.7.1"
    )


def test_xformers_torch_pin_mismatch_fails(pytester, env_builder):
    install_vit_vllm(
        env_builder, "0.10", torch="2.8.0+cu128", xformers="0.0.31", xformers_torch="2.7.1"
    )
    result = run(pytester, env_builder)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[xformers.torch-pin] FAILED: xformers 0.0.31 requires torch==2.7.1, but the env has torch 2.8.0+cu128*"
            ),
            # vLLM 0.10.1.1 pins torch 2.7.1 (abi.pins): xformers follows that torch, the one
            # every fix of the run names (issue 21), with 2.7.1's CUDA 12.8 build
            lit(
                '*fix: add `torch = { version = "==2.7.1", index = '
                '"https://download.pytorch.org/whl/cu128" }` to [pypi-dependencies] in pixi.toml '
                'and add `xformers = "==0.0.31"` to [pypi-dependencies] in pixi.toml (built for '
                "torch 2.7.1)*"
            ),
        ]
    )


def test_xformers_built_for_another_torch_fails_though_its_pin_is_met(pytester, env_builder):
    # xformers requires torch>=2.10, but cpp_lib.json says its ops were built for
    # 2.10.0+cu128. With no _C.so to read, nothing shows they use only the stable C ABI (PyPI
    # 0.0.35's do, and load on 2.11.0+cu130: tests/test_xformers_pairs.py), so the build pins.
    # PyPI's torch 2.11.0 is CUDA 13.0 but its dist version has no "+cu130": version.py says
    install_vit_vllm(env_builder, "0.10", torch="2.11.0")
    (env_builder.site_packages / "torch").mkdir(exist_ok=True)
    (env_builder.site_packages / "torch" / "version.py").write_text("cuda = '13.0'\n")
    env_builder.dist(
        "xformers",
        "0.0.35",
        requires=["torch>=2.10", "numpy"],
        files={
            "xformers/cpp_lib.json": json.dumps(
                {
                    "version": {
                        "cuda": 1208,
                        "hip": None,
                        "torch": "2.10.0+cu128",
                        "python": "3.10.19",
                    }
                }
            )
        },
    )
    result = run(pytester, env_builder)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[xformers.torch-pin] FAILED: xformers 0.0.35's compiled ops were built for "
                "torch 2.10.0+cu128 (xformers/cpp_lib.json); the env has torch 2.11.0+cu130: "
                "they will not load*"
            ),
            # vLLM 0.10.1.1 pins torch 2.7.1 (abi.pins says so): xformers follows that torch
            # (issue 21), not the installed 2.11.0 nor the 2.10.0 its ops were built for
            lit(
                '*fix: add `torch = "==2.7.1"` to [pypi-dependencies] in pixi.toml and add '
                '`xformers = "==0.0.31"` to [pypi-dependencies] in pixi.toml (built for torch '
                "2.7.1 (cu126))"
            ),
        ]
    )


def test_xformers_build_fix_agrees_with_abi_pins(pytester, env_builder):
    """Two checks, one torch (issue 21): xformers' ops built for 2.10.0+cu128 beside torch
    2.11.0, under a vLLM that pins torch 2.7.1. abi.pins installs 2.7.1; xformers.torch-pin's
    build-mismatch fix installs the same torch (the same change, as data) and the xformers
    built for it. Applying one must not undo the other."""
    install_vit_vllm(env_builder, "0.10", torch="2.11.0")
    (env_builder.site_packages / "torch").mkdir(exist_ok=True)
    (env_builder.site_packages / "torch" / "version.py").write_text("cuda = '13.0'\n")
    cpp = {"version": {"cuda": 1208, "torch": "2.10.0+cu128", "python": "3.10.19"}}
    env_builder.dist(
        "xformers",
        "0.0.35",
        requires=["torch>=2.10", "numpy"],
        files={"xformers/cpp_lib.json": json.dumps(cpp)},
    )
    manifest = env_builder.manifest('[pypi-dependencies]\ntorch = "==2.11.0"\n')
    report = pytester.path / "report.json"
    pytester.runpytest(
        *SUITE[:-2], "-k", "test_xformers.py or test_abi.py", "--cuda-arch=9.0",
        f"--vllm-env={env_builder.prefix}", f"--vllm-env-report={report}",
    )  # fmt: skip
    found = {c["id"]: c for c in json.loads(report.read_text())["checks"]}
    pins, xformers = found["abi.pins"], found["xformers.torch-pin"]
    assert (pins["outcome"], xformers["outcome"]) == ("failed", "failed")

    def torch_changes(check: dict) -> list[dict]:
        return [c for c in check["evidence"]["change"] if c.get("line", "").startswith("torch ")]

    want = {
        "kind": "manifest-line",
        "target": str(manifest),
        "table": "[pypi-dependencies]",
        "line": 'torch = "==2.7.1"',
        "replaces": 'torch = "==2.11.0"',
    }
    assert torch_changes(pins) == torch_changes(xformers) == [want]
    assert 'xformers = "==0.0.31"' in xformers["fix"]


def test_volta_needs_xformers_even_with_flash_attn(pytester, env_builder):
    install_vit_vllm(env_builder, "0.8", flash_attn="2.7.4", xformers="0.0.29.post2")
    run(pytester, env_builder, arch="7.0").assert_outcomes(passed=2)
    assert "sm 7.0 (< 8.0: Volta/Turing)" in checks(pytester)["xformers.decision"]["summary"]


def test_flash_attn_installed_skips_naming_backend(pytester, env_builder):
    install_vit_vllm(env_builder, "0.10", flash_attn="2.8.3")
    result = run(pytester, env_builder)
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(
        [
            "*does not use xformers here: it uses FLASH_ATTN (FLASH_ATTN: sm 9.0 >= 8.0 and flash-attn 2.8.3*"
        ]
    )


def test_vllm_026_does_not_use_xformers(pytester, env_builder):
    install_vit_vllm(env_builder, "0.26")
    result = run(pytester, env_builder)
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(
        ["*vLLM 0.26.0's Qwen2.5-VL vision tower does not use xformers here: it uses FLASH_ATTN*"]
    )


def test_no_arch_still_decides_when_every_arch_gives_xformers(pytester, env_builder):
    install_vit_vllm(env_builder, "0.10")
    run(pytester, env_builder, arch=None).assert_outcomes(failed=1, skipped=1)
    assert "XFORMERS on every arch" in checks(pytester)["xformers.decision"]["summary"]


def test_env_var_backend_the_model_rejects_fails(pytester, env_builder):
    install_vit_vllm(env_builder, "0.12")
    env_builder.manifest('[activation.env]\nVLLM_ATTENTION_BACKEND = "FLASHINFER"\n')
    result = run(pytester, env_builder)
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                '*[xformers.decision] FAILED: Qwen2.5-VL\'s vision tower would get FLASHINFER on sm 9.0, which vLLM 0.12.0 rejects ("Qwen2.5-VL does not support FLASHINFER backend now."*'
            ),
            "*fix: VLLM_ATTENTION_BACKEND also sets the vision backend*",
        ]
    )


# -- bad input -------------------------------------------------------------------------------
def test_garbled_source_is_an_error_not_a_traceback(pytester, env_builder):
    install_vit_vllm(env_builder, "0.10", files={R.CUDA_PY: "\x00\x01 def (((\n"})
    result = run(pytester, env_builder)
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[xformers.decision] ERROR: cannot read vLLM 0.10.1.1's vision attention source: vllm/platforms/cuda.py is not valid Python*"
            ),
            "*fix: the vLLM install is damaged: reinstall it*",
        ]
    )


def test_unreadable_source_is_an_error(env_builder):
    install_vit_vllm(env_builder, "0.10")
    path = env_builder.site_packages / R.CUDA_PY
    path.unlink()
    path.mkdir()  # reading a directory raises IsADirectoryError (even as root)
    src = R.read_vit_tree(env_builder.site_packages)
    assert src.rule == "unreadable" and "cannot read" in src.problem


def test_unknown_layout_with_xformers_path_cannot_decide(pytester, env_builder):
    odd = "class CudaPlatformBase:\n    def get_vit_attn_backend(cls):\n        return pick()\n"
    install_vit_vllm(env_builder, "0.10", files={R.CUDA_PY: odd})
    result = run(pytester, env_builder)
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[xformers.decision] ERROR: cannot decide which backend vLLM 0.10.1.1's Qwen2.5-VL vision tower uses: the vision backend rule in vllm/platforms/cuda.py:CudaPlatformBase.get_vit_attn_backend is not one this suite knows*"
            ),
            '*fix: to be safe: add `xformers = "==0.0.31"`*',
        ]
    )


def test_unknown_layout_without_xformers_path_skips(env_builder):
    files = {R.CUDA_PY: "def get_vit_attn_backend():\n    return pick()\n"}
    src = R.read_vit_source({**vit_files("0.26"), **files})
    d = X.decide(src, parse_arch("9.0"), X.Installed())
    assert src.rule == "unknown" and d.uses_xformers is False and d.backend is None
    assert X.decision_finding(src, [d], X.Installed(), "9.9").outcome == "skipped"


def test_no_qwen25vl_model_skips(pytester, env_builder):
    install_vit_vllm(env_builder, "0.10")
    (env_builder.site_packages / R.MODEL_PY).unlink()
    run(pytester, env_builder).assert_outcomes(skipped=2)
    assert "has no Qwen2.5-VL" in checks(pytester)["xformers.decision"]["summary"]


def test_no_vllm_skips(pytester, env_builder):
    env_builder.python("3.12")
    result = run(pytester, env_builder)
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*vLLM is not installed*"])


# -- gpu: the probe and its judgement --------------------------------------------------------
def fake_python(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "fakepy"
    p.write_text(f"#!/bin/sh\necho '{json.dumps(data)}'\n")
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return p


XF_OK = {"torch": "2.7.1+cu126", "xformers": "0.0.31", "device": "NVIDIA H100", "dtype": "bfloat16",
         "diffs": {"dense": 0.0039, "block_diagonal": 0.0039}, "max_abs_diff": 0.0039}  # fmt: skip
XF_DECIDED = [X.Decision("XFORMERS", True, "", "9.0")]


def test_attention_judgement():
    ok = XT.attention(ProbeResult("xformers_check.py", data=XF_OK), XF_DECIDED)
    assert ok.outcome == "passed" and "max abs diff 3.90e-03" in ok.summary
    nan = XT.attention(ProbeResult("x", data=dict(XF_OK, max_abs_diff=float("nan"))), XF_DECIDED)
    assert nan.outcome == "failed" and "python -m xformers.info" in nan.fix
    missing = {
        "torch": "2.11.0+cu130",
        "xformers": None,
        "exception": "ModuleNotFoundError: No module named 'xformers'",
    }
    f = XT.attention(ProbeResult("x", data=missing), XF_DECIDED, "/env/bin/python")
    assert f.outcome == "failed" and "No module named 'xformers'" in f.summary
    hung = XT.attention(ProbeResult("x", problem="killed after 300 s"), XF_DECIDED)
    assert hung.outcome == "error"


def test_conformance_gpu_attention_passes_with_probe(pytester, env_builder, tmp_path, monkeypatch):
    """With a GPU-seeing fake Python the gpu check runs the probe and judges its diff."""
    install_vit_vllm(env_builder, "0.10", xformers="0.0.31")
    torch_ok = {"torch": "2.7.1", "cuda": "12.6", "available": True, "matmul": 64.0,
                "devices": [{"name": "NVIDIA H100", "cc": "9.0"}]}  # fmt: skip
    merged = {**torch_ok, **XF_OK}  # one fake answers both probes
    py = env_builder.prefix / "bin" / "python3"
    py.unlink()
    py.symlink_to(fake_python(tmp_path, merged))
    result = run(pytester, env_builder, tier="gpu")
    result.assert_outcomes(passed=1)
    assert "matches torch SDPA on NVIDIA H100" in checks(pytester)["xformers.attention"]["summary"]


def test_conformance_gpu_attention_skips_when_xformers_unused(pytester, env_builder, tmp_path):
    install_vit_vllm(env_builder, "0.26")
    torch_ok = {"torch": "2.11.0", "cuda": "13.0", "available": True, "matmul": 64.0,
                "devices": [{"name": "NVIDIA H100", "cc": "9.0"}]}  # fmt: skip
    py = env_builder.prefix / "bin" / "python3"
    py.unlink()
    py.symlink_to(fake_python(tmp_path, torch_ok))
    result = run(pytester, env_builder, tier="gpu")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*does not use xformers here (xformers.decision)*"])


def test_attention_that_cannot_run_says_so():
    # the H100 run's words: xformers 0.0.35 next to torch 2.11.0+cu130
    probe = ProbeResult(
        "xformers_check.py",
        data={
            "xformers": "0.0.35",
            "torch": "2.11.0+cu130",
            "device": "NVIDIA H100 80GB HBM3",
            "max_abs_diff": None,
            "exception": "NotImplementedError: No operator found for "
            "`memory_efficient_attention_forward` with inputs:\n query : shape=(1, 401, 16, 80)",
        },
    )
    finding = XT.attention(probe, [])
    assert finding.outcome == "failed"
    assert finding.summary == (
        "xformers 0.0.35 memory_efficient_attention did not run on NVIDIA H100 80GB HBM3: "
        "NotImplementedError: No operator found for `memory_efficient_attention_forward` "
        "with inputs:"
    )


# -- issue 12: xformers pinned by vLLM itself, variants (F4.1, F4.5) -------------------------
def test_cu121_xformers_next_to_cu118_torch_names_the_variant(pytester, env_builder):
    """vLLM #2245 (F4.1): vLLM 0.2.6's cu118 install with PyPI's xformers 0.0.23.post1, whose
    ops were built for 2.1.2+cu121: "xFormers can't load C++/CUDA extensions. xFormers was built
    for: PyTorch 2.1.2+cu121 with CUDA 1201 (you have 2.1.2+cu118)". Only the CUDA variant
    differs, so the fix names the variant (pinning torch 2.1.2 again would change nothing), and
    vLLM 0.2.6 (no Qwen2.5-VL at all) runs all attention on xformers, so it is judged."""
    env_builder.python("3.9")
    env_builder.dist("vllm", "0.2.6", requires=["torch == 2.1.2", "xformers == 0.0.23.post1"])
    env_builder.dist("torch", "2.1.2+cu118", files={"torch/version.py": "cuda = '11.8'\n"})
    cpp = {"version": {"cuda": 1201, "torch": "2.1.2+cu121", "python": "3.9.18"}}
    env_builder.dist(
        "xformers",
        "0.0.23.post1",
        requires=["numpy", "torch ==2.1.2"],
        files={"xformers/cpp_lib.json": json.dumps(cpp)},
    )
    result = run(pytester, env_builder)
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[xformers.torch-pin] FAILED: xformers 0.0.23.post1's compiled ops were built for "
                "torch 2.1.2+cu121 (xformers/cpp_lib.json); the env has torch 2.1.2+cu118*"
            ),
            lit(
                "*fix: install the xformers wheel built for torch 2.1.2+cu118: add `xformers = { "
                'version = "==0.0.23.post1", index = "https://download.pytorch.org/whl/cu118" }` '
                "to [pypi-dependencies] in pixi.toml (if that index has no such build, take the "
                "xformers release it has for 2.1.2+cu118)"
            ),
        ]
    )
    # the run's one CUDA is the installed torch's 11.8 (every other fix keeps it): no torch
    # of xformers' cu121 build is offered (issue 21)
    assert "cu121" not in checks(pytester)["xformers.torch-pin"]["fix"]


def test_vllm_and_xformers_pin_different_torches(pytester, env_builder):
    """vLLM #28551 (F4.5): vLLM 0.11.1rc7 pins torch 2.9.0 and xformers 0.0.32.post2, which
    pins torch 2.8.0. Installed anyway (--no-deps), xformers' ops do not load; the fix names
    the xformers built for 2.9.0 and overrides vLLM's own pin."""
    install_vit_vllm(env_builder, "0.12", torch="2.9.0")
    info = next(env_builder.site_packages.glob("vllm-*.dist-info"))
    meta = info / "METADATA"
    meta.write_text(
        meta.read_text() + "Requires-Dist: xformers==0.0.32.post2; platform_system == 'Linux' and "
        "platform_machine == 'x86_64'\n"
    )
    env_builder.dist("xformers", "0.0.32.post2", requires=["numpy", "torch==2.8.0"])
    result = run(pytester, env_builder)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[xformers.torch-pin] FAILED: xformers 0.0.32.post2 requires torch==2.8.0, but "
                "the env has torch 2.9.0*"
            ),
            lit(
                '*fix: add `xformers = "==0.0.33.post1"`*and override vLLM\'s own pin '
                '(xformers==0.0.32.post2*dependency-overrides = { xformers = "==0.0.33.post1" }*'
            ),
        ]
    )


def test_vllm_without_xformers_and_no_vision_use_skips(pytester, env_builder):
    install_vit_vllm(env_builder, "0.26", xformers="0.0.35", xformers_torch="2.9.0")
    run(pytester, env_builder)
    assert checks(pytester)["xformers.torch-pin"]["outcome"] == "skipped"
