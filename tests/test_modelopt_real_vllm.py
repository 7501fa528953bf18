# ruff: noqa: E501  (the expected message is kept whole: it is what users read)
"""The static reader against real vLLM wheels (integration tier: a 304 MB download, cached).

The default tier runs on our stand-in text; these prove the reader gets what the real
files say: FACTS.md's measured rejection message and list, FP8's minimum of 8.9, the
registry's architectures, with nothing imported.
"""

from __future__ import annotations

import zipfile

import pytest

from fixtures import checkpoints as ckpts
from fixtures.downloads import wheel
from fixtures.text import lit
from fixtures.vllm_standin import install_vllm
from pytest_vllm_env.readers.vllm_source import (
    MODELOPT_PY,
    REGISTRY_PY,
    parse_modelopt,
    parse_registry,
)

pytestmark = pytest.mark.integration

# FACTS.md: what vLLM 0.26.0 said on an H100 for an unknown quant_algo.
FACTS_MESSAGE = (
    "ModelOpt currently only supports: ['FP8', 'FP8_PER_CHANNEL_PER_TOKEN', 'FP8_PB_WO', "
    "'NVFP4', 'W4A16_NVFP4', 'MXFP8', 'MIXED_PRECISION'] quantizations in vLLM. Please "
    "check the `hf_quant_config.json` file for your model's quant configuration."
)


def _texts(version: str) -> tuple[str, str]:
    with zipfile.ZipFile(wheel(f"vllm=={version}")) as zf:
        return zf.read(MODELOPT_PY).decode(), zf.read(REGISTRY_PY).decode()


def test_vllm_0_26_0_modelopt_source_read_exactly():
    modelopt, registry = _texts("0.26.0")
    facts = parse_modelopt(modelopt)
    assert facts.missing == ()
    assert list(facts.quant_algos or ()) == [
        "FP8",
        "FP8_PER_CHANNEL_PER_TOKEN",
        "FP8_PB_WO",
        "NVFP4",
        "W4A16_NVFP4",
        "MXFP8",
        "MIXED_PRECISION",
    ]
    assert facts.unsupported_message == FACTS_MESSAGE
    fp8 = facts.config_class_for("FP8")
    assert (fp8.name, fp8.method, fp8.min_capability) == ("ModelOptFp8Config", "modelopt", 89)
    fp4 = facts.config_class_for("NVFP4")
    # 0.26.0 runs NVFP4 down to Turing through Marlin: not "Blackwell only".
    assert (fp4.name, fp4.method, fp4.min_capability) == ("ModelOptNvFp4Config", "modelopt_fp4", 75)
    reg = parse_registry(registry)
    assert reg.missing == ()
    assert {"LlamaForCausalLM", "Qwen2_5_VLForConditionalGeneration"} <= reg.architectures
    assert "Qwen2_5_VLForConditionalGeneration" in reg.multimodal


def test_vllm_0_33_0_modelopt_source_read_exactly():
    """0.33.0 builds QUANT_ALGOS as [*LINEAR_ALGOS, "MIXED_PRECISION"] and lowers FP8's
    minimum capability to 8.0 (FP8 Marlin): both read from the wheel."""
    facts = parse_modelopt(_texts("0.33.0")[0])
    assert facts.missing == ()
    assert facts.unsupported_message == FACTS_MESSAGE  # the same seven, the same words
    fp8 = facts.config_class_for("FP8_PB_WO")
    assert (fp8.name, fp8.method, fp8.min_capability) == ("ModelOptFp8Config", "modelopt", 80)
    assert facts.config_class_for("W4A16_NVFP4").min_capability == 75
    assert (facts.exclusion, facts.splits_wildcards) == ("fused", True)


def test_suite_on_real_vllm_files_quotes_vllm(pytester, env_builder, tmp_path):
    modelopt, registry = _texts("0.26.0")
    install_vllm(env_builder, "0.26.0", modelopt=modelopt, registry=registry)
    folder = ckpts.broken("unknown-algo", tmp_path / "int4")
    result = pytester.runpytest(
        "--vllm-conformance",
        "-m",
        "toolchain",
        "-k",
        "test_modelopt",
        "--vllm-env",
        str(env_builder.prefix),
        "--modelopt-checkpoint",
        str(folder),
        "--cuda-arch",
        "9.0",
    )
    result.stdout.fnmatch_lines(
        [
            lit(
                f"*[modelopt.quant-algo-supported] FAILED: int4: vLLM 0.26.0 refuses quant_algo 'INT4_AWQ' (from config.json); it would say: {FACTS_MESSAGE}"
            )
        ]
    )


# Read from each wheel on 2026-11-22: what changes between versions, and why the verdict
# must come from the env's own copy.
VERSIONS = {
    "0.8.5": (["FP8", "NVFP4"], 89, 100),
    "0.10.1.1": (["FP8", "NVFP4"], 89, 80),
    "0.12.0": (["FP8", "NVFP4"], 89, 80),
}


@pytest.mark.parametrize("version", list(VERSIONS))
def test_older_vllm_versions_read_statically(version):
    algos, fp8_min, fp4_min = VERSIONS[version]
    modelopt, registry = _texts(version)
    facts = parse_modelopt(modelopt)
    assert list(facts.quant_algos or ()) == algos
    assert facts.unsupported_message == (
        f"ModelOpt currently only supports: {algos} quantizations in vLLM. Please check the "
        "`hf_quant_config.json` file for your model's quant configuration."
    )
    assert facts.config_class_for("FP8").min_capability == fp8_min
    assert facts.config_class_for("NVFP4").name == "ModelOptNvFp4Config"
    assert facts.config_class_for("NVFP4").min_capability == fp4_min
    assert "LlamaForCausalLM" in parse_registry(registry).architectures


