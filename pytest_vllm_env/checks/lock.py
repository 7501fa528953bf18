"""``lock.*``: judge a Pixi env from pixi.lock, before ``pixi install`` downloads gigabytes.

The failure this exists for (seed 001): a workspace locks torch 2.6.0+cu124 and conda-forge's
CUDA 12.4 nvcc for an RTX 5090 (sm_120); its owner learns it after the downloads and an hour
of vLLM build. Every fact needed was in pixi.lock (read by :mod:`pytest_vllm_env.readers.pixilock`,
turned into an env by :mod:`pytest_vllm_env.facts.lock_env`, into a torch build, a toolkit and
a cmake by :mod:`pytest_vllm_env.facts.lockfacts`).

Where the fact is the same as for an installed env, the same check function judges it and
its finding is relabelled ``lock.*`` with a fix that names the manifest line to change. The
checks, by module:

- here: ``lock.file`` (the lock parses, has the env and the platform) and
  ``lock.installed-current`` (the installed env holds what the lock says), and the helpers
  the other two modules share;
- :mod:`.lock_cuda`: ``lock.torch-archs`` (the locked torch build's arch list through
  :func:`coverage_arch.coverage`, as ``arch.coverage`` judges libtorch_cuda.so's fatbin),
  ``lock.nvcc-archs`` (the locked nvcc through :func:`cuda.arch_supported`),
  ``lock.cuda-match`` (cuda-* packages through :func:`cuda.version_consistent`, and torch's
  CUDA major against the toolkit's) and ``lock.build-deps`` (the -dev packages and cmake a
  CUDA build needs);
- :mod:`.lock_pypi`: ``lock.torch-pins`` (requires_dist pins through :func:`abi.pins`;
  flash-attn wheel tags) and ``lock.wheel-tags`` (wheels that fit the locked Python, sdists
  that Pixi would build).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from packaging.version import InvalidVersion, Version

from pytest_vllm_env import findings as F
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.lock_env import LockSource
from pytest_vllm_env.findings import Finding
from pytest_vllm_env.readers.manifest_lines import ManifestLines
from pytest_vllm_env.readers.pixilock import READABLE_VERSIONS, LockedEnv

DEPS = "dependencies"
PYPI = "pypi-dependencies"


def manifest_lines(env: PixiEnv) -> ManifestLines:
    """The env's dependency lines, from the manifest's text as it was parsed."""
    return ManifestLines(env.manifest, env.name)


def relock(ml: ManifestLines) -> str:
    """The tail of every lock fix: re-lock, and judge again."""
    return f", then `pixi lock` (updates {ml.file}'s lock without installing) and judge again"


def relabel(findings: Iterable[Finding], cid: str, fix: str | None = None, **ev) -> list[Finding]:
    """Findings of a shared check, under a lock.* id, with a fix in the manifest's terms."""
    out = []
    for f in findings:
        evidence = {**f.evidence, **ev}
        new_fix = fix if (fix and f.outcome in ("failed", "error", "warning")) else f.fix
        out.append(replace(f, id=cid, fix=new_fix, evidence=evidence))
    return out


def locked_or_skip(
    env: PixiEnv, cid: str
) -> tuple[LockSource | None, LockedEnv | None, Finding | None]:
    """The env's lock, or the skip that says why this check has nothing to judge."""
    source: LockSource | None = env.locked
    if source is None:
        return (
            None,
            None,
            F.skipped(
                cid,
                f"{env.label} is installed: judged from its files (pass --vllm-from-lock to judge "
                "pixi.lock instead)",
            ),
        )
    if source.locked is None:
        return source, None, F.skipped(cid, f"{source.path.name} could not be read (lock.file)")
    return source, source.locked, None


def cuda_fix(ml: ManifestLines, need: str) -> str:
    """Move the declared CUDA packages to ``need`` (``12.8``), naming their lines."""
    parts = []
    for name in ("cuda-version", "cuda-nvcc", "cuda-toolkit"):
        if ml.find(name, DEPS):
            parts.append(ml.change(name, DEPS, f'{name} = "{need}.*"'))
    if not parts:
        parts.append(ml.change("cuda-version", DEPS, f'cuda-version = "{need}.*"'))
    return "; ".join(parts)


