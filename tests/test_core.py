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
    from pytest_vllm_env.facts.env import PixiEnv

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
    run_suite(
        pytester,
        "--vllm-env",
        str(env_builder.prefix),
        "--vllm-env-report",
        str(report),
        "--cuda-arch",
        "sm_120",
    )
    data = json.loads(report.read_text())
    assert data["schema"] == 2
    assert data["strict"] is False
    assert data["env"]["prefix"] == str(env_builder.prefix)
    assert data["targets"]["cuda_archs"] == ["12.0"]
    assert data["targets"]["cuda_archs_source"] == "--cuda-arch"
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
    result = run_suite(pytester, f"--vllm-env={env_builder.prefix}")
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


def test_pyproject_manifest_features_and_targets(env_builder: EnvBuilder):
    from pytest_vllm_env.facts.env import PixiEnv

    cuda = EnvBuilder(env_builder.workspace, "cuda")
    cuda.python()
    manifest = env_builder.manifest(
        """
        [tool.pixi.activation.env]
        FROM_DEFAULT = "1"

        [tool.pixi.feature.cu.activation.env]
        NVTOOLSEXT_PATH = "$CONDA_PREFIX/targets/x86_64-linux"

        [tool.pixi.feature.cu.target.linux-64.activation.env]
        TORCH_CUDA_ARCH_LIST = "12.0"

        [tool.pixi.environments]
        cuda = { features = ["cu"], no-default-feature = true }
        """,
        kind="pyproject",
    )
    env = PixiEnv.read(cuda.prefix, name="cuda", manifest=manifest)
    environ = env.environ()
    assert environ["NVTOOLSEXT_PATH"] == f"{env.prefix}/targets/x86_64-linux"
    assert environ["TORCH_CUDA_ARCH_LIST"] == "12.0"
    assert "FROM_DEFAULT" not in environ  # no-default-feature
    assert env.activation.sources["TORCH_CUDA_ARCH_LIST"] == (
        "[tool.pixi.feature.cu.target.linux-64.activation.env] in pyproject.toml"
    )
    assert env.manifest.activation_table_for("cuda") == "[tool.pixi.feature.cu.activation.env]"


