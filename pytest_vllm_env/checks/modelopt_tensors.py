"""``modelopt.tensors-complete``: every quantized Linear holds what vLLM builds for it under
the checkpoint's algorithm (its row in :mod:`pytest_vllm_env.tables.quant_formats`).

The real failures: a module quantized but listed as excluded, or left BF16 but not excluded
(vLLM builds the layer for the wrong dtype and the weight loader fails, or the checkpoint
silently loads different numbers than were calibrated); a scale of the wrong shape (a bare
``assert`` in ``parameter.py``). What vLLM's loader does with each is
:mod:`pytest_vllm_env.facts.modelopt_load`'s; the KV-cache scales are
:mod:`pytest_vllm_env.checks.modelopt_kv`'s; whether each scale is a number,
:mod:`pytest_vllm_env.checks.modelopt_scales`'s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_vllm_env.checks.modelopt_common import (
    EMBEDDING_SUFFIXES,
    ROUTER_SUFFIXES,
    effect_summary,
    few,
    skip_unreadable,
)
from pytest_vllm_env.checks.modelopt_kv import kv_issues
from pytest_vllm_env.checks.modelopt_scale_fix import issue_fix
from pytest_vllm_env.checks.modelopt_shapes import config_dims
from pytest_vllm_env.facts.modelopt_load import (
    LayerFacts,
    LayerIssue,
    ShardMismatch,
    fused_name,
    judge_layers,
)
from pytest_vllm_env.facts.modelopt_load import excluder as load_excluder
from pytest_vllm_env.facts.modelopt_mixed import (
    MIXED,
    MOE_SERVED,
    FusedMismatch,
    is_expert,
    module_algos,
    quantized_layers,
)
from pytest_vllm_env.facts.modelopt_settings import (
    QuantSettings,
    effective_settings,
    excluder,
    exclusion_rules,
)
from pytest_vllm_env.facts.quant_release import Served, differs_between_releases, mixed_served
from pytest_vllm_env.findings import Finding, failed, passed, skipped, warning
from pytest_vllm_env.readers.checkpoint import Checkpoint
from pytest_vllm_env.readers.safetensors_header import TensorInfo
from pytest_vllm_env.readers.vllm_kv_naming import KvScaleNaming
from pytest_vllm_env.readers.vllm_source import ModelOptSource
from pytest_vllm_env.readers.weight_sample import WeightSample
from pytest_vllm_env.tables.quant_formats import (
    FLOAT_DTYPES,
    FP8_E4M3,
    QuantFormat,
    judged_formats,
    modelopt_format,
)


# -- 3. tensors -------------------------------------------------------------------------------
def linear_modules(
    modules: Mapping[str, Mapping[str, TensorInfo]],
) -> dict[str, Mapping[str, TensorInfo]]:
    """The modules that are Linear layers: a 2-D ``weight`` or a weight/input scale (a
    tied lm_head's stray ``input_scale`` counts: vLLM refuses it), embeddings excepted."""
    return {
        prefix: parts
        for prefix, parts in modules.items()
        if (
            "weight_scale" in parts
            or "input_scale" in parts
            or ("weight" in parts and len(parts["weight"].shape) == 2)
        )
        and not prefix.endswith(EMBEDDING_SUFFIXES)
        and not prefix.endswith(ROUTER_SUFFIXES)
    }


def tensors_complete(
    ckpt: Checkpoint,
    scales: Mapping[str, Sequence[float]] | None = None,
    samples: Mapping[str, WeightSample] | None = None,
    source: ModelOptSource | None = None,
    kv_naming: KvScaleNaming | None = None,
    vllm_version: str | None = None,
) -> Finding:
    """Every Linear holds what vLLM builds for it (fused layers, exclusions, scale shapes,
    dtypes), and the KV cache's scales, judged by what vLLM's loader then does: refuses
    or computes wrong results (failed), works at a cost (warning), works (passed).
    ``scales`` are the float scale values (``read_scales``), ``samples`` what sampled
    float weights of quantized modules say (``read_weight_samples``); ``source`` the env's
    vLLM ``modelopt.py`` facts, which say how that vLLM matches exclude entries (without
    it: as vLLM 0.26.0, where the rules were calibrated); ``kv_naming`` how that vLLM renames
    KV-cache scales (``vllm_kv_naming``; without it: as vLLM 0.26.0); ``vllm_version`` the
    env's vLLM (its dist-info), whose release answers for a MIXED_PRECISION checkpoint where
    ``source`` does not say which per-layer algorithms vLLM serves."""
    check = "modelopt.tensors-complete"
    if blocked := skip_unreadable(check, ckpt, config=True, tensors=True):
        return blocked
    eff = effective_settings(ckpt)
    if eff is None or not eff.algo:
        return skipped(check, f"{ckpt.label}: no quant_algo (see modelopt.quant-config)")
    fmt = modelopt_format(eff.algo)
    if eff.algo == MIXED:
        served = mixed_served(source.mixed_linear_algos if source else None, vllm_version)
        return _mixed_complete(
            check, ckpt, eff, scales or {}, samples or {}, source, kv_naming, served
        )
    if fmt is None or not fmt.tensors_known:
        return skipped(
            check,
            f"{ckpt.label}: the per-tensor layout of {eff.algo} is not known to this suite "
            f"(known: {', '.join(judged_formats())})",
        )
    linear = linear_modules(ckpt.modules)
    tied_extra: list[LayerIssue] = []
    if _tied(ckpt) and "lm_head" in linear:
        # vLLM's Llama-style loaders skip "lm_head." when the embedding is tied
        # (AutoWeightsLoader(skip_prefixes=["lm_head."])): whatever is stored there is unused
        linear = {k: v for k, v in linear.items() if k != "lm_head"}
        tied_extra.append(
            LayerIssue(
                "lm_head",
                "note",
                "tied-lm-head-ignored",
                f"lm_head's tensors ({', '.join(sorted(ckpt.modules['lm_head']))}) are ignored: "
                "the embedding is tied (tie_word_embeddings)",
            )
        )
    facts = LayerFacts(linear, scales or {}, samples or {}, config_dims(ckpt, linear))
    rules = exclusion_rules(source)
    issues, quantized = judge_layers(facts, fmt, eff.exclude, **rules)
    issues += tied_extra + _scale_dtype_issues(facts.linear, fmt)
    issues += [] if rules["legacy"] else _tied_lm_head_issues(ckpt, eff, fmt, source)
    kv_found, kv_evidence = kv_issues(ckpt, eff, source, kv_naming)
    issues += kv_found
    stray = _unmatched_excludes(ckpt, eff, source)
    if stray:
        example = next((m for m in sorted(linear) if not m.startswith("lm_head")), "")
        hint = (
            f"the exclude entries {stray} match no module of this checkpoint (its modules are "
            f"named like {example!r}): written for another naming (F3.8: model.visual.* vs "
            "visual.*)?"
        )
        first = next(
            (n for n, i in enumerate(issues) if i.kind == "not-excluded-unquantized"), None
        )
        if first is None:
            issues.append(LayerIssue("", "note", "exclude-unmatched", hint))
        else:
            i = issues[first]
            issues[first] = LayerIssue(i.module, i.effect, i.kind, f"{i.text} ({hint})", i.tensor)
    judged = [i for e in ("refuses", "wrong", "cost") for i in issues if i.effect == e]
    notes = [i for i in issues if i.effect == "note"]
    evidence: dict[str, Any] = dict(excluded=list(eff.exclude), quant_algo=eff.algo, **kv_evidence)
    if (
        bad := _bad_verdict(check, ckpt, eff, issues, _issue_fix(judged, eff), evidence)
    ) is not None:
        return bad
    return passed(
        check,
        f"{ckpt.label}: {quantized} Linear module(s) hold {eff.algo} weights and scales as "
        "vLLM builds them; excluded modules stay unquantized"
        + ("; KV-cache scales present" if eff.kv_cache_algo else "")
        + (f"; note: {few([i.text for i in notes])}" if notes else ""),
        quantized_modules=quantized,
        vllm_effect="works",
        **kv_evidence,
    )


def _mixed_complete(
    check: str,
    ckpt: Checkpoint,
    eff: QuantSettings,
    scales: Mapping[str, Sequence[float]],
    samples: Mapping[str, WeightSample],
    source: ModelOptSource | None,
    kv_naming: KvScaleNaming | None,
    served: Served,
) -> Finding:
    """MIXED_PRECISION: every Linear (and every expert) against the layer vLLM builds for it
    from its own ``quantized_layers`` algorithm (facts/modelopt_mixed.py: the keys as
    ``apply_vllm_mapper`` leaves them, ``_resolve_quant_algo``'s order, one algorithm per MoE
    layer). A served algorithm's layers are judged by that algorithm's row, as a single-format
    checkpoint's are; a layer vLLM builds unquantized (an algorithm
    ``ModelOptMixedPrecisionConfig.get_quant_method`` has no method for, or none) must hold a
    plain float weight: a scale has no parameter to go to (vLLM 0.26.0/0.33.0's loader:
    "There is no module or parameter named ..."), an integer weight is cast as numbers."""
    block = ckpt.quantization_config if eff.source == "config.json" else ckpt.hf_quant_config
    keyed = dict(quantized_layers(block))
    if not keyed:  # ModelOptMixedPrecisionConfig._from_config
        return failed(
            check,
            f"{ckpt.label}: vLLM raises at start: MIXED_PRECISION quant_algo requires a non-empty "
            f"'quantized_layers' mapping in the quantization config (read from {eff.source})",
            f"give {eff.source} the quantized_layers map ModelOpt wrote (re-export)",
            vllm_effect="refuses",
        )
    linear = linear_modules(ckpt.modules)
    if _tied(ckpt) and "lm_head" in linear:  # skipped by the loader (see tensors_complete)
        linear = {k: v for k, v in linear.items() if k != "lm_head"}
    rules = exclusion_rules(source)
    issues: list[LayerIssue] = []
    groups: dict[str, dict[str, Mapping[str, TensorInfo]]] = {}
    plain: dict[str, str | None] = {}
    unjudged: list[str] = []
    said: set[str] = set()  # one word per fused or MoE layer, not per shard or expert
    for module, algo in module_algos(keyed, sorted(linear)).items():
        if isinstance(algo, FusedMismatch):
            if str(algo) not in said:
                said.add(str(algo))
                issues.append(
                    LayerIssue(module, "refuses", "fused-mismatch", f"vLLM raises: {algo}")
                )
            continue
        expert = is_expert(module)
        own = keyed.get(module)
        if expert and own is not None and own != algo and module.rsplit(".", 2)[0] not in said:
            said.add(module.rsplit(".", 2)[0])
            issues.append(LayerIssue(module, "note", "expert-algo", (
                f"{module} is keyed {own!r} but vLLM builds its MoE layer "
                f"{module.rsplit('.', 2)[0]} {algo!r} (the first quantized_layers key under it)"
            )))  # fmt: skip
        if algo not in (MOE_SERVED if expert else served.algos):
            plain[module] = algo
            continue
        fmt = modelopt_format(algo)
        if fmt is not None and fmt.tensors_known:
            groups.setdefault(fmt.name, {})[module] = linear[module]
        else:  # served, but its per-tensor layout is not known to this suite
            unjudged.append(module)
    counts: dict[str, int] = {}
    for algo, modules in groups.items():
        fmt = modelopt_format(algo)
        assert fmt is not None
        found, counts[algo] = judge_layers(
            LayerFacts(modules, scales, samples), fmt, eff.exclude, **rules
        )
        issues += found + _scale_dtype_issues(modules, fmt)
    for module, algo in plain.items():
        parts = linear[module]
        why = (
            f"quantized_layers gives it {algo!r}, which ModelOptMixedPrecisionConfig has no "
            "method for"
            if algo
            else "no quantized_layers key names it"
        )
        stray = sorted(s for s in parts if s.endswith(("_scale", "_scale_2")))
        weight = parts.get("weight")
        if stray:
            issues.append(LayerIssue(module, "refuses", "unquantized-has-scales", (
                f"{module}: {why}, so vLLM builds it unquantized and says 'There is no module "
                f"or parameter named {module}.{stray[0]}'"
            ), f"{module}.{stray[0]}"))  # fmt: skip
        elif weight is not None and weight.dtype not in FLOAT_DTYPES:
            issues.append(LayerIssue(module, "wrong", "unquantized-but-quantized", (
                f"{module}: {why}, so vLLM builds it unquantized and casts its "
                f"{weight.dtype} weight to BF16 as numbers, without a scale"
            ), f"{module}.weight"))  # fmt: skip
    kv_found, kv_evidence = kv_issues(ckpt, eff, source, kv_naming)
    issues += kv_found
    refused = [i for i in issues if i.effect == "refuses"]
    wrong = [i for i in issues if i.effect == "wrong"]
    cost = [i for i in issues if i.effect == "cost"]
    notes = [i.text for i in issues if i.effect == "note"]
    if served.assumed and differs_between_releases(keyed.values()):
        notes.append(served.assumed)  # the pass rests on what was assumed: said
    per_algo = ", ".join(f"{a}: {n}" for a, n in sorted(counts.items()))
    evidence: dict[str, Any] = dict(quant_algo=eff.algo, layer_algos=counts, **kv_evidence)
    fix_notes = [n for n in notes if "keyed" in n][:3]
    fix = ""
    if refused or wrong:
        fix = _issue_fix(refused + wrong + cost, eff)
        if any(i.kind.startswith("unquantized-") for i in refused + wrong):
            fix = (
                "quantize those layers with an algorithm vLLM serves per layer "
                f"({', '.join(served.algos)}), or give them their quantized_layers key; " + fix
            )
        if any(i.kind == "fused-mismatch" for i in refused):
            fix = "give the shards of each fused layer one quant_algo in quantized_layers; " + fix
        fix += f" (note: {'; '.join(fix_notes)})" if fix_notes else ""
    if (bad := _bad_verdict(check, ckpt, eff, issues, fix, evidence)) is not None:
        return bad
    return passed(
        check,
        f"{ckpt.label}: MIXED_PRECISION: {sum(counts.values())} Linear module(s) hold the "
        f"weights and scales of their own quantized_layers algorithm as vLLM builds them "
        f"({per_algo or 'none'}); {len(plain)} unquantized"
        + ("; KV-cache scales present" if eff.kv_cache_algo else "")
        + (f"; {len(unjudged)} of an algorithm whose layout is not known here" if unjudged else "")
        + (f"; note: {few(notes)}" if notes else ""),
        quantized_modules=sum(counts.values()),
        vllm_effect="works",
        **evidence,
    )


FIXES = {
    "shard-exclusion": "name every shard of a fused layer (q_proj, k_proj, v_proj; gate_proj, "
    "up_proj) in exclude_modules/ignore, or none of them",
    "excluded-has-scales": "drop the scale tensors of excluded modules from the safetensors "
    "(or stop excluding them), or re-export with them excluded in the quant config",
    "excluded-but-quantized": "stop excluding them (remove from exclude_modules/ignore), or "
    "re-export with them excluded in the quant config so they are written in BF16",
    "not-excluded-unquantized": "add them to exclude_modules in hf_quant_config.json and ignore "
    "in config.json (vLLM then builds them in BF16)",
    "missing-scale": "re-export: every quantized Linear needs its scales",
    "no-weight": "re-export: a module has scales but no weight",
    "scale-shape": "per-tensor FP8 scales must be scalars ([] or [1]): re-export, or pick the "
    "quant_algo that matches the scale layout (FP8_PER_CHANNEL_PER_TOKEN for [out_features])",
    "weight-dtype": "store the weights as ModelOpt writes them (F8_E4M3 for FP8)",
    "weight-dequantized": "store the quantized FP8 weights (ModelOpt's export_hf_checkpoint "
    "writes F8_E4M3), not the dequantized BF16 ones",
    "weight-dtype-exact": "store the weights as F8_E4M3 (ModelOpt's export does): half the "
    "bytes, same numbers",
    "weight-dtype-rounded": "store the weights as F8_E4M3 from ModelOpt's own export",
    "weight-dtype-unread": "store the weights as F8_E4M3 from ModelOpt's own export",
    "scale-dtype": "store the scales in the dtype ModelOpt writes",
    "kv-scale-unplaced": "name the KV-cache scales as ModelOpt's export does "
    "(<layer>.self_attn.k_proj.k_scale, <layer>.self_attn.v_proj.v_scale) or as vLLM's "
    "attention takes them (<layer>.self_attn.attn.k_scale), or drop them and set "
    "kv_cache_quant_algo to null in both quant configs",
    "kv-scale-dropped": "rename the KV-cache scales to a form the installed vLLM maps to the "
    "attention layer (<layer>.self_attn.k_proj.k_scale, as ModelOpt's export writes them), "
    "or upgrade vLLM to one whose loader maps this naming",
    "kv-scale-missing": "calibrate the KV cache (ModelOpt: quantize with a KV-cache config, "
    "e.g. FP8_KV_CFG merged into FP8_DEFAULT_CFG) and re-export, or set kv_cache_quant_algo "
    "to null in both quant configs to keep a BF16 KV cache",
}


def _bad_verdict(
    check: str,
    ckpt: Checkpoint,
    eff: QuantSettings,
    issues: Sequence[LayerIssue],
    fail_fix: str,
    evidence: dict[str, Any],
) -> Finding | None:
    """failed (``fail_fix``) where an issue refuses or is wrong, warning where one costs."""
    refused = [i for i in issues if i.effect == "refuses"]
    wrong = [i for i in issues if i.effect == "wrong"]
    cost = [i for i in issues if i.effect == "cost"]
    shown = [f"{i.effect}: {i.text}" for i in issues][:50]
    if refused or wrong:
        return failed(
            check,
            f"{ckpt.label}: " + effect_summary([i.text for i in refused], [i.text for i in wrong]),
            fail_fix,
            vllm_effect="refuses" if refused else "wrong",
            tensors=[i.tensor for i in refused + wrong if i.tensor][:50],
            issues=shown,
            **evidence,
        )
    if cost:
        return warning(
            check,
            f"{ckpt.label}: vLLM loads it, at a cost: {few([i.text for i in cost])}",
            _issue_fix(cost, eff),
            vllm_effect="works",
            issues=shown,
            **evidence,
        )
    return None


def _issue_fix(issues: Sequence[LayerIssue], eff: QuantSettings) -> str:
    return issue_fix(issues, eff.algo, eff.source, FIXES)


def _scale_dtype_issues(
    linear: Mapping[str, Mapping[str, TensorInfo]], fmt: QuantFormat
) -> list[LayerIssue]:
    """Scales in another dtype: vLLM's ``copy_`` casts float to float (a cost), anything
    else to numbers that mean something else (wrong)."""
    out = []
    for prefix, parts in linear.items():
        for scale, dtypes in fmt.scale_dtypes.items():
            info = parts.get(scale)
            if info is None or info.dtype in dtypes:
                continue
            floaty = info.dtype in FLOAT_DTYPES | FP8_E4M3
            out.append(
                LayerIssue(
                    prefix,
                    "cost" if floaty else "wrong",
                    "scale-dtype",
                    f"{prefix}.{scale} is {info.dtype}, expected {'/'.join(sorted(dtypes))}"
                    + (" (vLLM casts it on load)" if floaty else ""),
                    f"{prefix}.{scale}",
                )
            )
    return out


def _unmatched_excludes(
    ckpt: Checkpoint, eff: QuantSettings, source: ModelOptSource | None = None
) -> list[str]:
    """Exclude entries that match no module of the checkpoint, as vLLM matches them, even
    allowing for the prefix renames vLLM's multimodal models apply (``model.visual.`` ->
    ``visual.``, ``model.language_model.`` -> ``language_model.model.``)."""
    names: set[str] = set()
    for module in ckpt.modules:
        name = fused_name(module, ckpt.modules)
        names |= {name, f"model.{name}", name.removeprefix("model.")}
        names.add(re.sub(r"model\.language_model\.", "language_model.model.", name, count=1))
    out = []
    for entry in eff.exclude:
        decide = load_excluder([entry], **exclusion_rules(source))
        hit = False
        for name in names:
            try:
                hit = decide(name)
            except ShardMismatch:
                hit = True
            if hit:
                break
        if not hit and entry not in ("lm_head",):  # a tied lm_head has no module of its own
            out.append(entry)
    return out


def _tied(ckpt: Checkpoint) -> bool:
    config = ckpt.config or {}
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    return bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False)))


