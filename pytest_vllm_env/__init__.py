"""pytest-vllm-env: judge Pixi/conda-forge environments for vLLM before you build or load.

The check library (``env``, ``cuda``, ``nvtx``, ``abi``, ``fatbin``, ``modelopt``...) is
usable without pytest: readers return facts, judgements return
:class:`~pytest_vllm_env.findings.Finding` values. ``pytest_vllm_env.plugin`` wires them
into pytest.
"""

__version__ = "0.1.0"
