"""The :mod:`ast` helpers of the model-file reader (``readers/vllm_model_file.py``): the
statements of a method with the conditions they run under, config keys, keyword arguments,
names handed down through defaults and keyword arguments. Pure functions of syntax trees."""

from __future__ import annotations

import ast
import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass

TIE = "#tie"  # an attribute re-assigned to ``<module>.tie_weights(...)``: kept beside the module


@dataclass
class _Class:
    """One class of a model file: its syntax tree, base names and methods."""

    name: str
    module: str
    node: ast.ClassDef
    bases: list[str]
    methods: dict[str, ast.FunctionDef]


def _tie_key(attr: str, value: ast.expr) -> str:
    if (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Attribute)
        and value.func.attr == "tie_weights"
    ):
        return attr + TIE
    return attr


def _statements(
    body: list[ast.stmt],
    cond: tuple[str, ...],
    resolve: Callable[[ast.expr], str] | None = None,
):
    """Statements of a body with the conditions they run under (if/else followed); a test
    that is not ``config.<key>`` is ``resolve(test)`` when given (``expr:<text>``)."""
    for stmt in body:
        if isinstance(stmt, ast.If):
            test = _condition(stmt.test)
            if test == "pp":
                yield from _statements(stmt.body, cond, resolve)
                continue
            if test and test.startswith("unknown:") and resolve is not None:
                test = resolve(stmt.test)  # evaluated lazily: the names assigned so far
            yes = cond + ((test,) if test else ())
            no = cond + ((f"not {test}",) if test else ())
            yield from _statements(stmt.body, yes, resolve)
            yield from _statements(stmt.orelse, no, resolve)
        elif isinstance(stmt, (ast.With, ast.For, ast.Try)):
            yield from _statements(stmt.body, cond, resolve)
        else:
            yield stmt, cond


def _substitute(node: ast.expr, env: dict[str, ast.expr], depth: int = 0) -> ast.expr:
    """``node`` with its names (and ``self.<attr>``, kept in ``env`` as ``"self.<attr>"``)
    replaced by the expressions they were assigned, recursively; ``x is None`` of an
    ``x`` that is a constructed object (a call) is decided: False."""
    if depth > 6:
        return node

    class _T(ast.NodeTransformer):
        def visit_Name(self, n: ast.Name) -> ast.expr:
            if n.id in env and not (isinstance(env[n.id], ast.Name) and env[n.id].id == n.id):
                return _substitute(env[n.id], env, depth + 1)
            return n

        def visit_Attribute(self, n: ast.Attribute) -> ast.expr:
            key = _dotted(n)
            if key.startswith("self.") and key.count(".") == 1 and key in env:
                return _substitute(env[key], env, depth + 1)
            self.generic_visit(n)
            return n

        def visit_Call(self, n: ast.Call) -> ast.expr:
            if _name(n.func) == "extract_layer_index":  # the layer index: kept as it is
                return n
            self.generic_visit(n)
            return n

        def visit_Compare(self, n: ast.Compare) -> ast.expr:
            self.generic_visit(n)
            if (
                len(n.ops) == 1
                and isinstance(n.ops[0], (ast.Is, ast.IsNot))
                and isinstance(n.comparators[0], ast.Constant)
                and n.comparators[0].value is None
                and isinstance(n.left, (ast.Call, ast.Lambda))
            ):
                return ast.Constant(isinstance(n.ops[0], ast.IsNot))
            return n

    return _T().visit(copy.deepcopy(node))


def _condition(test: ast.expr) -> str | None:
    """``config:<key>`` for ``config.key`` / ``self.config.key`` / ``getattr(config, "key",
    ...)``; ``pp`` for pipeline-parallel rank tests (one stage: true); None otherwise."""
    text = ast.unparse(test)
    if "get_pp_group()" in text and "not " not in text:
        return "pp"
    key = _config_key(test)
    return f"config:{key}" if key else f"unknown:{text}"


def _config_key(node: ast.expr) -> str | None:
    if isinstance(node, ast.Attribute) and "config" in _dotted(node.value).split(".")[-1]:
        return node.attr
    if (
        isinstance(node, ast.Call)
        and _name(node.func) == "getattr"
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        return node.args[1].value
    return None


def _keyword(call: ast.Call, name: str) -> str | None:
    for kw in call.keywords:
        if kw.arg == name:
            if isinstance(kw.value, ast.Constant):
                return "true" if kw.value.value else "false"
            key = _config_key(kw.value)
            return f"config:{key}" if key else None
    return None


def _defaults(func: ast.FunctionDef) -> dict[str, ast.expr]:
    args = func.args
    out: dict[str, ast.expr] = {}
    pos = args.posonlyargs + args.args
    for arg, default in zip(pos[len(pos) - len(args.defaults) :], args.defaults, strict=False):
        out[arg.arg] = default
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=False):
        if default is not None:
            out[arg.arg] = default
    return out


def _subst(value: ast.expr, env: dict[str, ast.expr]) -> ast.expr:
    if isinstance(value, ast.Name) and value.id in env:
        return env[value.id]
    return value


def _resolve_name(
    name: str, env: dict[str, ast.expr], leaves: Iterable[str] = (), depth: int = 0
) -> str:
    value = env.get(name)
    if value is None or depth > 4:
        return name
    if isinstance(value, ast.IfExp):  # EncoderOnlyAttention if ... else Attention
        names = [_name(v) for v in (value.orelse, value.body)]
        value = next(
            (v for v, n in zip((value.orelse, value.body), names, strict=True) if n in leaves),
            value.orelse,
        )
    inner = _name(value)
    if inner is None or inner == name:
        return name
    return _resolve_name(inner, env, leaves, depth + 1)


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _self_attr(node: ast.Attribute) -> bool:
    return _dotted(node).startswith("self.")


def _is_super_init(stmt: ast.stmt) -> bool:
    if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
        return False
    func = stmt.value.func
    return (
        isinstance(func, ast.Attribute)
        and func.attr == "__init__"
        and isinstance(func.value, ast.Call)
        and _name(func.value.func) == "super"
    )


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _dotted(node: ast.expr) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # pragma: no cover - ast.unparse takes any expression
        return ""


def _strings(node: ast.expr | None) -> tuple[str, ...]:
    if isinstance(node, (ast.List, ast.Tuple)):
        return tuple(
            e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
        )
    return ()


def _mapping(node: ast.expr | None) -> tuple[tuple[str, str | None], ...]:
    if not isinstance(node, ast.Dict):
        return ()
    out = []
    for k, v in zip(node.keys, node.values, strict=False):
        if isinstance(k, ast.Constant) and isinstance(k.value, str) and isinstance(v, ast.Constant):
            out.append((k.value, v.value if isinstance(v.value, str) else None))
    return tuple(out)


def _ties_weight(target: ast.expr, value: ast.expr) -> bool:
    """``self.<module>.weight = self.<other>...weight``."""
    return (
        isinstance(target, ast.Attribute)
        and target.attr == "weight"
        and isinstance(target.value, ast.Attribute)
        and _is_self(target.value.value)
        and isinstance(value, ast.Attribute)
        and value.attr == "weight"
        and _dotted(value).startswith("self.")
    )
