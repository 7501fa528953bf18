"""gpu probes and judgements, with fake target-env Pythons that print canned JSON."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from fixtures.elf import cuda_so, nvcc
from fixtures.envs import EnvBuilder
from fixtures.gpu_standins import add_file, standin_env
from fixtures.text import lit
from pytest_vllm_env.checks import gpu_device, gpu_prediction, gpu_vllm_load, gpu_vllm_output
from pytest_vllm_env.facts.gpu_probe import BinaryImages, ProbeResult
from pytest_vllm_env.readers.fatbin import FatbinImage
from pytest_vllm_env.runners import gpu
from pytest_vllm_env.tables.archs import parse_arch

EXPORT = Path(__file__).parent.parent / "fixtures" / "modelopt_export" / "llama-fp8"
# by test name (-k also matches the pytester directory, which is named after our test)
VLLM_TESTS = "test_vllm_loads_and_generates or test_vllm_matches_reference"
needs_nvcc = pytest.mark.skipif(nvcc() is None, reason="nvcc not found")

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
    f = gpu_device.torch_cuda(probe(tmp_path, f"echo 'noise'; echo '{json.dumps(GOOD)}'"))
    assert f.outcome == "passed" and "sm 9.0" in f.summary


def test_cpu_only_torch_fails_with_index_fix(tmp_path):
    data = dict(GOOD, cuda=None, available=False, devices=[])
    f = gpu_device.torch_cuda(probe(tmp_path, f"echo '{json.dumps(data)}'"))
    assert f.outcome == "failed" and "CPU-only" in f.summary and "download.pytorch.org" in f.fix


def test_no_kernel_for_gpu_fails(tmp_path):
    data = dict(GOOD, matmul=None, exception="RuntimeError: no kernel image is available")
    f = gpu_device.torch_cuda(probe(tmp_path, f"echo '{json.dumps(data)}'"))
    assert f.outcome == "failed" and "arch list" in f.fix


def test_hang_crash_and_bad_json_are_errors(tmp_path):
    hang = gpu_device.torch_cuda(probe(tmp_path, "sleep 30", timeout=1))
    assert hang.outcome == "error" and "killed" in hang.summary
    crash = gpu_device.torch_cuda(probe(tmp_path, "echo 'Segmentation fault' >&2; exit 139"))
    assert crash.outcome == "error" and "exited 139" in crash.summary
    bad = gpu_device.torch_cuda(probe(tmp_path, "echo '{not json'"))
    assert bad.outcome == "error" and "no JSON" in bad.summary


def _run(data):
    return ProbeResult("vllm_generate.py", data=data)


def test_vllm_generate_judgement():
    ok = {"vllm": "0.26.0", "tokens": [5, 6, 7], "quant_config": "ModelOptFp8Config"}
    assert gpu_vllm_load.vllm_generates([_run(ok), _run(ok)], "m", "modelopt").outcome == "passed"
    differ = dict(ok, tokens=[5, 6, 8])
    assert (
        gpu_vllm_load.vllm_generates([_run(ok), _run(differ)], "m", "modelopt").outcome == "failed"
    )
    wrong_q = dict(ok, quant_config="Fp8Config")
    assert "not ModelOpt" in gpu_vllm_load.vllm_generates([_run(wrong_q)], "m", "modelopt").summary
    no_fi = {"exception": "ModuleNotFoundError: No module named 'flashinfer'", "tokens": None}
    f = gpu_vllm_load.vllm_generates([_run(no_fi)], "m", "modelopt")
    assert f.outcome == "failed" and "add flashinfer-python" in f.fix
    assert "VLLM_USE_FLASHINFER_SAMPLER" not in f.fix  # nothing says the sampler needed it
    assert gpu_vllm_load.vllm_generates([], "", None).outcome == "skipped"
    nvfp4 = dict(ok, quant_config="ModelOptNvFp4Config")
    assert gpu_vllm_load.vllm_generates([_run(nvfp4)], "m", "modelopt_fp4").outcome == "passed"


def _died_at(file: str, line: int, code: str) -> ProbeResult:
    return _run(
        {
            "exception": "ModuleNotFoundError: No module named 'flashinfer'",
            "tokens": None,
            "exception_frame": {"file": file, "line": line, "code": code},
        }
    )


def test_flashinfer_fix_depends_on_the_frame_that_needed_it():
    # Measured on the H100 (vLLM 0.26.0, no flashinfer): a Qwen3.5 export's first prefill died
    # here. VLLM_USE_FLASHINFER_SAMPLER steers only the sampler: for the GDN prefill it would
    # change nothing, so the fix names the kernel choice instead.
    site = "/venv/lib/python3.12/site-packages/vllm"
    gdn = _died_at(
        f"{site}/model_executor/layers/mamba/gdn/qwen_gdn_linear_attn.py",
        174,
        "from flashinfer.gdn_prefill import (",
    )
    f = gpu_vllm_load.vllm_generates([gdn], "qwen35", "modelopt")
    assert f.outcome == "failed"
    assert "raised at vllm/model_executor/layers/mamba/gdn/qwen_gdn_linear_attn.py:174" in f.summary
    assert "VLLM_USE_FLASHINFER_SAMPLER" not in f.fix
    assert "Gated-DeltaNet prefill" in f.fix and "--gdn-prefill-backend triton" in f.fix
    assert "modelopt.gdn-prefill-backend" in f.fix
    sampler = _died_at(
        f"{site}/v1/sample/ops/topk_topp_sampler.py", 30, "import flashinfer.sampling"
    )
    f = gpu_vllm_load.vllm_generates([sampler], "m", "modelopt")
    assert 'VLLM_USE_FLASHINFER_SAMPLER = "0"' in f.fix and "gdn" not in f.fix


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
        "test_gpu.py and test_torch_uses_gpu",
        "--vllm-env",
        str(env_builder.prefix),
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [lit("*[gpu.torch-cuda] FAILED: torch 2.11.0+cu130 is a CPU-only*")]
    )


def gpu_run(pytester, builder: EnvBuilder, *args: str, k: str = "", report: Path | None = None):
    """The bundled gpu tier's ``test_gpu.py`` (other modules with gpu tests stay out) against
    ``builder``'s env; ``k`` narrows it to some tests; optionally writes the JSON report."""
    extra = ["--vllm-env-report", str(report)] if report else []
    select = "test_gpu.py" + (f" and ({k})" if k else "")
    return pytester.runpytest(
        "--vllm-conformance",
        "-p",
        "no:randomly",
        "-m",
        "gpu",
        "-k",
        select,
        "-rs",
        "--vllm-env",
        str(builder.prefix),
        *extra,
        *args,
    )


