"""Fixtures for the modelopt area: the checkpoints to judge and what the env's vLLM says.

``--modelopt-checkpoint PATH|REPO_ID`` (repeatable; ini ``modelopt_checkpoint``, registered
by the core plugin) names local directories or Hugging Face repo ids already in the local
hub cache (never downloaded here). Every ``modelopt.*`` check runs once per checkpoint,
with the directory name or repo id as the test id; with none given they skip saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from pytest_vllm_env.plugins import settings

if TYPE_CHECKING:  # the check library loads when a fixture runs, not at start-up
    from pytest_vllm_env.checks.gdn_prefill import GdnEnv
    from pytest_vllm_env.facts.env import PixiEnv
    from pytest_vllm_env.readers.checkpoint import Checkpoint
    from pytest_vllm_env.readers.vllm_gdn import GdnRule
    from pytest_vllm_env.readers.vllm_kv_naming import KvScaleNaming
    from pytest_vllm_env.readers.vllm_source import ModelOptSource, Registry
    from pytest_vllm_env.readers.weight_sample import WeightSample

NO_CHECKPOINT = "no --modelopt-checkpoint given"
T = TypeVar("T")


# This area's options and ini keys are declared at start by plugin.py (_add_area_options):
# the plugin itself is registered only by a run that uses it.


def pytest_configure(config: pytest.Config) -> None:
    # a bad value is a usage error at start, never a verdict on the env
    additional_config(config)


def additional_config(config: pytest.Config) -> dict:
    """``--vllm-additional-config`` as a dict (empty when not given); a value that is not a
    JSON object is a usage error naming the option."""
    text = settings.get(config, "vllm_additional_config")
    if not text:  # the check library loads only when the option is used
        return {}
    from pytest_vllm_env.readers.launch_args import parse_additional_config

    try:
        return parse_additional_config(text)
    except ValueError as exc:
        raise pytest.UsageError(f"--vllm-additional-config: {exc}") from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_checkpoints(metafunc, "modelopt_checkpoint")


def parametrize_checkpoints(metafunc: pytest.Metafunc, setting: str) -> None:
    """One session-scoped parameter per value of the checkpoint setting ``setting`` (the
    fixture of the same name), with the checkpoint's short name as the test id."""
    if setting not in metafunc.fixturenames or "gpu_checkpoint" in metafunc.fixturenames:
        return  # plugins/gpu.py parametrizes the gpu tests over both checkpoint settings
    specs = settings.get_list(metafunc.config, setting)
    if specs:
        from pytest_vllm_env.readers.checkpoint import short_name

        metafunc.parametrize(
            setting, specs, indirect=True, scope="session", ids=[short_name(s) for s in specs]
        )


_read: dict[tuple[str, Path], Checkpoint] = {}


def checkpoint_path(config: pytest.Config, spec: str, setting: str = "modelopt_checkpoint") -> Path:
    """Where one value of a checkpoint setting is (a relative path: by the one path rule,
    settings.base_dir; else a repo id in the local Hugging Face cache); raises
    ``CheckpointNotFound``."""
    from pytest_vllm_env.readers.checkpoint import resolve

    return resolve(spec, settings.base_dir(config, setting))[0]


def checkpoint_param(request: pytest.FixtureRequest, setting: str, not_given: str) -> Checkpoint:
    """The :class:`Checkpoint` of the parameter :func:`parametrize_checkpoints` gave, read
    once per (value, path) for every setting; skips with ``not_given`` when none was given."""
    from pytest_vllm_env.readers.checkpoint import Checkpoint, CheckpointNotFound, read_checkpoint

    spec = getattr(request, "param", None)
    if spec is None:
        pytest.skip(not_given)
    if spec == "":  # a gpu test of the other checkpoint setting (plugins/gpu.py: NOT_THIS)
        return None  # type: ignore[return-value]
    try:
        path = checkpoint_path(request.config, spec, setting)
    except CheckpointNotFound as exc:
        return Checkpoint.not_found(spec, str(exc))
    key = (spec, path)
    if key not in _read:
        _read[key] = read_checkpoint(spec, path)
    return _read[key]


