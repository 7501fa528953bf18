"""Run the suite on every node of a Ray cluster and gather the reports.

Platform teams already run Ray on their GPU nodes; this uses it as it is, no scheduler of
our own. One task per alive node, pinned there with ``NodeAffinitySchedulingStrategy``
(``soft=False``: never run elsewhere) and holding the node's GPUs (``num_gpus``; 0 with
``--gpus 0`` for the toolchain tier, or on CPU-only nodes). Each task runs pytest with
``--vllm-env-report`` in a subprocess and returns the report's text; a node that does not
answer within the timeout, or whose task dies, is reported, and the rest are merged.

Ray is optional (``pip install 'pytest-vllm-env[fleet]'``); it is imported only here, and
only when the ``fleet`` command runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_vllm_env.runners.node import NODE_NAME_ENV, short_hostname

INSTALL_HINT = (
    "the fleet command needs Ray: pip install 'pytest-vllm-env[fleet]' (or pip install ray, "
    "the version your cluster runs)"
)
CANCEL_GRACE = 10.0


class FleetError(Exception):
    """The fleet could not be run at all (no Ray, no cluster): a usage error."""


@dataclass
class FleetRun:
    """What came back: report files written, and the nodes that gave none."""

    reports: list[Path] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise FleetError(f"{INSTALL_HINT} ({exc})") from None
    return ray


def node_names(nodes: list[dict[str, Any]]) -> dict[str, str]:
    """Ray node id -> the name its report and row carry: ``ray start --node-name`` when it
    was given (Ray's default is the node's IP), else the short host name; names that would
    repeat (several raylets on one host) get the start of the node id."""
    base: dict[str, str] = {}
    for n in nodes:
        given = str(n.get("NodeName") or "")
        if given and given != n.get("NodeManagerAddress"):
            base[n["NodeID"]] = given
        else:
            host = str(n.get("NodeManagerHostname") or n.get("NodeManagerAddress") or "node")
            base[n["NodeID"]] = short_hostname(host)
    counts: dict[str, int] = {}
    for name in base.values():
        counts[name] = counts.get(name, 0) + 1
    return {nid: (f"{name}-{nid[:8]}" if counts[name] > 1 else name) for nid, name in base.items()}


def gpus_for(node: dict[str, Any], wanted: str) -> int:
    """GPUs the task on ``node`` asks for: ``all`` of the node's, or a number (at most the
    node's: a CPU-only node gets 0, so the toolchain tier still runs there)."""
    have = int(node.get("Resources", {}).get("GPU", 0) or 0)
    if wanted == "all":
        return have
    return min(int(wanted), have)


