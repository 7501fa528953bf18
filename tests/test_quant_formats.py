"""The quantized-format table (``tables/quant_formats.py``): its rows drive the checks, and
every row says what the real vLLM wheels say.

Default tier: the layouts, the lookups, and that a format is a row (a new row alone makes
``modelopt.tensors-complete`` judge checkpoints of it). Integration tier (real vLLM wheels
from PyPI, cached): for 0.8.5, 0.10.1.1, 0.12.0, 0.26.0 and 0.33.0, the accepted algorithms,
config classes, ``quantization=`` names and minimum capabilities of every row agree with
that release's ``modelopt.py``; and for 0.26.0 and 0.33.0 the parameters vLLM registers for a
quantized Linear (and their kind: per-tensor, per-channel, block, group) are the row's.
"""

from __future__ import annotations

import ast
import zipfile
from dataclasses import replace

import pytest

from fixtures import checkpoints as ckpts
from pytest_vllm_env.checks.modelopt_tensors import tensors_complete
from pytest_vllm_env.readers.checkpoint import read_checkpoint
from pytest_vllm_env.readers.vllm_source import MODELOPT_PY, parse_modelopt
from pytest_vllm_env.tables import quant_formats as Q


# -- the layouts ------------------------------------------------------------------------------
def test_layouts_accept_the_shapes_vllm_registers():
    """vLLM 0.26.0's create_weights: PerTensorScaleParameter [] or [1] (one per fused shard,
    loaded one at a time), ChannelQuantScaleParameter [out], BlockQuantScaleParameter
    [out/128, 1, in/128, 1], group scales [out, in/group] of the unpacked in-dimension."""
    out, inp = 256, 512
    assert Q.PER_TENSOR.accepts((), out, inp) and Q.PER_TENSOR.accepts((1,), out, inp)
    assert not Q.PER_TENSOR.accepts((out,), out, inp)
    assert Q.PER_CHANNEL.accepts((out,), out, inp) and not Q.PER_CHANNEL.accepts((), out, inp)
    assert Q.BLOCK_128.accepts((2, 1, 4, 1), out, inp)
    assert not Q.BLOCK_128.accepts((2, 4), out, inp)
    # NVFP4: the stored in-dimension is half (two values a byte): 256 bytes hold 512 values
    assert Q.GROUP_16.accepts((out, 32), out, 256, packing=2)
    assert not Q.GROUP_16.accepts((out, 16), out, 256, packing=2)
    assert Q.GROUP_32.accepts((out, 16), out, inp)
    assert [x.text for x in (Q.PER_TENSOR, Q.PER_CHANNEL, Q.BLOCK_128, Q.GROUP_16)] == [
        "[] or [1]",
        "[out_features]",
        "[out/128, 1, in/128, 1]",
        "[out_features, in_features/16]",
    ]


def test_lookups():
    # ModelOpt writes FP8_PB_WO in lower case; vLLM upper-cases quant_algo
    assert Q.modelopt_format("fp8_pb_wo") is Q.modelopt_format("FP8_PB_WO") is not None
    assert Q.modelopt_format("INT4_AWQ") is None and Q.modelopt_format(None) is None
    # the order messages list them in ("known: ..."), as before the table
    assert Q.judged_formats() == (
        "FP8",
        "FP8_PER_CHANNEL_PER_TOKEN",
        "FP8_PB_WO",
        "MXFP8",
        "NVFP4",
        "W4A16_NVFP4",
    )
    assert Q.vllm_config_classes() == {
        "ModelOptFp8Config",
        "ModelOptNvFp4Config",
        "ModelOptMxFp8Config",
        "ModelOptMixedPrecisionConfig",
    }
    fp4 = Q.modelopt_format("NVFP4")
    assert fp4.required == ("weight_scale", "weight_scale_2", "input_scale")
    assert fp4.scale_dtypes == {"weight_scale": Q.FP8_E4M3, "weight_scale_2": Q.FLOAT_DTYPES}
    assert Q.modelopt_format("W4A16_NVFP4").required == ("weight_scale", "weight_scale_2")


def test_every_row_is_whole():
    """Names unique; a row whose tensors are judged has a weight dtype and a weight_scale; a
    row vLLM accepts cites its source; capabilities are numbers like 89."""
    names = [(f.producer, f.name) for f in Q.FORMATS]
    assert len(names) == len(set(names))
    for row in Q.FORMATS:
        assert row.name == row.name.upper() and row.exported_as and row.sources, row.name
        if row.tensors_known:
            assert row.vllm, row.name
            assert "weight_scale" in row.required, row.name
            assert row.packing in (1, 2), row.name
        for support in row.vllm.values():
            assert 70 <= support.min_capability <= 120, row.name
            assert support.method.startswith("modelopt"), row.name


