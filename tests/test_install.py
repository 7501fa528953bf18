"""The plugin works from an installed wheel in another project, not only from this checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.envs import EnvBuilder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with pytest-vllm-env installed from a wheel built from this tree."""
    base = tmp_path_factory.mktemp("wheel")
    quiet = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    # Built from a clean copy: setuptools reuses a checkout's stale build/lib (an old
    # top-level conformance/ landed in the wheel that way), and the build writes build/.
    src = base / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            "build", "dist", ".venv", ".git", ".gpu_*", "*.egg-info", "__pycache__", ".*cache"
        ),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", base / "dist", src],
        check=True,
        timeout=300,
        **quiet,
    )
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    wheels = sorted((base / "dist").glob("pytest_vllm_env-*.whl"))
    assert len(wheels) == 1, wheels
    done = subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "-q", wheels[0]],
        timeout=600,
        **quiet,
    )
    assert done.returncode == 0, done.stdout
    return venv


def test_the_wheel_carries_the_suite_under_its_own_name(installed_venv):
    where = subprocess.run(
        [
            installed_venv / "bin" / "python",
            "-c",
            "import pytest_vllm_env.suite as s; print(s.__file__)\n"
            "import importlib.util; print(importlib.util.find_spec('conformance'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    suite, top_level = where.stdout.splitlines()
    assert suite.startswith(str(installed_venv)) and "pytest_vllm_env/suite" in suite, where
    # no top-level "conformance": a user's package of that name would shadow it
    assert top_level == "None", where
    # and every other package of the tree (the list in pyproject.toml is explicit)
    site = Path(suite).parents[2]
    for init in (ROOT / "pytest_vllm_env").rglob("__init__.py"):
        rel = init.relative_to(ROOT)
        assert (site / rel).is_file(), f"the wheel lacks {rel.parent}: add it to pyproject.toml"


def _clean_environ(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "CONDA_"))}
    return {**clean, **extra}


