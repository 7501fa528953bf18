"""Which quantization scheme vLLM builds for each Linear of a checkpoint, read from its config as
vLLM reads it, before anything loads: a fact of the checkpoint (pure: config and tensor names
in, a :class:`QuantPlan` out).

- ``quant_method: "compressed-tensors"``: ``CompressedTensorsConfig.from_config`` builds a
  target -> scheme map from ``config_groups`` (vLLM 0.33.0 refuses ``actorder`` group/dynamic
  there); ``get_scheme`` skips a layer in ``ignore`` (``should_ignore_layer``: exact name or
  ``re:`` regex, fused layers decided on their shards, which must agree), finds its target
  (``find_matched_target``: the layer name, then the module's class name, "Linear" being
  contained in every vLLM Linear class but ``ParallelLMHead``), and
  ``_get_scheme_from_parts`` picks the scheme class (modelled by :func:`ct_scheme`).
- ``quant_method: "fp8"``: ``Fp8Config`` (``weight_block_size``: block scales named
  ``weight_scale_inv``; ``ignored_layers`` / ``modules_to_not_convert``: exact names, fused
  layers by their shards, ``is_layer_skipped``).
- ``quant_method: "mxfp4"``: ``Mxfp4Config``: MoE experts only.
- ModelOpt: :mod:`pytest_vllm_env.facts.modelopt_settings` (the plan only names it).

Read from vLLM 0.26.0 and 0.33.0 ``compressed_tensors/compressed_tensors.py``, ``utils.py``,
``fp8.py``, ``mxfp4.py``, ``utils/quant_utils.py:is_layer_skipped``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_vllm_env.facts.modelopt_load import FUSED, fused_name, shards
from pytest_vllm_env.facts.modelopt_mixed import MIXED, module_algos, quantized_layers
from pytest_vllm_env.facts.modelopt_settings import effective_settings, excluder
from pytest_vllm_env.facts.quant_release import Served, differs_between_releases, mixed_served
from pytest_vllm_env.readers.checkpoint import Checkpoint
from pytest_vllm_env.readers.safetensors_header import TensorInfo
from pytest_vllm_env.tables.quant_formats import QuantFormat, modelopt_format
from pytest_vllm_env.tables.quant_schemes import scheme_row

# what vLLM calls the formats (quant_method, lower-cased) -> our producer names
PRODUCERS = {"compressed-tensors": "compressed-tensors", "fp8": "fp8", "mxfp4": "mxfp4"}
ACT_QUANT_FORMATS = ("naive-quantized", "int-quantized", "float-quantized", "nvfp4-pack-quantized")
ACT_QUANT_FORMATS += ("mxfp4-pack-quantized", "mxfp8-quantized")
EMBEDDINGS = ("embed_tokens", "wte", "word_embeddings", "embed_positions")


@dataclass(frozen=True)
class Scheme:
    """One layer's scheme: its row and the settings its shapes depend on (``group``,
    ``block_n``/``block_k``, ``pack`` (values per int32), ``bits``), and the flags that
    add optional parameters (``zero_point``, ``g_idx``, ``static_input``, ...)."""

    row: QuantFormat
    settings: Mapping[str, int] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()
    kernel_family: str = ""

    @property
    def params(self) -> tuple:
        """The parameters vLLM registers for this layer."""
        return tuple(p for p in self.row.params if not p.when or p.when in self.flags)


@dataclass
class QuantPlan:
    """What vLLM will build: ``method`` (config.json's quant_method, lower-cased; None: no
    quantization_config), ``schemes`` per checkpoint Linear module, ``unquantized`` modules,
    and ``refusal``: vLLM's own error when it refuses the config before loading anything."""

    method: str | None
    producer: str | None
    schemes: dict[str, Scheme] = field(default_factory=dict)
    unquantized: set[str] = field(default_factory=set)
    refusal: str | None = None
    refusal_fix: str = ""
    unmodelled: set[str] = field(default_factory=set)  # vLLM scheme classes without a row
    model_type: str | None = None
    act_dtype: str = "bfloat16"
    notes: list[str] = field(default_factory=list)
    # what the plan assumed where the env's vLLM did not answer (facts/quant_release.py): a
    # verdict built on it says so; '' when every answer was the env's own (or its release's)
    assumed: str = ""


