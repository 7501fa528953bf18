"""The env's PyPI side as pip, uv or Pixi will act on it: the merged ``[pypi-options]`` and
``[pypi-dependencies]`` of a Pixi env's features; for a venv, what its project declares
(:mod:`pytest_vllm_env.readers.venv_project`) and the pip/uv configuration that decides how
sdists are built (:mod:`pytest_vllm_env.readers.pip_config`,
:mod:`pytest_vllm_env.readers.uv_config`); the PEP 508 marker values of the env.

Pixi resolves ``[pypi-dependencies]`` with uv (pixi docs, ``pixi_manifest.md``): ``index-url``
replaces PyPI, ``extra-index-urls`` are searched first, ``no-build-isolation`` builds in the
env. Which setting decides a build's isolation is modelled here (:meth:`PypiOptions.isolation`);
:mod:`pytest_vllm_env.checks.pypi` and :mod:`pytest_vllm_env.checks.pypi_venv` judge it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.markers import InvalidMarker, Marker, UndefinedEnvironmentName, default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.readers.pip_config import PipConfig, read_pip_config
from pytest_vllm_env.readers.pip_config import build_isolation as pip_build_isolation
from pytest_vllm_env.readers.pixi import PLATFORM, Manifest
from pytest_vllm_env.readers.uv_config import UvConfig, read_uv_config
from pytest_vllm_env.readers.venv_project import Declared, Project, find_project, read_project
from pytest_vllm_env.tables.sdist_torch import SDIST_ONLY, sdist_has_pyproject

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

PYPI = "https://pypi.org/simple"


@dataclass(frozen=True)
class PypiDep:
    """One ``[pypi-dependencies]`` entry."""

    name: str
    kind: str  # "version", "git", "path", "url-wheel", "url-sdist"
    spec: str  # the version spec or the source, as written
    index: str | None
    where: str  # the table it is declared in; for a venv's project, the file and line


@dataclass(frozen=True)
class Isolation:
    """Whether one sdist is built isolated from the env, and what decided it (pip's or uv's
    configuration, the manifest's ``no-build-isolation``, or the tool's default)."""

    isolated: bool
    because: str  # in the user's words: "PIP_NO_BUILD_ISOLATION=0 (set in ...)"
    default: bool = True  # nothing set: the tool's default decided
    refused: str = ""  # the installer stops before any build: its own message
    notes: tuple[str, ...] = ()  # settings that did not decide, and why
    setting: Any = None  # the pip_config.Setting / uv_config.UvValue that decided
    legacy: bool = False  # pip < 25.3's setup.py path (never isolated)


@dataclass
class PypiOptions:
    """The merged ``pypi-options`` and ``pypi-dependencies`` of one env's features; for a venv,
    what its project (:mod:`pytest_vllm_env.readers.venv_project`) declares for pip or uv, and
    the pip/uv configuration (:mod:`pytest_vllm_env.readers.pip_config`,
    :mod:`pytest_vllm_env.readers.uv_config`) that decides how they build."""

    table_prefix: str
    manifest_name: str
    index_url: str | None = None
    extra_index_urls: list[str] = field(default_factory=list)
    index_strategy: str | None = None
    no_build_isolation: bool | list[str] = False
    deps: dict[str, PypiDep] = field(default_factory=dict)
    conda: dict[str, str] = field(default_factory=dict)  # conda [dependencies]
    options_table: str = "[pypi-options]"
    tool: str = "pixi"  # "pixi"; for a venv's project "uv" or "pip"
    project: Project | None = None
    pip_config: PipConfig | None = None  # tool "pip"
    uv_config: UvConfig | None = None  # tool "uv"
    # build-isolation variables this installer does not read (pixi: PIP_ and UV_; uv: PIP_;
    # pip: UV_): (name, value, where set)
    ignored_vars: list[tuple[str, str, str]] = field(default_factory=list)
    # declared, but the marker is false for the env's Python and platform: not installed
    not_here: list[Declared] = field(default_factory=list)
    # --vllm-project given for a Pixi or conda env: installed into it with pip (or uv pip)
    companion: PypiOptions | None = None
    pip_version: str | None = None
    setuptools_and_wheel: bool = False

    @property
    def search_order(self) -> list[str]:
        """Indexes in the order uv asks them for a package without ``index =``."""
        return [*self.extra_index_urls, self.index_url or PYPI]

    def isolation(self, dep: PypiDep) -> Isolation:
        """How ``dep`` is built: isolated or in the env, and what decided it."""
        if self.tool == "pip" and self.pip_config is not None:
            version = self.project.locked.get(canonicalize_name(dep.name)) if self.project else None
            decision = pip_build_isolation(
                self.pip_config,
                pip_version=self.pip_version,
                has_pyproject=sdist_has_pyproject(
                    dep.name, dep.spec if dep.kind == "version" else "", version and version.version
                ),
                setuptools_and_wheel=self.setuptools_and_wheel,
            )
            return Isolation(
                decision.isolated,
                decision.because,
                default=decision.decided_by is None and not decision.legacy,
                refused=decision.refused,
                notes=decision.notes + _pip_ignored(decision) + self._foreign(),
                setting=decision.decided_by,
                legacy=decision.legacy,
            )
        if self.tool == "uv" and self.uv_config is not None:
            mode = "project" if self.from_pyproject(dep) else "pip"
            found = self.uv_config.isolation(dep.name, mode)
            return Isolation(
                found.isolated,
                found.because,
                default=found.decided_by is None and not found.variable,
                refused=found.refused,
                notes=found.notes + self._foreign(),
                setting=found.decided_by,
            )
        nbi = f"no-build-isolation in {self.options_table} of {self.manifest_name}"
        notes = self._foreign()
        if self.no_build_isolation is True:
            return Isolation(False, f"`no-build-isolation = true` in {self.options_table}", False)
        if isinstance(self.no_build_isolation, list) and canonicalize_name(dep.name) in {
            canonicalize_name(n) for n in self.no_build_isolation
        }:
            return Isolation(False, nbi, False)
        return Isolation(True, "pixi's default (isolation on)", notes=notes)

    def _foreign(self) -> tuple[str, ...]:
        """Notes on build-isolation variables set for another installer than this one."""
        if self.tool == "pixi":
            nbi = f"no-build-isolation in {self.options_table} of {self.manifest_name}"
            why = f"does not reach pixi: pixi builds with its own uv settings and reads only {nbi}"
        else:
            why = f"is not read by {self.tool}"
        return tuple(f"{n}={v} (set in {w}) {why}" for n, v, w in self.ignored_vars)

    def isolated(self, name: str) -> bool:
        """Whether ``name`` is built in an isolated env."""
        dep = self.deps.get(canonicalize_name(name)) or PypiDep(name, "version", "", None, "")
        return self.isolation(dep).isolated

    def from_pyproject(self, dep: PypiDep) -> bool:
        """Whether ``dep`` is declared in the project's pyproject.toml (not a requirements file)."""
        return self.project is not None and dep.where.startswith(self.project.pyproject.name)


