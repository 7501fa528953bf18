"""``triton.ptxas``: can the ptxas Triton runs assemble for each target arch?

Triton (``backends/nvidia/compiler.py``, ``CUDABackend.make_cubin``) writes PTX for the device
and runs ``ptxas --gpu-name=sm_XX[a]`` at the first launch of every kernel: vLLM's Triton
kernels and everything torch Inductor compiles. When that ptxas's CUDA release predates the
target, it refuses (``ptxas fatal : Value 'sm_121a' is not defined for option 'gpu-name'``:
triton-lang/triton#8539 on DGX Spark with Triton 3.5's bundled CUDA 12.8 ptxas;
vllm-project/vllm#31338 on Thor, ``sm_110a``; fishaudio/fish-speech#907 on an RTX 5090 with
Triton 3.2's CUDA 12.4 ptxas) and the engine dies at start-up. The fix the maintainers give is
an override, ``TRITON_PTXAS_PATH`` (``TRITON_PTXAS_BLACKWELL_PATH`` where the installed Triton
reads that one for the arch), pointing at a newer ptxas. Which binary, which name and which
variable come from the env's Triton source; which targets a CUDA release's ptxas accepts from
the measured table (tables/ptxas.py).
"""

from __future__ import annotations

from pathlib import Path

from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.facts.triton_ptxas import PtxasBinary, TritonPtxasFacts, TritonTarget
from pytest_vllm_env.findings import Finding, failed, passed, skipped, warning
from pytest_vllm_env.tables import ptxas as table

CID = "triton.ptxas"


def judge(facts: TritonPtxasFacts | None, env: PixiEnv, no_archs: str = "") -> list[Finding]:
    """One finding per target arch; skipped without Triton or without target archs."""
    if facts is None:
        return [skipped(CID, f"Triton is not installed in {env.prefix}")]
    if no_archs:
        return [skipped(CID, no_archs)]
    if not facts.targets:
        why = "; ".join(facts.missing) or "no rule found"
        return [skipped(CID, f"Triton {facts.version}: its ptxas rule could not be read ({why})")]
    return [_target(t, facts, env) for t in facts.targets]


def _target(t: TritonTarget, facts: TritonPtxasFacts, env: PixiEnv) -> Finding:
    where = f"Triton {facts.version} assembles for {t.arch} with `--gpu-name={t.gpu_name}`"
    ev = {
        "triton": facts.version,
        "tool": t.tool,
        "gpu_name": t.gpu_name,
        "variable": t.variable,
        "bundled": _show(t.bundled),
        "rule": "triton/backends/nvidia/compiler.py: make_cubin, get_ptxas, "
        "sm_arch_from_capability (read from the env's copy)",
    }
    if t.override:
        ev["override"] = f"{t.variable}={t.override} ({t.override_source or 'activation'})"
    for binary in (t.override_binary, t.bundled if t.used is None else None):
        if binary is not None and binary.not_run and not binary.release:
            return skipped(
                CID,
                f"{where}: {binary.path} was not run ({binary.not_run}) and no file of the env "
                "says its CUDA release",
                **ev,
            )
    ignored = ""
    if t.override and t.override_binary is not None and not t.override_binary.release:
        ignored = (
            f"{t.variable}={t.override} is set ({t.override_source or 'activation'}) but "
            f"Triton passes over it ({t.override_binary.problem}) and runs its bundled {t.tool}"
        )
    used = t.used
    if used is None or used.release is None:
        return failed(
            CID,
            f"{where}, but no {t.tool} runs: the bundled one is {t.bundled.problem or 'missing'}"
            + (f"; {ignored}" if ignored else "")
            + f'; Triton raises "Cannot find {t.tool}" at the first kernel',
            _fix(t, facts, env),
            **ev,
        )
    ok = table.accepts(used.release, t.gpu_name)
    ev["used"] = _show(used)
    if ok is None:
        return skipped(
            CID,
            f"{where} using {used.path} (CUDA {used.release}); tables/ptxas.py has no row for "
            f"{t.gpu_name} at that release, so this is not judged",
            **ev,
        )
    if not ok:
        return failed(
            CID,
            f'{where} using {_name(t, used)} (CUDA {used.release}), which refuses it: "ptxas '
            f"fatal : Value '{t.gpu_name}' is not defined for option 'gpu-name'\" at the first "
            f"Triton kernel (vLLM's or torch.compile's), and the engine dies at start-up"
            + (f"; {ignored}" if ignored else ""),
            _fix(t, facts, env),
            needs=_needs(t.gpu_name),
            **ev,
        )
    if ignored:
        return warning(
            CID,
            f"{where} using its bundled {t.tool} (CUDA {used.release}), which accepts it; "
            f"{ignored}: the setting does nothing",
            f"point {t.variable} at a ptxas that runs, or remove it from "
            f"{t.override_source or 'the activation'}",
            **ev,
        )
    return passed(
        CID, f"{where} using {_name(t, used)} (CUDA {used.release}), which accepts it", **ev
    )


