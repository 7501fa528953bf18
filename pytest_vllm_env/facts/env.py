"""The environment being judged: where it is, what is installed, what activation sets.

Everything here is read statically: ``conda-meta/*.json`` for conda packages, the
``*.dist-info`` folders of the env's site-packages for Python distributions (through
``importlib.metadata`` on that path, never by importing them). The one thing that runs is
activation: ``pixi shell-hook --json`` when a ``pixi`` binary is on PATH (pixi then runs the
activation scripts), otherwise the manifest's ``activation.env`` tables plus the env's
``etc/conda/activate.d`` scripts (a venv's ``bin/activate``, the manifest's ``[activation]
scripts``), sourced in a bash subprocess with a timeout so that their exports can be read
back. With ``--vllm-static`` (``PixiEnv.static``) nothing runs: the scripts are read
(:mod:`pytest_vllm_env.facts.static_activation`).

The target env is not the pytest env: :meth:`PixiEnv.environ` gives the environment a
subprocess of the target (its Python, its nvcc, cmake) must run with.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.utils import canonicalize_name

from pytest_vllm_env import files, proc
from pytest_vllm_env.readers.pixi import Manifest, ManifestError, find_manifest, load_manifest

if TYPE_CHECKING:
    from packaging.requirements import Requirement

ACTIVATION_TIMEOUT = 30.0
# Variables of an outer activation that must not leak into the judged env's environment.
_OUTER_VARS = re.compile(r"^(CONDA_|PIXI_|_CE_|_CONDA|VIRTUAL_ENV$|PYTHONHOME$|PYTHONPATH$)")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class EnvError(Exception):
    """The env cannot be located or is not an env; the message names the path and the fix."""


@dataclass(frozen=True)
class CondaPackage:
    """One ``conda-meta/<name>-<version>-<build>.json`` record."""

    name: str
    version: str
    build: str
    channel: str
    record: Path


def requirement_of(requires: Iterable[str], names: Sequence[str]) -> Requirement | None:
    """The first of ``requires`` (a dist's Requires-Dist lines) naming one of ``names``
    outside extras (vLLM's ``xformers==0.0.31``, ``nvidia-cutlass-dsl[cu13]==4.6.0``); None
    when none does."""
    from packaging.requirements import InvalidRequirement, Requirement

    for text in requires:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.name.lower() in names and (req.marker is None or req.marker.evaluate({"extra": ""})):
            return req
    return None


@dataclass(frozen=True)
class PythonDist:
    """One installed Python distribution, read from its ``.dist-info`` metadata."""

    name: str
    version: str
    path: Path
    requires: tuple[str, ...] = ()

    @property
    def location(self) -> Path:
        """The site-packages folder it is installed in."""
        return self.path.parent


@dataclass(frozen=True)
class Problem:
    """Something in the env that could not be read; judged by ``env.*`` checks."""

    path: Path
    what: str
    # no permission (EACCES/EPERM): the files are fine, this user may not read them
    denied: bool = False


def _problem(path: Path, what: str, exc: BaseException) -> Problem:
    """A problem whose reason is ``exc``: ``denied`` when it is a permission error."""
    return Problem(path, what, denied=isinstance(exc, PermissionError))


@dataclass
class PixiEnv:
    """A located environment and the facts read from it."""

    prefix: Path
    name: str | None = None
    manifest_path: Path | None = None
    manifest_error: str = ""
    conda_packages: dict[str, CondaPackage] = field(default_factory=dict)
    python_dists: dict[str, PythonDist] = field(default_factory=dict)
    site_packages: list[Path] = field(default_factory=list)
    python: Path | None = None
    python_version: str | None = None
    # why there is no usable bin/python3 or bin/python when one is there ("a dangling symlink
    # to ...", "cannot be read: Permission denied"); '' when it is fine or simply absent
    python_problem: str = ""
    python_denied: bool = False  # python_problem is this user's permission, not the env's
    problems: list[Problem] = field(default_factory=list)
    base_environ: dict[str, str] = field(default_factory=dict, repr=False)
    # Lock mode (facts/lock_env.py): the pixi.lock this env's packages were read from, because it
    # is not installed or --vllm-from-lock asked; None for an env read from its files.
    locked: Any = field(default=None, repr=False)
    # --vllm-static: nothing of the env may run (activation scripts are read, not sourced; pixi
    # shell-hook is not called; tools of the env are not started: proc.confine refuses them)
    static: bool = False

    # -- reading ---------------------------------------------------------------------------
    @classmethod
    def read(
        cls,
        prefix: Path,
        *,
        name: str | None = None,
        manifest: Path | None = None,
        base_environ: Mapping[str, str] | None = None,
    ) -> PixiEnv:
        """Read an env at ``prefix``; raise :class:`EnvError` if it is not one."""
        prefix = _checked_prefix(prefix)
        env = cls(prefix=prefix, name=name, manifest_path=manifest)
        env.base_environ = dict(os.environ if base_environ is None else base_environ)
        env._read_conda_meta()
        env._read_python()
        env._read_dists()
        return env

    def _read_conda_meta(self) -> None:
        meta = self.prefix / "conda-meta"
        if not meta.is_dir():
            return
        try:
            # listed with scandir, not glob: glob passes over a folder it may not read, and the
            # env then had no conda packages, silently
            records = sorted(p for p in meta.iterdir() if p.name.endswith(".json"))
        except OSError as exc:
            self.problems.append(_problem(meta, f"cannot list: {exc.strerror or exc}", exc))
            return
        for record in records:
            try:
                # conda-meta records list every file of a package: bounded as RECORD files.
                data = files.load_json(record, files.RECORD)
                pkg = CondaPackage(
                    name=_scalar(data["name"]),
                    version=_scalar(data["version"]),
                    build=_scalar(data.get("build", "")),
                    channel=_scalar(data.get("channel", "")),
                    record=record,
                )
            except OSError as exc:
                self.problems.append(_problem(record, f"cannot read: {exc.strerror or exc}", exc))
                continue
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                what = (
                    str(exc)
                    if isinstance(exc, files.TooDeep)
                    else "not JSON"
                    if isinstance(exc, ValueError)
                    else f"no {exc} field"
                    if isinstance(exc, KeyError)
                    else "not a JSON object of text fields"
                )
                self.problems.append(Problem(record, f"conda-meta record is {what}"))
                continue
            self.conda_packages[pkg.name] = pkg

    def _read_python(self) -> None:
        for candidate in (self.prefix / "bin" / "python3", self.prefix / "bin" / "python"):
            if _exists(candidate):
                self.python = candidate
                break
        if self.python is None:
            self.python_problem, self.python_denied = _python_problem(self.prefix / "bin")
        pkg = self.conda_packages.get("python")
        if pkg:
            self.python_version = pkg.version
        for lib in _safe_glob(self.prefix / "lib", "python3*", self.problems):
            sp = lib / "site-packages"
            if _is_dir(sp):
                self.site_packages.append(sp)
                if not self.python_version:
                    self.python_version = lib.name.removeprefix("python")
        cfg = self.prefix / "pyvenv.cfg"
        if not self.python_version and _exists(cfg):
            text = _read_text(cfg, self.problems)
            match = re.search(r"^version(?:_info)?\s*=\s*([\d.]+)", text, re.M)
            self.python_version = match.group(1) if match else None

    def _read_dists(self) -> None:
        for sp in self.site_packages:
            try:
                dists = list(metadata.distributions(path=[str(sp)]))
            except (OSError, RuntimeError) as exc:  # a symlink loop, an unreadable folder
                self.problems.append(_problem(sp, f"cannot list distributions: {exc}", exc))
                continue
            for dist in dists:
                try:
                    name, version, requires = _dist_headers(dist)
                except (OSError, RuntimeError, KeyError, TypeError) as exc:
                    where = getattr(dist, "_path", sp)
                    why = exc.strerror if isinstance(exc, files.Refused) else exc
                    path = Path(exc.filename) if isinstance(exc, files.Refused) else Path(where)
                    self.problems.append(_problem(path, f"unreadable metadata: {why}", exc))
                    continue
                if not name:
                    continue
                key = canonicalize_name(name)
                path = Path(getattr(dist, "_path", sp))
                # The first site-packages wins, as on sys.path.
                self.python_dists.setdefault(key, PythonDist(name, version or "", path, requires))

    # -- questions -------------------------------------------------------------------------
    @property
    def label(self) -> str:
        """A short id for test ids and headers: the env name, else the prefix."""
        return self.name or str(self.prefix)

    @property
    def is_conda(self) -> bool:
        """A conda or Pixi env (it has ``conda-meta/``), not a pip venv."""
        return _is_dir(self.prefix / "conda-meta")

    def dist(self, name: str) -> PythonDist | None:
        """The installed Python distribution ``name`` (any spelling: ``flash_attn``,
        ``flash-attn``), read from its ``.dist-info``; None when absent."""
        return self.python_dists.get(canonicalize_name(name))

    def conda(self, name: str) -> CondaPackage | None:
        """The conda package ``name`` from ``conda-meta``; None when absent."""
        return self.conda_packages.get(name)

    def version_of(self, name: str) -> str | None:
        """A package's version, from Python metadata first, then conda-meta."""
        dist = self.dist(name)
        if dist:
            return dist.version
        pkg = self.conda(name)
        return pkg.version if pkg else None

    def package_file(self, dist_name: str, relpath: str) -> Path | None:
        """A file of an installed distribution, e.g. ``("vllm", "vllm/model_executor/...")``."""
        dist = self.dist(dist_name)
        if not dist:
            return None
        candidate = dist.location / relpath
        return candidate if _exists(candidate) else None

    def package_text(self, dist_name: str, relpath: str) -> str | None:
        """The text of :meth:`package_file` (undecodable bytes replaced); None when the
        distribution, the file, or its reading fails. A check that needs the file uses
        :meth:`package_text_or_why`, which tells absent from unreadable."""
        path = self.package_file(dist_name, relpath)
        if path is None:
            return None
        try:
            return files.read_text(path, files.SOURCE)
        except OSError:  # a FIFO, a device, a file too big to be source: none to read
            return None

    def package_text_or_why(self, dist_name: str, relpath: str) -> tuple[str | None, str]:
        """:meth:`package_text`, telling absent from unreadable: ``(None, "")`` when the
        distribution or the file is not there (not installed); ``(None, why)`` when the file
        is there and cannot be read (a FIFO, a device, a dangling symlink, no permission):
        then the subject that needs it is an error naming it, never "not installed"."""
        dist = self.dist(dist_name)
        if not dist:
            return None, ""
        return files.read_text_if_present(dist.location / relpath, files.SOURCE)

    @cached_property
    def manifest(self) -> Manifest | None:
        """The parsed Pixi manifest (:class:`pytest_vllm_env.readers.pixi.Manifest`); None without
        one, or when it does not parse (``manifest_error`` then says why)."""
        if not self.manifest_path:
            return None
        try:
            return load_manifest(self.manifest_path)
        except ManifestError as exc:
            self.manifest_error = str(exc)
            return None

    @cached_property
    def vllm_in_other_envs(self) -> dict[str, str]:
        """An installed Pixi env that holds no vLLM: ``{env: vLLM version}`` for the other
        installed envs of its workspace that do (``<ws>/.pixi/envs/NAME``, read statically
        from their conda-meta and dist-info, nothing run): where the workspace's vLLM lives
        (lock mode says the same from pixi.lock: ``LockSource.vllm_elsewhere``). Empty when
        this env has vLLM, or has no manifest or name."""
        manifest = self.manifest
        if self.locked is not None or manifest is None or not self.name or self.version_of("vllm"):
            return {}
        found: dict[str, str] = {}
        for name in sorted(manifest.environments()):
            # a name is a folder under .pixi/envs: never one that leaves it ("../x")
            if name == self.name or not _ENV_NAME.match(name):
                continue
            version = installed_vllm(manifest.env_prefix(name))
            if version:
                found[name] = version
        return found

    # -- activation ------------------------------------------------------------------------
    @cached_property
    def activation(self) -> Activation:
        """What activating this env sets, computed once (it runs scripts)."""
        return compute_activation(self)

    def environ(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The whole environment a subprocess of the target env runs with."""
        env = dict(self.activation.environ)
        if extra:
            env.update(extra)
        return env

    def which(self, program: str) -> Path | None:
        """Where the activated env's PATH finds ``program``."""
        return proc.which(program, self.environ().get("PATH"))


_ENV_NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # pixi: lowercase letters, digits, dashes


def installed_vllm(prefix: Path) -> str | None:
    """The vLLM version installed in the env at ``prefix`` (None: none, or not installed),
    read as :class:`PixiEnv` reads it, for this one package: a ``vllm-*.dist-info`` of its
    site-packages (first, as ``version_of``), else conda-meta's ``vllm`` record. Only the
    files named for vLLM are opened; one that cannot be read is passed over (this env is not
    the one judged: ``env.*`` judges its own)."""
    if not _is_dir(prefix / "conda-meta"):
        return None
    for lib in _safe_glob(prefix / "lib", "python3*", []):
        for info in _safe_glob(lib / "site-packages", "vllm-*.dist-info", []):
            text, _ = files.read_text_if_present(info / "METADATA", files.CONFIG)
            headers = dict(
                line.partition(":")[::2]
                for line in (text or "").replace("\r\n", "\n").split("\n\n", 1)[0].splitlines()
            )
            if canonicalize_name(headers.get("Name", "").strip()) == "vllm":
                return headers.get("Version", "").strip() or "?"
    for record in _safe_glob(prefix / "conda-meta", "vllm-*.json", []):
        try:
            data = files.load_json(record, files.RECORD)
            if _scalar(data["name"]) == "vllm":
                return _scalar(data["version"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return None


@dataclass
class Activation:
    """The result of activating an env."""

    environ: dict[str, str]
    # variable -> where it was set: "[activation.env] in pixi.toml", "etc/conda/activate.d/x.sh"
    sources: dict[str, str] = field(default_factory=dict)
    # "pixi" (pixi shell-hook ran the scripts), "sourced" (we sourced them in bash), "static"
    # (nothing ran: tables and env_vars.d only, or --vllm-static read the scripts)
    method: str = "static"
    problems: list[str] = field(default_factory=list)
    # --vllm-static: the scripts read instead of sourced, and their lines not evaluated
    not_run: list[str] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)

    def changed(self, base: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in self.environ.items() if base.get(k) != v}


def compute_activation(env: PixiEnv) -> Activation:
    """Activate ``env`` without touching it: pixi's own answer when possible, else ours."""
    base = {k: v for k, v in env.base_environ.items() if not _OUTER_VARS.match(k)}
    manifest = env.manifest
    pixi = shutil.which("pixi", path=env.base_environ.get("PATH"))
    if env.locked is not None:
        pixi = None  # `pixi shell-hook` installs a missing env first: never in lock mode
    if env.static:
        pixi = None  # --vllm-static: shell-hook would run the env's activation scripts
    if pixi and manifest and env.name:
        result = proc.run(
            # --frozen: never rewrite pixi.lock; --no-install: never touch the env (without
            # them shell-hook installs or updates the env first: principle 6)
            [pixi, "shell-hook", "--json", "--frozen", "--no-install"]
            + ["--manifest-path", manifest.path, "-e", env.name],
            env=env.base_environ,
            timeout=ACTIVATION_TIMEOUT,
        )
        if result.ok:
            try:
                variables = files.loads_json(result.stdout)["environment_variables"]
                environ = {**base, **{str(k): str(v) for k, v in variables.items()}}
                return Activation(environ, {k: "pixi shell-hook" for k in variables}, "pixi")
            except (ValueError, KeyError, TypeError):
                pass
        fallback_note = f"pixi shell-hook failed, activated statically: {result.describe()}"
    else:
        fallback_note = ""

    environ = dict(base)
    sources: dict[str, str] = {}
    problems = [fallback_note] if fallback_note else []
    prefix = str(env.prefix)
    old_path = environ.get("PATH", os.defpath)
    environ["PATH"] = f"{prefix}/bin{os.pathsep}{old_path}" if old_path else f"{prefix}/bin"
    environ["CONDA_PREFIX"] = prefix
    environ["CONDA_DEFAULT_ENV"] = env.name or prefix
    sources.update(PATH="activation", CONDA_PREFIX="activation")
    if manifest and env.name:
        environ["PIXI_PROJECT_ROOT"] = str(manifest.root)
        environ["PIXI_PROJECT_MANIFEST"] = str(manifest.path)
        environ["PIXI_PROJECT_NAME"] = manifest.workspace_name
        environ["PIXI_ENVIRONMENT_NAME"] = env.name
    # conda packages may ship variables as JSON (etc/conda/env_vars.d).
    for record in _safe_glob(env.prefix / "etc" / "conda" / "env_vars.d", "*.json", []):
        try:
            for key, value in files.load_json(record).items():
                environ[str(key)] = _scalar(value)
                sources[str(key)] = str(record.relative_to(env.prefix))
        except OSError as exc:
            problems.append(f"{record}: cannot read: {exc.strerror or exc}")
        except (ValueError, AttributeError):
            problems.append(f"{record}: not a JSON object")
        except TypeError as exc:
            problems.append(f"{record}: {exc}")
    # `conda env config vars set -p PREFIX NAME=VALUE` keeps them in conda-meta/state, and
    # `conda activate` exports them after env_vars.d (conda/core/prefix_data.py,
    # PrefixData.get_environment_env_vars): the fixes for a conda prefix set them there
    state = env.prefix / "conda-meta" / "state"
    if env.is_conda and _exists(state):
        try:
            variables = files.load_json(state).get("env_vars") or {}
            for key, value in variables.items():
                environ[str(key)] = _scalar(value)
                sources[str(key)] = "conda-meta/state (conda env config vars)"
        except OSError as exc:
            problems.append(f"{state}: cannot read: {exc.strerror or exc}")
        except (ValueError, AttributeError, TypeError):
            problems.append(f"{state}: not a JSON object with env_vars")
    if manifest and env.name:
        for key, raw, where in manifest.activation_env(env.name):
            environ[key] = expand(raw, environ)
            sources[key] = f"{where} in {manifest.path.name}"
    elif env.manifest_error:
        problems.append(env.manifest_error)
    scripts = _safe_glob(env.prefix / "etc" / "conda" / "activate.d", "*.sh", [])
    if not env.is_conda and _exists(env.prefix / "bin" / "activate"):
        # A venv's activation is its bin/activate: the exports the venv fixes ask for
        # (CUDA_HOME, PATH) are kept there, and a build in the activated venv has them.
        scripts.append(env.prefix / "bin" / "activate")
    if manifest and env.name:
        scripts += [s for s in manifest.activation_scripts(env.name) if s.suffix == ".sh"]
    if env.locked is not None:
        scripts = []  # lock mode: nothing is installed for them to act on; tables only
    # A script that is no regular file (a FIFO would block the shell that sources it until
    # the activation timeout) is not sourced: named instead.
    for script in [s for s in scripts if _exists(s) and not files.regular(s)]:
        problems.append(f"{script}: not sourced: not a regular file ({files.describe(script)})")
        scripts.remove(script)
    if scripts and env.static:
        from pytest_vllm_env.facts.static_activation import read_scripts

        environ, script_sources, script_problems, unread = read_scripts(scripts, environ)
        sources.update(script_sources)
        problems.extend(script_problems)
        not_run = [str(s) for s in scripts]
        return Activation(environ, sources, "static", problems, not_run, unread)
    if scripts:
        environ, script_sources, script_problems = _source_scripts(scripts, environ)
        sources.update(script_sources)
        problems.extend(script_problems)
        return Activation(environ, sources, "sourced", problems)
    return Activation(environ, sources, "static", problems)


def _source_scripts(
    scripts: list[Path], environ: dict[str, str]
) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Source each script in its own bash, starting from what the previous one left.

    One process per script so that a script that kills its shell (conda-forge's cuda-nvcc
    script under ``set -u``: FACTS.md) is reported by name and the others still count.
    """
    bash = shutil.which("bash") or "/bin/bash"
    sources: dict[str, str] = {}
    problems: list[str] = []
    current = dict(environ)
    for script in scripts:
        result = proc.run(
            [bash, "--noprofile", "--norc", "-c", '. "$_VLLM_ENV_SCRIPT" >&2 && env -0'],
            env={**current, "_VLLM_ENV_SCRIPT": str(script)},
            timeout=ACTIVATION_TIMEOUT,
        )
        if not result.ok:
            why = (
                result.describe()
                if result.timed_out
                else (f"exited {result.returncode}: {result.stderr.strip()[-300:]}")
            )
            problems.append(f"{script} failed when sourced ({why})")
            continue
        after = dict(e.split("=", 1) for e in result.stdout.split("\0") if "=" in e)
        for noise in ("_VLLM_ENV_SCRIPT", "_", "SHLVL", "PWD", "OLDPWD"):
            if noise not in current:
                after.pop(noise, None)
        for key, value in after.items():
            if current.get(key) != value:
                sources[key] = str(script)
        current = after
    return current, sources, problems


def expand(value: str, environ: Mapping[str, str]) -> str:
    """Expand ``$VAR`` and ``${VAR}`` the way a POSIX shell does for an ``export`` line."""
    return _VAR.sub(lambda m: environ.get(m.group(1) or m.group(2), ""), value)


def _dist_headers(dist: metadata.Distribution) -> tuple[str | None, str | None, tuple[str, ...]]:
    """Name, Version and Requires-Dist of an installed distribution.

    A ``.dist-info``'s METADATA is read up to its first blank line, the headers: the email
    parser ``importlib.metadata`` uses took 75 ms for the 197 packages of a ``pip install
    vllm`` venv (5 ms this way), and ``.version``/``.requires`` parse the file again each.
    Other layouts (``.egg-info``) go through ``importlib.metadata``."""
    path = Path(getattr(dist, "_path", ""))
    # importlib.metadata would open METADATA, PKG-INFO or requires.txt whatever they are (a
    # FIFO blocks it for ever): each is read here only when it is a regular file.
    for name in ("METADATA", "PKG-INFO", "requires.txt"):
        if _exists(path / name) and not files.regular(path / name):
            raise files.Refused(f"not a regular file ({files.describe(path / name)})", path / name)
    if path.suffix == ".egg-info" and _exists(path) and not _is_dir(path):
        if not files.regular(path):
            raise files.Refused(f"not a regular file ({files.describe(path)})", path)
    if path.suffix == ".dist-info" and _exists(path / "METADATA"):
        text = files.read_text(path / "METADATA", files.CONFIG)
        name = version = None
        requires: list[str] = []
        for line in text.replace("\r\n", "\n").split("\n\n", 1)[0].splitlines():
            key, _, value = line.partition(":")
            if key == "Name":
                name = value.strip()
            elif key == "Version":
                version = value.strip()
            elif key == "Requires-Dist":
                requires.append(value.strip())
        if name:
            return name, version, tuple(requires)
    meta = dist.metadata
    listed = meta.get_all("Requires-Dist")
    return (
        meta["Name"],
        meta["Version"],
        tuple(listed if listed is not None else dist.requires or ()),
    )


# -- locating ------------------------------------------------------------------------------
@dataclass(frozen=True)
class EnvSpec:
    """Where the env came from, for the report header and error messages."""

    prefix: Path
    name: str | None
    manifest: Path | None
    source: str


def locate(
    value: str | None,
    *,
    manifest: str | None,
    rootdir: Path,
    environ: Mapping[str, str],
    default_prefix: str,
) -> EnvSpec:
    """Resolve ``--vllm-env`` (a prefix or a Pixi env name) to an env; raise EnvError."""
    manifest_path: Path | None = None
    if manifest:
        manifest_path = Path(manifest).expanduser()
        if manifest_path.is_dir():
            for name in ("pixi.toml", "pyproject.toml"):
                if (manifest_path / name).is_file():
                    manifest_path = manifest_path / name
                    break
        if not manifest_path.is_file():
            raise EnvError(f"--pixi-manifest {manifest}: no such file")
    else:
        manifest_path = find_manifest(rootdir)

    if value:
        looks_like_path = os.sep in value or value.startswith(".") or value.startswith("~")
        candidate = Path(value).expanduser()
        if looks_like_path or candidate.exists():
            prefix = _abs(candidate)
            if not manifest and not _lexists(prefix) and _workspace_manifest(prefix) is None:
                # nothing there and no workspace declares it (the README's example path,
                # a typo): say so, rather than judge a manifest found near the working dir
                raise EnvError(_no_such_env(prefix))
            name, owner = _pixi_env_of(prefix, manifest_path if manifest else None)
            if manifest:  # given: kept even when it does not map (env.manifest says why)
                owner = manifest_path
            elif owner is None and manifest_path is not None:
                # found upward from the rootdir: its tables only when it owns this env
                name, owner = _pixi_env_of(prefix, manifest_path, strict=True)
            return EnvSpec(prefix, name, owner, "--vllm-env")
        if manifest_path is None:
            raise EnvError(
                f"--vllm-env {value}: not a directory, and no pixi.toml or pyproject.toml "
                f"with [tool.pixi] was found above {rootdir} to resolve it as a Pixi env name; "
                "pass --pixi-manifest=PATH or a prefix"
            )
        try:
            parsed = load_manifest(manifest_path)
        except ManifestError as exc:
            raise EnvError(f"--vllm-env {value}: {exc}") from None
        envs = parsed.environments()
        if value not in envs:
            raise EnvError(
                f"--vllm-env {value}: {manifest_path} defines no environment {value!r} "
                f"(it has: {', '.join(sorted(envs))})"
            )
        return EnvSpec(parsed.env_prefix(value), value, manifest_path, f"{manifest_path}")
    conda_prefix = environ.get("CONDA_PREFIX")
    if conda_prefix:
        prefix = _abs(Path(conda_prefix))
        pixi_name = environ.get("PIXI_ENVIRONMENT_NAME")  # under `pixi run` / `pixi shell`
        name, owner = _pixi_env_of(prefix, manifest_path if manifest else None)
        if manifest or pixi_name:
            return EnvSpec(prefix, pixi_name or name, owner or manifest_path, "$CONDA_PREFIX")
        if owner is None and manifest_path is not None:
            name, owner = _pixi_env_of(prefix, manifest_path, strict=True)
        return EnvSpec(prefix, name, owner, "$CONDA_PREFIX")
    if manifest_path is not None:
        return _workspace_default(manifest_path)
    return EnvSpec(_abs(Path(default_prefix)), None, None, INTERPRETER)


# The source of an env judged because nothing named one: the Python running pytest itself
# (the header says so loudly: plugins/terminal.py).
INTERPRETER = "the interpreter running pytest"


def _workspace_default(manifest_path: Path) -> EnvSpec:
    """No --vllm-env and no $CONDA_PREFIX, inside a Pixi workspace (or with --pixi-manifest):
    the workspace's default env, the one `pixi run` and `pixi shell` use, not the Python that
    runs pytest (issue 21: a workspace was judged by our own venv, silently)."""
    try:
        parsed = load_manifest(manifest_path)
    except ManifestError as exc:
        raise EnvError(
            f"no --vllm-env given, and the Pixi workspace here cannot be read to find its "
            f"default env: {exc}. Pass --vllm-env=PREFIX (or fix the manifest)"
        ) from None
    return EnvSpec(
        parsed.env_prefix("default"),
        "default",
        manifest_path,
        f"no --vllm-env: the default env of {manifest_path}",
    )


def _no_such_env(prefix: Path) -> str:
    """``--vllm-env`` names a path where nothing is, and no workspace declares it: say so, and
    which part of it is missing (``/path/to/workspace/...``: an example path, never replaced)."""
    missing = prefix
    while not _lexists(missing.parent) and missing.parent != missing:
        missing = missing.parent
    where = (
        f" ({missing} does not exist either, and no Pixi workspace declares this env: a "
        "placeholder path to replace with your workspace's?)"
        if missing != prefix
        else ""
    )
    return (
        f"{prefix}: no such directory{where}. Create the env first (`pixi install` in the "
        "workspace, or `pixi install -e NAME`) or pass the right --vllm-env"
    )


def _lexists(path: Path) -> bool:
    try:
        return os.path.lexists(path)
    except (OSError, ValueError):
        return False


def _pixi_env_of(
    prefix: Path, manifest: Path | None, *, strict: bool = False
) -> tuple[str | None, Path | None]:
    """``(env name, its manifest)`` for a prefix: the workspace layout
    ``<ws>/.pixi/envs/NAME``; the ``conda-meta/pixi`` record pixi writes into every env it
    installs (``manifest_path``, ``environment_name``); or, for ``manifest``, a folder
    ``.../envs/NAME`` naming one of its envs (pixi's ``detached-environments`` puts them in
    ``<dir>/<workspace>-<hash>/envs/NAME``). ``strict``: only what ``manifest`` owns."""
    name = _env_name_of(prefix)
    if name is not None:
        owner = _workspace_manifest(prefix)
        if not strict or (owner is not None and manifest is not None and _same(owner, manifest)):
            return name, owner or manifest
    record = _read_pixi_record(prefix)
    if record is not None:
        recorded, env_name = record
        if manifest is None or _same(recorded, manifest):
            return env_name, recorded if recorded.is_file() else manifest
    if manifest is not None and prefix.parent.name == "envs":
        try:
            declared = load_manifest(manifest).environments()
        except ManifestError:
            declared = {}
        if prefix.name in declared:
            return prefix.name, manifest
    return None, None


def _read_pixi_record(prefix: Path) -> tuple[Path, str] | None:
    try:
        data = files.load_json(prefix / "conda-meta" / "pixi")
        return Path(_scalar(data["manifest_path"])), _scalar(data["environment_name"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _same(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _env_name_of(prefix: Path) -> str | None:
    """``<ws>/.pixi/envs/NAME`` -> NAME."""
    parts = prefix.expanduser().absolute().parts
    if len(parts) >= 3 and parts[-3] == ".pixi" and parts[-2] == "envs":
        return parts[-1]
    return None


def _workspace_manifest(prefix: Path) -> Path | None:
    """The manifest of the workspace that owns ``<ws>/.pixi/envs/NAME``, if any: pixi puts
    ``.pixi`` beside the manifest, so it is in ``<ws>`` itself (searching above ``<ws>`` found
    the manifest of whatever checkout a path that does not exist was typed in)."""
    if _env_name_of(prefix) is None:
        return None
    return find_manifest(prefix.parents[2], upward=False)


def _abs(path: Path) -> Path:
    return Path(os.path.abspath(path.expanduser()))


def _checked_prefix(prefix: Path) -> Path:
    try:
        resolved = prefix.resolve(strict=True)
    except RuntimeError:
        raise EnvError(f"{prefix}: symlink loop while resolving the env prefix") from None
    except FileNotFoundError:
        raise EnvError(
            f"{prefix}: no such directory. Create the env first (`pixi install` in the "
            "workspace, or `pixi install -e NAME`) or pass the right --vllm-env"
        ) from None
    except OSError as exc:
        raise EnvError(f"{prefix}: {exc.strerror or exc}") from None
    if not resolved.is_dir():
        raise EnvError(f"{prefix}: not a directory")
    if not os.access(resolved, os.R_OK | os.X_OK):
        raise EnvError(f"{prefix}: not readable by this user")
    markers = ("conda-meta", "bin/python", "bin/python3", "pyvenv.cfg")
    if not any(_exists(resolved / m) for m in markers):
        raise EnvError(
            f"{prefix}: not an environment (no conda-meta/, bin/python or pyvenv.cfg); point "
            "--vllm-env at <workspace>/.pixi/envs/<name> or pass the env name"
        )
    return resolved


def _python_problem(bin_dir: Path) -> tuple[str, bool]:
    """What is wrong with ``bin/python3`` / ``bin/python`` when neither can be used: a
    symlink whose target is gone, or a file or folder this user may not read (then True:
    a permission, not a broken env); ``("", False)`` when neither is there at all."""
    for name in ("python3", "python"):
        path = bin_dir / name
        try:
            os.stat(path)
        except FileNotFoundError:
            try:
                target = os.readlink(path)
            except OSError:
                continue  # not there at all
            return f"{path} is a dangling symlink to {target}", False
        except OSError as exc:
            return f"{path} cannot be read: {exc.strerror or exc}", isinstance(exc, PermissionError)
    try:
        os.listdir(bin_dir)
    except FileNotFoundError:
        return "", False
    except OSError as exc:
        return f"{bin_dir} cannot be read: {exc.strerror or exc}", isinstance(exc, PermissionError)
    return "", False


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _read_text(path: Path, problems: list[Problem]) -> str:
    """A small config file's text; "" when it cannot be read (the reason in ``problems``)."""
    try:
        return files.read_text(path, files.CONFIG)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        problems.append(_problem(path, f"cannot read: {exc.strerror or exc}", exc))
        return ""


def _scalar(value: object) -> str:
    """A JSON value read as text: ``str()`` of a string, number or boolean; ``TypeError`` for
    a list or object (``str()`` of a deeply nested one would recurse past Python's limit)."""
    if isinstance(value, (list, dict)):
        raise TypeError(f"a JSON {type(value).__name__} where text belongs")
    return str(value)


def _safe_glob(folder: Path, pattern: str, problems: list[Problem]) -> list[Path]:
    try:
        # scandir, not glob: glob passes over a folder it may not read without a word
        # (hidden names excluded, as glob and a shell's `*.sh` exclude them)
        return sorted(
            p
            for p in folder.iterdir()
            if fnmatch.fnmatchcase(p.name, pattern) and not p.name.startswith(".")
        )
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        problems.append(_problem(folder, f"cannot list: {exc.strerror or exc}", exc))
        return []