# -- lock.file -----------------------------------------------------------------------------------
def lock_file(source: LockSource, manifest_name: str = "pixi.toml") -> Finding:
    """The lock parses, its format is one we read, and it has the env and platform."""
    cid = "lock.file"
    err = source.error
    redo = f"run `pixi lock` next to {manifest_name} (it rewrites {source.path.name})"
    if err is None and source.locked is not None:
        locked = source.locked
        return F.passed(
            cid,
            f"{source.path.name} (format {locked.version}) locks env {locked.name!r} for "
            f"{locked.platform}: {len(locked.conda)} conda and {len(locked.pypi)} PyPI packages",
            seconds=round(source.seconds, 4),
        )
    if err is None:  # pragma: no cover - read_source always sets one or the other
        return F.error(cid, f"{source.path} was not read", redo)
    if err.kind == "version":
        version = err.details.get("version", 0)
        if version > READABLE_VERSIONS[-1]:
            fix = (
                f"update pytest-vllm-env (this one reads formats {READABLE_VERSIONS[0]}-"
                f"{READABLE_VERSIONS[-1]}), or install the env (`pixi install -e "
                f"{source.env_name}`) and judge its files"
            )
        else:
            fix = f"{redo} with a current pixi: it writes format {READABLE_VERSIONS[-1]}"
        return F.error(cid, str(err), fix, lock=str(source.path))
    if err.kind == "env":
        return F.error(
            cid,
            f"{err}: the lock predates the env in {manifest_name}",
            redo,
            lock=str(source.path),
        )
    if err.kind == "platform":
        have = err.details.get("platforms", [])
        fix = (
            f"add {source.platform!r} to `platforms` in [workspace] of {manifest_name} and "
            f"{redo[0].lower()}{redo[1:]}"
        )
        if have:
            fix += f"; or judge a platform it has: --pixi-platform={have[0]}"
        return F.error(cid, str(err), fix, lock=str(source.path))
    how = {
        "yaml": "a merge conflict or an interrupted write leaves such a file",
        "alias": "pixi never writes anchors or aliases: this file was edited or made by hand",
        "structure": "truncated, or not written by pixi",
        "unreadable": "check its permissions",
    }.get(err.kind, "")
    return F.error(
        cid,
        str(err),
        f"{redo} ({how}; `git checkout {source.path.name}` restores the committed one)",
        lock=str(source.path),
    )


# -- lock.installed-current ----------------------------------------------------------------------
def installed_current(
    installed: PixiEnv | None, locked: LockedEnv | None, reason: str = ""
) -> Finding:
    """The installed env holds what pixi.lock says: after a lock change without ``pixi
    install``, what runs is not what the lock (and a review of it) says."""
    cid = "lock.installed-current"
    if locked is None or installed is None:
        return F.skipped(cid, reason or "no pixi.lock or no installed env to compare")
    stale: list[str] = []
    for pkg in locked.conda.values():
        have = installed.conda_packages.get(pkg.name)
        if have is None:
            stale.append(f"{pkg.name} {pkg.version} not installed")
        elif (have.version, have.build) != (pkg.version, pkg.build) and pkg.build:
            have_text = f"{have.version}-{have.build}"
            stale.append(f"{pkg.name} {have_text} installed, {pkg.version}-{pkg.build} locked")
    for pkg in locked.pypi.values():
        dist = installed.dist(pkg.name)
        if dist is None:
            stale.append(f"{pkg.name} {pkg.version} not installed")
            continue
        if pkg.version and not _same_version(dist.version, pkg.version):
            stale.append(f"{pkg.name} {dist.version} installed, {pkg.version} locked")
    if stale:
        name = locked.name
        return F.warning(
            cid,
            f"{installed.prefix} is older than {locked.path.name}: {len(stale)} package(s) "
            "differ ("
            + "; ".join(stale[:5])
            + (" ..." if len(stale) > 5 else "")
            + "); `pixi run` updates it first, a direct call of its binaries does not",
            f"`pixi install -e {name}` (or judge the lock: --vllm-from-lock)",
            differences=stale,
        )
    return F.passed(cid, f"{installed.prefix} matches {locked.path.name}: {len(locked)} packages")


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b
