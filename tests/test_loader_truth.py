"""The checkpoint.* and launch.* verdicts against what the REAL vLLM loaders did (issue 22).

``fixtures/loader_truth/outcomes.json`` holds what vLLM 0.26.0 (torch 2.11.0) and vLLM
0.33.0 (torch 2.14.0) did with each mutation of ``fixtures/loader_variants.py`` when their
own config code, model classes and weight loaders ran on this CPU
(``scripts/loader_truth_cpu.py``, ``probes/vllm_load_weights.py``); ``vllm-<release>.json``
what the static reader made of each wheel's source. Each verdict here is computed with that
release's facts and must predict what that release did: refuses, wrong (a parameter left at
its initial value, numbers cast into another meaning, a head replaced by the tie, a stale
copy loaded), or works.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures import loader_variants
from pytest_vllm_env.checks import checkpoint_load
from pytest_vllm_env.facts.vllm_load_plan import plan
from pytest_vllm_env.facts.vllm_loader_facts import VllmLoaderFacts
from pytest_vllm_env.facts.vllm_quant_decision import decide
from pytest_vllm_env.facts.vllm_tp import largest_working, split
from pytest_vllm_env.readers.checkpoint import read_checkpoint, read_scales, read_weight_samples
from pytest_vllm_env.readers.shard_index import read_layout, read_samples

TRUTH_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "loader_truth"
TRUTH = json.loads((TRUTH_DIR / "outcomes.json").read_text())
RELEASES = ("0.26.0", "0.33.0")
FACTS = {
    r: VllmLoaderFacts.from_json(json.loads((TRUTH_DIR / f"vllm-{r}.json").read_text()))
    for r in RELEASES
}
GOOD = {"english-fp8": "good", "llama-fp8": "good-tied", "qwen3-bf16": "qwen3-good"}


def truth_effect(name: str, release: str, folder: Path) -> str:
    """What the real loader's record says happened, as an effect."""
    rec = TRUTH["variants"][name][release]
    assert "probe_error" not in rec, rec
    if rec.get("undetermined"):  # the CPU cannot settle it: scripts/device/loader_truth.sh
        return "undetermined"
    if rec.get("refused"):
        return "refuses"
    if rec["unset"]:
        return "wrong"
    numeric = [
        c
        for c in rec["casts"]
        if c[2] in ("uint8", "int8") or c[2].startswith("float8") and not c[3].startswith("float8")
    ]
    if numeric:
        return "wrong"
    good = TRUTH["variants"][GOOD[loader_variants.VARIANTS[name].base]][release]
    if rec["sums"] != good["sums"]:  # another copy of a tensor won
        return "wrong"
    if "lm_head.weight" in rec["not_routed"]:
        # the tie dropped the checkpoint's own head: wrong when it is not the embedding
        tensors = read_checkpoint(name, folder).tensors
        head, embed = tensors["lm_head.weight"], tensors["model.embed_tokens.weight"]
        if read_samples(head) != read_samples(embed):
            return "wrong"
    return "works"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every variant, built once from the committed exports."""
    root = tmp_path_factory.mktemp("loader-variants")
    for name in loader_variants.VARIANTS:
        loader_variants.make(name, root / name)
    return root


def verdict(folder: Path, name: str, release: str):
    facts = FACTS[release]
    launch = loader_variants.VARIANTS[name].launch
    ckpt = read_checkpoint(name, folder)
    scales, _ = read_scales(ckpt) if ckpt.tensors_readable else ({}, {})
    samples = read_weight_samples(ckpt) if ckpt.tensors_readable else {}
    decision = decide(
        ckpt.config, ckpt.hf_quant_config, launch.get("quantization"), facts.loader, facts.modelopt
    )
    arch = (ckpt.config or {}).get("architectures", [None])[0]
    p = plan(
        read_layout(folder), ckpt.config or {}, decision, facts.models.get(arch), facts.loader,
        facts.kv, facts.modelopt, samples=read_samples,
    )  # fmt: skip
    tp = int(launch.get("tp", 1))
    return checkpoint_load.predict(
        p, split(p, tp), largest_working(p), name, release, samples, scales
    )


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("name", list(loader_variants.VARIANTS))
def test_verdict_predicts_what_the_real_loader_did(built, name, release):
    folder = built / name
    want = truth_effect(name, release, folder)
    if want == "undetermined":
        pytest.skip(f"{name}: {TRUTH['variants'][name][release]['undetermined']} (a GPU's to say)")
    findings = verdict(folder, name, release)
    got = checkpoint_load.effect(findings)
    shown = [f"{f.id} {f.outcome}: {f.summary}" for f in findings if f.outcome != "passed"]
    assert got == want, (name, release, shown)
    if want == "works":
        casts = TRUTH["variants"][name][release]["casts"]
        to_fp8 = [c for c in casts if c[3].startswith("float8") and not c[2].startswith("float8")]
        warned = [f for f in findings if f.outcome == "warning"]
        assert not warned or to_fp8, (name, release, shown)


@pytest.mark.parametrize("release", RELEASES)
def test_refusals_name_the_tensor_vllm_named(built, release):
    """Where the real loader refused a tensor, the verdict names that same tensor."""
    for name, rec in TRUTH["variants"].items():
        refused = rec[release].get("refused") or {}
        if refused.get("stage") != "load" or not refused.get("tensor"):
            continue
        findings = verdict(built / name, name, release)
        named = [t for f in findings for t in f.evidence.get("tensors", [])]
        want = refused["tensor"]
        if "were not initialized from checkpoint" in refused["message"]:
            # raised after the last tensor: the message names the parameters
            want = refused["message"].split("{'", 1)[1].split("'", 1)[0]
        assert want in named or any(want in f.summary for f in findings), (name, release, refused)


def test_the_releases_differ_where_the_loader_changed(built):
    """0.33.0 unties a head the checkpoint carries and refuses a tied head's stray scale;
    0.26.0 skips every lm_head. tensor of a tied model. The same files, two verdicts."""
    for name, want in (
        ("tied-head-differs", ("wrong", "works")),
        ("tied-head-input-scale", ("works", "refuses")),
    ):
        got = tuple(checkpoint_load.effect(verdict(built / name, name, r)) for r in RELEASES)
        assert got == want, name
        assert tuple(truth_effect(name, r, built / name) for r in RELEASES) == want


def test_the_corpus_covers_each_outcome_in_each_release():
    for release in RELEASES:
        effects = set()
        for rec in TRUTH["variants"].values():
            r = rec[release]
            if r.get("undetermined"):
                continue
            effects.add("refuses" if r.get("refused") else "wrong" if r.get("unset") else "loads")
        assert effects == {"refuses", "wrong", "loads"}
    assert set(TRUTH["variants"]) == set(loader_variants.VARIANTS)


# The modelopt.* rules that contradict what the real loaders did with these mutations (false
# alarms, or the wrong kind of failure): (variant, check id) -> what the rule says and what
# vLLM did. Shrink-only; now empty: modelopt.files-readable leaves a tensor in two files and an
# index entry no file holds to checkpoint.shards (vLLM loads both), modelopt.quant-config
# notes an hf_quant_config.json vLLM never reads, and modelopt.tensors-complete says "wrong"
# for integer bytes where FP8 is built (vLLM's copy_ converts them as numbers).
OLD_RULE_CONTRADICTIONS: dict[tuple[str, str], str] = {}


def test_old_rules_contradict_the_real_loaders_only_where_listed(built):
    """No modelopt.* failure on a ModelOpt export says other than what vLLM did with it."""
    from pytest_vllm_env.checks import gpu_prediction, modelopt
    from pytest_vllm_env.readers.vllm_source import Registry
    from pytest_vllm_env.tables.archs import parse_arch

    registry = Registry("registry.py", frozenset({"LlamaForCausalLM"}))
    found = set()
    for name, v in loader_variants.VARIANTS.items():
        if v.base not in ("english-fp8", "llama-fp8"):  # modelopt.* judge ModelOpt exports
            continue
        folder = built / name
        ckpt = read_checkpoint(name, folder)
        scales, unread = read_scales(ckpt) if ckpt.tensors_readable else ({}, {})
        samples = read_weight_samples(ckpt) if ckpt.tensors_readable else {}
        for release in RELEASES:
            f = FACTS[release]
            findings = modelopt.predict(
                ckpt, source=f.modelopt, registry=registry, vllm_version=release, scales=scales,
                unread=unread, samples=samples, archs=[parse_arch("9.0")],
                archs_source="--cuda-arch", kv_naming=f.kv,
            )  # fmt: skip
            effect, ids, _ = gpu_prediction.predicted_effect(findings)
            effect = "refuses" if effect == "fails" else effect
            if effect != "works" and effect != truth_effect(name, release, folder):
                found |= {(name, i) for i in ids}
    assert found == set(OLD_RULE_CONTRADICTIONS)
