"""Which attention backends the env's vLLM tries on CUDA, and what each says it takes, read from
its own source with :mod:`ast` (never imported). ``checkpoint.attention-backend`` judges it
(:mod:`pytest_vllm_env.checks.attention_backend`).

vLLM picks the decoder's attention backend at model construction
(``vllm/platforms/cuda.py``: ``CudaPlatform.get_attn_backend_cls`` -> ``get_valid_backends``):
it walks ``_get_backend_priorities(use_mla, device_capability, ...)`` in order, imports each
backend class (``vllm/v1/attention/backends/registry.py``: ``AttentionBackendEnum`` holds the
class path; an ``ImportError`` is a reason, "ImportError"), asks the class's
``validate_configuration`` (``vllm/v1/attention/backend.py``: ``supports_head_size``,
``supports_kv_cache_dtype``, ``supports_compute_capability``, ...) and takes the first that
has no reason; none left: "ValueError: No valid attention backend found". The KV-cache dtype
it asks about is ``--kv-cache-dtype``, or with ``auto`` the checkpoint's
(``vllm/engine/arg_utils.py`` -> ``utils/torch_utils.py``: ``resolve_kv_cache_dtype_string``,
``get_kv_cache_quant_algo_string``: ModelOpt's ``kv_cache_quant_algo`` through
``MODELOPT_TO_VLLM_KV_CACHE_DTYPE_MAP``, e.g. ``NVFP4`` -> ``nvfp4``).

This reader keeps, per backend the non-MLA priority lists name: the class path, its
``supported_kv_cache_dtypes``, the source of the predicates it (or ``AttentionBackend``)
defines, and the packages its module imports unguarded at top level (``flashinfer``: not
installed, the backend is an ``ImportError``). The predicates are evaluated by the check,
so a backend or release nobody listed is read the same way. A reader: it never judges.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_vllm_env.readers.pyrules import function_named, int_compared, parse_or_none

CUDA_PY = "vllm/platforms/cuda.py"
REGISTRY_PY = "vllm/v1/attention/backends/registry.py"
BACKEND_PY = "vllm/v1/attention/backend.py"
TORCH_UTILS_PY = "vllm/utils/torch_utils.py"
PRIORITIES = "_get_backend_priorities"
# the predicates validate_configuration asks that a dense decoder's load can fail on
PREDICATES = (
    "supports_kv_cache_dtype",
    "supports_head_size",
    "get_supported_head_sizes",
    "supports_compute_capability",
)
# how deep the helpers a predicate calls are followed (a helper's helper, ...)
HELPER_DEPTH = 3
KV_MAP = "MODELOPT_TO_VLLM_KV_CACHE_DTYPE_MAP"


@dataclass(frozen=True)
class Backend:
    """One backend class: ``path`` (``module.Class``), ``kv_dtypes`` (its
    ``supported_kv_cache_dtypes``, the base class's when it sets none), ``predicates``
    ({name: source of the function, its own or ``AttentionBackend``'s}), ``imports`` (the
    top-level packages its module imports unguarded, outside the standard library, vLLM and
    torch), ``error`` (why it could not be read: "" when read)."""

    path: str
    kv_dtypes: tuple[str, ...] = ()
    predicates: dict[str, str] = field(default_factory=dict)
    imports: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class AttnBackends:
    """``priorities``: ``[(major or None, [backend names])]``, the non-MLA lists of
    ``_get_backend_priorities`` (a list under ``device_capability.major == N``, and the
    default one: None); ``backends``: {name: :class:`Backend`}; ``helpers``: {function:
    source}; ``kv_map``: ModelOpt's ``kv_cache_quant_algo`` (lower case) -> vLLM's cache dtype;
    ``where``: the file:function the priorities came from ("" when not found); ``base``:
    ``AttentionBackend``'s own predicates (what ``super()`` calls)."""

    priorities: tuple[tuple[int | None, tuple[str, ...]], ...] = ()
    backends: dict[str, Backend] = field(default_factory=dict)
    helpers: dict[str, str] = field(default_factory=dict)
    kv_map: dict[str, str] = field(default_factory=dict)
    where: str = ""
    base: dict[str, str] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return bool(self.priorities)

    def to_json(self) -> dict[str, Any]:
        return {
            "where": self.where,
            "priorities": [[m, list(names)] for m, names in self.priorities],
            "backends": {
                k: {
                    "path": b.path,
                    "kv_dtypes": list(b.kv_dtypes),
                    "predicates": dict(sorted(b.predicates.items())),
                    "imports": list(b.imports),
                    **({"error": b.error} if b.error else {}),
                }
                for k, b in sorted(self.backends.items())
            },
            "helpers": dict(sorted(self.helpers.items())),
            "kv_map": dict(sorted(self.kv_map.items())),
            "base": dict(sorted(self.base.items())),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AttnBackends:
        return cls(
            tuple((m, tuple(names)) for m, names in data.get("priorities", [])),
            {
                k: Backend(
                    v["path"],
                    tuple(v.get("kv_dtypes", ())),
                    dict(v.get("predicates", {})),
                    tuple(v.get("imports", ())),
                    v.get("error", ""),
                )
                for k, v in data.get("backends", {}).items()
            },
            dict(data.get("helpers", {})),
            dict(data.get("kv_map", {})),
            data.get("where", ""),
            dict(data.get("base", {})),
        )


def _enum_names(node: ast.AST) -> tuple[str, ...]:
    """``AttentionBackendEnum.X`` elements of a returned list, in order (a ``*[...] if ...
    else []`` element is left out: it is there only for a feature a dense decoder lacks)."""
    if not isinstance(node, ast.List):
        return ()
    return tuple(
        e.attr
        for e in node.elts
        if isinstance(e, ast.Attribute)
        and isinstance(e.value, ast.Name)
        and e.value.id == "AttentionBackendEnum"
    )


def _major_of(test: ast.expr) -> int | None:
    """N of a test holding ``device_capability.major == N``."""
    return int_compared(test, lambda x: isinstance(x, ast.Attribute) and x.attr == "major", ast.Eq)


def _non_mla(func: ast.FunctionDef) -> list[tuple[int | None, tuple[str, ...]]]:
    """The lists ``_get_backend_priorities`` returns when ``use_mla`` is false."""
    body: list[ast.stmt] = func.body
    for stmt in func.body:
        if (
            isinstance(stmt, ast.If)
            and isinstance(stmt.test, ast.Name)
            and stmt.test.id == "use_mla"
        ):
            body = stmt.orelse
    out: list[tuple[int | None, tuple[str, ...]]] = []

    def walk(stmts: list[ast.stmt]) -> None:
        for stmt in stmts:
            if isinstance(stmt, ast.If):
                major = _major_of(stmt.test)
                before = len(out)
                walk(stmt.body)
                if major is not None:
                    out[before:] = [(major, names) for _, names in out[before:]]
                walk(stmt.orelse)
            elif isinstance(stmt, ast.Return) and stmt.value is not None:
                names = _enum_names(stmt.value)
                if names:
                    out.append((None, names))

    walk(body)
    return out


def _registry(tree: ast.Module | None) -> dict[str, str]:
    """``AttentionBackendEnum``'s ``NAME = "module.Class"`` members."""
    out: dict[str, str] = {}
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, ast.ClassDef) and node.name == "AttentionBackendEnum":
            for stmt in node.body:
                if (
                    isinstance(stmt, ast.Assign)
                    and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0], ast.Name)
                    and isinstance(stmt.value, ast.Constant)
                    and isinstance(stmt.value.value, str)
                ):
                    out[stmt.targets[0].id] = stmt.value.value
    return out


