"""Fixtures and settings for the gpu, build and buildlog tiers.

The gpu tier loads each ``--modelopt-checkpoint`` in vLLM once (a second fresh process only
with ``--vllm-fresh-process``) and each ``--reference-checkpoint`` once; loads are cached
per session and path, so every gpu check of one checkpoint judges the same load.

Loads start right after collection, in background threads, beside the torch probe; with
``--vllm-parallel-loads N`` up to N checkpoints load at once on one GPU, each with ``0.8 / N``
of its memory and a fixed 256 MiB KV cache (vLLM then skips its memory profiling, which the
other loads would disturb). Not through xdist: its ``--dist loadgroup`` does not group on
pytest 9.2 (pytest-dev/pytest-xdist#1386), and each worker would load every checkpoint.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_vllm_env import defaults
from pytest_vllm_env.plugins import settings

if TYPE_CHECKING:  # the check library loads when a fixture runs, not at start-up
    from pytest_vllm_env.facts.env import PixiEnv
    from pytest_vllm_env.facts.gpu_probe import BinaryImages, ProbeResult
    from pytest_vllm_env.readers.checkpoint import Checkpoint
    from pytest_vllm_env.tables.archs import Arch


# This area's options and ini keys are declared at start by plugin.py (_add_area_options):
# the plugin itself is registered only by a run that uses it.


def _probe_timeout(config: pytest.Config) -> float:
    return settings.get_number(config, "vllm_probe_timeout", defaults.PROBE_TIMEOUT)


def pytest_configure(config: pytest.Config) -> None:
    # a bad number is a usage error at start, not in the first test
    _probe_timeout(config)
    settings.get_number(config, "vllm_logprob_tolerance", defaults.LOGPROB_TOL)
    settings.get_number(config, "vllm_perplexity_exponent", defaults.PERPLEXITY_EXPONENT)
    _parallel_loads(config)


def _parallel_loads(config: pytest.Config) -> int:
    value = settings.get_number(config, "vllm_parallel_loads", 1)
    if value < 1 or value != int(value):
        raise pytest.UsageError(f"--vllm-parallel-loads: {value:g} is not a whole number >= 1")
    return int(value)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the torch probe and the selected checkpoints' vLLM loads in background threads
    as soon as collection ends (one env, no xdist): the torch probe then runs beside the
    first load, and the gpu tier costs about one plain load per checkpoint."""
    config = session.config
    if hasattr(config, "workerinput") or config.option.collectonly:
        return
    items = [i for i in session.items if i.get_closest_marker("gpu")]
    if not items:
        return
    from pytest_vllm_env.facts.env import EnvError
    from pytest_vllm_env.plugins.session import state, static_mode, visible_gpu_archs

    if static_mode(config):
        return  # the gpu tier is skipped: nothing of the env's Python runs
    st = state(config)
    try:
        specs = st.specs()
        env = st.env(specs[0]) if len(specs) == 1 else None
    except EnvError:
        return
    if env is None or env.python is None:
        return
    torch_future: Future[ProbeResult] = Future()
    config.stash[EARLY_TORCH] = (env.prefix, torch_future)
    _background(lambda: torch_future.set_result(_torch_probe(config, env)))
    wanted = _checkpoints_to_load(config, items)
    if wanted and env.dist("vllm") is not None and visible_gpu_archs():
        n = 2 if config.getoption("vllm_fresh_process", default=False) else 1
        timeout = _probe_timeout(config)
        cache = _run_cache(config)
        parallel = _parallel_loads(config)
        queue = list(wanted)
        lock = threading.Lock()

        def loads() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    path, count, launched = queue.pop(0)
                vllm_runs(
                    env,
                    path,
                    None,
                    timeout,
                    n=count or n,
                    cache=cache,
                    parallel=parallel,
                    extra=probe_settings(config) | (launch_settings(config) if launched else {}),
                )

        for _ in range(min(parallel, len(wanted))):
            _background(loads)


def _background(work) -> None:
    def guarded() -> None:
        try:
            work()
        except Exception:  # the fixtures then run the probe themselves and report
            pass

    threading.Thread(target=guarded, name="vllm-env-probe", daemon=True).start()


