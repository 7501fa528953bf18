"""``cmake.vllm-floor``: the CMake a vLLM build without isolation runs meets vLLM's floor (the
floor read from the tree by :func:`pytest_vllm_env.facts.source_tree.cmake_floor`: its
``cmake_minimum_required``, 3.26 where ``cmake/utils.cmake`` asks FindPython for
``Development.SABIModule``; vLLM >= 0.6's 3.26 without a tree)."""

from __future__ import annotations

import re
from pathlib import Path

from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.facts.source_tree import CMakeFloor
from pytest_vllm_env.findings import Finding, failed, passed, skipped


def _v(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def cmake_version_floor(
    env: PixiEnv,
    cmake: Path | None,
    cmake_version: str | None,
    floor: CMakeFloor,
    vllm_built_in_env: str | None,
) -> Finding:
    """``cmake.vllm-floor``: the CMake a vLLM build without isolation runs meets vLLM's floor.
    ``vllm_built_in_env`` says why the env's own cmake is the one (``--vllm-source`` or the
    manifest's ``no-build-isolation``)."""
    check = "cmake.vllm-floor"
    if floor.tree is None and vllm_built_in_env is None:
        return skipped(
            check,
            "no vLLM source build that uses the env's cmake (pass --vllm-source, or declare "
            "vllm as a git/path dependency with no-build-isolation)",
        )
    need, where = floor.version, floor.where
    why = vllm_built_in_env or "a --no-build-isolation build of --vllm-source"
    cmake_pkg = Package("cmake", f">={need}")  # PyPI's cmake for a venv (fixes.add)
    if cmake is None or not cmake_version:
        return failed(
            check,
            f"{why} runs `cmake` from the env, and there is none on the activated PATH",
            fixes.add(env, cmake_pkg),
        )
    if _v(cmake_version) < _v(need):
        return failed(
            check,
            f"{why} runs {cmake} (CMake {cmake_version}); vLLM needs CMake >= {need} ({where}): "
            f'CMake will say "CMake {need} or higher is required.  You are running version '
            f'{cmake_version}"',
            fixes.pin(env, cmake_pkg),
        )
    return passed(check, f"CMake {cmake_version} >= {need} ({where})")
