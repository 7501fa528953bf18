"""What hostile values in files do (issue 21): nesting too deep for Python's parsers, and
sizes no real model has. Each is an error verdict naming the file, never a RecursionError
that ends the session (INTERNALERROR, no report) or a loop that runs for hours."""

from __future__ import annotations

import json
import time

import pytest

from fixtures.checkpoints import llama
from fixtures.envs import EnvBuilder
from fixtures.text import lit
from pytest_vllm_env import files

DEEP = 5000  # deeper than any recursion limit pytest runs under


def run_suite(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--vllm-conformance", "-p", "no:randomly", *args)


def test_loaders_turn_depth_into_value_errors(tmp_path):
    with pytest.raises(files.TooDeep, match="JSON nested too deeply"):
        files.loads_json("[" * DEEP + "]" * DEEP)
    for text in ("a = " + "[" * DEEP + "]" * DEEP, "a = " + "{b = " * DEEP + "1" + "}" * DEEP):
        with pytest.raises(files.TooDeep, match="TOML nested too deeply"):
            files.loads_toml(text)
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * DEEP + "]" * DEEP)
    with pytest.raises(ValueError):
        files.load_toml(deep)
    assert files.loads_toml("a = [[1]]") == {"a": [[1]]}


def test_deep_conda_meta_record_is_an_error_and_the_session_goes_on(
    pytester, env_builder: EnvBuilder
):
    """One such record in conda-meta ended the session with INTERNALERROR (the env is read
    at session start) and no report."""
    env_builder.python()
    deep = env_builder.broken_record("deep-1.0-0.json", "[" * DEEP + "]" * DEEP)
    report = pytester.path / "report.json"
    result = run_suite(
        pytester, "--vllm-env", str(env_builder.prefix), "-k", "test_env",
        "--vllm-env-report", str(report),
    )  # fmt: skip
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(
        [lit(f"*[env.conda-meta] ERROR: 1 conda-meta record(s) unreadable: {deep}: conda-meta "
             "record is JSON nested too deeply to read*")]
    )  # fmt: skip
    assert json.loads(report.read_text())["checks"]


def test_deep_config_json_is_an_error(pytester, env_builder: EnvBuilder, tmp_path):
    env_builder.python()
    ckpt = llama().write(tmp_path / "ckpt")
    (ckpt / "config.json").write_text('{"a": ' + "[" * DEEP + "]" * DEEP + "}")
    result = run_suite(
        pytester, "--vllm-env", str(env_builder.prefix), f"--modelopt-checkpoint={ckpt}",
        "-k", "test_files_readable",
    )  # fmt: skip
    result.stdout.fnmatch_lines(
        [lit(f"*[modelopt.files-readable] ERROR: *{ckpt / 'config.json'}: not JSON (JSON nested "
             "too deeply to read)*")]
    )  # fmt: skip


def test_deep_pixi_toml_is_an_error(pytester, env_builder: EnvBuilder):
    env_builder.python()
    manifest = env_builder.manifest("[activation.env]\nX = " + "[" * DEEP + "]" * DEEP + "\n")
    result = run_suite(pytester, "--vllm-env", str(env_builder.prefix), "-k", "test_env")
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(
        [lit(f"*[env.manifest] ERROR: {manifest} is not valid TOML: TOML nested too deeply*")]
    )


def test_absurd_layer_count_is_named_not_looped_over(pytester, env_builder: EnvBuilder, tmp_path):
    """``num_hidden_layers: 10**12`` in a config.json: the Gated-DeltaNet judgement counted
    layers one by one (hours of CPU); now the config is refused as no real model's, by name,
    and every judgement that sizes by it skips."""
    env_builder.python()
    ckpt = llama().write(tmp_path / "ckpt")
    config = json.loads((ckpt / "config.json").read_text())
    config.update(num_hidden_layers=10**12, architectures=["Qwen3NextForCausalLM"])
    config["text_config"] = {"vocab_size": 10**15}
    (ckpt / "config.json").write_text(json.dumps(config))
    start = time.monotonic()
    result = run_suite(
        pytester, "--vllm-env", str(env_builder.prefix), f"--modelopt-checkpoint={ckpt}",
        "-k", "test_files_readable or gdn",
    )  # fmt: skip
    assert time.monotonic() - start < 60
    result.stdout.fnmatch_lines(
        [lit("*[modelopt.files-readable] ERROR: *config.json: num_hidden_layers = "
             "1000000000000 (at most 100,000 is plausible); text_config.vocab_size = "
             "1000000000000000 (at most 1,000,000,000 is plausible): no model is that large*")]
    )  # fmt: skip


def test_plausible_sizes_are_read_as_before(tmp_path):
    """The bounds sit far above real models: a 405B-class config reads unchanged."""
    from pytest_vllm_env.readers.checkpoint import absurd_sizes

    big = {
        "num_hidden_layers": 126,
        "hidden_size": 16384,
        "intermediate_size": 53248,
        "vocab_size": 128256,
        "num_attention_heads": 128,
        "text_config": {"n_routed_experts": 256, "vocab_size": 262144},
    }
    assert absurd_sizes(big) == []
