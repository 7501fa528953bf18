"""``--vllm-static``: judge a workspace without running anything from it (issue 21).

What a default run executes of the env, recorded (every ``proc.run``) on an env where each
executable and each activation script leaves a mark when it runs; then the same env judged
with ``--vllm-static``: nothing started names the env, nothing left a mark, and each check
that needs a run says it did not run, or judges from the files where they decide it.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures import cuda_envs
from fixtures import runtime_standin as S
from fixtures.envs import EnvBuilder
from fixtures.gpu_standins import standin_env
from fixtures.text import lit
from pytest_vllm_env import proc

# pytester's in-process runs drop every module first imported during a run: were proc first
# imported inside one, the next run would confine one copy of it while `run` below records
# (and asks) another. Imported here, before any run, there is one proc for every run.

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "fixtures" / "modelopt_export" / "llama-fp8"


def plant(path: Path, marks: Path, name: str) -> None:
    """Make ``path`` leave ``marks/name`` when it runs: a script gets a ``touch`` line after its
    first; a link to a binary becomes a script that touches, then runs the binary."""
    if path.is_symlink() or not path.read_bytes().startswith(b"#!"):
        real = path.resolve()
        path.unlink()
        path.write_text(f'#!/bin/sh\ntouch "{marks / name}"\nexec "{real}" "$@"\n')
    else:
        first, rest = path.read_text().split("\n", 1)
        path.write_text(f'{first}\ntouch "{marks / name}"\n{rest}')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EnvBuilder, Path]]:
    """A Pixi env with something to run for every tier (a CUDA 12.8 toolkit from real parts,
    CMake 4.1.2, stand-in torch and vLLM, a Triton with its bundled ptxas, nvidia-smi, an
    activate.d script, a manifest activation script), each leaving a mark in ``marks/`` when
    it runs; and a ``pixi`` that does the same, in ``marks/../bin``."""
    root = tmp_path_factory.mktemp("static")
    marks = root / "marks"
    marks.mkdir()
    b = EnvBuilder(root / "ws")
    standin_env(b, vllm={"llama-fp8": {}})
    cuda_envs.good(b)
    S.install_triton(b, "3.5.1", S.TRITON_35, {"ptxas": "12.8"})
    S.python_headers(b)
    b.file("bin/nvidia-smi", "#!/bin/sh\necho '0, NVIDIA H100, 9.0, GPU-1, 550.144.03'\n")
    b.activate_script("zz-vllm.sh", "#!/bin/sh\nexport VLLM_WORKER_MULTIPROC_METHOD=spawn\n")
    (b.workspace / "act.sh").write_text("#!/bin/sh\nexport FROM_SCRIPT=${CONDA_PREFIX}/x\n")
    b.manifest(
        '[dependencies]\ncuda-version = "12.8.*"\ncuda-nvcc = "*"\n\n[activation]\n'
        'scripts = ["act.sh"]\n\n[activation.env]\nCUDA_HOME = "${CONDA_PREFIX}"\n'
    )
    site = b.site_packages
    for path, name in [
        (b.prefix / "bin/nvcc", "nvcc"),
        (b.prefix / "bin/cmake", "cmake"),
        (b.prefix / "bin/ptxas", "ptxas"),
        (b.prefix / "bin/nvidia-smi", "nvidia-smi"),
        (b.prefix / "libexec/python-standin", "python"),
        (site / "triton/backends/nvidia/bin/ptxas", "triton-ptxas"),
        (b.prefix / "etc/conda/activate.d/zz-vllm.sh", "activate.d"),
        (b.workspace / "act.sh", "manifest-script"),
    ]:
        plant(path, marks, name)
    pixi = root / "bin" / "pixi"
    pixi.parent.mkdir()
    pixi.write_text(
        f'#!/bin/sh\ntouch "{marks / "pixi"}"\n'
        'echo \'{"environment_variables": {"PATH": "/usr/bin:/bin"}}\'\n'
    )
    pixi.chmod(0o755)
    yield b, marks


def run(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    b: EnvBuilder,
    *args: str,
    pixi: bool = False,
) -> tuple[pytest.RunResult, list[dict]]:
    """The suite on ``b`` (in process), with every ``proc.run`` call recorded: its argv, cwd,
    environment, and whether it was started."""
    calls: list[dict] = []
    real = proc.run

    def recording(argv, **kw):
        result = real(argv, **kw)
        calls.append(
            {
                "argv": [str(a) for a in argv],
                "cwd": str(kw.get("cwd") or ""),
                "env": dict(kw.get("env") or {}),
                "started": not result.not_run,
            }
        )
        return result

    monkeypatch.setattr(proc, "run", recording)
    if pixi:
        monkeypatch.setenv("PATH", f"{b.workspace.parent / 'bin'}{os.pathsep}{os.environ['PATH']}")
    result = pytester.runpytest(
        "--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider", "-rs",
        f"--vllm-env={b.prefix}", "--cuda-arch=9.0", f"--modelopt-checkpoint={CHECKPOINT}",
        f"--vllm-env-report={pytester.path / 'report.json'}", *args,
    )  # fmt: skip
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    return result, calls


def clear(marks: Path) -> None:
    for mark in marks.iterdir():
        mark.unlink()


def names_tree(call: dict, trees: list[Path]) -> str:
    """What of ``call`` names a path in ``trees`` ('' when nothing does)."""
    texts = [*call["argv"], call["cwd"], *call["env"].values()]
    for tree in trees:
        for spelling in {str(tree), os.path.realpath(tree)}:
            pattern = re.compile(re.escape(spelling) + r"(?=$|/|[^\w.\-])")
            hit = next((t for t in texts if pattern.search(t)), None)
            if hit:
                return hit
    return ""


def program(call: dict, b: EnvBuilder) -> str:
    return call["argv"][0].replace(str(b.prefix), "$PREFIX")


def test_a_default_run_executes_the_envs_code(pytester, monkeypatch, marked):
    """What README "What runs" lists, measured: without --vllm-static a toolchain run sources
    the activation scripts (bash, or pixi shell-hook when pixi is on PATH), runs the env's nvcc
    (--version, --list-gpu-arch, -v), cmake --version, Triton's bundled ptxas --version, the
    env's Python (the NVML probe of the report's node section) and the nvidia-smi the
    activated PATH finds. The marks prove each ran."""
    b, marks = marked
    clear(marks)
    result, calls = run(pytester, monkeypatch, b, "-m", "toolchain")
    assert result.ret in (0, 1)
    ran = {program(c, b) + " " + " ".join(c["argv"][1:2]) for c in calls if c["started"]}
    assert {
        "$PREFIX/bin/nvcc --version",
        "$PREFIX/bin/nvcc --list-gpu-arch",
        "$PREFIX/bin/nvcc -v",
        "$PREFIX/bin/cmake --version",
        "$PREFIX/bin/nvidia-smi --query-gpu=index,name,compute_cap,uuid,driver_version",
        "$PREFIX/lib/python3.12/site-packages/triton/backends/nvidia/bin/ptxas --version",
    } <= ran, ran
    assert any(c["argv"][0] == str(b.prefix / "bin/python3") for c in calls), ran
    sourced = [c for c in calls if "_VLLM_ENV_SCRIPT" in c["env"]]
    assert {c["env"]["_VLLM_ENV_SCRIPT"] for c in sourced} == {
        str(b.prefix / "etc/conda/activate.d/zz-vllm.sh"),
        str(b.workspace / "act.sh"),
    }
    assert {m.name for m in marks.iterdir()} >= {
        "nvcc", "cmake", "python", "nvidia-smi", "triton-ptxas", "activate.d", "manifest-script"
    }  # fmt: skip

    clear(marks)
    run(pytester, monkeypatch, b, "-m", "toolchain", "-k", "test_env", pixi=True)
    assert (marks / "pixi").exists(), "pixi shell-hook (which runs the scripts) was not asked"


def test_static_runs_nothing_of_the_env(pytester, monkeypatch, marked):
    """Every tier, --vllm-static, pixi on PATH: no process started names the env's tree or the
    manifest's activation script (argv, working dir, environment), and no mark appeared."""
    b, marks = marked
    clear(marks)
    result, calls = run(pytester, monkeypatch, b, "--vllm-static", pixi=True)
    assert result.ret == 0, result.stdout.str()
    started = [c for c in calls if c["started"]]
    trees = [b.prefix, b.workspace / "act.sh"]
    assert not [(c["argv"], names_tree(c, trees)) for c in started if names_tree(c, trees)]
    assert not [c["argv"] for c in calls if Path(c["argv"][0]).name == "pixi"]
    assert not list(marks.iterdir()), [m.name for m in marks.iterdir()]
    # what was refused was refused by the guard, and said so
    assert all(c["started"] or names_tree(c, trees) for c in calls)
    result.stdout.fnmatch_lines(
        ["vllm-env: --vllm-static: nothing of the env runs (activation scripts read, not sourced*"]
    )


