"""Static reads of the settings the env's own vLLM reads: its environment variables and the long
options of ``vllm serve``, read with :mod:`ast` from the installed copy, never imported.

- ``vllm/envs.py``: the keys of ``environment_variables`` (the variables vLLM reads; 280 in
  0.26.0, 318 in 0.33.0) and, for keys kept only to warn, the replacement their warning or the
  comment above them names (0.26.0: ``VLLM_TRITON_ATTN_USE_TD`` -> ``VLLM_TRITON_USE_TD``,
  "The old name is ignored");
- ``validate_environ`` (``vllm/envs.py`` in 0.26.0, ``vllm/platforms/interface.py`` in 0.33.0):
  every ``VLLM_*`` variable of the process that is not such a key gets "Unknown vLLM
  environment variable detected", a ``ValueError`` under ``--fail-on-environ-validation``;
- the long options ``vllm serve`` parses: the ``"--..."`` literals of ``vllm/engine/
  arg_utils.py`` and ``vllm/entrypoints/**``, the fields of the frontend ``*Args`` classes
  (``--{field.replace('_', '-')}``: ``BaseFrontendArgs.add_cli_args``) and, generously, the
  dataclass fields of ``vllm/config`` (an option we fail to list would be a false alarm).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

ENVS_PY = "vllm/envs.py"
INTERFACE_PY = "vllm/platforms/interface.py"
ARG_UTILS_PY = "vllm/engine/arg_utils.py"
HARD_FAIL_FLAG = "--fail-on-environ-validation"
_FLAG = re.compile(r"^--[a-z0-9][a-z0-9-]*$")
_REPLACEMENT = re.compile(
    r"(?:[Uu]se|renamed to|replaced by|[Ss]et)\s+`?(VLLM_[A-Z0-9_]+|--[a-z0-9-]+)`?"
)


@dataclass(frozen=True)
class VllmSettingsSource:
    """What the env's vLLM reads; ``missing`` names what was not found."""

    known: frozenset[str] = frozenset()
    deprecated: dict[str, str] = field(default_factory=dict)  # name -> replacement ("": none)
    validates: bool = False  # validate_environ: VLLM_* outside ``known`` is "Unknown"
    flags: frozenset[str] = frozenset()
    deprecated_flags: dict[str, str] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    # source files there and unreadable (a FIFO, a device, a dangling link): "path: why";
    # what they define is unknown, so no setting can be judged unread
    unreadable: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["known"] = sorted(self.known)
        data["flags"] = sorted(self.flags)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VllmSettingsSource:
        return cls(
            known=frozenset(data["known"]),
            deprecated=dict(data["deprecated"]),
            validates=bool(data["validates"]),
            flags=frozenset(data["flags"]),
            deprecated_flags=dict(data["deprecated_flags"]),
            missing=tuple(data["missing"]),
            unreadable=tuple(data.get("unreadable", ())),
        )


def parse_envs(source: str) -> tuple[frozenset[str], dict[str, str], bool]:
    """``(known variables, deprecated -> replacement, has validate_environ)`` of envs.py."""
    tree = ast.parse(source)
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    lines = source.splitlines()
    known: set[str] = set()
    deprecated: dict[str, str] = {}
    for node in tree.body:
        target, value = None, None
        if isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        if not (isinstance(target, ast.Name) and target.id == "environment_variables"):
            continue
        if not isinstance(value, ast.Dict):
            continue
        for key, item in zip(value.keys, value.values, strict=True):
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                continue
            known.add(key.value)
            texts = _strings_of_call(item, functions)
            # the comment lines right above the key: "# Deprecated: renamed to VLLM_X."
            above = []
            for line in reversed(lines[: key.lineno - 1]):
                if not line.strip().startswith("#"):
                    break
                above.append(line.strip().lstrip("#").strip())
            texts.append(" ".join(reversed(above)))
            said = " ".join(texts)
            if re.search(
                r"\b(deprecated|renamed|no longer (?:used|read|supported|has any effect))\b",
                said,
                re.I,
            ):
                match = _REPLACEMENT.search(said)
                replacement = match.group(1) if match and match.group(1) != key.value else ""
                deprecated[key.value] = replacement
    validates = "validate_environ" in functions and _validates(functions["validate_environ"])
    return frozenset(known), deprecated, validates


