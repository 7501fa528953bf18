# ruff: noqa: E501  (expected messages are kept whole: they are what users read)
"""The modelopt checks, run as users run them: the conformance suite against fixture envs
(a stand-in vLLM source) and checkpoints built as ModelOpt 0.47.0 writes them."""

from __future__ import annotations

import ast
import json
import struct
from pathlib import Path

import pytest

from fixtures import checkpoints as ckpts
from fixtures.envs import EnvBuilder
from fixtures.text import lit
from fixtures.vllm_standin import install_vllm
from pytest_vllm_env.readers.vllm_source import parse_modelopt

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-m", "toolchain", "-k", "test_modelopt")
CHECKS = 9
REPO = Path(__file__).resolve().parents[1]
# Real ModelOpt exports (made on a GPU by fixtures/modelopt_export/'s script) join the good
# cases as they are committed: each is a folder holding config.json.
REAL_EXPORTS = sorted(
    p.parent for p in (REPO / "fixtures" / "modelopt_export").glob("*/config.json")
)


def run(
    pytester: pytest.Pytester,
    env: EnvBuilder,
    *ckpt: Path | str,
    arch: str | None = "9.0",
    extra=(),
):
    # `=` form: a checkpoint inside this repo would otherwise make pytest read our own
    # pyproject.toml as the ini file (pytest-dev/pytest#8846; pytest_vllm_env.plugins.rootdir)
    args = [*SUITE, f"--vllm-env={env.prefix}"]
    for c in ckpt:
        args.append(f"--modelopt-checkpoint={c}")
    if arch:
        args.append(f"--cuda-arch={arch}")
    report = pytester.path / "report.json"
    result = pytester.runpytest(*args, "-rs", f"--vllm-env-report={report}", *extra)
    assert "Traceback" not in result.stdout.str()
    return result


def summaries(pytester: pytest.Pytester) -> dict[str, str]:
    """check id -> summary, from the JSON report of the last run (passes included)."""
    checks = json.loads((pytester.path / "report.json").read_text())["checks"]
    return {c["id"]: c["summary"] for c in checks}


@pytest.fixture
def env(env_builder: EnvBuilder) -> EnvBuilder:
    """A Pixi env with vLLM 0.26.0's ModelOpt structure (our stand-in text)."""
    install_vllm(env_builder)
    return env_builder


# -- good checkpoints -------------------------------------------------------------------------
GOOD = {
    "llama-fp8": lambda: ckpts.llama(),
    "llama-fp8-sharded": lambda: ckpts.llama(shards=3),
    "llama-fp8-kv": lambda: ckpts.llama(kv_cache="FP8"),
    "llama-nvfp4": lambda: ckpts.llama("NVFP4"),
}


@pytest.mark.parametrize("name", list(GOOD) + [p.name for p in REAL_EXPORTS])
def test_good_checkpoint_passes_every_check(pytester, env, tmp_path, name):
    if name in GOOD:
        folder = GOOD[name]().write(tmp_path / name)
    else:
        folder = REPO / "fixtures" / "modelopt_export" / name
    result = run(pytester, env, folder, arch="10.0")
    if (folder / "config.json").read_text().find('"vision_config"') >= 0:
        # the tiny Qwen2.5-VL ModelOpt 0.47 export: its vision tower is excluded as "visual*";
        # the tiny Qwen3.5 export (ModelOpt 0.47 with transformers 5.24) as "model.visual*"
        result.assert_outcomes(passed=CHECKS)
        tower = {"qwen-vl-fp8": "(30 tensors) stays unquantized, excluded by ['visual*']"}.get(
            name, "(21 tensors) stays unquantized, excluded by ['model.visual*']"
        )
        assert summaries(pytester)["modelopt.vision-tower"].startswith(
            f"{name}: the vision tower {tower}"
        )
        return
    result.assert_outcomes(passed=CHECKS - 1, skipped=1)  # vision-tower: not multimodal
    result.stdout.fnmatch_lines(["*not a multimodal checkpoint*"])


