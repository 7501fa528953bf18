# ruff: noqa: E501  (expected messages are kept whole: they are what users read)
"""ModelOpt MIXED_PRECISION checkpoints (issue 22): each layer is judged by its own
``quantized_layers`` algorithm, as vLLM 0.26.0's and 0.33.0's ``ModelOptMixedPrecisionConfig``
(``modelopt.py``: ``_resolve_quant_algo``, ``get_quant_method``) picks its method; run as users
run the suite, on checkpoints built as ModelOpt 0.47.0 writes them
(``fixtures/checkpoints.py:mixed_llama``)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from fixtures import checkpoints as ckpts
from fixtures import loader_standin, mixed_variants
from fixtures.downloads import wheel
from fixtures.envs import EnvBuilder
from fixtures.vllm_standin import install_vllm
from pytest_vllm_env.facts.modelopt_mixed import (
    FusedMismatch,
    module_algos,
    quantized_layers,
    resolve,
    vllm_keys,
)
from pytest_vllm_env.facts.vllm_quant_decision import decide
from pytest_vllm_env.readers.vllm_source import MODELOPT_PY, parse_modelopt

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-m", "toolchain")
# the checks that judge a layer's tensors: each must judge a mixed layer by its own row
JUDGES = ("checkpoint.parameters", "modelopt.shapes-match-config", "quant.kernel-arch")


def make_env(env_builder: EnvBuilder, release: str) -> EnvBuilder:
    """A Pixi env whose vLLM has ``release``'s ModelOpt and loader structure (stand-ins)."""
    install_vllm(env_builder, release, extra=loader_standin.files(release))
    return env_builder


def run(pytester: pytest.Pytester, env: EnvBuilder, ckpt: Path, arch: str = "10.0"):
    """The checkpoint, modelopt and quant checks on ``ckpt``; (result, check id -> check)."""
    report = pytester.path / "report.json"
    result = pytester.runpytest(
        *SUITE,
        "-k",
        "test_checkpoint or test_modelopt or test_quant",
        f"--vllm-env={env.prefix}",
        f"--modelopt-checkpoint={ckpt}",
        f"--vllm-checkpoint={ckpt}",
        f"--cuda-arch={arch}",
        "-rs",
        f"--vllm-env-report={report}",
    )
    assert "Traceback" not in result.stdout.str()
    checks = {c["id"]: c for c in json.loads(report.read_text())["checks"]}
    return result, checks


@pytest.mark.parametrize("release", ["0.26.0", "0.33.0"])
def test_fp8_attention_nvfp4_mlp_passes_on_blackwell(pytester, env_builder, tmp_path, release):
    """The export vLLM serves (FP8 attention, NVFP4 MLP): before issue 22 it failed
    checkpoint.parameters and modelopt.shapes-match-config (the NVFP4 MLP judged as FP8)."""
    env = make_env(env_builder, release)
    folder = ckpts.mixed_llama("NVFP4").write(tmp_path / "mixed")
    result, checks = run(pytester, env, folder)
    bad = {k: c["summary"] for k, c in checks.items() if c["outcome"] in ("failed", "error")}
    assert not bad
    assert result.ret == 0
    for cid in JUDGES:
        assert checks[cid]["outcome"] == "passed", (cid, checks[cid]["summary"])
    assert "fill all 43 parameter(s)" in checks["checkpoint.parameters"]["summary"]
    assert "16 weight shapes agree" in checks["modelopt.shapes-match-config"]["summary"]
    complete = checks["modelopt.tensors-complete"]
    assert complete["outcome"] == "passed", complete["summary"]
    assert (
        "MIXED_PRECISION: 14 Linear module(s) hold the weights and scales of their own "
        "quantized_layers algorithm as vLLM builds them (FP8: 8, NVFP4: 6)" in complete["summary"]
    )
    kernels = checks["quant.kernel-arch"]["summary"]
    assert "FP8" in kernels and "NvFp4" in kernels  # each layer's own kernel


def test_fp8_attention_nvfp4_mlp_below_blackwell_is_judged_per_layer(
    pytester, env_builder, tmp_path
):
    """On sm 9.0 the NVFP4 layers get the table's sm-9.0 verdict (Marlin FP4), the FP8 ones
    theirs: the layers' tensors themselves still pass."""
    env = make_env(env_builder, "0.26.0")
    folder = ckpts.mixed_llama("NVFP4").write(tmp_path / "mixed")
    _, checks = run(pytester, env, folder, arch="9.0")
    assert checks["checkpoint.parameters"]["outcome"] == "passed"
    assert checks["modelopt.shapes-match-config"]["outcome"] == "passed"
    assert "Marlin" in checks["quant.kernel-arch"]["summary"]


