"""Findings into pytest outcomes: the ``verdict`` fixture and the hooks around it.

A conformance test hands its findings to ``verdict``; each finding rides on the test's
``user_properties`` (so it reaches the xdist controller with the report), the test passes,
warns (``W``), fails or skips by the worst of them, and :class:`FindingsCollector` collects
them into the session state for the terminal summary and the JSON report.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from _pytest.outcomes import Skipped

from pytest_vllm_env.plugins.session import state, suite_dir

if TYPE_CHECKING:
    from pytest_vllm_env.findings import Finding

# What a test's report carries (``user_properties`` keys)
FINDING_KEY = "vllm_env.finding"
CHECK_KEY = "vllm_env.check"
TEST_KEY = "vllm_env.test"  # the test id in the report: the same whatever the rootdir
ENV_KEY = "vllm_env.env"


@pytest.fixture
def verdict(request: pytest.FixtureRequest):
    """Hand findings to pytest: ``verdict(finding, ...)`` (lists of findings too).

    Records every finding for the terminal summary and ``--vllm-env-report``; then fails
    the test (without a traceback, with each bad finding's summary, fix and evidence) if any
    failed or errored, skips it if all were skipped, and passes otherwise. A test whose
    worst finding is a warning passes, shown as ``W``/``WARNED`` and listed with its fix
    under "vllm-env: warnings"; with ``--vllm-strict`` it fails.
    """

    from pytest_vllm_env.findings import strict, worst
    from pytest_vllm_env.text import terminal_safe

    def judge(*findings: Finding | Iterable[Finding]) -> list[Finding]:
        flat = list(_flatten(findings))
        if not flat:
            raise ValueError("verdict() needs at least one finding")
        if strict_mode(request.config):
            flat = [strict(f) for f in flat]
        for finding in flat:
            request.node.user_properties.append((FINDING_KEY, finding.to_dict()))
        outcome = worst(flat)
        if outcome in ("failed", "error"):
            text = "\n\n".join(f.render() for f in flat if f.bad)
            pytest.fail(text, pytrace=False)
        if outcome == "skipped":
            # Reported at the test's location, not at this line (-rs prints it).
            reason = "; ".join(f"[{f.id}] {f.summary}" for f in flat)
            raise Skipped(terminal_safe(reason), _use_item_location=True)
        return flat

    return judge


def strict_mode(config: pytest.Config) -> bool:
    """``--vllm-strict`` / ``vllm_strict``: warnings fail their test."""
    option = config.getoption("vllm_strict", default=None)
    return bool(option) if option is not None else bool(config.getini("vllm_strict"))


def _flatten(items: Iterable[Any]) -> Iterator[Finding]:
    # Findings are told by their shape, not their class: after an in-process pytester run
    # a check module may hold an older import of pytest_vllm_env.findings than ours.
    for item in items:
        if hasattr(item, "outcome") and hasattr(item, "to_dict"):
            yield item
        else:
            yield from _flatten(item)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Carried to the report (and the xdist controller) so a check skipped in a fixture
    # still has its stable id in the JSON report.
    mark = item.get_closest_marker("vllm_check")
    if mark and mark.args:
        item.user_properties.append((CHECK_KEY, str(mark.args[0])))
    if mark or "verdict" in getattr(item, "fixturenames", ()):
        item.user_properties.append((TEST_KEY, stable_test_id(item)))
    # With several --vllm-env values, which env a check judged (the merged fleet view keys
    # its columns on it; "what to change" names it on each line).
    spec = getattr(getattr(item, "callspec", None), "params", {}).get("vllm_env")
    if spec is not None and hasattr(spec, "prefix"):  # an EnvSpec (env.py loads lazily)
        item.user_properties.append((ENV_KEY, spec.name or spec.prefix.name))


def stable_test_id(item: pytest.Item) -> str:
    """``pytest_vllm_env/suite/test_cuda.py::test_nvcc_in_env[cuda]`` for the bundled suite
    (its node ids change with the rootdir: ``../../site-packages/...``); the node id for
    other tests."""
    try:
        rel = item.path.relative_to(suite_dir())
    except ValueError:
        return item.nodeid
    return f"pytest_vllm_env/suite/{rel.as_posix()}::{item.nodeid.split('::', 1)[-1]}"


def _has_warning(report: pytest.TestReport) -> bool:
    return any(
        key == FINDING_KEY and value.get("outcome") == "warning"
        for key, value in report.user_properties
    )


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config) -> Any:
    # A check that works at a cost passes, but is counted and lettered apart ("2 warned").
    if report.when == "call" and report.passed and _has_warning(report):
        return "warned", "W", ("WARNED", {"yellow": True})
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(FindingsCollector(config), "vllm-env-reporter")


class FindingsCollector:
    """Collects the findings of each test report into the session state (on the xdist
    controller too, where ``user_properties`` arrive with each report); a plugin object,
    as ``pytest_runtest_logreport`` is given no config."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)  # the last value of each key
        entries = [value for key, value in report.user_properties if key == FINDING_KEY]
        check_id = props.get(CHECK_KEY)
        # Only our checks belong in the report: a user's own @pytest.mark.gpu test landed
        # there as a failed "check" with an empty fix.
        final = report.when == "call" or (report.when == "setup" and not report.passed)
        if not (entries or check_id) or not final:
            return
        where = {"test": props.get(TEST_KEY, report.nodeid)}
        if props.get(ENV_KEY):
            where["env"] = props[ENV_KEY]
        findings = state(self.config).findings
        if entries:
            findings.extend({**entry, **where} for entry in entries)
            return
        # A check that ended before it gave a verdict (skipped or broken in a fixture).
        outcome = "error" if report.when == "setup" and report.failed else report.outcome
        findings.append(
            {
                "id": check_id,
                "area": check_id.split(".")[0],
                "outcome": outcome,
                "summary": _longrepr_text(report),
                "fix": "",
                "evidence": {},
                **where,
            }
        )


def _longrepr_text(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if report.failed and report.longreprtext:
        return report.longreprtext.strip().splitlines()[-1][:500]
    return ""
