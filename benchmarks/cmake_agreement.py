"""Prediction vs real CMake for torch's CMake config inside a vLLM build: prints one line
per (seed env, torch, activation variant, CMake) and the counts of agree / differ /
not-comparable, measured in one run.

    .venv/bin/python benchmarks/cmake_agreement.py            # torch CMake families (fast)
    .venv/bin/python benchmarks/cmake_agreement.py --real     # real torch wheels (3.5 GB, cached)

The real-compiler seed (``cuda-13.0-system``) needs a CUDA toolkit at /usr/local/cuda.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures import downloads  # noqa: E402
from fixtures import torch_cmake as ft  # noqa: E402
from fixtures.cuda_envs import SYSTEM_CUDA, seed_env  # noqa: E402
from pytest_vllm_env.checks import cmake_probe as probe_checks  # noqa: E402
from pytest_vllm_env.facts import toolkit, torch_config  # noqa: E402
from pytest_vllm_env.facts.env import PixiEnv  # noqa: E402
from pytest_vllm_env.runners import cmake_probe

CMAKES = ("3.26.4", "4.1.2", "4.4.5")
VARIANTS = {
    "plain": {},
    "CUDA_INC_PATH": {"CUDA_INC_PATH": "{P}/targets/x86_64-linux"},
    "+CMAKE_ARGS": {
        "CUDA_INC_PATH": "{P}/targets/x86_64-linux",
        "CMAKE_ARGS": "-DCUDAToolkit_INCLUDE_DIR={P}/targets/x86_64-linux/include",
    },
}
SEEDS = ["nvtx-site-packages", "good-12.8", "cuda-12.9-nvtx3", "nvcc-only"]
REAL = ("2.0.1", "2.1.2", "2.4.1", "2.6.0", "2.7.1", "2.9.0")


def main() -> None:
    real = "--real" in sys.argv
    seeds = SEEDS + (["cuda-13.0-system"] if (SYSTEM_CUDA / "bin" / "nvcc").is_file() else [])
    torches = REAL if real else ft.FAMILIES
    cmakes = {
        v: downloads.unpacked(f"cmake=={v}") / "cmake" / "data" / "bin" / "cmake" for v in CMAKES
    }
    root = Path(tempfile.mkdtemp(prefix="cmake-agreement-"))
    counts: Counter[str] = Counter()
    start = time.perf_counter()
    for seed in seeds:
        for torch in torches:
            b = seed_env(root / f"{seed}-{torch}", seed)
            (ft.install_real if real else ft.install)(b, torch)
            env = PixiEnv.read(b.prefix, name="default", manifest=b.workspace / "pixi.toml")
            for name, variant in VARIANTS.items():
                for version, cmake in cmakes.items():
                    t = toolkit.read_toolkit(env)
                    t.environ.update(
                        {k: v.replace("{P}", str(b.prefix)) for k, v in variant.items()}
                    )
                    facts = torch_config.read_torch_config(env)
                    pred = torch_config.predict_config(env, t, facts, version)
                    probe = cmake_probe.run_probe(
                        t, cmake, Path(tempfile.mkdtemp(dir=root)), facts.nvtx, config=facts
                    )
                    verdict, why = probe_checks.compare_config(pred, probe)
                    counts[verdict] += 1
                    print(
                        f"{seed:19} torch {torch:6} {name:13} cmake {version:6} {verdict:14} {why}"
                    )
    total = sum(counts.values())
    print(
        f"\n{total} runs in {time.perf_counter() - start:.0f} s: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )


if __name__ == "__main__":
    main()
