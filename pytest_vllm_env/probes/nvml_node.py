"""Run by the target env's Python: what NVML (the driver's own library) says about this node.

Prints one JSON line: the driver version, the CUDA version the driver supports, and every GPU
NVML lists (index, name, compute capability, UUID), with the reason for each value NVML did
not give. Uses only ``ctypes`` (no pynvml, no torch): it must work in any env, and a driver
call that hangs is killed by the caller's timeout, not inside pytest. NVML lists every GPU of
the machine whatever ``CUDA_VISIBLE_DEVICES`` says; the caller filters.
"""

import ctypes
import json

NVML_SUCCESS = 0
# nvml.h return codes we can name in a reason
ERRORS = {
    1: "uninitialized",
    2: "invalid argument",
    3: "not supported",
    4: "no permission",
    9: "driver not loaded",
    12: "lib rm version mismatch",
    13: "function not found",
    15: "GPU is lost",
    999: "unknown error",
}
out = {"nvml": False, "gpus": [], "absent": {}}


def _why(code):
    return f"NVML returned {code} ({ERRORS.get(code, 'error')})"


def _string(lib, name, *args, size=96):
    """Call an NVML function that fills a char buffer; return (text, None) or (None, why)."""
    try:
        fn = getattr(lib, name)
    except AttributeError:
        return None, f"{name} is not in this libnvidia-ml (an older driver)"
    buf = ctypes.create_string_buffer(size)
    code = fn(*args, buf, ctypes.c_uint(size))
    if code != NVML_SUCCESS:
        return None, f"{name}: {_why(code)}"
    return buf.value.decode("utf-8", "replace"), None


try:
    lib = ctypes.CDLL("libnvidia-ml.so.1")
except OSError as exc:
    out["problem"] = f"libnvidia-ml.so.1 could not be loaded: {exc}"
else:
    init = getattr(lib, "nvmlInit_v2", None) or getattr(lib, "nvmlInit", None)
    code = init() if init else 13
    if code != NVML_SUCCESS:
        out["problem"] = f"nvmlInit: {_why(code)}"
    else:
        out["nvml"] = True
        out["driver_version"], why = _string(lib, "nvmlSystemGetDriverVersion", size=80)
        if why:
            out["absent"]["driver_version"] = why
        cuda = ctypes.c_int(0)
        fn = getattr(lib, "nvmlSystemGetCudaDriverVersion_v2", None) or getattr(
            lib, "nvmlSystemGetCudaDriverVersion", None
        )
        code = fn(ctypes.byref(cuda)) if fn else 13
        if code == NVML_SUCCESS and cuda.value:
            out["cuda_driver_version"] = f"{cuda.value // 1000}.{cuda.value % 1000 // 10}"
        else:
            out["absent"]["cuda_driver_version"] = f"nvmlSystemGetCudaDriverVersion: {_why(code)}"
        count = ctypes.c_uint(0)
        fn = getattr(lib, "nvmlDeviceGetCount_v2", None) or lib.nvmlDeviceGetCount
        code = fn(ctypes.byref(count))
        if code != NVML_SUCCESS:
            out["absent"]["gpus"] = f"nvmlDeviceGetCount: {_why(code)}"
        get_handle = (
            getattr(lib, "nvmlDeviceGetHandleByIndex_v2", None) or lib.nvmlDeviceGetHandleByIndex
        )
        for i in range(count.value if code == NVML_SUCCESS else 0):
            gpu = {"index": i}
            handle = ctypes.c_void_p()
            code = get_handle(ctypes.c_uint(i), ctypes.byref(handle))
            if code != NVML_SUCCESS:
                gpu["absent"] = {"name": f"nvmlDeviceGetHandleByIndex({i}): {_why(code)}"}
                out["gpus"].append(gpu)
                continue
            absent = {}
            for key, fn_name in (("name", "nvmlDeviceGetName"), ("uuid", "nvmlDeviceGetUUID")):
                gpu[key], why = _string(lib, fn_name, handle)
                if why:
                    absent[key] = why
            major, minor = ctypes.c_int(0), ctypes.c_int(0)
            fn = getattr(lib, "nvmlDeviceGetCudaComputeCapability", None)
            code = fn(handle, ctypes.byref(major), ctypes.byref(minor)) if fn else 13
            if code == NVML_SUCCESS:
                gpu["compute_capability"] = f"{major.value}.{minor.value}"
            else:
                absent["compute_capability"] = f"nvmlDeviceGetCudaComputeCapability: {_why(code)}"
            if absent:
                gpu["absent"] = absent
            out["gpus"].append(gpu)
        shutdown = getattr(lib, "nvmlShutdown", None)
        if shutdown:
            shutdown()
print(json.dumps(out), flush=True)
