"""``modelopt.shapes-match-config``: the Linear weights have the shapes config.json implies
(a config from another model size, or a truncated export, loads nothing)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_vllm_env.checks.modelopt_common import VISION, by_module, few, skip_unreadable
from pytest_vllm_env.facts.modelopt_mixed import (
    MIXED,
    MOE_SERVED,
    SERVED,
    FusedMismatch,
    is_expert,
    module_algos,
    quantized_layers,
)
from pytest_vllm_env.facts.modelopt_settings import effective_settings
from pytest_vllm_env.facts.vllm_model_params import GATED_ATTENTION_TYPES
from pytest_vllm_env.findings import Finding, failed, passed, skipped
from pytest_vllm_env.readers.checkpoint import Checkpoint
from pytest_vllm_env.tables.quant_formats import modelopt_format


@dataclass(frozen=True)
class Dims:
    """The text model's sizes from config.json, as the projections' shapes need them."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int | None
    vocab: int | None
    q_gate: bool = False  # q_proj also holds the attention output gate: twice the rows
    # MoE: an expert's MLP is moe_intermediate_size wide (vLLM qwen3_moe.py / qwen2_moe.py build
    # FusedMoE with config.moe_intermediate_size), a Qwen2-MoE shared expert
    # shared_expert_intermediate_size; None: not in config.json, those projections not judged
    moe_intermediate: int | None = None
    shared_intermediate: int | None = None


