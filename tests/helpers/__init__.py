"""Helpers shared by several test modules (imported, not fixtures: fixtures live in conftest.py)."""
