"""Findings: what every judgement returns.

A check is a plain function that reads facts and returns one or more :class:`Finding`
values; it never raises for a bad environment and never calls pytest. The conformance
tests hand findings to the ``verdict`` fixture, which turns them into pytest outcomes and
records them for the terminal summary and the JSON report.

Ids are ``area.what`` (``cuda.nvcc-in-env``, ``abi.symbols``); the area is the part
before the first dot. A failed or errored finding always carries a ``fix``: the file, the
manifest line or the version to change.

Levels (what they mean for every check):

- ``failed``: the real tool refuses (vLLM raises, CMake stops, nvcc errors), or it runs and
  gives wrong results (a load that generates garbage);
- ``warning``: it works, at a cost worth a look (accuracy risk, memory, speed); carries a
  fix like a failure, but the test passes unless ``--vllm-strict`` is given;
- ``passed``: it works; ``skipped``: not judged here (the reason says why);
- ``error``: the subject could not be read (truncated, not JSON, a symlink loop).

A fix is text for a person and, where it is a command or an edit, data for a tool: a
:class:`Fix` is the text with its :class:`Change` values (written by
:mod:`pytest_vllm_env.facts.fixes`), kept in the finding's evidence under ``change``. The
same fix given by several findings is one entry of "what to change" and of the JSON report's
``fixes`` (:func:`fix_groups`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from pytest_vllm_env.text import terminal_safe

Outcome = Literal["passed", "warning", "failed", "skipped", "error"]
OUTCOMES: tuple[str, ...] = ("passed", "warning", "failed", "skipped", "error")
# worst first: the outcome of a group of findings is the first of these present
SEVERITY: tuple[str, ...] = ("error", "failed", "warning", "passed", "skipped")


# What a Change asks for (``Change.kind``); fixtures/apply.py applies each to a copy of an env:
CHANGE_KINDS: dict[str, str] = {
    "manifest-line": "in the manifest ``target``, table ``table``: add ``line`` (replacing the "
    "line ``replaces`` when given)",
    "pip": "``python -m pip install`` of ``specs`` with ``options`` into the env at ``target``",
    "uv": "``uv pip install --python target`` of ``specs`` with ``options``",
    "conda": "``conda install -p target -c conda-forge`` of ``specs``",
    "conda-var": "``conda env config vars set -p target`` ``line`` (``NAME=VALUE``)",
    "export": "``export line`` (``NAME=VALUE``) in the job; for a venv kept in ``target`` "
    "(its ``bin/activate``)",
    "pixi": "a pixi command (``line``) for the workspace whose manifest is ``target``: "
    "``pixi install``, ``pixi reinstall``, ``pixi lock``",
    "remove": "remove the conda package ``specs`` from the env at ``target``",
}


@dataclass(frozen=True)
class Change:
    """One change a fix asks for, as data (:data:`CHANGE_KINDS`): what a tool (the round-trip
    applier of the self-tests, a bot) applies without reading the fix's prose."""

    kind: str
    target: str
    table: str = ""
    line: str = ""
    replaces: str = ""
    specs: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in CHANGE_KINDS:
            raise ValueError(f"unknown change kind {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set, as JSON values."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value or f.name in ("kind", "target"):
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Change:
        known = {f.name for f in fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**values)


class Fix(str):
    """A fix's text that carries its :class:`Change` values. Joined with ``+`` (either side a
    plain string) it keeps them, so a check may prefix a reason or append a note; an f-string
    keeps only the text. :func:`pytest_vllm_env.facts.fixes.otherwise` joins an alternative
    whose changes are not the fix's own ("...; or ...")."""

    changes: tuple[Change, ...]

    def __new__(cls, text: str = "", changes: Iterable[Change] = ()) -> Fix:
        obj = super().__new__(cls, text)
        obj.changes = tuple(changes)
        return obj

    def __add__(self, other: str) -> Fix:  # type: ignore[override]
        return Fix(str(self) + str(other), self.changes + changes_of(other))

    def __radd__(self, other: str) -> Fix:
        return Fix(str(other) + str(self), changes_of(other) + self.changes)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Fix, (str(self), self.changes))


def changes_of(text: object) -> tuple[Change, ...]:
    """The changes a fix text carries (none for a plain string)."""
    return getattr(text, "changes", ()) if isinstance(text, str) else ()


