"""The machine the checks run on, as the glibc checks need it (``checks/platform_floor.py``)."""

from __future__ import annotations

import os
import re


def host_glibc() -> str | None:
    """The glibc of the machine running the checks (``os.confstr``); conda envs run on it."""
    try:
        value = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError, AttributeError):
        return None
    m = re.search(r"(\d+\.\d+)", value)
    return m.group(1) if m else None
