"""GPU architectures: one spelling for ``12.0``, ``sm_120``, ``120``, ``9.0a`` and ``sm_90a``.

``--cuda-arch`` accepts any of them; ``TORCH_CUDA_ARCH_LIST`` uses ``8.0;8.6 9.0+PTX``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
