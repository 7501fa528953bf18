"""Fixtures for the checkpoint and launch areas (issue 22): each ``--modelopt-checkpoint`` as
the env's vLLM will load it, under the launch arguments the user gives it.

Settings: ``--tensor-parallel-size=N`` (ini ``tensor_parallel_size``), ``--vllm-quantization=
NAME`` (ini ``vllm_quantization``), ``--vllm-serve-args=ARGS|@FILE`` (ini ``vllm_serve_args``:
a ``vllm serve`` command line, or ``@`` a file holding one, a shell script or recipe, vLLM's
``--config`` YAML or a Python ``LLM(...)`` recipe; the explicit options win over it), and
``--vllm-load-probe=meta|load`` (ini ``vllm_load_probe``; opt-in: runs the env's own vLLM on
the CPU, ``probes/vllm_load_weights.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_vllm_env.plugins import settings

if TYPE_CHECKING:  # the check library loads when a fixture runs, not at start-up
    from pytest_vllm_env.facts.env import PixiEnv
    from pytest_vllm_env.readers.checkpoint import Checkpoint

PROBE_MODES = ("meta", "load")
DEFAULT_PROBE_TIMEOUT = 900.0


@dataclass(frozen=True)
class Launch:
    """The launch arguments that change a load, and where each came from."""

    tensor_parallel_size: int = 1
    quantization: str | None = None
    tp_from: str = "default (1)"
    q_from: str = "not given"
    moe_backend: str | None = None  # --moe-backend, read from --vllm-serve-args
    moe_from: str = "not given"
    # attention_config.flash_attn_version from --vllm-serve-args (driver.ptx-jit: FA2 on Hopper)
    flash_attn_version: int | None = None
    fa_from: str = ""
    # --kv-cache-dtype from --vllm-serve-args (checkpoint.attention-backend)
    kv_cache_dtype: str | None = None
    kv_from: str = "not given"


# This area's options and ini keys are declared at start by plugin.py (_add_area_options):
# the plugin itself is registered only by a run that uses it.


def pytest_configure(config: pytest.Config) -> None:
    # a bad value is a usage error at start, never a verdict on the env; nothing is read
    # (or imported) when none of these options is used
    if any(settings.get(config, k) for k in ("tensor_parallel_size", "vllm_serve_args")):
        launch(config)
    mode = settings.get(config, "vllm_load_probe")
    if mode and mode not in PROBE_MODES:
        raise pytest.UsageError(
            f"--vllm-load-probe: {mode!r} is not one of {', '.join(PROBE_MODES)}"
        )


# Kept on the config, not by id(config): an in-process run (pytester) gets a new config whose
# id may be a freed one's, and must not inherit its launch arguments or load plans.
LAUNCH = pytest.StashKey[Launch]()
PLANS = pytest.StashKey[dict]()


def launch(config: pytest.Config) -> Launch:
    """The launch arguments from the options and ``--vllm-serve-args``; usage errors name
    the option."""
    if LAUNCH in config.stash:
        return config.stash[LAUNCH]
    from pytest_vllm_env.readers.serve_args import ServeArgs, ServeArgsError, read

    served = ServeArgs()
    spec = settings.get(config, "vllm_serve_args")
    if spec:
        try:
            served = read(spec, _base(config, "vllm_serve_args"))
        except ServeArgsError as exc:
            raise pytest.UsageError(f"--vllm-serve-args: {exc}") from None
    tp, tp_from = served.tensor_parallel_size or 1, served.tp_from or "default (1)"
    if settings.get(config, "tensor_parallel_size"):
        # a whole number in settings.NUMBER_RANGES, else a usage error naming the range
        tp = int(settings.get_number(config, "tensor_parallel_size", 1))
        tp_from = "--tensor-parallel-size"
    q = settings.get(config, "vllm_quantization")
    q_from = "--vllm-quantization" if q else served.q_from or "not given"
    moe_from = served.moe_from or "not given"
    result = Launch(
        tp,
        q or served.quantization,
        tp_from,
        q_from,
        served.moe_backend,
        moe_from,
        served.flash_attn_version,
        served.fa_from,
        served.kv_cache_dtype,
        served.kv_from or "not given",
    )
    config.stash[LAUNCH] = result
    return result


def _base(config: pytest.Config, ini: str) -> Path:
    """The one path rule (plugin.SessionState._base_for): relative to the invocation dir
    from the command line, to the rootdir from an ini file."""
    if config.getoption(ini, default=None):
        return Path(str(config.invocation_params.dir))
    return Path(str(config.rootpath))


@pytest.fixture(scope="session")
def vllm_launch(request: pytest.FixtureRequest) -> Launch:
    """The launch arguments judged (``tensor_parallel_size``, ``quantization``) and where
    each came from: ``--tensor-parallel-size``, ``--vllm-quantization``, ``--vllm-serve-args``."""
    return launch(request.config)


@pytest.fixture(scope="session")
def vllm_loader_facts(vllm_env: PixiEnv, vllm_fact_cache):
    """``facts_for(architecture)``: what the env's own vLLM source says about loading it
    (``facts/vllm_loader_facts.py``: the loader rules, the model class, KV-scale renames,
    ModelOpt's config classes; read with ``ast``, cached by the files' stamps); None when vLLM
    is not installed."""
    from pytest_vllm_env.facts import vllm_loader_facts as vlf
    from pytest_vllm_env.readers import vllm_loader, vllm_model_file

    dist = vllm_env.dist("vllm")
    if dist is None:
        return lambda arch: None
    root = dist.location
    # the model file, its layers and the transformers config class an architecture's facts
    # come from are found while reading: their stamps cannot be listed first, so the
    # installs they come with are (a reinstall or upgrade rewrites the dist-info RECORD)
    installs = [d.path / "RECORD" for d in (dist, vllm_env.dist("transformers")) if d]
    deps = [root / p for p in (*vllm_loader.FILES, vllm_model_file.REGISTRY_PY)] + installs
    version = dist.version
    seen: dict[str, Any] = {}

    def facts_for(arch: str | None):
        archs = [arch] if arch else []
        key = f"vllm-loader-facts-{arch}"
        if key not in seen:
            data = vllm_fact_cache.get(
                key,
                lambda: vlf.read(root, archs, version).to_json(),
                [d for d in deps if d.exists()],
            )
            seen[key] = vlf.VllmLoaderFacts.from_json(data)
        return seen[key]

    return facts_for


@dataclass
class CheckpointLoad:
    """One checkpoint as the env's vLLM loads it, under the launch arguments."""

    label: str
    vllm: str | None
    plan: Any = None  # facts.vllm_load_plan.LoadPlan
    split: Any = None  # facts.vllm_tp.TpSplit
    best_tp: int = 1
    samples: Any = None
    scales: Any = None
    launch: Launch | None = None
    why_not: str | None = None  # why there is no plan (vLLM missing, files unreadable)
    unreadable: bool = False  # why_not is a file there that cannot be read: an error

    def judged(self, check_id: str, judge: Callable[[CheckpointLoad], Any]) -> Any:
        """``judge(self)``'s finding, or, where no load plan could be made, why, under
        ``check_id``: an error for a vLLM source file there and unreadable, else a skip (the
        checkpoint.* checks and their quant.* twins all answer so)."""
        from pytest_vllm_env.findings import error, skipped

        if self.plan is None and self.unreadable:
            return error(check_id, self.why_not, "reinstall vllm (its files are damaged)")
        if self.plan is None:
            return skipped(check_id, self.why_not or f"{self.label}: no load plan")
        return judge(self)


