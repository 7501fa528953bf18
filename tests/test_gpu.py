"""gpu probes and judgements, with fake target-env Pythons that print canned JSON."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from fixtures.envs import EnvBuilder
from fixtures.text import lit
from pytest_vllm_env import gpu

GOOD = {
    "torch": "2.11.0+cu130",
    "cuda": "13.0",
    "available": True,
    "devices": [{"name": "NVIDIA H100 80GB HBM3", "cc": "9.0"}],
    "matmul": 64.0,
    "arch_list": ["sm_90"],
}


def fake_python(tmp_path: Path, body: str) -> Path:
    """A 'python' that ignores its script and runs ``body`` (shell)."""
    p = tmp_path / "fakepy"
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return p


def probe(tmp_path, body, timeout=10.0):
    return gpu.run_probe(fake_python(tmp_path, body), "torch_check.py", timeout=timeout)


def test_good_torch_passes(tmp_path):
    f = gpu.torch_cuda(probe(tmp_path, f"echo 'noise'; echo '{json.dumps(GOOD)}'"))
    assert f.outcome == "passed" and "sm 9.0" in f.summary


def test_cpu_only_torch_fails_with_index_fix(tmp_path):
    data = dict(GOOD, cuda=None, available=False, devices=[])
    f = gpu.torch_cuda(probe(tmp_path, f"echo '{json.dumps(data)}'"))
    assert f.outcome == "failed" and "CPU-only" in f.summary and "download.pytorch.org" in f.fix


def test_no_kernel_for_gpu_fails(tmp_path):
    data = dict(GOOD, matmul=None, exception="RuntimeError: no kernel image is available")
    f = gpu.torch_cuda(probe(tmp_path, f"echo '{json.dumps(data)}'"))
    assert f.outcome == "failed" and "arch list" in f.fix


def test_hang_crash_and_bad_json_are_errors(tmp_path):
    hang = gpu.torch_cuda(probe(tmp_path, "sleep 30", timeout=1))
    assert hang.outcome == "error" and "killed" in hang.summary
    crash = gpu.torch_cuda(probe(tmp_path, "echo 'Segmentation fault' >&2; exit 139"))
    assert crash.outcome == "error" and "exited 139" in crash.summary
    bad = gpu.torch_cuda(probe(tmp_path, "echo '{not json'"))
    assert bad.outcome == "error" and "no JSON" in bad.summary


def _run(data):
    return gpu.ProbeResult("vllm_generate.py", data=data)


def test_vllm_generate_judgement():
    ok = {"vllm": "0.26.0", "tokens": [5, 6, 7], "quant_config": "ModelOptFp8Config"}
    assert gpu.vllm_generates([_run(ok), _run(ok)], "m", "modelopt").outcome == "passed"
    differ = dict(ok, tokens=[5, 6, 8])
    assert gpu.vllm_generates([_run(ok), _run(differ)], "m", "modelopt").outcome == "failed"
    wrong_q = dict(ok, quant_config="Fp8Config")
    assert "not ModelOpt" in gpu.vllm_generates([_run(wrong_q)], "m", "modelopt").summary
    no_fi = {"exception": "ModuleNotFoundError: No module named 'flashinfer'", "tokens": None}
    f = gpu.vllm_generates([_run(no_fi)], "m", "modelopt")
    assert f.outcome == "failed" and "VLLM_USE_FLASHINFER_SAMPLER=0" in f.fix
    assert gpu.vllm_generates([], "", None).outcome == "skipped"


def test_conformance_cpu_torch_fails_with_fix(pytester, env_builder: EnvBuilder, tmp_path):
    data = dict(GOOD, cuda=None, available=False, devices=[])
    env_builder.python(executable=str(fake_python(tmp_path, f"echo '{json.dumps(data)}'")))
    result = pytester.runpytest(
        "--vllm-conformance",
        "-p",
        "no:randomly",
        "-m",
        "gpu",
        "-k",
        "test_torch_uses_gpu",
        "--vllm-env",
        str(env_builder.prefix),
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [lit("*[gpu.torch-cuda] FAILED: torch 2.11.0+cu130 is a CPU-only*")]
    )


def test_conformance_gpu_and_generate_skip_without_gpu(pytester, env_builder: EnvBuilder, tmp_path):
    data = dict(GOOD, available=False, devices=[])
    env_builder.python(executable=str(fake_python(tmp_path, f"echo '{json.dumps(data)}'")))
    result = pytester.runpytest(
        "--vllm-conformance",
        "-p",
        "no:randomly",
        "-m",
        "gpu",
        "-k",
        "test_gpu.py",
        "-rs",
        "--vllm-env",
        str(env_builder.prefix),
        "--reference-checkpoint",
        str(tmp_path),
    )
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*no GPU visible to the target env's torch*"])