def checks(report: Path, cid: str) -> list[dict[str, Any]]:
    return [c for c in json.loads(report.read_text())["checks"] if c["id"] == cid]


# -- gpu.device-coverage ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def torch_libs(tmp_path_factory) -> dict[str, bytes]:
    """libtorch_cuda.so stand-ins compiled by nvcc: SASS sm_90, and SASS sm_80 only."""
    if nvcc() is None:
        pytest.skip("nvcc not found")
    root = tmp_path_factory.mktemp("torchlib")
    return {
        name: cuda_so(root / f"{name}.so", [f"arch=compute_{n},code=sm_{n}"]).read_bytes()
        for name, n in (("sm90", 90), ("sm80", 80))
    }


@needs_nvcc
def test_device_covered_by_torch_passes(pytester, env_builder, torch_libs):
    standin_env(env_builder)
    add_file(env_builder, "torch/lib/libtorch_cuda.so", torch_libs["sm90"])
    result = gpu_run(pytester, env_builder, "-rA", k="test_gpu_covered_by_binaries")
    result.assert_outcomes(passed=1)


@needs_nvcc
def test_device_not_covered_by_torch_fails(pytester, env_builder, torch_libs):
    # torch built for Ampere only on an H100: imports fine, first kernel "no kernel image".
    standin_env(env_builder)
    add_file(env_builder, "torch/lib/libtorch_cuda.so", torch_libs["sm80"])
    result = gpu_run(pytester, env_builder, k="test_gpu_covered_by_binaries")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[gpu.device-coverage] FAILED: 1 binary/GPU pair(s) without kernels: "
                "torch/lib/libtorch_cuda.so has no kernels for sm 9.0 (SASS sm_80; PTX none)*"
            ),
            "*fix: install a torch wheel built with kernels for 9.0*",
        ]
    )


def test_gpu_not_among_cuda_arch_fails_naming_the_setting(pytester, env_builder):
    # The env was built for an RTX 5090 (--cuda-arch 12.0); the runner has an H100.
    standin_env(env_builder)
    result = gpu_run(pytester, env_builder, "--cuda-arch", "12.0", k="test_gpu_covered_by_binaries")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[gpu.device-coverage] FAILED: the visible GPU NVIDIA H100 80GB HBM3 (sm 9.0) "
                "is not among the target archs 12.0 (--cuda-arch)*"
            ),
            "*fix: *`--cuda-arch=9.0` (instead of 12.0)*",
        ]
    )


def test_torch_arch_list_names_the_activation_line():
    f = gpu_device.device_coverage(
        [("H100", parse_arch("9.0"))],
        [],
        [parse_arch("8.0"), parse_arch("8.6")],
        "TORCH_CUDA_ARCH_LIST",
    )
    assert f.outcome == "failed" and 'TORCH_CUDA_ARCH_LIST = "8.0 8.6 9.0"' in f.fix


def test_device_coverage_reuses_fatbin_rules():
    h100 = [("H100", parse_arch("9.0"))]
    fa3 = BinaryImages("vllm/_fa3.so", [FatbinImage("sass", parse_arch("9.0a"), False)])
    ptx = BinaryImages("vllm/_C.so", [FatbinImage("ptx", parse_arch("8.0"), False)])
    covered = gpu_device.device_coverage(h100, [fa3, ptx])
    assert covered.outcome == "passed"
    # covered through PTX alone: named, and the check that judges the JIT is pointed to
    assert "; 1 only through PTX (whether this driver can JIT it: driver.ptx-jit)" in (
        covered.summary
    )
    assert covered.evidence["ptx_only"] == ["vllm/_C.so"]
    # vLLM 0.26.0's _qutlass_C holds sm_100f only: a Blackwell-only library, not a failure
    qutlass = BinaryImages(
        "vllm/_qutlass_C.abi3.so", [FatbinImage("sass", parse_arch("10.0f"), False)]
    )
    f = gpu_device.device_coverage(h100, [fa3, ptx, qutlass])
    assert f.outcome == "passed" and "1 arch-specific" in f.summary
    generic_100 = BinaryImages("vllm/_C.so", [FatbinImage("sass", parse_arch("10.0"), False)])
    assert gpu_device.device_coverage(h100, [generic_100]).outcome == "failed"
    bad = BinaryImages("vllm/_C.so", None, "not an ELF file")
    assert gpu_device.device_coverage(h100, [fa3, bad]).outcome == "error"
    assert gpu_device.device_coverage(h100, []).outcome == "skipped"


