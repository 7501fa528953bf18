"""pip's own configuration, read as ``<env>/bin/python -m pip install`` would read it: which
config files and ``PIP_*`` variables apply, and what they make of build isolation.

F5.1 (flash-attention#1421): pip builds ``flash_attn-*.tar.gz`` in an isolated env that has no
torch ("No module named 'torch'") unless isolation is off. A requirements file cannot turn it
off, but pip's configuration can, for every ``pip install``. Read from pip's source (26.3,
``configuration.py``, ``cli/parser.py``) and checked against real pip 22.3.1, 24.3.1, 25.0.1 to
26.3 (docs/facts-additions.md):

- Files, lowest precedence first (``pip config debug`` lists them in this order): *global*
  ``$XDG_CONFIG_DIRS/pip/pip.conf`` (each dir; ``/etc/xdg`` when unset) then
  ``/etc/pip.conf``; *user* ``~/.pip/pip.conf`` then ``$XDG_CONFIG_HOME/pip/pip.conf``
  (``~/.config``), skipped when ``PIP_CONFIG_FILE`` names a file that exists; *site*
  ``sys.prefix/pip.conf``, the env's own ``<prefix>/pip.conf``; then ``PIP_CONFIG_FILE``.
  ``PIP_CONFIG_FILE=/dev/null`` skips every file.
- Within the merged files, the ``[install]`` section beats ``[global]`` whatever file each is in
  (``[wheel]``/``[download]`` apply only to those commands), and a ``PIP_NO_BUILD_ISOLATION``
  variable beats both. Empty values are ignored.
- The value is inverted: the option is ``--no-build-isolation`` with ``dest=build_isolation,
  action=store_false``, and a config or environment value is stored as ``strtobool(value)``
  into ``build_isolation``. So ``PIP_NO_BUILD_ISOLATION=0`` / ``false`` / ``no`` / ``off`` and
  ``no-build-isolation = false`` turn isolation OFF; ``1`` / ``true`` / ``yes`` / ``on`` keep it
  on. Any other value stops every pip command: "2 is not a valid value for no-build-isolation
  option, please specify a boolean value like yes/no, true/false or 1/0 instead."
- Before pip 25.3, a sdist with a ``setup.py`` and no ``pyproject.toml`` (flash-attn) took the
  legacy ``setup.py bdist_wheel`` path, which never isolates, when ``setuptools`` and ``wheel``
  were importable in the env (``pyproject.py``: ``use_pep517 = has_pyproject or not
  find_spec("setuptools") or not find_spec("wheel")``), unless ``use-pep517`` said otherwise.
  pip 25.3 removed that path: it isolates such sdists too.

Only reads; :mod:`pytest_vllm_env.checks.pypi_venv` judges. Linux locations (pip's macOS and
Windows dirs differ).
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import InvalidVersion, Version

from pytest_vllm_env import files

# pip adds /etc to $XDG_CONFIG_DIRS on every Unix (utils/appdirs.py); a module constant so
# that our own tests can point it at a temp dir.
SYSTEM_ETC = Path("/etc")
CONFIG_BASENAME = "pip.conf"
LEGACY_REMOVED = Version("25.3")  # first pip that isolates setup.py-only sdists too (measured)
_TRUE = ("y", "yes", "t", "true", "on", "1")
_FALSE = ("n", "no", "f", "false", "off", "0")


@dataclass(frozen=True)
class Setting:
    """One value pip reads for a key: from a file's section, or a ``PIP_*`` variable."""

    key: str  # normalized: "no-build-isolation"
    value: str
    section: str  # "global", "install", ... or ":env:" for a variable
    file: Path | None = None
    line: int | None = None
    variable: str | None = None  # "PIP_NO_BUILD_ISOLATION"
    # where the variable is set: "the shell that runs pytest", "[activation.env] in pixi.toml"
    origin: str = ""

    @property
    def where(self) -> str:
        """``PIP_NO_BUILD_ISOLATION=1 (set in the shell that runs pytest)`` or
        ``/venv/pip.conf line 3 ([install] no-build-isolation = true)``."""
        if self.variable:
            return f"{self.variable}={self.value} (set in {self.origin})"
        at = f"{self.file} line {self.line}" if self.line else str(self.file)
        return f"{at} ([{self.section}] {self.key} = {self.value})"

    def flag(self) -> bool | None:
        """pip's ``strtobool`` of the value; None when pip refuses it."""
        value = self.value.lower()
        return True if value in _TRUE else False if value in _FALSE else None


