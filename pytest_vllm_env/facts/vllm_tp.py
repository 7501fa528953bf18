"""How the env's vLLM splits a checkpoint over ``tensor_parallel_size`` ranks, and what in
that split it refuses (``quant.tensor-parallel``, ModelOpt's split in ``launch.py``). Each
rank's share of each Linear and fused MoE layer, and what each format asks of it, is the one
per-rank model of :mod:`pytest_vllm_env.facts.tp_shares` (which ``quant.tensors-complete``
reads too); this module finds the model's layers (a ModelOpt load plan's parameters, or
config.json's sizes and each Linear's scheme) and says what the model finds in vLLM's words.
Each rule checked on both real loaders on the CPU with every rank simulated
(fixtures/loader_truth/outcomes.json: ``tp2``, ``tp3``, ``tp4-kv-replicated``, ``pbwo-tp2``,
``pbwo-tp4``; formats_outcomes.json; fixtures/loader_truth/moe_tp.json for the experts).

Which kernel then runs each rank's GEMM, and its own alignment (Marlin pads to 64/128 in
0.26.0 and 0.33.0, ``marlin_padded_nk``), is a GPU's to show (scripts/device/loader_truth.sh).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_vllm_env.facts import tp_shares
from pytest_vllm_env.facts.tp_shares import (  # noqa: F401  (the names callers import here)
    FORMAT_BLOCKS,
    VOCAB_PADDING,
    TpProblem,
    head_problems,
)
from pytest_vllm_env.facts.vllm_load_plan import LINEAR_KINDS, LoadPlan, dims_of


@dataclass
class TpSplit:
    """``ranks`` (each rank's ``[out per shard..., in]`` of layer 0's Linears) and the
    ``problems`` vLLM raises for this size; ``checked`` the Linears judged."""

    tp: int
    problems: list[TpProblem] = field(default_factory=list)
    shapes: dict[str, tuple[tuple[int, ...], int]] = field(default_factory=dict)
    checked: int = 0


def split(plan: LoadPlan, tp: int) -> TpSplit:
    """The split of ``plan``'s model over ``tp`` ranks (every rank has the same shapes): each
    Linear's :class:`tp_shares.Share`, judged by :func:`tp_shares.modelopt_blocks`."""
    out = TpSplit(tp)
    d = plan.dims
    if d is None or tp <= 1:
        return out
    out.problems += head_problems(d.heads, d.kv_heads, d.vocab, tp)
    if any(p.stage == "config" for p in out.problems):
        return out
    algo = plan.decision.algo or ""
    block_out, block_in = FORMAT_BLOCKS.get(algo, (1, 1))
    for name, p in plan.params.items():
        if not name.endswith(".weight") or p.kind not in LINEAR_KINDS:
            continue
        module = name.removesuffix(".weight")
        full = p.shapes
        if not full:
            continue
        _, inp = next(iter(full.values()))
        if p.dtype == "U8":  # NVFP4 packs two values a byte: the logical input is twice
            inp *= 2
        if p.kind == "qkv":
            names = ("q", "k", "v")
            share = tp_shares.qkv(d.heads, d.kv_heads, d.head_dim, inp, tp, d.q_gate)
        elif p.kind in ("merged", "column"):
            names = tuple(shard or "out" for shard in full)
            share = tp_shares.column([o for o, _ in full.values()], inp, tp)
            for i, o in share.uneven:
                out.problems.append(
                    TpProblem("build", f"{module} ({names[i]})", f"{o} is not divisible by {tp}")
                )
        elif p.kind == "row":
            ((o, _),) = full.values()
            names = ("out",)
            share = tp_shares.row(o, inp, tp)
            if share.uneven:
                out.problems.append(
                    TpProblem("build", f"{module} (in)", f"{inp} is not divisible by {tp}")
                )
        else:  # replicated
            names = tuple(k or "out" for k in full)
            share = tp_shares.replicated([o for o, _ in full.values()], inp, tp)
        out.checked += 1
        if ".layers.0." in module or ".layers." not in module:
            out.shapes[module] = (share.rank_outs, share.rank_in)
        if not p.quantized:
            continue
        bad_outs, bad_in = tp_shares.modelopt_blocks(share, algo)
        for i, size in bad_outs:
            shard = names[i]
            tensors = tuple(
                f.tensor
                for f in plan.fates
                if f.param is not None
                and f.param.rsplit(".", 1)[0] == module
                and (f.shard or "out") == shard
            )
            out.problems.append(
                TpProblem(
                    "load",
                    f"{module} ({shard})",
                    f"{algo}: each rank holds {size} rows of {shard}, not whole "
                    f"{block_out}-row blocks",
                    tensors,
                )
            )
        if bad_in is not None:
            out.problems.append(
                TpProblem(
                    "build",
                    f"{module} (in)",
                    f"{algo}: each rank's input is {bad_in}, not a multiple of {block_in}",
                )
            )
    return out


