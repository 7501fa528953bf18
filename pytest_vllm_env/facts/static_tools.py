"""What a tool is, read from files when it may not run (``--vllm-static``).

With ``--vllm-static`` nothing of the judged env runs (:func:`pytest_vllm_env.proc.confine`
refuses it), so ``nvcc --version`` and ``cmake --version`` give no answer. Where the files
decide the answer, they are read instead, and the fact says where it came from:

- nvcc's release: the conda package that ships it (conda-forge's ``cuda-nvcc-tools`` holds
  ``bin/nvcc``; ``cuda-nvcc`` and ``cuda-nvcc-impl`` carry the same version, which is the one
  ``nvcc --version`` prints: ``cuda-nvcc 12.8.93`` is ``V12.8.93``), else PyPI's
  ``nvidia-cuda-nvcc*`` wheel whose folder holds it (the wheel's version is nvcc's), else the
  ``version.json`` of the toolkit root above ``bin/`` (NVIDIA's installers write it:
  ``"cuda_nvcc": {"version": ...}``);
- what ``nvcc -v`` prints for CMake (``TOP``, ``INCLUDES``, ``LIBRARIES``): the
  ``nvcc.profile`` beside the binary, evaluated as nvcc evaluates it
  (:mod:`pytest_vllm_env.readers.nvcc_profile`);
- CMake's version: the conda package ``cmake`` (its version is CMake's), else PyPI's ``cmake``
  wheel (its version is CMake's, a ``.postN`` aside) when the binary lies in the env.

The list of GPU architectures (``nvcc --list-gpu-arch``) is not read here: checks take it from
the arch table for that release (:mod:`pytest_vllm_env.tables.cuda_archs`) and say so.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pytest_vllm_env import files
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.readers import nvcc_profile

NVCC_PACKAGES = ("cuda-nvcc-tools", "cuda-nvcc-impl", "cuda-nvcc")
_RELEASE = re.compile(r"^\d+\.\d+(\.\d+)?")


def nvcc_from_files(env: PixiEnv | None, path: Path) -> dict[str, Any]:
    """What ``nvcc --version`` and ``nvcc -v`` would have said of ``path``, read from files:
    the fields of a :class:`pytest_vllm_env.facts.toolkit.NvccRun` (``version``,
    ``version_from``, ``top``, ``includes``, ``libraries``)."""
    version, how = cuda_tool_release(env, path)
    top = includes = libraries = None
    here = _real(path).parent
    try:
        text = files.read_text(here / "nvcc.profile", files.CONFIG)
    except OSError:
        text = None
    if text is not None:
        values = nvcc_profile.parse(text, str(here))
        if values.get("TOP"):
            top = os.path.normpath(values["TOP"].strip())
        includes = tuple(_flag_dirs(values.get("INCLUDES", ""), "-I"))
        libraries = tuple(_flag_dirs(values.get("LIBRARIES", ""), "-L"))
    return {
        "version": version,
        "version_from": how,
        "top": top,
        "includes": includes or (),
        "libraries": libraries or (),
    }


def cuda_tool_release(env: PixiEnv | None, path: Path) -> tuple[str | None, str]:
    """The CUDA release of a toolkit binary (nvcc, ptxas) from the files, and where it was
    read; ``(None, "")`` when no file says it."""
    if env is not None and env.locked is None and inside(path, env.prefix):
        for name in NVCC_PACKAGES:
            pkg = env.conda(name)
            if pkg is not None and _RELEASE.match(pkg.version):
                return pkg.version, f"conda-meta: {name} {pkg.version}"
        for dist in env.python_dists.values():
            if dist.name.lower().startswith("nvidia-cuda-nvcc") and inside(
                path, dist.location / "nvidia"
            ):
                return dist.version.split("+")[0], f"{dist.name} {dist.version} (its wheel)"
    root = _real(path).parent.parent
    try:
        data = files.load_json(root / "version.json")
    except (OSError, ValueError):
        return None, ""
    entry = data.get("cuda_nvcc") if isinstance(data, dict) else None
    version = entry.get("version") if isinstance(entry, dict) else None
    if isinstance(version, str) and _RELEASE.match(version):
        return version, f"{root / 'version.json'}: cuda_nvcc {version}"
    return None, ""


def cmake_version_from_files(env: PixiEnv, cmake: Path) -> tuple[str | None, str]:
    """CMake's ``X.Y.Z`` for ``cmake`` of the env, from the package that installed it, and
    where it came from; ``(None, why)`` when no file says it."""
    if not inside(cmake, env.prefix):
        return None, f"{cmake} lies outside the env: nothing in the env's files says its version"
    pkg = env.conda("cmake")
    if pkg is not None and _RELEASE.match(pkg.version):
        return _RELEASE.match(pkg.version).group(0), f"conda-meta: cmake {pkg.version}"
    dist = env.dist("cmake")
    if dist is not None and _RELEASE.match(dist.version):
        return _RELEASE.match(dist.version).group(0), f"{dist.name} {dist.version} (its wheel)"
    return None, "no cmake package in the env's conda-meta or site-packages"


def inside(path: Path, prefix: Path) -> bool:
    """``path`` lies in ``prefix``, as written or with symlinks resolved."""
    try:
        return Path(os.path.abspath(path)).is_relative_to(prefix) or Path(
            os.path.realpath(path)
        ).is_relative_to(os.path.realpath(prefix))
    except (OSError, ValueError):
        return False


def _flag_dirs(text: str, flag: str) -> list[str]:
    """The dirs of ``-I``/``-L`` flags in ``nvcc -v``'s spelling (quoted or not)."""
    return [os.path.normpath(m) for m in re.findall(rf'"?{flag}([^"\s]+)"?', text)]


def _real(path: Path) -> Path:
    try:
        return Path(os.path.realpath(path))
    except (OSError, ValueError):
        return path
