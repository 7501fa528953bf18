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
from collections.abc import Callable
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


def _passes_mapper(cls: _Class, reader: Any) -> bool:
    """``load_weights`` ends in ``loader.load_weights(weights, mapper=...)``."""
    method = _method(cls, "load_weights", reader)
    return method is not None and any(
        isinstance(n, ast.Call)
        and _name(n.func) == "load_weights"
        and any(k.arg == "mapper" for k in n.keywords)
        for n in ast.walk(method)
    )


def scopes(visited: list[tuple[str, _Class]], root: dict[str, Any], reader: Any) -> tuple:
    """The modules of the tree (``visited``: path, class) whose own ``load_weights`` applies
    a mapper of its own to the names below them: ``AutoWeightsLoader._load_module``
    (``models/utils.py``) hands a child module that has ``load_weights`` its names relative
    to it. A scope whose mapper is the model's own (``root``: already applied to the full
    names, LlamaModel's under LlamaForCausalLM) is left out: stacked and substring entries
    map the same names either way."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for path, cls in visited:
        if not path or path in seen or "{i}" in path and path.endswith("{i}"):
            continue
        seen.add(path)
        loader = _loader_call(cls, reader)
        mapper = _mapper(cls, reader) if _passes_mapper(cls, reader) else {}
        if mapper == {k: root[k] for k in mapper} or not any(mapper.values()):
            mapper = {}
        # its own AutoWeightsLoader's skip rules hold for the names below it too (0.26.0's
        # Qwen2ForCausalLM under a VL model's language_model: skip_prefixes=["lm_head."]
        # when tie_word_embeddings)
        skips = loader.get("skip_prefixes") or ()
        if not mapper and not skips and not loader.get("ignore_suffixes"):
            continue
        empty = {"stacked": [], "prefixes": [], "substrs": [], "suffixes": []}
        out.append(
            {"path": path, **empty, **{k: list(v) for k, v in mapper.items()}}
            | {"ignore_suffixes": list(loader.get("ignore_suffixes", ()))}
            | {"skip_prefixes": list(skips), "skip_prefixes_if": loader.get("skip_prefixes_if")}
        )
    return tuple(out)


ROUTED_PY = "vllm/model_executor/layers/fused_moe/routed_experts.py"
FACTORY_PY = "vllm/model_executor/layers/fused_moe/layer.py"
RUNNER_PY = "vllm/model_executor/layers/fused_moe/runner/moe_runner.py"


def experts_rule(load: Callable[[str], str | None]) -> dict[str, Any]:
    """How the env's expert layer takes checkpoint tensors (0.26.0 and 0.33.0 alike):

    - ``RoutedExperts.__init__``'s ``ckpt_gate_proj_name`` / ``ckpt_down_proj_name`` /
      ``ckpt_up_proj_name`` defaults, and the factory's ``ckpt_names`` tuple order
      (``FusedMoE`` / ``FusedMoEFactory``: ``ckpt_gate_proj_name=ckpt_names[0]``...);
    - ``build_expert_params_mapping``: ``experts.<e>.<gate|up>.`` -> ``w13_`` (shards w1,
      w3), ``experts.<e>.<down>.`` -> ``w2_``, for ``e`` below the number of experts (a
      name no entry matches is yielded by no loader: silently not loaded); a fused 3-D
      ``experts.gate_up_proj`` (``w1``/``w3`` names: ``experts.w13``) fills every expert;
    - ``MoERunner.load_weights``: the submodule it hands the names to (``routed_experts``),
      the prefix of the parameters.
    A piece not found is named in ``missing``."""
    missing: list[str] = []

    def tree(path: str) -> ast.Module | None:
        text = load(path)
        try:
            return ast.parse(text) if text is not None else None
        except (SyntaxError, ValueError):
            return None

    names = {"gate": "gate_proj", "down": "down_proj", "up": "up_proj"}
    order = ["gate", "down", "up"]
    routed = tree(ROUTED_PY)
    if routed is None:
        return {"missing": [f"{ROUTED_PY} is not there"]}
    for node in ast.walk(routed):
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            args = node.args.args[len(node.args.args) - len(node.args.defaults) :]
            for arg, default in zip(args, node.args.defaults, strict=False):
                for key in names:
                    if arg.arg == f"ckpt_{key}_proj_name" and isinstance(default, ast.Constant):
                        names[key] = str(default.value)
    texts = {c.value for c in ast.walk(routed) if isinstance(c, ast.Constant)}
    texts |= {
        v.value
        for j in ast.walk(routed)
        if isinstance(j, ast.JoinedStr)
        for v in j.values
        if isinstance(v, ast.Constant)
    }
    if not {"w13_", "w2_"} <= {t for t in texts if isinstance(t, str)}:
        missing.append(f"{ROUTED_PY}: no w13_ / w2_ expert parameters")
    factory = tree(FACTORY_PY)
    for call in ast.walk(factory) if factory is not None else ():
        if isinstance(call, ast.keyword) and call.arg and isinstance(call.value, ast.Subscript):
            sub = call.value
            if _dotted(sub.value) == "ckpt_names" and isinstance(sub.slice, ast.Constant):
                for key in names:
                    if call.arg == f"ckpt_{key}_proj_name":
                        order[int(sub.slice.value)] = key
    prefix = ""
    runner = tree(RUNNER_PY)
    for cls in ast.walk(runner) if runner is not None else ():
        if isinstance(cls, ast.ClassDef) and cls.name == "MoERunner":
            for call in ast.walk(cls):
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "load_weights"
                    and _dotted(call.func.value).startswith("self.")
                ):
                    prefix = _dotted(call.func.value).removeprefix("self.") + "."
                    break
    return {
        "names": names,
        "order": order,
        "prefix": prefix,
        "fused": _fused_names(routed),
        "missing": missing,
    }


def _fused_names(tree: ast.Module) -> dict[str, str]:
    """gate name -> the fused gate-and-up tensor name ``build_expert_params_mapping`` also
    accepts (``elif ckpt_gate_proj_name == "gate_proj" and ckpt_up_proj_name == "up_proj":
    gate_up = "gate_up_proj"``; ``w1`` -> ``w13``)."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.If):
            continue
        gate = next(
            (
                c.comparators[0].value
                for c in ast.walk(node.test)
                if isinstance(c, ast.Compare)
                and _dotted(c.left) == "ckpt_gate_proj_name"
                and isinstance(c.comparators[0], ast.Constant)
            ),
            None,
        )
        fused = next(
            (
                s.value.value
                for s in node.body
                if isinstance(s, ast.Assign)
                and _dotted(s.targets[0]) == "gate_up"
                and isinstance(s.value, ast.Constant)
            ),
            None,
        )
        if isinstance(gate, str) and isinstance(fused, str):
            out[gate] = fused
    return out


