"""The pytest side: the session's plugins (session, verdict, report, terminal), settings,
rootdir, and one plugin per area, registered by ``pytest_vllm_env.plugin`` from its
``pytest_addoption``."""
