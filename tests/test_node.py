"""The report's node section: name, GPUs, driver, CUDA_VISIBLE_DEVICES, and what is absent.

No GPU here: the GPUs come from a fake ``nvidia-smi`` that answers ``--query-gpu`` as the real
one does, and from a fake ``libnvidia-ml.so.1`` compiled with gcc that the real NVML probe
(ctypes) loads (fixtures/fake_gpus.py)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
from pathlib import Path

import pytest

from fixtures.envs import EnvBuilder
from fixtures.fake_gpus import H100, RTX5090, fake_libnvml, fake_nvidia_smi
from pytest_vllm_env.runners import node

H100_B = dict(H100, uuid="GPU-11112222-3333-4444-5555-666677778888")
# what nvidia-smi 580.159.04 prints for this query on a 2-GPU H100 node
REAL_SMI_LINES = (
    "0, NVIDIA H100 80GB HBM3, 9.0, GPU-6f1a2b3c-0000-1111-2222-333344445555, 580.159.04\n"
    "1, NVIDIA H100 80GB HBM3, 9.0, GPU-11112222-3333-4444-5555-666677778888, 580.159.04\n"
)


def _gpus(n: int = 2) -> list[dict]:
    return node.parse_smi(REAL_SMI_LINES)[:n]


def test_parse_smi_lines_and_missing_values():
    gpus = node.parse_smi(REAL_SMI_LINES + "2, NVIDIA A100, [N/A], [Not Supported], 580.1\n")
    assert [g["index"] for g in gpus] == [0, 1, 2]
    assert gpus[0]["compute_capability"] == "9.0" and gpus[0]["uuid"].startswith("GPU-6f1a")
    assert gpus[2]["uuid"] is None
    assert gpus[2]["absent"] == {
        "compute_capability": "nvidia-smi says [N/A]",
        "uuid": "nvidia-smi says [Not Supported]",
    }


@pytest.mark.parametrize(
    ("cvd", "indices", "note"),
    [
        (None, [0, 1], ""),
        ("1", [1], ""),
        ("1,0", [1, 0], ""),
        ("GPU-1111", [1], ""),  # a UUID prefix, as CUDA accepts
        ("11112222", [], "'11112222' names no GPU"),  # digits are an index, not a UUID
        ("0,7,1", [0], "'7' names no GPU"),  # CUDA stops at the first invalid entry
        ("", [], ""),
        ("-1", [], ""),
        ("MIG-abc", [], "'MIG-abc' names no GPU"),
    ],
)
def test_cuda_visible_devices_picks_gpus_as_cuda_does(cvd, indices, note):
    chosen, notes = node.visible(_gpus(), cvd)
    assert [g["index"] for g in chosen] == indices
    assert (note in " ".join(notes)) if note else not notes


def test_mixed_gpus_by_index_note_the_device_order():
    gpus = [dict(g) for g in _gpus()]
    gpus[1]["name"] = "NVIDIA GeForce RTX 5090"
    _, notes = node.visible(gpus, "1")
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in notes[0]
    assert node.visible(gpus, "1", "PCI_BUS_ID")[1] == []


def test_node_name_precedence():
    env = {"PYTEST_VLLM_ENV_NODE_NAME": "k8s-node-3", "SLURMD_NODENAME": "gpu017"}
    assert node.node_name("mine", env) == ("mine", "--vllm-node-name")
    assert node.node_name(None, env) == ("k8s-node-3", "PYTEST_VLLM_ENV_NODE_NAME")
    assert node.node_name("", {"SLURMD_NODENAME": "gpu017"}) == ("gpu017", "SLURMD_NODENAME")
    name, source = node.node_name(None, {})
    assert source == "hostname" and name == node.short_hostname(socket.gethostname())
    assert node.short_hostname("gpu07.cluster.example") == "gpu07"
    assert node.short_hostname("10.0.0.7") == "10.0.0.7"


def test_report_path_expands_percent_n():
    assert node.expand_report_path("reports/%N.json", "gpu017") == "reports/gpu017.json"
    assert node.expand_report_path("r/%N-100%%.json", "a/b") == "r/a_b-100%.json"
    assert node.expand_report_path("plain.json", "x") == "plain.json"


def _no_nvml(tmp_path: Path) -> dict[str, str]:
    """An environ whose PATH has only the given tools (no NVML library is on this box)."""
    return {"PATH": f"{tmp_path / 'bin'}{os.pathsep}/usr/bin:/bin"}


def test_gather_from_nvidia_smi_filters_by_cuda_visible_devices(tmp_path):
    fake_nvidia_smi(tmp_path / "bin", [H100, H100_B], driver="580.159.04")
    environ = {**_no_nvml(tmp_path), "CUDA_VISIBLE_DEVICES": "1"}
    info = node.gather(name="gpu017", name_source="test", environ=environ)
    assert info["source"] == "nvidia-smi"
    assert info["driver_version"] == "580.159.04"
    assert info["cuda_visible_devices"] == "1"
    assert info["gpus"] == [
        {
            "index": 1,
            "name": "NVIDIA H100 80GB HBM3",
            "compute_capability": "9.0",
            "uuid": H100_B["uuid"],
        }
    ]
    assert "libnvidia-ml.so.1" in info["absent"]["cuda_driver_version"]
    assert "no field for it" in info["absent"]["cuda_driver_version"]


def test_old_driver_without_compute_cap_field(tmp_path):
    # nvidia-smi 470.x refuses the whole query when it names compute_cap (candle#733).
    fake_nvidia_smi(tmp_path / "bin", [H100], driver="470.256.02", old_driver=True)
    info = node.gather(name="old", name_source="test", environ=_no_nvml(tmp_path))
    assert info["driver_version"] == "470.256.02"
    (gpu,) = info["gpus"]
    assert gpu["name"] == "NVIDIA H100 80GB HBM3" and gpu["compute_capability"] is None
    assert (
        'no compute_cap field (Field "compute_cap" is not a valid field'
        in (gpu["absent"]["compute_capability"])
    )


def test_no_gpu_tools_says_why(tmp_path):
    (tmp_path / "bin").mkdir()
    info = node.gather(name="cpu", name_source="test", environ=_no_nvml(tmp_path))
    assert info["source"] == "none" and info["gpus"] == []
    assert info["driver_version"] is None
    why = info["absent"]["driver_version"]
    assert "libnvidia-ml.so.1 could not be loaded" in why and "nvidia-smi not found" in why
    assert info["absent"]["cuda_visible_devices"].startswith("unset")


needs_cc = pytest.mark.skipif(
    not (shutil.which("gcc") or shutil.which("cc")),
    reason="no C compiler to build the fake libnvidia-ml.so.1",
)


@needs_cc
def test_nvml_probe_reads_a_driver_library(tmp_path):
    lib = fake_libnvml(tmp_path / "nvml", [H100, RTX5090], driver="575.57.08", cuda=12090)
    environ = {**_no_nvml(tmp_path), "LD_LIBRARY_PATH": str(lib.parent)}
    info = node.gather(name="mixed", name_source="test", environ=environ)
    assert info["source"] == "nvml"
    assert (info["driver_version"], info["cuda_driver_version"]) == ("575.57.08", "12.9")
    assert [(g["name"], g["compute_capability"], g["uuid"]) for g in info["gpus"]] == [
        (H100["name"], "9.0", H100["uuid"]),
        (RTX5090["name"], "12.0", RTX5090["uuid"]),
    ]
    assert set(info["absent"]) == {"cuda_visible_devices"}


@needs_cc
def test_nvml_unreadable_uuid_is_absent_with_the_nvml_reason(tmp_path):
    lib = fake_libnvml(tmp_path / "nvml", [H100], uuid_unreadable=True)
    environ = {**_no_nvml(tmp_path), "LD_LIBRARY_PATH": str(lib.parent)}
    (gpu,) = node.gather(name="n", name_source="test", environ=environ)["gpus"]
    assert gpu["uuid"] is None
    assert gpu["absent"]["uuid"] == "nvmlDeviceGetUUID: NVML returned 4 (no permission)"


@needs_cc
def test_nvml_driver_not_loaded_falls_back_to_nvidia_smi(tmp_path):
    lib = fake_libnvml(tmp_path / "nvml", [H100], init_rc=9)
    fake_nvidia_smi(tmp_path / "bin", [H100])
    environ = {**_no_nvml(tmp_path), "LD_LIBRARY_PATH": str(lib.parent)}
    info = node.gather(name="n", name_source="test", environ=environ)
    assert info["source"] == "nvidia-smi" and len(info["gpus"]) == 1
    assert "nvmlInit: NVML returned 9 (driver not loaded)" in info["absent"]["cuda_driver_version"]


def test_a_hung_nvml_probe_is_killed(tmp_path, monkeypatch):
    hang = tmp_path / "hangpy"
    hang.write_text("#!/bin/sh\nsleep 30\n")
    hang.chmod(hang.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(node, "TIMEOUT", 1.0)
    fake_nvidia_smi(tmp_path / "bin", [H100])
    info = node.gather(name="n", name_source="test", python=hang, environ=_no_nvml(tmp_path))
    assert info["source"] == "nvidia-smi"
    assert "was killed" in info["absent"]["cuda_driver_version"]


# -- in the report ---------------------------------------------------------------------------
def _suite(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(
        "--vllm-conformance", "-p", "no:randomly", "-m", "toolchain", "-k", "test_env", *args
    )


def test_report_has_node_section_and_percent_n_path(
    pytester, env_builder: EnvBuilder, tmp_path, monkeypatch
):
    env_builder.python()
    fake_nvidia_smi(tmp_path / "smi", [H100, H100_B])
    monkeypatch.setenv("PATH", f"{tmp_path / 'smi'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("SLURMD_NODENAME", "gpu017")
    _suite(pytester, "--vllm-env", str(env_builder.prefix), "--vllm-env-report=out/%N.json")
    data = json.loads((pytester.path / "out" / "gpu017.json").read_text())
    assert data["schema"] == 2 and data["created"].endswith("Z")
    info = data["node"]
    assert (info["name"], info["name_source"]) == ("gpu017", "SLURMD_NODENAME")
    assert info["hostname"] == socket.gethostname()
    assert [g["uuid"] for g in info["gpus"]] == [H100["uuid"]]
    assert info["driver_version"] == "580.159.04"
    # the option wins over the environment
    _suite(
        pytester,
        "--vllm-env",
        str(env_builder.prefix),
        "--vllm-node-name=rack4-n2",
        "--vllm-env-report=out/%N.json",
    )
    assert json.loads((pytester.path / "out" / "rack4-n2.json").read_text())["node"][
        "name_source"
    ] == ("--vllm-node-name")


def test_several_envs_label_each_check(pytester, env_builder: EnvBuilder):
    env_builder.python()
    other = EnvBuilder(env_builder.workspace, "cuda")
    other.python()
    env_builder.manifest()
    report = pytester.path / "r.json"
    _suite(
        pytester,
        "--vllm-env",
        str(env_builder.prefix),
        "--vllm-env",
        str(other.prefix),
        "--vllm-env-report",
        str(report),
    )
    checks = json.loads(report.read_text())["checks"]
    assert {c["env"] for c in checks} == {"default", "cuda"}
    assert all(f"[{c['env']}]" in c["test"] for c in checks)