@pytest.mark.parametrize("release", ["0.26.0", "0.33.0"])
def test_int4_awq_mlp_fails_saying_which_layers_and_key(pytester, env_builder, tmp_path, release):
    """FP8 attention with INT4_AWQ_CFG's MLP (ModelOpt writes quant_algo W4A16_AWQ per layer):
    ModelOptMixedPrecisionConfig.get_quant_method has no method for it and builds the MLP
    unquantized, so its packed weights, scales and pre_quant_scale cannot load."""
    env = make_env(env_builder, release)
    folder = ckpts.mixed_llama("W4A16_AWQ").write(tmp_path / "mixed")
    result, checks = run(pytester, env, folder)
    found = checks["checkpoint.parameters"]
    assert found["outcome"] == "failed" and found["evidence"]["vllm_effect"] == "refuses"
    assert (
        f"vLLM {release} refuses to load it: quantized_layers in config.json gives 6 layer(s) an "
        "algorithm ModelOptMixedPrecisionConfig.get_quant_method has no method for "
        "(model.layers.0.mlp.gate_proj: 'W4A16_AWQ'" in found["summary"]
    )
    assert "builds them unquantized (UnquantizedLinearMethod)" in found["summary"]
    assert found["fix"].startswith(
        "quantize those layers with an algorithm vLLM serves per layer (FP8, NVFP4, "
        "W4A16_NVFP4, MXFP8; e.g. mtq.NVFP4_DEFAULT_CFG instead of INT4_AWQ_CFG)"
    )
    # the shapes check leaves those layers to checkpoint.parameters (no wrong blame on
    # config.json); the FP8 attention still agrees
    assert checks["modelopt.shapes-match-config"]["outcome"] == "passed"
    assert result.ret != 0


def test_fused_shards_with_different_algorithms_are_refused(pytester, env_builder, tmp_path):
    """q_proj FP8 but k_proj/v_proj NVFP4: vLLM raises 'Mixed quant_algo within fused layer'."""
    env = make_env(env_builder, "0.26.0")
    builder = ckpts.mixed_llama("NVFP4")
    for layer in range(2):
        for leaf in ("k_proj", "v_proj"):
            name = f"model.layers.{layer}.self_attn.{leaf}"
            out, inp = builder.tensors[f"{name}.weight"][1]
            for key in [k for k in builder.tensors if k.startswith(name + ".")]:
                del builder.tensors[key]
            builder.tensors.update(ckpts._quantized_linear(name, out, inp, "NVFP4", 7))
            for block in (builder.config["quantization_config"], builder.hf_quant_config["quantization"]):  # fmt: skip
                block["quantized_layers"][name] = {"quant_algo": "NVFP4", "group_size": 16}
    _, checks = run(pytester, env, builder.write(tmp_path / "mixed"))
    found = checks["checkpoint.parameters"]
    assert found["outcome"] == "failed"
    assert (
        "vLLM raises while building the model: Mixed quant_algo within fused layer "
        "model.layers.0.self_attn.qkv_proj" in found["summary"]
    )
    assert "give the shards of model.layers.0.self_attn.qkv_proj one quant_algo" in found["fix"]
    complete = checks["modelopt.tensors-complete"]
    assert complete["outcome"] == "failed" and complete["evidence"]["vllm_effect"] == "refuses"
    # said once per fused layer, not once per shard
    assert complete["summary"].count("within fused layer model.layers.0.self_attn.qkv_proj") == 1


