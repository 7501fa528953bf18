"""Record which mixed-precision (WNA16) GEMM kernel a REAL vLLM picks for each rank's share of
a layer, on each GPU arch, on this CPU machine (no GPU).

Two parts, in one process of an env with vLLM (a venv of ``~/.cache/pytest-vllm-env/venvs``):

1. ``loader``: tiny compressed-tensors W4A16 (group 128) Llamas of chosen dims
   (``fixtures/field_reports.py:resized``), loaded by the real CPU loader probe
   (``probes/vllm_load_weights.py``) at tensor_parallel_size 1, 2 and 4 with every rank
   simulated; ``choose_mp_linear_kernel`` is wrapped to record the ``MPLinearLayerConfig``
   each layer's ``create_weights`` passes it on each rank (the split as the env's vLLM makes
   it), and what the CPU platform's own kernel list then says.
2. ``choose``: every recorded config, and a grid of per-rank configs built the way
   ``CompressedTensorsWNA16.create_weights`` builds them (``full_weight_shape=(input_size,
   output_size)``, ``partition_weight_shape=(input_size_per_partition,
   sum(output_partition_sizes))``), given to the real ``choose_mp_linear_kernel`` under a
   CUDA platform whose ``get_device_capability`` answers each arch (``current_platform`` is
   swapped in every vLLM module that bound it): the kernel it returns, or the
   "Failed to find a kernel ..." it raises.

Usage::

    ~/.cache/pytest-vllm-env/venvs/vllm-0.33.0/bin/python scripts/kernel_choice_truth.py \\
        fixtures/loader_truth/kernel_choice-0.33.0.json

``tests/test_quant_kernel_ranks.py`` holds ``facts/quant_kernel_ranks.py`` to the JSON. What
only a GPU settles (the kernel then runs and computes right): scripts/device/kernel_ranks.sh.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ARCHS = ((7, 5), (8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0))
# dims (hidden, heads, head_dim, kv_heads, intermediate) whose per-rank shares meet Machete's
# and Marlin's limits at tp 2 or 4 but not at tp 1
SHAPES = {
    "h512-i1408": (512, 8, 64, 2, 1408),  # down_proj K per rank 704 (tp 2), 352 (tp 4)
    "h384-i1536": (384, 4, 96, 2, 1536),  # qkv N per rank 288 (tp 2), o_proj K 192
}
TPS = (1, 2, 4)


def _load_probe():
    spec = importlib.util.spec_from_file_location(
        "vllm_load_weights", REPO / "pytest_vllm_env" / "probes" / "vllm_load_weights.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _describe(cfg) -> dict:
    return {
        "full": list(cfg.full_weight_shape),
        "part": list(cfg.partition_weight_shape),
        "type": str(cfg.weight_type),
        "act": str(cfg.act_type).removeprefix("torch."),
        "group": cfg.group_size,
        "zp": bool(cfg.zero_points),
        "g_idx": bool(getattr(cfg, "has_g_idx", False)),
    }


def loader_part(folder: Path, probe) -> list[dict]:
    """Part 1: the configs the real CPU loader passes the chooser, per layer and rank."""
    import vllm.model_executor.kernels.linear as kernels

    from fixtures.field_reports import Shape, resized

    records: list[dict] = []
    real = kernels.choose_mp_linear_kernel

    def recording(config, *args, **kwargs):
        frame = inspect.currentframe().f_back
        scheme = frame.f_locals.get("self") if frame else None
        from vllm.distributed import parallel_state as ps

        rec = {
            "name": current.get("name"),
            "layer": getattr(scheme, "layer_name", None),
            "rank": ps._TP.rank_in_group if ps._TP else 0,
            "tp": ps._TP.world_size if ps._TP else 1,
            "config": _describe(config),
            "config_obj": config,
        }
        try:
            rec["cpu"] = real(config, *args, **kwargs).__name__
        except ValueError as exc:
            rec["cpu"] = "refused: " + str(exc).splitlines()[0]
        records.append(rec)
        return probe.NoKernel

    def accept() -> None:
        kernels.choose_mp_linear_kernel = recording

    current: dict = {}
    run_job = probe.run_job

    def named_job(job, ctx):
        current["name"] = job.get("name")
        return run_job(job, ctx)

    probe.accept_cpu_kernels = accept
    probe.run_job = named_job
    jobs = []
    for name, (hidden, heads, head_dim, kv, inter) in SHAPES.items():
        model = resized(
            "ct-w4a16-g128",
            "ct-w4a16-g128",
            Shape(hidden, heads, head_dim, kv, inter),
            folder / name,
        )
        jobs += [{"model": str(model), "tp": tp, "mode": "load", "name": name} for tp in TPS]
    batch = folder / "jobs.json"
    batch.write_text(json.dumps(jobs))
    sys.argv = ["probe", "--batch", str(batch)]
    printed = folder / "probe.out"
    with printed.open("w") as fh, contextlib.redirect_stdout(fh), contextlib.suppress(SystemExit):
        probe.main()  # a real file: vLLM 0.26.0 asks stdout for its fileno
    outcomes = []
    for line in printed.read_text().splitlines():
        with contextlib.suppress(ValueError):
            r = json.loads(line)
            if isinstance(r, dict) and "job" in r:
                ranks = r.get("ranks") or {}
                refused = r.get("refused") or next(
                    (v.get("refused") for v in ranks.values() if v.get("refused")), None
                )
                outcomes.append(
                    {
                        "name": r["job"]["name"],
                        "tp": r["job"]["tp"],
                        "ok": r.get("ok"),
                        "refused": (refused or {}).get("message")
                        if isinstance(refused, dict)
                        else refused,
                        "error": (r.get("error") or {}).get("message"),
                    }
                )
    return records, outcomes


class _Fake:
    cc = (9, 0)


def fake_cuda():
    """A CUDA platform whose capability is ``_Fake.cc`` (nothing else of it is used by the
    mixed-precision chooser and the kernels' ``can_implement``)."""
    from vllm.platforms.interface import DeviceCapability, Platform, PlatformEnum

    class FakeCuda(Platform):
        _enum = PlatformEnum.CUDA
        device_name = "cuda"
        device_type = "cuda"
        dispatch_key = "CUDA"

        @classmethod
        def get_device_capability(cls, device_id: int = 0):
            return DeviceCapability(*_Fake.cc)

    return FakeCuda()


@contextlib.contextmanager
def platform_swapped(new):
    """``current_platform`` in every loaded vLLM module (they bind it at import) set to
    ``new`` while the block runs."""
    import vllm.platforms as platforms
    from vllm.platforms.interface import Platform

    old = platforms._current_platform
    swapped = []
    for name, mod in list(sys.modules.items()):
        bound = mod.__dict__.get("current_platform") if name.startswith("vllm.") else None
        if isinstance(bound, Platform):
            swapped.append((mod, bound))
            mod.current_platform = new
    platforms._current_platform = new
    try:
        yield
    finally:
        for mod, bound in swapped:
            mod.current_platform = bound
        platforms._current_platform = old


def grid() -> list[dict]:
    """Per-rank configs as ``create_weights`` builds them: (full in, full out, rank in, rank
    out) for column- and row-parallel splits, 4- and 8-bit, symmetric and not, act-order,
    bf16/fp16, group sizes around the kernels' limits."""
    cases = []
    shapes = [  # (in, out, tp, row_parallel)
        (512, 768, 1, False),
        (512, 640, 2, False),  # N per rank 320: Machete needs N % 128
        (512, 576, 2, False),  # N per rank 288: not a multiple of 64 either
        (512, 200, 1, False),  # N 200: not a multiple of 8
        (1408, 512, 2, True),  # K per rank 704: group 128 straddles
        (1536, 512, 4, True),  # K per rank 384
        (768, 512, 4, True),  # K per rank 192: straddles 128, Machete K % 64 holds
        (320, 512, 1, False),  # K 320: Machete needs K % 64 (holds), Marlin pads
        (96, 512, 1, False),  # K 96 < group 128: one group
        (1536, 512, 8, True),  # K per rank 192
    ]
    for fin, fout, tp, row in shapes:
        pin, pout = (fin // tp, fout) if row else (fin, fout // tp)
        for bits in (4, 8):
            for zp in (False, True):
                for group in (-1, 32, 64, 128, 256, 16):
                    for act in ("bfloat16", "float16"):
                        for g_idx in (False, True):
                            cases.append(
                                {
                                    "full": [fin, fout],
                                    "part": [pin, pout],
                                    "bits": bits,
                                    "zp": zp,
                                    "group": group,
                                    "act": act,
                                    "g_idx": g_idx,
                                }
                            )
    return cases


def choose_part(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """Part 2: the real chooser under each arch, for the loader's configs and the grid."""
    import torch
    import vllm.model_executor.kernels.linear as kernels
    from vllm.model_executor.kernels.linear.mixed_precision.MPLinearKernel import (
        MPLinearLayerConfig,
    )
    from vllm.platforms.interface import PlatformEnum
    from vllm.scalar_type import scalar_types

    fields = inspect.signature(MPLinearLayerConfig).parameters
    real = kernels.__dict__.get("_real_choose") or kernels.choose_mp_linear_kernel

    def ask(cfg) -> dict:
        out = {}
        for major, minor in ARCHS:
            _Fake.cc = (major, minor)
            cc = major * 10 + minor
            try:
                chosen = real(cfg, cc).__name__
            except ValueError as exc:
                chosen = "none: " + " |".join(line.strip() for line in str(exc).splitlines()[1:])
            # each kernel of the CUDA list on its own: what its can_implement says
            why = {}
            for kernel in kernels._POSSIBLE_KERNELS[PlatformEnum.CUDA]:
                if kernel.get_min_capability() > cc:
                    why[kernel.__name__] = f"needs capability {kernel.get_min_capability()}"
                    continue
                try:
                    ok, reason = kernel.can_implement(cfg)
                except Exception as exc:  # noqa: BLE001 - a kernel's own crash is its answer
                    ok, reason = False, f"{type(exc).__name__}: {exc}"
                why[kernel.__name__] = "ok" if ok else str(reason)
            out[f"{major}.{minor}"] = {"chosen": chosen, "kernels": why}
        return out

    loader_out, grid_out = [], []
    with platform_swapped(fake_cuda()):
        for rec in records:
            cfg = rec.pop("config_obj")
            loader_out.append({**rec, "cuda": ask(cfg)})
        for case in grid():
            if case["g_idx"] and "has_g_idx" not in fields:
                continue  # 0.33.0 has no act-order
            wtype = {
                (4, False): scalar_types.uint4b8,
                (8, False): scalar_types.uint8b128,
                (4, True): scalar_types.uint4,
                (8, True): scalar_types.uint8,
            }[(case["bits"], case["zp"])]
            kw = dict(
                full_weight_shape=tuple(case["full"]),
                partition_weight_shape=tuple(case["part"]),
                weight_type=wtype,
                act_type=getattr(torch, case["act"]),
                group_size=case["group"],
                zero_points=case["zp"],
            )
            if "has_g_idx" in fields:
                kw["has_g_idx"] = case["g_idx"]
            grid_out.append({**case, "cuda": ask(MPLinearLayerConfig(**kw))})
    return loader_out, grid_out


def main(argv: list[str]) -> int:
    """Write the JSON named by ``argv[0]``."""
    out = Path(argv[0])
    probe = _load_probe()
    with tempfile.TemporaryDirectory() as tmp:
        import vllm.model_executor.kernels.linear as kernels

        kernels._real_choose = kernels.choose_mp_linear_kernel
        records, outcomes = loader_part(Path(tmp), probe)
    loader, cases = choose_part(records)
    import vllm

    seen = set()
    layers = []
    for r in loader:  # one row per (shape, tp, layer); every rank has the same config
        key = (r["tp"], r["layer"], json.dumps(r["config"]))
        if key not in seen:
            seen.add(key)
            layers.append(r)
    from vllm.utils.import_utils import has_humming

    for case in cases:  # the grid keeps the kernel taken (or "none"), the layers every reason
        case["cuda"] = {
            cc: "none" if r["chosen"].startswith("none") else r["chosen"]
            for cc, r in case["cuda"].items()
        }
    from pytest_vllm_env.readers.vllm_mp_kernels import FILES, parse

    site = Path(vllm.__file__).resolve().parents[1]
    texts = [(site / f).read_text() if (site / f).exists() else None for f in FILES]
    head = {
        "vllm": vllm.__version__,
        "installed": {"humming": bool(has_humming())},
        # what readers/vllm_mp_kernels.py reads from this wheel's own files
        "rules": parse(*texts).to_json(),
        "loads": outcomes,
        "layers": layers,
    }
    text = json.dumps(head, indent=1)[:-2] + ',\n "grid": [\n'
    text += ",\n".join("  " + json.dumps(c) for c in cases) + "\n ]\n}\n"
    out.write_text(text)
    print(f"{out}: {len(layers)} layer configs, {len(cases)} grid configs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
