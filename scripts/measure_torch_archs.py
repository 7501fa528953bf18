"""Measure torch wheels' GPU kernels for pytest_vllm_env/tables/torch_archs.py.

    .venv/bin/python scripts/measure_torch_archs.py 2.9.1 2.11.0
    .venv/bin/python scripts/measure_torch_archs.py https://download.pytorch.org/whl/cu129/torch-2.8.0%2Bcu129-cp312-cp312-manylinux_2_28_x86_64.whl

A version means PyPI's cp312 manylinux x86_64 wheel; a URL any wheel (the PyTorch index is
not reachable from this workplace's machines; from one that reaches it, this measures the
documented rows). Only ``torch/lib/libtorch_cuda.so`` is fetched (HTTP range reads), listed
with the fatbin reader, and printed as a table row with the wheel's ``torch/version.py``.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures import torch_wheels  # noqa: E402
from pytest_vllm_env.tables.archs import parse_arch  # noqa: E402


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    for item in argv:
        start = time.perf_counter()
        url = item if "://" in item else torch_wheels.pypi_wheel_url("torch", item)
        found = torch_wheels.measure(url)
        version = re.search(r"__version__ = '([^']+)'", found["version_py"])
        print(
            f"{version.group(1) if version else item}: "
            f"SASS {', '.join(sorted(found['sass'], key=parse_arch))}; "
            f"PTX {', '.join(found['ptx']) or 'none'}; {found['images']} images; fetched "
            f"{found['fetched_mb']} of {found['wheel_mb']} MB in "
            f"{time.perf_counter() - start:.1f} s (cached after the first run)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
