"""Which machine a report comes from: the node section of the JSON report.

A fleet of GPU nodes runs the same suite; to read the merged result one needs, per node, its
name, its GPUs (name, compute capability, UUID), the driver and what ``CUDA_VISIBLE_DEVICES``
let the run see. Nothing here imports torch: the GPUs come from NVML, queried by the target
env's Python in a subprocess with a timeout (``probes/nvml_node.py``, ``ctypes`` only), else
from ``nvidia-smi --query-gpu``. Both list every GPU of the machine; the visible ones are
picked by ``CUDA_VISIBLE_DEVICES`` as the CUDA runtime does. A field that could not be read is
``null`` and its reason is under ``absent``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_vllm_env import proc
from pytest_vllm_env.runners.gpu import run_probe

SMI_FIELDS = ("index", "name", "compute_cap", "uuid", "driver_version")
NODE_NAME_ENV = "PYTEST_VLLM_ENV_NODE_NAME"
TIMEOUT = 20.0


def node_name(option: str | None, environ: Mapping[str, str]) -> tuple[str, str]:
    """The node's name and where it came from: ``--vllm-node-name``, else
    ``$PYTEST_VLLM_ENV_NODE_NAME`` (set by ``pytest-vllm-env fleet``, or by a Kubernetes pod
    from ``spec.nodeName``), else ``$SLURMD_NODENAME`` (set by Slurm for each task), else the
    short host name (what Slurm's ``%N`` gives)."""
    if option and option.strip():
        return option.strip(), "--vllm-node-name"
    for var in (NODE_NAME_ENV, "SLURMD_NODENAME"):
        if environ.get(var, "").strip():
            return environ[var].strip(), var
    return short_hostname(socket.gethostname()), "hostname"


def short_hostname(hostname: str) -> str:
    """``gpu07.cluster.example`` -> ``gpu07``; an IP address stays whole."""
    try:
        ipaddress.ip_address(hostname)
        return hostname
    except ValueError:
        return hostname.split(".", 1)[0] or hostname


def expand_report_path(path: str, name: str) -> str:
    """``%N`` -> the node name, ``%%`` -> ``%``, as Slurm spells per-node file names.

    ``srun`` expands ``%N`` only in its own ``--output``/``--error``/``--input`` options, not
    in the arguments of the command it runs; so ``--vllm-env-report=reports/%N.json`` reaches
    pytest as typed, and the plugin expands it (the same spelling works outside Slurm)."""
    out: list[str] = []
    i = 0
    while i < len(path):
        if path.startswith("%N", i):
            out.append(name.replace(os.sep, "_"))
            i += 2
        elif path.startswith("%%", i):
            out.append("%")
            i += 2
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


# -- GPUs ------------------------------------------------------------------------------------
def parse_smi(text: str, fields: tuple[str, ...] = SMI_FIELDS) -> list[dict[str, Any]]:
    """``nvidia-smi --query-gpu=<fields> --format=csv,noheader`` lines -> one dict per GPU.
    ``[N/A]``/``[Not Supported]`` values become absent fields with that reason."""
    gpus: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = [v.strip() for v in line.split(",")]
        if len(values) != len(fields):
            continue
        gpu: dict[str, Any] = {}
        absent: dict[str, str] = {}
        for key, value in zip(fields, values, strict=True):
            key = "compute_capability" if key == "compute_cap" else key
            if value.startswith("[") and value.endswith("]"):
                absent[key] = f"nvidia-smi says {value}"
                gpu[key] = None
            elif key == "index":
                gpu[key] = int(value) if value.isdigit() else None
            else:
                gpu[key] = value
        if absent:
            gpu["absent"] = absent
        gpus.append(gpu)
    return gpus


def query_smi(path: str | None) -> tuple[list[dict[str, Any]], str, str]:
    """The GPUs nvidia-smi lists, its driver version, and a problem ('' when it answered).

    An nvidia-smi of the 470 series refuses the whole query when it names ``compute_cap``
    (``Field "compute_cap" is not a valid field to query.``, exit 2: nvidia-smi 470.82.01 in
    NVIDIA/TensorRT-LLM#735, 470.182.03 in huggingface/candle#733, a snap's 470 nvidia-smi on
    a 580 driver in canonical/inference-snaps#89): asked again without it, the compute
    capability is then absent with that reason. NVML, tried first, has no such gap."""
    smi = proc.which("nvidia-smi", path)
    if smi is None:
        return [], "", "nvidia-smi not found on PATH"
    fields = SMI_FIELDS
    result = proc.run(
        [smi, f"--query-gpu={','.join(fields)}", "--format=csv,noheader"], timeout=TIMEOUT
    )
    no_cc = ""
    if not result.ok and "compute_cap" in result.output and not result.timed_out:
        no_cc = f"this nvidia-smi has no compute_cap field ({result.output.splitlines()[0][:200]})"
        fields = tuple(f for f in SMI_FIELDS if f != "compute_cap")
        result = proc.run(
            [smi, f"--query-gpu={','.join(fields)}", "--format=csv,noheader"], timeout=TIMEOUT
        )
    if not result.ok:
        return [], "", result.describe()
    gpus = parse_smi(result.stdout, fields)
    driver = next((g.pop("driver_version") for g in gpus if g.get("driver_version")), "")
    for gpu in gpus:
        gpu.pop("driver_version", None)
        gpu.get("absent", {}).pop("driver_version", None)
        if no_cc:
            gpu["compute_capability"] = None
            gpu.setdefault("absent", {})["compute_capability"] = no_cc
    return gpus, driver, ""


def visible(
    gpus: list[dict[str, Any]], cuda_visible_devices: str | None, device_order: str | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """The GPUs a CUDA program sees under ``CUDA_VISIBLE_DEVICES``, in its order, and notes.

    As the CUDA runtime reads it: unset means all; entries are indices or (prefixes of) GPU
    UUIDs; the list ends at the first entry that names no GPU (devices after it are hidden);
    an empty value or ``-1`` hides every GPU (CUDA C Programming Guide, "CUDA Environment
    Variables")."""
    if cuda_visible_devices is None:
        return list(gpus), []
    notes: list[str] = []
    chosen: list[dict[str, Any]] = []
    for raw in cuda_visible_devices.split(","):
        entry = raw.strip()
        match = None
        if entry.isdigit():
            match = next((g for g in gpus if g.get("index") == int(entry)), None)
        elif entry and not entry.startswith("-"):
            match = next((g for g in gpus if _uuid_matches(g.get("uuid"), entry)), None)
        if match is None:
            if entry not in ("", "-1"):
                notes.append(
                    f"CUDA_VISIBLE_DEVICES entry {entry!r} names no GPU listed here; CUDA hides "
                    "it and every entry after it"
                )
            break
        if match not in chosen:
            chosen.append(match)
    indexed = any(e.strip().isdigit() for e in cuda_visible_devices.split(","))
    names = {g.get("name") for g in gpus}
    if indexed and len(names) > 1 and device_order != "PCI_BUS_ID":
        notes.append(
            "indices are read in PCI bus order (nvidia-smi, NVML); with mixed GPUs CUDA's default "
            "order (fastest first) may differ unless CUDA_DEVICE_ORDER=PCI_BUS_ID"
        )
    return chosen, notes


def _uuid_matches(uuid: Any, entry: str) -> bool:
    """CUDA accepts a UUID as nvidia-smi prints it (``GPU-8932f937-...``) or enough of its
    start to name one GPU (``GPU-8932f937``)."""
    text = str(uuid or "")
    return bool(text) and entry.startswith("GPU-") and text.startswith(entry)


def query_nvml(
    python: str | Path | None, environ: Mapping[str, str] | None
) -> tuple[dict[str, Any], str]:
    """The NVML probe's JSON, run by ``python`` (the target env's; else ours), and a problem."""
    probe = run_probe(python or sys.executable, "nvml_node.py", env=environ, timeout=TIMEOUT)
    if probe.problem:
        return {}, probe.problem
    if not probe.data.get("nvml"):
        return probe.data, str(probe.data.get("problem") or "NVML gave no answer")
    return probe.data, ""


def gather(
    *,
    name: str,
    name_source: str,
    python: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The report's ``node`` section. Never raises: what cannot be read is said under
    ``absent``. ``environ`` is the env the suite's probes run with (its PATH finds
    nvidia-smi; its ``CUDA_VISIBLE_DEVICES`` picks the GPUs)."""
    env = dict(environ if environ is not None else os.environ)
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    node: dict[str, Any] = {
        "name": name,
        "name_source": name_source,
        "hostname": socket.gethostname(),
        "cuda_visible_devices": cvd,
        "driver_version": None,
        "cuda_driver_version": None,
        "gpus": [],
        "source": "none",
        "absent": {},
    }
    absent: dict[str, str] = node["absent"]
    if cvd is None:
        absent["cuda_visible_devices"] = "unset: every GPU of the machine is visible"
    data, nvml_problem = query_nvml(python, env)
    if not nvml_problem:
        node["source"] = "nvml"
        all_gpus = data.get("gpus") or []
        node["driver_version"] = data.get("driver_version")
        node["cuda_driver_version"] = data.get("cuda_driver_version")
        for key, why in (data.get("absent") or {}).items():
            absent[key] = why
    else:
        all_gpus, driver, smi_problem = query_smi(env.get("PATH", os.environ.get("PATH")))
        if smi_problem:
            why = f"NVML: {nvml_problem}; nvidia-smi: {smi_problem}"
            for key in ("driver_version", "cuda_driver_version", "gpus"):
                absent[key] = why
            return node
        node["source"] = "nvidia-smi"
        node["driver_version"] = driver or None
        if not driver:
            absent["driver_version"] = "nvidia-smi gave none"
        absent["cuda_driver_version"] = (
            f"NVML: {nvml_problem}; nvidia-smi --query-gpu has no field for it"
        )
    gpus, notes = visible(all_gpus, cvd, env.get("CUDA_DEVICE_ORDER"))
    for gpu in gpus:
        for key in ("name", "compute_capability", "uuid"):
            gpu.setdefault(key, None)
    node["gpus"] = gpus
    if not all_gpus:
        absent["gpus"] = f"{node['source']} lists no GPU"
    elif not gpus:
        absent["gpus"] = f"CUDA_VISIBLE_DEVICES={cvd!r} hides all {len(all_gpus)} GPU(s)"
    if notes:
        node["notes"] = notes
    return node
