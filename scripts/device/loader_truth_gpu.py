"""Issue 22, on the device: what real vLLM computes with each loader mutation that loads.

The CPU runs of the real vLLM 0.26.0 / 0.33.0 loaders (``fixtures/loader_truth/outcomes.json``)
settle every refusal, every parameter left unset, every cast and which copy of a tensor stays;
what the model then computes needs a GPU. This loads every mutation the CPU saw load (vLLM
0.26.0 record; one GPU, so tensor_parallel_size 1 only) in the staged vLLM, each in its own
process through the suite's own probe (``probes/vllm_generate.py``: greedy tokens, the first
position's top-20 logprobs, the English export's perplexity on a fixed paragraph, the quant
config class vLLM chose), ``--parallel`` loads sharing the GPU, the launch ``quantization=``
of the variant passed as vLLM's ``quantization`` argument.

It only measures; ``tests/test_loader_truth_gpu.py`` judges (refuses / wrong / works against
the unmodified export of the same base) and holds the checkpoint.* verdicts against it once
the JSON is committed as ``fixtures/measured/loader_truth_h100.json``.

Usage (device machine, after the vLLM stage of ../shared/gpu/README.md; repo root as cwd;
PYTHONPATH=/tmp/site:$PWD): ``python scripts/device/loader_truth_gpu.py OUT.json
[--budget S] [--parallel N] [--only NAME ...]``. OUT.json is rewritten after every load, so a
run cut short keeps what it measured; variants the budget left out are listed in ``not_run``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from fixtures import loader_variants  # noqa: E402
from pytest_vllm_env.runners.gpu import run_probe  # noqa: E402

TRUTH = REPO / "fixtures" / "loader_truth" / "outcomes.json"
BASES = ("good", "good-tied", "qwen3-good")  # the unmodified exports: loaded first
KEEP = (
    "vllm",
    "quantization",
    "quant_config",
    "kv_cache_dtype",
    "tokens",
    "tokens_again",
    "first_logprobs",
    "paragraph",
    "load_seconds",
    "exception",
    "exception_frame",
    "exception_tensor",
    "logprobs_exception",
)


def wanted(release: str = "0.26.0") -> list[str]:
    """The variants the CPU saw load in ``release`` and one GPU can start (tp 1), bases first."""
    truth = json.loads(TRUTH.read_text())["variants"]
    names = [
        n
        for n, v in loader_variants.VARIANTS.items()
        if not truth[n][release].get("refused") and int(v.launch.get("tp", 1)) == 1
    ]
    return [b for b in BASES if b in names] + [n for n in names if n not in BASES]


def smi() -> str:
    """The GPU, as nvidia-smi names it (empty when there is none)."""
    if not shutil.which("nvidia-smi"):
        return ""
    query = ["--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"]
    try:
        return subprocess.run(
            ["nvidia-smi", *query], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--budget", type=float, default=420.0, help="seconds for every load together")
    ap.add_argument("--parallel", type=int, default=4, help="loads sharing the GPU at once")
    ap.add_argument("--per-load", type=float, default=240.0, help="seconds one load may take")
    ap.add_argument("--only", nargs="*", default=None, help="these variants only")
    ap.add_argument("--work", type=Path, default=None, help="where the variants are built")
    args = ap.parse_args(argv)
    start = time.monotonic()
    deadline = start + args.budget
    # the bases always: every judgement compares a variant against its unmodified export
    names = [n for n in wanted() if args.only is None or n in args.only or n in BASES]
    work = args.work or Path(tempfile.mkdtemp(prefix="loadertruth-"))
    environ = dict(os.environ)
    environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")  # flashinfer is not staged
    environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # loads sharing one GPU: a share of its memory each and a fixed KV budget, so that vLLM
    # skips the memory profiling the other loads would disturb (as plugins/gpu.py does)
    environ.setdefault("VLLM_ENV_PROBE_GPU_UTIL", f"{min(0.25, 0.8 / max(args.parallel, 1)):.3f}")
    environ.setdefault("VLLM_ENV_PROBE_KV_BYTES", str(256 * 1024 * 1024))
    result: dict = {
        "schema": 1,
        "device": smi(),
        "python": sys.executable,
        "parallel": args.parallel,
        "budget_s": args.budget,
        "variants": {},
        "not_run": [],
    }
    lock = threading.Lock()

    def save() -> None:
        with lock:
            result["seconds"] = round(time.monotonic() - start, 1)
            tmp = args.out.with_suffix(".tmp")
            tmp.write_text(json.dumps(result, indent=1, sort_keys=True))
            os.replace(tmp, args.out)

    def load(name: str) -> None:
        left = deadline - time.monotonic()
        if left < 45:  # too little left for a load: say so rather than be killed mid-way
            with lock:
                result["not_run"].append(name)
            save()
            return
        variant = loader_variants.VARIANTS[name]
        folder = loader_variants.make(name, work / name)
        quant = variant.launch.get("quantization")
        t0 = time.monotonic()
        probe = run_probe(
            sys.executable,
            "vllm_generate.py",
            [str(folder), quant or ""],
            env=environ,
            timeout=min(args.per_load, left - 10),
        )
        data = probe.data or {}
        rec = {k: data[k] for k in KEEP if k in data}
        rec.update(
            base=variant.base,
            launch_quantization=quant,
            loaded=bool(data.get("tokens")),
            problem=probe.problem,
            timed_out=probe.timed_out,
            wall_seconds=round(time.monotonic() - t0, 1),
        )
        if not data or probe.problem:
            rec["output_tail"] = probe.output_tail[-1500:]
        with lock:
            result["variants"][name] = rec
            if data.get("vllm"):
                result["vllm"] = data["vllm"]
        save()
        ppl = (rec.get("paragraph") or {}).get("perplexity")
        print(
            f"{name:28s} loaded={rec['loaded']} quant={rec.get('quant_config')} ppl={ppl} "
            f"{rec['wall_seconds']} s {(rec.get('exception') or probe.problem or '')[:120]}",
            flush=True,
        )

    save()
    # the bases first, alone in their round: every later judgement compares against them, and
    # the first FP8 load compiles kernels the others then find cached
    with ThreadPoolExecutor(max_workers=max(args.parallel, 1)) as pool:
        list(pool.map(load, [n for n in names if n in BASES]))
    with ThreadPoolExecutor(max_workers=max(args.parallel, 1)) as pool:
        list(pool.map(load, [n for n in names if n not in BASES]))
    save()
    done = len(result["variants"])
    for base in BASES:
        rec = result["variants"].get(base)
        if rec is not None and not rec["loaded"]:
            why = rec.get("exception") or rec.get("problem")
            print(f"WARNING: the unmodified {base} did not load ({why}): its variants are unknown")
    print(f"{done} loads, {len(result['not_run'])} not run, {result['seconds']} s -> {args.out}")
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
