# ruff: noqa: E501  (expected messages are kept whole: they are what users read)
"""The quant.* checks, run as users run them: the conformance suite with --vllm-checkpoint
against a stand-in vLLM env and the real tiny exports of fixtures/quant_export/ (made on the
CPU by llm-compressor 0.14.0.1 and to the fine-grained FP8 spec), each good one passing and a
real failure of each format failing with its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.envs import EnvBuilder
from fixtures.quant_standin import EXPORTS, VARIANTS, install_vllm_quant

SUITE = (
    "--vllm-conformance",
    "-p",
    "no:randomly",
    "-m",
    "toolchain",
    "-k",
    "test_qfmt_",
)
CHECKS = 8  # the five quant.* checks, and quant.shards, launch-quantization, tensor-parallel
REPO = Path(__file__).resolve().parents[1]
REAL = sorted(p.parent.name for p in EXPORTS.glob("*/config.json") if p.parent.name != "llama-bf16")


def run(
    pytester: pytest.Pytester,
    env: EnvBuilder,
    *ckpt: Path | str,
    arch: str | None = "9.0",
    extra: tuple[str, ...] = (),
):
    """The suite on ``ckpt`` (``=`` form: see tests/test_modelopt.py), with ``extra``
    options (a launch's) -> the result."""
    args = [*SUITE, f"--vllm-env={env.prefix}", *(f"--vllm-checkpoint={c}" for c in ckpt), *extra]
    if arch:
        args += [f"--cuda-arch={a}" for a in arch.split(",")]
    report = pytester.path / "report.json"
    result = pytester.runpytest(*args, "-rs", f"--vllm-env-report={report}")
    assert "Traceback" not in result.stdout.str()
    return result


def verdicts(pytester: pytest.Pytester) -> dict[str, dict]:
    """check id -> {outcome, summary, fix}, from the last run's JSON report."""
    checks = json.loads((pytester.path / "report.json").read_text())["checks"]
    return {c["id"]: c for c in checks}


@pytest.fixture
def env(env_builder: EnvBuilder) -> EnvBuilder:
    """A Pixi env with a stand-in vLLM 0.26.0 (its quantization files' structure)."""
    install_vllm_quant(env_builder, "0.26.0")
    return env_builder


@pytest.fixture
def env_033(tmp_path: Path) -> EnvBuilder:
    """Another env, with vLLM 0.33.0's compressed-tensors (it refuses actorder group)."""
    builder = EnvBuilder(tmp_path / "other")
    install_vllm_quant(builder, "0.33.0")
    return builder


# -- the real exports pass on Hopper ----------------------------------------------------------
@pytest.mark.parametrize("name", REAL)
def test_real_export_passes_on_hopper(pytester, env, name):
    """Every real export: vLLM 0.26.0 builds its scheme, every parameter is there, its scales
    are numbers, and sm 9.0 has a kernel for it (NVFP4 W4A4 runs weight-only there: a
    warning, never a failure) - except the tiny gpt-oss MXFP4, whose hidden size of 128 the
    Triton MoE kernel vLLM takes on sm 9.x cannot compile for (it died so on an H200,
    formats_truth-0.26.0.json)."""
    run(pytester, env, EXPORTS / name)
    v = verdicts(pytester)
    for check in ("quant.config", "quant.tensors-complete", "quant.min-capability"):
        assert v[check]["outcome"] == "passed", v[check]
    # gpt-oss's MXFP4 scales are E8M0 bytes, not floats: nothing for scales-sane to read
    sane = "skipped" if name == "gpt-oss-mxfp4" else "passed"
    assert v["quant.scales-sane"]["outcome"] == sane, v["quant.scales-sane"]
    expected = {"ct-nvfp4": "warning", "gpt-oss-mxfp4": "failed"}.get(name, "passed")
    assert v["quant.kernel-arch"]["outcome"] == expected, v["quant.kernel-arch"]


def test_verdict_lines_users_read(pytester, env):
    run(pytester, env, EXPORTS / "ct-w4a16-g128", arch="9.0,12.0")
    v = verdicts(pytester)
    assert v["quant.config"]["summary"] == (
        "ct-w4a16-g128: compressed-tensors: 7 Linear module(s) as CT_WNA16 "
        "(CompressedTensorsWNA16), 1 unquantized (lm_head)"
    )
    assert v["quant.kernel-arch"]["summary"].endswith(
        "12.0: MarlinLinearKernel; 9.0: MacheteLinearKernel"
    )


def test_no_checkpoint_given_skips(pytester, env):
    result = run(pytester, env)
    result.assert_outcomes(skipped=CHECKS)
    result.stdout.fnmatch_lines(["*no --vllm-checkpoint given*"])


def test_modelopt_checkpoint_gets_the_modelopt_verdicts(pytester, env):
    """A ModelOpt export given as --vllm-checkpoint: the calibrated modelopt.* rules decide."""
    run(pytester, env, REPO / "fixtures" / "modelopt_export" / "english-fp8")
    v = verdicts(pytester)
    assert v["quant.config"]["outcome"] == "passed"
    assert v["quant.config"]["evidence"]["judged_as"] == "modelopt.quant-config"
    assert v["quant.tensors-complete"]["evidence"]["judged_as"] == "modelopt.tensors-complete"
    assert v["quant.kernel-arch"]["summary"].endswith("9.0: CutlassFP8ScaledMMLinearKernel")


# -- a real failure of each format ------------------------------------------------------------
def test_int8_w8a8_fails_on_blackwell_only(pytester, env):
    """CUTLASS is vLLM's first INT8 kernel on every CUDA GPU, and its sm100/sm120 builds have
    no int8 GEMM: the export that serves on the H100 dies on sm 12.0."""
    run(pytester, env, EXPORTS / "ct-w8a8-int8", arch="9.0")
    assert verdicts(pytester)["quant.kernel-arch"]["outcome"] == "passed"
    run(pytester, env, EXPORTS / "ct-w8a8-int8", arch="9.0,12.0")
    k = verdicts(pytester)["quant.kernel-arch"]
    assert k["outcome"] == "failed"
    assert "12.0: vLLM takes CutlassInt8ScaledMMLinearKernel for 4 layer(s)" in k["summary"]
    assert "Int8 not supported on SM120. Use FP8 quantization instead" in k["summary"]
    assert "re-quantize to FP8 (llm-compressor FP8_DYNAMIC)" in k["fix"]


def test_w4a16_group_size_no_kernel_runs(pytester, env, tmp_path):
    """Group size 16: Machete (-1/64/128), Marlin (-1/32/64/128), Triton W4A16 (up to 256, not
    16) and Exllama (float16 only) all refuse a BF16 model: vLLM raises at create_weights."""
    folder = VARIANTS["w4a16-g16"](tmp_path / "w4a16-g16")
    run(pytester, env, folder)
    v = verdicts(pytester)
    assert v["quant.tensors-complete"]["outcome"] == "passed", v["quant.tensors-complete"]
    k = v["quant.kernel-arch"]
    assert k["outcome"] == "failed"
    assert "Failed to find a kernel that can implement the ... linear layer" in k["summary"]
    assert "MarlinLinearKernel: group size 16 not in [-1, 32, 64, 128]" in k["summary"]
    assert "group size Marlin runs (32, 64 or 128" in k["fix"]


def test_missing_weight_scale_inv_computes_garbage(pytester, env, tmp_path):
    """Fine-grained FP8 without one layer's weight_scale_inv: vLLM keeps the placeholder."""
    folder = VARIANTS["fp8-block-no-scale"](tmp_path / "fp8-no-scale")
    run(pytester, env, folder)
    t = verdicts(pytester)["quant.tensors-complete"]
    assert t["outcome"] == "failed"
    assert t["evidence"]["vllm_effect"] == "wrong"
    assert (
        "model.layers.0.mlp.down_proj has no weight_scale_inv: Fp8LinearMethod registers it ([ceil(out/block_n), ceil(in/block_k)])"
        in t["summary"]
    )
    assert t["evidence"]["tensors"] == ["model.layers.0.mlp.down_proj.weight_scale_inv"]


def test_channel_scale_of_the_wrong_shape_is_refused(pytester, env, tmp_path):
    """compressed-tensors writes channel scales [out, 1]; a 1-D [out] one fails the assert
    in parameter.py (ChannelQuantScaleParameter is (out, 1))."""
    folder = VARIANTS["fp8-channel-scale-flat"](tmp_path / "fp8-flat-scale")
    run(pytester, env, folder)
    t = verdicts(pytester)["quant.tensors-complete"]
    assert t["outcome"] == "failed" and t["evidence"]["vllm_effect"] == "refuses"
    assert (
        "model.layers.0.self_attn.o_proj.weight_scale has shape [128]; CompressedTensorsW8A8Fp8 registers [out, 1]"
        in t["summary"]
    )


def test_nvfp4_weights_with_fp8_activations_is_refused(pytester, env, tmp_path):
    """An unsupported scheme combination: vLLM's own ValueError, before any weight loads."""
    folder = VARIANTS["nvfp4-fp8-activations"](tmp_path / "nvfp4-fp8-act")
    run(pytester, env, folder)
    c = verdicts(pytester)["quant.config"]
    assert c["outcome"] == "failed"
    assert (
        "For NVFP4 weights, input quantization must also be NVFP4 format, None for NVFP4A16"
        in c["summary"]
    )
    assert "config.json: quantization_config" in c["fix"]


def test_actorder_group_loads_on_026_refused_on_033(pytester, env, env_033, tmp_path):
    """vLLM 0.26.0 builds weight_g_idx for actorder "group"; 0.33.0 refuses it in from_config."""
    folder = VARIANTS["w4a16-actorder-group"](tmp_path / "w4a16-actorder")
    run(pytester, env, folder)
    v = verdicts(pytester)
    assert v["quant.config"]["outcome"] == "passed"
    assert v["quant.tensors-complete"]["outcome"] == "passed", v["quant.tensors-complete"]
    assert v["quant.kernel-arch"]["outcome"] == "passed"
    run(pytester, env_033, folder)
    c = verdicts(pytester)["quant.config"]
    assert c["outcome"] == "failed"
    assert "activation ordering (actorder='group') is no longer supported" in c["summary"]
    assert "actorder='weight'" in c["fix"]


def test_block_fp8_on_sm120_cutlass_n_not_multiple_of_128(pytester, env, tmp_path):
    """A DeepSeek-style layer of N=576 in a float16 model: DeepGEMM wants BF16, so vLLM takes
    CUTLASS's blockwise GEMM, whose SM120 build rejects N % 128 != 0 (vLLM issue 47990). On
    sm 9.0 the same kernel runs it; in a BF16 model DeepGEMM takes it on sm 12.0 too."""
    from fixtures.quant_standin import fp8_block_n576

    folder = fp8_block_n576(tmp_path / "fp8-n576-fp16")
    run(pytester, env, folder, arch="9.0,12.0")
    k = verdicts(pytester)["quant.kernel-arch"]
    assert k["outcome"] == "failed"
    assert (
        "12.0: vLLM takes CutlassFp8BlockScaledMMKernel for 1 layer(s), e.g. model.layers.0.self_attn.kv_a_proj_with_mqa [N=576, K=128], which fails there: cutlass_gemm_caller ... Invalid status"
        in k["summary"]
    )
    assert "9.0: vLLM takes" not in k["summary"]
    bf16 = fp8_block_n576(tmp_path / "fp8-n576-bf16", dtype="bfloat16")
    run(pytester, env, bf16, arch="9.0,12.0")
    k = verdicts(pytester)["quant.kernel-arch"]
    assert k["outcome"] == "passed", k
    assert "12.0: DeepGemmFp8BlockScaledMMKernel" in k["summary"]


def test_block_scale_past_the_fused_rows_is_refused(pytester, env, tmp_path):
    """weight_block_size [192, 128]: vLLM skips validate_fp8_block_shape for the fused
    layers and puts each shard's scale at row ceil(offset/192): up_proj's 2 rows start at
    ceil(256/192) = 2 of ceil(512/192) = 3, and the load fails there, on the first tensor in
    the files' order (measured with vLLM 0.26.0's loader on the CPU: the same message and
    tensor)."""
    folder = VARIANTS["fp8-block-192"](tmp_path / "fp8-block192")
    run(pytester, env, folder)
    t = verdicts(pytester)["quant.tensors-complete"]
    assert t["outcome"] == "failed", t
    assert (
        "model.layers.0.mlp.gate_up_proj: the outputs of gate_proj (256), up_proj (256) are "
        "not multiples of block_n = 192: vLLM skips validate_fp8_block_shape for the fused "
        "layer and fails loading up_proj's weight_scale_inv in parameter.py ('start (2) + "
        "length (2) exceeds dimension size (3)')" in t["summary"]
    )
    assert "v_proj's weight_scale_inv in parameter.py ('start (2) + length (1)" in t["summary"]
    assert t["evidence"]["vllm_effect"] == "refuses"
    assert t["evidence"]["tensors"][0] == "model.layers.0.mlp.up_proj.weight_scale_inv"


def test_block_scales_that_fit_but_straddle_shards_compute_garbage(pytester, env, tmp_path):
    """weight_block_size [256, 128]: q/k/v_proj's 128 outputs are half a block; their scales
    fit the fused qkv's 2 rows, so vLLM loads it (measured on the CPU), and block row 0 (q
    and k) carries q_proj's scale: k_proj is dequantized with it."""
    folder = VARIANTS["fp8-block-256"](tmp_path / "fp8-block256")
    run(pytester, env, folder)
    t = verdicts(pytester)["quant.tensors-complete"]
    assert t["outcome"] == "failed", t
    assert t["evidence"]["vllm_effect"] == "wrong"
    assert (
        "model.layers.0.self_attn.qkv_proj: the outputs of q_proj (128), k_proj (128), "
        "v_proj (128) are not multiples of block_n = 256: vLLM loads it, but the fused "
        "layer's blocks span two shards, so k_proj is dequantized with another shard's "
        "weight_scale_inv" in t["summary"]
    )
    assert t["evidence"]["tensors"][0] == "model.layers.0.self_attn.k_proj.weight_scale_inv"


def test_fp8_below_ada_warns_and_int8_below_turing_fails(pytester, env):
    """CT FP8 on sm 8.0: vLLM takes CompressedTensorsW8A16Fp8 (Marlin, weight-only): works.
    W8A8 INT8 on sm 7.0: CompressedTensorsW8A8Int8 needs 7.5: refused."""
    run(pytester, env, EXPORTS / "ct-fp8-dynamic", arch="8.0")
    v = verdicts(pytester)
    assert v["quant.min-capability"]["outcome"] == "warning"
    assert (
        "CT_FP8_CHANNEL on 8.0: CompressedTensorsW8A16Fp8: Marlin FP8, weight-only"
        in v["quant.min-capability"]["summary"]
    )
    assert v["quant.kernel-arch"]["outcome"] == "warning"
    run(pytester, env, EXPORTS / "ct-w8a8-int8", arch="7.0")
    m = verdicts(pytester)["quant.min-capability"]
    assert m["outcome"] == "failed"
    assert "CT_W8A8_INT8 (CompressedTensorsConfig) needs 75, target 7.0" in m["summary"]


def test_quantized_module_left_bf16_is_refused(pytester, env, tmp_path):
    """A W4A16 checkpoint whose o_proj is BF16 but not in ignore: the WNA16 layer has
    weight_packed, no 'weight'."""
    folder = VARIANTS["w4a16-o-proj-bf16"](tmp_path / "w4a16-bf16-o")
    run(pytester, env, folder)
    t = verdicts(pytester)["quant.tensors-complete"]
    prefix = "model.layers.0.self_attn.o_proj"
    assert t["outcome"] == "failed" and t["evidence"]["vllm_effect"] == "refuses"
    assert f"{prefix} is stored 16-bit ({prefix}.weight) but not ignored" in t["summary"]
    assert "list the module in quantization_config.ignore" in t["fix"]


def test_mxfp4_missing_expert_scales_computes_garbage(pytester, env, tmp_path):
    """gpt-oss MXFP4 without one layer's down_proj_scales: vLLM's w2_weight_scale stays zero."""
    folder = VARIANTS["mxfp4-no-scales"](tmp_path / "mxfp4-no-scales")
    run(pytester, env, folder, arch="9.0,12.0")
    v = verdicts(pytester)
    assert v["quant.config"]["summary"].startswith(
        "mxfp4-no-scales: mxfp4: 2 MoE expert layer(s) as MXFP4"
    )
    t = v["quant.tensors-complete"]
    assert t["outcome"] == "failed" and t["evidence"]["vllm_effect"] == "wrong"
    assert "model.layers.1.mlp.experts.down_proj_scales is missing ([E, H, I/32])" in t["summary"]
    # hidden 128 on sm 9.0: triton_kernels does not compile (the H200 run died so first)
    k = v["quant.kernel-arch"]
    assert k["outcome"] == "failed" and "9.0: vLLM takes TRITON" in k["summary"], k
    assert "12.0" not in k["summary"].split("fails there")[0], k


def test_nan_input_scale_fails_with_the_exporters_fix(pytester, env, tmp_path):
    """FP8 static with a NaN input_scale (a calibration that fed the module broken
    activations: llm-compressor issue 69, NaNs once loaded in vLLM): scales-sane fails and
    says what llm-compressor must do; the real export beside it passes (above)."""
    folder = VARIANTS["fp8-static-nan-input-scale"](tmp_path / "fp8-nan")
    run(pytester, env, folder)
    v = verdicts(pytester)
    s = v["quant.scales-sane"]
    assert s["outcome"] == "failed", s
    assert s["summary"] == (
        "fp8-nan: 1 scale tensor(s) not finite and > 0: "
        "model.layers.0.mlp.down_proj.input_scale=nan"
    )
    assert s["fix"].startswith("re-run llm-compressor's oneshot with calibration samples")
    assert v["quant.tensors-complete"]["outcome"] == "passed"


# -- one story per checkpoint: a ModelOpt checkpoint given to both options --------------------
PAIRS = {
    "quant.config": ("modelopt.quant-config", "modelopt.quant-algo-supported"),
    "quant.tensors-complete": ("modelopt.tensors-complete",),
    "quant.scales-sane": ("modelopt.scales-sane",),
    "quant.min-capability": ("modelopt.min-capability",),
}
RANK = {"failed": 4, "error": 3, "warning": 2, "passed": 1, "skipped": 0}


def test_modelopt_checkpoints_tell_one_story(pytester, env, tmp_path):
    """The real ModelOpt FP8 export and its 19 mutations (fixtures/variants.py CORPUS, each a
    load measured on vLLM 0.26.0), given as both --modelopt-checkpoint and
    --vllm-checkpoint, on sm 8.0 (below ModelOpt FP8's 8.9), 9.0 and 12.0: each quant.* verdict
    has the outcome of the modelopt.* verdict(s) it stands for (quant.config: the worse of
    quant-config and quant-algo-supported), and quant.kernel-arch never names a kernel on a
    target where quant.min-capability says vLLM refuses the checkpoint."""
    from fixtures import variants

    src = REPO / "fixtures" / "modelopt_export" / "llama-fp8"
    folders = [variants.make(name, src, tmp_path / name) for name in variants.CORPUS]
    args = [
        "--vllm-conformance",
        "-p",
        "no:randomly",
        "-m",
        "toolchain",
        "-k",
        "test_qfmt_ or test_modelopt",
        f"--vllm-env={env.prefix}",
        "--cuda-arch=8.0",
        "--cuda-arch=9.0",
        "--cuda-arch=12.0",
    ]
    for f in folders:
        args += [f"--vllm-checkpoint={f}", f"--modelopt-checkpoint={f}"]
    report = pytester.path / "report.json"
    result = pytester.runpytest(*args, f"--vllm-env-report={report}")
    assert "Traceback" not in result.stdout.str()
    by: dict[str, dict[str, dict]] = {}
    for c in json.loads(report.read_text())["checks"]:
        label = c["test"].rpartition("[")[2].rstrip("]")
        by.setdefault(label, {})[c["id"]] = c
    assert sorted(by) == sorted(variants.CORPUS)
    outcomes = set()
    for label, v in by.items():
        for ours, theirs in PAIRS.items():
            want = max((v[t]["outcome"] for t in theirs), key=RANK.__getitem__)
            assert v[ours]["outcome"] == want, (label, ours, v[ours], [v[t] for t in theirs])
            outcomes.add((ours, want))
        k = v["quant.kernel-arch"]
        if v["quant.min-capability"]["outcome"] == "failed":
            assert "8.0" not in k["evidence"].get("kernels", {}), (label, k)
            if k["outcome"] != "skipped" or "no kernel to judge" in k["summary"]:
                assert "8.0: vLLM refuses the scheme there" in k["summary"], (label, k)
    # the corpus reaches both sides of each pair
    assert {("quant.config", "failed"), ("quant.config", "passed")} <= outcomes
    assert {("quant.tensors-complete", "failed"), ("quant.tensors-complete", "passed")} <= outcomes
    assert {("quant.scales-sane", "failed"), ("quant.scales-sane", "passed")} <= outcomes


def test_every_variant_names_its_parent():
    """Each failing variant names the export it mutates (the GPU truth compares their
    tokens)."""
    from fixtures.quant_standin import PARENTS

    assert sorted(PARENTS) == sorted(VARIANTS)
    assert all((EXPORTS / p / "config.json").is_file() for p in PARENTS.values())
