"""Will vLLM run a model's Gated-DeltaNet prefill on FlashInfer here, and is FlashInfer there?

The real failure (measured on an H100, vLLM 0.26.0, torch 2.11.0+cu130, no flashinfer): a
ModelOpt FP8 export of a tiny Qwen3.5 (three ``linear_attention`` layers, one full one)
loads, then the first prefill dies with ``ModuleNotFoundError: No module named
'flashinfer'``, raised at ``vllm/model_executor/layers/mamba/gdn/qwen_gdn_linear_attn.py:174``
(``from flashinfer.gdn_prefill import (`` inside ``fi_chunk_gated_delta_rule``). vLLM 0.26.0
declares ``flashinfer-python==0.6.14``, but an env that installs vLLM without its
dependencies (``--no-deps``, a Pixi env pinning its own torch) drops it, and nothing says so
until the first request. It stands for a class: a model's layers choose a kernel package by
GPU and config, and the env lacks it (Qwen2.5-VL and xformers is another, xformers.py).

Which kernel runs the prefill is decided by the env's own vLLM source (docs/modelopt.md has
the rule per release, with file:line), read here with :mod:`ast`, never imported:

- 0.2x (0.26.0, 0.27.1): ``qwen_gdn_linear_attn.py:_resolve_gdn_prefill_backend``: the
  request ``additional_config["gdn_prefill_backend"]`` (default ``"auto"``; the engine
  argument ``gdn_prefill_backend`` / ``--gdn-prefill-backend`` writes it); on CUDA,
  FlashInfer for ``"auto"``/``"flashinfer"`` on compute capability exactly 9.0, and on the
  10.x family when the text config's ``linear_key_head_dim == 128`` and torch's CUDA major
  is >= 13; ``"cutedsl"`` (opt-in) on that same 10.x branch; Triton/FLA otherwise.
- vLLM PR #32846 (February 2026, the first FlashInfer GDN prefill): ``ChunkGatedDeltaRule``
  in ``models/qwen3_next.py`` takes FlashInfer on sm 9.0 with no way to ask for another.
- 0.12.0: Qwen3-Next runs FLA's Triton kernels only (``layers/fla/ops``); no FlashInfer.
- 0.10.1.1 and older: no Qwen3-Next.

Which models: the architectures the registry maps to a model file that builds the op, or
imports (transitively, within ``models/``) one that does: in 0.26.0 Qwen3-Next, Qwen3.5
(dense and MoE), their MTP drafts, ColQwen3.5, InternS2-preview and MiniCPM-V 4.6. The
checkpoint then needs ``linear_attention`` layers (``layer_types``; absent, the configs'
default: every layer but each 4th).

:func:`read_gdn_tree` / :func:`parse_gdn` read facts, :func:`decide` picks the kernel per
target arch, :func:`gdn_prefill_backend` judges.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytest_vllm_env.facts.env import requirement_of
from pytest_vllm_env.findings import Finding, failed, passed, skipped
from pytest_vllm_env.readers.checkpoint import Checkpoint
from pytest_vllm_env.tables.archs import Arch

CHECK = "modelopt.gdn-prefill-backend"
GDN_LAYER_PY = "vllm/model_executor/layers/mamba/gdn/qwen_gdn_linear_attn.py"
MODELS_DIR = "vllm/model_executor/models"
REGISTRY_PY = f"{MODELS_DIR}/registry.py"
ARG_UTILS_PY = "vllm/engine/arg_utils.py"
RESOLVER = "_resolve_gdn_prefill_backend"
FLASHINFER_DISTS = ("flashinfer-python", "flashinfer")
# vLLM 0.26.0's in-tree CuteDSL kernel imports these (ops/gdn_chunk_cutedsl/*.py).
CUTEDSL_DISTS = {"quack": "quack-kernels", "cutlass": "nvidia-cutlass-dsl"}
REAL_ERROR = "ModuleNotFoundError: No module named 'flashinfer'"
SM90_DSL_ERROR = "NotImplementedError: SM90 GDN prefill DSL kernel is unavailable"
SM90_DSL_PY = "flashinfer/gdn_kernels/delta_rule_dsl/delta_rule_sm90.py"
TRITON_REQUEST = {"gdn_prefill_backend": "triton"}


# -- facts -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GdnRule:
    """How one vLLM picks its Gated-DeltaNet prefill kernel.

    ``kind``: ``"resolver"`` (0.2x), ``"sm90"`` (PR #32846: FlashInfer on sm 9.0, no
    choice), ``"fla-only"`` (0.12: Triton/FLA only), ``"no-gdn"`` (no GDN model), or
    ``"unreadable"`` (``problem`` says why; the checks then use :data:`VLLM_0_26`)."""

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


@dataclass(frozen=True)
class GdnLayers:
    """A checkpoint's Gated-DeltaNet layers, from config.json's text config."""

    architecture: str | None
    linear: int  # layers of type linear_attention
    total: int
    head_k_dim: int | None
    how: str  # "layer_types" or the default pattern used


@dataclass(frozen=True)
class GdnEnv:
    """What the decision needs from the env, and the fix lines in its own language."""

    vllm: str | None = None
    flashinfer: str | None = None  # the installed flashinfer-python's version
    flashinfer_has_gdn: bool | None = None  # flashinfer/gdn_prefill.py present (None: unknown)
    # flashinfer/gdn_kernels/delta_rule_dsl/delta_rule_sm90.py present: its sm 9.x prefill is a
    # CuTe DSL kernel (0.6.14), which needs nvidia-cutlass-dsl importable
    flashinfer_sm90_dsl: bool | None = None
    cutlass_dsl: bool | None = None  # nvidia-cutlass-dsl installed (None: unknown)
    add_cutlass_dsl: str = ""  # the fix that adds nvidia-cutlass-dsl at vLLM's pin
    vllm_flashinfer_pin: str | None = None  # vLLM's Requires-Dist for flashinfer-python
    torch_cuda: str | None = None  # torch.version.cuda ("13.0")
    missing_cutedsl: tuple[str, ...] = ()  # dists the CuteDSL kernel imports, absent
    add_flashinfer: str = ""  # the fix that adds flashinfer-python at the pinned version
    add_cutedsl: str = ""
    requested: str | None = None  # additional_config's gdn_prefill_backend, as given
    requested_from: str = ""  # where the request was read ("--vllm-additional-config")


@dataclass(frozen=True)
class Choice:
    """The prefill kernel on one arch: ``flashinfer``, ``cutedsl``, ``triton``, or None
    (cannot tell: ``reason`` says what is missing)."""

    arch: str
    backend: str | None
    reason: str


# -- reading vLLM ----------------------------------------------------------------------------
def read_gdn_tree(root: Path) -> GdnRule:
    """:func:`parse_gdn` on the files under a site-packages folder ``root``."""
    models = root / MODELS_DIR
    texts: dict[str, str | None] = {}
    try:
        files = sorted(models.glob("*.py")) if models.is_dir() else []
    except OSError as exc:
        return GdnRule("unreadable", problem=f"cannot list {models}: {exc.strerror or exc}")
    for path in files:
        texts[f"{MODELS_DIR}/{path.name}"] = _read(path)
    for rel in (GDN_LAYER_PY, ARG_UTILS_PY):
        texts[rel] = _read(root / rel)
    return parse_gdn(texts)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


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


def _function(tree: ast.AST, name: str) -> ast.FunctionDef | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
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


# -- reading the checkpoint ------------------------------------------------------------------
def gdn_layers(config: Mapping[str, Any]) -> GdnLayers:
    """Count the checkpoint's ``linear_attention`` layers (text config's ``layer_types``;
    absent, Qwen3-Next/Qwen3.5's default: every layer but each ``full_attention_interval``-th,
    4 by default) and read ``linear_key_head_dim`` (absent: their default, 128)."""
    archs = config.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    text = config.get("text_config")
    text = text if isinstance(text, dict) else config
    head = text.get("linear_key_head_dim")
    head = head if isinstance(head, int) and not isinstance(head, bool) else None
    types = text.get("layer_types")
    if isinstance(types, list) and types:
        linear = sum(1 for t in types if t == "linear_attention")
        return GdnLayers(arch, linear, len(types), head if head is not None else 128, "layer_types")
    total = text.get("num_hidden_layers")
    total = total if isinstance(total, int) and total > 0 else 0
    interval = text.get("full_attention_interval", 4)
    interval = interval if isinstance(interval, int) and interval > 0 else 4
    linear = sum(1 for i in range(total) if (i + 1) % interval)
    return GdnLayers(
        arch,
        linear,
        total,
        head if head is not None else 128,
        f"no layer_types: the default pattern (full attention every {interval}th layer)",
    )


def parse_additional_config(text: str | None) -> dict[str, Any]:
    """``--vllm-additional-config`` as a dict; raises ValueError naming what is wrong."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{text!r} is not JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{text!r} is not a JSON object such as {json.dumps(TRITON_REQUEST)}")
    return value


