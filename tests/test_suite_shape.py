"""The bundled suite's own shape: every conformance test is one check with a tier and an id,
and every fixture the plugin offers says what it is in ``pytest --fixtures``."""

from __future__ import annotations

import re
from collections import Counter

import pytest

TIERS = {"toolchain", "gpu", "build"}
CHECK_ID = re.compile(r"^[a-z0-9]+\.[a-z0-9-]+$")


@pytest.fixture
def suite_items(pytester: pytest.Pytester) -> list[pytest.Item]:
    items, _ = pytester.inline_genitems("--vllm-conformance", "-p", "no:cacheprovider")
    assert items, "the bundled suite collected nothing"
    return items


def test_every_conformance_test_has_a_tier(suite_items):
    untiered = [i.nodeid for i in suite_items if not TIERS & {m.name for m in i.iter_markers()}]
    assert not untiered, f"add @pytest.mark.toolchain/gpu/build to: {untiered}"


def test_every_conformance_test_has_one_stable_check_id(suite_items):
    ids = {}
    for item in suite_items:
        marks = list(item.iter_markers("vllm_check"))
        assert len(marks) == 1, f"{item.nodeid}: needs exactly one @pytest.mark.vllm_check(id)"
        check = marks[0].args[0] if marks[0].args else ""
        assert CHECK_ID.match(check), f"{item.nodeid}: check id {check!r} is not area.name"
        ids[item.nodeid.split("[")[0]] = check
    # one id per test function (parametrized copies of a test share it)
    repeated = [c for c, n in Counter(ids.values()).items() if n > 1]
    assert not repeated, f"check ids used by two tests: {repeated}"


def test_every_fixture_has_a_docstring(pytester: pytest.Pytester):
    out = pytester.runpytest("--fixtures", "-p", "no:cacheprovider").stdout.str()
    sections = re.split(r"^-+ fixtures defined from (\S+) -+$", out, flags=re.M)
    ours = {
        name: body
        for name, body in zip(sections[1::2], sections[2::2], strict=False)
        if name.startswith("pytest_vllm_env")
    }
    assert {"pytest_vllm_env.plugins.session", "pytest_vllm_env.plugins.cuda"} <= set(ours), out
    undocumented = [
        f"{name}: {fixture}"
        for name, body in ours.items()
        for fixture in re.findall(r"^(\w+)\b.*\n\s+no docstring available", body, re.M)
    ]
    assert not undocumented, undocumented
