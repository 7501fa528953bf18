"""Static read of the loader rules of the env's vLLM that hold for every model: which config
file holds the quantization config, how ``quantization=`` is decided, what
``AutoWeightsLoader`` skips and ignores, and what the default loader does about parameters
no tensor loaded. Read with :mod:`ast`, never imported; where a structure is not found the
field is None and the facts use vLLM 0.26.0's rule (the same in 0.33.0, where noted), saying
so.

Sources (0.26.0 and 0.33.0 agree unless said):

- ``vllm/transformers_utils/config.py`` (``get_config``): config.json's
  ``quantization_config`` is taken; ``hf_quant_config.json`` is read only when config.json
  has none (``if quantization_config is None and file_or_path_exists(model,
  "hf_quant_config.json", ...)``).
- ``vllm/transformers_utils/model_arch_config_convertor.py``
  (``_normalize_quantization_config``): a ModelOpt block in the hf_quant_config.json layout
  (``producer.name == "modelopt"``, ``{"quantization": {"quant_algo": ...}}``) gets its
  ``quant_method`` from the algorithm: FP8 / FP8_PER_CHANNEL_PER_TOKEN / FP8_PB_WO ->
  ``modelopt``, NVFP4 -> ``modelopt_fp4`` (0.33.0 adds MIXED_PRECISION -> ``modelopt_mixed``);
  any other algorithm raises ``Unknown ModelOpt quant algo``.
- ``vllm/config/model.py`` (``ModelConfig._verify_quantization``): the methods in the
  ``overrides`` list are asked in that order whether they claim the checkpoint
  (``override_quantization_method``); the first claim replaces the user's ``quantization=``;
  without a claim the checkpoint's ``quant_method`` must equal it ("Quantization method
  specified in the model config (...) does not match the quantization method specified in
  the `quantization` argument (...)").
- ``vllm/model_executor/layers/quantization/__init__.py``: ``QuantizationMethods``, the names
  ``quantization=`` accepts.
- ``vllm/model_executor/models/utils.py`` (``AutoWeightsLoader``): the rotary buffers it
  drops (0.26.0 ``ROTARY_EMBEDS_UNUSED_WEIGHTS`` skip substrings, 0.33.0
  ``REMOVE_UNUSED_ROTARY_EMBEDS_MAPPER``), ``.bias`` ignored when unexpected, and how a tied
  embedding's second name is handled: 0.33.0 skips the tensors of parameters that alias an
  embedding's (``_get_tied_embedding_params``) and raises when the embedding itself never
  loads; 0.26.0 leaves that to each model's ``skip_prefixes``.
- ``vllm/config/model.py`` (0.33.0, ``ModelConfig.maybe_untie_word_embeddings``): a config
  that says ``tie_word_embeddings`` while the checkpoint holds an ``lm_head.weight`` is
  built untied and that head loaded (``weight_tying.maybe_retie_word_embeddings`` re-ties it
  when identical to the embedding); 0.26.0 ties, and its Llama-style models skip every
  ``lm_head.`` tensor.
- ``vllm/model_executor/model_loader/default_loader.py`` (``DefaultModelLoader.load_weights``):
  parameters no tensor loaded raise ("Following weights were not initialized from
  checkpoint") only when ``model_config.quantization is None``; a quantized model keeps
  their initial values silently.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_vllm_env.readers.pyrules import function_named as _function

CONFIG_PY = "vllm/transformers_utils/config.py"
CONVERTOR_PY = "vllm/transformers_utils/model_arch_config_convertor.py"
MODEL_CONFIG_PY = "vllm/config/model.py"
QUANT_INIT_PY = "vllm/model_executor/layers/quantization/__init__.py"
MODELS_UTILS_PY = "vllm/model_executor/models/utils.py"
DEFAULT_LOADER_PY = "vllm/model_executor/model_loader/default_loader.py"
FILES = (
    CONFIG_PY,
    CONVERTOR_PY,
    MODEL_CONFIG_PY,
    QUANT_INIT_PY,
    MODELS_UTILS_PY,
    DEFAULT_LOADER_PY,
)


@dataclass(frozen=True)
class LoaderSource:
    """What the env's vLLM says (see the module docstring); None: not read."""

    config_json_first: bool | None = None
    hf_layout_methods: dict[str, str] | None = None  # ModelOpt algo -> quant_method
    hf_layout_unknown_raises: bool | None = None
    overrides: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
    tied_alias_skip: bool | None = None  # 0.33.0's AutoWeightsLoader alias rule
    rotary_drops: tuple[str, ...] | None = None
    ignores_bias: bool | None = None
    strict_only_unquantized: bool | None = None
    # 0.33.0: ModelConfig.maybe_untie_word_embeddings builds lm_head untied when the
    # checkpoint holds lm_head.weight (and re-ties it after loading if identical)
    unties_for_checkpoint_head: bool | None = None
    missing: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoaderSource:
        d = dict(data)
        for key in ("overrides", "methods", "rotary_drops", "missing"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


# vLLM 0.26.0's, where the env's cannot be read (0.33.0 adds MIXED_PRECISION to the layout
# table and the alias rule; the rest is the same)
VLLM_0_26 = LoaderSource(
    config_json_first=True,
    hf_layout_methods={
        "FP8": "modelopt",
        "FP8_PER_CHANNEL_PER_TOKEN": "modelopt",
        "FP8_PB_WO": "modelopt",
        "NVFP4": "modelopt_fp4",
    },
    hf_layout_unknown_raises=True,
    overrides=(
        "auto_gptq",
        "gptq",
        "gptq_marlin",
        "auto_awq",
        "awq",
        "awq_marlin",
        "inc",
        "moe_wna16",
        "modelopt",
        "modelopt_fp4",
        "modelopt_mxfp8",
        "mxfp8",
        "modelopt_mixed",
        "mxfp4",
        "gpt_oss_mxfp4",
        "deepseek_v4_fp8",
        "humming",
    ),
    methods=(
        "awq",
        "auto_awq",
        "fp8",
        "fbgemm_fp8",
        "fp_quant",
        "modelopt",
        "modelopt_fp4",
        "modelopt_mxfp8",
        "modelopt_mixed",
        "auto_gptq",
        "gptq",
        "gptq_marlin",
        "awq_marlin",
        "humming",
        "compressed-tensors",
        "bitsandbytes",
        "experts_int8",
        "quark",
        "moe_wna16",
        "torchao",
        "inc",
        "mxfp4",
        "gpt_oss_mxfp4",
        "deepseek_v4_fp8",
        "online",
        "fp8_per_tensor",
        "fp8_per_block",
        "fp8_per_channel",
        "int8_per_channel_weight_only",
        "nvfp4_per_token",
        "mxfp8",
    ),  # fmt: skip
    tied_alias_skip=False,
    rotary_drops=(
        "rotary_pos_emb.inv_freq",
        "rotary_emb.inv_freq",
        "rotary_emb.cos_cached",
        "rotary_emb.sin_cached",
    ),
    ignores_bias=True,
    strict_only_unquantized=True,
    unties_for_checkpoint_head=False,
    missing=("vLLM 0.26.0's loader rules (built in)",),
)


def parse(load: Callable[[str], str | None]) -> LoaderSource:
    """The rules from the env's files (``load(relative path)``: the text, None if absent)."""
    missing: list[str] = []

    def tree(path: str) -> ast.Module | None:
        text = load(path)
        if text is None:
            missing.append(f"{path} is not there")
            return None
        try:
            return ast.parse(text)
        except (SyntaxError, ValueError):
            missing.append(f"{path} does not parse")
            return None

    cfg, conv, model, qinit, utils, default = (tree(p) for p in FILES)
    methods, unknown = _layout_methods(conv) if conv is not None else (None, None)
    return LoaderSource(
        config_json_first=_config_json_first(cfg) if cfg is not None else None,
        hf_layout_methods=methods,
        hf_layout_unknown_raises=unknown,
        overrides=_list_in(model, "_verify_quantization", "overrides") if model else None,
        methods=_literal_names(qinit, "QuantizationMethods") if qinit else None,
        tied_alias_skip=_has_function(utils, "_get_tied_embedding_params") if utils else None,
        rotary_drops=_rotary(utils) if utils else None,
        ignores_bias=_has_string(utils, ".bias") if utils else None,
        strict_only_unquantized=_strict(default) if default else None,
        unties_for_checkpoint_head=(
            _has_function(model, "maybe_untie_word_embeddings") if model else None
        ),
        missing=tuple(missing),
    )


def _has_function(tree: ast.AST, name: str) -> bool:
    return _function(tree, name) is not None


def _has_string(tree: ast.AST, text: str) -> bool:
    return any(isinstance(n, ast.Constant) and n.value == text for n in ast.walk(tree))


def _config_json_first(tree: ast.Module) -> bool | None:
    """``if quantization_config is None and ...("hf_quant_config.json")``: config.json first."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _has_string(node.test, "hf_quant_config.json"):
            text = ast.unparse(node.test)
            return "is None" in text
    return None


def _layout_methods(tree: ast.Module) -> tuple[dict[str, str] | None, bool | None]:
    func = _function(tree, "_normalize_quantization_config")
    if func is None:
        return None, None
    out: dict[str, str] = {}
    raises = False
    for node in ast.walk(func):
        if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
            continue
        comp = node.test.comparators[0] if node.test.comparators else None
        algos: list[str] = []
        if isinstance(comp, (ast.Set, ast.List, ast.Tuple)):
            algos = [e.value for e in comp.elts if isinstance(e, ast.Constant)]
        elif isinstance(comp, ast.Constant) and isinstance(comp.value, str):
            algos = [comp.value]
        method = _assigned_method(node.body)
        if algos and method:
            for algo in algos:
                out.setdefault(str(algo).upper(), method)
        if any(isinstance(s, ast.Raise) for s in node.orelse):
            raises = True
    return out or None, raises


def _assigned_method(body: list[ast.stmt]) -> str | None:
    for stmt in body:
        if (
            isinstance(stmt, ast.Assign)
            and isinstance(stmt.targets[0], ast.Subscript)
            and _has_string(stmt.targets[0], "quant_method")
            and isinstance(stmt.value, ast.Constant)
        ):
            return str(stmt.value.value)
    return None


def _list_in(tree: ast.Module, func_name: str, var: str) -> tuple[str, ...] | None:
    func = _function(tree, func_name)
    if func is None:
        return None
    for node in ast.walk(func):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == var
            and isinstance(node.value, ast.List)
        ):
            return tuple(
                e.value
                for e in node.value.elts
                if isinstance(e, ast.Constant) and isinstance(e.value, str)
            )
    return None


def _literal_names(tree: ast.Module, name: str) -> tuple[str, ...] | None:
    for node in tree.body:
        if (
            isinstance(node, (ast.Assign, ast.AnnAssign))
            and isinstance(node.value, ast.Subscript)
            and any(isinstance(t, ast.Name) and t.id == name for t in _targets(node))
        ):
            sl = node.value.slice
            elts = sl.elts if isinstance(sl, ast.Tuple) else [sl]
            return tuple(
                e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)
            )
    return None


def _targets(node: ast.stmt) -> list[ast.expr]:
    return list(node.targets) if isinstance(node, ast.Assign) else [node.target]  # type: ignore[attr-defined]


def _rotary(tree: ast.Module) -> tuple[str, ...] | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "AutoWeightsLoader":
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and any(
                    isinstance(t, ast.Name) and "ROTARY" in t.id for t in stmt.targets
                ):
                    found = [
                        n.value
                        for n in ast.walk(stmt.value)
                        if isinstance(n, ast.Constant) and isinstance(n.value, str)
                    ]
                    return tuple(found)
    return None


def _strict(tree: ast.Module) -> bool | None:
    """``default_enable_weights_track = model_config.quantization is None and ...``."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and "weights_track" in node.targets[0].id
        ):
            text = ast.unparse(node.value)
            if "quantization is None" in text:
                return True
    return None