@pytest.mark.parametrize("release", ["0.26.0", "0.33.0"])
def test_min_capability_is_the_mixed_configs_own(pytester, env_builder, tmp_path, release):
    """vLLM 0.26.0 and 0.33.0 (config/model.py ModelConfig._verify_quantization) let
    ModelOptMixedPrecisionConfig.override_quantization_method claim MIXED_PRECISION, and
    config/vllm.py _get_quantization_config holds the GPU to its get_min_capability(): 75.
    Before the stand-in had that class, the suite took Fp8Config's 8.9 and failed an A100."""
    env = make_env(env_builder, release)
    folder = ckpts.mixed_llama("NVFP4").write(tmp_path / "mixed")
    _, checks = run(pytester, env, folder, arch="8.0")
    found = checks["modelopt.min-capability"]
    assert found["outcome"] == "passed", found["summary"]
    assert f"MIXED_PRECISION needs >= 7.5 in vLLM {release}" in found["summary"]
    _, checks = run(pytester, env, folder, arch="7.0")
    found = checks["modelopt.min-capability"]
    assert found["outcome"] == "failed"
    assert (
        f"MIXED_PRECISION needs compute capability >= 7.5 in vLLM {release} "
        "(ModelOptMixedPrecisionConfig), but the target 7.0 is lower; vLLM would say: The "
        "quantization method modelopt_mixed is not supported for the current GPU. Minimum "
        "capability: 75. Current capability: 70." in found["summary"]
    )


@pytest.mark.parametrize(
    "release, served",
    [
        ("0.26.0", "FP8/NVFP4/W4A16_NVFP4/MXFP8"),
        ("0.33.0", "FP8/FP8_PER_CHANNEL_PER_TOKEN/FP8_PB_WO/NVFP4/W4A16_NVFP4/MXFP8"),
    ],
)
def test_served_algorithms_are_the_envs_own(pytester, env_builder, tmp_path, release, served):
    """The per-layer algorithms named are those the env's vLLM's get_quant_method serves
    (read from its modelopt.py, kept through the fact cache), not the union of releases."""
    env = make_env(env_builder, release)
    _, checks = run(pytester, env, ckpts.mixed_llama("W4A16_AWQ").write(tmp_path / "mixed"))
    assert (
        f"vLLM {release} serves {served}): it builds them"
        in (checks["checkpoint.parameters"]["summary"])
    )


@pytest.mark.parametrize("release", ["0.26.0", "0.33.0"])
def test_a_layer_missing_its_own_algorithms_tensor_fails(pytester, env_builder, tmp_path, release):
    """The NVFP4 down_proj without weight_scale_2 (a tensor NVFP4 needs and FP8 has not): the
    real loaders of both releases load it and leave the parameter unset
    (mixed_precision.json, nvfp4-down-no-weight-scale-2): computed with the placeholder."""
    env = make_env(env_builder, release)
    folder = mixed_variants.make("nvfp4-down-no-weight-scale-2", tmp_path / "mixed")
    _, checks = run(pytester, env, folder)
    found = checks["modelopt.tensors-complete"]
    assert found["outcome"] == "failed" and found["evidence"]["vllm_effect"] == "wrong"
    assert (
        "vLLM loads it but computes wrong results: model.layers.0.mlp.down_proj has no "
        "weight_scale_2: vLLM keeps its placeholder (float32 min, -3.4e38)" in found["summary"]
    )
    assert found["fix"].startswith("re-export: every quantized Linear needs its scales")


# -- the resolution rule itself (vLLM's _resolve_quant_algo) ----------------------------------
LAYERS = {
    "model.layers.0.self_attn.q_proj": "FP8",
    "model.layers.0.self_attn.k_proj": "FP8",
    "model.layers.0.self_attn.v_proj": "FP8",
    "model.layers.0.mlp.gate_proj": "NVFP4",
    "model.layers.0.mlp.up_proj": "NVFP4",
    "model.layers.0.mlp.experts.0.w1": "NVFP4",
    "model.language_model.layers.0.mlp.down_proj": "W4A16_NVFP4",
    "lm_head": "FP8",
}


@pytest.mark.parametrize(
    "prefix, algo",
    [
        ("model.layers.0.self_attn.qkv_proj", "FP8"),  # fused, from its shards
        ("model.layers.0.mlp.gate_up_proj", "NVFP4"),
        ("model.layers.0.mlp.experts", "NVFP4"),  # a key under the prefix (MoE)
        ("language_model.model.layers.0.mlp.down_proj", "W4A16_NVFP4"),  # VL spelling
        ("language_model.lm_head", "FP8"),
        ("model.layers.0.self_attn.o_proj", None),  # not in the map: unquantized
    ],
)
def test_resolve_follows_vllm(prefix, algo):
    assert resolve(LAYERS, prefix) == algo


def test_resolve_refuses_fused_shards_that_disagree():
    with pytest.raises(FusedMismatch, match="Mixed quant_algo within fused layer"):
        resolve(
            {**LAYERS, "model.layers.0.self_attn.k_proj": "NVFP4"},
            "model.layers.0.self_attn.qkv_proj",
        )


