"""A three-valued evaluation of the predicates a vLLM attention backend answers
``validate_configuration`` with (``supports_kv_cache_dtype``, ``supports_head_size``,
``get_supported_head_sizes``, ``supports_compute_capability``), from their source as the env's
vLLM holds it (:mod:`pytest_vllm_env.readers.vllm_attn_backends`). Pure: no file, no import of
vLLM; ``ast.parse`` of source text already read.

What a predicate asks of the running process is answered from facts: the GPU's capability
(``current_platform.is_device_capability_family(N)``, ``has_device_capability(N)``,
``DeviceCapability(a, b)`` comparisons), the platform (CUDA: ``is_xpu()``/``is_rocm()`` are
false), and the FlashAttention version ``get_flash_attn_version()`` returns there (given by the
caller, from ``vllm/v1/attention/backends/fa_utils.py``'s rule). A helper the backend's module
defines or imports (``is_quantized_kv_cache``, ``flash_attn_supports_kv_cache_dtype``,
``_nvfp4_kv_on_fa2``) is evaluated from its own source when it was read. Anything else (a
library probe such as ``supports_trtllm_attention()``) is UNKNOWN, and so is what depends on
it; an ``if`` on an unknown test is decided only when both branches agree.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()
_MAX_DEPTH = 6


class _Return(Exception):
    def __init__(self, value: Any) -> None:
        self.value = value


@dataclass(frozen=True)
class Member:
    """An enum member by name (``KVQuantMode.NONE``)."""

    name: str


@dataclass(frozen=True)
class Platform:
    """What the predicates ask of the process: ``cc`` (major, minor) of the GPU, ``fa``: the
    FlashAttention version ``get_flash_attn_version()`` returns there (None: vLLM's None,
    UNKNOWN: cannot be told statically)."""

    cc: tuple[int, int]
    fa: Any = UNKNOWN


def _not(v: Any) -> Any:
    return UNKNOWN if v is UNKNOWN else not v


def _and(values: list[Callable[[], Any]]) -> Any:
    """Python's ``and`` over three values (short-circuit on a definite false)."""
    out: Any = True
    for f in values:
        v = f()
        if v is UNKNOWN:
            out = UNKNOWN
        elif not v:
            return v if out is not UNKNOWN else False
        elif out is not UNKNOWN:
            out = v
    return out


def _or(values: list[Callable[[], Any]]) -> Any:
    out: Any = False
    for f in values:
        v = f()
        if v is UNKNOWN:
            out = UNKNOWN
        elif v:
            return v
    return out


