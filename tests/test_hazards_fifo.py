"""A FIFO anywhere the suite reads must not hang the run (issue 21, "Never hang").

``open()`` of a FIFO blocks until someone writes, in places the user's ``--timeout`` does not
reach (session start) or that it reaches only by killing the test. For each place the suite
reads, a fixture env (or input) gets a FIFO there, and the suite runs in a subprocess with a
short ``--timeout``: every run must end, no test may hit that timeout, and the output must
name the FIFO with the verdict that judges it.

Every read goes through ``files.py`` (issue 20), and a place that is there but cannot be
read is an ``error`` of the check that needs it, never taken as absent.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.checkpoints import llama
from fixtures.envs import EnvBuilder

INNER_TIMEOUT = "4"  # pytest-timeout inside the run: a hang fails its test instead of the run


@dataclass(frozen=True)
class Place:
    """A file the suite reads, the tests that read it, and the verdict that must name it."""

    rel: str  # SP/ = site-packages, WS/ = the workspace, else under the env prefix
    select: str  # -k expression of the suite's tests that read it
    verdict: str  # what the output says about it (fnmatch pattern before the path)
    extension: bool = False  # the env also holds vLLM's _C.abi3.so (so the check runs)
    builds: bool = False  # the run judges a build (only a build reads the file)


# Read at the start of the session (locating and reading the env) and judged by env.*: one
# run with a FIFO at each (none of them stops another from being read).
ENV_PLACES = {
    "conda-meta/zzz-1.0-0.json": "*[[]env.conda-meta] ERROR: *",
    "etc/conda/env_vars.d/zzz.json": "*[[]env.activation] FAILED: *",
    "etc/conda/activate.d/zzz.sh": "*[[]env.activation] FAILED: *",
    "SP/foo-1.0.dist-info/METADATA": "*[[]env.site-packages] ERROR: *",
    "WS/pixi.toml": "*[[]env.manifest] ERROR: *",
}

PLACES = [
    Place(
        "SP/torch/share/cmake/Torch/TorchConfig.cmake",
        "test_torch_probe",
        "*[[]cmake.torch-probe] CMake probe not run: *",
    ),
    Place(
        "SP/torch/version.py",
        "test_cudart",
        "*[[]abi.cudart] ERROR: *",
        extension=True,  # abi.cudart reads torch's CUDA only to judge an extension's
    ),
    Place(
        "SP/torch/share/cmake/Caffe2/public/cuda.cmake",
        "test_nvtx_cmake_target",
        "*[[]nvtx.cmake-target] ERROR: *",
        builds=True,  # nvtx.cmake-target skips where nothing builds (build_scope)
    ),
    Place(
        "SP/vllm/_C.abi3.so",
        "test_needed_libraries",
        "*[[]abi.needed] ERROR: *",
    ),
]


def env_with(root: Path) -> EnvBuilder:
    """A small Pixi env with torch and vLLM as dists (and their CMake files, version.py)."""
    b = EnvBuilder(root)
    b.python()
    b.dist(
        "torch",
        "2.11.0",
        files={
            "torch/version.py": "cuda = '13.0'\n",
            "torch/share/cmake/Caffe2/public/cuda.cmake": "find_package(CUDAToolkit)\n",
            "torch/share/cmake/Torch/TorchConfig.cmake": "",
        },
    )
    b.dist("vllm", "0.26.0", requires=["torch==2.11.0"], files={"vllm/__init__.py": ""})
    b.dist("foo", "1.0")
    b.manifest()
    return b


def plant(b: EnvBuilder, rel: str) -> Path:
    """A FIFO at ``rel`` (replacing what is there)."""
    if rel.startswith("SP/"):
        path = b.site_packages / rel[3:]
    elif rel.startswith("WS/"):
        path = b.workspace / rel[3:]
    else:
        path = b.prefix / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    os.mkfifo(path)
    return path


def test_fifos_where_the_env_is_read_are_named(pytester, tmp_path):
    """conda-meta records, env_vars.d, activate.d, dist-info METADATA, the manifest: each a
    FIFO in one env. The old reads blocked at session start, where no --timeout reaches."""
    b = env_with(tmp_path / "ws")
    fifos = {plant(b, rel): verdict for rel, verdict in ENV_PLACES.items()}
    out = run_ends(pytester, "--vllm-env", str(b.prefix), "-k", "test_env")
    for fifo, verdict in fifos.items():
        _check(out, verdict, fifo)


def run_ends(pytester: pytest.Pytester, *args: str) -> str:
    """The suite's output; fails when the run did not end within a minute or a test of it hit
    the inner timeout (a read that blocked)."""
    result = pytester.runpytest_subprocess(
        "--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider",
        "--timeout", INNER_TIMEOUT, "-rs", *args, timeout=60,
    )  # fmt: skip
    out = result.stdout.str() + result.stderr.str()
    assert "Timeout" not in out, out[-3000:]
    assert "INTERNALERROR" not in out and "Traceback" not in out, out[-3000:]
    return out


def _check(out: str, pattern: str, fifo: Path) -> None:
    lines = [line for line in out.splitlines() if str(fifo) in line]
    assert lines, f"{fifo} is named nowhere:\n{out[-3000:]}"
    assert any(fnmatch.fnmatch(line, pattern + "FIFO*") for line in lines), lines


@pytest.mark.parametrize("place", PLACES, ids=[p.rel for p in PLACES])
def test_fifo_in_the_env_is_named_not_waited_on(pytester, tmp_path, place: Place):
    """Each place, a FIFO: the check that reads it says ERROR and names it. These were
    passed over once (a FIFO torch/version.py read as a CPU-only torch, a FIFO cuda.cmake as
    none, a FIFO ``_C.abi3.so`` as no extension at all)."""
    b = env_with(tmp_path / "ws")
    if place.extension:
        if shutil.which("g++") is None:
            pytest.skip("g++ not found")
        from fixtures.elf import fake_extension, fake_torch

        lib = fake_torch(b.site_packages / "torch" / "lib")
        fake_extension(b.site_packages / "vllm" / "_C.abi3.so", lib / "libc10.so")
    fifo = plant(b, place.rel)
    build = ("--vllm-build-log=build.log",) if place.builds else ()
    out = run_ends(pytester, "--vllm-env", str(b.prefix), "-k", place.select, *build)
    _check(out, place.verdict, fifo)


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not found")
@pytest.mark.parametrize("kind", ["fifo", "loop"])
def test_fifo_or_loop_where_a_library_must_be_is_an_error(pytester, tmp_path, kind):
    """The loader finds ``libfoo.so.1`` (a DT_NEEDED of vLLM's extension) in the env's lib/,
    and it is a FIFO (the import would hang in open()) or a symlink loop ("Too many levels
    of symbolic links"): an error naming it, not a pass, a silent skip or a hang."""
    from fixtures.elf import cxx_extension, fake_soname_lib

    b = env_with(tmp_path / "ws")
    stub = fake_soname_lib(tmp_path / "stubs", "libfoo.so.1", "int foo(void) { return 1; }\n")
    cxx_extension(
        b.site_packages / "vllm" / "_C.abi3.so",
        'extern "C" int foo(void);\nextern "C" int bar(void) { return foo(); }\n',
        [stub],
    )
    lib = b.prefix / "lib" / "libfoo.so.1"
    lib.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(lib)
    else:
        lib.symlink_to(lib)
    out = run_ends(
        pytester, "--vllm-env", str(b.prefix), "-k", "test_needed_libraries or test_undefined"
    )
    assert "[abi.needed] ERROR: vllm/_C.abi3.so: the loader finds a needed library where " in out
    why = "a FIFO, not a library" if kind == "fifo" else "Too many levels of symbolic links"
    assert f"{lib}: {why}" in out, out[-3000:]
    assert "[abi.undefined] ERROR" in out


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_fifo_in_a_checkpoint(pytester, tmp_path, name):
    b = env_with(tmp_path / "ws")
    ckpt = llama().write(tmp_path / "ckpt")
    fifo = plant_at(ckpt / name)
    out = run_ends(
        pytester,
        "--vllm-env",
        str(b.prefix),
        f"--modelopt-checkpoint={ckpt}",
        "-k",
        "test_files_readable",
    )
    _check(out, "*[[]modelopt.files-readable] ERROR: *", fifo)


def test_fifo_as_build_log(pytester, tmp_path):
    b = env_with(tmp_path / "ws")
    fifo = plant_at(tmp_path / "build.log")
    out = run_ends(
        pytester, "--vllm-env", str(b.prefix), f"--vllm-build-log={fifo}", "-k", "test_build_logs"
    )
    _check(out, "*[[]buildlog.readable] ERROR: *", fifo)


def test_fifo_as_merge_input(tmp_path):
    """``pytest-vllm-env merge`` of a folder holding a FIFO named ``*.json``, and of the FIFO
    itself: the readable report is merged, the FIFO named, exit 2 (unreadable input)."""
    import subprocess
    import sys

    reports = tmp_path / "reports"
    reports.mkdir()
    good = {"schema": 2, "checks": [{"id": "env.python", "outcome": "passed"}]}
    (reports / "a.json").write_text(json.dumps(good))
    fifo = plant_at(reports / "b.json")
    for given in (reports, fifo):
        proc = subprocess.run(
            [sys.executable, "-m", "pytest_vllm_env", "merge", str(given)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"{fifo}: cannot be read: not a regular file (a FIFO)" in proc.stderr


def plant_at(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    os.mkfifo(path)
    return path