# -- any format: the quantization scheme vLLM builds for each Linear (facts/quant_plan.py) -----
# The Linear layers of a decoder layer as vLLM's Llama-family models build them: the checkpoint
# modules of each, and whether the layer splits its input (RowParallelLinear) or its outputs.
LAYER_SHARDS: dict[str, tuple[str, ...]] = {
    "self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "self_attn.o_proj": ("self_attn.o_proj",),
    "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
    "mlp.down_proj": ("mlp.down_proj",),
}
ROW_PARALLEL = ("self_attn.o_proj", "mlp.down_proj")


@dataclass(frozen=True)
class FormatScheme:
    """What a Linear's scheme asks of each rank's share (from ``facts.quant_plan.Scheme``):
    ``block`` ([block_n, block_k]: FP8 block scales), ``group`` (weight groups along the
    input; -1: channelwise), ``g_idx`` (act-order), and whether the quantization config class
    carries ``weight_block_size`` (``Fp8Config`` does; ``CompressedTensorsConfig`` does not)."""

    name: str
    block: tuple[int, int] | None = None
    group: int | None = None
    g_idx: bool = False
    config_has_block_size: bool = False


def format_split(
    config: dict, schemes: dict[str, FormatScheme], tp: int, moe_refine: int | None = None
) -> TpSplit:
    """The split of a checkpoint of any format over ``tp`` ranks, from config.json's sizes and
    the scheme of each checkpoint Linear (``schemes``: module name -> :class:`FormatScheme`;
    a module absent is unquantized): each decoder Linear's :class:`tp_shares.Share` judged
    by its scheme's rule (block FP8: :func:`tp_shares.fp8_block`, ``validate_fp8_block_shape``
    with ``Fp8Config``'s allowance for a merged layer, what its scales then do being
    quant.tensors-complete's; grouped int: :func:`tp_shares.group_split`,
    ``verify_group_size_divides_partition``), and the fused MoE experts'
    :class:`tp_shares.MoeShare` (:func:`moe_problems`). Measured on both real loaders on the
    CPU (fixtures/field_reports.py, fixtures/loader_truth/moe_tp.json).

    Which kernel then runs a rank's GEMM (Marlin's and Machete's own tile sizes) is
    quant.kernel-arch's and a GPU's."""
    out = TpSplit(tp)
    d = dims_of(config)
    if d is None or tp <= 1:
        return out
    out.problems += head_problems(d.heads, d.kv_heads, d.vocab, tp)
    if any(p.stage == "config" for p in out.problems):
        return out
    inter = d.intermediate or 0
    shares = {
        "self_attn.qkv_proj": tp_shares.qkv(
            d.heads, d.kv_heads, d.head_dim, d.hidden, tp, d.q_gate
        ),
        "self_attn.o_proj": tp_shares.row(d.hidden, d.heads * d.head_dim, tp),
        "mlp.gate_up_proj": tp_shares.column([inter, inter], d.hidden, tp),
        "mlp.down_proj": tp_shares.row(d.hidden, inter, tp),
    }
    if inter and inter % tp:
        out.problems.append(
            TpProblem("build", "intermediate_size", f"{inter} is not divisible by {tp}")
        )
        return out
    # the first decoder layer's prefix as the checkpoint names it (model.layers.0, or under
    # a multimodal model's language_model); every layer has the same shares
    layer = min(
        (m.split(".layers.0.", 1)[0] + ".layers.0" for m in schemes if ".layers.0." in m),
        key=len,
        default="model.layers.0",
    )
    for leaf, parts in LAYER_SHARDS.items():
        found = [schemes.get(f"{layer}.{p}") for p in parts]
        scheme = next((s for s in found if s is not None), None)
        share = shares[leaf]
        out.shapes[f"{layer}.{leaf}"] = (share.rank_outs, share.rank_in)
        if scheme is None or not inter:
            continue
        out.checked += 1
        module = f"{layer}.{leaf}"
        tensors = tuple(f"{layer}.{p}.weight" for p in parts)
        miss = (
            tp_shares.fp8_block(share, scheme.block, scheme.config_has_block_size)
            if scheme.block
            else None
        )
        if miss is not None:
            part, _, _, message = miss
            out.problems.append(
                TpProblem("build", f"{module} ({part})", f"{message} ({scheme.name})", tensors)
            )
        if (bad := tp_shares.group_split(share, scheme.group, scheme.g_idx)) is not None:
            out.problems.append(
                TpProblem(
                    "build",
                    f"{module} (in)",
                    f"Weight input_size_per_partition={bad} for layer "
                    f"'{layer}.{parts[0].rsplit('.', 1)[0]}.{leaf.rsplit('.', 1)[1]}' is "
                    f"not divisible by group_size={scheme.group} ({scheme.name})",
                    tensors,
                )
            )
    out.problems += moe_problems(config, tp, moe_refine, out)
    return out


