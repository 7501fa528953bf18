"""Running real tools (nvcc, cmake, the target env's Python) with a timeout, never raising.

Every subprocess the suite starts goes through :func:`run`, which never lets a tool be the
hazard:

- each tool starts in its own session and process group; when it times out, the whole group
  is killed (an nvcc, a vLLM load or an activation script leaves children behind), and what
  it left running in its group when it exited on its own is killed too;
- every wait is bounded: the tool's own time, then at most :data:`DRAIN` seconds to read what
  is still in the pipes. A process that escaped the group (``setsid``) and holds the pipe
  open cannot hold the run: its pipe is closed and left behind;
- what a tool prints is kept up to :data:`OUTPUT_LIMIT` bytes a stream (the head and the
  tail; a tool printing for ever does not exhaust memory);
- an interrupt (Ctrl-C) kills the group before it goes on up, so no probe or activation
  script keeps running after the session;
- a missing or non-executable program is a result, not an exception;
- with ``--vllm-static`` (:func:`confine`), nothing is started whose program, arguments,
  working directory or environment name a path inside the judged envs: such a run comes back
  as ``not_run`` with the reason, and the fact built on it says the tool did not run.
"""

from __future__ import annotations

import atexit
import contextlib
import locale
import os
import re
import selectors
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TIMEOUT = 60.0
# After the tool exits or is killed: how long to go on reading output still in the pipes.
DRAIN = 2.0
# What is kept of one stream (stdout or stderr): its first and last halves.
OUTPUT_LIMIT = 16 * 1024 * 1024
_TICK = 0.05  # how often the tool's exit is polled where a pidfd cannot be had
# Tools running now, in any thread: a probe started in a background thread (plugins/gpu.py)
# sees no Ctrl-C, so what is still running when the interpreter exits is killed then.
_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()
# --vllm-static: (pattern matching a path inside a confined tree, the tree, why) per tree.
_CONFINED: list[tuple[re.Pattern[str], str, str]] = []


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
    not_run: str = ""  # why it was not started (--vllm-static: it would run the env's code)

    @property
    def ok(self) -> bool:
        return (
            self.returncode == 0 and not self.timed_out and not self.launch_error
        ) and not self.not_run

    @property
    def output(self) -> str:
        return (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).strip()

    def describe(self) -> str:
        """One line for evidence: how it ended."""
        cmd = " ".join(self.argv)
        if self.not_run:
            return f"`{cmd}` was not run: {self.not_run}"
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
    Returns within ``timeout`` plus a few seconds (:data:`DRAIN`, twice at most), whatever the
    tool and its children do.
    """
    args = tuple(str(a) for a in argv)
    refused = refusal(args, env, cwd)
    if refused:
        return ProcResult(args, None, "", "", 0.0, not_run=refused)
    start = time.monotonic()
    encoding = locale.getpreferredencoding(False)  # what text=True decoded with
    # Made first and started by __init__ inside the try: a Ctrl-C that lands while Popen is
    # still starting the tool (after the fork) finds its pid here, and the tool is killed.
    proc = subprocess.Popen.__new__(subprocess.Popen)
    try:
        try:
            proc.__init__(  # type: ignore[misc]
                args,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
                start_new_session=True,  # its own session and process group: killed as one
            )
        except OSError as exc:  # missing, not executable, bad interpreter line, ENOEXEC
            return ProcResult(args, None, "", "", 0.0, launch_error=exc.strerror or str(exc))
        with _LIVE_LOCK:
            _LIVE.add(proc)
        data = input.encode(encoding, "replace") if input is not None else None
        out, err, timed_out = _collect(proc, data, start + max(timeout, 0.0))
    except BaseException:  # Ctrl-C, or anything else: nothing of it may outlive us
        if getattr(proc, "pid", None):
            _stop(proc)
        raise
    finally:
        with _LIVE_LOCK:
            _LIVE.discard(proc)
    return ProcResult(
        args,
        None if timed_out else proc.returncode,
        _text(out, encoding),
        _text(err, encoding),
        time.monotonic() - start,
        timed_out=timed_out,
    )


def confine(roots: Iterable[str | os.PathLike[str]], reason: str) -> None:
    """From now on, start nothing that names a path inside one of ``roots`` (as written or
    with symlinks resolved) in its program, arguments, working directory or environment
    (``--vllm-static``: the judged envs' code must not run); ``reason`` says why in each
    refused result. Each call adds roots; :func:`unconfine` drops them all."""
    for root in roots:
        for spelling in {os.path.abspath(root), os.path.realpath(root)}:
            if spelling != os.sep:
                # the root itself, or anything below it, wherever it appears in a string
                pattern = re.compile(re.escape(spelling) + r"(?=$|/|[^\w.\-])")
                _CONFINED.append((pattern, spelling, reason))


def unconfine() -> None:
    """Forget every root :func:`confine` added (the end of a session)."""
    _CONFINED.clear()


def confined_roots() -> list[str]:
    """The trees :func:`confine` keeps out of every run, as written and resolved."""
    return sorted({root for _, root, _ in _CONFINED})


def refusal(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> str:
    """Why ``argv`` must not run under :func:`confine` ('' when it may): its program, an
    argument, ``cwd`` or a value of ``env`` names a path in a confined tree. A program given
    by name is looked up on ``env``'s PATH (or ours), as the kernel's exec would find it."""
    if not _CONFINED:
        return ""
    program = str(argv[0]) if argv else ""
    if program and os.sep not in program:
        found = which(program, (env if env is not None else os.environ).get("PATH"))
        program = str(found) if found is not None else program
    looked = [("the program", program), ("the program", _real(program))]
    looked += [("an argument", str(a)) for a in argv[1:]]
    if cwd is not None:
        looked += [("the working directory", str(cwd)), ("the working directory", _real(cwd))]
    looked += [(f"${name}", str(value)) for name, value in (env or {}).items()]
    for what, text in looked:
        for pattern, root, reason in _CONFINED:
            if text and pattern.search(text):
                return f"{reason} ({what} is in {root})"
    return ""


def _real(path: str | os.PathLike[str]) -> str:
    try:
        return os.path.realpath(path) if str(path) else ""
    except (OSError, ValueError):
        return str(path)


class _Capture:
    """One stream's bytes, at most :data:`OUTPUT_LIMIT` of them: its head and its tail."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        half = OUTPUT_LIMIT // 2
        room = half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > 2 * half:  # trimmed now and then, not on every chunk
                cut = len(self.tail) - half
                self.dropped += cut
                del self.tail[:cut]

    def value(self) -> bytes:
        cut = max(len(self.tail) - OUTPUT_LIMIT // 2, 0)
        dropped, tail = self.dropped + cut, bytes(self.tail[cut:])
        if not dropped:
            return bytes(self.head) + tail
        return bytes(self.head) + f"\n[... {dropped} bytes left out ...]\n".encode() + tail


def _collect(
    proc: subprocess.Popen[bytes], data: bytes | None, deadline: float
) -> tuple[bytes, bytes, bool]:
    """Read the tool's output until it ends, feeding it ``data``; kill its group when the
    deadline passes, or what it leaves running when it exits. (stdout, stderr, timed out)."""
    out, err = _Capture(), _Capture()
    captures: dict[int, _Capture] = {}
    sel = selectors.DefaultSelector()
    pidfd = _pidfd(proc.pid)
    exited = False
    try:
        for stream, capture in ((proc.stdout, out), (proc.stderr, err)):
            if stream is not None:
                os.set_blocking(stream.fileno(), False)
                captures[stream.fileno()] = capture
                sel.register(stream.fileno(), selectors.EVENT_READ)
        if proc.stdin is not None:
            os.set_blocking(proc.stdin.fileno(), False)
            sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE)
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ)
        sent, until = 0, deadline
        while True:
            if not exited and _exited(proc.pid):
                exited = True
                _kill_group(proc)  # what it left running in its group
                until = min(deadline, time.monotonic() + DRAIN)
                if pidfd is not None:
                    sel.unregister(pidfd)
            if exited and not sel.get_map():
                break  # the tool is gone and its pipes are closed
            left = until - time.monotonic()
            if left <= 0:
                break
            wait = left if pidfd is not None or exited else min(left, _TICK)
            if not sel.get_map():
                time.sleep(wait)
                continue
            for key, _ in sel.select(wait):
                if key.fd == pidfd:
                    continue  # the loop head sees the exit
                if key.fd in captures:
                    _read(sel, key.fd, captures)
                else:
                    sent = _feed(sel, proc, data or b"", sent)
        if not exited:
            _kill_group(proc)
            for fd in list(sel.get_map()):
                if fd not in captures:
                    sel.unregister(fd)
            until = time.monotonic() + DRAIN
            while sel.get_map() and (left := until - time.monotonic()) > 0:
                for key, _ in sel.select(left):
                    _read(sel, key.fd, captures)
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)
        _close_pipes(proc)
    _reap(proc)
    return out.value(), err.value(), not exited