def _tied_lm_head_issues(
    ckpt: Checkpoint, eff: QuantSettings, fmt: QuantFormat, source: ModelOptSource | None = None
) -> list[LayerIssue]:
    """A tied lm_head (no tensor of its own) that is not excluded: vLLM builds it FP8 and
    ties the BF16 embedding in, its scales never loaded. Measured on the H100 with vLLM
    0.26.0 (a tied ModelOpt 0.47 export): the first logits GEMM raises in
    ``cutlass_scaled_mm`` (the BF16 weight where an FP8 one is due). An UNtied BF16 lm_head
    left out of the exclude list loads instead and computes zeros (-log(vocab) everywhere)."""
    seen = fmt.tied_lm_head  # what a real load did with it: only FP8 has been measured
    if not _tied(ckpt) or "weight" in ckpt.modules.get("lm_head", {}) or seen is None:
        return []
    if excluder(eff.exclude, source)("lm_head"):
        return []
    return [
        LayerIssue(
            "lm_head",
            seen[0],
            "not-excluded-unquantized",
            "lm_head is tied to the BF16 embed_tokens (tie_word_embeddings) but not excluded, "
            f"so vLLM builds an {fmt.name} lm_head around a BF16 weight ({seen[1]})",
            "lm_head.weight",
        )
    ]