# MoE: one FusedMoE/RoutedExperts layer per block, "<mlp>.experts"
MOE = {
    "model.layers.0.mlp.experts.0.gate_proj": "FP8",
    "model.layers.0.mlp.experts.1.gate_proj": "NVFP4",
    "model.layers.1.mlp.shared_expert.gate_proj": "NVFP4",
    "model.layers.2.mlp.experts": "NVFP4",  # transformers 5's fused experts module, one key
}


@pytest.mark.parametrize(
    "prefix, algo",
    [
        ("model.layers.0.mlp.experts", "FP8"),  # the FIRST key under the prefix, for all experts
        ("model.layers.1.mlp.experts", "NVFP4"),  # no key under it: the first under its parent
        ("model.layers.2.mlp.experts", "NVFP4"),  # the key itself
        ("model.layers.3.mlp.experts", None),
    ],
)
def test_resolve_moe_experts_as_vllm(prefix, algo):
    """0.26.0/0.33.0 _resolve_quant_algo: step 3 (any key under prefix + '.'), then the
    '.experts' parent fallback; never the expert's own key."""
    assert resolve(MOE, prefix) == algo


def test_module_algos_give_every_expert_its_moe_layers_algorithm():
    modules = [
        f"model.layers.0.mlp.experts.{e}.{p}" for e in range(2) for p in ("gate_proj", "up_proj")
    ]
    assert set(module_algos(MOE, modules).values()) == {"FP8"}


# Qwen2_5_VLForConditionalGeneration.hf_to_vllm_mapper's orig_to_new_prefix (vLLM 0.26.0 and
# 0.33.0 models/qwen2_5_vl.py, as readers/vllm_model_file reads it)
VL_PREFIXES = (
    ("model.language_model.", "language_model.model."),
    ("model.visual.", "visual."),
    ("lm_head.", "language_model.lm_head."),
    ("model.", "language_model.model."),
)


@pytest.mark.parametrize(
    "key", ["model.layers.0.mlp.down_proj", "model.language_model.layers.0.mlp.down_proj"]
)
def test_vl_keys_are_renamed_by_the_models_mapper(key):
    """apply_vllm_mapper renames quantized_layers keys with the model's mapper (without its
    stacked entries) before the lookup: a transformers < 4.52 key (model.layers.*) then names
    vLLM's language_model.model.layers.* layer, which the candidates alone do not reach."""
    keys = vllm_keys({key: "NVFP4"}, VL_PREFIXES)
    assert resolve(keys, "language_model.model.layers.0.mlp.down_proj") == "NVFP4"
    if key.startswith("model.layers."):
        assert resolve({key: "NVFP4"}, "language_model.model.layers.0.mlp.down_proj") is None


@pytest.mark.parametrize(
    "key", ["model.layers.0.mlp.down_proj", "model.language_model.layers.0.mlp.down_proj"]
)
def test_load_plan_builds_a_vl_layer_from_its_mapped_key(key):
    """checkpoint.parameters' plan (facts/vllm_load_plan.py:build_params) for a model whose
    layers live under language_model.model.* (Qwen2.5-VL's tree): the key, in either naming
    ModelOpt writes, gives the layer its NVFP4 parameters, as the real loaders built them
    (mixed_precision.json vl-old-names / vl-hf-names: loaded whole)."""
    from pytest_vllm_env.facts.vllm_load_plan import build_params, dims_of
    from pytest_vllm_env.facts.vllm_quant_decision import QuantDecision
    from pytest_vllm_env.readers.vllm_model_file import ModelFile, Node

    model = ModelFile(
        "Qwen2_5_VLForConditionalGeneration", "qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration",
        nodes=(Node("language_model.model.layers.{i}.mlp.down_proj", "row", "RowParallelLinear"),),
        counts={"language_model.model.layers": "num_hidden_layers"},
        prefixes=VL_PREFIXES,
    )  # fmt: skip
    config = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1,
              "intermediate_size": 128, "torch_dtype": "bfloat16"}  # fmt: skip
    decision = QuantDecision(
        "config.json", None, "modelopt", "MIXED_PRECISION", (), None, None, "modelopt_mixed",
        "modelopt_mixed", None, None, layers=((key, "NVFP4"),),
    )  # fmt: skip
    params, _ = build_params(
        model, dims_of(config), config, decision, lambda p: False, False, False
    )
    assert params["language_model.model.layers.0.mlp.down_proj.weight"].dtype == "U8"
    assert "language_model.model.layers.0.mlp.down_proj.weight_scale_2" in params


