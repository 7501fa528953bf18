"""A vLLM source tree (``--vllm-source``), read: its build dir's ``CMakeCache.txt`` files, the
lines of ``setup.py`` and ``CMakeLists.txt`` the source checks model, and the torch scalar
types its kernels name. Nothing here judges (:mod:`pytest_vllm_env.checks.source` does)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pytest_vllm_env import files

# vLLM's kernels name torch scalar types as at::Float8_e8m0fnu, c10::ScalarType::Float4_e2m1fn_x2
SCALAR_NAME = re.compile(
    r"\b(?:at|c10|torch)::(?:ScalarType::)?k?((?:Float8|Float4|Float6)_\w+|UInt(?:16|32|64)|Bits\w+)\b"
)
KERNEL_SUFFIXES = (".cu", ".cuh", ".cpp", ".h", ".hpp", ".cc")
_CACHE_LINE = re.compile(r"^([A-Za-z_][\w.-]*)(?::[A-Z]+)?=(.*)$")


@dataclass
class CMakeCache:
    """One ``CMakeCache.txt`` of the tree's build dir."""

    path: Path
    entries: dict[str, str] = field(default_factory=dict)


def _text(path: Path) -> str | None:
    try:
        return files.read_text(path, files.SOURCE)
    except OSError:
        return None


def read_caches(tree: Path) -> list[CMakeCache]:
    """``build/*/CMakeCache.txt`` (setup.py's ``build_temp``) and ``build/CMakeCache.txt``,
    each as its ``KEY:TYPE=value`` entries; one that cannot be read is left out."""
    caches = []
    for path in sorted([*tree.glob("build/*/CMakeCache.txt"), *tree.glob("build/CMakeCache.txt")]):
        text = _text(path)
        if text is None:
            continue
        cache = CMakeCache(path)
        for line in text.splitlines():
            m = _CACHE_LINE.match(line)
            if m and not line.startswith(("//", "#")):
                cache.entries[m[1]] = m[2]
        caches.append(cache)
    return caches


def passes_cuda_compiler(tree: Path) -> bool:
    """Whether the tree's ``setup.py`` passes ``-DCMAKE_CUDA_COMPILER=`` (vLLM 0.9.0 on)."""
    return "-DCMAKE_CUDA_COMPILER=" in (_text(tree / "setup.py") or "")


def cmake_minimum_required(tree: Path) -> str | None:
    """``3.26`` from the tree's ``cmake_minimum_required(VERSION 3.26)``; None without one."""
    m = re.search(
        r"cmake_minimum_required\(\s*VERSION\s+([\d.]+)", _text(tree / "CMakeLists.txt") or ""
    )
    return m[1] if m else None


def uses_sabi_module(tree: Path) -> bool:
    """Whether ``cmake/utils.cmake`` asks FindPython for ``Development.SABIModule`` (a
    component CMake knows from 3.26)."""
    return "Development.SABIModule" in (_text(tree / "cmake" / "utils.cmake") or "")


def scalar_uses(tree: Path) -> dict[str, str] | None:
    """Torch scalar type names the kernels under ``csrc/`` use, each with its first
    ``file:line``; None when the tree has no ``csrc/`` (not a vLLM source tree)."""
    csrc = tree / "csrc"
    if not csrc.is_dir():
        return None
    used: dict[str, str] = {}
    for path in sorted(csrc.rglob("*")):
        if path.suffix not in KERNEL_SUFFIXES:
            continue
        text = _text(path)
        if text is None:
            continue
        for m in SCALAR_NAME.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            used.setdefault(m[1], f"{path.relative_to(tree)}:{line}")
    return used


def scalar_types_defined(header: str) -> set[str]:
    """The scalar type names ``c10/core/ScalarType.h`` defines (its ``_(c10::X, Name)``)."""
    return set(re.findall(r"_\(\s*[\w:<>]+\s*,\s*(\w+)\s*\)", header))