def expert_scheme(config: Mapping[str, Any]) -> FormatScheme | None:
    """The scheme vLLM builds a fused MoE layer's experts with, from config.json's
    quantization block (the Linear plan leaves experts out): ``Fp8Config`` with
    ``weight_block_size`` -> ``Fp8MoEMethod`` (block FP8); compressed-tensors' group whose
    targets match the experts (``Linear``) -> ``CompressedTensorsW8A8Fp8MoEMethod`` (block
    strategy) or ``CompressedTensorsWNA16(Marlin)MoEMethod`` (int, group strategy; act-order
    not judged); None for experts left out (``ignore``) or a format without a per-rank
    rule here."""
    block = config.get("quantization_config")
    if not isinstance(block, Mapping):
        return None
    method = str(block.get("quant_method", "")).lower()
    if method == "fp8":
        size = block.get("weight_block_size")
        if isinstance(size, list) and len(size) == 2 and all(isinstance(x, int) for x in size):
            return FormatScheme("Fp8MoEMethod", (size[0], size[1]), config_has_block_size=True)
        return None
    if method != "compressed-tensors":
        return None
    if any("expert" in str(i) for i in block.get("ignore") or []):
        return None
    for group in (block.get("config_groups") or {}).values():
        if not isinstance(group, Mapping):
            continue
        targets = [str(t) for t in group.get("targets") or []]
        weights = group.get("weights")
        if not isinstance(weights, Mapping) or not any(
            t == "Linear" or "expert" in t for t in targets
        ):
            continue
        shape = weights.get("block_structure")
        if weights.get("strategy") == "block" and isinstance(shape, list) and len(shape) == 2:
            return FormatScheme("CompressedTensorsW8A8Fp8MoEMethod", (int(shape[0]), int(shape[1])))
        if weights.get("type") == "int" and weights.get("strategy") == "group":
            size = weights.get("group_size")
            return FormatScheme(
                "CompressedTensorsWNA16MoEMethod",
                group=int(size) if isinstance(size, int) else None,
                g_idx=weights.get("actorder") is not None,
            )
        return None
    return None