def _strings_of_call(item: ast.expr, functions: dict[str, ast.FunctionDef]) -> list[str]:
    """The strings of the module function a ``lambda: _deprecated_x()`` entry calls."""
    body = item.body if isinstance(item, ast.Lambda) else item
    if isinstance(body, ast.Call) and isinstance(body.func, ast.Name):
        func = functions.get(body.func.id)
        if func is not None:
            return [
                str(n.value)
                for n in ast.walk(func)
                if isinstance(n, ast.Constant) and isinstance(n.value, str)
            ]
    return []


def _validates(func: ast.FunctionDef) -> bool:
    """The body compares ``startswith("VLLM_")`` and membership in environment_variables."""
    consts = {n.value for n in ast.walk(func) if isinstance(n, ast.Constant)}
    names = {n.attr for n in ast.walk(func) if isinstance(n, ast.Attribute)}
    names |= {n.id for n in ast.walk(func) if isinstance(n, ast.Name)}
    return "VLLM_" in consts and "environment_variables" in names


def has_validate_environ(source: str) -> bool:
    """``validate_environ`` with vLLM's rule in a module (0.33: ``platforms/interface.py``)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    return any(
        isinstance(n, ast.FunctionDef) and n.name == "validate_environ" and _validates(n)
        for n in ast.walk(tree)
    )


def harvest_flags(
    option_sources: Iterable[str], field_sources: Iterable[str]
) -> tuple[frozenset[str], dict[str, str]]:
    """Long options: ``"--x"`` literals of ``option_sources`` (``deprecated=True`` ones with
    the replacement their help names), and ``--field-name`` for every annotated class field of
    ``option_sources`` and ``field_sources``."""
    flags: set[str] = set()
    deprecated: dict[str, str] = {}
    for source in (*option_sources, None, *field_sources):
        if source is None:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if _FLAG.match(node.value):
                    flags.add(node.value)
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        name = item.target.id
                        if not name.startswith("_"):
                            flags.add("--" + name.replace("_", "-"))
            elif isinstance(node, ast.Call) and _is_deprecated_call(node):
                names = [
                    a.value
                    for a in node.args
                    if isinstance(a, ast.Constant) and isinstance(a.value, str)
                ]
                helps = [
                    str(k.value.value)
                    for k in node.keywords
                    if k.arg == "help" and isinstance(k.value, ast.Constant)
                ]
                match = _REPLACEMENT.search(" ".join(helps))
                for name in names:
                    if _FLAG.match(name):
                        deprecated[name] = match.group(1) if match else ""
    return frozenset(flags), deprecated


def _is_deprecated_call(node: ast.Call) -> bool:
    return any(
        k.arg == "deprecated" and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in node.keywords
    )


def default_of(source: str, name: str) -> tuple[bool, Any]:
    """``(found, value)``: what vLLM's ``environment_variables[name]`` gives when the variable is
    not set, evaluated from its lambda (``... if "X" in os.environ else True``); ``found`` is
    False when the entry or its default cannot be read."""
    from pytest_vllm_env.readers.pyrules import Evaluator, Unknown

    tree = ast.parse(source)
    for node in tree.body:
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if not isinstance(value, ast.Dict):
            continue
        for key, item in zip(value.keys, value.values, strict=True):
            if isinstance(key, ast.Constant) and key.value == name and isinstance(item, ast.Lambda):
                ev = Evaluator(
                    tree,
                    attrs={"os.environ": {}},
                    calls={
                        "os.getenv": lambda _k, default=None: default,
                        "os.environ.get": lambda _k, default=None: default,
                        "bool": bool,
                        "int": int,
                    },
                )
                try:
                    return True, ev.expr(item.body, {})
                except Unknown:
                    return False, None
    return False, None
