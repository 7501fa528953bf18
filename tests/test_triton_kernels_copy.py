# ruff: noqa: E501  (expected messages are kept whole: they are what users read)
"""Which ``triton_kernels`` the env's vLLM imports, and the MXFP4 Hopper rule following that
copy (facts/triton_kernels_copy.py; quant.kernel-arch).

vLLM 0.26.0 and 0.33.0 (``utils/import_utils.py:import_triton_kernels``) take a top-level
``triton_kernels`` on the path before the copy they vendor. Measured on the CPU with the real
wheels: with the PyPI ``triton-kernels`` 0.1.0 beside them, ``triton_kernels`` is that one,
``has_triton_kernels()`` is still true, and ``_swizzle_mxfp4`` raises ``ModuleNotFoundError``
for ``triton_kernels.matmul_ogs_details`` (0.26.0) / ``triton_kernels.matmul_details`` (0.33.0)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from fixtures import triton_kernels_standin as tks
from fixtures.downloads import wheel
from fixtures.envs import EnvBuilder
from fixtures.quant_standin import EXPORTS, gpt_oss_shaped, install_vllm_quant
from pytest_vllm_env.facts.env import PixiEnv
from pytest_vllm_env.facts.triton_kernels_copy import imported_copy
from pytest_vllm_env.readers import triton_kernels_source as tk
from tests.test_quant_checks import run, verdicts

GPT_OSS = EXPORTS / "gpt-oss-mxfp4"  # hidden 128: dies on an H200 with the vendored copy


# -- the reader ------------------------------------------------------------------------------
def test_the_hopper_rule_is_read_from_compute_block_n():
    """v3.5.1: 8 warps fall to the generic rule, whose threshold is 128; the 3.8 tree sizes
    BLOCK_N from 4 or 8 warps (0: no output too small); anything else: unknown."""
    assert tk.hopper_small_n(tks.BLOCK_N_351) == 128
    assert tk.hopper_small_n(tks.BLOCK_N_351, warps=4) == 0
    assert tk.hopper_small_n(tks.BLOCK_N_38) == 0
    assert tk.hopper_small_n("def compute_block_n(n, arch, pc):\n    return 64\n") is None
    assert tk.hopper_small_n("not python (") is None
    assert tk.hopper_assert(tks.KERNEL) and not tk.hopper_assert(
        "tl.static_assert(BLOCK_N % 128 == 0)"
    )


@pytest.mark.parametrize(
    ("has_ogs", "tensor", "api"),
    [
        (True, "class Bitmatrix: ...", "3.5.1"),
        (True, "class SparseMatrix: ...", "3.6"),
        (False, None, "3.8"),
        (True, None, None),
    ],
)
def test_the_api_generation_as_vllm_infers_it(has_ogs, tensor, api):
    """0.33.0 utils/import_utils.py:get_triton_kernels_version."""
    assert tk.api_generation(has_ogs, tensor) == api


def test_swizzle_imports_of_either_release():
    v26 = "def _swizzle_mxfp4(q, s, num_warps=8):\n    import triton_kernels.matmul_ogs_details.opt_flags as opt_flags\n"
    v33 = (
        "def _swizzle_mxfp4(q, s, num_warps=8):\n    if get_triton_kernels_version() == '3.8':\n"
        "        import triton_kernels.matmul_details.opt_flags as opt_flags\n    else:\n"
        "        import triton_kernels.matmul_ogs_details.opt_flags as opt_flags\n"
    )
    assert tk.swizzle_imports(v26) == ("matmul_ogs_details",)
    assert tk.swizzle_imports(v33) == ("matmul_details", "matmul_ogs_details")
    assert tk.swizzle_imports("x = 1") is None


# -- which copy ------------------------------------------------------------------------------
def test_vendored_copy_of_a_release_read_is_its_record(env_builder: EnvBuilder):
    """A stand-in vLLM 0.26.0 ships only vllm/third_party/triton_kernels/__init__.py: the
    copy is the one recorded from the real wheel (v3.5.1), exactly, nothing assumed."""
    install_vllm_quant(env_builder, "0.26.0")
    copy = imported_copy(PixiEnv.read(env_builder.prefix))
    assert (copy.where, copy.api, copy.small_n, copy.asserts, copy.assumed) == (
        "vendored",
        "3.5.1",
        128,
        True,
        (),
    )
    assert copy.needed == "matmul_ogs_details"


def test_an_installed_copy_wins_over_the_vendored_one(env_builder: EnvBuilder):
    install_vllm_quant(env_builder, "0.33.0")
    env_builder.dist("triton_kernels", "1.0.0", files=tks.v38())
    copy = imported_copy(PixiEnv.read(env_builder.prefix))
    assert copy.where == "installed" and copy.dist == "triton_kernels 1.0.0"
    assert (copy.api, copy.modules, copy.small_n, copy.needed) == (
        "3.8",
        ("matmul_details",),
        0,
        "matmul_details",
    )


def test_an_editable_install_is_found_through_its_finder(env_builder: EnvBuilder, tmp_path: Path):
    """setuptools' editable install: a ``__editable___*_finder.py`` maps the name to a folder."""
    install_vllm_quant(env_builder, "0.26.0")
    src = tmp_path / "triton" / "python" / "triton_kernels"
    for rel, text in tks.v351().items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    finder = f"MAPPING = {{'triton_kernels': '{src / 'triton_kernels'}'}}\n"
    env_builder.dist(
        "triton_kernels", "1.0.0", files={"__editable___triton_kernels_1_0_0_finder.py": finder}
    )
    copy = imported_copy(PixiEnv.read(env_builder.prefix))
    assert copy.where == "installed" and copy.path == str(src / "triton_kernels")
    assert (copy.api, copy.small_n) == ("3.5.1", 128)