def run_pytest_on_node(
    python: str | None,
    pytest_args: list[str],
    env_add: dict[str, str],
    cwd: str | None,
    timeout: float,
) -> dict[str, Any]:
    """The task body, run on the node: ``python -m pytest`` (default: the Ray worker's own
    interpreter) in its own process group with a timeout, killed with its group when the
    timeout passes or the task is cancelled. Returns the report's text (None when pytest
    wrote none) and the tail of its output."""
    import socket

    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vllm-env-fleet-") as tmp:
        report = Path(tmp) / "report.json"
        full = [python or sys.executable, "-m", "pytest", *pytest_args]
        full.append(f"--vllm-env-report={report}")
        workdir = cwd if cwd and os.path.isdir(cwd) else tmp
        log = Path(tmp) / "output.txt"
        with open(log, "w+b") as out:
            child = subprocess.Popen(
                full,
                env={**os.environ, **env_add},
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            timed_out = False
            try:
                returncode = child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                returncode = None
            finally:  # also on ray.cancel (KeyboardInterrupt in the task)
                if child.poll() is None:
                    try:
                        os.killpg(child.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    child.wait()
            out.seek(0)
            tail = out.read()[-4000:].decode("utf-8", "replace")
        text = report.read_text(encoding="utf-8", errors="replace") if report.exists() else None
    return {
        "hostname": socket.gethostname(),
        "returncode": returncode,
        "timed_out": timed_out,
        "seconds": round(time.monotonic() - start, 1),
        "report": text,
        "output_tail": tail,
        "cwd": workdir,
    }


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the Ray worker dies (a force-cancel, the
    OOM killer, a node drained), so no pytest outlives its task holding the GPU. Linux only;
    elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _reachable(address: str | None, timeout: float = 10.0) -> None:
    """Fail fast on a cluster address nothing answers at: ``ray.init`` keeps retrying an
    unreachable GCS for many minutes (seen: over 10 minutes for 127.0.0.1:1, Ray 2.60.0)."""
    if not address or address == "auto":
        return
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return
    import socket

    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise FleetError(
            f"nothing answers at the Ray cluster address {address}: "
            f"{exc.strerror or exc} (is the head node up? `ray status` there)"
        ) from None


def run(
    address: str | None,
    pytest_args: list[str],
    reports_dir: Path,
    *,
    gpus: str = "all",
    timeout: float = 3600.0,
    python: str | None = None,
    cwd: str | None = None,
    only_gpu_nodes: bool = False,
) -> FleetRun:
    """Run ``pytest <pytest_args>`` once on every alive node; write each report to
    ``reports_dir/<node>.json``. Nodes that answer without a report, whose task failed, or
    that did not answer within ``timeout`` seconds (counted from the start) are returned in
    ``missing`` with the reason."""
    ray = import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    started = time.monotonic()
    _reachable(address)
    try:
        ray.init(address=address or "auto", logging_level="ERROR", log_to_driver=False)
    except Exception as exc:  # ConnectionError, ValueError (no cluster found), ...
        raise FleetError(
            f"cannot connect to the Ray cluster at {address or 'auto'}: {exc}"
        ) from None
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        names = node_names(nodes)
        task = ray.remote(run_pytest_on_node)
        result = FleetRun()
        pending: dict[Any, str] = {}
        for n in sorted(nodes, key=lambda n: names[n["NodeID"]]):
            name = names[n["NodeID"]]
            num_gpus = gpus_for(n, gpus)
            if only_gpu_nodes and not int(n.get("Resources", {}).get("GPU", 0) or 0):
                continue
            ref = task.options(
                # soft=False: a node that cannot run it must not hand it to another node
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                num_gpus=num_gpus,
                # The run is short and mostly waits on probes; CPU slots busy with other
                # work must not keep a node from answering.
                num_cpus=0,
                max_retries=0,
            ).remote(python, list(pytest_args), {NODE_NAME_ENV: name}, cwd or os.getcwd(), timeout)
            pending[ref] = name
        left = list(pending)
        reports_dir.mkdir(parents=True, exist_ok=True)
        while left:
            wait_for = max(0.0, timeout - (time.monotonic() - started))
            ready, left = ray.wait(left, num_returns=1, timeout=wait_for)
            if not ready:
                break
            _collect(ray, ready[0], pending[ready[0]], reports_dir, result)
        for ref in left:
            name = pending[ref]
            result.missing.append(
                {
                    "name": name,
                    "status": "no-answer",
                    "problem": f"no answer within {timeout:.0f} s (the node is busy, hung or "
                    "unreachable; its task was cancelled)",
                }
            )
            ray.cancel(ref)
        if left:  # give cancelled tasks a moment to kill their pytest, then force
            done, still = ray.wait(left, num_returns=len(left), timeout=CANCEL_GRACE)
            for ref in still:
                ray.cancel(ref, force=True)
        result.seconds = round(time.monotonic() - started, 1)
        return result
    finally:
        ray.shutdown()


def _collect(ray: Any, ref: Any, name: str, reports_dir: Path, result: FleetRun) -> None:
    try:
        answer = ray.get(ref)
    except Exception as exc:  # the task or its node died: RayTaskError, NodeDiedError...
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        result.missing.append(
            {
                "name": name,
                "status": "no-report",
                "problem": f"the task failed: {type(exc).__name__}: {first}",
            }
        )
        return
    if answer.get("report"):
        reports_dir.mkdir(parents=True, exist_ok=True)
        path = reports_dir / f"{name}.json"
        path.write_text(answer["report"], encoding="utf-8")
        result.reports.append(path)
        return
    if answer.get("timed_out"):
        why = "pytest did not finish in time and was killed"
    else:
        why = f"pytest exited {answer.get('returncode')} and wrote no report"
    tail = [ln for ln in (answer.get("output_tail") or "").splitlines() if ln.strip()][-3:]
    result.missing.append(
        {
            "name": name,
            "status": "no-report",
            "problem": f"{why} ({answer.get('seconds')} s on {answer.get('hostname')})"
            + (": " + " | ".join(t[:200] for t in tail) if tail else ""),
        }
    )
