"""Which quantization config the env's vLLM reads for a checkpoint, and which
``quantization=`` method it ends up with, as its own code decides (the rules read from the
env by ``readers/vllm_loader.py``; vLLM 0.26.0's built in where they cannot be read).

The path, vLLM 0.26.0 and 0.33.0 alike (measured on the CPU with both, fixtures/loader_truth):

1. ``transformers_utils/config.py:get_config``: config.json's top-level
   ``quantization_config`` is the config; ``hf_quant_config.json`` is read only when that is
   absent (so when both exist, hf_quant_config.json changes nothing in vLLM).
2. ``model_arch_config_convertor.py:_normalize_quantization_config``: a block in the
   hf_quant_config.json layout (``producer.name == "modelopt"``, ``{"quantization":
   {"quant_algo": ...}}``) gets ``quant_method`` from a table of algorithms; any other
   algorithm raises ``Unknown ModelOpt quant algo: X`` (MXFP8 and W4A16_NVFP4 checkpoints
   with only hf_quant_config.json are refused so).
3. ``config/model.py:_verify_quantization``: the methods of the ``overrides`` list are asked
   in order; the first ModelOpt class whose ``override_quantization_method`` claims the
   algorithm (FP8 exactly: ``modelopt``; "FP4" in it: ``modelopt_fp4``; "MXFP8" in it:
   ``modelopt_mxfp8``) *replaces* the user's ``quantization=``, whatever it was (measured:
   ``quantization='int8_sq'`` loads an FP8 ModelOpt checkpoint as ``modelopt``); without a
   claim the checkpoint's ``quant_method`` must equal the user's, else ``ValueError: Quantization
   method specified in the model config (modelopt) does not match the quantization method
   specified in the `quantization` argument (fp8)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pytest_vllm_env.facts.modelopt_mixed import MIXED, SERVED, quantized_layers
from pytest_vllm_env.facts.quant_release import mixed_served
from pytest_vllm_env.readers.vllm_loader import VLLM_0_26, LoaderSource
from pytest_vllm_env.readers.vllm_source import ModelOptSource

CONFIG_JSON = "config.json"
HF_QUANT = "hf_quant_config.json"
MISMATCH = (
    "Quantization method specified in the model config ({ckpt}) does not match the "
    "quantization method specified in the `quantization` argument ({user})."
)


@dataclass(frozen=True)
class QuantDecision:
    """What vLLM makes of a checkpoint's quantization config and the user's argument."""

    source: str | None  # the file vLLM reads: config.json, hf_quant_config.json, None
    ignored: str | None  # the other file, when both exist (vLLM never reads it)
    quant_method: str | None  # the checkpoint's method after vLLM's normalization
    algo: str | None
    exclude: tuple[str, ...]
    kv_algo: str | None
    user: str | None  # quantization= as given (None: not given)
    claimed_by: str | None  # the override that claimed the checkpoint
    effective: str | None  # the method vLLM loads with
    refused: str | None  # what vLLM raises at config time
    refused_key: str | None  # the key of the file (or the launch argument) to change
    disagreements: tuple[str, ...] = ()  # config.json vs hf_quant_config.json
    rules: str = ""  # whose rules: the env's files, or vLLM 0.26.0's built in
    # MIXED_PRECISION: (layer prefix, quant_algo) of quantized_layers, as vLLM reads them
    layers: tuple[tuple[str, str], ...] = ()
    # ... and the per-layer algorithms the env's vLLM serves (facts/quant_release.py: read
    # from its source; else its release's recorded set; else the union of 0.26.0's and
    # 0.33.0's, with ``served_assumed`` saying so)
    served: tuple[str, ...] = SERVED
    served_assumed: str = ""

    @property
    def overridden(self) -> bool:
        """The user's quantization= was replaced (an override claimed the checkpoint)."""
        return bool(self.user and self.claimed_by and self.user != self.effective)


def _block_settings(block: Mapping[str, Any]) -> tuple[str | None, tuple[str, ...], str | None]:
    """(algo, exclude list, kv algo) of either layout, as ModelOptQuantConfigBase.from_config
    reads them."""
    if isinstance(block.get("quantization"), dict):
        inner = block["quantization"]
        exclude = inner.get("exclude_modules", [])
        kv = inner.get("kv_cache_quant_algo")
        algo = inner.get("quant_algo")
    else:
        exclude = block.get("ignore", [])
        scheme = block.get("kv_cache_scheme")
        kv = (
            "FP8"
            if isinstance(scheme, dict)
            and scheme.get("type") == "float"
            and scheme.get("num_bits") == 8
            else block.get("kv_cache_quant_algo")
        )
        algo = block.get("quant_algo")
    return (
        str(algo).upper() if algo else None,
        tuple(str(e) for e in exclude) if isinstance(exclude, list) else (),
        str(kv).upper() if isinstance(kv, str) and kv else None,
    )


