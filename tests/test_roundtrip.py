"""Issue 21's round trip: a fix applied must turn its verdict green.

For each fixture env below, the suite runs; every failing verdict whose fix is a command or an
edit (its evidence carries ``change``: :class:`pytest_vllm_env.findings.Change`) is applied to
a fresh copy of the env by :mod:`fixtures.apply` (the manifest edited as a person would, then
``pixi install`` emulated; pip/uv commands installing from a catalogue of fixture packages),
and the suite runs again on the copy: the same check on the same subject must pass. A
failing verdict without a change must be one this file names (its fix is advice, not a
command), so a fix that loses its data is noticed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from fixtures.apply import Applier, Catalogue, copy_tree, relocate, write_dist
from fixtures.envs import EnvBuilder
from pytest_vllm_env.facts.platform import host_glibc
from pytest_vllm_env.findings import Change
from tests.test_abi import parts, pixi_env, venv_env  # noqa: F401 (parts: a fixture)
from tests.test_platform import NEEDS_232, _gcc

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider")
# (prefix, manifest or None) of an env built under a root
Built = tuple[Path, Path | None]


def run(pytester, prefix: Path, k: str, *extra: str) -> dict:
    pytester.runpytest(*SUITE, "-k", k, f"--vllm-env={prefix}", "--vllm-env-report=r.json", *extra)
    return json.loads((pytester.path / "r.json").read_text())


def key(check: dict) -> tuple[str, str]:
    return check["id"], check.get("subject", "")


def round_trip(
    pytester,
    tmp_path: Path,
    build: Callable[[Path], Built],
    catalogue: Catalogue,
    k: str,
    extra: tuple[str, ...] = (),
) -> tuple[dict[tuple[str, str], str], list[tuple[str, str]]]:
    """Each failing verdict with changes, applied to its own copy: ``{(check, subject):
    outcome after}``, and the failing verdicts that carry no change. ``extra``: more
    options of both runs."""
    src = tmp_path / "original"
    prefix, manifest = build(src)
    bad = [
        c for c in run(pytester, prefix, k, *extra)["checks"] if c["outcome"] in ("failed", "error")
    ]
    assert bad, "the case must fail somewhere"
    after: dict[tuple[str, str], str] = {}
    for i, finding in enumerate(c for c in bad if c["evidence"].get("change")):
        dst = tmp_path / f"copy{i}"
        copy_tree(src, dst)
        changes = relocate([Change.from_dict(c) for c in finding["evidence"]["change"]], src, dst)
        moved = Path(str(prefix).replace(str(src), str(dst)))
        moved_manifest = Path(str(manifest).replace(str(src), str(dst))) if manifest else None
        Applier(moved, catalogue, moved_manifest).apply(changes)
        again = {key(c): c for c in run(pytester, moved, k, *extra)["checks"]}
        after[key(finding)] = again[key(finding)]["outcome"]
    return after, [key(c) for c in bad if not c["evidence"].get("change")]


# -- vLLM 0.26.0's wheel (torch==2.11.0) next to torch 2.13.0's CPU build --------------------
def torch_catalogue(libs: dict[str, Path]) -> Catalogue:
    """pip's torch 2.11.0 is PyPI's cu130 build: torch/lib with CUDA, version.py CUDA 13.0."""

    def torch(prefix: Path, version: str, options: tuple[str, ...]) -> str:
        files: dict[str, bytes | str] = {"torch/version.py": "cuda = '13.0'\n"}
        for lib in libs["torch-cuda"].glob("*.so"):
            files[f"torch/lib/{lib.name}"] = lib.read_bytes()
        write_dist(prefix, "torch", version, files=files)
        return version

    return Catalogue(pypi={"torch": torch})


OLD_TORCH = {"torch": "2.13.0", "torch_cuda": None, "libs": "torch-cpu"}


@pytest.mark.parametrize("kind", ["venv", "uv-venv", "pixi"])
def test_abi_fixes_turn_green(pytester, tmp_path, parts, kind):  # noqa: F811
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")

    def build(root: Path) -> Built:
        if kind == "pixi":
            builder = EnvBuilder(root)
            return pixi_env(builder, parts, **OLD_TORCH), builder.workspace / "pixi.toml"
        return venv_env(root, parts, uv=kind == "uv-venv", **OLD_TORCH), None

    after, advice = round_trip(pytester, tmp_path, build, torch_catalogue(parts), "test_abi")
    assert after == {
        ("abi.pins", "torch"): "passed",
        ("abi.cudart", "vllm/_C.abi3.so"): "passed",
        ("abi.symbols", "vllm/_C.abi3.so"): "passed",
    }
    assert advice == []


# -- a binary above the workspace's glibc floor (issue 21: a failure, not a warning) ---------
@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not found")
def test_glibc_floor_fix_turns_green(pytester, tmp_path):
    host = tuple(int(p) for p in host_glibc().split(".")[:2])
    if host < (2, 32):
        pytest.skip("this machine's glibc is older than 2.32")
    ext = _gcc(tmp_path / "parts" / "_C.abi3.so", NEEDS_232)

    def build(root: Path) -> Built:
        b = EnvBuilder(root)
        b.python("3.12")
        b.dist("vllm", "0.5.2", files={"vllm/_C.abi3.so": ext.read_bytes()})
        return b.prefix, b.manifest("")

    after, advice = round_trip(pytester, tmp_path, build, Catalogue(), "glibc_versions")
    assert after == {("platform.glibc", ""): "passed"}
    assert advice == []
