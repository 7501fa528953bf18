"""ptxas: which ``--gpu-name`` targets each CUDA release's ptxas assembles, and what Triton bundles.

Measured, not copied: ``scripts/measure_ptxas.py`` downloaded real wheels (Triton 3.2.0, 3.3.1,
3.4.0, 3.5.1, 3.6.0, 3.9.0; nvidia-cuda-nvcc-cu12 12.4.131, 12.8.93, 12.9.86; nvidia-cuda-nvcc
13.0.88, 13.5.37), ran every ptxas they hold with ``--version``, and asked each to assemble a
one-instruction kernel per target, written as Triton writes it (``.version`` from its
``ptx_get_version``, ``.target sm_XX[a]``, ``ptxas --gpu-name=sm_XX[a]``). A refusal reads
``ptxas fatal : Value 'sm_121a' is not defined for option 'gpu-name'``, the text of
triton-lang/triton#8539 (DGX Spark), vllm-project/vllm#31338 (Thor, ``sm_110a``) and
fishaudio/fish-speech#907 (RTX 5090 with Triton 3.2's bundled ptxas, ``sm_120``). The results
are in docs/jit.md. NVIDIA's CUDA release notes agree on every first release below (12.8 added
sm_100/101/120, 12.9 sm_103/121 and the ``f`` family targets, 13.0 sm_88 and sm_110, the
rename of sm_101 to sm_110, and dropped everything below sm_75); so does the nvcc table in
checks/cuda.py (ARCH_FIRST), measured separately with real nvcc.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Releases whose ptxas the measurement ran: rows are exact at these, interpolated between.
MEASURED_RELEASES = ("12.4", "12.8", "12.9", "13.0", "13.4", "13.5")


@dataclass(frozen=True)
class PtxasTarget:
    """One ``--gpu-name`` value: the first CUDA release whose ptxas accepts it, and the last
    CUDA major that still does (None: every measured release since)."""

    name: str
    first: str
    last_major: int | None = None
    source: str = "scripts/measure_ptxas.py"


def _row(name: str, first: str, last_major: int | None = None, source: str = "") -> PtxasTarget:
    return PtxasTarget(name, first, last_major, source or "scripts/measure_ptxas.py")


_OLD = "accepted by every measured release from 12.4; first release from NVIDIA's release notes"
TARGETS: dict[str, PtxasTarget] = {
    row.name: row
    for row in (
        # CUDA 13.0 dropped Volta and older: 12.9 accepts sm_70, 13.0/13.4/13.5 refuse it.
        _row("sm_70", "9.0", 12, _OLD + "; 13.0, 13.4 and 13.5 refuse it"),
        _row("sm_72", "10.0", 12, "CUDA 13.0 dropped every target below sm_75"),
        *(
            _row(n, f, None, _OLD)
            for n, f in (
                ("sm_75", "10.0"),
                ("sm_80", "11.0"),
                ("sm_86", "11.1"),
                ("sm_87", "11.4"),
                ("sm_89", "11.8"),
                ("sm_90", "11.8"),
                ("sm_90a", "12.0"),
            )
        ),  # fmt: skip
        # 12.4 refuses, 12.8 accepts:
        *(_row(n, "12.8") for n in ("sm_100", "sm_100a", "sm_120", "sm_120a")),
        _row("sm_101", "12.8", 12, "renamed sm_110 in CUDA 13.0: 13.0, 13.4, 13.5 refuse it"),
        _row("sm_101a", "12.8", 12, "renamed sm_110a in CUDA 13.0: 13.0, 13.4, 13.5 refuse it"),
        # 12.8 refuses, 12.9 accepts:
        *(
            _row(n, "12.9")
            for n in (
                "sm_103",
                "sm_103a",
                "sm_121",
                "sm_121a",
                "sm_100f",
                "sm_101f",
                "sm_103f",
                "sm_120f",
                "sm_121f",
            )
        ),  # fmt: skip
        # 12.9 refuses, 13.0 accepts:
        *(_row(n, "13.0") for n in ("sm_88", "sm_110", "sm_110a", "sm_110f")),
    )
}

# The ptxas binaries each measured Triton wheel bundles (backends/nvidia/bin), by release.
TRITON_BUNDLED: dict[str, dict[str, str]] = {
    "3.2.0": {"ptxas": "12.4"},
    "3.3.1": {"ptxas": "12.4", "ptxas-blackwell": "12.8"},
    "3.4.0": {"ptxas": "12.8"},
    "3.5.1": {"ptxas": "12.8"},
    "3.6.0": {"ptxas": "12.8", "ptxas-blackwell": "12.9"},
    "3.9.0": {"ptxas": "12.9", "ptxas-blackwell": "13.4"},
}

_VER = re.compile(r"^(\d+)\.(\d+)")


def _release(text: str) -> tuple[int, int] | None:
    match = _VER.match(text.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def accepts(release: str, gpu_name: str) -> bool | None:
    """Whether the ptxas of CUDA ``release`` (``12.8``) assembles for ``gpu_name``
    (``sm_120a``); None when the target or the release is not one this table knows."""
    row = TARGETS.get(gpu_name)
    have = _release(release)
    first = _release(row.first) if row else None
    if row is None or have is None or first is None:
        return None
    if row.last_major is not None and have[0] > row.last_major:
        return False
    return have >= first


def first_release(gpu_name: str) -> str | None:
    """The first CUDA release whose ptxas accepts ``gpu_name``; None when unknown."""
    row = TARGETS.get(gpu_name)
    return row.first if row else None


def last_major(gpu_name: str) -> int | None:
    """The last CUDA major whose ptxas accepts ``gpu_name``; None when none ended it."""
    row = TARGETS.get(gpu_name)
    return row.last_major if row else None
