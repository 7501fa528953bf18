"""Fixtures and settings for the cuda area (placeholder until that area lands)."""
