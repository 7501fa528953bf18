"""The bundled conformance suite: ``pytest --vllm-conformance -m toolchain`` or
``pytest --pyargs pytest_vllm_env.suite``. It lives in ``conformance/`` of the repository and
installs as ``pytest_vllm_env.suite``: a top-level ``conformance`` would be shadowed by any
user package of that name. Each test is a few lines over a check of the library."""