@pytest.fixture(scope="session")
def modelopt_checkpoint(request: pytest.FixtureRequest) -> Checkpoint:
    """One ``--modelopt-checkpoint`` (a :class:`pytest_vllm_env.readers.checkpoint.Checkpoint`):
    config.json, hf_quant_config.json and every tensor's name, dtype, shape and byte range
    from the safetensors headers; no weight bytes read. A spec that names nothing gives a
    checkpoint whose only fact is the problem (``modelopt.files-readable`` reports it).
    Skips with "no --modelopt-checkpoint given" when none was given."""
    return checkpoint_param(request, "modelopt_checkpoint", NO_CHECKPOINT)


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


def _vllm_source_fact(
    vllm_env: PixiEnv,
    cache,
    key: str,
    files: Sequence[str],
    read: Callable[[list[Path | None]], Any],
    from_json: Callable[[Any], T],
    missing: Callable[[str], T],
    required: bool = True,
    hint: str = "",
) -> T:
    """One fact read from files of the env's own vLLM (``read`` gets their paths, None for
    an absent one, and returns something with ``to_json``), cached across workers and
    sessions by the files' stamps; ``missing(why)`` when vLLM, or a ``required`` file, is
    not there."""
    if vllm_env.dist("vllm") is None:
        return missing(f"vLLM is not installed in {vllm_env.prefix}")
    paths = [vllm_env.package_file("vllm", f) for f in files]
    absent = [f for f, p in zip(files, paths, strict=True) if p is None]
    if required and absent:
        return missing(
            f"vLLM {vllm_env.version_of('vllm')} in {vllm_env.prefix} has no {absent[0]}{hint}"
        )
    data = cache.get(key, lambda: read(paths).to_json(), [p for p in paths if p is not None])
    return from_json(data)


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

    return _vllm_source_fact(
        vllm_env,
        vllm_fact_cache,
        "vllm-modelopt-source",
        [MODELOPT_PY],
        lambda paths: parse_modelopt(_text(paths[0]), str(paths[0])),
        ModelOptSource.from_json,
        not_found,
        hint=" (too old for ModelOpt checkpoints?)",
    )


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

    return _vllm_source_fact(
        vllm_env,
        vllm_fact_cache,
        "vllm-kv-naming",
        [BASE_CONFIG_PY, MODELS_UTILS_PY, WEIGHT_UTILS_PY],
        lambda paths: parse(*(_text(p) if p is not None else None for p in paths)),
        KvScaleNaming.from_json,
        lambda why: KvScaleNaming("", None, missing=(why,)),
        required=False,  # each release keeps the rename in another of them
    )


@pytest.fixture(scope="session")
def vllm_model_registry(vllm_env: PixiEnv, vllm_fact_cache) -> Registry:
    """The architectures the env's vLLM registers (``vllm/model_executor/models/registry.py``
    read with ``ast``); ``.missing`` says why when they cannot be read."""
    from pytest_vllm_env.readers.vllm_source import REGISTRY_PY, Registry, parse_registry

    return _vllm_source_fact(
        vllm_env,
        vllm_fact_cache,
        "vllm-model-registry",
        [REGISTRY_PY],
        lambda paths: parse_registry(_text(paths[0]), str(paths[0])),
        Registry.from_json,
        lambda why: Registry("", missing=(why,)),
    )


@pytest.fixture(scope="session")
def vllm_gdn_rule(vllm_env: PixiEnv, vllm_fact_cache) -> GdnRule | None:
    """How the env's vLLM picks the Gated-DeltaNet prefill kernel of Qwen3-Next/Qwen3.5
    (``readers.vllm_gdn.read_gdn_tree``: its registry, model files, GDN layer and engine args
    read with ``ast``); None when vLLM is not installed. A rule it cannot read has kind
    ``"unreadable"`` and the check uses vLLM 0.26.0's."""
    from pytest_vllm_env.readers.vllm_gdn import (
        ARG_UTILS_PY,
        GDN_LAYER_PY,
        MODELS_DIR,
        REGISTRY_PY,
        GdnRule,
        read_gdn_tree,
    )

    dist = vllm_env.dist("vllm")
    if dist is None:
        return None
    root = dist.location
    deps = [root / p for p in (MODELS_DIR, REGISTRY_PY, GDN_LAYER_PY, ARG_UTILS_PY)]
    data = vllm_fact_cache.get("vllm-gdn-rule", lambda: read_gdn_tree(root).to_json(), deps)
    return GdnRule.from_json(data)