def _checkpoints_to_load(
    config: pytest.Config, items: list[pytest.Item]
) -> list[tuple[str, int, bool]]:
    """(path, count, under the launch's engine arguments) of each checkpoint the selected gpu
    tests load, in order, then the references (count 1, as they are); count 0 means "as
    --vllm-fresh-process says"."""
    from pytest_vllm_env.plugins.modelopt import checkpoint_path
    from pytest_vllm_env.readers.checkpoint import CheckpointNotFound

    out: list[tuple[str, int, bool]] = []
    seen: set[str] = set()
    for item in items:
        spec = getattr(getattr(item, "callspec", None), "params", {}).get("modelopt_checkpoint")
        if spec is None or "vllm_checkpoint_runs" not in getattr(item, "fixturenames", ()):
            continue
        try:
            path = str(checkpoint_path(config, spec))
        except CheckpointNotFound:
            continue
        if path not in seen:
            seen.add(path)
            out.append((path, 0, True))
    if out:
        out += [(ref, 1, False) for ref in _reference_paths(config)]
    return out


def _reference_paths(config: pytest.Config) -> list[str]:
    return [str(p) for p in settings.get_paths(config, "reference_checkpoint")]


@pytest.fixture(scope="session")
def gpu_torch_probe(request: pytest.FixtureRequest, vllm_env: PixiEnv) -> ProbeResult:
    """The target env's torch probed in a subprocess (version, CUDA, devices, a matmul, and
    an FP8 ``torch._scaled_mm`` on GPUs of compute capability >= 8.9). Started as soon as
    collection ends when gpu tests are selected, beside the first vLLM load."""
    early = request.config.stash.get(EARLY_TORCH, None)
    if early is not None and early[0] == vllm_env.prefix:
        return early[1].result()
    return _torch_probe(request.config, vllm_env)


def _torch_probe(config: pytest.Config, env: PixiEnv) -> ProbeResult:
    from pytest_vllm_env.runners import gpu

    return gpu.run_probe(
        env.python,
        "torch_check.py",
        env=env.environ(),
        timeout=min(_probe_timeout(config), 300),
    )


@pytest.fixture(scope="session")
def visible_gpus(gpu_torch_probe: ProbeResult) -> list[tuple[str, Arch]]:
    """``(name, compute capability)`` of each visible GPU: from the torch probe, else from
    ``nvidia-smi --query-gpu=compute_cap``; empty without a GPU."""
    from pytest_vllm_env.facts import gpu_probe
    from pytest_vllm_env.plugins.session import visible_gpu_archs

    if gpu_torch_probe.data.get("devices"):
        return gpu_probe.visible_gpus(gpu_torch_probe)
    return gpu_probe.visible_gpus(gpu_torch_probe, visible_gpu_archs())


@pytest.fixture(scope="session")
def gpu_binaries(vllm_env: PixiEnv, extension_paths: list[Path]) -> list[BinaryImages]:
    """The GPU images of torch's ``libtorch_cuda.so`` and of each extension in
    ``extension_paths`` (fatbin headers only, never loaded)."""
    from pytest_vllm_env.checks.coverage_arch import label_of
    from pytest_vllm_env.facts.binaries import torch_root
    from pytest_vllm_env.facts.gpu_probe import BinaryImages
    from pytest_vllm_env.readers import fatbin
    from pytest_vllm_env.readers.elf import ElfError

    root = torch_root(vllm_env)
    paths = [root / "lib" / "libtorch_cuda.so"] if root else []
    out = []
    for path in [p for p in paths if p.is_file()] + list(extension_paths):
        try:
            out.append(BinaryImages(label_of(path), fatbin.read_images(path)))
        except ElfError as exc:
            out.append(BinaryImages(label_of(path), None, str(exc)))
    return out


@pytest.fixture(scope="session")
def reference_checkpoints(request: pytest.FixtureRequest) -> list[str]:
    """Checkpoint dirs from --reference-checkpoint (settings.resolve_path: the one path rule)."""
    return _reference_paths(request.config)


