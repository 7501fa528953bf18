"""``abi.needed`` and ``abi.undefined``: will the loader find every library an extension
needs, and every symbol it imports beyond torch's (``abi.symbols`` judges those)?

Real failures (see :mod:`pytest_vllm_env.facts.linkage`, which resolves both as the loader
does, from ELF files): a CUDA 12-linked vLLM in a CUDA 13 image, "libcudart.so.12: cannot open
shared object file" (llm-d#1402); a source build that left its own sm100 kernel undefined
(vLLM #29030). ``abi.needed`` judges the whole load closure (issue 21): an extension loads
only when every library of every library it needs is found, torch's own included (installing
an unpinned ``nvidia-cuda-runtime-cu12`` satisfied ``_C``'s libcudart.so.12 while
``libtorch_cuda.so`` still missed its cuBLAS and cuDNN); the fix installs what torch's
metadata pins (:class:`pytest_vllm_env.facts.targets.FixTargets`).
Pure: the resolution arrives as a :class:`~pytest_vllm_env.facts.linkage.Linkage`;
which package ships a missing CUDA library comes from :mod:`pytest_vllm_env.tables.cuda_libs`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from packaging.version import Version

from pytest_vllm_env import findings as F
from pytest_vllm_env.checks.abi_cudart import provide_runtime
from pytest_vllm_env.checks.abi_fixes import (
    NO_ENV,
    for_torch_cuda,
    is_version,
    torch_package,
    torch_spec,
    torch_unreadable,
    unreadable,
)
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.binaries import BuiltFor, TorchFacts, dist_name, label, owner_of
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.facts.linkage import DRIVER_LIBS, Linkage
from pytest_vllm_env.facts.targets import FixTargets
from pytest_vllm_env.findings import Finding
from pytest_vllm_env.tables.cuda_libs import (
    CUDA_MAJOR_SONAME,
    RUNTIME_PACKAGES,
    TORCH_WHEEL_PACKAGES,
)

# A CUDA runtime library's soname: lib<stem>.so.<major>
_CUDA_LIB = re.compile(
    r"^lib(cudart|cublas|cublasLt|cufft|curand|cusparse|cusolver|nvrtc|nvJitLink)\.so\.(\d+)"
)
# Any library torch's wheels take from an nvidia-* package (tables/cuda_libs.py)
_TORCH_WHEEL_LIB = re.compile(
    r"^lib(" + "|".join(sorted(TORCH_WHEEL_PACKAGES, key=len, reverse=True)) + r")\.so\.(\d+)"
)


def _cuda_major_of(link: Linkage, torch: TorchFacts | None) -> str | None:
    """The CUDA major a library the extension needs must come from: torch's, else the one of
    the extension's own libcudart.so.N."""
    if torch is not None and torch.cuda:
        return torch.cuda.split(".")[0]
    for lib in link.needed:
        m = re.fullmatch(r"libcudart\.so\.(\d+)", lib)
        if m:
            return m[1]
    return None


def _torch_wheels_fix(env: PixiEnv, missing: list[str], targets: FixTargets | None) -> str:
    """Where torch's metadata pins the packages of the ``missing`` libraries (a PyPI torch):
    every CUDA package it asks for that the env lacks, at its versions (one library alone
    left libtorch_cuda.so's others missing), and a reinstall of a held one whose library is
    gone; "" otherwise."""
    if targets is None or env.conda("pytorch") is not None:
        return ""
    stems = [m[1] for lib in missing if (m := _TORCH_WHEEL_LIB.match(lib))]
    if not any(targets.wheel_for(stem) for stem in stems):
        return ""
    pinned = targets.cuda_wheels_fix(env, stems)
    return pinned + " (the CUDA packages torch's metadata pins)" if pinned else ""


