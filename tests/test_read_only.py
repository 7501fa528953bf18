"""The read-only promise, proven: a full run of every tier that can run here leaves the
judged env byte-for-byte as it was, from a directory where pytest's rootdir would land on
the env, and judges a read-only env exactly as a writable one."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures import cuda_envs
from fixtures.envs import EnvBuilder
from fixtures.gpu_standins import standin_env

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "fixtures" / "modelopt_export" / "llama-fp8"


def tree_state(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: type, mode, size, mtime (folders too: a file written and
    removed again changes its folder's mtime) and the content hash of regular files."""
    paths = [root] + [Path(f, n) for f, ds, fs in os.walk(root) for n in [*ds, *fs]]
    state: dict[str, tuple] = {}
    for path in paths:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            entry: tuple = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            entry = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            entry = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, digest)
        state[str(path.relative_to(root))] = entry
    return state


def set_writable(root: Path, writable: bool) -> None:
    paths = [Path(f, n) for f, ds, fs in os.walk(root) for n in [*ds, *fs]] + [root]
    for path in paths:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~bits)


@pytest.fixture(scope="module")
def full_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvBuilder]:
    """A Pixi env that every tier has something to judge in: a CUDA 12.8 toolkit from real
    parts with CMake 4.1.2, NVTX and an activation script, a manifest with activation
    tables, and a Python whose (stand-in) torch sees an H100 and whose vLLM loads."""
    b = EnvBuilder(tmp_path_factory.mktemp("readonly") / "ws")
    standin_env(b, vllm={"llama-fp8": {}})
    cuda_envs.good(b)
    b.activate_script("zz-vllm.sh", "export VLLM_WORKER_MULTIPROC_METHOD=spawn\n")
    yield b
    set_writable(b.prefix, True)


def run_everything(pytester: pytest.Pytester, env: EnvBuilder, report: Path, cwd: Path):
    os.chdir(cwd)
    # the space form on purpose: from `cwd`, pytest would root itself in the env
    return pytester.runpytest_subprocess(
        "--vllm-conformance", "-p", "no:randomly",
        "--vllm-env", str(env.prefix),
        "--cuda-arch=9.0", f"--modelopt-checkpoint={CHECKPOINT}",
        f"--vllm-env-report={report}",
        timeout=600,
    )  # fmt: skip


@pytest.fixture
def elsewhere() -> Iterator[Path]:
    """A working directory that shares only "/" with the env's tmp dir (pytest's rootdir
    was the env itself from such a place: pytest-dev/pytest#8846)."""
    for base in ("/dev/shm", "/var/tmp"):
        if os.access(base, os.W_OK):
            folder = Path(tempfile.mkdtemp(prefix="vllm-env-ro-", dir=base))
            break
    else:
        pytest.skip("no writable folder outside the tmp dir")
    if os.path.commonpath([folder, tempfile.gettempdir()]) != "/":
        pytest.skip(f"{folder} shares more than / with the tmp dir")
    yield folder
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def verdicts(report: Path) -> list[tuple[str, str, str]]:
    checks = json.loads(report.read_text())["checks"]
    return sorted((c["id"], c["outcome"], c["test"]) for c in checks)


def test_a_full_run_never_writes_into_the_env(pytester, full_env, elsewhere, tmp_path, monkeypatch):
    # Seen: the probes' `import torch` wrote __pycache__ into the env's site-packages
    # (hidden wherever PYTHONDONTWRITEBYTECODE happens to be set, as on our CI machine)
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    prefix = full_env.prefix
    before = tree_state(prefix)
    writable = run_everything(pytester, full_env, tmp_path / "rw.json", elsewhere)
    assert tree_state(prefix) == before, "a run wrote into the judged env"
    assert f"rootdir: {elsewhere}" in writable.stdout.str()

    set_writable(prefix, False)
    try:
        read_only = tree_state(prefix)
        result = run_everything(pytester, full_env, tmp_path / "ro.json", prefix)  # cwd: env
        assert tree_state(prefix) == read_only
    finally:
        set_writable(prefix, True)
    text = result.stdout.str() + result.stderr.str()
    assert "Permission denied" not in text and "Read-only file system" not in text
    assert "Traceback" not in text
    # the same verdicts, read-only or not, from anywhere; and every tier ran something
    assert verdicts(tmp_path / "ro.json") == verdicts(tmp_path / "rw.json")
    ran = {c[0].split(".")[0] for c in verdicts(tmp_path / "rw.json") if c[1] != "skipped"}
    assert {"env", "cuda", "nvtx", "build", "gpu", "modelopt"} <= ran, ran
