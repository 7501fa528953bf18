"""The nvcc a vLLM source build (or a torch extension build) compiles with, predicted from the
shell and the env.

The real failure this exists for (F1.10, instructlab/instructlab#3144): a venv with torch
2.5.1+cu124, a CUDA toolkit in ``/usr/local/cuda`` that is not on PATH, ``CUDA_HOME`` unset;
building a vLLM of August 2024 with PyPI's CMake 3.31 stops in torch's
``enable_language(CUDA)`` with::

    CMake Error at .../cmake-3.31/Modules/CMakeDetermineCUDACompiler.cmake:266 (message):
      Failed to detect a default CUDA architecture.

What decides it, read from the sources and then measured with PyPI's CMake 3.26.4 to 4.4.5,
torch 2.5.1's own CMake files and the vLLM sdists (docs/facts-additions.md):

- Every vLLM release runs ``$CUDA_HOME/bin/nvcc -V`` in its ``setup.py`` before CMake
  (``get_nvcc_cuda_version``, with ``CUDA_HOME`` as ``torch.utils.cpp_extension`` finds it:
  ``CUDA_HOME``, ``CUDA_PATH``, the directory above ``nvcc`` on PATH, ``/usr/local/cuda``;
  :func:`build_nvcc`). None of them: "CUDA_HOME is not set".
- vLLM >= 0.8.3 (PR #15725) passes ``-DCMAKE_CUDA_COMPILER={CUDA_HOME}/bin/nvcc``; from
  0.12.0 ``$CMAKE_ARGS`` follows it, and a ``-DCMAKE_CUDA_COMPILER`` there wins (the last
  ``-D`` does). A path with no nvcc stops CMake: < 4.1 with the same "Failed to detect
  a default CUDA architecture", 4.1 and later "... is not a full path to an existing compiler
  tool".
- Older vLLM pass nothing, and CMake chooses. torch's ``Caffe2/public/cuda.cmake`` (every
  release 2.0 to 2.13) calls ``enable_language(CUDA)`` after vLLM's ``project(... LANGUAGES
  CXX)``; ``CMakeDetermineCUDACompiler`` takes ``$CUDACXX`` (a missing file stops it), else
  looks for ``nvcc``: in the C++ compiler's directory first, then ``$CMAKE_PREFIX_PATH``
  (``<p>/bin``, ``<p>/sbin``, ``<p>``) and ``$CMAKE_PROGRAM_PATH``, PATH, the system prefixes
  (searched because ``project()`` already loaded the platform files), and last
  ``$CUDA_PATH/bin``. It never reads ``CUDA_HOME``: exporting only ``CUDA_HOME`` fixes nothing
  there, and ``/usr/local/cuda/bin`` is no system prefix.
- No nvcc found: CMake < 4.1 "Failed to detect a default CUDA architecture." with an empty
  "Compiler output:"; 4.1 and later "No CMAKE_CUDA_COMPILER could be found.".

:func:`read_build_nvcc` reads the facts (it runs each chosen nvcc's ``--version`` once, cached);
:func:`pytest_vllm_env.checks.cmake_nvcc.judge` gives the verdict ``cuda.nvcc-in-env`` reports
for an env that builds. :func:`torch_nvcc` is the one nvcc ``torch.utils.cpp_extension`` and
vLLM's setup.py run (``cuda.nvcc-torch`` compares it with torch's CUDA).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_vllm_env import proc
from pytest_vllm_env.facts.static_tools import nvcc_from_files
from pytest_vllm_env.facts.toolkit import NvccRun, ToolkitFacts, inside, run_nvcc
from pytest_vllm_env.readers.torch_cmake import cmake_args
from pytest_vllm_env.readers.vllm_build import NEW_VLLM, OLD_VLLM, VllmSetup, read_setup
from pytest_vllm_env.tables.cmake_cuda import (
    CXX_NAMES,
    NO_NVCC_OLD,
    SYSTEM_PREFIXES,
    SYSTEM_TOOLKITS,
)

# _find_cuda_home's last guess on Linux (torch 2.2 to 2.11 alike), when it exists.
DEFAULT_CUDA_HOME = Path("/usr/local/cuda")
# (name, compute, deps) -> the fact: ``vllm_fact_cache.get``, each nvcc run once per path
Cached = Callable[[str, Callable[[], Any], list[str]], Any]


def build_nvcc(environ: Mapping[str, str]) -> tuple[Path | None, str]:
    """The nvcc ``torch.utils.cpp_extension`` runs, and why that one (``_find_cuda_home``)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = environ.get(var)
        if home:
            return Path(home) / "bin" / "nvcc", f"{var}={home}"
    found = proc.which("nvcc", environ.get("PATH"))
    if found is not None:
        # CUDA_HOME is the directory above the one holding nvcc, and torch (and vLLM's
        # setup.py) then run CUDA_HOME/bin/nvcc: the same file unless PATH names a dir not
        # called bin
        nvcc = found.parent.parent / "bin" / "nvcc"
        if nvcc == found:
            return found, "`nvcc` on the activated PATH"
        return nvcc, f"`nvcc` on the activated PATH is {found}, so CUDA_HOME={found.parent.parent}"
    if os.path.exists(DEFAULT_CUDA_HOME):
        return DEFAULT_CUDA_HOME / "bin" / "nvcc", f"torch's default {DEFAULT_CUDA_HOME}"
    return None, ""