def decide(
    config: Mapping[str, Any] | None,
    hf_quant_config: Mapping[str, Any] | None,
    user: str | None,
    loader: LoaderSource | None,
    modelopt: ModelOptSource | None,
    version: str | None = None,
) -> QuantDecision:
    """The decision for one checkpoint (its two JSON files) and one ``quantization=``;
    ``version``: the env's vLLM version, whose recorded facts answer where its source
    cannot (facts/quant_release.py)."""
    rules = loader if loader is not None and loader.config_json_first is not None else VLLM_0_26
    said = "the env's vLLM" if rules is loader else "vLLM 0.26.0's rules (built in)"
    config = config or {}
    top = config.get("quantization_config")
    block: Mapping[str, Any] | None = None
    source = ignored = None
    if isinstance(top, dict):
        block, source = top, CONFIG_JSON
        ignored = HF_QUANT if isinstance(hf_quant_config, dict) else None
    elif isinstance(hf_quant_config, dict):
        block, source = hf_quant_config, HF_QUANT
    if block is None:
        text = config.get("text_config")
        inner = text.get("quantization_config") if isinstance(text, dict) else None
        if isinstance(inner, dict):  # get_quant_config also looks in text_config
            block, source = inner, f"{CONFIG_JSON} (text_config)"
    disagreements = _disagreements(top, hf_quant_config) if ignored else ()
    if block is None:
        return _finish(None, None, None, None, (), None, user, rules, said, disagreements, None)
    algo, exclude, kv = _block_settings(block)
    method = (
        str(block.get("quant_method") or "")
        .lower()
        .replace("compressed_tensors", "compressed-tensors")
    )
    producer = block.get("producer")
    inner = block.get("quantization")
    if (isinstance(producer, dict) and producer.get("name") == "modelopt") and isinstance(
        inner, dict
    ):
        if algo is not None:
            table = rules.hf_layout_methods or VLLM_0_26.hf_layout_methods or {}
            if algo in table:
                method = table[algo]
            elif rules.hf_layout_unknown_raises:
                return QuantDecision(
                    source, ignored, None, algo, exclude, kv, user, None, None,
                    f"Unknown ModelOpt quant algo: {inner.get('quant_algo')}",
                    f"{source}: quantization.quant_algo",
                    disagreements, said,
                )  # fmt: skip
    out = _finish(
        source,
        ignored,
        method or None,
        algo,
        exclude,
        kv,
        user,
        rules,
        said,
        disagreements,
        modelopt,
    )
    if algo == MIXED:  # ModelOptMixedPrecisionConfig._from_config reads the same block
        served = mixed_served(modelopt.mixed_linear_algos if modelopt else None, version)
        out = replace(
            out, layers=quantized_layers(block), served=served.algos, served_assumed=served.assumed
        )
    return out


def _finish(
    source: str | None,
    ignored: str | None,
    method: str | None,
    algo: str | None,
    exclude: tuple[str, ...],
    kv: str | None,
    user: str | None,
    rules: LoaderSource,
    said: str,
    disagreements: tuple[str, ...],
    modelopt: ModelOptSource | None,
) -> QuantDecision:
    claimed = _claim(method, algo, rules, modelopt)
    effective = claimed or method
    refused = key = None
    if user and not claimed:
        if method and user != method:
            refused = MISMATCH.format(ckpt=method, user=user)
            key = "quantization"
        elif not method:
            effective = user
    if user and claimed:
        effective = claimed
    methods = rules.methods or VLLM_0_26.methods or ()
    if refused is None and effective and methods and effective not in methods:
        refused = f"Unknown quantization method: {effective}. Must be one of {list(methods)}."
        key = "quantization" if effective == user else f"{source}: quant_method"
    return QuantDecision(
        source, ignored, method, algo, exclude, kv, user, claimed, effective, refused, key,
        disagreements, said,
    )  # fmt: skip


# ModelOpt's override claims in vLLM 0.26.0 / 0.33.0 (modelopt.py), where the env's
# ModelOptSource is not read: method -> (exact algos, substrings)
CLAIMS_0_26 = {
    "modelopt": (("FP8",), ()),
    "modelopt_fp4": ((), ("NVFP4", "FP4")),
    "modelopt_mxfp8": ((), ("MXFP8",)),
    "modelopt_mixed": (("MIXED_PRECISION",), ()),
}


def _claim(
    method: str | None, algo: str | None, rules: LoaderSource, modelopt: ModelOptSource | None
) -> str | None:
    """The first override of vLLM's list that claims a ModelOpt checkpoint (its
    ``_extract_modelopt_quant_algo`` needs a ``quant_method`` starting with "modelopt")."""
    if not method or not method.startswith("modelopt") or not algo:
        return None
    claims = dict(CLAIMS_0_26)
    if modelopt is not None and modelopt.classes:
        claims = {
            c.method: (c.claims_exact, c.claims_substring)
            for c in modelopt.classes
            if c.method and (c.claims_exact or c.claims_substring)
        }
    for name in rules.overrides or VLLM_0_26.overrides or ():
        if name not in claims:
            continue
        exact, subs = claims[name]
        if algo in exact or any(s in algo for s in subs):
            return name
    return None


def _disagreements(top: Mapping[str, Any], hf: Mapping[str, Any] | None) -> tuple[str, ...]:
    if not isinstance(hf, dict):
        return ()
    a = _block_settings(top)
    b = _block_settings(hf)
    out = []
    if a[0] != b[0]:
        out.append(f"quant_algo: {CONFIG_JSON} {a[0]!r}, {HF_QUANT} {b[0]!r}")
    if set(a[1]) != set(b[1]):
        only_a = sorted(set(a[1]) - set(b[1]))
        only_b = sorted(set(b[1]) - set(a[1]))
        out.append(f"excluded modules: only in {CONFIG_JSON} {only_a}, only in {HF_QUANT} {only_b}")
    if a[2] != b[2]:
        out.append(f"kv_cache_quant_algo: {CONFIG_JSON} {a[2]!r}, {HF_QUANT} {b[2]!r}")
    return tuple(out)
