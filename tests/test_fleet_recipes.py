"""The Slurm and Kubernetes recipes of docs/fleet.md, run as far as this machine allows.

Slurm: the committed batch script runs under bash with a fake ``srun`` (fixtures/fake_slurm.py:
one task per simulated node, ``SLURMD_NODENAME`` set, ``%N`` expanded in ``--output`` only,
as srun does) on three simulated nodes, each with its own fake ``nvidia-smi``. Kubernetes:
the Job's structure is checked (Indexed, one pod per node, node name from the downward API,
the reports volume), then its container command runs here once per simulated node with the
pod's paths mapped onto temp dirs, and the merge Job's command merges what they wrote.

The env is the CUDA 12.4 seed (real PyPI ptxas): on the RTX 5090 node ``cuda.arch-supported``
fails, on the H100 nodes it passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fixtures.cuda_envs import seed_env
from fixtures.fake_gpus import H100, RTX5090, fake_nvidia_smi
from fixtures.fake_slurm import fake_srun

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "docs" / "fleet"
NODES = {
    "gpu-a01": ([H100, dict(H100, uuid="GPU-aaaa0000-1111-2222-3333-444455556666")], "580.159.04"),
    "gpu-a02": ([H100], "580.159.04"),
    "gpu-b01": ([RTX5090], "575.57.08"),
}


@pytest.fixture(scope="module")
def seeds_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "cuda-seeds"
    root.mkdir(exist_ok=True)
    return root


def node_images(root: Path) -> Path:
    """``root/<node>/bin/nvidia-smi`` for each simulated node."""
    for name, (gpus, driver) in NODES.items():
        fake_nvidia_smi(root / name / "bin", gpus, driver=driver)
    return root


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "PYTEST_VLLM"))}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    # `python` and `pytest-vllm-env` are the ones installed with this package
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def check_fleet(fleet: dict) -> None:
    assert fleet["exit"] == 1
    assert [(n["name"], n["status"]) for n in fleet["nodes"]] == [
        ("gpu-b01", "failed"),
        ("gpu-a01", "passed"),
        ("gpu-a02", "passed"),
    ]
    assert [len(n["gpus"]) for n in fleet["nodes"]] == [1, 2, 1]
    (split,) = fleet["node_specific"]
    assert split["id"] == "cuda.arch-supported"
    differs = {d["fact"]: (d["failing"], d["passing"]) for d in split["differs"]}
    assert differs["compute_capability"] == (["12.0"], ["9.0"])


def test_docs_show_the_recipes_verbatim():
    doc = (ROOT / "docs" / "fleet.md").read_text()
    for name in ("slurm.sbatch", "k8s-job.yaml", "k8s-merge.yaml"):
        text = (RECIPES / name).read_text()
        assert text in doc, f"docs/fleet.md does not hold docs/fleet/{name} as it is"


def test_slurm_batch_script_with_fake_srun(seeds_root: Path, tmp_path: Path):
    env_prefix = seed_env(seeds_root, "cuda-12.4").prefix
    fake_srun(tmp_path / "slurm-bin")
    env = base_env()
    env.update(
        PATH=f"{tmp_path / 'slurm-bin'}{os.pathsep}{env['PATH']}",
        SLURM_JOB_ID="4242",
        SLURM_JOB_NUM_NODES="3",
        FAKE_SLURM_NODES=",".join(NODES),
        FAKE_SLURM_ROOT=str(node_images(tmp_path / "nodes")),
        VLLM_ENV=str(env_prefix),
        TIER="toolchain",
    )
    done = subprocess.run(
        ["bash", str(RECIPES / "slurm.sbatch")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = tmp_path / "vllm-env-fleet" / "4242"
    assert done.returncode == 1, done.stdout + done.stderr  # merge's: a node failed
    assert "srun exited 1 (the highest exit status of the nodes' runs)" in done.stdout
    assert sorted(p.name for p in (out / "reports").iterdir()) == [f"{n}.json" for n in NODES]
    assert sorted(p.name for p in (out / "logs").iterdir()) == [f"{n}.log" for n in NODES]
    assert "1 failed" in (out / "logs" / "gpu-b01.log").read_text()
    report = json.loads((out / "reports" / "gpu-a01.json").read_text())
    assert report["node"]["name_source"] == "SLURMD_NODENAME"
    check_fleet(json.loads((out / "fleet.json").read_text()))
    assert (out / "fleet.html").exists()
    assert "  cuda.arch-supported: fails on gpu-b01; passes on gpu-a01, gpu-a02" in done.stdout


def test_kubernetes_job_structure():
    job = yaml.safe_load((RECIPES / "k8s-job.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] >= 2
    assert spec["backoffLimitPerIndex"] == 0
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    labels = spec["template"]["metadata"]["labels"]
    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    # one pod per node: no two pods of this Job on one host
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= labels.items()
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    source = env["PYTEST_VLLM_ENV_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert source == "spec.nodeName"
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    (mount,) = container["volumeMounts"]
    (volume,) = pod["volumes"]
    assert mount["name"] == volume["name"] and "persistentVolumeClaim" in volume
    script = container["args"][0]
    assert f"--vllm-env-report={mount['mountPath']}/%N.json" in script
    assert container["command"] == ["/bin/sh", "-c"]
    merge = yaml.safe_load((RECIPES / "k8s-merge.yaml").read_text())
    mpod = merge["spec"]["template"]["spec"]
    assert mpod["volumes"][0]["persistentVolumeClaim"] == volume["persistentVolumeClaim"]
    assert mpod["containers"][0]["volumeMounts"][0]["mountPath"] == mount["mountPath"]


def _pod_script(path: Path, mapping: dict[str, str]) -> str:
    """The container's shell script with the pod's paths mapped onto this machine's."""
    doc = yaml.safe_load(path.read_text())
    script = doc["spec"]["template"]["spec"]["containers"][0]["args"][0]
    for pod_path, here in mapping.items():
        script = script.replace(pod_path, here)
    return script


def test_kubernetes_container_commands_run_here(seeds_root: Path, tmp_path: Path):
    env_prefix = seed_env(seeds_root, "cuda-12.4").prefix
    images = node_images(tmp_path / "nodes")
    volume = tmp_path / "volume"
    volume.mkdir()
    mapping = {"/opt/env": str(env_prefix), "/reports": str(volume)}
    script = _pod_script(RECIPES / "k8s-job.yaml", mapping)
    for index, name in enumerate(NODES):
        env = base_env()
        env.update(
            PATH=f"{images / name / 'bin'}{os.pathsep}{env['PATH']}",
            PYTEST_VLLM_ENV_NODE_NAME=name,  # the downward API's spec.nodeName
            JOB_COMPLETION_INDEX=str(index),
        )
        env_args = ["-m", "toolchain"]  # no GPU here: the toolchain tier, not gpu
        pod = script.replace("-m gpu", " ".join(env_args))
        done = subprocess.run(
            ["/bin/sh", "-c", pod], env=env, cwd=tmp_path, capture_output=True, text=True
        )
        # a node whose checks fail still completes its pod: the report says what failed
        assert done.returncode == 0, done.stdout + done.stderr
        rc = 1 if name == "gpu-b01" else 0
        assert f"pytest exited {rc} on node {name}" in done.stdout
    merge = _pod_script(RECIPES / "k8s-merge.yaml", mapping)
    done = subprocess.run(
        ["/bin/sh", "-c", merge], env=base_env(), cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 1, done.stdout + done.stderr
    check_fleet(json.loads((volume / "fleet" / "fleet.json").read_text()))
    assert (volume / "fleet" / "fleet.html").exists()
