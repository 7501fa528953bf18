"""Run by the target env's Python: build a checkpoint's model with the env's own vLLM and run
vLLM's own weight loader on it, on the CPU, and say what it did. Opt-in: this executes the
env's vLLM code (``--vllm-load-probe``; ``scripts/loader_truth_cpu.py`` for the recorded
corpus). Imports nothing of pytest-vllm-env.

Usage: python vllm_load_weights.py MODEL_DIR [--quantization Q] [--tp N] [--mode MODE]
prints one JSON line, last; ``--batch JOBS.json`` runs many (one JSON line each, vLLM
imported once).

Modes:
- ``params``: build the model on the meta device and list its parameters (name, shape,
  dtype) for each simulated tensor-parallel rank: what vLLM will ask the checkpoint for.
- ``meta``: also run ``model.load_weights`` on meta tensors shaped and typed as the
  safetensors headers say (no weight bytes read): vLLM's name mapping, skip rules, refusals
  and shape asserts, for a checkpoint of any size.
- ``load`` (default): build on the CPU and load the real tensors through vLLM's
  ``DefaultModelLoader.load_weights`` (its file selection, index check, iterator, dtype
  casts and missing-weight tracking), twice, the parameters filled with two different
  sentinels before each load: an element equal to the sentinel both times was never
  written. For tiny checkpoints.

How vLLM is made to run here (no GPU, a CUDA build of vLLM): the platform is vLLM's own
``CpuPlatform``; the distributed state is a one-process gloo group whose tensor-parallel
group then reports ``--tp`` ranks (each rank is built in turn: construction and loading
need no collective); vLLM's compiled ops (``torch.ops._C.*``) that layers look up at
construction are replaced by stubs that raise if called. Nothing after loading runs
(``process_weights_after_loading``, kernels, forward): what only a GPU shows is for
``scripts/device/loader_truth.sh``.
"""

import argparse
import copy
import json
import logging
import os
import socket
import sys
import time
import traceback

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
T0 = time.monotonic()
OUT: dict = {"ok": False}
VLLM_OP_NAMESPACES = (
    "_C",
    "_C_cache_ops",
    "_moe_C",
    "_C_custom_ar",
    "_rocm_C",
    "_flashmla_C",
    "_vllm_fa2_C",
    "_vllm_fa3_C",
    "_C_stable_libtorch",
)
LOG_EVENTS = {
    "Skipping weight": "skipped",
    "Skipping missing": "skipped",
    "Skipping param": "skipped",
    "Skipping module": "skipped",
    "Ignoring weight": "ignored",
    "Ignoring missing": "ignored",
}


def emit(code: int = 0) -> None:
    OUT["seconds"] = round(time.monotonic() - T0, 2)
    sys.stdout.flush()
    print(json.dumps(OUT, default=str), flush=True)
    sys.exit(code)


def where(exc: BaseException) -> dict:
    """The innermost frame inside vllm (or the innermost at all) of an exception."""
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if "/vllm/" in f.filename] or frames
    f = inside[-1] if inside else None
    return {
        "type": type(exc).__name__,
        "message": str(exc)[:2000],
        "file": f.filename.split("site-packages/")[-1] if f else None,
        "line": f.lineno if f else None,
        "code": (f.line or "").strip() if f else None,
    }


