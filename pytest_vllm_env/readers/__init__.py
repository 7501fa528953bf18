"""Readers of files: ELF, fatbin, safetensors headers, Pixi manifests and locks, project files,
vLLM's own source. They read, never judge.
"""
