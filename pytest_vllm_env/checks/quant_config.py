"""The quantization config of any format against the env's vLLM: ``quant.config`` (does vLLM
know the method and build a scheme for every Linear, or refuse the config) and
``quant.min-capability`` (does each scheme run on the target GPUs).

A ModelOpt checkpoint gets the verdict of ``modelopt.quant-config`` /
``modelopt.min-capability`` under these ids (the same rules, calibrated on real loads). The
real failures: a compressed-tensors scheme combination vLLM has no scheme for
("No compressed-tensors compatible scheme was found"), NVFP4 weights with FP8 activations,
actorder "group" on vLLM 0.33 ("no longer supported"), a fine-grained FP8 config with a
static activation scheme or a 3-D block, fused-layer shards ignored apart; an FP8 scheme on
a GPU below 8.9 (vLLM then runs Marlin weight-only: a warning, not a refusal).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from pytest_vllm_env.checks.modelopt_common import skip_unreadable
from pytest_vllm_env.checks.modelopt_config import min_capability as modelopt_min_capability
from pytest_vllm_env.checks.modelopt_config import quant_algo_supported
from pytest_vllm_env.checks.modelopt_config import quant_config as modelopt_quant_config
from pytest_vllm_env.facts.quant_plan import QuantPlan
from pytest_vllm_env.facts.quant_release import exact_release, kernel_assumption
from pytest_vllm_env.findings import Finding, failed, passed, skipped, warning
from pytest_vllm_env.readers.checkpoint import Checkpoint
from pytest_vllm_env.readers.vllm_loader import VLLM_0_26
from pytest_vllm_env.readers.vllm_quant_source import QuantSource
from pytest_vllm_env.readers.vllm_source import ModelOptSource
from pytest_vllm_env.tables.archs import Arch
from pytest_vllm_env.tables.quant_kernels import release_for

KNOWN = ("compressed-tensors", "fp8", "mxfp4", "modelopt")
REQUANTIZE = (
    "re-quantize with llm-compressor (oneshot with a preset scheme: FP8_DYNAMIC, FP8_BLOCK, "
    "W4A16, W8A8, NVFP4) and save_pretrained(..., save_compressed=True)"
)


def relabel(finding: Finding, check: str) -> Finding:
    """A ModelOpt verdict under the format-neutral id (what it judged stays as it was)."""
    return replace(finding, id=check, evidence={**finding.evidence, "judged_as": finding.id})


# Which of two verdicts on one question a user is shown: the worse.
_WORSE = {"failed": 4, "error": 3, "warning": 2, "passed": 1, "skipped": 0}


def quant_config(
    ckpt: Checkpoint,
    plan: QuantPlan,
    source: QuantSource | None,
    vllm_version: str | None,
    modelopt_source: ModelOptSource | None = None,
) -> Finding:
    """vLLM knows the checkpoint's ``quant_method`` and builds a scheme for every quantized
    Linear, or refuses the config (its own message, and what to change). A ModelOpt
    checkpoint: the worse of ``modelopt.quant-config`` (the config is there and its two files
    agree) and ``modelopt.quant-algo-supported`` (the env's vLLM takes its quant_algo), so
    that quant.config never passes what modelopt.* fails."""
    check = "quant.config"
    if blocked := skip_unreadable(check, ckpt, config=True):
        return blocked
    if plan.producer == "modelopt":
        found = modelopt_quant_config(ckpt)
        if modelopt_source is not None:
            algo = quant_algo_supported(ckpt, modelopt_source, vllm_version)
            if _WORSE.get(algo.outcome, 0) > _WORSE.get(found.outcome, 0):
                found = algo
        return relabel(found, check)
    if plan.method is None:
        return passed(
            check,
            f"{ckpt.label}: no quantization_config in config.json: vLLM loads it unquantized",
            method=None,
        )
    known = source.methods if source is not None else None
    unread = ""
    if known is None and exact_release(vllm_version) == "0.26.0":
        known = VLLM_0_26.methods  # the record of the 0.26.0 wheel's QuantizationMethods
    elif known is None and plan.method is not None:
        why = "; ".join(source.missing) if source is not None and source.missing else "not read"
        unread = (
            f"; assumed: vLLM {vllm_version or '(version unknown)'} knows {plan.method!r} (its "
            f"QuantizationMethods could not be read: {why})"
        )
    if known is not None and plan.method not in known:
        return failed(
            check,
            f"{ckpt.label}: quant_method {plan.method!r} is not a quantization method vLLM "
            f"{vllm_version} knows (its QuantizationMethods: {', '.join(known[:12])}, ...)",
            f"install a vLLM that has {plan.method!r}, or re-quantize to a method this one has",
            method=plan.method,
        )
    if plan.producer is None:
        return skipped(
            check,
            f"{ckpt.label}: quant_method {plan.method!r}: its tensors are not in this suite's "
            f"table (known: {', '.join(KNOWN)})",
        )
    if plan.refusal:
        return failed(
            check,
            f"{ckpt.label}: vLLM {vllm_version or ''} refuses its {plan.method} config: "
            f"{plan.refusal}",
            (plan.refusal_fix or REQUANTIZE) + " (config.json: quantization_config)",
            method=plan.method,
            vllm_effect="refuses",
        )
    unmodelled = ", ".join(sorted(plan.unmodelled))
    if plan.unmodelled and not plan.schemes:
        return skipped(
            check,
            f"{ckpt.label}: vLLM builds {unmodelled} for its layers: a scheme whose tensors "
            "this suite does not model yet (not judged)",
            method=plan.method,
        )
    names = sorted({s.row.name for s in plan.schemes.values()})
    classes = sorted({s.row.linear_method for s in plan.schemes.values() if s.row.linear_method})
    if not plan.schemes:
        return warning(
            check,
            f"{ckpt.label}: a {plan.method} config, but vLLM quantizes none of its "
            f"{len(plan.unquantized)} Linear module(s) (every one ignored or matched by no "
            "target): it loads as a 16-bit model",
            "check config_groups targets and ignore in config.json's quantization_config",
            method=plan.method,
        )
    what = "MoE expert layer(s)" if plan.producer == "mxfp4" else "Linear module(s)"
    return passed(
        check,
        f"{ckpt.label}: {plan.method}: {len(plan.schemes)} {what} as "
        f"{', '.join(names)} ({', '.join(classes) or 'MoE experts'}), "
        f"{len(plan.unquantized)} unquantized"
        + (f" ({', '.join(sorted(plan.unquantized)[:4])})" if plan.unquantized else "")
        + (f"; others as {unmodelled}, not modelled (not judged)" if unmodelled else "")
        + unread,
        method=plan.method,
        schemes=names,
    )


def min_capability(
    ckpt: Checkpoint,
    plan: QuantPlan,
    vllm_version: str | None,
    archs: Iterable[Arch],
    archs_source: str,
    modelopt_source: ModelOptSource | None = None,
) -> Finding:
    """Every scheme's minimum compute capability in this vLLM (the row of its release)
    against the target GPUs; a scheme vLLM replaces below it (FP8 -> Marlin weight-only)
    is a warning there, one it refuses a failure quoting vLLM."""
    check = "quant.min-capability"
    if blocked := skip_unreadable(check, ckpt, config=True):
        return blocked
    if plan.producer == "modelopt" and modelopt_source is not None:
        found = modelopt_min_capability(ckpt, modelopt_source, vllm_version, archs, archs_source)
        return relabel(found, check)
    if plan.refusal or not plan.schemes:
        return skipped(check, f"{ckpt.label}: no scheme to judge (see quant.config)")
    targets = list(archs)
    if not targets:
        return skipped(
            check, f"no target GPU arch known (from {archs_source}): pass --cuda-arch (e.g. 9.0)"
        )
    release = release_for(vllm_version) or "0.26.0"
    rows = {s.row.name: s.row for s in plan.schemes.values()}
    refused: list[str] = []
    degraded: list[str] = []
    for name, row in sorted(rows.items()):
        support = row.vllm.get(release) or next(iter(row.vllm.values()), None)
        if support is None:
            continue
        for arch in targets:
            if arch.number >= support.min_capability:
                continue
            if row.fallback and arch.number >= row.fallback[0]:
                degraded.append(f"{name} on {arch.cc}: {row.fallback[1]}")
                continue
            refused.append(
                f"{name} ({support.config_class}) needs {support.min_capability}, target {arch.cc}"
            )
    archs_text = ", ".join(a.cc for a in targets)
    # a release not read takes the rows of the nearest one read below it: said, and a
    # refusal resting on it is a warning (facts/quant_release.py)
    assumed = kernel_assumption(vllm_version, release, "needs the capabilities")
    if refused:
        return (warning if assumed else failed)(
            check,
            f"{ckpt.label}: vLLM {vllm_version or release} refuses it on {archs_text}: "
            + "; ".join(refused)
            + " (vLLM: 'Quantization scheme is not supported for the current GPU. Min "
            "capability: ...')" + (f"; {assumed}" if assumed else ""),
            "run on a GPU that meets it, or re-quantize to a scheme this GPU runs "
            "(W4A16 runs from 7.5)",
            targets=[a.cc for a in targets],
        )
    if degraded:
        return warning(
            check,
            f"{ckpt.label}: loads on {archs_text}, but below its native capability: "
            + "; ".join(degraded)
            + (f"; {assumed}" if assumed else ""),
            "run on a GPU of compute capability >= 8.9 for W8A8 FP8, or accept weight-only "
            "FP8 there",
            targets=[a.cc for a in targets],
        )
    return passed(
        check,
        f"{ckpt.label}: {', '.join(sorted(rows))} run on {archs_text} (from {archs_source}) "
        f"in vLLM {vllm_version or release}" + (f"; {assumed}" if assumed else ""),
    )
