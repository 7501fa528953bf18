"""The nvcc a vLLM source build compiles with, predicted from the shell and the env.

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
  :func:`pytest_vllm_env.checks.cuda_torch.build_nvcc`). None of them: "CUDA_HOME is not set".
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
:func:`judge` gives the verdict ``cuda.nvcc-in-env`` reports for an env that builds.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_vllm_env import proc
from pytest_vllm_env.checks import cuda_torch
from pytest_vllm_env.checks.cuda import NvccRun, ToolkitFacts, run_nvcc
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.findings import Finding, failed, passed, warning

CID = "cuda.nvcc-in-env"
FIRST_CUDA_HOME_RELEASE = "0.8.3"  # vLLM PR #15725: -DCMAKE_CUDA_COMPILER={CUDA_HOME}/bin/nvcc
# CMAKE_SYSTEM_PREFIX_PATH on Linux, as a PyPI CMake prints it (3.31.10, 4.4.5); the install
# prefix (/usr/local) comes first and CMake's own data dir (no nvcc) is left out.
SYSTEM_PREFIXES: tuple[str, ...] = ("/usr/local", "/usr", "/", "/usr/X11R6", "/usr/pkg", "/opt")
# Where CUDA toolkits live outside any env, for naming one in a fix (never for a verdict).
SYSTEM_TOOLKITS: tuple[str, ...] = ("/usr/local/cuda", "/usr/local/cuda-*", "/opt/cuda")
# CMakeDetermineCXXCompiler's names on Linux, in order (3.31 and 4.4 alike).
CXX_NAMES = ("CC", "c++", "g++", "aCC", "cl", "bcc", "xlC", "icpx", "icx", "clang++")
NO_NVCC_OLD = "Failed to detect a default CUDA architecture."  # CMake < 4.1
NO_NVCC_NEW = "No CMAKE_CUDA_COMPILER could be found."  # CMake >= 4.1


# -- facts ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VllmSetup:
    """How a vLLM tree's ``setup.py`` hands CMake its nvcc."""

    where: str  # "the vLLM in /src", "vLLM >= 0.8.3"
    cuda_home: bool  # passes -DCMAKE_CUDA_COMPILER={CUDA_HOME}/bin/nvcc
    cmake_args: bool  # appends $CMAKE_ARGS to cmake's command line


# The two families when the vLLM to be built is not known (no --vllm-source).
OLD_VLLM = VllmSetup(f"vLLM < {FIRST_CUDA_HOME_RELEASE}", False, False)
NEW_VLLM = VllmSetup(f"vLLM >= {FIRST_CUDA_HOME_RELEASE}", True, True)


def read_setup(root: Path | None) -> VllmSetup | None:
    """What ``root/setup.py`` passes to CMake; None without a readable setup.py (then both
    families are judged)."""
    if root is None:
        return None
    try:
        text = (root / "setup.py").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    cuda_home = re.search(r"-DCMAKE_CUDA_COMPILER=\{CUDA_HOME\}", text) is not None
    cmake_args = re.search(r"""(?:environ\.get|getenv)\(\s*["']CMAKE_ARGS["']""", text) is not None
    return VllmSetup(f"the vLLM in {root}", cuda_home, cmake_args)


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
        if candidate.is_file() and os.access(candidate, os.X_OK):
            how = "`nvcc` on the activated PATH" if why == "PATH" else f"in {directory}: {why}"
            return Pick(candidate, how, searched=tuple(searched))
    return Pick(None, "CMake's search", searched=tuple(searched))


def cuda_home_pick(environ: Mapping[str, str]) -> Pick | None:
    """``-DCMAKE_CUDA_COMPILER={CUDA_HOME}/bin/nvcc`` of vLLM >= 0.8.3; None when torch finds
    no CUDA_HOME (newer releases then pass nothing)."""
    nvcc, why = cuda_torch.build_nvcc(environ)
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
    from pytest_vllm_env.checks.torch_cmake import (
        cmake_args,  # torch_cmake imports cuda, which imports nothing here
    )

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


