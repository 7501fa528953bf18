"""Would Qwen2.5-VL's vision tower use xformers in this env?  Read vLLM's source, never import.

vLLM 0.10.x prints "Current `vllm-flash-attn` has a bug inside vision module, so we use
xformers backend instead." and then dies with ``No module named 'xformers'`` when the env
has no xformers (seed 004): a Pixi env that installs vLLM next to its own torch often drops
xformers, and nothing complains until the first image. Which backend the vision tower picks
changed between versions (docs/xformers.md has the per-version rule with file:function
references), so the verdict comes from the copy of vLLM installed in the env:

- ``vllm/model_executor/models/qwen2_5_vl.py``: does the vision attention have an xformers
  path at all (``_Backend.XFORMERS`` / ``import xformers``), and which backends its
  ``if self.attn_backend not in {...}: raise`` accepts;
- ``vllm/model_executor/models/vision.py`` ``get_vit_attn_backend``: whether
  ``VLLM_ATTENTION_BACKEND`` overrides the choice, and (0.8.x) the rule itself;
- ``vllm/platforms/cuda.py`` ``get_vit_attn_backend`` (0.10.x on): the rule on CUDA.

Three rules are recognised (``RULES``); any other layout gives an explicit "cannot decide".
:func:`read_vit_source` is the reader (text in, facts out); :func:`decide` and the
judgements below take facts and return a :class:`Decision` / findings.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from pytest_vllm_env.facts.env import requirement_of
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped
from pytest_vllm_env.runners.gpu import ProbeResult, probe_blocked
from pytest_vllm_env.tables.archs import Arch
from pytest_vllm_env.tables.xformers_torch import xformers_for_torch

MODEL_PY = "vllm/model_executor/models/qwen2_5_vl.py"
VISION_PY = "vllm/model_executor/models/vision.py"
CUDA_PY = "vllm/platforms/cuda.py"
# 0.26.x moved the ViT attention call into this layer; an xformers path there counts too.
MM_ENCODER_PY = "vllm/model_executor/layers/attention/mm_encoder_attention.py"
SOURCES = (MODEL_PY, VISION_PY, CUDA_PY, MM_ENCODER_PY)

# fa2-or-xformers: 0.8.x (in vision.py) and 0.10.x (in cuda.py): sm >= 8.0 and the PyPI
#   flash-attn package -> FLASH_ATTN, else XFORMERS.
# fa-or-sdpa: 0.11/0.12.x: sm >= 8.0 and vLLM's bundled FA imports -> FLASH_ATTN, else SDPA.
# candidates: 0.13+ (0.26.0): the first supported entry of get_supported_vit_attn_backends().
RULES = ("fa2-or-xformers", "fa-or-sdpa", "candidates")

ATTENTION_TOLERANCE = 2e-2  # bf16, head_dim 80: a broken kernel is off by O(1) or NaN


# -- facts -----------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class Installed:
    """What the decision depends on in the env: versions of the attention packages."""

    torch: str | None = None
    flash_attn: str | None = None  # the PyPI flash-attn package (transformers' check)
    xformers: str | None = None
    triton: str | None = None
    flashinfer: str | None = None
    vllm_flash_attn: bool = False  # vLLM's bundled vllm/vllm_flash_attn/*.so
    vllm_xformers_pin: str | None = None  # vLLM's own Requires-Dist for xformers


@dataclass(frozen=True)
class Decision:
    """The backend the vision tower would use on one arch, and why.

    ``backend`` is None when it cannot be told: ``undecided`` is then ``"layout"`` (a vLLM
    whose rule we do not know) or ``"arch"`` (the answer depends on the target arch).
    ``uses_xformers`` is known even then when no arch can lead to xformers.
    """

    backend: str | None
    uses_xformers: bool | None
    reason: str
    arch: str = ""
    undecided: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)


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


def _function(tree: ast.Module | None, name: str) -> ast.FunctionDef | None:
    if tree is None:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    return None


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


# -- deciding --------------------------------------------------------------------------------
def decide(
    src: VitSource, arch: Arch | None, installed: Installed, env_backend: str | None = None
) -> Decision:
    """The backend Qwen2.5-VL's vision tower picks on ``arch`` (None: not known)."""
    label = arch.cc if arch else ""
    if src.rule not in RULES:
        return _undecided(src, label)
    if src.env_var_honoured and env_backend:
        return Decision(
            env_backend.upper(),
            env_backend.upper() == "XFORMERS",
            f"VLLM_ATTENTION_BACKEND={env_backend} in the env overrides the choice "
            f"({src.env_var_where})",
            label,
        )
    if src.rule == "fa2-or-xformers":
        return _fa2_or_xformers(src, arch, installed)
    if src.rule == "fa-or-sdpa":
        return _fa_or_sdpa(src, arch, installed)
    return _candidates(src, arch, installed)