def test_a_conformance_package_of_the_users_repo_does_not_replace_the_suite(
    installed_venv, tmp_path
):
    # Seen: the user's own conformance/ package (or one on sys.path) was imported in place
    # of ours; --vllm-conformance then ran their tests and exited 5.
    env = EnvBuilder(tmp_path / "ws")
    env.python()
    project = tmp_path / "theirs"
    (project / "conformance").mkdir(parents=True)
    (project / "conformance" / "__init__.py").write_text("")
    (project / "conformance" / "test_theirs.py").write_text("def test_theirs():\n    pass\n")
    done = subprocess.run(
        [
            installed_venv / "bin" / "python",
            "-m",
            "pytest",
            "--vllm-conformance",
            "-m",
            "toolchain",
            "-k",
            "test_env",
            "-p",
            "no:cacheprovider",
            f"--vllm-env={env.prefix}",
        ],
        cwd=project,
        env=_clean_environ(PYTHONPATH=str(project)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "test_theirs" not in out
    assert "4 passed, 1 skipped" in out, out


def test_bundled_suite_runs_from_an_installed_wheel(installed_venv, tmp_path):
    env = EnvBuilder(tmp_path / "ws")
    env.python()
    env.broken_record()
    project = tmp_path / "elsewhere"
    project.mkdir()
    (project / "CMakeLists.txt").write_text("")  # a vLLM checkout holds one (--vllm-source)
    for args in (["--pyargs", "pytest_vllm_env.suite"], ["--vllm-conformance"]):
        done = subprocess.run(
            [
                installed_venv / "bin" / "python",
                "-m",
                "pytest",
                *args,
                "-m",
                "toolchain",
                "-p",
                "no:cacheprovider",
                "--vllm-env",
                env.prefix,
                f"--vllm-source={project}",
            ],
            cwd=project,
            # a CUDA_HOME with no toolkit: vLLM's setup.py would stop on it (this machine's
            # own /usr/local/cuda would otherwise serve the build)
            env=_clean_environ(CUDA_HOME=str(tmp_path / "no-cuda")),
            capture_output=True,
            text=True,
            timeout=300,
        )
        out = done.stdout + done.stderr
        assert done.returncode == 1, out  # the broken record fails env.conda-meta
        assert "[env.conda-meta] ERROR" in out
        assert "FAILED test_env.py::test_conda_meta_readable" in out, out
        # a source build of the bare env would find no nvcc through CUDA_HOME: the CUDA tier
        # judges it from the installed wheel too
        assert "[cuda.nvcc-in-env] FAILED" in out
        assert "needed_because: --vllm-source: vLLM is to be built from source" in out
        assert "Traceback" not in out


def test_the_install_brings_no_pytest_plugin_we_did_not_choose(installed_venv):
    # Installed, every pytest11 entry point of every distribution loads in every pytest run
    # of the user's repo. Seen: huggingface_hub (a dependency, for one cache lookup) pulled
    # httpx and anyio, and anyio's pytest plugin took the user's own tests from 0.24 s to
    # 0.32 s (issue 21). The hub cache is now read from its layout (readers/hf_cache.py).
    listing = subprocess.run(
        [
            installed_venv / "bin" / "python",
            "-c",
            "from importlib.metadata import distributions\n"
            "for d in distributions():\n"
            "    for ep in d.entry_points:\n"
            "        if ep.group == 'pytest11':\n"
            "            print(f\"{d.metadata['Name']}:{ep.name}\")",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        check=True,
    )
    plugins = set(listing.stdout.split())
    assert plugins == {
        "pytest-vllm-env:vllm_env",
        "pytest-xdist:xdist",  # `-n`: the suite shares its fact cache across workers
        "pytest-xdist:xdist.looponfail",
        "pytest-timeout:timeout",  # `--timeout` over the gpu tier's loads
    }, plugins


def test_an_unrelated_run_imports_the_plugin_past_the_assert_rewriter(installed_venv, tmp_path):
    # pytest rewrites the asserts of every module of a pytest11 distribution, and
    # import_plugin marks each module it imports: the plugin's modules went through the
    # rewriting import hook, about 40 M of the 106 M instructions the plugin added to a
    # trivial run (callgrind; benchmarks/startup.py, issue 21 item F). plugin.py registers
    # them past it; blocking one with -p no:NAME still works.
    (tmp_path / "conftest.py").write_text(
        "import sys\n"
        "def pytest_configure(config):\n"
        "    for name in sorted(sys.modules):\n"
        "        if name.startswith('pytest_vllm_env'):\n"
        "            loader = type(sys.modules[name].__spec__.loader).__name__\n"
        "            print('LOADER', name, loader)\n"
    )
    (tmp_path / "test_a.py").write_text("def test_a():\n    assert 1 + 1 == 2\n")
    done = subprocess.run(
        [installed_venv / "bin" / "python", "-m", "pytest", "-s", "-p", "no:cacheprovider"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout
    loaders = dict(
        line.split()[1:] for line in done.stdout.splitlines() if line.startswith("LOADER")
    )
    assert loaders["pytest_vllm_env.plugins.session"] == "SourceFileLoader"
    assert loaders["pytest_vllm_env.plugins.settings"] == "SourceFileLoader"
    # the user's own test files are still rewritten (a failing assert explains itself)
    (tmp_path / "test_a.py").write_text("def test_a():\n    x = 3\n    assert x == 2\n")
    done = subprocess.run(
        [installed_venv / "bin" / "python", "-m", "pytest", "-p", "no:cacheprovider",
         "-p", "no:pytest_vllm_env.plugins.cuda", "--fixtures"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert "cuda_toolkit" not in done.stdout and "vllm_env" in done.stdout
    done = subprocess.run(
        [installed_venv / "bin" / "python", "-m", "pytest", "-p", "no:cacheprovider"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert "assert 3 == 2" in done.stdout