@dataclass(frozen=True)
class Finding:
    """One verdict of one check on one subject (``subject``: the library, package or file it
    is about, where a check judges several; "" where the check id says it)."""

    id: str
    outcome: Outcome
    summary: str
    fix: str = ""
    evidence: Mapping[str, Any] = field(default_factory=dict)
    subject: str = ""

    @property
    def changes(self) -> tuple[Change, ...]:
        """The fix as data: the :class:`Change` values it asks for (none where the fix is not
        a command or an edit)."""
        return tuple(Change.from_dict(c) for c in self.evidence.get("change", ()))

    def __post_init__(self) -> None:
        # The fix's changes ride in the evidence (the JSON report keeps them as data).
        changes = changes_of(self.fix)
        if changes and "change" not in self.evidence:
            unique = list(dict.fromkeys(changes))
            object.__setattr__(
                self, "evidence", {**self.evidence, "change": [c.to_dict() for c in unique]}
            )
        if isinstance(self.fix, Fix):
            object.__setattr__(self, "fix", str(self.fix))
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r} for {self.id}")
        if "." not in self.id:
            raise ValueError(f"check id {self.id!r} is not of the form area.what")
        if self.outcome in ("failed", "error", "warning") and not self.fix.strip():
            # Principle 4: a verdict without a fix hint is unfinished.
            raise ValueError(f"{self.id}: a {self.outcome} finding needs a fix hint")

    @property
    def area(self) -> str:
        return self.id.split(".", 1)[0]

    @property
    def bad(self) -> bool:
        return self.outcome in ("failed", "error")

    @property
    def warned(self) -> bool:
        return self.outcome == "warning"

    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "area": self.area,
            "outcome": self.outcome,
            "summary": self.summary,
            "fix": self.fix,
            "evidence": _jsonable(self.evidence),
        }
        if self.subject:
            out["subject"] = self.subject
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        return cls(
            id=data["id"],
            outcome=data["outcome"],
            summary=data["summary"],
            fix=data.get("fix", ""),
            evidence=dict(data.get("evidence", {})),
            subject=data.get("subject", ""),
        )

    def render(self) -> str:
        """The text a user reads: the summary, the fix, then the evidence; fit for a
        terminal (:func:`pytest_vllm_env.text.terminal_safe`: summaries and evidence quote
        env metadata and tool output, which may hold escape sequences)."""
        lines = [f"[{self.id}] {self.outcome.upper()}: {self.summary}"]
        if self.fix:
            lines.append(f"  fix: {self.fix}")
        for key, value in self.evidence.items():
            if key != "change":  # the fix's text says it; the data is for tools
                lines.append(f"  {key}: {_short(value)}")
        return terminal_safe("\n".join(lines))


def passed(id: str, summary: str, *, subject: str = "", **evidence: Any) -> Finding:
    return Finding(id, "passed", summary, "", evidence, subject)


def failed(id: str, summary: str, fix: str, *, subject: str = "", **evidence: Any) -> Finding:
    return Finding(id, "failed", summary, fix, evidence, subject)


def warning(id: str, summary: str, fix: str, *, subject: str = "", **evidence: Any) -> Finding:
    """It works, at a cost (accuracy risk, memory, speed): the fix says how to avoid it."""
    return Finding(id, "warning", summary, fix, evidence, subject)


def skipped(id: str, reason: str, *, subject: str = "", **evidence: Any) -> Finding:
    return Finding(id, "skipped", reason, "", evidence, subject)


def error(id: str, summary: str, fix: str, *, subject: str = "", **evidence: Any) -> Finding:
    """Bad input: the subject could not be read (not JSON, truncated, a loop...)."""
    return Finding(id, "error", summary, fix, evidence, subject)


def worst(findings: Iterable[Finding]) -> Outcome:
    """The outcome of a group: error > failed > warning > passed > skipped."""
    outcomes = {f.outcome for f in findings}
    for outcome in SEVERITY:
        if outcome in outcomes:
            return outcome  # type: ignore[return-value]
    return "skipped"


def strict(finding: Finding) -> Finding:
    """A warning turned into a failure (``--vllm-strict``); other findings unchanged."""
    if not finding.warned:
        return finding
    return Finding(
        finding.id,
        "failed",
        finding.summary,
        finding.fix,
        {**finding.evidence, "level": "warning, failed by --vllm-strict"},
        finding.subject,
    )


def fix_groups(
    entries: Sequence[Mapping[str, Any]], outcomes: Sequence[str]
) -> list[dict[str, Any]]:
    """One entry per distinct fix among the findings (as the JSON report holds them:
    ``to_dict()`` plus ``test``/``env``) whose outcome is in ``outcomes``: findings that ask
    for the same change (the same :class:`Change` values, else the same text) in the same env
    are one fix, with the check ids and the subjects it resolves, in the order first seen.
    ``{"fix", "change", "outcome", "env", "checks", "subjects", "findings"}``."""
    return [group for group, _ in grouped_by_fix(entries, outcomes)]


def grouped_by_fix(
    entries: Sequence[Mapping[str, Any]], outcomes: Sequence[str]
) -> list[tuple[dict[str, Any], list[Mapping[str, Any]]]]:
    """:func:`fix_groups`, each group with the findings it holds."""
    groups: dict[Any, tuple[dict[str, Any], list[Mapping[str, Any]]]] = {}
    for entry in entries:
        text = entry.get("fix") or ""
        if entry.get("outcome") not in outcomes or not text:
            continue
        change = (entry.get("evidence") or {}).get("change") or []
        key = (entry.get("env"), repr(change) if change else text)
        if key not in groups:
            groups[key] = (
                {
                    "fix": text,
                    "change": change,
                    "outcome": entry["outcome"],
                    "env": entry.get("env"),
                    "checks": [],
                    "subjects": [],
                    "findings": 0,
                },
                [],
            )
        group, members = groups[key]
        members.append(entry)
        group["findings"] += 1
        if SEVERITY.index(entry["outcome"]) < SEVERITY.index(group["outcome"]):
            group["outcome"] = entry["outcome"]
        if entry["id"] not in group["checks"]:
            group["checks"].append(entry["id"])
        subject = entry.get("subject") or ""
        if subject and subject not in group["subjects"]:
            group["subjects"].append(subject)
    return list(groups.values())


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_jsonable(v) for v in items]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _short(value: Any, limit: int = 400) -> str:
    if isinstance(value, (list, tuple)):
        text = ", ".join(str(v) for v in value[:20])
        if len(value) > 20:
            text += f", ... ({len(value)} in all)"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
