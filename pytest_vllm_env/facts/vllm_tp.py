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

from pytest_vllm_env.facts.vllm_load_plan import LINEAR_KINDS, LoadPlan

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
