"""The GPU itself: does the target env's torch run on it (``gpu.torch-cuda``), do its FP8
GEMMs compute right (``gpu.torch-fp8``), and does every GPU binary of the env hold kernels
for it (``gpu.device-coverage``)?

Facts in: the torch probe's :class:`~pytest_vllm_env.facts.gpu_probe.ProbeResult` (run by
:mod:`pytest_vllm_env.runners.gpu`), the visible GPUs and the binaries' GPU images
(:mod:`pytest_vllm_env.facts.gpu_probe`). :func:`probe_blocked` is every gpu check's answer to
a probe that could not run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pytest_vllm_env.checks.abi_fixes import NO_ENV, torch_package
from pytest_vllm_env.checks.coverage_arch import min_nvcc, required_on, torch_covering
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.binaries import dist_name, owner_of
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.facts.gpu_probe import NO_PYTHON, NO_PYTHON_FIX, BinaryImages, ProbeResult
from pytest_vllm_env.facts.targets import FixTargets
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped
from pytest_vllm_env.readers.fatbin import arch_coverage, describe
from pytest_vllm_env.tables import torch_archs
from pytest_vllm_env.tables.archs import Arch
from pytest_vllm_env.tables.cuda_archs import cuda_tag


def probe_blocked(cid: str, probe: ProbeResult, subject: str, retry: str) -> Finding | None:
    """The finding for a probe that could not run (no Python in the env: failed) or did not
    complete (an error, its output kept, ``retry`` the command to try by hand); None when it
    ran."""
    if probe.problem == NO_PYTHON:
        return failed(cid, f"{NO_PYTHON}: {subject} cannot run in it", NO_PYTHON_FIX)
    if probe.problem:
        return error(
            cid,
            f"the {subject} probe did not complete: {probe.problem}",
            retry,
            output=probe.output_tail,
        )
    return None


def torch_cuda(
    probe: ProbeResult,
    python: str | Path = "",
    *,
    env: PixiEnv | None = None,
    targets: FixTargets | None = None,
) -> Finding:
    """gpu.torch-cuda: torch imports, sees a GPU, and a half-precision matmul gives 64. Fixes
    are written for ``env`` and install the run's one torch (``targets``: vLLM's pin)."""
    cid = "gpu.torch-cuda"
    env = env or NO_ENV
    retry = f"run `{python} -c 'import torch; print(torch.cuda.is_available())'` in the env"
    if blocked := probe_blocked(cid, probe, "torch", retry + " and fix what it prints"):
        return blocked
    d = probe.data
    if d.get("torch") is None:
        return failed(
            cid,
            f"torch cannot be imported by {python}: {d.get('exception', 'not installed')}",
            "install torch: " + _install_torch(env, targets),
        )
    if not d.get("cuda"):
        return failed(
            cid,
            f"torch {d['torch']} is a CPU-only build (torch.version.cuda is None)",
            "install a CUDA build of torch: " + _install_torch(env, targets, cuda=True),
            torch=d["torch"],
        )
    if not d.get("available") or not d.get("devices"):
        return failed(
            cid,
            f"torch {d['torch']} (CUDA {d['cuda']}) sees no GPU"
            + (f": {d['exception']}" if d.get("exception") else ""),
            "check `nvidia-smi` and CUDA_VISIBLE_DEVICES; a driver older than CUDA "
            f"{d['cuda']} needs a torch wheel built for an older CUDA",
            torch=d["torch"],
        )
    if d.get("matmul") != 64.0:
        return failed(
            cid,
            f"a 64x64 fp16 matmul on the GPU gave {d.get('matmul')!r}, not 64.0"
            + (f" ({d['exception']})" if d.get("exception") else ""),
            "the torch wheel has no kernels for this GPU: install one whose arch list "
            f"({d.get('arch_list')}) includes the device's compute capability",
            devices=d["devices"],
        )
    return passed(
        cid,
        f"torch {d['torch']} (CUDA {d['cuda']}) runs on "
        + ", ".join(f"{g['name']} (sm {g['cc']})" for g in d["devices"]),
        arch_list=d.get("arch_list"),
    )


# -- device coverage -------------------------------------------------------------------------
def device_coverage(
    gpus: Sequence[tuple[str, Arch]],
    binaries: Sequence[BinaryImages],
    targets: Sequence[Arch] = (),
    targets_source: str = "none",
    *,
    env: PixiEnv | None = None,
) -> Finding:
    """gpu.device-coverage: every visible GPU has kernels in every GPU binary of the env
    (torch's libtorch_cuda.so, vLLM's extensions), and is one of the declared target archs.

    The failure it exists for: an env built for the GPU named in ``--cuda-arch`` (say 12.0)
    that lands on a runner with another GPU (9.0), or a wheel without the runner's SASS:
    everything imports, and the first kernel launch says "no kernel image is available"."""
    cid = "gpu.device-coverage"
    env = env or NO_ENV
    if not gpus:
        return skipped(cid, "no GPU visible (neither the target env's torch nor nvidia-smi)")
    names = ", ".join(f"{n} (sm {a.cc})" for n, a in gpus)
    declared = targets_source in ("--cuda-arch", "TORCH_CUDA_ARCH_LIST")
    if declared:
        wanted = {(t.major, t.minor) for t in targets}
        off = [(n, a) for n, a in gpus if (a.major, a.minor) not in wanted]
        if off:
            listed = " ".join(t.cc for t in targets)
            return failed(
                cid,
                f"the visible GPU {', '.join(f'{n} (sm {a.cc})' for n, a in off)} is not "
                f"among the target archs {listed} ({targets_source})",
                _target_fix(targets_source, listed, [a for _, a in off], env),
                gpus=names,
                targets=listed,
            )
    gpu_code = [b for b in binaries if b.images]
    unreadable = [f"{b.label}: {b.error}" for b in binaries if b.error]
    uncovered = [
        (b, a) for b in gpu_code for _, a in gpus if not arch_coverage(b.images or [], a).covered
    ]
    # Libraries holding only arch-/family-specific images (vLLM 0.26.0's _qutlass_C: sm_100f
    # only; FA3: sm_90a) are dispatched to only on those GPUs: note them, do not fail.
    special = [
        f"{b.label} ({describe(b.images or [])})" for b, a in uncovered if not _required(b, a)
    ]
    missing = [
        f"{b.label} has no kernels for sm {a.cc} ({describe(b.images or [])})"
        for b, a in uncovered
        if _required(b, a)
    ]
    if missing:
        return failed(
            cid,
            f"{len(missing)} binary/GPU pair(s) without kernels: " + "; ".join(missing),
            _coverage_fix(missing[0], [a for _, a in gpus], env),
            gpus=names,
            uncovered=missing,
            arch_specific_only=special,
        )
    if unreadable:
        return error(
            cid,
            f"{len(unreadable)} GPU binary(ies) could not be read: " + "; ".join(unreadable),
            "reinstall the packages that own them: "
            + fixes.join(
                [
                    fixes.reinstall(env, owner, pypi=True)
                    for owner in dict.fromkeys(
                        dist_name(owner_of(b.label)) for b in binaries if b.error
                    )
                ],
                " and ",
            ),
            gpus=names,
        )
    if not gpu_code:
        return skipped(cid, f"no GPU binary (libtorch_cuda.so, vLLM extensions) found for {names}")
    # covered only through PTX: the driver JIT-compiles it, if it can (driver.ptx-jit says)
    jit = sorted(
        {b.label for b in gpu_code for _, a in gpus if arch_coverage(b.images or [], a).jit}
    )
    return passed(
        cid,
        f"{names}: kernels in all {len(gpu_code) - len(special)} general GPU binaries"
        + (f", and among the target archs ({targets_source})" if declared else "")
        + (f"; {len(special)} arch-specific librarie(s) not for this GPU" if special else "")
        + (
            f"; {len(jit)} only through PTX (whether this driver can JIT it: driver.ptx-jit)"
            if jit
            else ""
        ),
        binaries=[b.label for b in gpu_code],
        arch_specific_only=special,
        **({"ptx_only": jit} if jit else {}),
    )


def _required(binary: BinaryImages, gpu: Arch) -> bool:
    # per-GPU backends (vLLM 0.26.0's FA3: sm_90a; _qutlass_C: sm_100f) are dispatched to
    # only on their GPUs; vLLM's _C, torch and xformers' own kernels run on every GPU
    return required_on(binary.label, binary.images or [], gpu)


def _target_fix(source: str, listed: str, gpus: Sequence[Arch], env: PixiEnv) -> str:
    have = " ".join(sorted({a.cc for a in gpus}))
    if source == "--cuda-arch":
        return (
            f"run on a GPU of the targeted arch, or target this one: `--cuda-arch={have}` "
            f"(instead of {listed}), and build/install binaries for it"
        )
    return (
        fixes.set_var(env, "TORCH_CUDA_ARCH_LIST", f"{listed} {have}")
        + " and rebuild, or run on a GPU of the targeted arch"
    )


def _install_torch(env: PixiEnv, targets: FixTargets | None, *, cuda: bool = False) -> str:
    """The run's one torch (vLLM's pin, a CUDA build of it: ``targets``) in the env's
    language; without a target, a CUDA build from the PyTorch index."""
    if cuda and targets is not None and targets.torch and targets.variant:
        if env.conda("pytorch") is None:
            # the target's CUDA build named by its index: the same `torch==X` from an index
            # (or a cache) that served the CPU build would install the CPU build again
            torch = Package("torch", f"=={targets.torch}", pypi=True)
            variant = torch_archs.index_url(targets.variant)
            return f"torch {targets.torch}'s {targets.variant} build: " + fixes.pin(
                env, torch, index=variant
            )
    if targets is not None and targets.torch:
        return targets.torch_fix(env)
    index = f"{torch_archs.TORCH_INDEX}/cu<NNN>"
    if not cuda:
        return fixes.add(env, torch_package(env, ""))
    return (
        f"the torch release vLLM pins, from the PyTorch index of a CUDA build ({index}) in "
        f"{fixes.deps_place(env, pypi=True)}"
    )


def _coverage_fix(first: str, gpus: Sequence[Arch], env: PixiEnv = NO_ENV) -> str:
    ccs = " ".join(sorted({a.cc for a in gpus}))
    if "libtorch" in first:
        # the oldest real torch build whose kernels serve the GPUs (tables/torch_archs.py),
        # in the env's language, as arch.coverage names it
        newest = max(gpus, key=lambda a: (a.major, a.minor))
        need = min_nvcc(Arch(newest.major, 0) if newest.major >= 10 else newest)
        return f"install a torch wheel built with kernels for {ccs}: " + torch_covering(
            env, newest, need, cuda_tag(need)
        )

    def version(v: str) -> list[int]:
        return [int(n) for n in v.split(".") if n.isdigit()]

    need = max((min_nvcc(a) for a in gpus), key=version)
    return (
        f'rebuild vLLM with TORCH_CUDA_ARCH_LIST="{ccs}" (nvcc >= {need} for {ccs}), or '
        "install a vLLM wheel built for this GPU"
    )


# -- FP8 GEMM --------------------------------------------------------------------------------
FP8_REL_TOL = 0.02  # bf16 output of an exact fp32 accumulation: ~0.4 %, 2 % leaves margin


def torch_fp8(
    probe: ProbeResult,
    python: str | Path = "",
    tolerance: float = FP8_REL_TOL,
    *,
    env: PixiEnv | None = None,
    targets: FixTargets | None = None,
) -> Finding:
    """gpu.torch-fp8: ``torch._scaled_mm`` on float8_e4m3fn with tensor scales matches an
    fp32 reference within ``tolerance`` x max|reference| (GPUs of compute capability >= 8.9).
    What ModelOpt FP8 checkpoints run on; a torch or driver without working FP8 GEMMs
    loads them and then fails (or, worse, computes garbage)."""
    cid = "gpu.torch-fp8"
    env = env or NO_ENV
    retry = f"run `{python} -c 'import torch; print(torch.cuda.is_available())'` in the env"
    if blocked := probe_blocked(cid, probe, "torch", retry):
        return blocked
    fp8 = probe.data.get("fp8")
    if not probe.data.get("devices") or not isinstance(fp8, dict):
        return skipped(cid, "no GPU visible to the target env's torch: FP8 not tried")
    if "unsupported" in fp8:
        return skipped(
            cid, f"the GPU is compute capability {fp8['unsupported']} < 8.9: it has no FP8 GEMMs"
        )
    if "exception" in fp8:
        return failed(
            cid,
            f"torch._scaled_mm (float8_e4m3fn) failed on the GPU: {fp8['exception']}",
            "use torch >= 2.5 built for CUDA >= 12.1 with kernels for this GPU "
            "(`torch.cuda.get_arch_list()` must include it): "
            + _install_torch(env, targets, cuda=True),
            torch=probe.data.get("torch"),
        )
    err, ref = float(fp8.get("max_abs_err", 0.0)), float(fp8.get("ref_max_abs", 0.0))
    limit = tolerance * max(ref, 1e-6)
    gpu = probe.data["devices"][0]
    if err > limit:
        return failed(
            cid,
            f"FP8 _scaled_mm on {gpu['name']} differs from the fp32 reference by {err:.4g} "
            f"(limit {limit:.4g} = {tolerance} x max|ref| {ref:.4g})",
            "FP8 kernels compute wrong results: update the NVIDIA driver, and use the torch "
            "build vLLM pins for this GPU's arch: " + _install_torch(env, targets, cuda=True),
            **fp8,
        )
    return passed(
        cid,
        f"FP8 _scaled_mm on {gpu['name']} (sm {gpu['cc']}): max error {err:.4g} <= "
        f"{tolerance} x max|ref| {ref:.4g}",
        **fp8,
    )
