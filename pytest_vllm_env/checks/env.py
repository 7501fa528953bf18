"""``env.*``: judgements of the env itself: can we read it, and does activating it work?

Every other area stands on these facts; a broken record or manifest is reported here once,
with the path, instead of as odd verdicts everywhere else.
"""

from __future__ import annotations

from pathlib import Path

from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped, warning


def conda_meta_readable(env: PixiEnv) -> Finding:
    """Every ``conda-meta/*.json`` record parses (an interrupted install leaves bad ones)."""
    check = "env.conda-meta"
    if not env.is_conda:
        return skipped(check, f"{env.prefix} has no conda-meta/: not a conda or Pixi env")
    bad = [p for p in env.problems if _in_conda_meta(p.path)]
    if bad:
        broken = [p for p in bad if not p.denied]
        fix = "the env was left half-written (an interrupted install?): recreate it " + (
            "with `pixi clean && pixi install` (or `pixi install -e NAME`) in the workspace"
            if fixes.kind_of(env) in ("pixi", "pyproject")
            else str(fixes.install_env(env))
        )
        if not broken:  # only permission: the records are fine, this user may not read them
            fix = _permission_fix(env)
        elif len(broken) < len(bad):
            fix += f"; and for the others: {_permission_fix(env)}"
        return error(
            check,
            f"{len(bad)} conda-meta record(s) unreadable: "
            + "; ".join(f"{p.path}: {p.what}" for p in bad[:5]),
            fix,
            bad_records=[str(p.path) for p in bad],
        )
    return passed(check, f"{len(env.conda_packages)} conda packages read from conda-meta")


def site_packages_readable(env: PixiEnv) -> Finding:
    check = "env.site-packages"
    if not env.site_packages:
        return failed(
            check,
            f"no lib/python3.*/site-packages under {env.prefix}: the env has no Python",
            _add_python(env),
        )
    bad = [p for p in env.problems if not _in_conda_meta(p.path)]
    if bad:
        again = (
            "`pixi install`"
            if fixes.kind_of(env) in ("pixi", "pyproject")
            else "`"
            + fixes.pip_install(
                env, "NAME", options=("--force-reinstall",), uv=fixes.made_by_uv(env)
            )
            + "`"
        )
        fix = (
            f"reinstall the named distribution(s) with {again} (or remove a symlink loop "
            "under site-packages)"
        )
        if all(p.denied for p in bad):
            fix = _permission_fix(env)
        return error(
            check,
            "unreadable Python metadata: " + "; ".join(f"{p.path}: {p.what}" for p in bad[:5]),
            fix,
            problems=[f"{p.path}: {p.what}" for p in bad],
        )
    return passed(
        check,
        f"{len(env.python_dists)} Python distributions read from "
        + ", ".join(str(s) for s in env.site_packages),
    )


def python_found(env: PixiEnv) -> Finding:
    check = "env.python"
    if env.python is None:
        if env.python_denied:
            return error(check, env.python_problem, _permission_fix(env))
        return failed(
            check,
            env.python_problem or f"no bin/python in {env.prefix}",
            _add_python(env),
        )
    return passed(check, f"{env.python} (Python {env.python_version or 'version unknown'})")


def manifest_parses(env: PixiEnv) -> Finding:
    check = "env.manifest"
    if env.manifest_path is None:
        return skipped(check, "no Pixi manifest found for this env (pass --pixi-manifest)")
    manifest = env.manifest
    if manifest is None:
        return error(
            check,
            env.manifest_error,
            f"fix the TOML syntax in {env.manifest_path} at the line the error names",
            manifest=str(env.manifest_path),
        )
    envs = manifest.environments()
    if not env.name:
        # --pixi-manifest with a prefix that is none of its envs: its activation tables
        # would otherwise be dropped without a word.
        return warning(
            check,
            f"the activation tables of {env.manifest_path} are not applied: {env.prefix} is "
            "not one of its envs (pixi puts them in <workspace>/.pixi/envs/NAME, or with "
            "detached-environments in <dir>/<workspace>-<hash>/envs/NAME; pixi records the "
            "owner in conda-meta/pixi)",
            f"judge the manifest's env by name (`--vllm-env=NAME`, one of: "
            f"{', '.join(sorted(envs))}), or drop --pixi-manifest for an env of another "
            "workspace",
            environments=sorted(envs),
        )
    if env.name not in envs:
        return failed(
            check,
            f"{env.manifest_path} defines no environment {env.name!r}",
            f"add `{env.name} = [...]` under [{manifest.table_prefix()}environments]",
            environments=sorted(envs),
        )
    return passed(check, f"{env.manifest_path} parses; environments: {', '.join(sorted(envs))}")


def activation_runs(env: PixiEnv) -> Finding:
    """Activation scripts source cleanly (conda-forge's cuda-nvcc one breaks under ``set -u``)."""
    check = "env.activation"
    act = env.activation
    if act.problems:
        return failed(
            check,
            "activation did not run cleanly: " + "; ".join(act.problems),
            "run the named script by hand (`bash -c '. SCRIPT'`) to see why; if it is a package's "
            "script, update or reinstall that package; if it is yours, fix it in the manifest's "
            "activation.scripts",
            method=act.method,
        )
    set_here = sorted(act.sources)
    if act.not_run:
        # --vllm-static: whether the scripts source cleanly is known only by running them
        unread = f"; not evaluated: {'; '.join(act.unread[:5])}" if act.unread else ""
        return skipped(
            check,
            f"--vllm-static: {len(act.not_run)} activation script(s) read, not run "
            f"({', '.join(act.not_run)}): {len(set_here)} variables taken from their "
            f"assignments and the activation tables{unread}",
            method=act.method,
            variables=set_here,
            not_run=list(act.not_run),
            not_evaluated=list(act.unread),
        )
    return passed(
        check, f"activation ({act.method}) sets {len(set_here)} variables", variables=set_here
    )


def _add_python(env: PixiEnv) -> str:
    """Give the env back the Python it means: the one it declares (pixi.toml), has installed
    (conda-meta) or was made with (its lib/python3.X, a venv's pyvenv.cfg); 3.12 only when
    nothing says. An installed python whose interpreter is broken is reinstalled, not added."""
    declared = fixes.declared_requirement(env, fixes.Package("python"))
    installed = env.conda("python")
    if installed is not None and env.locked is None:
        said = f" ({declared[1]} declares python {declared[0]!r})" if declared else ""
        return (
            f"python {installed.version} is installed (conda-meta) but its files are damaged: "
            f"reinstall it, {fixes.reinstall(env, 'python')}{said}"
        )
    if declared is not None:
        return fixes.add(env, fixes.Package("python", declared[0]))
    mm = ".".join((env.python_version or "").split(".")[:2])
    return fixes.add(env, fixes.Package("python", f"{mm}.*" if mm else "3.12.*"))


def _permission_fix(env: PixiEnv) -> str:
    """The env is intact but this user may not read it: nothing to reinstall."""
    return (
        f"the files are intact but this user may not read them: run the suite as the user that "
        f"owns {env.prefix}, or make the env readable (`chmod -R a+rX {env.prefix}`)"
    )


def _in_conda_meta(path: Path) -> bool:
    return "conda-meta" in (path.name, path.parent.name)