def _cuda_library_fix(
    env: PixiEnv,
    stem: str,
    soname_major: str,
    major: str | None,
    targets: FixTargets | None = None,
    pypi_way: str = "",
) -> str:
    """The packages that provide ``lib<stem>.so.<soname_major>`` for CUDA ``major``: the
    conda-forge one (with ``cuda-version``) where the env takes conda packages, the PyPI one
    (``pypi_way``: that fix written already, the CUDA runtime's with its loader path)."""
    conda, pypi = RUNTIME_PACKAGES[stem]
    major = major or (soname_major if stem in CUDA_MAJOR_SONAME else None)
    if major is None:
        wheel = Package(pypi, f"=={soname_major}.*", pypi=True)
    elif int(major) <= 12:
        wheel = Package(f"{pypi}-cu{major}", pypi=True)
    else:
        wheel = Package(pypi, f"=={soname_major}.*", pypi=True)
    if fixes.kind_of(env) == "venv":
        return pypi_way or fixes.add(env, wheel)
    if major is not None and int(major) < 12:  # conda-forge's CUDA 11 is one package
        packages = [Package("cudatoolkit", f"{major}.*")]
    else:
        packages = [Package(conda)]
        have = (env.version_of("cuda-version") or "").split(".")[0]
        if major is not None and have != major:
            cuda = targets.cuda if targets is not None and targets.cuda_major == major else major
            packages.append(Package("cuda-version", f"{cuda}.*"))
    return fixes.otherwise(
        fixes.add(env, *packages), "from PyPI, " + (pypi_way or fixes.add(env, wheel))
    )


def needed(
    link: Linkage,
    torch: TorchFacts | None,
    vllm_version: str | None = None,
    *,
    env: PixiEnv | None = None,
    built: BuiltFor | str | None = None,
    targets: FixTargets | None = None,
    held: Sequence[Path] = (),
    site_packages: Path | None = None,
) -> Finding:
    """``abi.needed``: every library the extension's load needs is found where the loader
    looks (torch's already-loaded libraries, RUNPATH, LD_LIBRARY_PATH, the env, the system):
    its own ``DT_NEEDED`` and theirs, through the whole closure. A missing CUDA runtime
    (``libcudart.so.N``) is fixed two ways: one CUDA for the extension and torch, or the
    runtime wheel at the version the metadata asks with its dir on the loader's path
    (:func:`pytest_vllm_env.checks.abi_cudart.provide_runtime`; ``held``: copies of it the
    env holds elsewhere, ``site_packages``: where the wheel goes)."""
    env = env or NO_ENV
    cid, name = "abi.needed", label(link.path)
    if link.error:
        return F.error(cid, f"{name}: {link.error}", unreadable(env, link.path, name), subject=name)
    direct = [lib for lib, path in link.needed.items() if path is None and lib not in DRIVER_LIBS]
    deep = [(lib, by) for lib, by in link.missing_deep if lib not in DRIVER_LIBS]
    driver = [lib for lib, path in link.needed.items() if path is None and lib in DRIVER_LIBS]
    note = (
        {"not_on_this_machine": f"{', '.join(driver)} (installed by the NVIDIA driver)"}
        if driver
        else {}
    )
    if (
        torch is not None
        and torch.errors
        and (direct or deep or set(torch.errors) & set(link.needed))
    ):
        # a torch library there and unreadable: what it is and needs is unknown (the walk
        # stopped at it), so the load is not judged on what is left (issue 21)
        return torch_unreadable(cid, name, torch, env)
    if not direct and not deep:
        return F.passed(
            cid,
            f"{name}: all {len(link.needed)} needed libraries are found, and all they need",
            subject=name,
            **note,
        )
    missing = direct + [lib for lib, _ in deep]
    first = missing[0]
    m = _CUDA_LIB.match(first)
    owner = owner_of(name)
    versioned = m is not None and m[1] in CUDA_MAJOR_SONAME
    if (
        direct
        and versioned
        and torch is not None
        and torch.cuda
        and torch.cuda.split(".")[0] != m[2]  # type: ignore[index]
    ):
        fix = fixes.otherwise(
            f"{name} was built for CUDA {m[2]}, torch {torch.version} is CUDA "  # type: ignore[index]
            f"{torch.cuda} (abi.cudart): install "
            + for_torch_cuda(env, owner, torch, vllm_version, targets.cuda if targets else None),
            "keep both and " + provide_runtime(env, m[2], held, site_packages, owner, targets),  # type: ignore[index]
        )
    elif deep and not direct and all(_is_torch_lib(by) for _, by in deep):
        # the extension's own libraries are all there: what is missing is what torch's
        # libraries need, which `import torch` loads first and fails on (abi.needed for
        # torch says the same); the fix is torch's, whatever the extension was built for
        names = list(dict.fromkeys(lib for lib, _ in deep))
        fix = "torch's own libraries are incomplete: " + _torch_libs_fix(env, names, torch, targets)
    elif wheels := _torch_wheels_fix(env, missing, targets):
        fix = f"add the CUDA libraries the load needs ({', '.join(missing)}): " + wheels
    elif m:
        # the CUDA runtime from PyPI lands in site-packages/nvidia/..., where the loader does
        # not look by itself: the wheel at the version the metadata asks, and its lib dir on
        # the loader's path (a venv's only way; conda-forge's cuda-cudart is in PREFIX/lib)
        wheel_way = (
            provide_runtime(env, m[2], held, site_packages, owner, targets)
            if m[1] == "cudart"
            else ""
        )
        fix = f"add the CUDA library that provides {first}: " + _cuda_library_fix(
            env, m[1], m[2], _cuda_major_of(link, torch), targets, wheel_way
        )
    elif first.startswith(("libc10", "libtorch")):
        if targets is not None and targets.torch:
            fix = "install the torch vLLM pins: " + targets.torch_fix(env)
        else:
            pin = built.torch if isinstance(built, BuiltFor) else built
            torch_pkg = torch_package(env, torch_spec(pin) if pin else "")
            fix = f"install the torch {owner} was built for: " + fixes.add(env, torch_pkg)
    else:
        fix = fixes.otherwise(
            f"add the package that provides {first} to {fixes.deps_place(env)}",
            f"reinstall {owner}: " + fixes.reinstall(env, dist_name(owner), pypi=True),
            ", or ",
        )
    through = (
        "; through the libraries it loads: "
        + ", ".join(f"{lib} (needed by {by})" for lib, by in deep[:6])
        + (f" and {len(deep) - 6} more" if len(deep) > 6 else "")
        if deep
        else ""
    )
    own = (
        f"{name} needs {', '.join(direct)}, found nowhere the loader looks"
        if direct
        else (f"{name}'s own libraries are found")
    )
    return F.failed(
        cid,
        f"{own}{through}: import fails with "
        f'"{first}: cannot open shared object file: No such file or directory"',
        fix,
        subject=name,
        missing=missing,
        **note,
    )


