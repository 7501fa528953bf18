"""The fix ``modelopt.tensors-complete`` gives for a scale vLLM's loader refuses, in the format in
hand: the layout that algorithm's loader takes (a group scale: one value per ``size`` inputs) and
the ModelOpt config that writes it (``tables/quant_formats.py``: ``exported_as``). Measured: the
W4A16_NVFP4 export of ``mtq.NVFP4_MLP_WEIGHT_ONLY_CFG`` (group_size 32) was refused by vLLM
0.26.0 on the H100; the one of ``mtq.W4A16_NVFP4_CFG`` (16) loaded (algos_truth-0.26.0.json)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from pytest_vllm_env.checks.modelopt_common import REEXPORT
from pytest_vllm_env.facts.modelopt_load import LayerIssue
from pytest_vllm_env.tables.quant_formats import modelopt_format

# the algorithm whose loader a scale-shape issue names (facts/modelopt_load.py writes
# "<tensor> has shape [...]; vLLM's <ALGO> loader accepts <layout> ...": a mixed-precision
# layer names its own)
_LOADER = re.compile(r"vLLM's (\S+) loader accepts")
_RECIPE = re.compile(r"\bmtq\.\w+_CFG\b")


def algo_of(issue: LayerIssue) -> str | None:
    m = _LOADER.search(issue.text)
    return m.group(1) if m else None


def reexport(algo: str | None) -> str:
    """Re-export in the format in hand: the ModelOpt config that writes ``algo`` as vLLM
    loads it (the table's ``exported_as``); FP8's when the format is not known."""
    fmt = modelopt_format(algo)
    recipe = _RECIPE.search(fmt.exported_as) if fmt is not None else None
    if fmt is None or recipe is None:
        return (
            REEXPORT
            if fmt is None or fmt.name == "FP8"
            else (
                f"re-export with the NVIDIA ModelOpt config that writes quant_algo {fmt.name} "
                "in the layout vLLM loads, then export_hf_checkpoint(model, export_dir=...)"
            )
        )
    return (
        f"re-export with NVIDIA ModelOpt: mtq.quantize(model, {recipe.group(0)}, forward_loop) "
        "then export_hf_checkpoint(model, export_dir=...)"
    )


def scale_shape_fix(issues: Sequence[LayerIssue], fixes: Mapping[str, str]) -> str:
    """What layout the loader of the algorithm in hand needs, per scale it refused: a
    per-tensor scale is a scalar; a group scale one value per ``size`` inputs (NVFP4 and
    W4A16_NVFP4: 16; ModelOpt's group_size in the quant config)."""
    out: list[str] = []
    for issue in issues:
        algo = algo_of(issue)
        fmt = modelopt_format(algo)
        scale = (issue.tensor or "").rpartition(".")[2]
        spec = next((x for x in fmt.scales if x.name == scale), None) if fmt else None
        if fmt is None or spec is None or (fmt.name == "FP8" and spec.layout.kind == "per-tensor"):
            out.append(fixes["scale-shape"])
        elif spec.layout.kind == "group":
            out.append(
                f"vLLM's {fmt.name} loader takes one {scale} per {spec.layout.size} inputs "
                f"({spec.layout.text}): re-export with group_size {spec.layout.size}, not the "
                "group size this export was written with"
            )
        elif spec.layout.kind == "per-tensor":
            out.append(f"{fmt.name}'s {scale} must be a scalar ([] or [1]): re-export")
        else:
            out.append(f"vLLM's {fmt.name} loader takes {scale} as {spec.layout.text}: re-export")
    return "; ".join(dict.fromkeys(out))


def issue_fix(
    issues: Sequence[LayerIssue], algo: str | None, source: str, fixes: Mapping[str, str]
) -> str:
    """The fix of ``modelopt.tensors-complete``'s issues (``fixes``: per kind), a refused
    scale's and the re-export in the format in hand."""
    kinds = list(dict.fromkeys(i.kind for i in issues))
    shape = [i for i in issues if i.kind == "scale-shape"]
    texts = [
        scale_shape_fix(shape, fixes) if k == "scale-shape" else fixes.get(k, REEXPORT)
        for k in kinds
    ]
    if any(k in ("missing-scale", "scale-shape", "no-weight") for k in kinds):
        algos = [a for i in shape if (a := algo_of(i))] or [algo]
        texts.append(reexport(algos[0]))
    return "; ".join(dict.fromkeys(texts)) + f" (the exclude list is read from {source})"