def _undecided(src: VitSource, label: str) -> Decision:
    if src.rule == "unknown" and not src.model_has_xformers:
        # No xformers code path in the model: whatever the rule, it is not xformers.
        return Decision(
            None,
            False,
            f"{MODEL_PY} has no xformers code path; its backend rule "
            f"({src.where or 'get_vit_attn_backend'}) is not one this suite knows",
            label,
            "layout",
        )
    why = src.problem or (
        f"the vision backend rule in {src.where or CUDA_PY} is not one this suite knows, "
        f"and {MODEL_PY} has an xformers code path"
    )
    return Decision(None, None, why, label, "layout")


def _fa2_or_xformers(src: VitSource, arch: Arch | None, inst: Installed) -> Decision:
    fa = _flash_attn_usable(inst.flash_attn)
    ref = src.where
    if arch is None and fa:
        return Decision(
            None,
            None,
            f"FLASH_ATTN on sm >= 8.0 (flash-attn {inst.flash_attn} installed), XFORMERS "
            f"below ({ref})",
            "",
            "arch",
        )
    if arch is None or arch.number < 80:
        where = "on every arch" if arch is None else f"on sm {arch.cc} (< 8.0: Volta/Turing)"
        return Decision("XFORMERS", True, f"XFORMERS {where} ({ref})", arch.cc if arch else "")
    if fa:
        return Decision(
            "FLASH_ATTN",
            False,
            f"FLASH_ATTN: sm {arch.cc} >= 8.0 and flash-attn {inst.flash_attn} is installed, "
            f"so transformers' is_flash_attn_2_available() is true ({ref})",
            arch.cc,
        )
    return Decision(
        "XFORMERS",
        True,
        f'XFORMERS: the PyPI flash-attn package is not installed, so vLLM logs "Current '
        f"`vllm-flash-attn` has a bug inside vision module, so we use xformers backend "
        f'instead." ({ref})',
        arch.cc,
    )


def _flash_attn_usable(version: str | None) -> bool:
    """transformers' is_flash_attn_2_available(): flash_attn installed, >= 2.1.0 on CUDA."""
    if not version:
        return False
    try:
        return Version(version) >= Version("2.1.0")
    except InvalidVersion:
        return False


def _fa_or_sdpa(src: VitSource, arch: Arch | None, inst: Installed) -> Decision:
    if arch is None:
        return Decision(
            None, False, f"FLASH_ATTN on sm >= 8.0, TORCH_SDPA below ({src.where})", "", "arch"
        )
    if arch.number >= 80 and inst.vllm_flash_attn:
        why = f"FLASH_ATTN (vLLM's bundled vllm_flash_attn) on sm {arch.cc} >= 8.0"
        return Decision("FLASH_ATTN", False, f"{why} ({src.where})", arch.cc)
    why = (
        f"sm {arch.cc} < 8.0"
        if arch.number < 80
        else "vLLM's bundled vllm/vllm_flash_attn is missing, so the import fails"
    )
    return Decision("TORCH_SDPA", False, f"TORCH_SDPA: {why} ({src.where})", arch.cc)


