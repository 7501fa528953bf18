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

Which vLLM layer a key names (both releases alike):

- ``apply_vllm_mapper`` renames the keys with the model class's ``hf_to_vllm_mapper`` before
  any lookup (``self.quantized_layers = hf_to_vllm_mapper.apply_dict(...)``), the mapper without
  its stacked entries (0.26.0 ``model_loader/utils.py:configure_quant_config`` and
  ``models/interfaces.py:SupportsQuant`` pass ``get_unstacked_mapper()``, 0.33.0
  ``get_rename_mapper()``): a Qwen2.5-VL key ``model.layers.0.mlp.down_proj`` (transformers <
  4.52) becomes ``language_model.model.layers.0.mlp.down_proj``, the layer's own prefix;
  ``_quantized_layer_prefix_candidates`` then also tries the other spelling of a VL language
  model (``language_model.model.`` / ``model.language_model.``) and bare ``lm_head``.
- MoE experts are one layer, ``<mlp>.experts`` (``FusedMoE``; 0.33.0 ``RoutedExperts``), whose
  checkpoint tensors ``<mlp>.experts.<e>.<proj>`` load through ``make_expert_params_mapping``.
  ``_resolve_quant_algo`` finds it by the key itself (a fused-experts module, as ModelOpt names
  transformers 5's ``Qwen3MoeExperts``), else by the FIRST key under ``<mlp>.experts.``
  (per-expert keys, transformers 4), else the first key under ``<mlp>.``: every expert gets that
  one algorithm, whatever the other experts' keys say. ``get_quant_method``'s RoutedExperts
  branch serves FP8, NVFP4, W4A16_NVFP4, MXFP8 (0.33.0 adds the block-FP8 ``FP8_PB_WO``,
  ``FP8_BLOCK_SCALES``); any other gives None (unquantized experts).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_vllm_env.facts.modelopt_load import FUSED, SHARD_OF

MIXED = "MIXED_PRECISION"
# the per-layer algorithms ModelOptMixedPrecisionConfig.get_quant_method builds a Linear method
# for: 0.26.0's if-chain (FP8, NVFP4, W4A16_NVFP4, MXFP8) and 0.33.0's LINEAR_ALGOS keys (adds
# the two FP8 variants). The union: a layer either release serves is never failed here.
LINEAR_0_26 = ("FP8", "NVFP4", "W4A16_NVFP4", "MXFP8")
LINEAR_0_33 = ("FP8", "FP8_PER_CHANNEL_PER_TOKEN", "FP8_PB_WO", "NVFP4", "W4A16_NVFP4", "MXFP8")
SERVED = tuple(dict.fromkeys(LINEAR_0_26 + LINEAR_0_33))
# get_quant_method's RoutedExperts branch: 0.26.0 FP8/NVFP4/W4A16_NVFP4/MXFP8; 0.33.0 adds
# _BLOCK_FP8_MOE_ALGOS ("FP8_PB_WO", "FP8_BLOCK_SCALES") through Fp8MoEMethod
MOE_0_26 = ("FP8", "NVFP4", "W4A16_NVFP4", "MXFP8")
MOE_SERVED = MOE_0_26 + ("FP8_PB_WO", "FP8_BLOCK_SCALES")
# a checkpoint module inside a MoE layer's experts: <mlp>.experts.<e>.<proj>
EXPERT = re.compile(r"^(?P<layer>.+\.experts)\.\d+\.[^.]+$")
Rename = Sequence[tuple[str, "str | None"]]


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


def resolve(
    layers: Mapping[str, str], prefix: str, packed: Mapping[str, Sequence[str]] | None = None
) -> str | None:
    """The algorithm vLLM finds for a vLLM-side layer ``prefix``, in
    ``_resolve_quant_algo``'s order (0.26.0 and 0.33.0 alike): 1. the prefix (and its
    candidates); 2. a packed layer from its shards (the model's ``packed_modules_mapping``,
    ``packed``; Llama-style when not given), which must agree; 3. the first key under the
    prefix; 3b. for ``...experts``, the first key under its parent; 4. ``qkv_proj`` /
    ``gate_up_proj`` from their shards by a fixed table. Raises :class:`FusedMismatch` as vLLM
    does when a fused layer's shards disagree. ``layers`` are the keys as vLLM holds them
    (:func:`vllm_keys`)."""
    cands = _candidates(prefix)
    for c in cands:
        if c in layers:
            return layers[c]
    base, _, proj = prefix.rpartition(".")
    mapping = FUSED if packed is None else packed
    if proj in mapping:
        found = _shard_algos(layers, prefix, _candidates(base), mapping[proj])
        if found:
            return found
    for c in cands:
        for key, algo in layers.items():
            if key.startswith(c + "."):
                return algo
    if prefix.endswith(".experts"):
        parent = prefix.rsplit(".experts", 1)[0] + "."
        for key, algo in layers.items():
            if key.startswith(parent):
                return algo
    if proj in FUSED:
        parents = tuple(c.rsplit(".", 1)[0] for c in cands)
        return _shard_algos(layers, prefix, parents, FUSED[proj])
    return None


def _shard_algos(
    layers: Mapping[str, str], prefix: str, bases: Sequence[str], names: Sequence[str]
) -> str | None:
    found = {layers[f"{b}.{s}"] for b in bases for s in names if f"{b}.{s}" in layers}
    if len(found) > 1:
        shown = "{" + ", ".join(repr(a) for a in sorted(found)) + "}"  # vLLM's set, in order
        raise FusedMismatch(
            f"Mixed quant_algo within fused layer {prefix}: {shown}. All shards must use "
            "the same quantization."
        )
    return found.pop() if found else None


def rename(
    name: str, prefixes: Rename = (), substrs: Rename = (), suffixes: Rename = ()
) -> str | None:
    """``WeightsMapper._map_name`` without the stacked entries (what ``apply_vllm_mapper`` is
    given): substrings, then prefixes, then suffixes, each applied in order; None where an
    entry maps to None."""
    out: str | None = name
    for sub, new in substrs:
        if sub in out:
            if new is None:
                return None
            out = out.replace(sub, new, 1)
    for pre, new in prefixes:
        if out.startswith(pre):
            if new is None:
                return None
            out = out.replace(pre, new, 1)
    for suf, new in suffixes:
        if out.endswith(suf):
            if new is None:
                return None
            out = new.join(out.rsplit(suf, 1))
    return out


def vllm_keys(
    layers: Mapping[str, str], prefixes: Rename = (), substrs: Rename = (), suffixes: Rename = ()
) -> dict[str, str]:
    """``quantized_layers`` after ``apply_vllm_mapper``: each key renamed by the model's
    mapper (``WeightsMapper.apply_dict``). A key the mapper maps to None is dropped (0.26.0's
    unstacked mapper; 0.33.0's rename mapper keeps it as written, but the same mapper drops
    that module's weights, so no layer of vLLM's looks it up)."""
    out: dict[str, str] = {}
    for key, algo in layers.items():
        new = rename(key, prefixes, substrs, suffixes)
        if new is not None:
            out[new] = algo
    return out


def vllm_layer(module: str, modules: Mapping[str, object]) -> str:
    """The vLLM layer a checkpoint module (already renamed) loads into: ``<mlp>.experts`` for
    an expert's projection (``FusedMoE.make_expert_params_mapping``), the fused name for a
    shard whose siblings are there too (``packed_modules_mapping``), else itself."""
    m = EXPERT.match(module)
    if m:
        return m.group("layer")
    parent, _, leaf = module.rpartition(".")
    fused = SHARD_OF.get(leaf)
    if fused and all(f"{parent}.{s}" in modules for s in FUSED[fused]):
        return f"{parent}.{fused}"
    return module


def module_algos(
    layers: Mapping[str, str],
    modules: Sequence[str],
    prefixes: Rename = (),
    substrs: Rename = (),
    suffixes: Rename = (),
) -> dict[str, str | None | FusedMismatch]:
    """For each checkpoint Linear module, the algorithm vLLM builds the layer it loads into
    with (before asking whether it serves it): keys and module names renamed by the model's
    mapper, the module taken to its vLLM layer (:func:`vllm_layer`), then
    :func:`resolve`; a :class:`FusedMismatch` where vLLM raises."""
    keys = vllm_keys(layers, prefixes, substrs, suffixes)
    named = {m: rename(m, prefixes, substrs, suffixes) for m in modules}
    present = {n for n in named.values() if n is not None}
    out: dict[str, str | None | FusedMismatch] = {}
    # once per vLLM layer: a MoE layer's hundreds of expert modules share one answer, and a
    # key-less lookup scans every key (_resolve_quant_algo's step 3)
    done: dict[str, str | None | FusedMismatch] = {}
    for module, name in named.items():
        if name is None:
            continue  # the mapper drops its weights: vLLM never loads them
        layer = vllm_layer(name, present)
        if layer not in done:
            try:
                done[layer] = resolve(keys, layer)
            except FusedMismatch as e:
                done[layer] = e
        out[module] = done[layer]
    return out


def is_expert(module: str) -> bool:
    """Whether a checkpoint module is one expert's projection (a RoutedExperts layer's)."""
    return EXPERT.match(module) is not None
