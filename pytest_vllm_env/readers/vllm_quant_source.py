"""Static reads of the env's own vLLM source for quantized formats beyond ModelOpt, with
:mod:`ast` (never imported):

- ``vllm/model_executor/layers/quantization/__init__.py``: the ``quantization=`` names this
  vLLM knows (``QuantizationMethods = Literal[...]``); a checkpoint whose ``quant_method`` is
  not one of them is refused ("Unknown quantization method").
- ``.../compressed_tensors/compressed_tensors.py``: the ``actorder`` values
  ``_quantization_scheme_map_from_config`` refuses (vLLM 0.33.0: ``if weight_quant.actorder
  in (ActivationOrdering.GROUP.value, ActivationOrdering.DYNAMIC.value): raise ValueError``;
  0.26.0: none, it builds ``weight_g_idx``).
- ``vllm/model_executor/kernels/linear/__init__.py``: the kernel priority lists for CUDA
  (``_POSSIBLE_*_KERNELS[PlatformEnum.CUDA]``), so a release whose order differs from the
  table's is seen.
- ``vllm/model_executor/layers/fused_moe/oracle/fp8.py``: whether block-FP8 experts whose
  rank share breaks the checkpoint's blocks get a finer block (0.33.0's
  ``refine_fp8_moe_block_shape``: ``gcd(block_n, block_k, intermediate_size_per_partition,
  hidden)``, used when ``>= 32``; 0.26.0 has none and refuses), and that smallest block.
"""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass, field
from typing import Any

QUANT_INIT_PY = "vllm/model_executor/layers/quantization/__init__.py"
CT_PY = "vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors.py"
KERNELS_PY = "vllm/model_executor/kernels/linear/__init__.py"
MOE_FP8_ORACLE_PY = "vllm/model_executor/layers/fused_moe/oracle/fp8.py"
DEEP_GEMM_VENDORED = "vllm/third_party/deep_gemm/__init__.py"


@dataclass(frozen=True)
class QuantSource:
    """What the env's vLLM says; ``missing`` lists what could not be read."""

    methods: tuple[str, ...] | None = None
    refused_actorders: tuple[str, ...] = ()
    kernel_lists: dict[str, tuple[str, ...]] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    # the smallest refined block of Fp8Config's MoE experts (None: this vLLM does not refine)
    moe_fp8_refine_min: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QuantSource:
        return cls(
            tuple(data["methods"]) if data.get("methods") is not None else None,
            tuple(data.get("refused_actorders", ())),
            {k: tuple(v) for k, v in data.get("kernel_lists", {}).items()},
            tuple(data.get("missing", ())),
            data.get("moe_fp8_refine_min"),
        )


def parse(
    init_text: str | None,
    ct_text: str | None,
    kernels_text: str | None,
    moe_oracle_text: str | None = None,
) -> QuantSource:
    """Read the files' texts (None: absent); never raises for odd text."""
    missing: list[str] = []
    methods = _methods(init_text) if init_text is not None else None
    if methods is None:
        missing.append(f"{QUANT_INIT_PY} has no QuantizationMethods = Literal[...] of strings")
    refused = _refused_actorders(ct_text) if ct_text is not None else ()
    lists = _kernel_lists(kernels_text) if kernels_text is not None else {}
    refine = _refine_min(moe_oracle_text) if moe_oracle_text is not None else None
    return QuantSource(methods, refused, lists, tuple(missing), refine)


def _refine_min(text: str) -> int | None:
    """In ``def refine_fp8_moe_block_shape``: ``if refine < N: return None`` -> N."""
    tree = _tree(text)
    if tree is None:
        return None
    for fn in ast.walk(tree):
        if not (isinstance(fn, ast.FunctionDef) and fn.name == "refine_fp8_moe_block_shape"):
            continue
        for node in ast.walk(fn):
            test = node.test if isinstance(node, ast.If) else None
            if (
                isinstance(test, ast.Compare)
                and isinstance(test.left, ast.Name)
                and isinstance(test.ops[0], ast.Lt)
                and isinstance(test.comparators[0], ast.Constant)
                and isinstance(test.comparators[0].value, int)
            ):
                return test.comparators[0].value
    return None


def _tree(text: str) -> ast.Module | None:
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError):
        return None


def _methods(text: str) -> tuple[str, ...] | None:
    tree = _tree(text)
    if tree is None:
        return None
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if not (isinstance(target, ast.Name) and target.id == "QuantizationMethods"):
            continue
        value = getattr(node, "value", None)
        if isinstance(value, ast.Subscript):
            elts = value.slice.elts if isinstance(value.slice, ast.Tuple) else [value.slice]
            names = [e.value for e in elts if isinstance(e, ast.Constant)]
            if names and all(isinstance(n, str) for n in names):
                return tuple(names)  # type: ignore[arg-type]
    return None


def _refused_actorders(text: str) -> tuple[str, ...]:
    """``if <...>.actorder in (ActivationOrdering.X.value, ...): raise`` -> ("x", ...)."""
    tree = _tree(text)
    if tree is None:
        return ()
    out: list[str] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)):
            continue
        test = node.test
        if not (
            isinstance(test.left, ast.Attribute)
            and test.left.attr == "actorder"
            and isinstance(test.ops[0], ast.In)
            and isinstance(test.comparators[0], (ast.Tuple, ast.List))
            and any(isinstance(s, ast.Raise) for s in node.body)
        ):
            continue
        for elt in test.comparators[0].elts:
            # ActivationOrdering.GROUP.value, or a plain "group"
            if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                out.append(elt.value.lower())
            elif isinstance(elt, ast.Attribute) and isinstance(elt.value, ast.Attribute):
                out.append(elt.value.attr.lower())
    return tuple(dict.fromkeys(out))


def _kernel_lists(text: str) -> dict[str, tuple[str, ...]]:
    """``_POSSIBLE_X_KERNELS = {PlatformEnum.CUDA: [A, B, ...], ...}`` -> {"X": (A, B, ...)}."""
    tree = _tree(text)
    if tree is None:
        return {}
    out: dict[str, tuple[str, ...]] = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        value = getattr(node, "value", None)
        if not (isinstance(target, ast.Name) and target.id.startswith("_POSSIBLE_")):
            continue
        if not isinstance(value, ast.Dict):
            continue
        for key, val in zip(value.keys, value.values, strict=False):
            if isinstance(key, ast.Attribute) and key.attr == "CUDA" and isinstance(val, ast.List):
                names = tuple(e.id for e in val.elts if isinstance(e, ast.Name))
                family = target.id.removeprefix("_POSSIBLE_").removesuffix("_KERNELS")
                out[family.lower() or "mp"] = names
    return out
