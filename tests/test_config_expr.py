"""readers/config_expr.py: a model file's expressions evaluated over config.json, and
readers/hf_config_class.py's view of config.json through the transformers class."""

from __future__ import annotations

from pytest_vllm_env.facts.vllm_model_params import with_class
from pytest_vllm_env.readers import config_expr
from pytest_vllm_env.readers.config_expr import UNKNOWN, evaluate

# Qwen3-MoE's DecoderLayer test, as the reader hands it over (names substituted)
SPARSE = (
    "extract_layer_index(prefix) not in ([] if not hasattr(vllm_config.model_config."
    "hf_text_config, 'mlp_only_layers') else vllm_config.model_config.hf_text_config."
    "mlp_only_layers) and (vllm_config.model_config.hf_text_config.num_experts > 0 and "
    "(extract_layer_index(prefix) + 1) % vllm_config.model_config.hf_text_config."
    "decoder_sparse_step == 0)"
)


def test_the_sparse_block_condition_per_layer() -> None:
    config = {"num_experts": 4, "decoder_sparse_step": 2, "mlp_only_layers": [3]}
    assert [evaluate(SPARSE, config, i) for i in range(6)] == [
        False, True, False, False, False, True,
    ]  # fmt: skip


def test_a_key_config_json_lacks_is_unknown_not_false() -> None:
    assert evaluate(SPARSE, {"decoder_sparse_step": 1}, 0) is UNKNOWN
    assert evaluate("some_call(config)", {}, 0) is UNKNOWN


def test_the_transformers_class_supplies_aliases_and_defaults() -> None:
    """transformers 5 writes num_local_experts; the class maps num_experts to it and
    defaults decoder_sparse_step (readers/hf_config_class.py reads both)."""
    cls = {
        "attribute_map": {"num_experts": "num_local_experts"},
        "defaults": {"decoder_sparse_step": 1},
    }
    config = with_class({"num_local_experts": 8}, cls)
    assert evaluate(SPARSE, config, 0) is True
    assert evaluate(SPARSE, {"num_local_experts": 8}, 0) is UNKNOWN


def test_nested_configs_and_python_semantics() -> None:
    config = {"text_config": {"hidden_size": 32}, "vision_config": {"depth": 3}}
    assert config_expr.as_int("config.vision_config.depth", config) == 3
    assert config_expr.as_int("config.hidden_size", config) == 32  # text_config first
    assert evaluate("getattr(config, 'head_dim', None) or 8", config) == 8
    assert config_expr.as_int("True", config) is None  # a bool is no size
