"""``cuda.*``: the CUDA toolkit inside an env, and whether a vLLM or torch-extension build will
find it and can target the GPU.

Real failures these checks exist for (seeds 000/001/004): ``cudatoolkit-dev`` gave no nvcc,
so builds silently used ``/usr/local/cuda``; ``cuda-nvcc`` alone lacked
``CUDA::cuda_driver``, nvrtc and ``CUDA::nvToolsExt``; ``CUDA_HOME`` pointed at
``targets/x86_64-linux`` (headers, but no ``bin/nvcc``); a CUDA 12.4 toolkit for an RTX 5090.

Pure judgements: the toolkit arrives as :class:`pytest_vllm_env.facts.toolkit.ToolkitFacts`
(:func:`pytest_vllm_env.facts.toolkit.read_toolkit` reads the files and runs nvcc), which arch
a toolkit targets comes from :mod:`pytest_vllm_env.tables.cuda_archs`. A build's nvcc is
judged by :mod:`pytest_vllm_env.checks.cmake_nvcc`, ``cuda.nvcc-torch`` by
:mod:`pytest_vllm_env.checks.cuda_torch`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pytest_vllm_env.checks import cmake_nvcc
from pytest_vllm_env.checks.abi_fixes import editable_build
from pytest_vllm_env.defaults import CUDA_TOOL_TIMEOUT
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.build_nvcc import BuildNvcc
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.targets import FixTargets
from pytest_vllm_env.facts.toolkit import (
    JIT_PACKAGES,
    TARGETS,
    NvccNeed,
    NvccRun,
    ToolkitFacts,
)
from pytest_vllm_env.findings import Finding, changes_of, error, failed, passed, skipped, warning
from pytest_vllm_env.tables import torch_archs
from pytest_vllm_env.tables.archs import Arch
from pytest_vllm_env.tables.cuda_archs import (
    ARCH_LAST_MAJOR,
    archs_of_toolkit,
    known_archs_text,
    min_toolkit_for,
)
from pytest_vllm_env.tables.cuda_archs import version_tuple as _ver
from pytest_vllm_env.tables.cuda_libs import TARGET_LIBS, TARGET_PACKAGES


def _wanted_mm(t: ToolkitFacts, targets: FixTargets | None = None) -> str:
    """The CUDA a fix should pin: the run's target (``targets``: torch's CUDA under the
    driver's, the one every check's fix names), else the env's cuda-version, else torch's own
    CUDA (a 12.8 nvcc next to a cu118 torch is a new mismatch: cuda.nvcc-torch; a venv's torch
    2.11+cu130 wants 13.0), else 12.8."""
    if targets is not None and targets.cuda:
        return targets.cuda
    pinned = t.packages.get("cuda-version")
    if pinned:
        return ".".join(pinned.split(".")[:2])
    return ".".join(t.torch_cuda.split(".")[:2]) if t.torch_cuda else "12.8"


def cuda_packages(mm: str | None, *names: str) -> list[fixes.Package]:
    """The conda packages ``names`` at CUDA ``mm`` (``12.8.*``; any without one), for a fix."""
    return [fixes.Package(n, f"{mm}.*" if mm else "") for n in names]


def nvcc_in_env(
    env: PixiEnv,
    t: ToolkitFacts,
    need: NvccNeed | None = None,
    build: BuildNvcc | None = None,
    cmake_version: str | None = None,
    targets: FixTargets | None = None,
) -> Finding:
    """When the env needs nvcc (``need``; None: always), the nvcc a vLLM source build
    compiles with is there and is the one the env means. With ``build``
    (:class:`pytest_vllm_env.facts.build_nvcc.BuildNvcc`, the prediction of what setup.py and CMake
    pick) the verdict is :func:`pytest_vllm_env.checks.cmake_nvcc.judge`'s (F1.10); without it, nvcc
    must be inside the env and first on the activated PATH. An env that only runs prebuilt
    vLLM wheels passes without nvcc; one whose packages JIT-compile CUDA kernels gets a
    warning."""
    check = "cuda.nvcc-in-env"
    need = need or NvccNeed(required=("asked for",))
    mm = _wanted_mm(t, targets)
    add = fixes.add(env, *cuda_packages(mm, "cuda-nvcc", "cuda-version"))
    if not t.nvcc_in_env and not need.required:
        if need.jit:
            prebuilt = [
                pre
                for name, (_, pre) in JIT_PACKAGES.items()
                if pre and env.version_of(name) and not env.version_of(pre)
            ]
            using = (
                f": it would use the nvcc the activated PATH finds, {t.nvcc_on_path}, from "
                "outside the env (its CUDA must suit torch's)"
                if t.nvcc_on_path
                else ": those kernels fail at first use without it"
            )
            return warning(
                check,
                f"no nvcc in {t.prefix}/bin; {'; '.join(need.jit)}{using}",
                add + (f", or install {', '.join(prebuilt)} (pre-built kernels)" * bool(prebuilt)),
                jit=list(need.jit),
            )
        elsewhere = (
            f"; the activated PATH finds {t.nvcc_on_path}, which nothing here needs"
            if t.nvcc_on_path
            else ""
        )
        return passed(
            check,
            f"no nvcc in {t.prefix}/bin, and none needed: the env runs prebuilt wheels "
            "(no build tier, --vllm-source, --vllm-build-log, CUDA build packages or "
            f"JIT-compiling packages){elsewhere}",
        )
    if build is not None:
        return cmake_nvcc.judge(
            env,
            t,
            build,
            need.required,
            own=t.owned,
            cmake_version=cmake_version,
            targets=targets,
        )
    if not t.nvcc_in_env:
        legacy = [p for p in ("cudatoolkit-dev", "cudatoolkit") if p in t.packages]
        why = (
            f"; {', '.join(legacy)} is installed but gives no nvcc in the env "
            "(cudatoolkit-dev downloads the toolkit outside conda's control)"
            if legacy
            else ""
        )
        outside = f"; the activated PATH finds {t.nvcc_on_path} instead" if t.nvcc_on_path else ""
        fix = add + (f" and remove {', '.join(legacy)}" if legacy else "")
        return failed(
            check,
            f"no nvcc in {t.prefix}/bin{why}{outside}",
            fix,
            searched=[str(t.prefix / "bin/nvcc"), str(t.prefix / TARGETS / "bin/nvcc")],
            nvcc_on_path=str(t.nvcc_on_path) if t.nvcc_on_path else None,
            needed_because=list(need.required),
        )
    if t.nvcc_on_path is None or not t.on_path_in_env:
        first = t.nvcc_on_path or "nothing"
        return failed(
            check,
            f"nvcc is in the env ({t.nvcc_in_env[0]}) but the activated PATH finds {first} first",
            f"put {t.prefix}/bin first on PATH: remove the PATH override from "
            f"{fixes.activation_place(env)} (or the script that prepends another CUDA's bin)",
            path=t.environ.get("PATH", ""),
        )
    return passed(check, f"nvcc at {t.nvcc_on_path}, first on the activated PATH")


def nvcc_runs(env: PixiEnv, t: ToolkitFacts) -> Finding:
    """The env's nvcc answers ``--version`` in time (a broken or hanging nvcc fails builds
    late, after minutes of CMake)."""
    check = "cuda.nvcc-runs"
    if t.nvcc is None:
        return skipped(check, f"no nvcc in {t.prefix} or on the activated PATH")
    if t.nvcc.not_run:
        return skipped(check, f"{t.nvcc.path} {not_run_text(t.nvcc)}")
    if not t.nvcc.ok:
        own = t.on_path_in_env or str(t.nvcc.path) in map(str, t.nvcc_in_env)
        if own:
            fix = (
                f"reinstall it: {fixes.reinstall(env, 'cuda-nvcc')}; check that {t.nvcc.path} "
                "is an executable nvcc"
            )
        else:  # the system's toolkit (a venv's nvcc): nothing of the env to reinstall
            fix = (
                f"{t.nvcc.path} is not the env's: repair or reinstall that CUDA toolkit, or put "
                "a working one first on PATH (and CUDA_HOME) where you build"
            )
        if t.nvcc.timed_out:  # a hang, not a broken package: the timeout may be too short
            fix = (
                f"on a slow or busy machine raise --cuda-tool-timeout (it was "
                f"{t.nvcc.timed_out:g} s; the default is {CUDA_TOOL_TIMEOUT:g} s); an nvcc that "
                f"hangs longer than that is broken: {fix}"
            )
        return error(check, f"{t.nvcc.path} does not work: {t.nvcc.problem}", fix)
    return passed(check, f"{t.nvcc.path} is CUDA {t.nvcc.version}", archs=list(t.nvcc.gpu_archs))


def version_consistent(env: PixiEnv, t: ToolkitFacts, targets: FixTargets | None = None) -> Finding:
    """nvcc's version equals what conda-meta pins; all cuda-* packages share a major.minor.
    The CUDA a fix pins is the run's target (``targets``: torch's CUDA, which cannot follow a
    pin) where it has one, so this fix and ``cuda.nvcc-torch``'s name the same CUDA."""
    check = "cuda.version-consistent"
    if t.broken_records:
        return error(
            check,
            "conda-meta records that do not parse: " + ", ".join(t.broken_records),
            "recreate the env: " + fixes.install_env(env),
        )
    if not t.packages:
        return skipped(check, f"no CUDA conda packages in {t.prefix}/conda-meta")
    families: dict[str, list[str]] = {}
    for name, version in t.packages.items():
        if name in ("cudatoolkit-dev",):
            continue
        mm = ".".join(version.split(".")[:2])
        families.setdefault(mm, []).append(f"{name} {version}")
    nvcc_mm = t.nvcc.major_minor if t.nvcc and t.nvcc.known else None
    pinned = t.packages.get("cuda-version")
    pinned_mm = ".".join(pinned.split(".")[:2]) if pinned else None
    torch_mm = ".".join(t.torch_cuda.split(".")[:2]) if t.torch_cuda else None
    # torch's CUDA breaks the tie: it cannot follow a pin, the toolkit can (F5.6: nvcc 12.9
    # beside cudatoolkit 11.8 and a cu118 torch wants 11.8, not 12.9)
    common = max(families, key=lambda k: len(families[k])) if families else None
    want = pinned_mm or (torch_mm if torch_mm in families else None) or common
    target = targets.cuda if targets is not None and targets.cuda else None
    if nvcc_mm and families and nvcc_mm not in families and not pinned_mm:
        return failed(
            check,
            f"nvcc {t.nvcc.path} is CUDA {t.nvcc.version} but the env's CUDA packages are "
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(families.items()))
            + (f" (torch is built with CUDA {t.torch_cuda})" if t.torch_cuda else ""),
            fixes.add(env, *cuda_packages(target or want, "cuda-version", "cuda-nvcc"), verb="pin")
            + ": one CUDA for nvcc and the cuda-* packages, and make that nvcc the one builds "
            "use (CUDA_HOME)",
            packages=[f"{k} {v}" for k, v in t.packages.items()],
            nvcc=t.nvcc.path,
        )
    want = want if pinned_mm else (nvcc_mm or want)
    if nvcc_mm and want and nvcc_mm != want:
        return failed(
            check,
            f"nvcc {t.nvcc.path} is CUDA {t.nvcc.version} but cuda-version pins {pinned}",
            fixes.add(env, *cuda_packages(target or want, "cuda-version", "cuda-nvcc"), verb="pin")
            + ": one CUDA for nvcc and the cuda-* packages",
            packages=[f"{k} {v}" for k, v in t.packages.items()],
        )
    if len(families) > 1:
        want = target or want
        others = {k: v for k, v in families.items() if k != want}
        return failed(
            check,
            f"CUDA packages from {len(families)} releases: "
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(families.items())),
            fixes.add(env, *cuda_packages(want, "cuda-version"), verb="pin")
            + " so that "
            + ", ".join(n.split()[0] for v in others.values() for n in v)
            + f" follow CUDA {want}",
        )
    return passed(
        check, f"nvcc {t.version or '-'} and {len(t.packages)} CUDA packages agree on {want}"
    )


