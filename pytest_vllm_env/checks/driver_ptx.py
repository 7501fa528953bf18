"""``driver.ptx-jit``: the PTX the driver must JIT-compile for the target GPUs, against the newest
PTX ISA it can (pure: facts in, findings out).

The driver loads a binary's fatbin one container (module) at a time and picks, per container,
SASS that runs on the GPU, else the PTX of the highest arch at or below it, which it JIT-compiles
(CUDA C++ Programming Guide, "Binary Compatibility" / "Application Compatibility"). A driver JITs
PTX up to the ISA of the CUDA version it supports (:func:`pytest_vllm_env.tables.driver.
jit_ceiling`); newer PTX is refused with ``CUDA_ERROR_UNSUPPORTED_PTX_VERSION`` (222, measured on
an H100 with 580.159.04: ISA 9.5 from nvcc 13.5 refused, ISA 9.0 from nvcc 13.0 loaded). Levels:

- a container the target reaches only through PTX newer than the driver JITs: failed (the whole
  binary at load when no container has SASS for it; else those kernels at first launch);
- the whole binary reaches the target only through PTX the driver can JIT: warning (every
  kernel JIT-compiles at first start: minutes for a large library, then cached);
- a few containers only through PTX it can JIT: passed, with the count (seconds, once).

``arch.coverage`` and ``gpu.device-coverage`` say whether PTX reaches the arch at all; this
check says whether this driver can compile it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from pytest_vllm_env import findings as F
from pytest_vllm_env.checks import coverage_arch
from pytest_vllm_env.checks.driver import NO_DRIVER, Driver, upgrade_fix
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.driver import BinaryFacts
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fa_version import FaVersion
from pytest_vllm_env.findings import Finding
from pytest_vllm_env.readers.fatbin import ptx_jits_to, sass_runs_on
from pytest_vllm_env.tables import driver as T
from pytest_vllm_env.tables.archs import Arch, FatbinImage, parse_arch

CID = "driver.ptx-jit"


def _isa(text: str | None) -> T.Version | None:
    if not text:
        return None
    major, _, minor = text.partition(".")
    return (int(major), int(minor or 0))


def served(binary: BinaryFacts, target: Arch) -> tuple[int, int, list[tuple[Arch, T.Version]]]:
    """``(containers with SASS for target, containers reaching it, [(PTX arch, ISA)] of each
    container reaching it only through PTX)``."""
    sass_n, reach, ptx_only = 0, 0, []
    for container in binary.containers:
        images = [(kind, parse_arch(cc), _isa(isa)) for kind, cc, isa in container]
        if any(k == "sass" and sass_runs_on(a, target) for k, a, _ in images):
            sass_n += 1
            reach += 1
            continue
        ptx = [(a, i) for k, a, i in images if k == "ptx" and ptx_jits_to(a, target)]
        if ptx:
            reach += 1
            arch, isa = max(ptx, key=lambda p: p[0].number)
            ptx_only.append((arch, isa or (0, 0)))
    return sass_n, reach, ptx_only


def ptx_jit(
    binaries: Iterable[tuple[str, BinaryFacts]],
    archs: list[Arch],
    driver: Driver | None,
    cuda: T.Version | None,
    env: PixiEnv,
    fa: FaVersion | None = None,
) -> list[Finding]:
    """One finding per binary: ``binaries`` are ``(label, facts)``; ``cuda`` the CUDA version of
    the user-mode driver that runs (a forward-compatibility libcuda's where one is in use);
    ``fa`` the FlashAttention version the user forces on the env's vLLM (FA2 forced: FA2 runs
    on Hopper too, and its PTX or SASS for it is judged)."""
    if driver is None or cuda is None:
        return [F.skipped(CID, NO_DRIVER)]
    if not archs:
        return [F.skipped(CID, "no target arch: give --cuda-arch (or set TORCH_CUDA_ARCH_LIST)")]
    binaries = [(name, b) for name, b in binaries if b.error or b.containers]
    if not binaries:
        return [F.skipped(CID, f"no CUDA binary with device code in {env.prefix}")]
    ceiling = T.jit_ceiling(cuda, driver.cuda_exact)
    out: list[Finding] = []
    for name, binary in binaries:
        if binary.error:
            out.append(
                F.error(
                    CID,
                    f"{name}: {binary.error}",
                    f"reinstall the package that installed {name}",
                    path=binary.path,
                )
            )
            continue
        idle = {t: why for t in archs if (why := not_launched(name, binary, t, binaries, fa))}
        finding = _judge(name, binary, archs, driver, cuda, ceiling, env, idle)
        if fa is not None and _FA2.search(name) and (fa.forced is not None or fa.ignored):
            fa3 = any(
                _FA3.search(other) and served(facts, t)[0]
                for t in archs
                if t.major == 9
                for other, facts in binaries
            )
            finding = _with_fa(finding, fa, fa3)
        out.append(finding)
    return out


def _with_fa(finding: Finding, fa: FaVersion, fa3: bool) -> Finding:
    """FA2's finding, saying which FA version the user forces and where (and an override
    this vLLM does not read, which leaves FA3 running: a setting that does nothing). ``fa3``:
    vLLM's FA3 holds SASS for a Hopper target, so dropping a forced FA2 is a fix too."""
    evidence = dict(finding.evidence)
    if fa.forced is not None:
        evidence["flash_attn_version"] = f"{fa.forced}, from {fa.forced_from} ({fa.rule})"
    if fa.ignored:
        evidence["not read"] = list(fa.ignored)
    summary, fix = finding.summary, finding.fix
    if fa.ignored and fa.forced is None:
        summary += f"; not read by this vLLM: {fa.ignored[0]}"
    if fa.forced == 2 and finding.outcome in ("warning", "failed"):
        summary += f" (FA2 runs on Hopper: flash_attn_version=2 from {fa.forced_from})"
        if fa3:
            fix = fixes.otherwise(
                fix, f"drop flash_attn_version=2 from {fa.forced_from}: vLLM then runs FA3 there"
            )
    return replace(finding, summary=summary, fix=fix, evidence=evidence)