def test_a_format_is_a_row(tmp_path, monkeypatch):
    """A new row is all ``modelopt.tensors-complete`` needs to judge a format: here a made-up
    FP8 variant with per-channel weight scales, against a checkpoint that has them per-tensor
    (refused: the shape) and one that has them per channel (passed)."""
    row = Q.QuantFormat(
        "FP8_TEST",
        "modelopt",
        'quant_algo "FP8_TEST"',
        weight_dtypes=Q.FP8_E4M3,
        scales=(Q.Scale("weight_scale", Q.PER_CHANNEL),),
        sources=("this test",),
    )
    monkeypatch.setattr(Q, "FORMATS", (*Q.FORMATS, row))
    monkeypatch.setattr(Q, "_MODELOPT", {**Q._MODELOPT, row.name: row})
    per_tensor = ckpts.llama().set_algo("FP8_TEST").write(tmp_path / "per-tensor")
    found = tensors_complete(read_checkpoint("per-tensor", per_tensor))
    assert found.outcome == "failed" and found.evidence["vllm_effect"] == "refuses", found
    assert "accepts [out_features]" in found.summary
    b = ckpts.llama().set_algo("FP8_TEST")
    for name, (dtype, _shape, _) in list(b.tensors.items()):
        if name.endswith(".weight_scale"):
            out = b.tensors[name.removesuffix("_scale")][1][0]
            b.tensors[name] = (dtype, [out], ckpts.f32(*[0.002] * out))
    good = tensors_complete(read_checkpoint("per-channel", b.write(tmp_path / "per-channel")))
    assert good.outcome == "passed", good
    # without the row, the format is not known: a skip that lists the known ones
    monkeypatch.setattr(Q, "_MODELOPT", {k: v for k, v in Q._MODELOPT.items() if k != row.name})
    unknown = tensors_complete(read_checkpoint("per-channel", tmp_path / "per-channel"))
    assert unknown.outcome == "skipped" and "known: FP8, " in unknown.summary


def test_w4a16_input_scale_is_optional_but_shaped():
    """vLLM registers a per-tensor placeholder input_scale for W4A16_NVFP4 (0.26.0's
    ModelOptNvFp4W4A16LinearMethod, 0.33.0's _DropInputScale): absent is fine, present it
    must load as a per-tensor scale."""
    row = Q.modelopt_format("W4A16_NVFP4")
    placeholder = next(s for s in row.scales if s.name == "input_scale")
    assert not placeholder.required and placeholder.layout == Q.PER_TENSOR
    assert replace(placeholder, required=True).required


# -- the rows against the real wheels -------------------------------------------------------
RELEASES = ("0.8.5", "0.10.1.1", "0.12.0", "0.26.0", "0.33.0")


def _modelopt_py(version: str) -> str:
    from fixtures.downloads import wheel

    with zipfile.ZipFile(wheel(f"vllm=={version}")) as zf:
        return zf.read(MODELOPT_PY).decode()


@pytest.mark.integration
@pytest.mark.parametrize("version", RELEASES)
def test_rows_agree_with_each_release(version):
    """The algorithms a release accepts are exactly the rows that name it, with its config
    class, quantization= name and minimum capability (read by the same reader the checks
    use, from the real wheel)."""
    src = parse_modelopt(_modelopt_py(version))
    assert src.missing == (), src.missing
    rows = {f.name: f for f in Q.FORMATS if f.producer == "modelopt"}
    assert set(src.quant_algos or ()) <= rows.keys()
    for name, row in rows.items():
        if name in (src.quant_algos or ()):
            cls = src.config_class_for(name)
            real = Q.VllmSupport(cls.name, cls.method, cls.min_capability)
            assert row.vllm.get(version) == real, (name, real)
        else:
            assert version not in row.vllm, name


KIND_OF_PARAMETER = {
    "PerTensorScaleParameter": "per-tensor",
    "ChannelQuantScaleParameter": "per-channel",
    "BlockQuantScaleParameter": "block",
    "GroupQuantScaleParameter": "group",
    "ModelWeightParameter": "group",  # NVFP4 and MXFP8 block scales: [out, in/group]
}


def _registered_0_26(tree: ast.Module, method_class: str) -> dict[str, str]:
    """``{parameter: its class}`` that ``<method_class>.create_weights`` registers (0.26.0:
    ``x = SomeParameter(...)`` then ``layer.register_parameter("name", x)``)."""
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == method_class)
    fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "create_weights")
    made: dict[str, str] = {}
    out: dict[str, str] = {}
    for node in ast.walk(fn):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            if isinstance(node.value.func, ast.Name) and isinstance(node.targets[0], ast.Name):
                made[node.targets[0].id] = node.value.func.id
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "register_parameter"
        ):
            name, var = node.args[0], node.args[1]
            assert isinstance(name, ast.Constant) and isinstance(var, ast.Name)
            out[name.value] = made[var.id]
    return out


