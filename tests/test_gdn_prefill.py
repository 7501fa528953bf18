# ruff: noqa: E501  (expected messages are kept whole: they are what users read)
"""modelopt.gdn-prefill-backend, run as users run it: the conformance suite against fixture
envs whose vLLM files are stand-ins with each generation's rule (fixtures/gdn_standin.py),
and the real committed ModelOpt FP8 export of a tiny Qwen3.5 (three Gated-DeltaNet layers,
one full-attention layer) whose first prefill died on the H100 without flashinfer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.envs import EnvBuilder
from fixtures.gdn_standin import gdn_files, install_gdn_vllm
from pytest_vllm_env.checks import gdn_prefill as G
from pytest_vllm_env.readers import vllm_gdn as R
from pytest_vllm_env.tables.archs import parse_arch

REPO = Path(__file__).resolve().parents[1]
QWEN35 = REPO / "fixtures" / "modelopt_export" / "qwen35vl-kv-fp8"
LLAMA = REPO / "fixtures" / "modelopt_export" / "llama-fp8"
SUITE = ("--vllm-conformance", "-p", "no:randomly", "-m", "toolchain", "-k", "test_kernels")
CID = "modelopt.gdn-prefill-backend"


def run(pytester: pytest.Pytester, env: EnvBuilder, ckpt: Path, *extra: str, arch="9.0"):
    args = [*SUITE, f"--vllm-env={env.prefix}", f"--modelopt-checkpoint={ckpt}", "-rs"]
    if arch:
        args.append(f"--cuda-arch={arch}")
    report = pytester.path / "report.json"
    result = pytester.runpytest(*args, f"--vllm-env-report={report}", *extra)
    assert "Traceback" not in result.stdout.str()
    return result


def finding(pytester: pytest.Pytester) -> dict:
    checks = json.loads((pytester.path / "report.json").read_text())["checks"]
    return next(c for c in checks if c["id"] == CID)


def qwen35_like(tmp_path: Path, **text: object) -> Path:
    """The real export's config.json with text-config keys changed (weights not needed)."""
    folder = tmp_path / "qwen35-variant"
    folder.mkdir()
    config = json.loads((QWEN35 / "config.json").read_text())
    for key, value in text.items():
        if value is None:
            config["text_config"].pop(key, None)
        else:
            config["text_config"][key] = value
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("hf_quant_config.json", "model.safetensors"):
        (folder / name).symlink_to(QWEN35 / name)
    return folder


# -- the real failure and its fixes ---------------------------------------------------------
def test_qwen35_on_hopper_without_flashinfer_fails_as_on_the_h100(pytester, env_builder):
    """Measured on an H100: vLLM 0.26.0, torch 2.11.0+cu130, no flashinfer: the export loads,
    then the first prefill dies with "No module named 'flashinfer'" at
    qwen_gdn_linear_attn.py:174."""
    install_gdn_vllm(env_builder)
    result = run(pytester, env_builder, QWEN35)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            '*[[]modelopt.gdn-prefill-backend[]] FAILED: qwen35vl-kv-fp8 (Qwen3_5ForConditionalGeneration, 3 of 4 layers Gated-DeltaNet): vLLM 0.26.0 runs its prefill on FlashInfer on sm 9.0 (requested "auto", sm 9.0 is 9.0; vllm/model_executor/layers/mamba/gdn/qwen_gdn_linear_attn.py:_resolve_gdn_prefill_backend), but flashinfer-python is not installed: the model loads, then the first prefill dies with "ModuleNotFoundError: No module named \'flashinfer\'" (raised at vllm/model_executor/layers/mamba/gdn/qwen_gdn_linear_attn.py:*)',
            '*fix: add `flashinfer-python = "==0.6.14"` to [[]pypi-dependencies[]] in pixi.toml (vLLM 0.26.0\'s own Requires-Dist pins flashinfer-python==0.6.14); or run the Triton/FLA prefill kernel instead: `vllm serve ... --gdn-prefill-backend triton` or `LLM(..., gdn_prefill_backend="triton")` or `--additional-config \'{"gdn_prefill_backend": "triton"}\'`, and tell this suite with --vllm-additional-config=\'{"gdn_prefill_backend": "triton"}\'',
        ]
    )
    f = finding(pytester)
    assert f["evidence"]["vllm_effect"] == "refuses"
    assert f["evidence"]["linear_attention_layers"] == 3