class Events(logging.Handler):
    """AutoWeightsLoader's debug lines: which names it skipped or ignored."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[str, str]] = []
        self.warnings: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        for prefix, kind in LOG_EVENTS.items():
            if msg.startswith(prefix):
                self.seen.append((kind, msg[len(prefix) :].strip()))
                return
        if record.levelno >= logging.WARNING:
            self.warnings.append(msg[:500])


def stub_vllm_ops(ops_module) -> None:
    """``torch.ops._C.<name>`` lookups that fail get a stub (construction only stores them)."""
    original = ops_module._OpNamespace.__getattr__

    class Missing:
        def __init__(self, name: str) -> None:
            self.name = name

        def __call__(self, *a, **k):
            if self.name.rpartition(".")[2].startswith("cpu_has_"):
                # a CPU feature query (0.33.0 fused_moe/experts/cpu_moe.py asks
                # cpu_has_amx_fp8() while picking the CPU MoE backend): "no", as on a CPU
                # without it, so model construction goes on
                return False
            raise RuntimeError(f"{self.name} is not available in the CPU load probe")

        def __getattr__(self, item: str):
            return Missing(f"{self.name}.{item}")

    def lookup(self, name):
        try:
            return original(self, name)
        except AttributeError:
            if name.startswith("__") or self.name not in VLLM_OP_NAMESPACES:
                raise
            return Missing(f"torch.ops.{self.name}.{name}")

    ops_module._OpNamespace.__getattr__ = lookup


class Ctx:
    """What one process imports once and every job reuses."""

    distributed = False


class NoKernel:
    """What kernel selection returns here when the CPU platform has no kernel for a layer:
    it takes any arguments and does nothing (nothing after loading runs in this probe)."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


def accept_cpu_kernels() -> None:
    """Kernel selection (``vllm.model_executor.kernels.linear``: every ``choose_*`` /
    ``init_*`` that raises "Failed to find a kernel that can implement ...") returns
    :class:`NoKernel` where the CPU platform has none (``requires AMX tile support``): which
    kernel a GPU runs, and its alignment rules, are the device script's to measure; what
    ``create_weights`` registers and checks still runs."""
    try:
        import vllm.model_executor.kernels.linear as kernels
    except ImportError:  # an older layout: nothing to relax
        return
    for name in dir(kernels):
        func = getattr(kernels, name)
        if not (name.startswith(("choose_", "init_")) and callable(func)):
            continue

        def wrapped(*args, _f=func, _name=name, **kwargs):
            try:
                return _f(*args, **kwargs)
            except ValueError as exc:
                if "Failed to find a kernel" not in str(exc):
                    raise
                return NoKernel if _name.startswith("choose_") else NoKernel()

        setattr(kernels, name, wrapped)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?")
    ap.add_argument("--quantization", default=None)
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--ranks", default="all", help="'all' or comma-separated rank numbers")
    ap.add_argument("--mode", choices=("params", "meta", "load"), default="load")
    ap.add_argument("--max-model-len", type=int, default=128)
    ap.add_argument(
        "--batch",
        help="a JSON file of jobs ([{model, quantization, tp, mode, ranks}]): one JSON line "
        "each, the imports paid once",
    )
    a = ap.parse_args()
    if a.batch:
        with open(a.batch, encoding="utf-8") as fh:
            jobs = json.load(fh)
    elif a.model:
        jobs = [vars(a)]
    else:
        ap.error("MODEL or --batch is required")

    import torch
    import torch._ops
    import vllm
    import vllm.platforms as platforms
    from vllm.platforms.cpu import CpuPlatform

    platforms._current_platform = CpuPlatform()
    ctx = Ctx()
    ctx.torch = torch
    ctx.versions = {"vllm": vllm.__version__, "torch": torch.__version__}
    from vllm.config import set_current_vllm_config
    from vllm.distributed import (
        init_distributed_environment,
        initialize_model_parallel,
        parallel_state,
    )
    from vllm.engine.arg_utils import EngineArgs
    from vllm.model_executor.model_loader import get_model_loader
    from vllm.model_executor.model_loader.utils import initialize_model
    from vllm.model_executor.models import utils as model_utils
    from vllm.utils.torch_utils import set_default_torch_dtype

    ctx.set_config, ctx.init_dist, ctx.init_mp = (
        set_current_vllm_config,
        init_distributed_environment,
        initialize_model_parallel,
    )
    ctx.parallel_state, ctx.EngineArgs = parallel_state, EngineArgs
    ctx.get_model_loader, ctx.initialize_model = get_model_loader, initialize_model
    ctx.model_utils, ctx.sdtd = model_utils, set_default_torch_dtype
    stub_vllm_ops(torch._ops)
    accept_cpu_kernels()
    ctx.events = Events()
    for name in ("vllm.model_executor.models.utils", "vllm.model_executor.model_loader"):
        lg = logging.getLogger(name)
        lg.setLevel(logging.DEBUG)
        lg.addHandler(ctx.events)
    OUT.update(ctx.versions)
    if len(jobs) == 1 and not a.batch:
        OUT.update(run_job(jobs[0], ctx))
        emit()
    for job in jobs:
        t = time.monotonic()
        try:
            result = run_job(job, ctx)
        except Exception as exc:  # noqa: BLE001 - one job's crash is that job's answer
            result = {"ok": False, "error": where(exc), "traceback": traceback.format_exc()[-3000:]}
        result.update(ctx.versions, seconds=round(time.monotonic() - t, 2))
        result["job"] = job
        print(json.dumps(result, default=str), flush=True)
    sys.exit(0)


