# ruff: noqa: E501  (expected messages are kept whole: they are what users read)
"""The checkpoint.* and launch.* checks, run as users run them: the conformance suite against
fixture envs holding stand-ins of vLLM 0.26.0's and 0.33.0's loader files
(fixtures/loader_standin.py) and mutations of the committed real ModelOpt exports
(fixtures/loader_variants.py); each failing case is one the real loaders refused or ran
wrong on the CPU (fixtures/loader_truth/outcomes.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures import loader_standin, loader_variants
from fixtures.envs import EnvBuilder
from fixtures.vllm_standin import install_vllm

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-m", "toolchain", "-k", "test_checkpoint")
IDS = (
    "checkpoint.shards",
    "checkpoint.quant-config-source",
    "checkpoint.parameters",
    "launch.quantization",
    "launch.tensor-parallel",
    "checkpoint.load-probe",
)


def make_env(env_builder: EnvBuilder, release: str) -> EnvBuilder:
    install_vllm(env_builder, release, extra=loader_standin.files(release))
    return env_builder


@pytest.fixture
def env(env_builder: EnvBuilder) -> EnvBuilder:
    """A Pixi env whose vLLM has 0.26.0's loader structure (our stand-in text)."""
    return make_env(env_builder, "0.26.0")


def run(pytester: pytest.Pytester, env: EnvBuilder, ckpt: Path, *extra: str):
    report = pytester.path / "report.json"
    result = pytester.runpytest(
        *SUITE,
        f"--vllm-env={env.prefix}",
        f"--modelopt-checkpoint={ckpt}",
        "-rs",
        f"--vllm-env-report={report}",
        *extra,
    )
    assert "Traceback" not in result.stdout.str()
    checks = {c["id"]: c for c in json.loads(report.read_text())["checks"]}
    return result, checks


def variant(tmp_path: Path, name: str) -> Path:
    return loader_variants.make(name, tmp_path / "ckpts" / name)


def test_good_export_passes_every_check(pytester, env, tmp_path):
    result, checks = run(pytester, env, variant(tmp_path, "good"))
    assert result.ret == 0
    assert checks["checkpoint.shards"]["outcome"] == "passed"
    assert checks["checkpoint.parameters"]["outcome"] == "passed"
    assert "fill all" in checks["checkpoint.parameters"]["summary"]
    assert checks["checkpoint.quant-config-source"]["outcome"] == "passed"
    assert (
        "is never read while config.json has a quantization_config"
        in checks["checkpoint.quant-config-source"]["summary"]
    )
    assert checks["launch.quantization"]["outcome"] == "passed"
    assert checks["launch.tensor-parallel"]["outcome"] == "skipped"
    assert checks["checkpoint.load-probe"]["outcome"] == "skipped"


def test_missing_norm_fails_as_a_wrong_load(pytester, env, tmp_path):
    result, checks = run(pytester, env, variant(tmp_path, "norm-missing"))
    found = checks["checkpoint.parameters"]
    assert found["outcome"] == "failed" and found["evidence"]["vllm_effect"] == "wrong"
    assert (
        "model.layers.1.post_attention_layernorm.weight gets no tensor: it keeps its initial 1.0"
        in found["summary"]
    )
    result.stdout.fnmatch_lines(["*fix: add the missing tensors to the checkpoint*"])


def test_unknown_tensor_fails_as_vllm_refuses_it(pytester, env, tmp_path):
    result, checks = run(pytester, env, variant(tmp_path, "extra-unknown-tensor"))
    found = checks["checkpoint.parameters"]
    assert found["outcome"] == "failed" and found["evidence"]["vllm_effect"] == "refuses"
    assert (
        "There is no module or parameter named 'model.layers.0.self_attn.gate'" in found["summary"]
    )
    assert found["evidence"]["tensors"] == ["model.layers.0.self_attn.gate.weight"]


def test_harmless_extras_pass_saying_why(pytester, env, tmp_path):
    for name, said in (
        ("extra-bias", "vLLM ignores the suffix"),
        ("rotary-inv-freq", "a rotary-embedding buffer vLLM drops"),
    ):
        _, checks = run(pytester, env, variant(tmp_path, name))
        assert checks["checkpoint.parameters"]["outcome"] == "passed", name
        assert said in checks["checkpoint.parameters"]["summary"]