# vLLM's FlashAttention libraries (vllm/vllm_flash_attn/), by the FA version they hold
_FA2 = re.compile(r"(^|/)vllm/vllm_flash_attn/_vllm_fa2_C[^/]*\.so$")
_FA3 = re.compile(r"(^|/)vllm/vllm_flash_attn/_vllm_fa3_C[^/]*\.so$")


def not_launched(
    name: str,
    binary: BinaryFacts,
    target: Arch,
    binaries: Iterable[tuple[str, BinaryFacts]],
    fa: FaVersion | None = None,
) -> str:
    """Why ``name``'s kernels are not launched on ``target`` ("" when they may be), so that
    PTX it carries for that GPU is never JIT-compiled there:

    - the role ``arch.coverage`` gives it says so (:func:`coverage_arch.required_on`: a
      per-GPU backend, FA2 below sm 8.0, a library of arch-specific images only);
    - vLLM's FA2 on a Hopper GPU next to vLLM's FA3 holding SASS for it: vLLM
      (``v1/attention/backends/fa_utils.py:get_flash_attn_version``, 0.10 to 0.33) takes FA3
      on every sm 9.x where ``_vllm_fa3_C`` loads, FA2 only when asked
      (``flash_attn_version=2``) or for ALiBi. Where the user asks (``fa.forced == 2``, an
      override this vLLM reads: ``VLLM_FLASH_ATTN_VERSION`` up to 0.12,
      ``--attention-config`` in 0.26.0/0.33.0), FA2 is what runs on Hopper.
    """
    images = [FatbinImage(k, parse_arch(cc), False) for c in binary.containers for k, cc, _ in c]
    if not coverage_arch.required_on(name, images, target):
        return f"{coverage_arch.role_of(name).why}"
    forced_fa2 = fa is not None and fa.forced == 2
    if _FA2.search(name) and target.major == 9 and not forced_fa2:
        for other, facts in binaries:
            if _FA3.search(other) and served(facts, target)[0]:
                return (
                    f"vLLM runs FA3 ({other}, SASS for {target.sm}) on sm 9.x, FA2 only when "
                    "asked (flash_attn_version=2) or for ALiBi (fa_utils.get_flash_attn_version)"
                )
    return ""