class Evaluator:
    """Evaluates functions of one backend (``functions``: name -> source; the class's
    predicates) with ``helpers`` (module-level functions by name), on ``platform``."""

    def __init__(
        self,
        functions: Mapping[str, str],
        helpers: Mapping[str, str],
        platform: Platform,
        kv_dtypes: tuple[str, ...],
        base: Mapping[str, str] | None = None,
    ) -> None:
        self.functions = {k: _parse(v) for k, v in functions.items()}
        self.helpers = {k: _parse(v) for k, v in helpers.items()}
        self.base = {k: _parse(v) for k, v in (base or {}).items()}
        self.platform = platform
        self.kv_dtypes = list(kv_dtypes)

    def call(self, name: str, *args: Any) -> Any:
        """The value of the class's ``name(*args)`` (UNKNOWN when it cannot be told)."""
        func = self.functions.get(name)
        return UNKNOWN if func is None else self._run(func, list(args), {}, 0)

    # -- statements ---------------------------------------------------------------------
    def _run(self, func: ast.FunctionDef | None, args: list[Any], kw: dict, depth: int) -> Any:
        if func is None or depth > _MAX_DEPTH:
            return UNKNOWN
        params = [a.arg for a in func.args.args if a.arg not in ("cls", "self")]
        params += [a.arg for a in func.args.kwonlyargs]
        defaults = func.args.defaults
        scope: dict[str, Any] = {}
        for i, p in enumerate(func.args.args[len(func.args.args) - len(defaults) :]):
            scope[p.arg] = self._expr(defaults[i], {}, depth)
        for p, d in zip(func.args.kwonlyargs, func.args.kw_defaults, strict=False):
            scope[p.arg] = UNKNOWN if d is None else self._expr(d, {}, depth)
        for p, v in zip(params, args, strict=False):
            scope[p] = v
        scope.update({k: v for k, v in kw.items() if k in params})
        try:
            self._block(func.body, scope, depth)
        except _Return as r:
            return r.value
        return None

    def _block(self, body: list[ast.stmt], scope: dict[str, Any], depth: int) -> None:
        for stmt in body:
            if isinstance(stmt, ast.Return):
                raise _Return(None if stmt.value is None else self._expr(stmt.value, scope, depth))
            if isinstance(stmt, ast.If):
                test = self._expr(stmt.test, scope, depth)
                if test is UNKNOWN:
                    a = self._branch(stmt.body, dict(scope), depth)
                    b = self._branch(stmt.orelse, dict(scope), depth)
                    if a == b and a[0]:  # both return the same value
                        raise _Return(a[1])
                    if not a[0] and not b[0]:
                        continue
                    raise _Return(UNKNOWN)
                self._block(stmt.body if test else stmt.orelse, scope, depth)
            elif isinstance(stmt, ast.Assign) and all(
                isinstance(t, ast.Name) for t in stmt.targets
            ):
                value = self._expr(stmt.value, scope, depth)
                for t in stmt.targets:
                    scope[t.id] = value  # type: ignore[attr-defined]
            elif isinstance(stmt, ast.Expr | ast.Pass | ast.Import | ast.ImportFrom):
                continue  # a docstring, a log call, a local import: no value
            else:
                raise _Return(UNKNOWN)  # a loop, a try, a raise: not modelled

    def _branch(self, body: list[ast.stmt], scope: dict[str, Any], depth: int) -> tuple[bool, Any]:
        try:
            self._block(body, scope, depth)
        except _Return as r:
            return True, r.value
        return False, None

    # -- expressions ----------------------------------------------------------------------
    def _expr(self, node: ast.expr, scope: dict[str, Any], depth: int) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return scope.get(node.id, UNKNOWN)
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            items = [self._expr(e, scope, depth) for e in node.elts]
            return UNKNOWN if any(i is UNKNOWN for i in items) else items
        if isinstance(node, ast.Attribute):
            if _dotted(node) == "cls.supported_kv_cache_dtypes":
                return list(self.kv_dtypes)
            if (
                isinstance(node.value, ast.Name)
                and node.value.id[:1].isupper()
                and node.attr.isupper()
            ):  # an enum member (KVQuantMode.NONE): equal only to itself
                return Member(f"{node.value.id}.{node.attr}")
            base = self._expr(node.value, scope, depth)
            if isinstance(base, tuple) and node.attr in ("major", "minor"):
                return base[0] if node.attr == "major" else base[1]
            return UNKNOWN
        if isinstance(node, ast.BoolOp):
            parts = [lambda v=v: self._expr(v, scope, depth) for v in node.values]
            return _and(parts) if isinstance(node.op, ast.And) else _or(parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return _not(self._expr(node.operand, scope, depth))
        if isinstance(node, ast.BinOp):
            left, right = self._expr(node.left, scope, depth), self._expr(node.right, scope, depth)
            if left is UNKNOWN or right is UNKNOWN:
                return UNKNOWN
            ops = {ast.Mod: lambda a, b: a % b, ast.Mult: lambda a, b: a * b,
                   ast.Add: lambda a, b: a + b, ast.FloorDiv: lambda a, b: a // b}  # fmt: skip
            op = ops.get(type(node.op))
            try:
                return UNKNOWN if op is None else op(left, right)
            except Exception:
                return UNKNOWN
        if isinstance(node, ast.Compare):
            return self._compare(node, scope, depth)
        if isinstance(node, ast.IfExp):
            test = self._expr(node.test, scope, depth)
            if test is UNKNOWN:
                return UNKNOWN
            return self._expr(node.body if test else node.orelse, scope, depth)
        if isinstance(node, ast.Call):
            return self._call(node, scope, depth)
        return UNKNOWN

    def _compare(self, node: ast.Compare, scope: dict[str, Any], depth: int) -> Any:
        left = self._expr(node.left, scope, depth)
        out: Any = True
        for op, comp in zip(node.ops, node.comparators, strict=False):
            right = self._expr(comp, scope, depth)
            if left is UNKNOWN or right is UNKNOWN:
                out = UNKNOWN
            else:
                try:
                    v = _OPS[type(op)](left, right)
                except Exception:
                    return UNKNOWN
                if not v:
                    return False
            left = right
        return out

    def _call(self, node: ast.Call, scope: dict[str, Any], depth: int) -> Any:
        name = _dotted(node.func) or ""
        args = [self._expr(a, scope, depth) for a in node.args]
        kw = {k.arg: self._expr(k.value, scope, depth) for k in node.keywords if k.arg}
        cc = self.platform.cc
        leaf = name.rpartition(".")[2]
        if name.endswith("current_platform." + leaf) or name == leaf and leaf.startswith("is_"):
            if leaf == "is_device_capability_family" and args and isinstance(args[0], int):
                return cc[0] == args[0] // 10
            if leaf == "is_device_capability" and args and isinstance(args[0], int):
                return cc[0] * 10 + cc[1] == args[0]
            if leaf == "has_device_capability" and args and isinstance(args[0], int):
                return cc[0] * 10 + cc[1] >= args[0]
            if leaf in ("is_xpu", "is_rocm", "is_cpu", "is_tpu"):
                return False
            if leaf == "is_cuda":
                return True
        if name == "DeviceCapability" and len(args) >= 1 and all(isinstance(a, int) for a in args):
            return (args[0], args[1] if len(args) > 1 else 0)
        if name in ("get_flash_attn_version", "fa_utils.get_flash_attn_version"):
            return self.platform.fa
        if name == "isinstance" and len(node.args) == 2 and args[0] is not UNKNOWN:
            types = {"str": str, "int": int, "float": float, "bool": bool, "tuple": tuple,
                     "list": list, "dict": dict}  # fmt: skip
            kind = types.get(_dotted(node.args[1]) or "")
            return UNKNOWN if kind is None else isinstance(args[0], kind)
        if name == "get_kv_cache_dtype_handler":
            # config/cache.py: "None for upstream dtypes"; handlers come from plugins that
            # call register_kv_cache_dtype, which a plain env has none of
            return None
        if name == "any" and len(node.args) == 1 and isinstance(node.args[0], ast.GeneratorExp):
            return self._any(node.args[0], scope, depth)
        if name.startswith("cls.") and leaf in self.functions:
            return self._run(self.functions[leaf], args, kw, depth + 1)
        if name == f"super().{leaf}" or (
            isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Call)
            and _dotted(node.func.value.func) == "super"
        ):
            return self._run(self.base.get(leaf), args, kw, depth + 1)
        if isinstance(node.func, ast.Attribute) and node.func.attr in ("startswith", "endswith"):
            base = self._expr(node.func.value, scope, depth)
            if isinstance(base, str) and args and isinstance(args[0], str | tuple):
                return getattr(base, node.func.attr)(
                    args[0] if isinstance(args[0], str) else tuple(args[0])
                )
            return UNKNOWN
        if name in self.helpers:
            return self._run(self.helpers[name], args, kw, depth + 1)
        return UNKNOWN

    def _any(self, gen: ast.GeneratorExp, scope: dict[str, Any], depth: int) -> Any:
        if len(gen.generators) != 1 or gen.generators[0].ifs:
            return UNKNOWN
        comp = gen.generators[0]
        items = self._expr(comp.iter, scope, depth)
        if not isinstance(comp.target, ast.Name) or not isinstance(items, list):
            return UNKNOWN
        parts = [
            (lambda v=v: self._expr(gen.elt, {**scope, comp.target.id: v}, depth))  # type: ignore[attr-defined]
            for v in items
        ]
        got = _or(parts)
        return UNKNOWN if got is UNKNOWN else bool(got)


_OPS: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: lambda a, b: a is b,
    ast.IsNot: lambda a, b: a is not b,
}


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super":
        return "super()"
    return None


def _parse(source: str) -> ast.FunctionDef | None:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    node = tree.body[0] if tree.body else None
    return node if isinstance(node, ast.FunctionDef) else None