def test_shard_the_index_does_not_name_is_not_read(pytester, env, tmp_path):
    result, checks = run(pytester, env, variant(tmp_path, "stray-file-not-in-index"))
    found = checks["checkpoint.shards"]
    assert found["outcome"] == "failed"
    assert (
        "model.norm.weight (in extra.safetensors, which the index does not name" in found["summary"]
    )
    result.stdout.fnmatch_lines(
        ["*fix: name every shard that holds tensors in model.safetensors.index.json's weight_map*"]
    )


def test_identical_duplicate_passes_and_a_stale_last_copy_fails(pytester, env, tmp_path):
    _, checks = run(pytester, env, variant(tmp_path, "duplicate-identical"))
    assert checks["checkpoint.shards"]["outcome"] == "passed"
    assert "(identical copies)" in checks["checkpoint.shards"]["summary"]
    _, checks = run(pytester, env, variant(tmp_path, "duplicate-stale-last"))
    found = checks["checkpoint.shards"]
    assert found["outcome"] == "failed"
    assert (
        "keeps the last, model-00002-of-00002.safetensors's, while the index says model-00001-of-00002.safetensors"
        in found["summary"]
    )


def test_index_naming_a_missing_file_is_refused(pytester, env, tmp_path):
    _, checks = run(pytester, env, variant(tmp_path, "index-file-absent"))
    found = checks["checkpoint.shards"]
    assert found["outcome"] == "failed" and found["evidence"]["vllm_effect"] == "refuses"
    assert "Weight files referenced in index but missing" in found["summary"]
    assert checks["checkpoint.parameters"]["outcome"] == "skipped"


@pytest.mark.parametrize(
    ("release", "outcome", "said"),
    [
        (
            "0.26.0",
            "failed",
            "vLLM 0.26.0 ties lm_head to the embedding and skips the checkpoint's own head",
        ),
        ("0.33.0", "passed", "vLLM builds lm_head untied and loads it"),
    ],
)
def test_tied_config_with_a_head_of_its_own_depends_on_the_release(
    pytester, env_builder, tmp_path, release, outcome, said
):
    env = make_env(env_builder, release)
    result, checks = run(pytester, env, variant(tmp_path, "tied-head-differs"))
    found = checks["checkpoint.parameters"]
    assert found["outcome"] == outcome
    assert said in found["summary"]
    if outcome == "failed":
        result.stdout.fnmatch_lines(['*fix: set "tie_word_embeddings": false in config.json*'])


@pytest.mark.parametrize(("release", "outcome"), [("0.26.0", "passed"), ("0.33.0", "failed")])
def test_stray_scale_of_a_tied_head_depends_on_the_release(
    pytester, env_builder, tmp_path, release, outcome
):
    env = make_env(env_builder, release)
    _, checks = run(pytester, env, variant(tmp_path, "tied-head-input-scale"))
    found = checks["checkpoint.parameters"]
    assert found["outcome"] == outcome
    if outcome == "failed":
        assert "There is no module or parameter named 'lm_head.input_scale'" in found["summary"]


def test_hf_quant_config_alone_with_an_algo_vllm_cannot_name_is_refused(pytester, env, tmp_path):
    result, checks = run(pytester, env, variant(tmp_path, "hf-only-mxfp8-name"))
    found = checks["checkpoint.quant-config-source"]
    assert found["outcome"] == "failed"
    assert "Unknown ModelOpt quant algo: MXFP8 (it reads hf_quant_config.json)" in found["summary"]
    result.stdout.fnmatch_lines(
        ["*fix: give config.json a quantization_config as ModelOpt >= 0.31 writes it*"]
    )


def test_config_files_that_disagree_pass_saying_which_one_vllm_reads(pytester, env, tmp_path):
    _, checks = run(pytester, env, variant(tmp_path, "hf-disagrees-algo"))
    found = checks["checkpoint.quant-config-source"]
    assert found["outcome"] == "passed"
    assert "vLLM 0.26.0 reads config.json" in found["summary"]
    assert (
        "quant_algo: config.json 'FP8', hf_quant_config.json 'FP8_PER_CHANNEL_PER_TOKEN'"
        in found["summary"]
    )


def test_quantization_argument_vllm_replaces_passes_and_one_it_refuses_fails(
    pytester, env, tmp_path
):
    _, checks = run(pytester, env, variant(tmp_path, "good"), "--vllm-quantization=fp8")
    found = checks["launch.quantization"]
    assert found["outcome"] == "passed"
    assert "quantization='fp8' (--vllm-quantization) is replaced" in found["summary"]
    result, checks = run(pytester, env, variant(tmp_path, "pbwo"), "--vllm-quantization=fp8")
    found = checks["launch.quantization"]
    assert found["outcome"] == "failed" and found["evidence"]["vllm_effect"] == "refuses"
    assert (
        "does not match the quantization method specified in the `quantization` argument (fp8)"
        in found["summary"]
    )
    result.stdout.fnmatch_lines(["*fix: drop the quantization argument*"])


