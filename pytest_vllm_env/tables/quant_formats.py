"""Quantized checkpoint formats and algorithms: one row each, read by every check that asks.

A row says, for one format as its exporter writes it and vLLM loads it:

- which vLLM releases accept it, with the config class, the ``quantization=`` method name and
  the minimum compute capability each of them has for it (read from each release's
  ``vllm/model_executor/layers/quantization/modelopt.py``: ``QUANT_ALGOS``,
  ``get_name()``, ``get_min_capability()``, ``override_quantization_method()``);
- the tensors a quantized Linear holds: the weight's dtypes (as safetensors names them) and
  packing, and each scale's name, dtypes, layout (per-tensor, per-channel, a 128x128 block, a
  group of 16/32 along the input) and whether it is required; from the release's
  ``create_weights`` (the parameters it registers) and the exporter's own code;
- the kernels vLLM runs it on per GPU, where known, and what real loads showed.

Where the env's own vLLM is installed, its source decides (``readers/vllm_source.py`` reads
the accepted algorithms and capabilities from it); these rows are what the checks judge
tensors against, and what they fall back on and explain with. Adding a format is a row here;
a new *kind* of scale layout is a :class:`Layout` kind, and a rule the row cannot say is a
check. ``tests/test_quant_formats.py`` holds every row against the real vLLM wheels.

Producers: ``modelopt`` (NVIDIA ModelOpt's ``export_hf_checkpoint``: ``quant_method``
"modelopt", the algorithm in ``quant_algo``), here; compressed-tensors (llm-compressor), Hugging
Face fine-grained FP8 (``quant_method: fp8``) and MXFP4 (gpt-oss) rows, with the same
dataclasses, in :mod:`pytest_vllm_env.tables.quant_schemes`, and the kernels vLLM picks for
each in :mod:`pytest_vllm_env.tables.quant_kernels`. A row's :class:`Param` list is what
``create_weights`` registers on a quantized Linear (names, dtypes, shapes relative to the
Linear's ``[out, in]``), for any loader model to use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from pytest_vllm_env.tables.quant_params import IN, ONE, OUT, SCALAR, Dim, Param

__all__ = ["IN", "ONE", "OUT", "SCALAR", "Dim", "Param"]  # re-exported: a row's vocabulary

# safetensors dtype names (the header's "dtype")
FLOAT_DTYPES = frozenset({"BF16", "F16", "F32"})
FP8_E4M3 = frozenset({"F8_E4M3"})
PACKED_U8 = frozenset({"U8"})
# float8_e4m3fn's largest finite value: a cast of anything larger gives NaN
FP8_E4M3_MAX = 448.0

MODELOPT_PY = "vllm/model_executor/layers/quantization/modelopt.py"
MODELOPT_EXPORT = "modelopt/torch/export/unified_export_hf.py:_export_quantized_weight"
MODELOPT_ALGO_NAMES = "modelopt/torch/export/quant_utils.py:process_layer_quant_config"

LayoutKind = Literal["per-tensor", "per-channel", "block", "group"]


@dataclass(frozen=True)
class Layout:
    """How a scale tensor covers its weight ``[out, in]``: one value (``per-tensor``: vLLM's
    ``PerTensorScaleParameter`` takes ``[]`` or ``[1]`` and asserts otherwise), one per output
    row (``per-channel``), one per ``size`` x ``size`` block (``block``, ModelOpt's 4-D
    ``[out/b, 1, in/b, 1]``), or one per ``size`` inputs of each row (``group``)."""

    kind: LayoutKind
    size: int = 0

    def accepts(self, shape: tuple[int, ...], out: int, inp: int, packing: int = 1) -> bool:
        """Does a scale of ``shape`` fit a weight stored as ``[out, inp]`` (``inp`` is the
        stored in-dimension: ``packing`` values per stored element)?"""
        if self.kind == "per-tensor":
            return shape in ((), (1,))
        if self.kind == "per-channel":
            return shape == (out,)
        if self.kind == "block":
            return shape == (out // self.size, 1, inp // self.size, 1)
        return shape == (out, inp * packing // self.size)

    @property
    def text(self) -> str:
        """The shape as messages quote it."""
        if self.kind == "per-tensor":
            return "[] or [1]"
        if self.kind == "per-channel":
            return "[out_features]"
        if self.kind == "block":
            return f"[out/{self.size}, 1, in/{self.size}, 1]"
        return f"[out_features, in_features/{self.size}]"


PER_TENSOR = Layout("per-tensor")
PER_CHANNEL = Layout("per-channel")
BLOCK_128 = Layout("block", 128)
GROUP_16 = Layout("group", 16)
GROUP_32 = Layout("group", 32)


@dataclass(frozen=True)
class Scale:
    """One scale tensor of a quantized Linear (``<module>.<name>``).

    ``dtypes``: what the exporter writes (None: not judged); ``required``: vLLM computes
    garbage (or refuses) without it; ``from_siblings``: absent on one shard of a fused layer
    (q/k/v, gate/up), vLLM takes the largest of the other shards' (their input is the same:
    ``process_weights_after_loading`` does ``input_scale.max()``)."""

    name: str
    layout: Layout
    dtypes: frozenset[str] | None = None
    required: bool = True
    from_siblings: bool = False


@dataclass(frozen=True)
class VllmSupport:
    """How one vLLM release takes a format: its config class, the ``quantization=`` name
    (``get_name()``) and the minimum compute capability (``get_min_capability()``, 89 = 8.9)."""

    config_class: str
    method: str
    min_capability: int


@dataclass(frozen=True)
class QuantFormat:
    """One format or algorithm (see the module docstring). ``weight_dtypes`` empty: no vLLM
    release read builds a Linear for it, so its tensors are not judged."""

    name: str  # as the checkpoint declares it, upper-cased (vLLM upper-cases quant_algo)
    producer: str
    exported_as: str  # how the producer writes it (ModelOpt: the quant_algo string, its recipe)
    vllm: Mapping[str, VllmSupport] = field(default_factory=dict)  # release -> support
    weight_dtypes: frozenset[str] = frozenset()
    packing: int = 1  # values per stored weight element along the input (2: two FP4 a byte)
    scales: tuple[Scale, ...] = ()
    linear_method: str = ""  # vLLM 0.26.0's LinearMethod class
    kernels: Mapping[str, str] = field(default_factory=dict)  # GPUs -> kernel(s), where known
    # What vLLM did with a tied lm_head left out of the exclude list (built quantized around
    # the BF16 embedding), and what the load showed; None where no load showed it.
    tied_lm_head: tuple[Literal["refuses", "wrong"], str] | None = None
    notes: str = ""
    sources: tuple[str, ...] = ()
    # What create_weights registers, in full (rows of quant_schemes.py; the ModelOpt rows say
    # it with weight_dtypes/scales above); the kernel family vLLM picks a kernel from
    # (tables/quant_kernels.py); and what vLLM does below min_capability where it does not
    # refuse: (the fallback's minimum capability, what it runs).
    params: tuple[Param, ...] = ()
    kernel_family: str = ""
    fallback: tuple[int, str] | None = None

    @property
    def tensors_known(self) -> bool:
        """Does vLLM build a Linear for it, whose tensors the checks can judge?"""
        return bool(self.weight_dtypes or self.params)

    @property
    def required(self) -> tuple[str, ...]:
        """The scales every quantized Linear needs, in the order vLLM registers them."""
        return tuple(s.name for s in self.scales if s.required)

    @property
    def scale_dtypes(self) -> dict[str, frozenset[str]]:
        """The scales whose dtype is judged, and the dtypes the exporter writes."""
        return {s.name: s.dtypes for s in self.scales if s.dtypes is not None}

    @property
    def releases(self) -> tuple[str, ...]:
        """The vLLM releases read that accept it."""
        return tuple(self.vllm)


def _releases(*pairs: tuple[tuple[str, ...], VllmSupport]) -> Mapping[str, VllmSupport]:
    return MappingProxyType({v: support for versions, support in pairs for v in versions})


# Releases whose modelopt.py was read (wheels from PyPI; tests/test_quant_formats.py
# compares every row with them).
OLD = ("0.10.1.1", "0.12.0")  # QUANT_ALGOS = ["FP8", "NVFP4"]
FP8_89 = VllmSupport("ModelOptFp8Config", "modelopt", 89)
FP8_80 = VllmSupport("ModelOptFp8Config", "modelopt", 80)  # 0.33.0: FP8 Marlin below 8.9
FP4_75 = VllmSupport("ModelOptNvFp4Config", "modelopt_fp4", 75)  # Marlin FP4 down to Turing
MXFP8_80 = VllmSupport("ModelOptMxFp8Config", "modelopt_mxfp8", 80)
MIXED_75 = VllmSupport("ModelOptMixedPrecisionConfig", "modelopt_mixed", 75)

_FP8_SCALES = (
    # PerTensorScaleParameter, one per fused shard; unloaded: float32 min (0.26.0), which
    # the max over shards then ignores
    Scale("weight_scale", PER_TENSOR, FLOAT_DTYPES),
    Scale("input_scale", PER_TENSOR, FLOAT_DTYPES, from_siblings=True),
)

FORMATS: tuple[QuantFormat, ...] = (
    # -- ModelOpt, accepted by vLLM ----------------------------------------------------------
    # The order is the one messages list them in ("known: FP8, ...").
    QuantFormat(
        "FP8",
        "modelopt",
        'quant_algo "FP8" (mtq.FP8_DEFAULT_CFG; ModelOpt format "fp8")',
        _releases(
            (("0.8.5", *OLD, "0.26.0"), FP8_89),
            (("0.33.0",), FP8_80),
        ),
        FP8_E4M3,
        scales=_FP8_SCALES,
        linear_method="ModelOptFp8LinearMethod",
        kernel_family="fp8",
        kernels=MappingProxyType(
            {
                "sm 8.9+ (0.26.0)": "CUTLASS scaled_mm first among _POSSIBLE_FP8_KERNELS "
                "(Marlin FP8 where activations are not quantized)",
                "sm 9.0 (measured, H100, 0.26.0)": "cutlass_scaled_mm_sm90_fp8",
            }
        ),
        tied_lm_head=(
            "refuses",
            "on an H100 vLLM 0.26.0 raised in cutlass_scaled_mm at the first generation",
        ),
        notes="per-tensor FP8 weights and static activation scale (W8A8). A tied lm_head not "
        "excluded: vLLM 0.26.0 built it FP8 around the BF16 embedding and raised in "
        "cutlass_scaled_mm at the first generation (H100, docs/gpu-runs.md round 7).",
        sources=(
            f"{MODELOPT_PY}:ModelOptFp8LinearMethod.create_weights (0.26.0); "
            "KFp8StaticTensor (0.33.0)",
            f"{MODELOPT_EXPORT} (QUANTIZATION_FP8: weight_scale = amax/448, input_scale)",
        ),
    ),
    QuantFormat(
        "FP8_PER_CHANNEL_PER_TOKEN",
        "modelopt",
        'quant_algo "FP8_PER_CHANNEL_PER_TOKEN" (mtq.FP8_PER_CHANNEL_PER_TOKEN_CFG; '
        'ModelOpt format "fp8_pc_pt")',
        _releases((("0.26.0",), FP8_89), (("0.33.0",), FP8_80)),
        FP8_E4M3,
        # ChannelQuantScaleParameter [out]; activations quantized per token at run time
        scales=(Scale("weight_scale", PER_CHANNEL),),
        linear_method="ModelOptFp8PcPtLinearMethod",
        kernel_family="fp8",
        notes="per-channel FP8 weights, dynamic per-token activations: no input_scale.",
        sources=(
            f"{MODELOPT_PY}:ModelOptFp8PcPtLinearMethod.create_weights (0.26.0); "
            "KFp8StaticChannel (0.33.0)",
        ),
    ),
    QuantFormat(
        "FP8_PB_WO",
        "modelopt",
        'quant_algo "fp8_pb_wo" (mtq.FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG; ModelOpt writes it '
        "lower-case; vLLM upper-cases it)",
        _releases((("0.26.0",), FP8_89), (("0.33.0",), FP8_80)),
        FP8_E4M3,
        # BlockQuantScaleParameter [out/128, 1, in/128, 1], float32
        scales=(Scale("weight_scale", BLOCK_128),),
        linear_method="ModelOptFp8PbWoLinearMethod",
        kernel_family="fp8_block",
        kernels=MappingProxyType(
            {
                "CUDA (0.26.0, in priority order)": "FlashInfer DeepGEMM, DeepGEMM, CUTLASS "
                "block-scaled, Marlin FP8, Triton (_POSSIBLE_FP8_BLOCK_KERNELS)",
            }
        ),
        notes="128x128 block-scaled FP8 weights, dynamic per-block activations. 0.26.0 "
        "refuses out or in features not divisible by 128 in create_weights; 0.33.0 pads a "
        "partial last output block (_Fp8PbWoPartialBlock) and still needs in % 128 == 0.",
        sources=(
            f"{MODELOPT_PY}:ModelOptFp8PbWoLinearMethod.create_weights (0.26.0); "
            "KFp8Block128 (0.33.0)",
            f"{MODELOPT_ALGO_NAMES} (fp8_pb_wo has no branch: written as is)",
        ),
    ),
    QuantFormat(
        "MXFP8",
        "modelopt",
        'quant_algo "MXFP8" (mtq.MXFP8_DEFAULT_CFG; ModelOpt format "mxfp8")',
        _releases((("0.26.0", "0.33.0"), MXFP8_80)),
        FP8_E4M3,
        # E8M0 exponents stored as uint8, one per 32 inputs; vLLM 0.26.0 does not judge
        # their dtype on load, so neither do we
        scales=(Scale("weight_scale", GROUP_32),),
        linear_method="ModelOptMxFp8LinearMethod",
        kernels=MappingProxyType(
            {
                "sm 10.0 (0.26.0)": "FlashInfer CUTLASS / CuTe-DSL MXFP8",
                "sm 8.0+ (0.26.0)": "Marlin MXFP8 (get_min_capability: 'Marlin kernel "
                "supports MXFP8 on SM80+')",
            }
        ),
        notes="FP8 E4M3 weights with a power-of-two (E8M0) scale per 32 inputs.",
        sources=(
            f"{MODELOPT_PY}:ModelOptMxFp8LinearMethod.create_weights (0.26.0); "
            "KMxfp8Static (0.33.0)",
            "vllm/model_executor/layers/quantization/utils/mxfp8_utils.py (MXFP8_BLOCK_SIZE = "
            "32, MXFP8_SCALE_DTYPE = uint8)",
        ),
    ),
    QuantFormat(
        "NVFP4",
        "modelopt",
        'quant_algo "NVFP4", group_size 16 (mtq.NVFP4_DEFAULT_CFG; ModelOpt format "nvfp4")',
        _releases(
            (("0.8.5",), VllmSupport("ModelOptNvFp4Config", "modelopt_nvfp4", 100)),
            (OLD, VllmSupport("ModelOptNvFp4Config", "modelopt_fp4", 80)),
            (("0.26.0", "0.33.0"), FP4_75),
        ),
        PACKED_U8,
        packing=2,
        scales=(
            # FP8 E4M3 block scales [out, in/16] (ModelWeightParameter)
            Scale("weight_scale", GROUP_16, FP8_E4M3),
            Scale("weight_scale_2", PER_TENSOR, FLOAT_DTYPES),  # global weight scale
            Scale("input_scale", PER_TENSOR, from_siblings=True),  # global input scale
        ),
        linear_method="ModelOptNvFp4LinearMethod",
        kernel_family="nvfp4",
        kernels=MappingProxyType(
            {
                "sm 10.x (0.26.0)": "CUTLASS / FlashInfer NVFP4 GEMMs (_POSSIBLE_NVFP4_KERNELS)",
                "below sm 10.0 (0.26.0)": "Marlin FP4 (weights dequantized; its repack "
                "needs out_features % 64 == 0: 'size_n = 4304 is not divisible by "
                "tile_n_size = 64', F3.5)",
            }
        ),
        notes="two FP4 (E2M1) values per byte along the input; FP8 block scales per 16; a "
        "float global scale for weights and inputs (W4A4).",
        sources=(
            f"{MODELOPT_PY}:ModelOptNvFp4LinearMethod.create_weights (0.26.0); "
            "KNvfp4Static + KNvfp4Dynamic (0.33.0)",
            f"{MODELOPT_EXPORT} (weight_scale_2 registered for the NVFP4 family)",
        ),
    ),
    QuantFormat(
        "W4A16_NVFP4",
        "modelopt",
        'quant_algo "W4A16_NVFP4", group_size 16 (mtq.W4A16_NVFP4_CFG; ModelOpt format '
        '"w4a16_nvfp4"; mtq.NVFP4_MLP_WEIGHT_ONLY_CFG writes it with group_size 32, which '
        "vLLM 0.26.0 refused on the H100: algos_truth-0.26.0.json)",
        _releases((("0.26.0", "0.33.0"), FP4_75)),
        PACKED_U8,
        packing=2,
        scales=(
            Scale("weight_scale", GROUP_16, FP8_E4M3),
            Scale("weight_scale_2", PER_TENSOR),
            # a placeholder PerTensorScaleParameter, so a W4A4-style export's input_scale
            # loads; dropped after loading
            Scale("input_scale", PER_TENSOR, required=False),
        ),
        linear_method="ModelOptNvFp4W4A16LinearMethod",
        kernel_family="nvfp4_a16",
        kernels=MappingProxyType({"every GPU (0.26.0)": "Marlin FP4 (pinned, W4A16)"}),
        notes="NVFP4 weights, BF16/FP16 activations: no input_scale needed (vLLM registers a "
        "placeholder so a W4A4-style checkpoint's input_scale loads, then drops it).",
        sources=(
            f"{MODELOPT_PY}:ModelOptNvFp4W4A16LinearMethod.create_weights (0.26.0); "
            "KNvfp4Static + _DropInputScale (0.33.0)",
        ),
    ),
    QuantFormat(
        "MIXED_PRECISION",
        "modelopt",
        'quant_algo "MIXED_PRECISION" with quantized_layers (ModelOpt, when layers differ)',
        _releases((("0.26.0", "0.33.0"), MIXED_75)),
        notes="each layer names its own algorithm in quantized_layers: its tensors are those "
        "of that algorithm's row (facts/modelopt_mixed.py resolves a layer as "
        "_resolve_quant_algo does: keys renamed by the model's hf_to_vllm_mapper first, fused "
        "layers from their shards, which must agree, a MoE layer's experts all by the first "
        "key under <mlp>.experts). A layer whose algorithm has no Linear method there (0.26.0: "
        "FP8, NVFP4, W4A16_NVFP4, MXFP8; 0.33.0: LINEAR_ALGOS), W4A16_AWQ for one, or none, "
        "is built unquantized.",
        sources=(
            f"{MODELOPT_PY}:ModelOptMixedPrecisionConfig._from_config, _resolve_quant_algo, "
            "get_quant_method",
            "modelopt/torch/export/quant_utils.py:process_layer_quant_config (ModelOpt 0.47.0)",
        ),
    ),
    # -- ModelOpt, refused by every vLLM release read ----------------------------------------
    # vLLM's modelopt.py raises "ModelOpt currently only supports: [...]" for these.
    QuantFormat(
        "W4A16_AWQ",
        "modelopt",
        'quant_algo "W4A16_AWQ" (mtq.INT4_AWQ_CFG; ModelOpt format "int4_awq"; older '
        'ModelOpt and our fixtures: "INT4_AWQ")',
        notes="INT4 weights packed two a byte along the output, a scale per group "
        "(awq_block_size) and pre_quant_scale: vLLM's ModelOpt loader has no method for it "
        "(refused on the H100 with vLLM 0.26.0, issue 22).",
        sources=(MODELOPT_ALGO_NAMES, "modelopt/torch/export/quant_utils.py:pack_int4_in_uint8"),
    ),
    QuantFormat(
        "W4A8_AWQ",
        "modelopt",
        'quant_algo "W4A8_AWQ" (ModelOpt format "w4a8_awq")',
        sources=(MODELOPT_ALGO_NAMES,),
    ),
    QuantFormat(
        "W8A8_SQ_PER_CHANNEL",
        "modelopt",
        'quant_algo "W8A8_SQ_PER_CHANNEL" (mtq.INT8_SMOOTHQUANT_CFG; ModelOpt format '
        '"int8_sq"; older ModelOpt and our fixtures: "INT8_SQ")',
        sources=(MODELOPT_ALGO_NAMES,),
    ),
    QuantFormat(
        "W8A16",
        "modelopt",
        'quant_algo "W8A16" (ModelOpt format "int8_wo")',
        sources=(MODELOPT_ALGO_NAMES,),
    ),
    QuantFormat(
        "NVFP4_AWQ",
        "modelopt",
        'quant_algo "NVFP4_AWQ" (ModelOpt format "nvfp4_awq")',
        notes="vLLM's override_quantization_method claims it for ModelOptNvFp4Config ('FP4' "
        "in the name), then from_config refuses it: not in QUANT_ALGOS.",
        sources=(MODELOPT_ALGO_NAMES,),
    ),
    QuantFormat(
        "W4A8_NVFP4_FP8",
        "modelopt",
        'quant_algo "W4A8_NVFP4_FP8" (ModelOpt format "w4a8_nvfp4_fp8")',
        sources=(MODELOPT_ALGO_NAMES,),
    ),
    QuantFormat(
        "W4A8_MXFP4_FP8",
        "modelopt",
        'quant_algo "W4A8_MXFP4_FP8" (ModelOpt format "w4a8_mxfp4_fp8")',
        sources=(MODELOPT_ALGO_NAMES,),
    ),
    QuantFormat(
        "NVFP4_SVD",
        "modelopt",
        'quant_algo "NVFP4_SVD" (ModelOpt format "nvfp4_svdquant")',
        sources=(MODELOPT_ALGO_NAMES,),
    ),
    QuantFormat(
        "MXFP4",
        "modelopt",
        'quant_algo "mxfp4" (ModelOpt format "mxfp4", written as is)',
        sources=(MODELOPT_ALGO_NAMES,),
    ),
)

# ModelOpt's KV-cache algorithms (kv_cache_quant_algo) and the scales its export writes per
# attention block: k_bmm_quantizer._amax -> <block>.k_proj.k_scale, v_bmm_quantizer._amax ->
# <block>.v_proj.v_scale (quant_utils.py:_KV_CACHE_REPLACEMENTS). The leaves an attention
# layer takes (BaseKVCacheMethod.create_weights: q/k/v/prob_scale; kv_scale is the legacy
# one scale for both).
KV_CACHE_ALGOS = ("FP8", "NVFP4")  # vLLM 0.26.0 KV_CACHE_QUANT_ALGOS (0.8.5-0.12.0: FP8)
KV_SCALE_LEAVES = ("k_scale", "v_scale", "kv_scale", "q_scale", "prob_scale")


def modelopt_format(algo: str | None) -> QuantFormat | None:
    """The ModelOpt row for a ``quant_algo`` (any case), None when the table has none."""
    if not algo:
        return None
    return _MODELOPT.get(algo.upper())


def judged_formats(producer: str = "modelopt") -> tuple[str, ...]:
    """The names whose tensors the checks judge (a Linear vLLM builds), in table order."""
    return tuple(f.name for f in FORMATS if f.producer == producer and f.tensors_known)


def vllm_config_classes(producer: str = "modelopt") -> frozenset[str]:
    """Every vLLM config class that loads a format of ``producer``, in any release read."""
    return frozenset(
        s.config_class for f in FORMATS if f.producer == producer for s in f.vllm.values()
    )


_MODELOPT = {f.name: f for f in FORMATS if f.producer == "modelopt"}
