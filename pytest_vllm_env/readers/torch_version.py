"""torch's ``torch/version.py``, read as text (never imported): the CUDA it was built with."""

from __future__ import annotations

import re
from pathlib import Path

from pytest_vllm_env import files


def read_torch_cuda(root: Path) -> str | None:
    """``cuda = '13.0'`` from ``torch/version.py``: read as text, never imported."""
    return read_torch_cuda_or_why(root)[0]


def read_torch_cuda_or_why(root: Path) -> tuple[str | None, str]:
    """:func:`read_torch_cuda`, and why ``version.py`` could not be read ("" when it was, or
    is simply absent): a FIFO or device there is not a CPU-only torch, and must be named."""
    text, why = files.read_text_if_present(root / "version.py", files.SOURCE)
    if text is None:
        return None, why
    m = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return (m.group(1) if m else None), ""
