"""``pypi.build-isolation`` for a venv's project (pip or uv), and for ``--vllm-project`` given
for a Pixi or conda env: a source build that needs torch gets the env's torch, or says what to
change in the installer's own terms (:mod:`.pypi` judges a Pixi manifest).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion

from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.pypi import (
    Isolation,
    PypiDep,
    PypiOptions,
    builds_from_source,
    marker_environment,
)
from pytest_vllm_env.findings import Finding, failed, passed, warning
from pytest_vllm_env.readers.venv_project import Declared, Project
from pytest_vllm_env.tables.sdist_torch import SDIST_ONLY, torch_rule

# F5.1 (flash-attention#1421, LCKV#17, nano-vllm#96): pip 24.3.1 and uv build
# flash_attn-*.tar.gz in an isolated env ("Getting requirements to build wheel ... error ...
# No module named 'torch'"). PyPI has no flash-attn wheel, so every install builds the sdist
# unless the project points at a wheel, or the env already holds flash-attn; pip's and uv's
# own configuration (pip_config.py, uv_config.py) decide whether that build is isolated.
UV_MATCH_RUNTIME = "0.8.5"  # extra-build-dependencies match-runtime (uv#15036)
UV_TWO_PHASE = "0.8.12"  # no-build-isolation packages installed after the rest (uv#15306)
PRIMARY_INDEXES = re.compile(r"^https?://(pypi\.org/simple|download\.pytorch\.org/whl)\b", re.I)
PIP_INVERTED = "pip reads the value inverted: 0/false/no turn isolation off, 1/true/yes keep it"


def venv_build_isolation(env: PixiEnv, opts: PypiOptions) -> list[Finding]:
    """``pypi.build-isolation`` for what a venv's project (or ``--vllm-project``) installs
    with pip or uv."""
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
    said = option[0] if option else text
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
    if not builds_from_source(dep) or dep.kind == "url-wheel":
        return passed(check, f"{name} ({dep.where}) comes from a wheel: nothing is built")
    torch_decl = project.requirement("torch")
    torch_env = env.version_of("torch")
    in_pyproject = opts.from_pyproject(dep)
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
    if torch_decl is not None and tool == "uv" and opts.from_pyproject(dep):
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
        if uv and opts.from_pyproject(dep)
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