def test_static_says_what_did_not_run_and_judges_from_files(pytester, monkeypatch, marked):
    b, marks = marked
    result, _ = run(pytester, monkeypatch, b, "--vllm-static")
    report = json.loads((pytester.path / "report.json").read_text())
    by_id: dict[str, list[dict]] = {}
    for check in report["checks"]:
        by_id.setdefault(check["id"], []).append(check)
    (nvcc_runs,) = by_id["cuda.nvcc-runs"]
    assert nvcc_runs["outcome"] == "skipped"
    assert nvcc_runs["summary"] == lit(
        f"{b.prefix}/bin/nvcc was not run (--vllm-static: it would run code of the judged env "
        f"(the program is in {b.prefix})); its files say CUDA 12.8.93 (conda-meta: "
        "cuda-nvcc-tools 12.8.93)"
    )
    (arch,) = by_id["cuda.arch-supported"]
    assert arch["outcome"] == "passed"
    assert arch["summary"].startswith("CUDA 12.8.93 can target sm_90 (the arch table for CUDA")
    (activation,) = by_id["env.activation"]
    assert activation["outcome"] == "skipped"
    assert activation["summary"].startswith("--vllm-static: 2 activation script(s) read, not run (")
    # the scripts' assignments were read: the variable each sets is known to the checks
    assert "FROM_SCRIPT" in activation["evidence"]["variables"]
    assert "VLLM_WORKER_MULTIPROC_METHOD" in activation["evidence"]["variables"]
    # cmake's version from its conda package: the NVTX prediction still judges
    (nvtx,) = by_id["nvtx.cmake-target"]
    assert nvtx["outcome"] == "passed", nvtx
    assert nvtx["evidence"]["cmake"] == "4.1.2"
    # Triton's bundled ptxas: the measured release of that wheel's bundle stands in
    (triton,) = by_id["triton.ptxas"]
    assert triton["outcome"] == "passed", triton
    for cid in ("gpu.torch-cuda", "build.nvcc-kernel", "cmake.torch-probe", "cuda.arch-ptxas"):
        for check in by_id[cid]:
            assert check["outcome"] == "skipped", check
            assert check["summary"].startswith("--vllm-static: the "), check
    # the report's node: our Python and this shell's nvidia-smi, never the env's
    assert report["node"]["source"] != "nvidia-smi" or "--vllm-static" not in json.dumps(
        report["node"]
    )


