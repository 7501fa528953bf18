"""Run by the target env's Python: can its torch see and use the GPU, and do FP8 GEMMs work?

Prints one JSON line. Exists because a CPU-only or wrong-CUDA torch wheel installs cleanly
and only fails when vLLM first touches the device; and because ModelOpt FP8 checkpoints
run through ``torch._scaled_mm``-style FP8 GEMMs that only exist on compute capability
>= 8.9 (Ada, Hopper, Blackwell).
"""

import json

FP8_MIN_CC = (8, 9)


def fp8_scaled_mm(torch, device: int) -> dict:
    """A 64x32 @ 32x48 float8_e4m3fn GEMM with tensor scales, against an fp32 reference of
    the same (already fp8-rounded) inputs: only the GEMM itself can differ."""
    torch.manual_seed(0)
    a = torch.randn(64, 32, device=f"cuda:{device}").to(torch.float8_e4m3fn)
    # _scaled_mm wants its second operand column-major: build it as the transpose.
    b = torch.randn(48, 32, device=f"cuda:{device}").to(torch.float8_e4m3fn).t()
    scale_a = torch.tensor(0.5, device=f"cuda:{device}")
    scale_b = torch.tensor(2.0, device=f"cuda:{device}")
    out = torch._scaled_mm(a, b, scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16)
    ref = (a.float() * scale_a) @ (b.float() * scale_b)
    err = float((out.float() - ref).abs().max().item())
    return {"max_abs_err": err, "ref_max_abs": float(ref.abs().max().item())}


out = {"torch": None, "cuda": None, "available": False, "devices": [], "matmul": None}
try:
    import torch

    out["torch"] = torch.__version__
    out["cuda"] = torch.version.cuda
    out["available"] = bool(torch.cuda.is_available())
    out["arch_list"] = torch.cuda.get_arch_list() if out["available"] else []
    for i in range(torch.cuda.device_count() if out["available"] else 0):
        major, minor = torch.cuda.get_device_capability(i)
        out["devices"].append({"name": torch.cuda.get_device_name(i), "cc": f"{major}.{minor}"})
    if out["available"]:
        a = torch.ones(64, 64, device="cuda", dtype=torch.float16)
        out["matmul"] = float((a @ a)[0, 0].item())
        cap = torch.cuda.get_device_capability(0)
        if tuple(cap) >= FP8_MIN_CC:
            try:
                out["fp8"] = fp8_scaled_mm(torch, 0)
            except Exception as exc:  # an FP8 failure must not hide the matmul result
                out["fp8"] = {"exception": f"{type(exc).__name__}: {str(exc)[:500]}"}
        else:
            out["fp8"] = {"unsupported": f"{cap[0]}.{cap[1]}"}
except Exception as exc:  # report, never traceback: the judgement turns it into a fix
    out["exception"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out), flush=True)
