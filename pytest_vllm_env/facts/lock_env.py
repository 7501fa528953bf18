"""Lock mode: judge a Pixi env from ``pixi.lock`` when it is not installed (or when
``--vllm-from-lock`` asks to, as in CI before ``pixi install``).

The seam with the rest of the suite is the env object itself: :func:`open_env` returns the
same :class:`~pytest_vllm_env.facts.env.PixiEnv` an installed env gives, its conda packages and
Python distributions filled from the lock's entries (name, version, build, requires_dist),
with ``env.locked`` holding the :class:`LockSource`. Checks that read the env's files skip
in lock mode (the plugin says why); the ``lock.*`` checks judge the same facts through the
same check functions (an arch list is an arch list, from a fatbin or from the arch table).

Nothing here runs pixi, installs anything or creates ``.pixi/``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name

from pytest_vllm_env import files
from pytest_vllm_env.facts.env import CondaPackage, EnvError, EnvSpec, PixiEnv, PythonDist
from pytest_vllm_env.readers.pixilock import (
    LockedEnv,
    LockedPypi,
    LockError,
    LockFile,
    current_platform,
    lock_path,
    parse_lock,
    read_bytes,
)


@dataclass
class LockSource:
    """pixi.lock as read for one env and platform, or why it could not be."""

    path: Path
    env_name: str
    platform: str
    forced: bool  # --vllm-from-lock: judged from the lock although the env is installed
    installed: bool  # the env's prefix holds an installed env
    lock: LockFile | None = None
    locked: LockedEnv | None = None
    error: LockError | None = None
    seconds: float = 0.0  # time spent reading and resolving the lock
    # when the judged env locks no vLLM: the other envs of the lock that do, on the same
    # platform, with the version each locks ({"cuda": "0.26.0"}); empty otherwise
    vllm_elsewhere: dict[str, str] = field(default_factory=dict)

    @property
    def describe(self) -> str:
        """For the header: ``judged from pixi.lock (linux-64): not installed``."""
        why = "installed, --vllm-from-lock" if self.forced and self.installed else "not installed"
        return f"judged from {self.path.name} ({self.platform}): {why}"


# pixi.lock as parsed, by path, with the bytes it was parsed from: lock mode,
# lock.installed-current and platform.wheel-tag read the same lock, and parse it once. The file
# is read each time and compared whole (a few hundred KB: microseconds), so a lock rewritten in
# place is parsed again whatever its size and times say.
_PARSED: dict[str, tuple[bytes, LockFile]] = {}


def load_lock(path: Path) -> LockFile:
    """pixi.lock parsed (:func:`pytest_vllm_env.readers.pixilock.parse_lock`), once per process
    for the same bytes; raise LockError when it cannot be read."""
    raw = read_bytes(path)
    hit = _PARSED.get(str(path))
    if hit is not None and hit[0] == raw:
        return hit[1]
    lock = parse_lock(raw, path)
    if len(_PARSED) >= 8:
        _PARSED.clear()
    _PARSED[str(path)] = (raw, lock)
    return lock


def forget_locks() -> None:
    """Drop the parsed locks (benchmarks/lock_parse.py times a parse each round)."""
    _PARSED.clear()


def lock_present(path: Path) -> bool:
    """Whether something is at ``path`` to read as a lock: a missing file is no lock, a FIFO or
    a directory named pixi.lock is one that cannot be read (lock.file says so)."""
    return files.describe(path) not in ("missing", "a dangling symlink")


def locked_pypi(
    lock: Path, env_name: str, name: str, platform: str = "linux-64"
) -> LockedPypi | None:
    """The wheel or sdist pixi.lock installs for PyPI package ``name`` in ``env_name`` on
    ``platform``; None without one (a git or path source, no such package, or a lock that
    cannot be read: lock.file says why)."""
    try:
        pkg = load_lock(lock).env(env_name, platform).pypi_package(name)
    except LockError:
        return None
    return pkg if pkg is not None and (pkg.is_wheel or pkg.is_sdist) else None


def is_installed(prefix: Path) -> bool:
    """An env is installed when its prefix holds conda-meta/ (pixi always writes it)."""
    try:
        return (prefix / "conda-meta").is_dir()
    except OSError:
        return False


def read_source(
    path: Path, env_name: str, platform: str, *, forced: bool, installed: bool
) -> LockSource:
    """Read ``path`` for ``env_name`` on ``platform``; errors are kept, never raised."""
    source = LockSource(path, env_name, platform, forced, installed)
    start = time.perf_counter()
    try:
        source.lock = load_lock(path)
        source.locked = source.lock.env(env_name, platform)
        source.platform = source.locked.platform
    except LockError as exc:
        source.error = exc
    if source.lock is not None and (source.locked is None or _vllm_of(source.locked) is None):
        source.vllm_elsewhere = vllm_envs(source.lock, platform, but=env_name)
    source.seconds = time.perf_counter() - start
    return source


def _vllm_of(locked: LockedEnv) -> str | None:
    """The vLLM version ``locked`` installs (a PyPI wheel or sdist, or conda-forge's)."""
    pkg = locked.pypi_package("vllm") or locked.conda_package("vllm")
    return pkg.version if pkg is not None else None


def vllm_envs(lock: LockFile, platform: str, *, but: str = "") -> dict[str, str]:
    """``{env: vLLM version}`` for each env of ``lock`` (other than ``but``) that locks vLLM
    on ``platform``: where the vLLM of a workspace lives when the env judged has none."""
    found: dict[str, str] = {}
    for name in sorted(lock.environments):
        if name == but:
            continue
        try:
            version = _vllm_of(lock.env(name, platform))
        except LockError:
            continue  # not locked for this platform, or broken: lock.file judges the judged env
        if version is not None:
            found[name] = version
    return found


def open_env(spec: EnvSpec, *, from_lock: bool = False, platform: str | None = None) -> PixiEnv:
    """The env ``spec`` names: read from its files when installed, else (or with
    ``from_lock``) from the pixi.lock next to its manifest. Raise EnvError when neither can
    be judged."""
    installed = is_installed(spec.prefix)
    lock = lock_path(spec.manifest) if spec.manifest and spec.name else None
    if from_lock and lock is None:
        raise EnvError(
            f"--vllm-from-lock: {spec.prefix} is not a Pixi env of a manifest (name it with "
            "--vllm-env NAME, or pass --pixi-manifest=PATH)"
        )
    if lock is not None and (from_lock or not installed):
        if not lock_present(lock):
            if from_lock:
                raise EnvError(
                    f"--vllm-from-lock: no {lock.name} next to {spec.manifest}; run `pixi lock` "
                    "(it writes the lock without installing)"
                )
        else:
            source = read_source(
                lock,
                spec.name or "default",
                platform or current_platform(),
                forced=from_lock,
                installed=installed,
            )
            return env_from_lock(spec, source)
    if not installed and lock is not None and spec.manifest is not None and spec.name:
        # declared, never installed, and no lock to judge it from: say how to get one or the
        # other (the fixes of a missing prefix said to add lines the manifest already has)
        from pytest_vllm_env.facts.fixes import env_not_installed

        raise EnvError(env_not_installed(spec.manifest, spec.name, spec.prefix))
    return PixiEnv.read(spec.prefix, name=spec.name, manifest=spec.manifest)


def env_from_lock(spec: EnvSpec, source: LockSource) -> PixiEnv:
    """A PixiEnv whose packages are the lock's entries (empty when the lock is unreadable:
    ``lock.file`` then says why)."""
    env = PixiEnv(prefix=spec.prefix, name=spec.name, manifest_path=spec.manifest)
    env.locked = source
    env.base_environ = dict(os.environ)
    locked = source.locked
    if locked is None:
        return env
    for pkg in locked.conda.values():
        env.conda_packages[pkg.name] = CondaPackage(
            pkg.name, pkg.version, pkg.build, pkg.channel, source.path
        )
    for pkg in locked.pypi.values():
        # a path that cannot exist (the lock is a file): package_file() finds nothing
        where = source.path / "pypi" / canonicalize_name(pkg.name)
        env.python_dists[canonicalize_name(pkg.name)] = PythonDist(
            pkg.name, pkg.version, where, pkg.requires_dist
        )
    env.python_version = locked.python_version
    return env