def _candidates(src: VitSource, arch: Arch | None, inst: Installed) -> Decision:
    if arch is None:
        maybe = "XFORMERS" in src.candidates_sm80 + src.candidates_below
        return Decision(
            None,
            None if maybe else False,
            f"the first supported of {list(src.candidates_sm80)} on sm >= 8.0, of "
            f"{list(src.candidates_below)} below ({src.where})",
            "",
            "arch",
        )
    order = src.candidates_sm80 if arch.number >= 80 else src.candidates_below
    for name in order:
        ok, why = _candidate_ok(name, arch, inst)
        if ok:
            return Decision(
                name,
                name == "XFORMERS",
                f"{name}: the first supported entry of {list(order)} on sm {arch.cc}: {why} "
                f"({src.where})",
                arch.cc,
            )
    return Decision("TORCH_SDPA", False, f"TORCH_SDPA: none of {list(order)} fits", arch.cc)


def _candidate_ok(name: str, arch: Arch, inst: Installed) -> tuple[bool, str]:
    """Mirrors each backend class's supports_compute_capability() and its import."""
    if name == "TORCH_SDPA":
        return True, "always available"
    if name == "FLASH_ATTN":
        return arch.number >= 80, "FlashAttentionBackend supports sm >= 8.0"
    if name == "TRITON_ATTN":
        return bool(inst.triton), f"triton {inst.triton} is installed"
    if name == "FLASHINFER":
        return bool(inst.flashinfer), f"flashinfer-python {inst.flashinfer} is installed"
    if name == "XFORMERS":
        return bool(inst.xformers), f"xformers {inst.xformers} is installed"
    return False, "unknown backend"


# -- judging ---------------------------------------------------------------------------------
def install_xformers_fix(inst: Installed, arch_sm80: bool) -> str:
    """The pixi.toml line that brings the xformers matching the env's torch, and the
    alternative (flash-attn on sm >= 8.0, which makes vLLM pick FLASH_ATTN)."""
    version = xformers_for_torch(inst.torch)
    if version:
        line = f'xformers = "=={version}"'
        why = f"the xformers release built for the env's torch {inst.torch}"
    elif inst.vllm_xformers_pin:
        line = f'xformers = "{inst.vllm_xformers_pin}"'
        why = "the pin vLLM's own metadata names"
    else:
        line = 'xformers = "==<the release whose Requires-Dist pins your torch>"'
        why = "check `pip install --dry-run --report - xformers==X` for its torch pin"
    fix = f"add `{line}` to pixi.toml [pypi-dependencies] ({why}) and run `pixi install`"
    if arch_sm80:
        fix += (
            "; or, on sm >= 8.0, add flash-attn built for this torch (vLLM then picks "
            "FLASH_ATTN; build it with `--no-build-isolation`)"
        )
    return fix