def cmake_components(
    env: PixiEnv, t: ToolkitFacts, torch_needs: Mapping[str, str] | None = None
) -> Finding:
    """The libraries FindCUDAToolkit turns into the ``CUDA::`` targets a vLLM build links
    exist as ``libX.so``: ``cudart`` and ``cuda_driver`` (vLLM's CUDA extensions), ``nvrtc``
    (``${CUDA_NVRTC_LIB}`` in torch's ``TORCH_LIBRARIES``), and whatever the env's torch CMake
    links beyond them (``torch_needs``: torch 2.1's ``torch_cuda`` pulls cuBLAS, cuFFT, cuRAND).
    NVTX is left to ``nvtx.cmake-target``: whether it is needed depends on torch's version, and
    from CUDA 12.9 no package ships ``libnvToolsExt.so`` at all."""
    check = "cuda.cmake-components"
    if not t.nvcc_in_env and not t.headers:
        return skipped(check, f"no CUDA toolkit in {t.prefix} (see cuda.nvcc-in-env)")
    wanted: dict[str, str] = {"cudart": "vLLM", "cuda_driver": "vLLM", "nvrtc": "torch"}
    for target, via in sorted((torch_needs or {}).items(), key=lambda kv: kv[0].lower()):
        name = target.removeprefix("CUDA::")
        if name != "nvToolsExt" and name in TARGET_LIBS:
            wanted.setdefault(name, via or "torch")
    missing: list[str] = []
    packages: list[str] = []
    evidence: dict[str, Any] = {}
    if "cuda_runtime.h" not in t.headers:
        missing.append("cuda_runtime.h (CUDAToolkit_INCLUDE_DIR)")
        packages.append("cuda-cudart-dev")
    for target, via in wanted.items():
        lib = f"lib{TARGET_LIBS[target][0]}.so"
        package = TARGET_PACKAGES.get(target, "cuda-toolkit")
        found = t.unversioned(lib) or t.in_lib_dirs.get(lib)
        if found:
            evidence[f"CUDA::{target}"] = str(found)
            continue
        versioned = [str(p) for p in t.libraries.get(lib, []) if p in t.present]
        note = f" (only {', '.join(versioned)}: find_library needs {lib})" if versioned else ""
        need = f", needed by {via}" if via not in ("vLLM", "torch") else ""
        missing.append(f"CUDA::{target} ({lib}{note}{need})")
        packages.append(package)
    evidence["nvToolsExt"] = "judged by nvtx.cmake-target"
    if t.dangling:
        evidence["dangling_symlinks"] = [f"{p} -> {t.dangling_to[p]}" for p in t.dangling]
    if missing:
        mm = t.version and ".".join(t.version.split(".")[:2])
        return failed(
            check,
            "CMake's FindCUDAToolkit will not create: " + "; ".join(missing),
            fixes.add(env, *cuda_packages(mm, *sorted(set(packages))))
            + ", or `cuda-toolkit` for all of them",
            searched=[str(d) for d in t.lib_dirs],
            **evidence,
        )
    if t.dangling:
        return error(
            check,
            f"dangling symlinks in the toolkit's lib dirs: {', '.join(str(p) for p in t.dangling)}",
            "reinstall the package that owns them, or the env: " + fixes.install_env(env),
            **evidence,
        )
    return passed(
        check, f"{', '.join(sorted(wanted))} present (NVTX: nvtx.cmake-target)", **evidence
    )


