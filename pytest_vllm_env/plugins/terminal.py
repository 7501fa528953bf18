"""What the run prints: the header lines (which env is judged, with what) and, at the end,
the warnings and "what to change".

Every string here may come from the judged env (package names and versions, Pixi env names,
paths) or from a check's summary and fix, which quote them: each line goes through
:func:`pytest_vllm_env.text.terminal_safe`, so an escape sequence in an env's metadata
cannot clear the screen, plant a hyperlink or rewrite a line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_vllm_env.plugins import settings
from pytest_vllm_env.plugins.report import HEADER_PACKAGES, TOOLKIT_PACKAGES
from pytest_vllm_env.plugins.session import engaged, state

if TYPE_CHECKING:
    from pytest_vllm_env.facts.env import EnvSpec, PixiEnv


def terminal_safe(value: object, *, multiline: bool = True) -> str:
    """:func:`pytest_vllm_env.text.terminal_safe`, imported when first needed."""
    from pytest_vllm_env.text import terminal_safe as safe

    return safe(value, multiline=multiline)


def pytest_report_header(config: pytest.Config) -> list[str]:
    # Under xdist the controller collects nothing, so the header after collection never
    # came: say which env(s) are judged here, before the workers start.
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return []
    if not engaged(config):
        return []
    from pytest_vllm_env.facts.env import EnvError

    st = state(config)
    try:
        lines = [line for spec in st.specs() for line in describe_env(st.env(spec), spec, config)]
    except EnvError as exc:
        return [terminal_safe(f"vllm-env: {exc}", multiline=False)]
    return lines + _notes(config)


def pytest_report_collectionfinish(
    config: pytest.Config, start_path: Path, items: list[pytest.Item]
) -> list[str]:
    if not any("vllm_env" in getattr(item, "fixturenames", ()) for item in items):
        return []
    if hasattr(config, "workerinput"):
        return []
    from pytest_vllm_env.facts.env import EnvError

    st = state(config)
    lines: list[str] = []
    try:
        for spec in st.specs():
            lines.extend(describe_env(st.env(spec), spec, config))
    except EnvError:
        return []
    return lines + _notes(config)


def _notes(config: pytest.Config) -> list[str]:
    return [terminal_safe(note, multiline=False) for note in state(config).notes]


def describe_env(env: PixiEnv, spec: EnvSpec, config: pytest.Config) -> list[str]:
    """The header lines for one env, fit for a terminal."""
    from pytest_vllm_env.facts.env import INTERPRETER

    versions = [f"{n} {env.version_of(n)}" for n in HEADER_PACKAGES if env.version_of(n)]
    toolkit = next((f"{p} {env.conda(p).version}" for p in TOOLKIT_PACKAGES if env.conda(p)), None)
    lines = [
        f"vllm-env: {env.prefix} ({spec.source}"
        + (f", pixi env {env.name!r}" if env.name else "")
        + (f"; {env.locked.describe}" if env.locked is not None else "")
        + ")",
        f"vllm-env: python {env.python_version or 'not found'}; "
        + (", ".join(versions) if versions else "no torch or vLLM installed")
        + f"; CUDA toolkit: {toolkit or 'none in conda-meta'}",
    ]
    values = settings.get_list(config, "cuda_arch")
    lines.append(
        "vllm-env: target archs: "
        + (", ".join(values) if values else "from TORCH_CUDA_ARCH_LIST or the visible GPU")
    )
    elsewhere = env.locked.vllm_elsewhere if env.locked is not None else env.vllm_in_other_envs
    if elsewhere and not env.version_of("vllm"):  # the workspace's vLLM is in another env
        held = ", ".join(f"{name!r} (vllm {version})" for name, version in elsewhere.items())
        said = (
            f"locks no vLLM; {env.locked.path.name} locks it in"
            if env.locked is not None
            else "holds no vLLM; the workspace's .pixi/envs holds it in"
        )
        lines.append(
            f"vllm-env: env {env.name!r} {said} {held}: "
            f"pass --vllm-env={next(iter(elsewhere))} to judge "
            + ("that env" if len(elsewhere) == 1 else "one of them")
        )
    if spec.source == INTERPRETER:  # nothing named an env: say loudly which one is judged
        lines.append(
            "vllm-env: no --vllm-env, no $CONDA_PREFIX and no Pixi workspace here: judging the "
            "Python that runs pytest; pass --vllm-env=PREFIX|NAME to judge your env"
        )
    if env.static:
        lines.append(static_line(env))
    return [terminal_safe(line, multiline=False) for line in lines]


def static_line(env: PixiEnv) -> str:
    """What ``--vllm-static`` means for this env, said where the run starts."""
    import os
    import sys

    line = (
        "vllm-env: --vllm-static: nothing of the env runs (activation scripts read, not "
        "sourced; its nvcc, cmake, ptxas and Python not started; gpu and build tiers skipped)"
    )
    here = {os.path.realpath(sys.prefix), os.path.realpath(os.environ.get("CONDA_PREFIX", "/"))}
    if os.path.realpath(env.prefix) in here:
        line += (
            "; but this pytest runs in it or under its activation ($CONDA_PREFIX): judge it "
            "from a Python of your own, outside `pixi run`/`pixi shell`"
        )
    return line


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    st = state(config)
    if not st.findings and not st.report_problem:
        return  # nothing to say (and findings.py, 1 % of a trivial run, stays unimported)
    from pytest_vllm_env.findings import grouped_by_fix

    if st.report_problem:
        terminalreporter.write_line(f"vllm-env: {terminal_safe(st.report_problem)}", red=True)
    findings = st.findings
    # with several envs, each line names the env it is about
    several = len({f.get("env") for f in findings} - {None}) > 1
    warned = grouped_by_fix(findings, ("warning",))
    if warned:
        terminalreporter.section("vllm-env: warnings (it works, at a cost)", sep="=", yellow=True)
        for group, members in warned:
            _write_group(terminalreporter, group, members, several)
    bad = grouped_by_fix(findings, ("failed", "error"))
    if not bad:
        return
    terminalreporter.section("vllm-env: what to change", sep="=", red=True)
    for group, members in bad:
        _write_group(terminalreporter, group, members, several)


# a check with more findings than this under one fix lists the first ones and counts the rest
SHOWN = 6


def _write_group(
    terminalreporter: Any, group: dict[str, Any], members: list[Any], several: bool
) -> None:
    """One distinct fix: what it resolves (a finding's summary; for several findings of one
    check, their subjects and the first summary), then the fix, once."""
    env = f"{group['env']}: " if several and group.get("env") else ""
    by_check: dict[str, list[Any]] = {}
    for entry in members:
        by_check.setdefault(entry["id"], []).append(entry)
    for cid, entries in by_check.items():
        subjects = [e["subject"] for e in entries if e.get("subject")]
        if len(entries) > 1 and len(subjects) == len(entries):
            shown = ", ".join(subjects[:SHOWN])
            more = f" and {len(subjects) - SHOWN} more" if len(subjects) > SHOWN else ""
            line = f"[{cid}] {env}{len(entries)} subjects: {shown}{more}"
            terminalreporter.write_line(terminal_safe(line))
            terminalreporter.write_line(terminal_safe(f"    {entries[0]['summary']}"))
            continue
        for entry in entries[:SHOWN]:
            terminalreporter.write_line(terminal_safe(f"[{cid}] {env}{entry['summary']}"))
        if len(entries) > SHOWN:
            terminalreporter.write_line(f"    ... and {len(entries) - SHOWN} more")
    terminalreporter.write_line(terminal_safe(f"    fix: {group['fix']}"))
