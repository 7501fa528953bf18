"""How long does ``pytest-vllm-env merge`` take for a fleet, and how big is its page?

Writes N node reports of C checks each (schema 2, as ``--vllm-env-report`` writes them) into
a temp folder: GPUs of three kinds, drivers of two releases, and a few checks that fail on
some nodes only (the node-specific failures the merge exists to find), then times, best of
R runs in process: reading the reports, the merge (the "facts that differ" search), the text
summary and the HTML page; and prints the page's size and the text summary's line count.

Goal (issue 21): 1,000 nodes x 100 checks merged in <= 1 s (it took 38 s: the search for
the facts that differ was quadratic in the nodes).

    .venv/bin/python benchmarks/fleet_merge.py [--nodes 1000] [--checks 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_vllm_env.cli import read_reports  # noqa: E402
from pytest_vllm_env.fleet import matrix, page  # noqa: E402

GPUS = [
    ("NVIDIA H100 80GB HBM3", "9.0"),
    ("NVIDIA GeForce RTX 5090", "12.0"),
    ("NVIDIA A100", "8.0"),
]


def write_reports(folder: Path, nodes: int, checks: int) -> None:
    """``nodes`` reports of ``checks`` checks: on the RTX 5090 nodes (every third) the first
    three checks fail; on nodes with the old driver (every seventh) the fourth fails."""
    for n in range(nodes):
        gpu, cc = GPUS[n % 3]
        old_driver = n % 7 == 0
        out = []
        for c in range(checks):
            failed = (c < 3 and n % 3 == 1) or (c == 3 and old_driver)
            out.append(
                {
                    "id": f"area{c % 9}.check-{c:03d}",
                    "area": f"area{c % 9}",
                    "outcome": "failed" if failed else ("skipped" if c % 10 == 9 else "passed"),
                    "summary": f"check {c} on {gpu}" if failed else "",
                    "fix": 'add `cuda-nvcc = "12.8.*"` to [dependencies]' if failed else "",
                    "evidence": {},
                    "test": f"pytest_vllm_env/suite/test_area{c % 9}.py::test_{c}",
                }
            )
        report = {
            "schema": 2,
            "created": f"2026-12-07T10:{n // 60 % 60:02d}:{n % 60:02d}+00:00",
            "strict": False,
            "node": {
                "name": f"gpu-{n:04d}",
                "hostname": f"gpu-{n:04d}.cluster",
                "driver_version": "550.144.03" if old_driver else "580.159.04",
                "cuda_driver_version": "12.4" if old_driver else "13.0",
                "gpus": [
                    {"name": gpu, "compute_capability": cc, "uuid": f"GPU-{n}-{i}"}
                    for i in range(8)
                ],
            },
            "env": {
                "name": "default",
                "prefix": "/opt/env",
                "python_version": "3.12.7",
                "packages": {"torch": "2.11.0", "vllm": "0.26.0", "cuda-version": "12.8"},
            },
            "targets": {"cuda_archs": ["9.0", "12.0"]},
            "checks": out,
        }
        (folder / f"gpu-{n:04d}.json").write_text(json.dumps(report))


def best(fn, repeat: int) -> tuple[float, float, object]:
    """Best wall time and best CPU time of ``repeat`` runs, and the result. The CPU time is
    the number to judge on a shared machine (a 2-core box running others' tests stretched
    the wall time 2-5x)."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--checks", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_reports(folder, args.nodes, args.checks)
        read_s, read_cpu, (reports, bad) = best(lambda: read_reports([folder]), args.repeat)
        merge_s, merge_cpu, fleet = best(lambda: matrix.merge(reports, bad), args.repeat)
        text_s, text_cpu, lines = best(lambda: matrix.render_text(fleet), args.repeat)
        html_s, html_cpu, html = best(lambda: page.render(fleet), args.repeat)
    result = {
        "nodes": args.nodes,
        "checks": args.checks,
        "read_s": round(read_s, 3),
        "read_cpu_s": round(read_cpu, 3),
        "merge_s": round(merge_s, 3),
        "merge_cpu_s": round(merge_cpu, 3),
        "text_s": round(text_s, 3),
        "text_cpu_s": round(text_cpu, 3),
        "html_s": round(html_s, 3),
        "html_cpu_s": round(html_cpu, 3),
        "html_bytes": len(html.encode()),
        "text_lines": len(lines),
        "longest_text_line": max(len(line) for line in lines),
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
