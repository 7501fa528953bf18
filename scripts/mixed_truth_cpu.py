"""Record what the REAL vLLM loaders do with the MIXED_PRECISION variants, on this CPU machine.

Builds every variant of ``fixtures/mixed_variants.py`` and runs
``pytest_vllm_env/probes/vllm_load_weights.py --batch`` (load mode: vLLM's own config code,
``ModelOptMixedPrecisionConfig``, model construction and weight loader, parameters filled with
sentinels to see which were written) in each release's venv
(``~/.cache/pytest-vllm-env/venvs/vllm-<release>``, see ``scripts/loader_truth_cpu.py``), one
release at a time, and writes the essentials (``loader_truth_cpu.summarize``) into
``fixtures/loader_truth/mixed_precision.json["variants"]``, which ``tests/test_modelopt_mixed.py``
holds the suite's verdicts against.

    python scripts/mixed_truth_cpu.py [--releases 0.26.0,0.33.0] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from loader_truth_cpu import PROBE, VENVS, summarize  # noqa: E402

from fixtures import mixed_variants  # noqa: E402

OUT = REPO / "fixtures" / "loader_truth" / "mixed_precision.json"


def probe(release: str, names: list[str], tmp: Path, timeout: int = 1800) -> dict[str, dict]:
    """{variant: its summary} from one run of the probe in ``release``'s venv, in ``tmp``."""
    # the probe sets up vLLM's process groups once, with the first job's config, and vLLM's
    # initialize_model_parallel creates the expert-parallel group only for a MoE model: MoE first
    names = sorted(names, key=lambda n: not n.startswith("moe-"))
    jobs = [
        {"name": n, "model": str(mixed_variants.make(n, tmp / n)), "mode": "load"} for n in names
    ]
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    python = VENVS / f"vllm-{release}" / "bin" / "python"
    start = time.monotonic()
    proc = subprocess.run(
        [str(python), str(PROBE), "--batch", str(tmp / "jobs.json")],
        capture_output=True, text=True, timeout=timeout, cwd=tmp,
    )  # fmt: skip
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    print(f"vLLM {release}: {len(lines)} of {len(jobs)} jobs, "
          f"{time.monotonic() - start:.0f} s, rc {proc.returncode}")  # fmt: skip
    if len(lines) != len(jobs):
        print(proc.stderr[-3000:])
    out: dict[str, dict] = {}
    for result in lines:
        summary = summarize(result)
        summary.pop("shapes", None)
        # the MoE layer's parameters as vLLM built them (their dtypes say which method
        # get_quant_method gave it)
        params = ((result.get("ranks") or {}).get("0") or {}).get("params") or {}
        moe = {
            p: [v.get("shape"), v.get("dtype")]
            for p, v in sorted(params.items())
            if ".layers.0.mlp.experts." in p
        }
        if moe:
            summary["moe_params"] = moe
        out[result["job"]["name"]] = summary
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--releases", default="0.26.0,0.33.0")
    ap.add_argument("--only", default="")
    ap.add_argument("--timeout", type=int, default=1800)
    a = ap.parse_args(argv)
    names = [n for n in a.only.split(",") if n] or list(mixed_variants.VARIANTS)
    recorded = json.loads(OUT.read_text())
    variants = recorded.setdefault("variants", {})
    recorded["variants_how"] = (
        "scripts/mixed_truth_cpu.py: fixtures/mixed_variants.py's checkpoints through "
        "pytest_vllm_env/probes/vllm_load_weights.py --mode load in each release's venv; "
        "summarized as scripts/loader_truth_cpu.py:summarize does"
    )
    for release in a.releases.split(","):
        with tempfile.TemporaryDirectory(prefix="mixed-truth-") as tmp:
            for name, summary in probe(release, names, Path(tmp), a.timeout).items():
                variants.setdefault(name, {})[release] = summary
    OUT.write_text(json.dumps(recorded, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