def _on_path(folder: Path, files: dict) -> Path:
    """The ``files`` of a triton_kernels copy written under ``folder`` (a checkout's
    ``python/`` that the env's activation puts on PYTHONPATH); returns ``folder``."""
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(text if isinstance(text, bytes) else text.encode())
    return folder


@pytest.mark.parametrize(
    "how", ["manifest", "activate.d", "activate.d, --vllm-static", "env_vars.d"]
)
def test_a_copy_on_the_activations_pythonpath_wins(env_builder: EnvBuilder, tmp_path: Path, how):
    """Python puts PYTHONPATH's folders before site-packages on sys.path, and
    import_triton_kernels takes the first top-level triton_kernels found there: a copy in a
    folder the env's activation adds to PYTHONPATH ([activation.env] in pixi.toml, an
    activate.d export pixi sources, or --vllm-static reads without running it, a conda
    env_vars.d entry) is the one vLLM imports, over the vendored copy and over one installed
    in site-packages."""
    install_vllm_quant(env_builder, "0.33.0")
    env_builder.dist("triton_kernels", "1.0.0", files=tks.v351())  # site-packages: loses
    folder = _on_path(tmp_path / "triton" / "python", tks.v38())
    manifest = env_builder.manifest()
    if how == "manifest":
        env_builder.manifest(f'[activation.env]\nPYTHONPATH = "{folder}"\n')
        where = "[activation.env] in pixi.toml"
    elif how.startswith("activate.d"):
        script = env_builder.activate_script(
            "tk.sh", f'export PYTHONPATH="{folder}${{PYTHONPATH:+:$PYTHONPATH}}"\n'
        )
        where = str(script)
    else:
        env_builder.file("etc/conda/env_vars.d/tk.json", json.dumps({"PYTHONPATH": str(folder)}))
        where = "etc/conda/env_vars.d/tk.json"
    env = PixiEnv.read(env_builder.prefix, name="default", manifest=manifest)
    env.static = how.endswith("--vllm-static")
    copy = imported_copy(env)
    assert (copy.where, copy.path, copy.api, copy.needed) == (
        "installed",
        str(folder / "triton_kernels"),
        "3.8",
        "matmul_details",
    ), copy
    assert copy.label == (
        f"a triton_kernels at {folder / 'triton_kernels'}, on the PYTHONPATH that {where} sets "
        "(PYTHONPATH comes before site-packages on sys.path, so it wins over any other copy: "
        "utils/import_utils.py:import_triton_kernels takes the first triton_kernels found; "
        f"to use another, take {folder} out of that PYTHONPATH)"
    ), copy.label


