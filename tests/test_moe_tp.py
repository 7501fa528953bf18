"""Fused MoE experts split over tensor-parallel ranks (issue 22): ``quant.tensor-parallel`` and
``quant.tensors-complete`` read one per-rank model (facts/tp_shares.py), here its MoE part,
held against what the real vLLM 0.26.0 and 0.33.0 loaders did on the CPU with every rank
simulated (fixtures/loader_truth/moe_tp.json, ``python scripts/loader_truth_cpu.py --corpus
moe``; the checkpoints are fixtures/moe_tp.py's tiny Qwen3-MoEs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures import moe_tp
from fixtures.envs import EnvBuilder
from fixtures.field_reports import SELECT
from tests.test_field_reports import standin_env

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "fixtures" / "loader_truth" / "moe_tp.json"
RELEASES = ("0.26.0", "0.33.0")
# what readers.vllm_quant_source reads of each release's fused_moe/oracle/fp8.py
# (refine_fp8_moe_block_shape's smallest block; 0.26.0 has none): recorded with the outcomes
REFINE = {"0.26.0": None, "0.33.0": 32}


def _judged(name: str, folder: Path, release: str):
    """(quant.tensor-parallel's problems, quant.tensors-complete's finding) for a variant."""
    from pytest_vllm_env.checks.quant_tensors import tensors_complete
    from pytest_vllm_env.facts.quant_plan import plan
    from pytest_vllm_env.facts.vllm_tp import format_schemes, format_split
    from pytest_vllm_env.readers.checkpoint import read_checkpoint

    v = moe_tp.VARIANTS[name]
    ckpt = read_checkpoint(name, moe_tp.make(name, folder))
    p = plan(ckpt)
    schemes = format_schemes(p.schemes, p.method)
    split = format_split(ckpt.config or {}, schemes, v.tp, REFINE[release])
    return split.problems, tensors_complete(ckpt, p, None, v.tp, REFINE[release])


def test_the_outcomes_are_recorded_for_every_variant():
    record = json.loads(RECORD.read_text())
    assert set(record["variants"]) == set(moe_tp.VARIANTS)
    assert record["sources"] == {r: REFINE[r] for r in RELEASES}


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("name", list(moe_tp.VARIANTS))
def test_the_model_says_what_the_real_loader_did(tmp_path, name, release):
    """Each variant's prediction (moe_tp.Variant.expected) is what the real loader did, and
    both checks say it: a refusal in vLLM's words, or nothing refused where it loads."""
    truth = json.loads(RECORD.read_text())["variants"][name][release]
    expected = moe_tp.VARIANTS[name].expected(release)
    if truth.get("gpu_only"):
        pytest.skip(f"{name} on {release}: {truth['gpu_only']} (scripts/device/moe_tp.sh)")
    refused = truth.get("refused")
    if expected == "loads":
        assert refused is None and "probe_error" not in truth, truth
    else:
        assert refused is not None, truth
        assert expected in f"{refused['type']}: {refused['message']}", refused
    problems, finding = _judged(name, tmp_path / name, release)
    if expected == "loads":
        assert problems == [], problems
        assert finding.evidence.get("vllm_effect") != "refuses", finding.summary
        return
    assert problems, name
    assert finding.outcome == "failed" and finding.evidence["vllm_effect"] == "refuses"
    if expected != "AssertionError":  # FusedMoEConfig's bare assert has no words
        assert any(expected in p.message for p in problems), problems
        assert expected in finding.summary, finding.summary