def cuda_home(env: PixiEnv, t: ToolkitFacts) -> Finding:
    """CUDA_HOME/CUDA_PATH after activation hold bin/nvcc and include/cuda.h: what
    torch.utils.cpp_extension and vLLM's setup.py take as the toolkit."""
    check = "cuda.cuda-home"
    # a venv's toolkit is the system's; a conda or Pixi env's is the env itself
    home = "/usr/local/cuda" if fixes.kind_of(env) == "venv" else "${CONDA_PREFIX}"
    set_home = fixes.set_var(env, "CUDA_HOME", home)
    problems: list[str] = []
    checked: dict[str, str] = {}
    for var in ("CUDA_HOME", "CUDA_PATH"):
        value = t.environ.get(var)
        if not value:
            continue
        checked[var] = value
        have = t.home_files.get(var, frozenset())
        lacks = [rel for rel in ("bin/nvcc",) if rel not in have]
        # conda-forge keeps the headers in targets/x86_64-linux/include, where the env's
        # nvcc.profile points nvcc; either place serves torch's and vLLM's builds.
        if not any(f"{d}/cuda.h" in have for d in ("include", f"{TARGETS}/include")):
            lacks.append("include/cuda.h")
        if lacks:
            where = env.activation.sources.get(var, "the outer environment")
            problems.append(f"{var}={value} (set by {where}) has no {' or '.join(lacks)}")
    if problems:
        return failed(
            check,
            "; ".join(problems),
            f"{set_home} (nvcc is in bin/, and nvcc finds the targets/x86_64-linux headers itself)",
            **checked,
        )
    if not checked:
        if not t.nvcc_in_env:
            return skipped(check, f"no CUDA_HOME/CUDA_PATH and no nvcc in {t.prefix}")
        # torch falls back to `which nvcc`/..; correct only while PATH finds the env's nvcc.
        if t.nvcc_on_path and t.on_path_in_env:
            return passed(check, "CUDA_HOME unset; torch falls back to the env's nvcc on PATH")
        return failed(
            check,
            "CUDA_HOME and CUDA_PATH are unset and PATH does not find the env's nvcc",
            set_home,
        )
    return passed(check, ", ".join(f"{k}={v}" for k, v in checked.items()) + " hold a toolkit")