LINEAR_PY = "vllm/model_executor/layers/linear.py"


def bias_defaults(load: Callable[[str], str | None]) -> dict[str, bool]:
    """Linear class -> its ``bias=`` default (``layers/linear.py``: ``RowParallelLinear``,
    ``ColumnParallelLinear``, ``QKVParallelLinear``... default ``bias=True``): a layer built
    without ``bias=`` has a bias parameter (a vision tower's ``attn.proj``)."""
    text = load(LINEAR_PY)
    try:
        tree = ast.parse(text) if text is not None else None
    except (SyntaxError, ValueError):
        return {}
    out: dict[str, bool] = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)) if tree else ():
        init = next(
            (f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"),
            None,
        )
        if init is None:
            continue
        a = init.args
        pairs = list(zip(a.args[len(a.args) - len(a.defaults) :], a.defaults, strict=False))
        pairs += [(x, v) for x, v in zip(a.kwonlyargs, a.kw_defaults, strict=False) if v]
        for arg, value in pairs:
            if arg.arg == "bias" and isinstance(value, ast.Constant):
                out[cls.name] = bool(value.value)
    return out


# -- registry ----------------------------------------------------------------------------------
def parse_registry_map(source: str) -> dict[str, tuple[str, str]]:
    """``architecture -> (module, class)`` from the literal dicts of ``registry.py``."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return {}
    out: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if not isinstance(value, ast.Dict):
            continue
        for key, val in zip(value.keys, value.values, strict=False):
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                continue
            if isinstance(val, ast.Tuple) and len(val.elts) >= 2:
                mod, cls = val.elts[0], val.elts[1]
                if isinstance(mod, ast.Constant) and isinstance(cls, ast.Constant):
                    out.setdefault(key.value, (str(mod.value), str(cls.value)))
    return out
