"""The GEMM kernels vLLM picks for a quantized Linear, per release and GPU: one list per kernel
family, in vLLM's own priority order, each kernel with the conditions of its ``is_supported``
and ``can_implement`` and the failures known once it runs.

vLLM walks a family's list and takes the first kernel whose ``is_supported(cc)`` and
``can_implement(config)`` hold (``choose_scaled_mm_linear_kernel``, ``choose_mp_linear_kernel``,
``init_nvfp4_linear_kernel``, ``select_mxfp4_moe_backend`` in
``vllm/model_executor/kernels/linear/__init__.py`` and ``fused_moe/oracle/mxfp4.py``); none:
vLLM raises ("Failed to find a kernel that can implement the ... linear layer"). A kernel that
vLLM takes and that then fails on the GPU (a compiled kernel missing for that arch) is a
:class:`Failure`: the load is refused at the first forward (vLLM's profile run).

Rows are read from the 0.26.0 and 0.33.0 wheels (files cited per kernel); CUTLASS's arch
support is the compiled dispatch in ``csrc/quantization/w8a8/cutlass/`` (``scaled_mm_entry.cu``:
``cutlass_scaled_mm_supports_block_fp8`` true from sm 9.0; ``scaled_mm_c3x_sm100.cu`` and
``scaled_mm_c3x_sm120.cu`` pass ``nullptr`` for int8). Where the env's vLLM is another release,
the nearest one read below it is used, and the verdict says what it assumed
(facts/quant_release.py; a refusal resting on it is a warning).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

KERNELS_PY = "vllm/model_executor/kernels/linear/__init__.py"
MXFP4_ORACLE_PY = "vllm/model_executor/layers/fused_moe/oracle/mxfp4.py"
SCALED_MM = "vllm/model_executor/kernels/linear/scaled_mm"
MIXED = "vllm/model_executor/kernels/linear/mixed_precision"


@dataclass(frozen=True)
class Failure:
    """What a kernel vLLM picked does on some GPUs: raises at the first GEMM. Applies on
    ``min_cc <= cc < max_cc`` and, when ``n_not_multiple`` is set, only to layers whose
    output size (N) is not a multiple of it; when ``nk_multiple`` is set, only to layers whose
    N and K both are multiples of it (others take another path that works). MoE experts
    (a layer asked as N = 2 x intermediate, K = hidden): when ``moe_n_at_most`` is set, only
    where one of the two expert GEMMs has an output of at most that many columns on a rank:
    gate_up's ``2 * round_up(intermediate / tp, moe_pad)`` (vLLM pads each rank's share,
    ``mxfp4_round_up_hidden_size_and_intermediate_size``) or down's ``hidden``."""

    min_cc: int
    max_cc: int
    message: str
    source: str
    n_not_multiple: int = 0
    nk_multiple: int = 0
    moe_n_at_most: int = 0
    moe_pad: int = 1


@dataclass(frozen=True)
class Kernel:
    """One kernel class as vLLM's chooser sees it. ``cc`` bounds are compute capabilities as
    vLLM writes them (90 = 9.0); ``families``: majors it runs on (``is_device_capability_family``),
    empty for any; ``needs``: a package that must be importable (``has_flashinfer()``,
    ``has_deep_gemm()``...; ``"opt-in"``: an environment variable off by default, so vLLM's
    default never takes it); the rest are ``can_implement``'s conditions. ``cost``: what
    taking it costs compared with the native kernel (empty: native; a warning names it)."""

    name: str
    min_cc: int = 0
    max_cc: int = 1000
    families: frozenset[int] = frozenset()
    needs: str = ""
    group_sizes: frozenset[int] | None = None  # -1: per channel
    g_idx: bool = True
    zero_points: bool = True
    bits: frozenset[int] | None = None
    act_dtypes: frozenset[str] | None = None
    bf16_out: bool = False
    n_multiple: int = 1
    k_multiple: int = 1
    k_div_group: bool = False  # the rank's input a whole number of groups (-1: one group)
    # the mixed-precision kernels' per-rank rules (MPLinearLayerConfig: partition_weight_shape
    # against full_weight_shape; see facts/quant_kernel_ranks.py):
    straddle: bool = False  # refuses a group split over ranks (group < full K, K_rank % group)
    full_k_div_group: bool = False  # the full input a whole number of groups (group > 0)
    group_full_k: bool = False  # takes a group size of the full input beside group_sizes
    n_pack: bool = False  # the rank's output a multiple of 32 / bits (zero points packed)
    zp_bits: frozenset[int] | None = None  # bits it takes with zero points (None: any)
    g_idx_split_k: bool = True  # act-order with the input split over ranks
    g_idx_tile: tuple[int, int] = ()  # act-order: the rank's (N, K) multiples, no padding
    pads: tuple[int, int] = ()  # pads a rank's (N, K) up to these multiples (works, slower)
    excluded_model_types: frozenset[str] = frozenset()  # on families 10 and 12
    fails: tuple[Failure, ...] = ()
    cost: str = ""
    source: str = ""

    def runs_on(self, cc: int) -> bool:
        """``is_supported``: the GPU's compute capability."""
        if not self.min_cc <= cc < self.max_cc:
            return False
        return not self.families or cc // 10 in self.families


