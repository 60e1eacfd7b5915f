"""psx: an experiment runner for studying parameter sharing in deep learning."""

__version__ = "0.1.0"
