"""The version of symnet: a foundation module that imports nothing."""

__version__ = "0.1.0"
