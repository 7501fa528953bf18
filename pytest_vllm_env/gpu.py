"""The gpu tier: does the target env's torch use the GPU, and does vLLM load and generate?

Everything here runs the TARGET env's Python (``vllm_env.python``) on a probe script from
``pytest_vllm_env/probes`` with the env's activation applied and a timeout; the probe
prints one JSON line, :func:`run_probe` reads it into a :class:`ProbeResult`, and the
judgements below turn that into findings. pytest itself never imports torch or vLLM.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_vllm_env import proc
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped

PROBES = Path(__file__).parent / "probes"


@dataclass(frozen=True)
class ProbeResult:
    """What one probe run printed: ``data`` is its JSON line, ``problem`` why there is none."""

    script: str
    data: dict[str, Any] = field(default_factory=dict)
    problem: str = ""
    output_tail: str = ""
    seconds: float = 0.0


def run_probe(
    python: str | Path,
    script: str,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
) -> ProbeResult:
    """Run ``probes/<script>`` with the target Python; never raises (hang, crash, bad JSON)."""
    result = proc.run([python, str(PROBES / script), *args], env=env, timeout=timeout)
    tail = result.output[-2000:]
    if result.launch_error or result.timed_out:
        return ProbeResult(
            script, problem=result.describe(), output_tail=tail, seconds=result.seconds
        )
    for line in reversed(result.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict):
                return ProbeResult(script, data=data, output_tail=tail, seconds=result.seconds)
    return ProbeResult(
        script,
        problem=f"printed no JSON result ({result.describe()})",
        output_tail=tail,
        seconds=result.seconds,
    )


def torch_cuda(probe: ProbeResult, python: str | Path = "") -> Finding:
    """gpu.torch-cuda: torch imports, sees a GPU, and a half-precision matmul gives 64."""
    cid = "gpu.torch-cuda"
    if probe.problem:
        return error(
            cid,
            f"the torch probe did not complete: {probe.problem}",
            f"run `{python} -c 'import torch; print(torch.cuda.is_available())'` in the env "
            "and fix what it prints",
            output=probe.output_tail,
        )
    d = probe.data
    if d.get("torch") is None:
        return failed(
            cid,
            f"torch cannot be imported by {python}: {d.get('exception', 'not installed')}",
            'add torch to the env (pixi.toml [pypi-dependencies] torch = "==<the version vLLM '
            'pins>") and run `pixi install`',
        )
    if not d.get("cuda"):
        return failed(
            cid,
            f"torch {d['torch']} is a CPU-only build (torch.version.cuda is None)",
            "install a CUDA build of torch: in pixi.toml point [pypi-options] extra-index-urls "
            "at https://download.pytorch.org/whl/cu<NNN> (or depend on the wheel vLLM pins)",
            torch=d["torch"],
        )
    if not d.get("available") or not d.get("devices"):
        return failed(
            cid,
            f"torch {d['torch']} (CUDA {d['cuda']}) sees no GPU"
            + (f": {d['exception']}" if d.get("exception") else ""),
            "check `nvidia-smi` and CUDA_VISIBLE_DEVICES; a driver older than CUDA "
            f"{d['cuda']} needs a torch wheel built for an older CUDA",
            torch=d["torch"],
        )
    if d.get("matmul") != 64.0:
        return failed(
            cid,
            f"a 64x64 fp16 matmul on the GPU gave {d.get('matmul')!r}, not 64.0"
            + (f" ({d['exception']})" if d.get("exception") else ""),
            "the torch wheel has no kernels for this GPU: install one whose arch list "
            f"({d.get('arch_list')}) includes the device's compute capability",
            devices=d["devices"],
        )
    return passed(
        cid,
        f"torch {d['torch']} (CUDA {d['cuda']}) runs on "
        + ", ".join(f"{g['name']} (sm {g['cc']})" for g in d["devices"]),
        arch_list=d.get("arch_list"),
    )


def vllm_generates(
    runs: Sequence[ProbeResult], checkpoint: str, quantization: str | None
) -> Finding:
    """gpu.vllm-generate: the checkpoint loads with the expected quant config, and two runs
    in fresh processes produce the same greedy tokens (a broken FP8 kernel tends to give
    garbage or differing output, not an exception)."""
    cid = "gpu.vllm-generate"
    if not checkpoint:
        return skipped(cid, "no --reference-checkpoint given: nothing to load")
    for run in runs:
        if run.problem:
            return error(
                cid,
                f"the vLLM probe did not complete: {run.problem}",
                "run the load by hand with the env's python and VLLM_LOGGING_LEVEL=DEBUG; "
                "raise the timeout with --vllm-probe-timeout if it was only slow",
                output=run.output_tail,
            )
        d = run.data
        if d.get("tokens") is None:
            exc = str(d.get("exception", ""))
            return failed(
                cid,
                f"vLLM could not load/generate with {checkpoint}: {exc or 'no tokens'}",
                _fix_for_load_error(exc),
                output=run.output_tail[-800:],
            )
    first = runs[0].data
    if quantization == "modelopt" and first.get("quant_config") not in (
        "ModelOptFp8Config",
        "ModelOptNvFp4Config",
        "ModelOptMixedPrecisionConfig",
    ):
        return failed(
            cid,
            f"vLLM loaded {checkpoint} with quant config {first.get('quant_config')!r}, "
            "not ModelOpt's",
            "the checkpoint lacks hf_quant_config.json / quantization_config with "
            'quant_method "modelopt": re-export it with modelopt export_hf_checkpoint',
        )
    tokens = [tuple(r.data["tokens"]) for r in runs]
    if len(set(tokens)) != 1:
        return failed(
            cid,
            f"greedy generation differs between runs: {tokens}",
            "nondeterministic kernels on this GPU: check the FP8 kernels for its arch "
            "(TORCH_CUDA_ARCH_LIST of the vLLM build) and the driver",
        )
    return passed(
        cid,
        f"vLLM {first.get('vllm')} loaded {checkpoint} ({first.get('quant_config')}) and "
        f"generated the same {len(tokens[0])} greedy tokens in {len(runs)} runs",
        tokens=list(tokens[0]),
        seconds=[r.data.get("seconds") for r in runs],
    )


def _fix_for_load_error(exc: str) -> str:
    if "flashinfer" in exc:
        return "set VLLM_USE_FLASHINFER_SAMPLER=0 in [activation.env] or add flashinfer-python"
    if "ModelOpt currently only supports" in exc:
        return "re-export the checkpoint with a quant_algo this vLLM supports (e.g. FP8)"
    if "No module named 'vllm'" in exc:
        return "add vllm to the env's [pypi-dependencies] and run `pixi install`"
    if "Free memory on device" in exc:
        return "free the GPU (another process holds memory) or lower gpu_memory_utilization"
    return "read the output above; fix the env or the checkpoint it names"
