"""ModelOpt ``quant_algo: "MIXED_PRECISION"``: each layer's own algorithm, as vLLM resolves it.

ModelOpt (0.47.0 ``modelopt/torch/export/quant_utils.py:get_quant_config``) writes
``quant_algo: "MIXED_PRECISION"`` when the layers' formats differ, with ``quantized_layers``:
one entry per checkpoint Linear (``"model.layers.0.self_attn.q_proj": {"quant_algo": "FP8"}``,
``{"quant_algo": "NVFP4", "group_size": 16}``, ``{"quant_algo": "W4A16_AWQ", ...}``), in
hf_quant_config.json's ``quantization`` block and (``convert_hf_config.py``) config.json's
``quantization_config`` as well.

vLLM (0.26.0 and 0.33.0 ``model_executor/layers/quantization/modelopt.py``,
``ModelOptMixedPrecisionConfig``):

- ``_from_config`` reads ``quantized_layers`` from the block it was given (``quantization``'s
  when the block has one, else the block's own) and raises when it is empty;
- ``_resolve_quant_algo(prefix)``: the prefix itself; else a fused layer (``qkv_proj``,
  ``gate_up_proj``) from its shards, which must agree ("Mixed quant_algo within fused layer
  ..."); else any key under the prefix (MoE experts); else None;
- ``get_quant_method``: a Linear whose algorithm is one it has a method for (0.26.0: FP8, NVFP4,
  W4A16_NVFP4, MXFP8; 0.33.0: ``LINEAR_ALGOS``, which adds FP8_PER_CHANNEL_PER_TOKEN and
  FP8_PB_WO) gets that method; any other Linear -- not in the map, or an algorithm it has no
  method for, such as W4A16_AWQ -- gets ``UnquantizedLinearMethod`` without a word: its
  quantized tensors then fail to load.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_vllm_env.facts.modelopt_load import FUSED

MIXED = "MIXED_PRECISION"
# the per-layer algorithms ModelOptMixedPrecisionConfig.get_quant_method builds a Linear method
# for: 0.26.0's if-chain (FP8, NVFP4, W4A16_NVFP4, MXFP8) and 0.33.0's LINEAR_ALGOS keys (adds
# the two FP8 variants). The union: a layer either release serves is never failed here.
LINEAR_0_26 = ("FP8", "NVFP4", "W4A16_NVFP4", "MXFP8")
LINEAR_0_33 = ("FP8", "FP8_PER_CHANNEL_PER_TOKEN", "FP8_PB_WO", "NVFP4", "W4A16_NVFP4", "MXFP8")
SERVED = tuple(dict.fromkeys(LINEAR_0_26 + LINEAR_0_33))


class FusedMismatch(ValueError):
    """vLLM's ``Mixed quant_algo within fused layer ...`` (raised while building the model)."""


def quantized_layers(block: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    """``(prefix, quant_algo upper-cased)`` of the block vLLM reads, as
    ``ModelOptMixedPrecisionConfig._from_config`` takes ``quantized_layers`` from it."""
    if not isinstance(block, Mapping):
        return ()
    inner = block.get("quantization")
    layers = inner.get("quantized_layers") if isinstance(inner, Mapping) else None
    if not isinstance(inner, Mapping):
        layers = block.get("quantized_layers")
    if not isinstance(layers, Mapping):
        return ()
    out = []
    for prefix, info in layers.items():
        algo = info.get("quant_algo") if isinstance(info, Mapping) else None
        out.append((str(prefix), str(algo or "").upper()))
    return tuple(out)


def _candidates(prefix: str) -> tuple[str, ...]:
    """``_quantized_layer_prefix_candidates``: the prefix, ``lm_head`` and the two spellings
    of a VL model's language model."""
    out = [prefix]
    if prefix.endswith(".lm_head"):
        out.append("lm_head")
    a, b = "language_model.model.", "model.language_model."
    if prefix.startswith(a):
        out.append(b + prefix[len(a) :])
    elif prefix.startswith(b):
        out.append(a + prefix[len(b) :])
    return tuple(dict.fromkeys(out))


def resolve(layers: Mapping[str, str], prefix: str) -> str | None:
    """The algorithm vLLM finds for a vLLM-side layer ``prefix`` (``_resolve_quant_algo``);
    raises :class:`FusedMismatch` as vLLM does when a fused layer's shards disagree."""
    for c in _candidates(prefix):
        if c in layers:
            return layers[c]
    base, _, proj = prefix.rpartition(".")
    if proj in FUSED:
        found = {
            layers[f"{b}.{s}"]
            for b in _candidates(base)
            for s in FUSED[proj]
            if f"{b}.{s}" in layers
        }
        if len(found) > 1:
            raise FusedMismatch(
                f"Mixed quant_algo within fused layer {prefix}: {found}. All shards must use "
                "the same quantization."
            )
        if found:
            return found.pop()
    for c in _candidates(prefix):
        for key, algo in layers.items():
            if key.startswith(c + "."):
                return algo
    return None