def _judge(
    name: str,
    binary: BinaryFacts,
    archs: list[Arch],
    driver: Driver,
    cuda: T.Version,
    ceiling: T.JitCeiling | None,
    env: PixiEnv,
    idle: dict[Arch, str] | None = None,
) -> Finding:
    total = len(binary.containers)
    can = f"{driver.label} JITs PTX up to ISA {T.isa_text(ceiling.isa)}" if ceiling else ""
    notes, bad, costly, unsure = [], [], [], []
    evidence: dict[str, object] = {"modules": total, "ptx isa": binary.isas}
    plain: list[str] = []
    for target in archs:
        sass_n, reach, ptx_only = served(binary, target)
        if not ptx_only:
            plain.append(f"SASS for {target.sm}" if sass_n else f"no kernel for {target.sm}")
            continue
        newest = max(isa for _, isa in ptx_only)
        computes = "/".join(sorted({a.compute for a, _ in ptx_only}))
        whole = sass_n == 0
        share = "all" if whole else f"{len(ptx_only)} of {reach}"
        what = (
            f"on {target.sm} {share} modules reach the GPU only through PTX "
            f"({computes}, ISA {T.isa_text(newest)})"
        )
        evidence[target.sm] = {"sass modules": sass_n, "ptx-only modules": len(ptx_only),
                               "newest ptx isa": T.isa_text(newest)}  # fmt: skip
        if ceiling is None or newest > ceiling.isa:
            if ceiling is not None and not ceiling.exact:
                unsure.append((target, what, newest))
            else:
                bad.append((target, what, newest, whole))
        elif idle and target in idle:
            # PTX the driver could JIT, for kernels that do not run here: nothing to pay
            plain.append(f"{target.sm} only through PTX, not launched there: {idle[target]}")
        elif whole:
            costly.append((target, what))
        else:
            notes.append(f"{what}: each JIT-compiled once, at its first launch")
    if bad:
        target, what, isa, whole = max(bad, key=lambda b: b[2])
        when = "when it loads" if whole else "when those kernels are first launched"
        needed = T.cuda_of_isa(isa)
        text = f"{name}: {what}; {can}: {T.CUDA_ERRORS[222]} {when}" + (
            f" (ISA {T.isa_text(isa)} is CUDA {T.cuda_text(needed)}'s)" if needed else ""
        )
        return F.failed(CID, text, _fix(name, target, needed, cuda, env), **evidence)
    if unsure:
        target, what, isa = unsure[0]
        return F.warning(
            CID,
            f"{name}: {what}; the driver is newer than NVIDIA's notes we hold (JIT up to ISA "
            f"{T.isa_text(ceiling.isa) if ceiling else '?'} at least): cannot tell whether it "
            "JITs this PTX",
            "run the suite on a GPU node (NVML names the driver's CUDA); or "
            + _sass(name, target, env),
            **evidence,
        )  # fmt: skip
    if costly:
        target, what = costly[0]
        also = [t.sm for t, _ in costly[1:]]
        what += f" (and on {', '.join(also)})" if also else ""
        return F.warning(
            CID,
            f"{name}: {what}; {can}, so it runs, but each kernel is JIT-compiled at its first "
            "launch (minutes for a large library; then cached in ~/.nv/ComputeCache)",
            f"{_sass(name, target, env)}; or keep the JIT cache across runs "
            "(CUDA_CACHE_PATH on persistent disk, CUDA_CACHE_MAXSIZE=4294967296)",
            **evidence,
        )  # fmt: skip
    if notes:
        return F.passed(CID, f"{name}: " + "; ".join(notes + plain) + f" ({can})", **evidence)
    # "no kernel for sm_X" (an arch-specific library, or one not built for it): arch.coverage
    return F.passed(CID, f"{name}: no PTX to JIT ({', '.join(plain)})", **evidence)


def _sass(name: str, target: Arch, env: PixiEnv) -> str:
    owner = name.split("/", 1)[0]
    return (
        f"install a {owner} build that holds {target.sm} SASS (one built with "
        f'`TORCH_CUDA_ARCH_LIST="{target.cc}"`; for a source build set it in '
        f"{fixes.activation_place(env)})"
    )


def _fix(name: str, target: Arch, needed: T.Version | None, cuda: T.Version, env: PixiEnv) -> str:
    upgrade = upgrade_fix(needed) if needed else "upgrade the GPU nodes' NVIDIA driver"
    keep = T.cuda_text(cuda)
    return (
        f"{upgrade}; or {_sass(name, target, env)}; or one built by CUDA {keep} or older (its PTX "
        f"is then ISA {T.isa_text(T.isa_of_cuda(cuda) or (0, 0))} or older: in a Pixi/conda env "
        f'`cuda-version = "{keep}.*"`)'
    )
