"""The gpu tier's wall time against one plain vLLM load + generate of the same checkpoint.

Run on a GPU machine with vLLM in the target env (scripts/device/calibrate2.sh does):
``python benchmarks/gpu_tier.py --vllm-env=PREFIX CHECKPOINT [--rounds 2]``. Alternates
plain and tier runs (each in fresh processes) and prints each time and the ratio; issue
14's goal is tier <= 1.3x plain. "Plain" is what a user's smoke test does: LLM(model)
with the probe's settings, one generate, exit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

PLAIN = """
import os, sys
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
from vllm import LLM, SamplingParams
files = ("tokenizer.json", "tokenizer_config.json")
tok = any(os.path.isfile(os.path.join(sys.argv[1], f)) for f in files)
llm = LLM(model=sys.argv[1], enforce_eager=True, gpu_memory_utilization=0.25, max_model_len=256,
          skip_tokenizer_init=not tok)
out = llm.generate([{"prompt_token_ids": [1, 15, 27, 99, 3]}],
                   SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))
print(list(out[0].outputs[0].token_ids))
"""


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    rc = subprocess.run(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ).returncode
    return time.perf_counter() - start, rc


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--vllm-env", required=True)
    ap.add_argument("--python", default=None, help="the env's python (default PREFIX/bin/python)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--plugin", action="store_true", help="load the plugin with -p (not installed)")
    args = ap.parse_args()
    py = args.python or str(Path(args.vllm_env) / "bin" / "python")
    env = dict(os.environ)
    tier = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--noconftest",
        "-p", "no:xdist", "--vllm-conformance", "-m", "gpu", "-q",
        f"--vllm-env={args.vllm_env}", f"--modelopt-checkpoint={args.checkpoint}",
    ]  # fmt: skip
    if args.plugin:
        tier[3:3] = ["-p", "pytest_vllm_env.plugin"]
    report = Path(args.json or "gpu_tier_bench.json").with_suffix(".report.json")
    tier += [f"--vllm-env-report={report}", "--durations=6"]
    rows = []
    for i in range(args.rounds):
        plain_s, plain_rc = timed([py, "-c", PLAIN, args.checkpoint], env)
        tier_s, tier_rc = timed(tier, env)
        try:  # where the tier's time went: the probe process, and the load inside it
            gen = next(
                c
                for c in json.loads(report.read_text())["checks"]
                if c["id"] == "gpu.vllm-generate"
            )
            print(
                f"  probe process {gen['evidence'].get('process_seconds')} s, "
                f"load {gen['evidence'].get('load_seconds')} s"
            )
        except (OSError, ValueError, StopIteration, KeyError):
            pass
        rows.append({"round": i, "plain_s": round(plain_s, 1), "tier_s": round(tier_s, 1),
                     "ratio": round(tier_s / plain_s, 2), "rc": [plain_rc, tier_rc]})  # fmt: skip
        print(f"round {i}: plain {plain_s:.1f} s (rc {plain_rc}), gpu tier {tier_s:.1f} s "
              f"(rc {tier_rc}), ratio {tier_s / plain_s:.2f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
