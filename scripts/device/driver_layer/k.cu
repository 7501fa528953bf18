// The kernel of scripts/device/driver_layer.sh: PTX-only loads (issue 23, driver.ptx-jit).
extern "C" __global__ void k(int *x) { *x = 42; }
