"""GPU architectures: one spelling for ``12.0``, ``sm_120``, ``120``, ``9.0a`` and ``sm_90a``,
and which GPUs a binary's images serve.

``--cuda-arch`` accepts any of them; ``TORCH_CUDA_ARCH_LIST`` uses ``8.0;8.6 9.0+PTX``.
A binary's GPU code is a list of :class:`FatbinImage` (SASS or PTX for one arch), read from
its ``.nv_fatbin`` (:mod:`pytest_vllm_env.readers.fatbin`) or taken from a table row (a torch
wheel's kernels, :mod:`pytest_vllm_env.tables.torch_archs`); :func:`arch_coverage` says
whether it runs on a target, by the rules ``tests/test_fatbin.py`` checks against the real
ptxas and driver.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

_CC = re.compile(r"^(\d+)\.(\d)([af]?)$")
_SM = re.compile(r"^(?:sm_|compute_|sm|compute)?(\d+)(\d)([af]?)$")


@dataclass(frozen=True, order=True)
class Arch:
    """A compute capability, with the ``a`` (arch-specific) / ``f`` (family) suffix."""

    major: int
    minor: int
    suffix: str = ""
    ptx: bool = False  # from "+PTX" in TORCH_CUDA_ARCH_LIST: also embed PTX

    @property
    def cc(self) -> str:
        """``12.0``, ``9.0a``."""
        return f"{self.major}.{self.minor}{self.suffix}"

    @property
    def number(self) -> int:
        """``120`` for 12.0: what sm_XX and fatbin headers use."""
        return self.major * 10 + self.minor

    @property
    def sm(self) -> str:
        return f"sm_{self.number}{self.suffix}"

    @property
    def compute(self) -> str:
        return f"compute_{self.number}{self.suffix}"

    def __str__(self) -> str:
        return self.cc + ("+PTX" if self.ptx else "")


def parse_arch(text: str) -> Arch:
    """Parse one spelling; raise ValueError with the accepted forms."""
    raw = text.strip()
    ptx = raw.upper().endswith("+PTX")
    core = raw[:-4] if ptx else raw
    core = core.strip().lower()
    match = _CC.match(core) or _SM.match(core)
    if not match:
        raise ValueError(f"{text!r} is not a CUDA arch; use 12.0, sm_120, 120, 9.0a or sm_90a")
    return Arch(int(match.group(1)), int(match.group(2)), match.group(3), ptx)


def parse_arch_list(text: str) -> list[Arch]:
    """``TORCH_CUDA_ARCH_LIST`` or repeated ``--cuda-arch`` values: ``;``, ``,`` or spaces."""
    parts = [p for p in re.split(r"[;,\s]+", text) if p]
    return [parse_arch(p) for p in parts]


@dataclass(frozen=True)
class FatbinImage:
    """One embedded image: ``kind`` "sass" or "ptx", its ``arch``, ``compressed``."""

    kind: Literal["sass", "ptx"]
    arch: Arch
    compressed: bool

    @property
    def name(self) -> str:
        """``sm_90a`` for SASS, ``compute_120`` for PTX."""
        return self.arch.sm if self.kind == "sass" else self.arch.compute


# -- coverage --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Coverage:
    """Whether a binary's images run on ``target``, and through which image."""

    target: Arch
    covered: bool
    via: FatbinImage | None  # the SASS (preferred) or PTX image that serves the target
    # True when only PTX covers it: the first launch JIT-compiles (slow; the driver must know it)
    jit: bool


def sass_runs_on(image_arch: Arch, target: Arch) -> bool:
    """SASS runs on the same major with an equal or higher "
    "minor; ``a`` images only on their arch."""
    if image_arch.suffix == "a":
        return image_arch.number == target.number
    return image_arch.major == target.major and image_arch.minor <= target.minor


def ptx_jits_to(image_arch: Arch, target: Arch) -> bool:
    """PTX JIT-compiles forward; ``a`` PTX only to its arch, ``f`` PTX within its family."""
    if image_arch.suffix == "a":
        return image_arch.number == target.number
    if image_arch.suffix == "f":
        return image_arch.major == target.major and image_arch.minor <= target.minor
    return image_arch.number <= target.number


def arch_specific_only(images: list[FatbinImage]) -> bool:
    """True when every image is arch- or family-specific (``sm_90a``, ``sm_100f``): such a
    library (vLLM 0.26.0's FA3: sm_90a; ``_qutlass_C``: sm_100f) is only dispatched to on
    those GPUs, so lacking other archs is by design, not a broken build."""
    return bool(images) and all(i.arch.suffix in ("a", "f") for i in images)


def arch_coverage(images: Iterable[FatbinImage], target: Arch) -> Coverage:
    """Does SASS of a binary-compatible arch, or PTX that can JIT to ``target``, exist?"""
    images = list(images)
    sass = [i for i in images if i.kind == "sass" and sass_runs_on(i.arch, target)]
    if sass:
        # name the generic image when there is one: libtorch_cuda holds 444 sm_90 images and
        # 4 sm_90a ones; "runs on sm_90 via sm_90a" would misdescribe it
        best = max(sass, key=lambda i: (i.arch.number, i.arch.suffix == ""))
        return Coverage(target, True, best, False)
    ptx = [i for i in images if i.kind == "ptx" and ptx_jits_to(i.arch, target)]
    if ptx:
        return Coverage(target, True, max(ptx, key=lambda i: i.arch.number), True)
    return Coverage(target, False, None, False)


def describe(images: Iterable[FatbinImage]) -> str:
    """``SASS sm_75, sm_80, sm_90a; PTX none``: what a verdict says a binary holds."""
    images = list(images)
    sass = sorted({i.arch for i in images if i.kind == "sass"})
    ptx = sorted({i.arch for i in images if i.kind == "ptx"})
    sass_txt = ", ".join(a.sm for a in sass) or "none"
    ptx_txt = ", ".join(a.compute for a in ptx) or "none"
    return f"SASS {sass_txt}; PTX {ptx_txt}"
