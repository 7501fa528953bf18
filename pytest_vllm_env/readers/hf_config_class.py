"""What the env's transformers config class adds to a checkpoint's config.json, read with
:mod:`ast`: vLLM's model files read ``config.<attr>`` through that class, so a key the file
does not hold is found under its ``attribute_map`` alias or takes the class default.

- ``transformers/models/auto/modeling_auto.py``: the ``("<model_type>", "<Architecture>")``
  pairs of the auto-model mappings, so the architecture names its model type;
- ``transformers/models/<model_type>/configuration_<model_type>.py``: each config class's
  ``attribute_map`` (Qwen3-MoE and Mixtral: ``"num_experts": "num_local_experts"``, the name
  transformers 5 writes) and its defaults (transformers 5: annotated class attributes,
  ``decoder_sparse_step: int = 1``; 4.x: ``__init__`` keyword defaults); literals only.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

AUTO_PY = "transformers/models/auto/modeling_auto.py"


def model_type_of(arch: str, load: Callable[[str], str | None]) -> str | None:
    """The model type whose auto mappings name ``arch``."""
    text = load(AUTO_PY)
    if text is None:
        return None
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Tuple)
            and len(node.elts) == 2
            and all(isinstance(e, ast.Constant) for e in node.elts)
            and node.elts[1].value == arch  # type: ignore[attr-defined]
        ):
            return str(node.elts[0].value)  # type: ignore[attr-defined]
    return None


def read(arch: str, load: Callable[[str], str | None]) -> dict[str, Any]:
    """``{"model_type", "attribute_map", "defaults"}`` of the config classes of ``arch``'s
    model type (every class of its configuration file: a VL model's text config too); {}
    when not found."""
    kind = model_type_of(arch, load)
    if kind is None:
        return {}
    text = load(f"transformers/models/{kind}/configuration_{kind}.py")
    try:
        tree = ast.parse(text) if text is not None else None
    except (SyntaxError, ValueError):
        tree = None
    if tree is None:
        return {}
    aliases: dict[str, str] = {}
    defaults: dict[str, Any] = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        # defaults: the class of this model type only (a VL file's vision config class has
        # its own hidden_size); aliases: every class
        main = any(
            isinstance(s, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "model_type" for t in s.targets)
            and _literal(s.value) == kind
            for s in cls.body
        )
        for stmt in cls.body:
            if isinstance(stmt, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "attribute_map" for t in stmt.targets
            ):
                value = _literal(stmt.value)
                if isinstance(value, dict):
                    aliases.update({str(k): str(v) for k, v in value.items()})
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                value = _literal(stmt.value)
                if main and value is not _NONE and value is not None:
                    defaults.setdefault(stmt.target.id, value)
            elif isinstance(stmt, ast.FunctionDef) and stmt.name == "__init__":
                args = stmt.args.args[len(stmt.args.args) - len(stmt.args.defaults) :]
                pairs = list(zip(args, stmt.args.defaults, strict=False))
                pairs += list(zip(stmt.args.kwonlyargs, stmt.args.kw_defaults, strict=False))
                for arg, default in pairs:
                    value = _literal(default)
                    if main and value is not _NONE and value is not None:
                        defaults.setdefault(arg.arg, value)
    return {"model_type": kind, "attribute_map": aliases, "defaults": defaults}


_NONE = object()


def _literal(node: ast.expr | None) -> Any:
    if node is None:
        return _NONE
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return _NONE