def test_pixi_shell_hook_is_used_when_pixi_is_on_path(env_builder, tmp_path, monkeypatch):
    from pytest_vllm_env.facts.env import PixiEnv

    env_builder.python()
    manifest = env_builder.manifest('[activation.env]\nFROM_MANIFEST = "static"\n')
    bindir = tmp_path / "pixibin"
    bindir.mkdir()
    fake = bindir / "pixi"
    # A stand-in for the real binary's `shell-hook --json` output shape; it logs its args.
    log = tmp_path / "args"
    fake.write_text(
        f'#!/bin/sh\necho "$@" > {log}\n'
        'echo \'{"environment_variables": {"FROM_MANIFEST": "pixi", "CONDA_PREFIX": "/p"}}\'\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{__import__('os').environ['PATH']}")
    env = PixiEnv.read(env_builder.prefix, name="default", manifest=manifest)
    assert env.activation.method == "pixi"
    assert env.environ()["FROM_MANIFEST"] == "pixi"
    # read-only: without these, `pixi shell-hook` installs or updates the env and the lock
    assert {"--frozen", "--no-install"} <= set(log.read_text().split())


def test_broken_pixi_binary_falls_back_to_static_activation(env_builder, tmp_path, monkeypatch):
    from pytest_vllm_env.facts.env import PixiEnv

    env_builder.python()
    manifest = env_builder.manifest('[activation.env]\nFROM_MANIFEST = "static"\n')
    bindir = tmp_path / "pixibin"
    bindir.mkdir()
    (bindir / "pixi").write_text("#!/bin/sh\necho 'error: lock file out of date' >&2\nexit 1\n")
    (bindir / "pixi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{__import__('os').environ['PATH']}")
    env = PixiEnv.read(env_builder.prefix, name="default", manifest=manifest)
    assert env.activation.method == "static"
    assert env.environ()["FROM_MANIFEST"] == "static"
    assert any("pixi shell-hook failed" in p for p in env.activation.problems)


def test_hanging_activation_script_times_out(env_builder, monkeypatch):
    from pytest_vllm_env.facts import env as env_mod

    env_builder.python()
    env_builder.activate_script("hang.sh", "sleep 30\n")
    monkeypatch.setattr(env_mod, "ACTIVATION_TIMEOUT", 0.5)
    env = env_mod.PixiEnv.read(env_builder.prefix)
    assert any(
        "hang.sh failed when sourced" in p and "did not finish" in p
        for p in env.activation.problems
    )


@pytest.mark.parametrize(
    "make_bad",
    [
        pytest.param(lambda b: (b.prefix / "conda-meta" / "dir-1.0-0.json").mkdir(), id="dir"),
        pytest.param(
            lambda b: b.symlink("conda-meta/gone-1.0-0.json", "/nonexistent"), id="dangling-symlink"
        ),
        pytest.param(
            lambda b: b.broken_record("nofields-1.0-0.json", '{"version": "1"}'), id="no-name-field"
        ),
        pytest.param(lambda b: b.broken_record("list-1.0-0.json", "[1, 2]"), id="not-object"),
    ],
)
def test_unreadable_conda_meta_records(env_builder: EnvBuilder, make_bad):
    from pytest_vllm_env.checks import env as envchecks
    from pytest_vllm_env.facts.env import PixiEnv

    env_builder.python()
    make_bad(env_builder)
    finding = envchecks.conda_meta_readable(PixiEnv.read(env_builder.prefix))
    assert finding.outcome == "error"
    assert "conda-meta" in finding.summary and finding.fix


def test_symlink_loop_in_site_packages_is_a_verdict(pytester, env_builder: EnvBuilder):
    env_builder.python()
    env_builder.dist("torch", "2.11.0")
    sp = env_builder.site_packages
    (sp / "loop").symlink_to(sp / "loop2")
    (sp / "loop2").symlink_to(sp / "loop")
    result = run_suite(pytester, "--vllm-env", str(env_builder.prefix))
    assert "Traceback" not in result.stdout.str()
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)


def test_judging_never_writes_into_the_env(pytester, env_builder: EnvBuilder):
    env_builder.python()
    env_builder.dist("vllm", "0.26.0")
    env_builder.activate_script("a.sh", "export A=1\n")
    env_builder.manifest()

    def snapshot():
        return sorted(
            (str(p), p.lstat().st_mtime_ns, p.lstat().st_size)
            for p in env_builder.workspace.rglob("*")
        )

    before = snapshot()
    result = pytester.runpytest("--vllm-conformance", "--vllm-env", str(env_builder.prefix))
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
    assert snapshot() == before


def test_verdict_outcomes_map_to_pytest(pytester):
    pytester.makepyfile(
        """
        import pytest
        from pytest_vllm_env.findings import passed, failed, skipped

        def test_pass(verdict):
            verdict(passed("x.ok", "fine"), skipped("x.na", "not here"))

        def test_fail(verdict):
            verdict([passed("x.ok", "fine"), failed("x.bad", "broken", "install y 2.0", where="a")])

        def test_skip(verdict):
            verdict(skipped("x.na", "vLLM is not installed in /p"))
        """
    )
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            lit("*[x.bad] FAILED: broken"),
            "*  fix: install y 2.0",
            "*  where: a",
            "*vllm-env: what to change*",
            lit("[x.bad] broken"),
            "    fix: install y 2.0",
            lit("SKIPPED [1] test_verdict_outcomes_map_to_pytest.py:*: [x.na] vLLM is not *"),
        ]
    )
    assert "Traceback" not in result.stdout.str()


