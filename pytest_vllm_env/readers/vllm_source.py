"""Static reads of the env's own vLLM source: what its ModelOpt support accepts.

vLLM's answer changes between versions (the accepted ``quant_algo`` list grew from
``["FP8", "NVFP4"]`` to seven entries; NVFP4's minimum capability went from Blackwell to
Turing with Marlin fallbacks), so the verdict must come from the copy installed in the
judged env. We parse it with :mod:`ast`, never import it (importing vLLM pulls torch and
CUDA into the pytest process and takes seconds), and say plainly when the structure we
look for is not there, so the checks skip rather than guess.

Read from ``vllm/model_executor/layers/quantization/modelopt.py``:
- the module-level ``QUANT_ALGOS`` / ``KV_CACHE_QUANT_ALGOS`` lists of strings;
- the error raised when ``quant_algo`` is not in ``QUANT_ALGOS`` (rendered with the list,
  so a failure quotes what vLLM would say);
- per config class: ``get_name()``, ``get_min_capability()`` and the algorithms its
  ``override_quantization_method`` claims (``algo == "FP8"``, ``"FP4" in algo``).

Read from ``vllm/model_executor/models/registry.py``: the architecture names of the
dictionaries merged into ``_VLLM_MODELS``, and ``_PREVIOUSLY_SUPPORTED_MODELS``.
"""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass, field
from typing import Any

MODELOPT_PY = "vllm/model_executor/layers/quantization/modelopt.py"
REGISTRY_PY = "vllm/model_executor/models/registry.py"


@dataclass(frozen=True)
class QuantConfigClass:
    """One ``ModelOpt*Config`` class as its source defines it."""

    name: str
    method: str | None  # get_name(): "modelopt", "modelopt_fp4"
    min_capability: int | None  # get_min_capability(): 89 -> compute capability 8.9
    claims_exact: tuple[str, ...] = ()  # override: algo == "X"
    claims_substring: tuple[str, ...] = ()  # override: "X" in algo


