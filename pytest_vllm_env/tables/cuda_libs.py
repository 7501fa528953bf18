"""The CUDA toolkit's parts: its conda-forge packages, the libraries CMake's FindCUDAToolkit
turns into ``CUDA::`` targets, and the package that ships each library.

Read by ``cuda.*`` (what the env's toolkit holds, what CMake will find), ``cmake.torch-config``
(the ``CUDA::`` targets torch links), ``abi.needed`` (the package that gives a missing
``libX.so.N``) and the lock checks (the cuda-* versions a lock pins).
"""

from __future__ import annotations

# conda-forge packages whose versions must agree with nvcc (one CUDA major.minor).
CUDA_PACKAGES = (
    "cuda-version",
    "cuda-nvcc",
    "cuda-nvcc-tools",
    "cuda-toolkit",
    "cuda-cudart",
    "cuda-cudart-dev",
    "cuda-driver-dev",
    "cuda-nvrtc",
    "cuda-nvrtc-dev",
    "cuda-nvtx",
    "cuda-nvtx-dev",
    "cuda-cccl",
    "cuda-crt-dev",
    "cudatoolkit",
    "cudatoolkit-dev",
)
HEADERS = ("cuda.h", "cuda_runtime.h", "nvrtc.h", "nvToolsExt.h", "nvtx3/nvToolsExt.h")
# What CMake's FindCUDAToolkit turns into CUDA::<target>, and the conda-forge package that
# ships the unversioned link (find_library looks only for libX.so) or the stub.
COMPONENTS: dict[str, tuple[str, str]] = {
    "cudart": ("libcudart.so", "cuda-cudart-dev"),
    "cuda_driver": ("libcuda.so", "cuda-driver-dev"),
    "nvrtc": ("libnvrtc.so", "cuda-nvrtc-dev"),
    "nvToolsExt": ("libnvToolsExt.so", "cuda-nvtx-dev"),
}
# CUDA:: target -> library names FindCUDAToolkit looks for (CMake's module and torch's copy).
TARGET_LIBS: dict[str, tuple[str, ...]] = {
    "cudart": ("cudart",),
    "cuda_driver": ("cuda",),
    "nvrtc": ("nvrtc",),
    "nvToolsExt": ("nvToolsExt", "nvToolsExt64"),
    "cublas": ("cublas",),
    "cublasLt": ("cublasLt",),
    "cufft": ("cufft",),
    "curand": ("curand",),
    "cusparse": ("cusparse",),
    "cusolver": ("cusolver",),
    "cuFile": ("cufile",),
    "nvJitLink": ("nvJitLink",),
    "cupti": ("cupti",),
}
# The conda-forge package that ships each library's unversioned link.
TARGET_PACKAGES: dict[str, str] = {
    "cudart": "cuda-cudart-dev",
    "cuda_driver": "cuda-driver-dev",
    "nvrtc": "cuda-nvrtc-dev",
    "nvToolsExt": "cuda-nvtx-dev",
    "cublas": "libcublas-dev",
    "cublasLt": "libcublas-dev",
    "cufft": "libcufft-dev",
    "curand": "libcurand-dev",
    "cusparse": "libcusparse-dev",
    "cusolver": "libcusolver-dev",
    "cuFile": "libcufile-dev",
    "nvJitLink": "libnvjitlink-dev",
    "cupti": "cuda-cupti-dev",
}
# soname stem -> (conda-forge package, PyPI package) of the runtime library. On PyPI the
# CUDA <= 12 libraries are `<name>-cu12`, the CUDA 13 ones plain `<name>` versioned by the
# library (the `-cu13` names are stubs: "DEPRECATED: Use nvidia-cuda-runtime instead").
RUNTIME_PACKAGES: dict[str, tuple[str, str]] = {
    "cudart": ("cuda-cudart", "nvidia-cuda-runtime"),
    "cublas": ("libcublas", "nvidia-cublas"),
    "cublasLt": ("libcublas", "nvidia-cublas"),
    "cufft": ("libcufft", "nvidia-cufft"),
    "curand": ("libcurand", "nvidia-curand"),
    "cusparse": ("libcusparse", "nvidia-cusparse"),
    "cusolver": ("libcusolver", "nvidia-cusolver"),
    "nvrtc": ("cuda-nvrtc", "nvidia-cuda-nvrtc"),
    "nvJitLink": ("libnvjitlink", "nvidia-nvjitlink"),
}
# soname stem -> the PyPI package (without its -cu12/-cu13 suffix) torch's wheels require for
# it: torch 2.x METADATA `Requires-Dist: nvidia-cudnn-cu12==9.10.2.21; platform_system ==
# "Linux"`... Matched against torch's own requirements (the names and versions come from
# there), so no CUDA-13 naming rule is guessed here.
TORCH_WHEEL_PACKAGES: dict[str, str] = {
    **{stem: pypi for stem, (_, pypi) in RUNTIME_PACKAGES.items()},
    "cudnn": "nvidia-cudnn",
    "nccl": "nvidia-nccl",
    "cupti": "nvidia-cuda-cupti",
    "cusparseLt": "nvidia-cusparselt",
    "nvToolsExt": "nvidia-nvtx",
    "cufile": "nvidia-cufile",
    "nvshmem_host": "nvidia-nvshmem",
}
# Libraries whose soname major is the CUDA major; the others are not (CUDA 12 ships
# libcufft.so.11 and libcusolver.so.11, CUDA 12 and 13 both libcurand.so.10).
CUDA_MAJOR_SONAME = {"cudart", "cublas", "cublasLt", "nvrtc", "nvJitLink"}
