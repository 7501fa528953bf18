# ruff: noqa: E501  (expected messages are kept whole: they are what users read)
"""F3.9: KV-cache scales the env's vLLM would not deliver to the attention layer.

The env's vLLM decides how a checkpoint's ``k_scale``/``v_scale`` are renamed
(``vllm_kv_naming``): vLLM 0.2x renames them centrally and refuses what lands nowhere
(silently dropping ``.k_scale`` names that land on no attention layer); 0.10/0.12 leave it
to each model's loader, which drops what its patterns send nowhere, with a log line. The
stand-in files below have the structure of those vLLM files (written here, not copied);
the real ones are read in the integration tier, and the real loads are in
test_calibration.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures import variants
from fixtures.envs import EnvBuilder
from fixtures.vllm_standin import install_vllm
from pytest_vllm_env.readers import vllm_kv_naming as kvn

REPO = Path(__file__).resolve().parents[1]
LLAMA_KV = REPO / "fixtures" / "modelopt_export" / "llama-kv-fp8"
SUITE = ("--vllm-conformance", "-m", "toolchain", "-k", "tensors_complete")

CENTRAL_BASE = """
import re
class QuantizationConfig:
    _ignore_unexpected_suffixes = (".q_scale", ".k_scale", ".v_scale")
    @staticmethod
    def get_cache_scale_mapper():
        return WeightsMapper(orig_to_new_regex={
            re.compile(r"\\.self_attn\\.[kv]_proj\\.([kv])_scale$"): r".self_attn.attn.\\1_scale",
            re.compile(r"(?<!\\.attn)\\.([qkv])_scale$"): r".attn.\\1_scale",
        })
"""
CENTRAL_UTILS = """
class AutoWeightsLoader:
    def load_weights(self, weights, *, mapper=None):
        mapper |= quant_config.get_cache_scale_mapper()
"""
PER_MODEL_WEIGHT_UTILS = """
def maybe_remap_kv_scale_name(name, params_dict):
    if name.endswith(".kv_scale"):
        remapped_name = name.replace(".kv_scale", ".attn.k_scale")
        return remapped_name if remapped_name in params_dict else None
    attn_str = "attn"
    scale_mapping_patterns = [
        (r"\\.self_attn\\.([kv])_proj\\.([kv])_scale$", rf".self_attn.{attn_str}.\\2_scale"),
        (r"\\.([kv])_scale$", r".attn.\\1_scale"),
    ]
    return name
