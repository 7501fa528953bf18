"""How a quantized Linear's stored tensors meet its parameters in vLLM's weight loader, beyond
name, dtype and shape (``quant.tensors-complete``'s helpers): integer casts, a row-parallel
layer's narrowing, each tensor-parallel rank's share, and Linears built unquantized that store
quantized tensors. Rules from vLLM 0.26.0's and 0.33.0's source (cited per function), held
against both real loaders on the CPU (fixtures/loader_truth/formats_outcomes.json).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_vllm_env.facts import tp_shares
from pytest_vllm_env.facts.quant_plan import QuantPlan, Scheme, linear_shape
from pytest_vllm_env.facts.vllm_load_plan import dims_of
from pytest_vllm_env.facts.vllm_tp import moe_problems
from pytest_vllm_env.readers.safetensors_header import TensorInfo

QUANT_LEAVES = ("_scale", "_scale_inv", "_zero_point", "_g_idx", "_packed", "_shape")
# The Linears vLLM's decoder models build as RowParallelLinear (llama.py LlamaAttention.o_proj,
# LlamaMLP.down_proj; Qwen2/Qwen3/Mistral reuse them; gpt2/phi "dense"/"fc2", mixtral "w2"):
# their input is split over the ranks, and each parameter with an input dimension is loaded
# by RowvLLMParameter.load_row_parallel_weight (model_executor/parameter.py, 0.26.0 and
# 0.33.0), which narrows the stored tensor to the parameter's size at rank * size first.
ROW_PARALLEL = frozenset({"o_proj", "down_proj", "dense", "out_proj", "fc2", "w2", "wo"})
INT_WIDTH = {"I8": 8, "U8": 8, "I16": 16, "U16": 16, "I32": 32, "U32": 32, "I64": 64, "U64": 64}


def same_bits(stored: str, registered: frozenset[str]) -> bool:
    """An integer tensor loaded into an integer parameter of the same width keeps its bits:
    the weight loader's ``param.data.copy_(loaded)`` converts integers modulo 2**bits (U8 200
    becomes I8 -56, the same byte; measured: ct-w8a8-weight-as-u8 loads the same numbers)."""
    width = INT_WIDTH.get(stored)
    return width is not None and any(INT_WIDTH.get(d) == width for d in registered)


def row_narrowed(
    prefix: str, p: Any, shape: tuple[int, ...], out_f: int, in_f: int, settings: Mapping
) -> bool:
    """A row-parallel Linear's parameter with an input dimension, stored wider along it than
    registered (everything else equal): RowvLLMParameter.load_row_parallel_weight narrows it
    to the parameter's columns and loads those: no error, the other columns dropped."""
    if prefix.rpartition(".")[2] not in ROW_PARALLEL:
        return False
    for alt in p.shapes:
        if len(alt) != len(shape) or not alt or alt[-1].of != "in":
            continue
        sizes = [d.size(out_f, in_f, settings) for d in alt]
        if None in sizes:
            continue
        if list(shape[:-1]) == sizes[:-1] and shape[-1] > sizes[-1]:
            return True
    return False