@dataclass(frozen=True)
class ConfigFile:
    """One file pip looks at, as ``pip config debug`` lists it."""

    kind: str  # "global", "user", "site", "env" (PIP_CONFIG_FILE)
    path: Path
    exists: bool


@dataclass
class PipConfig:
    """What ``<prefix>/bin/python -m pip install`` reads: files, sections, ``PIP_*``."""

    prefix: Path
    files: list[ConfigFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # files skipped and why
    settings: list[Setting] = field(default_factory=list)  # every value read, pip's order
    problems: list[str] = field(default_factory=list)  # pip stops: unreadable config

    def candidates(self, key: str, command: str = "install") -> list[Setting]:
        """Every non-empty value of ``key`` that ``pip <command>`` sees, lowest precedence
        first: ``[global]`` of all files, then ``[<command>]`` of all files, then
        ``PIP_*``; later files beat earlier ones within a section."""
        chosen: dict[str, Setting] = {}
        for setting in self.settings:
            if setting.key == key and setting.section in ("global", command, ":env:"):
                chosen[setting.section] = setting  # a later file replaces an earlier one
        order = ("global", command, ":env:")
        return [chosen[s] for s in order if s in chosen and chosen[s].value]

    def effective(self, key: str, command: str = "install") -> Setting | None:
        """The value pip uses for ``key``; None when nothing sets it."""
        found = self.candidates(key, command)
        return found[-1] if found else None

    def ignored(self, key: str, command: str = "install") -> list[Setting]:
        """Values of ``key`` that ``pip <command>`` does not use: other commands' sections,
        empty values, and values overridden by a file or variable of higher precedence."""
        used = self.effective(key, command)
        return [s for s in self.settings if s.key == key and s is not used]


def read_pip_config(
    prefix: Path,
    environ: Mapping[str, str],
    origins: Mapping[str, str] | None = None,
) -> PipConfig:
    """pip's configuration for an install into ``prefix`` run with ``environ``; ``origins``
    says where a variable was set (default: the shell that runs pytest)."""
    config = PipConfig(prefix)
    origins = origins or {}
    home = Path(environ.get("HOME") or os.path.expanduser("~"))
    xdg_dirs = environ.get("XDG_CONFIG_DIRS", "").strip() or "/etc/xdg"
    xdg_home = environ.get("XDG_CONFIG_HOME", "").strip() or str(home / ".config")
    env_file = environ.get("PIP_CONFIG_FILE")
    plan: list[tuple[str, Path]] = [
        ("global", Path(d).expanduser() / "pip" / CONFIG_BASENAME) for d in xdg_dirs.split(":")
    ]
    plan.append(("global", SYSTEM_ETC / CONFIG_BASENAME))
    if env_file and os.path.exists(env_file):  # never raises on a path we cannot stat
        config.notes.append(
            f"PIP_CONFIG_FILE={env_file} exists, so pip skips the user files "
            f"({home / '.pip' / CONFIG_BASENAME}, {Path(xdg_home) / 'pip' / CONFIG_BASENAME})"
        )
    else:
        plan += [
            ("user", home / ".pip" / CONFIG_BASENAME),
            ("user", Path(xdg_home) / "pip" / CONFIG_BASENAME),
        ]
    plan.append(("site", prefix / CONFIG_BASENAME))
    if env_file is not None:
        plan.append(("env", Path(env_file)))
    config.files = [ConfigFile(kind, path, _is_file(path)) for kind, path in plan]
    if env_file == os.devnull:
        config.notes.append(f"PIP_CONFIG_FILE={os.devnull}: pip reads no config file at all")
    else:
        for entry in config.files:
            if entry.exists:
                _read_file(config, entry.path)
            else:
                _special(config, entry.path)
    for name, value in environ.items():
        if name.startswith("PIP_") and name[4:].lower() not in ("version", "help"):
            config.settings.append(
                Setting(
                    _normalize(name[4:]),
                    value,
                    ":env:",
                    variable=name,
                    origin=origins.get(name, "the shell that runs pytest"),
                )
            )
    return config


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-").removeprefix("--")


def _special(config: PipConfig, path: Path) -> None:
    """A config path that is there but no file: pip's ``configparser.read`` opens whatever
    ``os.path.exists`` finds, and blocks on a FIFO (or reads a device without end); a
    directory it cannot open, it skips."""
    what = files.describe(path)
    if what in ("a FIFO", "a character device", "a block device", "a socket"):
        config.problems.append(
            f"{path}: {what}, not a config file (pip opens it and blocks or reads without end)"
        )


def _read_file(config: PipConfig, path: Path) -> None:
    try:
        text = files.read_text(path, files.CONFIG, errors="strict")
    except files.Refused as exc:  # grew past the bound, or was swapped for a FIFO
        config.problems.append(f"{path}: {exc.strerror}; not read")
        return
    except OSError:
        return  # configparser.read skips a file it cannot open; so does pip
    except UnicodeDecodeError:
        config.problems.append(f'{path}: "contains invalid utf-8 characters" (pip stops)')
        return
    parser = configparser.RawConfigParser()
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        first = str(exc).splitlines()[0]
        config.problems.append(
            f'{path}: "{first}" (pip stops: "Configuration file could not be loaded")'
        )
        return
    where = _lines_of(text.splitlines())
    for section in parser.sections():
        for key, value in parser.items(section):
            line = where.get((section, _normalize(key)))
            config.settings.append(Setting(_normalize(key), value, section, path, line))


def _lines_of(lines: list[str]) -> dict[tuple[str | None, str], int]:
    """(section, normalized key) -> the first line that sets it: one pass over the file (a
    search per setting would take settings x lines: a long pip.conf would hang it)."""
    found: dict[tuple[str | None, str], int] = {}
    current = None
    for number, raw in enumerate(lines, start=1):
        header = re.match(r"^\s*\[([^\]]+)\]", raw)
        if header:
            current = header.group(1).strip()
            continue
        match = re.match(r"^\s*([^=:\s][^=:]*?)\s*[=:]", raw)
        if match:
            found.setdefault((current, _normalize(match.group(1))), number)
    return found


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


# -- what it means for one sdist build --------------------------------------------------------
@dataclass(frozen=True)
class PipIsolation:
    """Whether ``pip install`` builds an sdist in an isolated env, and what decided it."""

    isolated: bool
    decided_by: Setting | None  # None: pip's default (or its legacy path)
    refused: str = ""  # pip stops before building: its own message
    legacy: bool = False  # pip < 25.3's setup.py path: never isolated
    ignored: tuple[Setting, ...] = ()  # no-build-isolation values that did not decide
    notes: tuple[str, ...] = ()

    @property
    def because(self) -> str:
        """What decided, in the user's words."""
        if self.legacy:
            return "pip's legacy setup.py path (no isolation)"
        if self.decided_by is None:
            return "pip's default (isolation on)"
        return self.decided_by.where


def build_isolation(
    config: PipConfig,
    *,
    pip_version: str | None,
    has_pyproject: bool,
    setuptools_and_wheel: bool,
) -> PipIsolation:
    """How ``pip install`` builds an sdist: ``has_pyproject`` is whether the sdist ships a
    pyproject.toml; ``setuptools_and_wheel`` whether both import in the env (pip < 25.3 then
    builds a setup.py-only sdist the legacy way, unisolated)."""
    notes = tuple(config.notes)
    if config.problems:
        return PipIsolation(True, None, "; ".join(config.problems), notes=notes)
    setting = config.effective("no-build-isolation")
    ignored = tuple(config.ignored("no-build-isolation"))
    if setting is not None:
        value = setting.flag()
        if value is None:
            refused = (
                f'{setting.where}: pip stops every command with "{setting.value} is not a valid '
                "value for no-build-isolation option, please specify a boolean value like "
                'yes/no, true/false or 1/0 instead."'
            )
            return PipIsolation(True, setting, refused, ignored=ignored, notes=notes)
        if not value:  # inverted: "false" stores build_isolation = 0
            return PipIsolation(False, setting, ignored=ignored, notes=notes)
    if not has_pyproject and _before_legacy_removal(pip_version):
        pep517 = config.effective("use-pep517")
        wanted = pep517.flag() if pep517 is not None else None
        if wanted is False or (wanted is None and setuptools_and_wheel):
            return PipIsolation(False, pep517, legacy=True, ignored=ignored, notes=notes)
    return PipIsolation(True, setting, ignored=ignored, notes=notes)


def _before_legacy_removal(pip_version: str | None) -> bool:
    if not pip_version:
        return False
    try:
        return Version(pip_version) < LEGACY_REMOVED
    except InvalidVersion:
        return False
