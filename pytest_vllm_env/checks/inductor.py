"""``inductor.python-headers`` and ``inductor.c-compiler``: what the C builds inside the stack need.

At the first Triton kernel of every process (vLLM's own kernels, torch Inductor's), Triton
compiles its launcher module: ``cc cuda_utils.c -I{sysconfig include} ...`` (``runtime/
build.py``: ``_build``). Without ``Python.h`` in the interpreter's include dir the engine dies
with ``fatal error: Python.h: No such file or directory`` (vllm-project/vllm#27890, "upon vllm
startup after a clean install"; sgl-project/sglang#1117): the case of a venv built from a
Debian/Ubuntu ``python3`` without ``python3.X-dev``. Without a C compiler it dies with "Failed
to find C compiler. Please specify via CC environment variable". Both are judged only where
Triton is installed (torch requires it on Linux).
"""

from __future__ import annotations

from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.fixes import Package
from pytest_vllm_env.facts.host_build import HostCompiler, PythonHeaders
from pytest_vllm_env.findings import Finding, failed, passed, skipped

HEADERS = "inductor.python-headers"
COMPILER = "inductor.c-compiler"
RULE = "triton/runtime/build.py: _build (read from the env's copy)"


def python_headers(headers: PythonHeaders | None, triton: str | None, env: PixiEnv) -> Finding:
    """Passed when ``Python.h`` is where Triton's ``-I`` points; failed otherwise."""
    if triton is None:
        return skipped(HEADERS, f"Triton is not installed in {env.prefix}: nothing builds C here")
    if headers is None:
        return skipped(HEADERS, f"no Python found in {env.prefix}")
    ev = {
        "include": headers.include,
        "base_prefix": headers.base_prefix + (" (pyvenv.cfg home)" if headers.via_venv else ""),
        "sysconfigdata": headers.sysconfigdata or headers.problem,
        "INCLUDEPY": headers.vars.get("INCLUDEPY", "not read"),
        "rule": RULE + ": -I sysconfig.get_paths(scheme='posix_prefix')['include']",
    }
    if headers.has_python_h:
        return passed(
            HEADERS, f"Python.h is in {headers.include}, where Triton {triton} looks", **ev
        )
    return failed(
        HEADERS,
        f"{headers.include}/Python.h is missing: Triton {triton} compiles its launcher with "
        f"`-I{headers.include}` at the first kernel, and vLLM dies at start-up with "
        '"fatal error: Python.h: No such file or directory"',
        _headers_fix(headers, env),
        **ev,
    )


def _headers_fix(headers: PythonHeaders, env: PixiEnv) -> str:
    version = headers.version
    base = f"{headers.base_prefix}/bin/python{version}"
    apt = f"`apt-get install python{version}-dev` (the headers of {base})"
    kind = fixes.kind_of(env)
    if kind in ("pixi", "pyproject", "conda"):
        conda = fixes.add(env, Package("python", f"{version}.*"))
        return f"{conda} (conda-forge's python ships its headers)" + (
            f", or {apt}" if headers.debian else ""
        )
    if headers.debian:
        return (
            f"{apt}; or build the venv from a Python that ships its headers (conda-forge "
            f'`python = "{version}.*"` in a Pixi env, or `uv python install {version}`)'
        )
    return (
        f"install the development headers of {headers.base_prefix} (Python {version}), or "
        f"build the venv from a Python that ships them (`uv python install {version}`)"
    )


def c_compiler(cc: HostCompiler | None, triton: str | None, env: PixiEnv) -> Finding:
    """Passed when Triton's rule finds a C compiler in the activated env; failed otherwise."""
    if triton is None or cc is None:
        return skipped(COMPILER, f"Triton is not installed in {env.prefix}: nothing builds C here")
    ev = {
        "rule": f"{RULE}: ${cc.variable or 'CC'}, else {', '.join(cc.programs)} on PATH",
        "CC": f"{cc.variable_value} ({cc.variable_source or 'activation'})"
        if cc.variable_value
        else "not set",
    }
    if cc.found:
        return passed(COMPILER, f"Triton {triton} builds its launcher with {cc.found}", **ev)
    if cc.variable_value:
        fix = fixes.set_var(env, cc.variable or "CC", "gcc") + " or a compiler that exists"
    elif fixes.kind_of(env) in ("pixi", "pyproject", "conda"):
        fix = fixes.add(env, Package("c-compiler")) + " (conda-forge's gcc, set as $CC)"
    else:
        fix = "install gcc (`apt-get install gcc`) on the nodes that run vLLM, or point CC at one"
    return failed(
        COMPILER,
        f'{cc.problem}: Triton {triton} raises "Failed to find C compiler. Please specify via '
        'CC environment variable" at the first kernel, and vLLM dies at start-up',
        fix,
        **ev,
    )
