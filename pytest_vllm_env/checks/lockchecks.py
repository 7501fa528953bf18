"""``lock.*``: judge a Pixi env from pixi.lock, before ``pixi install`` downloads gigabytes.

The failure this exists for (seed 001): a workspace locks torch 2.6.0+cu124 and conda-forge's
CUDA 12.4 nvcc for an RTX 5090 (sm_120); its owner learns it after the downloads and an hour
of vLLM build. Every fact needed was in pixi.lock.

Where the fact is the same as for an installed env, the same check function judges it and
its finding is relabelled ``lock.*`` with a fix that names the manifest line to change:

- ``lock.torch-archs``: the arch list of the locked torch build (:mod:`torch_archs`) through
  :func:`coverage_arch.coverage`, as ``arch.coverage`` judges libtorch_cuda.so's fatbin;
- ``lock.nvcc-archs``: the locked nvcc through :func:`cuda.arch_supported`;
- ``lock.cuda-match``: cuda-* packages through :func:`cuda.version_consistent`, and torch's
  CUDA major against the toolkit's (``torch.utils.cpp_extension`` refuses a major mismatch);
- ``lock.torch-pins``: requires_dist pins through :func:`abi.pins`; flash-attn wheel tags;
- ``lock.build-deps``, ``lock.wheel-tags``, ``lock.file``, ``lock.installed-current``:
  facts only a lock has (or only a lock and an installed env together).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from pytest_vllm_env import findings as F
from pytest_vllm_env.checks import abi, coverage_arch, cuda
from pytest_vllm_env.facts.binaries import torch_pin_of
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.lock_env import LockSource
from pytest_vllm_env.facts.lockfacts import (
    TorchBuild,
    cmake_version,
    cxx11_abi,
    nvcc_package,
    toolkit_facts,
    torch_build,
)
from pytest_vllm_env.findings import Finding
from pytest_vllm_env.readers.manifest_lines import ManifestLines
from pytest_vllm_env.readers.pixilock import READABLE_VERSIONS, LockedEnv
from pytest_vllm_env.tables import torch_archs
from pytest_vllm_env.tables.archs import Arch
from pytest_vllm_env.tables.cuda_archs import min_toolkit_for, version_tuple

DEPS = "dependencies"
PYPI = "pypi-dependencies"
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
PINNING = ("vllm", "xformers", "torchvision", "torchaudio", "flashinfer-python")
BUILT_FROM_SOURCE = ("vllm", "flash-attn", "xformers")


def _lines(env: PixiEnv) -> ManifestLines:
    return ManifestLines(env.manifest, env.name)


def _relock(ml: ManifestLines) -> str:
    return f", then `pixi lock` (updates {ml.file}'s lock without installing) and judge again"


def _relabel(findings: Iterable[Finding], cid: str, fix: str | None = None, **ev) -> list[Finding]:
    """Findings of a shared check, under a lock.* id, with a fix in the manifest's terms."""
    out = []
    for f in findings:
        evidence = {**f.evidence, **ev}
        new_fix = fix if (fix and f.outcome in ("failed", "error", "warning")) else f.fix
        out.append(dataclasses.replace(f, id=cid, fix=new_fix, evidence=evidence))
    return out


def _locked(env: PixiEnv, cid: str) -> tuple[LockSource | None, LockedEnv | None, Finding | None]:
    """The env's lock, or the skip that says why this check has nothing to judge."""
    source: LockSource | None = env.locked
    if source is None:
        return (
            None,
            None,
            F.skipped(
                cid,
                f"{env.label} is installed: judged from its files (pass --vllm-from-lock to judge "
                "pixi.lock instead)",
            ),
        )
    if source.locked is None:
        return source, None, F.skipped(cid, f"{source.path.name} could not be read (lock.file)")
    return source, source.locked, None


