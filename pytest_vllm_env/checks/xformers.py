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
:func:`pytest_vllm_env.readers.vllm_vit.read_vit_source` is the reader (text in, facts out);
:func:`decide` and :func:`decision_finding` take facts and return a :class:`Decision` /
findings. ``xformers.torch-pin`` and ``xformers.attention`` are in ``checks/xformers_torch.py``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped
from pytest_vllm_env.readers.vllm_vit import CUDA_PY, MODEL_PY, VitSource
from pytest_vllm_env.tables.archs import Arch
from pytest_vllm_env.tables.xformers_torch import xformers_for_torch

# fa2-or-xformers: 0.8.x (in vision.py) and 0.10.x (in cuda.py): sm >= 8.0 and the PyPI
#   flash-attn package -> FLASH_ATTN, else XFORMERS.
# fa-or-sdpa: 0.11/0.12.x: sm >= 8.0 and vLLM's bundled FA imports -> FLASH_ATTN, else SDPA.
# candidates: 0.13+ (0.26.0): the first supported entry of get_supported_vit_attn_backends().
RULES = ("fa2-or-xformers", "fa-or-sdpa", "candidates")

ATTENTION_TOLERANCE = 2e-2  # bf16, head_dim 80: a broken kernel is off by O(1) or NaN


# -- facts -----------------------------------------------------------------------------------


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
def install_xformers_fix(inst: Installed, arch_sm80: bool, env: PixiEnv | None = None) -> str:
    """The change that brings the xformers matching the env's torch, in ``env``'s language
    (a manifest line, ``[tool.pixi.*]`` for a pyproject workspace; a pip/uv command for a
    venv or a conda prefix; a Pixi env of unknown manifest without ``env``), and the
    alternative (flash-attn on sm >= 8.0, which makes vLLM pick FLASH_ATTN)."""
    env = env or PixiEnv(prefix=Path(".pixi/envs/default"))
    version = xformers_for_torch(inst.torch)
    spec = f"=={version}" if version else inst.vllm_xformers_pin or ""
    if version:
        why = f"the xformers release built for the env's torch {inst.torch}"
    elif inst.vllm_xformers_pin:
        why = "the pin vLLM's own metadata names"
    if version or inst.vllm_xformers_pin:
        # the env's own language: a pip command for a venv, never a pixi.toml edit (issue 21)
        fix: str = fixes.add(env, Package("xformers", spec, pypi=True)) + f" ({why})"
    else:
        fix = (
            "add xformers at the release whose Requires-Dist pins your torch to "
            f"{fixes.deps_place(env, pypi=True)} (check `pip install --dry-run --report - "
            "xformers==X` for its torch pin)"
        )
    if arch_sm80:
        fix += (
            "; or, on sm >= 8.0, add flash-attn built for this torch (vLLM then picks "
            "FLASH_ATTN; build it with `--no-build-isolation`)"
        )
    return fix


def decision_finding(
    src: VitSource,
    decisions: Sequence[Decision],
    inst: Installed,
    vllm_version: str | None,
    env: PixiEnv | None = None,
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
            "the vLLM install is damaged: reinstall it: "
            + fixes.reinstall(env or PixiEnv(prefix=Path(".pixi/envs/default")), "vllm", pypi=True),
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
            "to be safe: "
            + install_xformers_fix(inst, False, env)
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
            install_xformers_fix(inst, sm80, env),
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
    return int(m[1]) * 10 + int(m[2]) if m else 0


def _rejected(src: VitSource, decisions: Sequence[Decision]) -> Decision | None:
    if not src.allowed:
        return None
    return next((d for d in decisions if d.backend and d.backend not in src.allowed), None)


def uses_xformers(decisions: Sequence[Decision]) -> bool:
    """True when any target arch would, or may (undecided), run the vision tower on xformers."""
    return any(d.uses_xformers is not False for d in decisions)
