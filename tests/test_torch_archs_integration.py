"""The measured rows of the torch arch table against PyPI's real wheels (integration tier).

Each row is re-measured: libtorch_cuda.so is fetched from the wheel with HTTP range reads
(about 75% of a 0.5-0.9 GB wheel), listed with the fatbin reader, and compared. The listing
is cached per wheel URL and fatbin.py version (fixtures/torch_wheels.py).
"""

from __future__ import annotations

import re

import pytest

from pytest_vllm_env.tables import torch_archs

MEASURED = [r for r in torch_archs.ROWS if r.measured]


@pytest.mark.integration
@pytest.mark.parametrize("row", MEASURED, ids=[f"{r.measured}+{r.variant}" for r in MEASURED])
def test_measured_row_matches_the_real_wheel(row: torch_archs.TorchArchs):
    from fixtures import torch_wheels

    url = torch_wheels.pypi_wheel_url("torch", row.measured)
    found = torch_wheels.measure(url)
    version = re.search(r"__version__ = '([^']+)'", found["version_py"]).group(1)
    assert version == f"{row.measured}+{row.variant}", "PyPI's variant for this release"
    assert tuple(found["sass"]) == tuple(sorted(row.sass)), found
    assert tuple(found["ptx"]) == row.ptx, found
    assert found["fetched_mb"] < found["wheel_mb"]  # only the one member came over
