"""``lock.torch-archs``, ``lock.nvcc-archs``, ``lock.cuda-match``, ``lock.build-deps``: the
locked torch build, nvcc and CUDA packages against the target arches and each other, and what
a CUDA build in the env needs (:mod:`pytest_vllm_env.checks.lock` says how lock checks work).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from pytest_vllm_env import findings as F
from pytest_vllm_env.checks import coverage_arch, cuda
from pytest_vllm_env.checks.lock import (
    DEPS,
    PYPI,
    cuda_fix,
    locked_or_skip,
    manifest_lines,
    relabel,
    relock,
)
from pytest_vllm_env.facts.binaries import torch_pin_of
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.lockfacts import (
    TorchBuild,
    cmake_version,
    nvcc_package,
    toolkit_facts,
    torch_build,
)
from pytest_vllm_env.findings import Finding
from pytest_vllm_env.readers.manifest_lines import ManifestLines
from pytest_vllm_env.tables import torch_archs
from pytest_vllm_env.tables.archs import Arch
from pytest_vllm_env.tables.cuda_archs import min_toolkit_for, version_tuple

# The -dev packages whose files CMake's FindCUDAToolkit turns into the targets vLLM's and
# torch's CMake link (cuda.COMPONENTS; seed 001 lacked the last three with cuda-nvcc alone).
BUILD_DEV = {
    "cuda-cudart-dev": "CUDA::cudart",
    "cuda-driver-dev": "CUDA::cuda_driver",
    "cuda-nvrtc-dev": "CUDA::nvrtc",
    "cuda-nvtx-dev": "CUDA::nvToolsExt",
}
# vLLM's CMakeLists.txt: cmake_minimum_required(VERSION 3.26).
CMAKE_VLLM = (3, 26)
# FindCUDAToolkit reads nvcc's INCLUDES (conda-forge's targets/x86_64-linux) from CMake 3.28
# (nvtx.py's reading of FindCUDAToolkit.cmake; FACTS.md measured 3.25.1 failing).
CMAKE_TARGETS_LAYOUT = (3, 28)
# cuda.arch_supported says how it decided; from a lock nothing was run.
_NO_LIST = "the arch table (nvcc has no --list-gpu-arch)"
_FROM_LOCK = "the arch table, for the locked cuda-nvcc version"


# -- lock.torch-archs ----------------------------------------------------------------------------
def torch_archs_check(env: PixiEnv, archs: Sequence[Arch], archs_source: str) -> list[Finding]:
    """The locked torch build's kernels serve each target arch (the arch table's row, judged
    by the same coverage check as an installed libtorch_cuda.so)."""
    cid = "lock.torch-archs"
    _, locked, skip = locked_or_skip(env, cid)
    if skip:
        return [skip]
    torch = torch_build(locked)
    if torch is None:
        return [F.skipped(cid, f"pixi.lock has no torch for env {locked.name!r}")]
    if not archs:
        return [
            F.skipped(
                cid,
                "no target arch known: pass --cuda-arch=12.0 or set "
                "TORCH_CUDA_ARCH_LIST in the manifest's activation env",
            )
        ]
    ml = manifest_lines(env)
    fix = _torch_fix(env, ml, torch, archs)
    ev = {"torch": torch.location, "variant_from": torch.how}
    if torch.cpu:
        return [
            F.failed(
                cid,
                f"{torch.label} in pixi.lock is a CPU-only build: no kernels for {a.sm}",
                fix,
                **ev,
            )
            for a in archs
        ]
    row = (
        torch_archs.lookup(torch.version, torch.variant or "", torch.where)
        if torch.variant
        else None
    )
    if row is not None and torch.where != "conda-forge":
        label = f"{torch.label} (pixi.lock)"
        found = coverage_arch.coverage(label, row.images(), archs)
        return relabel(found, cid, fix, arch_table=row.source, **ev)
    out = []
    for arch in archs:
        bound = torch_archs.toolkit_bound(torch.cuda, arch) if torch.cuda else None
        if bound:
            out.append(
                F.failed(
                    cid,
                    f"{torch.label} (pixi.lock) has no kernels for {arch.sm} ({arch.cc}, from "
                    f"{archs_source}): {bound}, and PyTorch's builds carry no PTX to JIT from",
                    fix,
                    rule="tables/cuda_archs.py ARCH_FIRST: the first CUDA whose nvcc targets "
                    "each arch",
                    **ev,
                )
            )
        else:
            out.append(
                F.skipped(
                    cid,
                    f"the arch table has no row for {torch.label} "
                    f"(pytest_vllm_env/tables/torch_archs.py); once installed, arch.coverage reads "
                    "the real libtorch_cuda.so",
                )
            )
    return out


def _torch_fix(env: PixiEnv, ml: ManifestLines, torch: TorchBuild, archs: Sequence[Arch]) -> str:
    wanted = torch_archs.covering(archs, at_least=torch.version)
    vllm = env.dist("vllm")
    pin = torch_pin_of(vllm.requires) if vllm else None
    if torch.where == "conda-forge":
        need = max((min_toolkit_for(a) or "12.8" for a in archs), key=version_tuple)
        return (
            f"conda-forge's {torch.package} follows cuda-version: "
            + cuda_fix(ml, need)
            + relock(ml)
        )
    if not wanted:
        text = f"no torch build in the arch table serves {', '.join(a.sm for a in archs)}"
        return text + "; pick a torch built with a CUDA that targets them" + relock(ml)
    row = wanted[0]
    index = f"https://download.pytorch.org/whl/{row.variant}"
    new = f'torch = {{ version = ">={row.release}", index = "{index}" }}'
    text = ml.change("torch", PYPI, new)
    text += (
        f" (torch {row.release}+{row.variant} holds {', '.join(a.sm for a in archs)}: {row.source})"
    )
    if pin and vllm is not None:
        text += (
            f", with a vLLM release that pins that torch (vllm {vllm.version} requires "
            f"torch=={pin}: {ml.where('vllm', PYPI)})"
        )
    return text + relock(ml)


# -- lock.nvcc-archs -----------------------------------------------------------------------------
def nvcc_archs(env: PixiEnv, archs: Sequence[Arch], archs_source: str) -> list[Finding]:
    """The locked nvcc can generate code for each target arch (12.0 needs CUDA 12.8)."""
    cid = "lock.nvcc-archs"
    _, locked, skip = locked_or_skip(env, cid)
    if skip:
        return [skip]
    if nvcc_package(locked) is None:
        return [
            F.skipped(
                cid, f"no cuda-nvcc in pixi.lock for env {locked.name!r}: it builds no CUDA code"
            )
        ]
    toolkit = toolkit_facts(locked, env.prefix)
    found = [
        replace(
            f,
            summary=_from_lock(f.summary),
            evidence={
                k: (_from_lock(v) if isinstance(v, str) else v) for k, v in f.evidence.items()
            },
        )
        for f in cuda.arch_supported(env, toolkit, archs, archs_source)
    ]
    need = max((min_toolkit_for(a) or "0" for a in archs), key=version_tuple, default="12.8")
    ml = manifest_lines(env)
    return relabel(found, cid, cuda_fix(ml, need) + relock(ml))


def _from_lock(text: str) -> str:
    """cuda.arch_supported's words for an nvcc it could not ask, as for a locked one."""
    return _FROM_LOCK.join(text.split(_NO_LIST))


