"""The cross-worker fact cache: computed once, keyed by what the fact depends on."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from pytest_vllm_env.cache import FactCache


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