def test_the_suite_fails_a_split_that_breaks_the_experts_blocks_and_passes_one_that_does_not(
    pytester, tmp_path
):
    """The bundled suite against vLLM 0.26.0 stand-ins at --tensor-parallel-size=2: 384-wide
    FP8 experts (192 rows a rank, not whole 128-row blocks) are refused by both checks with
    vLLM's words and a smaller size to use; 256-wide ones pass."""
    env = standin_env(EnvBuilder(tmp_path / "ws"), "0.26.0")
    bad = moe_tp.make("ct-fp8-block-inter384-tp2", tmp_path / "bad")
    good = moe_tp.make("ct-fp8-block-inter256-tp2", tmp_path / "good")
    report = pytester.path / "report.json"
    result = pytester.runpytest(
        "--vllm-conformance", "-p", "no:randomly", "-m", "toolchain", "-k", SELECT,
        f"--vllm-env={env.prefix}", f"--vllm-env-report={report}", "--cuda-arch=9.0",
        f"--vllm-checkpoint={bad}", f"--vllm-checkpoint={good}", "--tensor-parallel-size=2",
    )  # fmt: skip
    assert "Traceback" not in result.stdout.str()
    checks = json.loads(report.read_text())["checks"]
    by = {(c["id"], "bad" if "[bad]" in c["test"] else "good"): c for c in checks}
    for check in ("quant.tensor-parallel", "quant.tensors-complete"):
        failed = by[(check, "bad")]
        assert failed["outcome"] == "failed", failed
        assert "The output_size of gate's and up's weight = 192" in failed["summary"], failed
        assert "tensor-parallel-size" in failed["fix"], failed
        assert by[(check, "good")]["outcome"] == "passed", by[(check, "good")]
    assert "model.layers.0.mlp.experts" in by[("quant.tensor-parallel", "good")]["summary"] or (
        by[("quant.tensor-parallel", "good")]["evidence"]["per_rank"].get(
            "model.layers.0.mlp.experts"
        )
        == [[128, 128], 512]
    )


def test_shares_of_a_linear_and_of_fused_experts():
    """The per-rank model itself: replicated key/value heads, an uneven split, the experts'
    rank width, Fp8Config's allowance for a merged layer."""
    from pytest_vllm_env.facts import tp_shares as t

    s = t.qkv(heads=8, kv_heads=1, head_dim=128, inp=1024, tp=2)
    assert s.rank_outs == (512, 128, 128) and s.distinct == (2, 1, 1)
    assert t.fp8_block(s, (128, 128)) is None  # not a tp split: q and k checked, both whole
    assert t.column([384, 384], 512, 4).rank_outs == (96, 96)
    assert t.row(512, 384, 3).rank_in == 128 and t.row(512, 385, 3).uneven == ((-1, 385),)
    merged = t.column([384, 384], 512, 4)
    assert t.fp8_block(merged, (128, 128), config_has_block_size=True) is None
    assert t.fp8_block(merged, (128, 128))[3].startswith("Weight output_partition_size = 96")
    m = t.moe(384, 512, 4)
    assert m.rank_inter == 96 and not m.uneven and t.moe(198, 512, 4).uneven
    assert t.moe_fp8_block(m, (128, 128)).endswith(
        "= 96 is not divisible by weight quantization block_n = 128"
    )
    assert t.moe_fp8_block(m, (128, 128), refine_min=32) is None  # gcd(128, 96, 512) = 32
    assert t.moe_fp8_block(t.moe(160, 512, 2), (128, 128), refine_min=32)  # gcd 16 < 32
    assert t.moe_wna16_group(t.moe(384, 512, 2), 128) and not t.moe_wna16_group(m, -1)


def test_the_refinement_is_read_from_the_env_source():
    from pytest_vllm_env.readers.vllm_quant_source import parse

    src = (
        "def refine_fp8_moe_block_shape(config, weight_block_size):\n"
        "    refine = math.gcd(1, 2)\n    if refine < 32:\n        return None\n"
    )
    assert parse(None, None, None, src).moe_fp8_refine_min == 32
    assert parse(None, None, None, "def other():\n    pass\n").moe_fp8_refine_min is None
    assert parse(None, None, None).moe_fp8_refine_min is None


@pytest.mark.integration
@pytest.mark.parametrize("release", RELEASES)
def test_the_real_wheels_say_what_the_record_holds(release):
    """readers.vllm_quant_source on each release's own fused_moe/oracle/fp8.py: 0.33.0
    refines Fp8Config's experts' blocks down to 32, 0.26.0 does not refine."""
    import zipfile

    from fixtures.downloads import wheel
    from pytest_vllm_env.readers.vllm_quant_source import MOE_FP8_ORACLE_PY, parse

    with zipfile.ZipFile(wheel(f"vllm=={release}")) as zf:
        text = zf.read(MOE_FP8_ORACLE_PY).decode()
    assert parse(None, None, None, text).moe_fp8_refine_min == REFINE[release]
