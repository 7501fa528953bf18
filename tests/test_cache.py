"""The cross-worker fact cache: computed once, keyed by what the fact depends on."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from pytest_vllm_env.cache import FactCache, usable_dir


def _worker(args: tuple[str, str, str]) -> int:
    directory, dep, log = args

    def compute() -> int:
        with open(log, "a") as fh:  # one line per real computation
            fh.write("computed\n")
        return 42

    return FactCache(Path(directory)).get("nvcc-version", compute, [dep])


def test_parallel_workers_compute_once(tmp_path):
    dep = tmp_path / "nvcc"
    dep.write_text("v1")
    log = tmp_path / "log"
    args = (str(tmp_path / "cache"), str(dep), str(log))
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        assert pool.map(_worker, [args] * 8) == [42] * 8
    assert log.read_text().count("computed") == 1


def test_changed_dependency_recomputes(tmp_path):
    cache = FactCache(tmp_path / "cache")
    dep = tmp_path / "lib.so"
    dep.write_text("a")
    assert cache.get("syms", lambda: ["a"], [dep]) == ["a"]
    assert cache.get("syms", lambda: ["stale"], [dep]) == ["a"]
    dep.write_text("bb")  # size (and mtime) change
    assert cache.get("syms", lambda: ["b"], [dep]) == ["b"]


def test_corrupt_cache_entry_is_recomputed(tmp_path):
    cache = FactCache(tmp_path / "cache")
    cache.get("x", lambda: 1)
    for entry in (tmp_path / "cache").glob("x-*.json"):
        entry.write_text("{not json")
    assert cache.get("x", lambda: 2) == 2


def test_no_cache_dir_computes_every_time():
    cache = FactCache(None)
    assert cache.get("x", lambda: 1) == 1
    assert cache.get("x", lambda: 2) == 2


# -- the cache can only make a run faster (issue 21) ---------------------------------------
def _entries(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.json"))


def test_same_size_same_mtime_replacement_is_read_again(tmp_path):
    # cp -p, rsync -t, a tar extract: size and mtime alone gave a stale pass
    cache = FactCache(tmp_path / "cache")
    dep = tmp_path / "libcudart.so.12"
    dep.write_text("aa")
    st = os.stat(dep)
    assert cache.get("syms", lambda: "old", [dep]) == "old"
    new = tmp_path / "new"
    new.write_text("bb")
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, dep)  # a replacement by rename: another inode
    assert (os.stat(dep).st_size, os.stat(dep).st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert cache.get("syms", lambda: "new", [dep]) == "new"
    time.sleep(0.01)
    dep.write_text("cc")  # written in place: same inode, another ctime
    os.utime(dep, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.get("syms", lambda: "in place", [dep]) == "in place"


def test_linkage_reads_a_same_size_same_mtime_library_again(tmp_path):
    from pytest_vllm_env.facts import linkage

    lib = tmp_path / "lib.so"
    lib.write_bytes(b"not an elf, one")
    st = os.stat(lib)
    first = linkage._stat_key(lib)
    new = tmp_path / "new"
    new.write_bytes(b"not an elf, two")
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, lib)
    assert linkage._stat_key(lib) != first


@pytest.mark.parametrize(
    "entry",
    [
        '{"value": {"bogus": 1}}',  # another version's shape, without our header
        "[1, 2]",
        '{"format": 2, "version": "0.0.1", "key": "K", "sha": "S", "value": 5}',
        "",
    ],
)
def test_an_entry_of_another_shape_is_computed_again(tmp_path, entry):
    cache = FactCache(tmp_path / "cache")
    assert cache.get("x", lambda: {"archs": [80, 90]}) == {"archs": [80, 90]}
    for path in _entries(tmp_path / "cache"):
        path.write_text(entry.replace("K", path.stem))
    assert cache.get("x", lambda: {"archs": [120]}) == {"archs": [120]}


def test_an_entry_whose_value_was_edited_is_computed_again(tmp_path):
    cache = FactCache(tmp_path / "cache")
    cache.get("x", lambda: [1, 2, 3])
    (path,) = _entries(tmp_path / "cache")
    path.write_text(path.read_text().replace("[1,2,3]", "[1,2]"))
    assert json.loads(path.read_text())["value"] == [1, 2]
    assert cache.get("x", lambda: [4]) == [4]


def test_an_entry_of_another_user_is_not_trusted(tmp_path):
    cache = FactCache(tmp_path / "cache")
    cache.get("x", lambda: 1)
    (path,) = _entries(tmp_path / "cache")
    try:
        os.chown(path, 65534, 65534)
    except PermissionError:
        pytest.skip("needs root to give a file to another user")
    assert cache.get("x", lambda: 2) == 2


def test_a_failing_lock_or_write_costs_the_computation_not_the_verdict(tmp_path, monkeypatch):
    cache = FactCache(tmp_path / "cache")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("filelock.FileLock.acquire", refuse)
    assert cache.get("x", lambda: 1) == 1
    monkeypatch.undo()
    monkeypatch.setattr(Path, "write_text", refuse)
    assert cache.get("y", lambda: 2) == 2
    assert cache.get("y", lambda: 3) == 3  # nothing was stored
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_choose_passes_over_what_cannot_hold_the_cache(tmp_path, monkeypatch):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    good = tmp_path / "good"
    cache = FactCache.choose([(a_file / "facts", "pytest's cache dir"), (good, "the user one")])
    assert cache.directory == good
    assert cache.note == (
        f"fact cache in {good} (the user one): pytest's cache dir {a_file / 'facts'} cannot "
        "be made (Not a directory)"
    )
    none = FactCache.choose([(a_file / "x", "one"), (a_file / "y", "two")])
    assert none.directory is None
    assert none.note.startswith("no fact cache (each fact computed every run): one ")
    assert none.get("x", lambda: 1) == 1
    assert FactCache.choose([(good, "one")]).note == ""

    def unwritable(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", unwritable)  # root may write anywhere: say no
    assert usable_dir(good) == "is not writable (Permission denied)"


def test_choose_passes_over_another_users_folder(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    try:
        os.chown(theirs, 65534, 65534)
    except PermissionError:
        pytest.skip("needs root to give a folder to another user")
    assert usable_dir(theirs) == "belongs to another user (uid 65534)"


# -- in a run: every check keeps its verdict, the header says where the cache went -----------
SUITE = ("--vllm-conformance", "-p", "no:randomly", "-m", "toolchain", "--cuda-arch=12.0")


@pytest.fixture
def good_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The good-12.8 seed env (a conda CUDA toolkit whose nvcc runs go through the cache)."""
    from fixtures.cuda_envs import seed_env

    return seed_env(tmp_path_factory.mktemp("seeds"), "good-12.8").prefix


