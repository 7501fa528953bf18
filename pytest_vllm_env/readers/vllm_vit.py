"""What the env's own vLLM source says about Qwen2.5-VL's vision attention backend, read with
:mod:`ast`, never imported (``xformers.decision`` judges it; docs/xformers.md has the rule per
release with file:function references):

- ``vllm/model_executor/models/qwen2_5_vl.py``: does the vision attention have an xformers
  path at all (``_Backend.XFORMERS`` / ``import xformers``), and which backends its
  ``if self.attn_backend not in {...}: raise`` accepts;
- ``vllm/model_executor/models/vision.py`` ``get_vit_attn_backend``: whether
  ``VLLM_ATTENTION_BACKEND`` overrides the choice, and (0.8.x) the rule itself;
- ``vllm/platforms/cuda.py`` ``get_vit_attn_backend`` (0.10.x on): the rule on CUDA.

Three rules are recognised (``fa2-or-xformers``, ``fa-or-sdpa``, ``candidates``:
``checks.xformers.RULES``); any other layout reads as ``"unknown"``, and the check then says
plainly that it cannot decide.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytest_vllm_env import files
from pytest_vllm_env.readers.pyrules import function_named as _function

MODEL_PY = "vllm/model_executor/models/qwen2_5_vl.py"
VISION_PY = "vllm/model_executor/models/vision.py"
CUDA_PY = "vllm/platforms/cuda.py"
# 0.26.x moved the ViT attention call into this layer; an xformers path there counts too.
MM_ENCODER_PY = "vllm/model_executor/layers/attention/mm_encoder_attention.py"
SOURCES = (MODEL_PY, VISION_PY, CUDA_PY, MM_ENCODER_PY)


@dataclass(frozen=True)
class VitSource:
    """What the env's vLLM source says about Qwen2.5-VL's vision attention.

    ``rule`` is one of :data:`RULES`, ``"unknown"``, ``"no-model"`` (no qwen2_5_vl.py) or
    ``"unreadable"`` (``problem`` says which file and why).
    """

    rule: str
    where: str = ""  # file:function the rule was read from
    model_has_xformers: bool = False
    env_var_honoured: bool = False
    env_var_where: str = ""
    allowed: tuple[str, ...] = ()  # the model raises for any other backend; () = no check
    candidates_sm80: tuple[str, ...] = ()  # candidates rule: sm >= 8.0
    candidates_below: tuple[str, ...] = ()  # candidates rule: sm < 8.0
    problem: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VitSource:
        tuples = ("allowed", "candidates_sm80", "candidates_below")
        return cls(**{k: tuple(v) if k in tuples else v for k, v in data.items()})


# -- reading ---------------------------------------------------------------------------------
def read_vit_source(texts: Mapping[str, str | None]) -> VitSource:
    """Parse the files of :data:`SOURCES` (relative path -> text, None when absent)."""
    model = texts.get(MODEL_PY)
    if model is None:
        return VitSource("no-model", problem=f"no {MODEL_PY}: this vLLM has no Qwen2.5-VL")
    trees: dict[str, ast.Module] = {}
    for rel in SOURCES:
        text = texts.get(rel)
        if text is None:
            continue
        try:
            trees[rel] = ast.parse(text)
        except (SyntaxError, ValueError) as exc:
            return VitSource("unreadable", problem=f"{rel} is not valid Python: {exc}")
    has_xf = any(
        _mentions_xformers(trees[r], texts.get(r) or "")
        for r in (MODEL_PY, MM_ENCODER_PY)
        if r in trees
    )
    allowed = _allowed_backends(trees[MODEL_PY])
    vision = _function(trees.get(VISION_PY), "get_vit_attn_backend")
    vision_src = _segment(texts.get(VISION_PY), vision)
    honoured = bool(re.search(r"VLLM_ATTENTION_BACKEND|get_env_variable_attn_backend", vision_src))
    base = {
        "model_has_xformers": has_xf,
        "allowed": allowed,
        "env_var_honoured": honoured,
        "env_var_where": f"{VISION_PY}:get_vit_attn_backend" if honoured else "",
    }
    # 0.8.x: the whole rule inside vision.py; 0.10.x on: vision.py delegates to the platform.
    if _is_fa2_or_xformers(vision_src):
        return VitSource("fa2-or-xformers", f"{VISION_PY}:get_vit_attn_backend", **base)
    cuda_tree = trees.get(CUDA_PY)
    cuda_fn = _function(cuda_tree, "get_vit_attn_backend")
    cuda_src = _segment(texts.get(CUDA_PY), cuda_fn)
    where = f"{CUDA_PY}:{_owner(cuda_tree, cuda_fn)}get_vit_attn_backend"
    if _is_fa2_or_xformers(cuda_src):
        return VitSource("fa2-or-xformers", where, **base)
    if "get_supported_vit_attn_backends" in cuda_src:
        sm80, below = _candidate_lists(_function(cuda_tree, "get_supported_vit_attn_backends"))
        if sm80 and below:
            return VitSource(
                "candidates", where, candidates_sm80=sm80, candidates_below=below, **base
            )
    elif (
        "FLASH_ATTN" in cuda_src
        and "TORCH_SDPA" in cuda_src
        and "XFORMERS" not in cuda_src
        and re.search(r"major\s*>=\s*8|has_device_capability\(80\)", cuda_src)
    ):
        return VitSource("fa-or-sdpa", where, **base)
    return VitSource("unknown", where if cuda_fn else "", **base)


def _mentions_xformers(tree: ast.Module, text: str = "") -> bool:
    # An ASCII source names xformers literally wherever a node below would match; vLLM
    # 0.26.0's files never do, and walking their 21,000 nodes was 10 ms of a cold run.
    # (A non-ASCII source is walked: NFKC folds other letters into identifiers.)
    if text and text.isascii() and "xformers" not in text and "XFORMERS" not in text:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "XFORMERS":
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("xformers"):
            return True
        if isinstance(node, ast.Import) and any(a.name.startswith("xformers") for a in node.names):
            return True
    return False


def _allowed_backends(tree: ast.Module) -> tuple[str, ...]:
    """``if self.attn_backend not in {_Backend.A, ...}: raise``: the backends it accepts."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)):
            continue
        test = node.test
        left = test.left
        if not (isinstance(left, ast.Attribute) and left.attr == "attn_backend"):
            continue
        if not (len(test.ops) == 1 and isinstance(test.ops[0], ast.NotIn)):
            continue
        if not any(isinstance(n, ast.Raise) for n in node.body):
            continue
        comp = test.comparators[0]
        if isinstance(comp, (ast.Set, ast.List, ast.Tuple)):
            return tuple(e.attr for e in comp.elts if isinstance(e, ast.Attribute))
    return ()


