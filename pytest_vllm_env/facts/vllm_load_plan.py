"""A checkpoint as the env's vLLM will load it: the parameters its model asks for, and what
its loader does with every tensor of the files it reads (static: vLLM's own source read with
``ast``, never imported; the exact way is ``probes/vllm_load_weights.py``).

Built from:
- the files vLLM reads (``readers/shard_index.py``: the index, the ``*.safetensors`` files,
  their headers) and the checkpoint's two JSON files;
- the quantization decision (``facts/vllm_quant_decision.py``);
- the architecture's model class (``readers/vllm_model_file.py``: its module tree, weight
  mapper, packed modules and ``AutoWeightsLoader`` arguments) and the loader-wide rules
  (``readers/vllm_loader.py``), KV-scale renames (``readers/vllm_kv_naming.py``) and ModelOpt's
  exclusion rules (``readers/vllm_source.py``, ``facts/modelopt_load.py``).

What each rule is, from vLLM 0.26.0's and 0.33.0's source, and checked against both real
loaders on the CPU (fixtures/loader_truth/outcomes.json):

- Names: the KV-scale rename, then the model's ``hf_to_vllm_mapper`` (substring, stacked
  ``.q_proj`` -> ``.qkv_proj`` shard ``q``, prefix, suffix; a mapping to None drops the
  tensor); rotary buffers dropped; tied heads skipped (0.26.0: the model's
  ``skip_prefixes=["lm_head."]``; 0.33.0: the alias of the embedding's parameter). A name
  whose module path the model does not have is refused ("There is no module or parameter
  named ..."), unless it ends in ``.bias`` or one of the quant config's ignored suffixes.
- Dtypes: every weight loader ends in ``param.data.copy_(loaded)``: any dtype is cast to the
  parameter's (float to FP8 included; integers converted as numbers).
- Missing parameters: a quantized model's loader never checks (``DefaultModelLoader``
  tracks only when ``quantization is None``): a Linear weight or embedding keeps
  ``torch.empty``, an RMSNorm weight its 1.0, a ModelOpt scale ``finfo(float32).min``.
- Shards: files named by the index must exist; only those are read; a file's every tensor is
  yielded in natural file order, whatever the index maps (a tensor in two files: the later
  one's copy stays).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_vllm_env.facts.modelopt_load import ShardMismatch, excluder
from pytest_vllm_env.facts.modelopt_mixed import MIXED, FusedMismatch, resolve, vllm_keys
from pytest_vllm_env.facts.vllm_load_names import iterated_files, map_name
from pytest_vllm_env.facts.vllm_model_params import (
    FORMATS,
    KV_LEAVES,
    LINEAR_KINDS,
    Dims,
    Param,
    _expand,
    _expected,
    _holds,
    _text,
    arg_shapes,
    dims_of,
    expert_params,
    route_expert,
    stacked_shards,
    with_class,
)
from pytest_vllm_env.facts.vllm_quant_decision import QuantDecision
from pytest_vllm_env.readers import config_expr
from pytest_vllm_env.readers.safetensors_header import TensorInfo
from pytest_vllm_env.readers.shard_index import ShardLayout
from pytest_vllm_env.readers.vllm_kv_naming import VLLM_0_26 as KV_0_26
from pytest_vllm_env.readers.vllm_kv_naming import KvScaleNaming
from pytest_vllm_env.readers.vllm_loader import VLLM_0_26, LoaderSource
from pytest_vllm_env.readers.vllm_model_file import ModelFile, Node
from pytest_vllm_env.readers.vllm_source import ModelOptSource


@dataclass(frozen=True)
class Fate:
    """What the loader does with one tensor of one file it reads."""

    tensor: str
    file: str
    dtype: str
    shape: tuple[int, ...]
    fate: str  # loaded, skipped, ignored, dropped, refused
    param: str | None = None
    shard: str | None = None
    why: str = ""


@dataclass(frozen=True)
class Tie:
    """tie_word_embeddings as vLLM takes it for this checkpoint."""

    config: bool  # what config.json says
    head_in_checkpoint: bool
    built_tied: bool  # vLLM builds lm_head on the embedding's weight
    rule: str  # "skip-prefix" (0.26.0 Llama-style), "alias" (0.33.0), "" (untied)
    identical: bool | None  # the checkpoint's lm_head equals its embedding (sampled)


@dataclass
class LoadPlan:
    """The checkpoint as the env's vLLM loads it (see the module docstring)."""

    decision: QuantDecision
    arch: str | None
    model: ModelFile | None
    undecided: list[str] = field(default_factory=list)  # why static reading cannot say
    files: list[str] = field(default_factory=list)  # the files vLLM reads, in its order
    file_refusal: str | None = None
    unread_files: list[str] = field(default_factory=list)  # present, not in the index
    unlisted: list[str] = field(default_factory=list)  # held by a file, not in the index
    listed_absent: list[str] = field(default_factory=list)  # in the index, in no file read
    duplicates: list[tuple[str, list[str], bool | None]] = field(default_factory=list)
    params: dict[str, Param] = field(default_factory=dict)
    fates: list[Fate] = field(default_factory=list)
    filled: dict[str, set[str]] = field(default_factory=dict)  # param -> shards loaded
    tie: Tie | None = None
    dims: Dims | None = None
    rules: str = ""
    aliases: dict[str, str] = field(default_factory=dict)  # module -> the module it is
    weight_map: dict[str, str] | None = None  # the index's
    # DefaultModelLoader raises for parameters no tensor filled when the model is not
    # quantized (except those of layers with a quant method: Linear, embeddings)
    strict_unquantized: bool = True
    # tensors vLLM never sees whose parameter then stays unset: name -> (why, parameter)
    lost: dict[str, tuple[str, str]] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)  # config.json, as read
    experts: dict[str, Node] = field(default_factory=dict)  # expert layers built: path -> node

    @property
    def decidable(self) -> bool:
        return not self.undecided

    def unset(self) -> dict[str, list[str]]:
        """Required parameters (or shards of them) no tensor loads; a fused parameter loaded
        whole (``qkv.weight``: the weight loader's ``loaded_shard_id is None`` path) has
        every shard."""
        out: dict[str, list[str]] = {}
        for name, p in self.params.items():
            if not p.required:
                continue
            got = self.filled.get(name, set())
            if "" in got:
                continue
            want = list(p.shards) or [""]
            lacking = [s for s in want if s not in got]
            if lacking:
                out[name] = lacking
        return out