@dataclass
class BuildNvcc:
    """The facts :func:`judge` needs: setup.py's own nvcc run, CMake's pick per route, and
    the CUDA toolkits outside any env a fix can point at."""

    setup_nvcc: NvccRun | None  # $CUDA_HOME/bin/nvcc -V in setup.py
    setup_why: str  # how torch chose it
    routes: list[Route]
    toolkits: list[NvccRun] = field(default_factory=list)
    known_source: bool = False  # routes come from --vllm-source's setup.py


def read_build_nvcc(
    t: ToolkitFacts,
    source: Path | None,
    cached: Callable[[str, Callable[[], Any], list[str]], Any] | None = None,
    *,
    timeout: float = 30.0,
    toolkits: bool = True,
) -> BuildNvcc:
    """Predict the build's nvcc for ``source``'s setup.py (both families when None), running
    each chosen nvcc once (cached per path); ``toolkits``: also read the system toolkits a fix
    may name (:data:`SYSTEM_TOOLKITS`)."""

    def version(path: Path) -> NvccRun:
        if t.nvcc is not None and os.path.normpath(t.nvcc.path) == os.path.normpath(path):
            return t.nvcc

        def compute() -> dict[str, Any]:
            return run_nvcc(path, t.environ, timeout).to_json()

        data = cached(f"nvcc-{path}", compute, [str(path)]) if cached else compute()
        return NvccRun.from_json(data)

    setup = read_setup(source)
    setups = [setup] if setup is not None else [OLD_VLLM, NEW_VLLM]
    routes = []
    for s in setups:
        pick = pick_for(s, t.environ)
        routes.append(Route(s, pick, version(pick.nvcc) if pick.nvcc is not None else None))
    setup_path, why = cuda_torch.build_nvcc(t.environ)
    setup_run = None
    if setup_path is not None:
        setup_run = (
            version(setup_path)
            if _exists(setup_path)
            else NvccRun(str(setup_path), False, problem="does not exist")
        )
    found = []
    if toolkits:
        for root in system_toolkits():
            found.append(version(root / "bin" / "nvcc"))
    return BuildNvcc(setup_run, why, routes, [r for r in found if r.ok], setup is not None)


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


# -- judgement ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Verdict:
    route: Route
    kind: str  # "" (suits the env), "setup", "stop", "none", "broken", "outside", "major"
    text: str


def judge(
    env: PixiEnv,
    t: ToolkitFacts,
    build: BuildNvcc,
    needed: Sequence[str],
    *,
    own: bool,
    cmake_version: str | None = None,
) -> Finding:
    """``cuda.nvcc-in-env`` for an env that builds CUDA code: in each build route the nvcc
    exists, runs, has torch's CUDA major, and is the env's own when the env ``own``s a toolkit
    (CUDA build packages, a declared cuda-nvcc, a bin/nvcc). Failed when the build of the vLLM
    being built fails; a warning when that vLLM is not known (no ``--vllm-source``) and only
    one family fails; passed when CMake finds a suitable nvcc by any route, inside the env or
    not (a venv's toolkit is the system's)."""
    evidence: dict[str, Any] = {
        "needed_because": list(needed),
        "setup_py_nvcc": f"{build.setup_nvcc.path} ({build.setup_why})"
        if build.setup_nvcc
        else None,
        "cmake_nvcc": [
            f"{r.setup.where}: {r.pick.nvcc or 'none'} ({r.pick.how})" for r in build.routes
        ],
    }
    setup = _setup_problem(build)
    verdicts = [
        _Verdict(r, "setup", setup) if setup else _route_verdict(r, t, build, own, cmake_version)
        for r in build.routes
    ]
    bad = [v for v in verdicts if v.kind]
    good = [v for v in verdicts if not v.kind]
    searched = next((v.route.pick.searched for v in bad if v.kind == "none"), ())
    if searched:
        evidence["cmake_searched"] = list(searched)
    torch = f", torch's CUDA is {t.torch_cuda}" if t.torch_cuda else ""
    if not bad:
        return passed(CID, "; ".join(_works(v, t) for v in good) + torch, **evidence)
    head = ""
    if own and not t.nvcc_in_env:
        legacy = [p for p in ("cudatoolkit-dev", "cudatoolkit") if p in t.packages]
        head = f"no nvcc in {t.prefix}/bin" + (
            f"; {', '.join(legacy)} is installed but gives no nvcc in the env (cudatoolkit-dev "
            "downloads the toolkit outside conda's control)"
            if legacy
            else ""
        )
    same = {(v.kind, str(v.route.pick.nvcc), v.route.pick.stop) for v in bad}
    if len(same) == 1 and len(bad) == len(verdicts):
        body = bad[0].text  # one nvcc (or none) for every vLLM: said once
    else:
        body = "; ".join(f"{v.route.setup.where}: {v.text}" for v in bad)
    summary = "; ".join(x for x in (head, body) if x)
    fix = _fix(env, t, build, bad, own)
    if good and not build.known_source:
        return warning(
            CID,
            f"{summary}; {'; '.join(_works(v, t) for v in good)}",
            f"{fix}; or pass --vllm-source=PATH to judge the vLLM tree you build",
            **evidence,
        )
    return failed(CID, summary, fix, **evidence)