def _is_torch_lib(soname: str) -> bool:
    """A library of torch's own ``torch/lib`` (``libtorch_cuda.so``, ``libc10_cuda.so``)."""
    return soname.startswith(("libtorch", "libc10"))


def _torch_libs_fix(
    env: PixiEnv, names: list[str], torch: TorchFacts | None, targets: FixTargets | None
) -> str:
    """What makes torch's own libraries loadable again when ``names`` are missing: the CUDA
    wheels torch's metadata asks for, the CUDA library's package, or a reinstall of torch (a
    library torch ships itself, as ``libtorch_nvshmem.so``, means a damaged install)."""
    own = [n for n in names if _is_torch_lib(n)]
    if own:  # torch's wheel ships these in torch/lib: the install is damaged
        return f"torch's own {', '.join(own)} is missing from torch/lib: reinstall torch: " + (
            fixes.reinstall(env, "torch", pypi=True)
        )
    first = names[0]
    m = _CUDA_LIB.match(first)
    if wheels := _torch_wheels_fix(env, names, targets):
        return f"add the CUDA libraries torch needs ({', '.join(names)}): " + wheels
    if m:
        major = torch.cuda.split(".")[0] if torch is not None and torch.cuda else None
        return f"add the CUDA library that provides {first}: " + _cuda_library_fix(
            env, m[1], m[2], major, targets
        )
    return fixes.otherwise(
        f"add the package that provides {first} to {fixes.deps_place(env)}",
        "reinstall torch: " + fixes.reinstall(env, "torch", pypi=True),
    )