# -- lock.cuda-match -----------------------------------------------------------------------------
def cuda_match(env: PixiEnv) -> list[Finding]:
    """One CUDA release across the locked cuda-* packages, and torch's CUDA major equal to the
    toolkit's: ``torch.utils.cpp_extension`` raises "The detected CUDA version (12.9)
    mismatches the version that was used to compile PyTorch (11.8)" on a major mismatch
    (real-world-failures F5.6) and only warns on a minor one."""
    cid = "lock.cuda-match"
    _, locked, skip = locked_or_skip(env, cid)
    if skip:
        return [skip]
    toolkit = toolkit_facts(locked, env.prefix)
    ml = manifest_lines(env)
    out: list[Finding] = []
    if toolkit.packages:
        found = cuda.version_consistent(env, toolkit)
        pinned = toolkit.packages.get("cuda-version", "")
        mm = ".".join(pinned.split(".")[:2]) or "12.8"
        out += relabel([found], cid, cuda_fix(ml, mm) + relock(ml))
    torch = torch_build(locked)
    family = toolkit.packages.get("cuda-version") or (
        toolkit.nvcc.version if toolkit.nvcc else None
    )
    if torch is None or torch.cuda is None or family is None:
        if not out:
            what = "no CUDA toolkit" if family is None else "no CUDA torch"
            out.append(F.skipped(cid, f"pixi.lock has {what} for env {locked.name!r}"))
        return out
    tk = ".".join(family.split(".")[:2])
    if tk.split(".")[0] != torch.cuda.split(".")[0]:
        fix = cuda_fix(ml, torch.cuda) + " (torch's CUDA)"
        variant = "cu" + "".join(tk.split("."))
        rows = sorted(
            (r for r in torch_archs.ROWS if r.variant == variant),
            key=lambda r: tuple(int(x) for x in r.release.split(".")),
        )
        if rows:
            index = f"https://download.pytorch.org/whl/{variant}"
            new = f'torch = {{ version = ">={rows[0].release}", index = "{index}" }}'
            fix += f", or use a torch built for CUDA {tk}: " + ml.change("torch", PYPI, new)
        fix += relock(ml)
        out.append(
            F.failed(
                cid,
                f"{torch.label} is built with CUDA {torch.cuda}, the locked toolkit is CUDA {tk}: "
                f'building extensions (vLLM, flash-attn) fails with "The detected CUDA version '
                f'({tk}) mismatches the version that was used to compile PyTorch ({torch.cuda})"',
                fix,
            )
        )
    elif tk != torch.cuda:
        out.append(
            F.passed(
                cid,
                f"{torch.label} (CUDA {torch.cuda}) and the locked toolkit (CUDA {tk}) share "
                "a major version: torch only warns about the minor difference",
            )
        )
    else:
        out.append(F.passed(cid, f"{torch.label} and the locked toolkit are both CUDA {tk}"))
    return out