def test_pythonpath_folders_without_triton_kernels_change_nothing(
    env_builder: EnvBuilder, tmp_path: Path
):
    """A PYTHONPATH that holds no triton_kernels (or a relative entry, which depends on the
    directory vLLM starts in) leaves the choice as it was: the vendored copy."""
    install_vllm_quant(env_builder, "0.26.0")
    (tmp_path / "empty").mkdir()
    manifest = env_builder.manifest(
        f'[activation.env]\nPYTHONPATH = "{tmp_path / "empty"}:rel/dir:"\n'
    )
    copy = imported_copy(PixiEnv.read(env_builder.prefix, name="default", manifest=manifest))
    assert (copy.where, copy.api, copy.assumed) == ("vendored", "3.5.1", ())


# -- as users run it -------------------------------------------------------------------------
def _env(
    env_builder: EnvBuilder,
    release: str,
    copy: dict[str, str] | None,
    name: str = "triton-kernels",
    version: str = "0.1.0",
) -> EnvBuilder:
    install_vllm_quant(env_builder, release)
    if copy is not None:
        env_builder.dist(name, version, files=copy)
    return env_builder


@pytest.mark.parametrize(
    ("release", "module", "has_no", "importer"),
    [
        # measured on the H100 (docs/gpu-runs.md Round 14): the TRITON branch of 0.26.0's
        # weight conversion imports matmul_ogs before it swizzles
        ("0.26.0", "matmul_ogs", "matmul_ogs", "fused_moe/oracle/mxfp4.py (the TRITON backend"),
        # 0.33.0 imports matmul_ogs at module level inside try (logged): the swizzle's
        # opt_flags import is the first to raise (measured on the CPU with the real wheel)
        ("0.33.0", "matmul_details", "matmul_details.opt_flags", "mxfp4_utils.py:_swizzle_mxfp4"),
    ],
)
def test_a_separate_triton_kernels_without_vllms_api_fails(
    pytester, env_builder, release, module, has_no, importer
):
    """The PyPI triton-kernels 0.1.0 (not triton-lang's) shadows the vendored copy: vLLM
    still picks TRITON on sm 9.0, loads the weights and dies on the first module of vLLM's
    API the copy lacks (measured with the real wheels); even a checkpoint the vendored copy
    serves (hidden 256) fails."""
    env = _env(env_builder, release, tks.KERNELIZE)
    run(pytester, env, GPT_OSS)
    k = verdicts(pytester)["quant.kernel-arch"]
    assert k["outcome"] == "failed", k
    assert (
        f"9.0: vLLM takes TRITON (triton_kernels) for 2 layer(s), e.g. model.layers.0.mlp.experts "
        f"[experts: hidden 128, intermediate 128], which fails there: ModuleNotFoundError: No module "
        f"named 'triton_kernels.{module}' when vLLM converts the loaded MXFP4 experts for the "
        f"kernel (it imports triton_kernels from triton-kernels 0.1.0 at "
        f"{env.site_packages / 'triton_kernels'} (installed beside vLLM, it wins over the copy "
        "vLLM vendors: utils/import_utils.py:import_triton_kernels prefers site-packages), which "
        f"has no {has_no}; vllm/model_executor/layers/"
    ) in k["summary"], k["summary"]
    assert importer in k["summary"]
    assert k["fix"].startswith(
        "remove the separately installed triton_kernels so vLLM imports the copy it vendors"
    )


def test_the_h100_run_names_the_module_vllm_died_on():
    """Round 14's run on the H100 (vLLM 0.26.0, the PyPI triton-kernels 0.1.0 on the path):
    the load died on the module the verdict names, and the vendored copy loaded."""
    ran = json.loads(
        (
            Path(__file__).resolve().parents[1]
            / "fixtures/measured/triton_kernels_copy-0.26.0.json"
        ).read_text()
    )["cases"]
    assert ran["vendored"]["generated"] and ran["vendored"]["suite"] == "passed"
    assert not ran["kernelize"]["loaded"]
    assert ran["kernelize"]["suite"] == "failed"
    died = ran["kernelize"]["exception"]
    assert died == "ModuleNotFoundError: No module named 'triton_kernels.matmul_ogs'"
    from pytest_vllm_env.facts.triton_kernels_copy import RECORDED_BRANCH_IMPORTS

    assert f"triton_kernels.{RECORDED_BRANCH_IMPORTS['0.26.0'][0]}'" in died


