"""What vLLM's weight loader does with each Linear of a ModelOpt checkpoint.

The rules here were read from vLLM 0.26.0's source and calibrated on real loads of real
ModelOpt 0.47 exports and broken variants of them on an H100 (docs/gpu-runs.md, the
calibration round): for each way a Linear can differ from what vLLM builds, whether vLLM
**refuses** (raises while loading), loads but computes **wrong** results, or **works** (at a
cost, or exactly). They decide ``modelopt.tensors-complete``'s level:

- vLLM sees *fused* layers: ``q_proj``/``k_proj``/``v_proj`` load into one ``qkv_proj``,
  ``gate_proj``/``up_proj`` into ``gate_up_proj`` (``packed_modules_mapping``). Exclusion is
  decided on the fused name: an exact exclude entry must name every shard or none
  ("Detected some but not all shards of ... are quantized"), and a wildcard or substring
  that matches ``q_proj`` does not match ``qkv_proj``
  (``quantization/utils/quant_utils.py:is_layer_skipped``,
  ``modelopt.py:ModelOptQuantConfigBase.is_layer_excluded``).
- A ModelOpt wildcard ``x*`` becomes ``x`` and ``x.*`` before matching
  (``apply_vllm_mapper``, vLLM issue 28072).
- Per-tensor FP8 scales load through ``PerTensorScaleParameter``: a scale of shape ``[]``
  or ``[1]`` loads, anything else hits a bare ``assert`` (``parameter.py``).
- Scales left unloaded keep ``torch.finfo(float32).min``; ``process_weights_after_loading``
  takes the *max* input scale over the shards of a fused layer, so a shard without
  ``input_scale`` borrows its siblings' (works), while a layer of its own without one
  computes with -3.4e38 (wrong); a missing ``weight_scale`` is wrong either way.
- A weight stored in BF16 where vLLM built FP8 is cast to FP8 on load (``copy_``): exact
  when the stored numbers are FP8 values already, wrong when they are the dequantized
  weights (the scale is then applied twice), NaN beyond FP8's range.
- An excluded layer is built unquantized: scale tensors for it have no parameter to go to
  (refused: "There is no module or parameter named ..."); FP8 weights for it are cast to
  BF16 without their scale (wrong).
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pytest_vllm_env.readers.safetensors_header import TensorInfo
from pytest_vllm_env.readers.weight_sample import WeightSample
from pytest_vllm_env.tables.quant_formats import FLOAT_DTYPES, FP8_E4M3_MAX, QuantFormat

# refuses / wrong: failed; cost: a warning; note: works exactly, said in the passed summary
Effect = Literal["refuses", "wrong", "cost", "note"]
# vLLM's packed_modules_mapping for Llama/Qwen/Mistral-style decoders (and most others)
FUSED: dict[str, tuple[str, ...]] = {
    "qkv_proj": ("q_proj", "k_proj", "v_proj"),
    "gate_up_proj": ("gate_proj", "up_proj"),
}
SHARD_OF: dict[str, str] = {shard: fused for fused, shards in FUSED.items() for shard in shards}
# vLLM keeps these unquantized by name (for exports older than ModelOpt 0.39)
ALWAYS_UNQUANTIZED = ("vision_tower", "vision_model", "vit_large_projector")


@dataclass(frozen=True)
class LayerIssue:
    """One way a layer differs from what vLLM builds, and what vLLM then does."""

    module: str  # the checkpoint's module name (a shard's, for fused layers)
    effect: Effect
    kind: str  # "scale-shape", "missing-scale", "excluded-has-scales", ...
    text: str
    tensor: str | None = None  # the tensor vLLM chokes on, when one does


# -- exclusion as vLLM decides it -----------------------------------------------------------
def vllm_patterns(exclude: Sequence[str]) -> tuple[str, ...]:
    """The exclude list after ``apply_vllm_mapper``: ``x*`` (not ``x.*``) becomes ``x`` and
    ``x.*``."""
    out: list[str] = []
    for entry in exclude:
        if len(entry) >= 2 and entry.endswith("*") and entry[-2] != ".":
            out += [entry[:-1], entry[:-1] + ".*"]
        else:
            out.append(entry)
    return tuple(out)


class ShardMismatch(Exception):
    """vLLM's ValueError: some but not all shards of a fused layer are excluded."""


