"""The gpu tier: does the target env's torch use the GPU, and does vLLM load and generate?

Everything here runs the TARGET env's Python (``vllm_env.python``) on a probe script from
``pytest_vllm_env/probes`` with the env's activation applied and a timeout; the probe
prints one JSON line, :func:`run_probe` reads it into a :class:`ProbeResult`, and the
judgements below turn that into findings. pytest itself never imports torch or vLLM.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_vllm_env import proc
from pytest_vllm_env.archs import Arch, parse_arch
from pytest_vllm_env.fatbin import FatbinImage, arch_coverage, describe
from pytest_vllm_env.findings import Finding, error, failed, passed, skipped

PROBES = Path(__file__).parent / "probes"


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


def run_probe(
    python: str | Path,
    script: str,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
) -> ProbeResult:
    """Run ``probes/<script>`` with the target Python; never raises (hang, crash, bad JSON)."""
    result = proc.run(
        [python, str(PROBES / script), *args], env=env, timeout=timeout, merge_output=True
    )
    text = result.output
    common: dict[str, Any] = dict(
        output_tail=text[-2000:],
        seconds=result.seconds,
        returncode=result.returncode,
        timed_out=result.timed_out,
        timeout=timeout,
    )
    if result.launch_error or result.timed_out:
        return ProbeResult(script, problem=result.describe(), before=text[-4000:], **common)
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i].strip()
        if not line.startswith("{"):
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            before = "\n".join(lines[:i])[-4000:]
            after = "\n".join(lines[i + 1 :])[-4000:]
            return ProbeResult(script, data=data, before=before, after=after, **common)
    return ProbeResult(
        script,
        problem=f"printed no JSON result ({result.describe()})",
        before=text[-4000:],
        **common,
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


# -- device coverage -------------------------------------------------------------------------
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


def device_coverage(
    gpus: Sequence[tuple[str, Arch]],
    binaries: Sequence[BinaryImages],
    targets: Sequence[Arch] = (),
    targets_source: str = "none",
) -> Finding:
    """gpu.device-coverage: every visible GPU has kernels in every GPU binary of the env
    (torch's libtorch_cuda.so, vLLM's extensions), and is one of the declared target archs.

    The failure it exists for: an env built for the GPU named in ``--cuda-arch`` (say 12.0)
    that lands on a runner with another GPU (9.0), or a wheel without the runner's SASS:
    everything imports, and the first kernel launch says "no kernel image is available"."""
    cid = "gpu.device-coverage"
    if not gpus:
        return skipped(cid, "no GPU visible (neither the target env's torch nor nvidia-smi)")
    names = ", ".join(f"{n} (sm {a.cc})" for n, a in gpus)
    declared = targets_source in ("--cuda-arch", "TORCH_CUDA_ARCH_LIST")
    if declared:
        wanted = {(t.major, t.minor) for t in targets}
        off = [(n, a) for n, a in gpus if (a.major, a.minor) not in wanted]
        if off:
            listed = " ".join(t.cc for t in targets)
            return failed(
                cid,
                f"the visible GPU {', '.join(f'{n} (sm {a.cc})' for n, a in off)} is not "
                f"among the target archs {listed} ({targets_source})",
                _target_fix(targets_source, listed, [a for _, a in off]),
                gpus=names,
                targets=listed,
            )
    gpu_code = [b for b in binaries if b.images]
    unreadable = [f"{b.label}: {b.error}" for b in binaries if b.error]
    uncovered = [
        (b, a) for b in gpu_code for _, a in gpus if not arch_coverage(b.images or [], a).covered
    ]
    # Libraries holding only arch-/family-specific images (vLLM 0.26.0's _qutlass_C: sm_100f
    # only; FA3: sm_90a) are dispatched to only on those GPUs: note them, do not fail.
    special = [
        f"{b.label} ({describe(b.images or [])})" for b, a in uncovered if not _required(b, a)
    ]
    missing = [
        f"{b.label} has no kernels for sm {a.cc} ({describe(b.images or [])})"
        for b, a in uncovered
        if _required(b, a)
    ]
    if missing:
        return failed(
            cid,
            f"{len(missing)} binary/GPU pair(s) without kernels: " + "; ".join(missing),
            _coverage_fix(missing[0], [a for _, a in gpus]),
            gpus=names,
            uncovered=missing,
            arch_specific_only=special,
        )
    if unreadable:
        return error(
            cid,
            f"{len(unreadable)} GPU binary(ies) could not be read: " + "; ".join(unreadable),
            "reinstall the packages that own them (`pixi install` after removing the env)",
            gpus=names,
        )
    if not gpu_code:
        return skipped(cid, f"no GPU binary (libtorch_cuda.so, vLLM extensions) found for {names}")
    return passed(
        cid,
        f"{names}: kernels in all {len(gpu_code) - len(special)} general GPU binaries"
        + (f", and among the target archs ({targets_source})" if declared else "")
        + (f"; {len(special)} arch-specific librarie(s) not for this GPU" if special else ""),
        binaries=[b.label for b in gpu_code],
        arch_specific_only=special,
    )


def _required(binary: BinaryImages, gpu: Arch) -> bool:
    # per-GPU backends (vLLM 0.26.0's FA3: sm_90a; _qutlass_C: sm_100f) are dispatched to
    # only on their GPUs; vLLM's _C, torch and xformers' own kernels run on every GPU
    from .coverage_arch import required_on

    return required_on(binary.label, binary.images or [], gpu)


def _target_fix(source: str, listed: str, gpus: Sequence[Arch]) -> str:
    have = " ".join(sorted({a.cc for a in gpus}))
    if source == "--cuda-arch":
        return (
            f"run on a GPU of the targeted arch, or target this one: `--cuda-arch {have}` "
            f"(instead of {listed}), and build/install binaries for it"
        )
    return (
        f'set TORCH_CUDA_ARCH_LIST = "{listed} {have}" (pixi.toml [activation.env]) and '
        "rebuild, or run on a GPU of the targeted arch"
    )


def _coverage_fix(first: str, gpus: Sequence[Arch]) -> str:
    ccs = " ".join(sorted({a.cc for a in gpus}))
    if "libtorch" in first:
        return (
            f"install a torch wheel built with kernels for {ccs} (for 12.x GPUs: a CUDA >= 12.8 "
            "build, from the cu128/cu130 index)"
        )
    from .coverage_arch import min_nvcc

    def version(v: str) -> list[int]:
        return [int(n) for n in v.split(".") if n.isdigit()]

    need = max((min_nvcc(a) for a in gpus), key=version)
    return (
        f'rebuild vLLM with TORCH_CUDA_ARCH_LIST="{ccs}" (nvcc >= {need} for {ccs}), or '
        "install a vLLM wheel built for this GPU"
    )


# -- FP8 GEMM --------------------------------------------------------------------------------
FP8_REL_TOL = 0.02  # bf16 output of an exact fp32 accumulation: ~0.4 %, 2 % leaves margin


def torch_fp8(
    probe: ProbeResult, python: str | Path = "", tolerance: float = FP8_REL_TOL
) -> Finding:
    """gpu.torch-fp8: ``torch._scaled_mm`` on float8_e4m3fn with tensor scales matches an
    fp32 reference within ``tolerance`` x max|reference| (GPUs of compute capability >= 8.9).
    What ModelOpt FP8 checkpoints run on; a torch or driver without working FP8 GEMMs
    loads them and then fails (or, worse, computes garbage)."""
    cid = "gpu.torch-fp8"
    if probe.problem:
        return error(
            cid,
            f"the torch probe did not complete: {probe.problem}",
            f"run `{python} -c 'import torch; print(torch.cuda.is_available())'` in the env",
        )
    fp8 = probe.data.get("fp8")
    if not probe.data.get("devices") or not isinstance(fp8, dict):
        return skipped(cid, "no GPU visible to the target env's torch: FP8 not tried")
    if "unsupported" in fp8:
        return skipped(
            cid, f"the GPU is compute capability {fp8['unsupported']} < 8.9: it has no FP8 GEMMs"
        )
    if "exception" in fp8:
        return failed(
            cid,
            f"torch._scaled_mm (float8_e4m3fn) failed on the GPU: {fp8['exception']}",
            "use torch >= 2.5 built for CUDA >= 12.1 with kernels for this GPU (the torch vLLM "
            "pins; `torch.cuda.get_arch_list()` must include it)",
            torch=probe.data.get("torch"),
        )
    err, ref = float(fp8.get("max_abs_err", 0.0)), float(fp8.get("ref_max_abs", 0.0))
    limit = tolerance * max(ref, 1e-6)
    gpu = probe.data["devices"][0]
    if err > limit:
        return failed(
            cid,
            f"FP8 _scaled_mm on {gpu['name']} differs from the fp32 reference by {err:.4g} "
            f"(limit {limit:.4g} = {tolerance} x max|ref| {ref:.4g})",
            "FP8 kernels compute wrong results: update the NVIDIA driver, and use the torch "
            "build vLLM pins for this GPU's arch",
            **fp8,
        )
    return passed(
        cid,
        f"FP8 _scaled_mm on {gpu['name']} (sm {gpu['cc']}): max error {err:.4g} <= "
        f"{tolerance} x max|ref| {ref:.4g}",
        **fp8,
    )


# -- vLLM load and generate ------------------------------------------------------------------
# vLLM 0.26.0: "Engine core process {name} died unexpectedly." (v1/utils.py) and
# "Worker proc %s died unexpectedly (exit code: %s), ..." (multiproc_executor.py); older
# releases printed "Engine core proc EngineCore_0 died unexpectedly, shutting down client.".
ENGINE_DIED = re.compile(r"\b(?:Engine core proc(?:ess)?|Worker proc)\b[^\n]*?died unexpectedly")
MODELOPT_CONFIGS = (
    "ModelOptFp8Config",
    "ModelOptNvFp4Config",
    "ModelOptMxFp8Config",
    "ModelOptMixedPrecisionConfig",
)
DIED_FIX = (
    "the vLLM engine died while loading/generating: the real cause is printed above that line "
    "(CUDA out of memory, no kernel for this GPU, a crash in a kernel); rerun with "
    "VLLM_ENABLE_V1_MULTIPROCESSING=0 to get the traceback in one process, and fix that cause"
)


def _died(text: str) -> str:
    match = ENGINE_DIED.search(text)
    if not match:
        return ""
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    return text[start : end if end >= 0 else len(text)].strip()[:300]


def _run_problem(cid: str, run: ProbeResult, checkpoint: str) -> Finding | None:
    """The finding for a run that did not produce tokens, or None when it did."""
    if run.timed_out:
        return error(
            cid,
            f"loading/generating with {checkpoint} did not finish within {run.timeout:.0f} s "
            "(--vllm-probe-timeout) and the probe process group was killed",
            "raise --vllm-probe-timeout if it was only slow (the first FP8 load JIT-compiles "
            "kernels); otherwise run the load by hand with VLLM_LOGGING_LEVEL=DEBUG to see "
            "where it hangs",
            output=run.output_tail[-800:],
        )
    died = _died(run.before)
    if died:
        return failed(
            cid,
            f"the vLLM engine died before {checkpoint} produced tokens: {died}",
            DIED_FIX,
            output=run.output_tail[-800:],
        )
    if run.problem:
        return error(
            cid,
            f"the vLLM probe did not complete: {run.problem}",
            "run the load by hand with the env's python and VLLM_LOGGING_LEVEL=DEBUG",
            output=run.output_tail[-800:],
        )
    if run.data.get("tokens"):
        return None
    exc = str(run.data.get("exception", ""))
    return failed(
        cid,
        f"vLLM could not load/generate with {checkpoint}: {exc or 'no tokens'}",
        _fix_for_load_error(exc),
        output=run.output_tail[-800:],
    )


def shutdown_noise(runs: Sequence[ProbeResult]) -> str:
    """The engine-died line printed AFTER a run's result, if any: harmless shutdown noise
    (vLLM tears the engine process down while the client still watches it)."""
    return next((d for d in (_died(r.after) for r in runs) if d), "")


def vllm_generates(
    runs: Sequence[ProbeResult], checkpoint: str, quantization: str | None
) -> Finding:
    """gpu.vllm-generate: the checkpoint loads with the expected quant config, and two runs
    in fresh processes produce the same greedy tokens (a broken FP8 kernel tends to give
    garbage or differing output, not an exception). Reports load time and tokens/s."""
    cid = "gpu.vllm-generate"
    if not checkpoint:
        return skipped(cid, "no --modelopt-checkpoint given: nothing to load")
    for run in runs:
        problem = _run_problem(cid, run, checkpoint)
        if problem is not None:
            return problem
    first = runs[0].data
    modelopt = (quantization or "").startswith("modelopt")
    if modelopt and first.get("quant_config") not in MODELOPT_CONFIGS:
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
    loads = [r.data.get("load_seconds") for r in runs]
    rates = [r.data.get("tokens_per_s") for r in runs]
    evidence: dict[str, Any] = dict(tokens=list(tokens[0]), load_seconds=loads, tokens_per_s=rates)
    noise = shutdown_noise(runs)
    if noise:
        evidence["exit"] = f"harmless shutdown noise after the result: {noise}"
    return passed(
        cid,
        f"vLLM {first.get('vllm')} loaded {checkpoint} ({first.get('quant_config')}) and "
        f"generated the same {len(tokens[0])} greedy tokens in {len(runs)} fresh processes; "
        f"load {_join(loads, 's')}, {_join(rates, ' tokens/s')}"
        + ("; engine-died line after the result ignored (shutdown noise)" if noise else ""),
        **evidence,
    )


def _join(values: Sequence[Any], unit: str) -> str:
    return " / ".join(f"{v}{unit}" if v is not None else "?" for v in values)


# -- reference comparison --------------------------------------------------------------------
LOGPROB_TOL = 0.5  # nats: FP8 vs BF16 of a tiny random model (measure yours; a setting)


def pair_reference(index: int, count: int, references: Sequence[str]) -> tuple[str, Finding | None]:
    """``(reference, problem)`` for the ``index``-th of ``count`` checkpoints: one
    ``--reference-checkpoint`` serves all; several pair with the checkpoints by order."""
    if not references:
        return "", None
    if len(references) == 1:
        return references[0], None
    if len(references) == count:
        return references[index], None
    return "", error(
        "gpu.vllm-reference",
        f"{len(references)} --reference-checkpoint values for {count} --modelopt-checkpoint "
        "values: cannot tell which reference belongs to which checkpoint",
        "give one --reference-checkpoint (used for all) or one per --modelopt-checkpoint, "
        "in the same order",
    )


def vllm_reference(
    run: ProbeResult,
    ref_run: ProbeResult | None,
    checkpoint: str,
    reference: str,
    tolerance: float = LOGPROB_TOL,
) -> Finding:
    """gpu.vllm-reference: the quantized checkpoint's first greedy token is the BF16
    reference's, and its logprob is within ``tolerance`` nats of the reference's.

    Two fresh processes of the same FP8 checkpoint agreeing says nothing about whether the
    FP8 weights and scales are right; the BF16 original is the ground truth."""
    cid = "gpu.vllm-reference"
    if not reference or ref_run is None:
        return skipped(cid, "no --reference-checkpoint given: nothing to compare with")
    if _run_problem(cid, run, checkpoint) is not None:
        return skipped(
            cid, f"{checkpoint} generated nothing to compare: gpu.vllm-generate says why"
        )
    for r, what in ((run, checkpoint), (ref_run, reference)):
        problem = _run_problem(cid, r, what)
        if problem is not None:
            return problem
        if not r.data.get("first_logprobs"):
            return error(
                cid,
                f"the vLLM probe returned no logprobs for {what}: "
                f"{r.data.get('logprobs_exception', 'none printed')}",
                "this vLLM's SamplingParams(logprobs=5) result has another shape: update "
                "probes/vllm_generate.py for it",
            )
    q_tok, r_tok = run.data["tokens"][0], ref_run.data["tokens"][0]
    q_lp, r_lp = run.data["first_logprobs"], ref_run.data["first_logprobs"]
    evidence = dict(
        first_token=q_tok,
        reference_first_token=r_tok,
        logprobs=q_lp,
        reference_logprobs=r_lp,
        tolerance_nats=tolerance,
    )
    if q_tok != r_tok:
        return failed(
            cid,
            f"first greedy token of {checkpoint} is {q_tok}, the BF16 reference {reference} "
            f"gives {r_tok}",
            _reference_fix(),
            **evidence,
        )
    if str(q_tok) not in q_lp or str(r_tok) not in r_lp:
        return error(
            cid,
            "the generated first token is missing from its own logprobs",
            "update probes/vllm_generate.py for this vLLM's logprobs layout",
            **evidence,
        )
    diff = abs(float(q_lp[str(q_tok)]) - float(r_lp[str(r_tok)]))
    evidence["difference_nats"] = round(diff, 4)
    if diff > tolerance:
        return failed(
            cid,
            f"first-token logprob of {checkpoint} is {q_lp[str(q_tok)]:.4f}, the reference's "
            f"{r_lp[str(r_tok)]:.4f}: |difference| {diff:.4f} > {tolerance} nats "
            "(--vllm-logprob-tolerance)",
            _reference_fix(),
            **evidence,
        )
    return passed(
        cid,
        f"{checkpoint} agrees with the BF16 reference {reference}: first token {q_tok}, "
        f"|logprob difference| {diff:.4f} <= {tolerance} nats",
        **evidence,
    )


def _reference_fix() -> str:
    return (
        "check that --reference-checkpoint is the BF16 original this checkpoint was exported "
        "from; if it is, the FP8 export or its scales are wrong (re-export with ModelOpt and "
        "calibration data) or the FP8 kernels are (run gpu.torch-fp8); raise "
        "--vllm-logprob-tolerance only for a model where a larger drift is expected"
    )


def _fix_for_load_error(exc: str) -> str:
    if "flashinfer" in exc:
        return "set VLLM_USE_FLASHINFER_SAMPLER=0 in [activation.env] or add flashinfer-python"
    if "ModelOpt currently only supports" in exc:
        return (
            "re-export the checkpoint with a quant_algo this vLLM supports (FP8 for "
            "mtq.FP8_DEFAULT_CFG), or upgrade vLLM to one that lists it"
        )
    if "No module named 'vllm'" in exc:
        return "add vllm to the env's [pypi-dependencies] and run `pixi install`"
    if "Free memory on device" in exc:
        return "free the GPU (another process holds memory) or lower gpu_memory_utilization"
    return "read the output above; fix the env or the checkpoint it names"
