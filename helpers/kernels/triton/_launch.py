"""Checks before a Triton launch, with messages that say what to change."""
from __future__ import annotations

import torch
from triton.runtime.interpreter import InterpretedFunction

SUPPORTED_INTERPRETER_DTYPES = (torch.float32, torch.float16, torch.int8, torch.uint8, torch.int32)


def check_launch(kernel, **tensors: torch.Tensor) -> None:
    """Same device for all tensors; CPU only under the interpreter; no bf16 there."""
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"tensors are on different devices ({listing}); move them all to one device.")
    device = next(iter(devices.values()))
    interpreted = isinstance(kernel, InterpretedFunction)
    if device.type == "cpu" and not interpreted:
        raise RuntimeError(
            "CPU tensors need the Triton interpreter, which was off when the kernels were defined. "
            "Set os.environ['TRITON_INTERPRET'] = '1' before importing triton or helpers.kernels.triton "
            "(in a notebook: add it to the first cell and restart the kernel), or move the tensors to a GPU.")
    if interpreted:
        for name, t in tensors.items():
            if t.dtype not in SUPPORTED_INTERPRETER_DTYPES:
                raise TypeError(
                    f"`{name}` has dtype {t.dtype}; the Triton interpreter supports fp32/fp16/int8 only "
                    f"(it computes bf16 silently wrong): use float16 or float32 (e.g. `{name}.half()`) on CPU, or run on a GPU.")


def require(t, name: str, dtype: torch.dtype | tuple[torch.dtype, ...], shape: tuple | None = None) -> None:
    """dtype / shape / contiguity check of one argument (None in shape = any size)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"`{name}` is a {type(t).__name__}, expected a torch tensor.")
    dtypes = dtype if isinstance(dtype, tuple) else (dtype,)
    if t.dtype not in dtypes:
        want = " or ".join(str(d) for d in dtypes)
        raise TypeError(f"`{name}` has dtype {t.dtype}, expected {want}.")
    if shape is not None:
        ok = t.dim() == len(shape) and all(w is None or g == w for g, w in zip(t.shape, shape))
        if not ok:
            want = "(" + ", ".join("*" if w is None else str(w) for w in shape) + ("," if len(shape) == 1 else "") + ")"
            raise ValueError(f"`{name}` has shape {tuple(t.shape)}, expected {want}.")
    if not t.is_contiguous():
        raise ValueError(f"`{name}` is not contiguous (a transpose or slice?): pass `{name}.contiguous()`.")


def dot_precision(x: torch.Tensor) -> str:
    """tl.dot input precision: exact fp32 products for fp32 inputs (the GPU
    default, tf32, would drop mantissa bits); fp16/bf16 use the default."""
    return "ieee" if x.dtype == torch.float32 else "tf32"
