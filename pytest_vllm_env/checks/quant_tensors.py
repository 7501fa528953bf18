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
from pytest_vllm_env.checks.modelopt_scales import scales_sane as modelopt_scales_sane
from pytest_vllm_env.checks.quant_config import relabel
from pytest_vllm_env.checks.quant_tensors_load import (
    QUANT_LEAVES,
    block_scale,
    row_narrowed,
    same_bits,
    split_problems,
    stored_quantized,
    tp_share,
)
from pytest_vllm_env.facts.modelopt_load import FUSED, fused_name, shards
from pytest_vllm_env.facts.quant_plan import QuantPlan, Scheme, config_shape
from pytest_vllm_env.findings import Finding, failed, passed, skipped, warning
from pytest_vllm_env.readers.checkpoint import Checkpoint
from pytest_vllm_env.readers.safetensors_header import TensorInfo
from pytest_vllm_env.tables.quant_formats import FLOAT_DTYPES, FP8_E4M3
from pytest_vllm_env.tables.quant_schemes import MXFP4_EXPERTS

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
    "tp-model": "use a --tensor-parallel-size that divides num_attention_heads (config.json) "
    "and the key/value heads (or that they divide)",
    "tp": "use a --tensor-parallel-size whose per-rank shares hold whole groups / blocks (a "
    "smaller one), or re-quantize with a smaller group_size / weight_block_size",
    "experts": "re-export the MoE experts as gpt-oss writes them (*_blocks U8, *_scales U8, "
    "*_bias per expert)",
}


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
            issues += _module(prefix, ckpt.modules.get(prefix, {}), scheme, built, tp)
            if tp > 1:
                fused = fused_name(prefix, ckpt.modules) != prefix
                issues += tp_share(prefix, ckpt.modules.get(prefix, {}), scheme, tp, built, fused)
        issues += _blocks(plan, ckpt.modules)
        issues += stored_quantized(plan, ckpt.modules)
    if tp > 1:  # the model's own split is refused first (at config or build time)
        issues = split_problems(ckpt.config, tp) + issues
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
    tp: int = 1,
) -> list:
    """The parameters of one quantized Linear against its stored tensors (on ``tp`` ranks).
    ``built``: the ``(out, in)`` vLLM sizes the layer with from config.json
    (``quant_plan.config_shape``); without it, the stored weight's shape and the declared
    packing say it."""
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
            and not same_bits(info.dtype, p.dtypes)
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
            # channel-wise int scales of a row-parallel layer split over ranks are repeated on
            # every rank, a ChannelQuantScaleParameter without an input dimension
            # (compressed_tensors_wNa16.py: marlin_repeat_scales_on_all_ranks): no narrowing
            repeated = tp > 1 and scheme.settings.get("group") == -1 and p.role != "weight"
            if not repeated and row_narrowed(prefix, p, tuple(info.shape), out_f, in_f, settings):
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
        scale = block_scale(scheme)
        if scheme.row.producer != "fp8":
            # no weight_block_size on the quantization config (CompressedTensorsConfig): no
            # allowance, validate_fp8_block_shape checks the fused shards but the last
            first = next(n for n in sizes[:-1] if n % bn)
            bad = names[sizes.index(first)]
            out.append(
                (
                    "refuses",
                    "block",
                    f"{head}: vLLM refuses building it ('Weight output_partition_size = "
                    f"{first} is not divisible by weight quantization block_n = {bn}', "
                    "fp8_utils.py:validate_fp8_block_shape)",
                    f"{bad}.{scale}",
                )
            )
            continue
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
