"""Two GPUs of one machine as two Ray nodes, then ``pytest-vllm-env fleet`` on them.

Starts Ray's local multi-node cluster (``ray.cluster_utils.Cluster``): a head without GPUs and
one worker node per listed GPU, each raylet started with ``CUDA_VISIBLE_DEVICES`` set to its
GPU and ``num_gpus=1``, so Ray hands exactly that GPU to the tasks it runs (the task sees
``CUDA_VISIBLE_DEVICES=<its GPU>``). Node names are ``gpu<index>``. Then runs the fleet
command on it (``--only-gpu-nodes``) and shuts the cluster down; exits with the fleet's exit.

    python scripts/device/fleet_local_ray.py --gpus 0,1 --out DIR [fleet options] -- PYTEST_ARGS

Without GPUs (this project's machine) it runs the same way on fake GPU resources, which is how
the script was tried before the device run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--gpus", default="0,1", help="GPU indices, one node each (0,1)")
    parser.add_argument("--out", required=True)
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, fleet_opts = parser.parse_known_args(argv[:cut])
    pytest_args = argv[cut:]  # "--" and what follows
    from ray.cluster_utils import Cluster

    start = time.monotonic()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "num_gpus": 0, "node_name": "head"},
    )
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        for gpu in args.gpus.split(","):
            # the raylet reads CUDA_VISIBLE_DEVICES at start: this node owns GPU <gpu>
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            cluster.add_node(num_cpus=4, num_gpus=1, node_name=f"gpu{gpu}")
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved
        print(f"local Ray cluster up in {time.monotonic() - start:.1f} s: {cluster.address}")
        cmd = [
            sys.executable,
            "-m",
            "pytest_vllm_env",
            "fleet",
            f"--ray-address={cluster.address}",
            "--only-gpu-nodes",
            f"--out={args.out}",
            *fleet_opts,
            *pytest_args,
        ]
        return subprocess.run(cmd).returncode
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())
