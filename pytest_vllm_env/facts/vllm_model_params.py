"""The parameters vLLM builds for one model, from the model file's tree
(``readers/vllm_model_file.py``) and config.json: the text model's sizes, the conditions a
module is built under (per layer: Qwen3-MoE's ``mlp_only_layers`` / ``decoder_sparse_step``),
the length of each layer list (``num_hidden_layers``, a vision tower's ``depth``), the shapes
a layer's constructor arguments give (``intermediate_size=config.moe_intermediate_size``), and
the expert layer's ``w13_weight`` / ``w2_weight`` with one shard per expert and projection.

Sources (0.26.0 and 0.33.0 alike): ``layers/linear.py`` (``MergedColumnParallelLinear
(input_size, output_sizes)``, ``RowParallelLinear`` / ``ColumnParallelLinear`` /
``ReplicatedLinear (input_size, output_size)``: weight ``[output, input]``);
``layers/fused_moe/routed_experts.py`` (``RoutedExperts.create_weights`` through the
unquantized method: ``w13_weight [E, 2 * intermediate, hidden]`` loaded per expert and shard
``w1`` / ``w3`` along dim 0 of the expert's slice, ``w2_weight [E, hidden, intermediate]``
along dim 1: ``_load_w13`` / ``_load_w2`` narrow the shard dim, then ``copy_``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_vllm_env.readers import config_expr
from pytest_vllm_env.readers.vllm_model_file import ModelFile, Node

LINEAR_KINDS = ("qkv", "merged", "row", "column", "replicated")
# What a quantized Linear registers, per ModelOpt algorithm (vLLM 0.26.0 create_weights;
# tables/quant_formats.py says the same once merged): weight dtype, scales (dtype, required)
FORMATS: dict[str, tuple[str, dict[str, tuple[str, bool]]]] = {
    "FP8": ("F8_E4M3", {"weight_scale": ("F32", True), "input_scale": ("F32", True)}),
    "FP8_PER_CHANNEL_PER_TOKEN": ("F8_E4M3", {"weight_scale": ("F32", True)}),
    "FP8_PB_WO": ("F8_E4M3", {"weight_scale": ("F32", True)}),
    "MXFP8": ("F8_E4M3", {"weight_scale": ("U8", True)}),
    "NVFP4": (
        "U8",
        {
            "weight_scale": ("F8_E4M3", True),
            "weight_scale_2": ("F32", True),
            "input_scale": ("F32", True),
        },
    ),
    "W4A16_NVFP4": (
        "U8",
        {
            "weight_scale": ("F8_E4M3", True),
            "weight_scale_2": ("F32", True),
            "input_scale": ("F32", False),
        },
    ),
}
KV_LEAVES = ("k_scale", "v_scale", "q_scale", "prob_scale")

DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32", "half": "F16", "float": "F32"}

# Qwen3-Next and Qwen3.5 gate the attention output from q_proj's extra half
# (vLLM's Qwen3NextAttention: getattr(config, "attn_output_gate", True)); seen on a real
# ModelOpt export of a tiny Qwen3.5 that vLLM 0.26.0 loaded on the H100
GATED_ATTENTION_TYPES = ("qwen3_next", "qwen3_5")


@dataclass(frozen=True)
class Dims:
    """The text model's sizes, from config.json (``text_config`` when there is one)."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int | None
    vocab: int | None
    layers: int
    q_gate: bool
    dtype: str  # the model dtype, as safetensors names it
    tied: bool


def dims_of(config: Mapping[str, Any]) -> Dims | None:
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    try:
        hidden = int(text["hidden_size"])
        heads = int(text["num_attention_heads"])
        kv = int(text.get("num_key_value_heads") or heads)
        head_dim = int(text.get("head_dim") or hidden // heads)
        layers = int(text["num_hidden_layers"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    inter = text.get("intermediate_size")
    vocab = text.get("vocab_size") or config.get("vocab_size")
    kind = str(text.get("model_type") or config.get("model_type") or "")
    gate = bool(text.get("attn_output_gate", kind.startswith(GATED_ATTENTION_TYPES)))
    raw = str(text.get("dtype") or text.get("torch_dtype") or config.get("dtype") or "bfloat16")
    dtype = DTYPES.get(raw.removeprefix("torch."), "BF16")
    if dtype == "F32":  # vLLM serves float32 checkpoints in bfloat16 ("auto" dtype)
        dtype = "BF16"
    tied = bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False)))
    return Dims(
        hidden, heads, kv, head_dim, int(inter) if inter else None,
        int(vocab) if vocab else None, layers, gate, dtype, tied,
    )  # fmt: skip