def test_the_fix_turns_it_back_to_the_vendored_verdict(pytester, env_builder, tmp_path):
    """Without the separate copy (the fix applied), hidden 256 serves through the vendored
    copy on sm 9.0 (the H100 run); with it, the same checkpoint fails."""
    folder = gpt_oss_shaped(tmp_path / "oss-256", 256, 256)
    run(pytester, _env(env_builder, "0.26.0", None), folder)
    k = verdicts(pytester)["quant.kernel-arch"]
    assert k["outcome"] == "passed" and k["summary"].endswith("9.0: TRITON (triton_kernels)"), k
    other = EnvBuilder(tmp_path / "with-kernelize")
    pytester.path.joinpath("report.json").unlink()
    run(pytester, _env(other, "0.26.0", tks.KERNELIZE), folder)
    assert verdicts(pytester)["quant.kernel-arch"]["outcome"] == "failed"


def test_a_newer_triton_kernels_serves_what_the_vendored_one_cannot(
    pytester, env_builder, tmp_path
):
    """triton-lang's 3.8 tree sizes BLOCK_N from the Hopper layout's 8 warps: hidden 128
    compiles with it on vLLM 0.33.0 (which imports the 3.8 API), where the vendored v3.5.1
    fails; vLLM 0.26.0's TRITON branch imports matmul_ogs, which that tree has not."""
    run(pytester, _env(env_builder, "0.33.0", tks.v38(), "triton_kernels", "1.0.0"), GPT_OSS)
    k = verdicts(pytester)["quant.kernel-arch"]
    assert k["outcome"] == "passed" and k["summary"].endswith("9.0: TRITON (triton_kernels)"), k
    pytester.path.joinpath("report.json").unlink()
    old = EnvBuilder(tmp_path / "old")
    run(pytester, _env(old, "0.26.0", tks.v38(), "triton_kernels", "1.0.0"), GPT_OSS)
    k = verdicts(pytester)["quant.kernel-arch"]
    assert (
        k["outcome"] == "failed" and "No module named 'triton_kernels.matmul_ogs'" in k["summary"]
    )


def test_an_installed_v351_copy_fails_as_the_vendored_one_naming_it(pytester, env_builder):
    run(pytester, _env(env_builder, "0.26.0", tks.v351(), "triton_kernels", "1.0.0"), GPT_OSS)
    k = verdicts(pytester)["quant.kernel-arch"]
    assert k["outcome"] == "failed", k
    assert "tl.static_assert(BLOCK_N % (2 * n_warps * 2 * 8) == 0)" in k["summary"]
    assert (
        "an expert GEMM with 128 (down) output columns gets BLOCK_N 128) (triton_kernels: triton_kernels 1.0.0 at"
        in k["summary"]
    )
    assert k["fix"].startswith("start vLLM with --moe-backend marlin")


def test_a_copy_on_pythonpath_fails_the_verdict_and_names_where_it_is_set(
    pytester, env_builder, tmp_path
):
    """The PyPI triton-kernels 0.1.0 files in a folder [activation.env] puts on PYTHONPATH
    shadow the vendored copy as an installed one does: vLLM 0.26.0 dies importing
    matmul_ogs; the verdict names the folder and the setting; without the setting
    (the change applied), the same env passes on the vendored copy."""
    folder = gpt_oss_shaped(tmp_path / "oss-256", 256, 256)
    env = _env(env_builder, "0.26.0", None)
    path = _on_path(tmp_path / "extra", tks.KERNELIZE)
    env.manifest(f'[activation.env]\nPYTHONPATH = "{path}"\n')
    run(pytester, env, folder)
    k = verdicts(pytester)["quant.kernel-arch"]
    assert k["outcome"] == "failed", k
    assert (
        "ModuleNotFoundError: No module named 'triton_kernels.matmul_ogs' when vLLM converts "
        f"the loaded MXFP4 experts for the kernel (it imports triton_kernels from a triton_kernels at "
        f"{path / 'triton_kernels'}, on the PYTHONPATH that [activation.env] in pixi.toml sets"
    ) in k["summary"], k
    assert f"take {path} out of that PYTHONPATH" in k["summary"]
    pytester.path.joinpath("report.json").unlink()
    env.manifest("")
    run(pytester, env, folder)
    k = verdicts(pytester)["quant.kernel-arch"]
    assert k["outcome"] == "passed", k


