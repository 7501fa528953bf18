"""Record what the REAL vLLM loaders do with the loader mutations, on this CPU machine.

For each release (a py3.12 venv with that vLLM and its pinned torch, outside the repo:
``~/.cache/pytest-vllm-env/venvs/vllm-<version>``), builds every variant of
``fixtures/loader_variants.py`` and runs ``pytest_vllm_env/probes/vllm_load_weights.py
--batch`` on them (vLLM's own config code, model construction and weight loader; see the
probe's docstring), then writes the essentials to ``fixtures/loader_truth/outcomes.json``,
which ``tests/test_loader_truth.py`` holds the toolchain verdict against.

Usage::

    python scripts/loader_truth_cpu.py [--releases 0.26.0,0.33.0] [--only NAME,...]
    python scripts/loader_truth_cpu.py --corpus formats   # fixtures/format_variants.py
    python scripts/loader_truth_cpu.py --corpus moe       # fixtures/moe_tp.py

``--corpus formats`` runs the blind mutations of the compressed-tensors / HF FP8 exports
(``fixtures/format_variants.py``) and their base exports (``base:<export>``, whose loaded
values the variants' are compared with) into ``fixtures/loader_truth/formats_outcomes.json``,
keeping the sum of every small parameter (which numbers were loaded), and two meta-mode jobs
(``meta:<export>``: the loader on header-shaped meta tensors) to show that mode works there.

Make a venv (once, several GB of CUDA wheels that import fine without a GPU)::

    P=~/.cache/pytest-vllm-env/venvs
    /root/.pyenv/versions/3.12.1/bin/python3.12 -m venv $P/vllm-0.26.0
    $P/vllm-0.26.0/bin/pip install torch==2.11.0 vllm==0.26.0
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fixtures import format_variants, loader_variants, moe_tp  # noqa: E402
from pytest_vllm_env.facts import vllm_loader_facts  # noqa: E402

VENVS = Path.home() / ".cache" / "pytest-vllm-env" / "venvs"
PROBE = REPO / "pytest_vllm_env" / "probes" / "vllm_load_weights.py"
OUT = REPO / "fixtures" / "loader_truth" / "outcomes.json"
FORMATS_OUT = REPO / "fixtures" / "loader_truth" / "formats_outcomes.json"
MOE_OUT = REPO / "fixtures" / "loader_truth" / "moe_tp.json"
META_PROBED = ("ct-fp8-dynamic", "ct-w4a16-asym", "hf-fp8-block")
# the architectures whose model classes the recorded source facts keep
ARCHS = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM")
# the probe's stubs for vLLM's compiled ops say this when the load itself calls one (online
# quantization): what vLLM does then is the GPU's to say
CPU_ONLY = "is not available in the CPU load probe"
# 0.33.0 picks the WNA16 MoE kernel in the method's __init__ (fused_moe/oracle/int_wna16.py),
# before create_weights' group checks: on the CPU none is found, what a GPU does is a GPU's
NO_CPU_BACKEND = "No WNA16 MoE backend supports the deployment configuration"
KV_PARAMS = (".attn.q_scale", ".attn.k_scale", ".attn.v_scale", ".attn.prob_scale")


def summarize(result: dict, all_sums: bool = False) -> dict:
    """The facts a verdict is held against, from one probe result (``all_sums``: the sum of
    every small parameter, not only the final norm's)."""
    out: dict = {"vllm": result.get("vllm")}
    if not result.get("ok"):
        out["probe_error"] = (result.get("error") or {}).get("message")
        return out
    config = result.get("config") or {}
    out["config"] = {
        k: config.get(k) for k in ("quantization", "quant_config", "quant_algo", "exclude_modules")
    }
    if result.get("refused"):
        out["refused"] = _refusal(result["refused"], "config")
        return out
    ranks = result.get("ranks") or {}
    for rank, r in sorted(ranks.items()):
        if r.get("refused"):
            refusal = _refusal(r["refused"], r.get("stage") or "load", rank)
            if CPU_ONLY in refusal["message"]:  # a compiled op the load itself calls
                out["undetermined"] = refusal["message"]
            else:
                out["refused"] = refusal
            return out
    r0 = ranks.get("0") or {}
    written = r0.get("written") or {}
    out["unset"] = {
        p: w for p, w in sorted(written.items()) if w != "all" and not p.endswith(KV_PARAMS)
    }
    out["kv_params_unset"] = sorted(
        p for p, w in written.items() if w != "all" and p.endswith(KV_PARAMS)
    )
    out["casts"] = sorted(
        {
            (x["tensor"], x["param"], x["from"], x["to"])
            for x in r0.get("routed", [])
            if x["from"] != x["to"] and x["to"] != "?"  # "?": no such parameter (ignored)
        }
    )
    routed = {x["tensor"] for x in r0.get("routed", []) if x["to"] != "?"}
    events: dict[str, list[str]] = {}
    for kind, name in r0.get("events", []):
        events.setdefault(kind, []).append(name)
    out["skipped"] = sorted(set(events.get("skipped", [])))
    out["ignored"] = sorted(set(events.get("ignored", [])))
    out["not_routed"] = sorted(set(r0.get("tensors", [])) - routed)
    out["sums"] = {
        k: v for k, v in (r0.get("sums") or {}).items() if all_sums or k in ("model.norm.weight",)
    }
    if r0.get("loaded") is not None:  # meta mode: the names load_weights reported
        out["loaded"] = len(r0["loaded"])
    out["shapes"] = {
        rank: {
            p: v["shape"]
            for p, v in (r.get("params") or {}).items()
            if ".layers.0." in p and p.endswith(".weight") and "norm" not in p
        }
        for rank, r in sorted(ranks.items())
    }
    return out


def _refusal(refused: dict, stage: str, rank: str | None = None) -> dict:
    msg = refused.get("message") or ""
    if "Value error, " in msg:  # pydantic's wrapper around vLLM's own ValueError
        msg = msg.split("Value error, ", 1)[1].split(" [type=", 1)[0]
    msg = re.sub(r"/tmp/loader-truth-[^/]+/", "", msg)  # the variant's temporary folder
    out = {
        "stage": stage,
        "type": refused.get("type"),
        "message": msg[:400],
        "at": f"{refused.get('file')}:{refused.get('line')}",
    }
    if refused.get("tensor"):
        out["tensor"] = refused["tensor"]
    if rank is not None:
        out["rank"] = rank
    return out


def record_sources(release: str) -> None:
    """What the static reader makes of that release's own files (the installed wheel in
    its venv): fixtures/loader_truth/vllm-<release>.json, what the default tests judge with."""
    write_sources(release, ARCHS, OUT.parent / f"vllm-{release}.json")


def write_sources(release: str, archs: list[str], path: Path) -> None:
    """The static reader's facts of ``archs`` in that release's installed wheel, written to
    ``path`` (scripts/models_truth_cpu.py writes its bases' architectures the same way)."""
    site = next((VENVS / f"vllm-{release}" / "lib").glob("python3*/site-packages"))
    facts = vllm_loader_facts.read(site, archs, release)
    path.write_text(json.dumps(facts.to_json(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {path.relative_to(REPO)}")


def probe_release(release: str, tmp: str, jobs: int, timeout: int) -> tuple[list[dict], dict]:
    """The probe on ``tmp``/jobs.json in that release's venv (one process): its JSON lines,
    and the run's record (python, torch, seconds, date). Every corpus runs its jobs so."""
    python = VENVS / f"vllm-{release}" / "bin" / "python"
    start = time.monotonic()
    proc = subprocess.run(
        [str(python), str(PROBE), "--batch", str(Path(tmp) / "jobs.json")],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp,
    )
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    print(
        f"vLLM {release}: {len(lines)} of {jobs} jobs, "
        f"{time.monotonic() - start:.0f} s, rc {proc.returncode}"
    )
    if len(lines) != jobs:
        print(proc.stderr[-3000:])
    run = {
        "python": str(python),
        "torch": lines[0].get("torch") if lines else None,
        "seconds": round(time.monotonic() - start),
        "date": time.strftime("%Y-%m-%d"),
    }
    return lines, run


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--releases", default="0.26.0,0.33.0")
    ap.add_argument("--only", default="")
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("--sources-only", action="store_true", help="only re-read the source facts")
    ap.add_argument("--corpus", choices=("modelopt", "formats", "moe"), default="modelopt")
    a = ap.parse_args(argv)
    releases = a.releases.split(",")
    only = [n for n in a.only.split(",") if n]
    if a.corpus == "formats":
        # the blind round on the formats beyond ModelOpt: every small parameter's sum kept
        run_corpus(FORMATS_OUT, _formats_jobs, format_variants, releases, only, a.timeout, True)
        return 0
    if a.corpus == "moe":
        return run_moe(a)
    if not a.sources_only:
        run_corpus(OUT, _modelopt_jobs, loader_variants, releases, only, a.timeout, False)
    for release in releases:
        record_sources(release)
    return 0


def _modelopt_jobs(tmp: Path, only: list[str]) -> list[dict]:
    """Every variant of fixtures/loader_variants.py (or those named), loaded."""
    jobs = []
    for name in only or list(loader_variants.VARIANTS):
        folder = loader_variants.make(name, tmp / name)
        launch = loader_variants.VARIANTS[name].launch
        jobs.append({"name": name, "model": str(folder), "mode": "load", **launch})
    return jobs


def _formats_jobs(tmp: Path, only: list[str]) -> list[dict]:
    """Every variant of fixtures/format_variants.py, the exports they are made from
    (``base:<export>``) and the meta-mode jobs (``meta:<export>``)."""
    names = only or list(format_variants.VARIANTS)
    jobs = []
    bases = sorted(
        {format_variants.VARIANTS[n].base for n in names if n in format_variants.VARIANTS}
    )
    for base in bases:
        jobs.append({"name": f"base:{base}", "model": str(format_variants.EXPORTS / base)})
    if not only:
        for base in META_PROBED:
            folder = str(format_variants.EXPORTS / base)
            jobs.append({"name": f"meta:{base}", "model": folder, "mode": "meta"})
    for name in names:
        folder = format_variants.make(name, tmp / name)
        jobs.append({"name": name, "model": str(folder), **format_variants.VARIANTS[name].launch})
    for job in jobs:
        job.setdefault("mode", "load")
    return jobs


def run_corpus(
    out: Path,
    make_jobs: Callable[[Path, list[str]], list[dict]],
    corpus: Any,
    releases: list[str],
    only: list[str],
    timeout: int,
    all_sums: bool,
) -> None:
    """Build the corpus's jobs, run the probe on them once per release (one process each),
    and merge what each load did into ``out``, with each variant's description from
    ``corpus`` (``fixtures.loader_variants`` or ``fixtures.format_variants``)."""
    recorded = json.loads(out.read_text()) if out.is_file() else {"variants": {}, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="loader-truth-") as tmp:
        jobs = make_jobs(Path(tmp), only)
        (Path(tmp) / "jobs.json").write_text(json.dumps(jobs))
        for release in releases:
            lines, recorded["runs"][release] = probe_release(release, tmp, len(jobs), timeout)
            for result in lines:
                name = result["job"]["name"]
                recorded["variants"].setdefault(name, {})[release] = summarize(result, all_sums)
    for job in jobs:  # base: and meta: jobs are exports, not variants: nothing to describe
        if job["name"] in corpus.VARIANTS:
            recorded["variants"].setdefault(job["name"], {})["variant"] = corpus.describe(
                job["name"]
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out.relative_to(REPO)}")


def moe_refine(release: str) -> int | None:
    """What readers.vllm_quant_source reads of that release's fused_moe/oracle/fp8.py (the
    smallest block Fp8Config's experts are refined to; None: no refinement)."""
    from pytest_vllm_env.readers.vllm_quant_source import MOE_FP8_ORACLE_PY, parse

    site = next((VENVS / f"vllm-{release}" / "lib").glob("python3*/site-packages"))
    path = site / MOE_FP8_ORACLE_PY
    text = path.read_text() if path.is_file() else None
    return parse(None, None, None, text).moe_fp8_refine_min


def run_moe(a: argparse.Namespace) -> int:
    """The fused-MoE tensor-parallel cases (fixtures/moe_tp.py): one probe process per
    release, every rank simulated; what each rank refused (or its experts' shapes)."""
    names = [n for n in a.only.split(",") if n] or list(moe_tp.VARIANTS)
    empty: dict = {"variants": {}, "runs": {}}
    recorded = json.loads(MOE_OUT.read_text()) if MOE_OUT.is_file() else empty
    with tempfile.TemporaryDirectory(prefix="loader-truth-") as tmp:
        jobs = [
            {
                "name": n,
                "model": str(moe_tp.make(n, Path(tmp) / n)),
                "mode": "load",
                **moe_tp.VARIANTS[n].launch,
            }
            for n in names
        ]
        (Path(tmp) / "jobs.json").write_text(json.dumps(jobs))
        for release in a.releases.split(","):
            lines, recorded["runs"][release] = probe_release(release, tmp, len(jobs), a.timeout)
            for result in lines:
                out = summarize(result)
                out["experts"] = {
                    rank: {
                        p.rsplit(".", 1)[1]: v["shape"]
                        for p, v in (r.get("params") or {}).items()
                        if ".experts." in p and ".layers.0." in p
                    }
                    for rank, r in sorted((result.get("ranks") or {}).items())
                }
                for key in ("unset", "kv_params_unset", "casts", "skipped", "ignored", "sums"):
                    out.pop(key, None)
                refused = (out.get("refused") or {}).get("message", "")
                if NO_CPU_BACKEND in refused:  # the backend oracle runs before create_weights
                    out["gpu_only"] = out.pop("refused")["message"]
                recorded["variants"].setdefault(result["job"]["name"], {})[release] = out
            recorded.setdefault("sources", {})[release] = moe_refine(release)
    for n in names:
        recorded["variants"].setdefault(n, {})["variant"] = moe_tp.describe(n)
    MOE_OUT.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    print(f"wrote {MOE_OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
