"""Reading a wheel (a zip) someone else built, without being the hazard (``--vllm-wheel``).

A wheel is a zip, and a zip names its members: ``../../x.so`` or ``/usr/lib/x.so`` are
names too. Nothing here ever joins a member's name to a path. METADATA and RECORD are read
into memory, bounded; a ``.so`` member the ELF readers need is copied into a file whose name
we choose, in a folder we own, and removed once it has been read.

And a zip can say little and unpack to much (a 6 MB wheel unpacks to 6 GB; a RECORD can
name one member 20,000 times): every byte decompressed for one wheel counts against a
:class:`Budget` set from the wheel's own size, each member is hashed once whatever RECORD
says, and a member is cut off at :data:`MAX_MEMBER`. Going past a bound is a
:class:`WheelError` that says which bound, never a full disk or a hang.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path, PurePosixPath

from pytest_vllm_env import files

# The biggest member of a real vLLM wheel is ~305 MB (0.26.0's FA2 extension, FACTS.md).
MAX_MEMBER = 2 * 1024**3
# All bytes one wheel may make us decompress (hashing every member, copying the .so ones):
# RATIO times the wheel's size, at least FLOOR, at most CEILING. Real wheels unpack to 2-3x
# their size (vLLM 0.26.0: 304 MB); deflate's limit is ~1000x, what a zip bomb uses.
RATIO = 30
FLOOR = 256 * files.MiB
CEILING = 32 * 1024**3
_CHUNK = 1 << 20
_ALGOS = ("sha256", "sha384", "sha512")  # what pip accepts in RECORD (PEP 376/427)


class WheelError(Exception):
    """A wheel, or a member of it, that was not read, and why."""


# What reading a member of a zip nobody vouches for may raise: a bound of ours, a broken or
# truncated zip, bad deflate data, encryption or a compression zipfile does not have.
READ_ERRORS = (
    WheelError,
    zipfile.BadZipFile,
    OSError,
    EOFError,
    zlib.error,
    RuntimeError,
    NotImplementedError,
)


class Budget:
    """Bytes a wheel may still make us decompress."""

    def __init__(self, wheel_size: int) -> None:
        self.total = min(max(RATIO * wheel_size, FLOOR), CEILING)
        self.left = self.total

    def take(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise WheelError(
                f"the wheel unpacks to more than {files.size_text(self.total)} ({RATIO}x its "
                "size): not read further (a zip bomb, or not a real wheel)"
            )


@dataclass
class RecordCheck:
    """RECORD against the members: who differs, how many were hashed, or why not read."""

    rows: int = 0
    checked: int = 0
    bad: list[str] = field(default_factory=list)
    problem: str = ""  # RECORD missing or unreadable; or a bound hit while hashing


def open_wheel(path: Path) -> tuple[zipfile.ZipFile, Budget]:
    """The wheel as a zip, and the budget of what it may unpack to. ``OSError`` when it cannot
    be read (:class:`files.Refused` for a FIFO or device), ``zipfile.BadZipFile`` when it is no
    zip."""
    fh = files.open_regular(path)
    try:
        size = os.fstat(fh.fileno()).st_size
        return zipfile.ZipFile(fh), Budget(size)
    except BaseException:
        fh.close()
        raise


def read_member(zf: zipfile.ZipFile, name: str, limit: int, budget: Budget) -> bytes:
    """One member's bytes, at most ``limit`` of them (``KeyError`` when there is none)."""
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise WheelError(f"{name}: {info.file_size} bytes, over the {limit} read for it")
    out = bytearray()
    with zf.open(info) as src:
        while chunk := src.read(_CHUNK):
            budget.take(len(chunk))
            out += chunk
            if len(out) > limit:
                raise WheelError(f"{name}: over the {limit} bytes read for it")
    return bytes(out)


def read_metadata(zf: zipfile.ZipFile, budget: Budget) -> tuple[str, list[str]]:
    """(dist-info folder, Requires-Dist lines) from the wheel's METADATA; ("", []) without
    one."""
    meta = next((n for n in zf.namelist() if n.endswith(".dist-info/METADATA")), None)
    if meta is None:
        return "", []
    text = read_member(zf, meta, files.CONFIG, budget).decode("utf-8", "replace")
    msg = HeaderParser().parsestr(text)
    return meta.rsplit("/", 1)[0], msg.get_all("Requires-Dist") or []


def check_record(zf: zipfile.ZipFile, info_dir: str, budget: Budget) -> RecordCheck:
    """Hash the members RECORD lists against its digests. Each (member, algorithm) is hashed
    once, however often RECORD names it; a member RECORD names but the zip lacks, or an
    algorithm pip does not accept, is ``bad``."""
    out = RecordCheck()
    try:
        data = read_member(zf, f"{info_dir}/RECORD", files.RECORD, budget)
    except KeyError:
        out.problem = "the wheel has no RECORD"
        return out
    except READ_ERRORS as exc:
        out.problem = f"RECORD cannot be read: {exc}"
        return out
    names = set(zf.namelist())
    digests: dict[tuple[str, str], str] = {}
    for row in data.decode("utf-8", "replace").splitlines():
        parts = row.rsplit(",", 2)
        if len(parts) != 3 or not parts[1]:
            continue
        out.rows += 1
        member, digest = parts[0], parts[1]
        algo, _, want = digest.partition("=")
        if member not in names or algo not in _ALGOS:
            bad = f"{member} (missing)" if member not in names else f"{member} ({algo}?)"
            if bad not in out.bad:
                out.bad.append(bad)
            continue
        try:
            if (member, algo) not in digests:
                digests[member, algo] = _digest(zf, member, algo, budget)
        except READ_ERRORS as exc:
            out.problem = f"{member}: {exc}"
            return out
        out.checked += 1
        if digests[member, algo] != want and member not in out.bad:
            out.bad.append(member)
    return out


def _digest(zf: zipfile.ZipFile, member: str, algo: str, budget: Budget) -> str:
    h = hashlib.new(algo)
    with zf.open(member) as fh:
        while chunk := fh.read(_CHUNK):
            budget.take(len(chunk))
            h.update(chunk)
    return base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()


def extension_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The ``.so`` members, in zip order."""
    return [i for i in zf.infolist() if i.filename.endswith(".so") and not i.is_dir()]


@contextlib.contextmanager
def member_file(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, folder: Path, budget: Budget
) -> Iterator[Path]:
    """A copy of one member in a file of ``folder`` named by us (never by the member: its
    name may hold ``../`` or be absolute), removed on exit. ``folder`` is created if needed;
    the file is created new (``O_EXCL``, a planted symlink is not followed)."""
    if info.file_size > MAX_MEMBER:
        raise WheelError(f"claims {info.file_size} bytes (more than {MAX_MEMBER}): not read")
    folder.mkdir(parents=True, exist_ok=True)
    base = re.sub(r"[^A-Za-z0-9._+-]", "_", PurePosixPath(info.filename).name).lstrip(".")
    fd, name = tempfile.mkstemp(suffix=f"-{base or 'member.so'}", dir=folder)  # O_EXCL, 0600
    target = Path(name)
    try:
        written = 0
        with open(fd, "wb") as dst, zf.open(info) as src:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > MAX_MEMBER:
                    raise WheelError(f"unpacks past {MAX_MEMBER} bytes: not read")
                budget.take(len(chunk))
                dst.write(chunk)
        yield target
    finally:
        with contextlib.suppress(OSError):
            target.unlink()