def _works(v: _Verdict, t: ToolkitFacts) -> str:
    pick, run = v.route.pick, v.route.run
    version = f"CUDA {run.version}, " if run and run.version else ""
    outside = "" if _inside_env(pick.nvcc, t) else ", outside the env"
    return f"{v.route.setup.where} compiles with {pick.nvcc} ({version}{pick.how}{outside})"


def _setup_problem(build: BuildNvcc) -> str:
    """vLLM's setup.py runs ``$CUDA_HOME/bin/nvcc -V`` before CMake, in every release."""
    run = build.setup_nvcc
    if run is None:
        return (
            "torch finds no CUDA_HOME (no CUDA_HOME or CUDA_PATH, no nvcc on PATH, no "
            "/usr/local/cuda), so vLLM's setup.py stops before CMake: \"AssertionError: "
            'CUDA_HOME is not set"'
        )
    if not run.ok:
        how = "does not exist" if run.problem == "does not exist" else f"fails: {run.problem}"
        return f"vLLM's setup.py runs {run.path} -V ({build.setup_why}) before CMake, and it {how}"
    return ""


def _route_verdict(
    r: Route, t: ToolkitFacts, build: BuildNvcc, own: bool, cmake_version: str | None
) -> _Verdict:
    pick, run = r.pick, r.run
    if pick.stop:
        return _Verdict(r, "stop", f"CMake is handed {pick.how} and stops: {pick.stop}")
    if pick.nvcc is None:
        elsewhere = [k.path for k in build.toolkits]
        note = (
            f"; {', '.join(elsewhere)} exists but is in no directory CMake searches (and "
            "CMake never reads CUDA_HOME)"
            if elsewhere
            else ""
        )
        return _Verdict(
            r,
            "none",
            "CMake finds no nvcc ($CUDACXX, the C++ compiler's directory, PATH, the system "
            "prefixes, $CUDA_PATH/bin), so torch's enable_language(CUDA) stops: "
            f"{_no_nvcc_message(cmake_version)}{note}",
        )
    if run is None or not run.ok:
        problem = run.problem if run is not None else "not run"
        return _Verdict(
            r,
            "broken",
            f"CMake would compile with {pick.nvcc} ({pick.how}), which fails: {problem}",
        )
    if own and not _inside_env(pick.nvcc, t):
        if not t.nvcc_in_env:
            return _Verdict(r, "outside", f"CMake would compile with {pick.nvcc} ({pick.how})")
        return _Verdict(
            r,
            "outside",
            f"nvcc is in the env ({t.nvcc_in_env[0]}) but CMake would compile with {pick.nvcc} "
            f"({pick.how})",
        )
    if t.torch_cuda and run.version and cuda_torch.mismatch(run.version, t.torch_cuda) == "major":
        have = run.major_minor or run.version
        return _Verdict(
            r,
            "major",
            f"CMake would compile with {pick.nvcc} ({pick.how}), CUDA {have}, but torch was "
            f"built with CUDA {t.torch_cuda}: vLLM's extensions would link "
            f"libcudart.so.{have.split('.')[0]} next to torch's "
            f"libcudart.so.{t.torch_cuda.split('.')[0]}",
        )
    return _Verdict(r, "", "")


def _no_nvcc_message(cmake_version: str | None) -> str:
    if cmake_version:
        major_minor = tuple(int(p) for p in re.findall(r"\d+", cmake_version)[:2])
        text = NO_NVCC_NEW if major_minor >= (4, 1) else NO_NVCC_OLD
        return f'"{text}" (CMake {cmake_version})'
    return f'"{NO_NVCC_OLD}" (CMake < 4.1; 4.1 and later: "{NO_NVCC_NEW}")'