def _class(tree: ast.Module | None, name: str) -> ast.ClassDef | None:
    for node in tree.body if tree is not None else ():
        if isinstance(node, ast.ClassDef) and node.name == name:
            return node
    return None


def _kv_dtypes(cls: ast.ClassDef | None) -> tuple[str, ...] | None:
    for stmt in cls.body if cls is not None else ():
        target = stmt.target if isinstance(stmt, ast.AnnAssign) else None
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target = stmt.targets[0]
        value = getattr(stmt, "value", None)
        if (
            isinstance(target, ast.Name)
            and target.id == "supported_kv_cache_dtypes"
            and isinstance(value, ast.List | ast.Tuple)
        ):
            return tuple(
                e.value
                for e in value.elts
                if isinstance(e, ast.Constant) and isinstance(e.value, str)
            )
    return None


def _methods(cls: ast.ClassDef | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for stmt in cls.body if cls is not None else ():
        if isinstance(stmt, ast.FunctionDef) and stmt.name in PREDICATES:
            out[stmt.name] = ast.unparse(stmt)
    return out


def _imports(tree: ast.Module | None) -> tuple[str, ...]:
    """Top-level packages the module imports unguarded (a failed one fails its import)."""
    roots: list[str] = []
    for stmt in tree.body if tree is not None else ():
        names: list[str] = []
        if isinstance(stmt, ast.Import):
            names = [a.name for a in stmt.names]
        elif isinstance(stmt, ast.ImportFrom) and not stmt.level and stmt.module:
            names = [stmt.module]
        for n in names:
            root = n.split(".")[0]
            if root in sys.stdlib_module_names or root in ("vllm", "torch", "__future__"):
                continue
            if root not in roots:
                roots.append(root)
    return tuple(roots)


def _dict_constant(tree: ast.Module | None, name: str) -> dict[str, str]:
    for stmt in tree.body if tree is not None else ():
        if (
            isinstance(stmt, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name for t in stmt.targets)
            and isinstance(stmt.value, ast.Dict)
        ):
            return {
                k.value: v.value
                for k, v in zip(stmt.value.keys, stmt.value.values, strict=False)
                if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)
            }
    return {}