@pytest.fixture(scope="session")
def vllm_logprob_tolerance(request: pytest.FixtureRequest) -> float:
    """``--vllm-logprob-tolerance`` in nats (default
    :data:`pytest_vllm_env.defaults.LOGPROB_TOL`)."""
    return settings.get_number(request.config, "vllm_logprob_tolerance", defaults.LOGPROB_TOL)


@pytest.fixture(scope="session")
def vllm_perplexity_exponent(request: pytest.FixtureRequest) -> float:
    """``--vllm-perplexity-exponent``: gpu.vllm-perplexity's limit is ``vocab_size ** it``
    (default :data:`pytest_vllm_env.defaults.PERPLEXITY_EXPONENT`)."""
    return settings.get_number(
        request.config, "vllm_perplexity_exponent", defaults.PERPLEXITY_EXPONENT
    )


@pytest.fixture(scope="session")
def vllm_build_logs(request: pytest.FixtureRequest) -> list[Path]:
    """Build logs from --vllm-build-log (globs allowed; settings.resolve_path: the one path
    rule)."""
    return settings.get_paths(request.config, "vllm_build_log", globs=True)


@pytest.fixture
def require_gpu(gpu_torch_probe: ProbeResult) -> None:
    """Skip (with the reason) when the target env's torch sees no GPU."""
    if gpu_torch_probe.problem or not gpu_torch_probe.data.get("devices"):
        pytest.skip(
            "no GPU visible to the target env's torch: "
            + (gpu_torch_probe.problem or str(gpu_torch_probe.data.get("exception", "none")))
        )


@pytest.fixture
def require_vllm(vllm_env: PixiEnv) -> None:
    """Skip (with the reason) when vLLM is not installed in the target env."""
    if vllm_env.dist("vllm") is None:
        pytest.skip(f"vLLM is not installed in {vllm_env.prefix}: nothing to load")


def quantization_for(checkpoint: Checkpoint) -> str | None:
    """The ``quantization=`` the probe passes: none, so that vLLM picks the method from the
    checkpoint's own config as ``vllm serve`` does (gpu.vllm-generate then checks that it
    picked ModelOpt's)."""
    return None


RunKey = tuple[str, str, int]
RunCache = dict[RunKey, "Future[list[ProbeResult]]"]
EARLY_TORCH = pytest.StashKey[tuple[Path, "Future[ProbeResult]"]]()
RUN_CACHE = pytest.StashKey[RunCache]()
_cache_lock = threading.Lock()


@pytest.fixture(scope="session")
def vllm_run_cache(request: pytest.FixtureRequest) -> RunCache:
    """vLLM probe runs of this session by (checkpoint, quantization, count), as futures: a
    load takes 20-60 s and every gpu check of a checkpoint judges the same one; loads
    started early (right after collection) are waited for, never repeated."""
    return _run_cache(request.config)


def _run_cache(config: pytest.Config) -> RunCache:
    with _cache_lock:
        if RUN_CACHE not in config.stash:
            config.stash[RUN_CACHE] = {}
        return config.stash[RUN_CACHE]


def vllm_runs(
    env: PixiEnv,
    checkpoint: str,
    quant: str | None,
    timeout: float,
    n: int = 1,
    cache: RunCache | None = None,
    parallel: int = 1,
    extra: Mapping[str, str] | None = None,
) -> list[ProbeResult]:
    """``n`` vLLM load+generate probes, each in its own process (one load per process),
    remembered in ``cache`` by (checkpoint, quantization, n); ``extra``: probe settings
    (:func:`probe_settings`)."""
    from pytest_vllm_env.runners import gpu

    cache = {} if cache is None else cache
    key = (checkpoint, quant or "", n)
    with _cache_lock:
        future = cache.get(key)
        mine = future is None
        if mine:
            future = cache[key] = Future()
    if not mine:
        return future.result()
    environ = dict(env.environ())
    environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    environ.update(extra or {})
    environ.update(_shared_gpu_settings(environ, parallel))
    runs = []
    for _ in range(n):
        run = gpu.run_probe(
            env.python, "vllm_generate.py", [checkpoint, quant or ""], env=environ, timeout=timeout
        )
        runs.append(run)
        if run.timed_out:  # a second hang would only double the wait
            break
    future.set_result(runs)
    return runs


