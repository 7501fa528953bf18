"""Area plugins: fixtures and settings for one part of the suite each, registered by
``pytest_vllm_env.plugin`` through ``pytest_plugins``."""