def run_job(job: dict, ctx: Ctx) -> dict:
    """One checkpoint under one set of launch arguments: config, then each rank."""
    a = argparse.Namespace(
        model=job["model"],
        quantization=job.get("quantization"),
        tp=int(job.get("tp") or 1),
        ranks=str(job.get("ranks") or "all"),
        mode=job.get("mode") or "load",
        max_model_len=int(job.get("max_model_len") or 128),
    )
    out: dict = {"ok": False, "model": a.model, "quantization_arg": a.quantization}
    out.update(tp=a.tp, mode=a.mode)
    try:
        args = ctx.EngineArgs(
            model=a.model,
            quantization=a.quantization,
            tensor_parallel_size=a.tp,
            enforce_eager=True,
            skip_tokenizer_init=True,
            max_model_len=a.max_model_len,
            distributed_executor_backend="uni" if a.tp == 1 else "mp",
        )
        cfg = args.create_engine_config()
    except Exception as exc:  # the engine refuses the config
        out["stage"] = "config"
        out["refused"] = where(exc)
        out["ok"] = True
        return out
    mc = cfg.model_config
    out["config"] = {
        "architecture": (mc.architectures or [None])[0],
        "quantization": mc.quantization,
        "quant_config": type(cfg.quant_config).__name__ if cfg.quant_config else None,
        "dtype": str(mc.dtype).removeprefix("torch."),
    }
    qc = cfg.quant_config
    if qc is not None:
        out["config"]["quant_algo"] = getattr(qc, "quant_method", None)
        out["config"]["exclude_modules"] = list(getattr(qc, "exclude_modules", []) or [])
        out["config"]["kv_cache_quant"] = getattr(qc, "kv_cache_quant_method", None) or getattr(
            qc, "kv_cache_quant_algo", None
        )
    ranks = list(range(a.tp)) if a.ranks == "all" else [int(r) for r in a.ranks.split(",")]
    out["ranks"] = {}
    with ctx.set_config(cfg):
        if not ctx.distributed:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            ctx.init_dist(
                world_size=1,
                rank=0,
                local_rank=0,
                distributed_init_method=f"tcp://127.0.0.1:{port}",
                backend="gloo",
            )
            ctx.init_mp(1, 1)
            ctx.distributed = True
        ps = ctx.parallel_state
        real_tp = ps._TP
        for rank in ranks:
            fake = copy.copy(real_tp)
            fake.world_size, fake.rank_in_group = a.tp, rank
            fake.ranks = list(range(a.tp))
            ps._TP = fake
            try:
                out["ranks"][str(rank)] = run_rank(
                    a,
                    cfg,
                    ctx.torch,
                    ctx.initialize_model,
                    ctx.get_model_loader,
                    ctx.model_utils,
                    ctx.sdtd,
                    ctx.events,
                )
            finally:
                ps._TP = real_tp
    out["ok"] = True
    return out


def build(cfg, torch, initialize_model, set_default_torch_dtype, device):
    # every attention layer registers its name in the compilation config; a second model
    # built in this process (the next rank, the second sentinel pass) must start clean
    cfg.compilation_config.static_forward_context.clear()
    with set_default_torch_dtype(cfg.model_config.dtype), torch.device(device):
        return initialize_model(vllm_config=cfg, model_config=cfg.model_config)


