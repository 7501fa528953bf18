"""A small evaluator for the rules a package's own Python source states, never importing it.

The rules this suite models (which ptxas Triton runs for an arch, the ``--gpu-name`` it
passes, the name of the variable that overrides it) are a few lines of plain Python in the
installed package: ``"a" if capability >= 90 else ""``, ``if arch < 90: return
knobs.nvidia.ptxas``, ``f"TRITON_{binary.upper().replace('-', '_')}_PATH"``. Rather than
copy those lines into a table per release, a reader hands the parsed module and the inputs
(``capability=120``) to :class:`Evaluator`, which walks a restricted subset of Python:
constants, names, f-strings, ``x if c else y``, comparisons, ``and``/``or``/``not``,
arithmetic, ``if``/``return``/assignments, calls of the module's own functions, and the string
methods ``upper``/``lower``/``replace``. Anything else raises :class:`Unknown`, so a reader
says "not found" instead of guessing. Nothing is executed: no import, no attribute of a real
object, no I/O; names the caller does not bind are unknown.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any

# Python's comparison operators, as an evaluator of source expressions applies them
# (config_expr too)
COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_BIN: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_STR_METHODS = {
    "upper", "lower", "replace", "strip", "removeprefix", "removesuffix", "startswith", "endswith",
}  # fmt: skip
_BUILTINS: dict[str, Callable[..., Any]] = {"str": str, "int": int, "len": len}
_DEPTH = 20  # calls of the module's functions within one evaluation


class Unknown(Exception):
    """The expression steps outside what the evaluator models (or names something unbound)."""


class Raised(Exception):
    """The evaluated code raises: ``raise RuntimeError("SM 12.1+ requires CUDA >= 12.9")``;
    the message is the exception's first argument, evaluated."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class Evaluator:
    """Evaluate expressions and module functions of one parsed module.

    ``attrs`` maps a dotted attribute chain (``knobs.nvidia.ptxas``, ``self.target.arch``) to
    its value; ``calls`` maps a called name (``_path_to_binary``) to a Python function standing
    in for it. Both are the caller's models of things outside the module."""

    def __init__(
        self,
        tree: ast.Module,
        *,
        attrs: Mapping[str, Any] | None = None,
        calls: Mapping[str, Callable[..., Any]] | None = None,
    ) -> None:
        # module functions first, then methods (a staticmethod such as
        # CompilationContext._normalize_cuda_arch), the first of a name winning
        self.functions: dict[str, ast.FunctionDef] = {}
        for node in [*tree.body, *ast.walk(tree)]:
            if isinstance(node, ast.FunctionDef):
                self.functions.setdefault(node.name, node)
        self.attrs = dict(attrs or {})
        self.calls = dict(calls or {})
        self._depth = 0

    # -- functions -------------------------------------------------------------------------
    def call(self, name: str, *args: Any) -> Any:
        """Run the module's function ``name`` on ``args``."""
        if name in self.calls:
            return self.calls[name](*args)
        func = self.functions.get(name)
        if func is None:
            raise Unknown(f"no function {name}")
        params = [a.arg for a in func.args.args]
        if len(args) > len(params):
            raise Unknown(f"{name}() takes {len(params)} arguments")
        scope = dict(zip(params, args, strict=False))
        defaults = func.args.defaults
        for param, default in zip(params[len(params) - len(defaults) :], defaults, strict=True):
            if param not in scope:
                scope[param] = self.expr(default, scope)
        if any(p not in scope for p in params):
            raise Unknown(f"{name}(): a parameter without a value")
        self._depth += 1
        try:
            if self._depth > _DEPTH:
                raise Unknown("calls nest too deep")
            done, value = self.block(func.body, scope)
        finally:
            self._depth -= 1
        return value if done else None

    def block(self, body: list[ast.stmt], scope: dict[str, Any]) -> tuple[bool, Any]:
        """Run statements; ``(True, value)`` once one returns."""
        for stmt in body:
            if isinstance(stmt, ast.Return):
                return True, self.expr(stmt.value, scope) if stmt.value else None
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                continue  # a docstring
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                continue  # the names it binds are the caller's to model (``calls``)
            if isinstance(stmt, ast.Raise):
                exc = stmt.exc
                if isinstance(exc, ast.Call) and isinstance(exc.func, ast.Name):
                    try:
                        message = str(self.expr(exc.args[0], scope)) if exc.args else ""
                    except Unknown:  # the words of the message, its values left out
                        message = " ".join(
                            str(n.value)
                            for n in ast.walk(exc.args[0])
                            if isinstance(n, ast.Constant) and isinstance(n.value, str)
                        )
                    raise Raised(exc.func.id, message)
                raise Unknown(f"raise at line {stmt.lineno}")
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                self.assign(stmt.targets[0], self.expr(stmt.value, scope), scope)
            elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                self.assign(stmt.target, self.expr(stmt.value, scope), scope)
            elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
                op = _BIN.get(type(stmt.op))
                if op is None or stmt.target.id not in scope:
                    raise Unknown("augmented assignment")
                scope[stmt.target.id] = op(scope[stmt.target.id], self.expr(stmt.value, scope))
            elif isinstance(stmt, ast.If):
                branch = stmt.body if self.expr(stmt.test, scope) else stmt.orelse
                done, value = self.block(branch, scope)
                if done:
                    return True, value
            elif isinstance(stmt, ast.Pass):
                continue
            else:
                raise Unknown(f"statement {type(stmt).__name__} at line {stmt.lineno}")
        return False, None

    @staticmethod
    def assign(target: ast.expr, value: Any, scope: dict[str, Any]) -> None:
        if isinstance(target, ast.Name):
            scope[target.id] = value
        elif isinstance(target, ast.Tuple) and target.elts and isinstance(target.elts[0], ast.Name):
            # ``ptxas, _ = _path_to_binary("ptxas")``: the callers here model such a call as
            # returning one value that stands for the tuple's first element
            scope[target.elts[0].id] = value[0] if isinstance(value, tuple) else value
        else:
            raise Unknown("assignment target")

    # -- expressions -----------------------------------------------------------------------
    def expr(self, node: ast.expr | None, scope: Mapping[str, Any]) -> Any:
        """The value of ``node`` with ``scope`` bound; :class:`Unknown` when not modelled."""
        if node is None:
            raise Unknown("no expression")
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in scope:
                return scope[node.id]
            if node.id in self.attrs:
                return self.attrs[node.id]
            raise Unknown(f"unbound name {node.id}")
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                if isinstance(value, ast.Constant):
                    parts.append(str(value.value))
                elif isinstance(value, ast.FormattedValue) and value.format_spec is None:
                    parts.append(str(self.expr(value.value, scope)))
                else:
                    raise Unknown("formatted value with a spec")
            return "".join(parts)
        if isinstance(node, ast.IfExp):
            return self.expr(node.body if self.expr(node.test, scope) else node.orelse, scope)
        if isinstance(node, ast.Compare):
            left = self.expr(node.left, scope)
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                right = self.expr(comparator, scope)
                fn = COMPARE.get(type(op))
                if fn is None:
                    raise Unknown("comparison")
                try:
                    if not fn(left, right):
                        return False
                except TypeError:
                    raise Unknown("comparison of unlike values") from None
                left = right
            return True
        if isinstance(node, ast.BoolOp):
            values = (self.expr(v, scope) for v in node.values)
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not self.expr(node.operand, scope)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -self.expr(node.operand, scope)
        if isinstance(node, ast.BinOp):
            fn = _BIN.get(type(node.op))
            if fn is None:
                raise Unknown("operator")
            try:
                return fn(self.expr(node.left, scope), self.expr(node.right, scope))
            except (TypeError, ZeroDivisionError):
                raise Unknown("arithmetic on unlike values") from None
        if isinstance(node, (ast.Tuple, ast.List)):
            return tuple(self.expr(e, scope) for e in node.elts)
        if isinstance(node, ast.Attribute):
            chain = dotted(node)
            if chain is not None and chain in self.attrs:
                return self.attrs[chain]
            base = self.expr(node.value, scope)
            hook = self.attrs.get(f"*.{node.attr}")
            if hook is not None and callable(hook):
                return hook(base)
            raise Unknown(f"attribute {node.attr}")
        if isinstance(node, ast.Call):
            return self._call(node, scope)
        raise Unknown(f"expression {type(node).__name__}")

    def _call(self, node: ast.Call, scope: Mapping[str, Any]) -> Any:
        if node.keywords:
            raise Unknown("keyword arguments")
        args = [self.expr(a, scope) for a in node.args]
        func = node.func
        chain = dotted(func)
        if chain is not None and chain in self.calls:
            return self.calls[chain](*args)
        if isinstance(func, ast.Name):
            if func.id in _BUILTINS and func.id not in self.functions:
                try:
                    return _BUILTINS[func.id](*args)
                except (TypeError, ValueError):
                    raise Unknown(f"{func.id}() of unlike values") from None
            return self.call(func.id, *args)
        if isinstance(func, ast.Attribute) and func.attr in _STR_METHODS:
            base = self.expr(func.value, scope)
            if isinstance(base, str) and all(isinstance(a, str) for a in args):
                return getattr(base, func.attr)(*args)
        raise Unknown(f"call of {chain or 'an expression'}")


