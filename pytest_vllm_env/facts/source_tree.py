"""A vLLM source tree (``--vllm-source``) against the next ``pip install -e .``: what its build
dir caches, what the next configure will be handed, and which torch types its kernels need.

What decides (vLLM ``setup.py``; torch ``utils/cpp_extension.py`` ``_find_cuda_home``): the
generator is ``Ninja`` when ``ninja`` runs on the activated PATH, else CMake's default; from
0.9.0 ``setup.py`` passes ``-DCMAKE_CUDA_COMPILER={CUDA_HOME}/bin/nvcc``, ``CUDA_HOME`` found as
torch finds it. :mod:`pytest_vllm_env.checks.source` judges these facts;
:mod:`pytest_vllm_env.readers.source_tree` reads the files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pytest_vllm_env import proc
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.readers import source_tree as reader

TORCH_SCALAR_TYPES = "torch/include/c10/core/ScalarType.h"
# vLLM's CMake floor: cmake_minimum_required(VERSION 3.26) from 0.6 (3.21 before), and
# find_package(Python ... Development.SABIModule), a component FindPython knows from 3.26.
VLLM_CMAKE_FLOOR = "3.26"


@dataclass(frozen=True)
class SourceTree:
    """The ``--vllm-source`` path, and whether it is a directory at all."""

    path: Path
    is_dir: bool


def source_tree(path: Path) -> SourceTree:
    """``path`` as given on the command line."""
    return SourceTree(path, path.is_dir())


@dataclass(frozen=True)
class CachedBuild:
    """One ``CMakeCache.txt`` of the tree, with what the file system says about its paths."""

    path: Path
    entries: Mapping[str, str]
    home_elsewhere: bool  # CMAKE_HOME_DIRECTORY is another directory than the tree
    nvcc_same: bool  # the cached CMAKE_CUDA_COMPILER is the next one (or either is unknown)
    nvcc_gone: bool  # the cached CMAKE_CUDA_COMPILER no longer exists
    other_torch: bool  # Torch_DIR holds a TorchConfig.cmake of another torch than the env's


@dataclass(frozen=True)
class NextBuild:
    """What the next ``pip install -e .`` of the tree hands CMake, and what its build dir holds."""

    tree: Path
    generator: str  # "Ninja" or "Unix Makefiles"
    cuda_home: str | None
    nvcc: str | None  # {CUDA_HOME}/bin/nvcc
    passes_nvcc: bool  # setup.py passes -DCMAKE_CUDA_COMPILER (vLLM 0.9.0 on)
    torch_config_dir: Path | None = None  # the env's torch's TorchConfig.cmake dir
    caches: list[CachedBuild] = field(default_factory=list)


def torch_cuda_home(environ: Mapping[str, str]) -> str | None:
    """``torch.utils.cpp_extension._find_cuda_home()``: CUDA_HOME, CUDA_PATH, ``which nvcc``'s
    grandparent, then /usr/local/cuda when it exists."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if environ.get(var):
            return environ[var]
    nvcc = proc.which("nvcc", environ.get("PATH"))
    if nvcc is not None:
        return os.path.dirname(os.path.dirname(str(nvcc)))
    return "/usr/local/cuda" if os.path.exists("/usr/local/cuda") else None


def same_path(a: str, b: str) -> bool:
    """One file or directory under two spellings (normalized, or through symlinks)."""
    return os.path.normpath(a) == os.path.normpath(b) or os.path.realpath(a) == os.path.realpath(b)


def next_build(env: PixiEnv, tree: Path, torch_config_dir: Path | None) -> NextBuild:
    """The tree's cached builds against the next configure, in ``env``'s activation."""
    environ = env.environ()
    generator = "Ninja" if proc.which("ninja", environ.get("PATH")) else "Unix Makefiles"
    cuda_home = torch_cuda_home(environ)
    nvcc = f"{cuda_home}/bin/nvcc" if cuda_home else None
    build = NextBuild(
        tree, generator, cuda_home, nvcc, reader.passes_cuda_compiler(tree), torch_config_dir
    )
    for cache in reader.read_caches(tree):
        e = cache.entries
        home = e.get("CMAKE_HOME_DIRECTORY")
        cached_nvcc = e.get("CMAKE_CUDA_COMPILER")
        torch_dir = e.get("Torch_DIR")
        build.caches.append(
            CachedBuild(
                cache.path,
                dict(e),
                home_elsewhere=bool(home) and os.path.realpath(home) != os.path.realpath(tree),
                nvcc_same=not (cached_nvcc and nvcc) or same_path(cached_nvcc, nvcc),
                nvcc_gone=bool(cached_nvcc) and not os.path.exists(cached_nvcc),
                other_torch=bool(
                    torch_dir
                    and torch_config_dir is not None
                    and (Path(torch_dir) / "TorchConfig.cmake").is_file()
                    and not same_path(torch_dir, str(torch_config_dir))
                ),
            )
        )
    return build


@dataclass(frozen=True)
class KernelTypes:
    """The torch scalar types the tree's kernels use (``file:line`` of the first use), and
    those the env's torch defines."""

    has_csrc: bool  # False: not a vLLM source tree
    defined: set[str] | None  # None: no c10/core/ScalarType.h in the env's torch
    uses: dict[str, str] = field(default_factory=dict)  # read when both of the above are there
    torch_version: str | None = None
    error: str = ""  # ScalarType.h there and unreadable (a FIFO): "path: cannot be read: why"


def kernel_types(env: PixiEnv, tree: Path) -> KernelTypes:
    """What ``source.torch-api`` compares: the kernels' scalar types and the env's torch's."""
    if not (tree / "csrc").is_dir():
        return KernelTypes(False, None)
    header, why = env.package_text_or_why("torch", TORCH_SCALAR_TYPES)
    if header is None:
        return KernelTypes(True, None, error=why)
    uses = reader.scalar_uses(tree) or {}
    return KernelTypes(True, reader.scalar_types_defined(header), uses, env.version_of("torch"))


@dataclass(frozen=True)
class CMakeFloor:
    """The CMake a vLLM build needs, where that comes from, and the tree it was read from (None:
    no tree given, vLLM's current floor)."""

    version: str
    where: str
    tree: Path | None = None


def cmake_floor(tree: Path | None) -> CMakeFloor:
    """The floor of ``tree`` (its ``cmake_minimum_required``, raised to 3.26 when
    ``cmake/utils.cmake`` asks FindPython for ``Development.SABIModule``), or vLLM's current
    floor without a tree."""
    if tree is not None:
        floor = reader.cmake_minimum_required(tree)
        if reader.uses_sabi_module(tree) and (floor is None or _v(floor) < (3, 26)):
            return CMakeFloor(
                "3.26", f"{tree}/cmake/utils.cmake (FindPython's Development.SABIModule)", tree
            )
        if floor:
            return CMakeFloor(floor, f"{tree}/CMakeLists.txt (cmake_minimum_required)", tree)
    return CMakeFloor(
        VLLM_CMAKE_FLOOR,
        "vLLM >= 0.6's CMakeLists.txt (cmake_minimum_required, SABIModule)",
        tree,
    )


def _v(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])
