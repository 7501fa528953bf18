"""Judge a checkpoint as the env's vLLM loads it (``facts/vllm_load_plan.py``): the files it
reads, the config file it takes the quantization from, every tensor and every parameter.

Pure: a :class:`~pytest_vllm_env.facts.vllm_load_plan.LoadPlan` (and weight samples) in,
:class:`Finding` out. Levels follow what the real loaders did with the mutations of
fixtures/loader_truth (vLLM 0.26.0 and 0.33.0 on the CPU): refuses -> failed; a parameter
left at its initial value, a cast that changes numbers, a head the tie replaces -> failed
(wrong results: the gpu tier measures them, scripts/device/loader_truth.sh); an exact cast
that costs bytes -> warning; what the loader maps, skips or ignores harmlessly -> passed,
said in the summary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pytest_vllm_env.checks import launch
from pytest_vllm_env.checks.modelopt_common import effect_summary, few
from pytest_vllm_env.facts.modelopt_load import LayerFacts, WeightSample, _stored_weight
from pytest_vllm_env.facts.modelopt_mixed import MIXED, FusedMismatch, resolve, vllm_keys
from pytest_vllm_env.facts.quant_release import differs_between_releases
from pytest_vllm_env.facts.vllm_load_names import SPLIT_DIM, cast_kind, shape_effect
from pytest_vllm_env.facts.vllm_load_plan import Fate, LoadPlan, Param
from pytest_vllm_env.facts.vllm_quant_decision import HF_QUANT, QuantDecision
from pytest_vllm_env.facts.vllm_tp import TpSplit
from pytest_vllm_env.findings import Finding, failed, passed, skipped, warning
from pytest_vllm_env.readers.safetensors_header import TensorInfo

LIMIT = 6
# the layers DefaultModelLoader.track_weights_loading checks (the others have a quant method,
# whose parameters it counts as loaded)
# DefaultModelLoader.track_weights_loading: parameters of modules without a quant method
# (norms; a vision patch embedding's Conv3dLayer, refused by the real loaders when absent)
TRACKED = ("norm", "layernorm", "conv")
INIT = {
    "empty": "torch.empty (whatever the memory held: garbage)",
    "ones": "its initial 1.0 (not the trained values)",
    "zeros": "its initial 0",
    "min": "vLLM's placeholder float32 min (-3.4e38)",
}


def _few(items: Sequence[str]) -> str:
    return few(items, LIMIT)


def _undecided(check: str, plan: LoadPlan, label: str) -> Finding | None:
    if plan.decision.refused and plan.decision.refused_key != "quantization":
        return skipped(
            check,
            f"{label}: vLLM refuses its quantization config (see checkpoint.quant-config-source)",
        )
    if plan.file_refusal:
        return skipped(check, f"{label}: vLLM cannot read its files (see checkpoint.shards)")
    if plan.undecided:
        return skipped(
            check,
            f"{label}: static reading cannot decide ({'; '.join(plan.undecided)}); run with "
            "--vllm-load-probe to let the env's own vLLM say",
        )
    return None


# -- checkpoint.shards ---------------------------------------------------------------------------
def shards(plan: LoadPlan, label: str) -> Finding:
    """The files vLLM reads: the index's files present, files it leaves out, tensors in two
    files, tensors the index does not list or lists in no file."""
    check = "checkpoint.shards"
    if plan.file_refusal:
        return failed(
            check,
            f"{label}: vLLM refuses to load it: {plan.file_refusal}",
            "restore the missing shard(s) (re-download), or remove their entries from "
            "model.safetensors.index.json's weight_map if the tensors are elsewhere",
            vllm_effect="refuses",
        )
    if not plan.files:
        return skipped(check, f"{label}: no *.safetensors to read ({'; '.join(plan.undecided)})")
    notes: list[str] = []
    bad: list[str] = []
    fixes: list[str] = []
    lost = sorted(plan.lost.items())
    if lost:
        bad.append(
            "tensors vLLM never sees leave their parameters unset: "
            + _few([f"{n} ({why}; {param} keeps its initial value)" for n, (why, param) in lost])
        )
        fixes.append(
            "name every shard that holds tensors in model.safetensors.index.json's weight_map "
            "(vLLM reads only the files it names), or re-download the shards it lists"
        )
    if plan.unread_files and not any("index does not name" in w for _, (w, _) in lost):
        notes.append(
            f"{', '.join(plan.unread_files)} is not named by the index: vLLM does not read it"
        )
    if plan.listed_absent and not any("in no shard" in w for _, (w, _) in lost):
        notes.append(
            f"{len(plan.listed_absent)} tensor(s) the index lists are in no shard read: "
            f"{_few(plan.listed_absent)}"
        )
    for name, where, same in plan.duplicates:
        winner = where[-1]
        if same:
            notes.append(f"{name} is in {', '.join(where)} (identical copies)")
            continue
        listed = _index_file(plan, name)
        text = (
            f"{name} is in {', '.join(where)}"
            + (" with different bytes" if same is False else "")
            + f"; vLLM loads every copy and keeps the last, {winner}'s"
        )
        if listed and listed != winner:
            bad.append(text + f", while the index says {listed}")
            fixes.append(f"remove {name} from {winner} (the index's copy is {listed}'s)")
        elif listed == winner:
            notes.append(text + " (the index's)")
        else:
            fixes.append(f"keep one copy of {name}")
            notes.append(text)
    if plan.unlisted:
        notes.append(
            f"{len(plan.unlisted)} tensor(s) not in the index load anyway (vLLM reads whole "
            f"files): {_few(plan.unlisted)}"
        )
    evidence: dict[str, Any] = dict(files=plan.files, unread=plan.unread_files)
    if bad:
        return failed(
            check,
            f"{label}: vLLM loads it but with wrong tensors: " + "; ".join(bad),
            "; ".join(dict.fromkeys(fixes)),
            vllm_effect="wrong",
            **evidence,
        )
    dup_unknown = [
        n for n, _, same in plan.duplicates if same is not True and not _index_file(plan, n)
    ]
    if dup_unknown:
        return warning(
            check,
            f"{label}: " + "; ".join(notes),
            "; ".join(dict.fromkeys(fixes)) or "keep one copy of each tensor",
            vllm_effect="works",
            **evidence,
        )
    return passed(
        check,
        f"{label}: vLLM reads {len(plan.files)} file(s) ({_few(plan.files)})"
        + (f"; note: {'; '.join(notes)}" if notes else ""),
        vllm_effect="works",
        **evidence,
    )


def _index_file(plan: LoadPlan, name: str) -> str | None:
    return plan.weight_map.get(name) if plan.weight_map else None


# -- checkpoint.quant-config-source --------------------------------------------------------------
def quant_config_source(d: QuantDecision, label: str, vllm: str | None) -> Finding:
    """Which file vLLM takes the quantization config from, and whether it accepts it."""
    check = "checkpoint.quant-config-source"
    if d.source is None:
        return skipped(check, f"{label}: no quantization config (an unquantized checkpoint)")
    if d.refused and d.refused_key != "quantization":
        return failed(
            check,
            f"{label}: vLLM {vllm or ''} refuses it at start: {d.refused} (it reads {d.source})",
            f"give config.json a quantization_config as ModelOpt >= 0.31 writes it "
            f'({{"quant_method": "modelopt", "quant_algo": "{d.algo}", "ignore": [...]}}), '
            f"which vLLM reads before {HF_QUANT}; or use a vLLM that knows {d.algo} there",
            vllm_effect="refuses",
            source=d.source,
        )
    said = (
        f"vLLM {vllm or ''} reads {d.source} ({d.rules}): quant_method {d.quant_method!r}, {d.algo}"
    )
    if d.ignored:
        note = f"; {d.ignored} is never read while config.json has a quantization_config"
        if d.disagreements:
            note += f" (it disagrees: {'; '.join(d.disagreements)}; other tools read it)"
        said += note
    return passed(
        check,
        f"{label}: {said}",
        source=d.source,
        ignored=d.ignored,
        disagreements=list(d.disagreements),
    )


# -- checkpoint.parameters -----------------------------------------------------------------------
def parameters(
    plan: LoadPlan,
    label: str,
    vllm: str | None,
    samples: Mapping[str, WeightSample] | None = None,
    scales: Mapping[str, Sequence[float]] | None = None,
) -> Finding:
    """Every tensor of the files vLLM reads: mapped to a parameter, skipped, ignored or
    refused; every parameter filled; shapes; dtype casts; the tied head."""
    check = "checkpoint.parameters"
    if blocked := _undecided(check, plan, label):
        return blocked
    refused: list[str] = []
    wrong: list[str] = []
    cost: list[str] = []
    notes: list[str] = []
    tensors: list[str] = []
    fixes: list[str] = []
    for f in plan.fates:
        if f.fate == "refused":
            refused.append(f"{f.tensor} ({f.why})")
            tensors.append(f.tensor)
    if refused:
        fixes.append(
            "remove the tensors vLLM has no parameter for from the safetensors (or rename them "
            "to the model's own names), or load them with the model class they belong to"
        )
    skipped_ = [f for f in plan.fates if f.fate in ("skipped", "ignored", "dropped")]
    if skipped_:
        notes.append(f"not loaded by design: {_few([f'{f.tensor} ({f.why})' for f in skipped_])}")
    for f in plan.fates:
        if f.fate != "loaded" or f.param is None:
            continue
        p = plan.params[f.param]
        want = p.shapes.get(f.shard or "")
        effect = shape_effect(p.kind, f.shape, want) if want else "ok"
        if effect == "refused":
            refused.append(
                f"{f.tensor} has shape {list(f.shape)}, vLLM's {f.param} takes {list(want)}"
            )
            tensors.append(f.tensor)
            fixes.append("use the config.json that came with these weights, or re-export")
        elif effect == "truncated":
            dim = SPLIT_DIM[p.kind]
            wrong.append(
                f"{f.tensor} has shape {list(f.shape)}, vLLM's {f.param} takes {list(want)}: "
                f"its weight loader cuts dim {dim} to {want[dim]} before the shape check, the "
                "rest is dropped"
            )
            tensors.append(f.tensor)
            fixes.append("use the config.json that came with these weights, or re-export")
        _cast(f, p, plan, samples or {}, scales or {}, wrong, cost, notes, tensors, fixes)
    _tie(plan, vllm, wrong, notes, fixes, tensors)
    borrowed: list[str] = []
    strict = plan.strict_unquantized and not plan.decision.effective
    for name, lacking in plan.unset().items():
        p = plan.params[name]
        if name.endswith(".input_scale") and p.shards and len(lacking) < len(p.shards):
            borrowed.append(f"{name} ({'/'.join(lacking)})")
            continue
        if strict and p.kind in TRACKED:
            refused.append(
                f"{name} gets no tensor: vLLM checks an unquantized model's parameters and "
                "raises 'Following weights were not initialized from checkpoint'"
            )
            tensors.append(name)
            continue
        shard = f" (shard {'/'.join(lacking)})" if p.shards else ""
        wrong.append(f"{name}{shard} gets no tensor: it keeps {INIT.get(p.init, p.init)}")
        tensors.append(name)
    if borrowed:
        notes.append(f"fused shards without input_scale take their siblings' max: {_few(borrowed)}")
    if any("gets no tensor" in w for w in wrong + refused):
        fixes.append(
            "add the missing tensors to the checkpoint (re-export, or re-download the shard "
            "that holds them); vLLM does not check that a quantized model's parameters loaded"
        )
    if plan.decision.algo == MIXED:
        _mixed(plan, vllm, bool(refused or wrong), refused, fixes)
        # a layer one release read serves and another does not: the env's own set is unknown
        # (facts/quant_release.py), so the pass rests on what was assumed, and says it
        if plan.decision.served_assumed and differs_between_releases(
            a for _, a in plan.decision.layers
        ):
            notes.append(plan.decision.served_assumed)
    evidence = dict(
        params=len(plan.params),
        loaded=sum(1 for f in plan.fates if f.fate == "loaded"),
        tensors=tensors[:50],
        rules=plan.rules,
    )
    if refused or wrong:
        return failed(
            check,
            f"{label}: " + effect_summary(refused, wrong, f"vLLM {vllm or ''}", LIMIT),
            "; ".join(dict.fromkeys(fixes)) or "re-export the checkpoint",
            vllm_effect="refuses" if refused else "wrong",
            **evidence,
        )
    if cost:
        return warning(
            check,
            f"{label}: vLLM loads it, at a cost: {_few(cost)}",
            "; ".join(dict.fromkeys(fixes)),
            vllm_effect="works",
            **evidence,
        )
    return passed(
        check,
        f"{label}: {evidence['loaded']} tensor(s) fill all {len(plan.params)} parameter(s) "
        f"vLLM {vllm or ''} builds ({plan.rules})"
        + (f"; note: {'; '.join(notes)}" if notes else ""),
        vllm_effect="works",
        **evidence,
    )


def _mixed(
    plan: LoadPlan, vllm: str | None, failing: bool, refused: list[str], fixes: list[str]
) -> None:
    """MIXED_PRECISION: vLLM's ModelOptMixedPrecisionConfig (0.26.0, 0.33.0 modelopt.py)
    raises for a fused layer whose shards' algorithms differ (_resolve_quant_algo), and
    get_quant_method silently builds a layer unquantized when its quant_algo is one it has no
    method for: say which layer and which key when the tensors then fail to load."""
    layers = dict(plan.decision.layers)
    where = plan.decision.source or "hf_quant_config.json"
    model = plan.model
    keys = vllm_keys(layers, model.prefixes, model.substrs, model.suffixes) if model else layers
    if not layers:  # ModelOptMixedPrecisionConfig._from_config
        refused.insert(
            0,
            "vLLM raises at start: MIXED_PRECISION quant_algo requires a non-empty "
            f"'quantized_layers' mapping in the quantization config (read from {where})",
        )
        fixes.insert(0, f"give {where} the quantized_layers map ModelOpt wrote (re-export)")
        return
    fused = {p.rsplit(".", 1)[0] for p in plan.params if p.endswith(".weight")}
    for module in sorted(fused):
        try:
            resolve(keys, module, (model.packed or None) if model else None)
        except FusedMismatch as e:
            refused.insert(0, f"vLLM raises while building the model: {e}")
            fixes.insert(0, f"give the shards of {module} one quant_algo in {where}'s "
                         "quantized_layers (quantize them alike and re-export)")  # fmt: skip
    served = plan.decision.served
    unserved = [(p, a) for p, a in layers.items() if a not in served]
    if unserved and failing:
        names = ", ".join(f"{p}: {a!r}" for p, a in unserved[:5])
        refused.insert(
            0,
            f"quantized_layers in {where} gives {len(unserved)} layer(s) an algorithm "
            f"ModelOptMixedPrecisionConfig.get_quant_method has no method for ({names}"
            f"{', ...' if len(unserved) > 5 else ''}; vLLM {vllm or ''} serves "
            f"{'/'.join(served)}): it "
            "builds them unquantized (UnquantizedLinearMethod) and their tensors do not fit",
        )
        fixes.insert(
            0,
            "quantize those layers with an algorithm vLLM serves per layer (FP8, NVFP4, "
            "W4A16_NVFP4, MXFP8; e.g. mtq.NVFP4_DEFAULT_CFG instead of INT4_AWQ_CFG) and "
            "re-export, or leave them unquantized (remove them from quantized_layers in "
            f"{where} and store their weights in the model dtype)",
        )


def _cast(
    f: Fate,
    p: Param,
    plan: LoadPlan,
    samples: Mapping[str, WeightSample],
    scales: Mapping[str, Sequence[float]],
    wrong: list[str],
    cost: list[str],
    notes: list[str],
    tensors: list[str],
    fixes: list[str],
) -> None:
    kind = cast_kind(f.dtype, p.dtype)
    if kind == "same":
        return
    text = f"{f.tensor} is {f.dtype}, vLLM's {f.param} is {p.dtype}"
    if kind in ("widen", "narrow"):
        notes.append(f"{text} (cast on load{', exact' if kind == 'widen' else ''})")
        return
    if kind == "to-fp8" and f.tensor.endswith(".weight"):
        module = f.tensor.rsplit(".", 1)[0]
        info = TensorInfo(f.tensor, f.dtype, f.shape, 0, 0, None)  # type: ignore[arg-type]
        facts = LayerFacts({}, scales, samples)
        issue = _stored_weight(module, info, plan.decision.algo or "FP8", frozenset({"F8_E4M3"}),
                               frozenset({"BF16", "F16", "F32"}), facts)  # fmt: skip
        (wrong if issue.effect == "wrong" else cost).append(issue.text)
        if issue.effect == "wrong":
            tensors.append(f.tensor)
        fixes.append(f"store {f.tensor} as F8_E4M3, as ModelOpt's export writes it")
        return
    if kind == "from-fp8":
        wrong.append(f"{text}: the FP8 numbers are cast without their scale")
    else:
        wrong.append(f"{text}: copy_ converts the numbers, not the bytes' meaning")
    tensors.append(f.tensor)
    fixes.append(f"store {f.tensor} as {p.dtype}")


def _tie(
    plan: LoadPlan,
    vllm: str | None,
    wrong: list[str],
    notes: list[str],
    fixes: list[str],
    tensors: list[str],
) -> None:
    t = plan.tie
    if t is None or not t.config or not t.head_in_checkpoint:
        return
    if not t.built_tied:
        notes.append(
            "tie_word_embeddings is true but the checkpoint has its own lm_head.weight: vLLM "
            "builds lm_head untied and loads it"
            + (" (re-tied after loading: identical)" if t.identical else "")
        )
        return
    if t.identical:
        notes.append("the checkpoint's lm_head.weight equals its embedding (tied): not loaded")
        return
    how = "differs from" if t.identical is False else "may differ from (could not be read)"
    wrong.append(
        f"lm_head.weight {how} model.embed_tokens.weight, but tie_word_embeddings is true: "
        f"vLLM {vllm or ''} ties lm_head to the embedding and skips the checkpoint's own head"
    )
    tensors.append("lm_head.weight")
    fixes.append(
        'set "tie_word_embeddings": false in config.json (the checkpoint has a head of its '
        "own), or use a vLLM that unties for it (0.33.0 does: "
        "ModelConfig.maybe_untie_word_embeddings)"
    )


def predict(
    plan: LoadPlan,
    tp_split: TpSplit,
    best_tp: int,
    label: str,
    vllm: str | None,
    samples: Mapping[str, WeightSample] | None = None,
    scales: Mapping[str, Sequence[float]] | None = None,
    given_by: tuple[str, str] = ("--vllm-quantization", "--tensor-parallel-size"),
) -> list[Finding]:
    """Every checkpoint.* and launch.* finding for one checkpoint and one launch."""
    return [
        shards(plan, label),
        quant_config_source(plan.decision, label, vllm),
        parameters(plan, label, vllm, samples, scales),
        launch.quantization(plan.decision, label, vllm, given_by[0]),
        launch.tensor_parallel(tp_split, label, vllm, given_by[1], best_tp),
    ]


def effect(findings: Sequence[Finding]) -> str:
    """What the findings predict vLLM does: refuses, wrong, or works."""
    bad = [f for f in findings if f.outcome in ("failed", "error")]
    if any(f.evidence.get("vllm_effect") == "refuses" or f.outcome == "error" for f in bad):
        return "refuses"
    return "wrong" if bad else "works"