# -- deciding --------------------------------------------------------------------------------
def decide(
    rule: GdnRule, arch: Arch, head_k_dim: int | None, torch_cuda: str | None, requested: str | None
) -> Choice:
    """The prefill kernel ``rule`` picks on ``arch`` for this head size, torch CUDA and
    request (None: the rule's default)."""
    cc = arch.cc
    if rule.kind == "fla-only":
        return Choice(cc, "triton", "this vLLM has only FLA's Triton kernel")
    request = (requested if rule.config_key and requested else rule.default_request).strip()
    request = request.lower()
    said = f'requested "{request}"' if rule.config_key else "no way to choose"
    if arch.number in rule.exact:
        fits, why = (
            True,
            f"sm {cc} is {'one of ' if len(rule.exact) > 1 else ''}" + _ccs(rule.exact),
        )
    elif rule.family and arch.number // 10 == rule.family // 10:
        major = _cuda_major(torch_cuda)
        head_ok = not rule.family_head_k_dim or head_k_dim == rule.family_head_k_dim
        if not head_ok:
            fits, why = False, (f"linear_key_head_dim {head_k_dim} is not {rule.family_head_k_dim}")
        elif rule.family_min_cuda and major is None:
            return Choice(
                cc,
                None,
                f"on sm {cc} FlashInfer needs torch's CUDA >= "
                f"{rule.family_min_cuda}, and torch's CUDA version is not known",
            )
        elif rule.family_min_cuda and major is not None and major < rule.family_min_cuda:
            fits, why = False, f"torch's CUDA {torch_cuda} is below {rule.family_min_cuda}"
        else:
            fits = True
            why = (
                f"sm {cc} is in the {rule.family // 10}.x family, linear_key_head_dim "
                f"{head_k_dim}, torch's CUDA {torch_cuda}"
            )
            if request == "cutedsl" and rule.cutedsl:
                return Choice(cc, "cutedsl", f"CuteDSL: {said}, {why}")
    else:
        fits, why = False, f"sm {cc} takes no FlashInfer GDN kernel in this vLLM"
    if fits and (not rule.config_key or request in rule.flashinfer_requests):
        return Choice(cc, "flashinfer", f"FlashInfer: {said}, {why}")
    if fits:
        why = f"{why}, but {said}"
    return Choice(cc, "triton", f"Triton/FLA: {why}")


