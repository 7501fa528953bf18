"""Fixtures for the quant area: quantized checkpoints of any format vLLM loads
(compressed-tensors, Hugging Face fine-grained FP8, MXFP4, ModelOpt) and what the env's vLLM
says about them.

``--vllm-checkpoint PATH|REPO_ID`` (repeatable; ini ``vllm_checkpoint``) names local
directories or Hugging Face repo ids already in the local hub cache (never downloaded here).
Every ``quant.*`` check runs once per checkpoint, with the folder name or repo id as the test
id; with none given they skip saying so. ``--modelopt-checkpoint`` keeps its ``modelopt.*``
checks; a ModelOpt checkpoint given here gets the same verdicts under ``quant.*`` ids.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pytest_vllm_env.plugins import settings

if TYPE_CHECKING:  # the check library loads when a fixture runs, not at start-up
    from pytest_vllm_env.facts.env import PixiEnv
    from pytest_vllm_env.facts.quant_plan import QuantPlan
    from pytest_vllm_env.readers.checkpoint import Checkpoint
    from pytest_vllm_env.readers.vllm_quant_source import QuantSource

NO_CHECKPOINT = "no --vllm-checkpoint given"
# importable packages the kernel choosers ask for (has_flashinfer(), has_deep_gemm(), ...):
# the kernel tables' ``needs`` -> the distributions that provide them
PACKAGES = {
    "flashinfer": ("flashinfer-python",),
    "deep_gemm": ("deep-gemm", "deep_gemm"),
    "triton_kernels": ("triton-kernels", "triton_kernels"),
    "conch": ("conch-triton-kernels",),
    "humming": ("humming-kernels", "humming"),  # a dependency of vLLM 0.26.0 and 0.33.0
    "b12x": ("b12x",),
}
# copies vLLM's own wheel ships (utils/import_utils.py: has_deep_gemm() falls back to
# vllm.third_party.deep_gemm; has_triton_kernels() to vllm.third_party.triton_kernels)
VENDORED = {
    "deep_gemm": "vllm/third_party/deep_gemm/__init__.py",
    "triton_kernels": "vllm/third_party/triton_kernels/__init__.py",
}


# This area's options and ini keys are declared at start by plugin.py (_add_area_options):
# the plugin itself is registered only by a run that uses it.


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    from pytest_vllm_env.plugins.modelopt import parametrize_checkpoints

    parametrize_checkpoints(metafunc, "vllm_checkpoint")


@pytest.fixture(scope="session")
def vllm_checkpoint(request: pytest.FixtureRequest) -> Checkpoint:
    """One ``--vllm-checkpoint`` (a :class:`pytest_vllm_env.readers.checkpoint.Checkpoint`,
    header-only); a spec that names nothing gives a checkpoint whose only fact is the
    problem. Skips with "no --vllm-checkpoint given" when none was given."""
    from pytest_vllm_env.plugins.modelopt import checkpoint_param

    return checkpoint_param(request, "vllm_checkpoint", NO_CHECKPOINT)


@pytest.fixture(scope="session")
def vllm_checkpoint_specs(request: pytest.FixtureRequest) -> list[str]:
    """The raw ``--vllm-checkpoint`` values: local directories or Hugging Face repo ids."""
    return settings.get_list(request.config, "vllm_checkpoint")


@pytest.fixture(scope="session")
def vllm_quant_source(vllm_env: PixiEnv, vllm_fact_cache) -> QuantSource:
    """What the env's vLLM says about quantized formats (``readers.vllm_quant_source``: its
    quantization methods, the actorders compressed-tensors refuses, its kernel priority
    lists), read with ``ast``; ``.missing`` says what could not be read."""
    from pytest_vllm_env.plugins.modelopt import _text, _vllm_source_fact
    from pytest_vllm_env.readers.vllm_quant_source import (
        CT_PY,
        KERNELS_PY,
        QUANT_INIT_PY,
        QuantSource,
        parse,
    )

    return _vllm_source_fact(
        vllm_env,
        vllm_fact_cache,
        "vllm-quant-source",
        [QUANT_INIT_PY, CT_PY, KERNELS_PY],
        lambda paths: parse(*(_text(p) if p is not None else None for p in paths)),
        QuantSource.from_json,
        lambda why: QuantSource(missing=(why,)),
        required=False,
    )


@pytest.fixture(scope="session")
def vllm_mp_kernel_rules(vllm_env: PixiEnv, vllm_fact_cache):
    """The mixed-precision kernels' shape rules as the env's own vLLM writes them
    (``readers.vllm_mp_kernels``: Marlin's tile and group rules, Machete's block, Humming's
    priority), read with ``ast``; None where vLLM is not installed."""
    from pytest_vllm_env.plugins.modelopt import _text, _vllm_source_fact
    from pytest_vllm_env.readers.vllm_mp_kernels import FILES, MpKernelRules, parse

    return _vllm_source_fact(
        vllm_env,
        vllm_fact_cache,
        "vllm-mp-kernel-rules",
        list(FILES),
        lambda paths: parse(*(_text(p) if p is not None else None for p in paths)),
        MpKernelRules.from_json,
        lambda why: None,
        required=False,
    )


@pytest.fixture(scope="session")
def vllm_quant_packages(vllm_env: PixiEnv, vllm_triton_kernels) -> frozenset[str]:
    """The optional kernel packages the env has (FlashInfer, DeepGEMM, triton_kernels, ...),
    as the kernel tables name them: installed, or shipped inside the vLLM wheel; for
    triton_kernels, any copy ``has_triton_kernels()`` finds (a ``triton_kernels`` package on
    the path even without distribution metadata)."""
    found = {
        name for name, dists in PACKAGES.items() if any(vllm_env.dist(d) is not None for d in dists)
    }
    if vllm_env.dist("vllm") is not None:
        found |= {n for n, f in VENDORED.items() if vllm_env.package_file("vllm", f) is not None}
    if vllm_triton_kernels.where:
        found.add("triton_kernels")
    return frozenset(found)


@pytest.fixture(scope="session")
def vllm_triton_kernels(vllm_env: PixiEnv):
    """The ``triton_kernels`` the env's vLLM imports (a separately installed one wins over
    the copy vendored in the wheel: ``utils/import_utils.py:import_triton_kernels``) and
    what it does on Hopper, read from its own files (``facts.triton_kernels_copy``)."""
    from pytest_vllm_env.facts.triton_kernels_copy import imported_copy

    return imported_copy(vllm_env)


@pytest.fixture(scope="session")
def vllm_checkpoint_plan(
    vllm_checkpoint: Checkpoint, vllm_quant_source: QuantSource, request: pytest.FixtureRequest
) -> QuantPlan:
    """Which scheme the env's vLLM builds for each Linear of the checkpoint
    (``facts.quant_plan``); a ModelOpt checkpoint's MIXED_PRECISION layers by the per-layer
    algorithms the env's own modelopt.py serves (else its release's recorded set, else an
    assumption the plan states: ``facts.quant_release``)."""
    from pytest_vllm_env.facts.quant_plan import QuantPlan, plan
    from pytest_vllm_env.facts.quant_release import mixed_served

    if not vllm_checkpoint.quant_files_readable:
        return QuantPlan(None, None)
    served = None
    block = vllm_checkpoint.quantization_config or {}
    method = str(block.get("quant_method", "")).lower()
    if method.startswith("modelopt") or (not block and vllm_checkpoint.hf_quant_config):
        source = request.getfixturevalue("vllm_modelopt_source")
        env = request.getfixturevalue("vllm_env")
        served = mixed_served(source.mixed_linear_algos, env.version_of("vllm"))
    return plan(vllm_checkpoint, vllm_quant_source.refused_actorders, served)


@pytest.fixture(scope="session")
def vllm_checkpoint_scales(
    vllm_checkpoint: Checkpoint,
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """The checkpoint's float scale tensors: ``(values by name, unreadable by name)``."""
    from pytest_vllm_env.readers.checkpoint import read_scales

    if not vllm_checkpoint.tensors_readable:
        return {}, {}
    return read_scales(vllm_checkpoint)


@pytest.fixture(scope="session")
def vllm_checkpoint_samples(vllm_checkpoint: Checkpoint, vllm_checkpoint_plan: QuantPlan):
    """For a ModelOpt checkpoint, the samples of float-stored weights that
    ``modelopt.tensors-complete`` reads (empty for other formats)."""
    from pytest_vllm_env.readers.checkpoint import read_weight_samples

    if vllm_checkpoint_plan.producer != "modelopt" or not vllm_checkpoint.tensors_readable:
        return {}
    return read_weight_samples(vllm_checkpoint)
