"""Shared code for the EfficientML labs: data, models, training loops,
profiling, plots, the checking harness and (lazily) compute kernels.

Importing ``helpers`` is cheap on purpose: it imports no torch, Triton or
CUDA and compiles nothing. Import the submodule you need::

    from helpers import data, models, train, profile, plots, checks
"""
__all__ = ["checks", "data", "models", "train", "profile", "plots", "kernels"]
__version__ = "0.1.0"
