"""The suite's quant.* verdicts on the blind mutations of the compressed-tensors and fine-grained
FP8 exports (``fixtures/format_variants.py``) against what the REAL vLLM 0.26.0 and 0.33.0
loaders did with them on this CPU (``fixtures/loader_truth/formats_outcomes.json``, recorded
by ``scripts/loader_truth_cpu.py --corpus formats``: vLLM's own config code, model classes and
weight loader, twice with sentinel-filled parameters).

What the record says happened, as an effect:

- ``refuses``: the config, the model build or the load raised;
- ``wrong``: it loaded, but a parameter was never written (it keeps ``torch.empty``), or a
  parameter the variant did not change holds other numbers than its base export's load put
  there (the parameter's sum differs: a scale narrowed, a value reinterpreted);
- ``works``: every parameter written, with the base export's numbers;
- unsettled: what only a GPU says (the variant's ``gpu``): ``scripts/device/formats_blind.sh``.

The first 36 variants are the blind round (``blind``: predicted before the loaders ran and
before the check code was read; 26 of their 35 settled verdicts agreed in each release before
the round's fixes); the others were made after the fixes, to try each new rule on a case it
was not written on.

The suite runs as a user runs it (``--vllm-checkpoint`` with the launch's
``--tensor-parallel-size`` / ``--vllm-quantization``, the stand-in vLLM of that release, sm 9.0);
its findings' effect (``gpu_prediction.predicted_effect``: a failure that says
``vllm_effect``, refuses > wrong) must be the record's, and a verdict that is not "works" names
the tensor or config key to change.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures import format_variants
from fixtures.envs import EnvBuilder
from fixtures.quant_standin import install_vllm_quant
from pytest_vllm_env.checks.gpu_prediction import predicted_effect
from pytest_vllm_env.findings import Finding

TRUTH = json.loads(
    (
        Path(__file__).resolve().parents[1] / "fixtures/loader_truth/formats_outcomes.json"
    ).read_text()
)
# what the same variants did on an H100 with vLLM 0.26.0 (scripts/device/formats_blind.sh,
# docs/gpu-runs.md Round 14): loaded? generated? the first position's logprobs against the base
GPU = json.loads(
    (
        Path(__file__).resolve().parents[1] / "fixtures/loader_truth/formats_gpu-0.26.0.json"
    ).read_text()
)["variants"]
RELEASES = ("0.26.0", "0.33.0")
# the attention layer's own KV-cache parameters (scales, compressed-tensors' zero points) are
# built for every model and only read with an FP8 KV cache: not the checkpoint's
KV_PARAM = ".attn."


def truth_effect(name: str, release: str) -> str:
    """What the real loader's record says happened (see the module docstring)."""
    rec = TRUTH["variants"][name][release]
    variant = format_variants.VARIANTS[name]
    assert "probe_error" not in rec, rec
    if rec.get("refused"):
        return "refuses"
    if variant.gpu:
        # the GPU settles a variant whose numbers it can compare: the same logprobs as its
        # base export to the last bit is "works" (only 0.26.0 ran there)
        ran = GPU.get(name) if release == "0.26.0" else None
        if ran and ran["generated"] and ran["first_logprob_maxdiff"] == 0.0:
            return "works"
        return "unsettled"
    if any(KV_PARAM not in p for p in rec["unset"]):
        return "wrong"
    if not variant.launch.get("tp"):  # rank 0's halves are not the base's whole parameters
        base = TRUTH["variants"][f"base:{variant.base}"][release]["sums"]
        for param, total in rec["sums"].items():
            if KV_PARAM in param or any(c in param for c in variant.changed):
                continue
            if param in base and base[param] != total:
                return "wrong"
    return "works"


def suite_effects(pytester: pytest.Pytester, release: str, launch: dict) -> dict[str, tuple]:
    """The suite on every variant started with ``launch``: label -> (effect, findings)."""
    env = EnvBuilder(pytester.path / f"env-{release}")
    install_vllm_quant(env, release)
    names = [n for n, v in format_variants.VARIANTS.items() if v.launch == launch]
    root = pytester.path / "ckpts"
    for name in names:
        format_variants.make(name, root / name)
    report = pytester.path / "report.json"
    args = [
        "--vllm-conformance",
        "-p",
        "no:randomly",
        "-m",
        "toolchain",
        "-k",
        "test_qfmt_",
        f"--vllm-env={env.prefix}",
        "--cuda-arch=9.0",
        f"--vllm-env-report={report}",
        *(f"--vllm-checkpoint={root / n}" for n in names),
    ]
    if launch.get("tp"):
        args.append(f"--tensor-parallel-size={launch['tp']}")
    if launch.get("quantization"):
        args.append(f"--vllm-quantization={launch['quantization']}")
    result = pytester.runpytest(*args)
    assert "Traceback" not in result.stdout.str()
    by: dict[str, list[Finding]] = {n: [] for n in names}
    for check in json.loads(report.read_text())["checks"]:
        label = check["test"].rsplit("[", 1)[1].rstrip("]")
        by[label].append(Finding.from_dict(check))
    return {n: (predicted_effect(f)[0], f) for n, f in by.items()}


LAUNCHES = sorted({json.dumps(v.launch, sort_keys=True) for v in format_variants.VARIANTS.values()})


