"""Each tensor-parallel rank's share of a layer, and what each quantized format asks of that
share: the one per-rank model that ``quant.tensor-parallel`` (:mod:`facts.vllm_tp`) and
``quant.tensors-complete`` (:mod:`checks.quant_tensors_load`) both read. Pure: sizes in,
shares and misses out (no files, no vLLM import).

The split (``model_executor/layers/linear.py``, the same in vLLM 0.26.0 and 0.33.0):
``ColumnParallelLinear`` / ``MergedColumnParallelLinear`` give each rank ``divide(out, tp)``
rows of every fused sub-output (an ``AssertionError`` "X is not divisible by Y" otherwise);
``QKVParallelLinear`` splits the query heads and the key/value heads when there are at least
``tp`` of them, else replicates them (``num_kv_head_replicas = tp // kv``: one head per rank,
rank ``r`` holding head ``r // replicas``); ``RowParallelLinear`` splits the input. A fused
MoE layer (``fused_moe/config.py:FusedMoEConfig.__post_init__``: ``assert intermediate_size
% tp_size == 0``; ``intermediate_size_per_partition = intermediate_size // tp_size``, both
releases) gives each rank ``inter / tp`` rows of gate and of up (``w13``: ``2 * inter / tp``
rows) and ``inter / tp`` columns of down (``w2``); the hidden size is whole on every rank.

What the formats need of a share, each rule cited where it is written below.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# ModelOpt's per-rank divisibility (modelopt.py create_weights, 0.26.0 and 0.33.0):
# algo -> (output block, input block); see :func:`modelopt_blocks`
FORMAT_BLOCKS: dict[str, tuple[int, int]] = {
    "FP8_PB_WO": (128, 128),
    "NVFP4": (1, 16),
    "W4A16_NVFP4": (1, 16),
    "MXFP8": (1, 32),
}
VOCAB_PADDING = 64


@dataclass(frozen=True)
class TpProblem:
    """One refusal the split causes: at ``stage`` (config, build, load), in ``where``."""

    stage: str
    where: str
    message: str
    tensors: tuple[str, ...] = ()  # the checkpoint tensors of that share


@dataclass(frozen=True)
class Share:
    """One Linear on each of ``tp`` ranks. ``outs``: the full sub-outputs (q, k, v; gate, up;
    or the one output), ``input`` the full input; ``rank_outs`` / ``rank_in`` what each rank
    holds; ``row``: the input is split (``RowParallelLinear``); ``distinct``: per sub-output,
    how many different slices the ranks hold (``tp``, or the key/value heads when they are
    replicated); ``uneven``: ``(sub-output index or -1 for the input, full size)`` of each
    size ``divide`` refuses."""

    tp: int
    outs: tuple[int, ...]
    input: int
    rank_outs: tuple[int, ...]
    rank_in: int
    row: bool = False
    distinct: tuple[int, ...] = ()
    uneven: tuple[tuple[int, int], ...] = ()


def column(outs: tuple[int, ...] | list[int], inp: int, tp: int) -> Share:
    """A (merged) column-parallel Linear: every sub-output split (floor where it does not
    divide; ``uneven`` says which)."""
    outs = tuple(outs)
    uneven = tuple((i, o) for i, o in enumerate(outs) if tp > 1 and o % tp)
    return Share(tp, outs, inp, tuple(o // tp for o in outs), inp, False, (tp,) * len(outs), uneven)


def row(out: int, inp: int, tp: int) -> Share:
    """A row-parallel Linear: the input split."""
    uneven = ((-1, inp),) if tp > 1 and inp % tp else ()
    return Share(tp, (out,), inp, (out,), inp // tp, True, (tp,), uneven)


def replicated(outs: tuple[int, ...] | list[int], inp: int, tp: int) -> Share:
    """A Linear every rank holds whole (``ReplicatedLinear``)."""
    outs = tuple(outs)
    return Share(tp, outs, inp, outs, inp, False, (1,) * len(outs))


def qkv(heads: int, kv_heads: int, head_dim: int, inp: int, tp: int, q_gate: bool = False) -> Share:
    """``QKVParallelLinear``: query heads split (``q_gate``: a gated attention's query is twice
    as wide), key/value heads split, or replicated one a rank when fewer than ``tp``."""
    q_full = heads * head_dim * (2 if q_gate else 1)
    kv_full = kv_heads * head_dim
    if kv_heads >= tp:
        kv_rank, kv_distinct = kv_full // tp, tp
    else:
        kv_rank, kv_distinct = head_dim, max(kv_heads, 1)
    return Share(
        tp,
        (q_full, kv_full, kv_full),
        inp,
        (q_full // tp, kv_rank, kv_rank),
        inp,
        False,
        (tp, kv_distinct, kv_distinct),
    )


def head_problems(heads: int, kv_heads: int, vocab: int, tp: int) -> list[TpProblem]:
    """What ``tp`` ranks refuse of a decoder's heads and vocabulary, before any Linear's
    shapes: ``config/model.py:verify_with_parallel_config`` (query heads, at config time:
    "Total number of attention heads (4) must be divisible by tensor parallel size (3)."),
    ``QKVParallelLinear`` (key/value heads split or replicated), ``VocabParallelEmbedding``
    and ``ParallelLMHead`` (the vocabulary padded to 64)."""
    out: list[TpProblem] = []
    if tp <= 1 or heads <= 0:
        return out
    if heads % tp:
        out.append(
            TpProblem(
                "config",
                "num_attention_heads",
                f"Total number of attention heads ({heads}) must be divisible by tensor "
                f"parallel size ({tp}).",
            )
        )
        return out
    if kv_heads >= tp and kv_heads % tp:
        out.append(
            TpProblem("build", "num_key_value_heads", f"{kv_heads} is not divisible by {tp}")
        )
    elif 0 < kv_heads < tp and tp % kv_heads:
        out.append(
            TpProblem("build", "num_key_value_heads", f"{tp} is not divisible by {kv_heads}")
        )
    if vocab:
        padded = -(-vocab // VOCAB_PADDING) * VOCAB_PADDING
        if padded % tp:
            out.append(TpProblem("build", "vocab_size", f"{padded} is not divisible by {tp}"))
    return out


# -- block FP8 (Fp8LinearMethod, CompressedTensorsW8A8Fp8 / W8A16Fp8 with a block strategy) --


def fp8_block_allowed(share: Share, block_n: int, config_has_block_size: bool) -> bool:
    """``layers/linear.py:ColumnParallelLinear._maybe_allow_fp8_block_shape_mismatch`` (the
    same in 0.26.0 and 0.33.0): a merged layer (more than one sub-output) whose config class
    carries ``weight_block_size`` (``Fp8Config``; ``CompressedTensorsConfig`` has none) and
    some of whose rank shares break ``block_n`` skips ``validate_fp8_block_shape`` wholly."""
    return (
        config_has_block_size
        and len(share.rank_outs) > 1
        and any(o % block_n for o in share.rank_outs)
    )


def fp8_block_misses(share: Share, block: tuple[int, int]) -> list[tuple[str, int, int, str]]:
    """``quantization/utils/fp8_utils.py:validate_fp8_block_shape`` (0.26.0 and 0.33.0, the
    same) on a rank's share: every ``(part, sub-output index (-1: the input), size, vLLM's
    message)`` it checks and finds not whole blocks, in its order (it raises the first). A
    row split (``input // rank_in == tp``) whose rank input is not a multiple of ``block_k``;
    then, on a tensor-parallel split (``output // sum(rank_outs) == tp``) or a merged layer,
    each rank output (a merged layer not so split, as with replicated key/value heads: all
    but the last) not a multiple of ``block_n``."""
    block_n, block_k = block
    tp = share.tp
    out: list[tuple[str, int, int, str]] = []
    if tp > 1 and share.rank_in and share.input // share.rank_in == tp and share.rank_in % block_k:
        size = share.rank_in
        out.append(
            (
                "in",
                -1,
                size,
                f"Weight input_size_per_partition = {size} is not divisible by weight "
                f"quantization block_k = {block_k}",
            )
        )
    outs = share.rank_outs
    is_tp_split = tp > 1 and sum(outs) > 0 and sum(share.outs) // sum(outs) == tp
    if is_tp_split or len(outs) > 1:
        checked = outs if is_tp_split else outs[:-1]
        for i, size in enumerate(checked):
            if size % block_n:
                out.append(
                    (
                        "out",
                        i,
                        size,
                        f"Weight output_partition_size = {size} is not divisible by weight "
                        f"quantization block_n = {block_n}",
                    )
                )
    return out


def fp8_block(
    share: Share, block: tuple[int, int], config_has_block_size: bool = False
) -> tuple[str, int, int, str] | None:
    """What ``validate_fp8_block_shape`` raises on the share (:func:`fp8_block_misses`' first),
    or None, also when :func:`fp8_block_allowed` skips it."""
    if fp8_block_allowed(share, block[0], config_has_block_size):
        return None
    misses = fp8_block_misses(share, block)
    return misses[0] if misses else None


def fp8_scale_overrun(full_out: int, rank_out: int, distinct: int, block_n: int):
    """Where a sub-output's block scale runs out when the block check was skipped
    (:func:`fp8_block_allowed`): ``BlockQuantScaleParameter`` is a ``_ColumnvLLMParameter``,
    and ``load_qkv_weight`` / ``load_merged_column_weight`` (``parameter.py``, 0.26.0 and
    0.33.0) narrow the stored ``ceil(full_out / block_n)``-row scale at ``slice * rows``
    (``rows = ceil(rank_out / block_n)``): the first slice past the stored rows fails ("start
    (2) + length (1) exceeds dimension size (2)"). ``(slice, rows, stored)``, or None when
    every slice fits."""
    stored, rows = -(-full_out // block_n), -(-rank_out // block_n)
    if distinct * rows <= stored:
        return None
    return stored // rows, rows, stored


# -- grouped integer weights (compressed-tensors WNA16 and the schemes calling the same) -----


def group_split(share: Share, group: int | None, g_idx: bool) -> int | None:
    """``distributed/utils.py:verify_group_size_divides_partition`` as
    ``compressed_tensors_wNa16.py:create_weights`` calls it (both releases): the rank's input
    must be whole groups ("Weight input_size_per_partition=192 for layer '...' is not
    divisible by group_size=128"), unless the scales are repeated on every rank
    (``marlin_repeat_scales_on_all_ranks``: channel-wise on a row split, or act-order, which
    is not judged: the two releases differ there). The rank input that is not, or None."""
    if not group or group == -1 or g_idx:
        return None
    return share.rank_in if share.rank_in % group else None


# -- ModelOpt (modelopt.py create_weights) ---------------------------------------------------


def modelopt_blocks(share: Share, algo: str) -> tuple[list[tuple[int, int]], int | None]:
    """What ModelOpt's ``create_weights`` needs of a share (``FORMAT_BLOCKS``): FP8_PB_WO's
    128x128 block scales need every rank's share of every fused output and of the input to
    be whole blocks (0.26.0 checks the fused output and input in ``create_weights``: "ModelOpt
    FP8_PB_WO requires out_features divisible by 128, got 192"; 0.33.0 pads a partial fused
    output but checks the input, "FP8_PB_WO requires in divisible by 128, got 64"; in both, a
    shard of a partial block fails to load: "start (2) + length (1) exceeds dimension size
    (2)" on ``v_proj.weight_scale``); NVFP4 and W4A16_NVFP4 need the rank's input to be a
    multiple of 16 ("Unsupported model when in features size is not multiple of 16"), MXFP8
    of 32 ("MXFP8 requires input dimension to be divisible by 32"). ``([(sub-output index,
    rank rows)...] not whole output blocks, the rank input if not whole input blocks)``."""
    block_out, block_in = FORMAT_BLOCKS.get(algo, (1, 1))
    outs = [(i, o) for i, o in enumerate(share.rank_outs) if o % block_out]
    return outs, (share.rank_in if share.rank_in % block_in else None)


# -- fused MoE experts -----------------------------------------------------------------------


# the config.json keys of an MoE's expert count and expert width, as vLLM's MoE models read
# them (qwen2_moe.py / qwen3_moe.py: num_experts, moe_intermediate_size; mixtral.py:
# num_local_experts, intermediate_size; deepseek_v2.py: n_routed_experts,
# moe_intermediate_size)
EXPERT_COUNT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")


def moe_dims(config: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """``(experts, expert intermediate size)`` of an MoE's config.json (its text_config for a
    VLM), or None for a dense model or sizes that are not numbers."""
    text: Mapping[str, Any] = config or {}
    inner = text.get("text_config")
    if isinstance(inner, Mapping):
        text = inner
    try:
        experts = next((int(text[k]) for k in EXPERT_COUNT_KEYS if text.get(k)), 0)
        inter = int(text.get("moe_intermediate_size") or text.get("intermediate_size") or 0)
    except (TypeError, ValueError):
        return None
    return (experts, inter) if experts > 0 and inter > 0 else None


@dataclass(frozen=True)
class MoeShare:
    """A fused MoE layer on each of ``tp`` ranks: ``inter`` (the experts' intermediate size),
    ``hidden``, and ``rank_inter`` = ``inter // tp`` (gate's and up's rows, down's columns);
    ``uneven``: ``inter % tp`` (``FusedMoEConfig.__post_init__``'s assert)."""

    tp: int
    inter: int
    hidden: int
    rank_inter: int
    uneven: bool = False


def moe(inter: int, hidden: int, tp: int) -> MoeShare:
    """The share of a fused MoE layer (module docstring)."""
    return MoeShare(tp, inter, hidden, inter // tp if tp else inter, bool(tp > 1 and inter % tp))


def moe_fp8_block(
    share: MoeShare, block: tuple[int, int], refine_min: int | None = None
) -> str | None:
    """Block FP8 experts: ``Fp8MoEMethod.create_weights`` and
    ``CompressedTensorsW8A8Fp8MoEMethod.create_weights`` (written out in 0.26.0's
    ``quantization/fp8.py`` and ``compressed_tensors_moe_w8a8_fp8.py``; one helper in 0.33.0,
    ``fp8_utils.py:validate_fp8_block_shape_moe``, the same rule and words): gate's and up's
    rank rows must be whole ``block_n`` blocks (at any tp), and on a split down's rank input
    whole ``block_k`` blocks. No allowance for a mismatch as the Linears have; but
    ``refine_min`` (0.33.0's ``Fp8MoEMethod`` only, ``fused_moe/oracle/fp8.py:
    refine_fp8_moe_block_shape``, read from the env's source): a share that breaks the blocks
    loads with a finer block ``gcd(block_n, block_k, rank inter, hidden)`` when that is at
    least ``refine_min`` (the scales upsampled at load, a Triton MoE kernel then). vLLM's
    message, or None."""
    block_n, block_k = block
    size = share.rank_inter
    broken = bool(size % block_n) or (share.tp > 1 and bool(size % block_k))
    if broken and refine_min and math.gcd(block_n, block_k, size, share.hidden) >= refine_min:
        return None
    if size % block_n:
        return (
            f"The output_size of gate's and up's weight = {size} is not divisible by weight "
            f"quantization block_n = {block_n}"
        )
    if share.tp > 1 and size % block_k:
        return (
            f"The input_size of down's weight = {size} is not divisible by weight "
            f"quantization block_k = {block_k}"
        )
    return None


def moe_wna16_group(share: MoeShare, group: int | None) -> str | None:
    """Grouped int experts: ``CompressedTensorsWNA16MoEMethod.create_weights`` (0.26.0 and
    0.33.0; 0.26.0's ``CompressedTensorsWNA16MarlinMoEMethod`` the same without act-order)
    needs the rank's intermediate size (down's input share) to be whole groups ("Scale
    groups would otherwise cross TP shard boundaries"). (Its ``hidden_size % group_size``
    check holds at any size, so it is not the split's.) vLLM's message, or None."""
    if not group or group == -1 or share.rank_inter % group == 0:
        return None
    return (
        "CompressedTensors WNA16 MoE with static group scales requires the MoE intermediate "
        f"size per tensor-parallel partition ({share.rank_inter}) to be divisible by "
        f"group_size ({group})"
    )
