# ruff: noqa: E501  (expected messages are kept whole: they are what users read)
"""Where a workspace's vLLM lives, outside lock mode (issue 21, "Nothing silent").

Lock mode says "env 'default' locks no vLLM; pixi.lock locks it in 'gpu'" (tests/test_blame.py).
An installed workspace said nothing: the default env judged, every vLLM check skipped "no
vLLM", and no word that ``.pixi/envs/gpu`` holds it. Now the header and the JSON report's
``vllm_in_other_envs`` say which installed envs hold vLLM, read from their conda-meta and
dist-info (nothing of them runs).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.envs import EnvBuilder
from pytest_vllm_env.facts.env import PixiEnv

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider")
MANIFEST = """\
[feature.gpu.pypi-dependencies]
vllm = "==0.26.0"

[feature.conda.dependencies]
vllm = "0.33.0.*"

[feature.cpu.dependencies]
numpy = "*"

[environments]
gpu = ["gpu"]
conda = ["conda"]
cpu = ["cpu"]
never = ["gpu"]
".." = ["gpu"]
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """``default`` and ``cpu`` installed without vLLM; ``gpu`` holding vLLM 0.26.0 as a PyPI
    dist, ``conda`` holding conda-forge's vLLM 0.33.0; ``never`` declared, not installed."""
    ws = tmp_path / "ws"
    default = EnvBuilder(ws, "default")
    default.python()
    default.manifest(MANIFEST)
    EnvBuilder(ws, "cpu").python()
    gpu = EnvBuilder(ws, "gpu")
    gpu.python()
    gpu.dist("vllm", "0.26.0", files={"vllm/__init__.py": ""})
    gpu.dist("vllm-flash-attn", "2.7.0")  # another name starting with vllm: not vLLM
    conda = EnvBuilder(ws, "conda")
    conda.python()
    conda.conda("vllm", "0.33.0", "cuda130_py312_0")
    return ws


def run(pytester: pytest.Pytester, prefix: Path) -> tuple[str, dict]:
    out = pytester.path / "report.json"
    result = pytester.runpytest(
        *SUITE,
        "-m",
        "toolchain",
        "-k",
        "test_env",
        f"--vllm-env={prefix}",
        f"--vllm-env-report={out}",
    )
    text = result.stdout.str()
    assert "Traceback" not in text, text[-3000:]
    return text, json.loads(out.read_text())["env"]


def test_installed_workspace_says_which_envs_hold_vllm(pytester, workspace):
    text, env = run(pytester, workspace / ".pixi" / "envs" / "default")
    assert (
        "vllm-env: env 'default' holds no vLLM; the workspace's .pixi/envs holds it in "
        "'conda' (vllm 0.33.0), 'gpu' (vllm 0.26.0): pass --vllm-env=conda to judge one of them"
    ) in text, text[:3000]
    assert env["vllm_in_other_envs"] == {"conda": "0.33.0", "gpu": "0.26.0"}


def test_env_that_holds_vllm_says_nothing_of_the_kind(pytester, workspace):
    text, env = run(pytester, workspace / ".pixi" / "envs" / "gpu")
    assert "holds no vLLM" not in text
    assert "vllm_in_other_envs" not in env


def test_one_env_holding_it_names_that_env(pytester, workspace):
    import shutil

    shutil.rmtree(workspace / ".pixi" / "envs" / "conda")  # uninstalled: no longer said
    text, env = run(pytester, workspace / ".pixi" / "envs" / "cpu")
    assert (
        "vllm-env: env 'cpu' holds no vLLM; the workspace's .pixi/envs holds it in 'gpu' "
        "(vllm 0.26.0): pass --vllm-env=gpu to judge that env"
    ) in text, text[:3000]
    assert env["vllm_in_other_envs"] == {"gpu": "0.26.0"}


def test_nothing_said_where_no_other_env_holds_vllm(pytester, tmp_path):
    """One env (the manifest declares no others), or others without vLLM: no line."""
    b = EnvBuilder(tmp_path / "ws")
    b.python()
    b.manifest("[environments]\ncpu = []\n")
    EnvBuilder(tmp_path / "ws", "cpu").python()
    text, env = run(pytester, b.prefix)
    assert "holds no vLLM" not in text and "vllm_in_other_envs" not in env


def test_reader_takes_only_vllm_itself(workspace):
    from pytest_vllm_env.facts.env import installed_vllm

    envs = workspace / ".pixi" / "envs"
    assert installed_vllm(envs / "gpu") == "0.26.0"
    assert installed_vllm(envs / "conda") == "0.33.0"
    assert installed_vllm(envs / "cpu") is None
    assert installed_vllm(envs / "never") is None  # not installed
    # ".." (a name pixi refuses) would be .pixi itself: never read as an env
    assert "default" in env_names(workspace) and ".." in env_names(workspace)
    env = PixiEnv.read(envs / "default", name="default", manifest=workspace / "pixi.toml")
    assert env.vllm_in_other_envs == {"conda": "0.33.0", "gpu": "0.26.0"}


def env_names(workspace: Path) -> list[str]:
    from pytest_vllm_env.readers.pixi import load_manifest

    return list(load_manifest(workspace / "pixi.toml").environments())
