"""How the env's vLLM splits a checkpoint over ``tensor_parallel_size`` ranks, and what in
that split it refuses. Rules from vLLM 0.26.0's and 0.33.0's source, each checked on both
real loaders on the CPU with every rank simulated (fixtures/loader_truth/outcomes.json:
``tp2``, ``tp3``, ``tp4-kv-replicated``, ``pbwo-tp2``, ``pbwo-tp4``):

- ``config/model.py:verify_with_parallel_config``: ``num_attention_heads % tp == 0`` or, at
  config time, "Total number of attention heads (4) must be divisible by tensor parallel
  size (3)."
- ``layers/linear.py``: ``QKVParallelLinear`` splits the query heads; key/value heads are
  split when there are at least ``tp`` of them (``kv % tp == 0``), else replicated
  (``tp % kv == 0``, one head per rank); ``MergedColumnParallelLinear`` and
  ``ColumnParallelLinear`` split each output (``divide``: an ``AssertionError`` "X is not
  divisible by Y"), ``RowParallelLinear`` the input; ``VocabParallelEmbedding`` and
  ``ParallelLMHead`` the vocabulary padded to 64.
- the quantized layer's ``create_weights`` and weight loader, per rank: FP8_PB_WO's 128x128
  block scales need every rank's share of every fused output (q, k, v; gate, up) and of the
  input to be whole blocks (0.26.0 checks the fused output and input in ``create_weights``:
  "ModelOpt FP8_PB_WO requires out_features divisible by 128, got 192"; 0.33.0 pads a partial
  fused output but checks the input, "FP8_PB_WO requires in divisible by 128, got 64"; in
  both, a shard of a partial block fails to load: "start (2) + length (1) exceeds dimension
  size (2)" on ``v_proj.weight_scale``); NVFP4 and W4A16_NVFP4 need the rank's input to be a
  multiple of 16 ("Unsupported model when in features size is not multiple of 16"), MXFP8 of
  32 ("MXFP8 requires input dimension to be divisible by 32").

Which kernel then runs each rank's GEMM, and its own alignment (Marlin pads to 64/128 in
0.26.0 and 0.33.0, ``marlin_padded_nk``), is a GPU's to show (scripts/device/loader_truth.sh).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pytest_vllm_env.facts.vllm_load_plan import LINEAR_KINDS, LoadPlan, dims_of

# per-rank divisibility the quantized layers need: algo -> (output block, input block)
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


@dataclass
class TpSplit:
    """``ranks`` (each rank's ``[out per shard..., in]`` of layer 0's Linears) and the
    ``problems`` vLLM raises for this size; ``checked`` the Linears judged."""

    tp: int
    problems: list[TpProblem] = field(default_factory=list)
    shapes: dict[str, tuple[tuple[int, ...], int]] = field(default_factory=dict)
    checked: int = 0


def _div(a: int, b: int) -> int | None:
    return a // b if b and a % b == 0 else None


def head_problems(heads: int, kv_heads: int, vocab: int, tp: int) -> list[TpProblem]:
    """What ``tp`` ranks refuse of a decoder's heads and vocabulary, before any Linear's
    shapes: ``config/model.py:verify_with_parallel_config`` (query heads, at config time),
    ``QKVParallelLinear`` (key/value heads split or replicated), ``VocabParallelEmbedding``
    (the vocabulary padded to 64)."""
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


def split(plan: LoadPlan, tp: int) -> TpSplit:
    """The split of ``plan``'s model over ``tp`` ranks (every rank has the same shapes)."""
    out = TpSplit(tp)
    d = plan.dims
    if d is None or tp <= 1:
        return out
    out.problems += head_problems(d.heads, d.kv_heads, d.vocab, tp)
    if any(p.stage == "config" for p in out.problems):
        return out
    algo = plan.decision.algo or ""
    block_out, block_in = FORMAT_BLOCKS.get(algo, (1, 1))
    kv_rank = (d.kv_heads // tp if d.kv_heads >= tp else 1) * d.head_dim
    q_rank = d.heads // tp * d.head_dim * (2 if d.q_gate else 1)
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
            outs = {"q": q_rank, "k": kv_rank, "v": kv_rank}
            rank_in = inp
        elif p.kind in ("merged", "column"):
            outs = {}
            for shard, (o, _) in full.items():
                per = _div(o, tp)
                if per is None:
                    out.problems.append(
                        TpProblem(
                            "build", f"{module} ({shard or 'out'})", f"{o} is not divisible by {tp}"
                        )
                    )
                    per = o // tp
                outs[shard or "out"] = per
            rank_in = inp
        elif p.kind == "row":
            ((o, _),) = full.values()
            outs = {"out": o}
            per_in = _div(inp, tp)
            if per_in is None:
                out.problems.append(
                    TpProblem("build", f"{module} (in)", f"{inp} is not divisible by {tp}")
                )
                per_in = inp // tp
            rank_in = per_in
        else:  # replicated
            outs = {k or "out": o for k, (o, _) in full.items()}
            rank_in = inp
        out.checked += 1
        if ".layers.0." in module or ".layers." not in module:
            out.shapes[module] = (tuple(outs.values()), rank_in)
        if not p.quantized:
            continue
        for shard, size in outs.items():
            if size % block_out:
                names = tuple(
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
                        names,
                    )
                )
        if rank_in % block_in:
            out.problems.append(
                TpProblem(
                    "build",
                    f"{module} (in)",
                    f"{algo}: each rank's input is {rank_in}, not a multiple of {block_in}",
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


def format_split(config: dict, schemes: dict[str, FormatScheme], tp: int) -> TpSplit:
    """The split of a checkpoint of any format over ``tp`` ranks, from config.json's sizes and
    the scheme of each checkpoint Linear (``schemes``: module name -> :class:`FormatScheme`;
    a module absent is unquantized). The rules each scheme's ``create_weights`` applies to
    the rank's share, read from vLLM 0.26.0 and 0.33.0 (the same in both; measured on both
    real loaders on the CPU, fixtures/field_reports.py):

    - block FP8 (``Fp8LinearMethod``, ``CompressedTensorsW8A8Fp8`` / ``W8A16Fp8`` with a
      block strategy): ``quantization/utils/fp8_utils.py:validate_fp8_block_shape``: a row-
      parallel split whose rank input is not a multiple of ``block_k`` raises "Weight
      input_size_per_partition = 192 is not divisible by weight quantization block_k = 128.";
      a column split (or a merged layer) whose rank outputs are not multiples of ``block_n``
      raises "Weight output_partition_size = ...". ``layers/linear.py:ColumnParallelLinear.
      _maybe_allow_fp8_block_shape_mismatch`` skips that check for a merged layer (qkv,
      gate_up) whose config class has ``weight_block_size`` (``Fp8Config``) and whose shares
      break the block: such a layer is not refused at build (what its scales then do is
      quant.tensors-complete's).
    - WNA16 (``CompressedTensorsWNA16.create_weights``): scales are split with the input
      unless ``marlin_repeat_scales_on_all_ranks`` (channelwise and row-parallel; 0.26.0 also
      act-order), and then ``distributed/utils.py:verify_group_size_divides_partition``
      raises "Weight input_size_per_partition=192 for layer '...' is not divisible by
      group_size=128. ... Consider reducing tensor_parallel_size." (act-order is not judged:
      the two releases differ there).

    Which kernel then runs a rank's GEMM (Marlin's and Machete's own tile sizes) is
    quant.kernel-arch's and a GPU's."""
    out = TpSplit(tp)
    d = dims_of(config)
    if d is None or tp <= 1:
        return out
    out.problems += head_problems(d.heads, d.kv_heads, d.vocab, tp)
    if any(p.stage == "config" for p in out.problems):
        return out
    kv_rank = (d.kv_heads // tp if d.kv_heads >= tp else 1) * d.head_dim
    q_full = d.heads * d.head_dim * (2 if d.q_gate else 1)
    q_rank = q_full // tp
    inter = d.intermediate or 0
    full: dict[str, tuple[list[int], int]] = {
        "self_attn.qkv_proj": (
            [q_full, d.kv_heads * d.head_dim, d.kv_heads * d.head_dim],
            d.hidden,
        ),
        "self_attn.o_proj": ([d.hidden], d.heads * d.head_dim),
        "mlp.gate_up_proj": ([inter, inter], d.hidden),
        "mlp.down_proj": ([d.hidden], inter),
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
        outs_full, in_full = full[leaf]
        if leaf in ROW_PARALLEL:
            outs, in_rank = list(outs_full), in_full // tp
        elif leaf == "self_attn.qkv_proj":
            outs, in_rank = [q_rank, kv_rank, kv_rank], in_full
        else:
            outs, in_rank = [o // tp for o in outs_full], in_full
        out.shapes[f"{layer}.{leaf}"] = (tuple(outs), in_rank)
        if scheme is None or not inter:
            continue
        out.checked += 1
        module = f"{layer}.{leaf}"
        tensors = tuple(f"{layer}.{p}.weight" for p in parts)
        if scheme.block:
            out.problems += _fp8_block(
                module, scheme, outs, sum(outs_full), in_full, in_rank, tp, tensors
            )
        if scheme.group and scheme.group != -1 and not scheme.g_idx:
            if in_rank % scheme.group:
                out.problems.append(
                    TpProblem(
                        "build",
                        f"{module} (in)",
                        f"Weight input_size_per_partition={in_rank} for layer "
                        f"'{layer}.{parts[0].rsplit('.', 1)[0]}.{leaf.rsplit('.', 1)[1]}' is "
                        f"not divisible by group_size={scheme.group} ({scheme.name})",
                        tensors,
                    )
                )
    return out


def _fp8_block(
    module: str,
    scheme: FormatScheme,
    outs: list[int],
    output_size: int,
    input_size: int,
    in_rank: int,
    tp: int,
    tensors: tuple[str, ...],
) -> list[TpProblem]:
    """``validate_fp8_block_shape`` for one layer's rank share (see :func:`format_split`)."""
    assert scheme.block is not None
    block_n, block_k = scheme.block
    if scheme.config_has_block_size and len(outs) > 1 and any(o % block_n for o in outs):
        return []  # ColumnParallelLinear._maybe_allow_fp8_block_shape_mismatch
    if tp > 1 and input_size // in_rank == tp and in_rank % block_k:
        return [
            TpProblem(
                "build",
                f"{module} (in)",
                f"Weight input_size_per_partition = {in_rank} is not divisible by weight "
                f"quantization block_k = {block_k} ({scheme.name})",
                tensors,
            )
        ]
    is_tp_split = tp > 1 and output_size // sum(outs) == tp
    if is_tp_split or len(outs) > 1:
        check = outs if is_tp_split else outs[:-1]
        for size in check:
            if size % block_n:
                return [
                    TpProblem(
                        "build",
                        f"{module} (out)",
                        f"Weight output_partition_size = {size} is not divisible by weight "
                        f"quantization block_n = {block_n} ({scheme.name})",
                        tensors,
                    )
                ]
    return []


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


def largest_format_working(config: dict, schemes: dict[str, FormatScheme], upto: int = 8) -> int:
    """:func:`largest_working` for :func:`format_split`."""
    best = 1
    size = 2
    while size <= upto:
        if not format_split(config, schemes, size).problems:
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
