"""``cuda.arch-ptxas`` (build tier): the env's real ptxas assembles a tiny PTX for each target
arch, the probe behind :func:`pytest_vllm_env.checks.cuda.arch_supported`'s table.

Pure: the runs arrive as :class:`pytest_vllm_env.facts.toolkit.PtxasRun`
(:func:`pytest_vllm_env.facts.toolkit.ptxas_runs` runs ptxas). A ptxas killed at its timeout
says nothing of the arch: no CUDA upgrade is asked for then (issue 21, blame where it belongs).
"""

from __future__ import annotations

from collections.abc import Sequence

from pytest_vllm_env.checks.cuda import cuda_packages
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.toolkit import PtxasRun, ToolkitFacts
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped
from pytest_vllm_env.tables.archs import Arch
from pytest_vllm_env.tables.cuda_archs import min_toolkit_for


def arch_ptxas(
    env: PixiEnv, t: ToolkitFacts, archs: Sequence[Arch], runs: Sequence[PtxasRun]
) -> list[Finding]:
    """The real probe behind cuda.arch-supported: the env's ptxas assembled for each arch
    (``runs``: :func:`pytest_vllm_env.facts.toolkit.ptxas_runs`)."""
    check = "cuda.arch-ptxas"
    if not archs:
        return [skipped(check, "no target arch: pass --cuda-arch")]
    if t.ptxas is None:
        return [skipped(check, f"no ptxas in {t.prefix}/bin")]
    findings = []
    for run in runs:
        if run.not_run:
            findings.append(skipped(check, f"{t.ptxas} not run for {run.arch.sm}: {run.not_run}"))
            continue
        if run.timed_out:  # a hang says nothing of the arch: no CUDA upgrade to suggest
            findings.append(
                error(
                    check,
                    f"{t.ptxas} did not finish a tiny PTX for {run.arch.sm}: {run.how}",
                    f"a ptxas that hangs is broken: {fixes.reinstall(env, 'cuda-nvcc')}",
                )
            )
            continue
        if run.ok:
            findings.append(passed(check, f"{t.ptxas} assembles for {run.arch.sm}"))
        else:
            need = min_toolkit_for(run.arch) or "a newer CUDA"
            findings.append(
                failed(
                    check,
                    f"{t.ptxas} refuses {run.arch.sm}: {run.how}",
                    fixes.add(env, *cuda_packages(need, "cuda-version"), verb="set"),
                )
            )
    return findings