def linear_names(modules: Mapping[str, Mapping[str, TensorInfo]]) -> list[str]:
    """The checkpoint modules vLLM builds as Linear layers: a 2-D weight (or a quantized
    stand-in: ``weight_packed``), embeddings, norms, MoE experts and routers excepted."""
    out = []
    for prefix, parts in modules.items():
        leaf = prefix.rpartition(".")[2]
        weight = parts.get("weight") or parts.get("weight_packed")
        if weight is None or len(weight.shape) != 2 or leaf in EMBEDDINGS:
            continue
        if leaf in ("gate", "router") or ".experts." in f"{prefix}." or "norm" in leaf:
            continue
        out.append(prefix)
    return sorted(out)


def plan(
    ckpt: Checkpoint, refused_actorders: Sequence[str] = (), served: Served | None = None
) -> QuantPlan:
    """The plan for a checkpoint (its config.json, its quantization block, its modules);
    ``refused_actorders``: the ``actorder`` values the env's vLLM refuses in ``from_config``
    (0.33.0: group, dynamic). A ModelOpt checkpoint (config.json's block says modelopt, or
    only hf_quant_config.json exists) is planned from the settings vLLM reads
    (:mod:`pytest_vllm_env.facts.modelopt_settings`); a MIXED_PRECISION one layer by layer,
    with ``served`` the per-layer algorithms the env's vLLM builds a Linear method for
    (:func:`pytest_vllm_env.facts.quant_release.mixed_served`; None: not known, which the
    plan's ``assumed`` then says)."""
    config: Mapping[str, Any] = ckpt.config or {}
    block = ckpt.quantization_config
    modules = ckpt.modules
    text = config.get("text_config")
    text = text if isinstance(text, Mapping) else config
    model_type = text.get("model_type")
    dtype = str(text.get("torch_dtype") or text.get("dtype") or "bfloat16")
    method = str(block.get("quant_method", "")).lower() if block else None
    if method is None and ckpt.hf_quant_config is not None:
        method = "modelopt"
    out = QuantPlan(method, PRODUCERS.get(method or ""), model_type=model_type, act_dtype=dtype)
    if (method or "").startswith("modelopt"):
        out.producer = "modelopt"
        _plan_modelopt(out, ckpt, served or mixed_served(None, None))
    elif out.producer == "compressed-tensors":
        _plan_ct(out, block or {}, modules, refused_actorders)
    elif out.producer == "fp8":
        _plan_fp8(out, block or {}, modules)
    elif out.producer == "mxfp4":
        row = scheme_row("mxfp4", "MXFP4")
        assert row is not None
        out.unquantized = set(linear_names(modules))
        out.schemes = {p: Scheme(row, {}, frozenset(), "mxfp4_moe") for p in _moe_layers(modules)}
    return out


def _plan_modelopt(out: QuantPlan, ckpt: Checkpoint, served: Served) -> None:
    """ModelOpt: the row of the effective quant_algo, vLLM's exclusion rule (0.26.0's)."""
    eff = effective_settings(ckpt)
    if eff is not None and eff.algo == MIXED:
        _plan_mixed(out, ckpt, eff.source, excluder(eff.exclude), served)
        return
    row = modelopt_format(eff.algo if eff else None)
    if eff is None or row is None or not row.tensors_known:
        out.notes.append(f"ModelOpt {eff.algo if eff else None}: no row to plan from")
        return
    excluded = excluder(eff.exclude)
    settings = {"block_n": 128, "block_k": 128} if row.kernel_family == "fp8_block" else {}
    for prefix in linear_names(ckpt.modules):
        if excluded(prefix, ckpt.modules):
            out.unquantized.add(prefix)
        else:
            out.schemes[prefix] = Scheme(row, settings, frozenset(), row.kernel_family)


