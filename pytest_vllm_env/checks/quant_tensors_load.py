"""How a quantized Linear's stored tensors meet its parameters in vLLM's weight loader, beyond
name, dtype and shape (``quant.tensors-complete``'s helpers): integer casts, a row-parallel
layer's narrowing, each tensor-parallel rank's share, and Linears built unquantized that store
quantized tensors. Rules from vLLM 0.26.0's and 0.33.0's source (cited per function), held
against both real loaders on the CPU (fixtures/loader_truth/formats_outcomes.json).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_vllm_env.facts.quant_plan import QuantPlan, Scheme, linear_shape
from pytest_vllm_env.facts.vllm_tp import head_problems
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
) -> list:
    """What each of ``tp`` ranks builds of a quantized Linear, as create_weights checks it:
    block FP8 (``fp8_utils.py:validate_fp8_block_shape``, from Fp8LinearMethod and
    CompressedTensorsW8A8Fp8's create_weights): a row-parallel layer's input share must be
    whole block_k columns, a column-parallel layer's output share whole block_n rows ("Weight
    output_partition_size = 64 is not divisible by weight quantization block_n = 128", both
    releases, measured) - except a shard of a fused layer under a quantization config that
    carries ``weight_block_size`` (Fp8Config; CompressedTensorsConfig has none):
    ``ColumnParallelLinear._maybe_allow_fp8_block_shape_mismatch`` skips the check, and the
    weight loader (``BlockQuantScaleParameter`` a ``_ColumnvLLMParameter``:
    ``load_qkv_weight`` / ``load_merged_column_weight`` narrow the stored scale at
    ``tp_rank * rows``) fails on the first rank whose rows run past the stored scale's;
    grouped int weights (``compressed_tensors_wNa16.py:create_weights`` ->
    ``distributed/utils.py:verify_group_size_divides_partition``): a row-parallel layer's
    input share must be whole groups, unless the scales are repeated on every rank
    (``marlin_repeat_scales_on_all_ranks``: activation order, or channel-wise)."""
    weight = parts.get("weight") or parts.get("weight_packed")
    if weight is None or len(weight.shape) != 2:
        return []
    settings = scheme.settings
    out_f, in_f = built or linear_shape(parts, scheme) or (0, 0)
    if not out_f:
        return []
    row = prefix.rpartition(".")[2] in ROW_PARALLEL
    share_in, share_out = (in_f // tp, out_f) if row else (in_f, out_f // tp)
    name = f"{prefix}.{'weight_packed' if 'weight_packed' in parts else 'weight'}"
    bn, bk = settings.get("block_n"), settings.get("block_k")
    msg = ""
    if bk and row and share_in % bk:
        msg = (
            f"Weight input_size_per_partition = {share_in} is not divisible by weight "
            f"quantization block_k = {bk}"
        )
    elif bn and not row and share_out % bn and fused and scheme.row.producer == "fp8":
        stored, rows = -(-out_f // bn), -(-share_out // bn)
        if tp * rows <= stored:
            return []  # loads; the blocks that span shards are _blocks' (at tp 1) to judge
        rank = stored // rows
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
    elif bn and not row and share_out % bn:
        msg = (
            f"Weight output_partition_size = {share_out} is not divisible by weight "
            f"quantization block_n = {bn}"
        )
    group = settings.get("group", 0)
    if not msg and group and group > 0 and row and "g_idx" not in scheme.flags and share_in % group:
        msg = f"Weight input_size_per_partition={share_in} is not divisible by group_size={group}"
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
    """What ``tp`` ranks refuse of the model itself (its heads, its vocabulary), the rules of
    ``facts/vllm_tp.py:head_problems`` on config.json (its text_config for a VLM)."""
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
    return [
        (
            "refuses",
            "tp-model",
            f"tensor_parallel_size={tp}: vLLM refuses it at {p.stage} time ({p.where}: "
            f"{p.message})",
            "",
        )
        for p in head_problems(heads, kv, vocab, tp)
    ]