@dataclass(frozen=True)
class Param:
    """One parameter vLLM builds and the checkpoint must fill."""

    name: str
    kind: str  # the node kind (qkv, row, norm, embedding, lm_head, attention, ...)
    dtype: str
    shards: tuple[str, ...] = ()  # fused shard ids ("q", "k", "v" / "0", "1"); () whole
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # shard -> full shape
    init: str = "empty"  # what it holds if nothing loads: empty, ones, zeros, min, default
    required: bool = True
    quantized: bool = False


def _expected(node_path: str, kind: str, d: Dims) -> dict[str, tuple[int, ...]]:
    """Full (unsplit) shapes of a node's weight per shard, for Llama-family names."""
    leaf = node_path.rpartition(".")[2]
    h, hd, inter, vocab = d.hidden, d.head_dim, d.intermediate, d.vocab
    q = d.heads * hd * (2 if d.q_gate else 1)
    kv = d.kv_heads * hd
    if kind == "qkv":
        return {"q": (q, h), "k": (kv, h), "v": (kv, h)}
    if kind == "merged" and inter:
        return {"0": (inter, h), "1": (inter, h)}
    if leaf == "o_proj":
        return {"": (h, d.heads * hd)}
    if leaf == "down_proj" and inter:
        return {"": (h, inter)}
    if kind in ("embedding", "lm_head") and vocab:
        return {"": (vocab, h)}
    if kind == "norm":
        return {"": ((hd,) if leaf in ("q_norm", "k_norm") else (h,))}
    return {}


def _text(config: Mapping[str, Any]) -> Mapping[str, Any]:
    return config.get("text_config") if isinstance(config.get("text_config"), dict) else config


def _holds(
    cond: str, config: Mapping[str, Any], tie: bool, layer: int | None = None
) -> bool | None:
    """Whether a module's condition holds (None: not read). ``config:<key>`` is the key's
    truth (``tie_word_embeddings``: as vLLM takes it for this checkpoint); ``expr:<text>``
    is evaluated for the layer being built (readers/config_expr.py)."""
    negate = cond.startswith("not ")
    body = cond.removeprefix("not ")
    if body.startswith("expr:"):
        value = config_expr.evaluate(body[5:], config, layer)
        return None if value is config_expr.UNKNOWN else bool(value) != negate
    if not body.startswith("config:"):
        return None
    key = body.removeprefix("config:")
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    value = tie if key == "tie_word_embeddings" else bool(text.get(key, config.get(key, False)))
    return value != negate


def _expand(
    path: str, counts: Mapping[str, str], layers: int, config: Mapping[str, Any] | None = None
) -> list[tuple[str, int | None]]:
    """``(path, layer index)`` of every copy of a module under a layer list: the list's
    length from ``counts`` (a config key or an expression; ``layers`` where unread)."""
    if "{i}" not in path:
        return [(path, None)]
    n = layers
    text = counts.get(path.split(".{i}", 1)[0])
    if text and config is not None:
        expr = f"config.{text}" if text.isidentifier() else text
        n = config_expr.as_int(expr, config) or layers
    return [(path.replace("{i}", str(i)), i) for i in range(n)]


# the positional order of vLLM's Linear constructors (layers/linear.py)
_ARGS = {
    "merged": ("input_size", "output_sizes"),
    "row": ("input_size", "output_size"),
    "column": ("input_size", "output_size"),
    "replicated": ("input_size", "output_size"),
}


def _arg(node: Node, name: str, config: Mapping[str, Any], layer: int | None) -> Any:
    order = _ARGS.get(node.kind, ())
    text = node.args.get(name)
    if text is None and name in order:
        text = node.args.get(str(order.index(name)))
    if text is None:
        return None
    value = config_expr.evaluate(text, config, layer)
    return None if value is config_expr.UNKNOWN else value


def arg_shapes(
    node: Node, config: Mapping[str, Any], layer: int | None
) -> dict[str, tuple[int, ...]] | None:
    """The weight's full shape per shard from the constructor's arguments; None where
    they do not evaluate (the caller falls back on the Llama-family sizes)."""
    inp = _arg(node, "input_size", config, layer)
    if not _ints(inp):
        return None
    if node.kind == "merged":
        outs = _arg(node, "output_sizes", config, layer)
        if isinstance(outs, list) and outs and all(_ints(o) for o in outs):
            return {str(i): (o, inp) for i, o in enumerate(outs)}
        return None
    if node.kind in ("row", "column", "replicated"):
        out = _arg(node, "output_size", config, layer)
        return {"": (out, inp)} if _ints(out) else None
    return None


def _ints(*values: Any) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)


