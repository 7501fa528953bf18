"""Whose behaviour a quantization verdict rests on when the env's own vLLM source does not
answer (issue 22: "where the loader changed, the env's own vLLM source decides").

Order, for each question: 1. what the env's own files say (read by ``readers/``); 2. else, when
the env's vLLM *is* a release this suite read (0.26.0, 0.33.0, local version labels such as
``+cu129`` aside), that release's recorded facts, which are the same thing as reading it;
3. else (a stand-in or unreadable file in a release between or after those, or no version)
an assumption, which the verdict says: whose behaviour was assumed and how to make it exact.
Never the silent union of what the releases read do: a union passes what the env's own
release refuses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pytest_vllm_env.facts.modelopt_mixed import LINEAR_0_26, LINEAR_0_33, SERVED

# the releases whose wheels were read for the tables (tables/quant_kernels.py FAMILIES,
# facts/modelopt_mixed.py LINEAR_*)
READ = ("0.26.0", "0.33.0")


def exact_release(version: str | None) -> str | None:
    """The release read that ``version`` is (``0.26.0+cu129`` is 0.26.0); None when it is
    none of them, or unknown."""
    if not version:
        return None
    base = version.split("+", 1)[0].strip()
    return base if base in READ else None


@dataclass(frozen=True)
class Served:
    """The per-layer algorithms ``ModelOptMixedPrecisionConfig.get_quant_method`` builds a
    Linear method for in the env's vLLM, and ``assumed``: '' when that is the env's own
    answer (its modelopt.py, or the recorded facts of its release), else what was assumed."""

    algos: tuple[str, ...]
    assumed: str = ""


def differs_between_releases(algos: Iterable[str]) -> bool:
    """Whether a MIXED_PRECISION verdict on layers of ``algos`` depends on the release: some
    algorithm is served by one release read and not by another (0.33.0's FP8 variants)."""
    return any(a in set(LINEAR_0_26) ^ set(LINEAR_0_33) for a in algos)


def mixed_served(read: tuple[str, ...] | None, version: str | None) -> Served:
    """``read``: the set read from the env's modelopt.py (``ModelOptSource.mixed_linear_algos``;
    None when the file, the class or its Linear branch could not be read)."""
    if read:
        return Served(tuple(read))
    release = exact_release(version)
    if release is not None:
        # 0.26.0's == chain (FP8, NVFP4, W4A16_NVFP4, MXFP8), 0.33.0's LINEAR_ALGOS keys
        return Served(LINEAR_0_26 if release == "0.26.0" else LINEAR_0_33)
    # a release between or after those read (or none known): never fail a layer that either
    # release read serves, and say so
    who = f"vLLM {version}" if version else "the env's vLLM (version unknown)"
    newer = "/".join(a for a in LINEAR_0_33 if a not in LINEAR_0_26)
    return Served(
        SERVED,
        f"{who}'s ModelOptMixedPrecisionConfig.get_quant_method could not be read from its "
        f"modelopt.py, so a layer is taken as served when 0.26.0 or 0.33.0 serves it "
        f"({'/'.join(SERVED)}; 0.26.0 lacks {newer}): "
        "to make it exact, make vllm/model_executor/layers/quantization/modelopt.py of the env "
        "readable, or install vllm==0.26.0 or vllm==0.33.0",
    )


def kernel_assumption(version: str | None, release: str, what: str = "picks kernels") -> str:
    """What a verdict from the tables assumes when ``version`` is not a release read: that it
    ``what`` (picks kernels, needs the capabilities) as ``release`` (the nearest read below
    it) does. '' when it is one."""
    if exact_release(version) is not None:
        return ""
    who = f"vLLM {version}" if version else "the env's vLLM (version unknown)"
    return (
        f"assumed: {who} {what} as {release} does (the tables were read from the 0.26.0 and "
        "0.33.0 wheels only, and compiled kernels' arch support is not in Python source); "
        "pin vllm==0.26.0 or vllm==0.33.0 for an exact verdict"
    )
