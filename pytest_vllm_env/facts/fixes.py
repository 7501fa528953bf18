"""Fixes in the env's own language: which file, which table, which command.

A verdict's fix is read by someone who must act on it. "Add cuda-nvcc to pixi.toml" is
useless to a plain venv, and wrong for a Pixi env whose manifest already declares it (the
env was only never installed). Every check renders its fixes through this module, so that
the same request reads right for each kind of env:

==============  ========================================================================
kind            where changes go
==============  ========================================================================
``pixi``        ``pixi.toml``: ``[dependencies]``, ``[pypi-dependencies]``,
                ``[activation.env]`` (``[feature.F.*]`` for an env made of features)
``pyproject``   the same tables as ``[tool.pixi.*]`` in ``pyproject.toml``
``conda``       a conda prefix without a Pixi manifest: ``conda install -p PREFIX``,
                ``conda env config vars set -p PREFIX``
``venv``        a pip venv (no ``conda-meta``): ``PREFIX/bin/python -m pip install``;
                variables are exported by the job (a venv has no activation tables);
                conda-only packages (the CUDA toolkit) come from the system
==============  ========================================================================

The API, for checks::

    fixes.add(env, Package("cuda-nvcc", "12.8.*"), Package("cuda-version", "12.8.*"))
    fixes.add(env, Package("torch", "==2.11.0", pypi=True), verb="pin")
    fixes.set_var(env, "CUDA_HOME", "${CONDA_PREFIX}")
    fixes.deps_place(env)            # "[dependencies] in pixi.toml" (for free-form text)
    fixes.install_env(env)           # "run `pixi install -e cuda --manifest-path ...`"
    fixes.reinstall(env, "cuda-nvtx-dev")   # "run `pixi reinstall ...`", conda/pip alike
    fixes.shell(env)                 # "`pixi shell -e cuda`": where to run a command by hand
    fixes.env_not_installed(manifest, "cuda", prefix)   # the message when the env is absent
    fixes.pin(env, Package("torch", "==2.11.0", pypi=True))  # "in pixi.toml line 9 ..., replace"
    fixes.rebuild(env, "flash-attn")  # against the env's torch: no build isolation, no cache

:func:`add` answers "run ``pixi install -e NAME``" instead of "add the line" when the
manifest already declares the package for that env but the env does not hold it. Versions
are written as in a Pixi manifest: ``"12.8.*"``, ``">=3.28"`` for conda packages,
``"==2.11.0"``, ``">=2.7"`` for PyPI ones; each kind translates them.

Each renderer returns a :class:`~pytest_vllm_env.findings.Fix`: the text, and the same request
as :class:`~pytest_vllm_env.findings.Change` data (a manifest line with its file and table, a
pip/uv/conda command with its prefix, specs and options, a variable), where the request is a
command or an edit; :func:`otherwise` adds an alternative whose changes are not the fix's own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from pytest_vllm_env import files
from pytest_vllm_env.findings import Change, Fix, changes_of

if TYPE_CHECKING:
    from pytest_vllm_env.facts.env import PixiEnv
    from pytest_vllm_env.readers.pixi import Manifest

Kind = Literal["pixi", "pyproject", "conda", "venv"]
PLATFORM = "linux-64"
# conda-forge packages a pip venv can get from PyPI under the same name.
PYPI_EQUIVALENT = {"cmake": "cmake", "ninja": "ninja"}


@dataclass(frozen=True)
class Package:
    """A package to add or pin: a conda-forge package, or a PyPI one with ``pypi=True``.

    ``version`` is spelled as in a Pixi manifest (``"12.8.*"``, ``">=3.28"``,
    ``"==2.11.0"``); empty means any version."""

    name: str
    version: str = ""
    pypi: bool = False

    def manifest_line(self) -> str:
        """``cuda-nvcc = "12.8.*"``, as it goes in a manifest table."""
        return f'{self.name} = "{self.version or "*"}"'

    def conda_spec(self) -> str:
        """``cuda-nvcc=12.8.*`` for ``conda install``."""
        v = self.version
        if not v or v == "*":
            return self.name
        return f"{self.name}={v}" if v[0].isdigit() else f"{self.name}{v}"

    def pip_spec(self) -> str:
        """``torch==2.11.0`` for ``pip install``."""
        v = self.version
        if not v or v == "*":
            return self.name
        return f"{self.name}=={v}" if v[0].isdigit() else f"{self.name}{v}"


# -- what kind of env ----------------------------------------------------------------------
def kind_of(env: PixiEnv) -> Kind:
    """``pixi``/``pyproject`` for an env of a Pixi workspace (its manifest is known, or it
    sits in ``<ws>/.pixi/envs/NAME``, or pixi left ``conda-meta/pixi`` in it), ``conda``
    for another conda prefix, ``venv`` for a pip venv."""
    if env.manifest_path is not None and env.name:
        return "pyproject" if env.manifest_path.name == "pyproject.toml" else "pixi"
    parts = env.prefix.parts
    if (len(parts) >= 3 and parts[-3:-1] == (".pixi", "envs")) or _is_file(
        env.prefix / "conda-meta" / "pixi"
    ):
        return "pixi"
    return "conda" if env.is_conda else "venv"


def manifest_name(env: PixiEnv) -> str:
    """The manifest's file name (``pixi.toml`` when the workspace's is not known)."""
    return env.manifest_path.name if env.manifest_path else "pixi.toml"


def _table_prefix(env: PixiEnv) -> str:
    return "tool.pixi." if kind_of(env) == "pyproject" else ""


def _feature(env: PixiEnv) -> str | None:
    """The feature whose tables a fix for a named, non-default env goes into."""
    manifest = env.manifest
    if manifest is None or not env.name or env.name == "default":
        return None
    features = [f for f in manifest.environments().get(env.name, []) if f != "default"]
    return features[-1] if features else None


def deps_table(env: PixiEnv, *, pypi: bool = False) -> str:
    """``[dependencies]``, ``[tool.pixi.pypi-dependencies]``, ``[feature.cuda.dependencies]``."""
    feature = _feature(env)
    head = _table_prefix(env) + (f"feature.{feature}." if feature else "")
    return f"[{head}{'pypi-' if pypi else ''}dependencies]"


def activation_table(env: PixiEnv) -> str:
    """``[activation.env]`` (``[tool.pixi.feature.F.activation.env]``...) for this env."""
    manifest = env.manifest
    if manifest is not None and env.name:
        return manifest.activation_table_for(env.name)
    return f"[{_table_prefix(env)}activation.env]"


def deps_place(env: PixiEnv, *, pypi: bool = False) -> str:
    """Where packages are added, for free-form fix text: ``[dependencies] in pixi.toml``;
    for a conda prefix ``the env (conda install -p PREFIX)``; for a venv ``the venv (pip)``."""
    kind = kind_of(env)
    if kind in ("pixi", "pyproject"):
        return f"{deps_table(env, pypi=pypi)} in {manifest_name(env)}"
    if kind == "conda":
        return f"the env (`conda install -p {env.prefix}`)"
    if made_by_uv(env):
        return f"the venv (`uv pip install --python {env.prefix}`)"
    return f"the venv (`{env.prefix}/bin/python -m pip install`)"


def activation_place(env: PixiEnv) -> str:
    """Where a variable is set, for free-form text: ``[activation.env] in pixi.toml``."""
    kind = kind_of(env)
    if kind in ("pixi", "pyproject"):
        return f"{activation_table(env)} in {manifest_name(env)}"
    if kind == "conda":
        return f"the env's variables (`conda env config vars set -p {env.prefix}`)"
    return "the job that runs it (a venv has no activation variables)"


# -- rendering -------------------------------------------------------------------------------
def add(env: PixiEnv, *packages: Package, verb: str = "add") -> str:
    """The fix that brings ``packages`` (at those versions) into ``env``.

    ``verb`` is ``add`` for missing packages, ``set``/``pin`` for a version change. A Pixi
    env whose manifest already declares a missing package gets "run ``pixi install``"."""
    kind = kind_of(env)
    if kind in ("pixi", "pyproject"):
        return _add_pixi(env, packages, verb)
    if kind == "conda":
        return _add_conda(env, packages)
    return _add_venv(env, packages)


def _manifest_change(env: PixiEnv, table: str, line: str, replaces: str = "") -> list[Change]:
    """The manifest edit as data; none where the env's manifest is not known."""
    if env.manifest_path is None:
        return []
    return [Change("manifest-line", str(env.manifest_path), table, line, replaces)]


