"""Speed of the binaries readers on the real torch 2.11.0 libraries, measured in one run.

    .venv/bin/python benchmarks/binaries.py

- arch listing of ``libtorch_cuda.so`` (456 MB): ours vs ``cuobjdump --list-elf`` (goal >= 20x,
  same answer);
- symbol resolution over torch's five core libraries: ours vs ``nm -D`` over the same files.
Uses the cached wheels from ``fixtures.downloads`` (downloads them on first use).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures import downloads  # noqa: E402
from fixtures.wheels import members  # noqa: E402
from pytest_vllm_env.readers import fatbin  # noqa: E402
from pytest_vllm_env.readers.elf import read_elf  # noqa: E402

CORE = ("libc10.so", "libc10_cuda.so", "libtorch.so", "libtorch_cpu.so", "libtorch_cuda.so")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    root = members(
        downloads.wheel("torch==2.11.0"),
        lambda n: n.startswith("torch/lib/") and n.rsplit("/", 1)[-1] in CORE,
    )
    lib = root / "torch/lib/libtorch_cuda.so"
    cuobjdump = next(downloads.unpacked("nvidia-cuda-cuobjdump==13.5.37").rglob("bin/cuobjdump"))

    images, ours = timed(lambda: fatbin.read_images(lib))
    proc, theirs = timed(
        lambda: subprocess.run([cuobjdump, "--list-elf", lib], capture_output=True, text=True)
    )
    tool = Counter(re.findall(r"\.(sm_\d+a?)\.cubin", proc.stdout))
    mine = Counter(i.arch.sm.rstrip("f") for i in images if i.kind == "sass")
    print(f"libtorch_cuda.so: {lib.stat().st_size / 1e6:.0f} MB, {len(images)} images")
    print(f"  ours      {ours:8.3f} s   {dict(sorted(mine.items()))}")
    print(f"  cuobjdump {theirs:8.3f} s   {dict(sorted(tool.items()))}")
    print(f"  ratio     {theirs / ours:8.1f}x   same answer: {mine == tool}")

    libs = [root / "torch/lib" / n for n in CORE]

    def ours_syms() -> set[str]:
        out: set[str] = set()
        for p in libs:
            out |= read_elf(p).defined
        return out

    def nm_syms() -> set[str]:
        out: set[str] = set()
        for p in libs:
            text = subprocess.run(
                ["nm", "-D", "--defined-only", p], capture_output=True, text=True
            ).stdout
            out |= {line.split()[-1].split("@")[0] for line in text.splitlines() if line.strip()}
        return out

    mine_s, t1 = timed(ours_syms)
    nm_s, t2 = timed(nm_syms)
    print(f"defined symbols over {len(libs)} core libs: ours {len(mine_s)}, nm -D {len(nm_s)}")
    print(f"  ours {t1:.3f} s, nm -D {t2:.3f} s, ratio {t2 / t1:.1f}x, same set: {mine_s == nm_s}")


if __name__ == "__main__":
    main()