# -- the real parts --------------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("release", ["0.26.0", "0.33.0"])
def test_the_real_wheels_vendored_copy_and_imports(tmp_path, release):
    """The real wheel's vendored copy reads as recorded (v3.5.1, 128, the assert) and its
    _swizzle_mxfp4 imports what the record says."""
    from pytest_vllm_env.facts.triton_kernels_copy import (
        RECORDED_BRANCH_IMPORTS,
        RECORDED_IMPORTS,
        RECORDED_VENDORED,
    )

    with zipfile.ZipFile(wheel(f"vllm=={release}")) as zf:
        names = set(zf.namelist())
        root = "vllm/third_party/triton_kernels/"
        api = tk.api_generation(
            root + "matmul_ogs.py" in names, zf.read(root + "tensor.py").decode()
        )
        got = {
            "api": api,
            "modules": tuple(
                m
                for m in ("matmul_ogs_details", "matmul_details")
                if f"{root}{m}/opt_flags.py" in names
            ),
            "small_n": tk.hopper_small_n(zf.read(root + tk.block_n_file(api)).decode()),
            "asserts": tk.hopper_assert(zf.read(root + tk.kernel_file(api)).decode()),
        }
        assert got == RECORDED_VENDORED
        assert tk.swizzle_imports(zf.read(tk.MXFP4_UTILS_PY).decode()) == RECORDED_IMPORTS[release]
        branch = tk.triton_branch_imports(zf.read(tk.MXFP4_ORACLE_PY).decode())
        assert branch == RECORDED_BRANCH_IMPORTS[release]


@pytest.mark.integration
@pytest.mark.parametrize("release", ["0.26.0", "0.33.0"])
def test_the_real_pypi_triton_kernels(pytester, env_builder, release):
    """The real PyPI triton-kernels 0.1.0 wheel, unpacked beside a stand-in vLLM: the
    verdict names the module the real vLLM failed to import."""
    with zipfile.ZipFile(wheel("triton-kernels==0.1.0")) as zf:
        files = {n: zf.read(n) for n in zf.namelist() if n.startswith("triton_kernels/")}
    env = _env(env_builder, release, files)  # type: ignore[arg-type]
    run(pytester, env, GPT_OSS)
    k = verdicts(pytester)["quant.kernel-arch"]
    module = {"0.26.0": "matmul_ogs", "0.33.0": "matmul_details"}[release]
    assert (
        k["outcome"] == "failed" and f"No module named 'triton_kernels.{module}'" in k["summary"]
    ), k


def test_a_copy_without_distribution_metadata_counts(pytester, env_builder):
    """has_triton_kernels() is an import-spec test: a triton_kernels folder on the path with
    no .dist-info (copied in, or a vLLM built without the vendored copy) is found all the
    same, and TRITON is taken on sm 9.0 (before: MARLIN was named, as if none were there)."""
    install_vllm_quant(env_builder, "0.26.0")
    (env_builder.site_packages / "vllm/third_party/triton_kernels/__init__.py").unlink()
    for rel, text in tks.v351().items():
        (env_builder.site_packages / rel).parent.mkdir(parents=True, exist_ok=True)
        (env_builder.site_packages / rel).write_text(text)
    run(pytester, env_builder, GPT_OSS)
    k = verdicts(pytester)["quant.kernel-arch"]
    assert (
        k["outcome"] == "failed"
        and "a triton_kernels with no distribution metadata at" in k["summary"]
    ), k
