"""Running real tools (nvcc, cmake, the target env's Python) with a timeout, never raising.

Every subprocess the suite starts goes through :func:`run`: it is bounded in time, kills
the whole process group on timeout (an nvcc or a vLLM load can leave children behind),
and reports a missing or non-executable program as a result instead of an exception.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class ProcResult:
    """What a command did. ``ok`` only when it ran, finished in time and exited 0."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    launch_error: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.launch_error

    @property
    def output(self) -> str:
        return (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).strip()

    def describe(self) -> str:
        """One line for evidence: how it ended."""
        cmd = " ".join(self.argv)
        if self.launch_error:
            return f"`{cmd}` could not start: {self.launch_error}"
        if self.timed_out:
            return f"`{cmd}` did not finish within {self.seconds:.0f} s and was killed"
        tail = self.output.splitlines()[-1:] or [""]
        return f"`{cmd}` exited {self.returncode}: {tail[0][:300]}"


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    input: str | None = None,
    merge_output: bool = False,
) -> ProcResult:
    """Run ``argv`` with ``env`` (the whole environment, not additions) and a timeout.

    ``merge_output`` sends stderr into the stdout pipe, so ``stdout`` keeps the order in which
    lines were written (to tell a crash message printed before a result from one after it).
    """
    args = tuple(str(a) for a in argv)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            args,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except OSError as exc:  # missing, not executable, bad interpreter line, ENOEXEC
        return ProcResult(args, None, "", "", 0.0, launch_error=exc.strerror or str(exc))
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        return ProcResult(args, None, out, err or "", time.monotonic() - start, timed_out=True)
    return ProcResult(args, proc.returncode, out, err or "", time.monotonic() - start)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def which(name: str, path: str | None) -> Path | None:
    """``shutil.which`` over an explicit PATH string (the target env's, not ours)."""
    for entry in (path or "").split(os.pathsep):
        if not entry:
            continue
        candidate = Path(entry) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None
