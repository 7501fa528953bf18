"""Static read of one architecture's model class in the env's vLLM: its module tree and how
its ``load_weights`` maps, skips and refuses checkpoint tensors.

Read with :mod:`ast` from ``vllm/model_executor/models/registry.py`` (architecture -> module
file and class) and that file (plus the sibling model files it imports classes from), never
imported. What is read:

- the module tree: every ``self.<name> = <Layer>(...)`` of each class's ``__init__`` (and of
  the ``self.<method>(...)`` it calls, and of base classes through ``super().__init__``),
  followed through classes of the model files, ``make_layers(n, lambda prefix: Cls(...))``
  and constructor parameters defaulting to a class (``layer_type=LlamaDecoderLayer``); the
  leaves are vLLM's layers (``QKVParallelLinear``, ``MergedColumnParallelLinear``,
  ``RowParallelLinear``, ``RMSNorm``, ``VocabParallelEmbedding``, ``ParallelLMHead``,
  ``Attention``...). Assignments under ``if config.tie_word_embeddings`` or another
  ``config.<key>`` test keep that condition; pipeline-parallel rank tests count as true (one
  stage); ``PPMissingLayer()`` is no module.
- the weight-name mapping: ``hf_to_vllm_mapper = WeightsMapper(...)`` (prefix, substring,
  suffix and stacked entries), ``packed_modules_mapping``;
- the ``AutoWeightsLoader(...)`` call of ``load_weights``: ``skip_prefixes`` (and the config
  key that guards them: vLLM 0.26.0's ``["lm_head."] if self.config.tie_word_embeddings``),
  ``skip_substrs``, ``ignore_unexpected_prefixes``/``_suffixes``, and whether it passes the
  mapper.

A structure the reader does not follow is named in ``missing``: the checks then say static
reading cannot decide (the load probe can: ``probes/vllm_load_weights.py``).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_vllm_env.readers.vllm_model_ast import (
    TIE,
    _config_key,
    _defaults,
    _dotted,
    _is_self,
    _is_super_init,
    _keyword,
    _mapping,
    _name,
    _resolve_name,
    _self_attr,
    _statements,
    _strings,
    _subst,
    _tie_key,
)

REGISTRY_PY = "vllm/model_executor/models/registry.py"
MODELS_DIR = "vllm/model_executor/models"

# vLLM's layers, by class name -> the kind the facts know the parameters of
LEAVES = {
    "QKVParallelLinear": "qkv",
    "MergedColumnParallelLinear": "merged",
    "RowParallelLinear": "row",
    "ColumnParallelLinear": "column",
    "ReplicatedLinear": "replicated",
    "RMSNorm": "norm",
    "GemmaRMSNorm": "norm",
    "LayerNorm": "layernorm",
    "VocabParallelEmbedding": "embedding",
    "ParallelLMHead": "lm_head",
    "Attention": "attention",
    "EncoderOnlyAttention": "attention",
}
# modules without parameters of their own that the loader may meet
NO_PARAMS = {"SiluAndMul", "GeluAndMul", "LogitsProcessor", "get_rope", "PPMissingLayer"}


@dataclass(frozen=True)
class Node:
    """One module with parameters: ``path`` below the model class (``{i}`` for a layer
    index of a ``make_layers`` list of ``count`` entries, the config key), its ``kind``
    (:data:`LEAVES`) and vLLM ``layer`` class, the ``bias=`` argument as read (``"true"``,
    ``"false"`` or ``"config:<key>"``; None: not read) and the conditions it is built under
    (``"config:<key>"`` or ``"not config:<key>"``)."""

    path: str
    kind: str
    layer: str
    bias: str | None = None
    conditions: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelFile:
    """What the env's vLLM says about one architecture (see the module docstring)."""

    arch: str
    module: str
    cls: str
    nodes: tuple[Node, ...] = ()
    counts: dict[str, str] = field(default_factory=dict)  # "model.layers" -> config key
    aliases: dict[str, str] = field(default_factory=dict)  # "lm_head" -> "model.embed_tokens"
    alias_conditions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # modules tied to an embedding (``<module>.tie_weights(embed)``) -> the conditions
    tied: dict[str, tuple[str, ...]] = field(default_factory=dict)
    stacked: tuple[tuple[str, str, str], ...] = ()  # (".q_proj", ".qkv_proj", "q")
    prefixes: tuple[tuple[str, str | None], ...] = ()
    substrs: tuple[tuple[str, str | None], ...] = ()
    suffixes: tuple[tuple[str, str | None], ...] = ()
    packed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    auto_loader: bool = False
    skip_prefixes: tuple[str, ...] = ()
    skip_prefixes_if: str | None = None  # the config key guarding skip_prefixes
    skip_substrs: tuple[str, ...] = ()
    ignore_prefixes: tuple[str, ...] = ()
    ignore_suffixes: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelFile:
        d = dict(data)
        d["nodes"] = tuple(Node(**{**n, "conditions": tuple(n["conditions"])}) for n in d["nodes"])
        for key in ("stacked", "prefixes", "substrs", "suffixes"):
            d[key] = tuple(tuple(x) for x in d[key])
        d["tied"] = {k: tuple(v) for k, v in d["tied"].items()}
        d["alias_conditions"] = {k: tuple(v) for k, v in d["alias_conditions"].items()}
        for key in ("skip_prefixes", "skip_substrs", "ignore_prefixes", "ignore_suffixes"):
            d[key] = tuple(d[key])
        d["packed"] = {k: tuple(v) for k, v in d["packed"].items()}
        d["missing"] = tuple(d["missing"])
        return cls(**d)


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


