"""Static read of how the env's vLLM renames a checkpoint's KV-cache scales (F3.9).

A checkpoint's ``k_scale``/``v_scale`` reach the attention layer only under the name vLLM
gives them, ``<attention block>.attn.k_scale``; the rename is vLLM's, and it changed:
- vLLM 0.2x (0.26.0, 0.27.1): ``AutoWeightsLoader.load_weights`` applies the quant config's
  ``get_cache_scale_mapper()`` (regexes in ``base_config.py``) to every weight, for every
  model. A name that then lands on no parameter is refused ("There is no module or parameter
  named ...") unless it ends with one of ``QuantizationConfig._ignore_unexpected_suffixes``
  (``.k_scale``, ``.v_scale``, ...): that one is dropped without a word, and the layer runs
  its FP8 KV cache at scale 1.0.
- older vLLM (0.10, 0.12): each model's own loader calls ``maybe_remap_kv_scale_name``
  (``weight_utils.py``), whose patterns rename, and which drops (with a log line, "kv_scale
  is not loaded") what lands on no parameter.

Read with :mod:`ast`, never imported. What real vLLM 0.26.0 did with each naming, on the
H100, is in docs/gpu-runs.md (round 9).
"""

from __future__ import annotations

import ast
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pytest_vllm_env.readers.pyrules import function_named as _function

BASE_CONFIG_PY = "vllm/model_executor/layers/quantization/base_config.py"
MODELS_UTILS_PY = "vllm/model_executor/models/utils.py"
WEIGHT_UTILS_PY = "vllm/model_executor/model_loader/weight_utils.py"

Mode = Literal["central", "per-model"]


@dataclass(frozen=True)
class KvScaleNaming:
    """How one vLLM renames KV-scale tensors: ``rules`` (regex, replacement) applied in
    order; ``ignored_suffixes``: names vLLM drops silently when they land nowhere (central
    mode); ``missing`` non-empty: not read (the checks then use vLLM 0.26.0's, below)."""

    path: str
    mode: Mode | None
    rules: tuple[tuple[str, str], ...] = ()
    ignored_suffixes: tuple[str, ...] = ()
    missing: tuple[str, ...] = field(default=())

    def vllm_name(self, name: str) -> str:
        """``name`` as vLLM's KV-scale rename leaves it. Central mode applies every matching
        rule in turn (``WeightsMapper``); per-model mode the first that matches."""
        for pattern, repl in self.rules:
            try:
                if re.search(pattern, name):
                    name = re.sub(pattern, repl, name)
                    if self.mode == "per-model":
                        break
            except re.error:  # a pattern Python's re cannot take: skip it, never raise
                continue
        return name

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KvScaleNaming:
        return cls(
            data["path"],
            data["mode"],
            tuple(tuple(r) for r in data["rules"]),  # type: ignore[misc]
            tuple(data["ignored_suffixes"]),
            tuple(data["missing"]),
        )


# vLLM 0.26.0's (the same in 0.27.1), used when the env's cannot be read: the loads that
# calibrated the rules ran on it.
VLLM_0_26 = KvScaleNaming(
    "vLLM 0.26.0 (built in)",
    "central",
    (
        (r"\.kv_scale$", r".attn.k_scale"),
        (r"\.self_attn\.[kv]_proj\.([kv])_scale$", r".self_attn.attn.\1_scale"),
        (r"\.self_attn\.qk(?:qk)?v_proj\.([kv])_scale$", r".self_attn.attn.\1_scale"),
        (r"\.mixer\.[kv]_proj\.([kv])_scale$", r".mixer.attn.\1_scale"),
        (r"\.self_attn\.q\.scale$", r".self_attn.attn.q_scale"),
        (r"\.self_attn\.([kv])_cache\.scale$", r".self_attn.attn.\1_scale"),
        (r"(?<!\.attn)\.([qkv])_scale$", r".attn.\1_scale"),
        (r"(?<!\.attn)\.([qkv])_zero_point$", r".attn.\1_zero_point"),
    ),
    (".q_scale", ".k_scale", ".v_scale", ".q_zero_point", ".k_zero_point", ".v_zero_point"),
)