ANY16 = frozenset({"bfloat16", "float16"})
_INT8_SM100 = Failure(
    100,
    1000,
    "Int8 not supported on SM{cc}. Use FP8 quantization instead, or run on older arch (SM < 100).",
    "csrc/quantization/w8a8/cutlass/c3x/scaled_mm_helper.hpp:dispatch_scaled_mm (the sm100 "
    "and sm120 entries pass nullptr for int8); vLLM issue 27182. _custom_ops.py:"
    "cutlass_scaled_mm sends a weight whose N or K is not a multiple of 16 to Triton instead",
    nk_multiple=16,
)
_CUTLASS_BLOCK_SM120 = Failure(
    120,
    130,
    "cutlass_gemm_caller ... Invalid status (the SM120 blockwise FP8 GEMM rejects N % 128 != 0)",
    "csrc/quantization/w8a8/cutlass/c3x/scaled_mm_blockwise_sm120_fp8_dispatch.cuh; vLLM "
    "issue 47990 (RTX PRO 6000, N=576 and 2112 fail at every M and K)",
    n_not_multiple=128,
)
# vLLM 0.26.0 and 0.33.0 vendor the same triton_kernels (vllm/third_party/triton_kernels,
# the 3.5.1 API: `diff -r` of the two wheels' copies is empty); vLLM imports it unless a
# separate `triton_kernels` is installed (utils/import_utils.py:import_triton_kernels).
_TK = "vllm/third_party/triton_kernels"
_TRITON_MXFP4_HOPPER = Failure(
    90,
    100,
    "triton_kernels' matmul_ogs does not compile: CompileTimeAssertionFailure at "
    "tl.static_assert(BLOCK_N % (2 * n_warps * 2 * 8) == 0) (Hopper-swizzled MXFP4 scales, "
    "8 warps, need BLOCK_N 256; an expert GEMM with {moe} output columns gets BLOCK_N "
    "{block_n})",
    "quantization/utils/mxfp4_utils.py:_swizzle_mxfp4 (sm 9.x, torch >= 2.8.1: "
    "make_default_matmul_mxfp4_w_scale_layout -> HopperMXScaleLayout, num_warps=8); "
    f"{_TK}/matmul_ogs_details/opt_flags_details/opt_flags_nvidia.py (compute_num_warps: "
    "the layout's 8; compute_block_n: 256 only where N > 128, else next_power_of_2(N) "
    f"<= 128); {_TK}/matmul_ogs_details/_matmul_ogs.py:_matmul_ogs (HOPPER_SCALE: "
    "static_assert(BLOCK_N % (2 * n_warps * 2 * 8) == 0)); N of the two calls in "
    "fused_moe/experts/gpt_oss_triton_kernels_moe.py:triton_kernel_fused_experts: "
    "2 x intermediate per rank (oracle/mxfp4.py:mxfp4_round_up_hidden_size_and_"
    "intermediate_size pads it to 64 for TRITON) and hidden (not padded). Measured: "
    "hidden 128 dies at the first forward on an H200 (formats_truth-0.26.0.json; "
    "the excerpt vLLM printed ends 2 lines short of the assert that fired: Triton's "
    "CompilationError shows the 12 lines up to it, the probe kept 600 characters), "
    "hidden 256 runs on an H100 (formats_truth-0.26.0-hidden256.json); the sweep of "
    "mxfp4_shapes-0.26.0.json",
    moe_n_at_most=128,
    moe_pad=64,
)