WARNING_TESTS = """
    from pytest_vllm_env.findings import passed, warning

    def test_costly(verdict):
        verdict(passed("x.ok", "fine"), warning("x.kv", "KV scales default to 1.0", "calibrate KV"))

    def test_fine(verdict):
        verdict(passed("x.ok", "fine"))
"""


def test_warning_passes_with_its_own_letter_heading_and_fix(pytester):
    pytester.makepyfile(WARNING_TESTS)
    report = pytester.path / "r.json"
    result = pytester.runpytest("-v", "--vllm-env-report", str(report))
    assert result.ret == pytest.ExitCode.OK
    outcomes = result.parseoutcomes()
    assert (outcomes.get("warned"), outcomes.get("passed")) == (1, 1)
    result.stdout.fnmatch_lines(
        [
            "*test_costly WARNED*",
            "*vllm-env: warnings (it works, at a cost)*",
            lit("[x.kv] KV scales default to 1.0"),
            "    fix: calibrate KV",
        ]
    )
    result.stdout.no_fnmatch_line("*what to change*")
    checks = {c["id"]: c for c in json.loads(report.read_text())["checks"]}
    assert checks["x.kv"]["outcome"] == "warning"
    assert checks["x.kv"]["fix"] == "calibrate KV"


@pytest.mark.parametrize("how", ["--vllm-strict", "ini"])
def test_strict_turns_warnings_into_failures(pytester, how):
    pytester.makepyfile(WARNING_TESTS)
    args = ["--vllm-env-report", "r.json"]
    if how == "ini":
        pytester.makeini("[pytest]\nvllm_strict = true\n")
    else:
        args.append(how)
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            lit("*[x.kv] FAILED: KV scales default to 1.0"),
            "*level: warning, failed by --vllm-strict",
        ]
    )
    data = json.loads((pytester.path / "r.json").read_text())
    assert data["strict"] is True
    assert {c["id"]: c["outcome"] for c in data["checks"]}["x.kv"] == "failed"


def test_warning_under_xdist_is_counted_on_the_controller(pytester):
    pytester.makepyfile(WARNING_TESTS)
    result = pytester.runpytest_subprocess("-n", "2")
    assert result.parseoutcomes().get("warned") == 1
    result.stdout.fnmatch_lines(["*vllm-env: warnings*", lit("[x.kv] KV scales default to 1.0")])


def test_warning_without_fix_is_refused():
    from pytest_vllm_env.findings import Finding

    with pytest.raises(ValueError, match="needs a fix hint"):
        Finding("x.kv", "warning", "costly")


def test_failed_finding_without_fix_is_refused():
    from pytest_vllm_env.findings import Finding

    with pytest.raises(ValueError, match="needs a fix hint"):
        Finding("x.bad", "failed", "broken")


def test_cuda_arch_spellings():
    from pytest_vllm_env.tables.archs import parse_arch, parse_arch_list

    assert parse_arch("12.0").sm == "sm_120"
    assert parse_arch("sm_120") == parse_arch("120") == parse_arch("compute_120")
    assert parse_arch("9.0a").sm == "sm_90a"
    assert [str(a) for a in parse_arch_list("8.0;8.6 9.0+PTX")] == ["8.0", "8.6", "9.0+PTX"]
    with pytest.raises(ValueError, match="not a CUDA arch"):
        parse_arch("blackwell")


def test_bad_cuda_arch_is_a_usage_error(pytester, env_builder: EnvBuilder):
    env_builder.python()
    pytester.makepyfile("def test_a(cuda_archs): pass\n")
    result = pytester.runpytest("--vllm-env", str(env_builder.prefix), "--cuda-arch", "rtx5090")
    result.stderr.fnmatch_lines(["*--cuda-arch: 'rtx5090' is not a CUDA arch*"])