def expert_names(node: Node, rule: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, str]:
    """The checkpoint names of the gate / up / down projections: ``RoutedExperts``'
    defaults, or the layer's own ``ckpt_names=(...)`` in the factory's order (Mixtral:
    ``("w1", "w2", "w3")``)."""
    names = dict(rule.get("names") or {})
    given = node.args.get("ckpt_names")
    value = config_expr.evaluate(given, config) if given else None
    if isinstance(value, list) and len(value) == len(rule.get("order") or ()):
        names.update(dict(zip(rule["order"], value, strict=True)))
    for key in list(names):
        text = node.args.get(f"ckpt_{key}_proj_name")
        v = config_expr.evaluate(text, config) if text else None
        if isinstance(v, str):
            names[key] = v
    return names


def expert_params(
    node: Node,
    path: str,
    config: Mapping[str, Any],
    layer: int | None,
    rule: Mapping[str, Any],
    dtype: str,
) -> list[Param] | None:
    """``<experts>.<prefix>w13_weight`` (shards ``<e>:w1`` / ``<e>:w3``, each ``[I, H]``,
    split along dim 0 like a column-parallel weight) and ``w2_weight`` (``<e>:w2``,
    ``[H, I]``, dim 1 like a row-parallel one); None if the sizes do not evaluate."""
    e = _arg(node, "num_experts", config, layer)
    h = _arg(node, "hidden_size", config, layer)
    i = _arg(node, "intermediate_size", config, layer)
    if not _ints(e, h, i):
        return None
    prefix = f"{path}.{rule.get('prefix', '')}"
    w13 = tuple(f"{x}:{s}" for x in range(e) for s in ("w1", "w3"))
    w2 = tuple(f"{x}:w2" for x in range(e))
    return [
        Param(f"{prefix}w13_weight", "column", dtype, w13, dict.fromkeys(w13, (i, h))),
        Param(f"{prefix}w2_weight", "row", dtype, w2, dict.fromkeys(w2, (h, i))),
    ]


def route_expert(
    rel: str, node: Node, path: str, rule: Mapping[str, Any], config: Mapping[str, Any]
) -> tuple[str | None, str | None, str]:
    """Where ``RoutedExperts.load_weights`` puts ``<experts>.<rel>``: (parameter, shard,
    why); parameter None: no mapping entry matches, the tensor is not loaded (no error:
    the real 0.26.0 and 0.33.0 loaders yield nothing for it)."""
    names = expert_names(node, rule, config)
    prefix = f"{path}.{rule.get('prefix', '')}"
    e = _arg(node, "num_experts", config, None)
    parts = rel.split(".")
    shard_of = {names.get("gate"): "w1", names.get("up"): "w3", names.get("down"): "w2"}
    if len(parts) == 3 and parts[0].isdigit() and parts[1] in shard_of and parts[2] == "weight":
        x, s = int(parts[0]), shard_of[parts[1]]
        if isinstance(e, int) and x >= e:
            return None, None, f"expert {x} of {e}: no expert-mapping entry, not loaded"
        param = f"{prefix}{'w2' if s == 'w2' else 'w13'}_weight"
        return param, f"{x}:{s}", "expert mapping"
    fused = (rule.get("fused") or {}).get(names.get("gate") or "")
    if rel in (fused, names.get("down")) and isinstance(e, int):
        # a fused 3-D tensor of every expert (transformers 5's layout)
        s = "w2" if rel == names.get("down") else "w13"
        return f"{prefix}{s}_weight", "*", "fused expert tensor"
    return None, None, "no expert-mapping entry matches: not loaded"


def with_class(config: Mapping[str, Any], cls: Mapping[str, Any]) -> dict[str, Any]:
    """config.json as the model file sees it through the transformers config class
    (``PretrainedConfig.__getattribute__`` follows ``attribute_map``; an absent key has the
    class default): the aliases and defaults added where the file lacks them, in the
    top-level config and its ``text_config``."""
    out = dict(config)
    aliases = cls.get("attribute_map") or {}
    defaults = cls.get("defaults") or {}

    def fill(d: dict[str, Any]) -> dict[str, Any]:
        for alias, target in aliases.items():
            if alias not in d and target in d:
                d[alias] = d[target]
        for key, value in defaults.items():
            d.setdefault(key, value)
        return d

    if isinstance(out.get("text_config"), dict):
        out["text_config"] = fill(dict(out["text_config"]))
    return fill(out)


def stacked_shards(model: ModelFile) -> dict[str, tuple[str, ...]]:
    """Fused module name -> the shard ids the mappers' stacked entries give it
    (``".mlp.gate_proj.": (".mlp.gate_up_proj.", 0)``): the shards of a fused Linear whose
    sizes are not read (a vision tower's)."""
    out: dict[str, list[str]] = {}
    entries = [*model.stacked, *(e for sc in model.scopes for e in sc.get("stacked", ()))]
    for _, new, sid in entries:
        ids = out.setdefault(new.strip(".").rpartition(".")[2], [])
        if str(sid) not in ids:
            ids.append(str(sid))
    return {k: tuple(v) for k, v in out.items()}
