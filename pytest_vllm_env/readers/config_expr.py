"""Evaluate an expression of a vLLM model file over a checkpoint's config.json, without running
it: the conditions a module is built under (``if (layer_idx not in mlp_only_layers) and
(config.num_experts > 0 and (layer_idx + 1) % config.decoder_sparse_step == 0)``, Qwen3-MoE's
and Qwen2-MoE's ``DecoderLayer.__init__``), the sizes a layer is built with
(``intermediate_size=config.moe_intermediate_size``) and the length of a layer list
(``range(vision_config.depth)``).

The model-file reader (``readers/vllm_model_file.py``) hands over the expression with the
method's local names, its arguments and ``self.<attr>`` already replaced by what they were
assigned (``ast.unparse`` text). Here a small interpreter walks it: literals, ``config.<key>``
(and ``<x>_config.<key>`` for a nested config: ``config.vision_config.depth``),
``getattr(config, key, default)``, ``hasattr``, ``extract_layer_index(prefix)`` (the layer
index), arithmetic, comparisons, ``and``/``or``/``not``, ``x if c else y``, lists and tuples.
Anything else is :data:`UNKNOWN`: the caller then keeps its old answer (the condition unread,
no shape), never a guess.
"""

from __future__ import annotations

import ast
import functools
import operator
from collections.abc import Mapping
from typing import Any

from pytest_vllm_env.readers.pyrules import COMPARE

UNKNOWN: Any = object()
# the names a vLLM model file binds to the HF config (``config = vllm_config.model_config.
# hf_config`` / ``hf_text_config``, ``self.config``) once the reader has substituted them
CONFIG_ROOTS = ("config", "hf_config", "hf_text_config", "text_config")
LAYER_INDEX = ("extract_layer_index", "layer_idx")

_BIN = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


class _Unknown(Exception):
    pass


def evaluate(text: str, config: Mapping[str, Any], layer: int | None = None) -> Any:
    """The value of ``text`` for this config.json (``text_config`` keys first, as vLLM's
    ``hf_text_config``), ``layer`` the index of the layer being built; :data:`UNKNOWN` when
    it cannot be computed statically."""
    tree = _parsed(text)
    if tree is None:
        return UNKNOWN
    try:
        return _Eval(config, layer).eval(tree.body)
    except (_Unknown, TypeError, ValueError, ZeroDivisionError, KeyError, IndexError):
        return UNKNOWN


@functools.lru_cache(maxsize=4096)
def _parsed(text: str) -> ast.Expression | None:
    """The tree of ``text`` (the same few expressions are asked once per layer and tensor:
    parsed once); None if it does not parse."""
    try:
        return ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return None


def as_int(text: str | None, config: Mapping[str, Any], layer: int | None = None) -> int | None:
    """``text``'s value when it is an integer (not a bool), else None."""
    if not text:
        return None
    value = evaluate(text, config, layer)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _Config:
    """A config.json object (``text_config`` looked in first for a plain key)."""

    def __init__(self, data: Mapping[str, Any], outer: Mapping[str, Any] | None = None) -> None:
        self.data, self.outer = data, outer

    def get(self, key: str) -> Any:
        for d in (self.data, self.outer or {}):
            if key in d:
                value = d[key]
                return _Config(value) if isinstance(value, dict) else value
        raise _Unknown(key)

    def __bool__(self) -> bool:
        return True

    def has(self, key: str) -> bool:
        return key in self.data or key in (self.outer or {})


class _Eval:
    def __init__(self, config: Mapping[str, Any], layer: int | None) -> None:
        text = config.get("text_config")
        self.root = _Config(text, config) if isinstance(text, dict) else _Config(config)
        self.top = _Config(config, text if isinstance(text, dict) else None)
        self.layer = layer

    def eval(self, node: ast.expr) -> Any:  # noqa: PLR0911, PLR0912 - one case per syntax
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in CONFIG_ROOTS:
                return self.root
            if node.id in LAYER_INDEX and self.layer is not None:
                return self.layer
            if node.id.endswith("_config") and self.top.has(node.id):
                return self.top.get(node.id)  # a nested config handed down by name
            raise _Unknown(node.id)
        if isinstance(node, ast.Attribute):
            owner = self.eval_owner(node.value)
            if isinstance(owner, _Config):
                return owner.get(node.attr)
            raise _Unknown(node.attr)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.BoolOp):  # Python's: the deciding operand, not a bool
            value = None
            for v in node.values:
                value = self.eval(v)
                if bool(value) != isinstance(node.op, ast.And):
                    return value
            return value
        if isinstance(node, ast.UnaryOp):
            value = self.eval(node.operand)
            if isinstance(node.op, ast.Not):
                return not value
            if isinstance(node.op, ast.USub):
                return -value
            raise _Unknown("unary")
        if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
            return _BIN[type(node.op)](self.eval(node.left), self.eval(node.right))
        if isinstance(node, ast.Compare):
            left = self.eval(node.left)
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                right = self.eval(right_node)
                if type(op) not in COMPARE or not COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self.eval(node.body) if self.eval(node.test) else self.eval(node.orelse)
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.eval(e) for e in node.elts]
        raise _Unknown(type(node).__name__)

    def eval_owner(self, node: ast.expr) -> Any:
        """``config`` / ``self.config`` / ``vllm_config.model_config.hf_config``: the config."""
        text = ast.unparse(node)
        last = text.rsplit(".", 1)[-1]
        if last in CONFIG_ROOTS:
            return self.top if last == "hf_config" else self.root
        if isinstance(node, ast.Name) and last.endswith("_config") and self.top.has(last):
            return self.top.get(last)  # vision_config handed down: config.vision_config
        return self.eval(node)

    def call(self, node: ast.Call) -> Any:
        func = node.func.id if isinstance(node.func, ast.Name) else None
        if func in LAYER_INDEX and self.layer is not None:
            return self.layer
        if func in ("getattr", "hasattr") and len(node.args) >= 2:
            owner = self.eval_owner(node.args[0])
            key = self.eval(node.args[1])
            if not isinstance(owner, _Config) or not isinstance(key, str):
                raise _Unknown(func)
            if func == "hasattr":
                return owner.has(key)
            if owner.has(key):
                return owner.get(key)
            if len(node.args) >= 3:
                return self.eval(node.args[2])
            raise _Unknown(key)
        if func in ("int", "len", "bool") and len(node.args) == 1:
            return {"int": int, "len": len, "bool": bool}[func](self.eval(node.args[0]))
        raise _Unknown(func or "call")