@dataclass(frozen=True)
class ModelOptSource:
    """What the env's vLLM ``modelopt.py`` says; ``missing`` lists what was not found."""

    path: str
    quant_algos: tuple[str, ...] | None
    kv_cache_quant_algos: tuple[str, ...] | None
    unsupported_message: str | None
    classes: tuple[QuantConfigClass, ...] = ()
    missing: tuple[str, ...] = ()
    # How is_layer_excluded matches (read from its body): "fused" (fnmatch wildcards and
    # is_layer_skipped's shard check, vLLM >= 0.11), "substring" (0.10.x), or None (not found:
    # the checks then use the fused rules, calibrated on 0.26.0); and whether
    # apply_vllm_mapper splits "x*" into "x" and "x.*" (vLLM issue 28072; 0.26.0 does, 0.12.0
    # does not).
    exclusion: str | None = None
    splits_wildcards: bool = False
    # MIXED_PRECISION: the per-layer quant_algos ModelOptMixedPrecisionConfig.get_quant_method
    # builds a Linear method for (0.26.0: its == chain; 0.33.0: LINEAR_ALGOS); None: not read
    mixed_linear_algos: tuple[str, ...] | None = None

    def config_class_for(self, algo: str) -> QuantConfigClass | None:
        """The config class vLLM ends up with for ``algo`` under ``quantization="modelopt"``:
        the one whose ``override_quantization_method`` claims it, else the plain
        ``modelopt`` one (the class ``quantization="modelopt"`` names)."""
        algo = algo.upper()
        for cls in self.classes:
            if algo in cls.claims_exact:
                return cls
        for cls in self.classes:
            if any(s in algo for s in cls.claims_substring):
                return cls
        # Older vLLMs (0.8.x) have no override: the user's quantization= picks the class,
        # named after the algorithm ("modelopt_nvfp4", "modelopt_fp4").
        for cls in self.classes:
            suffix = (cls.method or "").removeprefix("modelopt").lstrip("_")
            if suffix and suffix.upper() in algo:
                return cls
        return next((c for c in self.classes if c.method == "modelopt"), None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelOptSource:
        classes = tuple(
            QuantConfigClass(
                c["name"],
                c["method"],
                c["min_capability"],
                tuple(c["claims_exact"]),
                tuple(c["claims_substring"]),
            )
            for c in data["classes"]
        )
        return cls(
            data["path"],
            tuple(data["quant_algos"]) if data["quant_algos"] is not None else None,
            tuple(data["kv_cache_quant_algos"])
            if data["kv_cache_quant_algos"] is not None
            else None,
            data["unsupported_message"],
            classes,
            tuple(data["missing"]),
            data.get("exclusion"),
            bool(data.get("splits_wildcards", False)),
            # kept through the fact cache: without it every env's mixed layers were judged by
            # the union of both releases' algorithms, not by its own vLLM's
            tuple(algos) if (algos := data.get("mixed_linear_algos")) is not None else None,
        )


@dataclass(frozen=True)
class Registry:
    """Architectures the env's vLLM registers (``missing`` non-empty: not found)."""

    path: str
    architectures: frozenset[str] = frozenset()
    multimodal: frozenset[str] = frozenset()
    previously_supported: dict[str, str] = field(default_factory=dict)
    missing: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "architectures": sorted(self.architectures),
            "multimodal": sorted(self.multimodal),
            "previously_supported": self.previously_supported,
            "missing": list(self.missing),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Registry:
        return cls(
            data["path"],
            frozenset(data["architectures"]),
            frozenset(data["multimodal"]),
            dict(data["previously_supported"]),
            tuple(data["missing"]),
        )


# -- modelopt.py ----------------------------------------------------------------------------
def not_found(why: str) -> ModelOptSource:
    """Facts for an env whose vLLM (or its modelopt.py) is absent: ``why`` says so."""
    return ModelOptSource("", None, None, None, (), (why,))


def parse_modelopt(source: str, path: str = MODELOPT_PY) -> ModelOptSource:
    """Read the facts from the text of vLLM's ``modelopt.py``; never raises for odd text."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as exc:
        return ModelOptSource(
            path, None, None, None, (), (f"{path} is not parseable Python ({exc})",)
        )
    constants = _module_string_lists(tree)
    quant_algos = constants.get("QUANT_ALGOS")
    kv_algos = constants.get("KV_CACHE_QUANT_ALGOS")
    message = _unsupported_message(tree, constants)
    classes = tuple(
        cls
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        for cls in [_config_class(node)]
        if cls
    )
    missing = []
    if quant_algos is None:
        missing.append(f"{path} has no module-level QUANT_ALGOS list of strings")
    if not any(c.min_capability is not None for c in classes):
        missing.append(f"{path} has no config class whose get_min_capability() returns a number")
    exclusion, splits = _exclusion_rules(tree)
    return ModelOptSource(
        path, quant_algos, kv_algos, message, classes, tuple(missing), exclusion, splits,
        _mixed_linear_algos(tree),
    )  # fmt: skip


def _mixed_linear_algos(tree: ast.Module) -> tuple[str, ...] | None:
    """The algorithms the Linear branch of ``ModelOptMixedPrecisionConfig.get_quant_method``
    serves: the strings ``quant_algo`` is compared with (0.26.0), or the keys of the
    module-level dict it is tested against (``quant_algo not in LINEAR_ALGOS``, 0.33.0)."""
    method = next(
        (
            f
            for c in tree.body
            if isinstance(c, ast.ClassDef) and c.name == "ModelOptMixedPrecisionConfig"
            for f in c.body
            if isinstance(f, ast.FunctionDef) and f.name == "get_quant_method"
        ),
        None,
    )
    if method is None:
        return None
    branch = next(
        (
            n
            for n in ast.walk(method)
            if isinstance(n, ast.If)
            and any(isinstance(x, ast.Name) and x.id == "LinearBase" for x in ast.walk(n.test))
        ),
        None,
    )
    if branch is None:
        return None
    dicts = {
        t.id: tuple(k.value for k in node.value.keys if isinstance(k, ast.Constant))
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict)
        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(t, ast.Name)
    }
    algos: list[str] = []
    for n in ast.walk(branch):
        if not (isinstance(n, ast.Compare) and isinstance(n.left, ast.Name)):
            continue
        if n.left.id != "quant_algo" or len(n.ops) != 1:
            continue
        right = n.comparators[0]
        if isinstance(n.ops[0], ast.Eq) and isinstance(right, ast.Constant):
            algos.append(str(right.value))
        elif isinstance(n.ops[0], (ast.In, ast.NotIn)) and isinstance(right, ast.Name):
            algos += [str(k) for k in dicts.get(right.id, ())]
    return tuple(dict.fromkeys(algos)) or None


def _exclusion_rules(tree: ast.Module) -> tuple[str | None, bool]:
    """How this vLLM matches exclude entries, from the bodies of ``is_layer_excluded`` and
    ``apply_vllm_mapper`` (any class)."""
    excluded = mapper = None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            if node.name == "is_layer_excluded" and excluded is None:
                excluded = node
            elif node.name == "apply_vllm_mapper" and mapper is None:
                mapper = node
    if excluded is None:
        return None, False
    names = {n.id for n in ast.walk(excluded) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(excluded) if isinstance(n, ast.Attribute)}
    rules = "fused" if {"fnmatch", "is_layer_skipped"} & names else "substring"
    splits = mapper is not None and any(
        isinstance(n, ast.Constant) and n.value == ".*" for n in ast.walk(mapper)
    )
    return rules, splits


def _module_string_lists(tree: ast.Module) -> dict[str, tuple[str, ...]]:
    """Module-level lists of strings, in order: ``QUANT_ALGOS = ["FP8", ...]`` (vLLM 0.26.0),
    and lists spreading an earlier one or an earlier dict's string keys:
    ``QUANT_ALGOS = [*LINEAR_ALGOS, "MIXED_PRECISION"]`` (0.33.0, whose ``LINEAR_ALGOS`` is a
    dict of algorithm -> owning config)."""
    found: dict[str, tuple[str, ...]] = {}
    keys: dict[str, tuple[str, ...]] = {}  # dicts whose keys are all strings
    for node in tree.body:
        target, value = _assignment(node)
        if not target:
            continue
        if isinstance(value, ast.Dict):
            names = [k.value for k in value.keys if isinstance(k, ast.Constant)]
            if names and len(names) == len(value.keys) and all(isinstance(n, str) for n in names):
                keys[target] = tuple(names)  # type: ignore[arg-type]
        elif isinstance(value, (ast.List, ast.Tuple)):
            items: list[str] = []
            for e in value.elts:
                if isinstance(e, ast.Constant) and isinstance(e.value, str):
                    items.append(e.value)
                elif isinstance(e, ast.Starred) and isinstance(e.value, ast.Name):
                    spread = found.get(e.value.id, keys.get(e.value.id))
                    if spread is None:
                        break
                    items += spread
                else:
                    break
            else:
                if items:
                    found[target] = tuple(items)
    return found


def _assignment(node: ast.stmt) -> tuple[str | None, ast.expr | None]:
    if (
        isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
    ):
        return node.targets[0].id, node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
        return node.target.id, node.value
    return None, None


def _unsupported_message(tree: ast.Module, constants: dict[str, tuple[str, ...]]) -> str | None:
    """The message of ``if x not in QUANT_ALGOS: raise ValueError(...)``, rendered."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)):
            continue
        test = node.test
        if not (
            len(test.ops) == 1
            and isinstance(test.ops[0], ast.NotIn)
            and isinstance(test.comparators[0], ast.Name)
            and test.comparators[0].id == "QUANT_ALGOS"
        ):
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.Raise) and isinstance(stmt.exc, ast.Call) and stmt.exc.args:
                return _render(stmt.exc.args[0], constants)
    return None