def test_no_gpu_skips_device_and_fp8_with_reason(pytester, env_builder, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no nvidia-smi to fall back to
    standin_env(env_builder, torch={"devices": []})
    result = gpu_run(pytester, env_builder)
    result.assert_outcomes(skipped=10)  # 3 torch/device checks, 7 per-checkpoint ones
    result.stdout.fnmatch_lines(
        [
            "*[[]gpu.device-coverage] no GPU visible (neither the target env's torch nor*",
            "*no GPU visible to the target env's torch*",
            "*no --modelopt-checkpoint given*",
        ]
    )


# -- gpu.torch-fp8 ---------------------------------------------------------------------------
def test_fp8_scaled_mm_passes_on_hopper(pytester, env_builder, tmp_path):
    standin_env(env_builder)
    report = tmp_path / "r.json"
    result = gpu_run(pytester, env_builder, k="test_torch_fp8_scaled_mm", report=report)
    result.assert_outcomes(passed=1)
    (c,) = checks(report, "gpu.torch-fp8")
    assert "<= 0.02 x max|ref|" in c["summary"] and c["evidence"]["max_abs_err"] == 0.0


def test_fp8_wrong_results_fail(pytester, env_builder):
    standin_env(env_builder, torch={"fp8_noise": 3.0})
    result = gpu_run(pytester, env_builder, k="test_torch_fp8_scaled_mm")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*[[]gpu.torch-fp8] FAILED: FP8 _scaled_mm on NVIDIA H100 80GB HBM3 differs*"]
    )


def test_fp8_missing_kernel_fails_with_fix(pytester, env_builder):
    err = (
        "RuntimeError: torch._scaled_mm is only supported on CUDA devices with compute "
        "capability >= 9.0 or 8.9, or ROCm MI300+"
    )
    standin_env(env_builder, torch={"scaled_mm_error": err})
    result = gpu_run(pytester, env_builder, k="test_torch_fp8_scaled_mm")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*only supported on CUDA devices*", "*fix: use torch >= 2.5*"])


def test_fp8_skips_on_ampere_saying_the_cc(pytester, env_builder):
    standin_env(env_builder, torch={"devices": [["NVIDIA A100-SXM4-80GB", [8, 0]]]})
    result = gpu_run(pytester, env_builder, k="test_torch_fp8_scaled_mm")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*compute capability 8.0 < 8.9*"])


# -- gpu.vllm-generate / gpu.vllm-reference / exit -------------------------------------------
def checkpoints(tmp_path: Path, algo: str = "FP8") -> tuple[Path, Path]:
    """A copy of the real ModelOpt export (``quant_algo`` set to ``algo``) and a BF16
    reference dir next to it."""
    fp8 = tmp_path / "ckpt" / "llama-fp8"
    shutil.copytree(EXPORT, fp8)
    hq = json.loads((fp8 / "hf_quant_config.json").read_text())
    hq["quantization"]["quant_algo"] = algo
    (fp8 / "hf_quant_config.json").write_text(json.dumps(hq))
    ref = tmp_path / "ckpt" / "llama-bf16"
    ref.mkdir()
    cfg = json.loads((fp8 / "config.json").read_text())
    cfg.pop("quantization_config", None)
    (ref / "config.json").write_text(json.dumps(cfg))
    return fp8, ref


def vllm_case(pytester, env_builder, tmp_path, behaviour, *args, algo="FP8", ref=True):
    standin_env(env_builder, vllm=behaviour)
    fp8, bf16 = checkpoints(tmp_path, algo)
    report = tmp_path / "report.json"
    extra = ["--reference-checkpoint", str(bf16)] if ref else []
    result = gpu_run(
        pytester,
        env_builder,
        "--modelopt-checkpoint",
        str(fp8),
        *extra,
        *args,
        k=VLLM_TESTS,
        report=report,
    )
    return result, report


def test_vllm_generate_and_reference_pass(pytester, env_builder, tmp_path):
    behaviour = {"llama-fp8": {"logprob": -6.1}, "llama-bf16": {"logprob": -6.3}}
    result, report = vllm_case(pytester, env_builder, tmp_path, behaviour)
    result.assert_outcomes(passed=2)
    (gen,) = checks(report, "gpu.vllm-generate")
    assert "ModelOptFp8Config" in gen["summary"] and "tokens/s" in gen["summary"]
    # one load by default: determinism from two generations in that process
    assert len(gen["evidence"]["load_seconds"]) == 1 and gen["evidence"]["tokens_per_s"][0] > 0
    assert "twice in one process" in gen["summary"]
    (ref,) = checks(report, "gpu.vllm-reference")
    assert "|logprob difference| 0.2000 <= 0.5 nats" in ref["summary"]


def test_multimodal_checkpoint_generates_from_token_ids(pytester, env_builder, tmp_path):
    # the committed tiny Qwen2.5-VL ModelOpt export: without the tokenizer its processor
    # cannot be built, so the probe must ask for no images (it failed that way on the H100)
    standin_env(env_builder, vllm={"qwen-vl-fp8": {}})
    result = gpu_run(
        pytester,
        env_builder,
        f"--modelopt-checkpoint={EXPORT.parent / 'qwen-vl-fp8'}",
        k="test_vllm_loads_and_generates",
    )
    result.assert_outcomes(passed=1)


def test_reference_logprob_drift_fails_and_the_setting_widens_it(pytester, env_builder, tmp_path):
    behaviour = {"llama-fp8": {"logprob": -5.0}, "llama-bf16": {"logprob": -6.0}}
    result, _ = vllm_case(pytester, env_builder, tmp_path, behaviour)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*[[]gpu.vllm-reference] FAILED: first-token logprob of *llama-fp8 is -5.0000, the "
            "reference's -6.0000: |difference| 1.0000 > 0.5 nats (--vllm-logprob-tolerance)*",
            "*fix: check that --reference-checkpoint is the BF16 original*",
        ]
    )
    wide = pytester.mkdir("wide")
    result, _ = vllm_case(pytester, env_builder, wide, behaviour, "--vllm-logprob-tolerance", "1.5")
    result.assert_outcomes(passed=2)