def _read(sel: selectors.BaseSelector, fd: int, captures: dict[int, _Capture]) -> None:
    try:
        chunk = os.read(fd, 1 << 16)
    except BlockingIOError:
        return
    except OSError:
        chunk = b""
    if chunk:
        captures[fd].add(chunk)
    else:
        sel.unregister(fd)


def _feed(
    sel: selectors.BaseSelector, proc: subprocess.Popen[bytes], data: bytes, sent: int
) -> int:
    """Write what the pipe takes of ``data``; close stdin when all is written or refused."""
    assert proc.stdin is not None
    fd = proc.stdin.fileno()
    try:
        sent += os.write(fd, data[sent : sent + 65536]) if sent < len(data) else 0
    except BlockingIOError:
        return sent
    except OSError:  # the tool closed its stdin: what it did not read is its choice
        sent = len(data)
    if sent >= len(data):
        sel.unregister(fd)
        with contextlib.suppress(OSError):
            proc.stdin.close()
    return sent


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (Linux 5.3+), else None."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None


def _exited(pid: int) -> bool:
    """True once ``pid`` has exited, without reaping it: its process group id cannot be
    taken by another process until it is reaped, so killing the group stays safe."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the tool's whole process group (its pid: it leads the group it started)."""
    if proc.returncode is not None:
        return  # reaped: its group id may belong to someone else now
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(OSError):
            proc.kill()


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Collect the tool's exit status, waiting at most :data:`DRAIN` seconds (a process in
    uninterruptible sleep may outlive even SIGKILL for a while)."""
    with contextlib.suppress(subprocess.TimeoutExpired, OSError):
        proc.wait(timeout=DRAIN)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill everything the tool started and let go of it (an interrupt is going up)."""
    _kill_group(proc)
    _close_pipes(proc)
    _reap(proc)


@atexit.register
def _kill_live() -> None:
    """At exit (after Ctrl-C too), kill the groups of tools still running in other threads."""
    with _LIVE_LOCK:
        running = list(_LIVE)
    for proc in running:
        _kill_group(proc)


def _text(data: bytes, encoding: str) -> str:
    """Bytes as ``text=True`` gave them: decoded with ``replace``, newlines made ``\\n``."""
    return data.decode(encoding, "replace").replace("\r\n", "\n").replace("\r", "\n")


def which(name: str, path: str | None) -> Path | None:
    """``shutil.which`` over an explicit PATH string (the target env's, not ours). An entry
    that cannot be looked into (no permission, a loop) is passed over, as a shell does."""
    for entry in (path or "").split(os.pathsep):
        if not entry:
            continue
        candidate = Path(entry) / name
        try:
            regular = stat.S_ISREG(os.stat(candidate).st_mode)
        except (OSError, ValueError):
            continue
        if regular and os.access(candidate, os.X_OK):
            return candidate
    return None
