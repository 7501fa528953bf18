"""``flashinfer.jit`` and ``flashinfer.kernel-wheels``: FlashInfer's run-time compiler, and its
prebuilt kernel packages against its own version.

``flashinfer.jit``: FlashInfer compiles its kernels with nvcc at first use unless a prebuilt
package provides them. vLLM 0.26.0's FlashInfer sampler (on by default) compiles its sampling
kernels in the engine's profile run, so a JIT that cannot run takes the engine down at
start-up: vllm-project/vllm#49497 (no nvcc: "no fallback to native sampler"),
vllm-project/vllm#50705 (sm_120 with a CUDA 12.8 toolkit: FlashInfer 0.6.14's gate "SM 12.x
requires CUDA >= 12.9"). Levels: prebuilt: passed; compiles at first start: warning (minutes,
then cached in ``~/.cache/flashinfer``); cannot compile and the sampler is on: failed; cannot
compile, sampler off: warning (a FlashInfer path vLLM picks later fails at first use).

``flashinfer.kernel-wheels``: ``flashinfer/jit/env.py`` compares ``flashinfer-cubin`` and
``flashinfer-jit-cache`` with its own version at import; 0.6.x raises ("flashinfer-cubin
version (0.6.1) does not match flashinfer version (0.5.3)": pipecat-ai/nemotron-january-2026#8,
NVIDIA-NeMo/Export-Deploy#679, vllm-project/vllm#49804), 0.7.x logs it and ignores the package
(cubins then downloaded at first use, kernels JIT-compiled). Raise: failed; ignore: warning.
"""

from __future__ import annotations

import re

from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.facts.flashinfer_jit import FlashInferFacts, FlashInferTarget
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped, warning
from pytest_vllm_env.tables import ptxas as table

JIT = "flashinfer.jit"
WHEELS = "flashinfer.kernel-wheels"
INDEX = "https://flashinfer.ai/whl"


def jit(facts: FlashInferFacts | None, env: PixiEnv, no_archs: str = "") -> list[Finding]:
    """One finding per target arch."""
    if facts is None:
        return [skipped(JIT, f"flashinfer-python is not installed in {env.prefix}")]
    if no_archs:
        return [skipped(JIT, no_archs)]
    if facts.unreadable:  # a file the verdict rests on is there and unreadable: name it
        return [
            error(
                JIT,
                f"FlashInfer {facts.version}: what its JIT does cannot be read: {why}",
                f"reinstall {package}: " + fixes.reinstall(env, package, pypi=package != "pytorch"),
            )
            for package, why in facts.unreadable
        ]
    return [_target(t, facts, env) for t in facts.targets]


def _cu(facts: FlashInferFacts) -> str:
    cuda = facts.torch_cuda or facts.cuda_version or "13.0"
    return "cu" + "".join(cuda.split(".")[:2])


def _jit_cache_fix(facts: FlashInferFacts, env: PixiEnv) -> str:
    cu = _cu(facts)
    return (
        fixes.pin(
            env,
            Package("flashinfer-jit-cache", f"=={facts.version}+{cu}", pypi=True),
            index=f"{INDEX}/{cu}",
            extra=True,
        )
        + " (FlashInfer's prebuilt kernels: nothing compiles at start-up)"
    )


