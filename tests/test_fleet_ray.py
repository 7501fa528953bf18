"""``pytest-vllm-env fleet`` on Ray's own local multi-node test cluster (opt-in tier: ``fleet``).

``ray.cluster_utils.Cluster`` starts a real GCS and one raylet per node on this machine;
nodes get fake GPU resources (Ray schedules and sets ``CUDA_VISIBLE_DEVICES`` for them as for
real GPUs). Four nodes run the toolchain tier against a fixture env:

- node-a (head, no GPU): passes;
- node-b: its "image" differs: an activation script that breaks under ``set -u`` there
  (``env.activation`` fails on node-b only, the split the merge must show);
- node-c: its only GPU is held by other work (an actor), so the task pinned there with a GPU
  never starts: no answer within the timeout, reported, the rest merged;
- node-d: dies while its run is in progress (``Cluster.remove_node``): the task fails,
  reported as no report.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.envs import EnvBuilder

ray = pytest.importorskip("ray", reason="Ray not installed: pip install -e '.[fleet]'")
from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 30

ACTIVATE = """
case "${PYTEST_VLLM_ENV_NODE_NAME:-}" in
  node-b) set -u; echo "$UNSET_ON_NODE_B" ;;
  node-d) if [ -e "$CONDA_PREFIX/hang-node-d" ]; then
            echo $$ > "$CONDA_PREFIX/node-d.started"; sleep 120; fi ;;
esac
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, dict]]:
    """A 4-node local Ray cluster; yields it and the node-d handle to remove."""
    started = time.monotonic()
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "node_name": "node-a", "include_dashboard": False},
    )
    handles = {
        name: c.add_node(num_cpus=1, num_gpus=1, node_name=name)
        for name in ("node-b", "node-c", "node-d")
    }
    ray.init(address=c.address, logging_level="ERROR", log_to_driver=False)
    handles["startup_s"] = round(time.monotonic() - started, 1)
    try:
        yield c, handles
    finally:
        ray.shutdown()
        c.shutdown()


def fleet_env(tmp_path: Path) -> EnvBuilder:
    b = EnvBuilder(tmp_path / "ws")
    b.python()
    b.manifest()
    b.activate_script("node-specific.sh", ACTIVATE)
    return b


def fleet_cmd(address: str, out: Path, env: EnvBuilder, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest_vllm_env",
        "fleet",
        f"--ray-address={address}",
        f"--timeout={TIMEOUT}",
        f"--out={out}",
        *extra,
        "--",
        "--vllm-conformance",
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
        "-m",
        "toolchain",
        "-k",
        "test_env",
        f"--vllm-env={env.prefix}",
    ]


@ray.remote(num_gpus=1, num_cpus=0)
class Holder:
    """Other work holding a node's GPU."""

    def ready(self) -> bool:
        return True


def test_fleet_on_a_local_ray_cluster(cluster, tmp_path: Path):
    """One test, one cluster (two would double the start-up): first ``--gpus 0``, then the
    default (each task holds its node's GPUs) with node-c busy and node-d dying."""
    c, handles = cluster
    env = fleet_env(tmp_path)
    nodes = {n["NodeName"]: n for n in ray.nodes() if n["Alive"]}
    assert set(nodes) >= {"node-a", "node-b", "node-c", "node-d"}
    holder = Holder.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(nodes["node-c"]["NodeID"], soft=False)
    ).remote()
    ray.get(holder.ready.remote(), timeout=60)

    # 1. --gpus 0: the toolchain tier runs even where the GPU is busy; no GPU node skipped
    start = time.monotonic()
    done = subprocess.run(
        fleet_cmd(c.address, tmp_path / "zero", env, "--gpus=0", "--only-gpu-nodes"),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT + 60,
    )
    zero_s = round(time.monotonic() - start, 1)
    fleet = json.loads((tmp_path / "zero" / "fleet.json").read_text())
    names = {n["name"]: n["status"] for n in fleet["nodes"]}
    assert names == {"node-b": "failed", "node-c": "passed", "node-d": "passed"}, done.stdout
    assert done.returncode == 1

    # 2. each task holds its node's GPU: node-c never starts, node-d dies mid-run
    out = tmp_path / "out"
    (env.prefix / "hang-node-d").touch()  # (Ray workers do not see our environment)
    start = time.monotonic()
    proc = subprocess.Popen(
        fleet_cmd(c.address, out, env),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        mark = env.prefix / "node-d.started"
        while not mark.exists() and time.monotonic() - start < TIMEOUT:
            time.sleep(0.2)
        assert mark.exists(), "node-d's run never started"
        c.remove_node(handles["node-d"], allow_graceful=False)
        os.kill(int(mark.read_text()), signal.SIGKILL)  # the sleep the dead node left behind
        output, _ = proc.communicate(timeout=TIMEOUT + 90)
    finally:
        if proc.poll() is None:
            proc.kill()
        ray.kill(holder)
    seconds = round(time.monotonic() - start, 1)
    print(f"cluster start {handles['startup_s']} s; --gpus 0 run {zero_s} s; run {seconds} s")
    assert proc.returncode == 1, output
    fleet = json.loads((out / "fleet.json").read_text())
    status = {n["name"]: (n["status"], n.get("problem", "")) for n in fleet["nodes"]}
    assert status["node-a"] == ("passed", "")
    assert status["node-b"] == ("failed", "")
    assert status["node-c"][0] == "no-answer"
    assert status["node-c"][1].startswith(f"no answer within {TIMEOUT} s")
    assert status["node-d"][0] == "no-report"
    assert status["node-d"][1].startswith("the task failed: ")
    # failing and silent nodes first
    assert [n["name"] for n in fleet["nodes"]][:3] == ["node-b", "node-c", "node-d"]
    (split,) = fleet["node_specific"]
    assert (split["id"], split["failing"], split["passing"]) == (
        "env.activation",
        ["node-b"],
        ["node-a"],
    )
    bad = next(x for x in fleet["cells"] if x["node"] == "node-b" and x["outcome"] == "failed")
    assert "node-specific.sh failed when sourced" in bad["summary"]
    assert "UNSET_ON_NODE_B" in bad["summary"]
    # each report came from its node: named by the fleet, GPU held where the node has one
    reports = {p.stem: json.loads(p.read_text()) for p in (out / "reports").glob("*.json")}
    assert set(reports) == {"node-a", "node-b"}
    assert reports["node-b"]["node"]["name_source"] == "PYTEST_VLLM_ENV_NODE_NAME"
    assert reports["node-b"]["node"]["cuda_visible_devices"] == "0"  # Ray gave it the GPU
    assert reports["node-a"]["node"]["cuda_visible_devices"] is None  # no GPU on the head
    assert "FAILED    node-b" in output and "NO-ANSWER node-c" in output
    assert (out / "fleet.html").read_text().startswith("<!doctype html>")
