"""What a real CMake run of the probe project printed, as data: the ``CUDA::`` targets it
made, where it stopped, the errors at generate time.

A reader: the output of :mod:`pytest_vllm_env.runners.cmake_probe`'s run in, a
:class:`ProbeResult` out. The errors are classified into the same signatures the static
prediction uses (:mod:`pytest_vllm_env.facts.torch_config`: ``caffe2-cuda``, ``cudatoolkit``,
``compiler-id``, ``nvtoolsext-fatal``, ``link:CUDA::X``, ``notfound:VAR``), so that the
verdicts (:mod:`pytest_vllm_env.checks.cmake_probe`) can compare the two in outcome and cause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MARK = "VLLM_ENV_PROBE"  # the probe project prints its findings on lines that start with it


@dataclass
class ProbeResult:
    """What the real CMake did."""

    cmake: str
    ran: bool
    ok: bool = False  # configure + generate succeeded
    found: bool = False
    version: str = ""
    include_dirs: list[str] = field(default_factory=list)
    targets: dict[str, str] = field(default_factory=dict)
    torch_targets: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    output: str = ""
    skipped_why: str = ""
    mode: str = "cudatoolkit"  # "vllm": find_package(Torch) and vLLM's links
    configured: bool = False  # "-- Configuring done" (errors after it are generate-time)
    stop: str | None = None  # signature of the configure-time error CMake stopped at
    generate: list[str] = field(default_factory=list)  # signatures of generate-time errors
    torch_found: bool = False  # find_package(Torch) returned: the CUDA:: targets were printed

    @property
    def target_names(self) -> set[str]:
        return set(self.targets)


def parse_cmake_version(stdout: str) -> str | None:
    """``3.31.6`` from ``cmake --version``."""
    match = re.search(r"cmake version (\d+\.\d+\.\d+)", stdout)
    return match.group(1) if match else None


def read_output(probe: ProbeResult, out: str) -> None:
    """Fill ``probe`` from the output of a CMake run that finished: configured or not, where it
    stopped, the ``MARK`` lines the project printed, the ``CMake Error`` blocks."""
    probe.configured = "-- Configuring done" in out
    probe.stop, probe.generate = classify(out)
    for line in out.splitlines():
        match = re.search(rf"{MARK} (\w+)=(.*)$", line)
        if not match:
            continue
        key, value = match.group(1), match.group(2).strip()
        if key == "found":
            probe.found = value.upper() in ("TRUE", "ON", "1", "YES")
        elif key == "version":
            probe.version = value
        elif key == "include":
            probe.include_dirs = [v for v in value.split(";") if v]
        elif key == "target":
            name, _, loc = value.partition(" ")
            probe.targets[name] = loc
        elif key == "torch_target":
            probe.torch_targets.append(value)
        elif key == "torch_found":
            probe.torch_found = value.upper() in ("TRUE", "ON", "1", "YES")
    probe.errors = _errors(out)


def _errors(output: str) -> list[str]:
    errors = []
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("CMake Error") or "Could NOT find CUDAToolkit" in line:
            chunk = " ".join(x.strip() for x in lines[i : i + 4] if x.strip())
            errors.append(chunk[:400])
    return errors


# Configure-time errors, in the order torch's config can meet them (facts/torch_config.py).
STOP_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("cmake-minimum", re.compile(r"CMake [\d.]+ or higher is required")),
    ("caffe2-cuda", re.compile(r"uses CUDA but I cannot find the CUDA")),
    (
        "compiler-id",
        re.compile(
            r"CMakeDetermineCompilerId|Failed to detect a default CUDA architecture|"
            r"Couldn't find CUDA library root|"
            r"No CMAKE_CUDA_COMPILER could be found|CUDA compiler identification is unknown"
        ),
    ),
    ("cudatoolkit", re.compile(r"Could NOT find CUDAToolkit")),
    ("nvtoolsext-fatal", re.compile(r"Failed to find nvToolsExt")),
)


STAGES = ("cmake-minimum", "caffe2-cuda", "compiler-id", "cudatoolkit", "nvtoolsext-fatal")


def classify(output: str) -> tuple[str | None, list[str]]:
    """The real CMake output as (configure-time stop, generate-time errors), in the
    signatures :mod:`pytest_vllm_env.facts.torch_config` predicts."""
    configured = "-- Configuring done" in output
    head, _, tail = output.partition("-- Configuring done")
    generate: list[str] = []
    text = tail if configured else head
    # blocks of "CMake Error ..." up to the next blank-line-separated error
    link = re.finditer(
        r'(?:link interface of target\s+"[^"]+"\s+contains:|Target\s+"[^"]+"\s+links to:)'
        r"\s+(\S+)\s+but the target was not found",
        text,
    )
    generate += [f"link:{m.group(1)}" for m in link]
    for block in re.finditer(r"set to NOTFOUND\.[^\n]*\n(?:[^\n]*\n)(.*?)(?:\n\n|\Z)", text, re.S):
        for line in block.group(1).splitlines():
            m = re.match(r"^(\w+)(?: \(ADVANCED\))?\s*$", line.strip())
            if m:
                generate.append(f"notfound:{m.group(1)}")
    prop = re.search(r'get_target_property\(\) called with non-existent target\s+"([^"]+)"', text)
    if configured:
        return None, sorted(set(generate))
    first: tuple[int, str] | None = None
    for sig, pattern in STOP_PATTERNS:
        m = pattern.search(head)
        if m and (first is None or m.start() < first[0]):
            first = (m.start(), sig)
    if prop and (first is None or prop.start() < first[0]):
        first = (prop.start(), f"property:{prop.group(1)}")
    if first is None:
        err = re.search(r"CMake Error[^\n]*\n\s*([^\n]+)", head)
        return (f"other:{err.group(1).strip()[:120]}" if err else "other"), []
    return first[1], []
