"""pixi.lock: what one Pixi env locks for one platform, read without pixi and without
installing anything.

The format is rattler_lock's (conda/rattler ``crates/rattler_lock``; pixi writes it with
serde_yaml). Versions read here, from that crate's ``parse/models``:

- **4, 5**: top-level ``packages:`` entries tagged ``kind: conda|pypi`` with ``name``,
  ``version``, ``build``, ``subdir`` and ``url`` (pypi: ``url`` or ``path``); each env lists
  ``packages: {platform: [{conda: URL} | {pypi: URL}]}`` (v5 adds ``indexes``).
- **6**: the kind is the location key (``- conda: URL`` / ``- pypi: URL``); for conda
  entries ``name``, ``version``, ``build`` and ``subdir`` may be left out because they are
  derived from the file name ``<name>-<version>-<build>.conda`` and the URL's subdir.
- **7**: as 6, plus a top-level ``platforms:`` list (a platform has a name and a conda
  ``subdir``: ``linux-64-cuda`` may be ``linux-64``), pypi ``index:`` per package, and
  ``conda_source: name[hash] @ path`` entries for pixi-build source packages.

PyPI entries carry ``name``, ``version``, ``requires_dist`` and ``requires_python``; the
location is a wheel or sdist URL or a path. The YAML is parsed with PyYAML's ``BaseLoader``
(every scalar stays a string, so ``version: 1.10`` can never become the float 1.1), with
libyaml's C loader when present: docs/lock.md has the measurements that chose it over
py-rattler. Nothing here decides pass or fail; :class:`LockError` says what could not be read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from packaging.utils import canonicalize_name

from pytest_vllm_env import files

LOCK_NAME = "pixi.lock"
READABLE_VERSIONS = (4, 5, 6, 7)
_CONDA_EXT = (".conda", ".tar.bz2")
# Pixi's platform names (rattler_conda_types::Platform), for --pixi-platform.
PLATFORMS = (
    "linux-64",
    "linux-aarch64",
    "linux-ppc64le",
    "linux-s390x",
    "linux-riscv64",
    "linux-armv7l",
    "linux-32",
    "osx-64",
    "osx-arm64",
    "win-64",
    "win-arm64",
    "win-32",
    "emscripten-wasm32",
    "wasi-wasm32",
    "noarch",
)


class LockError(Exception):
    """pixi.lock could not be read, or lacks what was asked; ``kind`` says which:
    ``unreadable``, ``yaml``, ``alias`` (YAML anchors or aliases, which pixi never writes),
    ``version``, ``structure``, ``env``, ``platform``."""

    def __init__(self, kind: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.details = details


@dataclass(frozen=True)
class LockedConda:
    """A conda package as the lock pins it."""

    name: str
    version: str
    build: str
    subdir: str
    location: str
    depends: tuple[str, ...] = ()

    @property
    def channel(self) -> str:
        """``https://conda.anaconda.org/conda-forge/`` from the URL (everything before the
        subdir), or the location itself for a path."""
        head, _, _ = self.location.rpartition(f"/{self.subdir}/")
        return head + "/" if head else self.location


@dataclass(frozen=True)
class LockedPypi:
    """A PyPI distribution as the lock pins it (a wheel, an sdist, a path or a git URL)."""

    name: str
    version: str
    location: str
    requires_dist: tuple[str, ...] = ()
    requires_python: str | None = None
    editable: bool = False
    index: str | None = None

    @property
    def filename(self) -> str:
        """The last path part of the location, ``%2B`` decoded: ``torch-2.6.0+cu124-...whl``."""
        path = urlparse(self.location).path if "://" in self.location else self.location
        return unquote(path.rstrip("/").rsplit("/", 1)[-1])

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")

    @property
    def is_sdist(self) -> bool:
        return self.filename.endswith((".tar.gz", ".zip", ".tar.bz2", ".tgz"))

    @property
    def wheel_tags(self) -> tuple[str, str, str] | None:
        """``("cp312", "cp312", "manylinux_2_28_x86_64")`` for a wheel, else None."""
        if not self.is_wheel:
            return None
        parts = self.filename[: -len(".whl")].split("-")
        if len(parts) < 5:
            return None
        return parts[-3], parts[-2], parts[-1]


@dataclass
class LockedEnv:
    """The packages one env locks for one platform."""

    path: Path
    version: int
    name: str
    platform: str
    channels: list[str] = field(default_factory=list)
    indexes: list[str] = field(default_factory=list)
    conda: dict[str, LockedConda] = field(default_factory=dict)
    pypi: dict[str, LockedPypi] = field(default_factory=dict)

    def conda_package(self, name: str) -> LockedConda | None:
        return self.conda.get(name)

    def pypi_package(self, name: str) -> LockedPypi | None:
        return self.pypi.get(canonicalize_name(name))

    @property
    def python_version(self) -> str | None:
        pkg = self.conda.get("python")
        return pkg.version if pkg else None

    def __len__(self) -> int:
        return len(self.conda) + len(self.pypi)


@dataclass
class LockFile:
    """A parsed pixi.lock: its format version, the envs and their platforms."""

    path: Path
    version: int
    # env -> platform -> [("conda"|"pypi", location, selector)]
    environments: dict[str, dict[str, list[tuple[str, str, Mapping[str, Any]]]]]
    channels: dict[str, list[str]]
    indexes: dict[str, list[str]]
    conda: dict[str, list[LockedConda]]  # location -> packages there (variants share one)
    pypi: dict[str, LockedPypi]
    subdirs: dict[str, str] = field(default_factory=dict)  # v7 platform name -> conda subdir

    def platforms(self, env: str) -> list[str]:
        return sorted(self.environments.get(env, {}))

    def resolve_platform(self, env: str, platform: str) -> str:
        """The env's platform entry for ``platform``: the same name, else (format 7) the one
        platform whose conda subdir is ``platform`` (``linux-64-cuda`` for ``linux-64``)."""
        names = self.environments.get(env, {})
        if platform in names:
            return platform
        same_subdir = [n for n in names if self.subdirs.get(n) == platform]
        return same_subdir[0] if len(same_subdir) == 1 else platform

    def env(self, name: str, platform: str) -> LockedEnv:
        """The packages of env ``name`` on ``platform``; raise LockError when either is
        missing, or when the env refers to a package the file does not define."""
        if name not in self.environments:
            raise LockError(
                "env",
                f"{self.path} has no environment {name!r} "
                f"(it has: {', '.join(sorted(self.environments)) or 'none'})",
                environments=sorted(self.environments),
            )
        platforms = self.environments[name]
        platform = self.resolve_platform(name, platform)
        if platform not in platforms:
            raise LockError(
                "platform",
                f"{self.path} locks environment {name!r} for "
                f"{', '.join(sorted(platforms)) or 'no platform'}, not {platform}",
                platforms=sorted(platforms),
            )
        locked = LockedEnv(
            self.path,
            self.version,
            name,
            platform,
            list(self.channels.get(name, [])),
            list(self.indexes.get(name, [])),
        )
        for kind, location, selector in platforms[platform]:
            if kind == "conda":
                pkg = self._conda_for(location, selector, name, platform)
                locked.conda[pkg.name] = pkg
            else:
                found = self.pypi.get(location)
                if found is None:
                    raise LockError(
                        "structure",
                        f"{self.path}: environment {name!r} ({platform}) refers to a PyPI "
                        f"package that the file does not define: {location}",
                    )
                locked.pypi[canonicalize_name(found.name)] = found
        return locked

    def _conda_for(
        self, location: str, selector: Mapping[str, Any], env: str, platform: str
    ) -> LockedConda:
        candidates = self.conda.get(location, [])
        for key in ("name", "version", "build", "subdir"):
            if key in selector:
                candidates = [c for c in candidates if getattr(c, key) == str(selector[key])]
        if not candidates:
            raise LockError(
                "structure",
                f"{self.path}: environment {env!r} ({platform}) refers to a conda package "
                f"that the file does not define: {location}",
            )
        return candidates[0]


# -- reading ----------------------------------------------------------------------------------
def lock_path(manifest: Path) -> Path:
    """pixi.lock sits next to the manifest (pixi.toml or pyproject.toml)."""
    return manifest.parent / LOCK_NAME


def read_lock(path: Path) -> LockFile:
    """Parse ``path``; raise :class:`LockError` for anything that is not a lock we can read."""
    return parse_lock(read_bytes(path), path)


def read_bytes(path: Path) -> bytes:
    """The bytes of ``path``, read through :mod:`pytest_vllm_env.files`: a FIFO, a device or a
    directory named pixi.lock is refused without blocking, a file over ``files.LOCK`` unread
    (:class:`LockError` ``unreadable``, saying why)."""
    try:
        return files.read_bytes(path, files.LOCK)
    except OSError as exc:
        raise LockError("unreadable", f"cannot read {path}: {exc.strerror or exc}") from None


# The YAML loader; None: libyaml's CBaseLoader when PyYAML has it, else the pure-Python
# BaseLoader (benchmarks/lock_parse.py sets it to compare the two).
_Loader: Any = None


def _loader() -> Any:
    # PyYAML loads here, when there is a lock to read: importing it is 8 ms of every
    # toolchain run, most of which judge envs without one
    if _Loader is not None:
        return _Loader
    try:  # libyaml: about 10x faster than the pure-Python loader
        from yaml import CBaseLoader as Loader
    except ImportError:  # pragma: no cover - PyYAML built without libyaml
        from yaml import BaseLoader as Loader  # type: ignore[assignment]
    return Loader


# -- YAML anchors and aliases ----------------------------------------------------------------
# pixi writes pixi.lock through serde (rattler_lock), which writes a tree: no anchor (`&a`) and
# no alias (`*a`) ever (none in the 130 pixi.lock files of prefix-dev/pixi's own repository,
# formats 4 to 7). An alias repeats a whole subtree, so nine levels of nine aliases make a
# 1 KB file stand for 9**9 copies of one list: a "billion laughs" that took 2.7 GB once the
# reader turned it into text. A lock with any anchor or alias is refused, before the tree is
# built. A quick scan finds every place an anchor or alias may start (YAML allows them only
# at the start of a line, after ``- ``, ``: ``, ``? ``, a flow ``[ { ,`` or a tag); only then
# does the YAML parser's own event stream say whether one is really there.
_LINE_START = frozenset(b"\n\r[{,:?") | frozenset(range(0x80, 0x100))  # + NEL, LS, PS, BOM
_SPACE = frozenset(b" \t\n\r")


def _node_start(raw: bytes, i: int) -> bool:
    """Whether the ``&`` or ``*`` at ``raw[i]`` may begin an anchor or alias token."""
    j = i - 1
    while j >= 0 and raw[j] in (0x20, 0x09):  # blanks before it
        j -= 1
    if j < 0 or raw[j] in _LINE_START:
        return True
    if j == i - 1:  # `foo*`, `a&b`: inside a scalar
        return False
    if raw[j] == 0x2D:  # `- *a`
        return True
    k = j
    while k >= 0 and raw[k] not in _SPACE:
        k -= 1
    return raw[k + 1] == 0x21  # `!tag *a`


def _may_alias(raw: bytes) -> bool:
    """False when no anchor or alias can be in ``raw`` (UTF-8, or UTF-16 with its BOM)."""
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            raw = raw.decode("utf-16").encode("utf-8")
        except UnicodeError:
            return False  # the YAML parser says why it cannot read it
    for char in b"&*":
        i = raw.find(char)
        while i != -1:
            if _node_start(raw, i):
                return True
            i = raw.find(char, i + 1)
    return False


def _refuse_aliases(raw: bytes | str, path: Path, yaml: Any, loader: Any) -> None:
    """Raise :class:`LockError` (``alias``) at the first anchor or alias of the document."""
    for event in yaml.parse(raw, Loader=loader):
        alias = isinstance(event, yaml.AliasEvent)
        if alias or getattr(event, "anchor", None):
            mark = event.start_mark
            what = f"`{'*' if alias else '&'}{event.anchor}`"
            raise LockError(
                "alias",
                f"{path} holds a YAML {'alias' if alias else 'anchor'} ({what}, line "
                f"{mark.line + 1}, column {mark.column + 1}), which pixi never writes: not read, "
                "since each alias repeats a whole subtree (a few KB can stand for gigabytes)",
            )


def parse_lock(raw: bytes | str, path: Path = Path(LOCK_NAME)) -> LockFile:
    """Parse the text of a pixi.lock (``path`` is only used in messages)."""
    import yaml

    Loader = _loader()
    scan = raw.encode("utf-8", errors="replace") if isinstance(raw, str) else raw
    try:
        if _may_alias(scan):
            _refuse_aliases(raw, path, yaml, Loader)
        doc = yaml.load(raw, Loader=Loader)  # noqa: S506 - BaseLoader builds no objects
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LockError("yaml", f"{path} is not valid YAML{at}: {what}") from None
    except (ValueError, UnicodeDecodeError) as exc:  # NUL bytes, bad encodings
        raise LockError("yaml", f"{path} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise LockError("structure", f"{path} is not a pixi lock file (no mapping at the top)")
    version_text = doc.get("version")
    if not isinstance(version_text, str) or not version_text.isdigit():
        raise LockError(
            "structure",
            f"{path} has no integer `version:` field: not a pixi lock file, or truncated",
        )
    version = int(version_text)
    if version not in READABLE_VERSIONS:
        raise LockError(
            "version",
            f"{path} is lock format version {version}; this reader knows versions "
            f"{READABLE_VERSIONS[0]}-{READABLE_VERSIONS[-1]}",
            version=version,
        )
    envs = doc.get("environments")
    packages = doc.get("packages")
    if not isinstance(envs, dict) or not isinstance(packages, list):
        missing = "environments" if not isinstance(envs, dict) else "packages"
        raise LockError(
            "structure",
            f"{path} (format {version}) has no `{missing}:` "
            + ("mapping" if missing == "environments" else "list")
            + ": truncated or not written by pixi",
        )
    lock = LockFile(path, version, {}, {}, {}, {}, {})
    for entry in doc.get("platforms") or []:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            lock.subdirs[entry["name"]] = str(entry.get("subdir") or entry["name"])
    for index, entry in enumerate(packages):
        if not isinstance(entry, dict):
            raise LockError("structure", f"{path}: package entry {index + 1} is not a mapping")
        _add_package(lock, entry, version, index)
    for env_name, env in envs.items():
        if not isinstance(env, dict):
            raise LockError("structure", f"{path}: environment {env_name!r} is not a mapping")
        lock.channels[env_name] = [
            c.get("url", "") if isinstance(c, dict) else str(c) for c in env.get("channels") or []
        ]
        lock.indexes[env_name] = [str(i) for i in env.get("indexes") or []]
        by_platform = env.get("packages") or {}
        if not isinstance(by_platform, dict):
            raise LockError(
                "structure", f"{path}: environment {env_name!r} has no `packages:` mapping"
            )
        lock.environments[env_name] = {}
        for platform, selectors in by_platform.items():
            refs = []
            for selector in selectors or []:
                if not isinstance(selector, dict):
                    raise LockError(
                        "structure",
                        f"{path}: environment {env_name!r} ({platform}) has an entry that is "
                        "not a mapping",
                    )
                if "conda" in selector:
                    refs.append(("conda", str(selector["conda"]), selector))
                elif "conda_source" in selector:
                    refs.append(("conda", str(selector["conda_source"]), selector))
                elif "pypi" in selector:
                    refs.append(("pypi", str(selector["pypi"]), selector))
            lock.environments[env_name][str(platform)] = refs
    return lock


def _add_package(lock: LockFile, entry: Mapping[str, Any], version: int, index: int) -> None:
    if version <= 5:
        kind = entry.get("kind")
        location = entry.get("url") or entry.get("path")
    elif "conda" in entry:
        kind, location = "conda", entry.get("conda")
    elif "conda_source" in entry:
        kind, location = "conda", entry.get("conda_source")
    elif "pypi" in entry:
        kind, location = "pypi", entry.get("pypi")
    else:
        kind, location = None, None
    if kind not in ("conda", "pypi") or not isinstance(location, str):
        raise LockError(
            "structure",
            f"{lock.path}: package entry {index + 1} has no conda/pypi location "
            f"(keys: {', '.join(sorted(map(str, entry)))})",
        )
    if kind == "conda":
        derived = _from_filename(location)
        source_name = location.split("[", 1)[0].strip() if "conda_source" in entry else None
        name = str(entry.get("name") or derived[0] or source_name or "")
        pkg_version = str(entry.get("version") or derived[1] or "")
        build = str(entry.get("build") or derived[2] or "")
        subdir = str(entry.get("subdir") or _subdir_of(location) or "")
        if not name or not (pkg_version or derived[0] is None):
            # a binary archive always has both; a source package (pixi-build) may be partial
            raise LockError(
                "structure",
                f"{lock.path}: conda package entry {index + 1} ({location}) has no name or "
                "version and its file name gives none",
            )
        depends = entry.get("depends") or []
        pkg = LockedConda(
            name, pkg_version, build, subdir, location, tuple(str(d) for d in depends)
        )
        lock.conda.setdefault(location, []).append(pkg)
        return
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise LockError(
            "structure", f"{lock.path}: PyPI package entry {index + 1} ({location}) has no name"
        )
    requires = entry.get("requires_dist") or []
    lock.pypi[location] = LockedPypi(
        name=name,
        version=str(entry.get("version") or ""),
        location=location,
        requires_dist=tuple(str(r) for r in requires),
        requires_python=str(entry["requires_python"]) if entry.get("requires_python") else None,
        editable=str(entry.get("editable", "false")).lower() == "true",
        index=str(entry["index"]) if entry.get("index") else None,
    )


def _from_filename(location: str) -> tuple[str | None, str | None, str | None]:
    """``name-version-build`` from a conda archive name (rattler's CondaArchiveIdentifier:
    the last two dashes separate version and build; names may contain dashes)."""
    filename = unquote(location.rstrip("/").rsplit("/", 1)[-1])
    for ext in _CONDA_EXT:
        if filename.endswith(ext):
            stem = filename[: -len(ext)]
            parts = stem.rsplit("-", 2)
            if len(parts) == 3 and all(parts):
                return parts[0], parts[1], parts[2]
    return None, None, None


def _subdir_of(location: str) -> str | None:
    parts = location.rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 and parts[-2] in PLATFORMS else None


def current_platform() -> str:
    """This machine as Pixi names it: ``linux-64``, ``linux-aarch64``, ``osx-arm64``..."""
    system = os.uname().sysname.lower() if hasattr(os, "uname") else "windows"
    machine = os.uname().machine.lower() if hasattr(os, "uname") else "amd64"
    arch = {
        "x86_64": "64",
        "amd64": "64",
        "aarch64": "aarch64",
        "arm64": "arm64" if system == "darwin" else "aarch64",
        "ppc64le": "ppc64le",
    }.get(machine, machine)
    if system == "darwin":
        return "osx-arm64" if arch == "arm64" else "osx-64"
    if system.startswith("win"):
        return "win-64"
    return f"linux-{arch}"


def cuda_of_local(version: str) -> str | None:
    """``12.4`` from a local version tag ``2.6.0+cu124`` (``cu118`` -> ``11.8``)."""
    match = re.search(r"\+cu(\d{2,3})\b", version)
    if not match:
        return None
    digits = match.group(1)
    return f"{digits[:-1]}.{digits[-1]}"
