"""``lock.torch-pins``, ``lock.wheel-tags``: the locked PyPI packages against the locked torch
and Python, and the sdists Pixi would build at install (:mod:`pytest_vllm_env.checks.lock`
says how lock checks work).
"""

from __future__ import annotations

import re

from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from pytest_vllm_env import findings as F
from pytest_vllm_env.checks import abi
from pytest_vllm_env.checks.lock import (
    DEPS,
    PYPI,
    locked_or_skip,
    manifest_lines,
    relabel,
    relock,
)
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.lockfacts import TorchBuild, cxx11_abi, torch_build
from pytest_vllm_env.findings import Finding
from pytest_vllm_env.readers.manifest_lines import ManifestLines
from pytest_vllm_env.tables import torch_archs

PINNING = ("vllm", "xformers", "torchvision", "torchaudio", "flashinfer-python")
BUILT_FROM_SOURCE = ("vllm", "flash-attn", "xformers")


# -- lock.torch-pins -----------------------------------------------------------------------------
def torch_pins(env: PixiEnv) -> list[Finding]:
    """vLLM's, xformers' and torch's companions' requires_dist pins hold for the locked
    torch (abi.pins, as for installed metadata); a flash-attn wheel's ``torchX.Y`` and
    ``cxx11abi`` tags match the locked torch (F5.3, F5.5)."""
    cid = "lock.torch-pins"
    _, locked, skip = locked_or_skip(env, cid)
    if skip:
        return [skip]
    ml = manifest_lines(env)
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
                fix = f.fix + relock(ml)  # torch itself is not locked: abi.pins' own fix
            elif f.outcome == "failed":
                req = Requirement(str(f.evidence.get("requirement", "torch")))
                fix = (
                    ml.change(req.name, PYPI, f'{req.name} = "{req.specifier}"')
                    + f", or lock the {pkg.name} release built for {req.name} "
                    f"{f.evidence.get('installed')} ({ml.where(pkg.name, PYPI)})" + relock(ml)
                )
            out += relabel([f], cid, fix)
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
    if built and built[1] != torch_release:
        problems.append(f"built for torch {built[1]}, locked torch is {torch.version}")
    want = cxx11_abi(torch)
    if abi_flag and want is not None and (abi_flag[1] == "TRUE") != want:
        problems.append(
            f"built with _GLIBCXX_USE_CXX11_ABI={int(abi_flag[1] == 'TRUE')}, torch "
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
            f"cxx11abi{'TRUE' if want else 'FALSE'} ({ml.where('flash-attn', PYPI)})" + relock(ml),
        )
    return F.passed(cid, f"flash-attn wheel {filename} is built for torch {torch_release}")


# -- lock.wheel-tags -----------------------------------------------------------------------------
def wheel_tags(env: PixiEnv) -> list[Finding]:
    """Each locked wheel fits the locked Python and the platform; vLLM, flash-attn and
    xformers are locked as wheels, not as sdists that Pixi would build at install."""
    cid = "lock.wheel-tags"
    _, locked, skip = locked_or_skip(env, cid)
    if skip:
        return [skip]
    ml = manifest_lines(env)
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
                "re-solve for this one" + relock(ml),
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
        major = int(match[1])
        minor = int(match[2]) if match[2] else None
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
            f'`[system-requirements]` `libc = "2.31"` to {ml.file}' + relock(ml),
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
        f"prebuilt wheel: {ml.where(name, PYPI)})" + relock(ml),
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