def tp_share(
    prefix: str,
    parts: Mapping[str, TensorInfo],
    scheme: Scheme,
    tp: int,
    built: tuple[int, int] | None = None,
    fused: bool = False,
    config: Mapping[str, Any] | None = None,
) -> list:
    """What each of ``tp`` ranks builds of a quantized Linear (its :class:`tp_shares.Share`,
    the per-rank model quant.tensor-parallel reads too: key/value heads replicated when
    fewer than ``tp``, from ``config``), as create_weights checks it: block FP8
    (:func:`tp_shares.fp8_block_misses`, ``validate_fp8_block_shape``): a row-parallel
    layer's input share must be whole block_k columns, a column-parallel layer's output
    share whole block_n rows ("Weight output_partition_size = 64 is not divisible by weight
    quantization block_n = 128", both releases, measured) - except a shard of a fused layer
    under a quantization config that carries ``weight_block_size`` (Fp8Config;
    CompressedTensorsConfig has none): the check is skipped
    (:func:`tp_shares.fp8_block_allowed`) and the weight loader narrows the stored block
    scale per slice (:func:`tp_shares.fp8_scale_overrun`), failing on the first slice whose
    rows run past it; grouped int weights (:func:`tp_shares.group_split`,
    ``verify_group_size_divides_partition``): a row-parallel layer's input share must be
    whole groups, unless the scales are repeated on every rank. A fused MoE layer's experts:
    :func:`experts_share`."""
    weight = parts.get("weight") or parts.get("weight_packed")
    if weight is None or len(weight.shape) != 2:
        return []
    name = f"{prefix}.{'weight_packed' if 'weight_packed' in parts else 'weight'}"
    settings = scheme.settings
    out_f, in_f = built or linear_shape(parts, scheme) or (0, 0)
    if not out_f:
        return []
    if ".experts." in prefix:
        return []  # a fused MoE layer's: experts_share
    share, index = _share(prefix, out_f, in_f, tp, config)
    share_out = share.rank_outs[index]
    bn, bk = settings.get("block_n"), settings.get("block_k")
    misses = tp_shares.fp8_block_misses(share, (bn, bk)) if bn and bk else []
    mine = [m for m in misses if m[1] in (-1, index)]
    msg = ""
    if bn and not share.row and share_out % bn and fused and scheme.row.producer == "fp8":
        over = tp_shares.fp8_scale_overrun(out_f, share_out, share.distinct[index], bn)
        if over is None:
            return []  # loads; the blocks that span shards are _blocks' (at tp 1) to judge
        rank, rows, stored = over
        scale = f"{prefix}.{block_scale(scheme)}"
        return [
            (
                "refuses",
                "tp",
                f"{prefix} at tensor_parallel_size={tp}: each rank holds {share_out} rows, "
                f"{rows} row(s) of its {stored}-row block scale; rank {rank} fails loading "
                f"{scale} ('start ({rank * rows}) + length ({rows}) exceeds dimension size "
                f"({stored})', parameter.py)",
                scale,
            )
        ]
    if mine:
        msg = mine[0][3]
    group = settings.get("group", 0)
    if not msg and share.row and group and group > 0:
        bad = tp_shares.group_split(share, group, "g_idx" in scheme.flags)
        if bad is not None:
            msg = f"Weight input_size_per_partition={bad} is not divisible by group_size={group}"
    if not msg:
        return []
    return [
        (
            "refuses",
            "tp",
            f"{prefix} at tensor_parallel_size={tp}: vLLM refuses building it ({msg})",
            name,
        )
    ]


QKV_LEAVES = ("q_proj", "k_proj", "v_proj")


def _share(
    prefix: str, out_f: int, in_f: int, tp: int, config: Mapping[str, Any] | None
) -> tuple[tp_shares.Share, int]:
    """The share of the Linear ``prefix`` is a shard of, and the shard's sub-output index:
    a row-parallel layer's, ``QKVParallelLinear``'s (from config.json's heads) for q/k/v, else
    the one output's."""
    leaf = prefix.rpartition(".")[2]
    if leaf in ROW_PARALLEL:
        return tp_shares.row(out_f, in_f, tp), 0
    d = dims_of(config) if config and leaf in QKV_LEAVES else None
    if d is not None and d.heads and d.head_dim:
        # the query's width as sized here (config_shape's heads * head_dim, or a gated
        # attention's stored double width): the same share the layer's q holds
        gate = d.q_gate and leaf == "q_proj" and out_f == 2 * d.heads * d.head_dim
        share = tp_shares.qkv(d.heads, d.kv_heads, d.head_dim, in_f, tp, gate)
        return share, QKV_LEAVES.index(leaf)
    return tp_shares.column((out_f,), in_f, tp), 0