def _render(expr: ast.expr, constants: dict[str, tuple[str, ...]]) -> str | None:
    """An f-string or string concatenation as Python would format it, with known module
    lists substituted; unknown parts stay as ``{...}``."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return expr.value
    if isinstance(expr, ast.JoinedStr):
        parts = []
        for value in expr.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif (
                isinstance(value, ast.FormattedValue)
                and isinstance(value.value, ast.Name)
                and value.value.id in constants
            ):
                parts.append(str(list(constants[value.value.id])))
            else:
                parts.append("{...}")
        return "".join(parts)
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        left, right = _render(expr.left, constants), _render(expr.right, constants)
        return left + right if left is not None and right is not None else None
    return None


def _config_class(node: ast.ClassDef) -> QuantConfigClass | None:
    methods = {
        f.name: f for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    method = _returned_constant(methods.get("get_name"), str)
    min_cap = _returned_constant(methods.get("get_min_capability"), int)
    if method is None and min_cap is None:
        return None
    exact, substring = _claims(methods.get("override_quantization_method"))
    return QuantConfigClass(node.name, method, min_cap, exact, substring)


def _returned_constant(func: ast.AST | None, kind: type) -> Any:
    if func is None:
        return None
    for node in ast.walk(func):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Constant):
            if isinstance(node.value.value, kind) and not isinstance(node.value.value, bool):
                return node.value.value
    return None


def _claims(func: ast.AST | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Strings compared with the algorithm: ``algo == "FP8"`` and ``"FP4" in algo`` (only
    where the other side holds the algorithm, not ``"quantization" in hf_quant_cfg``)."""
    if func is None:
        return (), ()
    exact: list[str] = []
    substring: list[str] = []
    for node in ast.walk(func):
        if not isinstance(node, ast.Compare) or len(node.ops) != 1:
            continue
        left, op, right = node.left, node.ops[0], node.comparators[0]
        if isinstance(op, ast.Eq):
            for a, b in ((left, right), (right, left)):
                if _holds_algo(a) and isinstance(b, ast.Constant) and isinstance(b.value, str):
                    exact.append(b.value.upper())
        elif isinstance(op, ast.In) and _holds_algo(right):
            if isinstance(left, ast.Constant) and isinstance(left.value, str):
                substring.append(left.value.upper())
    return tuple(dict.fromkeys(exact)), tuple(dict.fromkeys(substring))


