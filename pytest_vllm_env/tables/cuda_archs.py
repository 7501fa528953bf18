"""Toolkit <-> arch: which CUDA release's nvcc can emit code for which GPU arch.

One table (:data:`ARCH_FIRST`, :data:`ARCH_LAST_MAJOR`), read by every check that asks
whether a toolkit can target an arch: ``cuda.arch-supported`` and ``cuda.arch-ptxas``,
``arch.coverage``'s fixes, ``build.*``, ``gpu.device-coverage``, ``lock.nvcc-archs``, the
``--cuda-arch`` usage error, and the torch wheel table (:mod:`pytest_vllm_env.tables.torch_archs`,
for a build made with a CUDA that could not emit an arch).
"""

from __future__ import annotations

import re

from pytest_vllm_env.tables.archs import Arch, parse_arch

# First CUDA release whose nvcc accepts each arch (NVIDIA's nvcc docs / release notes;
# measured with each release's ptxas `--help` list: 12.4.131 stops at sm_90a; 12.8.93 adds
# sm_100(a), sm_101(a), sm_120(a); 12.9.86 adds sm_103(a/f), sm_121(a/f) and every `f`
# (family) target; 13.0.88 renames sm_101 to sm_110, adds sm_88, drops everything below
# sm_75). ``None`` = still accepted.
ARCH_FIRST: dict[str, str] = {
    "5.0": "6.0", "5.2": "7.0", "5.3": "7.0", "6.0": "8.0", "6.1": "8.0", "6.2": "8.0",
    "7.0": "9.0", "7.2": "10.0", "7.5": "10.0", "8.0": "11.0", "8.6": "11.1",
    "8.7": "11.4", "8.9": "11.8", "9.0": "11.8", "9.0a": "12.0", "10.0": "12.8",
    "10.0a": "12.8", "10.1": "12.8", "10.1a": "12.8", "10.3": "12.9", "10.3a": "12.9",
    "11.0": "13.0", "11.0a": "13.0", "12.0": "12.8", "12.0a": "12.8", "12.1": "12.9",
    "12.1a": "12.9", "8.8": "13.0", "10.0f": "12.9", "10.1f": "12.9", "10.3f": "12.9",
    "11.0f": "13.0", "12.0f": "12.9", "12.1f": "12.9",
}  # fmt: skip
# Last CUDA major that still accepts an arch (CUDA 13.0 dropped everything below 7.5 and
# renamed 10.1 to 11.0).
ARCH_LAST_MAJOR: dict[str, int] = {
    **{cc: 12 for cc in ("5.0", "5.2", "5.3", "6.0", "6.1", "6.2", "7.0", "7.2", "10.1")},
    "10.1a": 12,
    "10.1f": 12,
}
# What nvcc emits when a build passes no -gencode at all (CUDA 12: sm_52 + compute_52, CUDA 13:
# sm_75 + compute_75; measured with nvcc 13.0), as the image names a binary then holds.
NVCC_DEFAULT_IMAGES = ({"sm_52", "compute_52"}, {"sm_75", "compute_75"}, {"sm_52"}, {"sm_75"})


def version_tuple(text: str) -> tuple[int, ...]:
    """``(12, 8, 93)`` from ``12.8.93`` (or from ``V12.8.93``, ``cmake 3.31.6``): the first
    three numbers, for comparing CUDA and CMake versions."""
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def cuda_tag(major_minor: str) -> str:
    """``cu128`` for CUDA ``12.8``: how PyTorch's index and wheels name a CUDA variant."""
    return "cu" + major_minor.replace(".", "")


def archs_of_toolkit(major_minor: str) -> list[Arch]:
    """The archs a CUDA ``major.minor`` nvcc accepts, from :data:`ARCH_FIRST`."""
    have = version_tuple(major_minor)[:2]
    result = []
    for cc, first in ARCH_FIRST.items():
        last = ARCH_LAST_MAJOR.get(cc)
        if version_tuple(first)[:2] <= have and (last is None or have[0] <= last):
            result.append(parse_arch(cc))
    return sorted(result)


def min_toolkit_for(arch: Arch) -> str | None:
    """The first CUDA ``major.minor`` whose nvcc emits code for ``arch``; None for an arch
    no release targets."""
    return ARCH_FIRST.get(arch.cc) or ARCH_FIRST.get(f"{arch.major}.{arch.minor}")


def min_nvcc(arch: Arch) -> str:
    """The first CUDA whose nvcc emits code for ``arch`` (measured with each ptxas: 12.8 for
    10.0/12.0, 12.9 for 10.3, 12.1 and every ``f`` target, 13.0 for 11.0 and 8.8), or
    ``a newer CUDA`` for an arch the table does not know."""
    return min_toolkit_for(arch) or "a newer CUDA"


def is_known_arch(arch: Arch) -> bool:
    """An arch some CUDA release targets (:data:`ARCH_FIRST`); ``f`` (family) variants of the
    10.x and later archs count too (CUDA 12.9 added ``sm_100f``...)."""
    if arch.cc in ARCH_FIRST:
        return True
    return arch.suffix == "f" and arch.major >= 10 and f"{arch.major}.{arch.minor}" in ARCH_FIRST


def known_archs_text() -> str:
    """The archs :func:`is_known_arch` accepts, for usage errors."""
    return ", ".join(ARCH_FIRST)
