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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_vllm_env.text import terminal_safe

Outcome = Literal["passed", "warning", "failed", "skipped", "error"]
OUTCOMES: tuple[str, ...] = ("passed", "warning", "failed", "skipped", "error")
# worst first: the outcome of a group of findings is the first of these present
SEVERITY: tuple[str, ...] = ("error", "failed", "warning", "passed", "skipped")


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
        """The text a user reads: the summary, the fix, then the evidence; fit for a
        terminal (:func:`pytest_vllm_env.text.terminal_safe`: summaries and evidence quote
        env metadata and tool output, which may hold escape sequences)."""
        lines = [f"[{self.id}] {self.outcome.upper()}: {self.summary}"]
        if self.fix:
            lines.append(f"  fix: {self.fix}")
        for key, value in self.evidence.items():
            lines.append(f"  {key}: {_short(value)}")
        return terminal_safe("\n".join(lines))


def passed(id: str, summary: str, **evidence: Any) -> Finding:
    return Finding(id, "passed", summary, "", evidence)


def failed(id: str, summary: str, fix: str, **evidence: Any) -> Finding:
    return Finding(id, "failed", summary, fix, evidence)


def warning(id: str, summary: str, fix: str, **evidence: Any) -> Finding:
    """It works, at a cost (accuracy risk, memory, speed): the fix says how to avoid it."""
    return Finding(id, "warning", summary, fix, evidence)


def skipped(id: str, reason: str, **evidence: Any) -> Finding:
    return Finding(id, "skipped", reason, "", evidence)


def error(id: str, summary: str, fix: str, **evidence: Any) -> Finding:
    """Bad input: the subject could not be read (not JSON, truncated, a loop...)."""
    return Finding(id, "error", summary, fix, evidence)


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
    )


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