_DEEP_GEMM = Kernel(
    "DeepGemmFp8BlockScaledMMKernel",
    min_cc=90,
    families=frozenset({9, 10, 12}),
    needs="deep_gemm",
    bf16_out=True,
    n_multiple=64,
    k_multiple=128,
    excluded_model_types=frozenset({"qwen3_5_text", "qwen3_5_moe_text"}),
    source=f"{SCALED_MM}/deep_gemm.py (platforms/cuda.py:support_deep_gemm: 9.0 and the 10.x "
    "and 12.x families; utils/deep_gemm.py:should_use_deepgemm_for_fp8_linear: BF16 output, "
    "N % 64, K % 128); DeepGEMM ships in the vLLM wheel (vllm/third_party/deep_gemm, with sm90, "
    "sm100 and sm120 FP8 GEMMs in 0.26.0)",
)
_CUTLASS_BLOCK = Kernel(
    "CutlassFp8BlockScaledMMKernel",
    min_cc=90,
    fails=(_CUTLASS_BLOCK_SM120,),
    source=f"{SCALED_MM}/cutlass.py (CUTLASS_BLOCK_FP8_SUPPORTED: "
    "cutlass_scaled_mm_supports_block_fp8, sm 9.0 and up)",
)
_MARLIN_FP8 = Kernel(
    "MarlinFP8ScaledMMLinearKernel",
    min_cc=75,
    max_cc=89,
    cost="weight-only FP8 (Marlin dequantizes the weights; activations stay 16-bit)",
    source=f"{SCALED_MM}/marlin.py (not taken at 8.9 and up unless VLLM_TEST_FORCE_FP8_MARLIN)",
)
_TRITON_BLOCK = Kernel(
    "TritonFp8BlockScaledMMKernel",
    source=f"{SCALED_MM}/triton.py (any CUDA GPU: the portable fallback)",
)
_FI_BLOCK = Kernel(
    "FlashInferFp8DeepGEMMDynamicBlockScaledKernel",
    needs="opt-in",
    source=f"{SCALED_MM}/flashinfer.py (VLLM_BLOCKSCALE_FP8_GEMM_FLASHINFER, off by default)",
)
_CUTLASS_FP8 = Kernel(
    "CutlassFP8ScaledMMLinearKernel",
    min_cc=89,
    source=f"{SCALED_MM}/cutlass.py; scaled_mm_entry.cu dispatches sm89, sm90, sm100, sm120",
)
_FI_FP8 = Kernel(
    "FlashInferFP8ScaledMMLinearKernel",
    min_cc=100,
    needs="flashinfer",
    source=f"{SCALED_MM}/flashinfer.py (per-tensor weight and activation scales only; 10.0+)",
)
_CUTLASS_INT8 = Kernel(
    "CutlassInt8ScaledMMLinearKernel",
    min_cc=75,
    fails=(_INT8_SM100,),
    source=f"{SCALED_MM}/cutlass.py (is_supported: any CUDA GPU, no capability check)",
)
_TRITON_INT8 = Kernel("TritonInt8ScaledMMLinearKernel", source=f"{SCALED_MM}/triton.py")
# The mixed-precision kernels judge each rank's share (MPLinearLayerConfig's
# partition_weight_shape, built in CompressedTensorsWNA16.create_weights from the rank's
# input and summed outputs) and, for some rules, the full layer (full_weight_shape): held
# against the real choose_mp_linear_kernel of both wheels under each arch
# (fixtures/loader_truth/kernel_choice-*.json, scripts/kernel_choice_truth.py).
_MACHETE = Kernel(
    "MacheteLinearKernel",
    min_cc=90,
    max_cc=91,
    group_sizes=frozenset({-1, 64, 128}),
    bits=frozenset({4, 8}),
    n_multiple=128,
    k_multiple=64,
    g_idx_split_k=False,
    source=f"{MIXED}/machete.py (compute capability exactly 9.0; the rank's in % 64 and out "
    "% 128: machete_utils.py:check_machete_supports_shape, MACHETE_PREPACKED_BLOCK_SHAPE; "
    "0.26.0: no act-order with the input split over ranks)",
)
_MARLIN = Kernel(
    "MarlinLinearKernel",
    min_cc=75,
    group_sizes=frozenset({-1, 32, 64, 128}),
    bits=frozenset({4, 8}),
    zp_bits=frozenset({4}),
    straddle=True,
    g_idx_tile=(64, 128),
    pads=(64, 128),
    source=f"{MIXED}/marlin.py:can_implement (MARLIN_SUPPORTED_GROUP_SIZES; 'A group "
    "straddling TP ranks cannot be fixed by padding'; other shapes are zero-padded by "
    "marlin_utils.py:marlin_padded_nk to N % 64 and K % 128 or N % 128 and K % 64; 0.26.0 "
    "with act-order keeps the strict check_marlin_supports_shape: min_thread_n 64, "
    "min_thread_k 128)",
)
_CONCH = Kernel(
    "ConchLinearKernel",
    min_cc=80,
    needs="conch",
    g_idx=False,
    group_sizes=frozenset({-1, 128}),
    source=f"{MIXED}/conch.py",
)
_EXLLAMA = Kernel(
    "ExllamaLinearKernel",
    min_cc=60,
    act_dtypes=frozenset({"float16"}),
    bits=frozenset({4, 8}),
    zp_bits=frozenset(),
    group_sizes=None,
    full_k_div_group=True,
    n_pack=True,
    g_idx_split_k=False,
    cost="Exllama (float16 activations only)",
    source=f"{MIXED}/exllama.py (float16 activations, group size > 0 dividing the full "
    "input, the rank's output a multiple of 32 / bits)",
)
_TRITON_W4A16 = Kernel(
    "TritonW4A16LinearKernel",
    group_sizes=frozenset({-1, 32, 64, 128, 256}),
    group_full_k=True,
    g_idx=False,
    bits=frozenset({4}),
    act_dtypes=ANY16,
    n_multiple=8,
    k_div_group=True,
    cost="the Triton W4A16 fallback (slower than Marlin/Machete)",
    source=f"{MIXED}/triton_w4a16.py (group sizes -1, 32, 64, 128, 256 or the full input; "
    "the rank's out % 8 and in a whole number of groups; no g_idx)",
)
_ALLSPARK = Kernel(
    "AllSparkLinearKernel",
    min_cc=80,
    max_cc=90,
    group_sizes=frozenset({-1}),
    g_idx=False,
    zero_points=False,
    bits=frozenset({8}),
    act_dtypes=ANY16,
    n_multiple=16,
    k_multiple=16,
    source=f"{MIXED}/allspark.py (0.26.0 only: Ampere, 8-bit channelwise without zero points; "
    "allspark_utils.py:check_allspark_supported_dtype_shape, the rank's in and out % 16)",
)
# humming-kernels is a dependency of both wheels (Requires-Dist humming-kernels[cu13]; import
# name humming): it takes any share Marlin refuses (HummingLinearKernel.can_implement: CUDA,
# has_humming(), 0.26.0 no act-order); 0.33.0 moves it ahead of Marlin on sm 9.0
# (HUMMING_PREFERRED). What it then does with a share Marlin could not take is the GPU's to
# show (scripts/device/kernel_ranks.sh).
_HUMMING = Kernel(
    "HummingLinearKernel",
    min_cc=75,
    needs="humming",
    g_idx=False,
    source=f"{MIXED}/humming.py",
)
_NVFP4_MARLIN = Kernel(
    "MarlinNvFp4LinearKernel",
    min_cc=75,
    # 0.26.0 and 0.33.0 pad the rank's share before the repack
    # (marlin_utils_fp4.py:prepare_fp4_layer_for_marlin -> marlin_padded_nk): the
    # "size_n ... is not divisible by tile_n_size = 64" of older releases (field report
    # F3.5) no longer happens
    pads=(64, 128),
    cost="weight-only FP4 (no native FP4 below sm 10.0: Marlin dequantizes the weights, "
    "activations stay 16-bit)",
    source="vllm/model_executor/kernels/linear/nvfp4/marlin.py (is_fp4_marlin_supported: 7.5+)",
)

