"""What a build-tier compile produced, as data for :mod:`pytest_vllm_env.checks.build`: the nvcc
a torch extension build uses (torch's ``cpp_extension`` order), the flags it passes, a compile's
result and the kernel images of the ``.so`` it wrote.

The compiles themselves run in :mod:`pytest_vllm_env.runners.nvcc_kernel` (the tiny kernel) and
through ``probes/build_ext.py`` (a torch extension, run by the target env's Python); what they
print and write comes back here as :class:`KernelBuild` and :class:`ExtensionBuild`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_vllm_env.proc import ProcResult
from pytest_vllm_env.readers.elf import ElfError
from pytest_vllm_env.readers.fatbin import FatbinError, FatbinImage, read_images
from pytest_vllm_env.tables.archs import Arch


def gencode_flags(arch: Arch) -> list[str]:
    """What torch's cpp_extension passes nvcc for one ``TORCH_CUDA_ARCH_LIST`` entry (torch
    2.11 ``_get_cuda_arch_flags``: ``code=sm_XY``, plus ``code=compute_XY`` for ``+PTX``)."""
    num = f"{arch.number}{arch.suffix}"
    flags = [f"-gencode=arch=compute_{num},code=sm_{num}"]
    if arch.ptx:
        flags.append(f"-gencode=arch=compute_{num},code=compute_{num}")
    return flags


def build_nvcc(environ: Mapping[str, str], nvcc_on_path: Path | None) -> tuple[Path | None, str]:
    """The nvcc a torch extension build uses, and why that one (cpp_extension's order:
    ``$CUDA_HOME/bin/nvcc`` (or ``$CUDA_PATH``) after activation, else nvcc on the PATH)."""
    home = environ.get("CUDA_HOME") or environ.get("CUDA_PATH")
    if home:
        candidate = Path(home) / "bin" / "nvcc"
        # a $CUDA_HOME we may not look into is no nvcc, not a traceback (os.path never raises)
        found = candidate if os.path.exists(candidate) else None
        return found, f"$CUDA_HOME/bin/nvcc ({home})"
    return nvcc_on_path, "nvcc on the activated PATH"


@dataclass(frozen=True)
class BuiltObject:
    """A ``.so`` a build wrote, read: its kernel images, or why it could not be read."""

    path: Path
    images: tuple[FatbinImage, ...] = ()
    error: str = ""


def read_built(so: Path) -> BuiltObject:
    """The kernel images of ``so`` (its ``.nv_fatbin``); ``error`` says why none could be read."""
    try:
        return BuiltObject(so, tuple(read_images(so)))
    except (ElfError, FatbinError) as exc:
        return BuiltObject(so, error=str(exc))


@dataclass(frozen=True)
class KernelBuild:
    """One nvcc compile of the tiny kernel for one arch (``build.nvcc-kernel``)."""

    nvcc: Path | None  # None: no nvcc where cpp_extension looks (``how`` says where)
    how: str
    result: ProcResult | None = None  # None when nothing ran
    nvcc_version: str | None = None  # the toolkit's version, when this nvcc is the one on PATH
    built: BuiltObject | None = None  # the .so, read, when the compile succeeded


@dataclass(frozen=True)
class ExtensionBuild:
    """What ``probes/build_ext.py`` reported for one arch (``build.torch-extension``,
    ``build.extension-runs``): ``data`` is its JSON line, ``problem`` why there is none; the
    ``.so`` it built, read."""

    problem: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    output_tail: str = ""
    built: BuiltObject | None = None


def extension_build(problem: str, data: Mapping[str, Any], output_tail: str) -> ExtensionBuild:
    """A probe run's report, with the ``.so`` it names read."""
    so = data.get("so") if not problem else None
    built = read_built(Path(so)) if so else None
    return ExtensionBuild(problem, dict(data), output_tail, built)