def _target(t: FlashInferTarget, facts: FlashInferFacts, env: PixiEnv) -> Finding:
    head = f"FlashInfer {facts.version} on {t.arch}"
    ev = {
        "cuda_home": facts.cuda_home
        and f"{facts.cuda_home} (from {facts.cuda_home_how})"
        or facts.cuda_home_problem,
        "nvcc": _show(facts),
        "cuda_version": f"{facts.cuda_version} ({facts.cuda_version_how})",
        "compiled_as": t.compiled_as and f"sm_{t.compiled_as}" or "",
        "rule": "flashinfer/jit/cpp_ext.py: get_cuda_path, get_cuda_version; "
        "flashinfer/compilation_context.py: CompilationContext._normalize_cuda_arch "
        "(read from the env's copy)",
        "sampler": facts.sampler_where or "not in this vLLM",
    }  # fmt: skip
    if t.prebuilt:
        return passed(JIT, f"{head}: nothing compiles, {t.prebuilt} provides the kernels", **ev)
    if facts.nvcc is not None and facts.nvcc.not_run and not facts.nvcc.release:
        return skipped(
            JIT,
            f"{head}: its nvcc {facts.nvcc.path} was not run ({facts.nvcc.not_run}) and no file "
            "of the env says its CUDA release",
            **ev,
        )
    blocked = _blocked(t, facts)
    if blocked is None:
        return warning(
            JIT,
            f"{head}: no prebuilt kernels, so the first start JIT-compiles FlashInfer's kernels"
            f" for sm_{t.compiled_as} with {facts.nvcc.path if facts.nvcc else 'nvcc'} (CUDA "
            f"{facts.nvcc.release if facts.nvcc else '?'}): minutes, then cached in "
            "~/.cache/flashinfer",
            _jit_cache_fix(facts, env),
            **ev,
        )
    fix = _unblock_fix(t, facts, env)
    if facts.sampler:
        return failed(
            JIT,
            f"{head}: {blocked}; vLLM's FlashInfer sampler ({facts.sampler_where}) compiles "
            "FlashInfer's sampling kernels in the engine's profile run, and the engine dies at "
            "start-up",
            fix
            + "; or set VLLM_USE_FLASHINFER_SAMPLER=0 (vLLM's own sampler, slower): "
            + fixes.set_var(env, "VLLM_USE_FLASHINFER_SAMPLER", "0"),
            **ev,
        )
    return warning(
        JIT,
        f"{head}: {blocked}; a FlashInfer kernel vLLM picks later (attention, MoE, FP8 KV "
        "cache) fails at its first use",
        fix,
        **ev,
    )


def _show(facts: FlashInferFacts) -> str:
    nvcc = facts.nvcc
    if nvcc is None:
        return "none"
    return f"{nvcc.path}: CUDA {nvcc.release}" if nvcc.release else f"{nvcc.path}: {nvcc.problem}"


def _blocked(t: FlashInferTarget, facts: FlashInferFacts) -> str | None:
    """Why FlashInfer cannot compile for ``t``; None when it can."""
    if t.gate:
        return (
            f'its arch gate raises "{t.gate}" (CUDA {facts.cuda_version} from '
            f"{facts.cuda_version_how})"
        )
    if facts.cuda_home is None:
        return f'it finds no CUDA: {facts.cuda_home_problem} ("Could not find nvcc")'
    if facts.nvcc is None or not facts.nvcc.release:
        problem = facts.nvcc.problem if facts.nvcc else "no nvcc"
        return f"its nvcc does not run: {problem}"
    if t.compiled_as is None:
        return None  # the gate could not be read: nothing to say against it
    ok = table.accepts(facts.nvcc.release, f"sm_{t.compiled_as}")
    if ok is False:
        return (
            f"it compiles for sm_{t.compiled_as} with nvcc {facts.nvcc.release} "
            f"({facts.nvcc.path}), which does not know it (needs CUDA >= "
            f"{table.first_release(f'sm_{t.compiled_as}')})"
        )
    return None


def _needed_cuda(t: FlashInferTarget) -> str | None:
    """The CUDA release FlashInfer's compile for ``t`` needs: named by its gate's message, else
    the first release whose nvcc knows the arch it compiles for (tables/ptxas.py)."""
    match = re.search(r"CUDA >= (\d+\.\d+)", t.gate)
    if match:
        return match[1]
    return table.first_release(f"sm_{t.compiled_as}") if t.compiled_as else None


