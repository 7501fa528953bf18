"""``modelopt.scales-sane``: every float scale of a ModelOpt checkpoint is a number vLLM can
use. A NaN, infinite, zero or negative scale comes from a broken calibration run: the
checkpoint loads fine and generates garbage. Whether each scale has the shape and dtype vLLM
builds is :mod:`pytest_vllm_env.checks.modelopt_tensors`'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pytest_vllm_env.checks.modelopt_common import few, skip_unreadable
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped
from pytest_vllm_env.readers.checkpoint import Checkpoint


def scales_sane(
    ckpt: Checkpoint, values: Mapping[str, Sequence[float]], unread: Mapping[str, str]
) -> Finding:
    """Every scale finite and > 0: a NaN, inf, zero or negative scale comes from a broken
    calibration run and turns every output of that layer into garbage."""
    check = "modelopt.scales-sane"
    if blocked := skip_unreadable(check, ckpt, tensors=True):
        return blocked
    if unread:
        first = next(iter(unread.items()))
        return error(
            check,
            f"{ckpt.label}: {len(unread)} scale tensor(s) could not be read: "
            f"{first[0]}: {first[1]}",
            "replace the named safetensors file with a complete copy (re-download or re-export)",
            unread=dict(unread),
        )
    if not values:
        return skipped(check, f"{ckpt.label}: no float scale tensors (*_scale) in the checkpoint")
    bad: list[str] = []
    # One pass over every value first: ``not v > 0`` catches NaN, zero and negatives.
    suspects = [n for n, vals in values.items() for v in vals if not 0 < v < math.inf]
    for name in dict.fromkeys(suspects):
        vals = values[name]
        wrong = [v for v in vals if not (math.isfinite(v) and v > 0)]
        if wrong:
            bad.append(
                f"{name}={_fmt(wrong[0])}"
                + (f" ({len(wrong)} of {len(vals)})" if len(vals) > 1 else "")
            )
    if bad:
        return failed(
            check,
            f"{ckpt.label}: {len(bad)} scale tensor(s) not finite and > 0: {few(bad)}",
            "re-run ModelOpt calibration with real data in forward_loop (a NaN/zero amax "
            "means the quantizer saw no or broken activations), then re-export",
            bad=bad[:50],
        )
    return passed(check, f"{ckpt.label}: {len(values)} scale tensor(s), all finite and > 0")


def _fmt(value: float) -> str:
    return repr(value) if math.isfinite(value) else str(value)
