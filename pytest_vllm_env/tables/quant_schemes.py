"""Quantized formats beyond ModelOpt, one row each, with the dataclasses of
:mod:`pytest_vllm_env.tables.quant_formats`: what vLLM's ``create_weights`` registers on a
quantized Linear (every :class:`Param`: name, dtypes, shapes relative to the Linear's
``[out, in]``, and when it exists), which releases take it with which config class and minimum
capability, and the kernel family vLLM picks a GEMM from (:mod:`.quant_kernels`).

- **compressed-tensors** (``quant_method: "compressed-tensors"``, written by llm-compressor):
  ``CompressedTensorsConfig._get_scheme_from_parts`` turns each config group's weights /
  input_activations / format into one scheme class; each row is one scheme (and strategy).
  Which row a layer gets is :mod:`pytest_vllm_env.facts.quant_plan`'s model of that function.
- **Hugging Face fine-grained FP8** (``quant_method: "fp8"``, vLLM's ``Fp8Config``): with
  ``weight_block_size`` the block scales are named ``weight_scale_inv`` (DeepSeek-V3 and
  Qwen3-FP8's layout), without it a per-tensor ``weight_scale``.
- **MXFP4** (``quant_method: "mxfp4"``, gpt-oss): only the MoE experts are quantized
  (``Mxfp4Config.get_quant_method`` gives every Linear ``UnquantizedLinearMethod``); the
  experts' tensors are described for the MoE layer, not a Linear.

Read from vLLM 0.26.0 and 0.33.0 (``tests/test_quant_schemes.py`` holds the rows against
both wheels): ``compressed_tensors/schemes/*.py``, ``fp8.py``, ``mxfp4.py``,
``utils/fp8_utils.py:create_fp8_scale_parameter``, ``parameter.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from pytest_vllm_env.tables.quant_formats import (
    FLOAT_DTYPES,
    FP8_E4M3,
    IN,
    ONE,
    OUT,
    PACKED_U8,
    SCALAR,
    Dim,
    Param,
    QuantFormat,
    VllmSupport,
)

CT_DIR = "vllm/model_executor/layers/quantization/compressed_tensors"
CT_PY = f"{CT_DIR}/compressed_tensors.py"
SCHEMES = f"{CT_DIR}/schemes"
FP8_PY = "vllm/model_executor/layers/quantization/fp8.py"
MXFP4_PY = "vllm/model_executor/layers/quantization/mxfp4.py"
FP8_UTILS = "vllm/model_executor/layers/quantization/utils/fp8_utils.py"

I32 = frozenset({"I32"})
I64 = frozenset({"I64"})
I8 = frozenset({"I8"})
F32 = frozenset({"F32"})
RELEASES = ("0.26.0", "0.33.0")


def _ct(scheme: str, min_cc: int) -> Mapping[str, VllmSupport]:
    # CompressedTensorsConfig.get_min_capability() is 70; get_scheme then checks the
    # scheme's own (_check_scheme_supported): that is the one that refuses.
    return MappingProxyType(
        {r: VllmSupport("CompressedTensorsConfig", "compressed-tensors", min_cc) for r in RELEASES}
    )


BLOCK_2D = (
    # create_fp8_scale_parameter(BlockQuantScaleParameter): [ceil(out/bn), ceil(in/bk)]
    (Dim("out", "block_n", ceil=True), Dim("in", "block_k", ceil=True)),
)
CHANNEL_2D = ((OUT, ONE),)  # ChannelQuantScaleParameter: (sum(out), 1)
FP8_WEIGHT = Param("weight", FP8_E4M3, ((OUT, IN),), role="weight")
CT_INPUT_SCALE = Param("input_scale", FLOAT_DTYPES, SCALAR, when="static_input")

CT_ROWS: tuple[QuantFormat, ...] = (
    QuantFormat(
        "CT_FP8_TENSOR",
        "compressed-tensors",
        'llm-compressor "FP8" (static per-tensor weights and activations: config group '
        'weights.strategy "tensor", input_activations.dynamic false; format "float-quantized")',
        _ct("CompressedTensorsW8A8Fp8", 89),
        linear_method="CompressedTensorsW8A8Fp8",
        params=(
            FP8_WEIGHT,
            Param("weight_scale", FLOAT_DTYPES, SCALAR),
            CT_INPUT_SCALE,
        ),
        kernel_family="fp8",
        fallback=(75, "CompressedTensorsW8A16Fp8: Marlin FP8, weight-only"),
        notes="below 8.9 vLLM takes the W8A16 scheme (Marlin) instead of refusing",
        sources=(f"{SCHEMES}/compressed_tensors_w8a8_fp8.py:create_weights", CT_PY),
    ),
    QuantFormat(
        "CT_FP8_CHANNEL",
        "compressed-tensors",
        'llm-compressor "FP8_DYNAMIC" (per-channel weights, dynamic per-token activations; '
        'weights.strategy "channel", input_activations.dynamic true)',
        _ct("CompressedTensorsW8A8Fp8", 89),
        linear_method="CompressedTensorsW8A8Fp8",
        params=(FP8_WEIGHT, Param("weight_scale", FLOAT_DTYPES, CHANNEL_2D), CT_INPUT_SCALE),
        kernel_family="fp8",
        fallback=(75, "CompressedTensorsW8A16Fp8: Marlin FP8, weight-only"),
        sources=(f"{SCHEMES}/compressed_tensors_w8a8_fp8.py:create_weights",),
    ),
    QuantFormat(
        "CT_FP8_BLOCK",
        "compressed-tensors",
        'llm-compressor "FP8_BLOCK" (weights.strategy "block", block_structure [128, 128]; '
        "activations dynamic per 1x128 group)",
        _ct("CompressedTensorsW8A8Fp8", 89),
        linear_method="CompressedTensorsW8A8Fp8",
        params=(FP8_WEIGHT, Param("weight_scale", FLOAT_DTYPES, BLOCK_2D)),
        kernel_family="fp8_block",
        fallback=(75, "CompressedTensorsW8A16Fp8: Marlin FP8, weight-only"),
        notes="create_weights runs validate_fp8_block_shape: every output partition of a "
        "fused layer but the last must be a multiple of block_n",
        sources=(
            f"{SCHEMES}/compressed_tensors_w8a8_fp8.py:create_weights",
            f"{FP8_UTILS}:validate_fp8_block_shape",
        ),
    ),
    QuantFormat(
        "CT_WNA16",
        "compressed-tensors",
        'llm-compressor "W4A16" / "W4A16_ASYM" / "W8A16" (GPTQ or RTN; format "pack-quantized": '
        "int32 words of 32/bits values along the input, a scale per group)",
        _ct("CompressedTensorsWNA16", 75),
        linear_method="CompressedTensorsWNA16",
        params=(
            Param("weight_packed", I32, ((OUT, Dim("in", "pack")),), role="weight"),
            Param(
                "weight_scale",
                FLOAT_DTYPES,
                ((OUT, Dim("in", "group")),),
            ),
            # registered, but no CUDA kernel reads it: CompressedTensorsWNA16 hands the kernel
            # weight_packed / weight_scale / weight_zero_point / weight_g_idx only
            # (create_weights: w_q_param_name ... w_gidx_param_name; kernels/linear/
            # mixed_precision/* read those), so an unset one changes nothing computed
            Param("weight_shape", I64, ((Dim(const=2),),), role="shape", required=False),
            # packed along the OUTPUT: ceil(out * bits / 32) rows (PackedvLLMParameter,
            # packed_dim 0)
            Param(
                "weight_zero_point",
                I32,
                ((Dim("out", "pack", ceil=True), Dim("in", "group")),),
                when="zero_point",
                role="zero_point",
            ),
            Param("weight_g_idx", I32, ((IN,),), when="g_idx", role="index"),
        ),
        kernel_family="wna16",
        notes="a channel-wise scheme (group -1) has one scale column: 'group' is then in. "
        "0.33.0 refuses actorder group/dynamic (weight_g_idx) when it reads the config.",
        sources=(f"{SCHEMES}/compressed_tensors_wNa16.py:create_weights",),
    ),
    QuantFormat(
        "CT_W8A8_INT8",
        "compressed-tensors",
        'llm-compressor "W8A8" (SmoothQuant + GPTQ: int8 weights per channel, int8 activations '
        'per token; format "int-quantized")',
        _ct("CompressedTensorsW8A8Int8", 75),
        linear_method="CompressedTensorsW8A8Int8",
        params=(
            Param("weight", I8, ((OUT, IN),), role="weight"),
            Param("weight_scale", FLOAT_DTYPES, CHANNEL_2D + SCALAR),
            Param("input_scale", FLOAT_DTYPES, ((ONE,), ()), when="static_input"),
            Param("input_zero_point", I8, ((ONE,), ()), when="asym_input", role="zero_point"),
        ),
        kernel_family="int8",
        sources=(f"{SCHEMES}/compressed_tensors_w8a8_int8.py:create_weights",),
    ),
    QuantFormat(
        "CT_NVFP4",
        "compressed-tensors",
        'llm-compressor "NVFP4" (format "nvfp4-pack-quantized": two E2M1 values a byte, FP8 '
        'scales per 16, strategy "tensor_group" with global scales)',
        _ct("CompressedTensorsW4A4Fp4", 75),
        PACKED_U8,
        packing=2,
        linear_method="CompressedTensorsW4A4Fp4",
        params=(
            Param("weight_packed", PACKED_U8, ((OUT, Dim("in", 2)),), role="weight"),
            Param("weight_scale", FP8_E4M3, ((OUT, Dim("in", 16)),)),
            Param("weight_global_scale", F32, SCALAR),
            Param("input_global_scale", F32, SCALAR, when="fp4_input"),
        ),
        kernel_family="nvfp4",
        notes="NVFP4A16 (no input_activations) registers no input_global_scale and forces "
        "Marlin (kernel family nvfp4_a16)",
        sources=(f"{SCHEMES}/compressed_tensors_w4a4_nvfp4.py:create_weights",),
    ),
)

FP8_ROWS: tuple[QuantFormat, ...] = (
    QuantFormat(
        "FP8_BLOCK",
        "fp8",
        'quant_method "fp8" with weight_block_size [128, 128] and activation_scheme "dynamic" '
        "(Hugging Face fine-grained FP8: DeepSeek-V3, Qwen3-*-FP8)",
        MappingProxyType({r: VllmSupport("Fp8Config", "fp8", 75) for r in RELEASES}),
        linear_method="Fp8LinearMethod",
        params=(
            FP8_WEIGHT,
            # "The weight_scale_inv name is intentional for deepseekv3" (fp8.py)
            Param("weight_scale_inv", F32, BLOCK_2D),
        ),
        kernel_family="fp8_block",
        notes="Fp8Config refuses a weight_block_size with a static activation scheme or not "
        "two numbers; create_weights runs validate_fp8_block_shape",
        sources=(f"{FP8_PY}:Fp8Config.__init__, Fp8LinearMethod.create_weights",),
    ),
    QuantFormat(
        "FP8_TENSOR",
        "fp8",
        'quant_method "fp8" without weight_block_size (per-tensor FP8; activation_scheme '
        '"static" adds input_scale)',
        MappingProxyType({r: VllmSupport("Fp8Config", "fp8", 75) for r in RELEASES}),
        linear_method="Fp8LinearMethod",
        params=(
            FP8_WEIGHT,
            Param("weight_scale", FLOAT_DTYPES, SCALAR),
            Param("input_scale", FLOAT_DTYPES, SCALAR, when="static_input"),
        ),
        kernel_family="fp8",
        fallback=(75, "Marlin FP8 (weight-only) below 8.9"),
        sources=(f"{FP8_PY}:Fp8LinearMethod.create_weights",),
    ),
)

# gpt-oss's checkpoint names for an MoE layer's experts (what _load_weights_mxfp4 reads),
# with E = num_local_experts, I = intermediate_size, H = hidden_size; vLLM registers them as
# w13_weight [E, 2I, H/2] / w13_weight_scale [E, 2I, H/32] / w13_bias and w2_*, the blocks
# viewed as bytes (mxfp4.py:GptOssMxfp4MoEMethod.create_weights).
MXFP4_EXPERTS: Mapping[str, tuple[frozenset[str], str]] = MappingProxyType(
    {
        "gate_up_proj_blocks": (PACKED_U8, "[E, 2*I, H/32, 16]"),
        "gate_up_proj_scales": (PACKED_U8, "[E, 2*I, H/32]"),
        "gate_up_proj_bias": (FLOAT_DTYPES, "[E, 2*I]"),
        "down_proj_blocks": (PACKED_U8, "[E, H, I/32, 16]"),
        "down_proj_scales": (PACKED_U8, "[E, H, I/32]"),
        "down_proj_bias": (FLOAT_DTYPES, "[E, H]"),
    }
)

MXFP4_ROWS: tuple[QuantFormat, ...] = (
    QuantFormat(
        "MXFP4",
        "mxfp4",
        'quant_method "mxfp4" (gpt-oss: MoE experts in MXFP4, E2M1 values two a byte in '
        "blocks of 32 with an E8M0 (uint8) scale each; attention and router BF16)",
        MappingProxyType({r: VllmSupport("Mxfp4Config", "mxfp4", 80) for r in RELEASES}),
        kernel_family="mxfp4_moe",
        notes="only MoE experts; every Linear is unquantized (Mxfp4Config.get_quant_method)",
        sources=(
            f"{MXFP4_PY}:Mxfp4Config, GptOssMxfp4MoEMethod.create_weights",
            "vllm/model_executor/models/gpt_oss.py:_load_weights_mxfp4",
        ),
    ),
)

ROWS: tuple[QuantFormat, ...] = CT_ROWS + FP8_ROWS + MXFP4_ROWS
_BY_NAME = {(f.producer, f.name): f for f in ROWS}


def scheme_row(producer: str, name: str) -> QuantFormat | None:
    """The row of ``name`` for ``producer`` ("compressed-tensors", "fp8", "mxfp4")."""
    return _BY_NAME.get((producer, name))