def fused_name(prefix: str, modules: Mapping[str, object]) -> str:
    """The layer vLLM builds for a checkpoint module: ``...q_proj`` -> ``...qkv_proj`` when
    its sibling shards are in the checkpoint too; else the name itself."""
    parent, _, leaf = prefix.rpartition(".")
    fused = SHARD_OF.get(leaf)
    if fused and all(f"{parent}.{s}" in modules for s in FUSED[fused]):
        return f"{parent}.{fused}"
    return prefix


def shards(layer: str) -> tuple[str, ...]:
    """The checkpoint modules of a vLLM layer (itself when it is not fused)."""
    parent, _, leaf = layer.rpartition(".")
    return tuple(f"{parent}.{s}" for s in FUSED[leaf]) if leaf in FUSED else (layer,)


def excluder(
    exclude: Sequence[str], *, legacy: bool = False, split: bool = True
) -> Callable[[str], bool]:
    """vLLM's ``is_layer_excluded`` for a vLLM layer name (fused names for fused layers);
    raises :class:`ShardMismatch` where vLLM raises. Which vLLM: read from the env's own
    ``modelopt.py`` (``vllm_source.ModelOptSource.exclusion``): ``legacy`` is 0.10.x's rule
    (an entry excludes every layer whose name holds it as a substring; no wildcards, no shard
    check; only LinearBase layers, never lm_head, are quantized); ``split`` is 0.26.0's
    ``apply_vllm_mapper`` turning ``x*`` into ``x`` and ``x.*`` (0.12.0 does not). All three
    are run against the real functions of those wheels (tests/test_modelopt_real_vllm.py)."""
    if legacy:
        entries = tuple(exclude)

        def substring(layer: str) -> bool:
            bare = layer.removeprefix("language_model.")
            return any(e in layer or (bare != layer and e in bare) for e in entries)

        return substring
    patterns = vllm_patterns(exclude) if split else tuple(exclude)
    exact = frozenset(patterns)
    globs = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or "(?!)")
    always = re.compile("|".join(ALWAYS_UNQUANTIZED))

    def excluded(layer: str) -> bool:
        leaf = layer.rpartition(".")[2]
        if leaf in FUSED and layer not in exact:
            flags = {s in exact for s in shards(layer)}
            if len(flags) > 1:
                raise ShardMismatch(layer)
            if flags == {True}:
                return True
        elif layer in exact:
            return True
        bare = layer.removeprefix("language_model.") if layer.startswith("language_model.") else ""
        for entry in patterns:
            if entry != layer and (entry in layer or (bare and entry in bare)):
                return True
        if globs.match(layer):
            return True
        return always.search(layer) is not None

    return excluded


# -- the judgement ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerFacts:
    """What :func:`judge_layers` needs: the checkpoint's Linear modules and scale values."""

    linear: Mapping[str, Mapping[str, TensorInfo]]
    scales: Mapping[str, Sequence[float]]
    samples: Mapping[str, WeightSample]
    # config.json's [out, in] of each Linear (unpacked), by module prefix: vLLM sizes a
    # layer's weight and scale parameters from these, not from the tensors
    dims: Mapping[str, tuple[int, int]] = field(default_factory=dict)