def _cuda_major(version: str | None) -> int | None:
    m = re.match(r"(\d+)", version or "")
    return int(m.group(1)) if m else None


def _ccs(numbers: Iterable[int]) -> str:
    return ", ".join(f"{n // 10}.{n % 10}" for n in numbers)


# -- judging ---------------------------------------------------------------------------------
def gdn_prefill_backend(
    ckpt: Checkpoint,
    rule: GdnRule | None,
    archs: Sequence[Arch],
    env: GdnEnv,
) -> Finding:
    """modelopt.gdn-prefill-backend: a model with Gated-DeltaNet layers (Qwen3-Next,
    Qwen3.5) whose prefill vLLM will run on FlashInfer, in an env without flashinfer-python:
    failed, vLLM refuses at the first prefill (``No module named 'flashinfer'``)."""
    cid = CHECK
    config = ckpt.config
    if not isinstance(config, dict):
        return skipped(cid, f"{ckpt.label}: config.json unreadable (modelopt.files-readable)")
    if rule is None:
        return skipped(cid, "vLLM is not installed: no Gated-DeltaNet rule to apply")
    note = ""
    if rule.kind == "unreadable" and _older_than(env.vllm, "0.26.0"):
        return skipped(
            cid,
            f"cannot read vLLM {env.vllm}'s Gated-DeltaNet rule ({rule.problem}), and the "
            "built-in one is vLLM 0.26.0's: not judged",
        )
    if rule.kind == "unreadable":
        note = f" (vLLM {env.vllm}'s own rule could not be read: {rule.problem}; "
        note += "vLLM 0.26.0's rule is used)"
        rule = VLLM_0_26
    layers = gdn_layers(config)
    version = env.vllm or "?"
    ev: dict[str, Any] = {
        "vllm": env.vllm,
        "rule": rule.kind,
        "where": rule.where,
        "architecture": layers.architecture,
        "linear_attention_layers": layers.linear,
        "linear_key_head_dim": layers.head_k_dim,
        "flashinfer": env.flashinfer,
        "torch_cuda": env.torch_cuda,
        "requested": env.requested,
    }
    if rule.kind == "no-gdn" or layers.architecture not in rule.architectures:
        return skipped(
            cid,
            f"{ckpt.label}: {layers.architecture or 'no architecture'} builds no Gated-DeltaNet "
            f"(linear attention) layers in vLLM {version}{note}",
            **ev,
        )
    if layers.linear == 0:
        return skipped(
            cid,
            f"{ckpt.label}: {layers.architecture} has no linear_attention layers in its "
            f"config ({layers.how}): no Gated-DeltaNet prefill",
            **ev,
        )
    what = (
        f"{ckpt.label} ({layers.architecture}, {layers.linear} of {layers.total} layers "
        "Gated-DeltaNet)"
    )
    if rule.kind == "fla-only":
        return passed(
            cid,
            f"{what}: vLLM {version} runs the Gated-DeltaNet prefill on FLA's Triton kernels "
            f"({rule.where}); no FlashInfer needed",
            **ev,
        )
    request = env.requested if rule.config_key else None
    if not archs:
        if _flashinfer_ok(env):
            return passed(
                cid,
                f"{what}: flashinfer-python {env.flashinfer} is installed, so whichever "
                f"prefill kernel vLLM {version} picks is there{note}",
                **ev,
            )
        if request and request.lower() == "triton":
            return passed(cid, f"{what}: {_requested(env)} asks for Triton on every GPU", **ev)
        return skipped(
            cid,
            f"{what}: vLLM {version} runs it on FlashInfer on sm {_ccs(rule.exact)}"
            + (f" and some {rule.family // 10}.x GPUs" if rule.family else "")
            + ", on Triton elsewhere, and no target arch is known: give --cuda-arch",
            **ev,
        )
    choices = [decide(rule, a, layers.head_k_dim, env.torch_cuda, request) for a in archs]
    ev["choices"] = {c.arch: c.reason for c in choices}
    fi = [c for c in choices if c.backend == "flashinfer"]
    cute = [c for c in choices if c.backend == "cutedsl"]
    if fi and not env.flashinfer:
        return failed(
            cid,
            f"{what}: vLLM {version} runs its prefill on FlashInfer on sm "
            f"{', '.join(c.arch for c in fi)} ({_bare(fi[0])}; {rule.where}), but "
            "flashinfer-python is not installed: the model loads, then the first prefill dies "
            f'with "{REAL_ERROR}" (raised at {rule.flashinfer_import}){note}',
            _fix(rule, env),
            vllm_effect="refuses",
            **ev,
        )
    if fi and env.flashinfer_has_gdn is False:
        return failed(
            cid,
            f"{what}: vLLM {version} runs its prefill on FlashInfer on sm "
            f"{', '.join(c.arch for c in fi)}, but the installed flashinfer-python "
            f"{env.flashinfer} has no flashinfer/gdn_prefill.py: the first prefill dies with "
            "\"ModuleNotFoundError: No module named 'flashinfer.gdn_prefill'\"",
            _fix(rule, env, verb="pin"),
            vllm_effect="refuses",
            **ev,
        )
    hopper = [c for c in fi if c.arch.startswith("9.")]
    if hopper and env.flashinfer_sm90_dsl and env.cutlass_dsl is False:
        # measured on the H100 (vLLM 0.26.0, flashinfer-python 0.6.14, cutlass not importable):
        # flashinfer swallows the ImportError and its prefill raises this
        return failed(
            cid,
            f"{what}: vLLM {version} runs its prefill on FlashInfer on sm "
            f"{', '.join(c.arch for c in hopper)}, and flashinfer-python {env.flashinfer} runs "
            "it there on a CuTe DSL kernel (flashinfer/gdn_kernels/delta_rule_dsl), which needs "
            "nvidia-cutlass-dsl, not installed: the first prefill dies with "
            f'"{SM90_DSL_ERROR}"',
            f"{env.add_cutlass_dsl or 'add nvidia-cutlass-dsl to the env'}; " + _triton_fix(rule),
            vllm_effect="refuses",
            **ev,
        )
    if cute and env.missing_cutedsl:
        return failed(
            cid,
            f"{what}: {_requested(env)} asks for vLLM {version}'s CuteDSL prefill on sm "
            f"{', '.join(c.arch for c in cute)}, whose kernels import "
            f"{', '.join(env.missing_cutedsl)}, not installed: the first prefill dies with "
            f"\"No module named '{_module_of(env.missing_cutedsl[0])}'\"",
            f"{env.add_cutedsl}; or drop the request (FlashInfer or Triton is then used)",
            vllm_effect="refuses",
            **ev,
        )
    unknown = [c for c in choices if c.backend is None]
    if unknown and not _flashinfer_ok(env):
        return skipped(cid, f"{what}: {unknown[0].reason} ({rule.where})", **ev)
    lines = "; ".join(f"sm {c.arch}: {c.reason}" for c in choices if c.backend)
    have = f"; flashinfer-python {env.flashinfer} is installed" if fi else ""
    return passed(cid, f"{what}: {lines} ({rule.where}){have}{note}", **ev)