# -- lock.file -----------------------------------------------------------------------------------
def lock_file(source: LockSource, manifest_name: str = "pixi.toml") -> Finding:
    """The lock parses, its format is one we read, and it has the env and platform."""
    cid = "lock.file"
    err = source.error
    relock = f"run `pixi lock` next to {manifest_name} (it rewrites {source.path.name})"
    if err is None and source.locked is not None:
        locked = source.locked
        return F.passed(
            cid,
            f"{source.path.name} (format {locked.version}) locks env {locked.name!r} for "
            f"{locked.platform}: {len(locked.conda)} conda and {len(locked.pypi)} PyPI packages",
            seconds=round(source.seconds, 4),
        )
    if err is None:  # pragma: no cover - read_source always sets one or the other
        return F.error(cid, f"{source.path} was not read", relock)
    if err.kind == "version":
        version = err.details.get("version", 0)
        if version > READABLE_VERSIONS[-1]:
            fix = (
                f"update pytest-vllm-env (this one reads formats {READABLE_VERSIONS[0]}-"
                f"{READABLE_VERSIONS[-1]}), or install the env (`pixi install -e "
                f"{source.env_name}`) and judge its files"
            )
        else:
            fix = f"{relock} with a current pixi: it writes format {READABLE_VERSIONS[-1]}"
        return F.error(cid, str(err), fix, lock=str(source.path))
    if err.kind == "env":
        return F.error(
            cid,
            f"{err}: the lock predates the env in {manifest_name}",
            relock,
            lock=str(source.path),
        )
    if err.kind == "platform":
        have = err.details.get("platforms", [])
        fix = (
            f"add {source.platform!r} to `platforms` in [workspace] of {manifest_name} and "
            f"{relock[0].lower()}{relock[1:]}"
        )
        if have:
            fix += f"; or judge a platform it has: --pixi-platform={have[0]}"
        return F.error(cid, str(err), fix, lock=str(source.path))
    how = {
        "yaml": "a merge conflict or an interrupted write leaves such a file",
        "structure": "truncated, or not written by pixi",
        "unreadable": "check its permissions",
    }.get(err.kind, "")
    return F.error(
        cid,
        str(err),
        f"{relock} ({how}; `git checkout {source.path.name}` restores the committed one)",
        lock=str(source.path),
    )


# -- lock.torch-archs ----------------------------------------------------------------------------
def torch_archs_check(env: PixiEnv, archs: Sequence[Arch], archs_source: str) -> list[Finding]:
    """The locked torch build's kernels serve each target arch (the arch table's row, judged
    by the same coverage check as an installed libtorch_cuda.so)."""
    cid = "lock.torch-archs"
    _, locked, skip = _locked(env, cid)
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
    ml = _lines(env)
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
        return _relabel(found, cid, fix, arch_table=row.source, **ev)
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
                    rule="cuda.py ARCH_FIRST: the first CUDA whose nvcc targets each arch",
                    **ev,
                )
            )
        else:
            out.append(
                F.skipped(
                    cid,
                    f"the arch table has no row for {torch.label} "
                    f"(pytest_vllm_env/facts/torch_archs.py); once installed, arch.coverage reads "
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
            + _cuda_fix(ml, need)
            + _relock(ml)
        )
    if not wanted:
        text = f"no torch build in the arch table serves {', '.join(a.sm for a in archs)}"
        return text + "; pick a torch built with a CUDA that targets them" + _relock(ml)
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
    return text + _relock(ml)


def _cuda_fix(ml: ManifestLines, need: str) -> str:
    """Move the declared CUDA packages to ``need`` (``12.8``), naming their lines."""
    parts = []
    for name in ("cuda-version", "cuda-nvcc", "cuda-toolkit"):
        if ml.find(name, DEPS):
            parts.append(ml.change(name, DEPS, f'{name} = "{need}.*"'))
    if not parts:
        parts.append(ml.change("cuda-version", DEPS, f'cuda-version = "{need}.*"'))
    return "; ".join(parts)


# -- lock.nvcc-archs -----------------------------------------------------------------------------
def nvcc_archs(env: PixiEnv, archs: Sequence[Arch], archs_source: str) -> list[Finding]:
    """The locked nvcc can generate code for each target arch (12.0 needs CUDA 12.8)."""
    cid = "lock.nvcc-archs"
    _, locked, skip = _locked(env, cid)
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
        dataclasses.replace(
            f,
            summary=f.summary.replace(_NO_LIST, _FROM_LOCK),
            evidence={
                k: (v.replace(_NO_LIST, _FROM_LOCK) if isinstance(v, str) else v)
                for k, v in f.evidence.items()
            },
        )
        for f in cuda.arch_supported(env, toolkit, archs, archs_source)
    ]
    need = max((min_toolkit_for(a) or "0" for a in archs), key=version_tuple, default="12.8")
    ml = _lines(env)
    return _relabel(found, cid, _cuda_fix(ml, need) + _relock(ml))


