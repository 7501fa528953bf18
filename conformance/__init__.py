"""The bundled conformance suite: ``pytest --vllm-conformance -m toolchain`` or
``pytest --pyargs conformance``. Each test is a few lines over a check of the library."""
