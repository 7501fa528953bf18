"""``gpu.prediction-agrees``: what the toolchain tier predicted for a checkpoint (refuses /
wrong / works, and which tensor; which attention layers run their KV cache uncalibrated)
against what the real vLLM load did. A disagreement is a warning: the gpu checks report the
load itself; this one tells you (and us) that the static judgement was wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pytest_vllm_env.checks.gpu_vllm_load import failing_tensor
from pytest_vllm_env.facts.gpu_probe import ProbeResult
from pytest_vllm_env.facts.modelopt_load import SHARD_OF
from pytest_vllm_env.findings import Finding, passed, skipped, warning

Effect = Literal["refuses", "wrong", "works", "fails", "unknown"]


# -- prediction against reality ----------------------------------------------------------------
# What each toolchain check's failure means for the load, where the finding does not say.
CHECK_EFFECT: dict[str, Effect] = {
    "modelopt.files-readable": "refuses",
    "modelopt.quant-algo-supported": "refuses",
    "modelopt.architecture-registered": "refuses",
    "modelopt.min-capability": "refuses",
    "modelopt.shapes-match-config": "refuses",
    "modelopt.scales-sane": "wrong",
    # "No valid attention backend found" at model construction (H100, vLLM 0.26.0, round 14)
    "checkpoint.attention-backend": "refuses",
}


def predicted_effect(findings: Iterable[Finding]) -> tuple[Effect, list[str], list[str]]:
    """``(effect, check ids, tensors)`` the toolchain findings predict for a load:
    refuses > wrong > fails (a failure whose effect is not known) > works."""
    bad = [f for f in findings if f.outcome in ("failed", "error")]
    if not bad:
        return "works", [], []
    effects: list[tuple[Effect, Finding]] = []
    for f in bad:
        effect = f.evidence.get("vllm_effect") or CHECK_EFFECT.get(f.id) or "fails"
        effects.append((effect, f))
    for wanted in ("refuses", "wrong", "fails"):
        chosen = [f for e, f in effects if e == wanted]
        if chosen:
            tensors = [str(t) for f in chosen for t in f.evidence.get("tensors", [])]
            return wanted, [f.id for f in chosen], tensors  # type: ignore[return-value]
    return "fails", [f.id for f in bad], []


def observed_effect(run: ProbeResult, judged: Iterable[Finding]) -> Effect:
    """What vLLM did: refused (no tokens), wrong (a correctness check failed), works; unknown
    when the run timed out or the probe broke."""
    if run.timed_out or run.problem:
        return "unknown"
    if not run.data.get("tokens"):
        return "refuses"
    if any(f.outcome == "failed" for f in judged):
        return "wrong"
    return "works"


def _missing_module(run: ProbeResult) -> str | None:
    """The module a load died importing (``No module named 'flashinfer'``), if that was it."""
    m = re.match(
        r"(?:ModuleNotFoundError|ImportError): No module named '([\w.]+)'",
        str(run.data.get("exception") or ""),
    )
    return m[1] if m else None


# Modules a toolchain rule judges, where the load imports them: a load dying there is that
# rule's business (a disagreement when it said "works"), not only the env's.
MODULE_RULES = {"flashinfer": ("modelopt.gdn-prefill-backend", "/gdn/")}


def _judged_module(module: str, run: ProbeResult, predicted: Sequence[Finding]) -> bool:
    rule = MODULE_RULES.get(module.split(".")[0])
    if rule is None:
        return False
    cid, frame = rule
    where = str((run.data.get("exception_frame") or {}).get("file", ""))
    return frame in where and any(f.id == cid and f.outcome != "skipped" for f in predicted)


def fused(tensor: str) -> str:
    """A tensor name as vLLM's loader holds it (``q_proj`` -> ``qkv_proj``)."""
    module, _, leaf = tensor.rpartition(".")
    parent, _, last = module.rpartition(".")
    if last in SHARD_OF:
        return f"{parent}.{SHARD_OF[last]}.{leaf}"
    return tensor