def test_reference_top1_disagreement_fails(pytester, env_builder, tmp_path):
    behaviour = {"llama-fp8": {"tokens": [5] * 16}, "llama-bf16": {"tokens": [3] * 16}}
    result, _ = vllm_case(pytester, env_builder, tmp_path, behaviour)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*first greedy token of *llama-fp8 is 5, the BF16 reference*"])


def test_no_reference_skips_with_reason(pytester, env_builder, tmp_path):
    result, _ = vllm_case(pytester, env_builder, tmp_path, {}, ref=False)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*no --reference-checkpoint given: nothing to compare with*"])


def test_rejected_checkpoint_fails_quoting_vllm(pytester, env_builder, tmp_path):
    result, _ = vllm_case(pytester, env_builder, tmp_path, {}, algo="INT8_SQ", ref=False)
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[gpu.vllm-generate] FAILED: vLLM could not load/generate with "
                "*ValueError: ModelOpt currently only supports: ['FP8', *"
            ),
            "*fix: re-export the checkpoint with a quant_algo this vLLM supports*",
        ]
    )


def test_engine_died_after_result_is_harmless_noise(pytester, env_builder, tmp_path, monkeypatch):
    # the probe skips vLLM's teardown after its result (no noise at all); with a clean exit
    # asked for, the noise vLLM prints then is classified harmless
    monkeypatch.setenv("VLLM_ENV_PROBE_CLEAN_EXIT", "1")
    result, report = vllm_case(pytester, env_builder, tmp_path, {"llama-fp8": {"died": "after"}})
    result.assert_outcomes(passed=2)
    (gen,) = checks(report, "gpu.vllm-generate")
    assert gen["evidence"]["exit"].startswith("harmless shutdown noise after the result: ")
    assert "Engine core process EngineCore_DP0 died unexpectedly." in gen["evidence"]["exit"]


def test_engine_died_during_generation_fails(pytester, env_builder, tmp_path):
    result, _ = vllm_case(pytester, env_builder, tmp_path, {"llama-fp8": {"died": "before"}})
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*[[]gpu.vllm-generate] FAILED: the vLLM engine died before *llama-fp8 produced "
            "tokens: *Engine core process EngineCore_DP0 died unexpectedly.*",
            "*fix: the vLLM engine died while loading/generating: the real cause is printed*",
            # the reference check does not report the same failure twice
            "*llama-fp8 generated nothing to compare: gpu.vllm-generate says why*",
        ]
    )


def test_hanging_load_is_killed_and_reported(pytester, env_builder, tmp_path):
    result, report = vllm_case(
        pytester,
        env_builder,
        tmp_path,
        {"llama-fp8": {"hang": True}},
        "--vllm-probe-timeout",
        "2",
        ref=False,
    )
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*[[]gpu.vllm-generate] ERROR: loading/generating with *llama-fp8 did not finish "
            "within 2 s (--vllm-probe-timeout) and the probe process group was killed*"
        ]
    )
    (gen,) = checks(report, "gpu.vllm-generate")
    assert gen["outcome"] == "error"


def test_vllm_missing_skips(pytester, env_builder, tmp_path):
    standin_env(env_builder)  # torch only
    fp8, _ = checkpoints(tmp_path)
    result = gpu_run(pytester, env_builder, "--modelopt-checkpoint", str(fp8), k=VLLM_TESTS)
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*vLLM is not installed in *: nothing to load*"])


def test_reference_pairing():
    assert gpu_vllm_output.pair_reference(1, 2, ["a"]) == ("a", None)
    assert gpu_vllm_output.pair_reference(1, 2, ["a", "b"]) == ("b", None)
    ref, problem = gpu_vllm_output.pair_reference(0, 3, ["a", "b"])
    assert ref == "" and problem is not None and "in the same order" in problem.fix


# -- one load, judged without a reference (issue 14) ------------------------------------------
ALL_VLLM = (
    "test_vllm_loads_and_generates or test_vllm_output_sane or test_vllm_perplexity or "
    "test_vllm_known_answer or test_prediction_agrees"
)


def one_load(pytester, env_builder, tmp_path, behaviour, *args, edit=None):
    """The real export (edited by ``edit``) through every per-checkpoint gpu check except
    the reference; returns the result and {check id: finding} from the report."""
    standin_env(env_builder, vllm=behaviour)
    fp8, _ = checkpoints(tmp_path)
    if edit:
        edit(fp8)
    report = tmp_path / "report.json"
    result = gpu_run(
        pytester, env_builder, "--modelopt-checkpoint", str(fp8), *args, k=ALL_VLLM, report=report
    )
    found = {c["id"]: c for c in json.loads(report.read_text())["checks"]}
    return result, found


def test_fresh_process_option_loads_twice(pytester, env_builder, tmp_path):
    result, found = one_load(pytester, env_builder, tmp_path, {}, "--vllm-fresh-process")
    gen = found["gpu.vllm-generate"]
    assert len(gen["evidence"]["load_seconds"]) == 2 and "in 2 fresh processes" in gen["summary"]


def test_tokens_differing_within_one_process_fail(pytester, env_builder, tmp_path):
    behaviour = {"llama-fp8": {"tokens": [3] * 16, "tokens_again": [4] * 16}}
    result, found = one_load(pytester, env_builder, tmp_path, behaviour)
    assert found["gpu.vllm-generate"]["outcome"] == "failed"
    assert "differs between runs of the same prompt" in found["gpu.vllm-generate"]["summary"]


def test_flat_first_token_distribution_fails_without_a_reference(pytester, env_builder, tmp_path):
    # measured on the H100 (vLLM 0.26.0): lm_head not excluded in a tied tiny Llama; every top
    # logprob -log(512), token 0 forever. The old tier passed it ("the same tokens twice").
    behaviour = {"llama-fp8": {"flat": True, "tokens": [0] * 16, "vocab": 512}}
    result, found = one_load(pytester, env_builder, tmp_path, behaviour)
    assert found["gpu.vllm-generate"]["outcome"] == "passed"
    sane = found["gpu.vllm-sane"]
    assert sane["outcome"] == "failed"
    assert (
        "distribution is flat: its top 20 logprobs are all -6.2383 = -log(512)" in sane["summary"]
    )
    assert "token 0 forever" in sane["summary"]
    assert "lm_head is excluded" in sane["fix"]


