"""Triton kernels, each with a pure-torch reference ("spec") in its module.

- :mod:`.w4a16`       W4A16 GEMM/GEMV, AWQ packing, group-wise scales and zeros
- :mod:`.nf4`         NF4 blockwise dequantization (optionally double-quantized) and NF4 matmul
- :mod:`.fake_quant`  fused fake quantization (per tensor / per channel) for QAT

On a GPU they compile natively. On CPU tensors they run under the Triton
interpreter, which Triton picks when its kernels are defined, so set the
variable before Triton (or any module here) is first imported, e.g. at the top
of the notebook::

    import os
    os.environ.setdefault("TRITON_INTERPRET", "1")   # CPU only
    from helpers.kernels.triton import w4a16

The interpreter supports fp32/fp16/int8 data; bf16 is rejected (it computes
bf16 silently wrong). Importing this package does not import Triton.
"""
import importlib
import importlib.util
import os

__all__ = ["available", "interpreter_enabled", "w4a16", "nf4", "fake_quant"]

_SUBMODULES = ("w4a16", "nf4", "fake_quant")


def interpreter_enabled() -> bool:
    """True when TRITON_INTERPRET asks for the interpreter (read by Triton at kernel definition)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")


def available() -> bool:
    """Can the Triton kernels run here: Triton installed and a GPU or the interpreter."""
    if importlib.util.find_spec("triton") is None:
        return False
    if interpreter_enabled():
        return True
    import torch
    return torch.cuda.is_available()


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
