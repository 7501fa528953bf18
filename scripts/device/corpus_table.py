# ruff: noqa: E501  (a table printer: long format strings read best whole)
"""Turn a calibration run's report into the docs/gpu-runs.md table (one row per checkpoint).

Usage: python scripts/device/corpus_table.py REPORT.json [variants.json]
Columns: variant, what was done, toolchain verdict (worst modelopt.* outcome and the effect
it predicts), what vLLM did (observed: works / wrong / refuses, with the load error or the
perplexity), the gpu tier's verdict without a reference (generate, sane, perplexity, known
answer) and with one (vllm-reference), and whether prediction and reality agree.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict

ORDER = ("error", "failed", "warning", "passed", "skipped")


def worst(outcomes: list[str]) -> str:
    return next((o for o in ORDER if o in outcomes), "-")


def main() -> int:
    report = json.load(open(sys.argv[1]))
    whats = json.load(open(sys.argv[2])) if len(sys.argv) > 2 else {}
    rows: dict[str, dict[str, dict]] = defaultdict(dict)
    for check in report["checks"]:
        m = re.search(r"\[([^\]]+)\]$", check.get("test", ""))
        if m:
            rows[m.group(1)][check["id"]] = check
    print(
        "| variant | done | expected | toolchain | vLLM did | gpu, no reference | with reference | agree |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in sorted(
        rows, key=lambda n: (n not in whats, list(whats).index(n) if n in whats else 0, n)
    ):
        c = rows[name]
        tool = [v["outcome"] for k, v in c.items() if k.startswith("modelopt.")]
        effects = [
            v["evidence"].get("vllm_effect")
            for k, v in c.items()
            if k.startswith("modelopt.") and v["outcome"] in ("failed", "error", "warning")
        ]
        agree = c.get("gpu.prediction-agrees", {})
        ev = agree.get("evidence", {})
        gen = c.get("gpu.vllm-generate", {})
        did = ev.get("observed", "?")
        detail = ""
        if gen.get("outcome") == "failed":
            detail = (gen.get("evidence", {}).get("exception") or gen.get("summary", ""))[:90]
        ppl = (
            c.get("gpu.vllm-perplexity", {})
            .get("evidence", {})
            .get("paragraph", {})
            .get("perplexity")
        )
        if ppl is not None:
            detail += f" ppl {ppl}"
        no_ref = {
            k.split(".")[1]: c[k]["outcome"]
            for k in (
                "gpu.vllm-generate",
                "gpu.vllm-sane",
                "gpu.vllm-perplexity",
                "gpu.vllm-known-answer",
            )
            if k in c
        }
        no_ref_s = (
            worst(list(no_ref.values()))
            + " ("
            + ", ".join(f"{k} {v}" for k, v in no_ref.items() if v != "passed")
            + ")"
        )
        ref = c.get("gpu.vllm-reference", {})
        ref_s = ref.get("outcome", "-")
        if ref.get("evidence", {}).get("difference_nats") is not None:
            ref_s += f" ({ref['evidence']['difference_nats']} nats)"
        tool_s = worst(tool) + (f" ({', '.join(e for e in effects if e)})" if any(effects) else "")
        print(
            f"| {name} | {whats.get(name, {}).get('what', '')[:70]} | {whats.get(name, {}).get('expect', '')} | {tool_s} | {did}{(': ' + detail.strip()) if detail.strip() else ''} | {no_ref_s} | {ref_s} | {agree.get('outcome', '-')} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
