"""Reading the JSON reports of many nodes: schema 1 and 2, truncated files, duplicates.

A report is what ``--vllm-env-report`` writes (README: The JSON report). A file that cannot
be used (missing, truncated by a node that died while writing, not a report, a schema newer
than this reader) is a :class:`ReportError` naming the file and what is wrong; the merge
reports it and exits 2, it never guesses.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_vllm_env import files
from pytest_vllm_env.findings import OUTCOMES

SCHEMAS = (1, 2)


class ReportError(Exception):
    """A report file that cannot be merged: ``path`` and ``problem``."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass
class Report:
    """One node's report, read and checked. ``checks`` entries carry an ``env`` label."""

    path: Path
    schema: int
    node_name: str
    node: dict[str, Any]
    envs: list[dict[str, Any]]
    targets: dict[str, Any]
    checks: list[dict[str, Any]]
    strict: bool = False
    created: str = ""
    mtime: float = 0.0
    digest: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def env_labels(self) -> list[str]:
        return [env_label(e) for e in self.envs]

    def order_key(self) -> tuple[str, float]:
        """Newer reports sort later: by ``created`` (ISO, UTC), else the file's mtime."""
        return (self.created, self.mtime)


def env_label(env: dict[str, Any]) -> str:
    """An env's short label: its Pixi env name, else its prefix's last part (the test id
    pytest gives it with several ``--vllm-env``)."""
    name = env.get("name")
    if name:
        return str(name)
    prefix = str(env.get("prefix") or "").rstrip("/")
    return os.path.basename(prefix) or ("unreadable env" if env.get("error") else "env")


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Report paths; a directory stands for the ``*.json`` files in it."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            # all but folders: a FIFO or device named *.json is reported as unreadable
            paths.extend(sorted(p for p in path.glob("*.json") if not p.is_dir()))
        else:
            paths.append(path)
    return paths


