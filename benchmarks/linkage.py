"""Cost of the loader checks (abi.needed, abi.undefined, platform.glibc) on real wheels,
measured in one run, against `ldd` where this machine has it.

    .venv/bin/python benchmarks/linkage.py

Env: torch 2.11.0's core libraries, PyPI's CUDA 13 runtime and vLLM 0.26.0's three large
extensions, laid out as site-packages (cached wheels from ``fixtures.downloads``).
Goal: the three checks together well under a second per extension once torch is read.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures import downloads  # noqa: E402
from fixtures.wheels import members  # noqa: E402
from pytest_vllm_env.facts import binaries  # noqa: E402
from pytest_vllm_env.facts.linkage import Resolver, link  # noqa: E402

CORE = re.compile(r"^torch/lib/lib(c10|c10_cuda|torch|torch_cpu|torch_cuda)\.so$")
EXT = re.compile(r"^vllm/(_C_stable_libtorch|_moe_C_stable_libtorch|vllm_flash_attn/_vllm_fa2_C)")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    torch = members(downloads.wheel("torch==2.11.0"), lambda n: bool(CORE.match(n)))
    vllm = members(downloads.wheel("vllm==0.26.0"), lambda n: bool(EXT.match(n)))
    cudart = members(
        downloads.wheel("nvidia-cuda-runtime==13.0.96"), lambda n: n.endswith(".so.13")
    )
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp)
        sp = prefix / "lib/python3.12/site-packages"
        for root in (torch, vllm, cudart):
            for f in root.rglob("*.so*"):
                dest = sp / f.relative_to(root)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.symlink_to(f)
        libs = sorted((sp / "torch/lib").glob("*.so"))
        resolver, t_res = timed(lambda: Resolver.for_env(prefix, libs, {}))
        print(
            f"Resolver.for_env (torch's closure, {len(resolver.preloaded)} sonames): {t_res:.2f} s"
        )
        for ext in sorted(sp.glob("vllm/**/*.so")):
            got, t = timed(lambda ext=ext: link(ext, resolver, binaries.TORCH_SIDE))
            missing = sorted({n for n, _ in got.missing_deep})
            line = f"{ext.relative_to(sp)}: link {t:.2f} s; needed {len(got.needed)}"
            line += f", unresolved {len(got.unresolved)}, libraries not found: {len(missing)}"
            if shutil.which("ldd"):
                out, t_ldd = timed(
                    lambda ext=ext: (
                        subprocess.run(
                            ["ldd", ext], capture_output=True, text=True, timeout=60
                        ).stdout
                    )
                )
                line += f"; ldd {t_ldd:.2f} s ({out.count('not found')} not found)"
            print(line)


if __name__ == "__main__":
    main()
