"""What a sample of a float-stored weight's numbers says: are they FP8 values, in FP8's
range, finite? (``checkpoint.read_weight_samples`` reads the sample; the judgement of what
vLLM's cast on load then does is ``facts/modelopt_load``'s.)"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_vllm_env.tables.quant_formats import FP8_E4M3_MAX


@dataclass(frozen=True)
class WeightSample:
    """A summary of sampled values of one weight tensor."""

    count: int
    max_abs: float
    off_grid: int  # values FP8 E4M3 cannot hold exactly
    over_range: int  # |value| > 448: NaN once cast to float8_e4m3fn
    nonfinite: int


def on_fp8_grid(value: float) -> bool:
    """Is ``value`` exactly a float8_e4m3fn number (3 mantissa bits, +-448, subnormals
    down to 2**-9)?"""
    a = abs(value)
    if a == 0.0:
        return True
    if not a <= FP8_E4M3_MAX:
        return False
    if a < 2.0**-6:
        return (a * 512.0).is_integer()
    mantissa, _ = math.frexp(a)
    return (mantissa * 16.0).is_integer()


def sample_of(values: Sequence[float]) -> WeightSample:
    """Summarize sampled weight values."""
    finite = [v for v in values if math.isfinite(v)]
    return WeightSample(
        count=len(values),
        max_abs=max(map(abs, finite), default=0.0),
        off_grid=sum(1 for v in finite if not on_fp8_grid(v)),
        over_range=sum(1 for v in finite if abs(v) > FP8_E4M3_MAX),
        nonfinite=len(values) - len(finite),
    )
