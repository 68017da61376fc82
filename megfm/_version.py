"""Single source of the package version (read by pyproject and by checkpoints)."""

__version__ = "0.2.0.dev2"
