"""Measure which ``--gpu-name`` targets real ptxas binaries accept, for tables/ptxas.py.

    .venv/bin/python scripts/measure_ptxas.py            # Triton 3.2.0 ... 3.9.0 and CUDA wheels
    .venv/bin/python scripts/measure_ptxas.py triton==3.6.0 nvidia-cuda-nvcc==13.0.88

Each wheel is downloaded once into the suite's cache (fixtures/downloads.py, never the repo),
unpacked, and every ptxas it holds (Triton: backends/nvidia/bin/ptxas and ptxas-blackwell;
nvidia-cuda-nvcc: bin/ptxas) is asked ``--version`` and then to assemble a one-instruction
kernel for each target, written as Triton writes it (backends/nvidia/compiler.py: make_ptx puts
``.version`` = ptx_get_version(ptxas release) and ``.target sm_XX[a]``; make_cubin runs
``ptxas --gpu-name=sm_XX[a]``). Prints one line per (binary, target): ok, or ptxas's refusal.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures import downloads  # noqa: E402

DEFAULT = (
    "triton==3.2.0", "triton==3.3.1", "triton==3.4.0", "triton==3.5.1", "triton==3.6.0",
    "triton==3.9.0", "nvidia-cuda-nvcc-cu12==12.4.131", "nvidia-cuda-nvcc-cu12==12.8.93",
    "nvidia-cuda-nvcc-cu12==12.9.86", "nvidia-cuda-nvcc==13.0.88", "nvidia-cuda-nvcc==13.5.37",
)  # fmt: skip
TARGETS = (
    "sm_70", "sm_75", "sm_80", "sm_86", "sm_87", "sm_88", "sm_89", "sm_90", "sm_90a", "sm_100",
    "sm_100a", "sm_100f", "sm_101a", "sm_103a", "sm_110a", "sm_120", "sm_120a", "sm_120f",
    "sm_121a",
)  # fmt: skip


def ptx_isa(release: str) -> int:
    """Triton's ptx_get_version (backends/nvidia/compiler.py, 3.9.0): the .version it writes."""
    major, minor = (int(p) for p in release.split(".")[:2])
    if major == 12:
        return 80 + minor if minor < 6 else 80 + minor - 1
    if major >= 13:
        return 90 + (major - 13) * 10 + minor
    return 70 + minor


def measure(ptxas: Path) -> tuple[str, dict[str, str]]:
    out = subprocess.run([ptxas, "--version"], capture_output=True, text=True, timeout=60)
    release = re.search(r"release (\d+\.\d+)", out.stdout).group(1)
    isa = ptx_isa(release)
    results: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for target in TARGETS:
            src = Path(tmp) / f"{target}.ptx"
            src.write_text(
                f".version {isa // 10}.{isa % 10}\n.target {target}\n.address_size 64\n\n"
                ".visible .entry k()\n{\n\tret;\n}\n"
            )
            run = subprocess.run(
                [ptxas, f"--gpu-name={target}", src, "-o", src.with_suffix(".o")],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            last = (run.stderr.strip().splitlines() or ["?"])[-1]
            results[target] = "ok" if run.returncode == 0 else last
    return release, results


def main(argv: list[str]) -> int:
    for requirement in argv or DEFAULT:
        root = downloads.unpacked(requirement)
        for ptxas in sorted(p for p in root.rglob("ptxas*") if p.is_file()):
            release, results = measure(ptxas)
            print(f"{requirement} {ptxas.relative_to(root)}: CUDA {release}")
            for target, result in results.items():
                print(f"  {target:8} {result}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
