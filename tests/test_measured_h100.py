"""Round 11a on an H100 (docs/gpu-runs.md): what the driver did, held against what our rules
predict for the very same inputs. ``fixtures/measured/driver_h100.json`` is the record (the raw
output of ``scripts/device/driver_layer.sh``); each test feeds one recorded input to the table
or check that models it and asserts the recorded outcome, so a change to a rule that the real
driver contradicts fails here, without a GPU."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pytest_vllm_env.checks import driver as checks
from pytest_vllm_env.checks.driver_ptx import ptx_jit
from pytest_vllm_env.facts import driver as facts
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.tables import driver as T
from pytest_vllm_env.tables.archs import parse_arch

ROOT = Path(__file__).resolve().parents[1]
MEASURED = json.loads((ROOT / "fixtures" / "measured" / "driver_h100.json").read_text())
DRIVER = MEASURED["driver"]
ENV = PixiEnv(prefix=Path("/nonexistent/env"))
PTX_FILES = ROOT / "scripts" / "device" / "driver_layer"
T_ARCH = parse_arch(MEASURED["machine"]["compute_capability"])  # sm_90


def node(option: str | None = None) -> facts.DriverSources:
    """The node as NVML and /proc reported it in round 11a (``option``: --cuda-driver)."""
    nd = facts.NodeDriver(DRIVER["nvml"], DRIVER["nvml_cuda"], "", DRIVER["proc_driver_version"],
                          "", (MEASURED["machine"]["gpu"],))  # fmt: skip
    return facts.DriverSources(option=option, node=nd)


def test_driver_table_gives_the_cuda_the_driver_reported():
    """580.159.04 -> CUDA 13.0 from our table; cuDriverGetVersion said 13000, NVML "13.0"."""
    of = T.cuda_of_driver(T.parse_driver(DRIVER["nvml"]))
    assert of is not None and of.exact
    reported = DRIVER["cuDriverGetVersion"]
    assert of.cuda == (reported // 1000, reported % 1000 // 10) == T.parse_cuda(DRIVER["nvml_cuda"])
    drv = checks.judged_driver(node())
    assert drv is not None and drv.cuda == of.cuda and drv.on_node


def _isa(result: dict) -> str:
    """The PTX ISA of a recorded module: read from the committed file where there is one (so
    the test reads what the driver read), else as the record says (written on the device)."""
    path = PTX_FILES / result["file"]
    if result["form"] == "ptx" and path.is_file():
        m = re.search(r"^\.version (\d+\.\d+)", path.read_text(), re.M)
        assert m is not None
        assert m.group(1) == result["isa"], "the record and the committed PTX disagree"
        return m.group(1)
    return result["isa"]


@pytest.mark.parametrize(
    "result", MEASURED["module_loads"]["results"], ids=lambda r: r["file"]
)  # fmt: skip
def test_ptx_jit_predicts_each_load(result):
    """Each PTX-only module the driver loaded or refused (222), eager and lazy: driver.ptx-jit
    on a binary of that one module must say the same (warning: it loads, JIT at first launch;
    failed: 222 when it loads)."""
    assert result["EAGER"] == result["LAZY"], "LAZY does not defer the refusal (measured)"
    loaded = result["EAGER"][0] == 0
    binary = facts.BinaryFacts(f"/m/{result['file']}", 13,
                               ((("ptx", result["arch"], _isa(result)),),))  # fmt: skip
    drv = checks.judged_driver(node())
    (finding,) = ptx_jit([(result["file"], binary)], [T_ARCH], drv, drv.cuda, ENV)
    if loaded:
        assert finding.outcome == "warning", finding
        assert "so it runs" in finding.summary
    else:
        assert finding.outcome == "failed", finding
        assert "CUDA_ERROR_UNSUPPORTED_PTX_VERSION" in finding.summary
        assert result["EAGER"][0] == 222 and "when it loads" in finding.summary


def test_compat_libcuda_older_than_the_kernel_driver_is_803():
    """The toolkit's compat libcuda 580.95.05 first on LD_LIBRARY_PATH over kernel module
    580.159.04: cuInit returned 803; driver.compat-libcuda predicts that very error."""
    compat = MEASURED["compat"]
    lib = facts.Libcuda("/usr/local/cuda/compat/libcuda.so.1", compat["libcuda_taken"],
                        compat["compat_version"], "LD_LIBRARY_PATH (inherited by the run)",
                        True)  # fmt: skip
    src = node()
    src.libcuda = [lib]
    finding = checks.compat_libcuda(src, checks.judged_driver(src), [T_ARCH], ENV)
    assert compat["cuInit"] == 803 and compat["cuInit_name"] in T.CUDA_ERRORS[803]
    assert finding.outcome == "failed", finding
    assert "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH" in finding.summary


def test_the_suites_verdicts_then_are_still_given():
    """What the suite said on the node (section 3 of driver_layer.txt), check by check: the
    outcomes the record holds for each case are still the rules' outcomes for its inputs."""
    cases = MEASURED["suite"]["cases"]
    node_case = {c[0]: c[1] for c in cases["node"]["checks"] if c[0] == "driver.version"}
    assert node_case == {"driver.version": "passed"}
    assert checks.driver_version(node(), checks.judged_driver(node())).outcome == "passed"
    src = node(option="550.144.03")
    drv = checks.judged_driver(src)
    assert (
        checks.driver_version(src, drv).outcome
        == dict((c[0], c[1]) for c in cases["option550"]["checks"])["driver.version"]
    )
    need = facts.CudaNeed("torch 2.11.0", 13, 0, "torch/version.py", "torch", "torch")
    (finding,) = checks.cuda_runtime([need], src, drv, ENV, [T_ARCH])
    want = [c for c in cases["option550"]["checks"] if c[0] == "driver.cuda-runtime"]
    assert {c[1] for c in want} == {finding.outcome} == {"failed"}
    assert "cudaErrorInsufficientDriver" in finding.summary
    (ok,) = checks.cuda_runtime([need], node(), checks.judged_driver(node()), ENV, [T_ARCH])
    assert ok.outcome == "passed"
