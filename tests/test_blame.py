"""Blame where it belongs (issue 21): a bad path option is a usage error, or one error for that
subject; an env this user may not read, a dangling interpreter, a tool killed at a timeout we
set, a placeholder path: each verdict names the real cause, never a fix for something else.

Each test reproduces the wrong blame the suite gave before and asserts the verdict it gives now.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import pytest

# imported with the test module, not in a test: pytester drops modules first imported during
# a test, and PyYAML's C loader cannot be imported twice in one process
from fixtures import pixi_locks as L
from fixtures.envs import EnvBuilder
from fixtures.text import lit

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider")
REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "fixtures" / "modelopt_export" / "llama-fp8"


def run(pytester: pytest.Pytester, b: EnvBuilder, *args: str) -> pytest.RunResult:
    """The suite on ``b`` with a JSON report at ``report.json``."""
    return pytester.runpytest(
        *SUITE,
        f"--vllm-env={b.prefix}",
        f"--vllm-env-report={pytester.path / 'report.json'}",
        *args,
    )


def checks(pytester: pytest.Pytester, cid: str) -> list[dict]:
    """The report's verdicts of check ``cid``."""
    report = json.loads((pytester.path / "report.json").read_text())
    return [c for c in report["checks"] if c["id"] == cid]


def no_traceback(result: pytest.RunResult) -> None:
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


@pytest.fixture
def env(env_builder: EnvBuilder) -> EnvBuilder:
    """A Pixi env with Python and a manifest: every verdict below is about what we break."""
    env_builder.python()
    env_builder.manifest()
    return env_builder


# -- a bad path option: a usage error, never the env's CMake or torch -----------------------
@pytest.mark.parametrize(
    "make, says",
    [
        (lambda p: p / "no-such-checkout", "does not exist"),
        (lambda p: (p / "setup.py").write_text("") * 0 or p / "setup.py", "is a regular file"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "holds none of setup.py"),
    ],
    ids=["missing", "a-file", "an-empty-dir"],
)
def test_vllm_source_that_is_no_checkout_is_a_usage_error(pytester, env, tmp_path, make, says):
    """Before: judged as a vLLM build, blaming the env's CMake and torch (cmake.torch-probe,
    source.* failed); now one usage error naming the option."""
    path = make(tmp_path)
    result = run(pytester, env, "-m", "toolchain", f"--vllm-source={path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--vllm-source={path}: *{says}*"])
    no_traceback(result)


def test_checkpoint_that_is_a_file_is_one_error_for_it(pytester, env, tmp_path):
    """A file given as --modelopt-checkpoint: modelopt.files-readable says so, the other
    checkpoint checks skip (nothing fails for a checkpoint that was never read)."""
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"\0" * 16)
    result = run(pytester, env, "-k", "test_modelopt", f"--modelopt-checkpoint={file}")
    no_traceback(result)
    (readable,) = checks(pytester, "modelopt.files-readable")
    assert readable["outcome"] == "error", readable
    assert "not a directory (pass the checkpoint's folder)" in readable["summary"]
    report = json.loads((pytester.path / "report.json").read_text())
    modelopt = [c for c in report["checks"] if c["id"].startswith("modelopt.")]
    assert [c["id"] for c in modelopt if c["outcome"] in ("failed", "error")] == [
        "modelopt.files-readable"
    ]


@pytest.mark.parametrize(
    "cmake, says",
    [
        ("/nonexistent/bin/cmake", "does not exist"),
        ("/bin/false", "exited 1 and printed no `cmake version X.Y.Z`: not a CMake"),
    ],
    ids=["missing", "bin-false"],
)
def test_cmake_option_that_is_no_cmake_is_a_usage_error(pytester, env, cmake, says):
    """Before: --cmake=/bin/false skipped the NVTX prediction without a word; a missing one
    was passed over. Now a usage error at start."""
    result = run(pytester, env, "-m", "toolchain", "-k", "test_nvtx", f"--cmake={cmake}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--cmake={cmake}: *{says}*"])
    no_traceback(result)


def test_cmake_option_that_is_a_cmake_is_accepted(pytester, env, tmp_path):
    cmake = tmp_path / "cmake"
    cmake.write_text("#!/bin/sh\necho 'cmake version 3.31.6'\n")
    cmake.chmod(0o755)
    result = run(pytester, env, "-m", "toolchain", "-k", "test_nvtx", f"--cmake={cmake}")
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
    no_traceback(result)


