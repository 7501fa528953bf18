"""A vLLM source tree, read as text: how its build hands CMake an nvcc, what its extensions
link, and the torch it builds against. Never imported, never run.

- ``setup.py``: whether it passes ``-DCMAKE_CUDA_COMPILER={CUDA_HOME}/bin/nvcc`` (vLLM >= 0.8.3,
  PR #15725) and appends ``$CMAKE_ARGS`` (0.12.0 on): :func:`read_setup`.
- ``CMakeLists.txt`` and ``cmake/utils.cmake``: whether a CUDA build links
  ``${TORCH_LIBRARIES}`` (where torch 2.0-2.7 put NVTX and nvrtc): :func:`read_vllm_links`.
- ``pyproject.toml`` ``[build-system].requires`` and ``requirements/cuda.txt``: the torch
  pins a build without isolation must meet: :func:`read_source_tree`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from pytest_vllm_env import files

FIRST_CUDA_HOME_RELEASE = "0.8.3"  # vLLM PR #15725: -DCMAKE_CUDA_COMPILER={CUDA_HOME}/bin/nvcc


@dataclass(frozen=True)
class VllmSetup:
    """How a vLLM tree's ``setup.py`` hands CMake its nvcc."""

    where: str  # "the vLLM in /src", "vLLM >= 0.8.3"
    cuda_home: bool  # passes -DCMAKE_CUDA_COMPILER={CUDA_HOME}/bin/nvcc
    cmake_args: bool  # appends $CMAKE_ARGS to cmake's command line
    # setup.py there and unreadable (a FIFO, a dangling link): "path: cannot be read: why";
    # what the tree's build does is then unknown, an error naming it (issue 21)
    error: str = ""


# The two families when the vLLM to be built is not known (no --vllm-source).
OLD_VLLM = VllmSetup(f"vLLM < {FIRST_CUDA_HOME_RELEASE}", False, False)


NEW_VLLM = VllmSetup(f"vLLM >= {FIRST_CUDA_HOME_RELEASE}", True, True)


def read_setup(root: Path | None) -> VllmSetup | None:
    """What ``root/setup.py`` passes to CMake; None without a setup.py (then both families
    are judged); one whose ``error`` names it when it is there and cannot be read."""
    if root is None:
        return None
    text, why = files.read_text_if_present(root / "setup.py", files.SOURCE)
    if why:
        return VllmSetup(f"the vLLM in {root}", False, False, why)
    if text is None:
        return None
    cuda_home = re.search(r"-DCMAKE_CUDA_COMPILER=\{CUDA_HOME\}", text) is not None
    cmake_args = re.search(r"""(?:environ\.get|getenv)\(\s*["']CMAKE_ARGS["']""", text) is not None
    return VllmSetup(f"the vLLM in {root}", cuda_home, cmake_args)


DEFAULT_LINKS_WHY = (
    "vLLM links into its C++-only extension (`_core_C`, `cumem_allocator`...: every release "
    "since 0.5.4; 0.4.1 to 0.5.3 linked the `torch` target only; pass --vllm-source to read it)"
)


@dataclass(frozen=True)
class VllmLinks:
    """Whether the vLLM being built links ``${TORCH_LIBRARIES}`` (where torch 2.0-2.4 put
    ``${LIBNVTOOLSEXT}`` and ``${CUDA_NVRTC_LIB}``, and 2.5-2.7 ``torch::nvtoolsext``), and
    why. vLLM's first CMake build linked it into every extension; vLLM #3698 (0.4.1) linked
    the ``torch`` target instead and kept ``${TORCH_LIBRARIES}`` for non-CUDA languages only
    (``cmake/utils.cmake``: "Don't use TORCH_LIBRARIES for CUDA"); ``_core_C`` (0.5.4,
    ``LANGUAGE CXX``) and later ``cumem_allocator`` brought it back into CUDA builds. Read
    from the vLLM 0.4.1 to 0.10.1 sdists."""

    torch_libraries: bool = True
    why: str = DEFAULT_LINKS_WHY
    # CMakeLists.txt or cmake/utils.cmake there and unreadable: "path: cannot be read: why"
    error: str = ""


def _link_files(root: Path) -> tuple[Path, Path]:
    """The files :func:`read_vllm_links` reads."""
    return root / "CMakeLists.txt", root / "cmake" / "utils.cmake"


