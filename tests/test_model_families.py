"""checkpoint.parameters on mixture-of-experts and vision-language checkpoints, against what
the REAL vLLM loaders did (issue 22 item 1).

``fixtures/loader_truth/models_outcomes.json`` holds what vLLM 0.26.0 and 0.33.0 did with
each tiny real-shaped checkpoint of ``fixtures/model_variants.py`` when their own config code,
model classes and ``DefaultModelLoader.load_weights`` ran on this CPU
(``scripts/models_truth_cpu.py``); ``models-vllm-<release>.json`` what the static reader made
of that release's model files (its ``hf_to_vllm_mapper``s, the scopes whose own
``load_weights`` map names, the expert layer's mapping, the conditions each module is built
under). The verdict of each release's facts must predict what that release did: refuses,
wrong (a parameter, or one expert of it, left unwritten), or works. The Qwen2-MoE (shared
expert), Mixtral (``w1``/``w2``/``w3`` experts), Qwen2-VL (LayerNorm vision tower) and
Qwen3-VL (deepstack mergers, ``nn.Embedding`` position table) cases are the held-out
families: the rules were written from Qwen3-MoE and Qwen2.5-VL.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures import model_variants
from pytest_vllm_env.checks import checkpoint_load
from pytest_vllm_env.facts.vllm_load_plan import LoadPlan, plan
from pytest_vllm_env.facts.vllm_loader_facts import VllmLoaderFacts
from pytest_vllm_env.facts.vllm_quant_decision import decide
from pytest_vllm_env.findings import Finding
from pytest_vllm_env.readers.checkpoint import read_checkpoint
from pytest_vllm_env.readers.shard_index import read_layout, read_samples

TRUTH_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "loader_truth"
TRUTH = json.loads((TRUTH_DIR / "models_outcomes.json").read_text())
RELEASES = ("0.26.0", "0.33.0")
FACTS = {
    r: VllmLoaderFacts.from_json(json.loads((TRUTH_DIR / f"models-vllm-{r}.json").read_text()))
    for r in RELEASES
}


def truth_effect(name: str, release: str) -> str:
    """What the real loader did: refuses, wrong (a parameter not wholly written, or the
    checkpoint's own, different, lm_head dropped for the tied embedding: not loaded, or
    loaded into the embedding's shared parameter that the embedding's tensor then
    overwrites), works."""
    rec = TRUTH["variants"][name][release]
    assert "probe_error" not in rec, rec
    if rec.get("refused"):
        return "refuses"
    if rec["unset"]:
        return "wrong"
    head = rec.get("head_param")
    if "lm_head.weight" in rec["not_routed"] or (head and not head.endswith("lm_head.weight")):
        tensors = model_variants.tensors_of(model_variants.VARIANTS[name].base)
        embed = next(t for n, t in tensors.items() if n.endswith("embed_tokens.weight"))
        if tensors["lm_head.weight"][2] != embed[2]:
            return "wrong"
    return "works"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every variant, written once from the recorded tensor lists."""
    root = tmp_path_factory.mktemp("model-variants")
    for name in model_variants.VARIANTS:
        model_variants.make(name, root / name)
    return root


def planned(folder: Path, name: str, release: str) -> LoadPlan:
    """The static load plan of one variant with that release's recorded facts."""
    facts = FACTS[release]
    ckpt = read_checkpoint(name, folder)
    decision = decide(ckpt.config, ckpt.hf_quant_config, None, facts.loader, facts.modelopt)
    arch = (ckpt.config or {}).get("architectures", [None])[0]
    return plan(
        read_layout(folder), ckpt.config or {}, decision, facts.models.get(arch), facts.loader,
        facts.kv, facts.modelopt, samples=read_samples,
    )  # fmt: skip


def verdict(folder: Path, name: str, release: str) -> Finding:
    return checkpoint_load.parameters(planned(folder, name, release), name, release)


def effect(f: Finding) -> str:
    if f.outcome == "failed":
        return str(f.evidence.get("vllm_effect"))
    return "works" if f.outcome in ("passed", "warning") else f.outcome


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("name", list(model_variants.VARIANTS))
def test_verdict_predicts_what_the_real_loader_did(built: Path, name: str, release: str) -> None:
    f = verdict(built / name, name, release)
    assert effect(f) == truth_effect(name, release), (f.outcome, f.summary, f.evidence)


@pytest.mark.parametrize("release", RELEASES)
def test_the_parameter_set_is_the_one_vllm_builds(built: Path, release: str) -> None:
    """Every parameter the real loader built for each base is one the plan expects, and
    no other (names; the shapes of those the plan sizes)."""
    for name in ("qwen3moe", "qwen25vl", "qwen2moe", "mixtral", "qwen2vl", "qwen3vl"):
        p = planned(built / name, name, release)
        real = TRUTH["variants"][name][release]
        shapes = real["shapes"]["0"]  # layer 0's weights, as the real model built them
        layer0 = {n for n in p.params if ".layers.0." in n and n.endswith(".weight")}
        layer0 = {n for n in layer0 if "norm" not in n}
        assert layer0 == set(shapes), (name, sorted(layer0 ^ set(shapes)))
        for n, shape in shapes.items():
            planned_shape = p.params[n].shapes
            if n.endswith(("w13_weight", "w2_weight")):
                e = len({s.split(":")[0] for s in p.params[n].shards})
                one = next(iter(planned_shape.values()))
                wide = 2 if n.endswith("w13_weight") else 1
                assert [e, one[0] * wide, one[1]] == shape, n
            elif len(planned_shape) == 1:
                assert list(next(iter(planned_shape.values()))) == shape, n