def join(parts: list[str], sep: str = "; ") -> Fix:
    """``parts`` joined by ``sep``, their changes kept (every part is a step of the fix)."""
    return Fix(sep.join(str(p) for p in parts), [c for p in parts for c in changes_of(p)])


def otherwise(fix: str, alternative: str, sep: str = "; or ") -> Fix:
    """``fix`` then ``alternative`` as a second way: the changes are ``fix``'s alone (the
    alternative is for a person who cannot take the first way)."""
    return Fix(f"{fix}{sep}{alternative}", changes_of(fix))


def _add_pixi(env: PixiEnv, packages: tuple[Package, ...], verb: str) -> Fix:
    # A missing package the manifest already declares for this env: the env is stale or was
    # never installed, and adding the line again would change nothing.
    declared = {
        p.name: where for p in packages if not _installed(env, p) and (where := declared_in(env, p))
    }
    parts: list[str] = []
    for pypi in (False, True):
        group = [p for p in packages if p.pypi == pypi and p.name not in declared]
        if group:
            lines = _words([f"`{p.manifest_line()}`" for p in group])
            into = "in" if verb != "add" else "to"
            table = deps_table(env, pypi=pypi)
            changes = [c for p in group for c in _manifest_change(env, table, p.manifest_line())]
            parts.append(Fix(f"{verb} {lines} {into} {deps_place(env, pypi=pypi)}", changes))
    if declared:
        names = _words([f"`{n}`" for n in declared])
        where = "; ".join(sorted(set(declared.values())))
        parts.append(
            f"{names} {'is' if len(declared) == 1 else 'are'} declared in {where} but not "
            f"installed in {env.prefix}: " + install_env(env)
        )
    return join(parts)