# -- lock.cuda-match -----------------------------------------------------------------------------
def cuda_match(env: PixiEnv) -> list[Finding]:
    """One CUDA release across the locked cuda-* packages, and torch's CUDA major equal to the
    toolkit's: ``torch.utils.cpp_extension`` raises "The detected CUDA version (12.9)
    mismatches the version that was used to compile PyTorch (11.8)" on a major mismatch
    (real-world-failures F5.6) and only warns on a minor one."""
    cid = "lock.cuda-match"
    _, locked, skip = _locked(env, cid)
    if skip:
        return [skip]
    toolkit = toolkit_facts(locked, env.prefix)
    ml = _lines(env)
    out: list[Finding] = []
    if toolkit.packages:
        found = cuda.version_consistent(env, toolkit)
        pinned = toolkit.packages.get("cuda-version", "")
        mm = ".".join(pinned.split(".")[:2]) or "12.8"
        out += _relabel([found], cid, _cuda_fix(ml, mm) + _relock(ml))
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
        fix = _cuda_fix(ml, torch.cuda) + " (torch's CUDA)"
        variant = "cu" + tk.replace(".", "")
        rows = sorted(
            (r for r in torch_archs.ROWS if r.variant == variant),
            key=lambda r: tuple(int(x) for x in r.release.split(".")),
        )
        if rows:
            index = f"https://download.pytorch.org/whl/{variant}"
            new = f'torch = {{ version = ">={rows[0].release}", index = "{index}" }}'
            fix += f", or use a torch built for CUDA {tk}: " + ml.change("torch", PYPI, new)
        fix += _relock(ml)
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
    _, locked, skip = _locked(env, cid)
    if skip:
        return [skip]
    nvcc = nvcc_package(locked)
    if nvcc is None:
        return [
            F.skipped(
                cid, f"no cuda-nvcc in pixi.lock for env {locked.name!r}: it builds no CUDA code"
            )
        ]
    ml = _lines(env)
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
                f'"{mm}.*"` for all of them)' + _relock(ml),
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
                change + _relock(ml),
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
                f"in {ml.file}" + _relock(ml),
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


# -- lock.torch-pins -----------------------------------------------------------------------------
def torch_pins(env: PixiEnv) -> list[Finding]:
    """vLLM's, xformers' and torch's companions' requires_dist pins hold for the locked
    torch (abi.pins, as for installed metadata); a flash-attn wheel's ``torchX.Y`` and
    ``cxx11abi`` tags match the locked torch (F5.3, F5.5)."""
    cid = "lock.torch-pins"
    _, locked, skip = _locked(env, cid)
    if skip:
        return [skip]
    ml = _lines(env)
    installed = {n: env.version_of(n) for n in abi.PINNED}
    out: list[Finding] = []
    for name in PINNING:
        pkg = locked.pypi_package(name)
        if pkg is None or not pkg.requires_dist:
            continue
        who = f"{pkg.name} {pkg.version}"
        found = [
            f
            for f in abi.pins(pkg.requires_dist, installed, who, env=env)
            if f.outcome != "skipped"
        ]
        for f in found:
            fix = None
            if f.outcome == "failed" and "installed" not in f.evidence:
                fix = f.fix + _relock(ml)  # torch itself is not locked: abi.pins' own fix
            elif f.outcome == "failed":
                req = Requirement(str(f.evidence.get("requirement", "torch")))
                fix = (
                    ml.change(req.name, PYPI, f'{req.name} = "{req.specifier}"')
                    + f", or lock the {pkg.name} release built for {req.name} "
                    f"{f.evidence.get('installed')} ({ml.where(pkg.name, PYPI)})" + _relock(ml)
                )
            out += _relabel([f], cid, fix)
    torch = torch_build(locked)
    flash = locked.pypi_package("flash-attn")
    if flash is not None and flash.is_wheel and torch is not None:
        out.append(_flash_attn_wheel(flash.filename, flash.version, torch, ml))
    if not out:
        out.append(F.skipped(cid, f"pixi.lock pins nothing against torch for env {locked.name!r}"))
    return out