# -- fixes ------------------------------------------------------------------------------------
def _fix(env: PixiEnv, t: ToolkitFacts, build: BuildNvcc, bad: list[_Verdict], own: bool) -> str:
    """What makes every route compile with a suitable nvcc, in the env's own language."""
    want = _wanted(t)
    kinds = {v.kind for v in bad}
    parts = _overrides(env, t, build, bad)
    if fixes.kind_of(env) == "venv":
        parts.append(_venv_fix(env, t, build, want, bad))
        if "major" in kinds and t.torch_cuda:
            have = next(v.route.run.major_minor for v in bad if v.kind == "major" and v.route.run)
            parts.append(f"or install a torch built for CUDA {have}: {_pip_torch(env, t, have)}")
        return "; ".join(p for p in parts if p)
    if t.nvcc_in_env and kinds <= {"outside", "stop", "setup"}:
        parts.append(_route_to_env(env, t, bad) if "outside" in kinds else "")
    elif t.nvcc_in_env and "broken" in kinds and own:
        parts.append(f"reinstall the env's nvcc: {fixes.reinstall(env, 'cuda-nvcc')}")
    elif t.nvcc_in_env and "major" in kinds:
        parts.append(fixes.add(env, *_packages(want), verb="pin"))
    else:
        legacy = [p for p in ("cudatoolkit-dev", "cudatoolkit") if p in t.packages and own]
        parts.append(
            fixes.add(env, *_packages(want))
            + (f" and remove {', '.join(legacy)}" if legacy else "")
            + ("" if own else " (its bin/nvcc comes first on the activated PATH, where CMake "
                                 "and torch look)")
        )  # fmt: skip
    text = "; ".join(p for p in parts if p)
    # the env's nvcc is there but setup.py's run of it failed: make it the one, working
    return text or (
        f"{fixes.set_var(env, 'CUDA_HOME', '${CONDA_PREFIX}')}, and reinstall the env's nvcc "
        f"if it does not run: {fixes.reinstall(env, 'cuda-nvcc')}"
    )


def _overrides(env: PixiEnv, t: ToolkitFacts, build: BuildNvcc, bad: list[_Verdict]) -> list[str]:
    """Variables that name a wrong nvcc or toolkit outright: change them first."""
    parts: list[str] = []
    hows = {v.route.pick.how for v in bad if v.kind in ("stop", "outside", "major")}
    venv = fixes.kind_of(env) == "venv"
    cudacxx = t.environ.get("CUDACXX")
    if cudacxx and any(h.startswith("$CUDACXX") for h in hows):
        if t.nvcc_in_env and not venv:
            parts.append(fixes.set_var(env, "CUDACXX", "${CONDA_PREFIX}/bin/nvcc"))
        else:
            parts.append(f"unset CUDACXX (it names {cudacxx}) where you build")
    if any("$CMAKE_ARGS" in h for h in hows):
        parts.append("drop -DCMAKE_CUDA_COMPILER from CMAKE_ARGS (it names another nvcc)")
    var = build.setup_why.split("=", 1)[0] if "=" in build.setup_why else None
    home_bad = any(v.kind in ("setup", "stop") or "CUDA_HOME" in v.route.pick.how for v in bad)
    if var and home_bad and not venv and t.nvcc_in_env:
        parts.append(fixes.set_var(env, var, "${CONDA_PREFIX}"))
    return parts


def _route_to_env(env: PixiEnv, t: ToolkitFacts, bad: list[_Verdict]) -> str:
    """The env has its nvcc, but a route passes it by: name what to change for that route."""
    hows = {v.route.pick.how for v in bad if v.kind == "outside"}
    if all(h.startswith("$CUDACXX") or "$CMAKE_ARGS" in h for h in hows):
        return ""  # the variable that names it is the fix (_overrides)
    if any("C++ compiler" in h for h in hows):
        return fixes.set_var(env, "CUDACXX", "${CONDA_PREFIX}/bin/nvcc") + (
            " (CMake looks next to the C++ compiler before PATH)"
        )
    if any("CUDA_HOME" in h for h in hows):
        return fixes.set_var(env, "CUDA_HOME", "${CONDA_PREFIX}")
    return (
        f"put {t.prefix}/bin first on PATH: remove the PATH override from "
        f"{fixes.activation_place(env)} (or the script that prepends another CUDA's bin)"
    )