def test_flashinfer_installed_passes(pytester, env_builder):
    install_gdn_vllm(env_builder, flashinfer="0.6.14")
    run(pytester, env_builder, QWEN35).assert_outcomes(passed=1)
    assert "; flashinfer-python 0.6.14 is installed" in finding(pytester)["summary"]
    assert "sm 9.0: FlashInfer" in finding(pytester)["summary"]


def test_flashinfer_without_gdn_prefill_module_fails(pytester, env_builder):
    # an older flashinfer-python (before its gdn_prefill module) next to vLLM 0.26.0
    install_gdn_vllm(env_builder, flashinfer="0.5.3", flashinfer_gdn=False)
    run(pytester, env_builder, QWEN35).assert_outcomes(failed=1)
    f = finding(pytester)
    assert "No module named 'flashinfer.gdn_prefill'" in f["summary"]
    assert f["fix"].startswith('pin `flashinfer-python = "==0.6.14"` in [pypi-dependencies]')


def test_triton_requested_passes(pytester, env_builder):
    install_gdn_vllm(env_builder)
    result = run(
        pytester, env_builder, QWEN35, '--vllm-additional-config={"gdn_prefill_backend": "triton"}'
    )
    result.assert_outcomes(passed=1)
    assert (
        'sm 9.0: Triton/FLA: sm 9.0 is 9.0, but requested "triton"' in finding(pytester)["summary"]
    )