def _flash_attn_wheel(filename: str, version: str, torch: TorchBuild, ml: ManifestLines) -> Finding:
    cid = "lock.torch-pins"
    local = version.partition("+")[2] or filename
    built = re.search(r"torch(\d+\.\d+)", local)
    abi_flag = re.search(r"cxx11abi(TRUE|FALSE)", local)
    torch_release = torch_archs.release_of(torch.version)
    problems = []
    if built and built.group(1) != torch_release:
        problems.append(f"built for torch {built.group(1)}, locked torch is {torch.version}")
    want = cxx11_abi(torch)
    if abi_flag and want is not None and (abi_flag.group(1) == "TRUE") != want:
        problems.append(
            f"built with _GLIBCXX_USE_CXX11_ABI={int(abi_flag.group(1) == 'TRUE')}, torch "
            f"{torch.version} uses {int(want)}"
        )
    if not built and not abi_flag:
        return F.passed(cid, f"flash-attn {version} ({filename}) names no torch build to check")
    if problems:
        return F.failed(
            cid,
            f"flash-attn wheel {filename}: "
            + "; ".join(problems)
            + ': its extension fails to import ("undefined symbol: _ZN3c10...")',
            f"lock the flash-attn wheel made for torch {torch_release} with "
            f"cxx11abi{'TRUE' if want else 'FALSE'} ({ml.where('flash-attn', PYPI)})" + _relock(ml),
        )
    return F.passed(cid, f"flash-attn wheel {filename} is built for torch {torch_release}")


# -- lock.wheel-tags -----------------------------------------------------------------------------
def wheel_tags(env: PixiEnv) -> list[Finding]:
    """Each locked wheel fits the locked Python and the platform; vLLM, flash-attn and
    xformers are locked as wheels, not as sdists that Pixi would build at install."""
    cid = "lock.wheel-tags"
    _, locked, skip = _locked(env, cid)
    if skip:
        return [skip]
    ml = _lines(env)
    python = locked.python_version
    out: list[Finding] = []
    bad: list[str] = []
    arch = _platform_arch(locked.platform)
    checked = 0
    for pkg in locked.pypi.values():
        if python and pkg.requires_python:
            try:
                if not SpecifierSet(pkg.requires_python).contains(
                    Version(python), prereleases=True
                ):
                    bad.append(f"{pkg.name} {pkg.version} requires Python {pkg.requires_python}")
            except (InvalidSpecifier, InvalidVersion):
                pass
        tags = pkg.wheel_tags
        if tags is None:
            continue
        checked += 1
        why = _tag_problem(tags, python, arch)
        if why:
            bad.append(f"{pkg.filename}: {why}")
    if bad:
        out.append(
            F.failed(
                cid,
                f"{len(bad)} locked PyPI package(s) do not fit Python {python or '?'} on "
                f"{locked.platform}: " + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""),
                f"set the Python the wheels are for ({ml.where('python', DEPS)}), or "
                "re-solve for this one" + _relock(ml),
                mismatched=bad,
            )
        )
    else:
        out.append(
            F.passed(
                cid,
                f"{checked} locked wheels fit Python {python or '?'} on {locked.platform}",
            )
        )
    for name in BUILT_FROM_SOURCE:
        pkg = locked.pypi_package(name)
        if pkg is None or not pkg.is_sdist:
            continue
        out.append(_sdist_finding(env, ml, pkg.name, pkg.version, pkg.filename))
    return out


def _platform_arch(platform: str) -> str:
    return {"linux-64": "x86_64", "linux-aarch64": "aarch64", "osx-arm64": "arm64",
            "osx-64": "x86_64", "win-64": "amd64"}.get(platform, platform)  # fmt: skip


def _tag_problem(tags: tuple[str, str, str], python: str | None, arch: str) -> str:
    py, abi_tag, plat = tags
    if plat != "any" and not any(arch in p for p in plat.split(".")):
        return f"platform tag {plat} is not for {arch}"
    if not python:
        return ""
    have = tuple(int(x) for x in python.split(".")[:2])
    for part in py.split("."):
        match = re.fullmatch(r"(?:cp|py)(\d)(\d*)", part)
        if not match:
            continue
        major = int(match.group(1))
        minor = int(match.group(2)) if match.group(2) else None
        if minor is None:  # py3
            if major == have[0]:
                return ""
            continue
        if abi_tag == "abi3" and (major, minor) <= have:
            return ""
        if (major, minor) == have:
            return ""
    return f"Python tag {py}/{abi_tag} does not fit Python {python}"