def test_quantized_layers_read_from_either_layout():
    entry = {"a.q_proj": {"quant_algo": "fp8"}}
    assert quantized_layers({"quantization": {"quantized_layers": entry}}) == (("a.q_proj", "FP8"),)
    assert quantized_layers({"quantized_layers": entry}) == (("a.q_proj", "FP8"),)
    assert quantized_layers({"quant_algo": "MIXED_PRECISION"}) == ()


# -- held against the real loaders ------------------------------------------------------------
TRUTH = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures/loader_truth/mixed_precision.json").read_text()
)["outcomes"]


@pytest.mark.parametrize("release", ["0.26.0", "0.33.0"])
@pytest.mark.parametrize("mlp", ["NVFP4", "W4A16_AWQ"])
def test_verdict_agrees_with_the_real_loader(pytester, env_builder, tmp_path, release, mlp):
    """The real vLLM 0.26.0 / 0.33.0 loaders (CPU, meta mode) built ModelOptMixedPrecisionConfig
    for both exports: the NVFP4 MLP got uint8 weights and loaded every tensor; the W4A16_AWQ MLP
    got plain bfloat16 weights and vLLM refused the first AWQ tensor it met. The suite says the
    same: the parameters it expects are the ones vLLM built, and the tensor vLLM refused is
    among those it names."""
    truth = TRUTH[release][mlp]
    assert truth["quant_config"] == "ModelOptMixedPrecisionConfig"
    env = make_env(env_builder, release)
    folder = ckpts.mixed_llama(mlp).write(tmp_path / "mixed")
    _, checks = run(pytester, env, folder)
    found = checks["checkpoint.parameters"]
    if truth["refused"] is None:
        assert found["outcome"] == "passed"
        assert found["evidence"]["loaded"] == truth["routed"]
    else:
        assert found["outcome"] == "failed" and found["evidence"]["vllm_effect"] == "refuses"
        assert truth["refused_tensor"] in found["evidence"]["tensors"]
        assert "builds them unquantized" in found["summary"]


# -- which per-layer algorithms the env's vLLM serves, read from its modelopt.py ----------------
MIXED_0_26 = """
class ModelOptMixedPrecisionConfig:
    def get_quant_method(self, layer, prefix):
        quant_algo = self._resolve_quant_algo(prefix)
        if isinstance(layer, (LinearBase, ParallelLMHead)):
            if quant_algo == "FP8":
                return 1
            if quant_algo == "NVFP4":
                return 2
            return UnquantizedLinearMethod()
        if isinstance(layer, RoutedExperts):
            if quant_algo == "MOE_ONLY":
                return 3
"""
MIXED_0_33 = """
LINEAR_ALGOS: dict[str, tuple[str, str]] = {"FP8": ("modelopt", "fp8_config"), "FP8_PB_WO": ("modelopt", "fp8_config")}
class ModelOptMixedPrecisionConfig:
    def get_quant_method(self, layer, prefix):
        quant_algo = self._resolve_quant_algo(prefix)
        if isinstance(layer, (LinearBase, ParallelLMHead)):
            if quant_algo is None or quant_algo not in LINEAR_ALGOS:
                return UnquantizedLinearMethod()
"""


@pytest.mark.parametrize(
    "text, served",
    [(MIXED_0_26, ("FP8", "NVFP4")), (MIXED_0_33, ("FP8", "FP8_PB_WO")), ("x = 1", None)],
)
def test_served_algorithms_read_from_the_linear_branch(text, served):
    assert parse_modelopt(text).mixed_linear_algos == served


def test_decision_takes_the_served_set_from_the_env():
    config = {"quantization_config": {"quant_method": "modelopt", "quant_algo": "MIXED_PRECISION",
                                      "quantized_layers": {"m.q_proj": {"quant_algo": "FP8"}}}}  # fmt: skip
    read = decide(config, None, None, None, parse_modelopt(MIXED_0_26))
    assert read.layers == (("m.q_proj", "FP8"),) and read.served == ("FP8", "NVFP4")
    unread = decide(config, None, None, None, None)
    assert "FP8_PER_CHANNEL_PER_TOKEN" in unread.served  # the union: never fail what serves