@pytest.mark.parametrize("launch", LAUNCHES)
@pytest.mark.parametrize("release", RELEASES)
def test_verdicts_predict_what_the_real_loaders_did(pytester, release, launch):
    """Every variant: the suite's effect is the real loader's (unsettled ones are skipped
    here: scripts/device/formats_blind.sh), and a bad verdict names what to change."""
    effects = suite_effects(pytester, release, json.loads(launch))
    wrong = []
    for name, (got, findings) in effects.items():
        want = truth_effect(name, release)
        if want == "unsettled":
            continue
        bad = [f for f in findings if f.bad]
        shown = [f"{f.id} {f.outcome}: {f.summary}" for f in bad]
        if got != want:
            wrong.append((name, want, got, shown))
            continue
        assert all(f.fix for f in bad), (name, shown)  # what to change, always
        refused = TRUTH["variants"][name][release].get("refused") or {}
        if refused.get("tensor"):
            # the first tensor the refusing verdict names is the one vLLM raised on
            named = [t for f in bad if f.evidence.get("vllm_effect") == "refuses"
                     for t in f.evidence.get("tensors", [])]  # fmt: skip
            assert named[:1] == [refused["tensor"]], (name, refused, shown)
    assert not wrong, wrong


def test_blind_record():
    """The predictions written before the real loaders ran stay as written: 35 of the 36
    settled variants right (35 settled by the CPU loaders, ct-w4a16-no-weight-shape by the
    H100); the one wrong (ct-w4a16-channel-group-scales: we expected a refusal, vLLM narrows a
    row-parallel layer's scale and loads) is what the suite missed too, with eight others,
    before the round's fixes."""
    blind = [n for n, v in format_variants.VARIANTS.items() if v.blind]
    settled = {n: truth_effect(n, "0.26.0") for n in blind}
    settled = {n: e for n, e in settled.items() if e != "unsettled"}
    right = [n for n, e in settled.items() if format_variants.VARIANTS[n].predicted == e]
    assert (len(right), len(settled)) == (35, 36)
    assert set(settled) - set(right) == {"ct-w4a16-channel-group-scales"}
    for n in settled:  # both releases did the same with every variant the CPU settles
        if n not in GPU:
            assert truth_effect(n, "0.33.0") == settled[n], n


def test_what_loaded_on_the_gpu():
    """The H100 run (Round 14): every variant the real loaders load generated there too, and
    those whose CPU record says "the same numbers" (weight_shape unset, U8 for I8 bits) give
    their base export's logprobs to the last bit; the others differ by no more than a kernel
    change does on these near-flat tiny models (ct-fp8-dynamic against ct-fp8-static: 0.049
    nats), which is why the GPU does not settle "wrong" for them (the CPU record does)."""
    assert len(GPU) == 13
    kernel_noise = 0.05
    for name, ran in GPU.items():
        if name.startswith("base-"):
            assert ran["generated"], name
            continue
        assert ran["generated"] == (truth_effect(name, "0.26.0") != "refuses"), name
        assert (
            ran["first_logprob_maxdiff"] is not None and ran["first_logprob_maxdiff"] < kernel_noise
        )
    same = {n for n, r in GPU.items() if r.get("first_logprob_maxdiff") == 0.0}
    assert same == {"ct-w4a16-no-weight-shape", "ct-w8a8-weight-as-u8"}
    # the one the CPU could not settle (every weight_shape left unset) is settled here
    assert truth_effect("ct-w4a16-no-weight-shape", "0.26.0") == "works"


def test_unsettled_variants_go_to_the_device_script():
    """What only a GPU settles is loaded there (scripts/device/formats_blind.sh)."""
    script = (Path(__file__).resolve().parents[1] / "scripts/device/formats_blind.sh").read_text()
    for name, v in format_variants.VARIANTS.items():
        if v.gpu and truth_effect(name, "0.26.0") == "unsettled":
            assert name in script, name


FORMATS_SAMPLE = (
    "ct-w4a16-channel-group-scales",
    "ct-fp8-ignore-o-proj-stored-fp8",
    "hf-fp8-tp2-row-bf16",
    "ct-w8a8-weight-as-u8",
)


@pytest.mark.integration
@pytest.mark.parametrize("release", RELEASES)
def test_the_real_loader_still_does_what_was_recorded(tmp_path, release):
    """A sample of the variants through the real loader again (the venvs of
    scripts/loader_truth_cpu.py): the same refusal (stage, type, tensor), or the same unset
    parameters and sums."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    python = Path.home() / ".cache/pytest-vllm-env/venvs" / f"vllm-{release}" / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"no {python}: make it as scripts/loader_truth_cpu.py says")
    sys.path.insert(0, str(repo / "scripts"))
    import loader_truth_cpu

    jobs = [
        {
            "name": n,
            "model": str(format_variants.make(n, tmp_path / n)),
            "mode": "load",
            **format_variants.VARIANTS[n].launch,
        }
        for n in FORMATS_SAMPLE
    ]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    probe = repo / "pytest_vllm_env" / "probes" / "vllm_load_weights.py"
    proc = subprocess.run(
        [str(python), str(probe), "--batch", str(tmp_path / "jobs.json")],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=tmp_path,
    )
    results = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert len(results) == len(jobs), proc.stderr[-3000:]
    for result in results:
        name = result["job"]["name"]
        now = loader_truth_cpu.summarize(result, all_sums=True)
        then = TRUTH["variants"][name][release]
        assert bool(now.get("refused")) == bool(then.get("refused")), name
        if then.get("refused"):
            for key in ("stage", "type", "tensor"):
                assert now["refused"].get(key) == then["refused"].get(key), (name, key)
        else:
            assert (now["unset"], now["sums"]) == (then["unset"], then["sums"]), name