def ld_library_path(env: PixiEnv, t: ToolkitFacts) -> Finding:
    """LD_LIBRARY_PATH, when set, holds the env's lib dir before any other CUDA's."""
    check = "cuda.ld-library-path"
    value = t.environ.get("LD_LIBRARY_PATH", "")
    entries = t.ld_library_path
    if not entries:
        return passed(check, "LD_LIBRARY_PATH unset: the env's RPATHs find its libraries")
    first_own = next((i for i, e in enumerate(entries) if e.own), None)
    foreign = [(i, e.path) for i, e in enumerate(entries) if not e.own and e.cudart]
    if foreign and (first_own is None or foreign[0][0] < first_own):
        where = env.activation.sources.get("LD_LIBRARY_PATH", "the outer environment")
        return failed(
            check,
            f"LD_LIBRARY_PATH (set by {where}) puts {foreign[0][1]}, another CUDA's libraries, "
            f"before {t.prefix}/lib",
            fixes.set_var(env, "LD_LIBRARY_PATH", "${CONDA_PREFIX}/lib:${LD_LIBRARY_PATH}")
            + f", or drop {foreign[0][1]}",
            LD_LIBRARY_PATH=value,
        )
    return passed(check, f"LD_LIBRARY_PATH holds no other CUDA ahead of {t.prefix}/lib")