def torch_needed(
    missing: list[tuple[str, str]],
    torch: TorchFacts | None,
    *,
    env: PixiEnv | None = None,
    targets: FixTargets | None = None,
) -> Finding:
    """``abi.needed`` for torch itself: every library ``torch/lib`` needs is found (``import
    torch`` loads them all before any extension: ``libtorch_cuda.so``'s cuBLAS, cuDNN, NCCL).
    ``missing``: the ``(name, needed by)`` pairs the loader finds nowhere."""
    env = env or NO_ENV
    cid = "abi.needed"
    if torch is None:
        return F.skipped(cid, "torch is not installed", subject="torch")
    libs = [(n, by) for n, by in missing if n not in DRIVER_LIBS]
    if not libs:
        return F.passed(
            cid, f"torch {torch.version}: every library torch/lib needs is found", subject="torch"
        )
    names = list(dict.fromkeys(n for n, _ in libs))
    first = names[0]
    fix = _torch_libs_fix(env, names, torch, targets)
    shown = ", ".join(f"{n} (needed by {by})" for n, by in libs[:6])
    more = f" and {len(libs) - 6} more" if len(libs) > 6 else ""
    return F.failed(
        cid,
        f"torch {torch.version}'s libraries need {shown}{more}, found nowhere the loader looks: "
        f'`import torch` fails with "{first}: cannot open shared object file: No such file or '
        'directory"',
        fix,
        subject="torch",
        missing=names,
    )


def undefined(
    link: Linkage, torch: TorchFacts | None = None, *, env: PixiEnv | None = None
) -> Finding:
    """``abi.undefined``: every undefined symbol that is not torch's (``abi.symbols`` judges
    those) is defined by a library in the extension's ``DT_NEEDED`` closure or by Python.
    ``torch``: where a torch library is there and unreadable (:attr:`TorchFacts.errors`), a
    symbol found nowhere may be in it: an error naming it, not the build's fault."""
    env = env or NO_ENV
    cid, name = "abi.undefined", label(link.path)
    if link.error:
        return F.error(cid, f"{name}: {link.error}", unreadable(env, link.path, name), subject=name)
    if (link.unresolved or link.missing_deep) and _loads_unread_torch(link, torch):
        return torch_unreadable(cid, name, torch, env)  # type: ignore[arg-type]
    if link.missing_deep:
        libs = ", ".join(sorted({n for n, _ in link.missing_deep}))
        return F.skipped(
            cid,
            f"{name}: cannot resolve its symbols while {libs} is not found (abi.needed)",
            subject=name,
        )
    if not link.unresolved:
        return F.passed(
            cid, f"{name}: every symbol it imports is defined by a library it needs", subject=name
        )
    shown = link.unresolved_shown or list(link.unresolved)
    owner = owner_of(name)
    release = _released(env, owner)
    arch = next((m for s in shown if (m := re.search(r"_sm(\d{2,3})[af]?(?!\d)", s))), None)
    if arch:
        n = int(arch[1])
        cc = f"{n // 10}.{n % 10}"
        fix = (
            f"the build compiled a caller of sm_{n}-only kernels without the kernels (vLLM "
            f"#29030: a global -DENABLE_..._SM{n} while TORCH_CUDA_ARCH_LIST had no {cc}): "
            f"rebuild with {cc} in `TORCH_CUDA_ARCH_LIST` ({fixes.activation_place(env)}) from a "
            f"clean tree (remove build/); or install the released {owner} wheel: {release}"
        )
    else:
        fix = (
            f"a build left {owner}'s own symbols undefined: install the released {owner} "
            f"wheel ({release}), or rebuild it from a clean tree (remove build/) against this env"
        )
    return F.failed(
        cid,
        f"{name}: {len(shown)} symbol(s) defined by no library it loads: import fails with "
        f'"undefined symbol: {link.unresolved[0]}"',
        fix,
        undefined=shown,
        subject=name,
    )


def _loads_unread_torch(
    link: Linkage, torch: TorchFacts | None, missing: Sequence[str] = ()
) -> bool:
    """Whether the load of ``link`` goes through a torch library that is there and cannot be
    read (:attr:`TorchFacts.errors`, the reading ``abi.symbols`` uses): one it needs or misses
    by name, or any of torch's when it needs one (torch's libraries load one another). What
    that library needs and defines is unknown, so the load is not judged on what is left
    (issue 21)."""
    if torch is None or not torch.errors:
        return False
    names = set(link.needed) | set(missing)
    return bool(set(torch.errors) & names) or any(
        n.startswith(("libc10", "libtorch")) for n in names
    )


def _released(env: PixiEnv, owner: str) -> str:
    """The fix that swaps a local build of ``owner`` for its released wheel: the release of
    the version installed (``0.11.1`` for ``0.11.1.dev5+g1234``) in the env's language."""
    dist = dist_name(owner)
    version = env.version_of(dist)
    release = Version(version).base_version if version and is_version(version) else ""
    return fixes.pin(env, Package(dist, f"=={release}" if release else "", pypi=True))