def moe_problems(
    config: Mapping[str, Any], tp: int, refine: int | None = None, out: TpSplit | None = None
) -> list[TpProblem]:
    """The fused MoE layers' split (:class:`tp_shares.MoeShare`): the experts' width over the
    ranks (``FusedMoEConfig``'s assert), and what the experts' scheme
    (:func:`expert_scheme`) needs of each rank's share (block FP8:
    :func:`tp_shares.moe_fp8_block`, ``refine``: the env's vLLM refines ``Fp8Config``'s broken
    blocks, 0.33.0; grouped int: :func:`tp_shares.moe_wna16_group`). ``out``: the split that
    counts the layer and records its shares."""
    dims = tp_shares.moe_dims(config)
    d = dims_of(config)
    if dims is None or d is None or tp <= 1:
        return []
    share = tp_shares.moe(dims[1], d.hidden, tp)
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    block = "block_sparse_moe" if text.get("model_type") == "mixtral" else "mlp"
    experts = f"model.layers.0.{block}.experts"
    gate = f"{experts}.0.{'w1' if block == 'block_sparse_moe' else 'gate_proj'}"
    if share.uneven:
        return [
            TpProblem(
                "build",
                f"{experts} (intermediate)",
                f"{share.inter} is not divisible by {tp} (FusedMoEConfig)",
            )
        ]
    scheme = expert_scheme(config)
    if scheme is None:
        return []
    if out is not None:
        out.checked += 1
        out.shapes[experts] = ((share.rank_inter, share.rank_inter), share.hidden)
    message = None
    if scheme.block:
        # only Fp8MoEMethod refines (0.33.0); CompressedTensorsW8A8Fp8MoEMethod does not
        message = tp_shares.moe_fp8_block(
            share, scheme.block, refine if scheme.config_has_block_size else None
        )
    elif scheme.group and not scheme.g_idx:
        message = tp_shares.moe_wna16_group(share, scheme.group)
    if message is None:
        return []
    gate += ".weight_packed" if scheme.group else ".weight"
    return [TpProblem("build", f"{experts} (experts)", f"{message} ({scheme.name})", (gate,))]


def format_schemes(schemes: dict, method: str | None) -> dict[str, FormatScheme]:
    """The :class:`FormatScheme` of each Linear of a ``facts.quant_plan.QuantPlan``
    (``schemes``: module -> ``Scheme``; ``method``: config.json's quant_method)."""
    out = {}
    for module, scheme in schemes.items():
        settings = scheme.settings
        block = (
            (int(settings["block_n"]), int(settings["block_k"]))
            if "block_n" in settings and "block_k" in settings
            else None
        )
        group = int(settings["group"]) if scheme.kernel_family == "wna16" else None
        out[module] = FormatScheme(
            scheme.row.name,
            block,
            group,
            "g_idx" in scheme.flags,
            # Fp8Config.weight_block_size; CompressedTensorsConfig has none
            config_has_block_size=method == "fp8",
        )
    return out


def largest_format_working(
    config: dict, schemes: dict[str, FormatScheme], upto: int = 8, moe_refine: int | None = None
) -> int:
    """:func:`largest_working` for :func:`format_split`."""
    best = 1
    size = 2
    while size <= upto:
        if not format_split(config, schemes, size, moe_refine).problems:
            best = size
        size *= 2
    return best


def largest_working(plan: LoadPlan, upto: int = 8) -> int:
    """The largest power-of-two size up to ``upto`` that splits without a problem (1 if
    none does)."""
    best = 1
    size = 2
    while size <= upto:
        if not split(plan, size).problems:
            best = size
        size *= 2
    return best