def probe_settings(config: pytest.Config) -> dict[str, str]:
    """Settings the vLLM probe reads from its environment: ``--vllm-additional-config`` as
    ``VLLM_ENV_PROBE_ADDITIONAL_CONFIG``, so the real load runs with the engine arguments
    the toolchain tier judged (modelopt.gdn-prefill-backend)."""
    from pytest_vllm_env.plugins.modelopt import additional_config

    value = additional_config(config)
    return {"VLLM_ENV_PROBE_ADDITIONAL_CONFIG": json.dumps(value)} if value else {}


def launch_settings(config: pytest.Config) -> dict[str, str]:
    """The launch's engine arguments the one-GPU probe can honour, as
    ``VLLM_ENV_PROBE_ENGINE_ARGS``: ``--kv-cache-dtype`` (which attention backend vLLM needs;
    checkpoint.attention-backend) and ``--moe-backend`` (which MoE kernel; quant.kernel-arch),
    so the checkpoint is loaded the way the user will launch it and the toolchain verdict,
    judged under the same arguments, is held against that load. (A BF16 reference is loaded
    as it is.)"""
    from pytest_vllm_env.plugins.checkpoint import launch

    given = launch(config)
    args = {"kv_cache_dtype": given.kv_cache_dtype, "moe_backend": given.moe_backend}
    args = {k: v for k, v in args.items() if v}
    return {"VLLM_ENV_PROBE_ENGINE_ARGS": json.dumps(args)} if args else {}


def _shared_gpu_settings(environ: dict[str, str], parallel: int) -> dict[str, str]:
    """Several loads at once on one GPU: a share of its memory each and a fixed KV budget
    (vLLM skips its memory profiling, which the other loads would disturb)."""
    if parallel <= 1:
        return {}
    out = {}
    if "VLLM_ENV_PROBE_GPU_UTIL" not in environ:
        out["VLLM_ENV_PROBE_GPU_UTIL"] = f"{min(0.25, 0.8 / parallel):.3f}"
    if "VLLM_ENV_PROBE_KV_BYTES" not in environ:
        out["VLLM_ENV_PROBE_KV_BYTES"] = str(256 * 1024 * 1024)
    return out


@pytest.fixture
def vllm_checkpoint_runs(
    request: pytest.FixtureRequest,
    vllm_env: PixiEnv,
    modelopt_checkpoint: Checkpoint,
    vllm_run_cache: RunCache,
    require_gpu: None,
    require_vllm: None,
) -> list[ProbeResult]:
    """The load(s) of one ``--modelopt-checkpoint`` in vLLM: one fresh subprocess of the
    target Python (two with ``--vllm-fresh-process``), vLLM choosing the quantization from
    the checkpoint: tokens (twice), quant config class, load seconds, tokens/s, the first
    token's top-20 logprobs, the paragraph's perplexity (with a tokenizer), the known answer
    (``vllm_env_expect.json``), or where the load died. Skips without a GPU or without
    vLLM; loaded once per session and checkpoint."""
    if not modelopt_checkpoint.located:
        pytest.skip(f"{modelopt_checkpoint.spec}: not found (modelopt.files-readable says why)")
    return vllm_runs(
        vllm_env,
        str(modelopt_checkpoint.path),
        quantization_for(modelopt_checkpoint),
        _probe_timeout(request.config),
        n=2 if request.config.getoption("vllm_fresh_process", default=False) else 1,
        cache=vllm_run_cache,
        parallel=_parallel_loads(request.config),
        extra=probe_settings(request.config) | launch_settings(request.config),
    )


