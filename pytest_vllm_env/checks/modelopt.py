"""Judge a ModelOpt checkpoint the way the env's vLLM will, before anything loads.

Each check takes facts (a :class:`~pytest_vllm_env.readers.checkpoint.Checkpoint`, what the
env's vLLM source says, the target archs) and returns a :class:`Finding`. The checks live by
what they judge; this module names them all and gathers them for ``gpu.prediction-agrees``:

================================== ==========================================
check id                           module (``pytest_vllm_env.checks.``)
================================== ==========================================
``modelopt.files-readable``        ``modelopt_config``
``modelopt.quant-config``          ``modelopt_config``
``modelopt.quant-algo-supported``  ``modelopt_config``
``modelopt.architecture-registered`` ``modelopt_config``
``modelopt.min-capability``        ``modelopt_config``
``modelopt.tensors-complete``      ``modelopt_tensors`` (KV scales: ``modelopt_kv``)
``modelopt.scales-sane``           ``modelopt_scales``
``modelopt.shapes-match-config``   ``modelopt_shapes``
``modelopt.vision-tower``          ``modelopt_vision``
``modelopt.gdn-prefill-backend``   ``gdn_prefill``
================================== ==========================================

What each algorithm's Linear holds is one row of
:mod:`pytest_vllm_env.tables.quant_formats`; which settings vLLM reads is
:mod:`pytest_vllm_env.facts.modelopt_settings`; what its loader does with each tensor is
:mod:`pytest_vllm_env.facts.modelopt_load`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pytest_vllm_env.checks.gdn_prefill import GdnEnv, gdn_prefill_backend
from pytest_vllm_env.checks.modelopt_config import (
    architecture_registered,
    files_readable,
    min_capability,
    quant_algo_supported,
    quant_config,
)
from pytest_vllm_env.checks.modelopt_scales import scales_sane
from pytest_vllm_env.checks.modelopt_shapes import shapes_match_config
from pytest_vllm_env.checks.modelopt_tensors import tensors_complete
from pytest_vllm_env.checks.modelopt_vision import vision_tower
from pytest_vllm_env.findings import Finding
from pytest_vllm_env.readers.checkpoint import Checkpoint
from pytest_vllm_env.readers.vllm_gdn import GdnRule
from pytest_vllm_env.readers.vllm_kv_naming import KvScaleNaming
from pytest_vllm_env.readers.vllm_source import ModelOptSource, Registry
from pytest_vllm_env.readers.weight_sample import WeightSample
from pytest_vllm_env.tables.archs import Arch

__all__ = [
    "architecture_registered",
    "files_readable",
    "min_capability",
    "predict",
    "quant_algo_supported",
    "quant_config",
    "scales_sane",
    "shapes_match_config",
    "tensors_complete",
    "vision_tower",
]


def predict(
    ckpt: Checkpoint,
    *,
    source: ModelOptSource,
    registry: Registry,
    vllm_version: str | None,
    scales: Mapping[str, Sequence[float]],
    unread: Mapping[str, str],
    samples: Mapping[str, WeightSample],
    archs: Iterable[Arch],
    archs_source: str,
    kv_naming: KvScaleNaming | None = None,
    gdn: tuple[GdnRule | None, GdnEnv] | None = None,
) -> list[Finding]:
    """The toolchain tier's findings for ``ckpt`` (what ``gpu.prediction-agrees`` holds
    against the real load); ``gdn``: the env's Gated-DeltaNet rule and facts, for
    ``modelopt.gdn-prefill-backend`` (a missing FlashInfer refuses the first prefill)."""
    archs = list(archs)
    extra = [gdn_prefill_backend(ckpt, gdn[0], archs, gdn[1])] if gdn is not None else []
    return [
        files_readable(ckpt),
        quant_config(ckpt),
        quant_algo_supported(ckpt, source, vllm_version),
        tensors_complete(ckpt, scales, samples, source, kv_naming, vllm_version),
        shapes_match_config(ckpt),
        scales_sane(ckpt, scales, unread),
        architecture_registered(ckpt, registry, vllm_version),
        min_capability(ckpt, source, vllm_version, archs, archs_source),
        vision_tower(ckpt, registry, vllm_version, archs),
    ] + extra
