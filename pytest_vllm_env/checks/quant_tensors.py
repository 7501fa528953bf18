"""``quant.tensors-complete`` and ``quant.scales-sane`` for any format: every Linear vLLM
quantizes holds, under its checkpoint name, each parameter the scheme's ``create_weights``
registers (its row in :mod:`pytest_vllm_env.tables.quant_schemes`: name, dtype, shape
relative to ``[out, in]`` with the layer's group / block sizes), and every float scale is a
number > 0. A ModelOpt checkpoint gets ``modelopt.tensors-complete`` / ``modelopt.scales-sane``
(calibrated on real loads) under these ids.

What vLLM then does (``parameter.py``, the schemes' ``create_weights``): a tensor of another
shape fails an ``assert`` in the weight loader (refuses); a parameter the checkpoint lacks
keeps ``torch.empty``/placeholder values (wrong results); a fused layer whose shards break the
block size is refused by ``validate_fp8_block_shape``; a quantized module stored in 16-bit is
loaded into a quantized parameter without scales (wrong) or under a name the scheme has not
(``weight`` where W4A16 registers ``weight_packed``: the loader finds no parameter).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pytest_vllm_env.checks.modelopt_common import effect_summary, few, skip_unreadable
from pytest_vllm_env.checks.modelopt_tensors import scales_sane as modelopt_scales_sane
from pytest_vllm_env.checks.quant_config import relabel
from pytest_vllm_env.facts.modelopt_load import FUSED, fused_name, shards
from pytest_vllm_env.facts.quant_plan import QuantPlan, Scheme, config_shape, linear_shape
from pytest_vllm_env.findings import Finding, failed, passed, skipped, warning
from pytest_vllm_env.readers.checkpoint import Checkpoint
from pytest_vllm_env.readers.safetensors_header import TensorInfo
from pytest_vllm_env.tables.quant_formats import FLOAT_DTYPES, FP8_E4M3
from pytest_vllm_env.tables.quant_schemes import MXFP4_EXPERTS

QUANT_LEAVES = ("_scale", "_scale_inv", "_zero_point", "_g_idx", "_packed", "_shape")
FIX = {
    "missing": "re-export: the scheme's every parameter must be in the checkpoint (llm-compressor "
    "writes them with save_pretrained(..., save_compressed=True))",
    "shape": "re-export with the scheme config.json declares, or fix the config (group_size, "
    "weight_block_size, strategy) to the one the tensors were written with",
    "dtype": "store the tensor in the dtype the scheme registers (the exporter's own output)",
    "unquantized": "list the module in quantization_config.ignore (compressed-tensors) / "
    "ignored_layers (fp8) so vLLM builds it 16-bit, or quantize it",
    "block": "use a block size that divides every fused shard's output (128 for Llama-style "
    "dims that are multiples of 128), or keep those layers 16-bit (ignore)",
    "extra": "drop the tensors the scheme does not register, or fix the config to the scheme "
    "that has them",
    "stored-quantized": "store the module 16-bit (its dequantized weight), or take it out of "
    "quantization_config's ignore / modules_to_not_convert / targets mismatch so vLLM builds "
    "it quantized",
    "tp": "use a --tensor-parallel-size whose per-rank shares hold whole groups / blocks (a "
    "smaller one), or re-quantize with a smaller group_size / weight_block_size",
    "experts": "re-export the MoE experts as gpt-oss writes them (*_blocks U8, *_scales U8, "
    "*_bias per expert)",
}


# The Linears vLLM's decoder models build as RowParallelLinear (llama.py LlamaAttention.o_proj,
# LlamaMLP.down_proj; Qwen2/Qwen3/Mistral reuse them; gpt2/phi "dense"/"fc2", mixtral "w2"):
# their input is split over the ranks, and each parameter with an input dimension is loaded
# by RowvLLMParameter.load_row_parallel_weight (model_executor/parameter.py, 0.26.0 and
# 0.33.0), which narrows the stored tensor to the parameter's size at rank * size first.
ROW_PARALLEL = frozenset({"o_proj", "down_proj", "dense", "out_proj", "fc2", "w2", "wo"})
INT_WIDTH = {"I8": 8, "U8": 8, "I16": 16, "U16": 16, "I32": 32, "U32": 32, "I64": 64, "U64": 64}


def tensors_complete(
    ckpt: Checkpoint,
    plan: QuantPlan,
    modelopt_verdict: Finding | None = None,
    tp: int = 1,
) -> Finding:
    """Each quantized Linear holds the parameters its scheme registers, as they load (on each
    of ``tp`` ranks); each Linear vLLM builds unquantized holds no quantized tensors."""
    check = "quant.tensors-complete"
    if blocked := skip_unreadable(check, ckpt, config=True, tensors=True):
        return blocked
    if plan.producer == "modelopt":
        if modelopt_verdict is None:
            return skipped(check, f"{ckpt.label}: a ModelOpt checkpoint (modelopt.* judges it)")
        return relabel(modelopt_verdict, check)
    if plan.refusal or plan.producer is None:
        return skipped(check, f"{ckpt.label}: no scheme to judge against (see quant.config)")
    issues: list[tuple[str, str, str, str]] = []  # (effect, kind, text, tensor)
    if plan.producer == "mxfp4":
        issues += _experts(ckpt, plan)
    else:
        for prefix, scheme in sorted(plan.schemes.items()):
            built = config_shape(ckpt.config, prefix)
            issues += _module(prefix, ckpt.modules.get(prefix, {}), scheme, built)
            if tp > 1:
                issues += _tp_share(prefix, ckpt.modules.get(prefix, {}), scheme, tp, built)
        issues += _blocks(plan, ckpt.modules)
        issues += _stored_quantized(plan, ckpt.modules)
    refused = [i for i in issues if i[0] == "refuses"]
    wrong = [i for i in issues if i[0] == "wrong"]
    notes = [i for i in issues if i[0] == "cost"]
    evidence: dict[str, Any] = {"method": plan.method, "quantized_modules": len(plan.schemes)}
    fix = "; ".join(dict.fromkeys(FIX[i[1]] for i in refused + wrong + notes))
    if refused or wrong:
        return failed(
            check,
            f"{ckpt.label}: " + effect_summary([i[2] for i in refused], [i[2] for i in wrong]),
            fix,
            vllm_effect="refuses" if refused else "wrong",
            tensors=[i[3] for i in refused + wrong if i[3]][:50],
            **evidence,
        )
    if notes:
        return warning(
            check,
            f"{ckpt.label}: {few([i[2] for i in notes])}",
            fix,
            vllm_effect="works",
            **evidence,
        )
    names = sorted({s.row.name for s in plan.schemes.values()})
    return passed(
        check,
        f"{ckpt.label}: {len(plan.schemes)} quantized module(s) hold every parameter "
        f"{', '.join(names)} registers, in its dtype and shape",
        vllm_effect="works",
        **evidence,
    )


def _module(
    prefix: str,
    parts: Mapping[str, TensorInfo],
    scheme: Scheme,
    built: tuple[int, int] | None = None,
) -> list:
    """The parameters of one quantized Linear against its stored tensors. ``built``: the
    ``(out, in)`` vLLM sizes the layer with from config.json (``quant_plan.config_shape``);
    without it, the stored weight's shape and the declared packing say it."""
    out: list[tuple[str, str, str, str]] = []
    params = scheme.params
    weight = next((p for p in params if p.role == "weight"), None)
    stored = parts.get(weight.name) if weight else None
    if (
        weight is not None
        and stored is None
        and "weight" in parts
        and not any(k.endswith(QUANT_LEAVES) for k in parts)
    ):
        info = parts["weight"]
        if weight.name == "weight":
            return [
                (
                    "wrong",
                    "unquantized",
                    f"{prefix} ({info.dtype}, no scales) is not ignored, so vLLM builds a "
                    f"{scheme.row.name} layer around it and its scales stay unset",
                    f"{prefix}.weight",
                )
            ]
        return [
            (
                "refuses",
                "unquantized",
                f"{prefix} is stored 16-bit ({prefix}.weight) but not ignored: vLLM's "
                f"{scheme.row.name} layer has {weight.name}, no 'weight' parameter",
                f"{prefix}.weight",
            )
        ]
    out_f = in_f = 0
    settings = dict(scheme.settings)
    if stored is not None and weight is not None and len(stored.shape) == 2:
        # the stored in-dimension times the weight's packing (Dim "in"/pack, "in"/2)
        d = weight.shapes[0][1]
        div = settings.get(d.div, 0) if isinstance(d.div, str) else d.div
        out_f, in_f = stored.shape[0], stored.shape[1] * max(div, 1)
    if built is not None and (not out_f or built[0] == out_f):
        # the parameters are sized from the model's config, not from the tensors (a stored
        # weight of another packing is then a shape the loader refuses)
        out_f, in_f = built
    if settings.get("group", 0) == -1:
        settings["group"] = in_f  # channel-wise: one scale column
    for p in params:
        info = parts.get(p.name)
        name = f"{prefix}.{p.name}"
        if info is None:
            if p.required:
                effect = "refuses" if p.role == "weight" else "wrong"
                out.append(
                    (
                        effect,
                        "missing",
                        f"{prefix} has no {p.name}: {scheme.row.linear_method} registers it "
                        f"({p.shape_text}); vLLM keeps it uninitialized (garbage out, or a "
                        "CUDA device-side assert: fine-grained FP8 on the H100)",
                        name,
                    )
                )
            continue
        if (
            p.dtypes is not None
            and info.dtype not in p.dtypes
            and not _same_bits(info.dtype, p.dtypes)
        ):
            floaty = info.dtype in FLOAT_DTYPES | FP8_E4M3 and p.dtypes <= FLOAT_DTYPES | FP8_E4M3
            out.append(
                (
                    "cost" if floaty and p.role == "scale" else "wrong",
                    "dtype",
                    f"{name} is {info.dtype}, {scheme.row.name} registers "
                    f"{'/'.join(sorted(p.dtypes))}" + (" (cast on load)" if floaty else ""),
                    name,
                )
            )
        if out_f and not p.fits(tuple(info.shape), out_f, in_f, settings):
            if _row_narrowed(prefix, p, tuple(info.shape), out_f, in_f, settings):
                out.append(
                    (
                        "wrong",
                        "shape",
                        f"{name} has shape {list(info.shape)}; {scheme.row.linear_method} "
                        f"registers {p.shape_text} (out={out_f}, in={in_f}"
                        + "".join(f", {k}={v}" for k, v in sorted(settings.items()))
                        + "): vLLM loads the first columns only (RowvLLMParameter."
                        "load_row_parallel_weight narrows a row-parallel layer's tensor along "
                        "its input) and drops the rest",
                        name,
                    )
                )
                continue
            out.append(
                (
                    "refuses",
                    "shape",
                    f"{name} has shape {list(info.shape)}; {scheme.row.linear_method} "
                    f"registers {p.shape_text} (out={out_f}, in={in_f}"
                    + "".join(f", {k}={v}" for k, v in sorted(settings.items()))
                    + "): the loader's assert in vllm/model_executor/parameter.py fails",
                    name,
                )
            )
    registered = {p.name for p in params}
    for leaf in sorted(parts):
        if leaf.endswith(QUANT_LEAVES) and leaf not in registered:
            out.append(
                (
                    "refuses",
                    "extra",
                    f"{prefix}.{leaf} is not a parameter of {scheme.row.linear_method} as "
                    "configured (vLLM's loader finds no parameter for it)",
                    f"{prefix}.{leaf}",
                )
            )
    return out


