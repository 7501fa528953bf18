"""What the C builds that run inside the stack find: ``Python.h`` and a host C compiler.

Triton builds a small C module (its launcher, ``cuda_utils``) with the host C compiler at the
first kernel launch of a process, with ``-I`` the interpreter's include dir: Triton's
``runtime/build.py`` (``_build``) takes ``sysconfig.get_paths(scheme="posix_prefix")
["include"]``, that is ``{installed_base}/include/python{VERSION}{ABIFLAGS}``, where
``installed_base`` is the base interpreter's prefix (a venv's ``pyvenv.cfg`` ``home`` names the
base's ``bin``). torch Inductor's C++ wrappers take the same dir. Read here from the env's own
files: ``pyvenv.cfg``, and the base's ``lib/pythonX.Y/_sysconfigdata_*.py``
(:mod:`pytest_vllm_env.readers.sysconfigdata`), never from the Python running pytest.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_vllm_env import files
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.readers import sysconfigdata

_HOME = re.compile(r"^\s*home\s*=\s*(.+?)\s*$", re.M)


@dataclass(frozen=True)
class PythonHeaders:
    """Where the env's interpreter says its headers are, and whether ``Python.h`` is there."""

    version: str  # "3.12"
    base_prefix: str  # the base installation (a venv's pyvenv.cfg home's parent; else prefix)
    include: str  # {base}/include/python{VERSION}{ABIFLAGS}: what Triton passes with -I
    has_python_h: bool
    via_venv: bool = False  # the env is a venv of another installation
    sysconfigdata: str | None = None  # the file read
    vars: dict[str, Any] = field(default_factory=dict)  # INCLUDEPY, prefix, MULTIARCH...
    problem: str = ""

    @property
    def debian(self) -> bool:
        """A Debian/Ubuntu system Python: base ``/usr``, headers in ``python3.X-dev``."""
        return self.base_prefix == "/usr" or str(self.vars.get("INCLUDEPY", "")).startswith(
            "/usr/include/python"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HostCompiler:
    """The C compiler Triton's ``_build`` would run in the activated env, or why none."""

    variable: str | None  # "CC"
    variable_value: str | None  # its value after activation
    variable_source: str | None
    programs: tuple[str, ...]  # ("gcc", "clang"): looked up on PATH, in Triton's order
    found: str | None  # the path it would run
    problem: str = ""


def python_headers(env: PixiEnv) -> PythonHeaders | None:
    """The env interpreter's include dir and its ``Python.h``; None without a Python."""
    version = ".".join((env.python_version or "").split(".")[:2])
    if not version:
        return None
    base = env.prefix
    via_venv = False
    cfg = env.prefix / "pyvenv.cfg"
    if files.regular(cfg):
        try:
            match = _HOME.search(files.read_text(cfg, files.CONFIG))
        except OSError:
            match = None
        if match:
            base, via_venv = Path(match.group(1)).parent, True
    lib = base / "lib" / f"python{version}"
    data_file = _sysconfigdata_file(lib)
    values: dict[str, Any] = {}
    problem = ""
    if data_file is None:
        problem = f"no _sysconfigdata_*.py in {lib}"
    else:
        try:
            values = sysconfigdata.parse(files.read_text(data_file, files.SOURCE))
        except (OSError, ValueError) as exc:
            problem = f"{data_file}: {exc}"
    abiflags = str(values.get("ABIFLAGS", "") or "")
    include = base / "include" / f"python{values.get('VERSION', version)}{abiflags}"
    return PythonHeaders(
        version=version,
        base_prefix=str(base),
        include=str(include),
        has_python_h=files.regular(include / "Python.h"),
        via_venv=via_venv,
        sysconfigdata=str(data_file) if data_file else None,
        vars=values,
        problem=problem,
    )


def _sysconfigdata_file(lib: Path) -> Path | None:
    """``sysconfig._get_sysconfigdata_name()``'s file: ``_sysconfigdata_{abi}_linux_{multiarch}``
    first, else any ``_sysconfigdata_*.py`` of the stdlib dir."""
    try:
        found = sorted(lib.glob("_sysconfigdata_*.py"))
    except OSError:
        return None
    linux = [p for p in found if "_linux_" in p.name]
    for path in linux + found:
        if files.regular(path):
            return path
    return None


def host_compiler(env: PixiEnv, variable: str | None, programs: tuple[str, ...]) -> HostCompiler:
    """Triton's rule (``runtime/build.py``): ``$CC`` when set (run as given: a bare name is
    found on PATH by the subprocess), else the first of ``programs`` on the activated PATH."""
    environ = env.environ()
    value = environ.get(variable) if variable else None
    source = env.activation.sources.get(variable or "") if value else None
    if value:
        word = value.split()[0]
        found = Path(word) if "/" in word else env.which(word)
        ok = found is not None and files.regular(found)
        return HostCompiler(
            variable, value, source, programs, str(found) if ok else None,
            "" if ok else f"{variable}={value} names no executable on the activated PATH",
        )  # fmt: skip
    for program in programs:
        found = env.which(program)
        if found is not None:
            return HostCompiler(variable, None, None, programs, str(found))
    return HostCompiler(
        variable, None, None, programs, None,
        f"neither ${variable or 'CC'} nor {', '.join(programs) or 'gcc'} on the activated PATH",
    )  # fmt: skip
