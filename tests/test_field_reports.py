# ruff: noqa: E501  (expected messages are kept whole: they are what users read)
"""The issue-22 field test (docs/field-reports.md): public failure reports of quantized or
sharded checkpoints and launch arguments that nobody here had written rules for, each rebuilt
as the smallest static case it describes (fixtures/field_reports.py), run through the bundled
suite as users run it; the suite must reach the outcome the report documents: a failure with
the real cause and its fix where vLLM refuses it or runs it wrong, nothing failed where it
loads and runs right. What the real loaders did with each case on the CPU is recorded in
fixtures/field_reports.json (``python -m fixtures.field_reports`` builds them; the probe is
pytest_vllm_env/probes/vllm_load_weights.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures import field_reports, loader_standin
from fixtures.envs import EnvBuilder
from fixtures.quant_standin import quant_files
from fixtures.vllm_standin import install_vllm

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "fixtures" / "field_reports.json"
RELEASES = ("0.26.0", "0.33.0")
VENVS = Path.home() / ".cache" / "pytest-vllm-env" / "venvs"


def standin_env(builder: EnvBuilder, release: str) -> EnvBuilder:
    """A Pixi env whose vLLM has ``release``'s loader and quantization files (stand-ins)."""
    install_vllm(builder, release, extra={**quant_files(release), **loader_standin.files(release)})
    return builder


def run_case(pytester: pytest.Pytester, env: str, case: field_reports.Case, ckpt: Path):
    """The suite on one case -> (outcome, detail) by :func:`field_reports.judge`."""
    report = pytester.path / "report.json"
    args = [
        "--vllm-conformance",
        "-p",
        "no:randomly",
        "-m",
        "toolchain",
        "-k",
        field_reports.SELECT,
        f"--vllm-env={env}",
        f"--vllm-env-report={report}",
        *field_reports.suite_args(case, ckpt),
    ]
    if not any(a.startswith("--cuda-arch") for a in case.args):
        args.append("--cuda-arch=9.0")
    result = pytester.runpytest(*args)
    assert "Traceback" not in result.stdout.str()
    checks = json.loads(report.read_text())["checks"]
    return field_reports.judge(case, checks)


WANT = {"loads": "passed"}  # every other expectation: caught


def groups() -> dict[tuple, list[str]]:
    """The cases that share launch arguments, run together (the arguments apply to every
    checkpoint of a run): one suite run per group keeps the default tier fast."""
    out: dict[tuple, list[str]] = {}
    for case in field_reports.CASES:
        out.setdefault(case.args, []).append(case.name)
    return out


GROUPS = groups()


@pytest.mark.parametrize("args", list(GROUPS), ids=lambda a: " ".join(a)[:40] or "no-launch-args")
def test_suite_reaches_what_the_report_documents(pytester, tmp_path, args):
    """Against stand-ins of vLLM 0.26.0's files (0.33.0's, and both real installs: the
    integration tier below; the verdicts were the same on all four)."""
    env = standin_env(EnvBuilder(tmp_path / "ws"), "0.26.0")
    names = GROUPS[args]
    ckpts = {n: field_reports.make(n, tmp_path / "ckpt" / n) for n in names}
    report = pytester.path / "report.json"
    cli = [
        "--vllm-conformance", "-p", "no:randomly", "-m", "toolchain", "-k", field_reports.SELECT,
        f"--vllm-env={env.prefix}", f"--vllm-env-report={report}", *args,
    ]  # fmt: skip
    for n in names:
        cli += field_reports.suite_args(field_reports.BY_NAME[n], ckpts[n])[:1]
    if not any(a.startswith("--cuda-arch") for a in args):
        cli.append("--cuda-arch=9.0")
    result = pytester.runpytest(*cli)
    assert "Traceback" not in result.stdout.str()
    checks = json.loads(report.read_text())["checks"]
    for n in names:
        case = field_reports.BY_NAME[n]
        # a check is this case's when its test is parametrized by it (or by no checkpoint)
        mine = [c for c in checks if f"[{n}]" in c["test"] or "[" not in c["test"]]
        outcome, detail = field_reports.judge(case, mine)
        assert outcome == WANT.get(case.expect, "caught"), (n, detail)