def _unblock_fix(t: FlashInferTarget, facts: FlashInferFacts, env: PixiEnv) -> str:
    need = _needed_cuda(t)
    have = ".".join((facts.torch_cuda or need or "12.8").split(".")[:2])
    cuda = max(have, need or have, key=lambda v: tuple(int(p) for p in v.split(".")))
    nvcc = fixes.add(env, Package("cuda-nvcc", f"{cuda}.*"), Package("cuda-version", f"{cuda}.*"))
    if fixes.kind_of(env) in ("pixi", "pyproject", "conda"):
        nvcc += " and " + fixes.set_var(env, "CUDA_HOME", "${CONDA_PREFIX}")
    return f"{_jit_cache_fix(facts, env)}; or give FlashInfer an nvcc of CUDA {cuda}: {nvcc}"


def kernel_wheels(facts: FlashInferFacts | None, env: PixiEnv) -> list[Finding]:
    """One finding per installed FlashInfer kernel package."""
    if facts is None:
        return [skipped(WHEELS, f"flashinfer-python is not installed in {env.prefix}")]
    if not facts.packages:
        return [skipped(WHEELS, "neither flashinfer-cubin nor flashinfer-jit-cache is installed")]
    out = []
    checks = {c.package: c for c in facts.checks}
    shim = facts.packages.get("flashinfer-jit-cache")
    for package, version in facts.packages.items():
        ev = {"flashinfer-python": facts.version, package: version}
        check = checks.get(package)
        if check is None:  # a 0.7 provider: it must carry the shim's version exactly
            if shim and version != shim:
                out.append(
                    warning(
                        WHEELS,
                        f"{package} {version} is not flashinfer-jit-cache {shim}'s version: "
                        "FlashInfer ignores it and JIT-compiles its kernels instead",
                        fixes.pin(env, Package(package, f"=={shim}", pypi=True)),
                        **ev,
                    )
                )
            else:
                out.append(passed(WHEELS, f"{package} {version} matches its shim", **ev))
            continue
        ev["rule"] = check.where + " (read from the env's copy)"
        if check.refused is None:
            out.append(skipped(WHEELS, f"{package}: FlashInfer's version check could not be read"))
        elif check.refused:
            out.append(_refused(package, version, check.mode, check.message, facts, env, ev))
        elif facts.bypass and not _same(version, facts.version):
            out.append(
                warning(
                    WHEELS,
                    f"{package} {version} is not FlashInfer {facts.version}'s, and "
                    f"FLASHINFER_DISABLE_VERSION_CHECK={facts.bypass} makes FlashInfer use it: "
                    "kernels of another release",
                    _pin_fix(package, facts, env),
                    **ev,
                )
            )
        else:
            out.append(
                passed(
                    WHEELS, f"{package} {version} matches flashinfer-python {facts.version}", **ev
                )
            )
    return out


def _same(package_version: str, version: str) -> bool:
    return package_version == version or package_version.startswith(f"{version}+")


def _pin_fix(package: str, facts: FlashInferFacts, env: PixiEnv) -> str:
    if package == "flashinfer-cubin":
        return (
            fixes.pin(env, Package(package, f"=={facts.version}", pypi=True))
            + f", or remove {package} (FlashInfer then downloads the cubins it needs)"
        )
    return _jit_cache_fix(facts, env) + f", or remove {package}"


def _refused(
    package: str,
    version: str,
    mode: str,
    message: str,
    facts: FlashInferFacts,
    env: PixiEnv,
    ev: dict,
) -> Finding:
    said = f'"{message}"' if message else "a version mismatch"
    if mode == "raise":
        return failed(
            WHEELS,
            f"{package} {version} is not flashinfer-python {facts.version}'s: `import "
            f"flashinfer` raises RuntimeError: {said}, and vLLM dies where it imports FlashInfer",
            _pin_fix(package, facts, env),
            **ev,
        )
    cost = (
        "its cubins are downloaded at first use instead (a node without network fails there)"
        if package == "flashinfer-cubin"
        else "its kernels are JIT-compiled at first use instead"
    )
    return warning(
        WHEELS,
        f"{package} {version} is not flashinfer-python {facts.version}'s: FlashInfer logs {said}"
        f" and ignores the package; {cost}",
        _pin_fix(package, facts, env),
        **ev,
    )
