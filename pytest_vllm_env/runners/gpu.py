"""The gpu tier's runner: the TARGET env's Python on a probe script, its result as data.

Everything here runs the target env's Python (``vllm_env.python``) on a probe script from
``pytest_vllm_env/probes`` with the env's activation applied and a timeout; the probe
prints one JSON line, :func:`run_probe` reads it into a
:class:`~pytest_vllm_env.facts.gpu_probe.ProbeResult`, and the checks
(:mod:`pytest_vllm_env.checks.gpu_device` and the ``gpu_vllm_*`` modules) judge it.
pytest itself never imports torch or vLLM.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_vllm_env import files, proc
from pytest_vllm_env.facts.gpu_probe import NO_PYTHON
from pytest_vllm_env.facts.gpu_probe import ProbeResult as ProbeResult  # re-exported

PROBES = Path(__file__).parent.parent / "probes"


def run_probe(
    python: str | Path | None,
    script: str,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
) -> ProbeResult:
    """Run ``probes/<script>`` with the target Python; never raises (hang, crash, bad JSON)."""
    if not python:
        return ProbeResult(script, problem=NO_PYTHON)
    # Importing torch or vLLM would write __pycache__ into the judged env's site-packages
    # wherever the installer left no bytecode (uv's default): never write into the env.
    environ = {**(os.environ if env is None else env), "PYTHONDONTWRITEBYTECODE": "1"}
    result = proc.run(
        [python, str(PROBES / script), *args], env=environ, timeout=timeout, merge_output=True
    )
    text = result.output
    common: dict[str, Any] = dict(
        output_tail=text[-2000:],
        seconds=result.seconds,
        returncode=result.returncode,
        timed_out=result.timed_out,
        timeout=timeout,
    )
    if result.launch_error or result.timed_out or result.not_run:
        return ProbeResult(script, problem=result.describe(), before=text[-4000:], **common)
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i].strip()
        if not line.startswith("{"):
            continue
        try:
            data = files.loads_json(line)  # the env's Python prints it: nesting bounded too
        except ValueError:
            continue
        if isinstance(data, dict):
            before = "\n".join(lines[:i])[-4000:]
            after = "\n".join(lines[i + 1 :])[-4000:]
            return ProbeResult(script, data=data, before=before, after=after, **common)
    return ProbeResult(
        script,
        problem=f"printed no JSON result ({result.describe()})",
        before=text[-4000:],
        **common,
    )