def _plan_mixed(
    out: QuantPlan, ckpt: Checkpoint, source: str, excluded: Any, served: Served
) -> None:
    """MIXED_PRECISION: each Linear gets the row of its own quantized_layers entry, as
    ModelOptMixedPrecisionConfig.get_quant_method picks its method (facts/modelopt_mixed.py);
    an algorithm it has no method for in the env's vLLM (``served``), or none, leaves the
    layer unquantized."""
    block = ckpt.quantization_config if source == "config.json" else ckpt.hf_quant_config
    layers = dict(quantized_layers(block))
    if served.assumed and differs_between_releases(layers.values()):
        out.assumed = served.assumed
    names = linear_names(ckpt.modules)
    algos = module_algos(layers, names)  # as vLLM resolves each one's layer
    for prefix in names:
        own = None if excluded(prefix, ckpt.modules) else algos.get(prefix)
        row = modelopt_format(own) if isinstance(own, str) and own in served.algos else None
        if row is None or not row.tensors_known:
            out.unquantized.add(prefix)
            continue
        settings = {"block_n": 128, "block_k": 128} if row.kernel_family == "fp8_block" else {}
        out.schemes[prefix] = Scheme(row, settings, frozenset(), row.kernel_family)


def _moe_layers(modules: Mapping[str, Mapping[str, TensorInfo]]) -> list[str]:
    return sorted(p for p, parts in modules.items() if any(k.endswith("_blocks") for k in parts))


# -- compressed-tensors -----------------------------------------------------------------------
def _regex_or_equal(name: str, target: str) -> bool:
    # utils.py:_is_equal_or_regex_match: "re:" targets are re.match'ed, others compared
    if target.startswith("re:"):
        try:
            return re.match(target[3:], name) is not None
        except re.error:
            return False
    return name == target


def _ct_target(prefix: str, targets: Sequence[str]) -> str | None:
    """find_matched_target for a Linear: its name, then its class name (every vLLM Linear
    class contains "Linear"; lm_head is a ParallelLMHead, matched by name only)."""
    for t in targets:
        if _regex_or_equal(prefix, t):
            return t
    cls = "ParallelLMHead" if prefix.rpartition(".")[2] == "lm_head" else "RowParallelLinear"
    for t in targets:
        if _regex_or_equal(cls, t) or (not t.startswith("re:") and t in cls):
            return t
    return None


def _ct_ignored(layer: str, ignore: Sequence[str]) -> bool:
    """should_ignore_layer, decided on the layer vLLM builds; raises ValueError (vLLM's own
    message) when the shards of a fused layer disagree."""
    leaf = layer.rpartition(".")[2]
    if leaf in FUSED and layer not in ignore:
        flags = [any(_regex_or_equal(s, t) for t in ignore) for s in shards(layer)]
        if len(set(flags)) > 1:
            names = [s.rpartition(".")[2] for s in shards(layer)]
            raise ValueError(
                f"Found a different quantization schemes for {names} in {layer}. vLLM "
                "requires all to use the same scheme."
            )
        return flags[0]
    return any(_regex_or_equal(layer, t) for t in ignore)


UNMODELLED = "unmodelled:"


def _unmodelled_scheme(
    weights: Mapping[str, Any],
    inputs: Mapping[str, Any] | None,
    fmt: str | None,
    output: Mapping[str, Any] | None,
) -> str:
    """The schemes vLLM has that the table has no row for yet (their predicates, in
    ``_get_scheme_from_parts`` order after NVFP4): the class vLLM builds, or ""."""
    wtype, wbits = weights.get("type", "int"), int(weights.get("num_bits", 8))
    strategy, group = str(weights.get("strategy") or "tensor"), weights.get("group_size")
    sym = weights.get("symmetric", True) is not False
    if strategy == "group" and wtype == "float" and group == 32 and sym and wbits in (4, 8):
        return "CompressedTensorsW4A4Mxfp4" if wbits == 4 else "CompressedTensorsW8A8Mxfp8"
    if inputs is not None and wbits == 4 and int(inputs.get("num_bits", 8)) == 8:
        if strategy == "group" and inputs.get("strategy") == "token" and inputs.get("dynamic"):
            # CompressedTensorsW4A8Fp8 on sm 9.0 exactly, W4A8Int (int-quantized) elsewhere
            return "CompressedTensorsW4A8Fp8 / CompressedTensorsW4A8Int"
    if output and wtype == "int" and fmt in ("pack-quantized", "int-quantized"):
        return "CompressedTensorsWNA8O8Int"
    if inputs is not None and wtype == "int" and fmt == "pack-quantized":
        return "CompressedTensorsWNA8Int / CompressedTensorsWNA4Int"
    return ""


