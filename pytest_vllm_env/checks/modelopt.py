"""Judge a ModelOpt checkpoint the way the env's vLLM will, before anything loads.

Each function takes facts (a :class:`~pytest_vllm_env.readers.checkpoint.Checkpoint`, what the
env's vLLM source says, the target archs) and returns a :class:`Finding`. The real
failures these exist for:

- a checkpoint whose ``hf_quant_config.json`` and config.json block disagree: vLLM reads
  config.json's block when it exists, so the file the user edited is not the one used;
- a ``quant_algo`` the installed vLLM does not know (``ModelOpt currently only supports:
  [...]``), found after minutes of download and engine start-up;
- a module quantized but listed as excluded, or left BF16 but not excluded: vLLM builds
  the layer for the wrong dtype and the weight loader fails, or the checkpoint silently
  loads different numbers than were calibrated;
- a NaN or zero scale from a broken calibration run: loads fine, generates garbage;
- FP8 on a GPU under compute capability 8.9: refused at engine start.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from pytest_vllm_env.checks.gdn_prefill import GdnEnv, GdnRule, gdn_prefill_backend
from pytest_vllm_env.facts.modelopt_load import (
    LayerFacts,
    LayerIssue,
    ShardMismatch,
    WeightSample,
    fused_name,
    judge_layers,
)
from pytest_vllm_env.facts.modelopt_load import excluder as load_excluder
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped, warning
from pytest_vllm_env.readers.checkpoint import Checkpoint
from pytest_vllm_env.readers.safetensors_header import TensorInfo
from pytest_vllm_env.readers.vllm_kv_naming import VLLM_0_26, KvScaleNaming
from pytest_vllm_env.readers.vllm_source import ModelOptSource, Registry
from pytest_vllm_env.tables.archs import Arch

UNQUANTIZED_DTYPES = frozenset({"BF16", "F16", "F32"})
FLOAT_SCALE_DTYPES = frozenset({"F32", "BF16", "F16"})
# Embeddings are never Linear layers in vLLM (VocabParallelEmbedding), whatever the
# exclude list says; lm_head is (ParallelLMHead) and is quantized unless excluded.
EMBEDDING_SUFFIXES = ("embed_tokens", "embed_positions", "wte", "wpe", "word_embeddings")
# MoE routers: most vLLM models build them without a quant config, and exports leave them
# BF16 whether or not the exclude list names them: not judged either way.
ROUTER_SUFFIXES = (".gate", ".router", ".shared_expert_gate")
# vLLM 0.26.0 keeps these unquantized by name, for exports older than ModelOpt 0.39.
VISION_MARKERS = ("visual", "vision_tower", "vision_model")
_VISION = re.compile("|".join(VISION_MARKERS))
LIST_LIMIT = 8
REEXPORT = (
    "re-export with NVIDIA ModelOpt: mtq.quantize(model, mtq.FP8_DEFAULT_CFG, forward_loop) "
    "then export_hf_checkpoint(model, export_dir=...)"
)


@dataclass(frozen=True)
class LinearRule:
    """What a quantized Linear holds under one algorithm (vLLM's create_weights names)."""

    weight_dtypes: frozenset[str]
    required: tuple[str, ...]
    scale_dtypes: Mapping[str, frozenset[str]] = field(default_factory=dict)


_FP8 = frozenset({"F8_E4M3"})
RULES: dict[str, LinearRule] = {
    "FP8": LinearRule(
        _FP8,
        ("weight_scale", "input_scale"),
        {"weight_scale": FLOAT_SCALE_DTYPES, "input_scale": FLOAT_SCALE_DTYPES},
    ),
    "FP8_PER_CHANNEL_PER_TOKEN": LinearRule(_FP8, ("weight_scale",)),
    "FP8_PB_WO": LinearRule(_FP8, ("weight_scale",)),
    "MXFP8": LinearRule(_FP8, ("weight_scale",)),
    # NVFP4 packs two 4-bit values per byte into a U8 weight; block scales are FP8.
    "NVFP4": LinearRule(
        frozenset({"U8"}),
        ("weight_scale", "weight_scale_2", "input_scale"),
        {"weight_scale": _FP8, "weight_scale_2": FLOAT_SCALE_DTYPES},
    ),
    "W4A16_NVFP4": LinearRule(
        frozenset({"U8"}), ("weight_scale", "weight_scale_2"), {"weight_scale": _FP8}
    ),
}


# -- the quantization settings vLLM will use ----------------------------------------------
@dataclass(frozen=True)
class QuantSettings:
    """The effective ModelOpt settings, taken from where vLLM takes them."""

    algo: str | None
    kv_cache_algo: str | None
    exclude: tuple[str, ...]
    source: str  # "config.json" or "hf_quant_config.json"
    quant_method: str | None = None


def _from_config_block(block: Mapping[str, Any]) -> QuantSettings:
    if isinstance(block.get("quantization"), dict):  # the hf_quant_config layout, embedded
        inner = settings_from_hf(block)
        return QuantSettings(
            inner.algo,
            inner.kv_cache_algo,
            inner.exclude,
            "config.json",
            _str(block.get("quant_method")),
        )
    kv = block.get("kv_cache_quant_algo")
    scheme = block.get("kv_cache_scheme")
    if (
        kv is None
        and isinstance(scheme, dict)
        and scheme.get("type") == "float"
        and scheme.get("num_bits") == 8
    ):
        kv = "FP8"
    exclude = block.get("ignore", block.get("exclude_modules", []))
    return QuantSettings(
        _upper(block.get("quant_algo")),
        _upper(kv),
        tuple(str(e) for e in exclude) if isinstance(exclude, list) else (),
        "config.json",
        _str(block.get("quant_method")),
    )


def settings_from_hf(hf: Mapping[str, Any]) -> QuantSettings:
    """The settings of an ``hf_quant_config.json`` (``{"quantization": {...}}``)."""
    inner = hf.get("quantization")
    inner = inner if isinstance(inner, dict) else {}
    exclude = inner.get("exclude_modules", [])
    return QuantSettings(
        _upper(inner.get("quant_algo")),
        _upper(inner.get("kv_cache_quant_algo")),
        tuple(str(e) for e in exclude) if isinstance(exclude, list) else (),
        "hf_quant_config.json",
        "modelopt",
    )


def effective_settings(ckpt: Checkpoint) -> QuantSettings | None:
    """vLLM's ``get_quant_config`` uses config.json's ``quantization_config`` when present
    and only falls back to ``hf_quant_config.json`` (FACTS.md: removing the block still
    loads); so do we."""
    block = ckpt.quantization_config
    if block is not None:
        return _from_config_block(block)
    if ckpt.hf_quant_config is not None:
        return settings_from_hf(ckpt.hf_quant_config)
    return None


def _upper(value: Any) -> str | None:
    return str(value).upper() if value not in (None, "") else None


def _str(value: Any) -> str | None:
    return str(value) if value is not None else None


def exclusion_rules(source: ModelOptSource | None) -> dict[str, bool]:
    """How the env's vLLM matches exclude entries (``legacy``, ``split`` for
    :func:`pytest_vllm_env.facts.modelopt_load.excluder`), as its ``modelopt.py`` says; without
    it, as vLLM 0.26.0, where the rules were calibrated."""
    known = source is not None and source.exclusion is not None
    return {
        "legacy": known and source.exclusion == "substring",  # type: ignore[union-attr]
        "split": not known or source.splits_wildcards,  # type: ignore[union-attr]
    }


def excluder(exclude: Sequence[str], source: ModelOptSource | None = None) -> Callable[[str], bool]:
    """vLLM's exclusion rule for a checkpoint module name (fused layers decided on their
    fused name, :mod:`pytest_vllm_env.facts.modelopt_load`; the rules of the env's vLLM when its
    ``source`` is given); a shard mismatch counts as excluded here
    (``modelopt.tensors-complete`` reports it)."""
    decide = load_excluder(exclude, **exclusion_rules(source))

    def excluded(prefix: str, modules: Mapping[str, object] | None = None) -> bool:
        try:
            return decide(fused_name(prefix, modules) if modules is not None else prefix)
        except ShardMismatch:
            return True

    return excluded


def _skip_unreadable(
    check: str, ckpt: Checkpoint, *, config: bool = False, tensors: bool = False
) -> Finding | None:
    if config and not ckpt.quant_files_readable:
        return skipped(
            check, f"{ckpt.label}: its JSON files cannot be read (see modelopt.files-readable)"
        )
    if tensors and not ckpt.tensors_readable:
        return skipped(
            check, f"{ckpt.label}: its safetensors cannot be read (see modelopt.files-readable)"
        )
    return None


# -- 0. the files ---------------------------------------------------------------------------
def files_readable(ckpt: Checkpoint) -> Finding:
    """config.json, hf_quant_config.json, the index and every header parse and validate."""
    check = "modelopt.files-readable"
    if ckpt.problems:
        names = sorted({str(p.path) for p in ckpt.problems})
        return error(
            check,
            f"{ckpt.label}: {len(ckpt.problems)} file problem(s): {ckpt.problems[0]}",
            "replace the named file(s) with complete copies (re-download: "
            "`hf download REPO`, or re-run the ModelOpt export): " + ", ".join(names),
            problems=[str(p) for p in ckpt.problems],
        )
    return passed(
        check,
        f"{ckpt.label}: {len(ckpt.tensors)} tensors in {len(ckpt.shards)} safetensors file(s), "
        "headers valid",
        path=str(ckpt.path),
        shards=[s.name for s in ckpt.shards],
    )


# -- 1. the quantization config -------------------------------------------------------------
def quant_config(ckpt: Checkpoint) -> Finding:
    """A ModelOpt quantization config exists, and config.json and hf_quant_config.json agree."""
    check = "modelopt.quant-config"
    if blocked := _skip_unreadable(check, ckpt, config=True):
        return blocked
    block, hf = ckpt.quantization_config, ckpt.hf_quant_config
    if block is None and hf is None:
        return failed(
            check,
            f"{ckpt.label}: no quantization config: config.json has no quantization_config and "
            "there is no hf_quant_config.json, so vLLM loads it as an unquantized model",
            f"{REEXPORT}; it writes hf_quant_config.json and config.json's quantization_config",
            path=str(ckpt.path),
        )
    problems: list[str] = []
    settings: list[QuantSettings] = []
    if block is not None:
        from_block = _from_config_block(block)
        settings.append(from_block)
        method = (from_block.quant_method or "").lower()
        if not method.startswith("modelopt"):
            problems.append(
                f"config.json quantization_config.quant_method is {from_block.quant_method!r}, "
                "not 'modelopt': vLLM will not read it as a ModelOpt checkpoint"
            )
        if not from_block.algo:
            problems.append("config.json quantization_config has no quant_algo")
        ignore = block.get("ignore", [])
        if not isinstance(ignore, list):
            # vLLM: "exclude_modules must be a list"
            problems.append(f"config.json quantization_config.ignore is {ignore!r}, not a list")
    if hf is not None:
        from_hf = settings_from_hf(hf)
        settings.append(from_hf)
        if not isinstance(hf.get("quantization"), dict):
            problems.append("hf_quant_config.json has no 'quantization' object")
        elif not from_hf.algo:
            problems.append("hf_quant_config.json quantization.quant_algo is missing")
        elif not isinstance(hf["quantization"].get("exclude_modules", []), list):
            problems.append("hf_quant_config.json quantization.exclude_modules is not a list")
    if len(settings) == 2 and not problems:
        a, b = settings
        if a.algo != b.algo:
            problems.append(
                f"quant_algo: config.json says {a.algo!r}, hf_quant_config.json says {b.algo!r}"
            )
        if a.kv_cache_algo != b.kv_cache_algo:
            problems.append(
                f"kv_cache_quant_algo: config.json says {a.kv_cache_algo!r}, "
                f"hf_quant_config.json says {b.kv_cache_algo!r}"
            )
        if set(a.exclude) != set(b.exclude):
            problems.append(
                f"excluded modules: config.json ignore={sorted(a.exclude)}, "
                f"hf_quant_config.json exclude_modules={sorted(b.exclude)}"
            )
    if problems:
        return failed(
            check,
            f"{ckpt.label}: "
            + "; ".join(problems)
            + (" (vLLM uses config.json's block when both exist)" if len(settings) == 2 else ""),
            "make config.json's quantization_config (quant_algo, kv_cache_quant_algo, ignore) and "
            "hf_quant_config.json's quantization (quant_algo, kv_cache_quant_algo, "
            f"exclude_modules) say the same thing, or {REEXPORT}",
            path=str(ckpt.path),
        )
    eff = effective_settings(ckpt)
    assert eff is not None
    return passed(
        check,
        f"{ckpt.label}: ModelOpt {eff.algo}, KV cache {eff.kv_cache_algo or 'not quantized'}, "
        f"excluded {list(eff.exclude)} (vLLM reads {eff.source})",
        sources=[s.source for s in settings],
    )


# -- 2. does the env's vLLM accept the algorithm ---------------------------------------------
def quant_algo_supported(
    ckpt: Checkpoint, source: ModelOptSource, vllm_version: str | None
) -> Finding:
    check = "modelopt.quant-algo-supported"
    if blocked := _skip_unreadable(check, ckpt, config=True):
        return blocked
    eff = effective_settings(ckpt)
    if eff is None or not eff.algo:
        return skipped(check, f"{ckpt.label}: no quant_algo to judge (see modelopt.quant-config)")
    if source.quant_algos is None:
        return skipped(
            check,
            "; ".join(source.missing)
            + (": the accepted algorithms cannot be read statically" if source.path else ""),
        )
    if eff.algo not in source.quant_algos:
        said = (
            source.unsupported_message
            or f"quant_algo {eff.algo} is not in {list(source.quant_algos)}"
        )
        return failed(
            check,
            f"{ckpt.label}: vLLM {vllm_version} refuses quant_algo {eff.algo!r} "
            f"(from {eff.source}); "
            f"it would say: {said}",
            f"re-export with one of {list(source.quant_algos)} (mtq.FP8_DEFAULT_CFG gives 'FP8'), "
            f"or install a vLLM whose {source.path} lists {eff.algo!r}",
            accepted=list(source.quant_algos),
            vllm_source=source.path,
        )
    cls = source.config_class_for(eff.algo)
    return passed(
        check,
        f"{ckpt.label}: vLLM {vllm_version} accepts quant_algo {eff.algo!r}"
        + (f" ({cls.name}, quantization={cls.method!r})" if cls else ""),
        accepted=list(source.quant_algos),
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
) -> Finding:
    """Every Linear holds what vLLM builds for it (fused layers, exclusions, scale shapes,
    dtypes), and the KV cache's scales, judged by what vLLM's loader then does: refuses
    or computes wrong results (failed), works at a cost (warning), works (passed).
    ``scales`` are the float scale values (``read_scales``), ``samples`` what sampled
    float weights of quantized modules say (``read_weight_samples``); ``source`` the env's
    vLLM ``modelopt.py`` facts, which say how that vLLM matches exclude entries (without
    it: as vLLM 0.26.0, where the rules were calibrated); ``kv_naming`` how that vLLM renames
    KV-cache scales (``vllm_kv_naming``; without it: as vLLM 0.26.0)."""
    check = "modelopt.tensors-complete"
    if blocked := _skip_unreadable(check, ckpt, config=True, tensors=True):
        return blocked
    eff = effective_settings(ckpt)
    if eff is None or not eff.algo:
        return skipped(check, f"{ckpt.label}: no quant_algo (see modelopt.quant-config)")
    rule = RULES.get(eff.algo)
    if rule is None:
        return skipped(
            check,
            f"{ckpt.label}: the per-tensor layout of {eff.algo} is not known to this suite "
            f"(known: {', '.join(RULES)})",
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
    facts = LayerFacts(linear, scales or {}, samples or {})
    rules = exclusion_rules(source)
    issues, quantized = judge_layers(
        facts,
        eff.algo,
        eff.exclude,
        rule.weight_dtypes,
        rule.required,
        UNQUANTIZED_DTYPES,
        **rules,
    )
    issues += tied_extra + _scale_dtype_issues(facts.linear, rule)
    issues += [] if rules["legacy"] else _tied_lm_head_issues(ckpt, eff, source)
    kv_found, kv_evidence = _kv_issues(ckpt, eff, source, kv_naming)
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
    by_effect: dict[str, list[LayerIssue]] = {}
    for issue in issues:
        by_effect.setdefault(issue.effect, []).append(issue)
    refused, wrong = by_effect.get("refuses", []), by_effect.get("wrong", [])
    cost, notes = by_effect.get("cost", []), by_effect.get("note", [])
    evidence: dict[str, Any] = dict(excluded=list(eff.exclude), quant_algo=eff.algo, **kv_evidence)
    if refused or wrong:
        lines = []
        if refused:
            lines.append(f"vLLM refuses to load it: {_few([i.text for i in refused])}")
        if wrong:
            lines.append(
                f"vLLM loads it but computes wrong results: {_few([i.text for i in wrong])}"
            )
        return failed(
            check,
            f"{ckpt.label}: " + "; ".join(lines),
            _issue_fix(refused + wrong + cost, eff),
            vllm_effect="refuses" if refused else "wrong",
            tensors=[i.tensor for i in refused + wrong if i.tensor][:50],
            issues=[f"{i.effect}: {i.text}" for i in issues][:50],
            **evidence,
        )
    if cost:
        return warning(
            check,
            f"{ckpt.label}: vLLM loads it, at a cost: {_few([i.text for i in cost])}",
            _issue_fix(cost, eff),
            vllm_effect="works",
            issues=[f"{i.effect}: {i.text}" for i in issues][:50],
            **evidence,
        )
    return passed(
        check,
        f"{ckpt.label}: {quantized} Linear module(s) hold {eff.algo} weights and scales as "
        "vLLM builds them; excluded modules stay unquantized"
        + ("; KV-cache scales present" if eff.kv_cache_algo else "")
        + (f"; note: {_few([i.text for i in notes])}" if notes else ""),
        quantized_modules=quantized,
        vllm_effect="works",
        **kv_evidence,
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


def _issue_fix(issues: Sequence[LayerIssue], eff: QuantSettings) -> str:
    kinds = list(dict.fromkeys(i.kind for i in issues))
    texts = [FIXES.get(k, REEXPORT) for k in kinds]
    if any(k in ("missing-scale", "scale-shape", "no-weight") for k in kinds):
        texts.append(REEXPORT)
    return "; ".join(dict.fromkeys(texts)) + f" (the exclude list is read from {eff.source})"


def _scale_dtype_issues(
    linear: Mapping[str, Mapping[str, TensorInfo]], rule: LinearRule
) -> list[LayerIssue]:
    """Scales in another dtype: vLLM's ``copy_`` casts float to float (a cost), anything
    else to numbers that mean something else (wrong)."""
    out = []
    for prefix, parts in linear.items():
        for scale, dtypes in rule.scale_dtypes.items():
            info = parts.get(scale)
            if info is None or info.dtype in dtypes:
                continue
            floaty = info.dtype in FLOAT_SCALE_DTYPES | {"F8_E4M3"}
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
        names.add(name.replace("model.language_model.", "language_model.model.", 1))
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
    ckpt: Checkpoint, eff: QuantSettings, source: ModelOptSource | None = None
) -> list[LayerIssue]:
    """A tied lm_head (no tensor of its own) that is not excluded: vLLM builds it FP8 and
    ties the BF16 embedding in, its scales never loaded. Measured on the H100 with vLLM
    0.26.0 (a tied ModelOpt 0.47 export): the first logits GEMM raises in
    ``cutlass_scaled_mm`` (the BF16 weight where an FP8 one is due). An UNtied BF16 lm_head
    left out of the exclude list loads instead and computes zeros (-log(vocab) everywhere)."""
    if not _tied(ckpt) or "weight" in ckpt.modules.get("lm_head", {}) or eff.algo != "FP8":
        return []
    if excluder(eff.exclude, source)("lm_head"):
        return []
    return [
        LayerIssue(
            "lm_head",
            "refuses",
            "not-excluded-unquantized",
            "lm_head is tied to the BF16 embed_tokens (tie_word_embeddings) but not excluded, "
            "so vLLM builds an FP8 lm_head around a BF16 weight (on an H100 vLLM 0.26.0 raised "
            "in cutlass_scaled_mm at the first generation)",
            "lm_head.weight",
        )
    ]


# What an attention layer takes from a checkpoint, and the tensors of a Linear (never KV scales)
KV_LEAVES = ("k_scale", "v_scale", "kv_scale", "q_scale", "prob_scale")
LINEAR_LEAVES = frozenset(
    ("weight", "bias", "weight_scale", "input_scale", "weight_scale_2", "pre_quant_scale")
)
ATTENTION_SHARDS = ("k_proj", "v_proj", "qkv_proj")


def _kv_issues(
    ckpt: Checkpoint,
    eff: QuantSettings,
    source: ModelOptSource | None = None,
    naming: KvScaleNaming | None = None,
) -> tuple[list[LayerIssue], dict[str, Any]]:
    """Does every attention layer get its KV-cache scales? A scale reaches the layer only
    under the name the env's vLLM renames it to (``naming``; vLLM 0.26.0's without it),
    ``<block>.attn.k_scale``. On the H100, vLLM 0.26.0 refused names it cannot place
    ("There is no module or parameter named ..."; ``k_proj.output_scale``: an
    AttributeError), dropped silently those ending in ``.k_scale``/``.v_scale`` that land
    elsewhere, and ran a layer without scales at 1.0 ("Using KV cache scaling factor 1.0":
    it loads and matched BF16 on a tiny model, an accuracy risk on real ones). F3.9.
    Also returns the evidence ``gpu.prediction-agrees`` holds against the scales the real
    layers run with: ``kv_blocks`` (attention blocks), ``kv_uncalibrated`` (those predicted
    to run at scale 1.0) and ``kv_unjudged`` (excluded ones: no prediction)."""
    if not eff.kv_cache_algo:
        return [], {}
    naming = naming if naming is not None and naming.mode else VLLM_0_26
    excluded = excluder(eff.exclude, source)
    blocks = sorted(
        {p.rpartition(".")[0] for p in ckpt.modules if p.rpartition(".")[2] in ATTENTION_SHARDS}
    )
    blocks = [b for b in blocks if b and not _VISION.search(b)]  # towers: vision-tower's
    if not blocks:
        return [], {}
    targets = {f"{b}.attn.{leaf}": b for b in blocks for leaf in KV_LEAVES}
    got: dict[str, set[str]] = {b: set() for b in blocks}
    issues: list[LayerIssue] = []
    refused, dropped = [], []
    for prefix, leaves in ckpt.modules.items():
        if _VISION.search(prefix):
            continue
        in_block = any(prefix == b or prefix.startswith(b + ".") for b in blocks)
        for leaf in leaves:
            if "scale" not in leaf or not (
                leaf in KV_LEAVES or (in_block and leaf not in LINEAR_LEAVES)
            ):
                continue
            name = f"{prefix}.{leaf}"
            renamed = naming.rename(name)
            block = targets.get(renamed)
            if block is not None:
                kind = renamed.rpartition(".")[2]
                got[block] |= {"k_scale", "v_scale"} if leaf == "kv_scale" else {kind}
            elif naming.mode == "per-model" or renamed.endswith(naming.ignored_suffixes):
                dropped.append((name, renamed))
            else:
                refused.append((name, renamed))
    for name, renamed in refused[:LIST_LIMIT]:
        issues.append(
            LayerIssue(
                name.rpartition(".")[0],
                "refuses",
                "kv-scale-unplaced",
                f"{name} is a KV-cache scale vLLM cannot place: its rename "
                f"({naming.path}) gives {renamed!r}, which no layer has (vLLM 0.26.0 on the "
                'H100: "There is no module or parameter named ...")',
                name,
            )
        )
    if dropped:
        how = (
            "dropped without a word"
            if naming.mode == "central"
            else 'dropped with vLLM\'s log line "kv_scale is not loaded"'
        )
        shown = _few([f"{n} -> {r}" for n, r in dropped])
        issues.append(
            LayerIssue(
                dropped[0][0].rpartition(".")[0],
                "cost",
                "kv-scale-dropped",
                f"{len(dropped)} KV-cache scale(s) land on no attention layer after vLLM's "
                f"rename ({naming.path}) and are {how}: {shown}",
                dropped[0][0],
            )
        )
    missing, uncalibrated, unjudged = [], [], []
    for block in blocks:
        if excluded(f"{block}.k_proj", ckpt.modules) or excluded(f"{block}.qkv_proj", ckpt.modules):
            unjudged.append(block)
            continue
        lacks = [s for s in ("k_scale", "v_scale") if s not in got[block]]
        if lacks:
            missing.append(f"{block} (no {', '.join(lacks)})")
            uncalibrated.append(block)
    if missing:
        issues.append(
            LayerIssue(
                missing[0],
                "cost",
                "kv-scale-missing",
                f"kv_cache_quant_algo is {eff.kv_cache_algo} but {len(missing)} attention "
                f"block(s) get no k_scale/v_scale, so vLLM runs their FP8 KV cache at scale "
                f"1.0 (uncalibrated): {_few(missing)}",
            )
        )
    kv = dict(kv_blocks=len(blocks), kv_uncalibrated=uncalibrated[:200], kv_unjudged=unjudged[:200])
    return issues, kv


def _by_module(pairs: list[tuple[str, str]]) -> list[str]:
    """The texts in module order (stable: one module's several texts keep their order)."""
    return [text for _, text in sorted(pairs, key=itemgetter(0))]


def _few(items: Sequence[str]) -> str:
    shown = ", ".join(items[:LIST_LIMIT])
    return shown + (f", ... ({len(items)} in all)" if len(items) > LIST_LIMIT else "")


# -- 3b. shapes against config.json ----------------------------------------------------------
@dataclass(frozen=True)
class Dims:
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int | None
    vocab: int | None
    q_gate: bool = False  # q_proj also holds the attention output gate: twice the rows


# Qwen3-Next and Qwen3.5 gate the attention output from q_proj's extra half
# (vLLM's Qwen3NextAttention: getattr(config, "attn_output_gate", True)); seen on a real
# ModelOpt export of a tiny Qwen3.5 that vLLM 0.26.0 loaded on the H100
GATED_ATTENTION_TYPES = ("qwen3_next", "qwen3_5")


def text_dims(config: Mapping[str, Any]) -> Dims | None:
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
    return Dims(hidden, heads, kv_heads, head_dim, inter, vocab, bool(gate))


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
    if blocked := _skip_unreadable(check, ckpt, config=True, tensors=True):
        return blocked
    dims = text_dims(ckpt.config or {})
    if dims is None:
        return skipped(check, f"{ckpt.label}: config.json lacks hidden_size/num_attention_heads")
    eff = effective_settings(ckpt)
    found: list[tuple[str, str]] = []
    checked = 0
    table = expected_shapes(dims)
    vision = set(filter(_VISION.search, ckpt.modules))  # one C-level pass, not a call each
    packed = eff is not None and bool(eff.algo) and "FP4" in (eff.algo or "")
    for prefix, parts in ckpt.modules.items():
        want = table.get(prefix.rpartition(".")[2])
        info = parts.get("weight")
        if want is None or info is None or len(info.shape) != 2 or prefix in vision:
            continue
        out, inp = want
        # NVFP4 packs two values per byte: the stored in-dimension is half.
        if info.dtype == "U8" and packed and inp:
            inp //= 2
        checked += 1
        if (out is not None and info.shape[0] != out) or (inp is not None and info.shape[1] != inp):
            found.append(
                (prefix, f"{prefix}.weight {list(info.shape)} (config.json implies [{out}, {inp}])")
            )
    mismatches = _by_module(found)
    if mismatches:
        return failed(
            check,
            f"{ckpt.label}: {len(mismatches)} weight(s) disagree with config.json: "
            f"{_few(mismatches)}",
            "use the config.json that came with these weights (hidden_size, num_attention_heads, "
            "num_key_value_heads, head_dim, intermediate_size), or re-export the checkpoint",
            dims=vars(dims),
        )
    if not checked:
        return skipped(check, f"{ckpt.label}: no Llama/Qwen-style projection names to compare")
    return passed(
        check, f"{ckpt.label}: {checked} weight shapes agree with config.json", dims=vars(dims)
    )


# -- 4. scales ---------------------------------------------------------------------------------
def scales_sane(
    ckpt: Checkpoint, values: Mapping[str, Sequence[float]], unread: Mapping[str, str]
) -> Finding:
    """Every scale finite and > 0: a NaN, inf, zero or negative scale comes from a broken
    calibration run and turns every output of that layer into garbage."""
    check = "modelopt.scales-sane"
    if blocked := _skip_unreadable(check, ckpt, tensors=True):
        return blocked
    if unread:
        first = next(iter(unread.items()))
        return error(
            check,
            f"{ckpt.label}: {len(unread)} scale tensor(s) could not be read: "
            f"{first[0]}: {first[1]}",
            "replace the named safetensors file with a complete copy (re-download or re-export)",
            unread=dict(unread),
        )
    if not values:
        return skipped(check, f"{ckpt.label}: no float scale tensors (*_scale) in the checkpoint")
    bad: list[str] = []
    # One pass over every value first: ``not v > 0`` catches NaN, zero and negatives.
    suspects = [n for n, vals in values.items() for v in vals if not 0 < v < math.inf]
    for name in dict.fromkeys(suspects):
        vals = values[name]
        wrong = [v for v in vals if not (math.isfinite(v) and v > 0)]
        if wrong:
            bad.append(
                f"{name}={_fmt(wrong[0])}"
                + (f" ({len(wrong)} of {len(vals)})" if len(vals) > 1 else "")
            )
    if bad:
        return failed(
            check,
            f"{ckpt.label}: {len(bad)} scale tensor(s) not finite and > 0: {_few(bad)}",
            "re-run ModelOpt calibration with real data in forward_loop (a NaN/zero amax "
            "means the quantizer saw no or broken activations), then re-export",
            bad=bad[:50],
        )
    return passed(check, f"{ckpt.label}: {len(values)} scale tensor(s), all finite and > 0")


def _fmt(value: float) -> str:
    return repr(value) if math.isfinite(value) else str(value)


# -- 5. architecture -----------------------------------------------------------------------------
def architecture_registered(
    ckpt: Checkpoint, registry: Registry, vllm_version: str | None
) -> Finding:
    check = "modelopt.architecture-registered"
    if blocked := _skip_unreadable(check, ckpt, config=True):
        return blocked
    archs = (ckpt.config or {}).get("architectures")
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        return failed(
            check,
            f"{ckpt.label}: config.json has no architectures list, "
            "so vLLM cannot pick a model class",
            'add "architectures": ["<ModelClass>"] to config.json (the class the original '
            "model's config.json names)",
        )
    if registry.missing:
        return skipped(
            check,
            "; ".join(registry.missing)
            + (": the architectures cannot be read statically" if registry.path else ""),
        )
    arch = archs[0]
    if arch in registry.architectures:
        return passed(check, f"{ckpt.label}: {arch} is registered in vLLM {vllm_version}")
    if arch in registry.previously_supported:
        last = registry.previously_supported[arch]
        return failed(
            check,
            f"{ckpt.label}: vLLM {vllm_version} no longer supports {arch} (last in {last})",
            f"pin vllm=={last} in pixi.toml, or use a model whose architecture vLLM still supports",
        )
    return failed(
        check,
        f"{ckpt.label}: {arch} is not registered in vLLM {vllm_version}; vLLM would fall back to "
        "its Transformers backend at best, where ModelOpt quantization is not assured",
        "use a vLLM version that registers it (see its docs' supported models list), or a "
        "checkpoint of a supported architecture",
        registered=len(registry.architectures),
    )


# -- 6. hardware ---------------------------------------------------------------------------------
def min_capability(
    ckpt: Checkpoint,
    source: ModelOptSource,
    vllm_version: str | None,
    archs: Iterable[Arch],
    archs_source: str,
) -> Finding:
    """The algorithm's minimum compute capability in this vLLM vs the target GPUs."""
    check = "modelopt.min-capability"
    if blocked := _skip_unreadable(check, ckpt, config=True):
        return blocked
    eff = effective_settings(ckpt)
    if eff is None or not eff.algo:
        return skipped(check, f"{ckpt.label}: no quant_algo (see modelopt.quant-config)")
    if source.missing and not source.classes:
        return skipped(check, "; ".join(source.missing))
    cls = source.config_class_for(eff.algo)
    if cls is None or cls.min_capability is None:
        return skipped(
            check,
            f"vLLM {vllm_version}'s {source.path}: no get_min_capability() found for {eff.algo}",
        )
    targets = list(archs)
    if not targets:
        return skipped(
            check,
            f"no target GPU arch known (from {archs_source}): pass --cuda-arch (e.g. 8.9) to judge "
            f"{eff.algo}'s minimum {_cc(cls.min_capability)}",
        )
    need = cls.min_capability
    short = [a for a in targets if a.number < need]
    if short:
        fits = sorted(
            {
                a
                for c in source.classes
                if c.min_capability is not None and c.min_capability <= min(t.number for t in short)
                for a in (source.quant_algos or ())
                if source.config_class_for(a) is c
            }
        )
        return failed(
            check,
            f"{ckpt.label}: {eff.algo} needs compute capability >= {_cc(need)} in vLLM "
            f"{vllm_version} ({cls.name}), but the target {', '.join(a.cc for a in short)} "
            "is lower; vLLM would say: "
            f"The quantization method {cls.method} is not supported for the current GPU. "
            f"Minimum capability: {need}. Current capability: {short[0].number}.",
            f"run on a GPU of compute capability >= {_cc(need)}, or re-export with an algorithm "
            f"this vLLM runs there: {fits or 'none'}",
            min_capability=need,
            targets=[a.cc for a in targets],
        )
    return passed(
        check,
        f"{ckpt.label}: {eff.algo} needs >= {_cc(need)} in vLLM {vllm_version}; targets "
        f"{', '.join(a.cc for a in targets)} (from {archs_source}) meet it",
    )


def _cc(number: int) -> str:
    return f"{number // 10}.{number % 10}"


# -- 7. multimodal ---------------------------------------------------------------------------------
def vision_tower(
    ckpt: Checkpoint,
    registry: Registry | None,
    vllm_version: str | None = None,
    targets: Iterable[Arch] = (),
) -> Finding:
    """Qwen2.5-VL-style checkpoints: is the vision tower excluded (stays BF16)? The question
    of which attention backend runs it (xformers in vLLM 0.10.x) is the gpu tier's."""
    check = "modelopt.vision-tower"
    if blocked := _skip_unreadable(check, ckpt, config=True, tensors=True):
        return blocked
    config = ckpt.config or {}
    archs = config.get("architectures") if isinstance(config.get("architectures"), list) else []
    arch = archs[0] if archs else None
    # One search over all names at once: most checkpoints have no vision tower.
    joined = "\n".join(ckpt.tensors)
    vision = (
        {n: t for n, t in ckpt.tensors.items() if _VISION.search(n)}
        if _VISION.search(joined)
        else {}
    )
    multimodal = (
        bool(vision)
        or "vision_config" in config
        or (registry is not None and arch in registry.multimodal)
    )
    if not multimodal:
        return skipped(check, f"{ckpt.label}: not a multimodal checkpoint (no vision tower)")
    if not vision:
        return skipped(check, f"{ckpt.label}: {arch} is multimodal but holds no vision tensors")
    eff = effective_settings(ckpt)
    quantized = sorted(
        n.rpartition(".")[0]
        for n, t in vision.items()
        if n.endswith(".weight") and t.dtype not in UNQUANTIZED_DTYPES
    )
    handover = "which attention backend runs it (xformers or flash-attn): see xformers.decision"
    if quantized:
        is_excluded = excluder(eff.exclude) if eff is not None else None
        excluded = is_excluded is not None and any(is_excluded(m, ckpt.modules) for m in quantized)
        if excluded:  # tensors-complete reports the excluded-but-quantized modules
            return passed(
                check,
                f"{ckpt.label}: the vision tower is quantized ({len(quantized)} Linear modules) "
                "and listed as excluded: see modelopt.tensors-complete; " + handover,
                vision_quantized=True,
            )
        return _quantized_vision(ckpt, vision, quantized, vllm_version, list(targets))
    patterns = [p for p in (eff.exclude if eff else ()) if any(m in p for m in VISION_MARKERS)]
    return passed(
        check,
        f"{ckpt.label}: the vision tower ({len(vision)} tensors) stays unquantized"
        + (f", excluded by {patterns}" if patterns else "")
        + f"; {handover}",
        vision_quantized=False,
        exclude_patterns=patterns,
    )


KEEP_VISION_BF16 = (
    "keep the vision tower BF16 as NVIDIA's own FP8/NVFP4 recipes do: re-export with "
    'mtq.disable_quantizer(model, "*visual*") (ModelOpt >= 0.47) or "model.visual*" / '
    '"visual*" in the quant config\'s exclusions'
)


def _quantized_vision(
    ckpt: Checkpoint,
    vision: Mapping[str, TensorInfo],
    quantized: Sequence[str],
    vllm_version: str | None,
    archs: list[Arch],
) -> Finding:
    """A quantized, not excluded vision tower, judged by the classes seen in the field."""
    check = "modelopt.vision-tower"
    version = _version_tuple(vllm_version)
    kv = sorted(n for n in vision if n.endswith((".k_scale", ".v_scale")))
    # F3.2: vLLM 0.10.x's Qwen2.5-VL loader had no name for the vision blocks' KV scales
    # ("KeyError: 'blocks.0.attn.k_proj.k_scale'").
    if kv and version is not None and version < (0, 11):
        return failed(
            check,
            f"{ckpt.label}: the vision tower is quantized with KV scales ({kv[0]}, ...) and "
            f"vLLM {vllm_version}'s loader has no parameter for them (reported: "
            "\"KeyError: 'blocks.0.attn.k_proj.k_scale'\")",
            KEEP_VISION_BF16,
            vllm_effect="refuses",
            tensors=kv[:10],
        )
    # F3.5: NVFP4 vision MLPs whose out-dimension is not a multiple of 64 break the Marlin
    # FP4 repack on GPUs below Blackwell ("size_n = 4304 is not divisible by tile_n_size").
    odd = sorted(
        f"{n.rpartition('.')[0]} (out {t.shape[0]})"
        for n, t in vision.items()
        if n.endswith(".weight") and t.dtype == "U8" and t.shape and t.shape[0] % 64
    )
    marlin = [a for a in archs if a.number < 100]
    if odd and (marlin or not archs):
        where = f"the target {', '.join(a.cc for a in marlin)}" if marlin else "a GPU below 10.0"
        outcome = failed if marlin else warning
        return outcome(
            check,
            f"{ckpt.label}: NVFP4 vision layers whose out-dimension is not a multiple of 64 "
            f"({_few(odd)}): on {where} vLLM runs NVFP4 through Marlin, whose repack refuses "
            'them ("size_n = 4304 is not divisible by tile_n_size = 64")',
            KEEP_VISION_BF16,
            vllm_effect="refuses" if marlin else "works",
        )
    return warning(
        check,
        f"{ckpt.label}: the vision tower is quantized ({len(quantized)} Linear modules, e.g. "
        f"{quantized[0]}) and not excluded: vLLM {vllm_version or ''} builds it quantized, a "
        "path NVIDIA's own recipes avoid and this suite has not calibrated (accuracy risk); "
        "which attention backend runs it: see xformers.decision",
        KEEP_VISION_BF16,
        vllm_effect="works",
        vision_quantized=True,
    )


def _version_tuple(version: str | None) -> tuple[int, ...] | None:
    if not version:
        return None
    parts = []
    for piece in version.split("+")[0].split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or None


# -- every toolchain verdict on one checkpoint, for the gpu tier's comparison ------------------
def predict(
    ckpt: Checkpoint,
    *,
    source: ModelOptSource,
    registry: Registry,
    vllm_version: str | None,
    scales: Mapping[str, Sequence[float]],
    unread: Mapping[str, str],
    samples: Mapping[str, WeightSample],
    archs: Iterable[Arch],
    archs_source: str,
    kv_naming: KvScaleNaming | None = None,
    gdn: tuple[GdnRule | None, GdnEnv] | None = None,
) -> list[Finding]:
    """The toolchain tier's findings for ``ckpt`` (what ``gpu.prediction-agrees`` holds
    against the real load); ``gdn``: the env's Gated-DeltaNet rule and facts, for
    ``modelopt.gdn-prefill-backend`` (a missing FlashInfer refuses the first prefill)."""
    archs = list(archs)
    extra = [gdn_prefill_backend(ckpt, gdn[0], archs, gdn[1])] if gdn is not None else []
    return [
        files_readable(ckpt),
        quant_config(ckpt),
        quant_algo_supported(ckpt, source, vllm_version),
        tensors_complete(ckpt, scales, samples, source, kv_naming),
        shapes_match_config(ckpt),
        scales_sane(ckpt, scales, unread),
        architecture_registered(ckpt, registry, vllm_version),
        min_capability(ckpt, source, vllm_version, archs, archs_source),
        vision_tower(ckpt, registry, vllm_version, archs),
    ] + extra