# -- the pieces ----------------------------------------------------------------------------------
def build_params(
    model: ModelFile,
    d: Dims,
    config: Mapping[str, Any],
    decision: QuantDecision,
    is_excluded: Callable[[str], bool],
    tied: bool,
    kv_params: bool,
) -> tuple[dict[str, Param], list[str]]:
    """Every parameter of the model tree, expanded over its layers; (params, optional
    module paths whose conditions could not be read)."""
    params: dict[str, Param] = {}
    optional: list[str] = []
    fmt = FORMATS.get(decision.algo or "") if decision.quant_method else None
    keys: dict[str, str] = {}
    if decision.quant_method and decision.algo == MIXED:
        fmt = FORMATS["FP8"]  # a stand-in: _node_params picks each layer's own
        # apply_vllm_mapper: the keys renamed by the model's mapper before any lookup
        keys = vllm_keys(dict(decision.layers), model.prefixes, model.substrs, model.suffixes)
    for node in model.nodes:
        for path, layer in _expand(node.path, model.counts, d.layers, config):
            # a condition is evaluated for the layer being built (Qwen3-MoE's sparse block
            # in every decoder_sparse_step-th layer not in mlp_only_layers)
            verdicts = [_holds(c, config, tied, layer) for c in node.conditions]
            if False in verdicts:
                continue
            maybe = None in verdicts
            if maybe:
                optional.append(path)
            if node.kind == "experts":
                found = expert_params(node, path, config, layer, model.experts, d.dtype)
                if found is None:
                    optional.append(path)
                    continue
            else:
                found = _node_params(
                    node, path, d, config, fmt, decision, is_excluded, kv_params, keys,
                    model.packed, layer, stacked_shards(model),
                )  # fmt: skip
            for p in found:
                params[p.name] = p if not maybe else Param(**{**p.__dict__, "required": False})
    if tied:
        for head in ("lm_head", *model.tied):
            params.pop(f"{head}.weight", None)
    return params, optional