def test_verdict_lines_users_read(pytester, env, tmp_path):
    folder = ckpts.llama().write(tmp_path / "tiny-fp8")
    run(pytester, env, folder)
    said = summaries(pytester)
    assert said["modelopt.quant-config"] == (
        "tiny-fp8: ModelOpt FP8, KV cache not quantized, excluded ['lm_head', "
        "'model.embed_tokens'] (vLLM reads config.json)"
    )
    assert said["modelopt.quant-algo-supported"] == (
        "tiny-fp8: vLLM 0.26.0 accepts quant_algo 'FP8' (Fp8Config, quantization='modelopt')"
    )
    assert said["modelopt.tensors-complete"].startswith("tiny-fp8: 14 Linear module(s) hold FP8")
    assert said["modelopt.scales-sane"] == "tiny-fp8: 28 scale tensor(s), all finite and > 0"


def test_no_checkpoint_given_skips_every_check(pytester, env):
    result = run(
        pytester,
        env,
    )
    result.assert_outcomes(skipped=CHECKS)
    result.stdout.fnmatch_lines(["*no --modelopt-checkpoint given*"])


def test_several_checkpoints_one_run_with_readable_ids(pytester, env, tmp_path):
    a = ckpts.llama().write(tmp_path / "tiny-fp8")
    b = ckpts.broken("nan-scale", tmp_path / "tiny-nan")
    result = run(pytester, env, a, b, extra=("-v",))
    result.assert_outcomes(passed=2 * (CHECKS - 1) - 1, failed=1, skipped=2)
    # each checkpoint's id (in whichever order pytest groups the session parameters)
    result.stdout.fnmatch_lines(["*test_scales_sane?tiny-fp8? PASSED*"])
    result.stdout.fnmatch_lines(["*test_scales_sane?tiny-nan? FAILED*"])


def test_qwen25_vl_vision_tower_excluded(pytester, env, tmp_path):
    folder = ckpts.qwen25_vl().write(tmp_path / "qwen-vl")
    result = run(pytester, env, folder)
    result.assert_outcomes(passed=CHECKS)
    assert summaries(pytester)["modelopt.vision-tower"] == (
        "qwen-vl: the vision tower (10 tensors) stays unquantized, excluded by "
        "['model.visual*']; which attention backend runs it (xformers or flash-attn): see "
        "xformers.decision"
    )


def test_qwen25_vl_quantized_vision_tower_is_a_warning(pytester, env, tmp_path):
    # not excluded, quantized: vLLM 0.26.0 builds it quantized, a path not calibrated here and
    # avoided by NVIDIA's own recipes: a warning with the fix that keeps it BF16
    folder = ckpts.qwen25_vl(exclude_vision=False).write(tmp_path / "qwen-vl")
    result = run(pytester, env, folder)
    outcomes = result.parseoutcomes()
    assert (outcomes.get("passed"), outcomes.get("warned")) == (CHECKS - 1, 1), outcomes
    said = summaries(pytester)["modelopt.vision-tower"]
    assert said.startswith(
        "qwen-vl: the vision tower is quantized (5 Linear modules, e.g. model.visual.blocks.0.attn.proj) and not excluded: vLLM 0.26.0 builds it quantized"
    )
    result.stdout.fnmatch_lines(["*fix: keep the vision tower BF16*disable_quantizer*"])


def test_quantized_vision_kv_scales_refused_by_vllm_0_10(pytester, env_builder, tmp_path):
    # F3.2 (ModelOpt 0.33.1 export, vLLM 0.10.x): "KeyError: 'blocks.0.attn.k_proj.k_scale'"
    install_vllm(env_builder, "0.10.1.1")
    builder = ckpts.qwen25_vl(exclude_vision=False)
    builder.tensors["model.visual.blocks.0.attn.qkv.k_scale"] = ("F32", [], ckpts.f32(1.0))
    result = run(pytester, env_builder, builder.write(tmp_path / "vl"))
    result.stdout.fnmatch_lines(
        [
            "*[[]modelopt.vision-tower] FAILED: vl: the vision tower is quantized with KV scales (model.visual.blocks.0.attn.qkv.k_scale, ...) and vLLM 0.10.1.1's loader has no parameter for them*"
        ]
    )


