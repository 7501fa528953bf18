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

from pytest_vllm_env.readers import hf_config_class
from pytest_vllm_env.readers.config_expr import CONFIG_ROOTS
from pytest_vllm_env.readers.vllm_model_ast import (
    TIE,
    _Class,
    _config_key,
    _defaults,
    _dotted,
    _is_self,
    _is_super_init,
    _keyword,
    _name,
    _resolve_name,
    _self_attr,
    _statements,
    _strings,
    _subst,
    _substitute,
    _tie_key,
    _ties_weight,
)
from pytest_vllm_env.readers.vllm_model_loading import (
    _class_attr,
    _loader_call,
    _mapper,
    _method,
    _returned_call,
    bias_defaults,
    experts_rule,
    scopes,
)
from pytest_vllm_env.readers.vllm_model_types import (
    EXPERT_LAYERS,
    LEAVES,
    LISTS,
    ModelFile,
    Node,
)

REGISTRY_PY = "vllm/model_executor/models/registry.py"
MODELS_DIR = "vllm/model_executor/models"

# modules without parameters of their own that the loader may meet
NO_PARAMS = {"SiluAndMul", "GeluAndMul", "LogitsProcessor", "get_rope", "PPMissingLayer"}


# -- the model file ----------------------------------------------------------------------------


