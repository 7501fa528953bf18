"""torch's ``torch/version.py``, read as text (never imported): the CUDA it was built with."""

from __future__ import annotations

import re
from pathlib import Path

from pytest_vllm_env import files


def read_torch_cuda(root: Path) -> str | None:
    """``cuda = '13.0'`` from ``torch/version.py``: read as text, never imported."""
    try:
        text = files.read_text(root / "version.py", files.SOURCE)
    except OSError:
        return None
    m = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return m.group(1) if m else None
