"""The pixi.lock reader: formats 4-7 give the same packages; bad input is a LockError."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures import pixi_locks as L
from pytest_vllm_env.readers.pixilock import LockError, parse_lock, read_lock


def _packages(text: str, env: str = "default", platform: str = "linux-64") -> set[tuple]:
    locked = parse_lock(text).env(env, platform)
    conda = {("conda", c.name, c.version, c.build, c.subdir) for c in locked.conda.values()}
    pypi = {("pypi", p.name, p.version, p.requires_dist) for p in locked.pypi.values()}
    return conda | pypi


def test_formats_4_to_7_read_the_same_packages():
    texts = {v: L.seed_001_lock(v).text() for v in (4, 5, 6, 7)}
    assert "kind: conda" in texts[5] and "kind: conda" not in texts[6]
    assert "\nplatforms:" in texts[7] and "\nplatforms:" not in texts[6]
    expected = _packages(texts[5])
    assert len(expected) == 160
    for version, text in texts.items():
        assert _packages(text) == expected, version


def test_format_6_derives_conda_fields_from_the_file_name():
    locked = parse_lock(L.seed_001_lock(6).text()).env("default", "linux-64")
    # names with dashes and underscores, and a noarch package
    nvcc = locked.conda["cuda-nvcc_linux-64"]
    assert (nvcc.version, nvcc.build, nvcc.subdir) == ("12.4.131", "he92618c_0", "linux-64")
    assert locked.conda["ld_impl_linux-64"].version == "2.43"
    assert locked.conda["cuda-cudart-dev_linux-64"].subdir == "noarch"
    assert locked.conda["python"].channel == "https://conda.anaconda.org/conda-forge/"
    assert locked.python_version == "3.12.9"


def test_pypi_entries_keep_version_location_and_requires_dist():
    locked = parse_lock(L.seed_001_lock(6).text()).env("default", "linux-64")
    torch = locked.pypi_package("torch")
    assert torch.version == "2.6.0+cu124"
    assert torch.filename == "torch-2.6.0+cu124-cp312-cp312-linux_x86_64.whl"
    assert torch.wheel_tags == ("cp312", "cp312", "linux_x86_64")
    assert any(r.startswith("nvidia-cuda-runtime-cu12==12.4.127") for r in torch.requires_dist)
    vllm = locked.pypi_package("vLLM")
    assert "torch==2.6.0" in vllm.requires_dist
    assert vllm.requires_python == "<3.13,>=3.9"


def test_scalars_stay_strings():
    # `version: 1.10` unquoted would be the float 1.1 under a resolving loader
    text = L.LockBuilder(6).add("default", [L.wheel("foo", "1.0")]).text()
    text = text.replace("version: '1.0'", "version: 1.10")
    assert parse_lock(text).env("default", "linux-64").pypi["foo"].version == "1.10"


def test_format_7_platform_names_map_to_their_subdir():
    text = L.seed_004_lock(7).text()
    text = text.replace("- name: linux-64", "- name: linux-64-cuda\n  subdir: linux-64")
    text = text.replace("      linux-64:\n", "      linux-64-cuda:\n")
    lock = parse_lock(text)
    assert lock.platforms("rtx5090-vllm") == ["linux-64-cuda"]
    assert lock.env("rtx5090-vllm", "linux-64").platform == "linux-64-cuda"


def test_env_and_platform_missing_are_their_own_errors():
    lock = parse_lock(L.seed_004_lock(6).text())
    with pytest.raises(LockError) as env_err:
        lock.env("cuda", "linux-64")
    assert env_err.value.kind == "env"
    assert "has no environment 'cuda' (it has: default, rtx5090-vllm)" in str(env_err.value)
    with pytest.raises(LockError) as plat_err:
        lock.env("default", "osx-arm64")
    assert plat_err.value.kind == "platform"
    assert plat_err.value.details["platforms"] == ["linux-64"]


@pytest.mark.parametrize(
    ("text", "kind", "says"),
    [
        ("version: 6\nenvironments: [\n", "yaml", "is not valid YAML (line 3"),
        (b"\x00\x01\x02garbage", "yaml", "is not valid YAML"),
        ("just a string\n", "structure", "no mapping at the top"),
        ("environments: {}\npackages: []\n", "structure", "no integer `version:` field"),
        ("version: 8\nenvironments: {}\npackages: []\n", "version", "format version 8"),
        ("version: 3\nmetadata: {}\npackage: []\n", "version", "format version 3"),
        ("version: 6\nenvironments: {}\n", "structure", "has no `packages:` list"),
        ("version: 6\nenvironments: {}\npackages:\n- name: x\n", "structure", "no conda/pypi"),
    ],
)
def test_bad_input_is_a_lock_error(text, kind, says):
    with pytest.raises(LockError) as err:
        parse_lock(text)
    assert err.value.kind == kind
    assert says in str(err.value)


def test_merge_conflict_markers_are_not_yaml():
    text = L.seed_001_lock(6).text()
    head, _, tail = text.partition("packages:\n- conda:")
    conflicted = head + "<<<<<<< HEAD\npackages:\n- conda:" + tail + "=======\n>>>>>>> main\n"
    with pytest.raises(LockError) as err:
        parse_lock(conflicted)
    assert err.value.kind in ("yaml", "structure")


def test_every_truncation_is_a_lock_error_or_a_smaller_lock():
    # An interrupted write or a partial download: never a traceback, whatever the cut.
    text = L.seed_001_lock(6).text()
    outcomes = set()
    for cut in range(0, len(text), len(text) // 97):
        try:
            lock = parse_lock(text[:cut])
            lock.env("default", "linux-64")
            outcomes.add("read")
        except LockError as exc:
            outcomes.add(exc.kind)
    assert {"yaml", "structure"} <= outcomes


def test_unreadable_file(tmp_path: Path):
    with pytest.raises(LockError) as err:
        read_lock(tmp_path / "pixi.lock")
    assert err.value.kind == "unreadable"
    assert "No such file" in str(err.value)


# -- YAML anchors and aliases (issue 21) --------------------------------------------------------
def _yaml_sees_alias(text: str | bytes) -> bool:
    import yaml

    return any(
        isinstance(e, yaml.AliasEvent) or getattr(e, "anchor", None)
        for e in yaml.parse(text, Loader=yaml.CBaseLoader)
    )


def test_a_billion_laughs_is_refused_in_bounded_time_and_memory(tmp_path: Path):
    import time
    import tracemalloc

    path = tmp_path / "pixi.lock"
    path.write_text(L.billion_laughs())
    assert path.stat().st_size < 1024 and _yaml_sees_alias(path.read_bytes())
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(LockError) as err:
            read_lock(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 5
    assert peak < 16 << 20, peak  # the expanded tree would be gigabytes
    assert err.value.kind == "alias"
    assert str(err.value).startswith(f"{path} holds a YAML anchor (`&a0`, line 3, column 5)")


@pytest.mark.parametrize(
    "text",
    [
        "version: 6\nenvironments: &e {}\npackages: []\n",  # an anchor alone
        "version: 6\nx: &x {}\nenvironments: *x\npackages: []\n",
        "version: 6\nenvironments:\n  *x\npackages: []\n",  # an alias at a line start
        "version: 6\nenvironments: !!map &x {}\npackages: []\n",  # after a tag
        "version: 6\nenvironments: {a: &x [], b: *x}\npackages: []\n",  # in flow
        "version: 6\nenvironments: {}\npackages: [&x {conda: a}, *x]\n",
        "version: 6\nenvironments: {}\npackages: [{conda: a},*x]\n",
        "version: 6\nenvironments: {}\npackages:\n-   &p {conda: a}\n- *p\n",
        'version: 6\nenvironments: {"a":*x}\npackages: []\n',  # JSON-style, no blank
        "version: 6\r\nenvironments:\r\n  &x {}\r\npackages: []\r\n",
        "version: 6\renvironments:\r  &x {}\rpackages: []\r",  # old Mac line ends
        "version: 6\nenvironments:\u2028  &x {}\npackages: []\n",  # a Unicode line separator
        "version: 6\nenvironments:\x85  &x {}\npackages: []\n",  # NEL
        "\ufeff&d\nversion: 6\nenvironments: {}\npackages: []\n",  # after a BOM
        "--- &d\nversion: 6\nenvironments: {}\npackages: []\n",
        "version: 6\nx: &b {a: 1}\nenvironments:\n  <<: *b\npackages: []\n",  # a merge key
    ],
)
def test_every_anchor_or_alias_is_refused(text):
    assert _yaml_sees_alias(text.encode())  # PyYAML itself reads one there
    for raw in (text, text.encode(), text.encode("utf-16")):  # UTF-16 with its BOM too
        with pytest.raises(LockError) as err:
            parse_lock(raw)
        assert err.value.kind == "alias", (raw, err.value)


def test_stars_and_ampersands_inside_values_are_no_aliases():
    # conda's match specs (`python_abi 3.12.* *_cp312`) and URLs with query strings
    text = L.LockBuilder(6).add("default", [L.wheel("foo", "1.0")]).text()
    deps = "version: 1.0\n  requires_dist:\n  - a *_cp312 &b\n  - b&c"
    text = text.replace("version: '1.0'", deps)
    text = text.replace(".whl\n", ".whl?x=1&y=*\n")
    assert not _yaml_sees_alias(text)
    foo = parse_lock(text).env("default", "linux-64").pypi_package("foo")
    assert foo.requires_dist == ("a *_cp312 &b", "b&c")


def test_real_pixi_locks_hold_no_anchor():
    # every lock the fixtures write, in every format, passes the scan without the slow path
    from pytest_vllm_env.readers.pixilock import _may_alias

    for version in (4, 5, 6, 7):
        assert not _may_alias(L.seed_001_lock(version).text().encode()), version
        assert not _may_alias(L.big_lock(50, version).text().encode()), version


def test_a_fifo_is_refused_not_waited_on(tmp_path: Path):
    import os

    fifo = tmp_path / "pixi.lock"
    os.mkfifo(fifo)
    with pytest.raises(LockError) as err:
        read_lock(fifo)
    assert err.value.kind == "unreadable"
    assert "a FIFO" in str(err.value)