def ct_scheme(
    weights: Mapping[str, Any],
    inputs: Mapping[str, Any] | None,
    fmt: str | None,
    output: Mapping[str, Any] | None = None,
) -> tuple[str, dict[str, int], frozenset[str], str] | str:
    """``_get_scheme_from_parts`` for the schemes of the table: (row name, settings, flags,
    kernel family), vLLM's error text where it finds none, or ``"unmodelled:<class>"`` for
    a scheme vLLM builds that the table has no row for (never judged as a refusal)."""
    wtype, wbits = weights.get("type", "int"), int(weights.get("num_bits", 8))
    strategy = str(weights.get("strategy") or "tensor")
    group = weights.get("group_size")
    sym = weights.get("symmetric", True) is not False
    wdyn = bool(weights.get("dynamic", False))
    itype = inputs.get("type") if inputs else None
    istrategy = str(inputs.get("strategy") or "tensor") if inputs else None
    idyn = bool(inputs.get("dynamic", False)) if inputs else False
    ibits = int(inputs.get("num_bits", 8)) if inputs else None
    flags: set[str] = set()
    if strategy == "tensor_group" and wtype == "float" and wbits == 4 and group == 16 and sym:
        if inputs is None:
            return "CT_NVFP4", {}, frozenset(), "nvfp4_a16"
        if not (istrategy == "tensor_group" and itype == "float" and ibits == 4):
            return (
                "For NVFP4 weights, input quantization must also be NVFP4 format, None for NVFP4A16"
            )
        return "CT_NVFP4", {}, frozenset({"fp4_input"}), "nvfp4"
    other = _unmodelled_scheme(weights, inputs, fmt, output)
    if other:
        return UNMODELLED + other
    if inputs is None and strategy in ("channel", "group") and not wdyn and fmt == "pack-quantized":
        if wbits not in (2, 3, 4, 5, 6, 7, 8):
            return f"Unsupported num_bits = {wbits}."
        if strategy == "group" and not group:
            return "Pack-quantized format requires group quantization or channelwise quantization"
        if not sym:
            flags.add("zero_point")
        if weights.get("actorder") == "group":
            flags.add("g_idx")
        settings = {"bits": wbits, "pack": 32 // wbits, "group": int(group or -1)}
        return "CT_WNA16", settings, frozenset(flags), "wna16"
    if fmt in ACT_QUANT_FORMATS:
        fp8_strategy = strategy in ("tensor", "channel", "block")
        fp8_weights = wtype == "float" and sym and not wdyn and fp8_strategy
        if fp8_weights and inputs is not None and itype == "float":
            if idyn or istrategy == "tensor":
                if not idyn:
                    flags.add("static_input")
                if strategy == "block":
                    bs = weights.get("block_structure") or [128, 128]
                    s = {"block_n": int(bs[0]), "block_k": int(bs[1])}
                    return "CT_FP8_BLOCK", s, frozenset(flags), "fp8_block"
                row = "CT_FP8_TENSOR" if strategy == "tensor" else "CT_FP8_CHANNEL"
                return row, {}, frozenset(flags), "fp8"
        if fp8_weights:
            # _is_fp8_w8a16: FP8 weights with any other (or no) activation config:
            # CompressedTensorsW8A16Fp8 (the same parameters, Marlin weight-only)
            if inputs is not None and not idyn:
                flags.add("static_input")
            row = {"tensor": "CT_FP8_TENSOR", "channel": "CT_FP8_CHANNEL"}.get(strategy)
            if row is None:
                bs = weights.get("block_structure") or [128, 128]
                s = {"block_n": int(bs[0]), "block_k": int(bs[1])}
                return "CT_FP8_BLOCK", s, frozenset(flags), "fp8_weight_only"
            return row, {}, frozenset(flags), "fp8_weight_only"
        if wtype == "int" and inputs is not None and wbits == ibits == 8 and sym and not wdyn:
            if strategy in ("tensor", "channel") and istrategy in ("tensor", "token"):
                if istrategy == "tensor" and not idyn:
                    flags.add("static_input")
                    if inputs.get("symmetric", True) is False:
                        flags.add("asym_input")
                    return "CT_W8A8_INT8", {}, frozenset(flags), "int8"
                if istrategy == "token" and idyn:
                    return "CT_W8A8_INT8", {}, frozenset(flags), "int8"
    return (
        "No compressed-tensors compatible scheme was found for the layer "
        f"(weights={dict(weights)}, input_activations={dict(inputs) if inputs else None}, "
        f"format={fmt!r})"
    )


def _plan_ct(
    out: QuantPlan,
    block: Mapping[str, Any],
    modules: Mapping[str, Mapping[str, TensorInfo]],
    refused_actorders: Sequence[str],
) -> None:
    groups = block.get("config_groups")
    ignore = [str(i) for i in block.get("ignore") or [] if isinstance(i, str)]
    fmt_all = block.get("format")
    if not isinstance(groups, dict) or not groups:
        out.refusal = "compressed-tensors quantization_config has no config_groups"
        return
    targets: dict[str, tuple] = {}
    for name, group in groups.items():
        if not isinstance(group, dict) or not isinstance(group.get("weights"), dict):
            out.refusal = f"config_groups.{name} has no weights object"
            return
        tlist = [str(t) for t in group.get("targets") or []]
        if len(tlist) == 1 and tlist[0].endswith("Attention"):
            continue  # from_config skips attention-only groups (KV cache quantization)
        w = group["weights"]
        if w.get("actorder") in refused_actorders:
            out.refusal = (
                "Compressed-tensors group/dynamic activation ordering "
                f"(actorder={w.get('actorder')!r}) is no longer supported. Use a checkpoint "
                "with static/weight activation ordering or without activation ordering."
            )
            out.refusal_fix = (
                "re-quantize with actorder='weight' (or none) in the llm-compressor recipe, "
                "or use a vLLM that still takes it (0.26.0 does)"
            )
            return
        inputs = group.get("input_activations")
        gfmt = group.get("format") or fmt_all
        if gfmt in ACT_QUANT_FORMATS and not inputs and w.get("type") != "float":
            # _quantization_scheme_map_from_config: an activation-quantization format
            # without input_activations must be FP8 weights (w8a16): a bare assert
            out.refusal = (
                f"AssertionError in _quantization_scheme_map_from_config: format {gfmt!r} "
                "quantizes activations but config group "
                f"{name!r} has none and its weights are not float"
            )
            out.refusal_fix = (
                'use format "pack-quantized" for weight-only int weights, or add '
                "input_activations to the group"
            )
            return
        for t in tlist:
            outputs = group.get("output_activations")
            targets[t] = (
                w,
                inputs if isinstance(inputs, dict) else None,
                group.get("format"),
                outputs if isinstance(outputs, dict) else None,
            )
    decided: dict[str, Scheme | None] = {}
    target_of: dict[str, str | None] = {}
    for prefix in linear_names(modules):
        layer = fused_name(prefix, modules)
        if layer not in decided:
            try:
                ignored = _ct_ignored(layer, ignore)
            except ValueError as exc:
                out.refusal = str(exc)
                out.refusal_fix = (
                    f"name every shard of {layer} in quantization_config.ignore, or none"
                )
                return
            target = None if ignored else _ct_target(prefix, list(targets))
            target_of[layer] = target
            if target is None:
                decided[layer] = None
            else:
                w, inputs, fmt, outputs = targets[target]
                got = ct_scheme(w, inputs, fmt or fmt_all, outputs)
                if isinstance(got, str) and got.startswith(UNMODELLED):
                    out.unmodelled.add(got.removeprefix(UNMODELLED))
                    decided[layer] = None
                    out.unquantized.discard(prefix)
                    continue
                if isinstance(got, str):
                    out.refusal = f"{got} ({layer})"
                    out.refusal_fix = (
                        "re-quantize with a scheme vLLM runs (llm-compressor presets FP8, "
                        "FP8_DYNAMIC, FP8_BLOCK, W4A16, W8A8, NVFP4), or fix config_groups"
                    )
                    return
                row = scheme_row("compressed-tensors", got[0])
                assert row is not None
                decided[layer] = Scheme(row, got[1], got[2], got[3])
        scheme = decided[layer]
        if scheme is None and out.unmodelled and target_of.get(layer):
            continue  # built by a scheme the table does not model: not judged
        if scheme is None:
            out.unquantized.add(prefix)
        else:
            out.schemes[prefix] = scheme


# -- Hugging Face fine-grained FP8 ------------------------------------------------------------
def _plan_fp8(
    out: QuantPlan, block: Mapping[str, Any], modules: Mapping[str, Mapping[str, TensorInfo]]
) -> None:
    act = block.get("activation_scheme")
    size = block.get("weight_block_size")
    ignored = block.get("ignored_layers") or block.get("modules_to_not_convert") or []
    ignored = [str(i) for i in ignored if isinstance(i, str)]
    if act not in ("static", "dynamic"):
        out.refusal = f"Unsupported activation scheme {act}"
        out.refusal_fix = 'set quantization_config.activation_scheme to "dynamic" (or "static")'
        return
    if size is not None:
        if not isinstance(size, list) or len(size) != 2:
            out.refusal = (
                "The quantization block size of weight must have 2 dimensions, but got "
                f"{len(size) if isinstance(size, list) else size} dimensions"
            )
            out.refusal_fix = "set quantization_config.weight_block_size to [128, 128]"
            return
        if act != "dynamic":
            out.refusal = (
                f"The block-wise quantization only supports dynamic activation scheme for "
                f"now, but got {act} activation scheme."
            )
            out.refusal_fix = 'set quantization_config.activation_scheme to "dynamic"'
            return
    name = "FP8_BLOCK" if size is not None else "FP8_TENSOR"
    row = scheme_row("fp8", name)
    assert row is not None
    settings = {"block_n": int(size[0]), "block_k": int(size[1])} if size else {}
    flags = frozenset({"static_input"} if act == "static" and not size else set())
    family = "fp8_block" if size else "fp8"
    for prefix in linear_names(modules):
        layer = fused_name(prefix, modules)
        parts = shards(layer) if layer != prefix else (prefix,)
        if prefix.rpartition(".")[2] == "lm_head":
            out.unquantized.add(prefix)  # a ParallelLMHead, not a LinearBase: never FP8
        elif layer in ignored or all(p in ignored for p in parts):
            out.unquantized.add(prefix)
        elif any(p in ignored for p in parts):
            out.refusal = (
                f"Detected some but not all shards of {layer} are quantized. All shards of "
                "fused layers to have the same precision."
            )
            out.refusal_fix = f"name every shard of {layer} in ignored_layers, or none"
            return
        else:
            out.schemes[prefix] = Scheme(row, settings, flags, family)


def linear_shape(parts: Mapping[str, TensorInfo], scheme: Scheme) -> tuple[int, int] | None:
    """``(out, in)`` of a quantized checkpoint module, from its stored weight and the weight
    parameter's packing (``weight_packed`` [out, in/8] for int4, [out, in/2] for FP4)."""
    weight = next((p for p in scheme.params if p.role == "weight"), None)
    if weight is None:  # a ModelOpt row: "weight", packing values per stored element
        stored = parts.get("weight")
        if stored is None or len(stored.shape) != 2:
            return None
        return stored.shape[0], stored.shape[1] * scheme.row.packing
    stored = parts.get(weight.name)
    if stored is None or len(stored.shape) != 2:
        return None
    d = weight.shapes[0][1]
    div = scheme.settings.get(d.div, 0) if isinstance(d.div, str) else d.div
    return stored.shape[0], stored.shape[1] * max(int(div), 1)


def layer_shapes(
    plan: QuantPlan, modules: Mapping[str, Mapping[str, TensorInfo]]
) -> dict[str, tuple[Scheme, int, int]]:
    """The layers vLLM builds (q/k/v fused into qkv_proj, gate/up into gate_up_proj) with
    their scheme and GEMM size: ``{layer: (scheme, N = summed outputs, K = inputs)}``; MoE
    experts (MXFP4) as ``N = 2 * intermediate``, ``K = hidden``."""
    out: dict[str, tuple[Scheme, int, int]] = {}
    for prefix, scheme in sorted(plan.schemes.items()):
        if scheme.row.producer == "mxfp4":
            blocks = modules.get(prefix, {}).get("gate_up_proj_blocks")
            if blocks is not None and len(blocks.shape) == 4:
                out[prefix] = (scheme, blocks.shape[1], blocks.shape[2] * blocks.shape[3] * 2)
            continue
        shape = linear_shape(modules.get(prefix, {}), scheme)
        if shape is None:
            continue
        layer = fused_name(prefix, modules)
        if layer in out:
            s, n, k = out[layer]
            out[layer] = (s, n + shape[0], k)
        else:
            out[layer] = (scheme, shape[0], shape[1])
    return out