def decision_finding(
    src: VitSource, decisions: Sequence[Decision], inst: Installed, vllm_version: str | None
) -> Finding:
    """xformers.decision: which backend the vision tower uses; failed when that is xformers
    and xformers is not installed, or when the model rejects the backend it would get."""
    cid = "xformers.decision"
    ev = {"vllm": vllm_version, "rule": src.rule, "where": src.where}
    if src.rule == "no-model":
        return skipped(cid, f"vLLM {vllm_version}: {src.problem}", **ev)
    if src.rule == "unreadable":
        return error(
            cid,
            f"cannot read vLLM {vllm_version}'s vision attention source: {src.problem}",
            "the vLLM install is damaged: reinstall it (`pixi clean && pixi install`)",
            **ev,
        )
    lines = {d.arch or "any arch": _line(d) for d in decisions}
    ev["decisions"] = lines
    layout = [d for d in decisions if d.undecided == "layout" and d.uses_xformers is None]
    if layout:
        return error(
            cid,
            f"cannot decide which backend vLLM {vllm_version}'s Qwen2.5-VL vision tower uses: "
            f"{layout[0].reason}",
            install_xformers_fix(inst, False).replace("add `", "to be safe, add `", 1)
            + "; and report the vLLM version so the rule can be read (docs/xformers.md)",
            **ev,
        )
    bad = _rejected(src, decisions)
    if bad:
        return failed(
            cid,
            f"Qwen2.5-VL's vision tower would get {bad.backend} on sm {bad.arch or '?'}, which "
            f'vLLM {vllm_version} rejects ("Qwen2.5-VL does not support {bad.backend} '
            f'backend now."; it accepts {", ".join(src.allowed)}): {bad.reason}',
            "VLLM_ATTENTION_BACKEND also sets the vision backend in this vLLM: remove it from "
            "[activation.env] / the shell, or set it to one the vision tower accepts",
            **ev,
        )
    xf = [d for d in decisions if d.uses_xformers]
    if xf and not inst.xformers:
        sm80 = any(d.arch and _number(d.arch) >= 80 for d in xf)
        return failed(
            cid,
            f"vLLM {vllm_version}'s Qwen2.5-VL vision tower would use xformers "
            f"({xf[0].arch and 'sm ' + xf[0].arch + ': '}{_line(xf[0])}), but xformers is not "
            "installed: the first image fails with \"No module named 'xformers'\"",
            install_xformers_fix(inst, sm80),
            **ev,
        )
    if xf:
        return passed(
            cid,
            f"vLLM {vllm_version}'s Qwen2.5-VL vision tower uses XFORMERS and xformers "
            f"{inst.xformers} is installed: {xf[0].reason}",
            **ev,
        )
    first = decisions[0] if decisions else None
    backend = ", ".join(sorted({d.backend for d in decisions if d.backend})) or "not xformers"
    return skipped(
        cid,
        f"vLLM {vllm_version}'s Qwen2.5-VL vision tower does not use xformers here: it uses "
        f"{backend} ({first.reason if first else src.where})",
        **ev,
    )


def _line(d: Decision) -> str:
    head = d.backend or "?"
    return d.reason if d.reason.startswith(head) else f"{head}: {d.reason}"


def _number(cc: str) -> int:
    m = re.match(r"(\d+)\.(\d+)", cc)
    return int(m.group(1)) * 10 + int(m.group(2)) if m else 0


def _rejected(src: VitSource, decisions: Sequence[Decision]) -> Decision | None:
    if not src.allowed:
        return None
    return next((d for d in decisions if d.backend and d.backend not in src.allowed), None)


def uses_xformers(decisions: Sequence[Decision]) -> bool:
    """True when any target arch would, or may (undecided), run the vision tower on xformers."""
    return any(d.uses_xformers is not False for d in decisions)


