"""Converters from the offline weight sources shipped in PyPI wheels to PyTorch state_dicts."""