def arch_supported(
    env: PixiEnv, t: ToolkitFacts, archs: Sequence[Arch], source: str
) -> list[Finding]:
    """nvcc can generate code for each target arch (12.0 needs CUDA >= 12.8)."""
    check = "cuda.arch-supported"
    if not archs:
        return [
            skipped(
                check, "no target arch: pass --cuda-arch (e.g. 12.0) or set TORCH_CUDA_ARCH_LIST"
            )
        ]
    if t.nvcc is not None and t.nvcc.not_run and not t.nvcc.known:
        return [skipped(check, f"{t.nvcc.path} {not_run_text(t.nvcc)}")]
    if t.nvcc is None or not t.nvcc.known:
        return [skipped(check, f"no working nvcc in {t.prefix} (see cuda.nvcc-in-env)")]
    listed = {a.removeprefix("compute_") for a in t.nvcc.gpu_archs}
    how = "`nvcc --list-gpu-arch`" if listed else "the arch table (nvcc has no --list-gpu-arch)"
    if t.nvcc.not_run:
        how = f"the arch table for CUDA {t.version} ({not_run_text(t.nvcc)})"
    known = listed or {f"{a.number}" for a in archs_of_toolkit(t.nvcc.major_minor or "0.0")}
    findings = []
    for arch in archs:
        need = min_toolkit_for(arch)
        # --list-gpu-arch names no a/f variants: 12.8 lists compute_120 yet refuses 12.0f
        too_old = bool(arch.suffix and need and _ver(need) > _ver(t.version or "0"))
        if str(arch.number) in known and not too_old:
            findings.append(passed(check, f"CUDA {t.version} can target {arch.sm} ({how})"))
            continue
        last = ARCH_LAST_MAJOR.get(arch.cc)
        if need is None:  # from TORCH_CUDA_ARCH_LIST (--cuda-arch refuses unknown archs)
            findings.append(
                failed(
                    check,
                    f"{arch.sm} ({arch.cc}, from {source}) is not an arch any CUDA release targets",
                    f"drop {arch.cc} from {source}; known archs: {known_archs_text()}",
                    decided_by=how,
                    nvcc=t.nvcc.path,
                )
            )
            continue
        if _ver(need) > _ver(t.version or "0"):
            fix = fixes.add(env, *cuda_packages(need, "cuda-version", "cuda-nvcc"), verb="set")
        elif last is not None and _ver(t.version or "0")[0] > last:
            fix = (
                f"drop {arch.cc} from {source}: CUDA {t.version} no longer targets it; "
                f"use CUDA {last}.x"
            )
        else:
            fix = (
                f"drop {arch.cc} from {source}, or reinstall the toolkit: CUDA {t.version} "
                f"should list {arch.compute} in `nvcc --list-gpu-arch`"
            )
        if t.torch_cuda and _ver(need)[:1] != _ver(t.torch_cuda)[:1]:
            # a CUDA 12.8 nvcc beside a cu118 torch only moves the failure (cuda.nvcc-torch)
            # a variant the PyTorch index really serves (there is no cu120), in the env's
            # own language (a pip command for a venv)
            variant = torch_archs.lowest_variant_at_least(need)
            if variant is not None:
                torch = fixes.pin(
                    env, fixes.Package("torch", "", pypi=True), index=torch_archs.index_url(variant)
                )
                # a step of the fix where that is a command; beside advice, its text alone
                fix = (
                    fix
                    + f", and a torch built for CUDA >= {need} (torch is CUDA {t.torch_cuda}): "
                    + (torch if changes_of(fix) else str(torch))
                )
        findings.append(
            failed(
                check,
                f"CUDA {t.version} nvcc cannot generate code for {arch.sm} ({arch.cc}, from "
                f"{source}); it needs CUDA >= {need}"
                + (f" and <= {last}.x" if last is not None else ""),
                fix,
                decided_by=how,
                nvcc=t.nvcc.path,
            )
        )
    return findings