def test_nan_logprobs_fail(pytester, env_builder, tmp_path):
    result, found = one_load(pytester, env_builder, tmp_path, {"llama-fp8": {"nan": True}})
    assert found["gpu.vllm-sane"]["outcome"] == "failed"
    assert "not finite" in found["gpu.vllm-sane"]["summary"]


def test_good_load_passes_sanity_and_skips_what_it_lacks(pytester, env_builder, tmp_path):
    result, found = one_load(pytester, env_builder, tmp_path, {})
    assert found["gpu.vllm-sane"]["outcome"] == "passed"
    assert "no tokenizer files" in found["gpu.vllm-perplexity"]["summary"]
    assert "no vllm_env_expect.json" in found["gpu.vllm-known-answer"]["summary"]
    agrees = found["gpu.prediction-agrees"]
    assert agrees["outcome"] == "passed", agrees
    assert "predicted 'works' and vLLM agreed" in agrees["summary"]


def _with_tokenizer(folder: Path) -> None:
    (folder / "tokenizer.json").write_text("{}")


@pytest.mark.parametrize(("nll", "outcome"), [(3.0, "passed"), (6.0, "failed")])
def test_perplexity_against_the_vocab_limit(pytester, env_builder, tmp_path, nll, outcome):
    # vocab 512: limit 512 ** 0.95 = 374.8; exp(3) = 20.1 passes, exp(6) = 403.4 fails
    behaviour = {"llama-fp8": {"nll": nll}}
    result, found = one_load(pytester, env_builder, tmp_path, behaviour, edit=_with_tokenizer)
    ppl = found["gpu.vllm-perplexity"]
    assert ppl["outcome"] == outcome, ppl
    assert "374.8 (= vocab 512 ** 0.95" in ppl["summary"]


def test_perplexity_exponent_setting(pytester, env_builder, tmp_path):
    behaviour = {"llama-fp8": {"nll": 6.0}}
    result, found = one_load(
        pytester,
        env_builder,
        tmp_path,
        behaviour,
        "--vllm-perplexity-exponent",
        "0.97",
        edit=_with_tokenizer,
    )
    assert found["gpu.vllm-perplexity"]["outcome"] == "passed"


def _expect(answer: list[int]):
    def edit(folder: Path) -> None:
        data = {"prompt_token_ids": [1, 2, 3], "expected_token_ids": answer}
        (folder / "vllm_env_expect.json").write_text(json.dumps(data))

    return edit


def test_known_answer_right_and_wrong(pytester, env_builder, tmp_path):
    behaviour = {"llama-fp8": {"answer": [4, 5, 6]}}
    result, found = one_load(pytester, env_builder, tmp_path, behaviour, edit=_expect([4, 5, 6]))
    assert found["gpu.vllm-known-answer"]["outcome"] == "passed"
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    result, found = one_load(
        pytester, env_builder, wrong, {"llama-fp8": {"answer": [4, 4, 4]}}, edit=_expect([4, 5, 6])
    )
    known = found["gpu.vllm-known-answer"]
    assert known["outcome"] == "failed"
    assert (
        "it generated [4, 4, 4], the known answer is [4, 5, 6] (1 of 3 right)" in known["summary"]
    )
    # the static tier saw nothing wrong: that disagreement is reported as its own finding
    agrees = found["gpu.prediction-agrees"]
    assert agrees["outcome"] == "warning"
    assert (
        "predicted 'works' (every toolchain check passed), but vLLM loaded it and computed"
        in (agrees["summary"])
    )


def test_load_failure_quotes_frame_and_tensor(pytester, env_builder, tmp_path):
    # vLLM 0.26.0 on the H100: a per-tensor weight_scale of shape [out_features] dies in
    # parameter.py with a bare AssertionError; the old tier said "AssertionError: " and
    # "read the output above"
    tensor = "model.layers.0.self_attn.qkv_proj.weight_scale"
    behaviour = {"llama-fp8": {"raise": {"type": "AssertionError", "tensor": tensor}}}

    def edit(folder: Path) -> None:
        _set_scale_shape(folder, "model.layers.0.self_attn.q_proj.weight_scale", [64])

    result, found = one_load(pytester, env_builder, tmp_path, behaviour, edit=edit)
    gen = found["gpu.vllm-generate"]
    assert gen["outcome"] == "failed"
    assert "AssertionError: ; raised at vllm/model_executor/parameter.py:" in gen["summary"]
    assert "(assert param_data == loaded_weight) while loading " + tensor in gen["summary"]
    assert "has a shape vLLM's loader does not accept" in gen["fix"]
    agrees = found["gpu.prediction-agrees"]
    assert agrees["outcome"] == "passed", agrees
    assert agrees["summary"].endswith(
        f"predicted 'vLLM refuses it' and vLLM agreed (tensor {tensor})"
    )


def test_prediction_names_another_tensor_than_vllm(pytester, env_builder, tmp_path):
    behaviour = {
        "llama-fp8": {
            "raise": {"type": "AssertionError", "tensor": "model.layers.1.mlp.down_proj.weight"}
        }
    }

    def edit(folder: Path) -> None:
        _set_scale_shape(folder, "model.layers.0.self_attn.q_proj.weight_scale", [64])

    result, found = one_load(pytester, env_builder, tmp_path, behaviour, edit=edit)
    agrees = found["gpu.prediction-agrees"]
    assert agrees["outcome"] == "warning"
    assert "for different tensors" in agrees["summary"]


