"""``quant.kernel-arch``: on every target GPU, the GEMM kernel the env's vLLM picks for each
quantized layer (its priority list and each kernel's conditions,
:mod:`pytest_vllm_env.tables.quant_kernels`, walked by
:mod:`pytest_vllm_env.facts.quant_kernel_choice`), and whether it runs there.

The real failures it catches before the load: a W8A8 INT8 checkpoint that serves on sm 9.0 and
dies on Blackwell (vLLM takes CUTLASS, whose sm100/sm120 builds have no int8 GEMM: "Int8 not
supported on SM120"); block FP8 on sm 12.x routed to CUTLASS's SM120 blockwise GEMM with an
output size not a multiple of 128 ("Invalid status", vLLM issue 47990; DeepGEMM takes BF16
layers with N % 64 == 0 first); a W4A16 group size no kernel implements (16: Marlin, Machete
and Triton all refuse: "Failed to find a kernel that can implement the WNA16 linear layer");
a ``--tensor-parallel-size`` whose rank shares no kernel takes (vLLM chooses from each rank's
share, ``MPLinearLayerConfig.partition_weight_shape``: facts/quant_kernel_ranks.py; a WNA16
group split over ranks, 0.26.0 act-order off Marlin's tile), said with a size that works; gpt-oss
MXFP4 experts on sm 9.x, run by triton_kernels' matmul_ogs, which does not compile when an
expert GEMM has 128 output columns or fewer on a rank (hidden <= 128, or 2 x intermediate /
tensor_parallel_size <= 128): ``tl.static_assert(BLOCK_N % (2 * n_warps * 2 * 8) == 0)``.
Where vLLM falls back to a kernel that works (Triton block FP8, Marlin weight-only FP4 on
Hopper), the verdict passes, or warns when the fallback costs (weight-only, emulated,
float16-only).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import NamedTuple

from pytest_vllm_env.checks.modelopt_common import few, skip_unreadable
from pytest_vllm_env.facts.quant_kernel_choice import (
    TRITON_MOE,
    Choice,
    LayerAsk,
    choose,
    follow_copy,
    kernel_list,
)
from pytest_vllm_env.facts.quant_kernel_ranks import RankLayer, rank_layers, with_rules
from pytest_vllm_env.facts.quant_plan import QuantPlan
from pytest_vllm_env.facts.quant_release import kernel_assumption
from pytest_vllm_env.facts.triton_kernels_copy import TritonKernelsCopy
from pytest_vllm_env.facts.vllm_tp import format_schemes, format_split
from pytest_vllm_env.findings import Finding, failed, passed, skipped, warning
from pytest_vllm_env.readers.checkpoint import Checkpoint
from pytest_vllm_env.readers.vllm_mp_kernels import MpKernelRules
from pytest_vllm_env.tables.archs import Arch
from pytest_vllm_env.tables.quant_kernels import MXFP4_MOE_ARGS, Kernel, release_for

CHECK = "quant.kernel-arch"


def kernel_arch(
    ckpt: Checkpoint,
    plan: QuantPlan,
    vllm_version: str | None,
    archs: Iterable[Arch],
    archs_source: str,
    packages: Collection[str],
    env_lists: Mapping[str, Sequence[str]] | None = None,
    tp: int = 1,
    moe_backend: str | None = None,
    triton_kernels: TritonKernelsCopy | None = None,
    mp_rules: MpKernelRules | None = None,
) -> Finding:
    """Each quantized layer has a kernel on each target GPU that runs there, with each rank's
    share of it under ``tp`` (``--tensor-parallel-size``); MoE experts on the kernel
    ``moe_backend`` (``--moe-backend``) names, where one is given, and the TRITON experts'
    failures those of the ``triton_kernels`` vLLM imports (``triton_kernels``; None: the
    copy the table was measured on, v3.5.1 as vendored in 0.26.0 and 0.33.0); the WNA16
    kernels' shape rules as the env's own source states them (``mp_rules``,
    readers/vllm_mp_kernels.py; None or a rule not read: the table's)."""
    if blocked := skip_unreadable(CHECK, ckpt, config=True, tensors=True):
        return blocked
    if plan.refusal or not plan.schemes:
        return skipped(CHECK, f"{ckpt.label}: no quantized layer to judge (see quant.config)")
    targets = list(archs)
    if not targets:
        return skipped(
            CHECK, f"no target GPU arch known (from {archs_source}): pass --cuda-arch (e.g. 12.0)"
        )
    release = release_for(vllm_version)
    if release is None and not env_lists:
        return skipped(
            CHECK,
            f"{ckpt.label}: vLLM {vllm_version or 'is not installed'}"
            + (
                ": older than the releases whose kernel choice is modelled (0.26.0, 0.33.0)"
                if vllm_version
                else ""
            ),
        )
    # each rank's share is what a kernel is chosen for (facts/quant_kernel_ranks.py)
    shapes = rank_layers(plan, ckpt.modules, ckpt.config, tp)
    # (arch, kernel or None, failure or cost) -> the layers it concerns
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    served: dict[str, set[str]] = {}
    unknown: set[str] = set()
    below: set[str] = set()  # targets where vLLM refuses a scheme before any kernel choice
    copy_assumed: dict[str, None] = {}  # what was assumed of the triton_kernels vLLM takes
    tk_assumed: tuple[str, ...] = ()
    judged = 0
    padded: dict[str, list[str]] = {}  # arch -> layers a kernel pads to its tile
    ctx = _Ctx(
        plan, vllm_version, release, env_lists, packages, moe_backend, triton_kernels, mp_rules
    )
    for arch in targets:
        for layer, rl in sorted(shapes.items()):
            picked = _pick(rl, arch.number, ctx, tp, unknown)
            if picked is None:
                below.add(arch.cc)  # refused outright: quant.min-capability says so
                continue
            family, choice, forced, tk_assumed = picked
            if not family:
                continue
            kernels = choice.kernels
            judged += 1
            if choice.kernel is not None and choice.kernel.name == TRITON_MOE:
                copy_assumed.update(tk_assumed)
            n, k = rl.full_n, rl.full_k
            where = (
                f"{layer} [experts: hidden {k}, intermediate {n // 2}"
                + (f", {n // 2 // tp} per rank at tensor_parallel_size={tp}" if tp > 1 else "")
                + "]"
                if family == "mxfp4_moe"
                else f"{layer} [N={rl.n}, K={rl.k} per rank of {n} x {k} at "
                f"tensor_parallel_size={tp}]"
                if rl.split
                else f"{layer} [N={n}, K={k}]"
            )
            if choice.kernel is not None and _pads(choice.kernel.pads, rl.n, rl.k):
                padded.setdefault(arch.cc, []).append(f"{choice.kernel.name}: {where}")
            if choice.kernel is not None and not choice.failure and rl.straddles:
                # create_weights: the kernel is chosen, then verify_group_size_divides_
                # partition refuses the rank's input (quant.tensor-parallel says it too)
                group = rl.scheme.settings.get("group")
                why = (
                    f"then refuses the rank's input: Weight input_size_per_partition={rl.k} "
                    f"... is not divisible by group_size={group} (compressed_tensors_wNa16.py:"
                    "create_weights, verify_group_size_divides_partition)"
                )
                groups.setdefault((arch.cc, choice.kernel.name, "split", why), []).append(where)
                continue
            if choice.kernel is None and forced:
                if not kernels and moe_backend in unknown:
                    # accepted by vLLM, its kernel not modelled: never a verdict of ours
                    what = "a moe_backend whose kernel this suite does not model"
                    groups.setdefault((arch.cc, str(moe_backend), "cost", what), []).append(where)
                    continue
                why = "; ".join(choice.passed_over) or (
                    f"moe_backend={moe_backend!r} is not supported for MXFP4 MoE "
                    "(oracle/mxfp4.py:map_mxfp4_backend)"
                )
                key = (arch.cc, "", "forced", why)
            elif choice.kernel is None:
                why = "; ".join(choice.passed_over)
                key = (arch.cc, "", "none", f"no {family} kernel can implement it ({why})")
            elif choice.failure:
                key = (arch.cc, choice.kernel.name, "fails", choice.failure)
            else:
                served.setdefault(arch.cc, set()).add(choice.kernel.name)
                key = (
                    arch.cc,
                    choice.kernel.name,
                    "cost" if choice.kernel.cost else "ok",
                    choice.kernel.cost,
                )
            groups.setdefault(key, []).append(where)

    def text(key: tuple[str, str, str, str], layers: list[str]) -> str:
        cc, kernel, kind, what = key
        which = f"{len(layers)} layer(s), e.g. {layers[0]}"
        if kind == "forced":
            return (
                f"{cc}: vLLM raises for --moe-backend={moe_backend} on {which} "
                f"(oracle/mxfp4.py:select_mxfp4_moe_backend): {what}"
            )
        if kind == "none":
            return (
                f"{cc}: vLLM raises 'Failed to find a kernel that can implement the ... linear "
                f"layer' for {which}: {what}"
            )
        if kind == "fails":
            return f"{cc}: vLLM takes {kernel} for {which}, which fails there: {what}"
        if kind == "split":
            return f"{cc}: vLLM takes {kernel} for {which}, {what}"
        return f"{cc}: {kernel} for {which}: {what}"

    broken = [text(k, v) for k, v in groups.items() if k[2] in ("none", "fails", "forced", "split")]
    costly = [text(k, v) for k, v in groups.items() if k[2] == "cost"]
    # One story with quant.min-capability: a target below a scheme's minimum never gets as
    # far as a kernel (vLLM's _verify_quantization refuses first); said, never called served.
    refused = (
        f"; {', '.join(sorted(below))}: vLLM refuses the scheme there before it picks a "
        "kernel (see quant.min-capability)"
        if below
        else ""
    )
    if not judged:
        if below:
            return skipped(CHECK, f"{ckpt.label}: no kernel to judge{refused}")
        return skipped(CHECK, f"{ckpt.label}: no kernel family to judge for its schemes")
    which = "; ".join(f"{cc}: {', '.join(sorted(k))}" for cc, k in sorted(served.items()))
    used = f"vLLM {vllm_version or '?'} (kernel lists of {release or '0.26.0'})"
    evidence = {"kernels": {cc: sorted(k) for cc, k in served.items()}}
    if unknown:
        evidence["not_modelled"] = sorted(unknown)
    if padded:
        # marlin_utils.py:marlin_padded_nk zero-pads these shares ("Marlin requires
        # thread-tile padding ...; performance may be degraded"): works, said in the evidence
        evidence["padded"] = {cc: few(v) for cc, v in sorted(padded.items())}
    if tp > 1:
        evidence["tensor_parallel_size"] = tp
    # A release not read (between or after 0.26.0 and 0.33.0, or unknown) is judged by the
    # nearest one read below it: an assumption, said in the verdict; a refusal that rests on
    # it is a warning (never fail what may work), with what makes it exact.
    basis = kernel_assumption(vllm_version, release or "0.26.0")
    assumed = [a for a in (basis, plan.assumed, *copy_assumed) if a]
    if assumed:
        evidence["assumed"] = assumed
        refused += "; " + "; ".join(assumed)
    fix_tp = ""
    if broken and tp > 1 and any(k[2] in ("none", "split") for k in groups):
        fix_tp = _other_tp(ckpt, targets, ctx, tp)
    if broken and not unknown and not assumed:
        return failed(
            CHECK,
            f"{ckpt.label}: {used}: {few(broken)}{refused}",
            "; ".join(f for f in (fix_tp, _fix(broken)) if f),
            vllm_effect="refuses",
            **evidence,
        )
    if broken or costly:
        extra = (
            f"; the env's vLLM also lists kernels this suite does not model "
            f"({', '.join(sorted(unknown))}), so it may pick another"
            if unknown
            else ""
        )
        if broken and assumed:
            extra += "; a refusal that rests on what was assumed is not called a failure"
        return warning(
            CHECK,
            f"{ckpt.label}: {used}: {few(broken + costly)}{extra}{refused}",
            "; ".join(f for f in (fix_tp, _fix(broken)) if f)
            if broken
            else _fix(costly)
            if "moe_backend whose kernel" in " ".join(costly)
            else "run on a GPU with the native kernel (the list names "
            "what each fallback costs), or re-quantize to a format native there",
            vllm_effect="works",
            **evidence,
        )
    return passed(
        CHECK,
        f"{ckpt.label}: every quantized layer has a kernel that runs on each target "
        f"{'vLLM accepts it on ' if below else ''}({used}): {which}{refused}",
        vllm_effect="works",
        **evidence,
    )


class _Ctx(NamedTuple):
    """What every layer's kernel choice shares: the plan, the env's vLLM and packages, the
    launch's --moe-backend and the triton_kernels vLLM imports."""

    plan: QuantPlan
    vllm_version: str | None
    release: str | None
    env_lists: Mapping[str, Sequence[str]] | None
    packages: Collection[str]
    moe_backend: str | None
    triton_kernels: TritonKernelsCopy | None
    mp_rules: MpKernelRules | None = None


def _pick(
    rl: RankLayer, cc: int, ctx: _Ctx, tp: int, unknown: set[str]
) -> tuple[str, Choice, bool, tuple[str, ...]] | None:
    """The kernel vLLM takes for one rank's share of a layer on ``cc``: (family, choice,
    whether --moe-backend forced it, what was assumed of triton_kernels); None where vLLM
    refuses the scheme on ``cc`` before any kernel choice; family "" where none is modelled."""
    scheme = rl.scheme
    support = scheme.row.vllm.get(ctx.release or "") or next(iter(scheme.row.vllm.values()))
    family = scheme.kernel_family
    if cc < support.min_capability:
        if not scheme.row.fallback or cc < scheme.row.fallback[0]:
            return None
        family = "fp8_weight_only"
    if not family:
        return "", Choice(None, None, ()), False, ()
    ask = LayerAsk(
        rl.n,
        rl.k,
        scheme.settings,
        scheme.flags,
        ctx.plan.act_dtype,
        ctx.plan.model_type,
        tp,
        rl.full_k,
    )
    kernels, missing, table = kernel_list(family, ctx.vllm_version, ctx.env_lists)
    unknown |= set(missing)
    tk_assumed: tuple[str, ...] = ()
    if family == "mxfp4_moe":
        kernels, tk_assumed = follow_copy(kernels, ctx.triton_kernels)
    forced = family == "mxfp4_moe" and ctx.moe_backend not in (None, "auto")
    if forced:
        kernels = _forced_moe(kernels, ctx.release, str(ctx.moe_backend), unknown)
    preferred = None
    if family == "wna16" and ctx.mp_rules is not None:
        kernels = with_rules(kernels, ctx.mp_rules)
        preferred = ctx.mp_rules.humming_preferred
    choice = choose(kernels, cc, ask, ctx.packages, table, preferred)
    return family, replace(choice, kernels=tuple(kernels)), forced, tk_assumed


def _pads(tile: tuple[int, int], n: int, k: int) -> bool:
    # marlin_padded_nk: a share is left alone where N % 64 and K % 128, or N % 128 and K % 64
    if not tile:
        return False
    a, b = tile
    return not ((n % a == 0 and k % b == 0) or (n % b == 0 and k % a == 0))


def _other_tp(ckpt: Checkpoint, targets: Sequence[Arch], ctx: _Ctx, tp: int) -> str:
    """The tensor_parallel_size values (powers of two up to 8, not ``tp``) at which every
    rank's share of every layer gets a kernel that runs on every target and vLLM splits the
    model (facts/vllm_tp.py:format_split finds nothing to refuse), said as the fix."""
    good = []
    for size in (1, 2, 4, 8):
        if size == tp:
            continue
        if (
            size > 1
            and format_split(
                dict(ckpt.config or {}), format_schemes(ctx.plan.schemes, ctx.plan.method), size
            ).problems
        ):
            continue
        ok = True
        for rl in rank_layers(ctx.plan, ckpt.modules, ckpt.config, size).values():
            for arch in targets:
                picked = _pick(rl, arch.number, ctx, size, set())
                if picked is None or not picked[0]:
                    continue
                choice = picked[1]
                if choice.kernel is None or choice.failure or rl.straddles:
                    ok = False
                    break
            if not ok:
                break
        if ok:
            good.append(size)
    if not good:
        return ""
    sizes = " or ".join(str(g) for g in good)
    return (
        f"start vLLM with --tensor-parallel-size={sizes} (LLM(tensor_parallel_size=...)): "
        "there every rank's share of every layer has a kernel that runs on the targets"
    )


def _fix(broken: Sequence[str]) -> str:
    text = " ".join(broken)
    fixes = []
    if "Int8 not supported" in text:
        fixes.append(
            "INT8 W8A8 has no GEMM on sm 10.x/12.x: re-quantize to FP8 (llm-compressor "
            "FP8_DYNAMIC) for Blackwell, or run it on sm 7.5-9.0"
        )
    if "Invalid status" in text:
        fixes.append(
            "keep layers whose output size is not a multiple of 128 in BF16 (ignore / "
            "ignored_layers), or serve with dtype bfloat16 so DeepGEMM takes them"
        )
    if "input_size_per_partition=" in text or "in_features per partition" in text:
        fixes.append(
            "re-quantize with a group size that divides each rank's input (a smaller "
            "group, e.g. 64 or 32, llm-compressor's QuantizationScheme group_size)"
        )
    if "act-order: " in text:
        fixes.append(
            're-quantize without act-order (llm-compressor actorder=None or "weight") so '
            "Marlin pads each rank's share to its tile"
        )
    if "MarlinLinearKernel: group size" in text:
        fixes.append(
            "re-quantize with a group size Marlin runs (32, 64 or 128; llm-compressor W4A16 "
            "uses 128)"
        )
    if "size_n" in text:
        fixes.append("keep layers whose output size is not a multiple of 64 in BF16 (ignore)")
    if "No module named 'triton_kernels." in text:
        # utils/import_utils.py:import_triton_kernels takes a triton_kernels on the path
        # before the copy vLLM vendors: without the separate one, vLLM imports its own
        fixes.append(
            "remove the separately installed triton_kernels so vLLM imports the copy it "
            "vendors (a venv: pip uninstall triton-kernels; Pixi: drop triton-kernels from "
            "[pypi-dependencies] in pixi.toml), or install a triton_kernels whose API this "
            "vLLM imports; or start vLLM with --moe-backend marlin"
        )
    if "BLOCK_N % (2 * n_warps" in text:
        # oracle/mxfp4.py:select_mxfp4_moe_backend honours KernelConfig.moe_backend
        # (--moe-backend, vllm/config/kernel.py) before its priority list; MARLIN runs MXFP4
        # experts from sm 7.5 and pads hidden to 256, intermediate to 128
        fixes.append(
            "start vLLM with --moe-backend marlin (LLM(..., moe_backend='marlin'); "
            "Marlin pads the experts to sizes it runs), or serve a checkpoint whose hidden "
            "size and 2 x intermediate size per rank exceed 128 (a smaller "
            "--tensor-parallel-size when only the per-rank share is too small)"
        )
    if "vLLM raises for --moe-backend" in text or "moe_backend whose kernel" in text:
        fixes.append(
            "drop --moe-backend (vLLM then picks the experts' kernel itself and this check "
            "judges it), or name one that serves MXFP4 experts there: --moe-backend marlin "
            "runs from sm 7.5"
        )
    return "; ".join(fixes) or "re-quantize to a format with a kernel on the target GPU"


def _forced_moe(
    kernels: Sequence[Kernel], release: str | None, arg: str, unknown: set[str]
) -> tuple[Kernel, ...]:
    """The kernels ``--moe-backend=arg`` leaves vLLM for MXFP4 experts (none: it raises);
    a value vLLM accepts whose kernel is not modelled goes to ``unknown``."""
    accepted = MXFP4_MOE_ARGS.get(release or "0.26.0", MXFP4_MOE_ARGS["0.26.0"])
    if arg not in accepted:
        return ()
    if not accepted[arg]:
        unknown.add(arg)
        return ()
    return tuple(k for k in kernels if k.name == accepted[arg])
