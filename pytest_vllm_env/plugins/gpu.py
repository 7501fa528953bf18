"""Fixtures and settings for the gpu, build and buildlog tiers.

The gpu tier loads each ``--modelopt-checkpoint`` in vLLM once (a second fresh process only
with ``--vllm-fresh-process``) and each ``--reference-checkpoint`` once; loads are cached
per session and path, so every gpu check of one checkpoint judges the same load.

Several checkpoints load side by side on one GPU with ``-n N --dist loadgroup``: the
checks of one checkpoint form one xdist group (one load), and each worker's load gets
``0.8 / N`` of the GPU's memory and a fixed 256 MiB KV cache (no memory profiling, which
the other workers' loads would disturb).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_vllm_env import abi, fatbin, gpu, settings, vllm_run
from pytest_vllm_env.archs import Arch
from pytest_vllm_env.checkpoint import Checkpoint
from pytest_vllm_env.coverage_arch import label_of
from pytest_vllm_env.elf import ElfError
from pytest_vllm_env.env import PixiEnv


def pytest_addoption(parser: pytest.Parser) -> None:
    settings.add_setting(
        parser,
        "--reference-checkpoint",
        "the BF16 original(s) of the --modelopt-checkpoint(s), for gpu.vllm-reference: one "
        "for all, or one per checkpoint in the same order",
        multiple=True,
    )
    settings.add_setting(
        parser, "--vllm-build-log", "build log(s) of vLLM to judge (buildlog tier)", multiple=True
    )
    settings.add_setting(
        parser, "--vllm-probe-timeout", "seconds a gpu probe (one vLLM load) may take; 600"
    )
    settings.add_setting(
        parser,
        "--vllm-logprob-tolerance",
        "nats the first-token logprob of a checkpoint may differ from its "
        f"--reference-checkpoint's; {vllm_run.LOGPROB_TOL}",
    )
    settings.add_setting(
        parser,
        "--vllm-perplexity-exponent",
        "gpu.vllm-perplexity fails above vocab_size ** this (uniform guessing scores "
        f"vocab_size); {vllm_run.PERPLEXITY_EXPONENT}",
    )
    parser.getgroup(settings.GROUP).addoption(
        "--vllm-fresh-process",
        action="store_true",
        default=False,
        help="load each --modelopt-checkpoint a second time in a fresh process and compare "
        "the tokens (default: one load, two generations in it)",
    )


def _probe_timeout(config: pytest.Config) -> float:
    return settings.get_number(config, "vllm_probe_timeout", 600.0)


def pytest_configure(config: pytest.Config) -> None:
    # a bad number is a usage error at start, not in the first test
    _probe_timeout(config)
    settings.get_number(config, "vllm_logprob_tolerance", vllm_run.LOGPROB_TOL)
    settings.get_number(config, "vllm_perplexity_exponent", vllm_run.PERPLEXITY_EXPONENT)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # One xdist group per checkpoint: under --dist loadgroup its gpu checks share one load.
    for item in items:
        spec = getattr(getattr(item, "callspec", None), "params", {}).get("modelopt_checkpoint")
        if spec is not None and item.get_closest_marker("gpu"):
            item.add_marker(pytest.mark.xdist_group(f"vllm-load:{spec}"))


@pytest.fixture(scope="session")
def gpu_torch_probe(request: pytest.FixtureRequest, vllm_env: PixiEnv) -> gpu.ProbeResult:
    """The target env's torch probed in a subprocess (version, CUDA, devices, a matmul, and
    an FP8 ``torch._scaled_mm`` on GPUs of compute capability >= 8.9)."""
    return gpu.run_probe(
        vllm_env.python,
        "torch_check.py",
        env=vllm_env.environ(),
        timeout=min(_probe_timeout(request.config), 300),
    )


@pytest.fixture(scope="session")
def visible_gpus(gpu_torch_probe: gpu.ProbeResult) -> list[tuple[str, Arch]]:
    """``(name, compute capability)`` of each visible GPU: from the torch probe, else from
    ``nvidia-smi --query-gpu=compute_cap``; empty without a GPU."""
    from pytest_vllm_env.plugin import visible_gpu_archs

    if gpu_torch_probe.data.get("devices"):
        return gpu.visible_gpus(gpu_torch_probe)
    return gpu.visible_gpus(gpu_torch_probe, visible_gpu_archs())


@pytest.fixture(scope="session")
def gpu_binaries(vllm_env: PixiEnv, extension_paths: list[Path]) -> list[gpu.BinaryImages]:
    """The GPU images of torch's ``libtorch_cuda.so`` and of each extension in
    ``extension_paths`` (fatbin headers only, never loaded)."""
    root = abi.torch_root(vllm_env)
    paths = [root / "lib" / "libtorch_cuda.so"] if root else []
    out = []
    for path in [p for p in paths if p.is_file()] + list(extension_paths):
        try:
            out.append(gpu.BinaryImages(label_of(path), fatbin.read_images(path)))
        except ElfError as exc:
            out.append(gpu.BinaryImages(label_of(path), None, str(exc)))
    return out


@pytest.fixture(scope="session")
def reference_checkpoints(request: pytest.FixtureRequest) -> list[str]:
    """Checkpoint dirs from --reference-checkpoint (relative to the rootdir)."""
    base = Path(str(request.config.rootpath))
    return [str(base / p) for p in settings.get_list(request.config, "reference_checkpoint")]


@pytest.fixture(scope="session")
def vllm_logprob_tolerance(request: pytest.FixtureRequest) -> float:
    """``--vllm-logprob-tolerance`` in nats (default
    :data:`pytest_vllm_env.vllm_run.LOGPROB_TOL`)."""
    return settings.get_number(request.config, "vllm_logprob_tolerance", vllm_run.LOGPROB_TOL)


@pytest.fixture(scope="session")
def vllm_perplexity_exponent(request: pytest.FixtureRequest) -> float:
    """``--vllm-perplexity-exponent``: gpu.vllm-perplexity's limit is ``vocab_size ** it``
    (default :data:`pytest_vllm_env.vllm_run.PERPLEXITY_EXPONENT`)."""
    return settings.get_number(
        request.config, "vllm_perplexity_exponent", vllm_run.PERPLEXITY_EXPONENT
    )


@pytest.fixture(scope="session")
def vllm_build_logs(request: pytest.FixtureRequest) -> list[Path]:
    """Build logs from --vllm-build-log (globs allowed, relative to the rootdir)."""
    pats = settings.get_list(request.config, "vllm_build_log")
    return [Path(p) for p in settings.expand_globs(pats, request.config.rootpath)]


@pytest.fixture
def require_gpu(gpu_torch_probe: gpu.ProbeResult) -> None:
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


RunCache = dict[tuple[str, str, int], list[gpu.ProbeResult]]


@pytest.fixture(scope="session")
def vllm_run_cache() -> RunCache:
    """vLLM probe runs of this session by (checkpoint, quantization, count): a load takes
    30-60 s, and gpu.vllm-generate and gpu.vllm-reference need the same ones."""
    return {}


def vllm_runs(
    env: PixiEnv,
    checkpoint: str,
    quant: str | None,
    timeout: float,
    n: int = 1,
    cache: RunCache | None = None,
) -> list[gpu.ProbeResult]:
    """``n`` vLLM load+generate probes, each in its own process (one load per process),
    remembered in ``cache`` by (checkpoint, quantization, n)."""
    cache = {} if cache is None else cache
    key = (checkpoint, quant or "", n)
    if key in cache:
        return cache[key]
    environ = dict(env.environ())
    environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    environ.update(_shared_gpu_settings(environ))
    runs = []
    for _ in range(n):
        run = gpu.run_probe(
            env.python, "vllm_generate.py", [checkpoint, quant or ""], env=environ, timeout=timeout
        )
        runs.append(run)
        if run.timed_out:  # a second hang would only double the wait
            break
    cache[key] = runs
    return runs


def _shared_gpu_settings(environ: dict[str, str]) -> dict[str, str]:
    """Under xdist several workers load at once on one GPU: a share of its memory each and a
    fixed KV budget (vLLM skips its memory profiling, which their loads would disturb)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if workers <= 1:
        return {}
    out = {}
    if "VLLM_ENV_PROBE_GPU_UTIL" not in environ:
        out["VLLM_ENV_PROBE_GPU_UTIL"] = f"{min(0.25, 0.8 / workers):.3f}"
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
) -> list[gpu.ProbeResult]:
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
    )


