"""The quant.* verdicts against what real vLLM did on a GPU with the same folders:
``fixtures/quant_export/formats_truth-<version>.json``, written by
``scripts/device/formats_truth.sh`` on the H100 (every export and failing variant loaded in
its own process with the product's probe; the kernels vLLM logged). Until the lead has run it
and committed the file, the test of the real file skips; the comparison itself is tested here
on a truth that disagrees, so it is known to catch a wrong rule."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fixtures.quant_standin import EXPORTS, VARIANTS
from pytest_vllm_env.tables.quant_kernels import FAMILIES, release_for


def _folder(name: str, tmp_path: Path) -> Path | None:
    if (EXPORTS / name / "config.json").is_file():
        return EXPORTS / name
    if name in VARIANTS:
        return VARIANTS[name](tmp_path / name)
    return None  # made on the device only (gpt-oss-*-device)


def disagreements(
    truth: dict[str, Any], tmp_path: Path, folders: Mapping[str, Path] | None = None
) -> tuple[list[str], int]:
    """Where our verdicts on the GPU's arch and the GPU's load differ: (what, how many
    models were judged). Refused there -> a quant.* check fails it as refused; loaded there
    -> none says vLLM refuses; the kernels vLLM logged that our tables know -> the ones
    quant.kernel-arch names for that arch. ``folders``: the checkpoint of a model where it
    is not the committed export of that name (a run on other shapes)."""
    from pytest_vllm_env.checks.quant_config import min_capability, quant_config
    from pytest_vllm_env.checks.quant_kernels import kernel_arch
    from pytest_vllm_env.checks.quant_tensors import scales_sane, tensors_complete
    from pytest_vllm_env.facts.quant_plan import plan
    from pytest_vllm_env.readers.checkpoint import read_checkpoint, read_scales
    from pytest_vllm_env.tables.archs import parse_arch

    meta = truth["meta"]
    version = meta["vllm"]
    arch = parse_arch("{}.{}".format(*meta["cc"]))
    packages = frozenset(meta.get("packages") or ())
    release = release_for(version) or "0.26.0"
    known = {k.name.split(" (")[0] for family in FAMILIES[release].values() for k in family}
    out: list[str] = []
    judged = 0
    for name, real in sorted(truth["models"].items()):
        folder = (folders or {}).get(name) or _folder(name, tmp_path)
        if folder is None:
            continue
        ckpt = read_checkpoint(name, folder)
        p = plan(ckpt)
        found = [
            quant_config(ckpt, p, None, version),
            tensors_complete(ckpt, p),
            min_capability(ckpt, p, version, [arch], "the GPU"),
            kernel_arch(ckpt, p, version, [arch], "the GPU", packages),
        ]
        refuses = [
            f.id
            for f in found
            if f.outcome == "failed" and f.evidence.get("vllm_effect", "refuses") == "refuses"
        ]
        # an uninitialized parameter, or a scale that is not a finite positive number: garbage
        # out or a device-side assert, either is "wrong" (a NaN input_scale crashed the H200)
        values, unread = read_scales(ckpt)
        sane = scales_sane(ckpt, values, unread)
        wrong = (
            found[1].outcome == "failed" and found[1].evidence.get("vllm_effect") == "wrong"
        ) or sane.outcome == "failed"
        judged += 1
        if real["loaded"] and refuses:
            out.append(f"{name}: loaded on the GPU, but {', '.join(refuses)} say(s) it refuses")
        if not real["loaded"] and not refuses and not wrong:
            out.append(f"{name}: refused on the GPU ({real.get('exception')}), we pass it")
        # vLLM logs a MoE backend by its short name ('TRITON'); the tables add the package
        logged = {k for k in real.get("kernels") or () if k in known}
        ours = {k.split(" (")[0] for k in found[3].evidence.get("kernels", {}).get(arch.cc, ())}
        if real["loaded"] and logged and logged != ours:
            out.append(f"{name}: vLLM took {sorted(logged)} on {arch.cc}, we name {sorted(ours)}")
    return out, judged


@pytest.mark.parametrize("version", ["0.26.0"])
def test_verdicts_agree_with_vllm_on_the_gpu(version, tmp_path):
    path = EXPORTS / f"formats_truth-{version}.json"
    if not path.is_file():
        pytest.skip(f"{path.name} not recorded yet: run scripts/device/formats_truth.sh on a GPU")
    found, judged = disagreements(json.loads(path.read_text()), tmp_path)
    assert sorted(f.split(":", 1)[0] for f in found) == sorted(KNOWN_MISSES), found
    assert judged >= 20


# What the recorded GPU run shows that the rules do not model yet (shrink-only; each is a miss
# the user would meet). Empty: the tiny gpt-oss MXFP4 (hidden 128) that died in triton_kernels'
# matmul_ogs on sm_90 is now failed by quant.kernel-arch (tables/quant_kernels.py
# _TRITON_MXFP4_HOPPER).
KNOWN_MISSES: set[str] = set()


def test_a_disagreeing_truth_is_caught(tmp_path):
    """A truth where the block-192 variant loaded, INT8 W8A8 was refused, and Hopper's FP8
    layers ran on Marlin: each is reported; the rows that agree are not."""
    loaded = {"loaded": True, "kernels": []}
    truth = {
        "meta": {"vllm": "0.26.0", "cc": [9, 0], "packages": ["deep_gemm"]},
        "models": {
            "fp8-block-192": loaded,
            "ct-w8a8-int8": {"loaded": False, "exception": "made up"},
            "ct-fp8-dynamic": {"loaded": True, "kernels": ["MarlinFP8ScaledMMLinearKernel"]},
            "ct-fp8-static": {"loaded": True, "kernels": ["CutlassFP8ScaledMMLinearKernel"]},
            "fp8-channel-scale-flat": {"loaded": False, "exception": "assert"},
            "gpt-oss-bf16-device": loaded,
        },
    }
    found, judged = disagreements(truth, tmp_path)
    assert judged == 5
    assert len(found) == 3, found
    assert found[0].startswith("ct-fp8-dynamic: vLLM took ['MarlinFP8ScaledMMLinearKernel'] on 9.0")
    assert found[1].startswith("ct-w8a8-int8: refused on the GPU")
    assert found[2] == (
        "fp8-block-192: loaded on the GPU, but quant.tensors-complete say(s) it refuses"
    )
