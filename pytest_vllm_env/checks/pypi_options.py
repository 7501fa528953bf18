"""The manifest's PyPI side, judged before any install: which index uv searches first, and
which source builds run isolated from the env's torch.

Pixi resolves ``[pypi-dependencies]`` with uv (pixi docs, ``pixi_manifest.md``, "Alternative
registries" / "No Build Isolation" / "Index Strategy"):

- ``index-url`` *replaces* PyPI; ``extra-index-urls`` are searched first, in order, and "are
  preferred over the ``index-url``". A dependency with ``index = "..."`` uses only that index.
- ``index-strategy`` defaults to ``first-index``: a package name is resolved only from the first
  index that has it. PyTorch's index (``download.pytorch.org/whl/...``) mirrors many PyPI names
  at a few versions: it hosts only ``cmake==3.25.0``, so a source build of vLLM, whose
  ``[build-system].requires`` asks ``cmake>=3.26.1`` (vLLM 0.9.2 on; ``>=3.26`` from 0.6), fails
  with "only cmake==3.25.0 is available and you require cmake>=3.26.1" (vllm#24875).
- ``no-build-isolation = ["pkg"]`` (or ``true``) builds in the env itself; "use conda
  dependencies to define the build environment ... adding torch as a PyPI dependency would be
  ineffective, as it would not yet be installed during the PyPI resolution phase".

Packages whose build needs torch (read from their PyPI sdists: ``setup.py`` imports torch;
none has a wheel on PyPI): ``flash-attn`` (every release read), ``torch-scatter``,
``torch-sparse``, ``torch-cluster``, ``causal-conv1d`` < 1.5.1 and ``mamba-ssm`` 2.2.2 declare no
build requirements at all (no ``pyproject.toml``), and ``mamba-ssm`` >= 2.3.2 leaves torch out
of ``[build-system]`` on purpose, so an isolated build fails with ``No module named 'torch'``
(flash-attention#1421; seed 004 in Pixi); ``causal-conv1d`` >= 1.5.1 and ``mamba-ssm``
2.2.3 .. 2.3.1 list an unpinned ``torch``, so isolation builds them against whatever torch the
index has newest, not the env's; vLLM's source pins one torch.

A venv has no manifest: its project's ``requirements*.txt``, ``pyproject.toml`` and
``uv.lock`` (:mod:`pytest_vllm_env.readers.venv_project`) say the same for pip and uv (F5.1). A
requirements file cannot turn isolation off (pip and uv stop on ``--no-build-isolation`` in
one); pip's own configuration can (pip.conf, ``PIP_NO_BUILD_ISOLATION``, read inverted:
:mod:`pytest_vllm_env.readers.pip_config`), and so can uv's (``uv.toml`` / ``[tool.uv]``
``no-build-isolation(-package)`` and ``extra-build-dependencies``, ``UV_NO_BUILD_ISOLATION``:
:mod:`pytest_vllm_env.readers.uv_config`). Pixi reads only its ``[pypi-options]``.
Requirements whose marker is false for the env's Python and platform are not judged.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.markers import InvalidMarker, Marker, UndefinedEnvironmentName, default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.findings import Finding, failed, passed, skipped, warning
from pytest_vllm_env.readers.pip_config import PipConfig, read_pip_config
from pytest_vllm_env.readers.pip_config import build_isolation as pip_build_isolation
from pytest_vllm_env.readers.pixi import PLATFORM
from pytest_vllm_env.readers.uv_config import UvConfig, read_uv_config
from pytest_vllm_env.readers.venv_project import Declared, Project, find_project, read_project

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

PYPI = "https://pypi.org/simple"
PYTORCH_INDEX = re.compile(r"^https?://download\.pytorch\.org/whl\b", re.I)
# What PyTorch's index is known to hold of a vLLM build's requirements (vllm#24875).
PYTORCH_INDEX_ONLY = {"cmake": "3.25.0"}
# vLLM's [build-system] cmake floor: >=3.26 (0.6 to 0.9.1), >=3.26.1 (0.9.2 on; 0.33 read).
VLLM_BUILD_CMAKE = ">=3.26.1"
# Sdists that need torch to build, by version, read from their PyPI sdists (docs/facts-additions.md,
# "Sdists whose setup.py imports torch"): "undeclared" (an isolated build fails "No module named
# 'torch'"), "unpinned" (an isolated build uses the index's newest torch), "pinned" (vLLM: the
# torch its pyproject pins). Per name, (versions, how, why), first match wins.
_NO_PYPROJECT = (
    "its setup.py imports torch but the sdist declares no build requirements (flash-attention#1421)"
)
_UNPINNED = "its [build-system] asks an unpinned torch"
TORCH_AT_BUILD: dict[str, list[tuple[str, str, str]]] = {
    "flash-attn": [("", "undeclared", _NO_PYPROJECT)],  # 2.7.2.post1 .. 2.8.3.post2 read
    "mamba-ssm": [
        (
            ">=2.3.2",
            "undeclared",
            "its setup.py imports torch but its [build-system] leaves torch out on purpose "
            "(mamba-ssm 2.3.2 on: install torch first, then build with --no-build-isolation)",
        ),
        (">=2.2.3", "unpinned", _UNPINNED),
        ("", "undeclared", _NO_PYPROJECT),  # 2.2.2 has no pyproject.toml
    ],
    "causal-conv1d": [(">=1.5.1", "unpinned", _UNPINNED), ("", "undeclared", _NO_PYPROJECT)],
    "torch-scatter": [("", "undeclared", _NO_PYPROJECT)],
    "torch-sparse": [("", "undeclared", _NO_PYPROJECT)],
    "torch-cluster": [("", "undeclared", _NO_PYPROJECT)],
    "vllm": [("", "pinned", "its [build-system] pins the torch of that vLLM release")],
}
# Releases whose sdists were read; a spec that pins none is judged by the newest it allows.
MEASURED = {
    "flash-attn": ["2.7.2.post1", "2.8.1", "2.8.3", "2.8.3.post2"],
    "mamba-ssm": [
        "2.2.2",
        "2.2.3.post2",
        "2.2.4",
        "2.2.5",
        "2.2.6.post3",
        "2.3.0",
        "2.3.1",
        "2.3.2.post1",
    ],
    "causal-conv1d": [
        "1.4.0",
        "1.5.0.post5",
        "1.5.0.post8",
        "1.5.1",
        "1.5.2",
        "1.6.2.post1",
        "1.7.0",
    ],
    "torch-scatter": ["2.1.2"],
    "torch-sparse": ["0.6.18"],
    "torch-cluster": ["1.6.3"],
}
# No wheel of any release on PyPI (measured): pip and uv always build these from the sdist.
SDIST_ONLY = {
    "flash-attn",
    "causal-conv1d",
    "mamba-ssm",
    "torch-scatter",
    "torch-sparse",
    "torch-cluster",
}


def torch_rule(name: str, spec: str = "", version: str | None = None) -> tuple[str, str] | None:
    """``(how, why)`` for a package whose build needs torch, at the release ``version`` (or
    the one ``spec`` picks: its exact pin, else the newest measured release it allows)."""
    rules = TORCH_AT_BUILD.get(canonicalize_name(name))
    if rules is None:
        return None
    if version is None:
        version = _picked_version(canonicalize_name(name), spec)
    for versions, how, why in rules:
        if not versions or version is None or _allows(versions, version):
            return how, why
    return rules[-1][1], rules[-1][2]


def _picked_version(name: str, spec: str) -> str | None:
    measured = MEASURED.get(name, [])
    try:
        specifier = SpecifierSet(spec.strip() if spec.strip() not in ("*", "") else "")
    except InvalidSpecifier:
        return measured[-1] if measured else None
    pins = [s.version for s in specifier if s.operator in ("==", "===") and "*" not in s.version]
    if pins:
        return pins[0]
    allowed = sorted(specifier.filter(measured, prereleases=True), key=Version)
    return allowed[-1] if allowed else (measured[-1] if measured else None)


def _allows(spec: str, version: str) -> bool:
    try:
        return SpecifierSet(spec).contains(version, prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return False


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
            mode = "project" if self._from_pyproject(dep) else "pip"
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

    def _from_pyproject(self, dep: PypiDep) -> bool:
        return self.project is not None and dep.where.startswith(self.project.pyproject.name)


def sdist_has_pyproject(name: str, spec: str = "", version: str | None = None) -> bool:
    """Whether the sdist pip would build ships a pyproject.toml (read from PyPI's sdists for
    the packages of :data:`TORCH_AT_BUILD`; assumed for any other)."""
    rule = torch_rule(name, spec, version)
    return rule is None or rule[1] != _NO_PYPROJECT


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
        for line in _project_dependencies(manifest.path):
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


def _project_dependencies(path: Any) -> list[str]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, tomllib.TOMLDecodeError):
        return []
    deps = data.get("project", {}).get("dependencies", [])
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


def _builds_from_source(dep: PypiDep) -> bool:
    if dep.kind in ("git", "path", "url-sdist"):
        return True
    return dep.kind == "version" and canonicalize_name(dep.name) in SDIST_ONLY


# -- judgements -----------------------------------------------------------------------------
def index_order(env: PixiEnv, opts: PypiOptions | None) -> Finding:
    """``pypi.index-order``: a PyTorch index searched before PyPI with ``first-index`` hides
    newer versions of the names it mirrors; a source build's ``cmake>=3.26.1`` cannot
    resolve (vllm#24875: "only cmake==3.25.0 is available")."""
    check = "pypi.index-order"
    if opts is None:
        return skipped(check, f"no pixi.toml / pyproject.toml [tool.pixi] for {env.prefix}")
    if opts.tool != "pixi":
        return skipped(
            check, f"judged for Pixi manifests; {env.prefix} is installed with {opts.tool}"
        )
    order = opts.search_order
    strategy = opts.index_strategy or "first-index"
    torch_first = [u for u in order if PYTORCH_INDEX.match(u)]
    pypi_listed = any(u.rstrip("/").startswith(PYPI) for u in order)
    evidence = {"search_order": order, "index_strategy": strategy}
    if not torch_first:
        return passed(check, f"uv searches {', '.join(order)} ({strategy}); no PyTorch index first")
    first_pypi = next((i for i, u in enumerate(order) if u.rstrip("/").startswith(PYPI)), None)
    ahead = first_pypi is None or order.index(torch_first[0]) < first_pypi
    if not ahead:
        return passed(check, f"PyPI is searched before {torch_first[0]}", **evidence)
    builds = [
        d
        for d in opts.deps.values()
        if _builds_from_source(d) and opts.isolated(d.name) and d.index is None
    ]
    vllm_build = [d for d in builds if canonicalize_name(d.name) == "vllm"]
    pinned = "" if pypi_listed else " (and PyPI is not listed at all: index-url replaces it)"
    torch_dep = opts.deps.get("torch")
    torch_spec = torch_dep.spec if torch_dep and torch_dep.kind == "version" else "*"
    fix_index = (
        f'give torch its own index instead: `torch = {{ version = "{torch_spec}", index = '
        f'"{torch_first[0]}" }}` in [{opts.table_prefix}pypi-dependencies] and remove '
        f"{torch_first[0]} from {opts.options_table} in {opts.manifest_name}"
    )
    if vllm_build and (strategy == "first-index" or not pypi_listed):
        have = PYTORCH_INDEX_ONLY["cmake"]
        return failed(
            check,
            f"{vllm_build[0].name} is built from source ({vllm_build[0].where}) in an isolated "
            f"env whose [build-system] asks cmake{VLLM_BUILD_CMAKE}; uv takes cmake from "
            f"{torch_first[0]}, searched first with index-strategy {strategy}{pinned}, which "
            f'holds only cmake=={have}: uv will say "only cmake=={have} is available and you '
            f'require cmake{VLLM_BUILD_CMAKE}"',
            fix_index
            + f', or set `index-strategy = "unsafe-best-match"` in {opts.options_table}'
            + (f' and add "{PYPI}" to extra-index-urls' if not pypi_listed else ""),
            **evidence,
        )
    if strategy == "first-index" or not pypi_listed:
        return warning(
            check,
            f"{torch_first[0]} is searched before PyPI with index-strategy {strategy}{pinned}: "
            "every package name it mirrors (numpy, jinja2, cmake==3.25.0 ...) resolves only "
            "from it, at its versions; a source build's cmake>=3.26 will not resolve",
            fix_index,
            **evidence,
        )
    return passed(
        check,
        f"{torch_first[0]} is searched first, but index-strategy {strategy} also looks at PyPI",
        **evidence,
    )


def build_isolation(env: PixiEnv, opts: PypiOptions | None) -> list[Finding]:
    """``pypi.build-isolation``: source builds that need the env's torch get it."""
    check = "pypi.build-isolation"
    if opts is None:
        return [
            skipped(
                check,
                f"no pixi.toml / pyproject.toml [tool.pixi] for {env.prefix}, and no project "
                "files (pyproject.toml, requirements*.txt, uv.lock) beside it: pass "
                "--vllm-project=PATH for a venv",
            )
        ]
    if opts.tool != "pixi":
        return _venv_build_isolation(env, opts)
    findings = _pixi_build_isolation(env, opts)
    if opts.companion is not None:
        # --vllm-project for a Pixi env: `pixi run pip install -r ...` into it
        findings += _venv_build_isolation(env, opts.companion)
    return findings


def _pixi_build_isolation(env: PixiEnv, opts: PypiOptions) -> list[Finding]:
    check = "pypi.build-isolation"
    torch_conda = next(
        (n for n in ("pytorch", "pytorch-gpu", "pytorch-cpu") if n in opts.conda), None
    )
    torch_version = env.version_of("torch")
    findings = []
    for key, dep in sorted(opts.deps.items()):
        rule = torch_rule(key, dep.spec if dep.kind == "version" else "")
        if rule is None or not _builds_from_source(dep):
            continue
        how, why = rule
        nbi = f"{opts.options_table} in {opts.manifest_name}"
        isolation = opts.isolation(dep)
        if isolation.isolated:
            # F5.2: a PIP_/UV_NO_BUILD_ISOLATION someone set hoping pixi reads it: it does not
            ignored = "".join(f"; {n}" for n in isolation.notes)
            add = f'add `no-build-isolation = ["{dep.name}"]` to {nbi}'
            conda_torch = (
                f"and provide torch from conda ([{opts.table_prefix}dependencies] pytorch-gpu): "
                "Pixi installs conda packages before it resolves PyPI ones"
            )
            if how == "undeclared":
                findings.append(
                    failed(
                        check,
                        f"{dep.name} ({dep.where}) is built from its sdist in an isolated env "
                        f'without torch: {why}; the build fails with "ModuleNotFoundError: '
                        f"No module named 'torch'\"{ignored}",
                        f"{add} {conda_torch}; or install a prebuilt {dep.name} wheel with "
                        f'`{dep.name} = {{ url = "<wheel for your python, torch, CUDA and '
                        "cxx11abi from the project's release page>\" }`",
                    )
                )
            else:
                findings.append(
                    warning(
                        check,
                        f"{dep.name} ({dep.where}) is built in an isolated env: {why}, so it is "
                        f"compiled against that torch, not the env's "
                        f"{'torch ' + torch_version if torch_version else 'torch'}; its "
                        "extension then fails to load (undefined torch symbols) whenever the "
                        f"two differ{ignored}",
                        f"{add} {conda_torch}",
                    )
                )
            continue
        if torch_conda:
            findings.append(
                passed(check, f"{dep.name} builds without isolation against conda's {torch_conda}")
            )
            continue
        if "torch" in opts.deps:
            findings.append(
                warning(
                    check,
                    f"{dep.name} builds without isolation, but torch comes only from "
                    f"[{opts.table_prefix}pypi-dependencies]: Pixi resolves PyPI packages "
                    "before installing them, so a fresh `pixi install` builds it before torch "
                    'is there (pixi docs: "adding torch as a PyPI dependency would be '
                    'ineffective"); it works only where torch is already installed',
                    f"provide torch from conda: `pytorch-gpu` in [{opts.table_prefix}"
                    f"dependencies] of {opts.manifest_name} (and drop the PyPI torch), or "
                    f"install a prebuilt {dep.name} wheel",
                )
            )
            continue
        findings.append(
            failed(
                check,
                f"{dep.name} builds without isolation but the env declares no torch at all",
                f"add `pytorch-gpu` to [{opts.table_prefix}dependencies] in {opts.manifest_name}",
            )
        )
    if not findings:
        return [passed(check, "no PyPI dependency here builds against torch from source")]
    return findings


# -- a venv's project: pip or uv -------------------------------------------------------------
# F5.1 (flash-attention#1421, LCKV#17, nano-vllm#96): pip 24.3.1 and uv build
# flash_attn-*.tar.gz in an isolated env ("Getting requirements to build wheel ... error ...
# No module named 'torch'"). PyPI has no flash-attn wheel, so every install builds the sdist
# unless the project points at a wheel, or the env already holds flash-attn; pip's and uv's
# own configuration (pip_config.py, uv_config.py) decide whether that build is isolated.
UV_MATCH_RUNTIME = "0.8.5"  # extra-build-dependencies match-runtime (uv#15036)
UV_TWO_PHASE = "0.8.12"  # no-build-isolation packages installed after the rest (uv#15306)
PRIMARY_INDEXES = re.compile(r"^https?://(pypi\.org/simple|download\.pytorch\.org/whl)\b", re.I)
PIP_INVERTED = "pip reads the value inverted: 0/false/no turn isolation off, 1/true/yes keep it"


def _venv_build_isolation(env: PixiEnv, opts: PypiOptions) -> list[Finding]:
    project = opts.project
    assert project is not None
    findings = [_refused_line(env, opts, *entry) for entry in project.refused_options]
    for key, dep in sorted(opts.deps.items()):
        locked = project.locked.get(key)
        rule = torch_rule(
            key, dep.spec if dep.kind == "version" else "", locked.version if locked else None
        )
        if rule is None:
            continue
        findings.append(_venv_dep(env, opts, project, key, dep, rule))
    if not findings:
        read = ", ".join(p.name for p in project.files) or "no project files"
        return [
            passed(
                "pypi.build-isolation",
                f"nothing {project.root} declares builds against torch from source here "
                f"({read}){_not_here(env, opts)}",
            )
        ]
    return findings


def _not_here(env: PixiEnv, opts: PypiOptions) -> str:
    """Requirements that need torch to build but whose marker leaves them out of this env."""
    skipped_ = [d for d in opts.not_here if torch_rule(d.name) is not None]
    if not skipped_:
        return ""
    values, _ = marker_environment(env)
    here = (
        f"Python {values['python_version']}, {values['sys_platform']} {values['platform_machine']}"
    )
    said = "; ".join(f"{d.name} ({d.where}) is only for `{d.marker}`" for d in skipped_)
    return f"; {said}: not installed here ({here})"


def _refused_line(env: PixiEnv, opts: PypiOptions, path: Path, line: int, text: str) -> Finding:
    """``--no-build-isolation`` written in a requirements file: pip and uv stop (measured:
    pip 24.3.1 and 26.3 "no such option: --no-build-isolation"; uv 0.13.9 "Unexpected '-',
    expected '-c', '-e', '-r' or the start of a requirement")."""
    option = re.search(r"--[a-z-]+", text)
    said = option.group(0) if option else text
    uv = opts.tool == "uv"
    message = (
        "\"Unexpected '-', expected '-c', '-e', '-r' or the start of a requirement\""
        if uv
        else f'"ERROR: Invalid requirement ... no such option: {said}"'
    )
    if uv:
        instead = (
            f"pass it on the command line (`uv pip install --python {env.prefix} "
            f"--no-build-isolation -r {path.name}`, torch installed first), or set "
            f"`no-build-isolation = true` under {_uv_pip_table(opts)}"
        )
    else:
        instead = (
            f"pass it on the command line (`{env.python or env.prefix / 'bin' / 'python'} -m "
            f"pip install --no-build-isolation -r {path.name}`, torch installed first), or set "
            f"`no-build-isolation = false` under [install] in {env.prefix}/pip.conf "
            f"({PIP_INVERTED})"
        )
    return failed(
        "pypi.build-isolation",
        f"{path.name} line {line} (`{text}`): {'uv' if uv else 'pip'} stops before installing "
        f"anything with {message}: a requirements file cannot turn build isolation off",
        f"remove `{said}` from {path} line {line} and {instead}",
    )


def _uv_pip_table(opts: PypiOptions) -> str:
    """Where a `uv pip` setting goes without masking anything: ``[pip]`` of the uv.toml uv
    reads, ``[tool.uv.pip]`` of a pyproject whose ``[tool.uv]`` it reads (a new uv.toml there
    would mask that table), else ``[pip]`` of a new uv.toml in the project folder."""
    found = opts.uv_config.project_file if opts.uv_config is not None else None
    if found is not None and found.kind == "pyproject.toml":
        return f"[tool.uv.pip] in {found.path}"
    if found is not None:
        return f"[pip] in {found.path}"
    root = opts.project.root if opts.project is not None else Path(".")
    return f"[pip] in {root / 'uv.toml'}"


def _venv_dep(
    env: PixiEnv,
    opts: PypiOptions,
    project: Project,
    key: str,
    dep: PypiDep,
    rule: tuple[str, str],
) -> Finding:
    check = "pypi.build-isolation"
    how, why = rule
    name, tool = dep.name, opts.tool
    locked = project.locked.get(key)
    installed = env.version_of(name)
    if installed and _keeps(installed, dep, locked):
        return passed(
            check,
            f"{name} {installed} is installed in {env.prefix} already and satisfies {dep.where}: "
            f"{tool} keeps it and builds nothing",
        )
    if locked is not None and locked.wheels:
        return passed(
            check, f"uv.lock takes {name} {locked.version} from a wheel: nothing is built"
        )
    if not _builds_from_source(dep) or dep.kind == "url-wheel":
        return passed(check, f"{name} ({dep.where}) comes from a wheel: nothing is built")
    torch_decl = project.requirement("torch")
    torch_env = env.version_of("torch")
    in_pyproject = opts._from_pyproject(dep)
    isolation = opts.isolation(dep)
    notes = "".join(f"; {n}" for n in isolation.notes)
    if isolation.refused:
        return failed(
            check,
            f"{name} ({dep.where}) is never built: {isolation.refused}{notes}",
            _refused_fix(env, opts, isolation),
        )
    if not isolation.isolated:
        return _unisolated(env, opts, project, dep, isolation, torch_decl, torch_env, notes)
    mode = "project" if in_pyproject else "pip"
    extras = opts.uv_config.extra_build_dependencies(name, mode) if opts.uv_config else []
    extra = [d for d, _ in extras if _req_name(d.requirement) == "torch"]
    if extra:
        return _extra_torch(env, project, dep, extra[0], torch_decl, torch_env)
    uv = project.uv
    sources = project.wheel_sources + (uv.indexes if uv is not None else [])
    other = [u for u in sources if not PRIMARY_INDEXES.match(u)]
    source = "its sdist (PyPI has no wheel of it)" if key in SDIST_ONLY else "source"
    fix = (
        _uv_fix(env, opts, project, dep, isolation, torch_decl, torch_env)
        if tool == "uv" and in_pyproject
        else _pip_fix(env, opts, project, dep, isolation, torch_decl, torch_env)
    )
    if how == "undeclared":
        summary = (
            f"{name} ({dep.where}) is built by {tool} from {source} in an isolated env "
            f"without torch{_isolated_because(opts, isolation)}: {why}; the build fails "
            f"with \"ModuleNotFoundError: No module named 'torch'\"{notes}"
        )
        if other:
            return warning(
                check,
                f"{summary}, unless {', '.join(other)} serves a {name} wheel for this Python",
                fix,
            )
        return failed(check, summary, fix)
    return warning(
        check,
        f"{name} ({dep.where}) is built by {tool} in an isolated env"
        f"{_isolated_because(opts, isolation)}: {why}, so it is compiled against that torch, "
        f"not the env's {'torch ' + torch_env if torch_env else 'torch'}; its extension then "
        f"fails to load (undefined torch symbols) whenever the two differ{notes}",
        fix,
    )


def _isolated_because(opts: PypiOptions, isolation: Isolation) -> str:
    """Why the build is isolated, when it is worth saying: always for pip (users expect a
    requirements file or their pip.conf to turn it off), and when a setting decided."""
    if opts.tool == "pip":
        if isolation.default:
            return (
                " (pip isolates every build by default; a requirements file cannot turn it "
                "off, and no pip.conf or PIP_NO_BUILD_ISOLATION here does)"
            )
        return f" ({isolation.because} keeps isolation on: {PIP_INVERTED})"
    if isolation.default:
        return ""
    return f" ({isolation.because})"


def _unisolated(
    env: PixiEnv,
    opts: PypiOptions,
    project: Project,
    dep: PypiDep,
    isolation: Isolation,
    torch_decl: Declared | None,
    torch_env: str | None,
    notes: str,
) -> Finding:
    """The build runs in the env itself: it needs the env's torch there before it starts."""
    check = "pypi.build-isolation"
    name, tool = dep.name, opts.tool
    via = isolation.because
    if isolation.legacy:
        via = (
            f"pip {opts.pip_version}'s legacy setup.py path: setuptools and wheel are in the env "
            "and the sdist has no pyproject.toml; pip >= 25.3 isolates it"
        )
    if torch_env:
        return passed(
            check,
            f"{name} ({dep.where}) builds without isolation ({via}) against the env's torch "
            f"{torch_env} (a source build compiles CUDA kernels unless its setup.py finds a "
            f"prebuilt wheel){notes}",
        )
    if torch_decl is not None and tool == "uv" and opts._from_pyproject(dep):
        return passed(
            check,
            f"{name} ({dep.where}) builds without isolation ({via}) against torch from "
            f"{torch_decl.where}, which uv >= {UV_TWO_PHASE} installs first (a source build "
            f"compiles CUDA kernels unless its setup.py finds a prebuilt wheel){notes}",
        )
    uv = tool == "uv"
    if torch_decl is not None:
        # pip and `uv pip` build a sdist's metadata while they resolve, before they install
        # anything: torch listed beside it is not there yet (uv's own hint in LCKV#17:
        # "`uv pip install torch` into the environment and re-run with --no-build-isolation")
        return failed(
            check,
            f"{name} ({dep.where}) builds without isolation ({via}), but {env.prefix} has no "
            f"torch: {'uv' if uv else 'pip'} builds {name} while it resolves, before it installs "
            f'torch from {torch_decl.where}, so the build fails with "No module named '
            f"'torch'\"{notes}",
            f"install torch first: `{fixes.pip_install(env, 'torch' + torch_decl.spec, uv=uv)}`, "
            "then run the install again",
        )
    declare = (
        f'add "torch" to [project.dependencies] in {project.pyproject} (uv >= {UV_TWO_PHASE} '
        f"installs it before {name})"
        if uv and opts._from_pyproject(dep)
        else f"install torch first: `{fixes.pip_install(env, 'torch', uv=uv)}`"
    )
    return failed(
        check,
        f"{name} ({dep.where}) builds without isolation ({via}), but neither the project nor "
        f"{env.prefix} has torch: the build fails with \"No module named 'torch'\"{notes}",
        declare,
    )


def _extra_torch(
    env: PixiEnv,
    project: Project,
    dep: PypiDep,
    extra: Any,
    torch_decl: Any,
    torch_env: str | None,
) -> Finding:
    """``[tool.uv.extra-build-dependencies]`` gives the isolated build a torch: which one."""
    check = "pypi.build-isolation"
    name = dep.name
    if extra.match_runtime:
        if torch_decl is not None:
            return passed(
                check,
                f"{name} builds in isolation with the project's own torch ({torch_decl.where}; "
                "extra-build-dependencies, match-runtime = true)",
            )
        return failed(
            check,
            f"{name}'s extra build dependency torch has match-runtime = true, but the project "
            'declares no torch: uv stops with "`torch` was declared as an extra build '
            'dependency with `match-runtime = true`, but was not found in the resolution" '
            "(uv#15661)",
            f'add "torch{"==" + torch_env if torch_env else ""}" to [project.dependencies] in '
            f"{project.pyproject}",
        )
    runtime = torch_env or (_exact_pin(torch_decl.spec) if torch_decl is not None else None)
    try:
        spec = Requirement(extra.requirement).specifier
    except InvalidRequirement:
        spec = SpecifierSet()
    if runtime and str(spec) and spec.contains(runtime, prereleases=True):
        return passed(
            check,
            f"{name} builds in isolation with {extra.requirement} (extra-build-dependencies), "
            f"the torch {runtime} it runs with",
        )
    return warning(
        check,
        f"{name} builds in isolation with `{extra.requirement}` from "
        f"[tool.uv.extra-build-dependencies], not necessarily the env's "
        f"{'torch ' + runtime if runtime else 'torch'}: it is compiled against (or its "
        "setup.py fetches a prebuilt wheel for) that torch, and fails to load with undefined "
        "torch symbols when the two differ",
        f'write `{name} = [{{ requirement = "torch", match-runtime = true }}]` in '
        f"[tool.uv.extra-build-dependencies] of {project.pyproject} (uv >= {UV_MATCH_RUNTIME})",
    )


def _uv_fix(
    env: PixiEnv,
    opts: PypiOptions,
    project: Project,
    dep: PypiDep,
    isolation: Isolation,
    torch_decl: Any,
    torch_env: str | None,
) -> str:
    """uv sync/lock: the project-level file uv reads (a uv.toml masks [tool.uv])."""
    name = dep.name
    declare = (
        ""
        if torch_decl is not None
        else f'; torch must be a dependency too: add "torch'
        f'{"==" + torch_env if torch_env else ""}" to [project.dependencies]'
    )
    first = _unforce(env, isolation)
    found = opts.uv_config.project_file if opts.uv_config is not None else None
    if found is not None and found.kind == "uv.toml":
        target, note, table = (
            found.path,
            f" (uv reads it, not [tool.uv] of {project.pyproject})",
            "",
        )
        where = "at its top"
    else:
        at = f" (line {project.uv.line})" if project.uv is not None and project.uv.line else ""
        target, note, table, where = project.pyproject, "", "tool.uv.", f"in [tool.uv]{at}"
    return (
        f"{first}add to {target}{note}: `[{table}extra-build-dependencies]` with "
        f'`{name} = [{{ requirement = "torch", match-runtime = true }}]` (uv >= '
        f'{UV_MATCH_RUNTIME}), or `no-build-isolation-package = ["{name}"]` {where} '
        f"(uv >= {UV_TWO_PHASE} installs torch before it){declare}"
    )


def _pip_fix(
    env: PixiEnv,
    opts: PypiOptions,
    project: Project,
    dep: PypiDep,
    isolation: Isolation,
    torch_decl: Any,
    torch_env: str | None,
) -> str:
    """pip, or `uv pip` from a requirements file: install it unisolated first, or turn
    isolation off in the installer's own configuration."""
    uv = opts.tool == "uv"
    name = dep.name
    if dep.kind != "version":
        requirement = f"{name} @ {dep.spec}"
    else:
        requirement = name + (dep.spec if dep.spec not in ("", "*") else "")
    first = ["packaging", "ninja"]
    if not torch_env:
        first.insert(0, "torch" + (torch_decl.spec if torch_decl is not None else ""))
    if uv:
        first.append("setuptools")
    before = fixes.pip_install(env, *first, uv=uv)
    build = fixes.pip_install(env, requirement, options=("--no-build-isolation",), uv=uv)
    torch_first = "" if torch_env else ", torch installed first"
    if isolation.default and not uv:
        config = (
            f"; or turn isolation off for every pip install into this env: "
            f"`no-build-isolation = false` under [install] in {env.prefix}/pip.conf "
            f"({PIP_INVERTED}){torch_first}"
        )
    elif isolation.default:
        config = (
            f'; or `no-build-isolation-package = ["{name}"]` under {_uv_pip_table(opts)}'
            f"{torch_first}"
        )
    else:
        config = ""
    return (
        f"{_unforce(env, isolation)}install {'torch, then ' if not torch_env else ''}{name} "
        f"without isolation before the rest: `{before} && {build}` ({'uv' if uv else 'pip'} "
        f"then keeps it when it reads {dep.where}); or replace that line with a prebuilt "
        f"wheel: `{name} @ <wheel for your python, torch, CUDA and cxx11abi from the "
        f"project's release page>`{config}"
    )


def _unforce(env: PixiEnv, isolation: Isolation) -> str:
    """The first step when a setting, not the default, keeps isolation on: change it."""
    setting = isolation.setting
    if isolation.default or setting is None:
        return ""
    if getattr(setting, "variable", None):  # pip: PIP_NO_BUILD_ISOLATION=1 and the like
        return f"{_var_fix(env, setting.variable, '0', setting.origin)} ({PIP_INVERTED}); or "
    if hasattr(setting, "section"):  # pip: a pip.conf line
        at = f" line {setting.line}" if setting.line else ""
        return f"change {setting.file}{at} to `{setting.key} = false` ({PIP_INVERTED}); or "
    # uv: `no-build-isolation = false` isolates every build and cancels the package list
    return f"remove `{setting.key} = false` from {setting.where}; then "


def _refused_fix(env: PixiEnv, opts: PypiOptions, isolation: Isolation) -> str:
    """The installer stops before building anything: what to change so that it runs."""
    setting = isolation.setting
    if opts.tool == "pip" and setting is not None and getattr(setting, "variable", None):
        return (
            f"{_var_fix(env, setting.variable, '0', setting.origin)} ({PIP_INVERTED}), or remove it"
        )
    if opts.tool == "pip" and setting is not None:
        at = f" line {setting.line}" if setting.line else ""
        return f"change {setting.file}{at} to `{setting.key} = false` ({PIP_INVERTED})"
    if opts.tool == "uv" and "UV_NO_BUILD_ISOLATION=" in isolation.refused:
        origin = opts.uv_config.environ["UV_NO_BUILD_ISOLATION"][1] if opts.uv_config else ""
        return (
            f"{_var_fix(env, 'UV_NO_BUILD_ISOLATION', '1', origin)} (uv: 1/true turn "
            "isolation off), or remove it"
        )
    files = ", ".join(dict.fromkeys(re.findall(r"(/[^:\s]+):", isolation.refused)))
    return f"fix or remove {files or 'the configuration file named'}: the installer cannot read it"


def _var_fix(env: PixiEnv, name: str, value: str, origin: str) -> str:
    """Set ``name=value`` where it is set now: the shell, or the env's activation."""
    if not origin or origin.startswith("the shell"):
        return f"`export {name}={value}` in the shell or job that runs the install"
    if origin.startswith("[") or "activation" in origin:
        return fixes.set_var(env, name, value)
    return f"set {name}={value} in {origin}"


def _keeps(installed: str, dep: PypiDep, locked: Any) -> bool:
    """pip and uv keep an installed release that satisfies the requirement (uv.lock: the
    locked version)."""
    if locked is not None:
        return installed == locked.version
    if dep.kind != "version":
        return False
    try:
        return SpecifierSet(dep.spec if dep.spec != "*" else "").contains(
            installed, prereleases=True
        )
    except (InvalidSpecifier, InvalidVersion):
        return False


def _req_name(text: str) -> str:
    try:
        return canonicalize_name(Requirement(text).name)
    except InvalidRequirement:
        return ""


def _exact_pin(spec: str) -> str | None:
    try:
        pins = [s.version for s in SpecifierSet(spec) if s.operator == "=="]
    except InvalidSpecifier:
        return None
    return pins[0] if pins and "*" not in pins[0] else None
