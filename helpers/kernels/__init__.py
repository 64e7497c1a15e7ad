"""Compute kernels the labs and engines use.

Importing this package compiles nothing and does not import Triton; each
submodule builds its kernels on first use (C builds are cached on disk, see
:mod:`helpers.kernels.cjit`).

- :mod:`helpers.kernels.cjit`    compile C source (files or notebook strings), ``ptr`` for arrays
- :mod:`helpers.kernels.int8`    int8 GEMM, conv2d (im2col), depthwise conv (also in place)
- :mod:`helpers.kernels.int4`    int4 weight-only GEMV, TinyChatEngine format, five variants
- :mod:`helpers.kernels.sparse`  CSR sparse matrix-vector product
- :mod:`helpers.kernels.triton`  Triton kernels (W4A16 AWQ GEMM, NF4, fake quant); on CPU they
  need ``TRITON_INTERPRET=1`` set before Triton is imported
"""
import importlib

__all__ = ["cjit", "int8", "int4", "sparse", "triton"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