_FI_TRTLLM_MXFP4 = Kernel(
    "FLASHINFER_TRTLLM_MXFP4_BF16",
    families=frozenset({10}),
    needs="flashinfer",
    source="fused_moe/experts/trtllm_mxfp4_moe.py:_supports_current_device (family 10.x, "
    "has_flashinfer())",
)
_TRITON_MXFP4 = Kernel(
    "TRITON (triton_kernels)",
    min_cc=90,
    max_cc=110,
    needs="triton_kernels",
    fails=(_TRITON_MXFP4_HOPPER,),
    source="fused_moe/experts/gpt_oss_triton_kernels_moe.py:"
    "_triton_kernel_moe_supports_current_device ((9, 0) <= cc < (11, 0)); "
    "has_triton_kernels() finds a separately installed triton_kernels first, else the copy "
    "vendored in the vLLM wheel; its failures are replaced by those of the copy vLLM imports "
    "(facts/quant_kernel_choice.py:follow_copy)",
)
_FI_CUTLASS_MXFP4 = Kernel(
    "FLASHINFER_CUTLASS_MXFP4_BF16", min_cc=90, max_cc=91, needs="flashinfer"
)
_MARLIN_MXFP4 = Kernel(
    "MARLIN",
    min_cc=75,
    source="fused_moe/experts/marlin_moe.py:_supports_current_device (7.5+); "
    "mxfp4_round_up_hidden_size_and_intermediate_size pads hidden to 256 and "
    "intermediate to 128 for it",
)
_EMULATION_MXFP4 = Kernel("EMULATION", cost="MXFP4 experts emulated (slow)")

