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

:func:`pytest_vllm_env.readers.vllm_gdn.read_gdn_tree` reads the rule, :func:`gdn_layers` the
checkpoint's layers, :func:`decide` picks the kernel per target arch, and
:func:`gdn_prefill_backend` judges.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_vllm_env.facts.env import requirement_of
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped
from pytest_vllm_env.readers.checkpoint import Checkpoint
from pytest_vllm_env.readers.vllm_gdn import VLLM_0_26, GdnRule
from pytest_vllm_env.tables.archs import Arch

CHECK = "modelopt.gdn-prefill-backend"
FLASHINFER_DISTS = ("flashinfer-python", "flashinfer")
# vLLM 0.26.0's in-tree CuteDSL kernel imports these (ops/gdn_chunk_cutedsl/*.py).
CUTEDSL_DISTS = {"quack": "quack-kernels", "cutlass": "nvidia-cutlass-dsl"}
REAL_ERROR = "ModuleNotFoundError: No module named 'flashinfer'"
SM90_DSL_ERROR = "NotImplementedError: SM90 GDN prefill DSL kernel is unavailable"
SM90_DSL_PY = "flashinfer/gdn_kernels/delta_rule_dsl/delta_rule_sm90.py"


# -- facts -----------------------------------------------------------------------------------
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
    torch_cuda_error: str = ""  # torch/version.py there and unreadable (a FIFO): unknown
    # a FlashInfer file the decision reads is there and unreadable (a FIFO at
    # flashinfer/gdn_prefill.py: the import would hang, not raise): "path: cannot be read: why"
    flashinfer_unreadable: str = ""
    reinstall_flashinfer: str = ""  # the fix that reinstalls flashinfer-python
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
    return int(m[1]) if m else None


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
    if rule.kind == "damaged":  # a file of vLLM's rule is there and unreadable: no guess
        return error(
            cid, f"vLLM {env.vllm}'s Gated-DeltaNet rule cannot be read: {rule.problem}",
            "reinstall vllm (its files are damaged)",
        )  # fmt: skip
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
    if env.flashinfer and env.flashinfer_unreadable:
        return error(
            cid, f"{what}: flashinfer-python {env.flashinfer}: {env.flashinfer_unreadable}",
            env.reinstall_flashinfer or "reinstall flashinfer-python", **ev,
        )  # fmt: skip
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
    if unknown and not _flashinfer_ok(env) and env.torch_cuda_error:
        return error(
            cid, f"{what}: {unknown[0].reason}: {env.torch_cuda_error}",
            "reinstall torch (its torch/version.py is not a readable file)", **ev,
        )  # fmt: skip
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
