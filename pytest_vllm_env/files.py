"""Reading files we did not write, without being the hazard: the one door every reader uses.

The suite reads what users hand it (checkpoints, locks, build logs, merge input) and what an env
holds (conda-meta, dist-info, libraries). Any of these can be a FIFO (``open`` then blocks for
ever, where ``--timeout`` does not reach), a link to ``/dev/zero`` (a read that never ends), a
symlink loop, or simply huge. So:

- :func:`open_regular` opens without blocking (``O_NONBLOCK``: a FIFO opens at once) and refuses
  anything that is not a regular file once open, by ``fstat`` of the very descriptor it read from
  (no window between a check and the open);
- :func:`read_bytes` / :func:`read_text` also refuse a file over the bound given for its kind,
  and never read more than the bound even if the file grows meanwhile;
- :func:`load_json` / :func:`loads_json` and :func:`load_toml` / :func:`loads_toml` turn
  nesting too deep for Python's parsers (``RecursionError``) into a ``ValueError`` like any
  other malformed file.

:class:`Refused` is an ``OSError`` whose ``strerror`` is the reason (``not a regular file (a
FIFO)``) and ``filename`` the path: readers that already say "cannot read X: {strerror}" for an
``OSError`` say it for these too.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import IO, Any

MiB = 1 << 20
# Bounds per kind of file: far above any real one, far below what exhausts memory.
CONFIG = 16 * MiB  # config.json, hf_quant_config.json, pixi.toml, pip.conf, dist-info METADATA
RECORD = 64 * MiB  # conda-meta/*.json (lists every file of a package), RECORD
LOCK = 256 * MiB  # pixi.lock, uv.lock
SOURCE = 16 * MiB  # a Python or CMake file of an installed package
LOG = 256 * MiB  # a build log
HEADER = 100 * MiB  # a safetensors JSON header (the safetensors library's own limit)
REPORT = 64 * MiB  # a node's JSON report (merge input): a few hundred KiB for 100 checks

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


class TooDeep(ValueError):
    """JSON or TOML nested deeper than Python's parsers go (``RecursionError`` there)."""


class Refused(OSError):
    """A path that was not read, and why (not a regular file, over its size bound).

    ``strerror`` is the reason alone, ``filename`` the path; ``str()`` says both."""

    def __init__(self, reason: str, path: str | os.PathLike[str]) -> None:
        super().__init__(None, reason, os.fspath(path))

    def __str__(self) -> str:
        return f"{self.strerror}: {self.filename}"


def kind_of(mode: int) -> str:
    """``a FIFO``, ``a directory``... for a ``st_mode`` that is not a regular file."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def open_regular(path: str | os.PathLike[str]) -> IO[bytes]:
    """``path`` opened for binary reading, if it is a regular file (symlinks followed).

    Raises :class:`Refused` for a FIFO, device, socket or directory, and ``OSError`` for a
    missing file, a symlink loop or no permission, without ever blocking."""
    fd = open_fd(path)
    try:
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_fd(path: str | os.PathLike[str]) -> int:
    """:func:`open_regular` as a raw descriptor (for ``os.pread``); the caller closes it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise Refused(f"not a regular file ({kind_of(mode)})", path)
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def regular(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a regular file (following symlinks); never opens or blocks."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def lexists(path: str | os.PathLike[str]) -> bool:
    """True when anything is at ``path``, a dangling symlink or a FIFO included; never opens."""
    try:
        return os.path.lexists(path)
    except (OSError, ValueError):
        return False


def read_bytes(path: str | os.PathLike[str], limit: int) -> bytes:
    """The whole of a regular file of at most ``limit`` bytes (:class:`Refused` otherwise)."""
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise Refused(
                f"{size_text(size)} is over the {size_text(limit)} read for such a file", path
            )
        # read what fstat said plus one byte (``read(limit + 1)`` would reserve the whole
        # bound up front: 256 MiB for every pixi.lock), then the rest if it grew meanwhile
        data = fh.read(size + 1)
        if len(data) > size:
            data += fh.read(limit + 1 - len(data))
    if len(data) > limit:  # it grew after fstat
        raise Refused(f"over the {size_text(limit)} read for such a file", path)
    return data


def read_text(path: str | os.PathLike[str], limit: int, errors: str = "replace") -> str:
    """A regular file's text (UTF-8), bounded as :func:`read_bytes`."""
    return read_bytes(path, limit).decode("utf-8", errors=errors)


def read_text_if_present(path: str | os.PathLike[str], limit: int) -> tuple[str | None, str]:
    """A file whose absence means "not installed" (``torch/version.py``, a package's source):
    ``(text, "")`` when read; ``(None, "")`` when nothing is there at all; ``(None, why)`` when
    something is there that cannot be read: a FIFO, a device, a directory, a dangling symlink,
    no permission, over ``limit``. ``why`` names the path; a reader must turn it into an error
    of the subject that needs the file, never into "absent" (issue 21, "Nothing silent")."""
    try:
        return read_text(path, limit), ""
    except FileNotFoundError:
        if not os.path.islink(path):
            return None, ""
        return None, f"{os.fspath(path)}: cannot be read: a dangling symlink to {os.readlink(path)}"
    except OSError as exc:
        return None, f"{os.fspath(path)}: cannot be read: {exc.strerror or exc}"


def load_json(path: str | os.PathLike[str], limit: int = CONFIG) -> Any:
    """A JSON file's value. ``ValueError`` for bad JSON, nesting too deep included;
    ``OSError`` (:class:`Refused` among them) when it cannot be read."""
    return loads_json(read_bytes(path, limit))


def loads_json(data: str | bytes) -> Any:
    """``json.loads``, with nesting too deep for the parser as a ``ValueError``."""
    try:
        return json.loads(data)
    except RecursionError:
        raise TooDeep("JSON nested too deeply to read") from None


def load_toml(path: str | os.PathLike[str], limit: int = CONFIG) -> dict[str, Any]:
    """A TOML file's tables. ``ValueError`` for bad TOML (``tomllib.TOMLDecodeError`` is one),
    nesting too deep included; ``OSError`` (:class:`Refused` among them) when unreadable."""
    return loads_toml(read_text(path, limit))


def loads_toml(text: str) -> dict[str, Any]:
    """``tomllib.loads``, with nesting too deep for the parser as a ``ValueError``."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise TooDeep("TOML nested too deeply to read") from None


def size_text(n: int) -> str:
    """``3.2 MiB`` or ``512 bytes``."""
    return f"{n / MiB:.1f} MiB" if n >= MiB else f"{n} bytes"


def describe(path: Path) -> str:
    """What ``path`` is, for a message: ``a FIFO``, ``missing``, ``a regular file``..."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing" if not os.path.islink(path) else "a dangling symlink"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return "a regular file" if stat.S_ISREG(mode) else kind_of(mode)