def sentinel(torch, dtype, which: int):
    if dtype.is_floating_point:
        return (-3.0, 5.0)[which]  # exact in every float dtype, FP8 included
    if dtype == torch.bool:
        return (False, True)[which]
    return (7, 101)[which]


def run_rank(a, cfg, torch, initialize_model, get_model_loader, model_utils, sdtd, events):
    """One simulated tensor-parallel rank: build, (load), report."""
    out: dict = {}
    device = "meta" if a.mode in ("params", "meta") else "cpu"
    try:
        model = build(cfg, torch, initialize_model, sdtd, device)
    except Exception as exc:
        out["stage"] = "build"
        out["refused"] = where(exc)
        return out
    names = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    out["params"] = {
        n[0]: {"shape": list(p.shape), "dtype": str(p.dtype).removeprefix("torch.")}
        for p in model.parameters()
        for n in [names[id(p)]]
    }
    out["aliases"] = {n[0]: n[1:] for n in names.values() if len(n) > 1}
    if a.mode == "params":
        return out

    routed: list[dict] = []
    original_load_param = model_utils.AutoWeightsLoader._load_param

    def load_param(self, base_prefix, param, weights):
        def tagged():
            for wn, wd in weights:
                routed.append(
                    {
                        "tensor": getattr(wd, "_probe_name", None),
                        "param": names.get(id(param), [base_prefix])[0],
                        "shard": getattr(wd, "shard_id", None),
                        "from": str(wd.dtype).removeprefix("torch."),
                        "to": str(param.dtype).removeprefix("torch."),
                    }
                )
                yield wn, wd

        return original_load_param(self, base_prefix, param, tagged())

    modules = {}
    for name, m in model.named_modules(remove_duplicate=False):
        modules.setdefault(id(m), name)
    original_load_module = model_utils.AutoWeightsLoader._load_module

    def load_module(self, base_prefix, module, weights):
        own = getattr(module, "load_weights", None)
        if module is self.module or not callable(own) or any(True for _ in module.children()):
            return original_load_module(self, base_prefix, module, weights)

        def tagged():  # a leaf layer loading its own weights (fused QKV / gate-up in 0.26)
            for wn, wd in weights:
                target = getattr(module, wn.rpartition(".")[2], None)
                routed.append(
                    {
                        "tensor": getattr(wd, "_probe_name", None),
                        "param": f"{modules.get(id(module), base_prefix)}.{wn}",
                        "shard": getattr(wd, "shard_id", None),
                        "from": str(wd.dtype).removeprefix("torch."),
                        "to": str(getattr(target, "dtype", "?")).removeprefix("torch."),
                    }
                )
                yield wn, wd

        return original_load_module(self, base_prefix, module, tagged())

    model_utils.AutoWeightsLoader._load_param = load_param
    model_utils.AutoWeightsLoader._load_module = load_module
    seen: list[str] = []
    try:
        if a.mode == "meta":
            result = load_meta(a, cfg, model, torch, get_model_loader, seen)
        else:
            result = load_real(
                a, cfg, model, torch, initialize_model, get_model_loader, sdtd, seen, routed
            )
    finally:
        model_utils.AutoWeightsLoader._load_param = original_load_param
        model_utils.AutoWeightsLoader._load_module = original_load_module
    out.update(result)
    out["tensors"] = seen
    unique = {(r["tensor"], r["param"], str(r["shard"])): r for r in routed}
    out["routed"] = list(unique.values())
    out["events"] = events.seen[:]
    out["warnings"] = events.warnings[:]
    events.seen.clear()
    events.warnings.clear()
    return out


def tag(weights, seen):
    for name, tensor in weights:
        try:
            tensor._probe_name = name
        except Exception:  # noqa: S110 - a tensor subclass without __dict__: untagged
            pass
        seen.append(name)
        yield name, tensor


