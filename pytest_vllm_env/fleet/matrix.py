"""Many nodes' reports -> one nodes x checks matrix, and which checks split the fleet.

The failure this exists for: a fleet of GPU nodes with different GPUs, drivers and images
runs the same suite; one node's driver is too old for the CUDA 13 torch, another has an RTX
5090 the env's nvcc cannot target. Per-node reports bury that; the matrix shows which
checks fail on some nodes and pass on others, and which node facts (GPU model, compute
capability, driver, packages) separate the failing nodes from the passing ones.

The merged view is a plain dict (the fleet JSON, docs/fleet.md): ``nodes``, ``checks``,
``cells``, ``node_specific``, ``unreadable``, ``notes`` and ``exit``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from pytest_vllm_env.fleet.reports import Report, ReportError, env_label

FLEET_SCHEMA = 1
BAD = ("failed", "error")
GOOD = ("passed", "warning")
# worst first, for a cell holding several findings (findings.SEVERITY)
CELL_ORDER = ("error", "failed", "warning", "passed", "skipped")
# node status, worst first: the order nodes are listed in
NODE_ORDER = ("failed", "no-answer", "no-report", "warning", "passed", "skipped")
LETTER = {"error": "E", "failed": "F", "warning": "W", "passed": "P", "skipped": "s"}
# Node facts compared between failing and passing nodes. Identifiers (name, host, UUID) are
# left out: they always differ and explain nothing.
NODE_FACTS = ("gpu", "compute_capability", "gpu_count", "driver_version", "cuda_driver_version")
ENV_FACTS = ("python_version", "cuda_archs")
PACKAGE_FACTS = ("torch", "vllm", "xformers", "flash-attn", "nvidia-modelopt", "cuda-version")


def merge(
    reports: Sequence[Report],
    unreadable: Sequence[ReportError] = (),
    extra_nodes: Sequence[dict[str, Any]] = (),
    *,
    strict: bool = False,
) -> dict[str, Any]:
    """Merge ``reports`` (and nodes that gave none: ``extra_nodes``, each with ``name``,
    ``status`` ``no-answer``/``no-report`` and ``problem``) into the fleet view."""
    notes: list[str] = []
    by_node: dict[str, list[Report]] = {}
    seen: dict[str, Report] = {}
    for report in reports:
        notes.extend(f"{report.path}: {n}" for n in report.notes)
        if report.digest in seen:
            notes.append(f"{report.path}: the same report as {seen[report.digest].path}; ignored")
            continue
        seen[report.digest] = report
        by_node.setdefault(report.node_name, []).append(report)

    multi_env = any(len({lab for r in rs for lab in r.env_labels}) > 1 for rs in by_node.values())
    cells: dict[tuple[str, str, str], dict[str, Any]] = {}
    node_env: dict[tuple[str, str], tuple[Report, dict[str, Any]]] = {}
    for name, node_reports in by_node.items():
        owner: dict[tuple[str, str], Report] = {}
        # newest first: a rerun on a node replaces the earlier verdicts of the same checks
        for report in sorted(node_reports, key=Report.order_key, reverse=True):
            for env in report.envs:
                node_env.setdefault((name, env_label(env)), (report, env))
            grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for check in report.checks:
                key = (check["env"], check["id"])
                found = grouped.get(key)
                if found is None:
                    grouped[key] = [check]
                else:
                    found.append(check)
            shadowed = 0
            for key, findings in grouped.items():
                if key in owner:
                    shadowed += 1
                    continue
                owner[key] = report
                env, cid = key
                column_env = env if multi_env else ""
                cells[(name, column_env, cid)] = _cell(name, column_env, cid, findings)
            if shadowed:
                newer = sorted({str(owner[k].path) for k in owner if owner[k] is not report})
                notes.append(
                    f"node {name}: {report.path} judged {shadowed} check(s) that the newer "
                    f"{', '.join(newer)} judged again; the newer verdicts are used"
                )

    # one pass over the cells for every node's counts (per node, it was nodes x cells)
    counts: dict[str, dict[str, int]] = {name: {} for name in by_node}
    for (node_name, _, _), cell in cells.items():
        per = counts[node_name]
        per[cell["outcome"]] = per.get(cell["outcome"], 0) + 1
    nodes = [_node(name, rs, counts[name]) for name, rs in by_node.items()]
    for extra in extra_nodes:
        if extra["name"] in by_node:
            continue
        nodes.append(
            {
                "name": extra["name"],
                "status": extra.get("status", "no-report"),
                "problem": extra.get("problem", ""),
                "reports": [],
                "counts": {},
                **{k: v for k, v in extra.items() if k not in ("name", "status", "problem")},
            }
        )
    nodes.sort(key=lambda n: (NODE_ORDER.index(n["status"]), n["name"]))
    rank = {n["name"]: i for i, n in enumerate(nodes)}

    facts = {
        (name, env): _facts(report, env_rec, multi_env)
        for (name, env), (report, env_rec) in node_env.items()
    }
    checks = _checks(cells, facts, multi_env, rank)
    node_specific = [c for c in checks if c["split"]]
    exit_code = 2 if unreadable else 0
    if not exit_code and any(n["status"] in ("failed", "no-answer", "no-report") for n in nodes):
        exit_code = 1
    if not exit_code and strict and any(n["status"] == "warning" for n in nodes):
        exit_code = 1
    return {
        "fleet_schema": FLEET_SCHEMA,
        "strict": strict,
        "exit": exit_code,
        "summary": _summary(nodes, checks, reports, unreadable),
        "nodes": nodes,
        "checks": checks,
        "cells": [cells[k] for k in sorted(cells, key=lambda k: (rank[k[0]], k[2], k[1]))],
        "node_specific": [
            {
                "id": c["id"],
                "env": c["env"],
                "failing": c["failing"],
                "passing": c["passing"],
                "differs": c["differs"],
            }
            for c in node_specific
        ],
        "unreadable": [{"path": str(e.path), "problem": e.problem} for e in unreadable],
        "reports": [
            {"path": str(r.path), "node": r.node_name, "schema": r.schema, "envs": r.env_labels}
            for r in reports
        ],
        "notes": notes,
    }


def _column(cid: str, env: str) -> str:
    return f"{cid} [{env}]" if env else cid


_CELL_RANK = {o: i for i, o in enumerate(CELL_ORDER)}


def _cell(node: str, env: str, cid: str, findings: list[dict[str, Any]]) -> dict[str, Any]:
    # the worst outcome; one finding per cell is the common case (1,000 nodes x 100 checks)
    if len(findings) == 1:
        outcome = findings[0]["outcome"]
    else:
        outcome = min((f["outcome"] for f in findings), key=_CELL_RANK.__getitem__)
    cell: dict[str, Any] = {"node": node, "id": cid, "env": env, "outcome": outcome}
    if len(findings) > 1:
        cell["findings"] = len(findings)
    if outcome != "passed":
        worst = [f for f in findings if f["outcome"] == outcome]
        cell["summary"] = "\n".join(_distinct(str(f.get("summary", "")) for f in worst))
        fixes = _distinct(str(f.get("fix", "")) for f in worst)
        if fixes:
            cell["fix"] = "\n".join(fixes)
        if worst[0].get("test"):
            cell["test"] = worst[0]["test"]
    return cell


def _distinct(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        if v.strip() and v not in out:
            out.append(v)
    return out


def _node(name: str, node_reports: list[Report], counts: dict[str, int]) -> dict[str, Any]:
    newest = max(node_reports, key=Report.order_key)
    info = newest.node
    if counts.get("failed") or counts.get("error"):
        status = "failed"
    elif counts.get("warning"):
        status = "warning"
    elif counts.get("passed"):
        status = "passed"
    else:
        status = "skipped"
    gpus = info.get("gpus") or []
    return {
        "name": name,
        "status": status,
        "counts": counts,
        "hostname": info.get("hostname"),
        "gpus": gpus,
        "driver_version": info.get("driver_version"),
        "cuda_driver_version": info.get("cuda_driver_version"),
        "cuda_visible_devices": info.get("cuda_visible_devices"),
        "absent": info.get("absent") or {},
        "reports": [str(r.path) for r in node_reports],
        "envs": sorted({lab for r in node_reports for lab in r.env_labels}),
        "strict": any(r.strict for r in node_reports),
    }


def _facts(report: Report, env: dict[str, Any], multi_env: bool) -> dict[str, str | None]:
    """The node and env facts compared across nodes; None where not known."""
    node = report.node
    gpus = node.get("gpus") if "gpus" in node else None
    facts: dict[str, str | None] = {}
    if gpus is None or (not gpus and "gpus" in (node.get("absent") or {})):
        facts.update(gpu=None, compute_capability=None, gpu_count=None)
    else:
        facts["gpu"] = " + ".join(sorted({str(g.get("name")) for g in gpus})) or "none"
        ccs = {str(g.get("compute_capability")) for g in gpus if g.get("compute_capability")}
        facts["compute_capability"] = " + ".join(sorted(ccs)) or ("none" if not gpus else None)
        facts["gpu_count"] = str(len(gpus))
    for key in ("driver_version", "cuda_driver_version"):
        value = node.get(key)
        facts[key] = str(value) if value else None
    # reports.load checked the types; a version written as a number (12.8) compares as text
    facts["python_version"] = _text(env.get("python_version"))
    archs = report.targets.get("cuda_archs")
    facts["cuda_archs"] = " ".join(archs) if isinstance(archs, list) and archs else None
    packages = env.get("packages") or {}
    for name in PACKAGE_FACTS:
        facts[name] = _text(packages.get(name)) if isinstance(packages, dict) else None
    if multi_env:
        facts["env"] = env_label(env)
    return facts


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _checks(
    cells: dict[tuple[str, str, str], dict[str, Any]],
    facts: dict[tuple[str, str], dict[str, str | None]],
    multi_env: bool,
    rank: dict[str, int],
) -> list[dict[str, Any]]:
    # one env's facts per node (the first, as before), looked up in O(1)
    by_node: dict[str, dict[str, str | None]] = {}
    for (node, _), node_facts in facts.items():
        by_node.setdefault(node, node_facts)
    columns: dict[tuple[str, str], dict[str, list[str]]] = {}
    for (node, env, cid), cell in cells.items():
        col = columns.setdefault((env, cid), {o: [] for o in CELL_ORDER})
        col[cell["outcome"]].append(node)
    out: list[dict[str, Any]] = []
    for (env, cid), by_outcome in columns.items():
        for names in by_outcome.values():
            names.sort(key=lambda n: rank.get(n, 0))
        failing = by_outcome["error"] + by_outcome["failed"]
        passing = by_outcome["passed"] + by_outcome["warning"]
        split = bool(failing and passing)
        if failing:
            status = "failed"
        elif by_outcome["warning"]:
            status = "warning"
        elif passing:
            status = "passed"
        else:
            status = "skipped"
        out.append(
            {
                "id": cid,
                "env": env,
                "column": _column(cid, env),
                "status": status,
                "split": split,
                "failing": sorted(failing, key=lambda n: rank.get(n, 0)),
                "passing": sorted(passing, key=lambda n: rank.get(n, 0)),
                "nodes": {o: names for o, names in by_outcome.items() if names},
                "differs": (
                    _differs(failing, passing, env, facts, multi_env, by_node) if split else []
                ),
            }
        )
    order = {"failed": 0, "warning": 1, "passed": 2, "skipped": 3}
    out.sort(key=lambda c: (order[c["status"]], not c["split"], -len(c["failing"]), c["column"]))
    return out


def _differs(
    failing: list[str],
    passing: list[str],
    env: str,
    facts: dict[tuple[str, str], dict[str, str | None]],
    multi_env: bool,
    by_node: dict[str, dict[str, str | None]] | None = None,
) -> list[dict[str, Any]]:
    """The facts whose values on the failing nodes never occur on the passing ones (and
    are known on all of them): candidates for the node-specific cause, not proof. Values
    that differ only in how they are written (``3.11`` and ``3.11.7``, ``Python 3.11``,
    ``580.159.04`` and ``580.159.4``) are the same value here. Linear in the nodes: each
    node's facts are looked up in a dict, each fact's values compared as sets."""

    def fact_of(node: str) -> dict[str, str | None]:
        if multi_env:
            return facts.get((node, env), {})
        if by_node is not None:
            return by_node.get(node, {})
        return next((f for (n, _), f in facts.items() if n == node), {})

    bad_facts = [fact_of(n) for n in failing]
    good_facts = [fact_of(n) for n in passing]
    out: list[dict[str, Any]] = []
    for key in NODE_FACTS + ENV_FACTS + PACKAGE_FACTS:
        bad = {f.get(key) for f in bad_facts}
        good = {f.get(key) for f in good_facts}
        if None in bad or None in good:
            continue
        if not any(same_value(b, g) for b in bad for g in good):  # type: ignore[arg-type]
            out.append(
                {
                    "fact": key,
                    "failing": sorted(bad),  # type: ignore[arg-type]
                    "passing": sorted(good),  # type: ignore[arg-type]
                }
            )
    return out


_NOISE = re.compile(r"^(?:python|cuda|driver|version|v)\s*", re.IGNORECASE)


def _canonical(value: str) -> list[str]:
    """A fact's value without formatting noise: case, spaces, a ``Python``/``v`` prefix, and
    leading zeros of dotted numbers (``580.159.04`` is ``580.159.4``)."""
    text = _NOISE.sub("", value.strip()).strip().casefold()
    return [p.lstrip("0") or "0" if p.isdigit() else p for p in re.split(r"[.\s]+", text) if p]


def same_value(a: str, b: str) -> bool:
    """Whether two values of a fact name the same thing: equal once canonical, or one a
    less precise version of the other (``3.11`` and ``3.11.7``: a node that reports fewer
    components says nothing against the other)."""
    if a == b:
        return True
    ca, cb = _canonical(a), _canonical(b)
    if not ca or not cb:
        return ca == cb
    short, long = (ca, cb) if len(ca) <= len(cb) else (cb, ca)
    if long[: len(short)] != short:
        return False
    # only version-like values may be less precise: "H100" is not a prefix-form of "H100 80GB"
    return len(short) == len(long) or all(p.isdigit() for p in long)


def _summary(
    nodes: list[dict[str, Any]],
    checks: list[dict[str, Any]],
    reports: Sequence[Report],
    unreadable: Sequence[ReportError],
) -> dict[str, Any]:
    by_status: dict[str, int] = {}
    for node in nodes:
        by_status[node["status"]] = by_status.get(node["status"], 0) + 1
    return {
        "nodes": len(nodes),
        "nodes_by_status": by_status,
        "checks": len(checks),
        "checks_failing": sum(1 for c in checks if c["status"] == "failed"),
        "checks_node_specific": sum(1 for c in checks if c["split"]),
        "reports": len(reports),
        "unreadable": len(unreadable),
    }


NAMES_SHOWN = 8  # node names a text line lists before it counts the rest


def names_text(names: Sequence[str], shown: int = NAMES_SHOWN) -> str:
    """``a, b, c`` for a few nodes; ``996: a, b, ... and 988 more`` for many (every name is
    in the JSON and the HTML)."""
    if len(names) <= shown:
        return ", ".join(names)
    return f"{len(names)}: {', '.join(names[:shown])} and {len(names) - shown} more"


def _split_text(check: dict[str, Any], fleet_nodes: int) -> str:
    """``fails on X; passes on Y`` with many nodes counted: ``fails on 4: a, b, c, d;
    passes on the other 996``."""
    failing, passing = check["failing"], check["passing"]
    if len(failing) <= NAMES_SHOWN and len(passing) <= NAMES_SHOWN:
        return f"fails on {', '.join(failing)}; passes on {', '.join(passing)}"
    fails = (
        f"{len(failing)}: {names_text(failing)}"
        if len(failing) <= NAMES_SHOWN
        else (names_text(failing))
    )
    if len(failing) + len(passing) == fleet_nodes:
        passes = f"the other {len(passing)}"
    else:
        passes = names_text(passing) if len(passing) > NAMES_SHOWN else ", ".join(passing)
    return f"fails on {fails}; passes on {passes}"


def gpus_text(gpus: Sequence[Any]) -> str:
    """A node's GPUs, identical ones counted: ``8 x NVIDIA H100 80GB HBM3 (9.0)``."""
    counted: dict[str, int] = {}
    for g in gpus:
        g = g if isinstance(g, dict) else {}
        key = f"{g.get('name') or '?'} ({g.get('compute_capability') or '?'})"
        counted[key] = counted.get(key, 0) + 1
    return ", ".join(k if n == 1 else f"{n} x {k}" for k, n in counted.items())


