"""Run by the target env's Python: build a tiny CUDA extension with torch's cpp_extension.

Usage: python build_ext.py BUILD_DIR ARCH (ARCH as in TORCH_CUDA_ARCH_LIST, e.g. 9.0).
Prints one JSON line: the built .so, or the exception and the build log's tail; on a GPU
whose capability equals ARCH, the result of running the op. Exists because an env that
"has CUDA" often cannot build an extension at all (no ninja, CUDA_HOME pointing at a
directory without nvcc, a toolkit too old for the arch) and this is found only mid-build.
"""

import contextlib
import io
import json
import os
import sys
import time

build_dir, arch = sys.argv[1], sys.argv[2]
os.environ["TORCH_CUDA_ARCH_LIST"] = arch
out = {"torch": None, "so": None, "arch": arch, "gpu_cc": None, "ran": None}
start = time.monotonic()
log = io.StringIO()
try:
    import torch

    out["torch"] = torch.__version__
    from torch.utils import cpp_extension

    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(0)
        out["gpu_cc"] = f"{major}.{minor}"
    cuda_src = """
__global__ void add_one_kernel(float *x, int64_t n) {
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i < n) x[i] += 1.0f;
}
torch::Tensor add_one(torch::Tensor x) {
  auto y = x.clone();
  int64_t n = y.numel();
  add_one_kernel<<<(n + 255) / 256, 256>>>(y.data_ptr<float>(), n);
  return y;
}
"""
    os.makedirs(build_dir, exist_ok=True)
    name = "vllm_env_probe_" + arch.replace(".", "").replace("+", "_")
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        module = cpp_extension.load_inline(
            name=name,
            cpp_sources="torch::Tensor add_one(torch::Tensor x);",
            cuda_sources=cuda_src,
            functions=["add_one"],
            build_directory=build_dir,
            with_cuda=True,
            verbose=False,  # a failed build's output comes back in the exception
        )
    out["so"] = module.__file__
    if out["gpu_cc"] and out["gpu_cc"] == arch.split("+")[0].rstrip("af"):
        try:
            x = torch.arange(1000, dtype=torch.float32, device="cuda")
            y = module.add_one(x)
            torch.cuda.synchronize()
            out["ran"] = True
            out["correct"] = bool(torch.equal(y.cpu(), (x + 1).cpu()))
        except Exception as exc:
            out["ran"] = False
            out["run_error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
except Exception as exc:  # reported, never a traceback: the judgement names the fix
    out["exception"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    log.write(str(exc))
out["log"] = log.getvalue()[-3000:]
out["seconds"] = round(time.monotonic() - start, 1)
print(json.dumps(out), flush=True)