def test_binary_build_log_is_not_read_as_a_clean_build(pytester, env, tmp_path):
    """Before: a wheel given as --vllm-build-log was read as text and found nothing wrong
    (buildlog.known-failures passed). Now buildlog.readable says it is no text log."""
    log = tmp_path / "vllm-0.26.0-cp312-linux_x86_64.whl"
    log.write_bytes(b"PK\x03\x04" + b"\0" * 64 + b"error: no CUDA\n")
    result = run(pytester, env, "-k", "test_buildlog", f"--vllm-build-log={log}")
    no_traceback(result)
    (finding,) = [c for c in json.loads((pytester.path / "report.json").read_text())["checks"]]
    assert finding["outcome"] == "error", finding
    assert finding["summary"] == (
        f"cannot read build log {log}: not a text log: a NUL byte at offset 4 (binary data)"
    )
    assert "pip install -v . 2>&1 | tee build.log" in finding["fix"]


# -- an env this user may not read is intact: nothing to reinstall ---------------------------
def _deny(monkeypatch: pytest.MonkeyPatch, denied: Path) -> None:
    """Reading ``denied`` raises EACCES, as for a user without read permission (the tests run
    as root here, where chmod denies nothing)."""
    from pytest_vllm_env import files

    real = files.load_json

    def load_json(path, *args, **kwargs):
        if Path(path) == denied:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(files, "load_json", load_json)


def test_unreadable_conda_meta_record_is_a_permission_error(pytester, env, monkeypatch):
    """Before: 'the env was left half-written (an interrupted install?): pixi clean && pixi
    install'. The record is fine; this user may not read it."""
    record = env.conda("cuda-version", "12.8", "h0_0")
    _deny(monkeypatch, record)
    run(pytester, env, "-m", "toolchain", "-k", "test_env")
    (finding,) = checks(pytester, "env.conda-meta")
    assert finding["outcome"] == "error", finding
    assert "Permission denied" in finding["summary"]
    assert "pixi clean" not in finding["fix"] and "interrupted" not in finding["fix"]
    assert finding["fix"] == (
        "the files are intact but this user may not read them: run the suite as the user that "
        f"owns {env.prefix}, or make the env readable (`chmod -R a+rX {env.prefix}`)"
    )


def test_broken_record_still_says_recreate(pytester, env):
    """The other side: a record that does not parse is a half-written env."""
    env.broken_record()
    run(pytester, env, "-m", "toolchain", "-k", "test_env")
    (finding,) = checks(pytester, "env.conda-meta")
    assert finding["outcome"] == "error"
    assert "pixi clean && pixi install" in finding["fix"]


# -- a dangling or unreadable interpreter: the Python the env declares ----------------------
def _python_311(b: EnvBuilder, *, record: bool) -> None:
    """An env whose manifest declares python 3.11 and whose bin/python3 points nowhere."""
    b.python_version = "3.11"
    if record:
        b.conda("python", "3.11.9", "h_cpython")
    b.site_packages.mkdir(parents=True, exist_ok=True)
    (b.prefix / "bin" / "python3").symlink_to(b.prefix / "gone" / "python3.11")
    b.manifest('[dependencies]\npython = "3.11.*"\n')


def test_dangling_python_with_a_record_is_reinstalled_not_added(pytester, env_builder):
    """Before: 'add python = "3.12.*"' for an env that declares and has python 3.11."""
    _python_311(env_builder, record=True)
    run(pytester, env_builder, "-m", "toolchain", "-k", "test_env")
    (finding,) = checks(pytester, "env.python")
    assert finding["outcome"] == "failed", finding
    target = env_builder.prefix / "gone" / "python3.11"
    assert finding["summary"] == (
        f"{env_builder.prefix}/bin/python3 is a dangling symlink to {target}"
    )
    assert "3.12" not in finding["fix"]
    assert finding["fix"].startswith(
        "python 3.11.9 is installed (conda-meta) but its files are damaged: reinstall it, "
    )
    assert "pixi reinstall" in finding["fix"] and "'3.11.*'" in finding["fix"]


def test_missing_python_gets_the_declared_one(pytester, env_builder):
    """No python record either: the manifest's python 3.11 is installed, not 3.12 added."""
    _python_311(env_builder, record=False)
    run(pytester, env_builder, "-m", "toolchain", "-k", "test_env")
    (finding,) = checks(pytester, "env.python")
    assert finding["outcome"] == "failed", finding
    assert finding["fix"] == (
        "`python` is declared in [dependencies] of pixi.toml but not installed in "
        f"{env_builder.prefix}: run `pixi install -e default --manifest-path "
        f"{env_builder.workspace / 'pixi.toml'}`"
    )


