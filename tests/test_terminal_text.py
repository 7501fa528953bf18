"""Untrusted strings reach the terminal inert (issue 21).

What the suite prints quotes things it did not write: the judged env's paths and package
metadata, Pixi env names, a check's evidence (tool output, file contents), node names and
summaries in merged reports. A terminal obeys escape sequences in them: ``ESC[2J`` clears
the screen, an OSC 8 hyperlink shows one text and opens another target, ``\\r`` rewrites the
line already printed (a FAILED line turned into a passing one), BEL rings, a zero-width
space makes ``to\\u200brch`` read as ``torch``. Each test puts such values where a user's env
or a node's report could, runs the real thing, and reads every byte printed. The JSON
report keeps the values as they were: it is data.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.envs import EnvBuilder
from pytest_vllm_env.text import terminal_safe

CLEAR = "\x1b[2J"
LINK = "\x1b]8;;https://evil.example/\x07click here\x1b]8;;\x07"
OVERWRITE = "\rPASSED everything"
BELL = "\x07"
ZERO_WIDTH = "to\u200brch"
BIDI = "abc\u202edef"
C1_CSI = "\x9b31m"
HOSTILE = CLEAR + LINK + OVERWRITE + BELL + ZERO_WIDTH + BIDI + C1_CSI
# what no terminal-bound text may hold once made safe
RAW = ("\x1b", "\x07", "\r", "\u200b", "\u202e", "\x9b")


def assert_inert(text: str) -> None:
    found = [repr(c) for c in RAW if c in text]
    assert not found, f"raw control characters reached the terminal: {found}\n{text!r}"


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("torch 2.11.0", "torch 2.11.0"),
        (CLEAR + "after", "after"),  # a sequence draws nothing: it goes
        (LINK, "click here"),  # the link text stays, the hidden target goes
        ("\x1b]0;new title\x1b\\x", "x"),  # OSC ended by ST
        ("ok" + OVERWRITE, "ok\\x0dPASSED everything"),  # \r shown, never obeyed
        ("ring" + BELL, "ring\\x07"),
        (ZERO_WIDTH, "to\\u200brch"),
        (BIDI, "abc\\u202edef"),
        ("soft\u00adhyphen", "soft\\xadhyphen"),
        ("tag\U000e0041", "tag\\U000e0041"),  # tag characters smuggle invisible ASCII
        (C1_CSI + "red", "red"),  # the 8-bit CSI
        ("e\x1bc", "e"),  # ESC c resets the terminal
        ("cut \x1b", "cut \\x1b"),  # a lone ESC: shown
        ("né ☃ 中文 — ünïcode\ttab", "né ☃ 中文 — ünïcode\ttab"),  # printable Unicode stays
    ],
)
def test_terminal_safe(given: str, shown: str) -> None:
    assert terminal_safe(given) == shown
    assert_inert(terminal_safe(given))


def test_newlines_kept_or_escaped() -> None:
    assert terminal_safe("a\nb") == "a\nb"
    assert terminal_safe("a\nb", multiline=False) == "a\\x0ab"
    assert terminal_safe("\u2028") == "\\u2028"  # the line separator is no newline here


def test_a_long_unterminated_sequence_costs_one_scan() -> None:
    # Each ESC] without its end must not rescan the rest of the text.
    import time

    text = "\x1b]" * 50_000 + "x" * 50_000
    start = time.perf_counter()
    out = terminal_safe(text)
    assert time.perf_counter() - start < 2.0
    assert_inert(out)


HOSTILE_TESTS = f"""
from pytest_vllm_env.findings import failed, skipped, warning

HOSTILE = {HOSTILE!r}


def test_bad(verdict):
    verdict(
        failed(
            "env.python",
            "python " + HOSTILE,
            "install " + HOSTILE,
            output_tail="cmake says " + HOSTILE,
        )
    )


def test_costly(verdict):
    verdict(warning("modelopt.kv-scales", "kv " + HOSTILE, "calibrate " + HOSTILE))


def test_skipped(verdict):
    verdict(skipped("cuda.nvcc-runs", "no nvcc in " + HOSTILE))
"""


def test_verdicts_summary_and_skip_reasons_are_inert(pytester: pytest.Pytester) -> None:
    # The failure text (summary, fix, evidence), the -rs skip reason, the warnings and
    # "what to change" sections: all of it from findings that quote the env.
    pytester.makepyfile(HOSTILE_TESTS)
    result = pytester.runpytest(
        "--color=no", "-rs", "-p", "no:cacheprovider", "--vllm-env-report=r.json"
    )
    assert result.parseoutcomes() == {"failed": 1, "warned": 1, "skipped": 1}
    out = result.stdout.str()
    assert_inert(out)
    for section in ("vllm-env: what to change", "vllm-env: warnings"):
        assert section in out
    # what the user reads says what was there
    assert "python click here\\x0dPASSED everything\\x07to\\u200brch" in out
    assert "output_tail: cmake says click here" in out
    assert "no nvcc in click here" in out
    # the JSON report is data: the values as the checks gave them
    checks = json.loads((pytester.path / "r.json").read_text())["checks"]
    by_id = {c["id"]: c for c in checks}
    assert by_id["env.python"]["summary"] == "python " + HOSTILE
    assert by_id["env.python"]["fix"] == "install " + HOSTILE
    assert by_id["cuda.nvcc-runs"]["summary"] == "no nvcc in " + HOSTILE


def test_header_of_a_hostile_env_is_inert(pytester: pytest.Pytester, tmp_path: Path) -> None:
    # The env's own path and its packages' metadata (a conda-meta record's version) print
    # in the header of every run, under xdist too.
    env = EnvBuilder(tmp_path, "env" + LINK + BELL, bare=True)
    env.conda("cuda-version", "12.8" + CLEAR + OVERWRITE)
    pytester.makepyfile("def test_env(vllm_env):\n    assert vllm_env.prefix\n")
    for extra in ([], ["-n", "2"]):
        result = pytester.runpytest_subprocess(
            "--color=no", "-p", "no:cacheprovider", f"--vllm-env={env.prefix}", *extra
        )
        result.assert_outcomes(passed=1)
        out = result.stdout.str()
        assert_inert(out)
        assert "vllm-env: " in out and "click here\\x07" in out, out
        assert "CUDA toolkit: cuda-version 12.8\\x0dPASSED everything" in out, out


def test_merge_summary_is_inert(pytester: pytest.Pytester, monkeypatch, capsys) -> None:
    # `pytest-vllm-env merge` prints node names, summaries and fixes from any node's report
    # (and the paths of files it could not read).
    from pytest_vllm_env.cli import main

    pytester.makepyfile(HOSTILE_TESTS)
    monkeypatch.setenv("PYTEST_VLLM_ENV_NODE_NAME", "node" + CLEAR + BELL)
    pytester.runpytest("-p", "no:cacheprovider", "--vllm-env-report=r.json")
    data = json.loads((pytester.path / "r.json").read_text())
    assert data["node"]["name"] == "node" + CLEAR + BELL  # kept as it is in the report
    bad = pytester.path / ("broken" + CLEAR + BELL + ".json")
    bad.write_text("{not json")
    code = main(["merge", str(pytester.path / "r.json"), str(bad)])
    out, err = capsys.readouterr()
    assert code == 2
    assert_inert(out)
    assert_inert(err)
    assert "node\\x07" in out and "python click here" in out, out
    assert "broken\\x07.json" in err, err