def judge_layers(
    facts: LayerFacts,
    fmt: QuantFormat,
    exclude: Sequence[str],
    *,
    legacy: bool = False,
    split: bool = True,
) -> tuple[list[LayerIssue], int]:
    """Every Linear against what vLLM builds for it under ``fmt`` (its row in
    :mod:`pytest_vllm_env.tables.quant_formats`: weight dtypes, required scales, their
    layouts): ``(issues, quantized layer count)``; ``legacy`` and ``split`` as
    :func:`excluder` takes them."""
    modules = facts.linear
    algo = fmt.name
    weight_ok = fmt.weight_dtypes
    floats = FLOAT_DTYPES
    required = fmt.required
    borrowed = {s.name for s in fmt.scales if s.from_siblings}
    is_excluded = excluder(exclude, legacy=legacy, split=split)
    if legacy:  # lm_head is a ParallelLMHead, which 0.10 never quantizes
        base = is_excluded
        is_excluded = lambda layer: layer.endswith("lm_head") or base(layer)  # noqa: E731
    issues: list[LayerIssue] = []
    quantized = 0
    decided: dict[str, bool] = {}
    for prefix in sorted(modules):
        parts = modules[prefix]
        layer = fused_name(prefix, modules)
        if layer not in decided:
            try:
                decided[layer] = is_excluded(layer)
            except ShardMismatch:
                named = [s for s in shards(layer) if s in exclude]
                issues.append(
                    LayerIssue(
                        prefix,
                        "refuses",
                        "shard-exclusion",
                        f"{layer}: the exclude list names {', '.join(named) or 'some'} but not "
                        "every shard vLLM fuses into it (vLLM: 'Detected some but not all "
                        f"shards of {layer} are quantized')",
                    )
                )
                decided[layer] = True
                continue
        weight = parts.get("weight")
        scales_here = [s for s in parts if s.endswith(("_scale", "_scale_2"))]
        if decided[layer]:
            if scales_here:
                issues.append(
                    LayerIssue(
                        prefix,
                        "refuses",
                        "excluded-has-scales",
                        f"{prefix} is excluded (vLLM builds it unquantized) but holds "
                        f"{', '.join(sorted(scales_here))}: vLLM says 'There is no module or "
                        f"parameter named {prefix}.{sorted(scales_here)[0]}'",
                        f"{prefix}.{sorted(scales_here)[0]}",
                    )
                )
            elif weight is not None and weight.dtype not in floats:
                issues.append(
                    LayerIssue(
                        prefix,
                        "wrong",
                        "excluded-but-quantized",
                        f"{prefix} is excluded but its weight is {weight.dtype}: vLLM casts it "
                        "to BF16 without a scale",
                        f"{prefix}.weight",
                    )
                )
            continue
        if weight is None:
            issues.append(LayerIssue(prefix, "wrong", "no-weight", f"{prefix}: no weight"))
            continue
        quantized += 1
        if weight.dtype in floats and not scales_here:
            issues.append(
                LayerIssue(
                    prefix,
                    "wrong",
                    "not-excluded-unquantized",
                    f"{prefix} ({weight.dtype}, no scales) is not excluded, so vLLM builds an "
                    f"{algo} layer and its scales stay unset",
                    f"{prefix}.weight",
                )
            )
            continue
        siblings = [s for s in shards(layer) if s != prefix and s in modules]
        for scale in required:
            if scale in parts:
                continue
            if scale in borrowed and any(scale in modules[s] for s in siblings):
                # q/k/v (gate/up) see the same input: their input scales are equal
                issues.append(
                    LayerIssue(
                        prefix,
                        "note",
                        "scale-borrowed",
                        f"{prefix} has no {scale}; vLLM takes the largest of {layer}'s other "
                        "shards' (the same input, so the same scale)",
                    )
                )
                continue
            issues.append(
                LayerIssue(
                    prefix,
                    "wrong",
                    "missing-scale",
                    f"{prefix} has no {scale}: vLLM keeps its placeholder "
                    "(float32 min, -3.4e38) and computes garbage",
                    f"{prefix}.{scale}",
                )
            )
        out, inp = (weight.shape + (0, 0))[:2] if len(weight.shape) == 2 else (0, 0)
        if prefix in facts.dims and out:
            # the scales are judged against the shape vLLM builds (config.json's); a weight
            # of another shape is modelopt.shapes-match-config's and checkpoint.parameters'
            want_out, want_in = facts.dims[prefix]
            packed = weight.dtype == "U8" and fmt.packing > 1
            out, inp = want_out, want_in // fmt.packing if packed else want_in
        for spec in fmt.scales:
            scale, wanted = spec.name, spec.layout.text
            info = parts.get(scale)
            if (
                info is not None
                and out
                and not spec.layout.accepts(tuple(info.shape), out, inp, fmt.packing)
            ):
                issues.append(
                    LayerIssue(
                        prefix,
                        "refuses",
                        "scale-shape",
                        f"{prefix}.{scale} has shape {list(info.shape)}; vLLM's {algo} loader "
                        f"accepts {wanted} and fails an assert in "
                        "vllm/model_executor/parameter.py",
                        f"{prefix}.{scale}",
                    )
                )
        if weight.dtype not in weight_ok:
            issues.append(_stored_weight(prefix, weight, algo, weight_ok, floats, facts))
    return issues, quantized