def _sdist_finding(
    env: PixiEnv, ml: ManifestLines, name: str, version: str, filename: str
) -> Finding:
    cid = "lock.wheel-tags"
    key = canonicalize_name(name)
    if key == "vllm":
        # Pixi assumes glibc 2.28 unless told otherwise; vLLM's wheels are manylinux_2_31
        # (prefix-dev/pixi#5266: "Failed to build vllm==0.13.0" from the sdist).
        return F.failed(
            cid,
            f"vLLM {version} is locked as an sdist ({filename}): `pixi install` builds it from "
            'source, which needs a CUDA toolkit and fails without one ("Failed to build '
            f'`vllm=={version}`")',
            f"vLLM's wheels are manylinux_2_31 and Pixi assumes glibc 2.28: add "
            f'`[system-requirements]` `libc = "2.31"` to {ml.file}' + _relock(ml),
        )
    if _no_build_isolation(env, key):
        return F.warning(
            cid,
            f"{name} {version} is locked as an sdist ({filename}): `pixi install` compiles it "
            "(tens of minutes, needs nvcc and the CUDA -dev packages)",
            f"lock a prebuilt {name} wheel for this torch and Python ({ml.where(name, PYPI)})",
        )
    return F.failed(
        cid,
        f"{name} {version} is locked as an sdist ({filename}): its setup imports torch, so the "
        "isolated build Pixi runs fails with \"No module named 'torch'\"",
        f"add {name!r} to `no-build-isolation` under [pypi-options] in {ml.file} (or lock a "
        f"prebuilt wheel: {ml.where(name, PYPI)})" + _relock(ml),
    )


def _no_build_isolation(env: PixiEnv, key: str) -> bool:
    manifest = env.manifest
    if manifest is None:
        return False
    tables = [manifest.data.get("pypi-options")]
    for feature in manifest.environments().get(env.name or "default", []):
        tables.append(manifest.feature_table(feature).get("pypi-options"))
    for table in tables:
        if not isinstance(table, dict):
            continue
        value = table.get("no-build-isolation")
        if value is True or (
            isinstance(value, list) and key in {canonicalize_name(str(v)) for v in value}
        ):
            return True
    return False


# -- lock.installed-current ----------------------------------------------------------------------
def installed_current(
    installed: PixiEnv | None, locked: LockedEnv | None, reason: str = ""
) -> Finding:
    """The installed env holds what pixi.lock says: after a lock change without ``pixi
    install``, what runs is not what the lock (and a review of it) says."""
    cid = "lock.installed-current"
    if locked is None or installed is None:
        return F.skipped(cid, reason or "no pixi.lock or no installed env to compare")
    stale: list[str] = []
    for pkg in locked.conda.values():
        have = installed.conda_packages.get(pkg.name)
        if have is None:
            stale.append(f"{pkg.name} {pkg.version} not installed")
        elif (have.version, have.build) != (pkg.version, pkg.build) and pkg.build:
            have_text = f"{have.version}-{have.build}"
            stale.append(f"{pkg.name} {have_text} installed, {pkg.version}-{pkg.build} locked")
    for pkg in locked.pypi.values():
        dist = installed.dist(pkg.name)
        if dist is None:
            stale.append(f"{pkg.name} {pkg.version} not installed")
            continue
        if pkg.version and not _same_version(dist.version, pkg.version):
            stale.append(f"{pkg.name} {dist.version} installed, {pkg.version} locked")
    if stale:
        name = locked.name
        return F.warning(
            cid,
            f"{installed.prefix} is older than {locked.path.name}: {len(stale)} package(s) "
            "differ ("
            + "; ".join(stale[:5])
            + (" ..." if len(stale) > 5 else "")
            + "); `pixi run` updates it first, a direct call of its binaries does not",
            f"`pixi install -e {name}` (or judge the lock: --vllm-from-lock)",
            differences=stale,
        )
    return F.passed(cid, f"{installed.prefix} matches {locked.path.name}: {len(locked)} packages")


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b
