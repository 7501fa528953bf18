"""The fleet view: many nodes' JSON reports merged into one nodes x checks matrix.

``reports`` reads and validates report files (schema 1 and 2), ``matrix`` merges them,
``page`` renders the merged view as one self-contained HTML file, ``ray_run`` runs the suite
on every node of a Ray cluster and gathers the reports. The console script
``pytest-vllm-env`` (``pytest_vllm_env.cli``) puts them together; docs/fleet.md is the manual.
"""