@pytest.fixture(scope="session")
def checkpoint_load(
    request: pytest.FixtureRequest,
    modelopt_checkpoint: Checkpoint,
    modelopt_scales,
    modelopt_weight_samples,
    vllm_env: PixiEnv,
    vllm_launch: Launch,
    vllm_loader_facts,
) -> CheckpointLoad:
    """The :class:`CheckpointLoad` of one ``--modelopt-checkpoint``: the quantization decision,
    the load plan (every parameter and tensor), the tensor-parallel split."""
    from pytest_vllm_env.facts.vllm_load_plan import plan
    from pytest_vllm_env.facts.vllm_quant_decision import decide
    from pytest_vllm_env.facts.vllm_tp import largest_working, split
    from pytest_vllm_env.readers.shard_index import read_layout, read_samples

    ckpt = modelopt_checkpoint
    version = vllm_env.version_of("vllm")
    key = (
        str(vllm_env.prefix),
        str(ckpt.path),
        vllm_launch.tensor_parallel_size,
        vllm_launch.quantization,
    )
    plans = request.config.stash.setdefault(PLANS, {})
    if key in plans:
        return plans[key]
    out = CheckpointLoad(ckpt.label, version, launch=vllm_launch)
    got = _loader_facts(out, ckpt, vllm_env, vllm_loader_facts, "modelopt.files-readable")
    if got is not None:
        facts, arch = got
        decision = decide(
            ckpt.config,
            ckpt.hf_quant_config,
            vllm_launch.quantization,
            facts.loader,
            facts.modelopt,
            version,
        )
        out.plan = plan(
            read_layout(ckpt.path),
            ckpt.config or {},
            decision,
            facts.models.get(arch) if arch else None,
            facts.loader,
            facts.kv,
            facts.modelopt,
            samples=_safe(read_samples),
        )
        out.split = split(out.plan, vllm_launch.tensor_parallel_size)
        out.best_tp = largest_working(out.plan)
        out.samples, out.scales = modelopt_weight_samples, modelopt_scales[0]
    plans[key] = out
    return out


