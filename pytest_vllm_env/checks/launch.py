"""Judge the launch arguments that change how the env's vLLM loads a checkpoint:
``quantization=`` (``--quantization``) and ``tensor_parallel_size`` (``--tensor-parallel-size``).

Pure: facts in (``facts/vllm_quant_decision.py``, ``facts/vllm_tp.py``), :class:`Finding`
out. Every rule was held against both real loaders (vLLM 0.26.0 and 0.33.0) on the CPU,
fixtures/loader_truth/outcomes.json.
"""

from __future__ import annotations

from pytest_vllm_env.facts.vllm_quant_decision import QuantDecision
from pytest_vllm_env.facts.vllm_tp import TpSplit
from pytest_vllm_env.findings import Finding, failed, passed, skipped

LIMIT = 6


def quantization(d: QuantDecision, label: str, vllm: str | None, given_by: str) -> Finding:
    """The user's ``quantization=`` against what the checkpoint declares, as
    ``ModelConfig._verify_quantization`` decides it."""
    check = "launch.quantization"
    if d.refused and d.refused_key != "quantization":
        return skipped(
            check,
            f"{label}: vLLM refuses the checkpoint's own config first (see "
            "checkpoint.quant-config-source)",
        )
    if d.user is None:
        if d.effective:
            return passed(
                check,
                f"{label}: no quantization= given; vLLM {vllm or ''} detects "
                f"{d.effective!r} from {d.source}",
                effective=d.effective,
            )
        return skipped(check, f"{label}: no quantization= given and no quantization config")
    if d.refused and d.refused_key == "quantization":
        return failed(
            check,
            f"{label}: vLLM {vllm or ''} refuses quantization={d.user!r} ({given_by}): {d.refused}",
            f"drop the quantization argument (vLLM detects {d.quant_method!r} from "
            f"{d.source}), or pass quantization={d.quant_method!r}"
            if d.quant_method
            else "drop the quantization argument",
            vllm_effect="refuses",
            given_by=given_by,
        )
    if d.overridden:
        return passed(
            check,
            f"{label}: quantization={d.user!r} ({given_by}) is replaced: vLLM {vllm or ''}'s "
            f"{d.claimed_by} override claims the checkpoint's {d.algo or d.quant_method} "
            "(ModelConfig._verify_quantization), so it loads as "
            f"{d.effective!r}; the argument changes nothing",
            effective=d.effective,
            given_by=given_by,
        )
    return passed(
        check,
        f"{label}: quantization={d.user!r} ({given_by}) matches the checkpoint ({d.source})",
        effective=d.effective,
    )


def tensor_parallel(
    split: TpSplit, label: str, vllm: str | None, given_by: str, best: int
) -> Finding:
    """Each rank's share of every layer against the heads, the vocabulary and the format's
    blocks and groups."""
    check = "launch.tensor-parallel"
    if split.tp <= 1:
        return skipped(check, f"{label}: tensor_parallel_size is 1 ({given_by})")
    if split.problems:
        order = {"config": 0, "build": 1, "load": 2}
        first = min(split.problems, key=lambda p: order.get(p.stage, 3))
        where = [f"{p.where}: {p.message}" for p in split.problems]
        shown = ", ".join(where[:LIMIT]) + (
            f", ... ({len(where)} in all)" if len(where) > LIMIT else ""
        )
        return failed(
            check,
            f"{label}: vLLM {vllm or ''} refuses tensor_parallel_size={split.tp} "
            f"({given_by}) at {first.stage} time: {shown}",
            f"use --tensor-parallel-size={best}"
            + (" (or 1)" if best > 1 else "")
            + " or a size whose shares are whole (heads, KV heads, intermediate size, the "
            "format's blocks)",
            vllm_effect="refuses",
            problems=where[:50],
            tensors=[t for p in split.problems for t in p.tensors][:50],
            tp=split.tp,
        )
    shapes = {k: [list(o), i] for k, (o, i) in list(split.shapes.items())[:8]}
    return passed(
        check,
        f"{label}: tensor_parallel_size={split.tp} ({given_by}) splits all "
        f"{split.checked} Linear layer(s) into whole shares",
        per_rank=shapes,
        tp=split.tp,
    )