def render_text(fleet: dict[str, Any], limit: int = 40) -> list[str]:
    """The terminal summary: nodes (those with the same status, GPUs, driver and counts on
    one line), node-specific checks, what to change, unreadable files. Its length grows with
    the kinds of nodes and failures, not with the fleet: every name is in the JSON/HTML."""
    s = fleet["summary"]
    states = ", ".join(f"{n} {k}" for k, n in s["nodes_by_status"].items())
    lines = [
        f"pytest-vllm-env merge: {s['nodes']} node(s) ({states or 'none'}), {s['checks']} "
        f"check(s), {s['checks_failing']} failing somewhere, {s['checks_node_specific']} "
        f"node-specific; {s['reports']} report(s)"
    ]
    for bad in fleet["unreadable"]:
        lines.append(f"UNREADABLE {bad['path']}: {bad['problem']}")
    groups: dict[tuple[str, str], list[str]] = {}
    for node in fleet["nodes"]:
        counts = " ".join(f"{LETTER.get(k, k)}={v}" for k, v in sorted(node["counts"].items()))
        detail = node.get("problem") or (
            f"{gpus_text(node.get('gpus') or []) or 'no GPU'}; driver "
            f"{node.get('driver_version') or '?'}; {counts}"
        )
        groups.setdefault((node["status"], detail), []).append(node["name"])
    for i, ((status, detail), names) in enumerate(groups.items()):
        if i >= limit:
            lines.append(f"  ... {len(groups) - limit} more kinds of node in the JSON/HTML")
            break
        who = names[0]
        if len(names) > 1:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            who = f"{len(names)} nodes ({', '.join(names[:3])}{more})"
        lines.append(f"  {status.upper():9} {who}: {detail}")
    split = [c for c in fleet["checks"] if c["split"]]
    if split:
        lines.append("checks that fail on some nodes and pass on others:")
        for c in split[:limit]:
            lines.append(f"  {c['column']}: {_split_text(c, s['nodes'])}")
            for d in c["differs"]:
                lines.append(
                    f"      {d['fact']}: {' / '.join(d['failing'])} where it fails, "
                    f"{' / '.join(d['passing'])} where it passes"
                )
        if len(split) > limit:
            lines.append(f"  ... {len(split) - limit} more in the JSON/HTML")
    bad_cells = [c for c in fleet["cells"] if c["outcome"] in BAD]
    if bad_cells:
        lines.append("what to change:")
        fixes: dict[tuple[str, str, str], list[str]] = {}
        for c in bad_cells:
            key = (_column(c["id"], c["env"]), c.get("summary", ""), c.get("fix", ""))
            fixes.setdefault(key, []).append(c["node"])
        for i, ((column, summary, fix), names) in enumerate(fixes.items()):
            if i >= limit:
                lines.append(f"  ... {len(fixes) - limit} more in the JSON/HTML")
                break
            # a failed check without a summary (a report we did not write) says so
            first = (summary.splitlines() or ["(no summary in the report)"])[0]
            lines.append(f"  [{column}] on {names_text(names)}: {first[:300]}")
            if fix:
                lines.append(f"      fix: {fix.splitlines()[0][:300]}")
    lines.append(f"exit {fleet['exit']}")
    return lines
