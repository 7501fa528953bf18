"""Fixtures and settings for the binaries area (placeholder until that area lands)."""
