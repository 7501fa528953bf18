"""Fixtures for the modelopt area: the checkpoints to judge and what the env's vLLM says.

``--modelopt-checkpoint PATH|REPO_ID`` (repeatable; ini ``modelopt_checkpoint``, registered
by the core plugin) names local directories or Hugging Face repo ids already in the local
hub cache (never downloaded here). Every ``modelopt.*`` check runs once per checkpoint,
with the directory name or repo id as the test id; with none given they skip saying so.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_vllm_env import settings

if TYPE_CHECKING:  # the check library loads when a fixture runs, not at start-up
    from pytest_vllm_env.facts.env import PixiEnv
    from pytest_vllm_env.facts.modelopt_load import WeightSample
    from pytest_vllm_env.readers.checkpoint import Checkpoint
    from pytest_vllm_env.readers.vllm_kv_naming import KvScaleNaming
    from pytest_vllm_env.readers.vllm_source import ModelOptSource, Registry

NO_CHECKPOINT = "no --modelopt-checkpoint given"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "modelopt_checkpoint" not in metafunc.fixturenames:
        return
    specs = settings.get_list(metafunc.config, "modelopt_checkpoint")
    if specs:
        from pytest_vllm_env.readers.checkpoint import short_name

        metafunc.parametrize(
            "modelopt_checkpoint",
            specs,
            indirect=True,
            scope="session",
            ids=[short_name(s) for s in specs],
        )


_read: dict[tuple[str, Path], Checkpoint] = {}


def checkpoint_path(config: pytest.Config, spec: str) -> Path:
    """Where one ``--modelopt-checkpoint`` value is (relative to the invocation dir from
    the command line, to the rootdir from an ini file); raises ``CheckpointNotFound``."""
    from pytest_vllm_env.plugin import state
    from pytest_vllm_env.readers.checkpoint import resolve

    return resolve(spec, state(config)._base_for("modelopt_checkpoint"))[0]


@pytest.fixture(scope="session")
def modelopt_checkpoint(request: pytest.FixtureRequest) -> Checkpoint:
    """One ``--modelopt-checkpoint`` (a :class:`pytest_vllm_env.readers.checkpoint.Checkpoint`):
    config.json, hf_quant_config.json and every tensor's name, dtype, shape and byte range
    from the safetensors headers; no weight bytes read. A spec that names nothing gives a
    checkpoint whose only fact is the problem (``modelopt.files-readable`` reports it).
    Skips with "no --modelopt-checkpoint given" when none was given."""
    from pytest_vllm_env.readers.checkpoint import Checkpoint, CheckpointNotFound, read_checkpoint

    spec = getattr(request, "param", None)
    if spec is None:
        pytest.skip(NO_CHECKPOINT)
    try:
        path = checkpoint_path(request.config, spec)
    except CheckpointNotFound as exc:
        return Checkpoint.not_found(spec, str(exc))
    key = (spec, path)
    if key not in _read:
        _read[key] = read_checkpoint(spec, path)
    return _read[key]


@pytest.fixture(scope="session")
def modelopt_scales(
    modelopt_checkpoint: Checkpoint,
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """The checkpoint's float scale tensors (``*.weight_scale``, ``input_scale``,
    ``weight_scale_2``, ``k_scale``, ``v_scale``): ``(values by name, unreadable by name)``.
    The only tensor bytes the suite reads."""
    from pytest_vllm_env.readers.checkpoint import read_scales

    if not modelopt_checkpoint.tensors_readable:
        return {}, {}
    return read_scales(modelopt_checkpoint)


@pytest.fixture(scope="session")
def modelopt_weight_samples(modelopt_checkpoint: Checkpoint) -> dict[str, WeightSample]:
    """Samples of the float-stored weights of modules that carry scales (a correct export
    has none): are their numbers FP8 values, dequantized weights, or out of FP8's range?
    ``{tensor name: WeightSample}``; at most 32 tensors, about 64k values each."""
    from pytest_vllm_env.readers.checkpoint import read_weight_samples

    if not modelopt_checkpoint.tensors_readable:
        return {}
    return read_weight_samples(modelopt_checkpoint)


@pytest.fixture(scope="session")
def vllm_modelopt_source(vllm_env: PixiEnv, vllm_fact_cache) -> ModelOptSource:
    """What the env's own ``vllm/model_executor/layers/quantization/modelopt.py`` accepts
    (``QUANT_ALGOS``, the rejection message, each config class's minimum capability),
    parsed with ``ast``, never imported. When vLLM or the file is missing, ``.missing``
    says so and the checks that need it skip."""
    from pytest_vllm_env.readers.vllm_source import (
        MODELOPT_PY,
        ModelOptSource,
        not_found,
        parse_modelopt,
    )

    if vllm_env.dist("vllm") is None:
        return not_found(f"vLLM is not installed in {vllm_env.prefix}")
    path = vllm_env.package_file("vllm", MODELOPT_PY)
    if path is None:
        return not_found(
            f"vLLM {vllm_env.version_of('vllm')} in {vllm_env.prefix} has no {MODELOPT_PY} "
            "(too old for ModelOpt checkpoints?)"
        )
    data = vllm_fact_cache.get(
        "vllm-modelopt-source",
        lambda: parse_modelopt(_text(path), str(path)).to_json(),
        [path],
    )
    return ModelOptSource.from_json(data)


@pytest.fixture(scope="session")
def vllm_kv_naming(vllm_env: PixiEnv, vllm_fact_cache) -> KvScaleNaming:
    """How the env's vLLM renames a checkpoint's KV-cache scales before they reach the
    attention layers (``vllm_kv_naming.parse``: its ``base_config.py``, ``models/utils.py``
    and ``weight_utils.py`` read with ``ast``); ``.missing`` says why when it cannot be read,
    and the checks then use vLLM 0.26.0's naming."""
    from pytest_vllm_env.readers.vllm_kv_naming import (
        BASE_CONFIG_PY,
        MODELS_UTILS_PY,
        WEIGHT_UTILS_PY,
        KvScaleNaming,
        parse,
    )

    if vllm_env.dist("vllm") is None:
        return KvScaleNaming("", None, missing=(f"vLLM is not installed in {vllm_env.prefix}",))
    paths = [
        vllm_env.package_file("vllm", p) for p in (BASE_CONFIG_PY, MODELS_UTILS_PY, WEIGHT_UTILS_PY)
    ]
    present = [p for p in paths if p is not None]
    data = vllm_fact_cache.get(
        "vllm-kv-naming",
        lambda: parse(*(_text(p) if p is not None else None for p in paths)).to_json(),
        present,
    )
    return KvScaleNaming.from_json(data)


@pytest.fixture(scope="session")
def vllm_model_registry(vllm_env: PixiEnv, vllm_fact_cache) -> Registry:
    """The architectures the env's vLLM registers (``vllm/model_executor/models/registry.py``
    read with ``ast``); ``.missing`` says why when they cannot be read."""
    from pytest_vllm_env.readers.vllm_source import REGISTRY_PY, Registry, parse_registry

    if vllm_env.dist("vllm") is None:
        return Registry("", missing=(f"vLLM is not installed in {vllm_env.prefix}",))
    path = vllm_env.package_file("vllm", REGISTRY_PY)
    if path is None:
        return Registry(
            "",
            missing=(
                f"vLLM {vllm_env.version_of('vllm')} in {vllm_env.prefix} has no {REGISTRY_PY}",
            ),
        )
    data = vllm_fact_cache.get(
        "vllm-model-registry", lambda: parse_registry(_text(path), str(path)).to_json(), [path]
    )
    return Registry.from_json(data)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"<unreadable: {exc}"  # parses as an error: a clear skip, not a traceback