def _holds_algo(node: ast.expr) -> bool:
    """``algo``, ``quant_algo``, ``quant_algo.upper()``."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        node = node.func.value
    return isinstance(node, ast.Name) and "algo" in node.id.lower()


# -- registry.py ----------------------------------------------------------------------------
def parse_registry(source: str, path: str = REGISTRY_PY) -> Registry:
    """Architecture names registered in vLLM's ``registry.py`` text."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as exc:
        return Registry(path, missing=(f"{path} is not parseable Python ({exc})",))
    dicts: dict[str, ast.Dict] = {}
    for node in tree.body:
        target, value = _assignment(node)
        if target and isinstance(value, ast.Dict):
            dicts[target] = value
    merged = dicts.get("_VLLM_MODELS")
    if merged is None:
        return Registry(path, missing=(f"{path} has no _VLLM_MODELS dictionary",))
    names: set[str] = set()
    for key, value in zip(merged.keys, merged.values, strict=False):
        if key is None and isinstance(value, ast.Name) and value.id in dicts:
            names |= _string_keys(dicts[value.id])
        elif isinstance(key, ast.Constant) and isinstance(key.value, str):
            names.add(key.value)
    multimodal = (
        _string_keys(dicts["_MULTIMODAL_MODELS"]) if "_MULTIMODAL_MODELS" in dicts else set()
    )
    previous: dict[str, str] = {}
    if "_PREVIOUSLY_SUPPORTED_MODELS" in dicts:
        node = dicts["_PREVIOUSLY_SUPPORTED_MODELS"]
        for key, value in zip(node.keys, node.values, strict=False):
            if isinstance(key, ast.Constant) and isinstance(value, ast.Constant):
                previous[str(key.value)] = str(value.value)
    if not names:
        return Registry(path, missing=(f"{path} names no architectures in _VLLM_MODELS",))
    return Registry(path, frozenset(names), frozenset(multimodal), previous)


def _string_keys(node: ast.Dict) -> set[str]:
    # ``**{k: v for ...}`` spreads (aliases of other entries) add no new names: skipped.
    return {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