def test_bad_additional_config_is_a_usage_error(pytester, env_builder):
    install_gdn_vllm(env_builder)
    result = pytester.runpytest(
        *SUITE, f"--vllm-env={env_builder.prefix}", "--vllm-additional-config=triton"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--vllm-additional-config: 'triton' is not JSON*"])


def test_llama_skips(pytester, env_builder):
    install_gdn_vllm(env_builder)
    run(pytester, env_builder, LLAMA).assert_outcomes(skipped=1)
    assert (
        "LlamaForCausalLM builds no Gated-DeltaNet (linear attention) layers in vLLM 0.26.0"
        in finding(pytester)["summary"]
    )


def test_no_linear_attention_layers_skips(pytester, env_builder, tmp_path):
    install_gdn_vllm(env_builder)
    ckpt = qwen35_like(tmp_path, layer_types=["full_attention"] * 4)
    run(pytester, env_builder, ckpt).assert_outcomes(skipped=1)
    assert "has no linear_attention layers" in finding(pytester)["summary"]


def test_ampere_and_consumer_blackwell_take_triton(pytester, env_builder):
    install_gdn_vllm(env_builder)
    run(pytester, env_builder, QWEN35, "--cuda-arch=12.0", arch="8.0").assert_outcomes(passed=1)
    summary = finding(pytester)["summary"]
    assert "sm 8.0: Triton/FLA: sm 8.0 takes no FlashInfer GDN kernel" in summary
    assert "sm 12.0: Triton/FLA" in summary


def test_no_arch_skips_asking_for_one(pytester, env_builder, monkeypatch):
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    install_gdn_vllm(env_builder)
    run(pytester, env_builder, QWEN35, arch=None).assert_outcomes(skipped=1)
    assert "give --cuda-arch" in finding(pytester)["summary"]


# -- the Blackwell (10.x) branch: head_k_dim 128 and torch's CUDA >= 13 ------------------------
@pytest.mark.parametrize(
    ("head", "torch_cuda", "outcome", "words"),
    [
        (128, "13.0", "failed", "runs its prefill on FlashInfer on sm 10.0"),
        (128, "12.8", "passed", "Triton/FLA: torch's CUDA 12.8 is below 13"),
        (None, "13.0", "failed", "runs its prefill on FlashInfer on sm 10.0"),  # default 128
        (32, "13.0", "passed", "Triton/FLA: linear_key_head_dim 32 is not 128"),
        (128, None, "skipped", "torch's CUDA version is not known"),
    ],
)
def test_blackwell_rule(pytester, env_builder, tmp_path, head, torch_cuda, outcome, words):
    install_gdn_vllm(env_builder, torch_cuda=torch_cuda)
    ckpt = QWEN35 if head == 32 else qwen35_like(tmp_path, linear_key_head_dim=head)
    run(pytester, env_builder, ckpt, arch="10.0")
    f = finding(pytester)
    assert f["outcome"] == outcome, f
    assert words in f["summary"]


def test_cu12_torch_version_local_part_is_read(pytester, env_builder, tmp_path):
    # no torch/version.py (a lock-like record): the +cu128 of the dist version decides
    install_gdn_vllm(env_builder, torch="2.11.0+cu128", torch_cuda=None)
    (env_builder.site_packages / "torch" / "version.py").unlink()
    run(pytester, env_builder, qwen35_like(tmp_path, linear_key_head_dim=128), arch="10.0")
    assert "torch's CUDA 12.8 is below 13" in finding(pytester)["summary"]


def test_cutedsl_request_without_its_packages_fails(pytester, env_builder, tmp_path):
    install_gdn_vllm(env_builder)
    ckpt = qwen35_like(tmp_path, linear_key_head_dim=128)
    result = run(
        pytester,
        env_builder,
        ckpt,
        '--vllm-additional-config={"gdn_prefill_backend": "cutedsl"}',
        arch="10.0",
    )
    result.assert_outcomes(failed=1)
    f = finding(pytester)
    assert "No module named 'quack'" in f["summary"]
    assert "quack-kernels" in f["fix"] and "nvidia-cutlass-dsl" in f["fix"]


# -- other vLLM generations ------------------------------------------------------------------
def test_vllm_012_runs_fla_triton_only(pytester, env_builder, tmp_path):
    install_gdn_vllm(env_builder, "0.12", torch="2.9.0")
    config = json.loads((QWEN35 / "config.json").read_text())["text_config"]
    ckpt = tmp_path / "qwen3-next"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(
        json.dumps(dict(config, architectures=["Qwen3NextForCausalLM"], model_type="qwen3_next"))
    )
    run(pytester, env_builder, ckpt).assert_outcomes(passed=1)
    assert "runs the Gated-DeltaNet prefill on FLA's Triton kernels" in finding(pytester)["summary"]


def test_first_flashinfer_release_has_no_way_out(pytester, env_builder, tmp_path):
    # vLLM PR #32846: FlashInfer on sm 9.0 with no request to turn it off
    install_gdn_vllm(env_builder, "pr32846")
    config = json.loads((QWEN35 / "config.json").read_text())["text_config"]
    ckpt = tmp_path / "qwen3-next"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(
        json.dumps(dict(config, architectures=["Qwen3NextForCausalLM"]))
    )
    run(pytester, env_builder, ckpt).assert_outcomes(failed=1)
    f = finding(pytester)
    assert "no way to choose" in f["summary"]
    assert "this vLLM has no way to ask for another kernel" in f["fix"]
    assert "0.6.3" in f["fix"]


def test_unreadable_rule_falls_back_to_026(pytester, env_builder):
    install_gdn_vllm(env_builder, files={R.GDN_LAYER_PY: "from flashinfer.gdn_prefill import x\n"})
    run(pytester, env_builder, QWEN35).assert_outcomes(failed=1)
    assert "vLLM 0.26.0's rule is used" in finding(pytester)["summary"]


# -- units -------------------------------------------------------------------------------------
def test_parse_standins():
    rule = R.parse_gdn(gdn_files("0.26"))
    assert rule.kind == "resolver"
    assert (rule.exact, rule.family, rule.family_head_k_dim, rule.family_min_cuda) == (
        (90,),
        100,
        128,
        13,
    )
    assert rule.config_key == "gdn_prefill_backend" and rule.default_request == "auto"
    assert rule.cli_flag == "--gdn-prefill-backend" and rule.engine_arg == "gdn_prefill_backend"
    assert rule.architectures == ("Qwen3NextForCausalLM", "Qwen3_5ForConditionalGeneration")
    assert rule.flashinfer_import == f"{R.GDN_LAYER_PY}:28"
    assert R.parse_gdn(gdn_files("0.12")).kind == "fla-only"
    assert R.parse_gdn(gdn_files("pr32846")).kind == "sm90"


def test_decide_sm90a_and_b300():
    rule = R.VLLM_0_26
    assert G.decide(rule, parse_arch("9.0a"), 128, "12.8", None).backend == "flashinfer"
    assert G.decide(rule, parse_arch("10.3"), 128, "13.0", "auto").backend == "flashinfer"
    assert G.decide(rule, parse_arch("10.0"), 128, "13.0", "cutedsl").backend == "cutedsl"
    assert G.decide(rule, parse_arch("9.0"), 128, "13.0", "cutedsl").backend == "triton"
    assert G.decide(rule, parse_arch("8.9"), 128, "13.0", "flashinfer").backend == "triton"


def test_layers_default_pattern():
    layers = G.gdn_layers({"architectures": ["Qwen3NextForCausalLM"], "num_hidden_layers": 48})
    assert (layers.linear, layers.total, layers.head_k_dim) == (36, 48, 128)


def test_requirement_pin_ignores_extras():
    assert G.requirement_pin(["flashinfer-python==0.6.14"]) == "==0.6.14"
    assert G.requirement_pin(['flashinfer-python==0.2.11; extra == "flashinfer"']) is None


# -- the gpu tier's comparison and the probe ---------------------------------------------------
def _h100_refusal():
    from pytest_vllm_env.facts.gpu_probe import ProbeResult

    return ProbeResult(
        "vllm_generate.py",
        data={
            "tokens": None,
            "exception": "ModuleNotFoundError: No module named 'flashinfer'",
            "exception_frame": {
                "file": "/venv/lib/python3.12/site-packages/vllm/model_executor/layers/mamba/gdn/qwen_gdn_linear_attn.py",
                "line": 174,
                "code": "from flashinfer.gdn_prefill import (",
            },
        },
    )


def test_prediction_agrees_that_vllm_refuses(tmp_path):
    from pytest_vllm_env.checks import gpu_prediction
    from pytest_vllm_env.readers.checkpoint import read_checkpoint

    ckpt = read_checkpoint(str(QWEN35), QWEN35)
    env = G.GdnEnv(vllm="0.26.0", torch_cuda="13.0", vllm_flashinfer_pin="==0.6.14")
    predicted = G.gdn_prefill_backend(ckpt, R.VLLM_0_26, [parse_arch("9.0")], env)
    assert predicted.outcome == "failed"
    agrees = gpu_prediction.prediction_agrees([predicted], _h100_refusal(), [], "qwen35vl-kv-fp8")
    assert agrees.outcome == "passed", agrees
    assert "predicted 'vLLM refuses it' and vLLM agreed" in agrees.summary
    assert agrees.evidence["predicted_by"] == [CID]
    # with Triton requested the prediction is 'works': a refusal then is a disagreement
    triton = G.GdnEnv(vllm="0.26.0", torch_cuda="13.0", requested="triton")
    works = G.gdn_prefill_backend(ckpt, R.VLLM_0_26, [parse_arch("9.0")], triton)
    assert works.outcome == "passed"
    assert gpu_prediction.prediction_agrees([works], _h100_refusal(), [], "q").outcome == "warning"


def test_probe_gets_the_additional_config(pytester):
    from pytest_vllm_env.plugins.gpu import probe_settings

    config = pytester.parseconfigure('--vllm-additional-config={"gdn_prefill_backend": "triton"}')
    assert probe_settings(config) == {
        "VLLM_ENV_PROBE_ADDITIONAL_CONFIG": '{"gdn_prefill_backend": "triton"}'
    }
    assert probe_settings(pytester.parseconfigure()) == {}


def test_flashinfer_without_cutlass_dsl_fails_on_hopper(pytester, env_builder):
    """Measured on the H100 (vLLM 0.26.0, flashinfer-python 0.6.14 whose nvidia-cutlass-dsl was
    not importable): flashinfer swallows the ImportError, then its sm 9.0 prefill raises
    "SM90 GDN prefill DSL kernel is unavailable" (flashinfer/gdn_prefill.py:456)."""
    install_gdn_vllm(env_builder, flashinfer="0.6.14", cutlass_dsl=False)
    run(pytester, env_builder, QWEN35).assert_outcomes(failed=1)
    f = finding(pytester)
    assert f["summary"].endswith(
        "and flashinfer-python 0.6.14 runs it there on a CuTe DSL kernel "
        "(flashinfer/gdn_kernels/delta_rule_dsl), which needs nvidia-cutlass-dsl, not installed: "
        'the first prefill dies with "NotImplementedError: SM90 GDN prefill DSL kernel is '
        'unavailable"'
    )
    assert f["fix"].startswith(
        'add `nvidia-cutlass-dsl = "==4.6.0"` to [pypi-dependencies] in pixi.toml'
    )
    assert "(vLLM 0.26.0's Requires-Dist: nvidia-cutlass-dsl[cu13]==4.6.0)" in f["fix"]
    assert "--gdn-prefill-backend triton" in f["fix"]
    assert f["evidence"]["vllm_effect"] == "refuses"
    # Ampere takes Triton: flashinfer's DSL kernel is not used, nothing to fail
    run(pytester, env_builder, QWEN35, arch="8.0").assert_outcomes(passed=1)