FAMILY_0_26: Mapping[str, tuple[Kernel, ...]] = MappingProxyType(
    {
        # _POSSIBLE_FP8_KERNELS[CUDA] (W8A8 FP8, per-tensor / per-channel weights)
        "fp8": (_MARLIN_FP8, _FI_FP8, _CUTLASS_FP8),
        # _POSSIBLE_FP8_BLOCK_KERNELS[CUDA] (128x128 block weights, 1x128 dynamic activations)
        "fp8_block": (_FI_BLOCK, _DEEP_GEMM, _CUTLASS_BLOCK, _MARLIN_FP8, _TRITON_BLOCK),
        # _POSSIBLE_WFP8A16_KERNELS: FP8 weights below 8.9 (CompressedTensorsW8A16Fp8, Fp8 Marlin)
        "fp8_weight_only": (_MARLIN_FP8,),
        # _POSSIBLE_INT8_KERNELS[CUDA]
        "int8": (_CUTLASS_INT8, _TRITON_INT8),
        # _POSSIBLE_KERNELS[CUDA] for W4A16/W8A16 (CutlassW4A8 takes FP8 activations only:
        # left out)
        "wna16": (_MACHETE, _ALLSPARK, _MARLIN, _CONCH, _EXLLAMA, _TRITON_W4A16, _HUMMING),
        # _POSSIBLE_NVFP4_KERNELS[CUDA]; Emulation last: always there
        "nvfp4": (
            Kernel(
                "FlashInferCuteDslNvFp4LinearKernel", families=frozenset({10}), needs="flashinfer"
            ),
            Kernel("FlashInferCutlassNvFp4LinearKernel", min_cc=100, needs="flashinfer"),
            Kernel(
                "CutlassNvFp4LinearKernel",
                min_cc=100,
                source="cutlass_scaled_mm_supports_fp4: sm 10.x and 12.x (CUDA >= 12.8)",
            ),
            _NVFP4_MARLIN,
            Kernel("EmulationNvFp4LinearKernel", cost="NVFP4 emulated in 16-bit (slow)"),
        ),
        # init_nvfp4_linear_kernel(use_a16=True): Marlin forced for weight-only NVFP4 (by
        # design: no cost)
        "nvfp4_a16": (replace(_NVFP4_MARLIN, cost=""),),
        # _get_priority_backends_for_gpt_oss (MoE experts of gpt-oss; the BF16-activation
        # variants _filter_by_activation keeps; the AITER ones are ROCm's)
        "mxfp4_moe": (
            _FI_TRTLLM_MXFP4,
            _TRITON_MXFP4,
            _FI_CUTLASS_MXFP4,
            _MARLIN_MXFP4,
            _EMULATION_MXFP4,
        ),
    }
)

_B12X_BLOCK = Kernel(
    "B12xFp8BlockScaledMMKernel",
    families=frozenset({12}),
    needs="b12x",
    source=f"{SCALED_MM}/b12x.py (Blackwell 12.x, `pip install vllm[b12x]`)",
)
_TORCH_BLOCK = Kernel("BlockWiseTorchFP8ScaledMMLinearKernel", source=f"{SCALED_MM}/pytorch.py")