class _Reader:
    """Walks the classes of the model files from one class down to vLLM's layers."""

    def __init__(
        self,
        load: Callable[[str], str | None],
        registry: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        self.load = load
        self.registry = registry or {}
        self.bias_defaults = bias_defaults(load)
        self.visited: list[tuple[str, _Class]] = []  # (module path, its class)
        self._scope = ""
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
                owner = path.rpartition(".")[0]  # the aliasing class's own path
                self.aliases[path] = f"{owner}.{target}" if owner else target
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
        if callee in LISTS:  # nn.ModuleList([... for i in range(n)]) / nn.Sequential(a, b)
            self.place_list(cls, path, value, conds, env, depth)
            return
        if callee == "init_vllm_registered_model":  # the language model of a VL model
            self.place_registered(path, value, conds, depth)
            return
        if callee == "make_layers" and len(value.args) >= 2:
            self.counts[path] = _config_key(value.args[0]) or "?"
            inner = value.args[1]
            if isinstance(inner, ast.Lambda) and isinstance(inner.body, ast.Call):
                self.place(cls, f"{path}.{{i}}", inner.body, conds, env, depth + 1)
            return
        if callee is None:
            return
        callee = _resolve_name(callee, env, LEAVES)
        bound = env.get(callee)
        if isinstance(bound, ast.Call) and _name(bound.func) == "partial" and bound.args:
            # norm_layer = partial(RMSNorm, eps=...); norm_layer(dim) builds an RMSNorm
            callee = _name(bound.args[0])
            if callee is None:
                return
        if callee in NO_PARAMS:
            return
        if callee in LEAVES or callee in EXPERT_LAYERS:
            bias = _keyword(value, "bias")
            if bias is None and not any(k.arg == "bias" for k in value.keywords):
                default = self.bias_defaults.get(callee)  # built without bias=: its default
                bias = None if default is None else ("true" if default else "false")
            kind = LEAVES.get(callee, "experts")
            args = {str(i): self.text(a, env) for i, a in enumerate(value.args)}
            args.update({k.arg: self.text(k.value, env) for k in value.keywords if k.arg})
            self.nodes.append(Node(path, kind, callee, bias, conds, args, self._scope))
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
            if k.arg
            and not (isinstance(k.value, ast.Name) and k.value.id == k.arg and k.arg not in env)
        }
        # a module built from a nested config (vision_config=config.vision_config) and all
        # below it: their sizes are not the text model's
        saved = self._scope
        for k in value.keywords:
            # an attribute of the HF config (config.vision_config, hf_config.vision_config),
            # not one of vLLM's own (vllm_config.quant_config)
            owner, _, last = self.text(k.value, env).rpartition(".")
            if owner.rpartition(".")[2] in CONFIG_ROOTS and last.endswith("_config"):
                if last != "text_config":
                    self._scope = last
        try:
            self.walk_with(target, path + ".", conds, kwargs, depth + 1)
        finally:
            self._scope = saved

    def place_list(
        self,
        cls: _Class,
        path: str,
        value: ast.Call,
        conds: tuple[str, ...],
        env: dict[str, ast.expr],
        depth: int,
    ) -> None:
        """``nn.ModuleList([Block(...) for i in range(n)])``: ``path.{i}``, ``n`` entries
        (kept in ``counts`` as text); ``nn.ModuleList([a, b])`` / ``nn.Sequential(a, b)``:
        ``path.0``, ``path.1``."""
        items = list(value.args)
        if len(items) == 1 and isinstance(items[0], (ast.List, ast.Tuple, ast.ListComp)):
            items = [items[0]] if isinstance(items[0], ast.ListComp) else list(items[0].elts)
        for i, item in enumerate(items):
            if isinstance(item, ast.ListComp):
                gen = item.generators[0] if item.generators else None
                it = gen.iter if gen is not None else None
                if isinstance(it, ast.Call) and _name(it.func) == "range" and it.args:
                    self.counts[path] = self.text(it.args[-1], env)
                    self.place(cls, f"{path}.{{i}}", item.elt, conds, env, depth + 1)
                continue
            self.place(cls, f"{path}.{i}", item, conds, env, depth + 1)

    def place_registered(
        self, path: str, value: ast.Call, conds: tuple[str, ...], depth: int
    ) -> None:
        """``init_vllm_registered_model(..., architectures=["Qwen2ForCausalLM"])``
        (``models/utils.py``): that architecture's class from the registry, built from the
        text config (``hf_config=config.text_config``)."""
        archs = next((k.value for k in value.keywords if k.arg == "architectures"), None)
        names = _strings(archs)
        where = self.registry.get(names[0]) if names else None
        target = self.find(where[0], where[1]) if where else None
        if target is None:
            self.missing.append(f"{path}: init_vllm_registered_model of {names or '?'} not read")
            return
        saved = self._scope
        self._scope = ""
        try:
            self.walk_with(target, path + ".", conds, {}, depth + 1)
        finally:
            self._scope = saved

    def text(self, value: ast.expr, env: dict[str, ast.expr]) -> str:
        """``value`` as text with local names, arguments and ``self.<attr>`` replaced by what
        they were assigned (to be evaluated over config.json: readers/config_expr.py)."""
        return _dotted(_substitute(value, env))

    def walk_with(
        self, cls: _Class, path: str, conds: tuple[str, ...], kwargs: dict, depth: int
    ) -> None:
        self.visited.append((path.rstrip("."), cls))
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
            # the two branches of a test read from the model file (``if <expr>: self.mlp =
            # SparseMoeBlock(...) else: self.mlp = MLP(...)``) are both kept, each under its
            # condition; otherwise a later assignment of an attribute wins
            key = (
                attr
                if not any(c.startswith(("expr:", "not expr:")) for c in cond)
                else (f"{attr}|{'|'.join(cond)}")
            )
            if key not in found:
                order.append(key)
            found[key] = (attr, value, cond, names, owner)

        if init is None:
            for base in cls.bases:
                parent = self.find(cls.module, base)
                if parent is not None:
                    for item in self.assignments(parent):
                        add(*item)
                    break
            return [found[a] for a in order]

        def resolve(test: ast.expr) -> str:
            return "expr:" + _dotted(_substitute(test, env))

        for stmt, cond in _statements(init.body, (), resolve):
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
                    env[f"self.{target.attr}"] = stmt.value
                elif _ties_weight(target, stmt.value):
                    # self.lm_head.weight = self.model.embed_tokens.weight (0.26.0's
                    # Qwen3-MoE): the same tie as lm_head.tie_weights(embed_tokens)
                    module = target.value.attr  # type: ignore[attr-defined]
                    tie = ast.Call(ast.Attribute(stmt.value, "tie_weights"), [], [])
                    add(module + TIE, tie, cond, env)
                elif isinstance(target, ast.Name):
                    # `if norm_layer is None: norm_layer = ...` keeps a value handed down
                    guard = f"{target.id} is None"
                    given = env.get(target.id)
                    handed = given is not None and not (
                        isinstance(given, ast.Constant) and given.value is None
                    )
                    if not (cond and cond[-1] == "expr:False") and not (
                        cond and cond[-1].endswith(guard) and handed
                    ):
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


def read_model_file(
    arch: str, registry: dict[str, tuple[str, str]], load: Callable[[str], str | None]
) -> ModelFile:
    """The :class:`ModelFile` of ``arch`` in the vLLM whose files ``load(relative path)``
    returns (None for an absent file)."""
    where = registry.get(arch)
    if where is None:
        return ModelFile(arch, "", "", missing=(f"{arch} is not in {REGISTRY_PY}",))
    module, cls_name = where
    reader = _Reader(load, registry)
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
    scoped = scopes(reader.visited, mapper, reader)
    experts = experts_rule(load) if any(n.kind == "experts" for n in reader.nodes) else {}
    # the config attributes the file reads go through the transformers class: only needed
    # where an expression of the file is evaluated (kept out of the plain decoders' facts)
    evaluated = any(n.kind == "experts" or n.scope for n in reader.nodes) or scoped
    config_class = hf_config_class.read(arch, load) if evaluated else {}
    missing += experts.get("missing", [])
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
        scoped,
        experts,
        config_class,
    )
