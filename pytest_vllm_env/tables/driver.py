"""The NVIDIA driver, the CUDA versions it runs and the PTX it can JIT: NVIDIA's tables, row by row.

Four families of rows, each citing where it was read (the stored copies: docs/runtime.md):

- :data:`TOOLKIT_DRIVERS`: the Linux x86_64 driver each CUDA Toolkit release shipped with
  (CUDA Toolkit release notes, "CUDA Toolkit and Corresponding Driver Versions"; from CUDA
  13.3 on the notes give the driver *branch* only: "CUDA 13.3 | R610", "CUDA 13.4 | R615").
  The CUDA version a driver supports is the newest row whose driver it reaches, which is
  what ``nvidia-smi`` prints as "CUDA Version" and ``cuDriverGetVersion`` returns (measured:
  580.159.04 gives 13000).
- :data:`MINOR_COMPAT`: CUDA's minor-version compatibility (CUDA Compatibility guide, "Minor
  Version Compatibility"): an application built with any CUDA M.x runs on a driver of the
  M family's minimum or newer, "with limited feature-set": features that span toolkit and
  driver return ``cudaErrorCallRequiresNewerDriver``, and "applications that compile device
  code to PTX will not work on older drivers".
- :data:`PTX_ISA`: the PTX ISA version each CUDA release writes (PTX ISA guide, "Release
  History"; NVIDIA's own copy of that table in cuda-python, ``cuda/bindings/utils/
  _ptx_utils.py``; measured here: nvcc 13.0 writes ``.version 9.0``, nvcc 13.5 ``.version
  9.5``). A driver JITs PTX up to the ISA of the CUDA version it supports; newer PTX fails
  with ``CUDA_ERROR_UNSUPPORTED_PTX_VERSION`` (222; measured on an H100 with 580.159.04).
- :data:`FORWARD_COMPAT`: which ``cuda-compat-M-m`` package (a newer ``libcuda.so``) NVIDIA
  supports on which kernel-driver branch (CUDA Compatibility guide, "Forward Compatibility",
  "Use the Right CUDA Forward Compatibility Package"), on data center GPUs only.

This module only holds the rows and answers questions about them; it reads nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Version = tuple[int, ...]  # a driver version: (580, 159, 4); a CUDA version: (12, 8)

_NOTES = "CUDA Toolkit release notes, Table 3 'CUDA Toolkit and Corresponding Driver Versions'"
NOTES_132 = f"{_NOTES} (CUDA 13.2 Update 2 notes)"
NOTES_134 = "CUDA Toolkit 13.4 Update 1 release notes, 2.2 'CUDA Driver' (branch table)"
MINOR_GUIDE = "CUDA Compatibility guide, 'Minor Version Compatibility' (Table 1 and caveats)"
FORWARD_GUIDE = "CUDA Compatibility guide, 'Forward Compatibility' (compat package table)"
PTX_HISTORY = "PTX ISA guide, 'Release History' (as in cuda-python _ptx_utils.py)"
MEASURED = "measured here: `nvcc -ptx` first line (FACTS.md)"

DRIVER_FORM = "an NVIDIA driver version such as 550.144.03 (nvidia-smi's 'Driver Version')"
_DRIVER = re.compile(r"^\s*(\d{3,4})(?:\.(\d{1,3}))?(?:\.(\d{1,3}))?\s*$")


def parse_driver(text: str) -> Version:
    """``550.144.03`` -> ``(550, 144, 3)``; ValueError naming the accepted form otherwise.

    A CUDA version given where a driver belongs (``12.4``) is refused by name: judging "driver
    12.4" would blame every env."""
    match = _DRIVER.match(text or "")
    if not match:
        hint = ""
        if re.match(r"^\s*\d{1,2}\.\d+\s*$", text or ""):
            hint = f" ({text.strip()} looks like a CUDA version, not a driver version)"
        raise ValueError(f"{text!r} is not {DRIVER_FORM}{hint}")
    return tuple(int(g) for g in match.groups() if g is not None)