def test_every_case_has_its_real_loader_outcome():
    """What the real vLLM 0.26.0 and 0.33.0 did with each case on the CPU agrees with what
    the report documents (refused / loaded with parameters unset / loaded); the MXFP4 cases are
    settled from source (the CPU probe cannot build gpt-oss's MoE) and on a GPU."""
    record = json.loads(RECORD.read_text())
    assert set(record["cases"]) == set(field_reports.BY_NAME)
    for name, entry in record["cases"].items():
        case = field_reports.BY_NAME[name]
        assert entry["url"] == case.url
        if case.settled != "cpu":
            continue
        for release in RELEASES:
            truth = entry["cpu"][release]
            seen = "refuses" if truth.get("refused") else "wrong" if truth.get("unset") else "loads"
            want = {"refuses-or-wrong": ("refuses", "wrong")}.get(case.expect, (case.expect,))
            assert seen in want, (name, release, truth)


def test_judge_tells_a_false_alarm_and_a_miss_apart():
    loads = field_reports.BY_NAME["fp8-block-tp1-works"]
    refuses = field_reports.BY_NAME["fp8-block-tp16-down-proj"]
    bad = [{"id": "launch.tensor-parallel", "outcome": "failed", "summary": "x", "fix": "y"}]
    assert field_reports.judge(loads, bad)[0] == "false alarm"
    assert field_reports.judge(refuses, [])[0] == "missed"
    assert field_reports.judge(refuses, bad)[0] == "missed"  # no --tensor-parallel-size in it
    good = [
        {**bad[0], "fix": "use --tensor-parallel-size=1", "evidence": {"vllm_effect": "refuses"}}
    ]
    assert field_reports.judge(refuses, good)[0] == "caught"


@pytest.mark.integration
@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("name", sorted(field_reports.BY_NAME))
def test_real_vllm_env(pytester, tmp_path, release, name):
    """The same against the real vLLM installs (scripts/loader_truth_cpu.py makes them)."""
    venv = VENVS / f"vllm-{release}"
    if not (venv / "bin" / "python").exists():
        pytest.skip(f"no {venv}: see scripts/loader_truth_cpu.py for how to make it")
    case = field_reports.BY_NAME[name]
    ckpt = field_reports.make(name, tmp_path / "ckpt" / name)
    outcome, detail = run_case(pytester, str(venv), case, ckpt)
    assert outcome == WANT.get(case.expect, "caught"), detail


# Instances the TP rules were not written from: the committed exports at tensor_parallel_size 2,
# and what the REAL vLLM 0.26.0 and 0.33.0 loaders did with each on the CPU (the same in both):
# the message they raised at build time, or None where every rank built and loaded.
HOLDOUT_TP2 = {
    "ct-w4a16-gptq-g32": None,  # group 32 divides o_proj's 64 a rank
    "ct-w4a16-g128": "Weight input_size_per_partition=64 for layer 'model.layers.0.self_attn.o_proj' is not divisible by group_size=128",
    "ct-w4a16-asym": "Weight input_size_per_partition=64 for layer 'model.layers.0.self_attn.o_proj' is not divisible by group_size=128",
    "ct-fp8-block": "Weight output_partition_size = 64 is not divisible by weight quantization block_n = 128",
    # Fp8Config's merged-layer allowance lets qkv (64 a rank) through; o_proj's input is refused
    "hf-fp8-block": "Weight input_size_per_partition = 64 is not divisible by weight quantization block_k = 128",
    "ct-w8a8-int8": None,
    "ct-nvfp4": None,
    "ct-fp8-dynamic": None,
}


def test_tensor_parallel_rules_on_instances_they_were_not_written_from(pytester, tmp_path):
    """All eight in one run (the launch arguments apply to every --vllm-checkpoint)."""
    env = standin_env(EnvBuilder(tmp_path / "ws"), "0.33.0")
    report = pytester.path / "report.json"
    result = pytester.runpytest(
        "--vllm-conformance", "-p", "no:randomly", "-m", "toolchain", "-k", "test_qfmt_tensor",
        f"--vllm-env={env.prefix}", f"--vllm-env-report={report}", "--tensor-parallel-size=2",
        *(f"--vllm-checkpoint={REPO / 'fixtures' / 'quant_export' / n}" for n in sorted(HOLDOUT_TP2)),
    )  # fmt: skip
    assert "Traceback" not in result.stdout.str()
    found = {
        c["summary"].split(":", 1)[0]: c
        for c in json.loads(report.read_text())["checks"]
        if c["id"] == "quant.tensor-parallel"
    }
    assert set(found) == set(HOLDOUT_TP2)
    for name, want in HOLDOUT_TP2.items():
        if want is None:
            assert found[name]["outcome"] == "passed", found[name]["summary"]
        else:
            assert found[name]["outcome"] == "failed", found[name]["summary"]
            assert want in found[name]["summary"], found[name]["summary"]
