"""The loader facts and truths against the REAL vLLM releases (integration tier).

- The source facts the default tests judge with (fixtures/loader_truth/vllm-<release>.json)
  are what the static reader makes of the real 0.26.0 and 0.33.0 wheels, read afresh here
  (304 MB / about 500 MB downloads, cached).
- Where a venv with that release is on this machine (``~/.cache/pytest-vllm-env/venvs/
  vllm-<release>``, made as scripts/loader_truth_cpu.py says), the real loader runs again on
  a few mutations and must do what fixtures/loader_truth/outcomes.json recorded; and the
  suite, pointed at that venv with ``--vllm-load-probe=meta``, reads that vLLM's own source
  and runs its probe: the two agree.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fixtures import loader_variants
from fixtures.downloads import wheel
from pytest_vllm_env.facts import vllm_loader_facts

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
TRUTH_DIR = REPO / "fixtures" / "loader_truth"
RELEASES = ("0.26.0", "0.33.0")
VENVS = Path.home() / ".cache" / "pytest-vllm-env" / "venvs"
sys.path.insert(0, str(REPO / "scripts"))


@pytest.mark.parametrize("release", RELEASES)
def test_recorded_source_facts_are_the_real_wheels(tmp_path, release):
    with zipfile.ZipFile(wheel(f"vllm=={release}")) as zf:
        for name in zf.namelist():
            if name.endswith(".py") and name.startswith("vllm/"):
                zf.extract(name, tmp_path)
    import loader_truth_cpu

    fresh = vllm_loader_facts.read(tmp_path, loader_truth_cpu.ARCHS, release).to_json()
    recorded = json.loads((TRUTH_DIR / f"vllm-{release}.json").read_text())
    assert json.loads(json.dumps(fresh, sort_keys=True)) == recorded


def _venv(release: str) -> Path:
    python = VENVS / f"vllm-{release}" / "bin" / "python"
    if not python.exists():
        pytest.skip(f"no {python}: make it as scripts/loader_truth_cpu.py says")
    return python


SAMPLE = ("good", "norm-missing", "tied-head-input-scale", "pbwo-tp2", "hf-only-mxfp8-name")


@pytest.mark.parametrize("release", RELEASES)
def test_the_real_loader_still_does_what_was_recorded(tmp_path, release):
    python = _venv(release)
    import loader_truth_cpu

    jobs = []
    for name in SAMPLE:
        folder = loader_variants.make(name, tmp_path / name)
        jobs.append(
            {
                "name": name,
                "model": str(folder),
                "mode": "load",
                **loader_variants.VARIANTS[name].launch,
            }
        )
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    probe = REPO / "pytest_vllm_env" / "probes" / "vllm_load_weights.py"
    proc = subprocess.run(
        [str(python), str(probe), "--batch", str(tmp_path / "jobs.json")],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=tmp_path,
    )
    results = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert len(results) == len(jobs), proc.stderr[-3000:]
    recorded = json.loads((TRUTH_DIR / "outcomes.json").read_text())["variants"]
    for result in results:
        name = result["job"]["name"]
        now = loader_truth_cpu.summarize(result)
        then = recorded[name][release]
        assert bool(now.get("refused")) == bool(then.get("refused")), name
        if then.get("refused"):
            assert now["refused"]["stage"] == then["refused"]["stage"], name
            assert now["refused"]["type"] == then["refused"]["type"], name
        else:
            assert now["unset"] == then["unset"], name


@pytest.mark.parametrize("release", RELEASES)
def test_suite_on_a_real_venv_with_the_probe(pytester, tmp_path, release):
    _venv(release)
    folders = [
        loader_variants.make(n, tmp_path / "c" / n) for n in ("good", "tied-head-input-scale")
    ]
    report = tmp_path / "report.json"
    result = pytester.runpytest(
        "--vllm-conformance",
        "-p",
        "no:randomly",
        "-m",
        "toolchain",
        "-k",
        "test_checkpoint",
        f"--vllm-env={VENVS / f'vllm-{release}'}",
        *(f"--modelopt-checkpoint={f}" for f in folders),
        "--vllm-load-probe=meta",
        f"--vllm-env-report={report}",
    )
    assert "Traceback" not in result.stdout.str()
    checks = json.loads(report.read_text())["checks"]
    probes = {
        c["test"].rsplit("[", 1)[1].rstrip("]"): c
        for c in checks
        if c["id"] == "checkpoint.load-probe"
    }
    assert probes["good"]["outcome"] == "passed", probes["good"]["summary"]
    assert probes["good"]["evidence"]["differences"] == []
    want = "failed" if release == "0.33.0" else "passed"
    assert probes["tied-head-input-scale"]["outcome"] == want, probes["tied-head-input-scale"][
        "summary"
    ]
    assert probes["tied-head-input-scale"]["evidence"]["differences"] == []