def _name(t: TritonTarget, used: PtxasBinary) -> str:
    if t.override_binary is not None and used.path == t.override_binary.path:
        return f"{used.path} ({t.variable})"
    if used.path != t.bundled.path:  # conda-forge's Triton: `ptxas` on the activated PATH
        return f"{used.path} (found on the activated PATH)"
    return (
        f"its bundled {t.tool} ({used.how})" if "measured" in used.how else f"its bundled {t.tool}"
    )


def _show(binary: PtxasBinary) -> str:
    if binary.release:
        return f"{binary.path}: CUDA {binary.release} ({binary.how})"
    return f"{binary.path}: {binary.problem}"


def _needs(gpu_name: str) -> str:
    first = table.first_release(gpu_name)
    last = table.last_major(gpu_name)
    text = f"ptxas of CUDA >= {first}" if first else "a ptxas that knows it"
    return text + (f" and < {last + 1}.0" if last is not None else "")


def _fix(t: TritonTarget, facts: TritonPtxasFacts, env: PixiEnv) -> str:
    variable = t.variable or "TRITON_PTXAS_PATH"
    capable = [c for c in facts.candidates if c.release and table.accepts(c.release, t.gpu_name)]
    if "-" in variable:
        # Triton 3.3's `TRITON_{binary.upper()}_PATH` for ptxas-blackwell: no shell can set it
        return (
            f"this Triton reads the override from `{variable}`, a name no shell or activation "
            f"can set; install the torch/Triton release whose ptxas accepts {t.gpu_name} "
            f"({_needs(t.gpu_name)})"
        )
    if capable:
        best = capable[-1]
        return fixes.set_var(env, variable, _in_env(best.path, env)) + (
            f" (CUDA {best.release}'s ptxas, already in the env, accepts {t.gpu_name})"
        )
    last = table.last_major(t.gpu_name)
    first = table.first_release(t.gpu_name) or ""
    py = ".".join((env.python_version or "3.12").split(".")[:2])
    if last is not None and last <= 12:
        wheel, sub = Package("nvidia-cuda-nvcc-cu12", f">={first}", pypi=True), "cuda_nvcc"
    else:
        floor = first if first.startswith("13") else "13.0"
        wheel, sub = Package("nvidia-cuda-nvcc", f">={floor}", pypi=True), "cu13"
    path = f"${{CONDA_PREFIX}}/lib/python{py}/site-packages/nvidia/{sub}/bin/ptxas"
    return (
        fixes.add(env, wheel)
        + f" (a ptxas that accepts {t.gpu_name}), then "
        + fixes.set_var(env, variable, path)
    )


def _in_env(path: str, env: PixiEnv) -> str:
    """``${CONDA_PREFIX}/bin/ptxas`` for a path inside the env, the path itself otherwise."""
    try:
        rel = Path(path).relative_to(env.prefix)
    except ValueError:
        return path
    return f"${{CONDA_PREFIX}}/{rel.as_posix()}"