def prediction_agrees(
    predicted: Sequence[Finding], run: ProbeResult, judged: Sequence[Finding], checkpoint: str
) -> Finding:
    """gpu.prediction-agrees: the toolchain tier's verdict on this checkpoint against what
    the real load did, in outcome and, for a refused load, cause (the tensor). A
    disagreement is a warning: the gpu checks report the load itself; this one tells you
    (and us) that the static judgement was wrong."""
    cid = "gpu.prediction-agrees"
    if not checkpoint:
        return skipped(cid, "no --modelopt-checkpoint given: nothing to compare")
    expect, checks, tensors = predicted_effect(predicted)
    seen = observed_effect(run, judged)
    evidence: dict[str, Any] = dict(
        predicted=expect, predicted_by=checks, predicted_tensors=tensors[:20], observed=seen
    )
    if seen == "unknown":
        return skipped(cid, f"{checkpoint}: the load did not complete; nothing to compare")
    missing = _missing_module(run) if seen == "refuses" else None
    if missing and expect != "refuses" and not _judged_module(missing, run, predicted):
        # a package the env lacks (flashinfer for Qwen3.5's GDN prefill, measured on the
        # H100) says nothing of the checkpoint: not a disagreement of the checkpoint rules
        return skipped(
            cid,
            f"{checkpoint}: the load died on a module the env lacks ({missing}), not on the "
            "checkpoint: nothing to compare (gpu.vllm-generate says what to install)",
        )
    real_tensor = failing_tensor(run) if seen == "refuses" else None
    if real_tensor:
        evidence["observed_tensor"] = real_tensor
    said = {
        "works": "works",
        "refuses": "vLLM refuses it",
        "wrong": "vLLM loads it but computes wrong results",
        "fails": "it fails",
    }
    did = {
        "works": "loaded it and it works",
        "refuses": "refused it",
        "wrong": "loaded it and computed wrong results",
    }
    same = expect == seen or (expect == "fails" and seen in ("refuses", "wrong"))
    if not same:
        by = f" ({', '.join(checks)})" if checks else " (every toolchain check passed)"
        return warning(
            cid,
            f"{checkpoint}: the toolchain tier predicted {said[expect]!r}{by}, but vLLM "
            f"{did[seen]}",
            "trust the gpu tier's verdict for this checkpoint; the static rules were wrong here: "
            "report it to pytest-vllm-env with this finding's evidence",
            **evidence,
        )
    if seen == "refuses" and real_tensor and tensors:
        ours = {fused(t) for t in tensors} | {fused(t).rpartition(".")[0] for t in tensors}
        theirs = fused(real_tensor)
        if theirs not in ours and theirs.rpartition(".")[0] not in ours:
            return warning(
                cid,
                f"{checkpoint}: both say vLLM refuses it, but for different tensors: the "
                f"toolchain tier blamed {', '.join(tensors[:3])}, vLLM died on {real_tensor}",
                "fix both; report the disagreement to pytest-vllm-env with this finding's evidence",
                **evidence,
            )
    cause = f" (tensor {real_tensor})" if real_tensor and seen == "refuses" else ""
    kv = kv_agreement(predicted, run) if seen != "refuses" else None
    if kv is not None:
        evidence.update(kv.evidence)
        if not kv.same:
            return warning(
                cid,
                f"{checkpoint}: the load agrees ({said[expect]!r}), but not its KV-cache "
                f"scales: {kv.text}",
                "trust gpu.kv-scales-loaded for this checkpoint (it reads what the layers run "
                "with); the KV-naming rules were wrong here: report it to pytest-vllm-env with "
                "this finding's evidence",
                **evidence,
            )
        cause += f"; {kv.text}"
    return passed(
        cid,
        f"{checkpoint}: the toolchain tier predicted {said[expect]!r} and vLLM agreed{cause}",
        **evidence,
    )


_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)(?:\.|$)")


def _layer_key(name: str) -> str:
    """One attention layer's key on both sides: the checkpoint's block
    (``model.language_model.layers.3.self_attn``) and vLLM's module
    (``language_model.model.layers.3.self_attn.attn``) are named apart by each model class's
    mapper, but agree on the layer index."""
    m = _LAYER_INDEX.search(name)
    if not m:
        return name.removesuffix(".attn")
    # a draft (MTP) stack counts its layers from 0 again
    return ("mtp " if re.search(r"(?:^|\.)mtp\.", name) else "") + f"layer {m[1]}"


@dataclass(frozen=True)
class KvAgreement:
    """The KV-scale prediction (modelopt.tensors-complete) against the scales the real
    attention layers run with (the probe's ``kv_scales``)."""

    same: bool
    text: str
    evidence: dict[str, Any]


def kv_agreement(predicted: Sequence[Finding], run: ProbeResult) -> KvAgreement | None:
    """Which attention layers run an FP8 KV cache at scale 1.0: predicted from the
    checkpoint's names (``kv_uncalibrated``) and read from the loaded model. None when
    either side is silent: no FP8 KV cache, no KV prediction, the probe could not read them.
    Layers are matched by index (``_layer_key``); excluded blocks are left out."""
    layers = run.data.get("kv_scales")
    if not isinstance(layers, dict) or not str(run.data.get("kv_cache_dtype", "")).startswith(
        "fp8"
    ):
        return None
    static = next(
        (f for f in predicted if f.id == "modelopt.tensors-complete" and "kv_blocks" in f.evidence),
        None,
    )
    if static is None:
        return None
    skip = {_layer_key(b) for b in static.evidence.get("kv_unjudged", [])}
    built = {_layer_key(n) for n in layers}  # layers vLLM did not build (an MTP draft) can't count
    ours = {_layer_key(b) for b in static.evidence.get("kv_uncalibrated", [])} & built - skip
    theirs = {_layer_key(n) for n, kv in layers.items() if list(kv) == [1.0, 1.0]} - skip
    evidence = dict(predicted_kv_at_one=sorted(ours)[:50], observed_kv_at_one=sorted(theirs)[:50])
    judged = len(layers)
    if ours == theirs:
        text = (
            f"both say {len(ours)} of {judged} attention layer(s) run at KV scale 1.0"
            if ours
            else f"both say all {judged} attention layer(s) get the checkpoint's KV scales"
        )
        return KvAgreement(True, text, evidence)
    only_ours, only_theirs = sorted(ours - theirs), sorted(theirs - ours)
    parts = []
    if only_theirs:
        parts.append(
            f"vLLM runs {', '.join(only_theirs[:5])} at scale 1.0, which the toolchain tier "
            "predicted would get the checkpoint's scales"
        )
    if only_ours:
        parts.append(
            f"the toolchain tier predicted {', '.join(only_ours[:5])} at scale 1.0, but vLLM "
            "runs them with calibrated scales"
        )
    return KvAgreement(False, "; ".join(parts), evidence)