def text_dims(config: Mapping[str, Any]) -> Dims | None:
    """:class:`Dims` from config.json (``text_config`` for VL models); None when it lacks
    them."""
    cfg = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    try:
        hidden = int(cfg["hidden_size"])
        heads = int(cfg["num_attention_heads"])
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
        head_dim = int(cfg.get("head_dim") or hidden // heads)
        inter = int(cfg["intermediate_size"]) if cfg.get("intermediate_size") else None
        vocab = int(cfg["vocab_size"]) if cfg.get("vocab_size") else None
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    kind = str(cfg.get("model_type") or config.get("model_type") or "")
    gate = cfg.get("attn_output_gate", kind.startswith(GATED_ATTENTION_TYPES))
    moe = _int(cfg.get("moe_intermediate_size"))
    shared = _int(cfg.get("shared_expert_intermediate_size"))
    return Dims(hidden, heads, kv_heads, head_dim, inter, vocab, bool(gate), moe, shared)


def _evidence(d: Dims) -> dict[str, Any]:
    """The sizes as evidence; the MoE widths only where config.json has them."""
    out = dict(vars(d))
    for key in ("moe_intermediate", "shared_intermediate"):
        if out[key] is None:
            del out[key]
    return out


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _wanted(prefix: str, table: Mapping[str, Any], d: Dims) -> tuple[int | None, int | None] | None:
    """[out, in] a projection should have; an expert's (``.experts.<e>.``) or shared expert's
    MLP is as wide as its own config size, not intermediate_size (None: not judged)."""
    leaf = prefix.rpartition(".")[2]
    want = table.get(leaf)
    if want is None or leaf not in ("gate_proj", "up_proj", "down_proj"):
        return want
    if ".experts." in prefix:
        inter = d.moe_intermediate
    elif ".shared_expert." in prefix:
        inter = d.shared_intermediate
    else:
        return want
    if inter is None:
        return None
    return (d.hidden, inter) if leaf == "down_proj" else (inter, d.hidden)


def expected_shapes(d: Dims) -> dict[str, tuple[int | None, int | None]]:
    """[out, in] of Llama/Qwen-style Linears (and the embedding), by module name."""
    return {
        "q_proj": (d.heads * d.head_dim * (2 if d.q_gate else 1), d.hidden),
        "k_proj": (d.kv_heads * d.head_dim, d.hidden),
        "v_proj": (d.kv_heads * d.head_dim, d.hidden),
        "o_proj": (d.hidden, d.heads * d.head_dim),
        "gate_proj": (d.intermediate, d.hidden),
        "up_proj": (d.intermediate, d.hidden),
        "down_proj": (d.hidden, d.intermediate),
        "lm_head": (d.vocab, d.hidden),
        "embed_tokens": (d.vocab, d.hidden),
    }


def shapes_match_config(ckpt: Checkpoint) -> Finding:
    """Linear weights have the shapes config.json's hidden size, heads and intermediate
    size imply (a config from another model size, or a truncated export, loads nothing)."""
    check = "modelopt.shapes-match-config"
    if blocked := skip_unreadable(check, ckpt, config=True, tensors=True):
        return blocked
    dims = text_dims(ckpt.config or {})
    if dims is None:
        return skipped(check, f"{ckpt.label}: config.json lacks hidden_size/num_attention_heads")
    eff = effective_settings(ckpt)
    found: list[tuple[str, str]] = []
    checked = 0
    table = expected_shapes(dims)
    vision = set(filter(VISION.search, ckpt.modules))  # one C-level pass, not a call each
    # NVFP4's weights hold two values a byte along the input (the table's ``packing``)
    fmt = modelopt_format(eff.algo) if eff is not None else None
    packed = fmt is not None and fmt.packing > 1
    # MIXED_PRECISION: each layer's own algorithm (facts/modelopt_mixed.py) decides its packing
    layers: dict[str, str] = {}
    if eff is not None and eff.algo == MIXED:
        block = ckpt.quantization_config if eff.source == "config.json" else ckpt.hf_quant_config
        layers = dict(quantized_layers(block))
    wanted = {p: _wanted(p, table, dims) for p in ckpt.modules}
    # each module's algorithm as vLLM resolves its layer's (MoE experts: their layer's one)
    algos = module_algos(layers, [p for p, w in wanted.items() if w]) if layers else {}
    for prefix, parts in ckpt.modules.items():
        want = wanted[prefix]
        info = parts.get("weight")
        if want is None or info is None or len(info.shape) != 2 or prefix in vision:
            continue
        out, inp = want
        own = None
        if layers:
            algo = algos.get(prefix)
            if isinstance(algo, FusedMismatch) or (
                algo is not None and algo not in (MOE_SERVED if is_expert(prefix) else SERVED)
            ):
                continue  # vLLM refuses or builds it unquantized: checkpoint.parameters says why
            if is_expert(prefix) and layers.get(prefix, algo) != algo:
                continue  # keyed unlike its MoE layer: modelopt.tensors-complete says why
            own = modelopt_format(algo) if algo else None
        # NVFP4 packs two values per byte: the stored in-dimension is half.
        if info.dtype == "U8" and (own.packing > 1 if own else packed) and inp:
            inp //= 2
        checked += 1
        if (out is not None and info.shape[0] != out) or (inp is not None and info.shape[1] != inp):
            found.append(
                (prefix, f"{prefix}.weight {list(info.shape)} (config.json implies [{out}, {inp}])")
            )
    mismatches = by_module(found)
    if mismatches:
        return failed(
            check,
            f"{ckpt.label}: {len(mismatches)} weight(s) disagree with config.json: "
            f"{few(mismatches)}",
            "use the config.json that came with these weights (hidden_size, num_attention_heads, "
            "num_key_value_heads, head_dim, intermediate_size), or re-export the checkpoint",
            dims=_evidence(dims),
        )
    if not checked:
        return skipped(check, f"{ckpt.label}: no Llama/Qwen-style projection names to compare")
    return passed(
        check, f"{ckpt.label}: {checked} weight shapes agree with config.json", dims=_evidence(dims)
    )


def config_dims(ckpt: Checkpoint, linear: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """config.json's [out, in] of each text-model Linear (modelopt.shapes-match-config's
    table; vision modules have their own sizes and are left out)."""
    dims = text_dims(ckpt.config or {})
    if dims is None:
        return {}
    table = expected_shapes(dims)
    out: dict[str, tuple[int, int]] = {}
    for prefix in linear:
        want = table.get(prefix.rpartition(".")[2])
        if want and want[0] and want[1] and not VISION.search(prefix):
            out[prefix] = (int(want[0]), int(want[1]))
    return out