def torch_pin(
    decisions: Sequence[Decision],
    xformers_version: str | None,
    xformers_requires: Sequence[str],
    torch_version: str | None,
    built_for: str | None = None,
    torch_cuda: str | None = None,
    vllm_requires_xformers: bool = False,
    vllm_xformers: str | None = None,
) -> Finding:
    """xformers.torch-pin: xformers' wheel pins torch exactly (``torch==2.7.1``), and its
    ``cpp_lib.json`` names the torch its ops were compiled against (``built_for``); next to
    another torch those ops fail to load, and xformers falls back or raises at first use.
    Judged when the vision tower uses xformers, and whenever vLLM itself requires xformers
    (vLLM <= 0.10 ran all attention on it: vLLM #2245's cu121 xformers next to cu118 torch)."""
    cid = "xformers.torch-pin"
    if not uses_xformers(decisions) and not vllm_requires_xformers:
        return skipped(cid, "the vision tower does not use xformers here (xformers.decision)")
    if not xformers_version:
        return skipped(cid, "xformers is not installed (xformers.decision says what to add)")
    spec = _torch_requirement(xformers_requires)
    if spec is None:
        return skipped(cid, f"xformers {xformers_version} declares no torch requirement")
    if not torch_version:
        return failed(
            cid,
            f"xformers {xformers_version} needs torch {spec.specifier} but torch is not installed",
            f'add `torch = "{spec.specifier}"` to pixi.toml [pypi-dependencies]',
        )
    public = torch_version.split("+", 1)[0]
    try:
        ok = spec.specifier.contains(Version(public), prereleases=True)
    except InvalidVersion:
        ok = False
    ev = {"xformers": xformers_version, "requires": str(spec), "torch": torch_version}
    # PyPI's default torch has no "+cu130" in its dist version: take CUDA from torch/version.py
    local = torch_version.partition("+")[2] or (
        "cu" + torch_cuda.replace(".", "") if torch_cuda else ""
    )
    installed = f"{torch_version.split('+', 1)[0]}+{local}" if local else torch_version
    if ok and built_for and _torch_build_key(built_for) != _torch_build_key(installed):
        # Seen on the H100: PyPI's xformers 0.0.35 says torch>=2.10 but its _C.so was built
        # against 2.10.0+cu128; next to 2.11.0+cu130 "xFormers can't load C++/CUDA extensions"
        # and memory_efficient_attention has no operator.
        return failed(
            cid,
            f"xformers {xformers_version}'s compiled ops were built for torch {built_for} "
            f"(xformers/cpp_lib.json); the env has torch {installed}: they will not load "
            f'("xFormers can\'t load C++/CUDA extensions"), though {spec} is met',
            variant_fix(xformers_version, installed, built_for),
            built_for=built_for,
            **ev,
        )
    if ok:
        return passed(
            cid, f"xformers {xformers_version} requires {spec}; torch is {torch_version}", **ev
        )
    want = xformers_for_torch(torch_version)
    fix = (
        f'set `xformers = "=={want}"` in pixi.toml [pypi-dependencies] (built for torch {public})'
        if want
        else f"install the xformers release built for torch {public}"
    )
    if want and vllm_xformers and not _allows(vllm_xformers, want):
        # vLLM #28551: vLLM 0.11.1rc7 pinned xformers==0.0.32.post2, which pins torch 2.8.0,
        # while vLLM itself pins torch 2.9.0: no resolver can satisfy both pins
        fix += (
            f" and override vLLM's own pin (xformers{vllm_xformers}, which cannot hold with "
            f'its torch): [pypi-options] dependency-overrides = {{ xformers = "=={want}" }} '
            "in pixi.toml (uv: override-dependencies)"
        )
    return failed(
        cid,
        f"xformers {xformers_version} requires {spec}, but the env has torch {torch_version}: "
        "its compiled ops will not load against this torch",
        fix + f", or pin torch to match ({spec.specifier})",
        **ev,
    )


def _index(local: str) -> str:
    return f"https://download.pytorch.org/whl/{local or 'cpu'}"


def variant_fix(xformers_version: str, installed: str, built_for: str) -> str:
    """The fix for xformers ops built for another torch build. Where only the CUDA variant
    differs (``2.1.2+cu121`` vs ``2.1.2+cu118``, vLLM #2245) it names the variant: pinning
    ``torch == 2.1.2`` again would change nothing. Both variants live on PyTorch's index."""
    release, _, local = installed.partition("+")
    built_release, _, built_local = built_for.partition("+")
    mine = (
        f"install the xformers wheel built for torch {installed}: `xformers = {{ version = "
        f'"=={xformers_version}", index = "{_index(local)}" }}` in pixi.toml [pypi-dependencies] '
        f"(pip: `pip install xformers=={xformers_version} --index-url {_index(local)}`"
    )
    if release == built_release and built_local:
        return (
            mine + "; if that index has no such build, take the xformers release it has for "
            f"{installed}), or the torch variant xformers was built for: `torch = {{ version = "
            f'"=={release}", index = "{_index(built_local)}" }}`'
        )
    torch_line = (
        f'`torch = {{ version = "=={built_release}", index = "{_index(built_local)}" }}`'
        if built_local
        else f'`torch = "=={built_release}"`'
    )
    return mine + f"), or pin {torch_line} to match it"