# -- lock.build-deps -----------------------------------------------------------------------------
def build_deps(env: PixiEnv) -> list[Finding]:
    """With nvcc locked (the env builds CUDA code), the -dev packages whose libraries CMake
    turns into the targets vLLM and torch link, and a cmake that finds conda-forge's
    ``targets/x86_64-linux`` layout."""
    cid = "lock.build-deps"
    _, locked, skip = locked_or_skip(env, cid)
    if skip:
        return [skip]
    nvcc = nvcc_package(locked)
    if nvcc is None:
        return [
            F.skipped(
                cid, f"no cuda-nvcc in pixi.lock for env {locked.name!r}: it builds no CUDA code"
            )
        ]
    ml = manifest_lines(env)
    mm = ".".join(nvcc[1].split(".")[:2])
    out: list[Finding] = []
    missing = [p for p in BUILD_DEV if p not in locked.conda]
    if missing:
        adds = ", ".join(f'`{p} = "{mm}.*"`' for p in missing)
        out.append(
            F.failed(
                cid,
                "CMake's FindCUDAToolkit will not create "
                + ", ".join(f"{BUILD_DEV[p]} ({p} is not locked)" for p in missing)
                + f": a vLLM build with {nvcc[0]} {nvcc[1]} stops at configure",
                f"add {adds} to {ml.add_table(DEPS)} in {ml.file} (or `cuda-toolkit = "
                f'"{mm}.*"` for all of them)' + relock(ml),
                locked_cuda=sorted(n for n in locked.conda if n.startswith("cuda-")),
            )
        )
    else:
        out.append(F.passed(cid, f"{', '.join(BUILD_DEV)} are locked with {nvcc[0]} {nvcc[1]}"))
    cm = cmake_version(locked)
    if cm is None:
        out.append(
            F.passed(
                cid,
                "no cmake locked: a vLLM build under build isolation brings its own "
                "(vLLM's build-system requires cmake>=3.26)",
            )
        )
        return out
    version = tuple(int(x) for x in re.findall(r"\d+", cm[1])[:2])
    kind = DEPS if cm[0] == "conda" else PYPI
    declared = ml.find("cmake", kind)
    change = (
        ml.change("cmake", kind, 'cmake = ">=3.28"')
        if declared
        else (f'add `cmake = ">=3.28"` to {ml.add_table(kind)} in {ml.file}')
    )
    if version < CMAKE_VLLM:
        out.append(
            F.failed(
                cid,
                f"cmake {cm[1]} is locked; vLLM's CMakeLists.txt requires CMake >= 3.26",
                change + relock(ml),
            )
        )
    elif version < CMAKE_TARGETS_LAYOUT and not _points_at_targets(env):
        out.append(
            F.failed(
                cid,
                f"cmake {cm[1]} is locked: before 3.28 FindCUDAToolkit looks for "
                "cuda_runtime.h only in <root>/include, and conda-forge keeps it in "
                'targets/x86_64-linux/include ("Could NOT find CUDAToolkit (missing: '
                'CUDAToolkit_INCLUDE_DIR)")',
                change + " (it reads nvcc's include dirs), or set `CUDAToolkit_ROOT = "
                f'"${{CONDA_PREFIX}}/targets/x86_64-linux"` in {ml.add_table("activation.env")} '
                f"in {ml.file}" + relock(ml),
            )
        )
    else:
        out.append(F.passed(cid, f"cmake {cm[1]} ({cm[0]}) finds the targets/x86_64-linux layout"))
    return out


def _points_at_targets(env: PixiEnv) -> bool:
    if env.manifest is None or not env.name:
        return False
    return any(
        key in ("CUDAToolkit_ROOT", "CUDA_PATH") and "targets/" in value
        for key, value, _ in env.manifest.activation_env(env.name)
    )