def _set_scale_shape(folder: Path, name: str, shape: list[int]) -> None:
    from fixtures import variants

    variants.edit_tensors(folder, {name: variants.repeat_scalar(shape)})


def _fake_smi(tmp_path, monkeypatch) -> None:
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho 9.0\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}:/usr/bin:/bin")


def test_parallel_loads_share_the_gpu(pytester, env_builder, tmp_path, monkeypatch):
    _fake_smi(tmp_path, monkeypatch)
    log = tmp_path / "loads.log"
    standin_env(env_builder, vllm={"_log": str(log)})
    fp8, _ = checkpoints(tmp_path)
    others = [shutil.copytree(fp8, tmp_path / f"copy{i}") for i in range(3)]
    args = [f"--modelopt-checkpoint={c}" for c in (fp8, *others)]
    result = gpu_run(pytester, env_builder, *args, "--vllm-parallel-loads=4", k=ALL_VLLM)
    assert result.parseoutcomes().get("failed") is None
    lines = log.read_text().split("\n")[:-1]
    assert sorted(line.split()[0] for line in lines) == ["copy0", "copy1", "copy2", "llama-fp8"]
    assert {tuple(line.split()[1:]) for line in lines} == {("0.2", str(256 * 1024 * 1024))}


def test_parallel_loads_must_be_a_whole_number(pytester, env_builder):
    standin_env(env_builder)
    result = gpu_run(pytester, env_builder, "--vllm-parallel-loads=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--vllm-parallel-loads: '0' is out of range (accepted: a whole number >= 1 and <= 64)*"]
    )


def test_loads_start_early_and_never_twice(pytester, env_builder, tmp_path, monkeypatch):
    # with a GPU visible (nvidia-smi), the loads start right after collection, beside the
    # torch probe; every check of the checkpoint (and the reference) waits for that one load
    _fake_smi(tmp_path, monkeypatch)
    log = tmp_path / "loads.log"
    behaviour = {"_log": str(log)}
    standin_env(env_builder, vllm=behaviour)
    fp8, bf16 = checkpoints(tmp_path)
    result = gpu_run(
        pytester,
        env_builder,
        "--modelopt-checkpoint",
        str(fp8),
        "--reference-checkpoint",
        str(bf16),
        k=ALL_VLLM + " or test_vllm_matches_reference",
    )
    result.assert_outcomes(passed=4, skipped=2)  # no tokenizer, no vllm_env_expect.json
    loads = sorted(line.split()[0] for line in log.read_text().splitlines())
    assert loads == ["llama-bf16", "llama-fp8"]


def test_prompt_ids_stay_inside_a_small_vocab(pytester, env_builder, tmp_path):
    # a 62-token counting model died with "device-side assert triggered" on the H100: the
    # probe's fixed prompt held id 99. Now taken modulo the vocab.
    def small(folder: Path) -> None:
        cfg = json.loads((folder / "config.json").read_text())
        cfg["vocab_size"] = 62
        (folder / "config.json").write_text(json.dumps(cfg))

    result, found = one_load(pytester, env_builder, tmp_path, {}, edit=small)
    assert found["gpu.vllm-generate"]["outcome"] == "passed", found["gpu.vllm-generate"]


def test_raised_at_names_the_package_path():
    # seen on the H100: the venv lives in /opt/torch; the frame is torch's own _ops.py
    frame = {"file": "/opt/torch/.venv/lib/python3.12/site-packages/torch/_ops.py", "line": 1269,
             "code": "return self._op(*args, **kwargs)"}  # fmt: skip
    run = ProbeResult("vllm_generate.py", data={"exception_frame": frame})
    assert gpu_vllm_load.raised_at(run) == "torch/_ops.py:1269 (return self._op(*args, **kwargs))"
    staged = dict(frame, file="/tmp/site/vllm/model_executor/parameter.py", line=309, code="")
    run = ProbeResult("vllm_generate.py", data={"exception_frame": staged})
    assert gpu_vllm_load.raised_at(run) == "vllm/model_executor/parameter.py:309"


# -- gpu.kv-scales-loaded (F3.9): the scales vLLM's attention layers really run with ----------
# what the probe read on the H100 (vLLM 0.26.0) from the real Qwen3.5 FP8+KV export
H100_QWEN35_KV = {
    "language_model.model.layers.3.self_attn.attn": [0.00762939453125, 0.0019683837890625]
}


def _kv_run(layers, dtype="fp8_e4m3"):
    return ProbeResult(
        "vllm_generate.py", data={"tokens": [1, 2], "kv_cache_dtype": dtype, "kv_scales": layers}
    )


def test_kv_scales_that_reached_the_layers_pass():
    found = gpu_vllm_output.vllm_kv_scales(_kv_run(H100_QWEN35_KV), "q35", {})
    assert found.outcome == "passed"
    assert "1 attention layer(s) run the fp8_e4m3 KV cache with calibrated scales" in found.summary


def test_kv_scales_dropped_by_the_loader_warn():
    # vLLM #54623: the checkpoint ships calibrated scales, the layers run at 1.0
    layers = dict(H100_QWEN35_KV, **{"language_model.model.layers.7.self_attn.attn": [1.0, 1.0]})
    scales = {"model.language_model.layers.7.self_attn.k_scale": [0.01], "x.v_scale": [0.02]}
    found = gpu_vllm_output.vllm_kv_scales(_kv_run(layers), "q35", scales)
    assert found.outcome == "warning"
    assert found.summary == (
        "q35: 1 of 2 attention layer(s) run the fp8_e4m3 KV cache at scale 1.0 (uncalibrated): "
        "language_model.model.layers.7.self_attn.attn; the checkpoint holds 2 KV scale "
        "tensor(s) that never reached them"
    )
    assert "rename the KV scales as ModelOpt writes them" in found.fix


