"""torch's installed CMake files (``share/cmake``), read as text: what each asks of a build.

A reader: text in, data out, no verdict. The predictions of what a vLLM build's CMake does
with them are :mod:`pytest_vllm_env.facts.find_cudatoolkit` (FindCUDAToolkit and torch's
NVTX choice) and :mod:`pytest_vllm_env.facts.torch_config` (torch's whole config, in the
order CMake meets it); their docstrings say which torch and CMake releases were read.

- ``Caffe2/public/cuda.cmake``: whether it runs the old ``find_package(CUDA)``,
  ``enable_language(CUDA)`` and ``find_package(CUDAToolkit)``; which ``CUDA::`` targets it
  requires (``if(NOT TARGET ...) FATAL_ERROR``) or reads properties of; its NVTX part (the
  ``nvtx3`` dirs it looks in, ``torch::nvtoolsext`` -> ``CUDA::nvToolsExt``, 2.1-2.4's
  ``Failed to find nvToolsExt``); the link interfaces it sets.
- ``Caffe2/Caffe2Config.cmake``: the line of its "cannot find the CUDA libraries" error, and
  whether it puts its own dir on ``CMAKE_MODULE_PATH`` around ``public/cuda.cmake`` (then
  torch's bundled ``Caffe2/FindCUDAToolkit.cmake`` runs, whatever CMake runs it).
- ``Caffe2/FindCUDAToolkit.cmake``: the rules of torch's copy (:func:`read_find_module`).
- ``Torch/TorchConfig.cmake``: what it puts into ``TORCH_LIBRARIES`` on Linux
  (``${CUDA_NVRTC_LIB}``, ``${LIBNVTOOLSEXT}``, ``torch::nvtoolsext``).
- ``Caffe2/Caffe2Targets*.cmake``: the exported targets' link interfaces.

Also :func:`cmake_args`: the ``-D`` presets of ``CMAKE_ARGS`` (vLLM >= 0.12 passes them on).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from pytest_vllm_env.tables.cmake_cuda import BUNDLED, FindModule, cmake_module

SHARE = "torch/share/cmake"
TORCH_CUDA_CMAKE = "torch/share/cmake/Caffe2/public/cuda.cmake"
TORCH_CONFIG = "torch/share/cmake/Torch/TorchConfig.cmake"
TORCH_CAFFE2_CONFIG = "torch/share/cmake/Caffe2/Caffe2Config.cmake"
TORCH_FIND_CUDATOOLKIT = "torch/share/cmake/Caffe2/FindCUDAToolkit.cmake"


def read_find_module(path: Path, text: str, name: str = BUNDLED) -> FindModule:
    """The rules of a ``FindCUDAToolkit.cmake`` read from its text (torch's bundled copy)."""
    until = re.search(
        r"if\(CUDAToolkit_VERSION VERSION_LESS (\d+)\.(\d+)\)(?:(?!endif\(\)\s*\n\s*endif).)*?"
        r"_CUDAToolkit_find_and_add_import_lib\(nvToolsExt\b",
        text,
        re.S,
    )
    return FindModule(
        name=name,
        include_from_nvcc="$ INCLUDES=" in text,
        include_preset=True,
        realpath_hint='file(REAL_PATH "${CUDAToolkit_LIBRARY_DIR}"' in text,
        nvtoolsext_header="find_path(CUDAToolkit_nvToolsExt_INCLUDE_DIR" in text,
        header_hint=bool(
            re.search(
                r"find_path\(CUDAToolkit_nvToolsExt_INCLUDE_DIR[^)]*ENV NVTOOLSEXT_PATH", text
            )
        ),
        library_hint=bool(
            re.search(
                r"_CUDAToolkit_find_and_add_import_lib\(nvToolsExt\b[^)]*NVTOOLSEXT_PATH", text
            )
        ),
        nvtoolsext_until=(int(until.group(1)), int(until.group(2))) if until else None,
        nvtx3="add_library(CUDA::nvtx3" in text,
        path=path,
    )


@dataclass
class TorchCudaCmake:
    """What the env's torch's cuda.cmake asks of the toolkit, and which FindCUDAToolkit it
    runs (read once: :class:`TorchCMake` holds the same facts as ``nvtx``)."""

    path: Path
    wants_nvtoolsext: bool  # links torch::nvtoolsext to CUDA::nvToolsExt (as a fallback)
    fatal_without_nvtoolsext: bool  # 2.1-2.4: FATAL_ERROR "Failed to find nvToolsExt"
    nvtx3_paths: list[str]  # where it looks for an nvtx3 dir first
    config: Path | None  # TorchConfig.cmake, for the real probe
    finds_cudatoolkit: bool = True  # find_package(CUDAToolkit) (2.1 on; 2.0 has none)
    # torch's own FindCUDAToolkit.cmake when Caffe2Config puts its dir on CMAKE_MODULE_PATH
    # around cuda.cmake (2.1 to 2.13): then it, not CMake's module, makes the CUDA:: targets
    bundled: FindModule | None = None
    # why the file could not be read (a FIFO, a device, over its size bound): a file that is
    # there but unreadable is named by the check, never taken as one that asks for nothing
    error: str = ""

    def module(self, cmake_version: str) -> FindModule:
        """The FindCUDAToolkit a build that loads this torch runs."""
        return self.bundled or cmake_module(cmake_version)


def parse_cuda_cmake(path: Path, text: str, config: Path | None = None) -> TorchCudaCmake:
    """The NVTX part of torch's ``cuda.cmake`` (``text``, read from ``path``); ``config`` is
    torch's TorchConfig.cmake. Which FindCUDAToolkit runs (:attr:`TorchCudaCmake.bundled`) is
    the caller's to add: it depends on Caffe2Config.cmake (:func:`appends_module_path`)."""
    probes = re.findall(r"find_path\(\s*nvtx3_dir\s+NAMES\s+nvtx3\s+PATHS\s+([^)]*)\)", text)
    if "if(USE_SYSTEM_NVTX)" in text and len(probes) > 1:
        # torch's own build option; a consumer of the installed file never sets it, so the
        # else() branch is the one that runs.
        probes = probes[1:]
    paths = []
    for raw in probes[:1]:
        paths = [p.strip('"') for p in raw.replace("NO_DEFAULT_PATH", "").split()]
    finds = bool(re.search(r"^\s*find_package\(CUDAToolkit\b", text, re.M))
    return TorchCudaCmake(
        path=path,
        wants_nvtoolsext="CUDA::nvToolsExt" in text,
        fatal_without_nvtoolsext="Failed to find nvToolsExt" in text,
        nvtx3_paths=paths,
        config=config,
        finds_cudatoolkit=finds,
    )


def appends_module_path(caffe2_config: str) -> bool:
    """``Caffe2Config.cmake`` appends its own dir to ``CMAKE_MODULE_PATH`` right before it
    includes ``public/cuda.cmake`` (torch 2.1 to 2.13): then torch's bundled
    ``FindCUDAToolkit.cmake`` is the one ``find_package(CUDAToolkit)`` runs."""
    appends = re.search(
        r'list\(APPEND CMAKE_MODULE_PATH "?\$\{CMAKE_CURRENT_LIST_DIR\}"?\)\s*\n\s*'
        r'include\("?\$\{CMAKE_CURRENT_LIST_DIR\}/public/cuda\.cmake"?\)',
        caffe2_config,
    )
    return appends is not None


@dataclass
class TorchCMake:
    """What the env's torch ``share/cmake`` asks of a consumer, read from its text."""

    root: Path
    version: str | None
    config: Path | None  # Torch/TorchConfig.cmake
    caffe2_config: Path | None
    cuda_cmake: Path | None
    legacy_findcuda: bool = False  # cuda.cmake: find_package(CUDA)
    caffe2_fatal_line: int | None = None  # "uses CUDA but I cannot find the CUDA libraries"
    enables_cuda: bool = False  # cuda.cmake: enable_language(CUDA)
    finds_cudatoolkit: bool = False  # cuda.cmake: find_package(CUDAToolkit REQUIRED)
    bundled_findcudatoolkit: bool = False  # Caffe2/FindCUDAToolkit.cmake runs (2.1 on)
    fatal_targets: list[str] = field(default_factory=list)  # if(NOT TARGET CUDA::X) FATAL
    property_targets: list[str] = field(default_factory=list)  # get_target_property(.. CUDA::X)
    libnvtoolsext_lib64: bool = False  # find_library(LIBNVTOOLSEXT ... lib64/) in a used file
    libnvtoolsext_in_torch_libraries: bool = False  # TorchConfig puts ${LIBNVTOOLSEXT} in it
    nvrtc_in_torch_libraries: bool = False  # TorchConfig puts ${CUDA_NVRTC_LIB} in it
    nvtoolsext_in_torch_libraries: bool = False  # TorchConfig appends torch::nvtoolsext
    interface: dict[str, list[str]] = field(default_factory=dict)  # torch::x -> [CUDA::y]
    links: dict[str, list[str]] = field(default_factory=dict)  # Caffe2Targets link graph
    nvtx: TorchCudaCmake | None = None
    # files of share/cmake that are there and cannot be read (a FIFO...): "path: why"
    unreadable: list[str] = field(default_factory=list)

    def closure(self, start: list[str]) -> dict[str, str]:
        """``CUDA::X`` -> the target whose link interface brings it, for what ``start`` links."""
        found: dict[str, str] = {}
        seen: set[str] = set()
        todo = [(s, "") for s in start]
        while todo:
            name, via = todo.pop(0)
            if name in seen:
                continue
            seen.add(name)
            if name.startswith("CUDA::"):
                found.setdefault(name, via)
                continue
            for item in self.links.get(name, []) + self.interface.get(name, []):
                todo.append((item, name))
        return found


def parse_torch_cmake(
    facts: TorchCMake, cuda_text: str, config_text: str, caffe2_text: str, targets: list[str]
) -> None:
    """Fill ``facts`` from the texts of cuda.cmake, TorchConfig.cmake, Caffe2Config.cmake and
    the ``Caffe2Targets*.cmake`` files (in name order); a missing file is an empty text."""
    facts.legacy_findcuda = bool(re.search(r"^\s*find_package\(CUDA\)", cuda_text, re.M))
    facts.enables_cuda = bool(re.search(r"^\s*enable_language\(CUDA\)", cuda_text, re.M))
    facts.finds_cudatoolkit = bool(
        re.search(r"^\s*find_package\(CUDAToolkit\b[^)]*\)", cuda_text, re.M)
    )
    for no, line in enumerate(caffe2_text.splitlines(), 1):
        if "message(FATAL_ERROR" in line:
            following = "\n".join(caffe2_text.splitlines()[no - 1 : no + 2])
            if "uses CUDA but I cannot find" in following:
                facts.caffe2_fatal_line = no
                break
    facts.fatal_targets = re.findall(
        r"if\(NOT TARGET (CUDA::\w+)\)\s*\n\s*message\(FATAL_ERROR", cuda_text
    )
    facts.property_targets = sorted(
        set(re.findall(r"get_target_property\([^)]*?(CUDA::\w+)", cuda_text))
    )
    lib64 = (
        r"find_library\(LIBNVTOOLSEXT\s+libnvToolsExt\.so\s+PATHS\s+"
        r"\$\{CUDA_TOOLKIT_ROOT_DIR\}/lib64/?\)"
    )
    facts.libnvtoolsext_lib64 = bool(re.search(lib64, cuda_text + config_text))
    unix_branch = _unix_cuda_branch(config_text)
    facts.libnvtoolsext_in_torch_libraries = "${LIBNVTOOLSEXT}" in unix_branch
    facts.nvrtc_in_torch_libraries = "${CUDA_NVRTC_LIB}" in unix_branch
    facts.nvtoolsext_in_torch_libraries = bool(
        re.search(r"list\(APPEND TORCH_CUDA_LIBRARIES torch::nvtoolsext\)", config_text)
    )
    facts.interface = _interface_targets(cuda_text)
    for text in targets:
        facts.links.update(_target_links(text))


def _unix_cuda_branch(config_text: str) -> str:
    """The Linux part of TorchConfig's ``TORCH_CUDA_LIBRARIES`` block (after the MSVC/APPLE
    branches), where ``${CUDA_NVRTC_LIB}`` / ``${LIBNVTOOLSEXT}`` enter ``TORCH_LIBRARIES``."""
    end = config_text.find("list(APPEND TORCH_LIBRARIES ${TORCH_CUDA_LIBRARIES})")
    if end < 0:
        return ""
    starts = [m.start() for m in re.finditer(r"(?<!else)if\(MSVC\)", config_text[:end])]
    if not starts:
        return ""
    block = config_text[starts[-1] : end]
    parts = re.split(r"^\s*else\(\)", block, flags=re.M)
    return parts[-1] if len(parts) > 1 else block


def _interface_targets(cuda_text: str) -> dict[str, list[str]]:
    """``set_property(TARGET x PROPERTY INTERFACE_LINK_LIBRARIES ...)`` of cuda.cmake, the
    shared-library branch (items without ``_static``; a consumer never sets
    ``CAFFE2_STATIC_LINK_CUDA``); ``set_property`` inside ``if(MSVC)``/``elseif(APPLE)`` is
    skipped by taking the items that are CUDA:: or torch::/caffe2:: targets only."""
    result: dict[str, list[str]] = {}
    pattern = re.compile(
        r"set_property\(\s*TARGET\s+(\S+)\s+(APPEND\s+)?PROPERTY\s+INTERFACE_LINK_LIBRARIES\s+([^)]*)\)",
        re.S,
    )
    for m in pattern.finditer(cuda_text):
        target, items = m.group(1), m.group(3).split()
        items = [i for i in items if "::" in i and "_static" not in i]
        if not items:
            continue
        result.setdefault(target, [])
        for item in items:
            if item not in result[target]:
                result[target].append(item)
    return result


def _target_links(text: str) -> dict[str, list[str]]:
    """``set_target_properties(x PROPERTIES ... INTERFACE_LINK_LIBRARIES "a;b")`` of the
    exported targets (generator expressions that name another target's property count as a
    link to that target)."""
    result: dict[str, list[str]] = {}
    for m in re.finditer(r"set_target_properties\((\S+)\s+PROPERTIES(.*?)\n\)", text, re.S):
        links = re.search(r'INTERFACE_LINK_LIBRARIES\s+"([^"]*)"', m.group(2))
        if not links:
            continue
        items = []
        for raw in links.group(1).split(";"):
            ref = re.search(r"TARGET_(?:FILE|PROPERTY):([\w:]+)", raw)
            item = ref.group(1) if ref else raw.strip()
            if item and not item.startswith("-") and item not in items:
                items.append(item)
        result[m.group(1)] = items
    return result


def cmake_args(environ: dict[str, str]) -> dict[str, str]:
    """``-DVAR=VALUE`` / ``-DVAR:TYPE=VALUE`` presets from ``CMAKE_ARGS`` (vLLM >= 0.12 passes
    them to cmake)."""
    presets: dict[str, str] = {}
    try:
        words = shlex.split(environ.get("CMAKE_ARGS", ""))
    except ValueError:
        words = environ.get("CMAKE_ARGS", "").split()
    for word in words:
        m = re.match(r"-D([A-Za-z_][\w]*)(?::\w+)?=(.*)$", word)
        if m:
            presets[m.group(1)] = m.group(2)
    return presets
