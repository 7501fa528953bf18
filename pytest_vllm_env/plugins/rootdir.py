"""pytest's rootdir, ini file and cache, kept where the user's repo puts them.

pytest chooses its rootdir and ini file before any plugin has added its options
(pytest-dev/pytest#8846): in ``--vllm-env /opt/envs/x`` it does not yet know that
``--vllm-env`` takes a value, and takes ``/opt/envs/x`` for a test path. Seen: the repo's
``pytest.ini`` (``cuda_arch = 9.0``, its markers, ``addopts``) silently dropped, so the wrong
env or no arch was judged; and, when the env and the working directory share only ``/``, the
rootdir became the env itself, with ``.pytest_cache`` (and our fact cache) written into it.

:func:`check_space_form_options` runs first thing after our options exist: it works out the
rootdir and ini file pytest would have chosen had it known them. Same ini file, other rootdir:
the rootdir is put back (nothing else was read from it). Another ini file: a usage error that
says to write ``--vllm-env=PATH``. :func:`fact_cache_candidates` and :func:`guard_pytest_cache` keep
every cache out of the judged envs.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

ISSUE = "pytest-dev/pytest#8846"


def space_form(args: Sequence[str], options: Iterable[str]) -> list[tuple[str, str]]:
    """``(option, value)`` for each of ``options`` written ``--opt VALUE`` (not ``--opt=VALUE``)."""
    wanted = set(options)
    found = []
    for i, token in enumerate(args[:-1]):
        if token in wanted and not args[i + 1].startswith("-"):
            found.append((token, args[i + 1]))
    return found


def check_space_form_options(config: pytest.Config, parser: pytest.Parser) -> None:
    """Keep the repo's rootdir and ini file although our options were written ``--opt VALUE``.

    Raise :class:`pytest.UsageError` when the ini file pytest chose is not the one it would
    have chosen with ``--opt=VALUE``; put the rootdir back when only the rootdir moved.
    """
    from pytest_vllm_env.plugins import settings

    args = shlex.split(os.environ.get("PYTEST_ADDOPTS", "")) + list(config.invocation_params.args)
    spaced = space_form(args, [s.option for s in settings.SETTINGS.values()])
    if not spaced:
        return
    wanted = _setup_with_our_options(config, parser, args)
    if wanted is None:
        return
    rootpath, inipath = wanted
    if inipath != config.inipath:
        raise pytest.UsageError(_moved_message(spaced, config.inipath, inipath))
    if rootpath == config.rootpath:
        return
    if not hasattr(config, "_rootpath"):  # a pytest that keeps it elsewhere: say so instead
        raise pytest.UsageError(_moved_message(spaced, config.rootpath, rootpath, "rootdir"))
    old = config.rootpath
    config._rootpath = rootpath  # type: ignore[attr-defined]
    config._parser.extra_info["rootdir"] = str(rootpath)  # type: ignore[attr-defined]
    namespace = config.known_args_namespace
    if inipath is None and getattr(namespace, "confcutdir", None) == str(old):
        namespace.confcutdir = str(rootpath)  # derived from the rootdir, not given by the user


def _setup_with_our_options(
    config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> tuple[Path, Path | None] | None:
    """The rootdir and ini file pytest picks for ``args`` once our options are known."""
    try:
        from _pytest.config.findpaths import determine_setup

        ns = parser.parse_known_args(args)
        found: Any = determine_setup(
            inifile=ns.inifilename,
            override_ini=ns.override_ini,
            args=ns.file_or_dir,
            rootdir_cmd_arg=ns.rootdir or None,
            invocation_dir=config.invocation_params.dir,
        )
    except (ImportError, TypeError, AttributeError):  # another pytest's internals
        return None
    return Path(found[0]), Path(found[1]) if found[1] else None


def _moved_message(
    spaced: list[tuple[str, str]], chosen: Path | None, wanted: Path | None, what: str = "ini file"
) -> str:
    # pytest looks only at values that exist as paths; the others are named in the fix only.
    paths = [(o, v) for o, v in spaced if os.path.exists(v)] or spaced
    written = ", ".join(f"`{o} {v}`" for o, v in paths)
    fixed = " ".join(f"`{o}={v}`" for o, v in spaced)
    return (
        f"pytest-vllm-env: pytest chose its {what} before it knew that our options take a "
        f"value, and took {written} for a test path ({ISSUE}): it read "
        f"{chosen or 'no ini file'} instead of {wanted or 'none'}. Write the option with "
        f"`=`: {fixed}"
    )


# -- caches --------------------------------------------------------------------------------
def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/pytest-vllm-env`` (default ``~/.cache/pytest-vllm-env``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-vllm-env"


def inside(path: str | os.PathLike[str], prefixes: Iterable[Path]) -> Path | None:
    """The first of ``prefixes`` that holds ``path`` (symlinks resolved), else None."""
    real = Path(os.path.realpath(path))
    for prefix in prefixes:
        if real.is_relative_to(os.path.realpath(prefix)):
            return prefix
    return None


def pytest_cache_dir(config: pytest.Config) -> Path:
    """Where pytest's cache provider keeps ``.pytest_cache`` (the ``cache_dir`` ini key)."""
    raw = os.path.expanduser(os.path.expandvars(str(config.getini("cache_dir"))))
    return Path(raw) if os.path.isabs(raw) else config.rootpath / raw


def fact_cache_candidates(
    config: pytest.Config, judged: Sequence[Path]
) -> list[tuple[Path, str]] | None:
    """Where the fact cache may live, best first, as ``(folder, what it is)``: pytest's cache
    dir, then the user cache dir, each left out when inside a judged env. None when pytest's
    cache is off (``-p no:cacheprovider``: the run asked for no cache). Which of them can be
    used is :meth:`pytest_vllm_env.cache.FactCache.choose`'s question."""
    cache = getattr(config, "cache", None)
    if cache is None:
        return None
    found: list[tuple[Path, str]] = []
    if not inside(pytest_cache_dir(config), judged):
        try:
            found.append((Path(str(cache.mkdir("vllm-env-facts"))), "pytest's cache dir"))
        except OSError:  # an unwritable rootdir, a .pytest_cache that is a file: choose says
            found.append((pytest_cache_dir(config) / "d" / "vllm-env-facts", "pytest's cache dir"))
    user = user_cache_dir() / "facts"
    if not inside(user, judged):
        found.append((user, "the user cache dir"))
    return found


def guard_pytest_cache(config: pytest.Config, judged: Sequence[Path]) -> str | None:
    """Move pytest's own cache (last-failed, node ids) out of a judged env that holds the
    rootdir; the header line that says so, or None when nothing moved."""
    cache = getattr(config, "cache", None)
    if cache is None:
        return None
    current = pytest_cache_dir(config)
    owner = inside(current, judged)
    if owner is None or getattr(cache, "_vllm_env_moved", False):
        return None
    digest = hashlib.sha256(str(config.rootpath).encode()).hexdigest()[:16]
    target = user_cache_dir() / "pytest-cache" / digest
    if inside(target, judged):
        return None
    try:
        from _pytest.cacheprovider import Cache

        moved = Cache(target, config, _ispytest=True)
    except (ImportError, TypeError):
        return None
    moved._vllm_env_moved = True  # type: ignore[attr-defined]
    config.cache = moved
    return f"vllm-env: pytest's cache moved to {target}: {current} is inside the judged env {owner}"