def module_constants(tree: ast.Module) -> dict[str, Any]:
    """Module-level ``NAME = "text"`` (and numbers): the constants a message or rule names."""
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and isinstance(value, ast.Constant):
            if isinstance(value.value, (str, int, float)):
                out[target.id] = value.value
    return out


def parse_or_none(src: str | None) -> ast.Module | None:
    """``src`` parsed, or None when there is none or it is not valid Python."""
    if not src:
        return None
    try:
        return ast.parse(src)
    except SyntaxError:
        return None


def function_named(tree: ast.AST | None, name: str) -> ast.FunctionDef | None:
    """The first ``def name`` anywhere in ``tree`` (a module-level function or a method)."""
    if tree is None:
        return None
    return next(
        (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name), None
    )


def int_compared(
    tree: ast.AST, left: Callable[[ast.expr], bool], op: type[ast.cmpop]
) -> int | None:
    """N of the first ``X <op> N`` under ``tree`` (one operator, N an int literal) whose left
    side ``left`` accepts: the literal a source compares a name or attribute with."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Compare)
            and len(node.ops) == 1
            and isinstance(node.ops[0], op)
            and left(node.left)
            and isinstance(node.comparators[0], ast.Constant)
            and isinstance(node.comparators[0].value, int)
        ):
            return node.comparators[0].value
    return None


def dotted(node: ast.expr) -> str | None:
    """``knobs.nvidia.ptxas`` for an attribute chain of plain names; None otherwise."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def enclosing_function(tree: ast.Module, target: ast.AST) -> ast.FunctionDef | None:
    """The innermost function (at any depth, methods included) whose body holds ``target``."""
    best: ast.FunctionDef | None = None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and any(n is target for n in ast.walk(node)):
            if best is None or node.lineno >= best.lineno:
                best = node
    return best


def scope_before(
    evaluator: Evaluator, func: ast.FunctionDef, line: int, seed: Mapping[str, Any]
) -> dict[str, Any]:
    """The simple assignments of ``func`` (any block depth) above ``line``, in source order,
    evaluated from ``seed``; the ones that cannot be evaluated are left unbound."""
    scope = dict(seed)
    assigns = sorted(
        (n for n in ast.walk(func) if isinstance(n, ast.Assign) and len(n.targets) == 1),
        key=lambda n: (n.lineno, n.col_offset),
    )
    for node in assigns:
        if node.lineno >= line:
            break
        try:
            evaluator.assign(node.targets[0], evaluator.expr(node.value, scope), scope)
        except Unknown:
            for name in ast.walk(node.targets[0]):
                if isinstance(name, ast.Name):
                    scope.pop(name.id, None)
    return scope