@pytest.fixture(scope="session")
def gdn_env(request: pytest.FixtureRequest, vllm_env: PixiEnv) -> GdnEnv:
    """What the Gated-DeltaNet decision needs from the env: vLLM's version and its
    flashinfer-python pin, the installed flashinfer-python (and whether it has
    ``flashinfer/gdn_prefill.py``), torch's CUDA (``torch/version.py``, else its ``+cuXYZ``),
    the CuteDSL kernel's packages, the request from --vllm-additional-config, and the fix
    lines in the env's own language."""
    from pytest_vllm_env import files
    from pytest_vllm_env.checks.gdn_prefill import (
        FLASHINFER_DISTS,
        SM90_DSL_PY,
        GdnEnv,
        cutedsl_missing,
        requirement_pin,
    )
    from pytest_vllm_env.facts import fixes
    from pytest_vllm_env.facts.binaries import torch_root
    from pytest_vllm_env.facts.env import requirement_of
    from pytest_vllm_env.readers.pixilock import cuda_of_local
    from pytest_vllm_env.readers.torch_version import read_torch_cuda_or_why

    vllm = vllm_env.dist("vllm")
    pin = requirement_pin(vllm.requires) if vllm else None
    fi = next((d for d in (vllm_env.dist(n) for n in FLASHINFER_DISTS) if d), None)
    has_gdn = sm90_dsl = None
    unreadable = ""
    if fi is not None and not getattr(vllm_env, "locked", None):
        # there or not, never opened: a FIFO or device there is unreadable, not absent
        gdn, dsl = fi.location / "flashinfer" / "gdn_prefill.py", fi.location / SM90_DSL_PY
        has_gdn, sm90_dsl = files.lexists(gdn), files.lexists(dsl)
        odd = [p for p in (gdn, dsl) if files.lexists(p) and not files.regular(p)]
        if odd:
            unreadable = f"{odd[0]}: cannot be read: {files.describe(odd[0])}"
    # with its extra ([cu13]), which the pin alone loses
    cutlass_req = requirement_of(vllm.requires, ("nvidia-cutlass-dsl",)) if vllm else None
    cutlass_pin = (str(cutlass_req.specifier) or None) if cutlass_req else None
    torch = vllm_env.version_of("torch")
    root = torch_root(vllm_env)
    torch_cuda, torch_cuda_error = read_torch_cuda_or_why(root) if root else (None, "")
    if torch_cuda is None and torch:
        torch_cuda = cuda_of_local(torch)  # 2.11.0+cu130 -> 13.0
    cute = cutedsl_missing(
        {d: vllm_env.dist(d) is not None for d in ("quack-kernels", "nvidia-cutlass-dsl")}
    )
    wanted = additional_config(request.config).get("gdn_prefill_backend")
    return GdnEnv(
        vllm=vllm.version if vllm else None,
        flashinfer=fi.version if fi else None,
        flashinfer_has_gdn=has_gdn,
        flashinfer_sm90_dsl=sm90_dsl,
        cutlass_dsl=vllm_env.dist("nvidia-cutlass-dsl") is not None,
        add_cutlass_dsl=fixes.add(
            vllm_env, fixes.Package("nvidia-cutlass-dsl", cutlass_pin or "", pypi=True)
        )
        + (f" (vLLM {vllm.version}'s Requires-Dist: {cutlass_req})" if cutlass_req else ""),
        vllm_flashinfer_pin=pin,
        torch_cuda=torch_cuda,
        torch_cuda_error=torch_cuda_error,
        flashinfer_unreadable=unreadable,
        reinstall_flashinfer=(
            "reinstall flashinfer-python: "
            + fixes.reinstall(vllm_env, fi.name if fi else "flashinfer-python", pypi=True)
        ),
        missing_cutedsl=cute,
        add_flashinfer=fixes.add(
            vllm_env,
            fixes.Package("flashinfer-python", pin or "", pypi=True),
            verb="pin" if fi else "add",
        ),
        add_cutedsl=fixes.add(vllm_env, *(fixes.Package(d, pypi=True) for d in cute)),
        requested=str(wanted) if wanted is not None else None,
        requested_from="--vllm-additional-config" if wanted is not None else "",
    )


def _text(path: Path) -> str:
    from pytest_vllm_env import files

    try:
        return files.read_text(path, files.SOURCE)  # a FIFO is refused, not waited on
    except OSError as exc:
        return f"<unreadable: {exc}"  # parses as an error: a clear skip, not a traceback