FAMILY_0_33: Mapping[str, tuple[Kernel, ...]] = MappingProxyType(
    {
        **FAMILY_0_26,
        "fp8": (_FI_FP8, _CUTLASS_FP8, _MARLIN_FP8),
        "fp8_block": (
            _FI_BLOCK,
            _DEEP_GEMM,
            _CUTLASS_BLOCK,
            _B12X_BLOCK,
            _MARLIN_FP8,
            _TRITON_BLOCK,
            _TORCH_BLOCK,
        ),
        # 0.33.0 refuses act-order at config time (compressed_tensors.py: "actorder ... is
        # no longer supported"); Machete, Marlin and Exllama no longer look at it
        "wna16": (
            replace(_MACHETE, g_idx_split_k=True),
            replace(_MARLIN, g_idx_tile=()),
            _CONCH,
            replace(_EXLLAMA, g_idx_split_k=True),
            _TRITON_W4A16,
            _HUMMING,
        ),
        # 0.33.0's _get_priority_backends_for_gpt_oss: TRITON runs on (9, 0) <= cc < (13, 0)
        # but on the 12.x family it is moved behind BATCHED_MARLIN (so MARLIN serves there,
        # as in 0.26.0); HUMMING (moved ahead of MARLIN on 9.0) and CUTLASS_MXFP4_MXFP4
        # (MXFP4 activations, filtered out for a BF16-activation checkpoint) come after
        # TRITON on 9.0; the same vendored triton_kernels, so the same Hopper failure
        "mxfp4_moe": (
            _FI_TRTLLM_MXFP4,
            replace(_TRITON_MXFP4, max_cc=130, families=frozenset({9, 10, 11})),
            _FI_CUTLASS_MXFP4,
            _MARLIN_MXFP4,
            replace(_TRITON_MXFP4, max_cc=130, families=frozenset({12})),
            _EMULATION_MXFP4,
        ),
    }
)

# oracle/mxfp4.py:map_mxfp4_backend: the moe_backend values (--moe-backend) gpt-oss MXFP4
# experts accept, which select_mxfp4_moe_backend tries in place of its priority list (a
# backend that cannot serve raises "Mxfp4 MoE backend ... does not support the deployment
# configuration"; any other value: "moe_backend=... is not supported for MXFP4 MoE"). Each
# names the kernel of the mxfp4_moe list it runs; "": accepted, not modelled here (other
# platforms', or MXFP8/FP8 activations, or packages this table does not follow). TRITON_UNFUSED
# swizzles and multiplies through the same triton_kernels matmul_ogs as TRITON.
_MXFP4_MOE_ARGS_0_26 = {
    "triton": "TRITON (triton_kernels)",
    "triton_unfused": "TRITON (triton_kernels)",
    "marlin": "MARLIN",
    "flashinfer_trtllm": "FLASHINFER_TRTLLM_MXFP4_BF16",
    "flashinfer_cutlass": "FLASHINFER_CUTLASS_MXFP4_BF16",
    "emulation": "EMULATION",
    **dict.fromkeys(
        ("deep_gemm", "flashinfer_trtllm_afp8", "flashinfer_cutlass_afp8", "humming", "aiter"),
        "",
    ),
    **dict.fromkeys(("aiter_mxfp4_fp8", "aiter_mxfp4_mxfp4", "xpu", "cpu"), ""),
}
MXFP4_MOE_ARGS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "0.26.0": MappingProxyType(_MXFP4_MOE_ARGS_0_26),
        "0.33.0": MappingProxyType(
            _MXFP4_MOE_ARGS_0_26
            | dict.fromkeys(
                (
                    "b12x",
                    "flashinfer_moe_ep_cutedsl",
                    "flashinfer_moe_ep_mega_deep_gemm",
                    "aiter_triton_mxfp4_bf16",
                    "aiter_triton_mxfp4_mxfp4",
                ),
                "",
            )
        ),
    }
)

# layers/quantization/utils/humming/priority.py:prioritize_humming (0.33.0; applied by
# kernels/linear/__init__.py:_resolve_backend_kernels to every linear list): on these
# capabilities Humming moves directly ahead of Marlin (_HUMMING_PREFERRED_CAPABILITIES)
HUMMING_PREFERRED: Mapping[str, frozenset[int]] = MappingProxyType(
    {"0.26.0": frozenset(), "0.33.0": frozenset({90})}
)

FAMILIES: Mapping[str, Mapping[str, tuple[Kernel, ...]]] = MappingProxyType(
    {"0.26.0": FAMILY_0_26, "0.33.0": FAMILY_0_33}
)


def release_for(version: str | None) -> str | None:
    """The release read whose lists stand for ``version``: the same, else the newest read
    that is not newer (None: older than every release read, or unknown)."""
    if not version:
        return None

    def key(v: str) -> tuple[int, ...]:
        parts = []
        for p in v.split("+")[0].split(".")[:3]:
            digits = "".join(c for c in p if c.isdigit())
            parts.append(int(digits or 0))
        return tuple(parts)

    older = [r for r in FAMILIES if key(r) <= key(version)]
    return max(older, key=key) if older else None
