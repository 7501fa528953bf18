"""Fixtures and settings for the modelopt area (placeholder until that area lands)."""