@pytest.mark.integration
@pytest.mark.parametrize(
    "release, served",
    [
        ("0.26.0", ("FP8", "NVFP4", "W4A16_NVFP4", "MXFP8")),
        (
            "0.33.0",
            ("FP8", "FP8_PER_CHANNEL_PER_TOKEN", "FP8_PB_WO", "NVFP4", "W4A16_NVFP4", "MXFP8"),
        ),
    ],
)
def test_real_vllm_serves_these_per_layer(pytester, env_builder, tmp_path, release, served):
    """The real wheels' ModelOptMixedPrecisionConfig, read statically; and the suite on the real
    modelopt.py: the FP8/NVFP4 export passes on sm 9.0 too (its minimum is 7.5)."""
    with zipfile.ZipFile(wheel(f"vllm=={release}")) as zf:
        text = zf.read(MODELOPT_PY).decode()
    assert parse_modelopt(text).mixed_linear_algos == served
    install_vllm(env_builder, release, modelopt=text, extra=loader_standin.files(release))
    folder = ckpts.mixed_llama("NVFP4").write(tmp_path / "mixed")
    _, checks = run(pytester, env_builder, folder, arch="9.0")
    assert checks["modelopt.min-capability"]["outcome"] == "passed"
    assert "needs >= 7.5" in checks["modelopt.min-capability"]["summary"]
    assert checks["checkpoint.parameters"]["outcome"] == "passed"


REAL = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures/loader_truth/mixed_precision.json").read_text()
)["real_exports"]["outcomes"]


@pytest.mark.parametrize("release", ["0.26.0", "0.33.0"])
@pytest.mark.parametrize("name", ["mixed-fp8-attn-nvfp4-mlp", "mixed-fp8-attn-int4awq-mlp"])
@pytest.mark.parametrize("cc", ["9.0", "10.0"])
def test_real_modelopt_exports_judged_as_the_real_loader_did(release, name, cc):
    """Real ModelOpt 0.47.0 exports (CPU) of both recipes of fixtures/modelopt_algos.py: the
    checks, computed with the recorded facts of the real vLLM, fail the one the real loader
    refused (those that judge its tensors), and fail nothing of the one it loaded (on sm 9.0 NVFP4 is Marlin FP4: a
    warning, as tables/quant_formats.py says)."""
    from test_modelopt_algos_truth import recomputed

    folder = Path(__file__).resolve().parents[1] / "fixtures/loader_truth/mixed" / name
    outcomes = recomputed(folder, name, release, cc)
    failed = sorted(k for k, o in outcomes.items() if o in ("failed", "error"))
    truth = REAL[release][name]
    assert truth["quant_config"] == "ModelOptMixedPrecisionConfig"
    # the refused one: checkpoint.parameters (as vLLM builds and loads it) and, since issue 22's
    # per-layer judgement, modelopt.tensors-complete (and quant.tensors-complete, its mirror)
    refused = ["checkpoint.parameters", "modelopt.tensors-complete", "quant.tensors-complete"]
    assert failed == ([] if truth["refused"] is None else refused)


def test_mixed_without_quantized_layers_is_refused(pytester, env_builder, tmp_path):
    """ModelOptMixedPrecisionConfig._from_config raises when the map is empty or absent."""
    env = make_env(env_builder, "0.26.0")
    builder = ckpts.mixed_llama("NVFP4")
    del builder.config["quantization_config"]["quantized_layers"]
    _, checks = run(pytester, env, builder.write(tmp_path / "mixed"))
    found = checks["checkpoint.parameters"]
    assert found["outcome"] == "failed" and found["evidence"]["vllm_effect"] == "refuses"
    assert (
        "vLLM raises at start: MIXED_PRECISION quant_algo requires a non-empty 'quantized_layers' "
        "mapping in the quantization config (read from config.json)" in found["summary"]
    )
    assert found["fix"].startswith("give config.json the quantized_layers map ModelOpt wrote")
    complete = checks["modelopt.tensors-complete"]
    assert complete["outcome"] == "failed" and "vLLM raises at start" in complete["summary"]


# -- the per-layer cases of fixtures/mixed_variants.py, held against the real loaders ---------
MIXED_TRUTH = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures/loader_truth/mixed_precision.json").read_text()
)["variants"]
LOADER_FACTS = Path(__file__).resolve().parents[1] / "fixtures/loader_truth"
KV_PARAMS = (".k_scale", ".v_scale", ".q_scale", ".prob_scale")


