"""``cuda.nvcc-in-env`` for an env that builds CUDA code: in each way a vLLM source build
can run, does it compile with a suitable nvcc?

The real failure this exists for (F1.10, instructlab/instructlab#3144): a venv with torch
2.5.1+cu124, a CUDA toolkit in ``/usr/local/cuda`` that is not on PATH, ``CUDA_HOME`` unset;
building a vLLM of August 2024 with PyPI's CMake 3.31 stops in torch's
``enable_language(CUDA)`` with::

    CMake Error at .../cmake-3.31/Modules/CMakeDetermineCUDACompiler.cmake:266 (message):
      Failed to detect a default CUDA architecture.

Which nvcc setup.py runs and which one CMake takes, per vLLM family (or for the
``--vllm-source`` tree), is a fact predicted beforehand from the shell and the env
(:mod:`pytest_vllm_env.facts.build_nvcc`, whose docstring cites the vLLM, torch and CMake
sources it models); :func:`judge` gives the verdict and the fix, in the env's own language.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_vllm_env.checks import cuda_torch
from pytest_vllm_env.facts import fixes
from pytest_vllm_env.facts.build_nvcc import BuildNvcc, Route
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.targets import FixTargets
from pytest_vllm_env.facts.toolkit import NvccRun, ToolkitFacts
from pytest_vllm_env.findings import Change, Finding, Fix, error, failed, passed, skipped, warning
from pytest_vllm_env.readers.vllm_build import FIRST_CUDA_HOME_RELEASE
from pytest_vllm_env.tables import torch_archs
from pytest_vllm_env.tables.cmake_cuda import NO_NVCC_NEW, NO_NVCC_OLD

CID = "cuda.nvcc-in-env"


# -- judgement ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Verdict:
    route: Route
    # "" (suits the env), "setup", "stop", "none", "broken", "outside", "major"; "unknown":
    # not run (--vllm-static) and no file says its version
    kind: str
    text: str


def judge(
    env: PixiEnv,
    t: ToolkitFacts,
    build: BuildNvcc,
    needed: Sequence[str],
    *,
    own: bool,
    cmake_version: str | None = None,
    targets: FixTargets | None = None,
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
    if build.source_error:  # which nvcc the tree's build takes is unknown: name the file
        return error(
            CID,
            f"the vLLM source tree's setup.py cannot be read: {build.source_error}",
            "replace it with the setup.py of the vLLM release you build (`git checkout -- "
            "setup.py` in a git clone), or pass --vllm-source=PATH of an intact tree",
            **evidence,
        )
    setup = _setup_problem(build)
    verdicts = [
        _Verdict(r, "setup", setup) if setup else _route_verdict(r, t, build, own, cmake_version)
        for r in build.routes
    ]
    unknown = [v for v in verdicts if v.kind == "unknown"]
    verdicts = [v for v in verdicts if v.kind != "unknown"]
    bad = [v for v in verdicts if v.kind]
    good = [v for v in verdicts if not v.kind]
    if unknown and not bad:
        return skipped(CID, "; ".join(f"{v.route.setup.where}: {v.text}" for v in unknown))
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
    fix = _fix(env, t, build, bad, own, targets)
    if good and not build.known_source:
        return warning(
            CID,
            f"{summary}; {'; '.join(_works(v, t) for v in good)}",
            fix + "; or pass --vllm-source=PATH to judge the vLLM tree you build",
            **evidence,
        )
    return failed(CID, summary, fix, **evidence)


def _works(v: _Verdict, t: ToolkitFacts) -> str:
    pick, run = v.route.pick, v.route.run
    version = f"CUDA {run.version}, " if run and run.version else ""
    outside = "" if v.route.in_env else ", outside the env"
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
    if run.not_run:
        return ""  # --vllm-static: judged in each route, from what the files say of it
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
    if run is not None and run.not_run and not run.known:
        return _Verdict(
            r,
            "unknown",
            f"CMake would compile with {pick.nvcc} ({pick.how}), which was not run here "
            f"({run.not_run}) and whose files say no version",
        )
    if run is None or not (run.ok or run.known):
        problem = run.problem if run is not None else "not run"
        return _Verdict(
            r,
            "broken",
            f"CMake would compile with {pick.nvcc} ({pick.how}), which fails: {problem}",
        )
    if own and not r.in_env:
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
def _fix(
    env: PixiEnv,
    t: ToolkitFacts,
    build: BuildNvcc,
    bad: list[_Verdict],
    own: bool,
    targets: FixTargets | None = None,
) -> str:
    """What makes every route compile with a suitable nvcc, in the env's own language; the
    CUDA it pins is the run's target (``targets``: torch's, under the driver's)."""
    want = targets.cuda if targets is not None and targets.cuda else _wanted(t)
    kinds = {v.kind for v in bad}
    parts = _overrides(env, t, build, bad)
    if fixes.kind_of(env) == "venv":
        parts.append(_venv_fix(env, t, build, want, bad))
        if "major" in kinds and t.torch_cuda:
            have = next(v.route.run.major_minor for v in bad if v.kind == "major" and v.route.run)
            other = _pip_torch(env, t, have) if have else ""
            if other:
                return fixes.otherwise(fixes.join([p for p in parts if p]), other)
        return fixes.join([p for p in parts if p])
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
    text = fixes.join([p for p in parts if p])
    # the env's nvcc is there but setup.py's run of it failed: make it the one, working
    return text or (
        fixes.set_var(env, "CUDA_HOME", "${CONDA_PREFIX}")
        + ", and reinstall the env's nvcc if it does not run: "
        + fixes.reinstall(env, "cuda-nvcc")
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
        # the toolkit is there: the two exports are the whole change (kept in bin/activate,
        # which the venv's activation sources)
        activate = str(env.prefix / "bin" / "activate")
        exports = [f"CUDA_HOME={home}", f"PATH={home}/bin:$PATH"]
        if lines.startswith("`export CUDACXX"):
            exports.insert(0, f"CUDACXX={home}/bin/nvcc")
        return Fix(
            f"use the system toolkit {home} (CUDA {toolkit.version}): {lines} {where}",
            [Change("export", activate, line=e) for e in exports],
        )
    cuda = f"the CUDA {want}" if want else "a CUDA"
    torch = f" (torch is built with CUDA {t.torch_cuda})" if t.torch_cuda else ""
    return (
        f"install {cuda} toolkit on the system{torch}, then {lines} {where} "
        "(PyPI's nvidia-cuda-nvcc-cu12 ships no nvcc)"
    )


def _pip_torch(env: PixiEnv, t: ToolkitFacts, cuda_mm: str) -> str:
    """A torch of the installed release built for CUDA ``cuda_mm``, from the PyTorch index of
    a variant that release really has (torch 2.5.1 has no cu115: "" then)."""
    version = (env.version_of("torch") or "").split("+", 1)[0]
    tag = torch_archs.variant_for(version, cuda_mm) if version else None
    if tag is None:
        return ""
    spec = f"torch=={version}"
    command = fixes.pip_install(env, spec, options=("--index-url", torch_archs.index_url(tag)))
    return (
        f"install a torch built for CUDA {torch_archs.variant_cuda(tag)} (torch {version}'s "
        f"{tag} build): `{command}`"
    )


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