def torch_nvcc(
    t: ToolkitFacts, cached: Cached | None = None, timeout: float = 30.0
) -> tuple[NvccRun | None, str]:
    """The nvcc ``torch.utils.cpp_extension`` (and every vLLM setup.py, before CMake) runs,
    ``$CUDA_HOME/bin/nvcc`` as :func:`build_nvcc` finds it, run once (cached per path), and
    why that one; ``(None, "")`` when torch finds no CUDA_HOME."""
    path, why = build_nvcc(t.environ)
    if path is None:
        return None, why
    if not _exists(path):
        return NvccRun(str(path), False, problem="does not exist"), why
    return nvcc_run(t, path, cached, timeout), why


def nvcc_run(
    t: ToolkitFacts, path: Path, cached: Cached | None = None, timeout: float = 30.0
) -> NvccRun:
    """``path``'s ``--version`` (and ``--list-gpu-arch``, ``-v``): the env's own run when it is
    the env's nvcc, else run once and kept in ``cached`` (the key read_toolkit uses too)."""
    if t.nvcc is not None and os.path.normpath(t.nvcc.path) == os.path.normpath(path):
        return t.nvcc

    def compute() -> dict[str, Any]:
        return run_nvcc(path, t.environ, timeout).to_json()

    data = cached(f"nvcc-{path}", compute, [str(path)]) if cached else compute()
    run = NvccRun.from_json(data)
    if run.not_run:  # --vllm-static: what the files say of it
        run = dataclasses.replace(run, **nvcc_from_files(t.env, path))
    return run


@dataclass(frozen=True)
class Pick:
    """The nvcc CMake compiles with in one build, or why the build stops before compiling."""

    nvcc: Path | None
    how: str  # "`nvcc` on PATH", "$CUDACXX", "-DCMAKE_CUDA_COMPILER from CUDA_HOME=..."
    stop: str = ""  # what stops the build, quoted, when it cannot take nvcc
    searched: tuple[str, ...] = ()  # the directories CMake's own search looked in


