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