def test_nvfp4_vision_dims_refused_by_marlin_below_blackwell(pytester, env, tmp_path):
    # F3.5: "size_n = 4304 is not divisible by tile_n_size = 64" on GPUs routed to Marlin FP4
    builder = ckpts.qwen25_vl(exclude_vision=False)
    builder.tensors["model.visual.blocks.0.mlp.up_proj.weight"] = ("U8", [4304, 16], None)
    folder = builder.write(tmp_path / "fp4vl")
    result = run(pytester, env, folder, arch="9.0", extra=("-k", "vision"))
    result.stdout.fnmatch_lines(
        [
            "*[[]modelopt.vision-tower] FAILED: fp4vl: NVFP4 vision layers whose out-dimension is not a multiple of 64 (model.visual.blocks.0.mlp.up_proj (out 4304)): on the target 9.0 vLLM runs NVFP4 through Marlin*"
        ]
    )
    result = run(pytester, env, folder, arch="12.0", extra=("-k", "vision"))
    assert summaries(pytester)["modelopt.vision-tower"].startswith(
        "fp4vl: the vision tower is quantized"
    )


# -- broken checkpoints: one failing check each, with the fix ---------------------------------
BROKEN = {
    "no-quant-config": (
        "quant-config",
        "*no quantization config: config.json has no quantization_config and there is no hf_quant_config.json*",
        "*fix: re-export with NVIDIA ModelOpt*",
    ),
    "unknown-algo": (
        "quant-algo-supported",
        "*vLLM 0.26.0 refuses quant_algo 'INT4_AWQ' (from config.json); it would say: ModelOpt currently only supports: ['FP8', 'FP8_PER_CHANNEL_PER_TOKEN', 'FP8_PB_WO', 'NVFP4', 'W4A16_NVFP4', 'MXFP8', 'MIXED_PRECISION'] quantizations in vLLM. Please check the `hf_quant_config.json` file for your model's quant configuration.",
        "*fix: re-export with one of ['FP8', *",
    ),
    "missing-input-scale": (
        "tensors-complete",
        "*vLLM loads it but computes wrong results: model.layers.1.mlp.down_proj has no input_scale: vLLM keeps its placeholder (float32 min, -3.4e38) and computes garbage",
        "*fix: re-export: every quantized Linear needs its scales*",
    ),
    "nan-scale": (
        "scales-sane",
        "*1 scale tensor(s) not finite and > 0: model.layers.0.self_attn.q_proj.input_scale=nan",
        "*fix: re-run ModelOpt calibration*",
    ),
    "excluded-but-quantized": (
        "tensors-complete",
        "*vLLM refuses to load it: model.layers.0.mlp.down_proj is excluded (vLLM builds it unquantized) but holds input_scale, weight_scale: vLLM says 'There is no module or parameter named model.layers.0.mlp.down_proj.input_scale'",
        "*fix: drop the scale tensors of excluded modules from the safetensors (or stop excluding them)*",
    ),
    "quantized-left-bf16": (
        "tensors-complete",
        "*vLLM loads it but computes wrong results: model.layers.1.self_attn.o_proj (BF16, no scales) is not excluded, so vLLM builds an FP8 layer and its scales stay unset",
        "*fix: add them to exclude_modules in hf_quant_config.json and ignore in config.json*",
    ),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_checkpoint_fails_one_check_with_its_fix(pytester, env, tmp_path, name):
    check, summary, fix = BROKEN[name]
    folder = ckpts.broken(name, tmp_path / name)
    result = run(pytester, env, folder)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed") == 1, outcomes
    result.stdout.fnmatch_lines([lit(f"*[modelopt.{check}] FAILED: {summary}"), lit(fix)])
    result.stdout.fnmatch_lines(["*vllm-env: what to change*", lit(f"[modelopt.{check}] *")])


def test_index_naming_a_missing_shard(pytester, env, tmp_path):
    folder = ckpts.missing_shard(tmp_path / "sharded")
    result = run(pytester, env, folder)
    assert result.parseoutcomes().get("failed") == 1
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[modelopt.files-readable] ERROR: sharded: 1 file problem(s): */sharded/model-00002-of-00002.safetensors: missing, though model.safetensors.index.json maps * tensors to it"
            ),
            "*fix: replace the named file(s) with complete copies*model-00002-of-00002.safetensors",
        ]
    )


