"""``vllm.flash-attn-library``: does the env's ``vllm/vllm_flash_attn`` hold the library of the
FlashAttention version vLLM will use on each target GPU? (pure: facts in, findings out)

vLLM picks the version in ``get_flash_attn_version`` (``vllm/v1/attention/backends/fa_utils.py``,
0.26.0 and 0.33.0): 1. FA3 on sm 9.x where ``is_fa_version_supported(3)``, FA4 on sm 10.x where
``is_fa_version_supported(4)``, else FA2; 2. the user's ``attention_config.flash_attn_version``
(:mod:`pytest_vllm_env.facts.fa_version`: which override this vLLM reads); 3. FA3 on sm >= 10
becomes FA4 if supported, else FA2; then ``if not is_fa_version_supported(v)``: it logs "Cannot
use FA version v is not supported due to FAv is unavailable ..." and returns None.
``is_fa_version_supported`` (``vllm/vllm_flash_attn/flash_attn_interface.py``): FA2 needs
``from . import _vllm_fa2_C`` to import and sm >= 8.0; FA3 ``_vllm_fa3_C`` and sm 9.x; FA4 the
CuTe DSL package (a run-time probe: not judged here) on sm 9.x/10.x/11.x.

The FLASH_ATTN backend is still selected with version None (its ``supports_kv_cache_dtype`` for
an unquantized cache does not ask the version) and fails at the first forward:
"AssertionError: FlashAttention version not detected" (``flash_attn.py``
``FlashAttentionImpl.forward``). Measured on an H100 with vLLM 0.26.0 whose ``vllm_flash_attn``
held only ``_vllm_fa3_C``, FA2 forced with ``attention_config={"flash_attn_version": 2}``
(fixtures/measured/fa_version-0.26.0.json). Where a backend ahead of FLASH_ATTN serves the
model (FlashInfer first on sm 10.x, when installed), the version is never asked: passed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pytest_vllm_env import findings as F
from pytest_vllm_env.checks.attention_eval import UNKNOWN
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.fa_version import FaVersion
from pytest_vllm_env.findings import Finding
from pytest_vllm_env.tables.archs import Arch

CID = "vllm.flash-attn-library"


def supported(version: int, arch: Arch, libs: frozenset[int]) -> Any:
    """``is_fa_version_supported(version)`` on ``arch`` with the libraries ``libs``."""
    if version == 2:
        return 2 in libs and arch.number >= 80
    if version == 3:
        return 3 in libs and arch.major == 9
    if version == 4:
        return UNKNOWN if arch.major in (9, 10, 11) else False
    return False


def used_version(arch: Arch, forced: int | None, libs: frozenset[int]) -> Any:
    """What ``get_flash_attn_version()`` returns on ``arch`` (None: no usable version;
    UNKNOWN: it turns on FA4's run-time probe)."""
    if forced is not None:
        version: Any = forced
    elif arch.major == 9 and supported(3, arch, libs) is True:
        version = 3
    elif arch.major == 10 and supported(4, arch, libs) is not False:
        return UNKNOWN
    else:
        version = 2
    if arch.major >= 10 and version == 3:
        four = supported(4, arch, libs)
        if four is UNKNOWN:
            return UNKNOWN
        version = 4 if four else 2
    ok = supported(version, arch, libs)
    if ok is UNKNOWN:
        return UNKNOWN
    return version if ok else None


def _fix(drops: list[str], reinstall: str) -> str:
    """Drop the override where that runs a version whose library is there (the first way);
    else reinstall vLLM, keeping the reinstall's changes (a :class:`Fix`)."""
    wheel = reinstall + " (vLLM's wheel ships _vllm_fa2_C and _vllm_fa3_C in vllm/vllm_flash_attn)"
    if not drops:
        return wheel
    return fixes.otherwise("; or ".join(dict.fromkeys(drops)), wheel)


def _lib(version: int) -> str:
    return f"_vllm_fa{version}_C"


def flash_attn_library(
    fa: FaVersion | None,
    libs: Iterable[int] | None,
    fa_dir: str,
    archs: list[Arch],
    version: str | None,
    backend_on: Callable[[Arch, Any], str | None] | None = None,
    reinstall: str = "reinstall vllm",
) -> Finding:
    """One finding: the FA version used per arch and its library. ``backend_on(arch, fa)``:
    the attention backend vLLM selects there (None: not known); ``reinstall``: the env's own
    command that reinstalls vLLM (the PyPI wheel ships ``_vllm_fa2_C`` and ``_vllm_fa3_C``)."""
    if libs is None:
        return F.skipped(CID, "the env's vLLM has no vllm/vllm_flash_attn (or vLLM is missing)")
    if not archs:
        return F.skipped(CID, "no target arch: give --cuda-arch (or set TORCH_CUDA_ARCH_LIST)")
    have = frozenset(libs)
    held = ", ".join(_lib(v) for v in sorted(have)) or "no FA library"
    forced = fa.forced if fa is not None else None
    where = f" (flash_attn_version={forced} from {fa.forced_from})" if fa and forced else ""
    per_arch: dict[str, str] = {}
    bad: list[str] = []
    drops: list[str] = []
    for arch in archs:
        got = used_version(arch, forced, have)
        backend = backend_on(arch, got) if backend_on is not None else None
        if backend is not None and backend != "FLASH_ATTN":
            per_arch[arch.cc] = f"{backend} (FlashAttention not used)"
            continue
        if got is UNKNOWN:
            per_arch[arch.cc] = "FA4 or FA2 (FA4's package probe decides at run time)"
            continue
        if got is not None:
            per_arch[arch.cc] = f"FA{got} ({_lib(got)})"
            continue
        wanted = forced if forced is not None else (3 if arch.major == 9 else 2)
        per_arch[arch.cc] = "none"
        bad.append(
            f"sm {arch.cc}: FA{wanted}{where} needs {_lib(wanted)}, which {fa_dir} lacks "
            f"(it holds {held})"
        )
        if forced is not None:
            default = used_version(arch, None, have)
            if isinstance(default, int):
                drops.append(
                    f"drop flash_attn_version={forced} from {fa.forced_from}: vLLM then runs "
                    f"FA{default} ({_lib(default)}) on sm {arch.cc}"
                )
    evidence = {"fa_libraries": held, "fa_version": per_arch, "folder": fa_dir}
    if fa is not None and forced is not None:
        evidence["forced"] = f"{forced}, from {fa.forced_from} ({fa.rule})"
    if bad:
        return F.failed(
            CID,
            f"vLLM {version or '?'}: " + "; ".join(bad) + ": get_flash_attn_version logs "
            "'Cannot use FA version ... is unavailable' and returns None, and the FLASH_ATTN "
            "backend fails at the first forward ('AssertionError: FlashAttention version not "
            "detected', vllm/v1/attention/backends/flash_attn.py)",
            _fix(drops, reinstall),
            **evidence,
        )
    shown = ", ".join(f"sm {a}: {v}" for a, v in per_arch.items())
    return F.passed(CID, f"vLLM {version or '?'}{where}: {shown}", **evidence)
