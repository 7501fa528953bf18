"""``checkpoint.load-probe``: what the env's own vLLM did with a checkpoint on the CPU
(``probes/vllm_load_weights.py``, opt-in with ``--vllm-load-probe``), and where the static
load plan said otherwise. Pure: the probe's JSON and the plan in, a Finding out.

The probe's answer is vLLM's own (its config code, model construction and weight loader); the
static plan is read from the same source. When they differ, the probe is right and the
finding says which static fact was wrong, so the rule can be fixed (principle 4).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_vllm_env.facts.vllm_load_plan import LoadPlan
from pytest_vllm_env.facts.vllm_tp import TpSplit
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped, warning

KV_PARAMS = (".attn.q_scale", ".attn.k_scale", ".attn.v_scale", ".attn.prob_scale")
CHECK = "checkpoint.load-probe"


def _static_refuses(plan: LoadPlan, split: TpSplit | None) -> bool:
    return bool(
        plan.decision.refused
        or plan.file_refusal
        or any(f.fate == "refused" for f in plan.fates)
        or (split is not None and split.problems)
    )


def agrees(
    plan: LoadPlan | None,
    split: TpSplit | None,
    data: Mapping[str, Any] | None,
    problem: str | None,
    label: str,
    output_tail: str = "",
) -> Finding:
    """The probe's verdict on the load, and its differences with the static plan."""
    if data is None and problem is None:
        return skipped(CHECK, f"{label}: not asked for (--vllm-load-probe=meta|load runs it)")
    if (
        problem
        or not data
        or not data.get("ok", data.get("config") is not None or "refused" in data)
    ):
        return error(
            CHECK,
            f"{label}: the load probe did not complete: {problem or (data or {}).get('error')}",
            "run the env's Python on pytest_vllm_env/probes/vllm_load_weights.py by hand to see "
            "why (it needs vLLM and torch importable in the env)",
            output=output_tail[-2000:],
        )
    vllm = data.get("vllm")
    refused = data.get("refused") or next(
        (r["refused"] for r in (data.get("ranks") or {}).values() if r.get("refused")), None
    )
    diffs: list[str] = []
    static_refuses = plan is not None and _static_refuses(plan, split)
    rank0 = (data.get("ranks") or {}).get("0") or {}
    if plan is not None and plan.decidable and not refused and rank0.get("params"):
        probe_params = {p for p in rank0["params"] if not p.endswith(KV_PARAMS)}
        static_params = {p for p, v in plan.params.items() if v.required}
        for p in sorted(static_params - probe_params)[:10]:
            diffs.append(f"static expects parameter {p}, vLLM builds none")
        for p in sorted(probe_params - static_params)[:10]:
            diffs.append(f"vLLM builds {p}, static does not expect it")
        routed = {r["param"] for r in rank0.get("routed", [])}
        unset_probe = {p for p in probe_params if p not in routed}
        if rank0.get("written"):
            unset_probe = {
                p for p, w in rank0["written"].items() if w != "all" and not p.endswith(KV_PARAMS)
            }
        unset_static = set(plan.unset())
        for p in sorted(unset_probe ^ unset_static)[:10]:
            side = "vLLM leaves" if p in unset_probe else "static predicts"
            diffs.append(f"{side} {p} unset and the other does not")
    if plan is not None and bool(refused) != static_refuses:
        diffs.append(
            "vLLM refused it and the static plan did not"
            if refused
            else "the static plan predicts a refusal vLLM did not make"
        )
    evidence = dict(vllm=vllm, mode=data.get("mode"), differences=diffs)
    if refused:
        at = f"{refused.get('file')}:{refused.get('line')}"
        text = f"{refused.get('type')}: {refused.get('message', '')[:300]} (at {at})"
        return failed(
            CHECK,
            f"{label}: vLLM {vllm} refuses it on the CPU: {text}"
            + (f"; the static plan differs: {'; '.join(diffs)}" if diffs else ""),
            "see the checkpoint.* and launch.* findings for the tensor, file or argument to change",
            vllm_effect="refuses",
            tensors=[refused["tensor"]] if refused.get("tensor") else [],
            **evidence,
        )
    if rank0.get("written"):  # load mode: the sentinel fills say exactly
        written = rank0["written"].items()
        unset = [p for p, w in written if w != "all" and not p.endswith(KV_PARAMS)]
    else:  # meta mode: a parameter no tensor was routed to (a fused one that misses one
        # shard is not seen this way)
        routed = {r["param"] for r in rank0.get("routed", [])}
        aliased = {a for names in (rank0.get("aliases") or {}).values() for a in names}
        unset = [
            p
            for p in rank0.get("params") or {}
            if p not in routed and p not in aliased and not p.endswith(KV_PARAMS)
        ]
    if unset:
        return failed(
            CHECK,
            f"{label}: vLLM {vllm} loads it and leaves {len(unset)} parameter(s) unset: "
            + ", ".join(unset[:6])
            + (f"; the static plan differs: {'; '.join(diffs)}" if diffs else ""),
            "add the missing tensors (see checkpoint.parameters for where they should come from)",
            vllm_effect="wrong",
            tensors=unset[:50],
            **evidence,
        )
    if diffs:
        return warning(
            CHECK,
            f"{label}: vLLM {vllm} loads it; the static plan differs: {'; '.join(diffs)}",
            "trust this probe's verdict for this checkpoint, and report the difference "
            "(the static reader missed a rule of this vLLM)",
            vllm_effect="works",
            **evidence,
        )
    return passed(
        CHECK,
        f"{label}: vLLM {vllm} builds the model and loads it on the CPU "
        f"({len(rank0.get('params') or {})} parameters, mode {data.get('mode')}); the static "
        "plan agrees",
        vllm_effect="works",
        **evidence,
    )