def test_kv_cache_fp8_without_kv_scales_is_a_warning(pytester, env, tmp_path):
    # measured on the H100 (vLLM 0.26.0): it loads, KV scales default to 1.0, and the first
    # token matched BF16 within 0.0001 nats; it used to fail here
    builder = ckpts.llama(kv_cache="FP8")
    del builder.tensors["model.layers.1.self_attn.v_proj.v_scale"]
    result = run(pytester, env, builder.write(tmp_path / "kv"))
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed") is None and outcomes.get("warned") == 1, outcomes
    result.stdout.fnmatch_lines(
        [
            "*vllm-env: warnings (it works, at a cost)*",
            "*kv: vLLM loads it, at a cost: kv_cache_quant_algo is FP8 but 1 attention block(s) get no k_scale/v_scale, so vLLM runs their FP8 KV cache at scale 1.0 (uncalibrated): model.layers.1.self_attn (no v_scale)*",
            "*fix: calibrate the KV cache*",
        ]
    )
    strict = run(pytester, env, tmp_path / "kv", extra=("--vllm-strict",))
    assert strict.parseoutcomes().get("failed") == 1


def test_shapes_from_another_model_size(pytester, env, tmp_path):
    builder = ckpts.llama()
    builder.config["intermediate_size"] = 256
    result = run(pytester, env, builder.write(tmp_path / "shape"))
    assert result.parseoutcomes().get("failed") == 1
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[modelopt.shapes-match-config] FAILED: shape: 6 weight(s) disagree with config.json: model.layers.0.mlp.down_proj.weight [64, 128] (config.json implies [64, 256])*"
            )
        ]
    )


def test_fp8_weight_stored_as_integers_loads_wrong(pytester, env, tmp_path):
    # vLLM 0.26.0 and 0.33.0 copy_ a U8 o_proj.weight into the FP8 parameter, converting the
    # bytes as numbers (fixtures/loader_truth: fp8-weight-u8): wrong results, not a refusal
    builder = ckpts.llama()
    name = "model.layers.0.self_attn.o_proj.weight"
    builder.tensors[name] = ("U8", builder.tensors[name][1], None)
    run(pytester, env, builder.write(tmp_path / "u8"))
    assert summaries(pytester)["modelopt.tensors-complete"] == (
        f"u8: vLLM loads it but computes wrong results: {name} is U8, FP8 needs F8_E4M3: "
        "vLLM's copy_ converts its integers as numbers"
    )


def test_zero_bf16_scale_fails(pytester, env, tmp_path):
    builder = ckpts.llama()
    name = "model.layers.0.mlp.up_proj.weight_scale"
    builder.tensors[name] = ("BF16", [], ckpts.bf16(0.0))
    result = run(pytester, env, builder.write(tmp_path / "zero"))
    result.stdout.fnmatch_lines([f"*not finite and > 0: {name}=0.0*"])


# -- what the env's vLLM says -----------------------------------------------------------------
def test_min_capability_fp8_below_ada(pytester, env, tmp_path):
    folder = ckpts.llama().write(tmp_path / "fp8")
    result = run(pytester, env, folder, arch="8.6")
    assert result.parseoutcomes().get("failed") == 1
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[modelopt.min-capability] FAILED: fp8: FP8 needs compute capability >= 8.9 in vLLM 0.26.0 (Fp8Config), but the target 8.6 is lower; vLLM would say: The quantization method modelopt is not supported for the current GPU. Minimum capability: 89. Current capability: 86."
            ),
            lit(
                "*fix: run on a GPU of compute capability >= 8.9, or re-export with an algorithm this vLLM runs there: ['NVFP4', 'W4A16_NVFP4']"
            ),
        ]
    )


def test_min_capability_passes_on_ada_and_skips_without_a_target(pytester, env, tmp_path):
    folder = ckpts.llama().write(tmp_path / "fp8")
    run(pytester, env, folder, arch="8.9").assert_outcomes(passed=CHECKS - 1, skipped=1)
    result = run(pytester, env, folder, arch=None, extra=("-k", "min_capability"))
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no target GPU arch known (from none): pass --cuda-arch*"])


