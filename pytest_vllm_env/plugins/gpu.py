"""Fixtures and settings for the gpu area (placeholder until that area lands)."""