# -- the model file ----------------------------------------------------------------------------
@dataclass
class _Class:
    name: str
    module: str
    node: ast.ClassDef
    bases: list[str]
    methods: dict[str, ast.FunctionDef]


class _Reader:
    """Walks the classes of the model files from one class down to vLLM's layers."""

    def __init__(self, load: Callable[[str], str | None]) -> None:
        self.load = load
        self.modules: dict[str, dict[str, _Class]] = {}
        self.imports: dict[str, dict[str, tuple[str, str]]] = {}
        self.missing: list[str] = []
        self.nodes: list[Node] = []
        self.counts: dict[str, str] = {}
        self.aliases: dict[str, str] = {}
        self.tie_conditions: dict[str, tuple[str, ...]] = {}
        self.alias_conditions: dict[str, tuple[str, ...]] = {}

    def module(self, name: str) -> dict[str, _Class]:
        if name not in self.modules:
            self.modules[name] = {}
            self.imports[name] = {}
            text = self.load(f"{MODELS_DIR}/{name}.py")
            if text is None:
                self.missing.append(f"{MODELS_DIR}/{name}.py is not there")
                return {}
            try:
                tree = ast.parse(text)
            except (SyntaxError, ValueError) as exc:
                self.missing.append(f"{MODELS_DIR}/{name}.py does not parse ({exc})")
                return {}
            for node in tree.body:
                if isinstance(node, ast.ClassDef):
                    methods = {f.name: f for f in node.body if isinstance(f, ast.FunctionDef)}
                    bases = [_name(b) for b in node.bases]
                    self.modules[name][node.name] = _Class(
                        node.name, name, node, [b for b in bases if b], methods
                    )
                elif isinstance(node, ast.ImportFrom) and node.module is not None:
                    src = node.module
                    if node.level == 1:
                        src_mod = src
                    elif src.startswith("vllm.model_executor.models."):
                        src_mod = src.rsplit(".", 1)[1]
                    else:
                        continue
                    for alias in node.names:
                        self.imports[name][alias.asname or alias.name] = (src_mod, alias.name)
        return self.modules[name]

    def find(self, module: str, cls: str, depth: int = 0) -> _Class | None:
        found = self.module(module).get(cls)
        if found is not None or depth > 4:
            return found
        target = self.imports[module].get(cls)
        if target is None:
            return None
        return self.find(target[0], target[1], depth + 1)

    # -- the tree ---------------------------------------------------------------------------
    def walk(self, cls: _Class, path: str, conds: tuple[str, ...], depth: int = 0) -> None:
        if depth > 12:
            return
        for attr, value, cond, env, owner in self.assignments(cls):
            self.place(owner, f"{path}{attr}", value, conds + cond, env, depth)

    def place(
        self,
        cls: _Class,
        path: str,
        value: ast.expr,
        conds: tuple[str, ...],
        env: dict[str, ast.expr],
        depth: int,
    ) -> None:
        if isinstance(value, ast.Attribute) and _self_attr(value):
            # self.lm_head = self.model.embed_tokens: the same module under two names
            target = _dotted(value).removeprefix("self.")
            if "." in target or target in ("model", "lm_head"):  # a module, not a method
                self.aliases[path] = target
                self.alias_conditions[path] = conds
            return
        if not isinstance(value, ast.Call):
            return
        func = value.func
        if isinstance(func, ast.Attribute) and func.attr == "tie_weights":
            self.tie_conditions[path.removesuffix(TIE)] = conds
            return
        if isinstance(func, ast.Attribute) and _self_attr(func):
            ret = _returned_call(cls, func.attr, self)
            if ret is not None:
                self.place(cls, path, ret, conds, env, depth)
            return
        callee = _name(func)
        if callee == "make_layers" and len(value.args) >= 2:
            self.counts[path] = _config_key(value.args[0]) or "?"
            inner = value.args[1]
            if isinstance(inner, ast.Lambda) and isinstance(inner.body, ast.Call):
                self.place(cls, f"{path}.{{i}}", inner.body, conds, env, depth + 1)
            return
        if callee is None:
            return
        callee = _resolve_name(callee, env, LEAVES)
        if callee in NO_PARAMS:
            return
        if callee in LEAVES:
            bias = _keyword(value, "bias")
            self.nodes.append(Node(path, LEAVES[callee], callee, bias, conds))
            return
        target = self.find(cls.module, callee)
        if target is None:  # a name handed down from a subclass's scope (Qwen3Model passes
            # decoder_layer_type=Qwen3DecoderLayer to Qwen2Model.__init__)
            target = next(
                (c for mod in list(self.modules) for c in [self.find(mod, callee)] if c), None
            )
        if target is None:
            return
        kwargs = {
            k.arg: _subst(k.value, env)
            for k in value.keywords
            if k.arg and not (isinstance(k.value, ast.Name) and k.value.id == k.arg)
        }
        self.walk_with(target, path + ".", conds, kwargs, depth + 1)

    def walk_with(
        self, cls: _Class, path: str, conds: tuple[str, ...], kwargs: dict, depth: int
    ) -> None:
        saved = getattr(self, "_kwargs", {})
        self._kwargs = kwargs
        try:
            self.walk(cls, path, conds, depth)
        finally:
            self._kwargs = saved

    def _value(self, cls: _Class, value: ast.expr) -> ast.expr:
        """``self.decoder_layer_type`` -> the class attribute's value (Qwen3Model)."""
        if isinstance(value, ast.Attribute) and _is_self(value.value):
            found = _class_attr(cls, self, value.attr)
            if found is not None:
                return found
        return value

    def assignments(self, cls: _Class) -> list[tuple[str, ast.expr, tuple[str, ...], dict, _Class]]:
        """``(attr, value, conditions, names -> values)`` of ``cls.__init__`` (and its base
        classes' through ``super().__init__``); a later assignment of an attribute wins."""
        init = cls.methods.get("__init__")
        env: dict[str, ast.expr] = {}
        if init is not None:
            env = _defaults(init)
            env.update(getattr(self, "_kwargs", {}))
        found: dict[str, tuple[str, ast.expr, tuple[str, ...], dict, _Class]] = {}
        order: list[str] = []

        def add(
            attr: str, value: ast.expr, cond: tuple[str, ...], names: dict, owner: _Class = cls
        ) -> None:
            if attr not in found:
                order.append(attr)
            found[attr] = (attr, value, cond, names, owner)

        if init is None:
            for base in cls.bases:
                parent = self.find(cls.module, base)
                if parent is not None:
                    for item in self.assignments(parent):
                        add(*item)
                    break
            return [found[a] for a in order]
        for stmt, cond in _statements(init.body, ()):
            if _is_super_init(stmt):
                call = stmt.value  # type: ignore[attr-defined]
                kwargs = {k.arg: k.value for k in call.keywords if k.arg}
                for base in cls.bases:
                    parent = self.find(cls.module, base)
                    if parent is None:
                        continue
                    saved = getattr(self, "_kwargs", {})
                    self._kwargs = {k: self._value(cls, _subst(v, env)) for k, v in kwargs.items()}
                    try:
                        for item in self.assignments(parent):
                            add(*item)
                    finally:
                        self._kwargs = saved
                    break
                continue
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                target = stmt.targets[0]
                if isinstance(target, ast.Tuple) and target.elts:
                    target = target.elts[-1]  # start, end, self.layers = make_layers(...)
                if isinstance(target, ast.Attribute) and _is_self(target.value):
                    add(_tie_key(target.attr, stmt.value), stmt.value, cond, env)
                elif isinstance(target, ast.Name):
                    env[target.id] = stmt.value
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
                func = stmt.value.func
                if isinstance(func, ast.Attribute) and _is_self(func.value):
                    method = _method(cls, func.attr, self)
                    if method is not None:
                        for inner, c2 in _statements(method.body, cond):
                            if isinstance(inner, ast.Assign) and len(inner.targets) == 1:
                                t = inner.targets[0]
                                if isinstance(t, ast.Attribute) and _is_self(t.value):
                                    add(t.attr, inner.value, c2, env)
        return [found[a] for a in order]