def test_cuda_archs_from_activation(pytester, env_builder: EnvBuilder):
    env_builder.python()
    env_builder.manifest('[activation.env]\nTORCH_CUDA_ARCH_LIST = "8.9;12.0"\n')
    pytester.makepyfile(
        """
        def test_a(cuda_archs, cuda_archs_source):
            assert [a.sm for a in cuda_archs] == ["sm_89", "sm_120"]
            assert cuda_archs_source == "TORCH_CUDA_ARCH_LIST"
        """
    )
    pytester.runpytest("--vllm-env", str(env_builder.prefix)).assert_outcomes(passed=1)


def test_check_skipped_in_a_fixture_keeps_its_id_in_the_report(pytester, env_builder):
    env_builder.python()
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture
        def vllm_install(vllm_env):
            pytest.skip(f"vLLM is not installed in {vllm_env.prefix}")

        @pytest.mark.toolchain
        @pytest.mark.vllm_check("abi.symbols-resolve")
        def test_symbols(vllm_install, verdict):
            pass
        """
    )
    report = pytester.path / "r.json"
    result = pytester.runpytest(
        "--vllm-env", str(env_builder.prefix), "--vllm-env-report", str(report), "-n", "2"
    )
    result.assert_outcomes(skipped=1)
    (check,) = json.loads(report.read_text())["checks"]
    assert check["id"] == "abi.symbols-resolve" and check["area"] == "abi"
    assert check["outcome"] == "skipped"
    assert check["summary"] == f"vLLM is not installed in {env_builder.prefix}"


@pytest.mark.parametrize(
    "option",
    ["--build-timeout", "--cuda-tool-timeout", "--vllm-probe-timeout", "--vllm-logprob-tolerance"],
)
def test_a_number_setting_that_is_not_a_number_is_a_usage_error(pytester, option):
    result = pytester.runpytest("--vllm-conformance", option, "soon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{option}: 'soon' is not a number*"])
    assert "Traceback" not in result.stderr.str()


def test_dist_metadata_read_as_importlib_metadata_reads_it():
    # The fast header read (the email parser was most of reading a 200-package vLLM venv)
    # against importlib.metadata, on the real dist-infos of the venv running these tests.
    import sys
    from importlib import metadata
    from pathlib import Path

    from packaging.utils import canonicalize_name

    from pytest_vllm_env.facts.env import PixiEnv

    env = PixiEnv.read(Path(sys.prefix))
    assert len(env.python_dists) > 20
    for sp in env.site_packages:
        for dist in metadata.distributions(path=[str(sp)]):
            mine = env.dist(dist.metadata["Name"])
            if mine is None or mine.path != Path(dist._path):
                continue  # an earlier site-packages won
            assert (mine.name, mine.version, mine.requires) == (
                dist.metadata["Name"],
                dist.version,
                tuple(dist.requires or ()),
            ), canonicalize_name(mine.name)


def test_a_check_an_area_plugin_skips_early_keeps_its_stable_id(pytester, tmp_path):
    # plugins/lock.py skips checks that read installed files in lock mode, in its own
    # tryfirst runtest_setup; the core's must run first to record the check's stable test
    # id (and env) (seen while splitting plugin.py: the report said `test_abi.py::test_cudart`
    # instead of `pytest_vllm_env/suite/test_abi.py::test_cudart`, and lost the env).
    from fixtures import pixi_locks as L

    manifest = L.seed_001(tmp_path / "ws")
    pytester.runpytest(
        "--vllm-conformance",
        "-p",
        "no:randomly",
        "-k",
        "test_cudart or test_python_found",
        f"--pixi-manifest={manifest}",
        "--vllm-env=default",
        "--vllm-env-report=r.json",
    )
    checks = json.loads((pytester.path / "r.json").read_text())["checks"]
    cudart = [c for c in checks if c["id"] == "abi.cudart"]
    assert cudart and all(c["outcome"] == "skipped" for c in cudart), checks
    for check in cudart:
        assert check["test"] == "pytest_vllm_env/suite/test_abi.py::test_cudart", check
