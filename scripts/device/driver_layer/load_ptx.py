"""Load PTX texts and fatbins with the real driver (ctypes on libcuda.so.1) and print each result.

Run by the device's Python from scripts/device/driver_layer.sh; imports nothing of the package.

    python load_ptx.py                 # the driver: libcuda taken, cuInit, cuDriverGetVersion
    python load_ptx.py A.ptx B.fatbin  # and cuModuleLoadData + cuModuleGetFunction("k") per file

A PTX text is JIT-compiled by cuModuleLoadData (it needs the NUL the driver reads to); a fatbin is
loaded as a module and, under CUDA_MODULE_LOADING=LAZY, its function on cuModuleGetFunction; so
both codes are printed. 0 = CUDA_SUCCESS, 222 = CUDA_ERROR_UNSUPPORTED_PTX_VERSION, 803 =
CUDA_ERROR_SYSTEM_DRIVER_MISMATCH (cuda.h).
"""

import ctypes
import os
import sys


def name_of(lib, code):
    text = ctypes.c_char_p()
    if lib.cuGetErrorName(code, ctypes.byref(text)) == 0 and text.value:
        return text.value.decode()
    return "?"


def loaded_libcuda():
    with open("/proc/self/maps") as fh:
        for line in fh:
            if "libcuda.so" in line:
                path = line.split()[-1]
                return path, os.path.realpath(path)
    return None, None


def main(paths):
    lib = ctypes.CDLL("libcuda.so.1")
    path, real = loaded_libcuda()
    print(f"libcuda taken: {path} -> {real}")
    print(f"LD_LIBRARY_PATH={os.environ.get('LD_LIBRARY_PATH', '')}")
    code = lib.cuInit(0)
    print(f"cuInit: {code} ({name_of(lib, code)})")
    version = ctypes.c_int(0)
    lib.cuDriverGetVersion(ctypes.byref(version))
    print(f"cuDriverGetVersion: {version.value}")
    if code != 0 or not paths:
        return
    dev, ctx = ctypes.c_int(0), ctypes.c_void_p()
    lib.cuDeviceGet(ctypes.byref(dev), 0)
    code = lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev)
    code = code or lib.cuCtxSetCurrent(ctx)
    if code:
        print(f"context: {code} ({name_of(lib, code)})")
        return
    mode = os.environ.get("CUDA_MODULE_LOADING", "(default)")
    for p in paths:
        data = open(p, "rb").read()
        if p.endswith(".ptx"):
            data += b"\0"
        buf = ctypes.create_string_buffer(data, len(data))
        module, func = ctypes.c_void_p(), ctypes.c_void_p()
        load = lib.cuModuleLoadData(ctypes.byref(module), buf)
        got = lib.cuModuleGetFunction(ctypes.byref(func), module, b"k") if load == 0 else None
        tail = f" getfunction={got} ({name_of(lib, got)})" if got is not None else ""
        print(f"{os.path.basename(p)} [{mode}]: load={load} ({name_of(lib, load)}){tail}")
        if load == 0:
            lib.cuModuleUnload(module)


if __name__ == "__main__":
    main(sys.argv[1:])