def load_meta(a, cfg, model, torch, get_model_loader, seen):
    """Meta tensors from the headers, through vLLM's file selection and model.load_weights."""
    from safetensors import safe_open

    loader = get_model_loader(cfg.load_config)
    out: dict = {}
    try:
        prepared = loader._prepare_weights(**_prepare_kwargs(loader, cfg.model_config))
        files = sorted(prepared[1], key=_natural)

        def weights():
            for path in files:
                with safe_open(path, framework="pt") as fh:
                    for name in fh.keys():  # noqa: SIM118
                        sl = fh.get_slice(name)
                        dtype = _torch_dtype(torch, sl.get_dtype())
                        yield name, torch.empty(sl.get_shape(), dtype=dtype, device="meta")

        loaded = model.load_weights(tag(weights(), seen))
        out["loaded"] = sorted(loaded) if loaded is not None else None
    except Exception as exc:
        out["refused"] = where(exc)
        out["refused"]["tensor"] = seen[-1] if seen else None
    return out


def _prepare_kwargs(loader, mc) -> dict:
    """DefaultModelLoader._prepare_weights' arguments (0.26.0 and 0.33.0 take these)."""
    import inspect

    wanted = {
        "model_name_or_path": mc.model,
        "subfolder": None,
        "revision": mc.revision,
        "fall_back_to_pt": True,
        "allow_patterns_overrides": None,
    }
    params = inspect.signature(loader._prepare_weights).parameters
    return {k: v for k, v in wanted.items() if k in params}


def _natural(path: str) -> list:
    import re

    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", os.path.basename(path))]


def _torch_dtype(torch, name: str):
    table = {
        "F64": torch.float64,
        "F32": torch.float32,
        "F16": torch.float16,
        "BF16": torch.bfloat16,
        "F8_E4M3": torch.float8_e4m3fn,
        "F8_E5M2": torch.float8_e5m2,
        "I64": torch.int64,
        "I32": torch.int32,
        "I16": torch.int16,
        "I8": torch.int8,
        "U8": torch.uint8,
        "BOOL": torch.bool,
    }
    return table.get(name, torch.uint8)


def load_real(a, cfg, model, torch, initialize_model, get_model_loader, sdtd, seen, routed):
    """Two real loads, sentinel-filled: which elements of which parameter were written."""
    passes = []
    out: dict = {}
    first = 0
    for which in (0, 1):
        if which == 1:
            first = len(routed)  # the second pass routes the same tensors: not recorded
            model = build(cfg, torch, initialize_model, sdtd, "cpu")
        with torch.no_grad():
            for p in model.parameters():
                p.data.fill_(sentinel(torch, p.dtype, which))
        loader = get_model_loader(cfg.load_config)
        original = loader.get_all_weights
        names_seen: list[str] = seen if which == 0 else []
        loader.get_all_weights = lambda mc, m, _o=original, _s=names_seen: tag(_o(mc, m), _s)
        try:
            loader.load_weights(model, cfg.model_config)
        except Exception as exc:
            out["refused"] = where(exc)
            out["refused"]["tensor"] = names_seen[-1] if names_seen else None
            return out
        state = {}
        for name, p in model.named_parameters():
            state[name] = (p.data == sentinel(torch, p.dtype, which)).reshape(-1)
        passes.append(state)
        if which == 1:
            del routed[first:]
    written = {}
    for name, untouched0 in passes[0].items():
        untouched = untouched0 & passes[1][name]
        n = int(untouched.numel())
        left = int(untouched.sum())
        written[name] = "all" if left == 0 else "none" if left == n else f"{n - left}/{n}"
    out["written"] = written
    # what the params hold after the load (small ones): which copy of a duplicate won
    out["sums"] = {
        name: float(p.detach().float().sum())
        for name, p in model.named_parameters()
        if p.numel() <= 1 << 16
    }
    return out


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the probe reports, never dies silently
        OUT["error"] = where(exc)
        OUT["traceback"] = traceback.format_exc()[-4000:]
        emit(1)