def test_tensor_parallel_sizes(pytester, env, tmp_path):
    good = variant(tmp_path, "good")
    _, checks = run(pytester, env, good, "--tensor-parallel-size=4")
    assert checks["launch.tensor-parallel"]["outcome"] == "passed"
    result, checks = run(pytester, env, good, "--tensor-parallel-size=3")
    found = checks["launch.tensor-parallel"]
    assert found["outcome"] == "failed"
    assert (
        "Total number of attention heads (4) must be divisible by tensor parallel size (3)"
        in found["summary"]
    )
    result.stdout.fnmatch_lines(["*fix: use --tensor-parallel-size=4*"])
    _, checks = run(pytester, env, variant(tmp_path, "pbwo"), "--tensor-parallel-size=2")
    found = checks["launch.tensor-parallel"]
    assert found["outcome"] == "failed"
    assert "FP8_PB_WO: each rank holds 64 rows of k, not whole 128-row blocks" in found["summary"]
    assert "model.layers.0.self_attn.v_proj.weight_scale" in found["evidence"]["tensors"]


def test_serve_command_file_gives_the_launch_arguments(pytester, env, tmp_path):
    script = tmp_path / "serve.sh"
    script.write_text(
        "#!/bin/sh\nvllm serve ./model \\\n  --tensor-parallel-size 3 \\\n  --quantization fp8\n"
    )
    _, checks = run(pytester, env, variant(tmp_path, "good"), f"--vllm-serve-args=@{script}")
    assert checks["launch.tensor-parallel"]["outcome"] == "failed"
    assert f"(--tensor-parallel-size in {script})" in checks["launch.tensor-parallel"]["summary"]
    assert f"(--quantization in {script})" in checks["launch.quantization"]["summary"]
    # the explicit option wins over the file
    _, checks = run(
        pytester,
        env,
        variant(tmp_path, "good"),
        f"--vllm-serve-args=@{script}",
        "--tensor-parallel-size=2",
    )
    assert checks["launch.tensor-parallel"]["outcome"] == "passed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--tensor-parallel-size=two",),
            "--tensor-parallel-size: 'two' is not a number (accepted: a whole number >= 1 and <= 1024)",
        ),
        (
            ("--tensor-parallel-size=0",),
            "--tensor-parallel-size: '0' is out of range (accepted: a whole number >= 1 and <= 1024)",
        ),
        (
            ("--tensor-parallel-size=2.5",),
            "--tensor-parallel-size: '2.5' is out of range (accepted: a whole number >= 1 and <= 1024)",
        ),
        (
            ("--vllm-serve-args=@/nonexistent/serve.sh",),
            "--vllm-serve-args: cannot read /nonexistent/serve.sh",
        ),
        (
            ("--vllm-serve-args=vllm serve m -tp",),
            "--vllm-serve-args: --vllm-serve-args: -tp has no value",
        ),
        (("--vllm-load-probe=yes",), "--vllm-load-probe: 'yes' is not one of meta, load"),
    ],
)
def test_bad_launch_options_are_usage_errors(pytester, env, tmp_path, args, message):
    result = pytester.runpytest(*SUITE, f"--vllm-env={env.prefix}", *args)
    assert result.ret == 4
    assert message in result.stderr.str()
    assert "Traceback" not in result.stderr.str()


def test_without_vllm_every_check_skips_saying_so(pytester, env_builder, tmp_path):
    env_builder.python()
    _, checks = run(pytester, env_builder, variant(tmp_path, "good"))
    for cid in IDS[:5]:
        assert checks[cid]["outcome"] == "skipped", cid
        assert "vLLM is not installed" in checks[cid]["summary"]


def test_a_model_class_the_reader_cannot_follow_skips_pointing_at_the_probe(
    pytester, env, tmp_path
):
    folder = variant(tmp_path, "good")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"] = ["Qwen2ForCausalLM"]  # registered, but mod.py has no such class
    (folder / "config.json").write_text(json.dumps(cfg))
    _, checks = run(pytester, env, folder)
    found = checks["checkpoint.parameters"]
    assert found["outcome"] == "skipped"
    assert (
        "static reading cannot decide" in found["summary"]
        and "--vllm-load-probe" in found["summary"]
    )