def _pip_ignored(decision: Any) -> tuple[str, ...]:
    """Settings that would turn pip's isolation off but do not, and why."""
    notes = []
    for setting in decision.ignored:
        if setting.flag() is not False or not setting.value:
            continue
        if setting.section not in ("global", "install", ":env:"):
            notes.append(f"{setting.where} applies to `pip {setting.section}` only")
        elif decision.decided_by is not None:
            notes.append(f"{setting.where} is overridden by {decision.decided_by.where}")
    return tuple(notes)


def read_options(env: PixiEnv, project: Path | None = None) -> PypiOptions | None:
    """The env's merged PyPI settings from its manifest; for an env without one, from the
    venv's project (``project``, the ``--vllm-project`` setting, else the folder holding the
    venv when it has project files); None when neither is there. A ``project`` given for a
    Pixi env is judged too, as installed into it by pip (``opts.companion``)."""
    manifest = env.manifest
    if manifest is None:
        root = find_project(env.prefix, project)
        return None if root is None else _project_options(env, read_project(root, env.prefix))
    prefix = manifest.table_prefix()
    opts = PypiOptions(prefix, manifest.path.name, options_table=f"[{prefix}pypi-options]")
    environ, origins = _environ(env)
    opts.ignored_vars = [
        (name, environ[name], origins.get(name, "the shell that runs pytest"))
        for name in ("PIP_NO_BUILD_ISOLATION", "UV_NO_BUILD_ISOLATION")
        if name in environ
    ]
    features = manifest.environments().get(env.name or "default", ["default"])
    for feature in features:
        table = manifest.feature_table(feature)
        head = prefix if feature == "default" else f"{prefix}feature.{feature}."
        options = table.get("pypi-options")
        if isinstance(options, Mapping):
            if feature != "default":
                opts.options_table = f"[{head}pypi-options]"
            if isinstance(options.get("index-url"), str):
                opts.index_url = options["index-url"]
            for extra in options.get("extra-index-urls", []) or []:
                url = extra.get("url") if isinstance(extra, Mapping) else extra
                if isinstance(url, str) and url not in opts.extra_index_urls:
                    opts.extra_index_urls.append(url)
            if isinstance(options.get("index-strategy"), str):
                opts.index_strategy = options["index-strategy"]
            nbi = options.get("no-build-isolation")
            if nbi is True:
                opts.no_build_isolation = True
            elif isinstance(nbi, list) and opts.no_build_isolation is not True:
                merged = (
                    opts.no_build_isolation if isinstance(opts.no_build_isolation, list) else []
                )
                opts.no_build_isolation = merged + [str(n) for n in nbi]
        places = [(table.get("pypi-dependencies"), f"[{head}pypi-dependencies]")]
        conda = [table.get("dependencies")]
        target = table.get("target", {})
        if isinstance(target, Mapping) and isinstance(target.get(PLATFORM), Mapping):
            places.append(
                (
                    target[PLATFORM].get("pypi-dependencies"),
                    f"[{head}target.{PLATFORM}.pypi-dependencies]",
                )
            )
            conda.append(target[PLATFORM].get("dependencies"))
        for deps, where in places:
            if isinstance(deps, Mapping):
                for name, spec in deps.items():
                    dep = _dep(str(name), spec, where)
                    opts.deps[canonicalize_name(dep.name)] = dep
        for deps in conda:
            if isinstance(deps, Mapping):
                opts.conda.update({str(k): str(v) for k, v in deps.items()})
    if manifest.kind == "pyproject":
        # pyproject's own [project].dependencies are PyPI dependencies of the default feature
        for line in _project_dependencies(manifest):
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            if req.marker is not None and applies(env, str(req.marker)) is False:
                continue
            kind = "version"
            if req.url:
                kind = _url_kind(req.url)
            dep = PypiDep(req.name, kind, line, None, "[project.dependencies]")
            opts.deps.setdefault(canonicalize_name(req.name), dep)
    if project is not None:
        opts.companion = _project_options(env, read_project(project, env.prefix))
    return opts


