"""What ``-m`` selects of the bundled suite, said when it is nothing (issue 21).

pytest takes any ``-m`` expression: ``-m toolchian`` (a typo) or ``-m "gpu and toolchain"``
(no check is both) deselect every check and exit 5 with "N deselected", which reads like a
suite with nothing to judge. Here a marker name the run does not know is a usage error at
start when the run is the suite alone (every marker of the suite is registered by then), and
an expression that selects no test of a conformance run is said in the summary.
"""

from __future__ import annotations

import re

import pytest

# pytest's identifiers in a mark expression (_pytest/mark/expression.py, Scanner: IDENT);
# keyword arguments in parentheses (``vllm_check(id="cuda.nvcc")``) name no marker.
_IDENT = re.compile(r"(?:\w|:|\+|-|\.|\[|\]|\\|/)+")
_ARGS = re.compile(r"\([^()]*\)")
_OPERATORS = frozenset({"and", "or", "not", "True", "False", "None"})
# The markers the suite's tests carry (plugin.py and plugins/lock.py register them).
SUITE_MARKERS = ("toolchain", "gpu", "build", "integration", "vllm_check", "vllm_lock")


def marker_names(expr: str) -> list[str]:
    """The marker names ``expr`` (a ``-m`` expression) asks about, in order, once each."""
    names: list[str] = []
    for name in _IDENT.findall(_ARGS.sub(" ", expr)):
        if name not in _OPERATORS and name not in names:
            names.append(name)
    return names


def registered_markers(config: pytest.Config) -> list[str]:
    """The names of the markers registered (``markers`` ini lines, pytest's and plugins')."""
    names = []
    for line in config.getini("markers"):
        name = str(line).split(":", 1)[0].split("(", 1)[0].strip()
        if name and name not in names:
            names.append(name)
    return names


def _suite_alone(config: pytest.Config) -> bool:
    """``--vllm-conformance`` with no test paths of the user's: every test is the suite's."""
    if not config.getoption("vllm_conformance", default=False):
        return False
    return getattr(config, "args_source", None) != pytest.Config.ArgsSource.ARGS


@pytest.hookimpl(trylast=True)  # after every plugin registered its markers
def pytest_configure(config: pytest.Config) -> None:
    expr = str(config.getoption("markexpr", default="") or "")
    if not expr or not _suite_alone(config):
        return
    # the suite's own markers count whether or not their plugin has registered them yet
    # (this hook may run as soon as plugin.py registers this module)
    known = list(SUITE_MARKERS) + [m for m in registered_markers(config) if m not in SUITE_MARKERS]
    unknown = [n for n in marker_names(expr) if n not in known]
    if unknown:
        from pytest_vllm_env.text import terminal_safe

        ours = ", ".join(SUITE_MARKERS)
        raise pytest.UsageError(
            terminal_safe(
                f"-m {expr!r}: {', '.join(unknown)} is no marker of the conformance suite "
                f"(it would deselect every check); its markers: {ours}"
            )
        )


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    expr = str(config.getoption("markexpr", default="") or "")
    if not expr or not config.getoption("vllm_conformance", default=False):
        return
    if exitstatus != pytest.ExitCode.NO_TESTS_COLLECTED:
        return
    from pytest_vllm_env.text import terminal_safe

    deselected = len(terminalreporter.stats.get("deselected", []))
    of = f" (all {deselected} deselected)" if deselected else ""
    terminalreporter.write_line(
        terminal_safe(
            f"pytest-vllm-env: -m {expr!r} selects no check of the conformance suite{of}; "
            f"its tiers: -m toolchain, -m gpu, -m build, -m integration"
        ),
        yellow=True,
    )