def _stored_weight(
    prefix: str,
    weight: TensorInfo,
    algo: str,
    weight_ok: frozenset[str],
    floats: frozenset[str],
    facts: LayerFacts,
) -> LayerIssue:
    """A quantized layer's weight in another dtype: what the cast on load gives."""
    want = "/".join(sorted(weight_ok))
    name = f"{prefix}.weight"
    if weight.dtype not in floats or "F8_E4M3" not in weight_ok:
        # vLLM's weight loaders end in ``param.data.copy_(loaded_weight)``, which converts any
        # dtype to the parameter's as numbers (an integer 200 becomes FP8 200.0 -> NaN/448):
        # the load goes on with other numbers. Measured: vLLM 0.26.0 and 0.33.0 load a U8
        # o_proj.weight into the FP8 parameter (fixtures/loader_truth, fp8-weight-u8).
        return LayerIssue(
            prefix,
            "wrong",
            "weight-dtype",
            f"{name} is {weight.dtype}, {algo} needs {want}"
            + ("" if weight.dtype in floats else ": vLLM's copy_ converts its integers as numbers"),
            name,
        )
    sample = facts.samples.get(name)
    if sample is None:
        return LayerIssue(
            prefix,
            "cost",
            "weight-dtype-unread",
            f"{name} is {weight.dtype} where vLLM builds FP8 (cast on load; its numbers could "
            "not be read to tell whether that is exact)",
            name,
        )
    scale = max((abs(v) for v in facts.scales.get(f"{prefix}.weight_scale", ())), default=1.0)
    if sample.nonfinite or sample.over_range:
        return LayerIssue(
            prefix,
            "wrong",
            "weight-dtype",
            f"{name} is {weight.dtype} with values beyond FP8's +-448 (max |w| "
            f"{sample.max_abs:.4g}): the cast to float8_e4m3fn on load turns them into NaN",
            name,
        )
    if not sample.off_grid:
        return LayerIssue(
            prefix,
            "cost",
            "weight-dtype-exact",
            f"{name} is {weight.dtype} but holds FP8 values ({sample.count} sampled, all on the "
            "FP8 grid): vLLM casts them exactly; the file is larger and slower to load than "
            "the FP8 export",
            name,
        )
    # Which domain are the numbers in? ModelOpt's scale is amax/448: FP8-domain values reach
    # about 448, dequantized ones about 448 * weight_scale.
    if scale > 0 and abs(math.log(scale)) > math.log(4):
        quant = abs(math.log(max(sample.max_abs, 1e-30) / FP8_E4M3_MAX))
        dequant = abs(math.log(max(sample.max_abs, 1e-30) / (FP8_E4M3_MAX * scale)))
        if dequant < quant:
            return LayerIssue(
                prefix,
                "wrong",
                "weight-dequantized",
                f"{name} is {weight.dtype} holding dequantized weights (max |w| "
                f"{sample.max_abs:.4g} ~ 448 x weight_scale {scale:.4g}): vLLM casts them to "
                "FP8 and multiplies by weight_scale again",
                name,
            )
    return LayerIssue(
        prefix,
        "cost",
        "weight-dtype-rounded",
        f"{name} is {weight.dtype} with values off the FP8 grid ({sample.off_grid} of "
        f"{sample.count} sampled): vLLM rounds them to FP8 on load (an accuracy risk)",
        name,
    )