def _add_conda(env: PixiEnv, packages: tuple[Package, ...]) -> Fix:
    parts: list[str] = []
    conda = [p for p in packages if not p.pypi]
    if conda:
        specs = " ".join(f'"{p.conda_spec()}"' for p in conda)
        command = f"conda install -p {env.prefix} -c conda-forge {specs}"
        change = Change("conda", str(env.prefix), specs=tuple(p.conda_spec() for p in conda))
        parts.append(Fix(f"install into the env: `{command}`", [change]))
    pypi = [p for p in packages if p.pypi]
    if pypi:
        parts.append(_pip(env, pypi))
    return join(parts)


def _add_venv(env: PixiEnv, packages: tuple[Package, ...]) -> Fix:
    pip = [p for p in packages if p.pypi or p.name in PYPI_EQUIVALENT]
    pip = [Package(PYPI_EQUIVALENT.get(p.name, p.name), p.version, True) for p in pip]
    system = [p for p in packages if not p.pypi and p.name not in PYPI_EQUIVALENT]
    parts: list[str] = [_pip(env, pip)] if pip else []
    python = next((p for p in system if p.name == "python"), None)
    if python:
        parts.append(f"recreate the venv with Python {python.version.rstrip('.*') or '3.12'}")
        system = [p for p in system if p is not python]
    if system:
        names = ", ".join(p.name for p in system)
        mm = next((p.version.rstrip(".*") for p in system if p.version[:1].isdigit()), "")
        home = f"/usr/local/cuda-{mm}" if mm else "/usr/local/cuda"
        specs = " ".join(f'"{p.conda_spec()}"' for p in system)
        toolkit = f"CUDA {mm} toolkit" if mm else "CUDA toolkit"
        parts.append(
            f"{names} {'is a conda package' if len(system) == 1 else 'are conda packages'}, and "
            f"a pip venv has no CUDA toolkit of its own: install the {toolkit} on the system "
            f"and export `CUDA_HOME={home}` (and `PATH={home}/bin:$PATH`) where you build, "
            f"or build in a Pixi env (`pixi add {specs}`)"
        )
    return join(parts)


