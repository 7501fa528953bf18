"""Sibling pins: every installed distribution's ``Requires-Dist`` that holds another installed
one to an exact version or a bounded range, and whether the installed one is inside it.

Read from each ``.dist-info/METADATA`` (:class:`pytest_vllm_env.facts.env.PythonDist`), never
from a list of names: torch 2.11.0 says ``triton==3.6.0; platform_system == "Linux"``,
torchvision 0.26.0 ``torch==2.11.0``, xformers 0.0.33.post1 ``torch==2.9.0``, vLLM 0.26.0
``flashinfer-python==0.6.14`` and ``nvidia-cutlass-dsl[cu13]==4.6.0``, flashinfer-python 0.6.14
``apache-tvm-ffi<0.2,>=0.1.6``. Markers are evaluated in the env's own marker environment
(its Python version, Linux), with no extra: which extras a distribution was installed with is
recorded nowhere, so requirements under ``extra == "..."`` are not judged. A pin is judged when
its specifier pins (``==``/``===`` without a wildcard) or bounds the version from above (``<``,
``<=``, ``~=``, ``==X.*``); a bare floor (``>=``) is not a pin. Whether each side ships compiled
code (a ``.so`` in its RECORD) is read only for pins that do not hold: the check's level rests
on it (two native packages pinned together share an ABI).
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from packaging.markers import InvalidMarker, UndefinedComparison, UndefinedEnvironmentName
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from pytest_vllm_env import files
from pytest_vllm_env.facts.env import PixiEnv, PythonDist
from pytest_vllm_env.readers import elf

_NARROW_OPS = {"<", "<=", "~="}


@dataclass(frozen=True)
class SiblingPin:
    """One ``Requires-Dist`` of ``owner`` that pins an installed ``sibling``."""

    owner: str
    owner_version: str
    requirement: str  # as written: "triton==3.6.0; platform_system == \"Linux\""
    specifier: str  # "==3.6.0"
    sibling: str
    installed: str
    holds: bool
    exact: bool  # == / === without a wildcard
    owner_native: bool | None = None  # ships compiled code (RECORD); None: not read / unknown
    sibling_native: bool | None = None
    # libraries of the sibling that the owner's compiled objects name in DT_NEEDED (the loader
    # binds them at import: an ABI); None where the owner's objects could not be read
    links: tuple[str, ...] | None = None
    # a RECORD there and unreadable (a FIFO, a dangling link), or one of the owner's compiled
    # objects: "path: cannot be read: why"; whether the pin is an ABI is then unknown, an
    # error of that dist (issue 21)
    unreadable: str = ""
    damaged: str = ""  # the distribution whose RECORD (or compiled object) that is
    damaged_part: str = "RECORD"  # "RECORD" or "compiled code"


@dataclass
class PinFacts:
    """Every sibling pin of the env's installed distributions."""

    pins: list[SiblingPin] = field(default_factory=list)
    marker_env: dict[str, str] = field(default_factory=dict)

    @property
    def broken(self) -> list[SiblingPin]:
        return [p for p in self.pins if not p.holds]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def marker_environment(env: PixiEnv) -> dict[str, str]:
    """PEP 508 marker values of the env (not of the Python running pytest)."""
    full = env.python_version or ""
    parts = (full.split(".") + ["0", "0"])[:3] if full else ["3", "12", "0"]
    return {
        "implementation_name": "cpython",
        "implementation_version": ".".join(parts),
        "os_name": "posix",
        "platform_machine": platform.machine() or "x86_64",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": ".".join(parts),
        "python_version": ".".join(parts[:2]),
        "sys_platform": "linux",
        "extra": "",
    }


def is_pin(specifier: SpecifierSet) -> tuple[bool, bool]:
    """``(judged, exact)``: a specifier that pins or bounds from above."""
    exact = any(s.operator in ("==", "===") and "*" not in s.version for s in specifier)
    bounded = any(
        s.operator in _NARROW_OPS or (s.operator == "==" and s.version.endswith(".*"))
        for s in specifier
    )
    return exact or bounded, exact