def _role_test(test: ast.expr) -> tuple[str, bool] | None:
    """``role is WEIGHT`` -> ("WEIGHT", True); ``role is not ACT`` -> ("ACT", False)."""
    if (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "role"
        and isinstance(test.ops[0], (ast.Is, ast.IsNot))
        and isinstance(test.comparators[0], ast.Name)
    ):
        return test.comparators[0].id, isinstance(test.ops[0], ast.Is)
    return None


def _role_params(stmts: list[ast.stmt], role: str) -> dict[str, str]:
    """What a 0.33.0 QuantKeyScheme's create_weights registers for ``role``
    (``self.register_params(layer, "name", shape, dtype, ParamClass, wl, ...)``)."""
    out: dict[str, str] = {}
    for st in stmts:
        test = _role_test(st.test) if isinstance(st, ast.If) else None
        if test is not None:
            taken = st.body if (test[0] == role) == test[1] else st.orelse  # type: ignore[union-attr]
            out |= _role_params(taken, role)
            continue
        for node in ast.walk(st):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "register_params":
                name, kind = node.args[1], node.args[4]
                assert isinstance(name, ast.Constant) and isinstance(kind, ast.Name)
                out[name.value] = kind.id
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", "") == "register_parameter"
            ):
                name, made = node.args[0], node.args[1]
                assert isinstance(name, ast.Constant) and isinstance(made, ast.Call)
                out[name.value] = made.func.id  # type: ignore[union-attr]
    return out


def _registered_0_33(tree: ast.Module, algo: str) -> dict[str, str]:
    """0.33.0: ``resolve(algo)`` names a (weight key, activation key, format scheme); the
    key's scheme (``SCHEME_FOR``) registers the parameters for its role, the format scheme's
    ``extra_weights`` any more."""
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    scheme_of: dict[str, str] = {}
    instances: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            value = node.value
            if isinstance(target, ast.Name) and target.id == "SCHEME_FOR":
                for k, v in zip(value.keys, value.values, strict=True):  # type: ignore[union-attr]
                    scheme_of[k.id] = v.func.id  # type: ignore[union-attr]
            elif isinstance(target, ast.Name) and isinstance(value, ast.Call):
                instances[target.id] = getattr(value.func, "id", "")
    resolve = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "resolve")
    branch = next(
        n
        for n in ast.walk(resolve)
        if isinstance(n, ast.If)
        and isinstance(n.test, ast.Compare)
        and isinstance(n.test.comparators[0], ast.Constant)
        and n.test.comparators[0].value == algo
    )
    spec = next(
        n
        for n in ast.walk(branch)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "QuantSpec"
    )
    keys = {k.arg: getattr(k.value, "id", None) for k in spec.keywords}
    ret = next(n for n in ast.walk(branch) if isinstance(n, ast.Return))
    fmt = ret.value.elts[2] if isinstance(ret.value, ast.Tuple) else None  # type: ignore[union-attr]
    out: dict[str, str] = {}
    for role, key in (("WEIGHT", keys.get("weight")), ("ACT", keys.get("activation"))):
        if key and key != "None":
            create = next(
                f
                for f in classes[scheme_of[key]].body
                if isinstance(f, ast.FunctionDef) and f.name == "create_weights"
            )
            out |= _role_params(create.body, role)
    if isinstance(fmt, ast.Name) and fmt.id in instances:
        extra = [
            f
            for f in classes[instances[fmt.id]].body
            if isinstance(f, ast.FunctionDef) and f.name == "extra_weights"
        ]
        for f in extra:
            out |= _role_params(f.body, "")
    return out


@pytest.mark.integration
@pytest.mark.parametrize("version", ["0.26.0", "0.33.0"])
def test_rows_hold_the_tensors_vllm_registers(version):
    """For every format whose tensors the checks judge, the parameters the release registers
    for a quantized Linear are the row's weight and scales, each scale of the row's layout
    kind (read from create_weights / the 0.33.0 schemes, never imported)."""
    tree = ast.parse(_modelopt_py(version))
    judged = [f for f in Q.FORMATS if f.producer == "modelopt" and f.tensors_known]
    assert judged
    for row in judged:
        if version == "0.26.0":
            params = _registered_0_26(tree, row.linear_method)
        else:
            params = _registered_0_33(tree, row.name)
        assert set(params) == {"weight"} | {s.name for s in row.scales}, (row.name, params)
        for scale in row.scales:
            assert KIND_OF_PARAMETER[params[scale.name]] == scale.layout.kind, (
                row.name,
                scale.name,
                params[scale.name],
            )
