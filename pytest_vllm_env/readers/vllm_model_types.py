"""The facts the model-file reader (``readers/vllm_model_file.py``) keeps about one
architecture, as data: its modules (:class:`Node`) and how its loader maps and skips names
(:class:`ModelFile`), with their JSON form (the recorded facts of fixtures/loader_truth/)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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
    "GateLinear": "replicated",  # 0.33.0's MoE router (layers/fused_moe/router/gate_linear.py)
    "Conv3dLayer": "conv",  # vision patch embeddings (layers/conv.py)
    "Conv2dLayer": "conv",
    "Embedding": "conv",  # torch.nn.Embedding (Qwen3-VL's pos_embed): a weight, no quant method
}
# the mixture-of-experts layers: one module holding every expert's weights
# (layers/fused_moe/layer.py FusedMoEFactory, 0.26.0's FusedMoE / SharedFusedMoE)
EXPERT_LAYERS = {"FusedMoE", "FusedMoEFactory", "SharedFusedMoE"}
# the containers a module list is built with: children named by their index
LISTS = {"ModuleList", "Sequential"}


@dataclass(frozen=True)
class Node:
    """One module with parameters: ``path`` below the model class (``{i}`` for a layer
    index of a ``make_layers`` list of ``count`` entries, the config key), its ``kind``
    (:data:`LEAVES`) and vLLM ``layer`` class, the ``bias=`` argument as read (``"true"``,
    ``"false"`` or ``"config:<key>"``; None: not read) and the conditions it is built under
    (``"config:<key>"``, ``"not config:<key>"``, or ``"expr:<python>"``: the test with the
    method's names replaced, ``readers/config_expr.py`` evaluates it per layer). ``args``: the
    constructor's arguments (positional by index, keywords by name) as ``ast.unparse`` text,
    names replaced the same way; ``scope``: the nested config the module is built from
    (``vision_config``), "" for the text model's own."""

    path: str
    kind: str
    layer: str
    bias: str | None = None
    conditions: tuple[str, ...] = ()
    args: dict[str, str] = field(default_factory=dict)
    scope: str = ""


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
    # modules whose own load_weights maps the names below them (vllm_model_loading.scopes)
    scopes: tuple[dict[str, Any], ...] = ()
    experts: dict[str, Any] = field(default_factory=dict)  # vllm_model_loading.experts_rule
    # the transformers config class's attribute_map and defaults (readers/hf_config_class.py)
    config_class: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelFile:
        d = dict(data)
        d["nodes"] = tuple(Node(**{**n, "conditions": tuple(n["conditions"])}) for n in d["nodes"])
        d["scopes"] = tuple(d.get("scopes", ()))
        for key in ("stacked", "prefixes", "substrs", "suffixes"):
            d[key] = tuple(tuple(x) for x in d[key])
        d["tied"] = {k: tuple(v) for k, v in d["tied"].items()}
        d["alias_conditions"] = {k: tuple(v) for k, v in d["alias_conditions"].items()}
        for key in ("skip_prefixes", "skip_substrs", "ignore_prefixes", "ignore_suffixes"):
            d[key] = tuple(d[key])
        d["packed"] = {k: tuple(v) for k, v in d["packed"].items()}
        d["missing"] = tuple(d["missing"])
        return cls(**d)