def _project_options(env: PixiEnv, project: Project) -> PypiOptions:
    """A venv project's declarations as :class:`PypiOptions` (tool ``uv`` or ``pip``), with
    the pip or uv configuration that applies to installs into ``env``."""
    uv = project.uv
    tool = "uv" if project.uses_uv else "pip"
    opts = PypiOptions("", project.pyproject.name, tool=tool, project=project)
    opts.options_table = "[tool.uv]"
    if uv is not None:
        opts.no_build_isolation = True if uv.no_build_isolation else uv.no_build_isolation_package
    environ, origins = _environ(env)
    foreign = "UV_NO_BUILD_ISOLATION" if tool == "pip" else "PIP_NO_BUILD_ISOLATION"
    if foreign in environ:
        opts.ignored_vars = [
            (foreign, environ[foreign], origins.get(foreign, "the shell that runs pytest"))
        ]
    if tool == "pip":
        opts.pip_config = read_pip_config(env.prefix, environ, origins)
        opts.pip_version = env.version_of("pip")
        opts.setuptools_and_wheel = bool(env.dist("setuptools") and env.dist("wheel"))
    else:
        opts.uv_config = read_uv_config(project.root, environ, origins)
    for decl in project.declared:
        key = canonicalize_name(decl.name)
        if key in opts.deps:
            continue
        if decl.marker and applies(env, decl.marker) is False:
            opts.not_here.append(decl)
            continue
        source = uv.sources.get(key) if uv is not None else None
        if decl.url:
            kind = _url_kind(decl.url) if not decl.url.startswith("git+") else "git"
        elif source is not None:
            kind = _dep(decl.name, source, decl.where).kind
        else:
            kind = "version"
        opts.deps[key] = PypiDep(decl.name, kind, decl.spec, None, decl.where)
    return opts


