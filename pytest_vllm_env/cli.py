"""The ``pytest-vllm-env`` console script: merge the reports of many nodes, or run a fleet.

    pytest-vllm-env merge reports/*.json --json fleet.json --html fleet.html
    pytest-vllm-env fleet --ray-address=auto -- --vllm-conformance -m gpu --vllm-env=/opt/env

Exit status (both commands): 0 every node passed (warnings allowed, unless ``--strict``);
1 a node failed a check, or gave no report; 2 a report file could not be read (named on
stderr with the field that is wrong, and in the outputs; the readable ones are still merged
and written; 2 wins over 1); 4 usage error (bad options, an output path that is a directory,
lies under a file or cannot be written, Ray not installed, no cluster to connect to).
docs/fleet.md is the manual.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from pytest_vllm_env.fleet import matrix, page
from pytest_vllm_env.fleet.reports import Report, ReportError, expand_inputs, load
from pytest_vllm_env.text import terminal_safe

USAGE_ERROR = 4


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # 2 means "a report could not be read"; a bad option is a usage error, as in pytest
        self.print_usage(sys.stderr)
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pytest-vllm-env",
        description="Merge pytest-vllm-env reports of many nodes into one view, or run the "
        "suite on every node of a Ray cluster.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    m = sub.add_parser(
        "merge",
        help="merge JSON reports (files or directories of *.json) into a nodes x checks view",
        description="Merge --vllm-env-report files of many nodes (and envs). Exit 0 when every "
        "node passed, 1 when any failed, 2 when a report could not be read (named with the "
        "field that is wrong; the rest are merged), 4 on a usage error (a bad option, an "
        "--json/--html path that is a directory, lies under a file or cannot be written).",
    )
    m.add_argument("reports", nargs="+", metavar="REPORT", help="report files or directories")
    _outputs(m)
    f = sub.add_parser(
        "fleet",
        help="run pytest on every node of a Ray cluster and merge the reports",
        description="Run `python -m pytest PYTEST_ARGS --vllm-env-report=...` once on every "
        "alive node of a Ray cluster (one task per node, pinned with node affinity, holding "
        "the node's GPUs), gather the reports and merge them. Needs Ray: "
        "pip install 'pytest-vllm-env[fleet]'.",
    )
    f.add_argument(
        "--ray-address", default=None, help="the cluster (ray.init address); default: auto"
    )
    f.add_argument(
        "--gpus",
        default="all",
        help="GPUs each node's task holds: 'all' of the node's (default), or a number; "
        "0 runs without holding GPUs (the toolchain tier)",
    )
    f.add_argument("--only-gpu-nodes", action="store_true", help="skip nodes without GPUs")
    f.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds from the start after which nodes that have not answered are reported "
        "as no answer and their tasks cancelled (default 3600)",
    )
    f.add_argument(
        "--out",
        default="vllm-env-fleet",
        help="folder for reports/<node>.json, fleet.json and fleet.html (default vllm-env-fleet)",
    )
    f.add_argument(
        "--python", default=None, help="Python on the nodes (default: the Ray worker's own)"
    )
    f.add_argument(
        "--chdir",
        default=None,
        help="working directory on the nodes (default: this one, where it exists there)",
    )
    _outputs(f)
    f.add_argument("pytest_args", nargs=argparse.REMAINDER, help="-- then the pytest arguments")
    return parser


def _outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="FILE", help="write the merged view as JSON")
    p.add_argument("--html", metavar="FILE", help="write the merged view as one HTML file")
    p.add_argument(
        "--strict", action="store_true", help="a warning cell counts as a failure (exit 1)"
    )
    p.add_argument("--title", default="vLLM env fleet", help="the HTML page's title")


def read_reports(inputs: Sequence[str | Path]) -> tuple[list[Report], list[ReportError]]:
    """Load every report; unreadable ones are returned, not raised."""
    reports: list[Report] = []
    bad: list[ReportError] = []
    paths = expand_inputs(inputs)
    for path in paths:
        try:
            reports.append(load(path))
        except ReportError as exc:
            bad.append(exc)
    for item in inputs:
        if Path(item).is_dir() and not any(p.parent == Path(item) for p in paths):
            bad.append(ReportError(Path(item), "is a directory without *.json reports"))
    return reports, bad


def output_problem(args: argparse.Namespace) -> str | None:
    """Why ``--json`` or ``--html`` cannot be written, checked before any report is read:
    a directory, a path under a file, the same file for both (an ``IsADirectoryError``
    traceback came after the merge, and nothing was written)."""
    given = [(opt, getattr(args, opt.lstrip("-"), None)) for opt in ("--json", "--html")]
    given = [(opt, value) for opt, value in given if value]
    if len(given) == 2 and os.path.abspath(given[0][1]) == os.path.abspath(given[1][1]):
        return f"--json and --html name the same file {given[0][1]}; give each its own"
    for opt, value in given:
        path = Path(value)
        if value.endswith(("/", os.sep)) or os.path.isdir(path):
            example = path / f"fleet.{opt[2:]}"
            return f"{opt} {value}: is a directory; name a file, e.g. {example}"
        for parent in path.parents:
            if os.path.lexists(parent) and not os.path.isdir(parent):
                return f"{opt} {value}: {parent} is a file, not a directory"
    return None


def write_outputs(fleet: dict[str, Any], args: argparse.Namespace) -> str | None:
    """Write the merged view where asked; why one could not be written, or None."""
    for opt, value, text in (
        ("--json", args.json, lambda: json.dumps(fleet, indent=2) + "\n"),
        ("--html", args.html, lambda: page.render(fleet, args.title)),
    ):
        if not value:
            continue
        path = Path(value)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text(), encoding="utf-8")
        except OSError as exc:  # a folder made read-only, a full disk
            return f"{opt} {value}: cannot be written ({exc.strerror or exc})"
    return None


def _finish(fleet: dict[str, Any], args: argparse.Namespace) -> int:
    problem = write_outputs(fleet, args)
    # Node names, summaries, fixes and paths come from the reports (any node's, any file's):
    # they reach the terminal made inert; the JSON and HTML keep or escape them themselves.
    for line in matrix.render_text(fleet):
        print(terminal_safe(line, multiline=False))
    for bad in fleet["unreadable"]:
        message = f"pytest-vllm-env: cannot merge {bad['path']}: {bad['problem']}"
        print(terminal_safe(message, multiline=False), file=sys.stderr)
    if problem:
        print(terminal_safe(f"pytest-vllm-env: {problem}", multiline=False), file=sys.stderr)
        return USAGE_ERROR
    return int(fleet["exit"])


def _refuse_outputs(args: argparse.Namespace) -> int | None:
    problem = output_problem(args)
    if problem is None:
        return None
    print(terminal_safe(f"pytest-vllm-env: {problem}", multiline=False), file=sys.stderr)
    return USAGE_ERROR


def cmd_merge(args: argparse.Namespace) -> int:
    refused = _refuse_outputs(args)
    if refused is not None:
        return refused
    reports, bad = read_reports(args.reports)
    return _finish(matrix.merge(reports, bad, strict=args.strict), args)


def cmd_fleet(args: argparse.Namespace) -> int:
    from pytest_vllm_env.fleet import ray_run

    pytest_args = list(args.pytest_args)
    if pytest_args[:1] == ["--"]:
        pytest_args = pytest_args[1:]
    if not pytest_args:
        print(
            "pytest-vllm-env fleet: give the pytest arguments after --, e.g. "
            "-- --vllm-conformance -m gpu --vllm-env=/opt/env",
            file=sys.stderr,
        )
        return USAGE_ERROR
    if args.gpus != "all" and not args.gpus.isdigit():
        print(f"pytest-vllm-env fleet: --gpus {args.gpus!r}: 'all' or a number", file=sys.stderr)
        return USAGE_ERROR
    out = Path(args.out)
    args.json = args.json or str(out / "fleet.json")
    args.html = args.html or str(out / "fleet.html")
    refused = _refuse_outputs(args)
    if refused is not None:
        return refused
    try:
        run = ray_run.run(
            args.ray_address,
            pytest_args,
            out / "reports",
            gpus=args.gpus,
            timeout=args.timeout,
            python=args.python,
            cwd=args.chdir,
            only_gpu_nodes=args.only_gpu_nodes,
        )
    except ray_run.FleetError as exc:
        print(terminal_safe(f"pytest-vllm-env fleet: {exc}"), file=sys.stderr)
        return USAGE_ERROR
    reports, bad = read_reports(run.reports) if run.reports else ([], [])
    fleet = matrix.merge(reports, bad, run.missing, strict=args.strict)
    fleet["fleet_run"] = {"seconds": run.seconds, "ray_address": args.ray_address}
    code = _finish(fleet, args)
    print(f"fleet: {args.json}, {args.html} ({run.seconds} s)")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "merge":
        return cmd_merge(args)
    return cmd_fleet(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
