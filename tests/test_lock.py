"""Lock mode: the seed workspaces judged from pixi.lock before `pixi install`, the lock.*
verdicts and their fixes, bad locks, and an installed env older than its lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures import pixi_locks as L
from fixtures.envs import EnvBuilder
from fixtures.text import lit

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-m", "toolchain")


def run_lock(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*SUITE, "-k", "test_lock", *args)


def report(pytester: pytest.Pytester, *args: str) -> dict[str, list[dict]]:
    """Run the lock checks with a JSON report; findings by check id."""
    out = pytester.path / "report.json"
    run_lock(pytester, f"--vllm-env-report={out}", *args)
    by_id: dict[str, list[dict]] = {}
    data = json.loads(out.read_text())
    for check in data["checks"]:
        by_id.setdefault(check["id"], []).append(check)
    by_id["_env"] = [data["env"]]
    return by_id


# -- the seed workspaces -------------------------------------------------------------------------
@pytest.mark.parametrize("version", [5, 6, 7])
def test_seed_001_is_doomed_before_install(pytester, tmp_path, version):
    manifest = L.seed_001(tmp_path / "ws", version)
    result = run_lock(pytester, f"--pixi-manifest={manifest}", "--vllm-env=default")
    result.assert_outcomes(failed=3, passed=4, skipped=1)
    result.stdout.fnmatch_lines(
        [
            f"vllm-env: {tmp_path}/ws/.pixi/envs/default (*pixi env 'default'; judged from "
            "pixi.lock (linux-64): not installed)",
            "vllm-env: python 3.12.9; torch 2.6.0+cu124, vllm 0.8.5, xformers 0.0.29.post2; "
            "CUDA toolkit: cuda-version 12.4",
            lit(
                "*[lock.torch-archs] FAILED: torch 2.6.0+cu124 (pixi.lock) has no kernels for "
                "sm_120 (12.0): it holds SASS sm_50, sm_60, sm_70, sm_75, sm_80, sm_86, sm_90, "
                "sm_90a; PTX none"
            ),
            lit(
                "*fix: in pixi.toml line 15 ([pypi-dependencies]), replace `torch = { version = "
                '"==2.6.0", index = "https://download.pytorch.org/whl/cu124" }` with `torch = '
                '{ version = ">=2.8", index = "https://download.pytorch.org/whl/cu128" }`*'
                "with a vLLM release that pins that torch (vllm 0.8.5 requires torch==2.6.0: "
                'pixi.toml:16 `vllm = "==0.8.5"`)*then `pixi lock`*'
            ),
            "*arch_table: measured: PyPI wheel torch-2.6.0-*libtorch_cuda.so",
            lit(
                "*[lock.nvcc-archs] FAILED: CUDA 12.4.131 nvcc cannot generate code for sm_120 "
                "(12.0, from TORCH_CUDA_ARCH_LIST); it needs CUDA >= 12.8"
            ),
            lit(
                '*fix: in pixi.toml line 8 ([dependencies]), replace `cuda-version = "12.4.*"` '
                'with `cuda-version = "12.8.*"`; in pixi.toml line 9 ([dependencies]), replace '
                '`cuda-nvcc = "12.4.*"` with `cuda-nvcc = "12.8.*"`*'
            ),
            "*decided_by: the arch table, for the locked cuda-nvcc version",
            lit(
                "*[lock.build-deps] FAILED: CMake's FindCUDAToolkit will not create "
                "CUDA::cuda_driver (cuda-driver-dev is not locked), CUDA::nvrtc (cuda-nvrtc-dev "
                "is not locked), CUDA::nvToolsExt (cuda-nvtx-dev is not locked)*"
            ),
        ]
    )
    assert not (tmp_path / "ws" / ".pixi").exists()  # never installs, never creates .pixi/
    assert "Traceback" not in result.stdout.str()


def test_seed_004_pyproject_is_fine(pytester, tmp_path):
    manifest = L.seed_004(tmp_path / "ws")
    found = report(pytester, f"--pixi-manifest={manifest}", "--vllm-env=rtx5090-vllm")
    outcomes = {cid: {f["outcome"] for f in fs} for cid, fs in found.items() if cid != "_env"}
    assert outcomes == {
        "lock.file": {"passed"},
        "lock.torch-archs": {"passed"},
        "lock.nvcc-archs": {"passed"},
        "lock.cuda-match": {"passed"},
        "lock.build-deps": {"passed"},
        "lock.torch-pins": {"passed"},
        "lock.wheel-tags": {"passed"},
        "lock.installed-current": {"skipped"},
    }
    summaries = {f["summary"] for cid, fs in found.items() if cid != "_env" for f in fs}
    assert "torch 2.9.1+cu128 (pixi.lock) runs on sm_120 via SASS sm_120" in summaries
    assert "cmake 4.0.3 (conda) finds the targets/x86_64-linux layout" in summaries
    assert "torch 2.9.1+cu128 satisfies xformers 0.0.33.post2's torch==2.9.1" in summaries
    env = found["_env"][0]
    assert env["judged_from"] == str(tmp_path / "ws" / "pixi.lock")
    assert env["packages"]["torch"] == "2.9.1+cu128"


def test_file_checks_skip_in_lock_mode_and_say_why(pytester, tmp_path):
    manifest = L.seed_001(tmp_path / "ws")
    result = pytester.runpytest(
        *SUITE,
        "-k",
        "test_cuda or test_env",
        f"--pixi-manifest={manifest}",
        "--vllm-env=default",
        "-rs",
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped", 0) >= 10 and "failed" not in outcomes
    result.stdout.fnmatch_lines(
        [
            "SKIPPED [[]1] *test_cuda.py:*: judged from pixi.lock (linux-64): not installed; this "
            "check reads the installed env's files (the lock.* checks judge the lock)"
        ]
    )


def test_lock_mode_under_xdist_gives_the_same_verdicts(pytester, tmp_path):
    manifest = L.seed_001(tmp_path / "ws")
    result = run_lock(pytester, f"--pixi-manifest={manifest}", "--vllm-env=default", "-n", "2")
    result.assert_outcomes(failed=3, passed=4, skipped=1)


# -- an installed env and its lock -----------------------------------------------------------------
def _installed_seed_004(tmp_path: Path, torch: str = "2.9.1+cu128") -> tuple[Path, EnvBuilder]:
    manifest = L.seed_004(tmp_path / "ws")
    env = EnvBuilder(tmp_path / "ws", "rtx5090-vllm")
    L.install(L.seed_004_lock(), "rtx5090-vllm", env)
    if torch != "2.9.1+cu128":
        for info in env.site_packages.glob("torch-*.dist-info"):
            for f in info.iterdir():
                f.unlink()
            info.rmdir()
        env.dist("torch", torch)
    return manifest, env


def test_installed_env_matching_its_lock(pytester, tmp_path):
    manifest, _ = _installed_seed_004(tmp_path)
    found = report(pytester, f"--pixi-manifest={manifest}", "--vllm-env=rtx5090-vllm")
    assert [f["outcome"] for f in found["lock.installed-current"]] == ["passed"]
    assert "judged_from" in found["_env"][0] and found["_env"][0]["judged_from"] == "files"
    skipped = found["lock.torch-archs"][0]
    assert skipped["outcome"] == "skipped"
    assert "is installed: judged from its files (pass --vllm-from-lock" in skipped["summary"]


def test_installed_env_older_than_its_lock_is_a_warning(pytester, tmp_path):
    manifest, env = _installed_seed_004(tmp_path, torch="2.8.0+cu128")
    result = run_lock(pytester, f"--pixi-manifest={manifest}", "--vllm-env=rtx5090-vllm")
    assert {k: v for k, v in result.parseoutcomes().items() if k != "deselected"} == {
        "skipped": 7,
        "warned": 1,
    }
    result.stdout.fnmatch_lines(
        [
            "*vllm-env: warnings (it works, at a cost)*",
            lit(
                f"[lock.installed-current] {env.prefix} is older than pixi.lock: 1 package(s) "
                "differ (torch 2.8.0+cu128 installed, 2.9.1+cu128 locked); `pixi run` updates it "
                "first, a direct call of its binaries does not"
            ),
            "    fix: `pixi install -e rtx5090-vllm` (or judge the lock: --vllm-from-lock)",
        ]
    )
    strict = run_lock(
        pytester, f"--pixi-manifest={manifest}", "--vllm-env=rtx5090-vllm", "--vllm-strict"
    )
    strict.assert_outcomes(failed=1, skipped=7)


def test_from_lock_judges_an_installed_env_from_its_lock(pytester, tmp_path):
    manifest, env = _installed_seed_004(tmp_path, torch="2.8.0+cu128")
    found = report(
        pytester, f"--pixi-manifest={manifest}", "--vllm-env=rtx5090-vllm", "--vllm-from-lock"
    )
    assert found["lock.torch-archs"][0]["outcome"] == "passed"  # 2.9.1, the locked one
    assert found["lock.installed-current"][0]["outcome"] == "warning"
    result = pytester.runpytest(
        *SUITE,
        "-k",
        "test_env",
        f"--pixi-manifest={manifest}",
        "--vllm-env=rtx5090-vllm",
        "--vllm-from-lock",
    )
    result.stdout.fnmatch_lines(
        ["vllm-env: *; judged from pixi.lock (linux-64): installed, --vllm-from-lock)"]
    )
    assert "passed" not in result.parseoutcomes() and "failed" not in result.parseoutcomes()


def test_two_envs_one_installed_one_locked(pytester, tmp_path):
    manifest = L.seed_004(tmp_path / "ws")
    default = EnvBuilder(tmp_path / "ws", "default")
    default.python("3.12.9")
    L.install(L.seed_004_lock(), "default", default)
    result = pytester.runpytest(
        *SUITE,
        "-k",
        "test_python_found or test_torch_archs",
        f"--pixi-manifest={manifest}",
        "--vllm-env=default",
        "--vllm-env=rtx5090-vllm",
        "-v",
    )
    result.stdout.fnmatch_lines_random(
        [
            "*test_env.py::test_python_found[[]default[]] PASSED*",
            "*test_env.py::test_python_found[[]rtx5090-vllm[]] SKIPPED*",
            "*test_lock.py::test_torch_archs[[]default[]] SKIPPED*",
            "*test_lock.py::test_torch_archs[[]rtx5090-vllm[]] PASSED*",
        ]
    )


# -- bad input ---------------------------------------------------------------------------------
def _ws_with_lock(tmp_path: Path, text: str | bytes) -> Path:
    manifest = L.seed_001(tmp_path / "ws")
    lock = manifest.parent / "pixi.lock"
    lock.write_bytes(text if isinstance(text, bytes) else text.encode())
    return manifest


@pytest.mark.parametrize(
    ("text", "says", "fix"),
    [
        (
            "version: 6\nenvironments:\n  default: [\n",
            "*[lock.file] ERROR: */pixi.lock is not valid YAML (line 4, column 1)*",
            "*fix: run `pixi lock` next to pixi.toml (it rewrites pixi.lock) (a merge conflict "
            "or an interrupted write leaves such a file; `git checkout pixi.lock` restores*",
        ),
        (
            "version: 9\nenvironments: {}\npackages: []\n",
            "*[lock.file] ERROR: */pixi.lock is lock format version 9; this reader knows "
            "versions 4-7",
            "*fix: update pytest-vllm-env (this one reads formats 4-7), or install the env "
            "(`pixi install -e default`) and judge its files",
        ),
        (
            L.seed_001_lock(6).text()[:40000],
            "*[lock.file] ERROR: */pixi.lock*",
            "*fix: run `pixi lock` next to pixi.toml*",
        ),
        (
            L.billion_laughs(),
            "*[lock.file] ERROR: */pixi.lock holds a YAML anchor (`&a0`, line 3, column 5), "
            "which pixi never writes: not read, since each alias repeats a whole subtree*",
            "*fix: run `pixi lock` next to pixi.toml (it rewrites pixi.lock) (pixi never writes "
            "anchors or aliases: this file was edited or made by hand; `git checkout pixi.lock` "
            "restores*",
        ),
    ],
    ids=["not-yaml", "unknown-version", "truncated", "billion-laughs"],
)
def test_bad_lock_is_an_error_verdict(pytester, tmp_path, text, says, fix):
    manifest = _ws_with_lock(tmp_path, text)
    result = run_lock(pytester, f"--pixi-manifest={manifest}", "--vllm-env=default", "-rs")
    result.assert_outcomes(failed=1, skipped=7)
    result.stdout.fnmatch_lines([lit(says), lit(fix)])
    result.stdout.fnmatch_lines(["*[[]lock.torch-archs[]] pixi.lock could not be read (lock.file)"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_env_the_lock_lacks(pytester, tmp_path):
    manifest = L.seed_001(tmp_path / "ws")
    with manifest.open("a") as fh:
        fh.write(
            '\n[feature.cuda.dependencies]\ncuda-nvtx-dev = "12.4.*"\n\n'
            '[environments]\ncuda = ["cuda"]\n'
        )
    result = run_lock(pytester, f"--pixi-manifest={manifest}", "--vllm-env=cuda")
    result.assert_outcomes(failed=1, skipped=7)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[lock.file] ERROR: */pixi.lock has no environment 'cuda' (it has: default): "
                "the lock predates the env in pixi.toml"
            ),
            "*fix: run `pixi lock` next to pixi.toml*",
        ]
    )


def test_platform_the_lock_lacks(pytester, tmp_path):
    manifest = L.seed_001(tmp_path / "ws")
    result = run_lock(
        pytester, f"--pixi-manifest={manifest}", "--vllm-env=default", "--pixi-platform=osx-arm64"
    )
    result.assert_outcomes(failed=1, skipped=7)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[lock.file] ERROR: */pixi.lock locks environment 'default' for linux-64, "
                "not osx-arm64"
            ),
            "*fix: add 'osx-arm64' to `platforms` in [[]workspace] of pixi.toml and run `pixi "
            "lock`*; or judge a platform it has: --pixi-platform=linux-64",
        ]
    )


def test_unknown_platform_name_is_a_usage_error(pytester, tmp_path):
    manifest = L.seed_001(tmp_path / "ws")
    result = run_lock(
        pytester, f"--pixi-manifest={manifest}", "--vllm-env=default", "--pixi-platform=linux64"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--pixi-platform: 'linux64' is not a Pixi platform; use one of*"])


def test_from_lock_without_a_lock_is_a_usage_error(pytester, env_builder: EnvBuilder):
    env_builder.python()
    manifest = env_builder.manifest()
    result = run_lock(
        pytester, f"--pixi-manifest={manifest}", "--vllm-env=default", "--vllm-from-lock"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--vllm-from-lock: no pixi.lock next to */pixi.toml; run `pixi lock`*"]
    )


def test_not_installed_and_no_lock_is_still_a_usage_error(pytester, tmp_path):
    manifest = L.seed_001(tmp_path / "ws")
    (manifest.parent / "pixi.lock").unlink()
    result = run_lock(pytester, f"--pixi-manifest={manifest}", "--vllm-env=default")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    # the command that gives it one or the other (fixes.env_not_installed, issue 13)
    result.stderr.fnmatch_lines(
        [
            "*pixi env 'default' is declared in * but not installed (no *) and has no pixi.lock "
            f"to judge it from: run `pixi install -e default --manifest-path {manifest}` (or "
            "`pixi lock`, to judge it before installing), then judge it"
        ]
    )


def test_no_lock_for_an_installed_env_skips_with_a_reason(pytester, env_builder: EnvBuilder):
    env_builder.python()
    manifest = env_builder.manifest()
    result = run_lock(pytester, f"--pixi-manifest={manifest}", "--vllm-env=default", "-rs")
    result.assert_outcomes(skipped=8)
    result.stdout.fnmatch_lines([f"*no pixi.lock for default ({manifest})"])


def test_installed_env_with_a_lock_pixi_cannot_parse(pytester, tmp_path):
    manifest, _ = _installed_seed_004(tmp_path)
    (manifest.parent / "pixi.lock").write_text("version: 6\n<<<<<<< HEAD\nenvironments: {\n")
    found = report(pytester, f"--pixi-manifest={manifest}", "--vllm-env=rtx5090-vllm")
    assert [f["outcome"] for f in found["lock.file"]] == ["error"]
    assert "is not valid YAML" in found["lock.file"][0]["summary"]
    current = found["lock.installed-current"][0]
    assert current["outcome"] == "skipped"
    assert current["summary"] == "pixi.lock could not be read (lock.file)"


def test_a_lock_is_parsed_once_and_again_when_rewritten(tmp_path):
    import os

    from pytest_vllm_env.facts.lock_env import load_lock

    lock = tmp_path / "pixi.lock"
    text = L.LockBuilder(6).add("default", [L.wheel("foo", "1.0")]).text()
    lock.write_text(text)
    first = load_lock(lock)
    assert load_lock(lock) is first  # platform.wheel-tag and lock mode share one parse
    # rewritten in place: same size, same inode, the old mtime put back
    stat = lock.stat()
    lock.write_text(text.replace("version: '1.0'", "version: '1.1'"))
    os.utime(lock, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert lock.stat().st_size == stat.st_size
    assert load_lock(lock).env("default", "linux-64").pypi["foo"].version == "1.1"
