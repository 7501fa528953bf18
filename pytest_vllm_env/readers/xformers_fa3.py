"""xformers' FA3 dispatch range, read from the installed ``ops/fmha/flash3.py`` (never
imported): which GPUs xformers sends to its own FA3 build (``arch.coverage`` judges whether
that build holds kernels for them; xformers#1329).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pytest_vllm_env import files


@dataclass(frozen=True)
class Fa3Dispatch:
    """``xformers.ops.fmha.flash3.FwOp``'s capability range, as the installed source says."""

    minimum: tuple[int, int] | None
    maximum: tuple[int, int] | None
    where: str = "xformers/ops/fmha/flash3.py"
    readable: bool = True
    # why the range is unknown, naming the file: "<path> is not there", "<path>: cannot be
    # read: not a regular file (a FIFO)" (issue 21), "<path> has no class FwOp"
    why: str = ""


def read_fa3_dispatch(package_dir: Path) -> Fa3Dispatch:
    """``CUDA_MINIMUM/MAXIMUM_COMPUTE_CAPABILITY`` of ``FwOp`` in xformers'
    ``ops/fmha/flash3.py`` (read as text, never imported): xformers 0.0.30 has only
    ``(9, 0)`` as minimum, 0.0.31/0.0.32 ``(8, 0)``, 0.0.33 on add ``MAXIMUM = (9, 0)``."""
    path = package_dir / "ops" / "fmha" / "flash3.py"
    text, why = files.read_text_if_present(path, files.SOURCE)
    if text is None:
        return Fa3Dispatch(None, None, str(path), False, why or f"{path} is not there")
    body = text.split("class FwOp", 1)[1] if "class FwOp" in text else ""
    body = body.split("\nclass ", 1)[0]

    def pair(name: str) -> tuple[int, int] | None:
        m = re.search(rf"^\s+{name}\s*(?::[^=]*)?=\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)", body, re.M)
        return (int(m.group(1)), int(m.group(2))) if m else None

    if not body:
        return Fa3Dispatch(None, None, str(path), False, f"{path} has no class FwOp")
    return Fa3Dispatch(
        pair("CUDA_MINIMUM_COMPUTE_CAPABILITY"),
        pair("CUDA_MAXIMUM_COMPUTE_CAPABILITY"),
        "xformers/ops/fmha/flash3.py",
    )