def read(env: PixiEnv) -> PinFacts:
    """The sibling pins of every installed distribution, and whether each holds."""
    marker_env = marker_environment(env)
    out = PinFacts(marker_env=marker_env)
    native: dict[str, bool | None] = {}
    for owner in sorted(env.python_dists.values(), key=lambda d: d.name.lower()):
        for line in owner.requires:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            try:
                if req.marker is not None and not req.marker.evaluate(marker_env):
                    continue
            except (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName):
                continue
            sibling = env.dist(req.name)
            if sibling is None or canonicalize_name(req.name) == canonicalize_name(owner.name):
                continue
            try:
                spec = SpecifierSet(str(req.specifier))
            except InvalidSpecifier:
                continue
            judged, exact = is_pin(spec)
            if not judged:
                continue
            try:
                holds = spec.contains(Version(sibling.version), prereleases=True)
            except InvalidVersion:
                holds = False
            pin = SiblingPin(
                owner=owner.name,
                owner_version=owner.version,
                requirement=line,
                specifier=str(spec),
                sibling=sibling.name,
                installed=sibling.version,
                holds=holds,
                exact=exact,
            )
            if not holds:
                owner_native = _native(owner, native)
                sibling_native = _native(sibling, native)
                links, unread = (
                    _links(owner, sibling) if owner_native and sibling_native else ((), "")
                )
                damaged, why = next(
                    ((d.name, w) for d in (owner, sibling) if (w := _objects(d)[1])), ("", "")
                )
                part = "RECORD"
                if not why and unread:  # one of the owner's objects: a link it may hold
                    damaged, why, part = owner.name, unread, "compiled code"
                pin = SiblingPin(
                    **{
                        **asdict(pin),
                        "owner_native": owner_native,
                        "sibling_native": sibling_native,
                        "links": links,
                        "unreadable": why,
                        "damaged": damaged,
                        "damaged_part": part,
                    }
                )
            out.pins.append(pin)
    return out


# Bounds: a distribution lists thousands of files; its compiled objects are read only for a pin
# that does not hold, and at most this many of them (vLLM 0.26.0 ships 16).
_MAX_OBJECTS = 64


def _objects(dist: PythonDist) -> tuple[list[str] | None, str]:
    """The shared objects ``dist``'s RECORD lists (paths relative to site-packages), and why
    not: ``(None, "")`` without a RECORD; ``(None, "<RECORD>: cannot be read: why")`` when one
    is there and cannot be read (a FIFO, a dangling link), never taken for "no objects"."""
    text, why = files.read_text_if_present(dist.path / "RECORD", files.RECORD)
    if text is None:
        return None, why
    objects = [
        path
        for row in text.splitlines()
        if (path := row.split(",", 1)[0]).endswith(".so") or ".so." in path.rsplit("/", 1)[-1]
    ]
    return objects, ""


def _links(owner: PythonDist, sibling: PythonDist) -> tuple[tuple[str, ...] | None, str]:
    """The sibling's libraries that the owner's compiled objects need (``DT_NEEDED``), and
    why that is unknown: the first of the owner's objects that is there and cannot be read
    (a FIFO, a dangling link, a path that cannot be opened: "path: cannot be read: why"),
    when no object that was read needs one (what it needs may be the sibling's).

    What makes an exact pin an ABI is the dynamic loader binding the owner's extension to the
    sibling's library at import (torchvision's ``_C.so`` needs ``libc10.so`` and
    ``libtorch_cpu.so``, which torch ships), not that both ship a ``.so``: vLLM 0.26.0 pins
    ``numba==0.65.0`` and ``apache-tvm-ffi==0.1.10``, none of its 16 objects needs a library
    of either, and it loaded and generated on the H100 next to numba 0.68.0 and
    apache-tvm-ffi 0.1.15.post2 (docs/gpu-runs.md, round 12).
    """
    mine, theirs = _objects(owner)[0], _objects(sibling)[0]
    if mine is None or theirs is None:
        return None, ""
    shipped = {path.rsplit("/", 1)[-1] for path in theirs}
    site = owner.path.parent
    found: set[str] = set()
    read_any = False
    unreadable = ""
    for rel in mine[:_MAX_OBJECTS]:
        path = site / rel
        why = _unreadable(path)
        if why:
            unreadable = unreadable or why
            continue
        try:
            needed = elf.read_elf(path, symbols=False).needed
        except elf.ElfError:
            continue  # absent, or read and no ELF object (a stand-in): it binds nothing
        read_any = True
        found.update(name for name in needed if name in shipped)
    if found or not unreadable:
        return (tuple(sorted(found)) if read_any or not mine else None), ""
    return None, unreadable


def _unreadable(path: Path) -> str:
    """Why ``path`` is there and cannot be opened as a file ("path: cannot be read: why"),
    '' when it opens or nothing is there (an object a RECORD lists and a reinstall removed
    binds nothing)."""
    try:
        with files.open_regular(path):
            return ""
    except FileNotFoundError:
        if not os.path.islink(path):
            return ""
        return f"{path}: cannot be read: a dangling symlink to {os.readlink(path)}"
    except OSError as exc:
        return f"{path}: cannot be read: {exc.strerror or exc}"
    except ValueError as exc:  # a NUL byte in the path a RECORD lists
        return f"{str(path)!r}: cannot be read: {exc}"


def _native(dist: PythonDist, seen: dict[str, bool | None]) -> bool | None:
    """Whether ``dist``'s RECORD lists a shared object; None when it has no readable RECORD."""
    key = str(dist.path)
    if key not in seen:
        objects = _objects(dist)[0]
        seen[key] = None if objects is None else bool(objects)
    return seen[key]