def test_min_capability_is_read_from_the_envs_vllm(pytester, env_builder, tmp_path):
    # An older vLLM whose NVFP4 config demands Blackwell (100): Hopper is refused.
    install_vllm(env_builder, "0.9.0", algos=["FP8", "NVFP4"], fp4_min=100)
    folder = ckpts.llama("NVFP4").write(tmp_path / "fp4")
    result = run(pytester, env_builder, folder, arch="9.0")
    assert result.parseoutcomes().get("failed") == 1
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[modelopt.min-capability] FAILED: fp4: NVFP4 needs compute capability >= 10.0 in vLLM 0.9.0 (Fp4Config)*"
            )
        ]
    )


def test_older_vllm_without_the_algorithm(pytester, env_builder, tmp_path):
    install_vllm(env_builder, "0.9.0", algos=["FP8", "NVFP4"])
    builder = ckpts.llama()
    builder.set_algo("FP8_PB_WO")
    result = run(pytester, env_builder, builder.write(tmp_path / "pb"))
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[modelopt.quant-algo-supported] FAILED: pb: vLLM 0.9.0 refuses quant_algo 'FP8_PB_WO' *it would say: ModelOpt currently only supports: ['FP8', 'NVFP4'] quantizations in vLLM.*"
            )
        ]
    )


def test_architecture_not_registered(pytester, env, tmp_path):
    builder = ckpts.llama()
    builder.config["architectures"] = ["FuyuForCausalLM"]
    result = run(pytester, env, builder.write(tmp_path / "fuyu"))
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[modelopt.architecture-registered] FAILED: fuyu: vLLM 0.26.0 no longer supports FuyuForCausalLM (last in 0.25.0)"
            ),
            '*fix: install vLLM 0.25.0, the last release that supports it: add `vllm = "==0.25.0"` to [[]pypi-dependencies[]] in pixi.toml*',
        ]
    )
    builder.config["architectures"] = ["MadeUpForCausalLM"]
    result = run(pytester, env, builder.write(tmp_path / "madeup"))
    result.stdout.fnmatch_lines(["*MadeUpForCausalLM is not registered in vLLM 0.26.0*"])


def test_vllm_not_installed_skips_what_needs_it(pytester, env_builder, tmp_path):
    env_builder.python()
    folder = ckpts.llama().write(tmp_path / "fp8")
    result = run(
        pytester,
        env_builder,
        folder,
    )
    result.assert_outcomes(passed=5, skipped=4)
    result.stdout.fnmatch_lines([f"*vLLM is not installed in {env_builder.prefix}*"])


def test_vllm_source_of_unknown_structure_skips_not_guesses(pytester, env_builder, tmp_path):
    install_vllm(env_builder, "0.99.0", modelopt="SUPPORTED = load_from_somewhere()\n")
    folder = ckpts.llama().write(tmp_path / "fp8")
    result = run(
        pytester,
        env_builder,
        folder,
    )
    result.stdout.fnmatch_lines(
        ["*modelopt.py has no module-level QUANT_ALGOS list of strings;*cannot be read statically*"]
    )
    assert result.parseoutcomes().get("failed") is None