def load(path: Path) -> Report:
    """Read and check one report; raise :class:`ReportError` naming what is wrong."""
    try:
        # a FIFO, a device or a file past files.REPORT is refused, not waited on or slurped
        raw = files.read_bytes(path, files.REPORT)
        mtime = path.stat().st_mtime
    except IsADirectoryError:
        raise ReportError(path, "is a directory") from None
    except files.Refused as exc:
        raise ReportError(path, f"cannot be read: {exc.strerror}") from None
    except OSError as exc:
        raise ReportError(path, f"cannot be read: {exc.strerror or exc}") from None
    if not raw.strip():
        raise ReportError(path, "is empty (the node wrote no report, or died while writing it)")
    try:
        data = files.loads_json(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ReportError(path, f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        what = "is truncated" if _unclosed(raw.decode("utf-8")) else "is not valid JSON"
        raise ReportError(path, f"{what} ({exc.msg} at {where})") from None
    except ValueError as exc:  # nested too deeply for the parser
        raise ReportError(path, f"is not a report: {exc}") from None
    if isinstance(data, dict) and "fleet_schema" in data:
        raise ReportError(path, "is a merged fleet view (fleet.json), not a node's report")
    if not isinstance(data, dict) or "checks" not in data:
        raise ReportError(path, "is not a pytest-vllm-env report (no 'checks' list)")
    schema = data.get("schema")
    if schema not in SCHEMAS:
        if isinstance(schema, int) and schema > max(SCHEMAS):
            raise ReportError(
                path,
                f"has schema {schema}, newer than this merge reads ({', '.join(map(str, SCHEMAS))})"
                ": upgrade pytest-vllm-env where you merge",
            )
        raise ReportError(path, f"has no known schema number ({schema!r})")
    checks = data["checks"]
    if not isinstance(checks, list):
        raise ReportError(path, f"checks: {_what(checks)}, not a list")
    problem = _shape_problem(data)
    if problem:
        # a node's report we did not write (edited, another tool's, a future one): name the
        # field, never a TypeError deep in the merge
        raise ReportError(path, problem)
    envs = _envs(data.get("env"))
    labels = [env_label(e) for e in envs]
    known = set(OUTCOMES) if schema >= 2 else set(OUTCOMES) - {"warning"}
    notes: list[str] = []
    out: list[dict[str, Any]] = []
    for i, check in enumerate(checks):
        if not isinstance(check, dict) or not isinstance(check.get("id"), str):
            raise ReportError(path, f"check #{i + 1} has no id")
        outcome = check.get("outcome")
        if outcome not in OUTCOMES:
            known_text = ", ".join(OUTCOMES)
            raise ReportError(
                path,
                f"checks[{i}].outcome: {outcome!r} is not one of {known_text} ({check['id']})",
            )
        if outcome not in known:
            notes.append(f"schema {schema} report holds a {outcome!r} outcome ({check['id']})")
        entry = dict(check)
        env = check.get("env")
        if not env:
            env = labels[0] if len(labels) == 1 else _env_of_test(check.get("test", ""), labels)
        entry["env"] = str(env)
        out.append(entry)
    node = data.get("node") if isinstance(data.get("node"), dict) else None
    if node is None:
        # Reports written before the node section: the file name is the node's name, as
        # in reports/%N.json.
        node = {
            "name": path.stem,
            "name_source": "file name",
            "absent": {"node": f"the report has no node section (schema {schema}, older plugin)"},
        }
    return Report(
        path=path,
        schema=schema,
        node_name=str(node.get("name") or path.stem),
        node=node,
        envs=envs,
        targets=data.get("targets") if isinstance(data.get("targets"), dict) else {},
        checks=out,
        strict=bool(data.get("strict", False)),
        created=str(data.get("created") or ""),
        mtime=mtime,
        digest=hashlib.sha256(raw).hexdigest(),
        notes=notes,
    )


# What each field of a report holds (README: The JSON report): a field of another type is a
# ReportError naming it. "scalar" is text or a number (versions and drivers are written as
# text; a hand-written report may say 580 or 12.8).
_SCALAR = (str, int, float)
_NODE_FIELDS = ("name", "hostname", "driver_version", "cuda_driver_version", "name_source")
_GPU_FIELDS = ("name", "compute_capability", "uuid", "memory_total")
_ENV_FIELDS = ("name", "prefix", "python_version", "python", "source", "manifest")
_CHECK_FIELDS = ("summary", "fix", "test", "env", "area")


def _what(value: Any) -> str:
    """A value's JSON type, and the value when it is short, for messages."""
    kind = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)
    text = json.dumps(value)
    return f"{kind} ({text})" if len(text) <= 40 else kind


def _shape_problem(data: dict[str, Any]) -> str | None:
    """The first field whose value is not of the type the report's schema gives it, named
    as ``node.gpus[0]``; None when every field the merge reads is well formed."""
    problems: list[str] = []

    def scalar(where: str, value: Any) -> None:
        if value is not None and (not isinstance(value, _SCALAR) or isinstance(value, bool)):
            problems.append(f"{where}: {_what(value)}, not text")

    def obj(where: str, value: Any) -> bool:
        if value is None:
            return False
        if not isinstance(value, dict):
            problems.append(f"{where}: {_what(value)}, not an object")
            return False
        return True

    node = data.get("node")
    if obj("node", node):
        for key in _NODE_FIELDS:
            scalar(f"node.{key}", node.get(key))
        if node.get("cuda_visible_devices") is not None:
            scalar("node.cuda_visible_devices", node.get("cuda_visible_devices"))
        gpus = node.get("gpus")
        if gpus is not None and not isinstance(gpus, list):
            problems.append(f"node.gpus: {_what(gpus)}, not a list of GPU objects")
        for i, gpu in enumerate(gpus if isinstance(gpus, list) else []):
            if not isinstance(gpu, dict):
                problems.append(
                    f"node.gpus[{i}]: {_what(gpu)}, not a GPU object "
                    '({"name": ..., "compute_capability": ...})'
                )
                break
            for key in _GPU_FIELDS:
                scalar(f"node.gpus[{i}].{key}", gpu.get(key))
        if obj("node.absent", node.get("absent")):
            for key, value in node["absent"].items():
                scalar(f"node.absent.{key}", value)
    env = data.get("env")
    envs = env.get("envs") if isinstance(env, dict) and "envs" in env else [env]
    if not isinstance(envs, list):
        problems.append(f"env.envs: {_what(envs)}, not a list")
        envs = []
    for i, one in enumerate(envs):
        where = f"env.envs[{i}]" if isinstance(env, dict) and "envs" in env else "env"
        if obj(where, one):
            for key in _ENV_FIELDS:
                scalar(f"{where}.{key}", one.get(key))
            if obj(f"{where}.packages", one.get("packages")):
                for name, version in one["packages"].items():
                    scalar(f"{where}.packages.{name}", version)
    targets = data.get("targets")
    if obj("targets", targets):
        archs = targets.get("cuda_archs")
        if archs is not None and not (
            isinstance(archs, list) and all(isinstance(a, str) for a in archs)
        ):
            problems.append(f"targets.cuda_archs: {_what(archs)}, not a list of arch names")
    created = data.get("created")
    if created is not None and not isinstance(created, str):
        problems.append(f"created: {_what(created)}, not a time stamp")
    for i, check in enumerate(data.get("checks") or []):
        if isinstance(check, dict):
            for key in _CHECK_FIELDS:
                value = check.get(key)
                if value is not None and type(value) is not str:  # the fast path: text
                    scalar(f"checks[{i}].{key}", value)
    return problems[0] if problems else None


def _unclosed(text: str) -> bool:
    """True when the JSON text ends inside a string or with brackets still open: a file cut
    off while being written (a node that died, a full disk), not a malformed one."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
    return in_string or depth > 0


def _envs(env: Any) -> list[dict[str, Any]]:
    if isinstance(env, dict) and isinstance(env.get("envs"), list):
        return [e for e in env["envs"] if isinstance(e, dict)] or [{}]
    return [env] if isinstance(env, dict) else [{}]


def _env_of_test(test: str, labels: list[str]) -> str:
    """With several envs, older reports name the env only in the test id's parameters
    (``test_python[cuda]``)."""
    if len(labels) == 1:
        return labels[0]
    params = test.rsplit("[", 1)[1].rstrip("]") if "[" in test else ""
    for label in sorted(labels, key=len, reverse=True):
        if f"-{params}-".find(f"-{label}-") >= 0:
            return label
    return labels[0] if not params else params
