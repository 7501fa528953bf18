"""How the env's own vLLM picks the Gated-DeltaNet prefill kernel of Qwen3-Next/Qwen3.5, read
from its source with :mod:`ast`, never imported (``modelopt.gdn-prefill-backend`` judges it;
``checks/gdn_prefill.py`` has the story and docs/modelopt.md the rule per release):

- 0.2x (0.26.0, 0.27.1): ``qwen_gdn_linear_attn.py:_resolve_gdn_prefill_backend`` (the
  ``additional_config["gdn_prefill_backend"]`` request, the capabilities that take FlashInfer,
  the 10.x family's head size and torch CUDA conditions): kind ``"resolver"``;
- vLLM PR #32846: ``ChunkGatedDeltaRule`` in ``models/qwen3_next.py`` takes FlashInfer on sm 9.0
  with no way to choose: ``"sm90"``;
- 0.12.0: FLA's Triton kernels only: ``"fla-only"``; older: no GDN model, ``"no-gdn"``.

Which models: the architectures the registry maps to a model file that builds the op, or
imports (transitively, within ``models/``) one that does.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytest_vllm_env.files import SOURCE, read_text_if_present
from pytest_vllm_env.readers.pyrules import function_named as _function

GDN_LAYER_PY = "vllm/model_executor/layers/mamba/gdn/qwen_gdn_linear_attn.py"
MODELS_DIR = "vllm/model_executor/models"
REGISTRY_PY = f"{MODELS_DIR}/registry.py"
ARG_UTILS_PY = "vllm/engine/arg_utils.py"
RESOLVER = "_resolve_gdn_prefill_backend"


@dataclass(frozen=True)
class GdnRule:
    """How one vLLM picks its Gated-DeltaNet prefill kernel.

    ``kind``: ``"resolver"`` (0.2x), ``"sm90"`` (PR #32846: FlashInfer on sm 9.0, no
    choice), ``"fla-only"`` (0.12: Triton/FLA only), ``"no-gdn"`` (no GDN model), or
    ``"unreadable"`` (``problem`` says why; the checks then use :data:`VLLM_0_26`), or
    ``"damaged"`` (a file the rule is read from is there and cannot be read: a FIFO, a device,
    a dangling symlink; ``problem`` names it, and no rule is guessed)."""

    kind: str
    where: str = ""  # file:function the rule was read from
    flashinfer_import: str = ""  # file:line of `from flashinfer.gdn_prefill import`
    config_key: str = ""  # additional_config key of the request ("" = no choice)
    default_request: str = "auto"
    flashinfer_requests: tuple[str, ...] = ("flashinfer", "auto")
    exact: tuple[int, ...] = (90,)  # capabilities (major*10+minor) that take FlashInfer
    family: int = 0  # 100: the 10.x family, under the next three conditions
    family_head_k_dim: int = 0
    family_min_cuda: int = 0
    cutedsl: bool = False  # "cutedsl" requested and the family branch holds
    engine_arg: str = ""  # EngineArgs field that writes the request
    cli_flag: str = ""  # its command-line flag, where arg_utils.py defines one
    architectures: tuple[str, ...] = ()
    problem: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GdnRule:
        tuples = ("flashinfer_requests", "exact", "architectures")
        return cls(**{k: tuple(v) if k in tuples else v for k, v in data.items()})


# vLLM 0.26.0's rule (0.27.1 is the same), for an env whose source cannot be read: the load
# that failed on the H100 ran it.
VLLM_0_26 = GdnRule(
    "resolver",
    f"{GDN_LAYER_PY}:{RESOLVER} (vLLM 0.26.0, built in)",
    f"{GDN_LAYER_PY}:174",
    "gdn_prefill_backend",
    "auto",
    ("flashinfer", "auto"),
    (90,),
    100,
    128,
    13,
    True,
    "gdn_prefill_backend",
    "--gdn-prefill-backend",
    (
        "ColQwen3_5",
        "InternS2PreviewForConditionalGeneration",
        "MiniCPMV4_6ForConditionalGeneration",
        "Qwen3NextForCausalLM",
        "Qwen3NextMTP",
        "Qwen3_5ForConditionalGeneration",
        "Qwen3_5MTP",
        "Qwen3_5MoeForConditionalGeneration",
        "Qwen3_5MoeMTP",
    ),
)


# -- reading vLLM ----------------------------------------------------------------------------
def read_gdn_tree(root: Path) -> GdnRule:
    """:func:`parse_gdn` on the files under a site-packages folder ``root``."""
    models = root / MODELS_DIR
    texts: dict[str, str | None] = {}
    try:
        files = sorted(models.glob("*.py")) if models.is_dir() else []
    except OSError as exc:
        return GdnRule("unreadable", problem=f"cannot list {models}: {exc.strerror or exc}")
    damaged: list[str] = []

    def read(path: Path) -> str | None:  # absent: None; there and unreadable: named
        text, why = read_text_if_present(path, SOURCE)
        if why:
            damaged.append(why)
        return text

    for path in files:
        texts[f"{MODELS_DIR}/{path.name}"] = read(path)
    for rel in (GDN_LAYER_PY, ARG_UTILS_PY):
        texts[rel] = read(root / rel)
    if damaged:
        return GdnRule("damaged", problem=damaged[0])
    return parse_gdn(texts)


def parse_gdn(texts: Mapping[str, str | None]) -> GdnRule:
    """The rule from vLLM's files (relative path -> text; None or absent: no such file):
    ``models/*.py`` with ``registry.py``, the GDN layer file and ``engine/arg_utils.py``."""
    registry = texts.get(REGISTRY_PY)
    if registry is None:
        return GdnRule("unreadable", problem=f"no {REGISTRY_PY}")
    modules = _registry_modules(registry)
    if not modules:
        return GdnRule("unreadable", problem=f"{REGISTRY_PY} maps no architecture to a file")
    layer = texts.get(GDN_LAYER_PY)
    op_file, op_text = (GDN_LAYER_PY, layer) if layer and "gdn_prefill" in layer else ("", None)
    if op_text is None:  # PR #32846: the op lived in a model file
        for rel, text in texts.items():
            if rel.startswith(MODELS_DIR) and text and "flashinfer.gdn_prefill" in text:
                op_file, op_text = rel, text
                break
    if op_text is None:
        fla = sorted(
            rel
            for rel, text in texts.items()
            if rel.startswith(MODELS_DIR) and text and "chunk_gated_delta_rule" in text
        )
        if not fla:
            return GdnRule("no-gdn", problem="no model file uses a Gated-DeltaNet prefill")
        archs = _users(texts, modules, set(fla))
        return GdnRule(
            "fla-only", f"{fla[0]} (FLA's Triton chunk_gated_delta_rule)", architectures=archs
        )
    try:
        tree = ast.parse(op_text)
    except (SyntaxError, ValueError) as exc:
        return GdnRule("unreadable", problem=f"{op_file} is not valid Python: {exc}")
    line = _flashinfer_import_line(tree)
    # the model files that import the op's module (absolute: vllm.model_executor.layers...);
    # those importing them in turn (`from .qwen3_5 import`) are added by _users
    dotted = re.compile(rf"\b{re.escape(op_file.removesuffix('.py').replace('/', '.'))}\s+import\b")
    seeds = {op_file} if op_file.startswith(MODELS_DIR) else set()
    seeds |= {
        rel
        for rel, text in texts.items()
        if rel.startswith(MODELS_DIR) and text and dotted.search(text)
    }
    archs = _users(texts, modules, seeds)
    engine_arg, flag = _engine_arg(texts.get(ARG_UTILS_PY))
    base = dict(
        flashinfer_import=f"{op_file}:{line}" if line else op_file,
        architectures=archs,
        engine_arg=engine_arg,
        cli_flag=flag,
    )
    resolver = _function(tree, RESOLVER)
    if resolver is not None:
        return _parse_resolver(resolver, op_file, base)
    # PR #32846: ChunkGatedDeltaRule.__init__ takes forward_cuda (FlashInfer) on sm 9.0
    init = _method(tree, "ChunkGatedDeltaRule", "__init__")
    caps = _capabilities(init, "is_device_capability") if init else ()
    if init is not None and caps and "forward_cuda" in ast.unparse(init):
        return GdnRule(
            "sm90", f"{op_file}:ChunkGatedDeltaRule.__init__", exact=caps, config_key="", **base
        )
    return GdnRule(
        "unreadable",
        problem=f"{op_file} imports flashinfer.gdn_prefill, but neither {RESOLVER} nor "
        "ChunkGatedDeltaRule.__init__'s capability test was found",
        **base,
    )


def _parse_resolver(fn: ast.FunctionDef, op_file: str, base: dict[str, Any]) -> GdnRule:
    key, default = "", "auto"
    requests: tuple[str, ...] = ()
    head = cuda = 0
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            args = [a.value for a in node.args if isinstance(a, ast.Constant)]
            if node.func.attr == "get" and args and isinstance(args[0], str) and "gdn" in args[0]:
                key = args[0]
                default = str(args[1]) if len(args) > 1 else default
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            left, op, right = node.left, node.ops[0], node.comparators[0]
            if isinstance(op, ast.In) and isinstance(right, (ast.List, ast.Tuple, ast.Set)):
                items = tuple(e.value for e in right.elts if isinstance(e, ast.Constant))
                if "flashinfer" in items:
                    requests = tuple(str(i) for i in items)
            if isinstance(right, ast.Constant) and isinstance(right.value, int):
                text = ast.unparse(left)
                if "head_k_dim" in text and isinstance(op, ast.Eq):
                    head = right.value
                if "cuda_runtime" in text and isinstance(op, ast.GtE):
                    cuda = right.value
                if "cuda_runtime" in text and isinstance(op, ast.Gt):
                    cuda = right.value + 1
    exact = _capabilities(fn, "is_device_capability")
    families = _capabilities(fn, "is_device_capability_family")
    if not key or not requests or not (exact or families):
        return GdnRule(
            "unreadable",
            problem=f"{op_file}:{RESOLVER} has a shape this suite does not know (request key "
            f"{key or '?'}, FlashInfer requests {list(requests) or '?'}, capabilities "
            f"{list(exact + families) or '?'})",
            **base,
        )
    return GdnRule(
        "resolver",
        f"{op_file}:{RESOLVER}",
        config_key=key,
        default_request=default,
        flashinfer_requests=requests,
        exact=exact,
        family=families[0] if families else 0,
        family_head_k_dim=head,
        family_min_cuda=cuda,
        cutedsl='"cutedsl"' in ast.unparse(fn) or "'cutedsl'" in ast.unparse(fn),
        **base,
    )


def _capabilities(fn: ast.AST, name: str) -> tuple[int, ...]:
    found = []
    for node in ast.walk(fn):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == name
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, int)
        ):
            found.append(node.args[0].value)
    return tuple(dict.fromkeys(found))


def _flashinfer_import_line(tree: ast.Module) -> int | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("flashinfer"):
            return node.lineno
    return None


def _method(tree: ast.Module, cls: str, name: str) -> ast.FunctionDef | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            return _function(node, name)
    return None


def _module_name(rel: str) -> str:
    """``vllm/a/b.py`` -> ``b``: how other files import it (``...gdn.qwen_gdn_linear_attn``)."""
    return rel.rsplit("/", 1)[-1].removesuffix(".py")


def _registry_modules(text: str) -> dict[str, str]:
    """``{"Qwen3NextForCausalLM": "qwen3_next", ...}`` from the registry's dictionaries."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return {}
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Dict):
            continue
        for key, value in zip(node.keys, node.values, strict=False):
            if (
                isinstance(key, ast.Constant)
                and isinstance(key.value, str)
                and isinstance(value, ast.Tuple)
                and len(value.elts) >= 2
                and isinstance(value.elts[0], ast.Constant)
                and isinstance(value.elts[0].value, str)
            ):
                out[key.value] = value.elts[0].value
    return out


_IMPORT = re.compile(
    r"^\s*from\s+(?:\.|vllm\.model_executor\.models\.)([A-Za-z0-9_]+)\s+import", re.M
)


def _users(
    texts: Mapping[str, str | None], modules: Mapping[str, str], seeds: set[str]
) -> tuple[str, ...]:
    """Architectures whose model file is a seed or imports one, transitively in models/."""
    users = {_module_name(s) for s in seeds}
    imports = {
        _module_name(rel): set(_IMPORT.findall(text))
        for rel, text in texts.items()
        if rel.startswith(MODELS_DIR) and text
    }
    changed = True
    while changed:
        changed = False
        for mod, deps in imports.items():
            if mod not in users and deps & users:
                users.add(mod)
                changed = True
    return tuple(sorted(a for a, m in modules.items() if m in users))


def _engine_arg(text: str | None) -> tuple[str, str]:
    """(EngineArgs field, CLI flag) that write the GDN request, where arg_utils.py has them."""
    if not text:
        return "", ""
    field_ = "gdn_prefill_backend" if re.search(r"^\s+gdn_prefill_backend\s*:", text, re.M) else ""
    flag = "--gdn-prefill-backend" if '"--gdn-prefill-backend"' in text else ""
    return field_, flag