def _same_bits(stored: str, registered: frozenset[str]) -> bool:
    """An integer tensor loaded into an integer parameter of the same width keeps its bits:
    the weight loader's ``param.data.copy_(loaded)`` converts integers modulo 2**bits (U8 200
    becomes I8 -56, the same byte; measured: ct-w8a8-weight-as-u8 loads the same numbers)."""
    width = INT_WIDTH.get(stored)
    return width is not None and any(INT_WIDTH.get(d) == width for d in registered)


def _row_narrowed(
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


def _tp_share(
    prefix: str,
    parts: Mapping[str, TensorInfo],
    scheme: Scheme,
    tp: int,
    built: tuple[int, int] | None = None,
) -> list:
    """What each of ``tp`` ranks builds of a quantized Linear, as create_weights checks it:
    block FP8 (``fp8_utils.py:validate_fp8_block_shape``, from Fp8LinearMethod and
    CompressedTensorsW8A8Fp8's create_weights): a row-parallel layer's input share must be
    whole block_k columns, a column-parallel layer's output share whole block_n rows ("Weight
    output_partition_size = 64 is not divisible by weight quantization block_n = 128", both
    releases, measured); grouped int weights (``compressed_tensors_wNa16.py:create_weights`` ->
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


def _stored_quantized(plan: QuantPlan, modules: Mapping[str, Mapping[str, TensorInfo]]) -> list:
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


def _blocks(plan: QuantPlan, modules: Mapping[str, Mapping[str, TensorInfo]]) -> list:
    """A fused column layer (qkv, gate_up) whose shards do not start on a block_n boundary.
    vLLM 0.26.0 and 0.33.0 skip ``validate_fp8_block_shape`` for it
    (``ColumnParallelLinear._maybe_allow_fp8_block_shape_mismatch``) and load each shard's
    block scale into the fused one at rows ``[ceil(offset/block_n), + ceil(size/block_n))``
    (``linear.py:adjust_block_scale_shard``; the fused scale has ``ceil(total/block_n)``
    rows). A shard whose rows run past the end fails in ``narrow`` ("start (2) + length (1)
    exceeds dimension size (2)": measured with vLLM 0.26.0's loader on the CPU); where every
    shard fits, the load succeeds but a block of the fused layer spans two shards and is
    dequantized with one shard's scale (another's is overwritten or never used): wrong
    results, also measured (it loaded). The last shard may end off a block: its offset is
    still a block boundary (the same allowance ``validate_fp8_block_shape`` makes)."""
    out = []
    seen: set[str] = set()
    for prefix, scheme in sorted(plan.schemes.items()):
        bn = scheme.settings.get("block_n")
        layer = fused_name(prefix, modules)
        if not bn or layer in seen or layer.rpartition(".")[2] not in FUSED:
            continue
        seen.add(layer)
        names = shards(layer)
        sizes = []
        for shard in names:
            w = modules.get(shard, {}).get("weight")
            sizes.append(w.shape[0] if w is not None and w.shape else 0)
        if not all(sizes) or not any(n % bn for n in sizes[:-1]):
            continue
        rows = -(-sum(sizes) // bn)
        offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        spans = {
            shard: (-(-off // bn), -(-n // bn))
            for shard, off, n in zip(names, offsets, sizes, strict=True)
        }
        odd = ", ".join(
            f"{s.rpartition('.')[2]} ({n})" for s, n in zip(names, sizes, strict=True) if n % bn
        )
        head = f"{layer}: the outputs of {odd} are not multiples of block_n = {bn}"
        scale = _block_scale(scheme)
        # vLLM loads tensors in the files' name order: the first shard past the end raises
        over = [s for s in sorted(names) if sum(spans[s]) > rows]
        if over:
            start, length = spans[over[0]]
            out.append(
                (
                    "refuses",
                    "block",
                    f"{head}: vLLM skips validate_fp8_block_shape for the fused layer and "
                    f"fails loading {over[0].rpartition('.')[2]}'s {scale} in parameter.py "
                    f"('start ({start}) + length ({length}) exceeds dimension size ({rows})')",
                    f"{over[0]}.{scale}",
                )
            )
            continue
        shared = [
            s.rpartition(".")[2]
            for s, off in zip(names, offsets, strict=True)
            if off % bn or spans[s][0] != off // bn
        ]
        out.append(
            (
                "wrong",
                "block",
                f"{head}: vLLM loads it, but the fused layer's blocks span two shards, so "
                f"{', '.join(shared)} is dequantized with another shard's {scale} (its own "
                "is overwritten or never used)",
                f"{layer.rpartition('.')[0]}.{shared[0]}.{scale}",
            )
        )
    return out


def _block_scale(scheme: Scheme) -> str:
    """The name of the scheme's block scale (weight_scale, or weight_scale_inv for fp8)."""
    for p in scheme.params:
        if any(d.div == "block_n" for alt in p.shapes for d in alt):
            return p.name
    return "weight_scale"


def _experts(ckpt: Checkpoint, plan: QuantPlan) -> list:
    """gpt-oss MXFP4 experts: every layer's six tensors, U8 blocks and scales."""
    out = []
    text = ckpt.config or {}
    e = int(text.get("num_local_experts") or 0)
    i = int(text.get("intermediate_size") or 0)
    h = int(text.get("hidden_size") or 0)
    want = {
        "gate_up_proj_blocks": [e, 2 * i, h // 32, 16],
        "gate_up_proj_scales": [e, 2 * i, h // 32],
        "gate_up_proj_bias": [e, 2 * i],
        "down_proj_blocks": [e, h, i // 32, 16],
        "down_proj_scales": [e, h, i // 32],
        "down_proj_bias": [e, h],
    }
    if not plan.schemes:
        return [("refuses", "experts", "no MoE expert holds *_blocks tensors", "")]
    for prefix in sorted(plan.schemes):
        parts = ckpt.modules.get(prefix, {})
        for leaf, (dtypes, shape_text) in MXFP4_EXPERTS.items():
            info = parts.get(leaf)
            name = f"{prefix}.{leaf}"
            if info is None:
                out.append(("wrong", "experts", f"{name} is missing ({shape_text})", name))
            elif info.dtype not in dtypes:
                out.append(("wrong", "experts", f"{name} is {info.dtype}, not U8/float", name))
            elif e and i and h and list(info.shape) != want[leaf]:
                out.append(
                    (
                        "refuses",
                        "experts",
                        f"{name} has shape {list(info.shape)}, config.json implies "
                        f"{want[leaf]} {shape_text}",
                        name,
                    )
                )
    return out


# What re-makes a scale, by the format's exporter (a NaN/zero/negative scale comes from a
# calibration that saw no or broken activations: every output of that layer is garbage).
RECALIBRATE = {
    "compressed-tensors": "re-run llm-compressor's oneshot with calibration samples that reach "
    "every quantized module (more samples; for MoE experts every expert must see tokens), or "
    "use a scheme with dynamic activations (FP8_DYNAMIC), then save_pretrained(..., "
    "save_compressed=True)",
    "fp8": "re-quantize the named layers (weight_scale_inv is the weight's absmax / 448 per "
    "block: finite and > 0 for any real weight)",
}


def scales_sane(
    ckpt: Checkpoint,
    values: Mapping[str, Sequence[float]],
    unread: Mapping[str, str],
    producer: str | None = None,
) -> Finding:
    """Every float scale finite and > 0 (``modelopt.scales-sane``'s rule, any format's names);
    the fix names the exporter of ``producer``'s format (ModelOpt's own otherwise)."""
    found = relabel(modelopt_scales_sane(ckpt, values, unread), "quant.scales-sane")
    if found.outcome == "failed" and producer in RECALIBRATE:
        found = replace(found, fix=RECALIBRATE[producer])
    return found
