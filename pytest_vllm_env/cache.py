"""Facts computed once per session and shared by xdist workers.

Session fixtures run once per worker; reading a 456 MB libtorch_cuda.so or running nvcc
four times over is waste. :class:`FactCache` stores JSON facts in pytest's cache dir
(never in the judged env), keyed by a name plus the paths the fact depends on with their
sizes and mtimes, and guards computing with a file lock so that one worker computes and the
others wait and read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

T = TypeVar("T")
LOCK_TIMEOUT = 900.0


class FactCache:
    """A JSON store under ``directory``; values must round-trip through JSON."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(name: str, deps: Iterable[str | os.PathLike[str]] = (), *extra: object) -> str:
        digest = hashlib.sha256(name.encode())
        for dep in deps:
            digest.update(b"\0" + os.fsencode(dep))
            try:
                st = os.stat(dep)
                digest.update(f":{st.st_size}:{st.st_mtime_ns}".encode())
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
        """The cached fact, or ``compute()`` stored for the next worker or run."""
        if self.directory is None:
            return compute()
        key = self.key(name, list(deps), *extra)
        path = self.directory / f"{key}.json"
        try:
            with FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT):
                cached = self._load(path)
                if cached is not None:
                    return cached["value"]
                value = compute()
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps({"value": value}), encoding="utf-8")
                os.replace(tmp, path)
                return value
        except Timeout:
            return compute()

    @staticmethod
    def _load(path: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and "value" in data else None