def cmake_search(
    environ: Mapping[str, str],
    presets: Mapping[str, str] | None = None,
    system_prefixes: Sequence[str] | None = None,
) -> Pick:
    """CMake's own choice in ``enable_language(CUDA)`` (``CMakeDetermineCUDACompiler``), for
    a build that passes no ``CMAKE_CUDA_COMPILER``."""
    presets = presets or {}
    path = environ.get("PATH", "")
    cudacxx = environ.get("CUDACXX", "")
    if cudacxx.strip():
        program = _first_word(cudacxx)
        found = Path(program) if os.path.isabs(program) else proc.which(program, path)
        if found is None or not _exists(found):
            return Pick(
                None,
                f"$CUDACXX ({cudacxx})",
                stop=f'"Could not find compiler set in environment variable CUDACXX: {cudacxx}"',
            )
        return Pick(found, f"$CUDACXX ({cudacxx})")
    # (directory, how a verdict names it) in CMake's order
    places: list[tuple[str, str]] = []
    cxx = _cxx_compiler(environ, presets)
    if cxx is not None:
        places.append((str(cxx.parent), f"next to the C++ compiler {cxx}, where CMake looks first"))
    prefixes = _split(presets.get("CMAKE_PREFIX_PATH", ""), ";") + _split(
        environ.get("CMAKE_PREFIX_PATH", ""), os.pathsep
    )
    for prefix in prefixes:
        for sub in ("bin", "sbin", ""):
            places.append((os.path.join(prefix, sub) if sub else prefix, "from $CMAKE_PREFIX_PATH"))
    for d in _split(presets.get("CMAKE_PROGRAM_PATH", ""), ";") + _split(
        environ.get("CMAKE_PROGRAM_PATH", ""), os.pathsep
    ):
        places.append((d, "from $CMAKE_PROGRAM_PATH"))
    places += [(d, "PATH") for d in _split(path, os.pathsep)]
    for prefix in SYSTEM_PREFIXES if system_prefixes is None else system_prefixes:
        for sub in ("bin", "sbin", ""):
            where = os.path.join(prefix, sub) if sub else prefix
            places.append((where, "a system prefix CMake searches after PATH"))
    if environ.get("CUDA_PATH"):
        places.append(
            (os.path.join(environ["CUDA_PATH"], "bin"), "$CUDA_PATH/bin, CMake's last resort")
        )
    # -DCMAKE_IGNORE_PATH (in $CMAKE_ARGS) drops whole directories from every search
    ignored = {os.path.normpath(d) for d in _split(presets.get("CMAKE_IGNORE_PATH", ""), ";")}
    searched: list[str] = []
    for directory, why in places:
        if os.path.normpath(directory) in ignored:
            continue
        if directory not in searched:
            searched.append(directory)
        candidate = Path(directory) / "nvcc"
        # a directory we may not look into is passed over, as CMake's find_program does
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            how = "`nvcc` on the activated PATH" if why == "PATH" else f"in {directory}: {why}"
            return Pick(candidate, how, searched=tuple(searched))
    return Pick(None, "CMake's search", searched=tuple(searched))


def cuda_home_pick(environ: Mapping[str, str]) -> Pick | None:
    """``-DCMAKE_CUDA_COMPILER={CUDA_HOME}/bin/nvcc`` of vLLM >= 0.8.3; None when torch finds
    no CUDA_HOME (newer releases then pass nothing)."""
    nvcc, why = build_nvcc(environ)
    if nvcc is None:
        return None
    how = f"-DCMAKE_CUDA_COMPILER from torch's CUDA_HOME, {why}"
    return Pick(nvcc, how) if _exists(nvcc) else Pick(None, how, stop=_not_a_compiler(nvcc))


def _not_a_compiler(given: str | Path) -> str:
    """What CMake says of a ``-DCMAKE_CUDA_COMPILER`` that names no file (measured)."""
    return (
        f'CMake < 4.1: "{NO_NVCC_OLD}"; 4.1 and later: "The CMAKE_CUDA_COMPILER: {given} is '
        'not a full path to an existing compiler tool."'
    )


def pick_for(setup: VllmSetup, environ: Mapping[str, str]) -> Pick:
    """The nvcc CMake compiles with when ``setup``'s vLLM is built under ``environ``."""
    presets = cmake_args(dict(environ)) if setup.cmake_args else {}
    given = presets.get("CMAKE_CUDA_COMPILER")
    if given:  # after setup.py's own -D: the last -D wins (measured)
        found = Path(given) if os.path.isabs(given) else proc.which(given, environ.get("PATH"))
        how = f"-DCMAKE_CUDA_COMPILER={given} in $CMAKE_ARGS"
        if found is None or not _exists(found):
            return Pick(None, how, stop=_not_a_compiler(given))
        return Pick(found, how)
    if setup.cuda_home:
        chosen = cuda_home_pick(environ)
        if chosen is not None:
            return chosen
    return cmake_search(environ, presets)


