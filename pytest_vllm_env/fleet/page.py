"""The fleet view as one self-contained HTML file, read at a glance.

One file with its CSS inline, no scripts, no fetched resources: it opens from a CI artifact,
a mail attachment or a shared volume. The verdict line comes first, then the checks that
fail on some nodes and pass on others (with the node facts that differ), then the nodes x
checks matrix with failing nodes (rows) and failing checks (columns) first, then every fix,
then each node's GPUs and driver. Every cell carries its outcome as a class, a letter and a
``title`` with the summary and fix, and ``data-node``/``data-check`` for tools.
"""

from __future__ import annotations

from html import escape
from typing import Any

from pytest_vllm_env.fleet.matrix import BAD, LETTER, gpus_text

STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.2em;color:#1f2328}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .4em}
.verdict{font-size:1.1em;font-weight:600;padding:.5em .8em;border-radius:4px;display:inline-block}
.v-0{background:#dafbe1}.v-1{background:#ffebe9}.v-2{background:#ffd8b5}
table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:2px 6px;vertical-align:top}
th{background:#f6f8fa;text-align:left}
table.matrix td.cell{text-align:center;font-weight:700;min-width:1.4em;padding:2px}
table.matrix th.check{vertical-align:bottom;padding:4px 2px}
table.matrix th.check span{writing-mode:vertical-rl;transform:rotate(180deg);white-space:nowrap;
font-weight:400;font-family:ui-monospace,monospace;font-size:12px}
.o-failed{background:#cf222e;color:#fff}.o-error{background:#82071e;color:#fff}
.o-warning{background:#d4a72c;color:#000}.o-passed{background:#2da44e;color:#fff}
.o-skipped{background:#eaeef2;color:#57606a}.o-none{background:#fff;color:#8c959f}
.s-failed,.s-no-answer,.s-no-report{color:#cf222e;font-weight:700}.s-warning{color:#9a6700}
.s-passed{color:#1a7f37}.s-skipped{color:#57606a}
.fix{margin:.3em 0 .8em;padding:.4em .7em;border-left:4px solid #cf222e;background:#fff8f8}
.fix.warning{border-color:#d4a72c;background:#fffbeb}
.fix p{margin:.2em 0;white-space:pre-wrap}.fixtext{font-family:ui-monospace,monospace}
code,.mono{font-family:ui-monospace,monospace;font-size:12px}.small{font-size:12px;color:#57606a}
.bad{color:#cf222e}
.matrixwrap{overflow:auto;max-width:100%;max-height:85vh;border:1px solid #d0d7de}
.matrixwrap table.matrix{border-collapse:separate;border-spacing:0}
table.matrix thead th{position:sticky;top:0;z-index:2}
table.matrix tbody th{position:sticky;left:0;z-index:1;background:#fff;text-align:left}
table.matrix thead th.corner{left:0;z-index:3}
table.matrix td.gpus{max-width:22em}
details.names summary{cursor:pointer}details.names div{max-width:60em;font-size:12px}
"""


def render(fleet: dict[str, Any], title: str = "vLLM env fleet") -> str:
    """The whole page as a string."""
    s = fleet["summary"]
    states = ", ".join(f"{n} {k}" for k, n in s["nodes_by_status"].items())
    verdict = (
        f"{s['nodes']} node(s): {states or 'none'} · {s['checks']} checks, "
        f"{s['checks_failing']} failing somewhere, {s['checks_node_specific']} node-specific · "
        f"exit {fleet['exit']}"
    )
    bad_nodes = sum(n for k, n in s["nodes_by_status"].items() if k in _BAD_NODE)
    head = f"{title}: {bad_nodes} of {s['nodes']} node(s) failing" if bad_nodes else title
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(head)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(head)}</h1>",
        f'<p class="verdict v-{fleet["exit"]}" id="verdict">{escape(verdict)}</p>',
    ]
    parts += _unreadable(fleet)
    parts += _split(fleet)
    parts += _matrix(fleet)
    parts += _fixes(fleet)
    parts += _nodes(fleet)
    if fleet.get("notes"):
        parts.append('<h2 id="notes">Notes</h2><ul class="small">')
        parts += [f"<li>{escape(n)}</li>" for n in fleet["notes"]]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


_BAD_NODE = ("failed", "no-answer", "no-report")


def _unreadable(fleet: dict[str, Any]) -> list[str]:
    if not fleet["unreadable"]:
        return []
    out = ['<h2 id="unreadable" class="bad">Unreadable reports (exit 2)</h2><ul>']
    for bad in fleet["unreadable"]:
        out.append(f"<li><code>{escape(bad['path'])}</code>: {escape(bad['problem'])}</li>")
    return out + ["</ul>"]


def _split(fleet: dict[str, Any]) -> list[str]:
    split = [c for c in fleet["checks"] if c["split"]]
    if not split:
        return []
    out = [
        '<h2 id="node-specific">Fails on some nodes, passes on others</h2>',
        '<table class="split"><tr><th>check</th><th>fails on</th><th>passes on</th>'
        "<th>node facts that differ (candidates)</th></tr>",
    ]
    for c in split:
        differs = "<br>".join(
            f"<b>{escape(d['fact'])}</b>: {escape(' / '.join(d['failing']))} where it fails, "
            f"{escape(' / '.join(d['passing']))} where it passes"
            for d in c["differs"]
        )
        out.append(
            f'<tr data-check="{escape(c["column"])}"><td><code>{escape(c["column"])}</code></td>'
            f'<td class="s-failed">{_names(c["failing"], 8)}</td>'
            f'<td class="s-passed">{_names(c["passing"], 8)}</td>'
            f"<td>{differs or 'no node fact separates them'}</td></tr>"
        )
    return out + ["</table>"]


def _gpu_line(node: dict[str, Any]) -> str:
    driver = node.get("driver_version")
    return f"{gpus_text(node.get('gpus') or []) or 'no GPU'}" + (
        f"; driver {driver}" if driver else ""
    )


GROUP_NAMES = 3  # node names a grouped row shows before "and N more"
GROUP_FROM = 20  # from this many nodes on, nodes with identical rows share one row


def _names(names: list[str], shown: int = GROUP_NAMES) -> str:
    """A list of nodes: all names when few; else the first, a count, and every name in a
    ``<details>`` (no script: it opens with a click, and the browser's find sees it)."""
    if len(names) <= shown:
        return escape(", ".join(names))
    head = escape(f"{', '.join(names[:shown])} and {len(names) - shown} more")
    return (
        f'<details class="names"><summary>{len(names)} nodes: {head}</summary>'
        f"<div>{escape(', '.join(names))}</div></details>"
    )


def _matrix(fleet: dict[str, Any]) -> list[str]:
    """The nodes x checks matrix, failing nodes and failing checks first. From GROUP_FROM
    nodes on, nodes whose rows would be identical (status, GPUs and driver, every cell's
    outcome, summary and fix) share one row: 1,000 nodes of six kinds are six rows. The table
    scrolls inside its box, its header row and node column sticky (at 1,400 px a 53-column
    matrix was cut off at the right edge of the page)."""
    checks = fleet["checks"]
    cells = {(c["node"], c["env"], c["id"]): c for c in fleet["cells"]}
    out = [
        '<h2 id="matrix">Nodes × checks</h2>',
        '<div class="matrixwrap"><table class="matrix"><thead><tr><th class="corner">node</th>'
        "<th>status</th><th>GPUs, driver</th>",
    ]
    for c in checks:
        out.append(
            f'<th class="check" data-check="{escape(c["column"])}" '
            f'data-status="{c["status"]}"><span>{escape(c["column"])}</span></th>'
        )
    out.append("</tr></thead><tbody>")
    rows: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for node in fleet["nodes"]:
        line = node.get("problem") or _gpu_line(node)
        row_cells = []
        for c in checks:
            cell = cells.get((node["name"], c["env"], c["id"]))
            row_cells.append(
                None if cell is None else (cell["outcome"], cell.get("summary"), cell.get("fix"))
            )
        key = (node["status"], line, tuple(row_cells))
        if len(fleet["nodes"]) < GROUP_FROM:
            key += (node["name"],)  # a small fleet: every node its own row
        rows.setdefault(key, []).append(node)
    for (status, line, row_cells, *_), nodes in rows.items():
        names = [n["name"] for n in nodes]
        label = names[0] if len(names) == 1 else f"{len(names)} nodes"
        count = f' data-count="{len(names)}"' if len(names) > 1 else ""
        row = [
            f'<tr class="node" data-node="{escape(names[0])}"{count} data-status="{status}">'
            f"<th>{_names(names, 1) if len(names) > 1 else escape(names[0])}</th>",
            f'<td class="s-{status}">{escape(status)}</td>',
            f'<td class="small gpus">{escape(line)}</td>',
        ]
        for c, cell in zip(checks, row_cells, strict=True):
            attrs = f'data-node="{escape(names[0])}" data-check="{escape(c["column"])}"'
            if cell is None:
                row.append(f'<td class="cell o-none" {attrs} title="not run here">·</td>')
                continue
            outcome, summary, fix = cell
            tip = summary or outcome
            if fix:
                tip += f"\nfix: {fix}"
            title = escape(f"{label} · {c['column']}: {tip}")
            row.append(
                f'<td class="cell o-{outcome}" {attrs} title="{title}">{LETTER[outcome]}</td>'
            )
        out.append("".join(row) + "</tr>")
    out.append("</tbody></table></div>")
    out.append(
        '<p class="small">F failed · E error (could not be read) · W warning (works, at a '
        "cost; not a failure unless strict) · P passed · s skipped · · not run on that node. "
        "Hover a cell for its summary and fix. Nodes with identical rows share one row.</p>"
    )
    return out


def _fixes(fleet: dict[str, Any]) -> list[str]:
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    for cell in fleet["cells"]:
        if cell["outcome"] in BAD or cell["outcome"] == "warning":
            column = f"{cell['id']} [{cell['env']}]" if cell["env"] else cell["id"]
            key = (cell["outcome"], column, cell.get("summary", ""), cell.get("fix", ""))
            groups.setdefault(key, []).append(cell["node"])
    if not groups:
        return []
    out = ['<h2 id="fixes">What to change</h2>']
    order = {"error": 0, "failed": 0, "warning": 1}
    for (outcome, column, summary, fix), names in sorted(
        groups.items(), key=lambda kv: (order[kv[0][0]], -len(kv[1]), kv[0][1])
    ):
        kind = "warning" if outcome == "warning" else "bad"
        out.append(
            f'<div class="fix {kind}" data-check="{escape(column)}">'
            f"<b>[{escape(column)}] {escape(outcome)}</b> on {_names(names, 8)}"
            f"<p>{escape(summary)}</p>"
            + (f'<p class="fixtext">fix: {escape(fix)}</p>' if fix else "")
            + "</div>"
        )
    return out


NODES_OPEN = 50  # with more nodes, their table is folded (one click opens it)


def _nodes(fleet: dict[str, Any]) -> list[str]:
    many = len(fleet["nodes"]) > NODES_OPEN
    fold = (
        f"<details><summary>{len(fleet['nodes'])} nodes: host, GPUs and UUIDs, driver, "
        "reports</summary>"
        if many
        else ""
    )
    out = [
        f'<h2 id="nodes">Nodes</h2>{fold}<table class="nodes"><tr><th>node</th><th>host</th>'
        "<th>GPUs (compute capability, UUID)</th><th>driver</th><th>CUDA (driver)</th>"
        "<th>CUDA_VISIBLE_DEVICES</th><th>not known</th><th>reports</th></tr>"
    ]
    for node in fleet["nodes"]:
        gpus = "<br>".join(_gpu_cell(g) for g in node.get("gpus") or [])
        absent = "<br>".join(
            f"{escape(k)}: {escape(str(v))}" for k, v in (node.get("absent") or {}).items()
        )
        out.append(
            f'<tr data-node="{escape(node["name"])}"><td>{escape(node["name"])}</td>'
            f"<td>{escape(str(node.get('hostname') or ''))}</td>"
            f"<td>{gpus or escape(node.get('problem') or 'none')}</td>"
            f"<td>{escape(str(node.get('driver_version') or ''))}</td>"
            f"<td>{escape(str(node.get('cuda_driver_version') or ''))}</td>"
            f"<td class='mono'>{escape(_cvd(node))}</td>"
            f"<td class='small'>{absent}</td>"
            f"<td class='small mono'>{escape(' '.join(node.get('reports') or []))}</td></tr>"
        )
    return out + ["</table>" + ("</details>" if many else "")]


def _cvd(node: dict[str, Any]) -> str:
    if "cuda_visible_devices" not in node:
        return ""
    value = node["cuda_visible_devices"]
    return "unset" if value is None else repr(value)


def _gpu_cell(gpu: dict[str, Any]) -> str:
    name = escape(str(gpu.get("name") or "?"))
    cc = escape(str(gpu.get("compute_capability") or "?"))
    uuid = escape(str(gpu.get("uuid") or "no UUID"))
    return f"{name} ({cc}, <span class='mono'>{uuid}</span>)"
