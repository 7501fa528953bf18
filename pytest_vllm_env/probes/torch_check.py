"""Run by the target env's Python: can its torch see and use the GPU?

Prints one JSON line. Exists because a CPU-only or wrong-CUDA torch wheel installs cleanly
and only fails when vLLM first touches the device.
"""

import json

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
except Exception as exc:  # report, never traceback: the judgement turns it into a fix
    out["exception"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
