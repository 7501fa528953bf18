"""``checkpoint.attention-backend``: will the env's vLLM find an attention backend for the
checkpoint's KV-cache dtype and head size on each target GPU? (pure: facts in, findings out)

vLLM 0.26.0 refused both ModelOpt NVFP4-KV exports on an H100 at model construction:
"ValueError: No valid attention backend found for cuda with AttentionSelectorConfig(
head_size=64, dtype=torch.bfloat16, kv_cache_dtype=nvfp4, ...). Reasons: {FLASH_ATTN:
[kv_cache_dtype not supported], FLASHINFER: [ImportError], TRITON_ATTN: [kv_cache_dtype not
supported], ...}" (``vllm/platforms/cuda.py``: ``CudaPlatform.get_attn_backend_cls``). The
rule follows that function with what the env's vLLM source says
(:mod:`pytest_vllm_env.readers.vllm_attn_backends`):

- the KV-cache dtype: ``--kv-cache-dtype`` when given and not ``auto``; else the checkpoint's
  (``vllm/utils/torch_utils.py``: ``resolve_kv_cache_dtype_string`` ->
  ``get_kv_cache_quant_algo_string``: a ModelOpt ``kv_cache_scheme`` / ``kv_cache_quant_algo``
  string through ``MODELOPT_TO_VLLM_KV_CACHE_DTYPE_MAP``; a dict ``{num_bits: 8, type: float,
  dynamic: false}`` is ``fp8``, ``{num_bits: 4, type: float}`` ``nvfp4``; an unknown one
  falls back to ``auto``);
- the backends ``_get_backend_priorities`` lists for the GPU's major, in order; each one is an
  ``ImportError`` when its module imports a package the env lacks (FlashInfer), else it is
  asked ``supports_kv_cache_dtype``, ``supports_head_size`` and ``supports_compute_capability``
  from its own source (:mod:`pytest_vllm_env.checks.attention_eval`);
- the first that serves it is the backend; none: failed, with the fixes that would make one
  serve it (each checked by the same rule): a ``--kv-cache-dtype`` a backend takes there,
  installing the package a backend needs where that backend would take it, or exporting
  without the KV-cache quantization.

A predicate that asks the running process something no file says (FlashInfer's
``supports_trtllm_attention()``) is unknown; a backend that may serve is never failed: a
warning names it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_vllm_env import findings as F
from pytest_vllm_env.checks.attention_eval import UNKNOWN, Evaluator, Platform
from pytest_vllm_env.findings import Finding
from pytest_vllm_env.readers.vllm_attn_backends import AttnBackends
from pytest_vllm_env.tables.archs import Arch

CID = "checkpoint.attention-backend"
# the PyPI distribution that provides an import name the backends need (FlashInfer's
# wheel is flashinfer-python; vLLM's own requirements name it so)
DIST_OF = {"flashinfer": "flashinfer-python"}
# the dtypes vLLM's --kv-cache-dtype offers that a fix may name, most faithful to a
# quantized checkpoint first (config/cache.py: CacheDType)
FIX_DTYPES = ("fp8", "bfloat16")


@dataclass(frozen=True)
class KvDtype:
    """The KV-cache dtype vLLM asks the backends about, and where it comes from."""

    dtype: str
    source: str
    from_checkpoint: bool = False


def kv_cache_dtype(
    config: Mapping[str, Any] | None,
    hf_quant_config: Mapping[str, Any] | None,
    launch: str | None,
    launch_from: str,
    kv_map: Mapping[str, str],
) -> KvDtype:
    """vLLM's ``resolve_kv_cache_dtype_string`` (engine/arg_utils.py ->
    utils/torch_utils.py): the launch's ``--kv-cache-dtype`` unless ``auto``, else the
    checkpoint's quantization config's KV-cache algorithm."""
    if launch and launch != "auto":
        return KvDtype(launch, launch_from)
    quant = (config or {}).get("quantization_config")
    where = "config.json's quantization_config"
    if not isinstance(quant, Mapping):
        quant, where = hf_quant_config or {}, "hf_quant_config.json"
        if isinstance(quant, Mapping) and "quantization" in quant:
            quant = {"quant_method": "modelopt", **quant}
    if not isinstance(quant, Mapping) or not str(quant.get("quant_method", "")).startswith(
        "modelopt"
    ):
        return KvDtype("auto", launch_from if launch else "default (auto)")
    inner = quant.get("quantization", quant)
    inner = inner if isinstance(inner, Mapping) else quant
    algo = (
        inner.get("kv_cache_scheme")
        or quant.get("kv_cache_scheme")
        or inner.get("kv_cache_quant_algo")
        or quant.get("kv_cache_quant_algo")
    )
    key = next(
        (k for k in ("kv_cache_scheme", "kv_cache_quant_algo") if k in inner or k in quant), ""
    )
    if isinstance(algo, Mapping):
        if (
            algo.get("dynamic") is False
            and algo.get("num_bits") == 8
            and algo.get("type") == "float"
        ):
            algo = "fp8"
        elif algo.get("num_bits") == 4 and algo.get("type") == "float":
            algo = "nvfp4"
        else:
            return KvDtype("auto", f"{where} ({key} not one vLLM knows: auto)")
    if isinstance(algo, str):
        dtype = kv_map.get(algo.lower(), "auto")
        return KvDtype(dtype, f"{where} {key}={algo!r}", dtype != "auto")
    return KvDtype("auto", launch_from if launch else "default (auto)")


def head_size(config: Mapping[str, Any] | None) -> int | None:
    """The attention head size vLLM builds the layer with: ``head_dim``, else hidden_size /
    num_attention_heads (a multimodal model's text config first)."""
    cfg = (config or {}).get("text_config") or config or {}
    if isinstance(cfg.get("head_dim"), int):
        return cfg["head_dim"]
    hidden, heads = cfg.get("hidden_size"), cfg.get("num_attention_heads")
    if isinstance(hidden, int) and isinstance(heads, int) and heads:
        return hidden // heads
    return None


def fa_version_on(arch: Arch, forced: int | None, fa_libs: Iterable[int] | None) -> Any:
    """What ``get_flash_attn_version()`` returns on ``arch`` (fa_utils.py): FA3 on sm 9.x
    where ``_vllm_fa3_C`` is there, else FA2 (FA4 on sm 10.x is a package probe: unknown);
    a forced version whose library is absent makes it None. ``fa_libs``: the FA versions whose
    library the env's ``vllm/vllm_flash_attn`` holds (None: not known)."""
    libs = None if fa_libs is None else set(fa_libs)
    if forced is not None:
        if libs is None or forced == 4:
            return UNKNOWN
        return forced if forced in libs else None
    if arch.major == 9:
        return UNKNOWN if libs is None else (3 if 3 in libs else 2)
    if arch.major == 10:
        return UNKNOWN
    return 2


def judge_backend(
    facts: AttnBackends, name: str, arch: Arch, kv: str, head: int | None, fa: Any,
    absent: frozenset[str],
) -> tuple[Any, list[str]]:  # fmt: skip
    """(serves: True/False/UNKNOWN, reasons) of one backend as ``validate_configuration``
    asks it, with ``ImportError`` first (``get_valid_backends``)."""
    b = facts.backends.get(name)
    if b is None or b.error:
        return UNKNOWN, [b.error if b else f"{name}: not read"]
    missing = [m for m in b.imports if m in absent]
    if missing:
        return False, [f"ImportError ({', '.join(missing)} not installed)"]
    ev = Evaluator(b.predicates, facts.helpers, Platform((arch.major, arch.minor), fa),
                   b.kv_dtypes, facts.base)  # fmt: skip
    asks = [
        ("kv_cache_dtype not supported", ev.call("supports_kv_cache_dtype", kv)),
        ("head_size not supported", True if head is None else ev.call("supports_head_size", head)),
        ("compute capability not supported",
         ev.call("supports_compute_capability", (arch.major, arch.minor))),
    ]  # fmt: skip
    reasons = [why for why, v in asks if v is not UNKNOWN and not v]
    if reasons:
        return False, reasons
    unknown = [why.replace(" not supported", "") for why, v in asks if v is UNKNOWN]
    if unknown:
        return UNKNOWN, [f"{', '.join(unknown)}: decided at run time"]
    return True, []


def select(
    facts: AttnBackends, arch: Arch, kv: str, head: int | None, fa: Any, absent: frozenset[str]
) -> tuple[str | None, list[str], dict[str, list[str]]]:
    """(the backend vLLM takes: the first that serves; None: none surely does, [the ones
    before it or instead of it that may], {backend: reasons it was passed over})."""
    names = next((n for m, n in facts.priorities if m == arch.major), None)
    names = names or next((n for m, n in facts.priorities if m is None), ())
    maybe: list[str] = []
    reasons: dict[str, list[str]] = {}
    for name in names:
        ok, why = judge_backend(facts, name, arch, kv, head, fa, absent)
        if ok is True:
            return name, maybe, reasons
        if ok is UNKNOWN:
            maybe.append(name)
        reasons[name] = why
    return None, maybe, reasons


def attention_backend(
    config: Mapping[str, Any] | None,
    hf_quant_config: Mapping[str, Any] | None,
    facts: AttnBackends | None,
    archs: list[Arch],
    label: str,
    version: str | None,
    *,
    launch_kv: str | None = None,
    launch_from: str = "not given",
    absent: frozenset[str] = frozenset(),
    fa_forced: int | None = None,
    fa_libs: Iterable[int] | None = None,
    install: Mapping[str, str] | None = None,
) -> Finding:
    """One finding for the checkpoint: the backend per target arch, or none (failed, with
    the fix). ``absent``: import names the env lacks; ``install``: {import name: the fix
    that installs it in the env's own language}."""
    if facts is None or not facts.found:
        return F.skipped(CID, f"{label}: the env's vLLM has no readable _get_backend_priorities")
    if not archs:
        return F.skipped(CID, "no target arch: give --cuda-arch (or set TORCH_CUDA_ARCH_LIST)")
    kv = kv_cache_dtype(config, hf_quant_config, launch_kv, launch_from, facts.kv_map)
    head = head_size(config)
    fa_libs = None if fa_libs is None else tuple(fa_libs)
    per_arch: dict[str, str] = {}
    bad: list[str] = []
    unsure: list[str] = []
    unsure_at: list[tuple[Arch, Any]] = []
    failing: list[tuple[Arch, Any]] = []
    for arch in archs:
        fa = fa_version_on(arch, fa_forced, fa_libs)
        got, maybe, reasons = select(facts, arch, kv.dtype, head, fa, absent)
        shown = "; ".join(f"{n}: {', '.join(r)}" for n, r in reasons.items())
        if got:  # a backend surely takes it: the load works (an earlier one may win)
            per_arch[arch.cc] = got + (f" (or {', '.join(maybe)} first)" if maybe else "")
            continue
        if maybe:
            per_arch[arch.cc] = f"{got or 'none'} (may be {', '.join(maybe)})"
            unsure.append(f"sm {arch.cc}: {', '.join(maybe)} may take it ({shown})")
            unsure_at.append((arch, fa))
            continue
        per_arch[arch.cc] = "none"
        bad.append(f"sm {arch.cc}: {{{shown}}}")
        failing.append((arch, fa))
    evidence = {"kv_cache_dtype": f"{kv.dtype} (from {kv.source})", "head_size": head,
                "backend": per_arch, "rule": facts.where}  # fmt: skip
    subject = label
    if bad:
        return F.failed(
            CID,
            f"{label}: vLLM {version or '?'} finds no attention backend for kv_cache_dtype="
            f"{kv.dtype} (from {kv.source}), head size {head}: 'ValueError: No valid attention "
            f"backend found' at model construction; " + "; ".join(bad),
            "; or ".join(_fixes(facts, failing, kv, head, absent, install or {}))
            or "export without KV-cache quantization",
            subject=subject,
            **evidence,
        )
    if unsure:
        return F.warning(
            CID,
            f"{label}: kv_cache_dtype={kv.dtype} (from {kv.source}) is served only by a "
            "backend whose answer is decided at run time; " + "; ".join(unsure),
            "; or ".join(
                ["load it once on the GPU (the backend's own check decides)"]
                + [f for f in _fixes(facts, unsure_at, kv, head, frozenset(), {}) if "--kv" in f]
            ),
            subject=subject,
            **evidence,
        )
    shown = ", ".join(f"sm {a}: {b}" for a, b in per_arch.items())
    return F.passed(
        CID, f"{label}: kv_cache_dtype={kv.dtype}, head size {head}: {shown}",
        subject=subject, **evidence,
    )  # fmt: skip


def _fixes(
    facts: AttnBackends, failing: list[tuple[Arch, Any]], kv: KvDtype, head: int | None,
    absent: frozenset[str], install: Mapping[str, str],
) -> list[str]:  # fmt: skip
    """The changes that make a backend serve it on every failing arch (``(arch, FA version
    there)``), each checked by the same rule; an install names the archs it helps."""
    out: list[str] = []
    archs = ", ".join(a.cc for a, _ in failing)
    verb = "has" if len(failing) == 1 else "have"
    for dtype in FIX_DTYPES:
        if dtype != kv.dtype and all(
            select(facts, a, dtype, head, fa, absent)[0] for a, fa in failing
        ):
            out.append(
                f"launch with --kv-cache-dtype {dtype} (`vllm serve ... --kv-cache-dtype {dtype}`"
                f', LLM(kv_cache_dtype="{dtype}")): sm {archs} then {verb} a backend for it'
            )
            break
    for pkg in sorted(absent):
        helped = []
        for a, fa in failing:
            got, maybe, _ = select(facts, a, kv.dtype, head, fa, absent - {pkg})
            if got or maybe:
                helped.append(
                    f"{got or maybe[0]} on sm {a.cc}"
                    + ("" if got else " (if its run-time check agrees)")
                )
        if helped:
            how = install.get(pkg) or f"install {DIST_OF.get(pkg, pkg)}"
            # a Fix: + keeps the install's changes (pixi add / pip install as data)
            out.append(how + f": then {', '.join(helped)} takes kv_cache_dtype={kv.dtype}")
    if kv.from_checkpoint:
        out.append(
            f"re-export without {kv.dtype} KV-cache quantization (no KV config, or "
            "mtq.FP8_KV_CFG where an FP8 KV cache has a backend)"
        )
    return out