def driver_text(version: Version) -> str:
    """``(550, 144, 3)`` -> ``550.144.03`` (NVIDIA writes the third part with two digits)."""
    parts = [str(version[0])] + [f"{p:02d}" if i == 2 else str(p) for i, p in enumerate(version)][
        1:
    ]
    return ".".join(parts)


def cuda_text(cuda: Version) -> str:
    return ".".join(str(p) for p in cuda[:2])


def parse_cuda(text: str) -> Version | None:
    """``12.8`` / ``12.8.90`` / ``cu128`` -> ``(12, 8)``; None when it is none of those."""
    text = (text or "").strip().lower()
    m = re.match(r"^cu(\d{2,3})(\d)$", text) or re.match(r"^(\d{1,2})\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass(frozen=True)
class ToolkitDriver:
    """A CUDA release and the Linux x86_64 driver it shipped with (its minimum at full feature
    set); ``driver`` is ``(610,)`` where the notes give only the branch."""

    cuda: Version
    release: str
    driver: Version
    source: str


def _row(cuda: str, release: str, driver: str, source: str = _NOTES) -> ToolkitDriver:
    major, minor = (int(p) for p in cuda.split("."))
    return ToolkitDriver((major, minor), release, parse_driver(driver), source)


# GA rows (an update's driver is the same branch; the GA row is the one minor compat needs)
TOOLKIT_DRIVERS: tuple[ToolkitDriver, ...] = (
    _row("10.0", "10.0.130", "410.48"),
    _row("10.1", "10.1.105", "418.39"),
    _row("10.2", "10.2.89", "440.33"),
    _row("11.0", "11.0.2 GA", "450.51.05"),
    _row("11.1", "11.1 GA", "455.23"),
    _row("11.2", "11.2.0 GA", "460.27.03"),
    _row("11.3", "11.3.0 GA", "465.19.01"),
    _row("11.4", "11.4.0 GA", "470.42.01"),
    _row("11.5", "11.5 GA", "495.29.05"),
    _row("11.6", "11.6 GA", "510.39.01"),
    _row("11.7", "11.7 GA", "515.43.04"),
    _row("11.8", "11.8 GA", "520.61.05"),
    _row("12.0", "12.0 GA", "525.60.13"),
    _row("12.1", "12.1 GA", "530.30.02"),
    _row("12.2", "12.2 GA", "535.54.03"),
    _row("12.3", "12.3 GA", "545.23.06"),
    _row("12.4", "12.4 GA", "550.54.14"),
    _row("12.5", "12.5 GA", "555.42.02"),
    _row("12.6", "12.6 GA", "560.28.03"),
    _row("12.8", "12.8 GA", "570.26"),  # there is no CUDA 12.7 release
    _row("12.9", "12.9 GA", "575.51.03"),
    _row("13.0", "13.0 GA", "580.65.06", NOTES_132),
    _row("13.1", "13.1 GA", "590.44.01", NOTES_132),
    _row("13.2", "13.2 GA", "595.45.04", NOTES_132),
    _row("13.3", "13.3 (branch R610)", "610", NOTES_134),
    _row("13.4", "13.4 (branch R615)", "615", NOTES_134),
)
# Not found in the stored release notes: the driver branch of CUDA 13.5 (nvcc 13.5.37 exists
# on PyPI; NVIDIA's data center driver pages list an R620 branch without naming its CUDA).
NEWEST_KNOWN = TOOLKIT_DRIVERS[-1]


@dataclass(frozen=True)
class MinorCompat:
    """The driver range within which any CUDA ``major``.x application runs (minor-version
    compatibility); ``below`` is where the next family starts (older apps still run above it
    by backward compatibility)."""

    major: int
    minimum: Version
    below: Version | None
    source: str = MINOR_GUIDE


MINOR_COMPAT: dict[int, MinorCompat] = {
    # "CUDA 11.0 was released with an earlier driver version, but by upgrading to ...
    # 450.80.02 (Linux) ... minor version compatibility is possible across the CUDA 11.x family"
    11: MinorCompat(11, (450, 80, 2), (525,)),
    12: MinorCompat(12, (525, 60, 13), (580,)),
    13: MinorCompat(13, (580, 65, 6), None),
}

# CUDA release -> the PTX ISA its nvcc writes
PTX_ISA: dict[Version, tuple[Version, str]] = {
    (10, 0): ((6, 3), PTX_HISTORY),
    (10, 1): ((6, 4), PTX_HISTORY),
    (10, 2): ((6, 5), PTX_HISTORY),
    **{(11, m): ((7, m), PTX_HISTORY) for m in range(9)},
    **{(12, m): ((8, m), PTX_HISTORY) for m in range(6)},
    (12, 6): ((8, 5), PTX_HISTORY),  # ISA 8.6 is CUDA 12.7's, a release never published
    (12, 8): ((8, 7), PTX_HISTORY),
    (12, 9): ((8, 8), PTX_HISTORY),
    (13, 0): ((9, 0), f"{PTX_HISTORY}; {MEASURED}: nvcc 13.0.88"),
    (13, 1): ((9, 1), PTX_HISTORY),
    (13, 2): ((9, 2), "CUDA 13.2 Update 2 release notes: 'PTX ISA version 9.2'"),
    (13, 3): ((9, 3), "PTX ISA guide of CUDA 13.3.0: 'PTX ISA Version 9.3'"),
    (13, 4): ((9, 4), "CUDA 13.4 Update 1 release notes: 'PTX ISA 9.4 is supported'"),
    (13, 5): ((9, 5), f"{MEASURED}: nvcc 13.5.37 from PyPI"),
}
# ISA 8.6 came with CUDA 12.7 (PTX_HISTORY), which no driver table lists: 12.8's driver JITs it
_ISA_ONLY = {(8, 6): (12, 7)}


@dataclass(frozen=True)
class CudaOfDriver:
    """The CUDA version a driver supports: ``exact`` when a row above it bounds it (580.x is
    13.0 because 590.44.01 is 13.1's), else ``cuda`` is a lower bound (a branch newer than the
    newest row NVIDIA's notes we hold name)."""

    cuda: Version
    exact: bool
    row: ToolkitDriver

    @property
    def text(self) -> str:
        return cuda_text(self.cuda) + ("" if self.exact else " or newer")


def cuda_of_driver(driver: Version) -> CudaOfDriver | None:
    """The CUDA version ``driver`` supports (nvidia-smi's "CUDA Version"); None below 10.0's."""
    below = [r for r in TOOLKIT_DRIVERS if r.driver <= driver]
    if not below:
        return None
    row = below[-1]
    exact = row is not NEWEST_KNOWN or driver[0] == row.driver[0]
    return CudaOfDriver(row.cuda, exact, row)


def min_driver_for(cuda: Version) -> ToolkitDriver | None:
    """The oldest row serving CUDA ``cuda`` at its full feature set (12.7 -> 12.8's); None
    when newer than every row (CUDA 13.5: its branch is not in the notes we hold)."""
    return next((r for r in TOOLKIT_DRIVERS if r.cuda >= cuda[:2]), None)


def branch(driver: Version) -> int:
    """``580`` for ``580.159.04``."""
    return driver[0]


def isa_of_cuda(cuda: Version) -> Version | None:
    """The PTX ISA nvcc of CUDA ``cuda`` writes; None for a release not in the table."""
    hit = PTX_ISA.get(cuda[:2])
    return hit[0] if hit else None


def cuda_of_isa(isa: Version) -> Version | None:
    """The first CUDA release writing PTX ISA ``isa`` (``8.7`` -> 12.8); None when unknown."""
    if isa in _ISA_ONLY:
        return _ISA_ONLY[isa]
    return next((c for c, (i, _) in sorted(PTX_ISA.items()) if i == isa), None)


def isa_text(isa: Version) -> str:
    return f"{isa[0]}.{isa[1]}"


@dataclass(frozen=True)
class JitCeiling:
    """The newest PTX ISA a driver JITs; ``exact`` False where it is only a lower bound."""

    isa: Version
    exact: bool
    cuda: Version


def jit_ceiling(cuda: Version, exact: bool = True) -> JitCeiling | None:
    """The newest PTX ISA the driver of CUDA ``cuda`` can JIT (its own CUDA's ISA)."""
    isa = isa_of_cuda(cuda)
    if isa is None:
        known = [(c, i) for c, (i, _) in sorted(PTX_ISA.items()) if c <= cuda[:2]]
        if not known:
            return None
        return JitCeiling(known[-1][1], False, known[-1][0])
    return JitCeiling(isa, exact, cuda[:2])


# -- forward compatibility ----------------------------------------------------------------------
# kernel-driver branches of the guide's columns ("535+ (CUDA 12.2)" ... "615+ (CUDA 13.4)")
FORWARD_COLUMNS: tuple[int, ...] = (535, 570, 580, 590, 595, 610, 615)
# cuda-compat-M-m -> the columns marked C (compatible); N/A is the package's own branch,
# every other listed column is X; "Branches not listed ... are end of life and are not
# supported targets", "New Feature Branches are not supported targets".
FORWARD_COMPAT: dict[Version, frozenset[int]] = {
    (13, 4): frozenset({535, 570, 580, 590, 595, 610}),
    (13, 3): frozenset({535, 570, 580, 590, 595}),
    (13, 2): frozenset({535, 570, 580, 590}),
    (13, 1): frozenset({535, 570, 580}),
    (13, 0): frozenset({535, 570}),
    (12, 9): frozenset({535, 570}),
    (12, 8): frozenset({535}),
    (12, 6): frozenset({535}),
    (12, 5): frozenset({535}),
    (12, 4): frozenset({535}),
    (12, 3): frozenset({535}),
    (12, 2): frozenset(),
}


def forward_compat(compat_cuda: Version, kernel_branch: int) -> str:
    """``C`` (NVIDIA supports this compat package on that kernel-driver branch), ``X`` (it
    does not), ``N/A`` (the package's own branch: nothing to forward), ``unknown`` (a package
    the table does not list)."""
    row = FORWARD_COMPAT.get(compat_cuda[:2])
    if row is None:
        return "unknown"
    if kernel_branch in row:
        return "C"
    own = min_driver_for(compat_cuda)
    if own is not None and own.driver[0] == kernel_branch:
        return "N/A"
    return "X"


# "Forward Compatibility is applicable only for systems with: NVIDIA Data Center GPUs. Select
# NGC Server Ready SKUs of RTX cards. Jetson boards." (FORWARD_GUIDE). By NVML name:
CONSUMER_GPU = re.compile(r"\b(GeForce|TITAN)\b", re.I)
DATACENTER_GPU = re.compile(
    r"\b(Tesla|[ABHL]\d{1,3}[A-Z]?|A800|H800|GH200|GB\d{3}|B\d{3}|T4|V100|Server Edition)\b"
)
# archs on which every GPU NVIDIA made is a data center part: A100/A30/A800 (8.0), H100/H200/
# H20/GH200 (9.0), B200/GB200 (10.0), B300/GB300 (10.3) (NVIDIA, "CUDA GPUs - Compute
# Capability"); elsewhere a GeForce shares the arch (7.5 T4/RTX 20, 8.6, 8.9, 12.0)
DATACENTER_ONLY_ARCHS: frozenset[Version] = frozenset({(8, 0), (9, 0), (10, 0), (10, 3)})


def gpu_class(name: str) -> str:
    """``datacenter``, ``consumer`` or ``unknown`` for an NVML GPU name."""
    if CONSUMER_GPU.search(name):
        return "consumer"
    if DATACENTER_GPU.search(name.replace("NVIDIA ", "")):
        return "datacenter"
    return "unknown"


# cuInit / cudaGetDeviceCount results the checks name
CUDA_ERRORS = {
    35: "cudaErrorInsufficientDriver ('CUDA driver version is insufficient for CUDA runtime "
    "version')",
    222: "CUDA_ERROR_UNSUPPORTED_PTX_VERSION ('the provided PTX was compiled with an "
    "unsupported toolchain')",
    803: "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH ('system has unsupported display driver / cuda "
    "driver combination')",
    804: "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE ('forward compatibility was attempted on non "
    "supported HW')",
}
