"""The defaults of the number settings, in a module that imports nothing.

The area plugins name them in ``--help`` and check the settings at start; importing the
modules that use them (``cuda``, ``vllm_run``) at start-up would load the whole check
library into every pytest run of a repo that has the plugin installed. Those modules take
their values from here.
"""

CUDA_TOOL_TIMEOUT = 30.0  # seconds per nvcc/ptxas/cmake run
BUILD_TIMEOUT = 900.0  # the first cpp_extension build compiles torch's headers: minutes
PROBE_TIMEOUT = 600.0  # seconds one vLLM load and generation may take
LOGPROB_TOL = 0.5  # nats: FP8 vs BF16 first-token logprob
PERPLEXITY_EXPONENT = 0.95  # gpu.vllm-perplexity fails above vocab_size ** this
