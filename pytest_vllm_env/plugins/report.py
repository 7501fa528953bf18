"""The JSON report (``--vllm-env-report``): where it goes, checked at start, and what it holds.

The report is data for tools (``pytest-vllm-env merge``, CI): the values are written as
they are, never escaped for a terminal. README: The JSON report.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_vllm_env.plugins import settings
from pytest_vllm_env.plugins.session import node_name, state
from pytest_vllm_env.plugins.verdict import strict_mode

if TYPE_CHECKING:
    from pytest_vllm_env.facts.env import PixiEnv

HEADER_PACKAGES = ("torch", "vllm", "xformers", "flash-attn", "nvidia-modelopt")
TOOLKIT_PACKAGES = ("cuda-version", "cuda-nvcc", "cuda-toolkit", "cudatoolkit")
# 2: the "warning" outcome and "strict" (README: The JSON report)
REPORT_SCHEMA = 2
OPTION = "--vllm-env-report"


def check_report_path(config: pytest.Config) -> None:
    """``--vllm-env-report`` must name a file we can write, outside the judged envs: checked
    at start (a directory gave a traceback at the end, the summary lost, exit 1)."""
    value = settings.get(config, "vllm_env_report")
    if not value or hasattr(config, "workerinput"):
        return
    path = report_path(config, value)
    if path.is_dir():
        raise pytest.UsageError(
            f"{OPTION} {value}: is a directory; name a file, e.g. {path / 'vllm-env.json'}"
        )
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise pytest.UsageError(f"{OPTION} {value}: {parent} is a file, not a directory")
    if parent is not None and not os.access(parent, os.W_OK):
        raise pytest.UsageError(f"{OPTION} {value}: {parent} is not writable")
    owner = _inside_judged_env(config, path)
    if owner is not None:
        raise pytest.UsageError(
            f"{OPTION} {value}: inside the judged env {owner}; nothing is written there: "
            "put the report in your project or a temp dir"
        )


def _inside_judged_env(config: pytest.Config, path: Path) -> Path | None:
    from pytest_vllm_env.plugins.rootdir import inside

    parent = next((p for p in path.parents if p.exists()), path)
    return inside(parent, state(config).judged_prefixes())


def report_path(config: pytest.Config, value: str) -> Path:
    """``--vllm-env-report`` as a path (``%N``: the node name), by the one path rule
    (:func:`pytest_vllm_env.plugins.settings.resolve_path`)."""
    from pytest_vllm_env.runners import node as node_mod

    expanded = node_mod.expand_report_path(value, node_name(config)[0])
    return settings.resolve_path(config, "vllm_env_report", expanded)


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    target = settings.get(config, "vllm_env_report")
    if target and not hasattr(config, "workerinput"):
        path = report_path(config, target)
        try:
            write_report(config, path)
        except OSError as exc:  # checked at start; the disk may still fill up
            state(config).report_problem = f"could not write {path}: {exc.strerror or exc}"
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR


def _vllm_elsewhere(env: PixiEnv) -> dict[str, Any]:
    """An env that locks or holds no vLLM: ``{"vllm_in_other_envs": {env: version}}`` for
    the envs of the lock (lock mode) or the installed envs of the workspace that do (absent
    otherwise, so that reports without it stay as they were)."""
    elsewhere = env.locked.vllm_elsewhere if env.locked is not None else env.vllm_in_other_envs
    if not elsewhere or env.version_of("vllm"):
        return {}
    return {"vllm_in_other_envs": dict(elsewhere)}


def write_report(config: pytest.Config, path: Path) -> None:
    """``{"schema": 2, "env": ..., "targets": ..., "strict": ..., "node": ..., "checks":
    [...], "fixes": [...]}``: stable, parsed by tools. Schema 2 added the ``warning`` outcome
    (schema 1 had only passed, failed, skipped, error) and ``strict``; ``node``, ``created``
    and ``fixes`` (each distinct fix once) were added later within schema 2 (README: The
    JSON report)."""
    from pytest_vllm_env.facts.env import EnvError
    from pytest_vllm_env.findings import fix_groups
    from pytest_vllm_env.runners import node as node_mod

    st = state(config)
    envs: list[dict[str, Any]] = []
    try:
        for spec in st.specs():
            env = st.env(spec)
            envs.append(
                {
                    "prefix": str(env.prefix),
                    "name": env.name,
                    "source": spec.source,
                    "manifest": str(env.manifest_path) if env.manifest_path else None,
                    "python": str(env.python) if env.python else None,
                    "python_version": env.python_version,
                    "judged_from": str(env.locked.path) if env.locked is not None else "files",
                    **_vllm_elsewhere(env),
                    "packages": {
                        n: env.version_of(n)
                        for n in HEADER_PACKAGES + TOOLKIT_PACKAGES
                        if env.version_of(n)
                    },
                }
            )
    except EnvError as exc:
        envs.append({"error": str(exc)})
    archs, archs_source = [], "none"
    python, environ = None, None
    if envs and "error" not in envs[0]:
        first = st.env(st.specs()[0])
        resolved, archs_source = st.archs(first)
        archs = [str(a) for a in resolved]
        python, environ = first.python, first.environ()
        if first.static:  # --vllm-static: the node is read with our Python and the shell's
            python, environ = None, None
    name, name_source = node_name(config)
    report = {
        "schema": REPORT_SCHEMA,
        "env": envs[0] if len(envs) == 1 else {"envs": envs},
        "targets": {
            "cuda_archs": archs,
            "cuda_archs_source": archs_source,
            "vllm_wheels": settings.get_list(config, "vllm_wheel"),
            "modelopt_checkpoints": settings.get_list(config, "modelopt_checkpoint"),
        },
        "strict": strict_mode(config),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "node": node_mod.gather(name=name, name_source=name_source, python=python, environ=environ),
        "checks": st.findings,
        # each distinct fix once, with the checks and subjects it resolves (README)
        "fixes": fix_groups(st.findings, ("failed", "error", "warning")),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
