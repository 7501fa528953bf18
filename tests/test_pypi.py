"""The manifest's PyPI options (``pypi.index-order``, ``pypi.build-isolation``), judged from
pixi.toml / pyproject ``[tool.pixi]`` before any install, as users run the suite."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

# Imported before any pytester run: hermetic_installers patches readers.pip_config and
# readers.uv_config, and a module first imported inside an in-process run is dropped after it
# (facts.pypi would keep calling the dropped copy, which the patch never reaches).
import pytest_vllm_env.facts.pypi  # noqa: F401
from fixtures.envs import EnvBuilder
from fixtures.text import lit
from fixtures.venvs import hermetic_installers

SUITE = ("--vllm-conformance", "-p", "no:randomly", "-p", "no:cacheprovider", "-rs")
TORCH_INDEX = "https://download.pytorch.org/whl/cu128"
VLLM_GIT = 'vllm = { git = "https://github.com/vllm-project/vllm.git", tag = "v0.10.1" }'


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No pip.conf, uv.toml or PIP_/UV_ variable of this machine decides a verdict here."""
    hermetic_installers(monkeypatch, tmp_path / "installer-home")


def env_with(tmp_path: Path, body: str, *, kind: str = "pixi", torch: bool = True) -> EnvBuilder:
    b = EnvBuilder(tmp_path / "ws")
    b.python()
    if torch:
        b.dist("torch", "2.7.1")
    b.manifest(textwrap.dedent(body), kind=kind)
    return b


def run(pytester: pytest.Pytester, b: EnvBuilder, k: str):
    return pytester.runpytest(*SUITE, "-k", k, f"--vllm-env={b.prefix}")


# -- F1.7: the PyTorch index searched first hides cmake>=3.26 --------------------------------
def test_pytorch_index_first_breaks_a_vllm_source_build(pytester, tmp_path):
    """vllm#24875: uv takes cmake from the first index that has it; PyTorch's has 3.25.0."""
    b = env_with(
        tmp_path,
        f"""
        [dependencies]
        python = "3.12.*"
        [pypi-options]
        index-url = "{TORCH_INDEX}"
        [pypi-dependencies]
        torch = "==2.7.1"
        {VLLM_GIT}
        """,
    )
    result = run(pytester, b, "index_order")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[pypi.index-order] FAILED: vllm is built from source ([pypi-dependencies]) "
                "in an isolated env whose [build-system] asks cmake>=3.26.1; uv takes cmake "
                f"from {TORCH_INDEX}, searched first with index-strategy first-index (and PyPI "
                "is not listed at all: index-url replaces it), which holds only cmake==3.25.0: "
                'uv will say "only cmake==3.25.0 is available and you require cmake>=3.26.1"'
            ),
            lit(
                f'*fix: give torch its own index instead: `torch = {{ version = "==2.7.1", index '
                f'= "{TORCH_INDEX}" }}` in [pypi-dependencies] and remove {TORCH_INDEX} from '
                '[pypi-options] in pixi.toml, or set `index-strategy = "unsafe-best-match"` '
                'in [pypi-options] and add "https://pypi.org/simple" to extra-index-urls'
            ),
        ]
    )


def test_extra_index_first_in_pyproject_speaks_its_tables(pytester, tmp_path):
    """extra-index-urls are searched before index-url (pixi docs); the fix names the
    pyproject tables."""
    b = env_with(
        tmp_path,
        f"""
        [tool.pixi.pypi-options]
        extra-index-urls = ["{TORCH_INDEX}"]
        [tool.pixi.pypi-dependencies]
        vllm = {{ path = "./vllm", editable = true }}
        """,
        kind="pyproject",
    )
    result = run(pytester, b, "index_order")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*with index-strategy first-index, which holds only cmake==3.25.0*",
            lit(
                '*fix: give torch its own index instead: `torch = { version = "*", index = '
                f'"{TORCH_INDEX}" }}` in [tool.pixi.pypi-dependencies] and remove {TORCH_INDEX} '
                "from [tool.pixi.pypi-options] in pyproject.toml*"
            ),
        ]
    )


def test_pytorch_index_first_without_source_builds_warns(pytester, tmp_path):
    b = env_with(
        tmp_path,
        f"""
        [pypi-options]
        extra-index-urls = ["{TORCH_INDEX}"]
        [pypi-dependencies]
        torch = "==2.7.1"
        """,
    )
    result = run(pytester, b, "index_order")
    assert result.parseoutcomes().get("warned") == 1
    result.stdout.fnmatch_lines(
        ["*vllm-env: warnings*", "[[]pypi.index-order] *searched before PyPI*"]
    )


