"""Settings: each one an option and an ini key, resolved in one place.

Precedence, highest first: the command-line option, the ini key (``[tool.pytest.ini_options]``
or ``pytest.ini``), then the setting's default (which may come from the environment, such as
``$CONDA_PREFIX`` or ``TORCH_CUDA_ARCH_LIST``; its help text says so).

Area plugins add their settings with :func:`add_setting` so that every setting is spelled
the same way: ``--vllm-wheel PATH`` on the command line, ``vllm_wheel = ...`` in ini files.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

GROUP = "vllm-env"


@dataclass(frozen=True)
class Setting:
    option: str  # "--vllm-env"
    ini: str  # "vllm_env"
    multiple: bool
    help: str


SETTINGS: dict[str, Setting] = {}


def default_metavar(ini: str) -> str:
    """One spelling per kind of value: ``SECONDS`` for timeouts, ``NUMBER`` for other
    numbers, ``PATH`` for the rest (``--help`` showed VLLM_BUILD_LOG, VLLM_PROBE_TIMEOUT...)."""
    if ini.endswith("_timeout"):
        return "SECONDS"
    if ini.endswith(("_tolerance", "_exponent")):
        return "NUMBER"
    return "PATH"


def add_setting(
    parser: pytest.Parser, option: str, help: str, *, multiple: bool = False, metavar: str = ""
) -> None:
    """Register ``--option`` and its ini key; ``multiple`` settings are repeatable lists
    (the help says so). ``metavar`` defaults to :func:`default_metavar`."""
    ini = option.lstrip("-").replace("-", "_")
    SETTINGS[ini] = Setting(option, ini, multiple, help)
    group = parser.getgroup(GROUP, "vLLM environment conformance (pytest-vllm-env)")
    group.addoption(
        option,
        action="append" if multiple else "store",
        dest=ini,
        default=None,
        metavar=metavar or default_metavar(ini),
        # argparse %-formats help texts: "%N" (the node name) broke `pytest --help`
        help=f"{help} ({'repeatable; ' if multiple else ''}ini: {ini})".replace("%", "%%"),
    )
    parser.addini(ini, help=help, type="linelist" if multiple else "string", default=None)


def get(config: pytest.Config, ini: str) -> str | None:
    """A single-valued setting: option, else ini, else None."""
    value = config.getoption(ini, default=None)
    if value:
        return str(value)
    ini_value = config.getini(ini)
    return str(ini_value).strip() or None if ini_value else None


def get_number(config: pytest.Config, ini: str, default: float) -> float:
    """A numeric setting (a timeout, a tolerance); a value that is not a number is a usage
    error naming the option, never a silent fallback.

    Every ``*_timeout`` is seconds > 0 and every ``*_tolerance`` is >= 0: a timeout of 0 or
    -5 killed nvcc at once and the env was then blamed ("reinstall cuda-nvcc")."""
    value = get(config, ini)
    if not value:
        return default
    option = "--" + ini.replace("_", "-")
    try:
        number = float(value)
    except ValueError:
        raise pytest.UsageError(f"{option}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise pytest.UsageError(f"{option}: {value!r} is not a finite number")
    if ini.endswith("_timeout") and number <= 0:
        raise pytest.UsageError(f"{option}: {value!r} is not a number of seconds > 0")
    if ini.endswith("_tolerance") and number < 0:
        raise pytest.UsageError(f"{option}: {value!r} is negative; a tolerance is >= 0")
    return number


def get_list(config: pytest.Config, ini: str) -> list[str]:
    """A repeatable setting: all options given, else the ini lines. Commas also split."""
    values = config.getoption(ini, default=None) or config.getini(ini) or []
    result: list[str] = []
    for value in values:
        result.extend(v.strip() for v in str(value).split(",") if v.strip())
    return result


def expand_globs(patterns: Sequence[str], base: str | os.PathLike[str]) -> list[str]:
    """Expand path globs relative to ``base``; a pattern matching nothing stays as given."""
    result: list[str] = []
    for pattern in patterns:
        full = os.path.join(base, os.path.expanduser(pattern))
        matches = sorted(glob.glob(full)) if glob.has_magic(pattern) else []
        result.extend(matches or [full])
    return result