def parse(
    base_config: str | None, models_utils: str | None, weight_utils: str | None
) -> KvScaleNaming:
    """Read the naming from the texts of the three files (None: file absent); never raises."""
    central = (
        models_utils is not None
        and "get_cache_scale_mapper" in models_utils
        and base_config is not None
    )
    if central:
        tree = _tree(base_config)
        func = _function(tree, "get_cache_scale_mapper") if tree else None
        rules = _compiled_dict(func) if func else ()
        suffixes = (
            _class_strings(tree, "QuantizationConfig", "_ignore_unexpected_suffixes")
            if tree
            else ()
        )
        if rules:
            return KvScaleNaming(BASE_CONFIG_PY, "central", rules, suffixes)
        return _missing(f"{BASE_CONFIG_PY}: no get_cache_scale_mapper() with re.compile() keys")
    if weight_utils is None:
        return _missing(f"neither {MODELS_UTILS_PY}'s cache-scale mapper nor {WEIGHT_UTILS_PY}")
    tree = _tree(weight_utils)
    func = _function(tree, "maybe_remap_kv_scale_name") if tree else None
    if func is None:
        return _missing(f"{WEIGHT_UTILS_PY}: no maybe_remap_kv_scale_name()")
    rules = _pattern_pairs(func)
    if _has_string(func, ".kv_scale"):
        rules = ((r"\.kv_scale$", ".attn.k_scale"), *rules)
    if not rules:
        return _missing(
            f"{WEIGHT_UTILS_PY}: maybe_remap_kv_scale_name() has no (pattern, name) list"
        )
    return KvScaleNaming(WEIGHT_UTILS_PY, "per-model", rules)


def _missing(why: str) -> KvScaleNaming:
    return KvScaleNaming("", None, missing=(why,))


def _tree(text: str) -> ast.Module | None:
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError):
        return None


def _string(node: ast.expr) -> str | None:
    """A string constant, or an f-string whose placeholders vLLM fills with ``attn`` (the
    attention module's name; ``mla_attn.mla_attn`` for MLA models, not judged here)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                parts.append(value.value)
            elif isinstance(value, ast.FormattedValue):
                parts.append("attn")
            else:
                return None
        return "".join(parts)
    return None


def _compiled_dict(func: ast.AST) -> tuple[tuple[str, str], ...]:
    """``{re.compile(r"..."): r"...", ...}`` in ``func``, in order."""
    for node in ast.walk(func):
        if not isinstance(node, ast.Dict):
            continue
        pairs = []
        for key, value in zip(node.keys, node.values, strict=False):
            if (
                isinstance(key, ast.Call)
                and isinstance(key.func, ast.Attribute)
                and key.func.attr == "compile"
                and key.args
                and (pattern := _string(key.args[0])) is not None
                and (repl := _string(value)) is not None
            ):
                pairs.append((pattern, repl))
        if pairs:
            return tuple(pairs)
    return ()


def _pattern_pairs(func: ast.AST) -> tuple[tuple[str, str], ...]:
    """The first list of ``(pattern, replacement)`` string pairs in ``func``."""
    for node in ast.walk(func):
        if isinstance(node, ast.List) and node.elts:
            pairs = []
            for elt in node.elts:
                if isinstance(elt, ast.Tuple) and len(elt.elts) == 2:
                    a, b = _string(elt.elts[0]), _string(elt.elts[1])
                    if a is not None and b is not None:
                        pairs.append((a, b))
            if pairs:
                return tuple(pairs)
    return ()


def _class_strings(tree: ast.AST, cls: str, attr: str) -> tuple[str, ...]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for stmt in node.body:
                target = value = None
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                    target, value = stmt.targets[0], stmt.value
                elif isinstance(stmt, ast.AnnAssign):
                    target, value = stmt.target, stmt.value
                if isinstance(target, ast.Name) and target.id == attr and value is not None:
                    if isinstance(value, (ast.Tuple, ast.List)):
                        return tuple(s for e in value.elts if (s := _string(e)) is not None)
    return ()


def _has_string(func: ast.AST, text: str) -> bool:
    return any(isinstance(n, ast.Constant) and n.value == text for n in ast.walk(func))
