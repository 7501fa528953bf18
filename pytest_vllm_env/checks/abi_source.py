"""``abi.source-torch``: the torch a vLLM source tree builds against is the env's, before the
build starts (a ``pip install -e .`` without build isolation otherwise fails deep in the CUDA
build; vLLM >= 0.9 uses ``at::Float8_e8m0fnu``, added in torch 2.7).

Pure: the tree's torch pins arrive read
(:func:`pytest_vllm_env.readers.vllm_build.read_source_tree`).
"""

from __future__ import annotations

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from pytest_vllm_env import findings as F
from pytest_vllm_env.checks.abi_fixes import NO_ENV, torch_package
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.findings import Finding
from pytest_vllm_env.readers.vllm_build import SourceTree


def source_torch_floor(
    vllm_version: str, torch_version: str | None, *, env: PixiEnv | None = None
) -> Finding:
    """``abi.source-torch``: vLLM >= 0.9 sources need torch >= 2.7 (``at::Float8_e8m0fnu``)."""
    env = env or NO_ENV
    floor = torch_package(env, ">=2.7")
    cid = "abi.source-torch"
    try:
        v = Version(vllm_version)
    except InvalidVersion:
        return F.error(
            cid,
            f"vLLM version {vllm_version!r} is not a version",
            "check the vLLM tag or source tree",
        )
    if v < Version("0.9"):
        return F.passed(cid, f"vLLM {vllm_version} predates the torch >= 2.7 requirement")
    if torch_version is None:
        return F.failed(
            cid,
            f"building vLLM {vllm_version} needs torch >= 2.7; torch is not installed",
            fixes.add(env, floor) + " (or the exact torch that vLLM release pins)",
        )
    if Version(torch_version).release < (2, 7):
        return F.failed(
            cid,
            f"vLLM {vllm_version} uses at::Float8_e8m0fnu, added in "
            f"torch 2.7; the env has torch {torch_version}",
            fixes.pin(env, floor) + "; or build vLLM 0.8.5 (the last release for torch 2.6)",
        )
    return F.passed(cid, f"torch {torch_version} >= 2.7, as vLLM {vllm_version} needs")


def source_tree_torch(
    tree: SourceTree, torch_version: str | None, *, env: PixiEnv | None = None
) -> list[Finding]:
    """``abi.source-torch`` for a source tree: its torch pins are met before the build starts
    (a `pip install -e .` without build isolation otherwise fails deep in the CUDA build)."""
    env = env or NO_ENV
    cid = "abi.source-torch"
    if tree.error:
        return [F.error(cid, tree.error, "point --vllm-source at a vLLM checkout")]
    if not tree.requirements:
        return [F.skipped(cid, f"{tree.root} names no torch requirement")]
    out = []
    for where, line in tree.requirements:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            out.append(F.error(cid, f"{where}: {line!r} is not a requirement", f"fix {where}"))
            continue
        if torch_version is None:
            out.append(
                F.failed(
                    cid,
                    f"{where} needs {req}; torch is not installed",
                    fixes.add(env, torch_package(env, str(req.specifier))) + " before building",
                )
            )
            continue
        if req.specifier.contains(Version(torch_version), prereleases=True):
            out.append(F.passed(cid, f"torch {torch_version} meets {where}: {req}"))
        else:
            out.append(
                F.failed(
                    cid,
                    f"the source tree needs {req} ({where}) but the env has torch {torch_version}",
                    fixes.pin(env, torch_package(env, str(req.specifier)))
                    + "; or check out the vLLM tag made for the installed torch",
                )
            )
    return out
