"""``abi.needed`` and ``abi.undefined``: will the loader find every library an extension
needs, and every symbol it imports beyond torch's (``abi.symbols`` judges those)?

Real failures (see :mod:`pytest_vllm_env.facts.linkage`, which resolves both as the loader
does, from ELF files): a CUDA 12-linked vLLM in a CUDA 13 image, "libcudart.so.12: cannot open
shared object file" (llm-d#1402); a source build that left its own sm100 kernel undefined
(vLLM #29030). Pure: the resolution arrives as a :class:`~pytest_vllm_env.facts.linkage.Linkage`;
which package ships a missing CUDA library comes from :mod:`pytest_vllm_env.tables.cuda_libs`.
"""

from __future__ import annotations

import re

from packaging.version import Version

from pytest_vllm_env import findings as F
from pytest_vllm_env.checks.abi_fixes import (
    NO_ENV,
    for_torch_cuda,
    is_version,
    torch_package,
    torch_spec,
    unreadable,
)
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.binaries import BuiltFor, TorchFacts, dist_name, label, owner_of
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.facts.linkage import DRIVER_LIBS, Linkage
from pytest_vllm_env.findings import Finding
from pytest_vllm_env.tables.cuda_libs import CUDA_MAJOR_SONAME, RUNTIME_PACKAGES

# A CUDA runtime library's soname: lib<stem>.so.<major>
_CUDA_LIB = re.compile(
    r"^lib(cudart|cublas|cublasLt|cufft|curand|cusparse|cusolver|nvrtc|nvJitLink)\.so\.(\d+)"
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


def _cuda_library_fix(env: PixiEnv, stem: str, soname_major: str, major: str | None) -> str:
    """The packages that provide ``lib<stem>.so.<soname_major>`` for CUDA ``major``: the
    conda-forge one (with ``cuda-version``) where the env takes conda packages, the PyPI one."""
    conda, pypi = RUNTIME_PACKAGES[stem]
    major = major or (soname_major if stem in CUDA_MAJOR_SONAME else None)
    if major is None:
        wheel = Package(pypi, f"=={soname_major}.*", pypi=True)
    elif int(major) <= 12:
        wheel = Package(f"{pypi}-cu{major}", pypi=True)
    else:
        wheel = Package(pypi, f"=={soname_major}.*", pypi=True)
    if fixes.kind_of(env) == "venv":
        return fixes.add(env, wheel)
    if major is not None and int(major) < 12:  # conda-forge's CUDA 11 is one package
        packages = [Package("cudatoolkit", f"{major}.*")]
    else:
        packages = [Package(conda)]
        have = (env.version_of("cuda-version") or "").split(".")[0]
        if major is not None and have != major:
            packages.append(Package("cuda-version", f"{major}.*"))
    return f"{fixes.add(env, *packages)}; or from PyPI, {fixes.add(env, wheel)}"


def needed(
    link: Linkage,
    torch: TorchFacts | None,
    vllm_version: str | None = None,
    *,
    env: PixiEnv | None = None,
    built: BuiltFor | str | None = None,
) -> Finding:
    """``abi.needed``: every ``DT_NEEDED`` library of the extension is found where the loader
    looks (torch's already-loaded libraries, RUNPATH, LD_LIBRARY_PATH, the env, the system)."""
    env = env or NO_ENV
    cid, name = "abi.needed", label(link.path)
    if link.error:
        return F.error(cid, f"{name}: {link.error}", unreadable(env, link.path, name))
    missing = [lib for lib, path in link.needed.items() if path is None and lib not in DRIVER_LIBS]
    driver = [lib for lib, path in link.needed.items() if path is None and lib in DRIVER_LIBS]
    note = (
        {"not_on_this_machine": f"{', '.join(driver)} (installed by the NVIDIA driver)"}
        if driver
        else {}
    )
    if not missing:
        return F.passed(cid, f"{name}: all {len(link.needed)} needed libraries are found", **note)
    first = missing[0]
    m = _CUDA_LIB.match(first)
    owner = owner_of(name)
    versioned = m is not None and m[1] in CUDA_MAJOR_SONAME
    if versioned and torch is not None and torch.cuda and torch.cuda.split(".")[0] != m[2]:
        fix = (
            f"{name} was built for CUDA {m[2]}, torch {torch.version} is CUDA "
            f"{torch.cuda} (abi.cudart): install " + for_torch_cuda(env, owner, torch, vllm_version)
        )
    elif m:
        fix = f"add the CUDA library that provides {first}: " + _cuda_library_fix(
            env, m[1], m[2], _cuda_major_of(link, torch)
        )
    elif first.startswith(("libc10", "libtorch")):
        pin = built.torch if isinstance(built, BuiltFor) else built
        torch_pkg = torch_package(env, torch_spec(pin) if pin else "")
        fix = f"install the torch {owner} was built for: {fixes.add(env, torch_pkg)}"
    else:
        fix = (
            f"add the package that provides {first} to {fixes.deps_place(env)}, or "
            f"reinstall {owner}: {fixes.reinstall(env, dist_name(owner), pypi=True)}"
        )
    return F.failed(
        cid,
        f"{name} needs {', '.join(missing)}, found nowhere the loader looks: import fails with "
        f'"{first}: cannot open shared object file: No such file or directory"',
        fix,
        **note,
    )


def undefined(link: Linkage, *, env: PixiEnv | None = None) -> Finding:
    """``abi.undefined``: every undefined symbol that is not torch's (``abi.symbols`` judges
    those) is defined by a library in the extension's ``DT_NEEDED`` closure or by Python."""
    env = env or NO_ENV
    cid, name = "abi.undefined", label(link.path)
    if link.error:
        return F.error(cid, f"{name}: {link.error}", unreadable(env, link.path, name))
    if link.missing_deep:
        libs = ", ".join(sorted({n for n, _ in link.missing_deep}))
        return F.skipped(cid, f"{name}: cannot resolve its symbols while {libs} is not found")
    if not link.unresolved:
        return F.passed(cid, f"{name}: every symbol it imports is defined by a library it needs")
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
    )


def _released(env: PixiEnv, owner: str) -> str:
    """The fix that swaps a local build of ``owner`` for its released wheel: the release of
    the version installed (``0.11.1`` for ``0.11.1.dev5+g1234``) in the env's language."""
    dist = dist_name(owner)
    version = env.version_of(dist)
    release = Version(version).base_version if version and is_version(version) else ""
    return fixes.pin(env, Package(dist, f"=={release}" if release else "", pypi=True))