@pytest.mark.parametrize("release", ["0.26.0", "0.33.0"])
@pytest.mark.parametrize("name", list(mixed_variants.VARIANTS))
def test_tensors_complete_agrees_with_the_real_loader(tmp_path, release, name):
    """modelopt.tensors-complete, computed with the recorded facts of the real vLLM
    ``release``, on each variant the real loader ran (scripts/mixed_truth_cpu.py): it fails
    with "refuses" naming the tensor vLLM refused, fails with "wrong" naming every parameter
    vLLM left unset, and passes what vLLM loaded whole."""
    from pytest_vllm_env.checks.modelopt_tensors import tensors_complete
    from pytest_vllm_env.facts.vllm_loader_facts import VllmLoaderFacts
    from pytest_vllm_env.readers.checkpoint import read_checkpoint, read_scales, read_weight_samples

    truth = MIXED_TRUTH[name][release]
    if truth.get("undetermined") or "probe_error" in truth:
        pytest.skip(f"the CPU probe could not decide: {truth.get('undetermined')}")
    assert truth["config"]["quant_config"] == "ModelOptMixedPrecisionConfig"
    facts = VllmLoaderFacts.from_json(
        json.loads((LOADER_FACTS / f"vllm-{release}.json").read_text())
    )
    ckpt = read_checkpoint(name, mixed_variants.make(name, tmp_path / name))
    scales, _ = read_scales(ckpt)
    found = tensors_complete(ckpt, scales, read_weight_samples(ckpt), facts.modelopt, facts.kv)
    unset = [p for p in truth.get("unset", {}) if not p.endswith((".bias",) + KV_PARAMS)]
    if truth.get("refused"):
        assert found.outcome == "failed", found.summary
        assert found.evidence["vllm_effect"] == "refuses"
        assert truth["refused"]["tensor"] in found.evidence["tensors"]
    elif unset:
        assert found.outcome == "failed" and found.evidence["vllm_effect"] == "wrong"
        assert set(unset) <= set(found.evidence["tensors"])
    else:
        assert found.outcome == "passed", found.summary


@pytest.mark.parametrize("release", ["0.26.0", "0.33.0"])
@pytest.mark.parametrize("name", list(mixed_variants.VARIANTS))
def test_no_check_fails_what_the_real_loader_loads(tmp_path, release, name):
    """Every check that decides a load, on each variant: nothing fails what the real loader
    loaded whole (the MoE experts are as wide as moe_intermediate_size, not intermediate_size;
    the VL keys are matched after the model's mapper), and what it refused or left unset fails
    modelopt.tensors-complete."""
    from test_modelopt_algos_truth import recomputed

    truth = MIXED_TRUTH[name][release]
    if truth.get("undetermined") or "probe_error" in truth:
        pytest.skip(f"the CPU probe could not decide: {truth.get('undetermined')}")
    outcomes = recomputed(mixed_variants.make(name, tmp_path / name), name, release, "10.0")
    failed = {k for k, o in outcomes.items() if o in ("failed", "error")}
    if truth.get("refused") or truth.get("unset"):
        assert "modelopt.tensors-complete" in failed
    else:
        assert not failed


@pytest.mark.integration
@pytest.mark.parametrize("release", ["0.26.0", "0.33.0"])
def test_the_real_loader_still_does_what_was_recorded(tmp_path, release):
    """Where the release's venv is on this machine (scripts/loader_truth_cpu.py says how to
    make it), vLLM's real loader runs the variants again (CPU, load mode) and does what
    mixed_precision.json recorded: the same refusal stage and tensor, the same unset
    parameters, the same MoE parameters (the method get_quant_method chose)."""
    import sys

    venv = Path.home() / ".cache/pytest-vllm-env/venvs" / f"vllm-{release}" / "bin" / "python"
    if not venv.exists():
        pytest.skip(f"no {venv}")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import mixed_truth_cpu

    now = mixed_truth_cpu.probe(release, list(mixed_variants.VARIANTS), tmp_path)
    assert set(now) == set(mixed_variants.VARIANTS)
    for name, got in now.items():
        then = MIXED_TRUTH[name][release]
        assert bool(got.get("refused")) == bool(then.get("refused")), name
        if then.get("refused"):
            assert got["refused"].get("tensor") == then["refused"].get("tensor"), name
        assert got.get("unset") == then.get("unset"), name
        assert got.get("moe_params") == then.get("moe_params"), name
