"""How much faster the static NVTX prediction is than the real CMake probe it stands for.

Run: ``python benchmarks/nvtx_prediction.py`` (from the repo root). Builds the seed envs of
fixtures/cuda_envs.py in a temp dir and, per seed, times ``find_cudatoolkit.predict`` (after the
toolkit facts are read) against ``cmake_probe.run_probe`` with the seed's CMake.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures.cuda_envs import SEEDS, cmake4, seed_env  # noqa: E402
from pytest_vllm_env.checks import cmake_probe as probe_checks  # noqa: E402
from pytest_vllm_env.facts import find_cudatoolkit, toolkit  # noqa: E402
from pytest_vllm_env.facts.env import PixiEnv  # noqa: E402
from pytest_vllm_env.runners import cmake_probe


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="nvtx-bench-"))
    print(f"{'seed':24} {'read facts':>10} {'predict':>9} {'cmake':>8} {'ratio':>7}  agree")
    for seed in SEEDS:
        b = seed_env(root, seed)
        start = time.perf_counter()
        env = PixiEnv.read(b.prefix, name="default", manifest=b.workspace / "pixi.toml")
        facts = toolkit.read_toolkit(env)
        torch = find_cudatoolkit.read_torch_cmake(env)
        read = time.perf_counter() - start
        cm = b.prefix / "bin" / "cmake"
        cm = cm if cm.exists() else cmake4()
        version = cmake_probe.cmake_version(cm, facts.environ) or "0"
        start = time.perf_counter()
        pred = find_cudatoolkit.predict(facts, version, torch)
        t_pred = time.perf_counter() - start
        start = time.perf_counter()
        probe = cmake_probe.run_probe(facts, cm, root / f"probe-{seed}", torch)
        t_probe = time.perf_counter() - start
        agree = not probe_checks.agree(pred, probe)
        print(
            f"{seed:24} {read * 1000:8.1f}ms {t_pred * 1000:7.2f}ms {t_probe:7.2f}s "
            f"{t_probe / max(t_pred, 1e-9):7.0f}x  {agree}"
        )


if __name__ == "__main__":
    main()