def _loader_facts(out: CheckpointLoad, ckpt, vllm_env: PixiEnv, vllm_loader_facts, see: str):
    """(the env's vLLM loader facts, the checkpoint's architecture), or None with
    ``out.why_not`` (and ``out.unreadable``) saying why the load cannot be planned: its
    config.json unreadable (``see`` names the check that reports it), no vLLM, or vLLM's
    source unreadable."""
    if not ckpt.config_readable:
        out.why_not = f"{ckpt.label}: its config.json cannot be read (see {see})"
        return None
    if vllm_env.dist("vllm") is None:
        out.why_not = f"vLLM is not installed in {vllm_env.prefix}"
        return None
    archs = (ckpt.config or {}).get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    facts = vllm_loader_facts(arch)
    if facts.unreadable:
        out.why_not = f"the env's vLLM source cannot be read: {facts.unreadable[0]}"
        out.unreadable = True
        return None
    return facts, arch


def _safe(read):
    def sample(info):
        try:
            return read(info)
        except OSError:
            return None

    return sample


@pytest.fixture(scope="session")
def vllm_checkpoint_load(
    request: pytest.FixtureRequest,
    vllm_checkpoint: Checkpoint,
    vllm_checkpoint_plan,
    vllm_env: PixiEnv,
    vllm_launch: Launch,
    vllm_loader_facts,
) -> CheckpointLoad:
    """The :class:`CheckpointLoad` of one ``--vllm-checkpoint`` (any format): the quantization
    decision (``ModelConfig._verify_quantization`` with every override vLLM asks), the files
    vLLM reads (``plan`` has no parameters: the model's parameters under a non-ModelOpt scheme
    are the quant.* checks'), and the tensor-parallel split by each Linear's scheme
    (``facts.vllm_tp.format_split``)."""
    from pytest_vllm_env.facts.vllm_load_plan import plan
    from pytest_vllm_env.facts.vllm_quant_decision import decide
    from pytest_vllm_env.facts.vllm_tp import format_schemes, format_split, largest_format_working
    from pytest_vllm_env.readers.shard_index import read_layout

    ckpt = vllm_checkpoint
    key = ("any-format", str(vllm_env.prefix), str(ckpt.path), vllm_launch.tensor_parallel_size)
    key += (vllm_launch.quantization,)
    plans = request.config.stash.setdefault(PLANS, {})
    if key in plans:
        return plans[key]
    out = CheckpointLoad(ckpt.label, vllm_env.version_of("vllm"), launch=vllm_launch)
    got = _loader_facts(out, ckpt, vllm_env, vllm_loader_facts, "quant.config")
    if got is not None:
        facts, _ = got
        decision = decide(
            ckpt.config, ckpt.hf_quant_config, vllm_launch.quantization, facts.loader,
            facts.modelopt,
        )  # fmt: skip
        # files only (no model class): which shards vLLM reads, refuses, never sees
        out.plan = plan(
            read_layout(ckpt.path), ckpt.config or {}, decision, None, facts.loader,
            facts.kv, facts.modelopt,
        )  # fmt: skip
        schemes = format_schemes(vllm_checkpoint_plan.schemes, vllm_checkpoint_plan.method)
        config = ckpt.config or {}
        # whether the env's vLLM refines block-FP8 experts' blocks (readers.vllm_quant_source)
        refine = request.getfixturevalue("vllm_quant_source").moe_fp8_refine_min
        out.split = format_split(config, schemes, vllm_launch.tensor_parallel_size, refine)
        out.best_tp = largest_format_working(config, schemes, moe_refine=refine)
    plans[key] = out
    return out