def _bare(choice: Choice) -> str:
    """A choice's reason without its leading kernel name: ``requested "auto", sm 9.0 is 9.0``."""
    return choice.reason.partition(": ")[2] or choice.reason


def _older_than(version: str | None, than: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        return version is not None and Version(version) < Version(than)
    except InvalidVersion:
        return False


def _flashinfer_ok(env: GdnEnv) -> bool:
    return bool(env.flashinfer) and env.flashinfer_has_gdn is not False


def _module_of(dist: str) -> str:
    return next((m for m, d in CUTEDSL_DISTS.items() if d == dist), dist)


def _requested(env: GdnEnv) -> str:
    where = f" ({env.requested_from})" if env.requested_from else ""
    return f'additional_config gdn_prefill_backend="{env.requested}"{where}'


def _fix(rule: GdnRule, env: GdnEnv, verb: str = "add") -> str:
    """Add flashinfer-python at vLLM's own pin, or ask vLLM for the Triton kernel."""
    fix = env.add_flashinfer or (
        f'{verb} `flashinfer-python = "{env.vllm_flashinfer_pin or "*"}"` to the env\'s PyPI '
        "dependencies"
    )
    if env.vllm_flashinfer_pin:
        fix += f" (vLLM {env.vllm}'s own Requires-Dist pins flashinfer-python"
        fix += f"{env.vllm_flashinfer_pin})"
    return fix + "; " + _triton_fix(rule)


def _triton_fix(rule: GdnRule) -> str:
    """How to ask this vLLM for the Triton/FLA prefill kernel, and tell the suite so."""
    if not rule.config_key:
        return "this vLLM has no way to ask for another kernel on this GPU"
    ask = []
    if rule.cli_flag:
        ask.append(f"`vllm serve ... {rule.cli_flag} triton`")
    if rule.engine_arg:
        ask.append(f'`LLM(..., {rule.engine_arg}="triton")`')
    ask.append(f"`--additional-config '{json.dumps({rule.config_key: 'triton'})}'`")
    return (
        "or run the Triton/FLA prefill kernel instead: "
        + " or ".join(ask)
        + ", and tell this suite with --vllm-additional-config="
        f"'{json.dumps({rule.config_key: 'triton'})}'"
    )


def requirement_pin(requires: Iterable[str], names: Sequence[str] = FLASHINFER_DISTS) -> str | None:
    """vLLM's specifier for flashinfer-python outside extras (``"==0.6.14"``); None when
    it declares none."""
    req = requirement_of(requires, names)
    return (str(req.specifier) or None) if req is not None else None


def cutedsl_missing(installed: Mapping[str, bool]) -> tuple[str, ...]:
    """The CuteDSL kernel's dists not installed (``installed``: dist name -> present)."""
    return tuple(d for d in CUTEDSL_DISTS.values() if not installed.get(d))
