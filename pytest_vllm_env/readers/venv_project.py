"""The project a venv is installed from, read before any install: what pip or uv will install
(and from which file and line), and the uv settings that decide how sdists are built.

A Pixi env declares its PyPI packages in its manifest; a venv has no manifest, but the
project it serves does (F5.1: ``pip install -r requirements.txt`` or ``uv sync`` building
``flash_attn-2.7.2.post1.tar.gz`` fails with "No module named 'torch'"). Read here:

- ``requirements*.txt`` (and ``requirements/*.txt``) with their ``-r`` includes, as pip reads
  them: one requirement a line, ``\\`` continuations, `` #`` comments; ``-c`` constraints are
  not installs; ``--index-url``/``--extra-index-url``/``--find-links`` are places a wheel may
  come from. A requirements file cannot turn build isolation off (pip's ``req_file.py``
  ``SUPPORTED_OPTIONS`` has no ``--no-build-isolation``): a ``--no-build-isolation`` line, or
  one after a requirement, makes pip stop ("no such option: --no-build-isolation") and uv
  too; those lines are kept in ``Project.refused_options``. A requirement's ``; marker`` is
  kept for the judge to evaluate against the env's Python and platform.
- ``pyproject.toml``: ``[project].dependencies``, ``[project.optional-dependencies]``,
  ``[dependency-groups]``, and ``[tool.uv]``: ``no-build-isolation``,
  ``no-build-isolation-package``, ``extra-build-dependencies`` (uv docs, "Build isolation"),
  ``sources``, ``index``.
- ``uv.lock``: the version ``uv sync`` installs and whether that version has wheels.

The project is found as :func:`find_project` says: ``--vllm-project`` when given, else the
venv's own folder's parent when it holds one of those files (``uv venv`` and ``uv sync`` make
``<project>/.venv``). This module only reads; :mod:`pytest_vllm_env.checks.pypi_venv` judges.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from pytest_vllm_env import files

REQUIREMENTS_GLOBS = ("requirements*.txt", "requirements/*.txt")
MAX_INCLUDE_DEPTH = 20  # -r chains deeper than this are a loop pip would also refuse


@dataclass(frozen=True)
class Declared:
    """One requirement the project asks for, and where it is written."""

    name: str
    spec: str  # the version specifier ("==2.8.3", "" for any) or the URL
    url: str | None
    file: Path
    line: int | None
    table: str = ""  # "[project.dependencies]", "[dependency-groups] cuda"; "" in a txt file
    marker: str | None = None  # the PEP 508 environment marker, as written after ";"

    @property
    def where(self) -> str:
        """``requirements.txt line 3`` or ``pyproject.toml line 7, [project.dependencies]``."""
        at = f"{self.file.name} line {self.line}" if self.line else self.file.name
        return f"{at}, {self.table}" if self.table else at


@dataclass(frozen=True)
class ExtraBuildDep:
    """One ``[tool.uv.extra-build-dependencies]`` entry for a package."""

    requirement: str
    match_runtime: bool


@dataclass(frozen=True)
class Locked:
    """One ``[[package]]`` of uv.lock."""

    name: str
    version: str
    wheels: int  # wheels listed for that version
    sdist: bool


@dataclass
class UvSettings:
    """``[tool.uv]`` of the project's pyproject.toml (only what decides how sdists build)."""

    line: int | None  # where [tool.uv] starts
    no_build_isolation: bool = False
    no_build_isolation_package: list[str] = field(default_factory=list)
    extra_build_dependencies: dict[str, list[ExtraBuildDep]] = field(default_factory=dict)
    sources: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # canonical name -> table
    indexes: list[str] = field(default_factory=list)


@dataclass
class Project:
    """What one project folder declares for pip or uv."""

    root: Path
    files: list[Path] = field(default_factory=list)
    declared: list[Declared] = field(default_factory=list)
    uv: UvSettings | None = None  # None: no [tool.uv] table
    locked: dict[str, Locked] = field(default_factory=dict)
    wheel_sources: list[str] = field(default_factory=list)  # indexes / find-links besides PyPI
    uv_version: str | None = None  # `uv = X` in the venv's pyvenv.cfg: uv made the venv
    problems: list[str] = field(default_factory=list)
    # `--no-build-isolation` written in a requirements file: (file, line, text). pip stops
    # ("no such option: --no-build-isolation"), uv too ("Unexpected '-'"): measured.
    refused_options: list[tuple[Path, int, str]] = field(default_factory=list)

    @property
    def pyproject(self) -> Path:
        return self.root / "pyproject.toml"

    @property
    def uses_uv(self) -> bool:
        """uv installs this project: uv.lock, a ``[tool.uv]`` table, a uv.toml, or a venv uv
        made."""
        return (
            bool(self.locked)
            or self.uv is not None
            or self.uv_version is not None
            or (self.root / "uv.toml").is_file()
        )

    def requirement(self, name: str) -> Declared | None:
        """The first declaration of ``name`` (canonical names compared)."""
        key = canonicalize_name(name)
        return next((d for d in self.declared if canonicalize_name(d.name) == key), None)