@pytest.fixture(scope="session")
def checkpoint_load_probe(
    request: pytest.FixtureRequest,
    modelopt_checkpoint: Checkpoint,
    vllm_env: PixiEnv,
    vllm_launch: Launch,
):
    """What the env's own vLLM did with the checkpoint on the CPU (``--vllm-load-probe``):
    the probe's JSON, or None when not asked for. Runs the env's code: opt-in."""
    mode = settings.get(request.config, "vllm_load_probe")
    if not mode:
        return None
    from pytest_vllm_env.runners import gpu

    args = [
        str(modelopt_checkpoint.path),
        "--mode",
        mode,
        "--tp",
        str(vllm_launch.tensor_parallel_size),
    ]
    if vllm_launch.quantization:
        args += ["--quantization", vllm_launch.quantization]
    timeout = settings.get_number(request.config, "vllm_probe_timeout", DEFAULT_PROBE_TIMEOUT)
    return gpu.run_probe(
        vllm_env.python, "vllm_load_weights.py", args, env=vllm_env.environ(), timeout=timeout
    )


@pytest.fixture(scope="session")
def vllm_attention(request: pytest.FixtureRequest, vllm_env: PixiEnv):
    """The env's vLLM attention backends as ``checkpoint.attention-backend`` judges them
    (:class:`pytest_vllm_env.facts.vllm_attention.VllmAttention`), with the FA version the
    launch or the env forces (:func:`pytest_vllm_env.facts.fa_version.read`) and, per import
    name the backends need and the env lacks, the fix that installs it in the env's language."""
    from pytest_vllm_env.checks.attention_backend import DIST_OF
    from pytest_vllm_env.facts import fa_version, fixes, vllm_attention

    facts = vllm_attention.read(vllm_env)
    given = launch(request.config)
    forced = fa_version.read(vllm_env, given.flash_attn_version, given.fa_from)
    install = {
        m: fixes.add(vllm_env, fixes.Package(DIST_OF.get(m, m), pypi=True)) for m in facts.absent
    }
    return facts, forced, install


@pytest.fixture
def attention_backend_finding(
    modelopt_checkpoint: Checkpoint,
    vllm_attention,
    vllm_env: PixiEnv,
    vllm_launch: Launch,
    cuda_archs,
):
    """``checkpoint.attention-backend``'s finding for this checkpoint under the launch's
    ``--kv-cache-dtype``: the conformance check reports it, and ``gpu.prediction-agrees``
    holds it against the real load (which runs with the same ``--kv-cache-dtype``)."""
    return attention_finding(
        modelopt_checkpoint, vllm_attention, vllm_env, vllm_launch, cuda_archs,
        "modelopt.files-readable",
    )  # fmt: skip


def attention_finding(
    ckpt: Checkpoint, vllm_attention, vllm_env: PixiEnv, vllm_launch: Launch, cuda_archs, see: str
):
    """``checkpoint.attention-backend``'s finding for one checkpoint of any format (its
    config.json and hf_quant_config.json say the KV cache) under the launch's
    ``--kv-cache-dtype``; ``see`` names the check that reports an unreadable config.json."""
    from pytest_vllm_env.checks.attention_backend import CID, attention_backend
    from pytest_vllm_env.findings import error, skipped

    facts, forced, install = vllm_attention
    if not ckpt.config_readable:
        why = f"its config.json cannot be read (see {see})"
        return skipped(CID, f"{ckpt.label}: {why}")
    if facts.backends is None and facts.why.startswith("vLLM is not installed"):
        return skipped(CID, facts.why)
    if facts.backends is None:
        return error(CID, facts.why, "reinstall vllm (its files are damaged)")
    return attention_backend(
        ckpt.config,
        ckpt.hf_quant_config,
        facts.backends,
        cuda_archs,
        ckpt.label,
        vllm_env.version_of("vllm"),
        launch_kv=vllm_launch.kv_cache_dtype,
        launch_from=vllm_launch.kv_from,
        absent=facts.absent,
        fa_forced=forced.forced,
        fa_libs=facts.fa_libs,
        install=install,
    )