# -- bad input: one clear failed check naming the file, no traceback ------------------------------
def _corrupt(folder: Path, how: str) -> Path:
    st = folder / "model.safetensors"
    data = st.read_bytes()
    if how == "truncated":
        st.write_bytes(data[: len(data) // 2])
    elif how == "header-length-past-end":
        st.write_bytes(struct.pack("<Q", len(data) * 2) + data[8:])
    elif how == "absurd-header-length":
        st.write_bytes(struct.pack("<Q", 2**62) + data[8:])
    elif how == "header-not-json":
        st.write_bytes(data[:8] + b"\xff" * 16 + data[24:])
    elif how == "unknown-dtype":
        st.write_bytes(data.replace(b'"F8_E4M3"', b'"F9_E4M3"', 1))
    elif how == "offsets-overlapping":
        (length,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + length])
        first, second = sorted(
            (v for k, v in header.items() if k != "__metadata__"),
            key=lambda e: e["data_offsets"][0],
        )[:2]
        second["data_offsets"][0] -= 1
        second["data_offsets"][1] -= 1
        raw = json.dumps(header, separators=(",", ":")).encode().ljust(length)
        st.write_bytes(data[:8] + raw + data[8 + length :])
    elif how == "config-not-json":
        (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"],')
    elif how == "symlink-loop":
        st.unlink()
        st.symlink_to(st)
    return folder


BAD_INPUT = {
    "truncated": "model.safetensors: truncated: tensor * ends at data byte *",
    "header-length-past-end": "model.safetensors: truncated: the header length field says *",
    "absurd-header-length": "model.safetensors: header length field says 4611686018427387904 bytes (limit 100000000)*",
    "header-not-json": "model.safetensors: header is not JSON*",
    "unknown-dtype": "model.safetensors: tensor *: unknown dtype 'F9_E4M3'",
    "offsets-overlapping": "model.safetensors: tensor * overlaps tensor *",
    "config-not-json": "config.json: not JSON (*",
    "symlink-loop": "model.safetensors: cannot read: *",
}


@pytest.mark.parametrize("how", list(BAD_INPUT))
def test_bad_input_is_one_error_naming_the_file(pytester, env, tmp_path, how):
    folder = _corrupt(ckpts.llama().write(tmp_path / "bad"), how)
    result = run(pytester, env, folder)
    assert result.parseoutcomes().get("failed") == 1, result.stdout.str()
    result.stdout.fnmatch_lines(
        [lit(f"*[modelopt.files-readable] ERROR: bad: 1 file problem(s): */bad/{BAD_INPUT[how]}")]
    )


def test_missing_checkpoint_dir(pytester, env, tmp_path):
    result = run(pytester, env, tmp_path / "nope")
    result.assert_outcomes(failed=1, skipped=CHECKS - 1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[modelopt.files-readable] ERROR: *nope: 1 file problem(s): *nope: no such directory"
            )
        ]
    )


# -- Hugging Face repo ids, offline ------------------------------------------------------------
def test_repo_id_resolved_from_the_local_hub_cache_only(pytester, env, tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    commit = "0" * 40
    repo = hub / "models--acme--tiny-fp8"
    ckpts.llama().write(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = pytester.runpytest_subprocess(
        *SUITE,
        "--vllm-env",
        str(env.prefix),
        "--cuda-arch",
        "9.0",
        "--modelopt-checkpoint",
        "acme/tiny-fp8",
        "--modelopt-checkpoint",
        "acme/not-cached",
        "-v",
    )
    result.stdout.fnmatch_lines(["*test_files_readable?acme/tiny-fp8? PASSED*"])
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[modelopt.files-readable] ERROR: acme/not-cached: 1 file problem(s): acme/not-cached: no such directory, and not in the local Hugging Face cache*`hf download acme/not-cached`*"
            )
        ]
    )
    result.assert_outcomes(passed=CHECKS - 1, failed=1, skipped=1 + CHECKS - 1)


def test_reader_maps_algorithms_without_override_methods():
    # vLLM 0.8.x: no override_quantization_method; the class is named after the algorithm.
    text = """
QUANT_ALGOS = ["FP8", "NVFP4"]
class A:
    def get_name(cls):
        return "modelopt"
    def get_min_capability(cls):
        return 89
class B:
    def get_name(cls):
        return "modelopt_nvfp4"
    def get_min_capability(cls):
        return 100
    def override_quantization_method(cls, hf_quant_cfg, user_quant):
        if "quantization" in hf_quant_cfg:
            return None
"""
    facts = parse_modelopt(text)
    assert facts.config_class_for("FP8").name == "A"
    assert facts.config_class_for("NVFP4").name == "B"
    assert facts.classes[1].claims_substring == ()  # "quantization" in cfg is no claim
    assert facts.unsupported_message is None


def test_quant_files_that_disagree_pass_saying_vllm_reads_config_json(pytester, env, tmp_path):
    # vLLM 0.26.0 and 0.33.0 load an FP8 export whose hf_quant_config.json says NVFP4 as
    # config.json says (fixtures/loader_truth: hf-disagrees-algo): no failure, a note
    folder = ckpts.broken("disagreeing-algo", tmp_path / "two-configs")
    result = run(pytester, env, folder)
    result.assert_outcomes(passed=CHECKS - 1, skipped=1)
    assert summaries(pytester)["modelopt.quant-config"] == (
        "two-configs: ModelOpt FP8, KV cache not quantized, excluded ['lm_head', "
        "'model.embed_tokens'] (vLLM reads config.json); hf_quant_config.json is never read "
        "while config.json has a quantization_config (it disagrees: quant_algo: config.json "
        "says 'FP8', hf_quant_config.json says 'NVFP4')"
    )