@pytest.fixture
def modelopt_prediction(
    vllm_env: PixiEnv,
    modelopt_checkpoint: Checkpoint,
    vllm_modelopt_source,
    vllm_model_registry,
    modelopt_scales,
    modelopt_weight_samples,
    cuda_archs,
    cuda_archs_source,
) -> list:
    """The toolchain tier's findings for the checkpoint (``modelopt.predict``): what
    ``gpu.prediction-agrees`` holds against the real load. Static and fast."""
    from pytest_vllm_env import modelopt

    scales, unread = modelopt_scales
    return modelopt.predict(
        modelopt_checkpoint,
        source=vllm_modelopt_source,
        registry=vllm_model_registry,
        vllm_version=vllm_env.version_of("vllm"),
        scales=scales,
        unread=unread,
        samples=modelopt_weight_samples,
        archs=cuda_archs,
        archs_source=cuda_archs_source,
    )


@pytest.fixture
def vllm_reference_run(request: pytest.FixtureRequest, vllm_env: PixiEnv, vllm_run_cache: RunCache):
    """``run(reference_dir)``: one load+generate probe of a BF16 ``--reference-checkpoint``
    (no quantization, fresh process), loaded once per session."""

    def run(reference: str) -> gpu.ProbeResult:
        timeout = _probe_timeout(request.config)
        return vllm_runs(vllm_env, reference, None, timeout, n=1, cache=vllm_run_cache)[0]

    return run