def not_run_text(nvcc: NvccRun) -> str:
    """``was not run (--vllm-static: ...); its files say CUDA X (where)``."""
    said = (
        f"; its files say CUDA {nvcc.version} ({nvcc.version_from})"
        if nvcc.version
        else "; no file of it says its version"
    )
    return f"was not run ({nvcc.not_run}){said}"


def vllm_python(env: PixiEnv, t: ToolkitFacts) -> Finding:
    """For a vLLM source build: the Python CMake gets is ``sys.executable`` of the process
    running vLLM's setup.py (``-DVLLM_PYTHON_EXECUTABLE={sys.executable}``, every release from
    0.4.1 to 0.33 read), i.e. the ``python`` (or ``pip``) the activated PATH finds. The
    ``VLLM_PYTHON_EXECUTABLE`` environment variable is read by neither setup.py nor
    CMakeLists.txt: setting it changes nothing."""
    check = "cuda.vllm-python"
    if env.python is None:
        return skipped(check, f"no Python in {env.prefix}")
    chosen = t.python_on_path
    variable = t.environ.get("VLLM_PYTHON_EXECUTABLE")
    where = env.activation.sources.get("VLLM_PYTHON_EXECUTABLE", "the outer environment")
    note = (
        f"; VLLM_PYTHON_EXECUTABLE={variable} (set by {where}) has no effect: vLLM's setup.py "
        "passes -DVLLM_PYTHON_EXECUTABLE=<the Python running it> and its CMakeLists never reads "
        "the environment variable"
        if variable
        else ""
    )
    if chosen is None or not t.python_is_env:
        set_by = env.activation.sources.get("PATH", "the outer environment")
        return failed(
            check,
            f"`python` on the activated PATH is {chosen or 'not found'}, not the env's "
            f"{env.python}: `python -m pip install -e .` would run vLLM's setup.py, and hand "
            f"CMake, that interpreter{note}",
            f"build with the env's interpreter: {editable_build(env)}; and drop the PATH "
            f"entry ahead of {env.prefix}/bin (set by {set_by})",
        )
    return passed(
        check, f"`python` on the activated PATH is the env's ({chosen}): CMake gets it{note}"
    )