def _words(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _pip(env: PixiEnv, packages: list[Package]) -> Fix:
    specs = tuple(p.pip_spec() for p in packages)
    uv = made_by_uv(env)
    return Fix(f"`{pip_install(env, *specs, uv=uv)}`", [pip_change(env, specs, uv=uv)])


def pip_change(
    env: PixiEnv, specs: tuple[str, ...], options: tuple[str, ...] = (), *, uv: bool = False
) -> Change:
    """:func:`pip_install`'s command as data."""
    return Change("uv" if uv else "pip", str(env.prefix), specs=specs, options=options)


def pip_install(env: PixiEnv, *specs: str, options: tuple[str, ...] = (), uv: bool = False) -> str:
    """The command that installs ``specs`` (``torch==2.5.1``) into a venv with pip, or with
    ``uv pip`` for a venv uv made: ``/venv/bin/python -m pip install --no-build-isolation ...``."""
    quoted = " ".join(f'"{s}"' for s in specs)
    flags = "".join(f"{o} " for o in options)
    if uv:
        return f"uv pip install --python {env.prefix} {flags}{quoted}"
    python = env.python or env.prefix / "bin" / "python"
    return f"{python} -m pip install {flags}{quoted}"


def set_var(env: PixiEnv, name: str, value: str) -> Fix:
    """The fix that sets ``name=value`` whenever the env is activated; ``value`` may use
    ``${CONDA_PREFIX}`` (expanded for kinds that do not expand it themselves)."""
    kind = kind_of(env)
    if kind in ("pixi", "pyproject"):
        line = f'{name} = "{value}"'
        changes = _manifest_change(env, activation_table(env), line)
        return Fix(f"set `{line}` in {activation_place(env)}", changes)
    plain = value.replace("${CONDA_PREFIX}", str(env.prefix)).replace(
        "$CONDA_PREFIX", str(env.prefix)
    )
    if kind == "conda":
        return Fix(
            f"set it in the env: `conda env config vars set -p {env.prefix} {name}={plain}`",
            [Change("conda-var", str(env.prefix), line=f"{name}={plain}")],
        )
    return Fix(
        f"export `{name}={plain}` in the shell or job that runs it (a venv has no activation "
        f"variables; add the line to {env.prefix}/bin/activate to keep it)",
        [Change("export", str(env.prefix / "bin" / "activate"), line=f"{name}={plain}")],
    )


def _pixi_cmd(env: PixiEnv, verb: str) -> str:
    """``pixi VERB -e NAME [--manifest-path PATH]`` for the env's own manifest."""
    where = f" --manifest-path {env.manifest_path}" if env.manifest_path else ""
    return f"pixi {verb} -e {env.name or 'default'}{where}"


def _pixi_change(env: PixiEnv, command: str) -> list[Change]:
    target = str(env.manifest_path) if env.manifest_path else ""
    return [Change("pixi", target, line=command)]


def install_env(env: PixiEnv) -> Fix | str:
    """How to (re)install the env from its declaration."""
    kind = kind_of(env)
    if kind in ("pixi", "pyproject"):
        command = _pixi_cmd(env, "install")
        return Fix(f"run `{command}`", _pixi_change(env, command))
    if kind == "conda":
        return f"recreate the env from its environment.yml (`conda env update -p {env.prefix}`)"
    return f"reinstall the venv's requirements (`{env.prefix}/bin/python -m pip install -r ...`)"


def reinstall(env: PixiEnv, name: str, *, pypi: bool = False) -> Fix | str:
    """The command that reinstalls one installed package (its files are damaged or missing):
    ``pixi reinstall`` for a Pixi env, ``conda install --force-reinstall`` for a conda prefix,
    ``pip install --force-reinstall`` for a PyPI package or a venv."""
    kind = kind_of(env)
    if kind in ("pixi", "pyproject"):
        command = f"{_pixi_cmd(env, 'reinstall')} {name}"
        return Fix(f"`{command}`", _pixi_change(env, command))
    if kind == "conda" and not pypi:
        return Fix(
            f"`conda install -p {env.prefix} -c conda-forge --force-reinstall {name}`",
            [Change("conda", str(env.prefix), specs=(name,), options=("--force-reinstall",))],
        )
    if kind == "venv" and not pypi and name not in PYPI_EQUIVALENT:
        return f"reinstall the system CUDA toolkit's {name} part (a pip venv has no conda packages)"
    name = PYPI_EQUIVALENT.get(name, name)
    if made_by_uv(env):
        return Fix(
            f"`uv pip install --python {env.prefix} --reinstall-package {name} {name}`",
            [pip_change(env, (name,), (f"--reinstall-package {name}",), uv=True)],
        )
    python = env.python or env.prefix / "bin" / "python"
    return Fix(
        f"`{python} -m pip install --force-reinstall {name}`",
        [pip_change(env, (name,), ("--force-reinstall",))],
    )


def shell(env: PixiEnv) -> str:
    """Where to run a command by hand with the env activated, as a build would:
    ``pixi shell -e NAME``, ``conda activate PREFIX``, ``source PREFIX/bin/activate``."""
    kind = kind_of(env)
    if kind in ("pixi", "pyproject"):
        return f"`{_pixi_cmd(env, 'shell')}`"
    if kind == "conda":
        return f"`conda activate {env.prefix}`"
    return f"`source {env.prefix}/bin/activate`"


def env_not_installed(manifest: Path, name: str, prefix: Path) -> str:
    """The message for a Pixi env the manifest declares but nobody installed (no prefix) and
    no ``pixi.lock`` to judge it from (with one, lock mode judges it:
    ``pytest_vllm_env.facts.lock_env.open_env``, where this is raised)."""
    return (
        f"pixi env {name!r} is declared in {manifest} but not installed (no {prefix}) and has "
        f"no pixi.lock to judge it from: run `pixi install -e {name} --manifest-path "
        f"{manifest}` (or `pixi lock`, to judge it before installing), then judge it"
    )


# -- PyPI packages: a version, an index, a rebuild ------------------------------------------
def made_by_uv(env: PixiEnv) -> bool:
    """A venv ``uv venv`` made (its ``pyvenv.cfg`` has a ``uv = 0.13.9`` line). It has no pip:
    ``python -m pip install`` there fails with "No module named pip" (measured, uv 0.13.9), so
    its fixes say ``uv pip install --python PREFIX``."""
    if kind_of(env) != "venv":
        return False
    try:
        text = files.read_text(env.prefix / "pyvenv.cfg", files.CONFIG)
    except OSError:
        return False
    return re.search(r"^\s*uv\s*=", text, re.M) is not None


def pypi_options_table(env: PixiEnv) -> str:
    """``[pypi-options]`` (``[tool.pixi.feature.F.pypi-options]``...) for this env."""
    feature = _feature(env)
    head = _table_prefix(env) + (f"feature.{feature}." if feature else "")
    return f"[{head}pypi-options]"


def pypi_line(package: Package, *, index: str = "", url: str = "", path: str = "") -> str:
    """A ``[pypi-dependencies]`` line: ``torch = "==2.11.0"``; with ``index`` the inline table
    ``torch = { version = "==2.11.0", index = "https://..." }``; with ``url`` a wheel's URL;
    with ``path`` a source checkout built in place (``editable = true``)."""
    if path:
        return f'{package.name} = {{ path = "{path}", editable = true }}'
    if url:
        return f'{package.name} = {{ url = "{url}" }}'
    if index:
        return f'{package.name} = {{ version = "{package.version or "*"}", index = "{index}" }}'
    return package.manifest_line()


def pin(
    env: PixiEnv,
    package: Package,
    *,
    index: str = "",
    url: str = "",
    path: str = "",
    extra: bool = False,
) -> str:
    """The fix that gives a package ``package.version`` (a PyPI one from ``index``, the wheel
    at ``url`` or the checkout at ``path``). In a Pixi manifest: the line that declares it, by
    file, line and table, and what replaces it (an inline table keeps its other keys: its
    ``index`` stays), or the table to add it to. For a conda prefix or a venv: the pip (``uv
    pip``) command; a conda package gets :func:`add`'s ``conda install``. ``extra``: the index
    holds only this package (vLLM's per-release wheel index), so pip gets it as
    ``--extra-index-url`` rather than ``--index-url``."""
    kind = kind_of(env)
    if kind not in ("pixi", "pyproject"):
        if not package.pypi:
            return add(env, package)
        spec = path or (f"{package.name} @ {url}" if url else package.pip_spec())
        flag = "--extra-index-url" if extra else "--index-url"
        options = (f"{flag} {index}",) if index else ()
        uv = made_by_uv(env)
        if _needs_reinstall(env, package, bool(index or url or path)):
            # pip and uv keep an installed 2.11.0+cu130 for "torch==2.11.0" ("Requirement
            # already satisfied"), whatever index is given: the fix would change nothing
            options += (f"--reinstall-package {package.name}",) if uv else ("--force-reinstall",)
        return Fix(
            f"`{pip_install(env, spec, options=options, uv=uv)}`",
            [pip_change(env, (spec,), options, uv=uv)],
        )
    from pytest_vllm_env.readers.manifest_lines import ManifestLines

    table = "pypi-dependencies" if package.pypi else "dependencies"
    found = ManifestLines(env.manifest, env.name).find(package.name, table)
    new = pypi_line(package, index=index, url=url, path=path)
    elsewhere = bool(index or url or path)  # not a version alone
    table_of = deps_table(env, pypi=package.pypi)
    if found is None:
        return Fix(
            f"add `{new}` to {deps_place(env, pypi=package.pypi)}",
            _manifest_change(env, table_of, new),
        )
    if found.table == "[project] dependencies":
        if elsewhere:  # an index, a URL or a path is said in [tool.pixi.pypi-dependencies]
            return Fix(
                f"add `{new}` to {deps_place(env, pypi=True)} (and drop {found})",
                _manifest_change(env, deps_table(env, pypi=True), new)
                + [Change("manifest-line", str(found.path), found.table, "", found.text)],
            )
        new = _replace_requirement(found.text, package)
    elif not elsewhere and re.search(r"""\bversion\s*=\s*["'][^"']*["']""", found.text):
        # `torch = { version = "==2.6.0", index = "..." }`: keep the index, change the version
        new = re.sub(
            r"""(\bversion\s*=\s*)(["'])[^"']*\2""",
            lambda m: f"{m.group(1)}{m.group(2)}{package.version or '*'}{m.group(2)}",
            found.text,
            count=1,
        )
    where = f"in {found.path.name} line {found.line} ({found.table})"
    if new == found.text:  # the manifest asks for it already: the env holds another build
        return f"{found} asks for it already, the env holds another build: run " + reinstall(
            env, package.name, pypi=package.pypi
        )
    return Fix(
        f"{where}, replace `{found.text}` with `{new}`",
        [Change("manifest-line", str(found.path), found.table, new, found.text)],
    )


def _needs_reinstall(env: PixiEnv, package: Package, elsewhere: bool) -> bool:
    """Whether pip must be told to reinstall: the installed version already satisfies the
    request (or the request names another source for the same package)."""
    installed = env.version_of(package.name)
    if not installed:
        return False
    if elsewhere:
        return True
    spec = package.pip_spec()[len(package.name) :]  # "==2.11.0", ">=2.7", "" for any
    try:
        return SpecifierSet(spec).contains(Version(installed), prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return False


def _replace_requirement(text: str, package: Package) -> str:
    """``"torch==2.6.0", "vllm"`` -> ``"torch==2.11.0", "vllm"``: the quoted requirement of
    ``package`` in a ``[project] dependencies`` line, the others kept."""
    for m in re.finditer(r"""(["'])([^"']*)\1""", text):
        name = re.match(r"\s*([A-Za-z0-9_.\-]+)", m.group(2))
        if name and _same_name(name.group(1), package.name):
            q = m.group(1)
            return f"{text[: m.start()]}{q}{package.pip_spec()}{q}{text[m.end() :]}"
    return f'"{package.pip_spec()}"'


def rebuild(env: PixiEnv, name: str, *, source: str = "") -> Fix:
    """The fix that builds PyPI package ``name`` (from ``source``, a checkout, when given)
    against what the env holds (its torch) rather than in an isolated build env with
    whatever torch PyPI has newest, and not from a wheel cached by an earlier build.

    Pixi: ``no-build-isolation`` in ``[pypi-options]`` (pixi docs, "pypi-options"), then
    ``pixi reinstall``; pip: ``--no-build-isolation --no-cache-dir --force-reinstall
    --no-deps``; uv: ``--no-build-isolation --reinstall-package``, in the activated env."""
    kind = kind_of(env)
    if kind in ("pixi", "pyproject"):
        # an array: the applier (and a person) adds the name to the list the table may hold
        line = f'no-build-isolation = ["{name}"]'
        text = Fix(
            f'list `"{name}"` in `no-build-isolation = [...]` of {pypi_options_table(env)} in '
            f"{manifest_name(env)}",
            _manifest_change(env, pypi_options_table(env), line),
        )
        if source:
            from pytest_vllm_env.readers.manifest_lines import ManifestLines

            declared = ManifestLines(env.manifest, env.name).find(name, "pypi-dependencies")
            if declared is not None and re.search(r"\bpath\s*=", declared.text):
                text += f" ({declared} builds it from a checkout)"
            else:
                text += "; " + pin(env, Package(name, pypi=True), path=source)
        return text + "; then run " + reinstall(env, name, pypi=True)
    target = source or name
    uv = made_by_uv(env)
    if uv:
        options: tuple[str, ...] = ("--no-build-isolation", f"--reinstall-package {name}")
    else:
        options = ("--no-build-isolation", "--no-cache-dir", "--force-reinstall", "--no-deps")
    command = pip_install(env, target, options=options, uv=uv)
    return Fix(f"in {shell(env)}, run `{command}`", [pip_change(env, (target,), options, uv=uv)])


# -- what the manifest declares --------------------------------------------------------------
def declared_requirement(env: PixiEnv, package: Package) -> tuple[str, str] | None:
    """``(the spec as written, where)`` of ``package`` in the env's manifest, e.g.
    ``('3.11.*', '[dependencies] of pixi.toml')``; None when it is not declared."""
    manifest = env.manifest
    if manifest is None or not env.name:
        return None
    for table, where in _dependency_tables(manifest, env.name, package.pypi):
        for key, value in table.items():
            if _same_name(package.name, str(key)):
                spec = value.get("version", "") if isinstance(value, Mapping) else value
                return str(spec), f"{where} of {manifest.path.name}"
    return None


def declared_in(env: PixiEnv, package: Package) -> str | None:
    """``[feature.cuda.dependencies] of pixi.toml`` when the env's manifest declares
    ``package`` for this env (any feature of it, the ``linux-64`` target tables included)."""
    manifest = env.manifest
    if manifest is None or not env.name:
        return None
    for table, where in _dependency_tables(manifest, env.name, package.pypi):
        if any(_same_name(package.name, str(key)) for key in table):
            return f"{where} of {manifest.path.name}"
    return None


def _dependency_tables(
    manifest: Manifest, env_name: str, pypi: bool
) -> list[tuple[Mapping[str, Any], str]]:
    key = "pypi-dependencies" if pypi else "dependencies"
    head = manifest.table_prefix()
    found: list[tuple[Mapping[str, Any], str]] = []
    for feature in manifest.environments().get(env_name, ["default"]):
        table = manifest.feature_table(feature)
        name = head if feature == "default" else f"{head}feature.{feature}."
        places = [(table.get(key), f"[{name}{key}]")]
        target = table.get("target")
        if isinstance(target, Mapping) and isinstance(target.get(PLATFORM), Mapping):
            places.append((target[PLATFORM].get(key), f"[{name}target.{PLATFORM}.{key}]"))
        found.extend((t, where) for t, where in places if isinstance(t, Mapping))
    return found


def _installed(env: PixiEnv, package: Package) -> bool:
    return env.dist(package.name) is not None if package.pypi else bool(env.conda(package.name))


def _same_name(a: str, b: str) -> bool:
    return a.lower().replace("_", "-") == b.lower().replace("_", "-")


def _is_file(path: Path) -> bool:
    try:
        return os.path.isfile(path)
    except OSError:
        return False
