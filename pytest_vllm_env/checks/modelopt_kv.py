"""The KV-cache part of ``modelopt.tensors-complete``: does every attention layer get its
KV-cache scales, under the names the env's vLLM renames them to (F3.9)?"""

from __future__ import annotations

from typing import Any

from pytest_vllm_env.checks.modelopt_common import LIST_LIMIT, VISION, few
from pytest_vllm_env.facts.modelopt_load import LayerIssue
from pytest_vllm_env.facts.modelopt_settings import QuantSettings, excluder
from pytest_vllm_env.readers.checkpoint import Checkpoint
from pytest_vllm_env.readers.vllm_kv_naming import VLLM_0_26, KvScaleNaming
from pytest_vllm_env.readers.vllm_source import ModelOptSource
from pytest_vllm_env.tables.quant_formats import KV_SCALE_LEAVES

# What an attention layer takes from a checkpoint (the table's KV_SCALE_LEAVES), and the
# tensors of a Linear (never KV scales)
LINEAR_LEAVES = frozenset(
    ("weight", "bias", "weight_scale", "input_scale", "weight_scale_2", "pre_quant_scale")
)
ATTENTION_SHARDS = ("k_proj", "v_proj", "qkv_proj")


def kv_issues(
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
    blocks = [b for b in blocks if b and not VISION.search(b)]  # towers: vision-tower's
    if not blocks:
        return [], {}
    targets = {f"{b}.attn.{leaf}": b for b in blocks for leaf in KV_SCALE_LEAVES}
    got: dict[str, set[str]] = {b: set() for b in blocks}
    issues: list[LayerIssue] = []
    refused, dropped = [], []
    for prefix, leaves in ckpt.modules.items():
        if VISION.search(prefix):
            continue
        in_block = any(prefix == b or prefix.startswith(b + ".") for b in blocks)
        for leaf in leaves:
            if "scale" not in leaf or not (
                leaf in KV_SCALE_LEAVES or (in_block and leaf not in LINEAR_LEAVES)
            ):
                continue
            name = f"{prefix}.{leaf}"
            renamed = naming.vllm_name(name)
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
        shown = few([f"{n} -> {r}" for n, r in dropped])
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
                f"1.0 (uncalibrated): {few(missing)}",
            )
        )
    kv = dict(kv_blocks=len(blocks), kv_uncalibrated=uncalibrated[:200], kv_unjudged=unjudged[:200])
    return issues, kv
