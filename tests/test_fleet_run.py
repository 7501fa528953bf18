"""The fleet runner's parts that need no Ray: node names, GPUs asked for, the task body (run
here as it runs on a node), and how answers, failures and silence become fleet rows. The
whole thing on a real local Ray cluster: tests/test_fleet_ray.py (opt-in ``fleet`` tier)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from fixtures.envs import EnvBuilder
from pytest_vllm_env.fleet import matrix, ray_run
from pytest_vllm_env.fleet.reports import load

ROOT = Path(__file__).resolve().parent.parent


def _node(nid: str, name: str, host: str = "vm", addr: str = "10.0.0.5", gpus: int = 0) -> dict:
    res = {"CPU": 8.0, **({"GPU": float(gpus)} if gpus else {})}
    return {
        "NodeID": nid,
        "NodeName": name,
        "NodeManagerHostname": host,
        "NodeManagerAddress": addr,
        "Alive": True,
        "Resources": res,
    }


def test_node_names():
    nodes = [
        _node("aa" * 28, "10.0.0.5", host="gpu07.cluster.example"),  # Ray's default: the IP
        _node("bb" * 28, "rack2-n4", addr="10.0.0.6"),  # ray start --node-name rack2-n4
        _node("cc" * 28, "10.0.0.7", host="dup", addr="10.0.0.7"),
        _node("dd" * 28, "10.0.0.8", host="dup", addr="10.0.0.8"),
    ]
    names = ray_run.node_names(nodes)
    assert names["aa" * 28] == "gpu07"
    assert names["bb" * 28] == "rack2-n4"
    # several raylets on one host: told apart by the start of the node id
    assert (names["cc" * 28], names["dd" * 28]) == ("dup-cccccccc", "dup-dddddddd")


def test_gpus_asked_for():
    eight = _node("a", "n", gpus=8)
    cpu = _node("b", "m")
    assert ray_run.gpus_for(eight, "all") == 8
    assert ray_run.gpus_for(eight, "1") == 1
    assert ray_run.gpus_for(eight, "0") == 0
    assert ray_run.gpus_for(cpu, "all") == 0
    assert ray_run.gpus_for(cpu, "2") == 0  # a CPU node still runs the toolchain tier


def _env(tmp_path: Path, activate: str = "") -> EnvBuilder:
    b = EnvBuilder(tmp_path / "ws")
    b.python()
    b.manifest()
    if activate:
        b.activate_script("x.sh", activate)
    return b


def _args(env: EnvBuilder) -> list[str]:
    return [
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


def test_task_body_runs_pytest_and_returns_its_report(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    env = _env(tmp_path)
    answer = ray_run.run_pytest_on_node(
        sys.executable, _args(env), {"PYTEST_VLLM_ENV_NODE_NAME": "n7"}, str(tmp_path), 120
    )
    assert answer["returncode"] == 0 and not answer["timed_out"]
    report = json.loads(answer["report"])
    assert report["node"]["name"] == "n7"
    assert {c["outcome"] for c in report["checks"]} == {"passed"}
    assert "5 passed" in answer["output_tail"]


def test_task_body_kills_a_hung_run(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    env = _env(tmp_path, "sleep 20\n")  # activation hangs (its own timeout is 30 s)
    start = time.monotonic()
    answer = ray_run.run_pytest_on_node(sys.executable, _args(env), {}, str(tmp_path), 3)
    assert time.monotonic() - start < 20
    assert answer["timed_out"] and answer["returncode"] is None and answer["report"] is None


class FakeRay:
    """``ray.get`` for :func:`ray_run._collect`: the answer, or the error a dead task gives."""

    class NodeDiedError(Exception):
        pass

    def __init__(self, answers: dict):
        self.answers = answers

    def get(self, ref):
        value = self.answers[ref]
        if isinstance(value, Exception):
            raise value
        return value


def test_answers_become_reports_or_fleet_rows(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    good = ray_run.run_pytest_on_node(
        sys.executable, _args(_env(tmp_path)), {"PYTEST_VLLM_ENV_NODE_NAME": "n1"}, None, 120
    )
    fake = FakeRay(
        {
            "n1": good,
            "n2": {
                "returncode": 4,
                "timed_out": False,
                "report": None,
                "seconds": 0.4,
                "hostname": "gpu02",
                "output_tail": "ERROR: pytest-vllm-env: /opt/env: no such directory.\n",
            },
            "n3": FakeRay.NodeDiedError("Task failed: the node running it died\nmore"),
        }
    )
    run = ray_run.FleetRun()
    for name in ("n1", "n2", "n3"):
        ray_run._collect(fake, name, name, tmp_path / "reports", run)
    assert [p.name for p in run.reports] == ["n1.json"]
    assert run.missing == [
        {
            "name": "n2",
            "status": "no-report",
            "problem": "pytest exited 4 and wrote no report (0.4 s on gpu02): "
            "ERROR: pytest-vllm-env: /opt/env: no such directory.",
        },
        {
            "name": "n3",
            "status": "no-report",
            "problem": "the task failed: NodeDiedError: Task failed: the node running it died",
        },
    ]
    silent = {"name": "n4", "status": "no-answer", "problem": "no answer within 60 s"}
    fleet = matrix.merge([load(p) for p in run.reports], [], [*run.missing, silent])
    assert [(n["name"], n["status"]) for n in fleet["nodes"]] == [
        ("n4", "no-answer"),
        ("n2", "no-report"),
        ("n3", "no-report"),
        ("n1", "passed"),
    ]
    assert fleet["exit"] == 1
    text = "\n".join(matrix.render_text(fleet))
    assert "NO-ANSWER n4: no answer within 60 s" in text