def _owner(tree: ast.Module | None, fn: ast.FunctionDef | None) -> str:
    """``"CudaPlatformBase."`` when ``fn`` is a method, for references users can grep."""
    if tree is None or fn is None:
        return ""
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and fn in node.body:
            return node.name + "."
    return ""


def _segment(text: str | None, fn: ast.FunctionDef | None) -> str:
    if text is None or fn is None:
        return ""
    return ast.get_source_segment(text, fn) or ""


def _is_fa2_or_xformers(src: str) -> bool:
    return (
        "is_flash_attn_2_available" in src
        and "XFORMERS" in src
        and "has_device_capability(80)" in src
    )


def _candidate_lists(fn: ast.FunctionDef | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``if cls.has_device_capability(80): return [A, B] else: return [C, D]``."""
    if fn is None:
        return (), ()
    for node in ast.walk(fn):
        if isinstance(node, ast.If) and "has_device_capability" in ast.unparse(node.test):
            return _returned_names(node.body), _returned_names(node.orelse)
    return (), ()


def _returned_names(body: Sequence[ast.stmt]) -> tuple[str, ...]:
    for stmt in body:
        if isinstance(stmt, ast.Return) and isinstance(stmt.value, (ast.List, ast.Tuple)):
            return tuple(e.attr for e in stmt.value.elts if isinstance(e, ast.Attribute))
    return ()


def read_vit_tree(root: Path) -> VitSource:
    """:func:`read_vit_source` on the files under a site-packages folder ``root``."""
    texts: dict[str, str | None] = {}
    for rel in SOURCES:
        path = root / rel
        try:
            texts[rel] = files.read_text(path, files.SOURCE)
        except FileNotFoundError:
            texts[rel] = None
        except OSError as exc:
            return VitSource("unreadable", problem=f"cannot read {path}: {exc.strerror or exc}")
    return read_vit_source(texts)