@dataclass
class Route:
    """One vLLM family (or the given tree) and what its build compiles with."""

    setup: VllmSetup
    pick: Pick
    run: NvccRun | None = None  # the picked nvcc's --version, when there is one
    in_env: bool = False  # the picked nvcc is the env's own (symlinks resolved)


@dataclass
class BuildNvcc:
    """The facts :func:`judge` needs: setup.py's own nvcc run, CMake's pick per route, and
    the CUDA toolkits outside any env a fix can point at."""

    setup_nvcc: NvccRun | None  # $CUDA_HOME/bin/nvcc -V in setup.py
    setup_why: str  # how torch chose it
    routes: list[Route]
    toolkits: list[NvccRun] = field(default_factory=list)
    known_source: bool = False  # routes come from --vllm-source's setup.py
    # --vllm-source's setup.py there and unreadable: "path: cannot be read: why" (issue 21)
    source_error: str = ""


def read_build_nvcc(
    t: ToolkitFacts,
    source: Path | None,
    cached: Cached | None = None,
    *,
    timeout: float = 30.0,
    toolkits: bool = True,
) -> BuildNvcc:
    """Predict the build's nvcc for ``source``'s setup.py (both families when None), running
    each chosen nvcc once (cached per path); ``toolkits``: also read the system toolkits a fix
    may name (:data:`SYSTEM_TOOLKITS`)."""
    setup = read_setup(source)
    error = setup.error if setup is not None else ""
    setup = None if error else setup  # unreadable: what its build does is unknown
    setups = [setup] if setup is not None else [OLD_VLLM, NEW_VLLM]
    routes = []
    for s in setups:
        pick = pick_for(s, t.environ)
        run = nvcc_run(t, pick.nvcc, cached, timeout) if pick.nvcc is not None else None
        in_env = pick.nvcc is not None and inside(pick.nvcc, t.prefix)
        routes.append(Route(s, pick, run, in_env))
    setup_run, why = torch_nvcc(t, cached, timeout)
    found = []
    if toolkits:
        for root in system_toolkits():
            found.append(nvcc_run(t, root / "bin" / "nvcc", cached, timeout))
    return BuildNvcc(setup_run, why, routes, [r for r in found if r.ok], setup is not None, error)


def system_toolkits() -> list[Path]:
    """CUDA toolkits outside any env (``/usr/local/cuda-12.4``...), each once."""
    roots: list[Path] = []
    seen: set[str] = set()
    for pattern in SYSTEM_TOOLKITS:
        for hit in sorted(glob.glob(pattern)):
            real = os.path.realpath(hit)
            if real not in seen and _exists(Path(hit) / "bin" / "nvcc"):
                seen.add(real)
                roots.append(Path(hit))
    return roots


def _cxx_compiler(environ: Mapping[str, str], presets: Mapping[str, str]) -> Path | None:
    """The C++ compiler CMake's ``project(... CXX)`` takes: ``CMAKE_CXX_COMPILER``, ``$CXX``,
    else the first of :data:`CXX_NAMES` on PATH."""
    path = environ.get("PATH", "")
    given = presets.get("CMAKE_CXX_COMPILER") or environ.get("CXX", "").strip()
    if given:
        program = _first_word(given)
        return Path(program) if os.path.isabs(program) else proc.which(program, path)
    for name in CXX_NAMES:
        found = proc.which(name, path)
        if found is not None:
            return found
    return None


def _first_word(text: str) -> str:
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    return words[0] if words else text


def _split(value: str, sep: str) -> list[str]:
    return [p for p in value.split(sep) if p]


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False