def test_kv_scales_absent_from_the_checkpoint_warn_and_bf16_cache_passes():
    found = gpu_vllm_output.vllm_kv_scales(_kv_run({"l.0.attn": [1.0, 1.0]}), "c", {})
    assert found.outcome == "warning" and "holds no KV scales for them" in found.summary
    assert (
        gpu_vllm_output.vllm_kv_scales(_kv_run({"l.0.attn": [1.0, 1.0]}, "auto"), "c", {}).outcome
        == "passed"
    )
    unread = ProbeResult("vllm_generate.py", data={"tokens": [1], "kv_scales_exception": "E: x"})
    assert gpu_vllm_output.vllm_kv_scales(unread, "c", {}).outcome == "skipped"


# -- gpu.prediction-agrees on the KV-cache scales (F3.9): the static names against the layers --
KV_EXPORT = EXPORT.parent / "llama-kv-fp8"
# what the probe read on the H100 (vLLM 0.26.0, round 9) from the real Llama FP8+KV export
H100_LLAMA_KV = {
    "model.layers.0.self_attn.attn": [0.00127, 0.00126],
    "model.layers.1.self_attn.attn": [0.00145, 0.00121],
}


def kv_load(pytester, env_builder, tmp_path, variant: str, layers: dict[str, list[float]]):
    """A variant of the real Llama FP8+KV export (of the FP8 one for ``kv-fp8-no-scales``)
    through the gpu checks, the stand-in vLLM reporting ``layers`` as the scales its
    attention layers run with."""
    from fixtures import variants

    src = EXPORT if variant == "kv-fp8-no-scales" else KV_EXPORT
    folder = variants.make(variant, src, tmp_path / "ckpt" / "llama-fp8")
    standin_env(env_builder, vllm={"llama-fp8": {"kv": "fp8_e4m3", "kv_scales": layers}})
    report = tmp_path / "report.json"
    k = ALL_VLLM + " or test_vllm_kv_scales_loaded"
    gpu_run(pytester, env_builder, f"--modelopt-checkpoint={folder}", k=k, report=report)
    return {c["id"]: c for c in json.loads(report.read_text())["checks"]}


def test_kv_scales_predicted_and_loaded_agree(pytester, env_builder, tmp_path):
    found = kv_load(pytester, env_builder, tmp_path, "good", H100_LLAMA_KV)
    agrees = found["gpu.prediction-agrees"]
    assert agrees["outcome"] == "passed", agrees
    assert agrees["summary"].endswith(
        "predicted 'works' and vLLM agreed; both say all 2 attention layer(s) get the "
        "checkpoint's KV scales"
    )
    assert found["gpu.kv-scales-loaded"]["outcome"] == "passed"


def test_kv_scales_lost_where_the_names_said_they_land_is_a_disagreement(
    pytester, env_builder, tmp_path
):
    # vLLM #54623's shape: llm-compressor names (self_attn.k_scale), which the static rule maps
    # onto the layer, yet a layer runs at 1.0: the prediction was wrong, said as its own finding
    layers = dict(H100_LLAMA_KV, **{"model.layers.1.self_attn.attn": [1.0, 1.0]})
    found = kv_load(pytester, env_builder, tmp_path, "kv-names-attn", layers)
    agrees = found["gpu.prediction-agrees"]
    assert agrees["outcome"] == "warning", agrees
    assert (
        "the load agrees ('works'), but not its KV-cache scales: vLLM runs layer 1 at scale "
        "1.0, which the toolchain tier predicted would get the checkpoint's scales"
    ) in agrees["summary"]
    assert agrees["evidence"]["observed_kv_at_one"] == ["layer 1"]
    assert "trust gpu.kv-scales-loaded" in agrees["fix"]
    assert found["gpu.kv-scales-loaded"]["outcome"] == "warning"


def test_kv_scales_missing_predicted_and_seen_agree(pytester, env_builder, tmp_path):
    # no KV scales in the checkpoint: both sides say every layer runs at 1.0 (a cost, warned
    # by modelopt.tensors-complete and gpu.kv-scales-loaded; the prediction was right)
    at_one = {n: [1.0, 1.0] for n in H100_LLAMA_KV}
    found = kv_load(pytester, env_builder, tmp_path, "kv-fp8-no-scales", at_one)
    agrees = found["gpu.prediction-agrees"]
    assert agrees["outcome"] == "passed", agrees
    assert "both say 2 of 2 attention layer(s) run at KV scale 1.0" in agrees["summary"]
    # and the opposite disagreement: predicted at 1.0, vLLM found scales somewhere
    other = tmp_path / "other"
    other.mkdir()
    found = kv_load(pytester, env_builder, other, "kv-fp8-no-scales", H100_LLAMA_KV)
    agrees = found["gpu.prediction-agrees"]
    assert agrees["outcome"] == "warning"
    assert (
        "the toolchain tier predicted layer 0, layer 1 at scale 1.0, but vLLM runs them with "
        "calibrated scales" in agrees["summary"]
    )


def test_layer_keys_match_checkpoint_and_vllm_names():
    key = gpu_prediction._layer_key
    assert key("model.language_model.layers.3.self_attn") == "layer 3"
    assert key("language_model.model.layers.3.self_attn.attn") == "layer 3"
    assert key("mtp.layers.0.self_attn") == "mtp layer 0"
    assert key("model.layers.0.self_attn") != key("mtp.layers.0.self_attn")


def test_load_dying_on_a_missing_module_is_no_checkpoint_disagreement(
    pytester, env_builder, tmp_path
):
    # measured on the H100 (vLLM 0.26.0, no flashinfer): the real Qwen3.5 FP8 export loaded,
    # then its GDN prefill died with "No module named 'flashinfer'"; prediction-agrees warned
    # that the checkpoint rules were wrong. They were not: the env lacks a package.
    behaviour = {"llama-fp8": {"raise": {"type": "ModuleNotFoundError"}}}
    result, found = one_load(pytester, env_builder, tmp_path, behaviour)
    assert found["gpu.vllm-generate"]["outcome"] == "failed"
    agrees = found["gpu.prediction-agrees"]
    assert agrees["outcome"] == "skipped", agrees
    assert (
        "died on a module the env lacks (flashinfer), not on the checkpoint" in (agrees["summary"])
    )


