"""What every ``modelopt.*`` check shares: the module kinds vLLM treats apart, how lists are
shown, and the skip for a checkpoint whose files could not be read."""

from __future__ import annotations

import re
from collections.abc import Sequence
from operator import itemgetter

from pytest_vllm_env.findings import Finding, skipped
from pytest_vllm_env.readers.checkpoint import Checkpoint

# Embeddings are never Linear layers in vLLM (VocabParallelEmbedding), whatever the
# exclude list says; lm_head is (ParallelLMHead) and is quantized unless excluded.
EMBEDDING_SUFFIXES = ("embed_tokens", "embed_positions", "wte", "wpe", "word_embeddings")
# MoE routers: most vLLM models build them without a quant config, and exports leave them
# BF16 whether or not the exclude list names them: not judged either way.
ROUTER_SUFFIXES = (".gate", ".router", ".shared_expert_gate")
# vLLM 0.26.0 keeps these unquantized by name, for exports older than ModelOpt 0.39.
VISION_MARKERS = ("visual", "vision_tower", "vision_model")
VISION = re.compile("|".join(VISION_MARKERS))
LIST_LIMIT = 8
REEXPORT = (
    "re-export with NVIDIA ModelOpt: mtq.quantize(model, mtq.FP8_DEFAULT_CFG, forward_loop) "
    "then export_hf_checkpoint(model, export_dir=...)"
)


def skip_unreadable(
    check: str, ckpt: Checkpoint, *, config: bool = False, tensors: bool = False
) -> Finding | None:
    """A skip naming modelopt.files-readable when the files ``check`` needs are unreadable."""
    if config and not ckpt.quant_files_readable:
        return skipped(
            check, f"{ckpt.label}: its JSON files cannot be read (see modelopt.files-readable)"
        )
    if tensors and not ckpt.tensors_readable:
        return skipped(
            check, f"{ckpt.label}: its safetensors cannot be read (see modelopt.files-readable)"
        )
    return None


def by_module(pairs: list[tuple[str, str]]) -> list[str]:
    """The texts in module order (stable: one module's several texts keep their order)."""
    return [text for _, text in sorted(pairs, key=itemgetter(0))]


def few(items: Sequence[str], limit: int = LIST_LIMIT) -> str:
    """The first ``limit`` items, and how many there are in all."""
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def effect_summary(
    refused: Sequence[str], wrong: Sequence[str], who: str = "vLLM", limit: int = LIST_LIMIT
) -> str:
    """A failed load's summary: what makes ``who`` refuse the checkpoint, then what it loads
    but computes wrong with (each part only when it has items)."""
    parts = []
    if refused:
        parts.append(f"{who} refuses to load it: {few(refused, limit)}")
    if wrong:
        parts.append(f"{who} loads it but computes wrong results: {few(wrong, limit)}")
    return "; ".join(parts)