"""


def test_parse_central_naming():
    naming = kvn.parse(CENTRAL_BASE, CENTRAL_UTILS, None)
    assert naming.mode == "central" and not naming.missing
    assert naming.ignored_suffixes == (".q_scale", ".k_scale", ".v_scale")
    assert (
        naming.vllm_name("m.layers.0.self_attn.k_proj.k_scale")
        == "m.layers.0.self_attn.attn.k_scale"
    )
    assert naming.vllm_name("m.layers.0.self_attn.v_scale") == "m.layers.0.self_attn.attn.v_scale"
    assert (
        naming.vllm_name("m.layers.0.self_attn.attn.k_scale") == "m.layers.0.self_attn.attn.k_scale"
    )


def test_parse_per_model_naming():
    # no central mapper in models/utils.py: the older per-model function decides
    naming = kvn.parse(CENTRAL_BASE, "class AutoWeightsLoader: pass", PER_MODEL_WEIGHT_UTILS)
    assert naming.mode == "per-model"
    assert naming.rules[0] == (r"\.kv_scale$", ".attn.k_scale")
    assert (
        naming.vllm_name("m.layers.0.self_attn.k_proj.k_scale")
        == "m.layers.0.self_attn.attn.k_scale"
    )
    # the first pattern that matches wins; an already-placed name is renamed again (0.12.0)
    assert (
        naming.vllm_name("m.layers.0.self_attn.attn.k_scale")
        == "m.layers.0.self_attn.attn.attn.k_scale"
    )


@pytest.mark.parametrize(
    "texts",
    [
        (None, None, None),
        ("not python (", "get_cache_scale_mapper", None),
        ("x = 1", "", "def f(): pass"),
    ],
)
def test_unreadable_naming_says_why(texts):
    naming = kvn.parse(*texts)
    assert naming.mode is None and naming.missing


@pytest.fixture
def central_env(env_builder: EnvBuilder) -> EnvBuilder:
    install_vllm(
        env_builder, extra={kvn.BASE_CONFIG_PY: CENTRAL_BASE, kvn.MODELS_UTILS_PY: CENTRAL_UTILS}
    )
    return env_builder


@pytest.fixture
def per_model_env(env_builder: EnvBuilder) -> EnvBuilder:
    install_vllm(
        env_builder,
        "0.12.0",
        extra={
            kvn.MODELS_UTILS_PY: "class AutoWeightsLoader: pass",
            kvn.WEIGHT_UTILS_PY: PER_MODEL_WEIGHT_UTILS,
        },
    )
    return env_builder


def run(pytester, env, folder):
    report = pytester.path / "report.json"
    result = pytester.runpytest(
        *SUITE,
        f"--vllm-env={env.prefix}",
        f"--modelopt-checkpoint={folder}",
        f"--vllm-env-report={report}",
    )
    assert "Traceback" not in result.stdout.str()
    (check,) = [
        c
        for c in json.loads(report.read_text())["checks"]
        if c["id"] == "modelopt.tensors-complete"
    ]
    return result, check


def test_real_export_with_kv_scales_passes(pytester, central_env):
    result, check = run(pytester, central_env, LLAMA_KV)
    assert check["outcome"] == "passed", check
    assert "KV-cache scales present" in check["summary"]


def test_llm_compressor_naming_passes_on_central_vllm(pytester, central_env, tmp_path):
    # self_attn.k_scale (vLLM #54623's naming): vLLM 0.26.0 placed it on the H100
    folder = variants.make("kv-names-attn", LLAMA_KV, tmp_path / "attn")
    result, check = run(pytester, central_env, folder)
    assert check["outcome"] == "passed", check


def test_unknown_kv_scale_name_is_refused(pytester, central_env, tmp_path):
    # vLLM 0.26.0 on the H100: "There is no module or parameter named
    # 'layers.0.self_attn.k_cache_scale' in LlamaModel"
    folder = variants.make("kv-names-unknown", LLAMA_KV, tmp_path / "unknown")
    result, check = run(pytester, central_env, folder)
    assert check["outcome"] == "failed"
    assert check["evidence"]["tensors"][0] == "model.layers.0.self_attn.k_cache_scale"
    result.stdout.fnmatch_lines(
        [
            "*unknown: vLLM refuses to load it: model.layers.0.self_attn.k_cache_scale is a KV-cache scale vLLM cannot place: its rename (vllm/model_executor/layers/quantization/base_config.py) gives 'model.layers.0.self_attn.k_cache_scale', which no layer has (vLLM 0.26.0 on the H100: \"There is no module or parameter named ...\")*",
            "*fix: name the KV-cache scales as ModelOpt's export does (<layer>.self_attn.k_proj.k_scale, <layer>.self_attn.v_proj.v_scale)*",
        ]
    )


def test_scales_an_older_vllm_drops_are_a_warning(pytester, per_model_env, tmp_path):
    # vLLM 0.12's maybe_remap_kv_scale_name renames an already-placed attn.k_scale again and
    # drops it ("k_scale is not loaded"): the layers run at 1.0, loads, an accuracy cost
    folder = variants.make("kv-names-vllm", LLAMA_KV, tmp_path / "vllm")
    result, check = run(pytester, per_model_env, folder)
    assert check["outcome"] == "warning", check
    result.stdout.fnmatch_lines(
        [
            "*vllm: vLLM loads it, at a cost: 4 KV-cache scale(s) land on no attention layer after vLLM's rename (vllm/model_executor/model_loader/weight_utils.py) and are dropped with vLLM's log line \"kv_scale is not loaded\": model.layers.0.self_attn.attn.k_scale -> model.layers.0.self_attn.attn.attn.k_scale*",
            "*fix: rename the KV-cache scales to a form the installed vLLM maps*",
        ]
    )
    # the same checkpoint on a central-naming vLLM: placed
    assert kvn.VLLM_0_26.vllm_name("model.layers.0.self_attn.attn.k_scale").endswith(
        ".attn.k_scale"
    )


@pytest.mark.integration
@pytest.mark.parametrize(
    "version,mode", [("0.10.1.1", "per-model"), ("0.12.0", "per-model"), ("0.26.0", "central")]
)
def test_real_vllm_naming(version, mode):
    """The three files read out of the real wheels: the built-in 0.26.0 naming is 0.26.0's."""
    import zipfile

    from fixtures.downloads import wheel

    with zipfile.ZipFile(wheel(f"vllm=={version}")) as whl:
        names = set(whl.namelist())
        text = [
            whl.read(p).decode() if p in names else None
            for p in (kvn.BASE_CONFIG_PY, kvn.MODELS_UTILS_PY, kvn.WEIGHT_UTILS_PY)
        ]
    naming = kvn.parse(*text)
    assert naming.mode == mode, naming.missing
    if version == "0.26.0":
        assert naming.rules == kvn.VLLM_0_26.rules
        assert naming.ignored_suffixes == kvn.VLLM_0_26.ignored_suffixes
    assert (
        naming.vllm_name("model.layers.0.self_attn.k_proj.k_scale")
        == "model.layers.0.self_attn.attn.k_scale"
    )
