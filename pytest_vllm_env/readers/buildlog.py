"""A build log (``--vllm-build-log``) as text, for :mod:`pytest_vllm_env.checks.buildlog`.

Read through :mod:`pytest_vllm_env.files`: a FIFO or a device given as a log is refused without
blocking, and a log over ``files.LOG`` is read from its tail (the error that ended the build is
at the end; what came before is the compile lines of the files that built).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pytest_vllm_env import files


@dataclass(frozen=True)
class BuildLog:
    """A log's text (its tail when huge), or why it could not be read."""

    path: Path
    text: str = ""
    problem: str = ""


def read_log(path: Path) -> BuildLog:
    """``path``'s text (UTF-8, bad bytes replaced), at most its last ``files.LOG`` bytes; a
    :class:`BuildLog` whose ``problem`` says why when it cannot be read."""
    try:
        with files.open_regular(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - files.LOG))
            raw = fh.read(min(size, files.LOG))
    except OSError as exc:
        return BuildLog(path, problem=exc.strerror or str(exc))
    nul = raw.find(b"\0")
    if nul >= 0:
        # what pip, CMake and ninja print is text: a NUL byte is no log (a wheel, a core
        # file, a compressed log), and judged as text it read as a clean build
        return BuildLog(path, problem=f"not a text log: a NUL byte at offset {nul} (binary data)")
    return BuildLog(path, text=raw.decode("utf-8", errors="replace"))
