"""The hub-cache reader agrees with huggingface_hub itself.

``pytest_vllm_env.readers.hf_cache`` finds ``--modelopt-checkpoint=org/name`` in the local
Hugging Face cache by reading the cache's layout, so that the plugin need not depend on
huggingface_hub (whose httpx/anyio dependencies put anyio's pytest plugin into every pytest
run of the user's repo). The truth is the library: each layout below is also given to the
real ``snapshot_download(repo_id, local_files_only=True)`` (the huggingface_hub of the test
extra), in a fresh process (it reads its variables at import), and both must answer alike:
the same folder, or the same error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_vllm_env.readers import hf_cache

COMMIT = "a" * 40
REAL = """
import sys
from huggingface_hub import snapshot_download
try:
    print(snapshot_download(repo_id=sys.argv[1], local_files_only=True))
except Exception as exc:
    print("ERROR", type(exc).__name__)
"""


def real_answer(repo_id: str, environ: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", REAL, repo_id],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def our_answer(repo_id: str, environ: dict[str, str], monkeypatch) -> str:
    # expanduser and expandvars read the process's own HOME and variables, as the library does
    for key in [k for k in os.environ if k.startswith(("HF_", "HUGGINGFACE_", "XDG_"))]:
        monkeypatch.delenv(key)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    try:
        return str(hf_cache.snapshot(repo_id, environ))
    except hf_cache.NotCached as exc:
        return f"ERROR {exc.reason}"


def cached(hub: Path, repo_id: str, *, ref: str | None = COMMIT, snapshot: bool = True) -> Path:
    storage = hub / "--".join(["models", *repo_id.split("/")])
    folder = storage / "snapshots" / COMMIT
    if snapshot:
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
    if ref is not None:
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        (storage / "refs" / "main").write_text(ref)
    return folder


def base_environ(tmp_path: Path) -> dict[str, str]:
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGINGFACE_", "XDG_")) and k != "HOME"
    }
    return {**keep, "HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}


CASES = {
    # name: (repo id, where the cache is, how it is laid out)
    "hf_hub_cache": ("acme/tiny", {"HF_HUB_CACHE": "{tmp}/hub"}, "{tmp}/hub", {}),
    "hf_home": ("acme/tiny", {"HF_HOME": "{tmp}/hfhome"}, "{tmp}/hfhome/hub", {}),
    "xdg": ("acme/tiny", {"XDG_CACHE_HOME": "{tmp}/xdg"}, "{tmp}/xdg/huggingface/hub", {}),
    "legacy": ("acme/tiny", {"HUGGINGFACE_HUB_CACHE": "{tmp}/old"}, "{tmp}/old", {}),
    "home_default": ("acme/tiny", {}, "{tmp}/home/.cache/huggingface/hub", {}),
    "tilde": ("acme/tiny", {"HF_HOME": "~/hf"}, "{tmp}/home/hf/hub", {}),
    "hub_cache_beats_home": (
        "acme/tiny",
        {"HF_HUB_CACHE": "{tmp}/hub", "HF_HOME": "{tmp}/hfhome"},
        "{tmp}/hub",
        {},
    ),
    "no_ref": ("acme/tiny", {"HF_HUB_CACHE": "{tmp}/hub"}, "{tmp}/hub", {"ref": None}),
    "ref_to_missing_snapshot": (
        "acme/tiny",
        {"HF_HUB_CACHE": "{tmp}/hub"},
        "{tmp}/hub",
        {"snapshot": False},
    ),
    "ref_with_newline": (  # the library takes the whole file as the hash
        "acme/tiny",
        {"HF_HUB_CACHE": "{tmp}/hub"},
        "{tmp}/hub",
        {"ref": COMMIT + "\n"},
    ),
    "not_cached": ("acme/other", {"HF_HUB_CACHE": "{tmp}/hub"}, "{tmp}/hub", {}),
    "double_dash": ("acme--x/tiny", {"HF_HUB_CACHE": "{tmp}/hub"}, "{tmp}/hub", {}),
    "dot_git": ("acme/tiny.git", {"HF_HUB_CACHE": "{tmp}/hub"}, "{tmp}/hub", {}),
    "not_ascii": ("acme/café", {"HF_HUB_CACHE": "{tmp}/hub"}, "{tmp}/hub", {}),
    "leading_dot": ("acme/.tiny", {"HF_HUB_CACHE": "{tmp}/hub"}, "{tmp}/hub", {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_reader_answers_as_huggingface_hub_does(case, tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    repo_id, variables, hub, layout = CASES[case]
    (tmp_path / "home").mkdir()
    # what is in the cache: the repo asked for, or (not_cached, invalid ids) acme/tiny
    in_cache = repo_id if hf_cache.valid_repo_id(repo_id) and case != "not_cached" else "acme/tiny"
    cached(Path(hub.format(tmp=tmp_path)), in_cache, **layout)
    variables = {k: v.format(tmp=tmp_path) for k, v in variables.items()}
    real = real_answer(repo_id, base_environ(tmp_path) | variables)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ours = our_answer(repo_id, variables, monkeypatch)
    assert ours == real, (case, ours, real)


def test_the_verdict_for_a_missing_repo_id_names_the_download(tmp_path, monkeypatch):
    from pytest_vllm_env.readers.checkpoint import CheckpointNotFound, resolve

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointNotFound) as info:
        resolve("acme/not-cached")
    assert str(info.value) == (
        "no such directory, and not in the local Hugging Face cache (LocalEntryNotFoundError). "
        "Download it first, outside the test run: `hf download acme/not-cached`"
    )
    cached(tmp_path / "hub", "acme/tiny")
    assert resolve("acme/tiny") == (
        tmp_path / "hub" / "models--acme--tiny" / "snapshots" / COMMIT,
        "Hugging Face cache",
    )
