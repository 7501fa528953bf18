"""The quantization settings vLLM will use for a ModelOpt checkpoint, and how it matches their
exclude entries: facts of the checkpoint's two config files as the env's vLLM reads them.

vLLM's ``get_quant_config`` takes config.json's ``quantization_config`` when present and only
falls back to ``hf_quant_config.json`` (FACTS.md: removing the block still loads); both
layouts are read here as ``ModelOptQuantConfigBase.from_config`` (vLLM 0.26.0 ``modelopt.py``)
reads them: ``{"quantization": {...}}`` and the flat compressed-tensors style block with
``ignore`` and ``kv_cache_scheme``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_vllm_env.facts.modelopt_load import ShardMismatch, fused_name
from pytest_vllm_env.facts.modelopt_load import excluder as load_excluder
from pytest_vllm_env.readers.checkpoint import Checkpoint
from pytest_vllm_env.readers.vllm_source import ModelOptSource


@dataclass(frozen=True)
class QuantSettings:
    """The effective ModelOpt settings, taken from where vLLM takes them."""

    algo: str | None
    kv_cache_algo: str | None
    exclude: tuple[str, ...]
    source: str  # "config.json" or "hf_quant_config.json"
    quant_method: str | None = None


def from_config_block(block: Mapping[str, Any]) -> QuantSettings:
    """The settings of config.json's ``quantization_config`` block, in either layout."""
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
        return from_config_block(block)
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