def test_venv_with_a_dangling_python_gets_its_own_python(pytester, tmp_path):
    """A venv made with 3.11 whose bin/python points nowhere: recreate it with 3.11."""
    from fixtures.venvs import make_venv

    prefix = make_venv(tmp_path / "proj", python="3.11")
    (prefix / "bin" / "python").unlink()
    (prefix / "bin" / "python").symlink_to("/nonexistent/python3.11")
    result = pytester.runpytest(
        *SUITE, f"--vllm-env={prefix}", f"--vllm-env-report={pytester.path / 'report.json'}",
        "-m", "toolchain", "-k", "test_env",
    )  # fmt: skip
    no_traceback(result)
    (finding,) = checks(pytester, "env.python")
    assert finding["outcome"] == "failed", finding
    assert finding["summary"] == (
        f"{prefix}/bin/python is a dangling symlink to /nonexistent/python3.11"
    )
    assert finding["fix"] == "recreate the venv with Python 3.11"  # it said 3.12


def test_unreadable_python_is_a_permission_error(pytester, env, monkeypatch):
    """bin/python3 this user may not stat: an error naming the permission, no 'add python'."""
    denied = {str(env.prefix / "bin" / "python3"), str(env.prefix / "bin" / "python")}
    real = os.stat

    def stat(path, *args, **kwargs):
        if os.fspath(path) in denied:
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    run(pytester, env, "-m", "toolchain", "-k", "test_env")
    monkeypatch.undo()
    (finding,) = checks(pytester, "env.python")
    assert finding["outcome"] == "error", finding
    assert finding["summary"] == (f"{env.prefix}/bin/python3 cannot be read: Permission denied")
    assert "add" not in finding["fix"] and "this user may not read them" in finding["fix"]


# -- a tool we killed at our own timeout ---------------------------------------------------
def test_system_nvcc_killed_at_a_tiny_timeout_is_not_reinstall_cuda_nvcc(
    pytester, tmp_path, monkeypatch
):
    """A venv with the system's nvcc on PATH, killed at --cuda-tool-timeout=1. Before: 'reinstall
    it: `pixi reinstall cuda-nvcc`' (a venv has no cuda-nvcc). Now: raise the timeout; the
    nvcc is not the env's."""
    from fixtures.venvs import make_venv

    prefix = make_venv(tmp_path / "proj")
    bin_dir = tmp_path / "usr-local-cuda" / "bin"
    bin_dir.mkdir(parents=True)
    nvcc = bin_dir / "nvcc"
    nvcc.write_text("#!/bin/sh\nsleep 30\n")
    nvcc.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = pytester.runpytest(
        *SUITE,
        f"--vllm-env={prefix}",
        f"--vllm-env-report={pytester.path / 'report.json'}",
        "-k",
        "nvcc_runs",
        "--cuda-tool-timeout=1",
    )
    no_traceback(result)
    (finding,) = checks(pytester, "cuda.nvcc-runs")
    assert finding["outcome"] == "error", finding
    assert "did not finish within 1 s" in finding["summary"]
    fix = finding["fix"]
    assert "reinstall cuda-nvcc" not in fix and "pixi" not in fix, fix
    assert fix.startswith("on a slow or busy machine raise --cuda-tool-timeout (it was 1 s;")
    assert f"{nvcc} is not the env's" in fix


def test_envs_own_nvcc_that_fails_is_reinstalled(pytester, env):
    """The other side: the env's own nvcc that exits 1 is the env's package to reinstall."""
    env.file("bin/nvcc", "#!/bin/sh\nexit 1\n").chmod(0o755)
    run(pytester, env, "-k", "nvcc_runs")
    (finding,) = checks(pytester, "cuda.nvcc-runs")
    assert finding["outcome"] == "error"
    assert "pixi reinstall" in finding["fix"] and "cuda-nvcc" in finding["fix"]
    assert "--cuda-tool-timeout" not in finding["fix"]