def project_files(root: Path) -> list[Path]:
    """The files of ``root`` that declare installs (pyproject.toml, uv.lock, requirements)."""
    found = [root / n for n in ("pyproject.toml", "uv.lock") if (root / n).is_file()]
    for pattern in REQUIREMENTS_GLOBS:
        found += sorted(p for p in root.glob(pattern) if p.is_file())
    return found


def find_project(prefix: Path, given: Path | None = None) -> Path | None:
    """The project of a venv: ``given`` (``--vllm-project``: a folder, or one file of it to
    read besides the usual ones), else the venv's parent when it holds a project file (the
    ``<project>/.venv`` uv makes); None otherwise."""
    if given is not None:
        return given
    parent = prefix.parent
    if (prefix / "pyvenv.cfg").is_file() and project_files(parent):
        return parent
    return None


def read_project(root: Path, venv: Path | None = None) -> Project:
    """Read every project file of ``root`` (and ``venv``'s pyvenv.cfg for uv's mark)."""
    project = Project(root)
    given = root if root.is_file() else None
    if given is not None:
        project.root = root = root.parent
    files = project_files(root)
    if given is not None and given not in files:
        files.append(given)
    project.files = files
    seen: set[Path] = set()
    for path in files:
        if path.name == "pyproject.toml":
            _read_pyproject(project, path)
        elif path.name == "uv.lock":
            _read_lock(project, path)
        else:
            _read_requirements(project, path, seen, depth=0)
    if venv is not None:
        cfg = _text(venv / "pyvenv.cfg", project)
        match = re.search(r"^uv\s*=\s*(\S+)", cfg or "", re.M)
        project.uv_version = match.group(1) if match else None
    return project


# -- requirements files --------------------------------------------------------------------
_OPTION = re.compile(r"^(-[a-zA-Z]|--[a-z-]+)(?:\s*=\s*|\s+)?(.*)$")
# build-isolation options neither pip nor uv accepts in a requirements file
_ISOLATION_OPTION = re.compile(r"(?:^|\s)(--(?:no-)?build-isolation(?:-package)?)\b")


def _read_requirements(project: Project, path: Path, seen: set[Path], *, depth: int) -> None:
    resolved = path.resolve()
    if resolved in seen or depth > MAX_INCLUDE_DEPTH:
        return
    seen.add(resolved)
    text = _text(path, project)
    if text is None:
        return
    for number, line in _logical_lines(text):
        if line.startswith("-"):
            match = _OPTION.match(line)
            if not match:
                continue
            option, value = match.group(1), match.group(2).strip()
            if _ISOLATION_OPTION.match(option):
                project.refused_options.append((path, number, line))
                continue
            if option in ("-r", "--requirement") and value:
                _read_requirements(project, path.parent / value, seen, depth=depth + 1)
            elif option in ("-i", "--index-url", "--extra-index-url", "-f", "--find-links"):
                if value and value not in project.wheel_sources:
                    project.wheel_sources.append(value)
            elif option in ("-e", "--editable") and value:
                _add(project, value, path, number)
            continue  # -c constraints and other options install nothing themselves
        if _ISOLATION_OPTION.search(line):
            project.refused_options.append((path, number, line))
        _add(project, line, path, number)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """pip's reading: `` #`` starts a comment, a trailing ``\\`` joins the next line."""
    result: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            result.append((start, line))
    return result


def _add(project: Project, text: str, path: Path, line: int | None, table: str = "") -> None:
    text = re.split(r"\s+--[a-z]", text)[0].strip()
    try:
        req = Requirement(text)
        name, spec, url = req.name, req.url or str(req.specifier), req.url
        marker = str(req.marker) if req.marker is not None else None
    except InvalidRequirement:
        # a bare URL or path: pip takes the name from `#egg=NAME`, else from the file name
        # (`flash_attn-2.8.3+cu12torch2.7...whl`); its marker follows " ; "
        parts = re.split(r"\s;\s*", text, maxsplit=1)
        text = parts[0].strip()
        marker = parts[1].strip() if len(parts) > 1 and parts[1].strip() else None
        egg = re.search(r"[#&]egg=([A-Za-z0-9][A-Za-z0-9_.\-]*)", text)
        base = text.split("#")[0].split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        match = egg or re.match(r"^([A-Za-z0-9][A-Za-z0-9_.]*?)-\d", base)
        if not match:
            return
        name, spec, url = match.group(1), text, text
    project.declared.append(Declared(name, spec, url, path, line, table, marker))