def _venv_fix(
    env: PixiEnv, t: ToolkitFacts, build: BuildNvcc, want: str | None, bad: list[_Verdict]
) -> str:
    """A venv has no toolkit of its own: point the build at a system toolkit of torch's CUDA
    with the two lines that reach every route (PATH for CMake's search, CUDA_HOME for
    setup.py and vLLM >= 0.8.3). PyPI is no way out: nvidia-cuda-nvcc-cu12 ships only ptxas,
    and CUDA 13's cuda-toolkit[nvcc] wheels put nvcc under site-packages, on no path CMake
    searches, with lib/ where nvcc.profile says lib64/ (CMake's test link fails)."""
    toolkit = _best_toolkit(build.toolkits, want)
    home = (
        str(Path(toolkit.path).parent.parent)
        if toolkit is not None
        else (f"/usr/local/cuda-{want}" if want else "/usr/local/cuda")
    )
    lines = f"`export CUDA_HOME={home}` and `export PATH={home}/bin:$PATH`"
    if any("C++ compiler" in v.route.pick.how for v in bad):
        # an nvcc next to the C++ compiler (/usr/bin/nvcc of a distro package) comes before
        # PATH; only CUDACXX (or CMAKE_CUDA_COMPILER) outranks it
        lines = f"`export CUDACXX={home}/bin/nvcc`, " + lines
    where = (
        f"in the shell or job that builds (CMake searches PATH and never reads CUDA_HOME; "
        f"setup.py and vLLM >= {FIRST_CUDA_HOME_RELEASE} take CUDA_HOME); add the lines to "
        f"{env.prefix}/bin/activate to keep them"
    )
    if toolkit is not None:
        return f"use the system toolkit {home} (CUDA {toolkit.version}): {lines} {where}"
    cuda = f"the CUDA {want}" if want else "a CUDA"
    torch = f" (torch is built with CUDA {t.torch_cuda})" if t.torch_cuda else ""
    return (
        f"install {cuda} toolkit on the system{torch}, then {lines} {where} "
        "(PyPI's nvidia-cuda-nvcc-cu12 ships no nvcc)"
    )


def _pip_torch(env: PixiEnv, t: ToolkitFacts, cuda_mm: str) -> str:
    version = (env.version_of("torch") or "").split("+", 1)[0]
    tag = "cu" + cuda_mm.replace(".", "")
    spec = f"torch=={version}" if version else "torch"
    command = fixes.pip_install(
        env, spec, options=("--index-url", f"https://download.pytorch.org/whl/{tag}")
    )
    return f"`{command}` (the index must carry that torch release for {tag})"


def _best_toolkit(toolkits: Sequence[NvccRun], want: str | None) -> NvccRun | None:
    """The system toolkit a fix names: torch's CUDA major.minor, else its major; none else
    (a toolkit of another major would move the failure, not fix it)."""
    if want is None:
        return toolkits[0] if toolkits else None
    same = [k for k in toolkits if k.major_minor == want]
    major = [k for k in toolkits if k.version and k.version.split(".")[0] == want.split(".")[0]]
    return (same or major or [None])[0]


def _wanted(t: ToolkitFacts) -> str | None:
    """The CUDA the build's nvcc should have: torch's, else the env's cuda-version pin."""
    if t.torch_cuda:
        return ".".join(t.torch_cuda.split(".")[:2])
    pinned = t.packages.get("cuda-version")
    return ".".join(pinned.split(".")[:2]) if pinned else None


def _packages(want: str | None) -> list[fixes.Package]:
    mm = want or "12.8"
    return [fixes.Package("cuda-nvcc", f"{mm}.*"), fixes.Package("cuda-version", f"{mm}.*")]


# -- helpers ------------------------------------------------------------------------------------
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


def _inside_env(path: Path | None, t: ToolkitFacts) -> bool:
    if path is None:
        return False
    from pytest_vllm_env.checks.cuda import _inside

    return _inside(path, t.prefix)


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