def read(load: Callable[[str], str | None]) -> AttnBackends:
    """The backends of the vLLM whose package files ``load(relative path)`` returns (None:
    no such file)."""
    func = function_named(parse_or_none(load(CUDA_PY)), PRIORITIES)
    if func is None:
        return AttnBackends()
    priorities = _non_mla(func)
    registry = _registry(parse_or_none(load(REGISTRY_PY)))
    base_tree = parse_or_none(load(BACKEND_PY))
    base = _class(base_tree, "AttentionBackend")
    base_kv = _kv_dtypes(base) or ()
    base_methods = _methods(base)
    backends: dict[str, Backend] = {}
    helpers: dict[str, str] = {}
    for name in dict.fromkeys(n for _, names in priorities for n in names):
        path = registry.get(name, "")
        module, _, cls_name = path.rpartition(".")
        if not module:
            backends[name] = Backend(path, error=f"{REGISTRY_PY}: no class path for {name}")
            continue
        rel = module.replace(".", "/") + ".py"
        tree = parse_or_none(load(rel))
        cls = _class(tree, cls_name)
        if cls is None:
            backends[name] = Backend(path, error=f"{rel}: no class {cls_name}")
            continue
        kv = _kv_dtypes(cls)
        backends[name] = Backend(
            path, base_kv if kv is None else kv, {**base_methods, **_methods(cls)}, _imports(tree)
        )
        _helpers(rel, tree, list(backends[name].predicates.values()), load, helpers)
    return AttnBackends(
        tuple(priorities),
        backends,
        helpers,
        _dict_constant(parse_or_none(load(TORCH_UTILS_PY)), KV_MAP),
        f"{CUDA_PY}:{PRIORITIES}",
        base_methods,
    )


def _helpers(
    rel: str,
    tree: ast.Module | None,
    sources: list[str],
    load: Callable[[str], str | None],
    out: dict[str, str],
    depth: int = 0,
) -> None:
    """The module-level functions ``sources`` call by bare name, from the module ``rel``
    (defined there, or ``from vllm.x import name`` at its top level), into ``out``; their
    own calls are followed ``HELPER_DEPTH`` deep."""
    if tree is None or depth >= HELPER_DEPTH:
        return
    called = {
        n.func.id
        for src in sources
        for n in ast.walk(ast.parse(src))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
    }
    imported: dict[str, str] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module and stmt.module.startswith("vllm."):
            for a in stmt.names:
                imported[a.asname or a.name] = stmt.module
    for name in sorted(called - set(out)):
        home_rel, home = rel, tree
        if function_named_top(tree, name) is None and name in imported:
            home_rel = imported[name].replace(".", "/") + ".py"
            home = parse_or_none(load(home_rel))
        func = function_named_top(home, name)
        if func is None:
            continue
        out[name] = ast.unparse(func)
        _helpers(home_rel, home, [out[name]], load, out, depth + 1)


def function_named_top(tree: ast.Module | None, name: str) -> ast.FunctionDef | None:
    """A function defined at the top level of ``tree``."""
    for stmt in tree.body if tree is not None else ():
        if isinstance(stmt, ast.FunctionDef) and stmt.name == name:
            return stmt
    return None
