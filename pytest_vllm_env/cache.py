"""Facts computed once per session and shared by xdist workers.

Session fixtures run once per worker; reading a 456 MB libtorch_cuda.so or running nvcc
four times over is waste. :class:`FactCache` stores JSON facts in pytest's cache dir
(never in the judged env), keyed by a name plus the paths the fact depends on with their
identity (:func:`stat_key`), and guards computing with a file lock so that one worker
computes and the others wait and read.

The cache can only make a run faster, never break it (issue 21): a folder that cannot be
made or written, or that belongs to another user, is passed over for the next one
(:meth:`FactCache.choose`, which says why), and at worst a fact is computed each time; a
lock or a write that fails mid-run, an entry another version of the plugin wrote, one that
is truncated, edited or of another user, is read as absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from pytest_vllm_env import __version__

T = TypeVar("T")
LOCK_TIMEOUT = 900.0
# What an entry holds besides the value; an entry of another format or plugin version is
# not read (a value of another shape turned 21-28 checks into errors).
FORMAT = 2
_ABSENT = object()


def stat_key(path: str | os.PathLike[str]) -> tuple[int, int, int, int, int]:
    """What identifies a file's content without reading it: ``(device, inode, size,
    mtime_ns, ctime_ns)``. Size and mtime alone gave a stale pass when a library was
    replaced by one of the same size and mtime (``cp -p``, ``rsync -t``, a tar extract):
    a replacement by rename has another inode, one written in place another ctime, and
    ctime cannot be set back (``utime`` sets it to now). :class:`OSError` when unreadable."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def usable_dir(directory: Path) -> str | None:
    """Why ``directory`` cannot hold the cache (None: it can): it cannot be made, it is no
    folder, it belongs to another user (whose entries we would trust), or we cannot write
    in it (tried, as ``os.access`` answers yes to root on a read-only mount)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        st = os.stat(directory)
    except OSError as exc:
        return f"cannot be made ({exc.strerror or exc})"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        return f"belongs to another user (uid {st.st_uid})"
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"is not writable ({exc.strerror or exc})"
    return None


class FactCache:
    """A JSON store under ``directory`` (None: no cache, every fact computed); values must
    round-trip through JSON. ``note`` says where the cache is when it is not where it was
    asked to be, or that there is none."""

    def __init__(self, directory: Path | None, note: str = "") -> None:
        if directory is not None:
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                note, directory = f"no fact cache: {directory} cannot be made ({exc})", None
        self.directory = directory
        self.note = note

    @classmethod
    def choose(cls, candidates: Sequence[tuple[Path, str]]) -> FactCache:
        """The cache in the first usable one of ``candidates`` (``(folder, what it is)``,
        best first); its note names each one passed over and why."""
        passed: list[str] = []
        for directory, what in candidates:
            why = usable_dir(directory)
            if why is None:
                note = f"fact cache in {directory} ({what}): " if passed else ""
                return cls(directory, note + "; ".join(passed) if passed else "")
            passed.append(f"{what} {directory} {why}")
        if not passed:
            return cls(None)
        return cls(None, "no fact cache (each fact computed every run): " + "; ".join(passed))

    @staticmethod
    def key(name: str, deps: Iterable[str | os.PathLike[str]] = (), *extra: object) -> str:
        digest = hashlib.sha256(name.encode())
        for dep in deps:
            digest.update(b"\0" + os.fsencode(dep))
            try:
                digest.update(":{}:{}:{}:{}:{}".format(*stat_key(dep)).encode())
            except OSError:
                digest.update(b":missing")
        for item in extra:
            digest.update(b"\0" + repr(item).encode())
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]
        return f"{safe}-{digest.hexdigest()[:20]}"

    def get(
        self,
        name: str,
        compute: Callable[[], T],
        deps: Iterable[str | os.PathLike[str]] = (),
        *extra: object,
    ) -> T:
        """The cached fact, or ``compute()`` stored for the next worker or run. A cache that
        fails (lock, read or write) costs the computation, never the verdict."""
        if self.directory is None:
            return compute()
        key = self.key(name, list(deps), *extra)
        path = self.directory / f"{key}.json"
        lock = FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT)
        try:
            lock.acquire()
        except (Timeout, OSError):
            return compute()
        try:
            cached = self._load(path, key)
            if cached is not _ABSENT:
                return cached  # type: ignore[return-value]
            value = compute()
            self._store(path, key, value)
            return value
        finally:
            try:
                lock.release()
            except OSError:
                pass

    @staticmethod
    def digest(value: Any) -> tuple[str, str]:
        """``value`` as an entry stores it (canonical JSON) and that text's SHA-256: an entry
        whose value does not match its ``sha`` is not read."""
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
        return text, hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def _store(cls, path: Path, key: str, value: Any) -> None:
        text, sha = cls.digest(value)
        head = json.dumps({"format": FORMAT, "version": __version__, "key": key, "sha": sha})
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        try:
            tmp.write_text(f'{head[:-1]}, "value": {text}}}', encoding="utf-8")
            os.replace(tmp, path)
        except OSError:  # a full disk, a folder made read-only mid-run: not cached
            try:
                tmp.unlink()
            except OSError:
                pass

    @classmethod
    def _load(cls, path: Path, key: str) -> Any:
        """The value of the entry at ``path``, or ``_ABSENT`` when there is none we trust:
        unreadable, not ours, of another format or version, or not what was written."""
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
                    return _ABSENT
                data = json.loads(fh.read())
        except (OSError, ValueError, RecursionError):
            return _ABSENT
        if not isinstance(data, dict) or "value" not in data:
            return _ABSENT
        if (data.get("format"), data.get("version"), data.get("key")) != (
            FORMAT,
            __version__,
            key,
        ):
            return _ABSENT
        if data.get("sha") != cls.digest(data["value"])[1]:
            return _ABSENT
        return data["value"]
