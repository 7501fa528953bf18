"""The plugin's core: locating envs, settings, verdicts, the report, bad input."""

from __future__ import annotations

import json

import pytest

from fixtures.envs import EnvBuilder
from fixtures.text import lit

SUITE = ("--vllm-conformance", "-p", "no:randomly")


def run_suite(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*SUITE, "-m", "toolchain", "-k", "test_env", *args)


def test_good_env_passes_and_header_names_it(pytester, env_builder: EnvBuilder):
    env_builder.python("3.12.7")
    env_builder.dist("torch", "2.11.0")
    env_builder.dist("vllm", "0.26.0", requires=["torch==2.11.0"])
    env_builder.manifest()
    result = run_suite(pytester, "--vllm-env", str(env_builder.prefix))
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(
        [
            f"vllm-env: {env_builder.prefix}*pixi env 'default'*",
            "vllm-env: python 3.12.7; torch 2.11.0, vllm 0.26.0; CUDA toolkit: none in conda-meta",
        ]
    )


def test_env_name_resolves_through_the_manifest(pytester, env_builder: EnvBuilder):
    gpu = EnvBuilder(env_builder.workspace, "gpu")
    gpu.python()
    manifest = env_builder.manifest(
        """
        [feature.cuda.activation.env]
        CUDA_HOME = "${CONDA_PREFIX}/targets/x86_64-linux"

        [environments]
        gpu = ["cuda"]
        """
    )
    result = run_suite(pytester, "--vllm-env", "gpu", "--pixi-manifest", str(manifest))
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines([f"vllm-env: {gpu.prefix}*"])