# -- a placeholder path, run inside a checkout with its own pixi.toml ------------------------
def test_readme_placeholder_path_is_no_such_env_not_the_checkouts(pytester):
    """The README's `--vllm-env=/path/to/workspace/.pixi/envs/default`, run in a checkout
    whose pixi.toml declares 'default' (never installed). Before: 'declared, never installed:
    run `pixi install`' for the checkout's pixi.toml. Now: no such directory, a placeholder."""
    pytester.makefile(
        ".toml",
        pixi='[workspace]\nname = "mine"\nchannels = ["conda-forge"]\nplatforms = ["linux-64"]\n',
    )
    result = pytester.runpytest(
        *SUITE, "-m", "toolchain", "--vllm-env=/path/to/workspace/.pixi/envs/default"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert str(pytester.path / "pixi.toml") not in err + result.stdout.str()
    result.stderr.fnmatch_lines(
        [
            lit(
                "ERROR: pytest-vllm-env: /path/to/workspace/.pixi/envs/default: no such "
                "directory (/path does not exist either, and no Pixi workspace declares this "
                "env: a placeholder path to replace with your workspace's?)*"
            )
        ]
    )
    no_traceback(result)


def test_env_of_a_workspace_not_installed_is_still_its_workspaces(pytester, tmp_path):
    """The other side: `<ws>/.pixi/envs/default` of a real workspace, not installed, is that
    workspace's env (the fix names its manifest)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "pixi.toml").write_text(
        '[workspace]\nname = "ws"\nchannels = ["conda-forge"]\nplatforms = ["linux-64"]\n'
    )
    result = pytester.runpytest(
        *SUITE, "-m", "toolchain", f"--vllm-env={ws / '.pixi' / 'envs' / 'default'}"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert str(ws / "pixi.toml") in result.stderr.str()
    assert "placeholder" not in result.stderr.str()


# -- nothing silent: which env is judged, and where a workspace's vLLM lives -----------------
WORKSPACE = """\
[workspace]
name = "serve"
channels = ["conda-forge"]
platforms = ["linux-64"]

[dependencies]
python = "3.12.*"

[feature.gpu.pypi-dependencies]
vllm = "==0.8.5"

[environments]
gpu = ["gpu"]
"""


def _workspace(root: Path) -> Path:
    """A workspace whose default env is a bare Python and whose `gpu` env holds vLLM 0.8.5,
    locked (pixi.lock) and never installed."""
    manifest = root / "pixi.toml"
    manifest.write_text(WORKSPACE)
    lock = L.LockBuilder(6).add("default", L.python_base())
    lock.add("gpu", L.python_base() + L.torch_stack("2.6.0", "cu124", "3.2.0") + L.vllm_085())
    lock.write(root / "pixi.lock")
    return manifest


@pytest.fixture
def no_env_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A shell outside `pixi run`/`pixi shell` and conda: nothing names an env."""
    for name in ("CONDA_PREFIX", "PIXI_ENVIRONMENT_NAME", "PIXI_PROJECT_MANIFEST"):
        monkeypatch.delenv(name, raising=False)


def test_inside_a_workspace_without_vllm_env_its_default_env_is_judged(pytester, no_env_named):
    """Before: pytest's own venv was judged (its torch, its packages), silently. Now the
    workspace's default env, here from its lock as it is not installed."""
    manifest = _workspace(pytester.path)
    out = pytester.path / "report.json"
    result = pytester.runpytest(*SUITE, "-m", "toolchain", "-k", "test_env or test_lock",
                                f"--vllm-env-report={out}")  # fmt: skip
    no_traceback(result)
    result.stdout.fnmatch_lines(
        [
            f"vllm-env: {pytester.path}/.pixi/envs/default (no --vllm-env: the default env of "
            f"{manifest}, pixi env 'default'; judged from pixi.lock (linux-64): not installed)",
        ]
    )
    env = json.loads(out.read_text())["env"]
    assert env["prefix"] == str(pytester.path / ".pixi" / "envs" / "default")
    assert env["judged_from"] == str(pytester.path / "pixi.lock")


def test_lock_mode_says_which_envs_hold_vllm(pytester, no_env_named):
    """Before: the default env judged from the lock, no word that the workspace's vLLM is in
    `gpu` (every vLLM check skipped 'no vLLM'). Now the header and the report say so."""
    manifest = _workspace(pytester.path)
    out = pytester.path / "report.json"
    result = pytester.runpytest(*SUITE, "-m", "toolchain", "-k", "test_lock",
                                f"--pixi-manifest={manifest}", "--vllm-env=default",
                                f"--vllm-env-report={out}")  # fmt: skip
    no_traceback(result)
    result.stdout.fnmatch_lines(
        [
            "vllm-env: env 'default' locks no vLLM; pixi.lock locks it in 'gpu' (vllm 0.8.5): "
            "pass --vllm-env=gpu to judge that env"
        ]
    )
    assert json.loads(out.read_text())["env"]["vllm_in_other_envs"] == {"gpu": "0.8.5"}
    # the env that holds it says nothing of the kind
    result = pytester.runpytest(*SUITE, "-m", "toolchain", "-k", "test_lock",
                                f"--pixi-manifest={manifest}", "--vllm-env=gpu",
                                f"--vllm-env-report={out}")  # fmt: skip
    assert "locks no vLLM" not in result.stdout.str()
    assert "vllm_in_other_envs" not in json.loads(out.read_text())["env"]


def test_no_env_named_and_no_workspace_says_pytests_python_is_judged(pytester, no_env_named):
    result = pytester.runpytest(*SUITE, "-m", "toolchain", "-k", "test_env")
    no_traceback(result)
    result.stdout.fnmatch_lines(
        [
            f"vllm-env: {sys.prefix}* (the interpreter running pytest*",
            "vllm-env: no --vllm-env, no $CONDA_PREFIX and no Pixi workspace here: judging the "
            "Python that runs pytest; pass --vllm-env=PREFIX|NAME to judge your env",
        ]
    )
