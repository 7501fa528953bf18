"""``pytest-vllm-env merge``: many nodes' reports -> one nodes x checks view (JSON, HTML, text).

The node reports are written by real runs of the suite: the CUDA 12.4 seed env (real
PyPI ptxas) on two simulated nodes, an H100 node and an RTX 5090 node, each with a fake
``nvidia-smi`` on PATH (fixtures/fake_gpus.py). The env's nvcc cannot target the 5090's
sm_120, so ``cuda.arch-supported`` fails on that node only: the node-specific failure a
fleet view exists to show (the same env image landing on a newer GPU; real-world-failures
F2.10)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from fixtures.cuda_envs import seed_env
from fixtures.envs import EnvBuilder
from fixtures.fake_gpus import H100, RTX5090, fake_nvidia_smi
from pytest_vllm_env.cli import main
from pytest_vllm_env.fleet import matrix, page
from pytest_vllm_env.fleet.reports import load

ROOT = Path(__file__).resolve().parent.parent
H100_B = dict(H100, uuid="GPU-11112222-3333-4444-5555-666677778888")


@pytest.fixture(scope="module")
def seeds_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "cuda-seeds"
    root.mkdir(exist_ok=True)
    return root


def run_node(
    workdir: Path, name: str, gpus: list[dict], driver: str, *args: str, report: str
) -> subprocess.CompletedProcess:
    """One simulated node: the bundled toolchain tier in a fresh pytest process whose PATH
    has this node's fake nvidia-smi, named by ``PYTEST_VLLM_ENV_NODE_NAME``."""
    smi = fake_nvidia_smi(workdir / "nodes" / name, gpus, driver=driver).parent
    env = {
        **os.environ,
        "PATH": f"{smi}{os.pathsep}{os.environ['PATH']}",
        "PYTEST_VLLM_ENV_NODE_NAME": name,
        "PYTHONPATH": str(ROOT),
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)
    argv = [sys.executable, "-m", "pytest", "--vllm-conformance", "-p", "no:cacheprovider"]
    argv += ["-p", "no:randomly", "-m", "toolchain", "-q", *args, f"--vllm-env-report={report}"]
    return subprocess.run(argv, env=env, cwd=workdir, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def fleet_dir(tmp_path_factory: pytest.TempPathFactory, seeds_root: Path) -> Path:
    """reports/gpu-h100.json (passes) and reports/gpu-5090.json (cuda.arch-supported fails)."""
    work = tmp_path_factory.mktemp("fleet")
    env = seed_env(seeds_root, "cuda-12.4")
    for name, gpus, driver in (
        ("gpu-h100", [H100, H100_B], "580.159.04"),
        ("gpu-5090", [RTX5090], "575.57.08"),
    ):
        done = run_node(
            work, name, gpus, driver, "--vllm-env", str(env.prefix), report="reports/%N.json"
        )
        assert done.returncode == (1 if name == "gpu-5090" else 0), done.stdout[-2000:]
    return work


def merged(*paths: Path, strict: bool = False) -> dict:
    from pytest_vllm_env.cli import read_reports

    reports, bad = read_reports(paths)
    return matrix.merge(reports, bad, strict=strict)


def test_node_specific_failure_names_the_gpu(fleet_dir: Path):
    fleet = merged(fleet_dir / "reports")
    assert fleet["exit"] == 1
    assert [(n["name"], n["status"]) for n in fleet["nodes"]] == [
        ("gpu-5090", "failed"),
        ("gpu-h100", "passed"),
    ]
    h100 = fleet["nodes"][1]
    assert [g["uuid"] for g in h100["gpus"]] == [H100["uuid"], H100_B["uuid"]]
    assert h100["driver_version"] == "580.159.04"
    (split,) = fleet["node_specific"]
    assert (split["id"], split["failing"], split["passing"]) == (
        "cuda.arch-supported",
        ["gpu-5090"],
        ["gpu-h100"],
    )
    differs = {d["fact"]: (d["failing"], d["passing"]) for d in split["differs"]}
    assert differs["compute_capability"] == (["12.0"], ["9.0"])
    assert differs["gpu"] == (["NVIDIA GeForce RTX 5090"], ["NVIDIA H100 80GB HBM3"])
    assert "torch" not in differs  # same env on both nodes
    # the matrix: every node has a cell for every check; the bad cell carries summary and fix
    assert len(fleet["cells"]) == len(fleet["nodes"]) * len(fleet["checks"])
    assert fleet["checks"][0]["id"] == "cuda.arch-supported"
    bad = [c for c in fleet["cells"] if c["outcome"] == "failed"]
    assert bad == [
        {
            "node": "gpu-5090",
            "id": "cuda.arch-supported",
            "env": "",
            "outcome": "failed",
            "summary": "CUDA 12.4.131 nvcc cannot generate code for sm_120 (12.0, from "
            "nvidia-smi); it needs CUDA >= 12.8",
            "fix": 'set `cuda-version = "12.8.*"` and `cuda-nvcc = "12.8.*"` in [dependencies] '
            "in pixi.toml",
            "test": bad[0]["test"],
        }
    ]
    passed = next(c for c in fleet["cells"] if c["outcome"] == "passed")
    assert "fix" not in passed and "summary" not in passed


def test_cli_merge_prints_writes_and_exits_1(fleet_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "pytest_vllm_env", "merge", str(fleet_dir / "reports")]
        + [f"--json={out / 'fleet.json'}", f"--html={out / 'fleet.html'}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("pytest-vllm-env merge: 2 node(s) (1 failed, 1 passed)")
    assert "  FAILED    gpu-5090: NVIDIA GeForce RTX 5090 (12.0); driver 575.57.08;" in lines[1]
    text = done.stdout
    assert "  cuda.arch-supported: fails on gpu-5090; passes on gpu-h100" in text
    assert "      compute_capability: 12.0 where it fails, 9.0 where it passes" in text
    assert '      fix: set `cuda-version = "12.8.*"`' in text
    assert json.loads((out / "fleet.json").read_text())["exit"] == 1
    assert (out / "fleet.html").read_text().startswith("<!doctype html>")
    assert shutil.which("pytest-vllm-env", path=str(Path(sys.executable).parent))


def test_all_nodes_passing_exits_0(fleet_dir: Path):
    fleet = merged(fleet_dir / "reports" / "gpu-h100.json")
    assert fleet["exit"] == 0 and fleet["node_specific"] == []


# -- schemas, duplicates, unreadable files ---------------------------------------------------
SCHEMA1 = {
    # what the plugin wrote before schema 2: no warning outcome, no strict, no node section
    "schema": 1,
    "env": {"prefix": "/opt/env", "name": None, "python_version": "3.12.3", "packages": {}},
    "targets": {"cuda_archs": ["9.0"], "cuda_archs_source": "--cuda-arch"},
    "checks": [
        {
            "id": "cuda.arch-supported",
            "area": "cuda",
            "outcome": "passed",
            "summary": "nvcc 12.8 targets sm_90",
            "fix": "",
            "evidence": {},
            "test": "conformance/test_cuda.py::test_arch_supported",
        },
        {
            "id": "env.python",
            "area": "env",
            "outcome": "failed",
            "summary": "no python in the env",
            "fix": "add python to [dependencies]",
            "evidence": {},
            "test": "conformance/test_env.py::test_python",
        },
    ],
}


def test_schema_1_and_2_reports_merge(fleet_dir: Path, tmp_path: Path):
    old = tmp_path / "gpu-old.json"
    old.write_text(json.dumps(SCHEMA1))
    fleet = merged(fleet_dir / "reports", old)
    by_name = {n["name"]: n for n in fleet["nodes"]}
    # named by its file, as reports/%N.json names it
    assert by_name["gpu-old"]["status"] == "failed"
    assert "no node section (schema 1" in by_name["gpu-old"]["absent"]["node"]
    col = next(c for c in fleet["checks"] if c["id"] == "cuda.arch-supported")
    assert col["nodes"] == {"failed": ["gpu-5090"], "passed": ["gpu-old", "gpu-h100"]}
    # unknown GPU on the old node: no GPU fact can be compared, the archs still can
    split = next(s for s in fleet["node_specific"] if s["id"] == "cuda.arch-supported")
    assert {d["fact"] for d in split["differs"]} == {"cuda_archs"}
    assert [r["schema"] for r in fleet["reports"]] == [2, 2, 1]


def test_schema_1_holding_a_warning_is_noted(tmp_path: Path):
    data = json.loads(json.dumps(SCHEMA1))
    data["checks"][1].update(outcome="warning")
    path = tmp_path / "n.json"
    path.write_text(json.dumps(data))
    fleet = merged(path)
    assert fleet["exit"] == 0
    assert "schema 1 report holds a 'warning' outcome (env.python)" in fleet["notes"][0]


def test_duplicates_and_reruns(fleet_dir: Path, tmp_path: Path):
    reports = fleet_dir / "reports"
    copy = tmp_path / "copy-of-5090.json"
    shutil.copy(reports / "gpu-5090.json", copy)
    fleet = merged(reports, reports / "gpu-h100.json", copy)
    assert [n["name"] for n in fleet["nodes"]] == ["gpu-5090", "gpu-h100"]
    assert sum("the same report as" in n for n in fleet["notes"]) == 2
    # a rerun on gpu-5090 after the fix: the newer report's verdicts are used
    rerun = json.loads((reports / "gpu-5090.json").read_text())
    rerun["created"] = "2999-01-01T00:00:00Z"
    for check in rerun["checks"]:
        if check["outcome"] == "failed":
            check.update(outcome="passed", summary="fixed", fix="")
    (tmp_path / "rerun.json").write_text(json.dumps(rerun))
    fleet = merged(reports, tmp_path / "rerun.json")
    assert fleet["exit"] == 0 and {n["status"] for n in fleet["nodes"]} == {"passed"}
    assert any("the newer verdicts are used" in n for n in fleet["notes"])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("half", "is truncated ("),
        ("", "is empty (the node wrote no report, or died while writing it)"),
        (b"\xff\xfe{", "is not UTF-8 text"),
        ('{"nodes": [], "cells": [], "fleet_schema": 1}', "is a merged fleet view (fleet.json)"),
        ('{"schema": 3, "checks": []}', "has schema 3, newer than this merge reads (1, 2)"),
        (
            '{"schema": 2, "checks": [{"id": "x.y", "outcome": "great"}]}',
            "checks[0].outcome: 'great' is not one of passed, warning, failed, skipped, "
            "error (x.y)",
        ),
        ("[1, 2]", "is not a pytest-vllm-env report (no 'checks' list)"),
    ],
)
def test_unreadable_report_exits_2_naming_it_and_merges_the_rest(
    fleet_dir: Path, tmp_path: Path, capsys, content, problem
):
    bad = tmp_path / "gpu-dead.json"
    if content == "half":
        text = (fleet_dir / "reports" / "gpu-h100.json").read_text()
        bad.write_text(text[: len(text) // 2])
    elif isinstance(content, bytes):
        bad.write_bytes(content)
    else:
        bad.write_text(content)
    out = tmp_path / "fleet.json"
    code = main(["merge", str(fleet_dir / "reports"), str(bad), f"--json={out}"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"pytest-vllm-env: cannot merge {bad}: {problem}" in err
    fleet = json.loads(out.read_text())
    assert fleet["unreadable"][0]["path"] == str(bad)
    assert {n["name"] for n in fleet["nodes"]} == {"gpu-h100", "gpu-5090"}


def test_missing_file_and_empty_directory(tmp_path: Path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["merge", str(tmp_path / "nope.json"), str(tmp_path / "empty")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'nope.json'}: cannot be read: No such file or directory" in err
    assert f"{tmp_path / 'empty'}: is a directory without *.json reports" in err


# -- several envs, warnings ------------------------------------------------------------------
def _two_env_report(pytester: pytest.Pytester, env_builder: EnvBuilder) -> Path:
    env_builder.python()
    other = EnvBuilder(env_builder.workspace, "cuda")
    other.python()
    other.broken_record()
    env_builder.manifest()
    report = pytester.path / "two.json"
    pytester.runpytest(
        "--vllm-conformance",
        "-p",
        "no:randomly",
        "-m",
        "toolchain",
        "-k",
        "test_env",
        "--vllm-env",
        str(env_builder.prefix),
        "--vllm-env",
        str(other.prefix),
        "--vllm-node-name=n1",
        "--vllm-env-report",
        str(report),
    )
    return report


def test_several_envs_per_report_get_their_own_columns(pytester, env_builder: EnvBuilder):
    report = _two_env_report(pytester, env_builder)
    fleet = merged(report)
    columns = {c["column"]: c["status"] for c in fleet["checks"]}
    assert columns["env.conda-meta [cuda]"] == "failed"
    assert columns["env.conda-meta [default]"] == "passed"
    assert fleet["checks"][0]["column"] == "env.conda-meta [cuda]"
    # a report written before checks carried their env: the env comes from the test id
    data = json.loads(report.read_text())
    for check in data["checks"]:
        del check["env"]
    report.write_text(json.dumps(data))
    again = merged(report)
    assert {c["column"]: c["status"] for c in again["checks"]} == columns


WARNING_TESTS = """
    from pytest_vllm_env.findings import passed, warning

    def test_costly(verdict):
        verdict(warning("modelopt.kv-scales", "KV scales default to 1.0", "calibrate KV"))

    def test_fine(verdict):
        verdict(passed("env.python", "fine"))
"""


def test_warning_cell_is_not_a_failure_unless_strict(pytester, tmp_path: Path):
    pytester.makepyfile(WARNING_TESTS)
    pytester.runpytest("--vllm-node-name=n1", "--vllm-env-report=warn.json")
    fleet = merged(pytester.path / "warn.json")
    assert fleet["exit"] == 0
    assert fleet["nodes"][0]["status"] == "warning"
    (cell,) = [c for c in fleet["cells"] if c["outcome"] == "warning"]
    assert (cell["summary"], cell["fix"]) == ("KV scales default to 1.0", "calibrate KV")
    assert merged(pytester.path / "warn.json", strict=True)["exit"] == 1
    # a report written with --vllm-strict already holds the warning as a failure
    pytester.runpytest("--vllm-node-name=n1", "--vllm-strict", "--vllm-env-report=strict.json")
    assert merged(pytester.path / "strict.json")["exit"] == 1


# -- the HTML, parsed ------------------------------------------------------------------------
class Page(HTMLParser):
    """Just enough of the DOM: every element's tag and attributes, rows and their cells."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.rows: list[dict[str, str]] = []
        self.cells: list[list[dict[str, str]]] = []
        self.headers: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a))
        if tag == "tr" and a.get("class") == "node":
            self.rows.append(a)
            self.cells.append([])
        if tag == "td" and "cell" in a.get("class", "").split():
            self.cells[-1].append(a)
        if tag == "th" and a.get("class") == "check":
            self.headers.append(a["data-check"])

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> Page:
    p = Page()
    p.feed(html)
    p.close()
    return p


def test_html_structure(fleet_dir: Path, tmp_path: Path):
    old = tmp_path / "gpu-old.json"
    old.write_text(json.dumps(SCHEMA1))
    fleet = merged(fleet_dir / "reports", old)
    fleet_missing = matrix.merge(
        [load(p) for p in sorted((fleet_dir / "reports").glob("*.json"))],
        [],
        [{"name": "gpu-silent", "status": "no-answer", "problem": "no answer within 60 s"}],
    )
    html = page.render(fleet)
    p = parse(html)
    assert html.startswith("<!doctype html>")
    # self-contained: no scripts, no external resources, style inline
    tags = {tag for tag, _ in p.elements}
    assert "script" not in tags and "link" not in tags and "img" not in tags
    for _, attrs in p.elements:
        for key in ("src", "href"):
            assert not attrs.get(key, "").strip() or attrs[key].startswith("#")
    assert "style" in tags
    # failing nodes first, failing checks first, one cell per node and check
    assert [r["data-node"] for r in p.rows] == ["gpu-5090", "gpu-old", "gpu-h100"]
    assert p.headers[:2] == ["cuda.arch-supported", "env.python"]
    assert all(len(row) == len(p.headers) for row in p.cells)
    first = p.cells[0][0]
    assert first["class"] == "cell o-failed" and first["data-check"] == "cuda.arch-supported"
    assert 'fix: set `cuda-version = "12.8.*"`' in first["title"]
    assert "sm_120" in first["title"]
    text = "".join(p.text)
    assert "3 node(s): 2 failed, 1 passed" in text
    assert "Fails on some nodes, passes on others" in text
    # a node that never answered is listed first among the rest, with its reason
    p2 = parse(page.render(fleet_missing))
    assert [r["data-status"] for r in p2.rows] == ["failed", "no-answer", "passed"]
    assert "no answer within 60 s" in "".join(p2.text)
    assert {c["class"] for c in p2.cells[1]} == {"cell o-none"}


def test_html_escapes_what_reports_say(tmp_path: Path):
    data = json.loads(json.dumps(SCHEMA1))
    data["checks"][1]["summary"] = '<script>alert("x")</script> & "quotes"'
    path = tmp_path / "<b>node.json"
    path.write_text(json.dumps(data))
    html = page.render(merged(path))
    assert "<script>" not in html and "<b>node" not in html
    assert "&lt;script&gt;" in html


# -- usage errors ----------------------------------------------------------------------------
def test_usage_errors_exit_4(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["merge"])
    assert exc.value.code == 4
    assert main(["fleet", "--gpus", "many", "--", "-m", "toolchain"]) == 4
    assert "'all' or a number" in capsys.readouterr().err
    assert main(["fleet"]) == 4
    assert "give the pytest arguments after --" in capsys.readouterr().err


def test_fleet_with_an_address_nothing_answers_at(tmp_path: Path):
    pytest.importorskip("ray", reason="Ray not installed: pip install -e '.[fleet]'")
    done = subprocess.run(
        [sys.executable, "-m", "pytest_vllm_env", "fleet", "--ray-address=127.0.0.1:1"]
        + [f"--out={tmp_path}", "--", "-m", "toolchain"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 4
    assert "nothing answers at the Ray cluster address 127.0.0.1:1: Connection refused" in (
        done.stderr
    )


def test_fleet_without_ray_says_how_to_install_it():
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from pytest_vllm_env.cli import main\n"
        "sys.exit(main(['fleet', '--', '-m', 'toolchain']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 4
    assert "the fleet command needs Ray: pip install 'pytest-vllm-env[fleet]'" in done.stderr


# -- the HTML in a real browser --------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
)
# what the browser computed, written into the page by a script added to a copy of it (the
# page itself has no scripts)
PROBE = """<pre id="probe"></pre><script>
const q = (s) => [...document.querySelectorAll(s)];
const rect = (e) => e.getBoundingClientRect();
const firstCell = document.querySelector('td.cell');
const heads = q('th.check');
document.getElementById('probe').textContent = JSON.stringify({
  rows: q('tr.node').map((r) => r.dataset.node),
  firstCell: [firstCell.dataset.node, firstCell.dataset.check,
              getComputedStyle(firstCell).backgroundColor],
  passedColor: getComputedStyle(document.querySelector('td.o-passed')).backgroundColor,
  verdictTop: rect(document.getElementById('verdict')).top,
  splitTop: rect(document.getElementById('node-specific')).top,
  matrixTop: rect(document.querySelector('table.matrix')).top,
  headLefts: heads.slice(0, 2).map((h) => rect(h).left),
  hiddenCells: q('td.cell').filter((c) => rect(c).width < 5 || rect(c).height < 5).length,
  cells: q('td.cell').length,
});
</script>"""


def chromium(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    argv = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1400,900",
        *args,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium not installed (Debian: apt-get install chromium)"
)
def test_html_renders_in_chromium_failing_first(fleet_dir: Path, tmp_path: Path):
    fleet = merged(fleet_dir / "reports")
    html = page.render(fleet)
    (tmp_path / "fleet.html").write_text(html)
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", PROBE + "</body>"))
    done = chromium("--dump-dom", probed.as_uri(), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    start = dom.index('<pre id="probe">') + len('<pre id="probe">')
    seen = json.loads(dom[start : dom.index("</pre>", start)].replace("&quot;", '"'))
    assert seen["rows"] == ["gpu-5090", "gpu-h100"]
    assert seen["firstCell"] == ["gpu-5090", "cuda.arch-supported", "rgb(207, 34, 46)"]
    assert seen["passedColor"] == "rgb(45, 164, 78)"
    # the verdict, then what splits the fleet, then the matrix; the failing check leftmost
    assert seen["verdictTop"] < seen["splitTop"] < seen["matrixTop"]
    assert seen["headLefts"][0] < seen["headLefts"][1]
    assert seen["hiddenCells"] == 0 and seen["cells"] == 2 * len(fleet["checks"])
    shot = tmp_path / "fleet.png"
    done = chromium(f"--screenshot={shot}", (tmp_path / "fleet.html").as_uri(), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


# what the browser laid out at 1,400 px: the page's width against the window's, the matrix
# box's, and where the last check column and the node column are once the box is scrolled
# to its right end
WIDTH_PROBE = """<pre id="probe"></pre><script>
const wrap = document.querySelector('.matrixwrap');
const heads = [...document.querySelectorAll('th.check')];
const seen = {window: window.innerWidth, page: document.documentElement.scrollWidth,
  boxRight: wrap.getBoundingClientRect().right, boxScroll: wrap.scrollWidth,
  boxClient: wrap.clientWidth};
wrap.scrollLeft = wrap.scrollWidth;
const box = wrap.getBoundingClientRect();
seen.lastRight = heads[heads.length - 1].getBoundingClientRect().right - box.right;
seen.nodeLeft = document.querySelector('tbody th').getBoundingClientRect().left - box.left;
document.getElementById('probe').textContent = JSON.stringify(seen);
</script>"""


def _laid_out(html: str, tmp_path: Path) -> dict:
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", WIDTH_PROBE + "</body>"))
    done = chromium("--dump-dom", probed.as_uri(), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    start = dom.index('<pre id="probe">') + len('<pre id="probe">')
    return json.loads(dom[start : dom.index("</pre>", start)].replace("&quot;", '"'))


@pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium not installed (Debian: apt-get install chromium)"
)
def test_html_at_1400_px_keeps_a_53_column_matrix_in_the_window(tmp_path: Path, monkeypatch):
    """docs/fleet.md: a 53-column matrix was cut off at the right edge of a 1,400 px window;
    now it scrolls inside its box with the node column sticky. In Chromium at 1,400 px (with
    a fix and a summary holding a 200-character path): the page is no wider than the window,
    the box ends inside it and scrolls, and scrolled to its end the last check column is in
    view with the node names still at the box's left edge. Without the box's rule the same
    page is wider than the window (the failure the rule fixed)."""
    reports = _fleet_reports(30, 53)
    path = "/home/someone/work/.pixi/envs/cuda-build/lib/python3.12/site-packages/" * 3
    for report in reports:
        first = report.checks[0]
        if first["outcome"] == "failed":
            first["summary"], first["fix"] = f"no sm_120 in {path}", f"LD_LIBRARY_PATH={path}"
    html = page.render(matrix.merge(reports))
    seen = _laid_out(html, tmp_path)
    assert seen["window"] == 1400, seen
    assert seen["page"] <= seen["window"] and seen["boxRight"] <= seen["window"], seen
    assert seen["boxScroll"] > seen["boxClient"], seen  # 53 columns: it scrolls, in its box
    assert seen["lastRight"] <= 1 and abs(seen["nodeLeft"]) <= 1, seen
    monkeypatch.setattr(page, "STYLE", page.STYLE.replace(".matrixwrap{overflow:auto;", ".x{"))
    assert _laid_out(page.render(matrix.merge(reports)), tmp_path)["page"] > 1400


# -- reports the plugin did not write, outputs that cannot be written (issue 21) -------------
def _node_report(name: str = "n1", outcome: str = "passed") -> dict:
    return {
        "schema": 2,
        "created": "2026-12-07T10:00:00+00:00",
        "node": {
            "name": name,
            "driver_version": "580.159.04",
            "gpus": [{"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}],
        },
        "env": {"name": "default", "python_version": "3.12.7", "packages": {"torch": "2.11.0"}},
        "targets": {"cuda_archs": ["9.0"]},
        "checks": [{"id": "cuda.nvcc-in-env", "outcome": outcome, "summary": "", "fix": ""}],
    }


def _edit(report: dict, field: str, value) -> dict:
    """``report`` with the dotted ``field`` (``node.gpus.0``) set to ``value``."""
    *parents, last = [int(p) if p.isdigit() else p for p in field.split(".")]
    target = report
    for part in parents:
        target = target[part]
    target[last] = value
    return report


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("node.gpus", ["H100", "H100"], 'node.gpus[0]: a string ("H100"), not a GPU object'),
        ("node.gpus", "H100", 'node.gpus: a string ("H100"), not a list of GPU objects'),
        ("node", ["n1"], 'node: a list (["n1"]), not an object'),
        ("node.gpus.0.name", {"a": 1}, 'node.gpus[0].name: an object ({"a": 1}), not text'),
        ("node.driver_version", [580], "node.driver_version: a list ([580]), not text"),
        ("node.absent", "none", 'node.absent: a string ("none"), not an object'),
        ("env.python_version", {}, "env.python_version: an object ({}), not text"),
        ("env.packages", ["torch"], 'env.packages: a list (["torch"]), not an object'),
        ("targets.cuda_archs", [9.0], "targets.cuda_archs: a list ([9.0]), not a list of arch"),
        ("checks.0.summary", {"x": 1}, 'checks[0].summary: an object ({"x": 1}), not text'),
        ("checks.0.outcome", None, "checks[0].outcome: None is not one of passed, warning"),
        ("created", 20261207, "created: a number (20261207), not a time stamp"),
    ],
)
def test_a_field_of_another_type_names_the_file_and_the_field(
    tmp_path: Path, capsys, field, value, problem
):
    good = tmp_path / "n2.json"
    good.write_text(json.dumps(_node_report("n2", "failed")))
    bad = tmp_path / "n1.json"
    bad.write_text(json.dumps(_edit(_node_report(), field, value)))
    out, html = tmp_path / "fleet.json", tmp_path / "fleet.html"
    code = main(["merge", str(bad), str(good), f"--json={out}", f"--html={html}"])
    assert code == 2  # unreadable input; the node that failed would have made it 1
    err = capsys.readouterr().err
    assert f"pytest-vllm-env: cannot merge {bad}: {problem}" in err
    assert "Traceback" not in err
    assert [n["name"] for n in json.loads(out.read_text())["nodes"]] == ["n2"]
    assert html.is_file()


def test_numbers_where_text_is_written_still_merge(tmp_path: Path):
    a = _edit(_edit(_node_report("a"), "env.python_version", 3.12), "node.driver_version", 580)
    b = _edit(_node_report("b", "failed"), "node.driver_version", "575.57.08")
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    fleet = merged(tmp_path / "a.json", tmp_path / "b.json")
    (check,) = fleet["node_specific"]
    assert {"fact": "driver_version", "failing": ["575.57.08"], "passing": ["580"]} in (
        check["differs"]
    )


def test_a_report_over_the_size_bound_is_named_not_read(tmp_path: Path, capsys, monkeypatch):
    from pytest_vllm_env import files

    monkeypatch.setattr(files, "REPORT", 1000)
    huge = tmp_path / "huge.json"
    report = _node_report()
    report["checks"] *= 40
    huge.write_text(json.dumps(report))
    assert main(["merge", str(huge)]) == 2
    assert f"cannot merge {huge}: cannot be read: " in capsys.readouterr().err


def test_the_same_report_twice_is_merged_once(tmp_path: Path, capsys):
    report = tmp_path / "n1.json"
    report.write_text(json.dumps(_node_report()))
    copy = tmp_path / "copy.json"
    copy.write_text(report.read_text())
    out = tmp_path / "fleet.json"
    assert main(["merge", str(report), str(copy), str(report), f"--json={out}"]) == 0
    fleet = json.loads(out.read_text())
    assert [n["name"] for n in fleet["nodes"]] == ["n1"]
    assert any("the same report as" in note for note in fleet["notes"])


@pytest.mark.parametrize("where", ["directory", "under-a-file", "same-file"])
def test_an_output_that_cannot_be_written_is_a_usage_error_before_reading(
    tmp_path: Path, capsys, where
):
    report = tmp_path / "n1.json"
    report.write_text(json.dumps(_node_report()))
    args = {
        "directory": [f"--json={tmp_path}"],
        "under-a-file": [f"--html={report}/fleet.html"],
        "same-file": [f"--json={tmp_path / 'x'}", f"--html={tmp_path / 'x'}"],
    }[where]
    says = {
        "directory": f"--json {tmp_path}: is a directory; name a file, e.g. "
        f"{tmp_path / 'fleet.json'}",
        "under-a-file": f"--html {report}/fleet.html: {report} is a file, not a directory",
        "same-file": f"--json and --html name the same file {tmp_path / 'x'}",
    }[where]
    assert main(["merge", str(report), *args]) == 4
    err = capsys.readouterr().err
    assert f"pytest-vllm-env: {says}" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_an_output_that_fails_to_write_is_a_usage_error(tmp_path: Path, capsys, monkeypatch):
    report = tmp_path / "n1.json"
    report.write_text(json.dumps(_node_report()))

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    assert main(["merge", str(report), f"--json={tmp_path / 'out.json'}"]) == 4
    assert "--json " + str(
        tmp_path / "out.json"
    ) + ": cannot be written (No space left on device)" in (capsys.readouterr().err)


def test_exit_codes_are_distinct_and_documented(tmp_path: Path, capsys):
    ok, failed = tmp_path / "ok.json", tmp_path / "failed.json"
    ok.write_text(json.dumps(_node_report("ok")))
    failed.write_text(json.dumps(_node_report("bad", "failed")))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert main(["merge", str(ok)]) == 0
    assert main(["merge", str(ok), str(failed)]) == 1
    assert main(["merge", str(ok), str(broken)]) == 2
    assert main(["merge", str(ok), f"--json={tmp_path}"]) == 4
    text = (ROOT / "docs" / "fleet.md").read_text()
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 4 |"):
        assert code in text


# -- a fleet at scale (issue 21) -------------------------------------------------------------
def _fleet_reports(nodes: int, checks: int) -> list:
    """In-memory reports: every third node an RTX 5090 on which the first check fails."""
    from pytest_vllm_env.fleet.reports import Report

    out = []
    for n in range(nodes):
        gpu, cc = (("NVIDIA GeForce RTX 5090", "12.0"), ("NVIDIA H100", "9.0"))[n % 3 != 1]
        out.append(
            Report(
                path=Path(f"/r/n{n:04d}.json"),
                schema=2,
                node_name=f"n{n:04d}",
                node={"name": f"n{n:04d}", "driver_version": "580.159.04",
                      "gpus": [{"name": gpu, "compute_capability": cc}] * 8},
                envs=[{"name": "default", "python_version": "3.12.7"}],
                targets={},
                checks=[
                    {"id": f"a.c{c:03d}", "env": "default",
                     "outcome": "failed" if (c == 0 and n % 3 == 1) else "passed",
                     "summary": "no sm_120" if (c == 0 and n % 3 == 1) else "", "fix": ""}
                    for c in range(checks)
                ],
                digest=str(n),
            )
        )  # fmt: skip
    return out


def test_merge_is_linear_in_the_nodes():
    # 1,000 nodes x 100 checks took 38 s (the facts-that-differ search and the node counts
    # were quadratic); linear, it takes ~0.3 s of CPU (benchmarks/fleet_merge.py)
    reports = _fleet_reports(1000, 100)
    start = time.process_time()
    fleet = matrix.merge(reports)
    assert time.process_time() - start < 3.0
    (split,) = fleet["node_specific"]
    assert len(split["failing"]) == 333 and len(split["passing"]) == 667
    assert split["differs"][0]["fact"] == "gpu"


def test_text_summary_groups_nodes_instead_of_listing_them():
    fleet = matrix.merge(_fleet_reports(60, 3))
    lines = matrix.render_text(fleet)
    assert len(lines) < 15 and max(len(line) for line in lines) < 300
    assert (
        "  FAILED    20 nodes (n0001, n0004, n0007 and 17 more): 8 x NVIDIA GeForce RTX 5090 "
        "(12.0); driver 580.159.04; F=1 P=2" in lines
    )
    assert (
        "  a.c000: fails on 20: n0001, n0004, n0007, n0010, n0013, n0016, n0019, n0022 and 12 "
        "more; passes on the other 40" in lines
    )


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("3.11.7", "3.11", True),
        ("Python 3.11.7", "3.11.7", True),
        ("580.159.04", "580.159.4", True),
        ("3.11", "3.12", False),
        ("NVIDIA H100", "NVIDIA H100 80GB HBM3", False),
        ("12.0", "12.0", True),
        ("12.0", "9.0", False),
    ],
)
def test_facts_that_differ_ignore_how_a_value_is_written(a, b, same):
    assert matrix.same_value(a, b) is same
    assert matrix.same_value(b, a) is same


def test_python_3_11_and_3_11_7_are_no_difference(tmp_path: Path):
    a = _edit(_node_report("a"), "env.python_version", "3.11")
    b = _edit(_node_report("b", "failed"), "env.python_version", "3.11.7")
    b = _edit(b, "node.driver_version", "550.144.03")
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    (check,) = merged(tmp_path / "a.json", tmp_path / "b.json")["node_specific"]
    assert [d["fact"] for d in check["differs"]] == ["driver_version"]


def test_html_at_a_thousand_nodes_groups_identical_rows_and_scrolls_in_its_box():
    fleet = matrix.merge(_fleet_reports(1000, 53))
    html = page.render(fleet)
    assert len(html) < 2_000_000  # 1,000 rows x 53 titled cells were 14 MB
    p = parse(html)
    # two kinds of node: 333 RTX 5090 nodes fail a.c000, 667 H100 nodes pass everything
    assert [(r["data-status"], r.get("data-count")) for r in p.rows] == [
        ("failed", "333"),
        ("passed", "667"),
    ]
    assert p.headers[0] == "a.c000"  # failing checks first
    assert all(len(row) == 53 for row in p.cells)
    assert p.cells[0][0]["title"].startswith("333 nodes · a.c000: no sm_120")
    # every name is still on the page, folded (no script)
    assert "n0997" in html and "<details" in html and "<script" not in html
    # the matrix scrolls inside its box; header row and node column stay in view
    assert '<div class="matrixwrap"><table class="matrix">' in html
    assert ".matrixwrap{overflow:auto;max-width:100%" in html
    assert "table.matrix thead th{position:sticky;top:0" in html
    assert "table.matrix tbody th{position:sticky;left:0" in html


def test_html_of_a_small_fleet_lists_nodes_by_name():
    fleet = matrix.merge(_fleet_reports(3, 2))
    p = parse(page.render(fleet))
    assert [r["data-node"] for r in p.rows] == ["n0001", "n0000", "n0002"]
    assert all("data-count" not in r for r in p.rows)