def test_index_from_another_export_is_left_to_checkpoint_shards(pytester, env, tmp_path):
    # the files read; what vLLM then loads (here: the listed tensor's parameter unset, or
    # nothing missing at all) is checkpoint.shards' verdict, from the env's own loader
    folder = ckpts.llama(shards=2).write(tmp_path / "mixed")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    result = run(pytester, env, folder)
    assert not result.parseoutcomes().get("failed")
    assert summaries(pytester)["modelopt.files-readable"].endswith(
        "headers valid; the index lists 1 tensor(s) no file holds (e.g. "
        "'model.layers.9.mlp.up_proj.weight'): checkpoint.shards says what vLLM loads"
    )


def test_exclude_list_that_is_not_a_list(pytester, env, tmp_path):
    builder = ckpts.llama()
    builder.config["quantization_config"]["ignore"] = "lm_head"
    result = run(pytester, env, builder.write(tmp_path / "str"))
    result.stdout.fnmatch_lines(
        ["*modelopt.quant-config?*config.json quantization_config.ignore is 'lm_head', not a list*"]
    )


def test_moe_router_left_bf16_is_not_a_failure(pytester, env, tmp_path):
    builder = ckpts.llama()
    builder.tensors["model.layers.0.mlp.gate.weight"] = ("BF16", [8, 64], None)
    result = run(pytester, env, builder.write(tmp_path / "moe"))
    result.assert_outcomes(passed=CHECKS - 1, skipped=1)


def test_verdicts_identical_under_xdist(pytester, env, tmp_path):
    folders = [
        ckpts.llama().write(tmp_path / "good"),
        ckpts.broken("nan-scale", tmp_path / "nan"),
        ckpts.qwen25_vl().write(tmp_path / "vl"),
    ]

    def verdicts(*extra: str) -> list[tuple[str, str, str]]:
        run(pytester, env, *folders, extra=extra)
        checks = json.loads((pytester.path / "report.json").read_text())["checks"]
        return sorted((c["test"], c["outcome"], c["summary"]) for c in checks)

    serial = verdicts()
    assert len(serial) == 3 * CHECKS
    assert verdicts("-n", "2") == serial


def test_exclusion_decided_on_fused_layers():
    """vLLM decides exclusion on the layer it builds: q/k/v fuse into qkv_proj."""
    from pytest_vllm_env.facts.modelopt_load import ShardMismatch, excluder, fused_name

    modules = {f"m.layers.0.self_attn.{p}": {} for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
    qkv = fused_name("m.layers.0.self_attn.q_proj", modules)
    assert qkv == "m.layers.0.self_attn.qkv_proj"
    assert fused_name("m.layers.0.self_attn.o_proj", modules) == "m.layers.0.self_attn.o_proj"
    assert not excluder(["*q_proj"])(qkv)  # the wildcard does not reach the fused name
    assert not excluder(["q_proj"])(qkv)  # nor does the substring
    assert excluder(["*self_attn*"])(qkv)
    assert excluder([f"m.layers.0.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")])(qkv)
    with pytest.raises(ShardMismatch):
        excluder(["m.layers.0.self_attn.q_proj"])(qkv)
    # apply_vllm_mapper: "visual*" becomes "visual" and "visual.*"
    assert excluder(["visual*"])("visual.blocks.0.attn.qkv")
    # ... and "visual" is then also a substring rule: vLLM excludes visual_merger too
    assert excluder(["visual*"])("visual_merger.mlp.0")
    assert not excluder(["model.visual*"])("visual.blocks.0.attn.qkv")


def test_exclude_entries_named_for_another_layout(pytester, env, tmp_path):
    # F3.8 (llm-compressor#2641): the ignore list was written with the old fully qualified
    # names; the vision layers, left BF16, are then neither excluded nor quantized
    builder = ckpts.qwen25_vl()  # vision tower BF16
    builder.set_exclude(["lm_head", "model.vision_model.blocks*"])
    run(pytester, env, builder.write(tmp_path / "renamed"))
    found = json.loads((pytester.path / "report.json").read_text())["checks"]
    tc = next(c for c in found if c["id"] == "modelopt.tensors-complete")
    assert tc["outcome"] == "failed"
    assert (
        "the exclude entries ['model.vision_model.blocks*'] match no module of this checkpoint"
        in tc["summary"]
    )