@pytest.fixture
def modelopt_prediction(
    request: pytest.FixtureRequest,
    vllm_env: PixiEnv,
    modelopt_checkpoint: Checkpoint,
    vllm_modelopt_source,
    vllm_model_registry,
    vllm_kv_naming,
    modelopt_scales,
    modelopt_weight_samples,
    cuda_archs,
    cuda_archs_source,
    vllm_gdn_rule,
    gdn_env,
) -> list:
    """The toolchain tier's findings for the checkpoint (``modelopt.predict``, and the failed
    ``checkpoint.*`` verdicts of the env's own loader plan): what ``gpu.prediction-agrees``
    holds against the real load. Static and fast."""
    from pytest_vllm_env.checks import modelopt

    scales, unread = modelopt_scales
    return _loader_prediction(request) + modelopt.predict(
        modelopt_checkpoint,
        source=vllm_modelopt_source,
        registry=vllm_model_registry,
        vllm_version=vllm_env.version_of("vllm"),
        scales=scales,
        unread=unread,
        samples=modelopt_weight_samples,
        archs=cuda_archs,
        archs_source=cuda_archs_source,
        kv_naming=vllm_kv_naming,
        gdn=(vllm_gdn_rule, gdn_env),
    )


def _loader_prediction(request: pytest.FixtureRequest) -> list:
    """The failed ``checkpoint.*`` findings for the checkpoint the gpu tier loads.

    The probe loads with the checkpoint's own quantization and one GPU, so the plan counts
    only where no ``--vllm-quantization`` changes the decision (``launch.*`` judge the user's
    launch, not this load). Errors and skips say the plan could not be made, not what vLLM
    will do: they predict nothing. Measured: these verdicts agree with vLLM 0.26.0 on 32 of 32
    settled mutations (fixtures/measured/loader_truth_h100.json), where the modelopt.* rules
    alone say "works" on 35 of the 94 CPU loader records where vLLM ran wrong."""
    from pytest_vllm_env.checks import checkpoint_load as c

    # the probe loads with the launch's --kv-cache-dtype (launch_settings): the attention
    # backend vLLM then needs is judged under the same one (measured on the H100, round 14:
    # an NVFP4-KV export is refused at model construction, and loads with fp8 or bfloat16)
    attention = request.getfixturevalue("attention_backend_finding")
    found = [attention] if attention.outcome == "failed" else []
    load = request.getfixturevalue("checkpoint_load")
    if load.plan is None or load.launch.quantization:
        return found
    found += [
        c.shards(load.plan, load.label),
        c.quant_config_source(load.plan.decision, load.label, load.vllm),
        c.parameters(load.plan, load.label, load.vllm, load.samples, load.scales),
    ]
    return [f for f in found if f.outcome == "failed"]


@pytest.fixture
def vllm_reference_run(request: pytest.FixtureRequest, vllm_env: PixiEnv, vllm_run_cache: RunCache):
    """``run(reference_dir)``: one load+generate probe of a BF16 ``--reference-checkpoint``
    (no quantization, fresh process), loaded once per session."""

    def run(reference: str) -> ProbeResult:
        timeout = _probe_timeout(request.config)
        parallel = _parallel_loads(request.config)
        return vllm_runs(
            vllm_env,
            reference,
            None,
            timeout,
            n=1,
            cache=vllm_run_cache,
            parallel=parallel,
            extra=probe_settings(request.config),
        )[0]

    return run


@pytest.fixture
def vllm_reference_verdict(
    request: pytest.FixtureRequest,
    modelopt_checkpoint: Checkpoint,
    modelopt_checkpoint_specs: list[str],
    reference_checkpoints: list[str],
    vllm_logprob_tolerance: float,
):
    """``gpu.vllm-reference``'s finding for this checkpoint: its BF16 reference (paired by
    order, or one for all) loaded once and compared; a skip finding when none was given (no
    checkpoint is loaded then), an error finding for a pairing that cannot be made."""
    from pytest_vllm_env.checks import gpu_vllm_output
    from pytest_vllm_env.facts.gpu_probe import ProbeResult

    index = modelopt_checkpoint_specs.index(modelopt_checkpoint.spec)
    ref, problem = gpu_vllm_output.pair_reference(
        index, len(modelopt_checkpoint_specs), reference_checkpoints
    )
    if problem is not None:
        return problem
    if not ref:
        return gpu_vllm_output.vllm_reference(ProbeResult(""), None, "", "")
    runs = request.getfixturevalue("vllm_checkpoint_runs")
    return gpu_vllm_output.vllm_reference(
        runs[0],
        request.getfixturevalue("vllm_reference_run")(ref),
        str(modelopt_checkpoint.path),
        ref,
        vllm_logprob_tolerance,
    )