# -- gpu.prediction-agrees counts the loader plan (checkpoint.*), not only the modelopt.* rules --
def test_prediction_counts_the_env_loaders_plan(pytester, env_builder, tmp_path):
    """tied-head-differs (fixtures/loader_variants.py): a tied export carrying a head of its
    own. The modelopt.* rules see nothing wrong; vLLM 0.26.0's loader skips that head
    (checkpoint.parameters, from the env's own loader files) and the logits come from the
    embedding: measured on the GPU (fixtures/measured/loader_truth_h100.json). With the load
    computing wrong here, the prediction must say so from the plan, not "works"."""
    from fixtures import loader_standin, loader_variants
    from fixtures.vllm_standin import REGISTRY_PY, registry_text

    standin_env(env_builder, vllm={"llama-fp8": {"nan": True}})
    loader_files = {
        **loader_standin.files("0.26.0"),
        REGISTRY_PY: registry_text(["LlamaForCausalLM"], [], {}),
    }
    for rel, text in loader_files.items():
        target = env_builder.site_packages / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.write_text(text)
    ckpt = loader_variants.make("tied-head-differs", tmp_path / "ckpt" / "llama-fp8")
    report = tmp_path / "report.json"
    gpu_run(pytester, env_builder, "--modelopt-checkpoint", str(ckpt), k=ALL_VLLM, report=report)
    found = {c["id"]: c for c in json.loads(report.read_text())["checks"]}
    agrees = found["gpu.prediction-agrees"]
    assert agrees["outcome"] == "passed", agrees
    assert agrees["evidence"]["predicted_by"] == ["checkpoint.parameters"]
    assert (
        "predicted 'vLLM loads it but computes wrong results' and vLLM agreed"
        in (agrees["summary"])
    )


# -- the launch's --kv-cache-dtype reaches the load and the prediction (round 14, H100) --------
NVFP4_KV_EXPORT = EXPORT.parent / "algos" / "fp8-default+nvfp4-kv"


def _nvfp4_kv_load(pytester, env_builder, tmp_path, *args):
    """The real ModelOpt 0.47.0 FP8 + NVFP4-KV export through the gpu tier on a stand-in
    vLLM 0.26.0 that behaves as the real one did on the H100: no attention backend for the
    checkpoint's NVFP4 cache, a load with ``--kv-cache-dtype fp8`` or ``bfloat16``."""
    from fixtures import attention_standin

    expect = json.loads((NVFP4_KV_EXPORT / "vllm_env_expect.json").read_text())
    behaviour = {
        "nvfp4kv": {
            "no_attention_backend": ["auto"],
            "kv_as": "nvfp4",
            "answer": expect["expected_token_ids"],  # as measured with fp8 and bfloat16
        }
    }
    standin_env(env_builder, vllm=behaviour)
    files = attention_standin.files("0.26.0")
    files["vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so"] = ""
    for rel, text in files.items():
        add_file(env_builder, rel, text.encode())
    ckpt = tmp_path / "ckpt" / "nvfp4kv"
    shutil.copytree(NVFP4_KV_EXPORT, ckpt)
    report = tmp_path / "report.json"
    gpu_run(pytester, env_builder, f"--modelopt-checkpoint={ckpt}", "--cuda-arch=9.0", *args,
            k=ALL_VLLM, report=report)  # fmt: skip
    return {c["id"]: c for c in json.loads(report.read_text())["checks"]}


def test_attention_refusal_is_predicted(pytester, env_builder, tmp_path):
    # measured: vLLM 0.26.0 refused both NVFP4-KV exports at model construction, and
    # checkpoint.attention-backend said so; gpu.prediction-agrees had counted only the
    # modelopt.* and loader-plan checks, so it warned "predicted 'works'"
    found = _nvfp4_kv_load(pytester, env_builder, tmp_path)
    assert found["gpu.vllm-generate"]["outcome"] == "failed"
    assert "No valid attention backend found" in found["gpu.vllm-generate"]["summary"]
    agrees = found["gpu.prediction-agrees"]
    assert agrees["outcome"] == "passed", agrees
    assert agrees["evidence"]["predicted_by"] == ["checkpoint.attention-backend"]


def test_launch_kv_cache_dtype_reaches_the_load(pytester, env_builder, tmp_path):
    # measured: the same export loads with --kv-cache-dtype fp8 and gives the known answer;
    # the probe had loaded it with the checkpoint's own NVFP4 cache whatever the launch said
    found = _nvfp4_kv_load(
        pytester, env_builder, tmp_path, "--vllm-serve-args=--kv-cache-dtype fp8"
    )
    gen = found["gpu.vllm-generate"]
    assert gen["outcome"] == "passed", gen
    agrees = found["gpu.prediction-agrees"]
    assert agrees["outcome"] == "passed", agrees
    assert agrees["evidence"]["predicted"] == "works"


def test_launch_settings_name_only_what_the_launch_gives(pytester):
    from pytest_vllm_env.plugins.gpu import launch_settings

    config = pytester.parseconfigure("--vllm-serve-args=vllm serve m --kv-cache-dtype fp8 "
                                     "--moe-backend marlin")  # fmt: skip
    assert json.loads(launch_settings(config)["VLLM_ENV_PROBE_ENGINE_ARGS"]) == {
        "kv_cache_dtype": "fp8",
        "moe_backend": "marlin",
    }
    assert launch_settings(pytester.parseconfigure()) == {}