LEGACY_EXCLUDED = """
class ModelOptFp8Config:
    def is_layer_excluded(self, prefix):
        for module in self.exclude_modules:
            if module in prefix:
                return True
        return False
"""
FUSED_EXCLUDED = """
class ModelOptQuantConfigBase:
    def is_layer_excluded(self, prefix):
        if is_layer_skipped(prefix, self.exclude_modules, self.packed_modules_mapping):
            return True
        return any(fnmatch(prefix, p) for p in self.exclude_modules)

    def apply_vllm_mapper(self, mapper):
        self.exclude_modules = [e[:-1] + ".*" for e in self.exclude_modules]
"""


def test_exclusion_rules_are_read_from_the_envs_vllm():
    from pytest_vllm_env.readers.vllm_source import parse_modelopt

    legacy = parse_modelopt(LEGACY_EXCLUDED)
    assert (legacy.exclusion, legacy.splits_wildcards) == ("substring", False)
    fused = parse_modelopt(FUSED_EXCLUDED)
    assert (fused.exclusion, fused.splits_wildcards) == ("fused", True)
    assert parse_modelopt("X = 1\n").exclusion is None


def test_wildcard_exclusion_judged_by_the_envs_own_rule(tmp_path):
    # vLLM 0.10.x matches exclude entries as substrings: "model.layers.1*" excludes nothing,
    # so layer 1 left BF16 is built FP8 (wrong); >= 0.11 matches the wildcard (fine)
    from pytest_vllm_env.checks import modelopt
    from pytest_vllm_env.readers.checkpoint import read_checkpoint
    from pytest_vllm_env.readers.vllm_source import parse_modelopt

    builder = ckpts.llama()
    for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):  # fmt: skip
        builder.unquantize(f"model.layers.1.{name}")
    builder.set_exclude(["lm_head", "model.embed_tokens", "model.layers.1*"])
    folder = builder.write(tmp_path / "ckpt")
    ckpt = read_checkpoint(str(folder), folder)
    new = modelopt.tensors_complete(ckpt, source=parse_modelopt(FUSED_EXCLUDED))
    old = modelopt.tensors_complete(ckpt, source=parse_modelopt(LEGACY_EXCLUDED))
    assert new.outcome == "passed", new.summary
    assert (
        old.outcome == "failed" and "model.layers.1.mlp.down_proj (BF16, no scales)" in old.summary
    )


# vLLM 0.33.0's modelopt.py builds QUANT_ALGOS from a table of linear algorithms (a dict).
SPREAD_ALGOS = """
LINEAR_ALGOS: dict[str, tuple[str, str]] = {
    "FP8": ("modelopt", "fp8_config"),
    "NVFP4": ("modelopt_fp4", "nvfp4_config"),
}
QUANT_ALGOS = [*LINEAR_ALGOS, "MIXED_PRECISION"]
OTHER = [*UNKNOWN_NAME, "X"]

def from_config(quant_method):
    if quant_method not in QUANT_ALGOS:
        raise ValueError(f"ModelOpt currently only supports: {QUANT_ALGOS} quantizations")
"""


def test_quant_algos_spread_from_a_dict_are_read():
    """vLLM 0.33.0: ``QUANT_ALGOS = [*LINEAR_ALGOS, "MIXED_PRECISION"]``; read as the list it
    is (before, the reader found no list and quant-algo-supported skipped on 0.33)."""
    facts = parse_modelopt(SPREAD_ALGOS)
    assert facts.quant_algos == ("FP8", "NVFP4", "MIXED_PRECISION")
    assert facts.unsupported_message == (
        "ModelOpt currently only supports: ['FP8', 'NVFP4', 'MIXED_PRECISION'] quantizations"
    )
    # a spread of a name the module does not define is not a list we can read
    from pytest_vllm_env.readers.vllm_source import _module_string_lists

    lists = _module_string_lists(ast.parse(SPREAD_ALGOS))
    assert "QUANT_ALGOS" in lists and "OTHER" not in lists
