"""A checkpoint's tensor names and shapes as the env's vLLM takes them: how its mappers
rename a name (``models/utils.py`` ``WeightsMapper._map_name_with_shard``, then the scopes
whose own ``load_weights`` map the names below them), what a Linear weight loader does with
a tensor of another shape, and what ``param.data.copy_`` does across dtypes. Pure functions
of the model file's facts (``readers/vllm_model_file.py``), and the files vLLM reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_vllm_env.readers.shard_index import ShardLayout
from pytest_vllm_env.readers.vllm_kv_naming import KvScaleNaming
from pytest_vllm_env.readers.vllm_model_file import ModelFile

# The dim each Linear kind's weight loader splits (and so narrows) before its shape assert.
SPLIT_DIM = {"qkv": 0, "merged": 0, "column": 0, "row": 1}


def shape_effect(kind: str, got: Sequence[int], want: Sequence[int]) -> str:
    """What vLLM's weight loader does with a tensor of shape ``got`` for a Linear weight whose
    full (unsplit) shape is ``want``: "ok", "refused" (its assert, or ``narrow`` past the
    end: "start (0) + length (128) exceeds dimension size (32)"), or "truncated" (a tensor
    longer along the split dim is cut to the parameter's size first, then passes the assert:
    the rest is dropped silently). vLLM 0.26.0 and 0.33.0 alike, at any tensor-parallel size:
    ``layers/linear.py`` ``ColumnParallelLinear.weight_loader`` / ``RowParallelLinear.
    weight_loader`` narrow ``output_dim`` / ``input_dim`` unconditionally; the v2 loaders of
    quantized layers do the same (``parameter.py``: ``_ColumnvLLMParameter.
    load_column_parallel_weight``, ``RowvLLMParameter.load_row_parallel_weight``, and the
    merged / qkv loaders by shard offset); ``ReplicatedLinear`` only asserts. Measured with
    the real loaders on the CPU (fixtures/field_reports.py: a row-parallel NVFP4 weight left
    BF16 and twice as wide loads; a transposed column-parallel one is refused)."""
    got, want = tuple(got), tuple(want)
    if got == want:
        return "ok"
    dim = SPLIT_DIM.get(kind)
    if dim is None or len(got) != len(want) or len(got) != 2:
        return "refused"
    other = 1 - dim
    if got[other] != want[other] or got[dim] < want[dim]:
        return "refused"
    return "truncated"


def map_name(name: str, model: ModelFile, kv: KvScaleNaming) -> tuple[str | None, str | None, str]:
    """(vLLM name, shard id, why) for a checkpoint name, as ``WeightsMapper._map_name_with_
    shard`` renames it: the KV-scale regexes, substrings, stacked entries, prefixes, suffixes
    (None: dropped); then the mapper of every module below which the name lies whose own
    ``load_weights`` maps the names relative to it (``ModelFile.scopes``: a VL model's
    vision tower and language model), outermost first."""
    out: str | None = kv.vllm_name(name)
    why = "KV-scale rename" if out != name else ""
    out, shard, dropped = _apply(
        out, model.substrs, model.stacked, model.prefixes, model.suffixes
    )  # fmt: skip
    for scope in sorted(model.scopes, key=lambda s: s["path"].count(".")):
        head = scope["path"] + "."
        if out is None or not out.startswith(head):
            continue
        rel, inner, dropped = _apply(
            out[len(head) :], scope["substrs"], scope["stacked"], scope["prefixes"],
            scope["suffixes"],
        )  # fmt: skip
        out = None if rel is None else head + rel
        shard = inner if inner is not None else shard
    if out is None:
        return None, None, dropped
    return out, shard, why


def _apply(
    out: str | None,
    substrs: Sequence[Sequence[Any]],
    stacked: Sequence[Sequence[Any]],
    prefixes: Sequence[Sequence[Any]],
    suffixes: Sequence[Sequence[Any]],
) -> tuple[str | None, str | None, str]:
    """One ``WeightsMapper``: (name or None when dropped, shard id, why dropped)."""
    if out is None:
        return None, None, ""
    for sub, new in substrs:
        if sub in out:
            if new is None:
                return None, None, f"mapper drops {sub!r}"
            out = out.replace(sub, new, 1)
    shard = None
    for sub, new, sid in stacked:
        if sub in out:
            out, shard = out.replace(sub, new, 1), str(sid)
    for pre, new in prefixes:
        if out.startswith(pre):
            if new is None:
                return None, None, f"mapper drops {pre!r}"
            out = out.replace(pre, new, 1)
    for suf, new in suffixes:
        if out.endswith(suf):
            if new is None:
                return None, None, f"mapper drops {suf!r}"
            out = new.join(out.rsplit(suf, 1))
    return out, shard, ""


FLOATS = ("F32", "F16", "BF16", "F64")
INTS = ("U8", "I8", "I16", "I32", "I64", "U16", "U32", "U64", "BOOL")


def cast_kind(src: str, dst: str) -> str:
    """What ``param.data.copy_(loaded)`` does from ``src`` to ``dst`` (safetensors names):
    ``same``, ``widen`` (exact), ``narrow`` (float to a smaller float: rounded),
    ``to-fp8`` (values must be FP8 numbers in range), ``from-fp8`` (FP8 numbers into a
    float parameter: exact, but their scale is not applied), ``numeric`` (integers and
    floats converted as numbers: the bytes' meaning is lost)."""
    if src == dst:
        return "same"
    order = {"F16": 1, "BF16": 1, "F32": 2, "F64": 3}
    if src in order and dst in order:
        if order[src] < order[dst]:
            return "widen"
        return "narrow"
    if dst.startswith("F8") and src in FLOATS:
        return "to-fp8"
    if src.startswith("F8") and dst in FLOATS:
        return "from-fp8"
    return "numeric"


def sample_equal(a: bytes | None, b: bytes | None) -> bool | None:
    return None if a is None or b is None else a == b


def iterated_files(layout: ShardLayout) -> tuple[list[str], str | None, list[str]]:
    """(files vLLM reads in its order, the refusal if any, files present but not read)."""
    if layout.weight_map is not None:
        listed = sorted(set(layout.weight_map.values()))
        absent = [f for f in listed if f not in layout.present]
        if absent:
            where = ", ".join(str(layout.folder / f) for f in absent)
            return (
                [],
                f"FileNotFoundError: Weight files referenced in index but missing: {where}",
                [],
            )
        read = [f for f in layout.present if f in set(listed)]
        return read, None, [f for f in layout.present if f not in set(listed)]
    return list(layout.present), None, []
