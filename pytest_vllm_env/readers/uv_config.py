"""uv's own configuration, read as ``uv sync`` / ``uv pip install`` run from a project folder
would read it: which ``uv.toml`` / ``[tool.uv]`` files and ``UV_*`` variables apply, and what
they make of build isolation for one package.

F5.1 with uv (LCKV#17, nano-vllm#104): uv builds ``flash-attn`` in an isolated env without
torch unless its settings say otherwise. Read from uv's source (``uv-settings/src/lib.rs``,
``uv/src/lib.rs``, ``uv/src/settings.rs``, ``uv-configuration``'s ``BuildIsolation``) and docs
("Configuration files"), checked against real uv 0.13.9 (docs/facts-additions.md):

- Files, highest precedence first: the *project* file, found from the folder uv runs in upward:
  the first folder holding a ``uv.toml``, or a ``pyproject.toml`` with a ``[tool.uv]`` table (a
  pyproject without one is skipped); a ``uv.toml`` beside a pyproject *masks* that pyproject's
  ``[tool.uv]`` settings (uv warns "The following fields from `[tool.uv]` will be ignored").
  Then the *user* file ``$XDG_CONFIG_HOME/uv/uv.toml`` (``~/.config``), then the first
  *system* file of ``$XDG_CONFIG_DIRS/uv/uv.toml`` (``/etc/xdg``) and ``/etc/uv/uv.toml``.
  ``UV_CONFIG_FILE`` replaces all of them; ``UV_NO_CONFIG`` reads none; ``UV_NO_SYSTEM_CONFIG``
  skips the system file.
- A boolean takes the first file that sets it; lists (``no-build-isolation-package``) are
  concatenated. ``uv pip`` reads the ``[pip]`` (``[tool.uv.pip]``) table first, then the
  top-level keys; ``uv sync``/``uv lock`` read only the top-level keys.
- Then ``BuildIsolation::from_args``: ``no-build-isolation = true`` shares every build;
  ``no-build-isolation = false`` isolates every build *and drops* ``no-build-isolation-package``
  (even one from another file); otherwise the listed packages are shared.
- ``UV_NO_BUILD_ISOLATION`` (clap's boolish parser: ``1/true/yes/on/y/t`` and
  ``0/false/no/off/n/f``) is a command-line flag: true shares every build whatever the files
  say; false is "not given" and leaves the files in charge; an empty or other value stops uv
  ("invalid value '' for '--no-build-isolation': value was not a boolean"). uv has no
  ``UV_NO_BUILD_ISOLATION_PACKAGE`` (uv 0.13.9's ``--help`` lists no variable for
  ``--no-build-isolation-package``).

Workspaces (uv starts at the workspace root) are not followed. Only reads;
:mod:`pytest_vllm_env.checks.pypi_venv` judges.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from pytest_vllm_env import files
from pytest_vllm_env.readers.venv_project import ExtraBuildDep

SYSTEM_ETC = Path("/etc")  # /etc/uv/uv.toml; a module constant so our tests can move it
_TRUE = ("y", "yes", "t", "true", "on", "1")
_FALSE = ("n", "no", "f", "false", "off", "0")
KEYS = ("no-build-isolation", "no-build-isolation-package", "extra-build-dependencies")


@dataclass(frozen=True)
class UvValue:
    """One build-isolation key as one file sets it."""

    key: str
    value: Any
    file: Path
    table: str  # "[tool.uv]", "[tool.uv.pip]", "[pip]", "" (uv.toml's top level)
    line: int | None
    level: str  # "project", "user", "system", "UV_CONFIG_FILE"

    @property
    def where(self) -> str:
        """``/p/uv.toml line 2 (no-build-isolation = true)``."""
        return self.shown()

    def shown(self, base: Path | None = None) -> str:
        """:attr:`where`, with the path relative to ``base`` when the file lies under it."""
        path = str(self.file)
        if base is not None and self.file.is_relative_to(base):
            path = str(self.file.relative_to(base))
        at = f"{path} line {self.line}" if self.line else path
        table = f"{self.table} " if self.table else ""
        return f"{at} ({table}{self.key} = {_toml_value(self.value)})"


@dataclass
class UvFile:
    """One configuration file uv reads, and the build-isolation keys it sets."""

    path: Path
    level: str
    kind: str  # "uv.toml" or "pyproject.toml"
    top: dict[str, UvValue] = field(default_factory=dict)
    pip: dict[str, UvValue] = field(default_factory=dict)


@dataclass(frozen=True)
class UvIsolation:
    """Whether uv builds one package isolated, and what decided it."""

    isolated: bool
    because: str  # in the user's words
    decided_by: UvValue | None = None
    variable: str = ""  # "UV_NO_BUILD_ISOLATION=1 (set in ...)" when the variable decided
    refused: str = ""  # uv stops before building: its own message
    notes: tuple[str, ...] = ()


@dataclass
class UvConfig:
    """The files and variables ``uv`` run in ``start`` reads, highest precedence first."""

    start: Path
    files: list[UvFile] = field(default_factory=list)
    looked_at: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # masked tables, skipped files
    problems: list[str] = field(default_factory=list)  # uv stops
    environ: dict[str, tuple[str, str]] = field(default_factory=dict)  # UV_* -> (value, origin)

    @property
    def project_file(self) -> UvFile | None:
        """The project-level file uv uses (a uv.toml or a pyproject's ``[tool.uv]``)."""
        return next((f for f in self.files if f.level == "project"), None)

    def _values(self, key: str, mode: str) -> list[UvValue]:
        tables = ("pip", "top") if mode == "pip" else ("top",)
        return [getattr(f, t)[key] for t in tables for f in self.files if key in getattr(f, t)]

    def isolation(self, name: str, mode: str) -> UvIsolation:
        """How ``uv sync``/``uv lock`` (``mode="project"``) or ``uv pip install``
        (``mode="pip"``) builds ``name``."""
        notes = list(self.notes)
        if mode == "project":
            pip_only = [v for f in self.files for v in f.pip.values() if v.key in KEYS[:2]]
            notes += [
                f"{v.shown(self.start)} applies to `uv pip` only, not to uv sync/lock"
                for v in pip_only
            ]
        if "UV_NO_BUILD_ISOLATION_PACKAGE" in self.environ:
            value, origin = self.environ["UV_NO_BUILD_ISOLATION_PACKAGE"]
            notes.append(
                f"UV_NO_BUILD_ISOLATION_PACKAGE={value} (set in {origin}) is no uv variable: "
                "uv reads no-build-isolation-package only from its files and command line"
            )
        if self.problems:
            return UvIsolation(True, "", refused="; ".join(self.problems), notes=tuple(notes))
        var = self.environ.get("UV_NO_BUILD_ISOLATION")
        if var is not None:
            value, origin = var
            said = f"UV_NO_BUILD_ISOLATION={value} (set in {origin})"
            if value.lower() in _TRUE:
                return UvIsolation(False, said, variable=said, notes=tuple(notes))
            if value.lower() not in _FALSE:
                return UvIsolation(
                    True,
                    said,
                    variable=said,
                    refused=f"{said}: uv stops with \"error: invalid value '{value}' for "
                    "'--no-build-isolation': value was not a boolean\"",
                    notes=tuple(notes),
                )
            notes.append(f"{said} does not force isolation: uv reads false as 'not given'")
        flags = self._values("no-build-isolation", mode)
        packages = self._values("no-build-isolation-package", mode)
        flag = flags[0] if flags else None
        key = canonicalize_name(name)
        listed = [
            v
            for v in packages
            if any(canonicalize_name(str(p)) == key for p in v.value if isinstance(p, str))
        ]
        if flag is not None and flag.value is True:
            return UvIsolation(False, flag.shown(self.start), flag, notes=tuple(notes))
        if flag is not None and flag.value is False:
            if listed:
                cancelled = listed[0].shown(self.start)
                notes.append(
                    f"{flag.shown(self.start)} isolates every build and cancels {cancelled} "
                    "(uv's BuildIsolation::from_args)"
                )
            return UvIsolation(True, flag.shown(self.start), flag, notes=tuple(notes))
        if listed:
            return UvIsolation(False, listed[0].shown(self.start), listed[0], notes=tuple(notes))
        return UvIsolation(True, "uv's default (isolation on)", notes=tuple(notes))

    def extra_build_dependencies(self, name: str, mode: str) -> list[tuple[ExtraBuildDep, UvValue]]:
        """``extra-build-dependencies`` for ``name`` over every file (lists concatenated)."""
        key = canonicalize_name(name)
        found: list[tuple[ExtraBuildDep, UvValue]] = []
        for value in self._values("extra-build-dependencies", mode):
            for dep_name, deps in value.value.items():
                if canonicalize_name(str(dep_name)) == key:
                    found += [(d, value) for d in _extra_deps(deps)]
        return found


def read_uv_config(
    start: Path,
    environ: Mapping[str, str],
    origins: Mapping[str, str] | None = None,
) -> UvConfig:
    """uv's configuration for a command run in ``start`` with ``environ``."""
    config = UvConfig(start)
    origins = origins or {}
    for name, value in environ.items():
        if name.startswith("UV_"):
            config.environ[name] = (value, origins.get(name, "the shell that runs pytest"))
    given = environ.get("UV_CONFIG_FILE")
    if given:
        path = Path(given).expanduser()
        config.looked_at.append(path)
        _read_uv_toml(config, path, "UV_CONFIG_FILE", required=True)
        config.notes.append(f"UV_CONFIG_FILE={given}: uv reads that file and no other")
        return config
    if _boolish(environ.get("UV_NO_CONFIG")):
        config.notes.append("UV_NO_CONFIG is set: uv reads no configuration file")
        return config
    _find_project(config, start)
    home = Path(environ.get("HOME") or os.path.expanduser("~"))
    xdg_home = environ.get("XDG_CONFIG_HOME", "")
    user_root = Path(xdg_home) if xdg_home.startswith("/") else home / ".config"
    user = user_root / "uv" / "uv.toml"
    config.looked_at.append(user)
    if _is_file(user):
        _read_uv_toml(config, user, "user")
    if _boolish(environ.get("UV_NO_SYSTEM_CONFIG")):
        config.notes.append("UV_NO_SYSTEM_CONFIG is set: uv skips the system uv.toml")
        return config
    dirs = [d for d in (environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":") if d]
    candidates = [Path(d) / "uv" / "uv.toml" for d in dirs] + [SYSTEM_ETC / "uv" / "uv.toml"]
    config.looked_at += candidates
    system = next((c for c in candidates if _is_file(c)), None)
    if system is not None:  # only the first one found counts
        _read_uv_toml(config, system, "system")
    return config


def _find_project(config: UvConfig, start: Path) -> None:
    for folder in (start, *start.parents):
        uv_toml, pyproject = folder / "uv.toml", folder / "pyproject.toml"
        config.looked_at.append(uv_toml)
        if _is_file(uv_toml):
            _read_uv_toml(config, uv_toml, "project")
            masked = _pyproject_uv(pyproject)
            keys = [k for k in KEYS if masked and (k in masked[0] or k in masked[0].get("pip", {}))]
            if keys:
                config.notes.append(
                    f"{uv_toml} masks [tool.uv] of {pyproject}: uv ignores its "
                    f"{', '.join(keys)} (uv reads uv.toml when both are in one folder)"
                )
            return
        config.looked_at.append(pyproject)
        found = _pyproject_uv(pyproject)
        if found is not None:
            table, lines = found
            config.files.append(_uv_file(pyproject, "project", "pyproject.toml", table, lines))
            return


def _pyproject_uv(path: Path) -> tuple[Mapping[str, Any], list[str]] | None:
    """A pyproject's ``[tool.uv]`` table; None when there is none (or it does not parse:
    uv warns and searches on)."""
    if not _is_file(path):
        return None
    try:
        text = files.read_text(path, files.CONFIG)
        data = files.loads_toml(text)
    except (OSError, ValueError):
        return None
    tool = data.get("tool")
    uv = tool.get("uv") if isinstance(tool, Mapping) else None
    return (uv, text.splitlines()) if isinstance(uv, Mapping) else None


def _read_uv_toml(config: UvConfig, path: Path, level: str, *, required: bool = False) -> None:
    try:
        text = files.read_text(path, files.CONFIG)
    except OSError as exc:
        if required or level != "user":
            config.problems.append(f"{path}: uv cannot read it ({exc.strerror or exc}) and stops")
        return
    try:
        data = files.loads_toml(text)
    except ValueError as exc:  # tomllib.TOMLDecodeError, or nesting too deep
        config.problems.append(f"{path}: not valid TOML ({exc}); uv stops")
        return
    config.files.append(_uv_file(path, level, "uv.toml", data, text.splitlines()))


def _uv_file(
    path: Path, level: str, kind: str, table: Mapping[str, Any], lines: list[str]
) -> UvFile:
    found = UvFile(path, level, kind)
    head = "[tool.uv]" if kind == "pyproject.toml" else ""
    pip_head = "[tool.uv.pip]" if kind == "pyproject.toml" else "[pip]"
    pip = table.get("pip")
    for where, source, name in ((found.top, table, head), (found.pip, pip, pip_head)):
        if not isinstance(source, Mapping):
            continue
        for key in KEYS:
            value = source.get(key)
            if value is None or not _valid(key, value):
                continue
            line = _line_of(lines, key, name, kind)
            where[key] = UvValue(key, value, path, name, line, level)
    return found


def _valid(key: str, value: Any) -> bool:
    if key == "no-build-isolation":
        return isinstance(value, bool)
    if key == "no-build-isolation-package":
        return isinstance(value, list)
    return isinstance(value, Mapping)


def _line_of(lines: list[str], key: str, table: str, kind: str) -> int | None:
    """The line of ``key`` inside ``table`` ("" = top level of a uv.toml)."""
    current = ""
    wanted = table.strip("[]")
    for number, raw in enumerate(lines, start=1):
        header = re.match(r"^\s*\[+\s*([^\]]+?)\s*\]+", raw)
        if header:
            current = header.group(1)
            if key == "extra-build-dependencies" and current.endswith(key):
                parent = current[: -len(key)].rstrip(".")
                if parent == wanted:
                    return number
            continue
        if current == wanted and re.match(rf"^\s*{re.escape(key)}\s*=", raw):
            return number
    return None


def _extra_deps(deps: Any) -> list[ExtraBuildDep]:
    found: list[ExtraBuildDep] = []
    for dep in deps if isinstance(deps, list) else []:
        if isinstance(dep, str):
            found.append(ExtraBuildDep(dep, False))
        elif isinstance(dep, Mapping) and isinstance(dep.get("requirement"), str):
            found.append(ExtraBuildDep(dep["requirement"], dep.get("match-runtime") is True))
    return found


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(str(k) for k in value) + "}"
    return str(value)


def _boolish(value: str | None) -> bool:
    return value is not None and value.lower() in _TRUE


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False
