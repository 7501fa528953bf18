"""``deepgemm.jit``: can DeepGEMM's JIT compile for the target where vLLM uses it?

vLLM takes DeepGEMM for FP8 block-scaled linear and MoE layers (DeepSeek-V3, Qwen3-FP8 ...) on
the archs its ``support_deep_gemm`` admits (0.26.0, 0.33.0: 9.0, 10.x, 12.x), unless
``VLLM_USE_DEEP_GEMM=0``. DeepGEMM compiles each kernel with nvcc at first use, from the
header tree its package carries (``include/deep_gemm/impls/sm90_*.cuh`` ...); its compiled
module asserts "NVCC version should be >= 12.3" and recommends 12.9 "for the best DeepGEMM
performance". vLLM imports it lazily and, when the import fails (no CUDA home: an
``AssertionError`` in ``_find_cuda_home``), logs it and runs the other FP8 kernels: a slower
fallback. Levels: warning where the JIT cannot work (vLLM falls back, or a DeepGEMM model fails
at its first GEMM) or works below the recommended nvcc; passed where it can; skipped where vLLM
does not use DeepGEMM on the target.
"""

from __future__ import annotations

from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.deepgemm import DeepGemmFacts, DeepGemmTarget
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.findings import Finding, error, passed, skipped, warning
from pytest_vllm_env.tables import ptxas as table

CID = "deepgemm.jit"


def judge(facts: DeepGemmFacts | None, env: PixiEnv, no_archs: str = "") -> list[Finding]:
    """One finding per target arch."""
    if facts is None:
        return [skipped(CID, f"no vLLM with DeepGEMM in {env.prefix}")]
    if no_archs:
        return [skipped(CID, no_archs)]
    if not facts.enabled:
        return [skipped(CID, f"DeepGEMM is off: {facts.enabled_where}")]
    if facts.unreadable:  # a file the verdict rests on is there and unreadable: name it
        return [
            error(
                CID,
                f"DeepGEMM ({facts.origin}): whether and how vLLM uses it cannot be read: {why}",
                f"reinstall {package}: " + fixes.reinstall(env, package, pypi=True),
            )
            for package, why in facts.unreadable
        ]
    return [_target(t, facts, env) for t in facts.targets]


def _ver(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:2])


def _target(t: DeepGemmTarget, facts: DeepGemmFacts, env: PixiEnv) -> Finding:
    if t.used is False:
        return skipped(
            CID,
            f"vLLM {facts.vllm} does not use DeepGEMM on {t.arch} (vllm/platforms/cuda.py: "
            "support_deep_gemm)",
        )
    head = f"DeepGEMM ({facts.origin}) on {t.arch}"
    nvcc = facts.nvcc
    ev = {
        "deep_gemm": facts.root,
        "headers": f"include/deep_gemm/impls: {', '.join(t.headers) or 'none for this arch'}",
        "cuda_home": f"{facts.cuda_home} ({facts.cuda_home_how})"
        if facts.cuda_home
        else facts.cuda_home_problem,
        "nvcc": (f"{nvcc.path}: CUDA {nvcc.release}" if nvcc.release else nvcc.problem)
        if nvcc
        else "none",
        "needs": f"nvcc >= {facts.min_nvcc or '?'} (best >= {facts.best_nvcc or '?'}), "
        "read from its compiled module",
        "enabled": facts.enabled_where,
    }
    off = "; or turn it off: " + fixes.set_var(env, "VLLM_USE_DEEP_GEMM", "0")
    slower = (
        "vLLM logs the failed import and runs its other FP8 kernels instead (slower), or a "
        "model that takes a DeepGEMM path fails at its first GEMM"
    )
    if facts.nvrtc:
        return passed(CID, f"{head}: DG_JIT_USE_NVRTC is set, NVRTC compiles its kernels", **ev)
    if not t.headers or not facts.include_ok:
        return warning(
            CID,
            f"{head}: its JIT header tree has no kernels for this arch (include/deep_gemm/impls/"
            f"sm{t.capability // 10 * 10}_*.cuh) or lacks cute/cutlass; {slower}",
            f"reinstall vLLM from its wheel ({fixes.reinstall(env, 'vllm', pypi=True)})" + off,
            **ev,
        )
    if nvcc is not None and nvcc.not_run and not nvcc.release:
        return skipped(
            CID,
            f"{head}: its nvcc {nvcc.path} was not run ({nvcc.not_run}) and no file of the env "
            "says its CUDA release",
            **ev,
        )
    if facts.cuda_home is None or nvcc is None or not nvcc.release:
        why = facts.cuda_home_problem or (nvcc.problem if nvcc else "no nvcc")
        return warning(
            CID,
            f"{head}: its JIT finds no nvcc ({why}); {slower}",
            _nvcc_fix(facts, env) + off,
            **ev,
        )
    gpu = f"sm_{t.capability}a"
    if facts.min_nvcc and _ver(nvcc.release) < _ver(facts.min_nvcc):
        return warning(
            CID,
            f"{head}: nvcc {nvcc.release} ({nvcc.path}) is below DeepGEMM's floor: "
            f"nvcc >= {facts.min_nvcc}; {slower}",
            _nvcc_fix(facts, env) + off,
            **ev,
        )
    if table.accepts(nvcc.release, gpu) is False:
        return warning(
            CID,
            f"{head}: nvcc {nvcc.release} ({nvcc.path}) cannot compile for {gpu}; {slower}",
            _nvcc_fix(facts, env, table.first_release(gpu)) + off,
            **ev,
        )
    if facts.best_nvcc and _ver(nvcc.release) < _ver(facts.best_nvcc):
        return warning(
            CID,
            f'{head}: nvcc {nvcc.release} works, but DeepGEMM says "please use at least NVCC '
            f'{facts.best_nvcc} for the best DeepGEMM performance"',
            _nvcc_fix(facts, env),
            **ev,
        )
    return passed(
        CID,
        f"{head}: headers for sm{t.capability // 10 * 10} present, nvcc {nvcc.release} "
        f"({nvcc.path}) compiles for {gpu}",
        **ev,
    )


def _nvcc_fix(facts: DeepGemmFacts, env: PixiEnv, floor: str | None = None) -> str:
    want = max([v for v in (facts.best_nvcc, facts.min_nvcc, floor) if v] or ["12.9"], key=_ver)
    text = fixes.add(env, Package("cuda-nvcc", f">={want}"))
    if fixes.kind_of(env) in ("pixi", "pyproject", "conda"):
        text += " and " + fixes.set_var(env, "CUDA_HOME", "${CONDA_PREFIX}")
    return text