def _node_params(
    node: Node,
    path: str,
    d: Dims,
    config: Mapping[str, Any],
    fmt: tuple[str, dict[str, tuple[str, bool]]] | None,
    decision: QuantDecision,
    is_excluded: Callable[[str], bool],
    kv_params: bool,
    keys: Mapping[str, str] | None = None,
    packed: Mapping[str, Sequence[str]] | None = None,
    layer: int | None = None,
    stacked: Mapping[str, tuple[str, ...]] | None = None,
) -> list[Param]:
    # the constructor's own sizes where they evaluate (a shared expert's
    # shared_expert_intermediate_size, a router's num_experts); else the text model's
    # Llama-family sizes, which a module of a nested config (a vision tower) does not have
    shapes = arg_shapes(node, config, layer)
    if shapes is None:
        shapes = _expected(path, node.kind, d) if not node.scope else {}
    shards = tuple(s for s in shapes if s) if node.kind in ("qkv", "merged") else ()
    if not shards and node.kind in ("qkv", "merged"):  # unsized: the mapper's shard ids
        shards = (stacked or {}).get(path.rpartition(".")[2], ())
    if node.kind in ("norm", "layernorm"):
        out = [Param(f"{path}.weight", node.kind, d.dtype, (), shapes, "ones")]
        if node.kind == "layernorm":
            out.append(Param(f"{path}.bias", node.kind, d.dtype, (), shapes, "zeros"))
        return out
    if node.kind == "embedding":
        return [Param(f"{path}.weight", node.kind, d.dtype, (), shapes)]
    if node.kind == "conv":  # layers/conv.py ConvLayerBase: weight (and bias= if asked)
        out = [Param(f"{path}.weight", node.kind, d.dtype)]
        if node.bias == "true":
            out.append(Param(f"{path}.bias", node.kind, d.dtype))
        return out
    if node.kind == "attention":
        if not kv_params:
            return []
        return [
            Param(f"{path}.{leaf}", node.kind, "F32", (), {}, "default", False)
            for leaf in KV_LEAVES
        ]
    if node.kind not in LINEAR_KINDS + ("lm_head",):
        return []
    try:
        quantized = fmt is not None and not is_excluded(path)
    except ShardMismatch:
        quantized = False
    if quantized and decision.algo == MIXED:
        # ModelOptMixedPrecisionConfig.get_quant_method: the layer's own algorithm from
        # quantized_layers (_resolve_quant_algo); one it has no Linear method for, or none,
        # gives UnquantizedLinearMethod (facts/modelopt_mixed.py)
        try:
            own = resolve(keys if keys is not None else dict(decision.layers), path, packed or None)
        except FusedMismatch:
            own = None
        fmt = FORMATS.get(own or "") if own in decision.served else None
        quantized = fmt is not None
    out: list[Param] = []
    if quantized:
        wdtype, scales = fmt  # type: ignore[misc]
        packed = {s: (o, i // 2) for s, (o, i) in shapes.items()} if wdtype == "U8" else shapes
        out.append(Param(f"{path}.weight", node.kind, wdtype, shards, packed, "empty", True, True))
        for leaf, (dtype, required) in scales.items():
            out.append(Param(f"{path}.{leaf}", node.kind, dtype, shards, {}, "min", required, True))
    else:
        out.append(Param(f"{path}.weight", node.kind, d.dtype, shards, shapes))
    bias = node.bias
    has_bias = bias == "true" or (
        bias is not None and bias.startswith("config:") and bool(_text(config).get(bias[7:]))
    )
    if bias is None and node.args.get("bias"):  # bias=bias handed down: its value
        has_bias = config_expr.evaluate(node.args["bias"], config, layer) is True
    if has_bias:
        out.append(Param(f"{path}.bias", node.kind, d.dtype, shards, {}, "empty"))
    return out


def plan(
    layout: ShardLayout,
    config: Mapping[str, Any],
    decision: QuantDecision,
    model: ModelFile | None,
    loader: LoaderSource | None,
    kv: KvScaleNaming | None,
    modelopt: ModelOptSource | None,
    samples: Callable[[TensorInfo], bytes | None] = lambda t: None,
) -> LoadPlan:
    """The :class:`LoadPlan` of one checkpoint folder; ``samples`` reads a few spans of a
    tensor's bytes (to tell two copies apart), None where it cannot."""
    rules = loader if loader is not None and loader.config_json_first is not None else VLLM_0_26
    kv = kv if kv is not None and kv.mode else KV_0_26
    archs = config.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    out = LoadPlan(
        decision, arch, model, rules="the env's vLLM" if rules is loader else "vLLM 0.26.0's rules"
    )
    out.dims = d = dims_of(config)
    if layout.mistral_files:
        out.undecided.append(
            f"{', '.join(layout.mistral_files)}: vLLM loads the Mistral format "
            "(consolidated*.safetensors), not read here"
        )
    out.weight_map = layout.weight_map
    out.strict_unquantized = rules.strict_only_unquantized is not False
    files, refusal, unread = iterated_files(layout)
    out.files, out.file_refusal, out.unread_files = files, refusal, unread
    problems = [f"{n}: {layout.files[n].problem}" for n in files if layout.files[n].problem]
    if problems:
        out.undecided.append("unreadable safetensors: " + "; ".join(problems))
    if not files and refusal is None:
        out.undecided.append("no *.safetensors file to read")
    seen: dict[str, list[str]] = {}
    tensors: list[tuple[str, TensorInfo]] = []
    for f in files:
        for name, info in sorted(layout.files[f].tensors.items()):  # safe_open().keys(): sorted
            seen.setdefault(name, []).append(f)
            tensors.append((f, info))
    if layout.weight_map is not None:
        out.unlisted = sorted(n for n in seen if n not in layout.weight_map)
        out.listed_absent = sorted(n for n in layout.weight_map if n not in seen)
    for name, where in sorted(seen.items()):
        if len(where) > 1:
            copies = [samples(layout.files[f].tensors[name]) for f in where]
            same = None if None in copies else len(set(copies)) == 1
            out.duplicates.append((name, where, same))
    if model is None or model.missing or d is None:
        out.undecided += (
            list(model.missing) if model is not None else [f"{arch}: no model class read"]
        )
        if d is None:
            out.undecided.append(
                "config.json lacks hidden_size / num_attention_heads / num_hidden_layers"
            )
        return out
    head = any(n.endswith("lm_head.weight") for n in seen)
    tied = d.tied and not (head and rules.unties_for_checkpoint_head)
    same = None
    if d.tied and head and "model.embed_tokens.weight" in seen and "lm_head.weight" in seen:
        a = samples(layout.files[seen["lm_head.weight"][-1]].tensors["lm_head.weight"])
        b = samples(
            layout.files[seen["model.embed_tokens.weight"][-1]].tensors["model.embed_tokens.weight"]
        )
        same = None if a is None or b is None else a == b
    rule = "" if not tied else ("alias" if rules.tied_alias_skip else "skip-prefix")
    out.tie = Tie(d.tied, head, tied, rule, same)
    exclusion = _exclusion(modelopt)
    decide = excluder(decision.exclude, **exclusion)
    kv_params = bool(decision.kv_algo) or (decision.quant_method or "").startswith("modelopt")
    out.config = config = with_class(config, model.config_class)
    if decision.quant_method and any(n.kind == "experts" for n in model.nodes):
        out.undecided.append(
            f"{arch}: quantized expert weights (FusedMoE's quant method) are not planned statically"
        )
        return out
    for prefix, text in model.counts.items():
        # a list's length the file computes (a vision tower's depth) must be read: the text
        # model's num_hidden_layers stands in only for a plain config key
        if not text.isidentifier() and config_expr.as_int(text, config) is None:
            out.undecided.append(f"{prefix}: the length of the list ({text}) is not read")
    if out.undecided:
        return out
    out.params, optional = build_params(model, d, config, decision, decide, tied, kv_params)
    out.experts = {
        path: n
        for n in model.nodes
        if n.kind == "experts"
        for path, _ in _expand(n.path, model.counts, d.layers, config)
        if any(p.startswith(path + ".") for p in out.params)
    }
    for alias, target in model.aliases.items():  # self.lm_head = self.model.embed_tokens
        conds = model.alias_conditions.get(alias, ())
        if all(_holds(c, config, tied) is not False for c in conds):
            out.aliases[alias] = target
            for name in [n for n in out.params if n.startswith(alias + ".")]:
                del out.params[name]
    _route(out, tensors, model, rules, kv, tied)
    unset = out.unset()
    unseen = [
        (n, f"in {f}, which the index does not name")
        for f in unread
        for n in layout.files[f].tensors
    ]
    unseen += [(n, "listed by the index, in no shard") for n in out.listed_absent]
    for name, why in unseen:
        mapped, _, _ = map_name(name, model, kv)
        if mapped in unset:
            out.lost[name] = (why, mapped)
    return out


def _exclusion(source: ModelOptSource | None) -> dict[str, bool]:
    known = source is not None and source.exclusion is not None
    return {
        "legacy": known and source.exclusion == "substring",  # type: ignore[union-attr]
        "split": not known or source.splits_wildcards,  # type: ignore[union-attr]
    }


def _route(
    out: LoadPlan,
    tensors: Sequence[tuple[str, TensorInfo]],
    model: ModelFile,
    rules: LoaderSource,
    kv: KvScaleNaming,
    tied: bool,
) -> None:
    modules = {p.rpartition(".")[0] for p in out.params}
    containers = {m.rsplit(".", k)[0] for m in modules for k in range(m.count(".") + 1)}
    layers = out.dims.layers if out.dims else 1
    containers |= {
        path
        for n in model.nodes
        for path, i in _expand(n.path, model.counts, layers, out.config)
        # a module a condition read from the model file leaves out for this layer is none
        if not any(c.startswith(("expr:", "not expr:")) for c in n.conditions)
        or False not in [_holds(c, out.config, tied, i) for c in n.conditions]
    }
    containers |= set(out.aliases)
    skip_prefixes = model.skip_prefixes if (
        model.skip_prefixes_if is None or (model.skip_prefixes_if == "tie_word_embeddings" and tied)
    ) else ()  # fmt: skip
    for sc in model.scopes:  # a scope's own AutoWeightsLoader skips below it
        guard = sc.get("skip_prefixes_if")
        if guard is None or (guard == "tie_word_embeddings" and tied):
            skip_prefixes = (*skip_prefixes, *(f"{sc['path']}.{p}" for p in sc["skip_prefixes"]))
    rotary = rules.rotary_drops or VLLM_0_26.rotary_drops or ()
    # every AutoWeightsLoader of a scope (a module with its own load_weights) ignores its own
    scoped = [suf for sc in model.scopes for suf in sc.get("ignore_suffixes", ())]
    ignored = (".bias", *kv.ignored_suffixes, *model.ignore_suffixes, *scoped)
    for f, info in tensors:
        fate = _fate(
            info, f, model, kv, skip_prefixes, rotary, ignored, tied, rules, out, containers
        )
        out.fates.append(fate)
        if fate.fate == "loaded" and fate.param:
            every = out.params[fate.param].shards if fate.shard == "*" else (fate.shard or "",)
            out.filled.setdefault(fate.param, set()).update(every)


def _fate(
    info: TensorInfo,
    file: str,
    model: ModelFile,
    kv: KvScaleNaming,
    skip_prefixes: Sequence[str],
    rotary: Sequence[str],
    ignored: Sequence[str],
    tied: bool,
    rules: LoaderSource,
    out: LoadPlan,
    containers: set[str],
) -> Fate:
    name = info.name
    base = (name, file, info.dtype, tuple(info.shape))
    if any(s in name for s in rotary):
        return Fate(*base, "skipped", why="a rotary-embedding buffer vLLM drops")
    mapped, shard, why = map_name(name, model, kv)
    if mapped is None:
        return Fate(*base, "dropped", why=why)
    if any(mapped.startswith(p) for p in skip_prefixes):
        return Fate(*base, "skipped", why="lm_head is tied to the embedding (skip_prefixes)")
    if tied and rules.tied_alias_skip and mapped == "lm_head.weight":
        return Fate(*base, "skipped", why="lm_head.weight aliases the tied embedding")
    if tied and mapped in {f"{m}.weight" for m in model.tied}:
        # lm_head = ParallelLMHead(...).tie_weights(embed_tokens): its weight is the
        # embedding's Parameter; the embedding's own tensor, read after it, is what stays
        return Fate(*base, "skipped", why=f"{mapped} is the tied embedding's own parameter")
    for alias, target in out.aliases.items():
        if mapped.startswith(alias + "."):
            mapped = target + mapped[len(alias) :]
    for path, node in out.experts.items():  # the expert layer's own load_weights
        if mapped.startswith(path + "."):
            rel = mapped[len(path) + 1 :]
            param, shard, how = route_expert(rel, node, path, model.experts, out.config)
            if param is None:
                return Fate(*base, "dropped", why=how)
            if param in out.params:
                return Fate(*base, "loaded", param, shard, how)
            return Fate(*base, "refused", why=f"There is no module or parameter named {param!r}")
    if mapped in out.params:
        return Fate(*base, "loaded", mapped, shard, why)
    parts = mapped.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if prefix in containers or prefix in out.params:
            continue
        if prefix.endswith(tuple(ignored)) or mapped.endswith(tuple(ignored)):
            return Fate(*base, "ignored", why=f"no parameter {mapped}; vLLM ignores the suffix")
        return Fate(*base, "refused", why=f"There is no module or parameter named {prefix!r}")
    return Fate(*base, "refused", why=f"There is no module or parameter named {mapped!r}")


_LAYER = re.compile(r"\.layers\.(\d+)\.")