# -- pyproject.toml --------------------------------------------------------------------------
def _toml(
    path: Path, project: Project, limit: int = files.CONFIG
) -> tuple[str, dict[str, Any]] | None:
    """``path``'s text and TOML data; None (with the problem noted) when unreadable."""
    text = _text(path, project, limit)
    if text is None:
        return None
    try:
        return text, files.loads_toml(text)
    except ValueError as exc:  # tomllib.TOMLDecodeError, or nesting too deep
        project.problems.append(f"{path}: not valid TOML ({exc})")
        return None


def _read_pyproject(project: Project, path: Path) -> None:
    parsed = _toml(path, project)
    if parsed is None:
        return
    text, data = parsed
    lines = text.splitlines()
    proj = data.get("project", {})
    proj = proj if isinstance(proj, Mapping) else {}
    places: list[tuple[Any, str]] = [(proj.get("dependencies"), "[project.dependencies]")]
    optional = proj.get("optional-dependencies")
    if isinstance(optional, Mapping):
        places += [(v, f"[project.optional-dependencies] {k}") for k, v in optional.items()]
    groups = data.get("dependency-groups")
    if isinstance(groups, Mapping):
        places += [(v, f"[dependency-groups] {k}") for k, v in groups.items()]
    tool = data.get("tool", {})
    uv = tool.get("uv") if isinstance(tool, Mapping) else None
    if isinstance(uv, Mapping):
        places.append((uv.get("dev-dependencies"), "[tool.uv] dev-dependencies"))
        project.uv = _uv_settings(uv, lines)
    for entries, table in places:
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if isinstance(entry, str):  # {include-group = ...} tables add nothing new
                _add(project, entry, path, _line_of(lines, entry), table)


def _uv_settings(uv: Mapping[str, Any], lines: list[str]) -> UvSettings:
    header = next(
        (i for i, s in enumerate(lines, 1) if re.match(r"^\s*\[\s*tool\.uv[\].]", s)), None
    )
    settings = UvSettings(line=header)
    settings.no_build_isolation = uv.get("no-build-isolation") is True
    packages = uv.get("no-build-isolation-package")
    if isinstance(packages, list):
        settings.no_build_isolation_package = [str(p) for p in packages]
    extra = uv.get("extra-build-dependencies")
    if isinstance(extra, Mapping):
        for name, deps in extra.items():
            found: list[ExtraBuildDep] = []
            for dep in deps if isinstance(deps, list) else []:
                if isinstance(dep, str):
                    found.append(ExtraBuildDep(dep, False))
                elif isinstance(dep, Mapping) and isinstance(dep.get("requirement"), str):
                    found.append(
                        ExtraBuildDep(dep["requirement"], dep.get("match-runtime") is True)
                    )
            settings.extra_build_dependencies[canonicalize_name(str(name))] = found
    sources = uv.get("sources")
    if isinstance(sources, Mapping):
        for name, source in sources.items():
            first = source[0] if isinstance(source, list) and source else source
            if isinstance(first, Mapping):
                settings.sources[canonicalize_name(str(name))] = first
    indexes = uv.get("index")
    for index in indexes if isinstance(indexes, list) else []:
        if isinstance(index, Mapping) and isinstance(index.get("url"), str):
            settings.indexes.append(index["url"])
    return settings


def _line_of(lines: list[str], entry: str) -> int | None:
    quoted = (f'"{entry}"', f"'{entry}'")
    return next((i for i, s in enumerate(lines, 1) if any(q in s for q in quoted)), None)


# -- uv.lock -------------------------------------------------------------------------------
def _read_lock(project: Project, path: Path) -> None:
    parsed = _toml(path, project, files.LOCK)
    if parsed is None:
        return
    _, data = parsed
    for package in data.get("package", []) if isinstance(data.get("package"), list) else []:
        if not isinstance(package, Mapping) or not isinstance(package.get("name"), str):
            continue
        wheels = package.get("wheels")
        project.locked[canonicalize_name(package["name"])] = Locked(
            package["name"],
            str(package.get("version", "")),
            len(wheels) if isinstance(wheels, list) else 0,
            isinstance(package.get("sdist"), Mapping),
        )


def _text(path: Path, project: Project, limit: int = files.CONFIG) -> str | None:
    try:
        return files.read_text(path, limit)
    except OSError as exc:
        project.problems.append(f"{path}: cannot read ({exc.strerror or exc})")
        return None