def test_static_as_an_ini_key(pytester, monkeypatch, marked):
    b, _ = marked
    pytester.makeini("[pytest]\nvllm_static = true\n")
    result, calls = run(pytester, monkeypatch, b, "-m", "toolchain", "-k", "test_env")
    result.stdout.fnmatch_lines(["*[[]env.activation[]] --vllm-static: 2 activation script(s)*"])
    assert not [c for c in calls if c["started"] and names_tree(c, [b.prefix])]


def test_static_reading_of_activation_scripts(env_builder: EnvBuilder):
    """The assignments bash makes when sourcing, read without bash; what needs a run is named."""
    from pytest_vllm_env.facts.env import PixiEnv

    env_builder.python()
    env_builder.activate_script(
        "~cuda-nvcc_activate.sh",
        """\
        #!/bin/bash
        export CUDA_HOME_CONDA_NVCC_BACKUP="${CUDA_HOME:-}"
        export CUDA_HOME="${CONDA_PREFIX}"
        _LOCAL=lib; export LIBDIR="$CONDA_PREFIX/$_LOCAL"
        export NVCC_PREPEND_FLAGS="${NVCC_PREPEND_FLAGS} -ccbin=${CXX:-g++}"
        if [ -n "$X" ]; then export NEVER=1; fi
        export STAMP=$(date)
        export QUOTED='${CONDA_PREFIX} stays'
        """,
    )
    env_builder.activate_script("~~after.sh", "export AFTER=${CUDA_HOME}/x\necho $_LOCAL\n")
    env = PixiEnv.read(env_builder.prefix, base_environ={"PATH": "/usr/bin"})
    env.static = True
    act = env.activation
    prefix = str(env.prefix)
    assert act.environ["CUDA_HOME"] == prefix
    assert act.environ["CUDA_HOME_CONDA_NVCC_BACKUP"] == ""
    assert act.environ["LIBDIR"] == f"{prefix}/lib"
    assert "_LOCAL" not in act.environ  # a shell variable: not exported
    assert act.environ["NVCC_PREPEND_FLAGS"] == " -ccbin=g++"
    assert act.environ["QUOTED"] == "${CONDA_PREFIX} stays"
    assert act.environ["AFTER"] == f"{prefix}/x"
    assert "NEVER" not in act.environ and "STAMP" not in act.environ
    assert act.sources["CUDA_HOME"].endswith("~cuda-nvcc_activate.sh")
    assert act.problems == []
    unread = "\n".join(act.unread)
    assert '~cuda-nvcc_activate.sh:6: `if [ -n "$X" ]; then export NEVER=1; fi`' in unread
    assert "~cuda-nvcc_activate.sh:7: `export STAMP=$(date)`: command substitution" in unread
    assert "~~after.sh:2: `echo $_LOCAL`: a command runs" in unread

    # the same scripts sourced by bash agree on every variable read statically
    sourced = PixiEnv.read(env_builder.prefix, base_environ={"PATH": "/usr/bin:/bin"})
    for key in ("CUDA_HOME", "CUDA_HOME_CONDA_NVCC_BACKUP", "LIBDIR", "QUOTED", "AFTER"):
        assert sourced.activation.environ[key] == act.environ[key], key
    assert sourced.activation.method == "sourced"


def test_static_ini_value_that_is_no_boolean_is_a_usage_error(pytester):
    pytester.makeini("[pytest]\nvllm_static = maybe\n")
    result = pytester.runpytest("--vllm-conformance", "-m", "toolchain")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "vllm_static" in result.stderr.str()
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