def _torch_build_key(version: str) -> tuple[str, str]:
    """``2.11.0+cu130`` -> ("2.11", "13"): the torch minor and the CUDA major an extension's
    ABI depends on (libcudart.so.12 vs .13)."""
    release, _, local = version.partition("+")
    minor = ".".join(release.split(".")[:2])
    match = re.match(r"cu(\d+)\d$", local)
    return minor, (match.group(1) if match else local)


def read_build_torch(package_dir: Path) -> str | None:
    """The torch version xformers' C++ ops were built for, from its ``cpp_lib.json``
    (``{"version": {"torch": "2.10.0+cu128", ...}}``); None when absent or unreadable."""
    try:
        data = json.loads((package_dir / "cpp_lib.json").read_text())
        value = data["version"]["torch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


def vllm_xformers_requirement(dist: Any) -> str | None:
    """vLLM's specifier for xformers on this platform (``"==0.0.31"``, ``""`` when unpinned),
    None when vLLM does not require xformers (or only as an extra)."""
    req = requirement_of(getattr(dist, "requires", ()) or (), ("xformers",))
    return str(req.specifier) if req is not None else None


def _allows(specifier: str, version: str) -> bool:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        return SpecifierSet(specifier).contains(Version(version), prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return True


def _torch_requirement(requires: Sequence[str]) -> Requirement | None:
    for text in requires:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.name.lower() == "torch" and not (req.marker and "extra" in str(req.marker)):
            return req
    return None


def attention(probe: ProbeResult, decisions: Sequence[Decision], python: str = "") -> Finding:
    """xformers.attention: memory_efficient_attention agrees with torch SDPA on the GPU."""
    cid = "xformers.attention"
    retry = f"run `{python} -c 'import xformers.ops'` in the env and fix what it prints"
    if blocked := probe_blocked(cid, probe, "xformers", retry):
        return blocked
    d = probe.data
    if d.get("xformers") is None:
        return failed(
            cid,
            f"xformers cannot be imported by {python}: {d.get('exception', 'not installed')}",
            "install the xformers release built for the env's torch "
            f"({d.get('torch')}): xformers.decision names the pixi.toml line",
            torch=d.get("torch"),
        )
    ev = {k: d.get(k) for k in ("xformers", "torch", "device", "dtype", "diffs")}
    diff = d.get("max_abs_diff")
    if not isinstance(diff, (int, float)) or diff != diff or diff > ATTENTION_TOLERANCE:
        ran = isinstance(diff, (int, float))
        return failed(
            cid,
            (
                f"xformers {d['xformers']} memory_efficient_attention differs from torch SDPA "
                f"by {diff} (> {ATTENTION_TOLERANCE})"
                if ran
                else f"xformers {d['xformers']} memory_efficient_attention did not run on "
                f"{d.get('device')}"
            )
            + (f": {str(d['exception']).splitlines()[0]}" if d.get("exception") else ""),
            "xformers' kernels do not fit this torch/GPU: install the xformers release built "
            f"for torch {d.get('torch')} (`python -m xformers.info` lists the usable ops)",
            **ev,
        )
    return passed(
        cid,
        f"xformers {d['xformers']} memory_efficient_attention matches torch SDPA on "
        f"{d.get('device')} within {ATTENTION_TOLERANCE} (max abs diff {diff:.2e}, "
        f"{d.get('dtype')})",
        **ev,
    )


def read_vit_tree(root: Path) -> VitSource:
    """:func:`read_vit_source` on the files under a site-packages folder ``root``."""
    texts: dict[str, str | None] = {}
    for rel in SOURCES:
        path = root / rel
        if not path.exists():
            texts[rel] = None
            continue
        try:
            texts[rel] = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            return VitSource("unreadable", problem=f"cannot read {path}: {exc.strerror or exc}")
    return read_vit_source(texts)