def _environ(env: PixiEnv) -> tuple[dict[str, str], dict[str, str]]:
    """The variables pip and uv run with for ``env`` (the shell's, plus what activating a
    Pixi or conda env sets: `pixi run pip ...`), and where each activation one was set."""
    activation = env.activation
    origins = {
        name: "the env's activation (pixi shell-hook)" if where == "pixi shell-hook" else where
        for name, where in activation.sources.items()
    }
    return dict(activation.environ), origins


# PEP 508 markers: pixi platform -> (sys_platform, platform_system, platform_machine)
_PLATFORM_MARKERS = {
    "linux-64": ("linux", "Linux", "x86_64"),
    "linux-aarch64": ("linux", "Linux", "aarch64"),
    "linux-ppc64le": ("linux", "Linux", "ppc64le"),
    "osx-64": ("darwin", "Darwin", "x86_64"),
    "osx-arm64": ("darwin", "Darwin", "arm64"),
    "win-64": ("win32", "Windows", "AMD64"),
}


def marker_environment(env: PixiEnv) -> tuple[dict[str, str], set[str]]:
    """The PEP 508 marker values of the env (its Python; the platform judged: the lock's in
    lock mode, else this machine's), and the names whose value is not known."""
    values: dict[str, str] = dict(default_environment())
    unknown: set[str] = set()
    parts = (env.python_version or "").split(".")
    if len(parts) >= 2 and all(p.isdigit() for p in parts[:2]):
        values["python_version"] = ".".join(parts[:2])
        if len(parts) >= 3 and parts[2].isdigit():
            values["python_full_version"] = ".".join(parts[:3])
        else:
            unknown.add("python_full_version")
    else:
        unknown |= {"python_version", "python_full_version"}
    platform = getattr(env.locked, "platform", None) if env.locked is not None else None
    if platform in _PLATFORM_MARKERS:
        sys_platform, system, machine = _PLATFORM_MARKERS[platform]
        values.update(sys_platform=sys_platform, platform_system=system, platform_machine=machine)
        values["os_name"] = "nt" if system == "Windows" else "posix"
        unknown |= {"platform_release", "platform_version"}
    return values, unknown


def applies(env: PixiEnv, marker: str) -> bool | None:
    """Whether a requirement with ``marker`` is installed into ``env``; None when that
    cannot be told (an unknown value, a marker that does not parse): then it is judged."""
    try:
        parsed = Marker(marker)
    except InvalidMarker:
        return None
    values, unknown = marker_environment(env)
    if any(name in marker for name in unknown):
        return None
    try:
        return parsed.evaluate(values)
    except UndefinedEnvironmentName:
        return None


def _project_dependencies(manifest: Manifest) -> list[str]:
    """pyproject.toml's own ``[project] dependencies``, from the text the manifest was read from."""
    try:
        data = tomllib.loads(manifest.text)
    except (tomllib.TOMLDecodeError, RecursionError):
        return []
    project = data.get("project", {})
    deps = project.get("dependencies", []) if isinstance(project, Mapping) else []
    return [d for d in deps if isinstance(d, str)] if isinstance(deps, list) else []


def _dep(name: str, spec: Any, where: str) -> PypiDep:
    if isinstance(spec, str):
        return PypiDep(name, "version", spec, None, where)
    if not isinstance(spec, Mapping):
        return PypiDep(name, "version", str(spec), None, where)
    index = spec.get("index") if isinstance(spec.get("index"), str) else None
    if "git" in spec:
        return PypiDep(name, "git", str(spec["git"]), index, where)
    if "path" in spec:
        path = str(spec["path"])
        kind = "url-wheel" if path.endswith(".whl") else "path"
        return PypiDep(name, kind, path, index, where)
    if "url" in spec:
        url = str(spec["url"])
        return PypiDep(name, _url_kind(url), url, index, where)
    return PypiDep(name, "version", str(spec.get("version", "*")), index, where)


def _url_kind(url: str) -> str:
    return "url-wheel" if url.split("#")[0].split("?")[0].endswith(".whl") else "url-sdist"


def builds_from_source(dep: PypiDep) -> bool:
    """Whether installing ``dep`` builds it from source (a git, path or sdist URL, or a
    package that has no wheel on PyPI)."""
    if dep.kind in ("git", "path", "url-sdist"):
        return True
    return dep.kind == "version" and canonicalize_name(dep.name) in SDIST_ONLY
