"""Findings: what every judgement returns.

A check is a plain function that reads facts and returns one or more :class:`Finding`
values; it never raises for a bad environment and never calls pytest. The conformance
tests hand findings to the ``verdict`` fixture, which turns them into pytest outcomes and
records them for the terminal summary and the JSON report.

Ids are ``area.what`` (``cuda.nvcc-in-env``, ``abi.symbols-resolve``); the area is the part
before the first dot. A failed or errored finding always carries a ``fix``: the file, the
manifest line or the version to change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["passed", "failed", "skipped", "error"]
OUTCOMES: tuple[str, ...] = ("passed", "failed", "skipped", "error")


@dataclass(frozen=True)
class Finding:
    """One verdict of one check on one subject."""

    id: str
    outcome: Outcome
    summary: str
    fix: str = ""
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r} for {self.id}")
        if "." not in self.id:
            raise ValueError(f"check id {self.id!r} is not of the form area.what")
        if self.outcome in ("failed", "error") and not self.fix.strip():
            # Principle 4: a verdict without a fix hint is unfinished.
            raise ValueError(f"{self.id}: a {self.outcome} finding needs a fix hint")

    @property
    def area(self) -> str:
        return self.id.split(".", 1)[0]

    @property
    def bad(self) -> bool:
        return self.outcome in ("failed", "error")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "area": self.area,
            "outcome": self.outcome,
            "summary": self.summary,
            "fix": self.fix,
            "evidence": _jsonable(self.evidence),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        return cls(
            id=data["id"],
            outcome=data["outcome"],
            summary=data["summary"],
            fix=data.get("fix", ""),
            evidence=dict(data.get("evidence", {})),
        )

    def render(self) -> str:
        """The text a user reads: the summary, the fix, then the evidence."""
        lines = [f"[{self.id}] {self.outcome.upper()}: {self.summary}"]
        if self.fix:
            lines.append(f"  fix: {self.fix}")
        for key, value in self.evidence.items():
            lines.append(f"  {key}: {_short(value)}")
        return "\n".join(lines)


def passed(id: str, summary: str, **evidence: Any) -> Finding:
    return Finding(id, "passed", summary, "", evidence)


def failed(id: str, summary: str, fix: str, **evidence: Any) -> Finding:
    return Finding(id, "failed", summary, fix, evidence)


def skipped(id: str, reason: str, **evidence: Any) -> Finding:
    return Finding(id, "skipped", reason, "", evidence)


def error(id: str, summary: str, fix: str, **evidence: Any) -> Finding:
    """Bad input: the subject could not be read (not JSON, truncated, a loop...)."""
    return Finding(id, "error", summary, fix, evidence)


def worst(findings: Iterable[Finding]) -> Outcome:
    """The outcome of a group: error > failed > passed > skipped (all skipped -> skipped)."""
    outcomes = {f.outcome for f in findings}
    for outcome in ("error", "failed", "passed"):
        if outcome in outcomes:
            return outcome  # type: ignore[return-value]
    return "skipped"


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
