"""How one model class of the env's vLLM hands checkpoint tensors to its modules, read with
:mod:`ast` (the module tree is ``readers/vllm_model_file.py``'s):

- a class's ``hf_to_vllm_mapper = WeightsMapper(...)`` (``vllm/model_executor/models/utils.py``
  ``WeightsMapper._map_name``: substrings, stacked ``.q_proj`` -> ``.qkv_proj`` shard ``q``,
  prefixes, suffixes) and the ``AutoWeightsLoader(...)`` call of its ``load_weights``;
- the scopes: every module of the tree whose class has a ``load_weights`` of its own that
  passes ``mapper=`` (``AutoWeightsLoader._load_module`` hands such a module the names
  relative to it, and its own loader applies its own mapper: Qwen2.5-VL's
  ``Qwen2_5_VisionTransformer`` under ``visual.``, the language model's ``Qwen2Model`` under
  ``language_model.model.``);
- the expert layer's loading rule (``vllm/model_executor/layers/fused_moe/routed_experts.py``
  ``RoutedExperts.load_weights`` / ``build_expert_params_mapping`` and the ``ckpt_*_proj_name``
  defaults of ``RoutedExperts.__init__``; ``fused_moe/layer.py`` ``FusedMoEFactory``'s
  ``ckpt_names`` order; ``runner/moe_runner.py`` ``MoERunner``'s ``routed_experts``
  submodule): which checkpoint names reach which of ``w13_weight`` / ``w2_weight``.
"""

from __future__ import annotations

import ast
from typing import Any

from pytest_vllm_env.readers.vllm_model_ast import (
    _Class,
    _config_key,
    _dotted,
    _mapping,
    _name,
    _strings,
)


def _method(cls: _Class, name: str, reader: Any) -> ast.FunctionDef | None:
    seen = 0
    current: _Class | None = cls
    while current is not None and seen < 6:
        if name in current.methods:
            return current.methods[name]
        nxt = None
        for base in current.bases:
            nxt = reader.find(current.module, base)
            if nxt is not None:
                break
        current, seen = nxt, seen + 1
    return None


def _returned_call(cls: _Class, name: str, reader: Any) -> ast.Call | None:
    method = _method(cls, name, reader)
    if method is None:
        return None
    for node in ast.walk(method):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Call):
            return node.value
    return None


def _class_attr(cls: _Class, reader: Any, name: str, depth: int = 0) -> ast.expr | None:
    for stmt in cls.node.body:
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                value = stmt.value
                if isinstance(value, ast.Attribute) and value.attr == name and depth < 6:
                    owner = reader.find(cls.module, _dotted(value.value).split(".")[-1])
                    if owner is not None:
                        return _class_attr(owner, reader, name, depth + 1)
                return value
    if depth < 6:
        for base in cls.bases:
            parent = reader.find(cls.module, base)
            if parent is not None:
                found = _class_attr(parent, reader, name, depth + 1)
                if found is not None:
                    return found
    return None


def _mapper(cls: _Class, reader: Any) -> dict[str, Any]:
    value = _class_attr(cls, reader, "hf_to_vllm_mapper")
    out: dict[str, Any] = {"stacked": (), "prefixes": (), "substrs": (), "suffixes": ()}
    if not (isinstance(value, ast.Call) and _name(value.func) == "WeightsMapper"):
        return out
    for kw in value.keywords:
        if kw.arg == "orig_to_new_stacked" and isinstance(kw.value, ast.Dict):
            stacked = []
            for k, v in zip(kw.value.keys, kw.value.values, strict=False):
                if (
                    isinstance(k, ast.Constant)
                    and isinstance(v, ast.Tuple)
                    and len(v.elts) == 2
                    and isinstance(v.elts[0], ast.Constant)
                    and isinstance(v.elts[1], ast.Constant)
                ):
                    stacked.append((str(k.value), str(v.elts[0].value), str(v.elts[1].value)))
            out["stacked"] = tuple(stacked)
        elif kw.arg in ("orig_to_new_prefix", "orig_to_new_substr", "orig_to_new_suffix"):
            key = {"orig_to_new_prefix": "prefixes", "orig_to_new_substr": "substrs"}.get(
                kw.arg, "suffixes"
            )
            out[key] = _mapping(kw.value)
    return out


def _loader_call(cls: _Class, reader: Any) -> dict[str, Any]:
    """The ``AutoWeightsLoader(...)`` of ``cls.load_weights`` (its own or a base's)."""
    method = _method(cls, "load_weights", reader)
    out: dict[str, Any] = {"auto_loader": False}
    if method is None:
        return out
    for node in ast.walk(method):
        if isinstance(node, ast.Call) and _name(node.func) == "AutoWeightsLoader":
            out["auto_loader"] = True
            for kw in node.keywords:
                value = kw.value
                guard = None
                if isinstance(value, ast.IfExp):
                    guard = _config_key(value.test)
                    value = value.body
                if kw.arg == "skip_prefixes":
                    out["skip_prefixes"] = _strings(value)
                    out["skip_prefixes_if"] = guard
                elif kw.arg == "skip_substrs":
                    out["skip_substrs"] = _strings(value)
                elif kw.arg == "ignore_unexpected_prefixes":
                    out["ignore_prefixes"] = _strings(value)
                elif kw.arg == "ignore_unexpected_suffixes":
                    out["ignore_suffixes"] = _strings(value)
            break
    return out