def read_vllm_links(root: Path | None) -> VllmLinks:
    """What ``root``'s ``CMakeLists.txt`` and ``cmake/utils.cmake`` link, for a CUDA build;
    the default (``${TORCH_LIBRARIES}`` linked) when ``root`` is None or not a CMake tree."""
    if root is None:
        return VllmLinks()
    read = [files.read_text_if_present(p, files.SOURCE) for p in _link_files(root)]
    why = next((w for _, w in read if w), "")
    if why:  # there and unreadable: what it links is unknown; the default, with the file named
        return VllmLinks(True, f"vLLM may link (what it links cannot be read: {why})", why)
    cml, utils = (_strip_cmake_comments(t or "") for t, _ in read)
    if not cml and not utils:
        return VllmLinks(True, f"vLLM may link ({root} has no CMakeLists.txt: read nothing)")
    links = [
        m.group(0)
        for m in re.finditer(r"target_link_libraries\s*\([^)]*\)", cml + "\n" + utils)
        if "${TORCH_LIBRARIES}" in m.group(0)
    ]
    if not links:
        return VllmLinks(
            False,
            f"the vLLM in {root} does not link (its extensions link the `torch` target only, "
            "vLLM #3698)",
        )
    guarded = re.search(
        r'if\s*\(\s*GPU_LANGUAGE\s+STREQUAL\s+"CUDA"\s*\)(?:(?!endfunction).)*?'
        r"else\s*\(\s*\)\s*target_link_libraries\s*\([^)]*\$\{TORCH_LIBRARIES\}",
        utils,
        re.S,
    )
    if guarded and len(links) == 1:
        cxx = re.search(
            r"define_gpu_extension_target\s*\(\s*(\w+)[^)]*?\bLANGUAGE\s+CXX\b", cml, re.S
        )
        if cxx is None:
            return VllmLinks(
                False,
                f"the vLLM in {root} links only for non-CUDA extensions (cmake/utils.cmake: "
                '"Don\'t use TORCH_LIBRARIES for CUDA"), and its CMakeLists.txt defines none',
            )
        return VllmLinks(
            True,
            f"the vLLM in {root} links into its C++-only extension `{cxx.group(1)}` "
            "(CMakeLists.txt: LANGUAGE CXX)",
        )
    return VllmLinks(True, f"the vLLM in {root} links into its extensions")


def _strip_cmake_comments(text: str) -> str:
    return re.sub(r"(?m)#.*$", "", text)


@dataclass
class SourceTree:
    """The torch requirements a vLLM source tree builds against, with where each was read."""

    root: Path
    requirements: list[tuple[str, str]] = field(default_factory=list)  # (file:line, requirement)
    error: str = ""


def read_source_tree(root: Path) -> SourceTree:
    """torch pins from ``pyproject.toml`` ``[build-system].requires`` and
    ``requirements/cuda.txt`` (``requirements-cuda.txt`` in older trees); never raises."""
    tree = SourceTree(root)
    if not root.is_dir():
        tree.error = f"{root} is not a directory"
        return tree
    pyproject = root / "pyproject.toml"
    # there and unreadable (a FIFO, a dangling link) is an error naming it, never "no pins"
    text, why = files.read_text_if_present(pyproject, files.CONFIG)
    if why:
        tree.error = why
        return tree
    try:
        data = files.loads_toml(text) if text is not None else {}
    except ValueError as exc:  # tomllib.TOMLDecodeError, nesting too deep
        tree.error = f"{pyproject}: {exc}"
        return tree
    for line in data.get("build-system", {}).get("requires", []) or []:
        if isinstance(line, str) and re.match(r"^\s*torch\b(?![-_\w])", line):
            tree.requirements.append(("pyproject.toml [build-system].requires", line))
    for rel in ("requirements/cuda.txt", "requirements-cuda.txt"):
        text, why = files.read_text_if_present(root / rel, files.SOURCE)
        if why:
            tree.error = why
            return tree
        for no, line in enumerate((text or "").splitlines(), 1):
            if re.match(r"^\s*torch\s*[=<>~!]", line):
                tree.requirements.append((f"{rel}:{no}", line.split("#")[0].strip()))
    return tree