def _method(cls: _Class, name: str, reader: _Reader) -> ast.FunctionDef | None:
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


def _returned_call(cls: _Class, name: str, reader: _Reader) -> ast.Call | None:
    method = _method(cls, name, reader)
    if method is None:
        return None
    for node in ast.walk(method):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Call):
            return node.value
    return None


def _class_attr(cls: _Class, reader: _Reader, name: str, depth: int = 0) -> ast.expr | None:
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


def _mapper(cls: _Class, reader: _Reader) -> dict[str, Any]:
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


def _loader_call(cls: _Class, reader: _Reader) -> dict[str, Any]:
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


def read_model_file(
    arch: str, registry: dict[str, tuple[str, str]], load: Callable[[str], str | None]
) -> ModelFile:
    """The :class:`ModelFile` of ``arch`` in the vLLM whose files ``load(relative path)``
    returns (None for an absent file)."""
    where = registry.get(arch)
    if where is None:
        return ModelFile(arch, "", "", missing=(f"{arch} is not in {REGISTRY_PY}",))
    module, cls_name = where
    reader = _Reader(load)
    cls = reader.find(module, cls_name)
    if cls is None:
        return ModelFile(
            arch,
            module,
            cls_name,
            missing=tuple(reader.missing) or (f"{MODELS_DIR}/{module}.py has no {cls_name}",),
        )
    reader.walk(cls, "", ())
    packed_node = _class_attr(cls, reader, "packed_modules_mapping")
    packed: dict[str, tuple[str, ...]] = {}
    if isinstance(packed_node, ast.Dict):
        for k, v in zip(packed_node.keys, packed_node.values, strict=False):
            if isinstance(k, ast.Constant) and isinstance(k.value, str):
                packed[k.value] = _strings(v)
    # the mapper is the one of the class whose load_weights passes mapper=...; Llama's
    # causal-LM class delegates to LlamaModel.load_weights, which does
    mapper = _mapper(cls, reader)
    inner = reader.find(module, cls_name)
    for attr, value, _, _, _ in reader.assignments(cls):
        if attr == "model" and isinstance(value, ast.Call):
            target = _name(value.func)
            if isinstance(value.func, ast.Attribute) and _self_attr(value.func):
                ret = _returned_call(cls, value.func.attr, reader)
                target = _name(ret.func) if ret is not None else None
            inner = reader.find(module, target) if target else None
            break
    if inner is not None and not mapper["stacked"]:
        mapper = _mapper(inner, reader)
    loader = _loader_call(cls, reader)
    missing = list(reader.missing)
    if not reader.nodes:
        missing.append(f"no vLLM layers found under {module}.{cls_name}")
    elif not any("{i}" in n.path for n in reader.nodes):
        missing.append(f"no decoder layers (make_layers) found under {module}.{cls_name}")
    if not loader.get("auto_loader"):
        missing.append(
            f"{module}.{cls_name}.load_weights does not use AutoWeightsLoader (a loop of its "
            "own: not read statically)"
        )
    return ModelFile(
        arch,
        module,
        cls_name,
        tuple(reader.nodes),
        dict(reader.counts),
        dict(reader.aliases),
        dict(reader.alias_conditions),
        dict(reader.tie_conditions),
        mapper["stacked"],
        mapper["prefixes"],
        mapper["substrs"],
        mapper["suffixes"],
        packed,
        bool(loader.get("auto_loader")),
        loader.get("skip_prefixes", ()),
        loader.get("skip_prefixes_if"),
        loader.get("skip_substrs", ()),
        loader.get("ignore_prefixes", ()),
        loader.get("ignore_suffixes", ()),
        tuple(missing),
    )