def test_missing_prefix_is_one_usage_error(pytester, tmp_path):
    result = run_suite(pytester, "--vllm-env", str(tmp_path / "nope"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-vllm-env: */nope: no such directory.*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_prefix_that_is_not_an_env(pytester, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_suite(pytester, "--vllm-env", str(tmp_path / "empty"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*empty: not an environment (no conda-meta/*"])


def test_symlink_loop_prefix(pytester, tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    result = run_suite(pytester, "--vllm-env", str(tmp_path / "a"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*a: symlink loop while resolving the env prefix*"])


def test_unknown_env_name(pytester, env_builder: EnvBuilder):
    manifest = env_builder.manifest()
    result = run_suite(pytester, "--vllm-env", "cuda", "--pixi-manifest", str(manifest))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*defines no environment 'cuda' (it has: default)*"])


def test_bad_conda_meta_record_is_an_error_naming_the_file(pytester, env_builder: EnvBuilder):
    env_builder.python()
    bad = env_builder.broken_record("cuda-nvcc-12.8.93-0.json")
    result = run_suite(pytester, "--vllm-env", str(env_builder.prefix))
    result.assert_outcomes(passed=3, failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            lit(f"*[env.conda-meta] ERROR: 1 conda-meta record(s) unreadable: {bad}: *not JSON*"),
            "*fix: *pixi clean && pixi install*",
        ]
    )


def test_bad_manifest_toml_is_a_failed_check(pytester, env_builder: EnvBuilder):
    env_builder.python()
    (env_builder.workspace / "pixi.toml").write_text("[workspace\nname = 'x'\n")
    result = run_suite(
        pytester,
        "--vllm-env",
        str(env_builder.prefix),
        "--pixi-manifest",
        str(env_builder.workspace / "pixi.toml"),
    )
    result.assert_outcomes(passed=3, failed=2)  # the manifest, and activation that needs it
    result.stdout.fnmatch_lines([lit("*[env.manifest] ERROR: *pixi.toml is not valid TOML*")])
    assert "Traceback" not in result.stdout.str()


def test_activation_variables_from_manifest_and_scripts(env_builder: EnvBuilder):
    from pytest_vllm_env.env import PixiEnv

    env_builder.python()
    env_builder.activate_script(
        "~cuda-nvcc_activate.sh",
        'export NVCC_PREPEND_FLAGS="${NVCC_PREPEND_FLAGS} -ccbin=${CXX}"\nexport CXX=g++\n',
    )
    manifest = env_builder.manifest(
        """
        [activation.env]
        CUDA_HOME = "${CONDA_PREFIX}/targets/x86_64-linux"
        """
    )
    env = PixiEnv.read(env_builder.prefix, name="default", manifest=manifest)
    environ = env.environ()
    assert environ["CUDA_HOME"] == f"{env.prefix}/targets/x86_64-linux"
    assert environ["CXX"] == "g++"
    assert environ["PATH"].startswith(f"{env.prefix}/bin")
    assert env.activation.sources["CUDA_HOME"] == "[activation.env] in pixi.toml"
    assert env.activation.sources["CXX"].endswith("~cuda-nvcc_activate.sh")


def test_set_u_activation_script_fails_activation_check(pytester, env_builder: EnvBuilder):
    env_builder.python()
    env_builder.activate_script("broken.sh", "set -u\necho $UNSET_VARIABLE_X\n")
    result = run_suite(pytester, "--vllm-env", str(env_builder.prefix))
    result.assert_outcomes(passed=3, failed=1, skipped=1)  # no manifest: skipped
    line = "*[env.activation] FAILED: *broken.sh failed when sourced (exited *UNSET_VARIABLE_X*"
    result.stdout.fnmatch_lines([lit(line)])


def test_report_json_schema(pytester, env_builder: EnvBuilder):
    env_builder.python()
    env_builder.broken_record()
    report = pytester.path / "out" / "report.json"
    run_suite(pytester, "--vllm-env", str(env_builder.prefix), "--vllm-env-report", str(report))
    data = json.loads(report.read_text())
    assert data["schema"] == 1
    assert data["env"]["prefix"] == str(env_builder.prefix)
    ids = {c["id"]: c for c in data["checks"]}
    assert ids["env.conda-meta"]["outcome"] == "error"
    assert ids["env.conda-meta"]["fix"]
    assert set(ids["env.python"]) >= {"id", "area", "outcome", "summary", "fix", "evidence"}


def test_same_verdicts_under_xdist(pytester, env_builder: EnvBuilder):
    env_builder.python()
    env_builder.broken_record()
    serial, parallel = pytester.path / "s.json", pytester.path / "p.json"
    args = ("--vllm-env", str(env_builder.prefix))
    run_suite(pytester, *args, "--vllm-env-report", str(serial))
    result = pytester.runpytest_subprocess(
        *SUITE,
        "-m",
        "toolchain",
        "-k",
        "test_env",
        "-n",
        "2",
        *args,
        "--vllm-env-report",
        str(parallel),
    )
    result.assert_outcomes(passed=3, failed=1, skipped=1)

    def verdicts(path):
        return sorted((c["id"], c["outcome"]) for c in json.loads(path.read_text())["checks"])

    assert verdicts(serial) == verdicts(parallel)


def test_ini_keys_are_read(pytester, env_builder: EnvBuilder):
    env_builder.python()
    pytester.makeini(f"[pytest]\nvllm_env = {env_builder.prefix}\n")
    result = run_suite(pytester)
    result.stdout.fnmatch_lines([f"vllm-env: {env_builder.prefix}*(--vllm-env*"])


def test_option_beats_ini(pytester, env_builder: EnvBuilder, tmp_path):
    env_builder.python()
    pytester.makeini(f"[pytest]\nvllm_env = {tmp_path / 'nope'}\n")
    result = run_suite(pytester, "--vllm-env", str(env_builder.prefix))
    result.assert_outcomes(passed=4, skipped=1)


def test_several_envs_in_one_run(pytester, env_builder: EnvBuilder):
    other = EnvBuilder(env_builder.workspace, "cuda")
    for b in (env_builder, other):
        b.python()
    other.broken_record()
    result = run_suite(
        pytester, "--vllm-env", str(env_builder.prefix), "--vllm-env", str(other.prefix)
    )
    result.stdout.fnmatch_lines([lit("FAILED *test_conda_meta_readable[cuda] - *")])
    result.assert_outcomes(passed=7, failed=1, skipped=2)


def test_fixtures_are_documented(pytester):
    result = pytester.runpytest("--fixtures")
    text = result.stdout.str()
    for name in ("vllm_env", "cuda_archs", "vllm_wheels", "verdict", "vllm_fact_cache"):
        result.stdout.fnmatch_lines([f"{name}*", "    *"])
    ours = [s for s in text.split("fixtures defined from ")[1:] if s.startswith("pytest_vllm_env")]
    assert ours and not any("no docstring available" in s for s in ours)
