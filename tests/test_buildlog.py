"""The build-log judge on realistic excerpts of each failure class, and a clean log."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.envs import EnvBuilder
from fixtures.text import lit
from pytest_vllm_env.checks import buildlog
from pytest_vllm_env.readers.buildlog import read_log

LOGS = Path(__file__).parent.parent / "fixtures" / "buildlogs"


@pytest.mark.parametrize(
    ("name", "check", "fix_part"),
    [
        ("nvtx_target.log", "buildlog.nvtx-target", "cuda-nvtx-dev"),
        ("vllm_python.log", "buildlog.vllm-python", "rm -rf build/"),
        ("float8_e8m0.log", "buildlog.torch-too-old", "torch >= 2.7"),
        ("nvcc_missing.log", "buildlog.nvcc-missing", "cuda-nvcc"),
        # F1.10 (instructlab#3144), reconstructed with PyPI's CMake 3.31.6 and torch 2.5.1's
        # own CMake files, nvcc on no path CMake searches
        ("cuda_arch_undetected.log", "buildlog.nvcc-missing", "never reads CUDA_HOME"),
        ("oom_killed.log", "buildlog.oom", 'MAX_JOBS = "2"'),
        ("unknown_error.log", "buildlog.unknown-error", "first error line"),
    ],
)
def test_each_failure_class_is_named_with_its_fix(name, check, fix_part):
    findings = buildlog.judge(read_log(LOGS / name))
    assert [f.id for f in findings] == [check]
    assert findings[0].outcome == "failed"
    assert fix_part in findings[0].fix


def test_clean_log_passes():
    (f,) = buildlog.judge(read_log(LOGS / "clean.log"))
    assert (f.id, f.outcome) == ("buildlog.clean", "passed")


def test_missing_and_binary_logs_are_verdicts(tmp_path):
    (f,) = buildlog.judge(read_log(tmp_path / "nope.log"))
    assert (f.id, f.outcome) == ("buildlog.readable", "error")
    # binary data (a NUL byte: a wheel, a core file, a gzipped log) is no build log: it was
    # read as text and passed as a clean build (issue 21)
    junk = tmp_path / "junk.log"
    junk.write_bytes(b"\xff\x00\xfe" * 1000)
    (f,) = buildlog.judge(read_log(junk))
    assert (f.id, f.outcome) == ("buildlog.readable", "error")
    assert "not a text log: a NUL byte at offset 1" in f.summary
    # text that is not UTF-8 (a Latin-1 compiler message) is still a log, read as text
    latin = tmp_path / "latin.log"
    latin.write_bytes("gcc: Warnung: \xfcber\n".encode("latin-1") * 100)
    (f,) = buildlog.judge(read_log(latin))
    assert f.outcome == "passed"


def test_conformance_names_line_and_fix(pytester, env_builder: EnvBuilder):
    env_builder.python()
    log = pytester.path / "build.log"
    log.write_text((LOGS / "nvtx_target.log").read_text())
    result = pytester.runpytest(
        "--vllm-conformance",
        "-p",
        "no:randomly",
        "-k",
        "test_build_logs",
        "--vllm-env",
        str(env_builder.prefix),
        "--vllm-build-log",
        str(log),
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit("*[buildlog.nvtx-target] FAILED: *"),
            "*fix: add `cuda-nvtx-dev = *` to [[]dependencies[]]*",
            "*build.log:5*",
        ]
    )


def test_a_fifo_or_a_directory_is_an_error_not_a_hang(tmp_path):
    import os

    fifo = tmp_path / "build.log"
    os.mkfifo(fifo)  # nothing writes to it: an open() without O_NONBLOCK would wait for ever
    for path, kind in ((fifo, "a FIFO"), (tmp_path, "a directory")):
        (f,) = buildlog.judge(read_log(path))
        assert (f.id, f.outcome) == ("buildlog.readable", "error")
        assert kind in f.summary


def test_a_huge_log_is_read_from_its_tail(tmp_path, monkeypatch):
    from pytest_vllm_env import files

    monkeypatch.setattr(files, "LOG", 4096)
    log = tmp_path / "build.log"
    log.write_text("error: early\n" + "x" * 10_000 + "\n" + (LOGS / "oom_killed.log").read_text())
    found = read_log(log)
    assert len(found.text) == 4096 and "error: early" not in found.text
    assert [f.id for f in buildlog.judge(found)] == ["buildlog.oom"]