@pytest.mark.parametrize("release", RELEASES)
def test_an_expert_left_out_is_a_wrong_load_not_a_refusal(built: Path, release: str) -> None:
    f = verdict(built / "qwen3moe-expert-missing", "qwen3moe-expert-missing", release)
    assert f.outcome == "failed" and f.evidence["vllm_effect"] == "wrong"
    assert "w13_weight (shard 2:w3) gets no tensor" in f.summary, f.summary


@pytest.mark.parametrize("release", RELEASES)
def test_an_expert_beyond_num_experts_is_not_loaded(built: Path, release: str) -> None:
    p = planned(built / "qwen3moe-expert-out-of-range", "qwen3moe-expert-out-of-range", release)
    fate = next(f for f in p.fates if f.tensor.endswith("experts.4.gate_proj.weight"))
    assert fate.fate == "dropped" and "expert 4 of 4" in fate.why


@pytest.mark.parametrize("release", RELEASES)
def test_a_vision_block_the_config_lacks_is_refused(built: Path, release: str) -> None:
    f = verdict(built / "qwen25vl-extra-block", "qwen25vl-extra-block", release)
    assert f.outcome == "failed" and "visual.blocks.2" in f.summary, f.summary


# -- the integration tier: the real wheels' files -------------------------------------------------
VENVS = Path.home() / ".cache" / "pytest-vllm-env" / "venvs"


def _site(release: str) -> Path:
    """The site-packages of the cached venv of that release (scripts/loader_truth_cpu.py)."""
    found = sorted((VENVS / f"vllm-{release}" / "lib").glob("python3*/site-packages"))
    if not found:
        pytest.skip(f"no venv for vLLM {release}: make it as scripts/loader_truth_cpu.py says")
    return found[0]


def _archs() -> list[str]:
    bases = sorted({v.base for v in model_variants.VARIANTS.values()})
    return [model_variants.spec(b)["config"]["architectures"][0] for b in bases]


@pytest.mark.integration
@pytest.mark.parametrize("release", RELEASES)
def test_recorded_model_facts_are_the_real_wheels(release: str) -> None:
    """models-vllm-<release>.json is what the reader makes of that release's files now."""
    from pytest_vllm_env.facts import vllm_loader_facts

    fresh = vllm_loader_facts.read(_site(release), _archs(), release).to_json()
    recorded = json.loads((TRUTH_DIR / f"models-vllm-{release}.json").read_text())
    assert json.loads(json.dumps(fresh, sort_keys=True)) == recorded


def _real_files(release: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Every file the reader reads of that release's installed vLLM (and transformers) for
    the bases' architectures: path -> text."""
    from pytest_vllm_env.facts import vllm_loader_facts

    site = _site(release)
    seen: dict[str, str] = {}
    plain = vllm_loader_facts.source_loader

    def recording(root: Path, unreadable: list[str] | None = None):
        load = plain(root, unreadable)

        def wrapped(rel: str) -> str | None:
            text = load(rel)
            if text is not None:
                seen[rel] = text
            return text

        return wrapped

    monkeypatch.setattr(vllm_loader_facts, "source_loader", recording)
    vllm_loader_facts.read(site, _archs(), release)
    monkeypatch.setattr(vllm_loader_facts, "source_loader", plain)
    return seen


@pytest.mark.integration
@pytest.mark.parametrize("release", RELEASES)
def test_the_suite_judges_with_the_real_model_files(
    pytester: pytest.Pytester, env_builder, tmp_path: Path, release: str, monkeypatch
) -> None:
    """The conformance suite on an env whose vLLM holds the real wheel's model, loader and
    expert-layer files (and its transformers' config files), the checkpoint given as
    ``--modelopt-checkpoint`` (checkpoint.parameters judges any format): a passing and a
    failing case of each family, with the real loaders' effect."""
    from fixtures.vllm_standin import install_vllm

    install_vllm(env_builder, release, extra=_real_files(release, monkeypatch))
    cases = {
        "qwen3moe": ("passed", "works"),
        "qwen3moe-expert-missing": ("failed", "wrong"),
        "qwen25vl-new-names": ("passed", "works"),
        "qwen25vl-extra-block": ("failed", "refuses"),
        "mixtral-expert-transposed": ("failed", "refuses"),
        "qwen2vl-vision-norm-bias-missing": ("failed", "refuses"),
    }
    for name, (outcome, effect_) in cases.items():
        ckpt = model_variants.make(name, tmp_path / name)
        report = pytester.path / f"{name}.json"
        result = pytester.runpytest(
            "--vllm-conformance", "-p", "no:randomly", "-m", "toolchain", "-k",
            "test_checkpoint", f"--vllm-env={env_builder.prefix}", f"--modelopt-checkpoint={ckpt}",
            f"--vllm-env-report={report}",
        )  # fmt: skip
        assert "Traceback" not in result.stdout.str()
        checks = {c["id"]: c for c in json.loads(report.read_text())["checks"]}
        found = checks["checkpoint.parameters"]
        assert found["outcome"] == outcome, (name, found["summary"])
        assert found["evidence"].get("vllm_effect") == effect_, (name, found["evidence"])
        assert truth_effect(name, release) == effect_