def _real_functions(version: str):
    """vLLM's own ``is_layer_excluded`` (with the ``is_layer_skipped`` it calls) and
    ``apply_vllm_mapper``, taken out of the wheel with ``ast`` and run alone: the real
    rules, without importing torch."""
    import ast
    import fnmatch
    from collections.abc import Mapping
    from types import MappingProxyType

    with zipfile.ZipFile(wheel(f"vllm=={version}")) as zf:
        modelopt = ast.parse(zf.read(MODELOPT_PY))
        utils = ast.parse(zf.read("vllm/model_executor/layers/quantization/utils/quant_utils.py"))
    base = next(  # 0.10.x has no base class: each config class has its own copy
        (
            n
            for n in modelopt.body
            if isinstance(n, ast.ClassDef) and n.name == "ModelOptQuantConfigBase"
        ),
        next(n for n in modelopt.body if isinstance(n, ast.ClassDef)),
    )
    wanted = ("is_layer_excluded", "apply_vllm_mapper")
    funcs: list[ast.FunctionDef] = []
    classes = [base] + [n for n in modelopt.body if isinstance(n, ast.ClassDef) and n is not base]
    for cls in classes:  # 0.10.x defines is_layer_excluded on each config class
        for n in cls.body:
            if isinstance(n, ast.FunctionDef) and n.name in wanted:
                if n.name not in {f.name for f in funcs}:
                    funcs.append(n)
    funcs += [
        n for n in utils.body if isinstance(n, ast.FunctionDef) and n.name == "is_layer_skipped"
    ]
    namespace = {
        "fnmatch": fnmatch.fnmatch,
        "Mapping": Mapping,
        "MappingProxyType": MappingProxyType,
        "WeightsMapper": object,
    }
    module = ast.Module(body=funcs, type_ignores=[])
    exec(compile(module, "vllm-extract", "exec"), namespace)  # noqa: S102
    return namespace["is_layer_excluded"], namespace.get("apply_vllm_mapper")


@pytest.mark.parametrize(
    ("version", "legacy"), [("0.26.0", False), ("0.12.0", False), ("0.10.1.1", True)]
)
def test_exclusion_rules_agree_with_vllms_own_function(version, legacy):
    """Our exclusion (modelopt_load.excluder: fused layers for >= 0.11, substrings before)
    against each vLLM's own code, with Llama's packed_modules_mapping, on every layer name
    vLLM builds for our fixture checkpoints and many exclude lists: the same answer, and
    the same refusal."""
    from types import SimpleNamespace

    from pytest_vllm_env.facts.modelopt_load import (
        ALWAYS_UNQUANTIZED,
        FUSED,
        ShardMismatch,
        excluder,
        fused_name,
    )

    is_layer_excluded, apply_vllm_mapper = _real_functions(version)
    assert (apply_vllm_mapper is None) == legacy
    facts = parse_modelopt(_texts(version)[0])  # what the checks read from the env's copy
    assert facts.exclusion == ("substring" if legacy else "fused")
    split = facts.splits_wildcards
    assert split == (version == "0.26.0")
    modules = {n.rpartition(".")[0]: {} for n in ckpts.llama().tensors}
    modules |= {n.rpartition(".")[0]: {} for n in ckpts.qwen25_vl().tensors}
    modules |= {"language_model.model.layers.0.mlp.up_proj": {}, "model.layers.10.mlp.up_proj": {}}
    layers = sorted({fused_name(m, modules) for m in modules})
    pattern_sets = [
        ["lm_head", "model.embed_tokens"],
        ["lm_head", "model.visual*"],
        ["visual*"],
        ["model.layers.0.mlp.down_proj"],
        ["model.layers.0.self_attn.q_proj"],
        [
            "model.layers.0.self_attn.q_proj",
            "model.layers.0.self_attn.k_proj",
            "model.layers.0.self_attn.v_proj",
        ],
        ["*q_proj"],
        ["q_proj"],
        ["model.layers.1*"],
        ["model.layers.1"],
        ["*self_attn*"],
        ["*.o_proj", "lm_head"],
        ["model.language_model.layers.[01].mlp*"],
        ["mlp"],
        [],
    ]
    identity = SimpleNamespace(apply_list=lambda names: list(names))
    packed = {k: list(v) for k, v in FUSED.items()}
    compared = 0
    for patterns in pattern_sets:
        this = SimpleNamespace(exclude_modules=list(patterns), packed_modules_mapping=packed)
        if apply_vllm_mapper is not None:
            apply_vllm_mapper(this, identity)  # 0.26 splits "x*" into "x", "x.*"; 0.12 not
        ours = excluder(patterns, legacy=legacy, split=split)
        for layer in layers:
            if any(m in layer for m in ALWAYS_UNQUANTIZED):
                continue  # vLLM checks those in get_quant_method, not here
            try:
                real = is_layer_excluded(this, layer)
            except ValueError:
                real = "refuses"
            try:
                mine = ours(layer)
            except ShardMismatch:
                mine = "refuses"
            assert mine == real, (patterns, layer)
            compared += 1
    assert compared > 300
