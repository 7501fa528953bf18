"""``modelopt.vision-tower``: is a multimodal checkpoint's vision tower excluded (stays BF16),
and if it is quantized, does the env's vLLM load it (F3.2, F3.5)? Which attention backend runs
it is ``xformers.decision``'s question."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pytest_vllm_env.checks.modelopt_common import VISION, VISION_MARKERS, few, skip_unreadable
from pytest_vllm_env.facts.modelopt_settings import effective_settings, excluder
from pytest_vllm_env.findings import Finding, failed, passed, skipped, warning
from pytest_vllm_env.readers.checkpoint import Checkpoint
from pytest_vllm_env.readers.safetensors_header import TensorInfo
from pytest_vllm_env.readers.vllm_source import Registry
from pytest_vllm_env.tables.archs import Arch
from pytest_vllm_env.tables.quant_formats import FLOAT_DTYPES


# -- 7. multimodal ---------------------------------------------------------------------------------
def vision_tower(
    ckpt: Checkpoint,
    registry: Registry | None,
    vllm_version: str | None = None,
    targets: Iterable[Arch] = (),
) -> Finding:
    """Qwen2.5-VL-style checkpoints: is the vision tower excluded (stays BF16)? The question
    of which attention backend runs it (xformers in vLLM 0.10.x) is the gpu tier's."""
    check = "modelopt.vision-tower"
    if blocked := skip_unreadable(check, ckpt, config=True, tensors=True):
        return blocked
    config = ckpt.config or {}
    archs = config.get("architectures") if isinstance(config.get("architectures"), list) else []
    arch = archs[0] if archs else None
    # One search over all names at once: most checkpoints have no vision tower.
    joined = "\n".join(ckpt.tensors)
    vision = (
        {n: t for n, t in ckpt.tensors.items() if VISION.search(n)} if VISION.search(joined) else {}
    )
    multimodal = (
        bool(vision)
        or "vision_config" in config
        or (registry is not None and arch in registry.multimodal)
    )
    if not multimodal:
        return skipped(check, f"{ckpt.label}: not a multimodal checkpoint (no vision tower)")
    if not vision:
        return skipped(check, f"{ckpt.label}: {arch} is multimodal but holds no vision tensors")
    eff = effective_settings(ckpt)
    quantized = sorted(
        n.rpartition(".")[0]
        for n, t in vision.items()
        if n.endswith(".weight") and t.dtype not in FLOAT_DTYPES
    )
    handover = "which attention backend runs it (xformers or flash-attn): see xformers.decision"
    if quantized:
        is_excluded = excluder(eff.exclude) if eff is not None else None
        excluded = is_excluded is not None and any(is_excluded(m, ckpt.modules) for m in quantized)
        if excluded:  # tensors-complete reports the excluded-but-quantized modules
            return passed(
                check,
                f"{ckpt.label}: the vision tower is quantized ({len(quantized)} Linear modules) "
                "and listed as excluded: see modelopt.tensors-complete; " + handover,
                vision_quantized=True,
            )
        return _quantized_vision(ckpt, vision, quantized, vllm_version, list(targets))
    patterns = [p for p in (eff.exclude if eff else ()) if any(m in p for m in VISION_MARKERS)]
    return passed(
        check,
        f"{ckpt.label}: the vision tower ({len(vision)} tensors) stays unquantized"
        + (f", excluded by {patterns}" if patterns else "")
        + f"; {handover}",
        vision_quantized=False,
        exclude_patterns=patterns,
    )


KEEPVISION_BF16 = (
    "keep the vision tower BF16 as NVIDIA's own FP8/NVFP4 recipes do: re-export with "
    'mtq.disable_quantizer(model, "*visual*") (ModelOpt >= 0.47) or "model.visual*" / '
    '"visual*" in the quant config\'s exclusions'
)


def _quantized_vision(
    ckpt: Checkpoint,
    vision: Mapping[str, TensorInfo],
    quantized: Sequence[str],
    vllm_version: str | None,
    archs: list[Arch],
) -> Finding:
    """A quantized, not excluded vision tower, judged by the classes seen in the field."""
    check = "modelopt.vision-tower"
    version = _version_tuple(vllm_version)
    kv = sorted(n for n in vision if n.endswith((".k_scale", ".v_scale")))
    # F3.2: vLLM 0.10.x's Qwen2.5-VL loader had no name for the vision blocks' KV scales
    # ("KeyError: 'blocks.0.attn.k_proj.k_scale'").
    if kv and version is not None and version < (0, 11):
        return failed(
            check,
            f"{ckpt.label}: the vision tower is quantized with KV scales ({kv[0]}, ...) and "
            f"vLLM {vllm_version}'s loader has no parameter for them (reported: "
            "\"KeyError: 'blocks.0.attn.k_proj.k_scale'\")",
            KEEPVISION_BF16,
            vllm_effect="refuses",
            tensors=kv[:10],
        )
    # F3.5: NVFP4 vision MLPs whose out-dimension is not a multiple of 64 break the Marlin
    # FP4 repack on GPUs below Blackwell ("size_n = 4304 is not divisible by tile_n_size").
    odd = sorted(
        f"{n.rpartition('.')[0]} (out {t.shape[0]})"
        for n, t in vision.items()
        if n.endswith(".weight") and t.dtype == "U8" and t.shape and t.shape[0] % 64
    )
    marlin = [a for a in archs if a.number < 100]
    if odd and (marlin or not archs):
        where = f"the target {', '.join(a.cc for a in marlin)}" if marlin else "a GPU below 10.0"
        outcome = failed if marlin else warning
        return outcome(
            check,
            f"{ckpt.label}: NVFP4 vision layers whose out-dimension is not a multiple of 64 "
            f"({few(odd)}): on {where} vLLM runs NVFP4 through Marlin, whose repack refuses "
            'them ("size_n = 4304 is not divisible by tile_n_size = 64")',
            KEEPVISION_BF16,
            vllm_effect="refuses" if marlin else "works",
        )
    return warning(
        check,
        f"{ckpt.label}: the vision tower is quantized ({len(quantized)} Linear modules, e.g. "
        f"{quantized[0]}) and not excluded: vLLM {vllm_version or ''} builds it quantized, a "
        "path NVIDIA's own recipes avoid and this suite has not calibrated (accuracy risk); "
        "which attention backend runs it: see xformers.decision",
        KEEPVISION_BF16,
        vllm_effect="works",
        vision_quantized=True,
    )


def _version_tuple(version: str | None) -> tuple[int, ...] | None:
    if not version:
        return None
    parts = []
    for piece in version.split("+")[0].split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or None
