"""What the gpu tier's probes found, as data: a probe run's printed result, the GPUs it saw,
and the GPU images of the env's binaries.

:mod:`pytest_vllm_env.runners.gpu` runs the probes and fills :class:`ProbeResult`; the checks
(:mod:`pytest_vllm_env.checks.gpu_device`, ``gpu_vllm_*``, ``xformers_torch``, ``build``)
judge it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_vllm_env.readers.fatbin import FatbinImage
from pytest_vllm_env.tables.archs import Arch, parse_arch


@dataclass(frozen=True)
class ProbeResult:
    """What one probe run printed: ``data`` is its JSON line, ``problem`` why there is none.

    ``before`` / ``after`` are the tails of the (stdout+stderr, in write order) output
    before and after that line: vLLM's shutdown messages land in ``after``."""

    script: str
    data: dict[str, Any] = field(default_factory=dict)
    problem: str = ""
    output_tail: str = ""
    seconds: float = 0.0
    returncode: int | None = None
    timed_out: bool = False
    timeout: float = 0.0
    before: str = ""
    after: str = ""


# An env without a Python: its probes cannot run (and `None` is no command to suggest).
NO_PYTHON = "the env has no Python (no bin/python or bin/python3)"
NO_PYTHON_FIX = "give the env a Python first (env.python names the line), then install torch in it"


@dataclass(frozen=True)
class BinaryImages:
    """A binary's GPU images (``fatbin.read_images``), or why they could not be read."""

    label: str
    images: list[FatbinImage] | None
    error: str = ""


def visible_gpus(probe: ProbeResult, smi_archs: Sequence[Arch] = ()) -> list[tuple[str, Arch]]:
    """``(name, compute capability)`` of each visible GPU: torch's view when its probe saw
    devices (what vLLM will use), else nvidia-smi's."""
    found: list[tuple[str, Arch]] = []
    for dev in probe.data.get("devices") or []:
        try:
            found.append((str(dev.get("name", "GPU")), parse_arch(str(dev["cc"]))))
        except (KeyError, ValueError, AttributeError):
            continue
    return found or [("GPU (nvidia-smi)", a) for a in smi_archs]