def _run(pytester: pytest.Pytester, env: Path, monkeypatch, xdg: Path) -> pytest.RunResult:
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    return pytester.runpytest(*SUITE, f"--vllm-env={env}")


def _outcomes(result: pytest.RunResult) -> dict[str, int]:
    return {k: v for k, v in result.parseoutcomes().items() if k not in ("warning", "warnings")}


def test_unusable_pytest_cache_falls_back_to_the_user_cache(pytester, good_env, monkeypatch):
    baseline = _outcomes(_run(pytester, good_env, monkeypatch, pytester.path / "xdg0"))
    assert "error" not in baseline and baseline["passed"] > 10
    shutil.rmtree(pytester.path / ".pytest_cache")
    (pytester.path / ".pytest_cache").write_text("")  # where pytest's cache dir should be
    xdg = pytester.path / "xdg"
    result = _run(pytester, good_env, monkeypatch, xdg)
    assert _outcomes(result) == baseline
    result.stdout.fnmatch_lines(
        [
            f"vllm-env: fact cache in {xdg}/pytest-vllm-env/facts (the user cache dir): pytest's "
            f"cache dir {pytester.path}/.pytest_cache/d/vllm-env-facts cannot be made (*)"
        ]
    )
    assert _entries(xdg / "pytest-vllm-env" / "facts")


def test_no_usable_cache_at_all_computes_and_says_so(pytester, good_env, monkeypatch):
    baseline = _outcomes(_run(pytester, good_env, monkeypatch, pytester.path / "xdg0"))
    shutil.rmtree(pytester.path / ".pytest_cache")
    (pytester.path / ".pytest_cache").write_text("")
    xdg = pytester.path / "xdg-file"
    xdg.write_text("")  # XDG_CACHE_HOME pointing at a file
    result = _run(pytester, good_env, monkeypatch, xdg)
    assert _outcomes(result) == baseline
    result.stdout.fnmatch_lines(
        ["vllm-env: no fact cache (each fact computed every run): pytest's cache dir * cannot "
         f"be made (*); the user cache dir {xdg}/pytest-vllm-env/facts cannot be made (*)"]
    )  # fmt: skip


def test_another_users_pytest_cache_is_passed_over(pytester, good_env, monkeypatch):
    baseline = _outcomes(_run(pytester, good_env, monkeypatch, pytester.path / "xdg0"))
    facts = pytester.path / ".pytest_cache" / "d" / "vllm-env-facts"
    try:
        for path in [facts, *facts.iterdir()]:
            os.chown(path, 65534, 65534)
    except PermissionError:
        pytest.skip("needs root to give a folder to another user")
    result = _run(pytester, good_env, monkeypatch, pytester.path / "xdg")
    assert _outcomes(result) == baseline
    result.stdout.fnmatch_lines(
        [f"vllm-env: fact cache in * (the user cache dir): pytest's cache dir {facts} belongs "
         "to another user (uid 65534)"]
    )  # fmt: skip


def test_cache_entries_of_another_shape_change_no_verdict(pytester, good_env, monkeypatch):
    baseline = _outcomes(_run(pytester, good_env, monkeypatch, pytester.path / "xdg0"))
    entries = _entries(pytester.path / ".pytest_cache" / "d" / "vllm-env-facts")
    assert entries
    for path in entries:
        path.write_text('{"value": {"bogus": [1]}}')
    result = _run(pytester, good_env, monkeypatch, pytester.path / "xdg0")
    assert _outcomes(result) == baseline
