"""Settings: each one an option and an ini key, resolved in one place.

Precedence, highest first: the command-line option, the ini key (``[tool.pytest.ini_options]``
or ``pytest.ini``), then the setting's default (which may come from the environment, such as
``$CONDA_PREFIX`` or ``TORCH_CUDA_ARCH_LIST``; its help text says so).

Area plugins add their settings with :func:`add_setting` so that every setting is spelled
the same way: ``--vllm-wheel PATH`` on the command line, ``vllm_wheel = ...`` in ini files.

One path rule for every path setting (:data:`PATH_SETTINGS`), the one pytest applies to its
own ``paths`` ini values: a relative path given on the command line (or in ``PYTEST_ADDOPTS``
or ``addopts``) is relative to the directory pytest was started in (the invocation dir); one
written in an ini file is relative to that file's directory (with ``-c`` or ``--rootdir`` it
need not be the rootdir). ``~`` is expanded. :func:`resolve_path` is the only place that
applies it; ``--help`` says it for each path option.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import pytest

GROUP = "vllm-env"


# A NamedTuple, not a dataclass: this module loads in every pytest run of the user's repo,
# and a dataclass costs a millisecond to define (benchmarks/startup.py).
class Setting(NamedTuple):
    option: str  # "--vllm-env"
    ini: str  # "vllm_env"
    multiple: bool
    help: str


SETTINGS: dict[str, Setting] = {}
FLAGS: dict[str, str] = {}  # ini key -> option of every on/off setting (add_flag)

# Every setting whose value is a path (or may be one): what a value is, beside the path rule.
PATH_SETTINGS: dict[str, str] = {
    "vllm_env": "a prefix, or a Pixi env name when no such path exists and it has no '/'",
    "pixi_manifest": "a file, or the folder holding pixi.toml / pyproject.toml",
    "vllm_wheel": "a wheel file; globs are expanded from the same base",
    "modelopt_checkpoint": "a folder, else an 'org/name' repo id in the local Hugging Face cache",
    "vllm_checkpoint": "a folder, else an 'org/name' repo id in the local Hugging Face cache",
    "reference_checkpoint": "a folder",
    "cmake": "a cmake executable",
    "vllm_project": "a folder or one project file",
    "vllm_source": "a folder (a vLLM checkout)",
    "vllm_build_log": "a log file; globs are expanded from the same base",
    "vllm_env_report": "the JSON file to write (%N: the node name)",
}
PATH_RULE = "relative: to the dir pytest runs in; in an ini file, to that file's dir"


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
        help=f"{help} ({'; '.join(_notes(ini, multiple))})".replace("%", "%%"),
    )
    parser.addini(ini, help=help, type="linelist" if multiple else "string", default=None)


def add_flag(parser: pytest.Parser, option: str, help: str, ini_help: str) -> None:
    """Register the on/off ``--option`` (``store_true``) and its ``bool`` ini key; an ini
    value pytest cannot read as true/false is a usage error at start (:func:`validate`)."""
    ini = option.lstrip("-").replace("-", "_")
    FLAGS[ini] = option
    parser.getgroup(GROUP).addoption(
        option, action="store_true", default=None, help=f"{help} (ini: {ini})"
    )
    parser.addini(ini, help=ini_help, type="bool", default=False)


def get_flag(config: pytest.Config, ini: str) -> bool:
    """An on/off setting: the option when given, else the ini key (validated at start)."""
    option = config.getoption(ini, default=None)
    return bool(option) if option is not None else bool(config.getini(ini))


def _notes(ini: str, multiple: bool) -> list[str]:
    notes = ["repeatable"] if multiple else []
    notes.append(f"ini: {ini}")
    if ini in PATH_SETTINGS:
        notes.append(PATH_RULE)
    return notes


def get(config: pytest.Config, ini: str) -> str | None:
    """A single-valued setting: option, else ini, else None."""
    value = config.getoption(ini, default=None)
    if value:
        return str(value)
    ini_value = config.getini(ini)
    return str(ini_value).strip() or None if ini_value else None


# The accepted range of every numeric setting: (low, low inclusive, high, whole numbers only,
# what the number is). A timeout above a week ended in OverflowError inside selectors (its
# milliseconds overflow a C int at 24.8 days); 0 or -5 killed nvcc at once and the env was then
# blamed ("reinstall cuda-nvcc"). vocab_size ** 1e308 overflows a float.
class Range(NamedTuple):
    low: float
    low_inclusive: bool
    high: float
    whole: bool
    what: str

    def text(self) -> str:
        """The range as ``--help`` and usage errors say it."""
        low = f">= {self.low:g}" if self.low_inclusive else f"> {self.low:g}"
        return f"{self.what} {low} and <= {self.high:g}"


WEEK = 7 * 24 * 3600.0
NUMBER_RANGES: dict[str, Range] = {
    "cuda_tool_timeout": Range(0, False, WEEK, False, "seconds"),
    "build_timeout": Range(0, False, WEEK, False, "seconds"),
    "vllm_probe_timeout": Range(0, False, WEEK, False, "seconds"),
    "vllm_logprob_tolerance": Range(0, True, 100, False, "nats"),
    "vllm_perplexity_exponent": Range(0, False, 4, False, "an exponent"),
    "vllm_parallel_loads": Range(1, True, 64, True, "a whole number"),
}


def number_range(ini: str) -> Range:
    """The accepted range of the numeric setting ``ini`` (a ``*_timeout`` not in the table is
    seconds in (0, a week]; any other number is finite and >= 0)."""
    if ini in NUMBER_RANGES:
        return NUMBER_RANGES[ini]
    if ini.endswith("_timeout"):
        return Range(0, False, WEEK, False, "seconds")
    return Range(0, True, 1e300, False, "a number")


def get_number(config: pytest.Config, ini: str, default: float) -> float:
    """A numeric setting (a timeout, a tolerance); a value that is not a number, or one
    outside its accepted range (:data:`NUMBER_RANGES`), is a usage error naming the option
    and the range, never a silent fallback."""
    value = get(config, ini)
    if not value:
        return default
    option = "--" + ini.replace("_", "-")
    accepted = number_range(ini)
    try:
        number = float(value)
    except ValueError:
        raise pytest.UsageError(
            f"{option}: {value!r} is not a number (accepted: {accepted.text()})"
        ) from None
    low_ok = number >= accepted.low if accepted.low_inclusive else number > accepted.low
    whole_ok = not accepted.whole or (math.isfinite(number) and number == int(number))
    if not (math.isfinite(number) and low_ok and number <= accepted.high and whole_ok):
        raise pytest.UsageError(
            f"{option}: {value!r} is out of range (accepted: {accepted.text()})"
        )
    return number


def get_list(config: pytest.Config, ini: str) -> list[str]:
    """A repeatable setting: all options given, else the ini lines. Commas also split."""
    values = config.getoption(ini, default=None) or config.getini(ini) or []
    result: list[str] = []
    for value in values:
        result.extend(v.strip() for v in str(value).split(",") if v.strip())
    return result


def base_dir(config: pytest.Config, ini: str) -> Path:
    """The directory a relative value of the path setting ``ini`` is relative to: the
    invocation dir when the option was given (command line, ``PYTEST_ADDOPTS``,
    ``addopts``), else the ini file's directory (``-o`` values too, as pytest does for its
    own ``paths`` ini values), else the invocation dir."""
    invocation = Path(str(config.invocation_params.dir))
    if config.getoption(ini, default=None):
        return invocation
    inipath = config.inipath
    return Path(str(inipath)).parent if inipath is not None else invocation


def resolve_path(config: pytest.Config, ini: str, value: str) -> Path:
    """``value`` of the path setting ``ini`` as a path: ``~`` expanded, a relative one joined
    to :func:`base_dir`. Symlinks are kept (the user's spelling names the env)."""
    if ini not in PATH_SETTINGS:
        raise ValueError(f"{ini} is not a path setting (settings.PATH_SETTINGS)")
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base_dir(config, ini) / path


def get_path(config: pytest.Config, ini: str) -> Path | None:
    """A single-valued path setting, resolved by :func:`resolve_path`; None when not set."""
    value = get(config, ini)
    return resolve_path(config, ini, value) if value else None


def get_paths(config: pytest.Config, ini: str, *, globs: bool = False) -> list[Path]:
    """A repeatable path setting, each value resolved by :func:`resolve_path`; with
    ``globs``, patterns are expanded (a pattern matching nothing stays, for its check to say
    so)."""
    values = get_list(config, ini)
    if globs:
        return [Path(p) for p in expand_globs(values, base_dir(config, ini))]
    return [resolve_path(config, ini, v) for v in values]


def expand_globs(patterns: Sequence[str], base: str | os.PathLike[str]) -> list[str]:
    """Expand path globs relative to ``base``; a pattern matching nothing stays as given."""
    import glob

    result: list[str] = []
    for pattern in patterns:
        full = os.path.join(base, os.path.expanduser(pattern))
        matches = sorted(glob.glob(full)) if glob.has_magic(pattern) else []
        result.extend(matches or [full])
    return result


# pytest's own truth values for a ``bool`` ini key (_pytest.config._strtobool)
TRUTH_VALUES = "true/false, yes/no, on/off, 1/0, y/n, t/f"


def validate(config: pytest.Config) -> None:
    """Every setting's value checked at start, each a usage error (exit 4) naming the option
    or ini key and what it accepts, never an error in every test or a quiet fall-back:

    - an option given an empty value (``--vllm-env=``, ``--cuda-arch=``): it fell back to
      pytest's own interpreter, or to no arch, without a word;
    - a number out of its range (:data:`NUMBER_RANGES`);
    - an on/off ini key pytest cannot read (``vllm_strict = maybe`` was a ValueError in every
      test that asked)."""
    for ini, setting in SETTINGS.items():
        given = config.getoption(ini, default=None)
        if given is None:
            continue
        values = given if isinstance(given, list) else [given]
        for value in values:
            if not [v for v in str(value).split(",") if v.strip()]:
                raise pytest.UsageError(
                    f"{setting.option}: an empty value; give {_metavar(ini)}; or leave "
                    "the option out"
                )
    for ini in NUMBER_RANGES:
        if ini in SETTINGS:
            get_number(config, ini, 0.0)
    for ini, option in FLAGS.items():
        try:
            config.getini(ini)
        # pytest 8 raises ValueError, pytest 9 a UsageError; neither names the key
        except (ValueError, pytest.UsageError) as exc:  # invalid truth value 'maybe'
            where = f" ({config.inipath})" if config.inipath else ""
            raise pytest.UsageError(
                f"ini key {ini}{where}: {exc}; use one of {TRUTH_VALUES} (or the option {option})"
            ) from None


def _metavar(ini: str) -> str:
    """What a value of ``ini`` is, for messages."""
    return PATH_SETTINGS.get(ini) or f"a value ({SETTINGS[ini].help})"