def experts_share(config: Mapping[str, Any] | None, tp: int, refine: int | None = None) -> list:
    """A fused MoE layer's experts on ``tp`` ranks (the Linear plan leaves them out): each
    rank holds ``inter / tp`` rows of every expert's gate and up and columns of its down
    (:class:`tp_shares.MoeShare`), judged by the experts' scheme as
    ``facts.vllm_tp.moe_problems`` judges it for quant.tensor-parallel (block FP8,
    ``refine``: the env's vLLM refines Fp8Config's broken blocks; grouped int). The split
    itself (``inter % tp``) is :func:`split_problems`'."""
    if not config or tp <= 1:
        return []
    return [
        (
            "refuses",
            "tp",
            f"{p.where.removesuffix(' (experts)')} at tensor_parallel_size={tp}: vLLM refuses "
            f"building its fused experts ({p.message})",
            p.tensors[0] if p.tensors else "",
        )
        for p in moe_problems(config, tp, refine)
        if p.where.endswith("(experts)")
    ]


def stored_quantized(plan: QuantPlan, modules: Mapping[str, Mapping[str, TensorInfo]]) -> list:
    """A Linear vLLM builds unquantized (ignored, listed in modules_to_not_convert, matched by
    no target) whose checkpoint tensors are quantized: UnquantizedLinearMethod registers only
    ``weight`` (and ``bias``), so the first quantization tensor has no parameter and
    AutoWeightsLoader raises "There is no module or parameter named ..." (models/utils.py,
    both releases; measured on ct-fp8-ignore-o-proj-stored-fp8, ct-fp8-targets-attn-only,
    hf-fp8-not-convert-o-proj-stored-fp8)."""
    out = []
    for prefix in sorted(plan.unquantized):
        leaves = sorted(leaf for leaf in modules.get(prefix, {}) if leaf.endswith(QUANT_LEAVES))
        if leaves:
            out.append(
                (
                    "refuses",
                    "stored-quantized",
                    f"{prefix} is built unquantized (config.json's quantization_config leaves "
                    f"it out) but stores {', '.join(leaves)}: vLLM has no parameter for "
                    f"{prefix}.{leaves[0]}",
                    f"{prefix}.{leaves[0]}",
                )
            )
    return out


def block_scale(scheme: Scheme) -> str:
    """The name of the scheme's block scale (weight_scale, or weight_scale_inv for fp8)."""
    for p in scheme.params:
        if any(d.div == "block_n" for alt in p.shapes for d in alt):
            return p.name
    return "weight_scale"


def split_problems(config: Mapping[str, Any] | None, tp: int) -> list:
    """What ``tp`` ranks refuse of the model itself (its heads, its vocabulary, an MoE's
    expert width), the rules of ``facts/tp_shares.py`` (:func:`tp_shares.head_problems`,
    :func:`tp_shares.moe_dims`) on config.json (its text_config for a VLM)."""
    text: Mapping[str, Any] = config or {}
    inner = text.get("text_config")
    if isinstance(inner, Mapping) and "num_attention_heads" in inner:
        text = inner
    try:
        heads = int(text.get("num_attention_heads") or 0)
        kv = int(text.get("num_key_value_heads") or heads)
        vocab = int(text.get("vocab_size") or 0)
    except (TypeError, ValueError):
        return []
    problems = tp_shares.head_problems(heads, kv, vocab, tp)
    moe = tp_shares.moe_dims(config)
    if moe is not None and not problems and tp > 1 and moe[1] % tp:
        # fused_moe/config.py:FusedMoEConfig.__post_init__ asserts the split (0.26.0, 0.33.0)
        problems.append(
            tp_shares.TpProblem(
                "build", "the experts' intermediate size", f"{moe[1]} is not divisible by {tp}"
            )
        )
    return [
        (
            "refuses",
            "tp-moe" if p.where.startswith("the experts'") else "tp-model",
            f"tensor_parallel_size={tp}: vLLM refuses it at {p.stage} time ({p.where}: "
            f"{p.message})",
            "",
        )
        for p in problems
    ]