@pytest.mark.parametrize(
    "options,dep",
    [
        # the fix the verdict gives: torch pinned to its index, PyPI the default
        ("", f'torch = {{ version = "==2.7.1", index = "{TORCH_INDEX}" }}'),
        (
            f'extra-index-urls = ["{TORCH_INDEX}"]\nindex-strategy = "unsafe-best-match"',
            'torch = "==2.7.1"',
        ),
    ],
)
def test_index_order_that_resolves_passes(pytester, tmp_path, options, dep):
    b = env_with(
        tmp_path,
        f"[pypi-options]\n{options}\n[pypi-dependencies]\n{dep}\n{VLLM_GIT}\n",
    )
    run(pytester, b, "index_order").assert_outcomes(passed=1)


# -- F5.1 / F5.2: flash-attn built in isolation has no torch -----------------------------------
def test_flash_attn_in_isolation_has_no_torch(pytester, tmp_path):
    """Seed 004 / F5.2: `Failed to build flash-attn==2.8.3 ... No module named 'torch'`."""
    b = env_with(
        tmp_path,
        """
        [pypi-dependencies]
        torch = "==2.9.1"
        flash-attn = "==2.8.3"
        """,
    )
    result = run(pytester, b, "build_isolation")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            lit(
                "*[pypi.build-isolation] FAILED: flash-attn ([pypi-dependencies]) is built from "
                "its sdist in an isolated env without torch: its setup.py imports torch but the "
                "sdist declares no build requirements (flash-attention#1421); the build fails "
                "with \"ModuleNotFoundError: No module named 'torch'\""
            ),
            lit(
                '*fix: add `no-build-isolation = ["flash-attn"]` to [pypi-options] in pixi.toml '
                "and provide torch from conda ([dependencies] pytorch-gpu)*"
            ),
        ]
    )


def test_no_build_isolation_with_pypi_torch_only_warns(pytester, tmp_path):
    """pixi docs: torch as a PyPI dependency is not installed yet when PyPI packages are
    resolved; a fresh `pixi install` cannot build flash-attn against it."""
    b = env_with(
        tmp_path,
        """
        [pypi-options]
        no-build-isolation = ["flash-attn"]
        [pypi-dependencies]
        torch = "==2.9.1"
        flash-attn = "==2.8.3"
        """,
    )
    result = run(pytester, b, "build_isolation")
    assert result.parseoutcomes().get("warned") == 1
    result.stdout.fnmatch_lines(["[[]pypi.build-isolation] flash-attn builds without*"])


@pytest.mark.parametrize(
    "body",
    [
        # the verdict's fix: no isolation, torch from conda
        '[dependencies]\npytorch-gpu = "2.7.*"\n[pypi-options]\nno-build-isolation = true\n'
        '[pypi-dependencies]\nflash-attn = "==2.8.3"\n',
        # a prebuilt wheel: nothing is built
        '[pypi-dependencies]\nflash-attn = { url = "https://example.invalid/flash_attn-2.8.3'
        '+cu12torch2.7cxx11abiTRUE-cp312-cp312-linux_x86_64.whl" }\n',
    ],
)
def test_flash_attn_that_builds_passes(pytester, tmp_path, body):
    b = env_with(tmp_path, body)
    run(pytester, b, "build_isolation").assert_outcomes(passed=1)


def test_unpinned_torch_build_requirement_warns(pytester, tmp_path):
    """mamba-ssm declares an unpinned torch: isolation builds it against the index's newest
    torch, not the env's."""
    b = env_with(tmp_path, '[pypi-dependencies]\nmamba-ssm = "==2.2.5"\n')
    result = run(pytester, b, "build_isolation")
    assert result.parseoutcomes().get("warned") == 1
    result.stdout.fnmatch_lines(["[[]pypi.build-isolation] mamba-ssm*not the env's torch 2.7.1*"])


def test_no_manifest_skips(pytester, tmp_path):
    b = EnvBuilder(tmp_path / "bare", bare=True)
    b.python()
    result = pytester.runpytest(*SUITE, "-k", "test_pypi", f"--vllm-env={b.prefix}")
    result.assert_outcomes(skipped=2)
