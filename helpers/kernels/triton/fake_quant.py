"""Fused quantize-dequantize (the forward pass of fake quantization) in one kernel.

    q   = clamp(round(x / scale) + zero_point, qmin, qmax)     round half to even
    out = (q - zero_point) * scale

with [qmin, qmax] = [0, 2**bits - 1] (unsigned) or [-2**(bits-1), 2**(bits-1) - 1]
(signed). ``scale``/``zero_point`` are scalars (per tensor) or 1-D tensors with one
entry per slice along ``axis`` (per channel). As in
``torch.fake_quantize_per_tensor_affine``, ``x / scale`` is computed as
``x * (1 / scale)`` in fp32. The kernel also returns where
``round(x / scale) + zero_point`` lay inside [qmin, qmax] (not clamped).

Forward only, on purpose: the straight-through estimator that makes fake
quantization trainable is what lab 03's Task 1.1 asks students to write, so
no ``helpers`` function answers it (the lab contract). The result carries no
gradient.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import check_launch, require

__all__ = ["quant_range", "fake_quantize_spec", "quantize_dequantize"]


def quant_range(bits: int, signed: bool) -> tuple[int, int]:
    if not 2 <= bits <= 16:
        raise ValueError(f"bits={bits}: fake quantization supports 2..16 bits.")
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def _per_slice(x: torch.Tensor, scale, zero_point, axis: int | None):
    """scale (fp32) and zero_point (int32) as 1-D tensors of length C and the
    (C, inner) geometry: element i belongs to channel (i // inner) % C."""
    scale = torch.as_tensor(scale, dtype=torch.float32, device=x.device).reshape(-1)
    if not bool(torch.all(scale > 0)):
        raise ValueError("`scale` must be positive (a zero scale would divide by zero).")
    zero_point = torch.as_tensor(zero_point, device=x.device).reshape(-1)
    if zero_point.is_floating_point():
        if not torch.equal(zero_point, zero_point.round()):
            raise ValueError("`zero_point` must hold integers.")
    zero_point = zero_point.to(torch.int32)
    if axis is None:
        if scale.numel() != 1 or zero_point.numel() != 1:
            raise ValueError(f"per-tensor fake quantization takes one scale and zero point, got "
                             f"{scale.numel()} and {zero_point.numel()}; pass axis= for per-channel.")
        return scale, zero_point, 1, max(1, x.numel())
    if not -x.dim() <= axis < x.dim():
        raise ValueError(f"axis={axis} is out of range for a {x.dim()}-D tensor.")
    axis %= x.dim()
    channels = x.shape[axis]
    if scale.numel() != channels or zero_point.numel() != channels:
        raise ValueError(f"per-channel along axis {axis} needs {channels} scales and zero points "
                         f"(x.shape[{axis}]), got {scale.numel()} and {zero_point.numel()}.")
    inner = 1
    for d in x.shape[axis + 1:]:
        inner *= d
    return scale.contiguous(), zero_point.contiguous(), channels, inner


def fake_quantize_spec(x: torch.Tensor, scale, zero_point, bits: int = 8, axis: int | None = None,
                       signed: bool = False) -> torch.Tensor:
    """Torch reference (forward only)."""
    qmin, qmax = quant_range(bits, signed)
    s, z, channels, inner = _per_slice(x, scale, zero_point, axis)
    shape = [1] * x.dim()
    if axis is not None:
        shape[axis] = channels
    s, z = s.reshape(shape), z.reshape(shape).float()
    q = torch.clamp(torch.round(x.float() * (1.0 / s)) + z, qmin, qmax)
    return ((q - z) * s).to(x.dtype)


@triton.jit
def _fake_quant_kernel(x_ptr, out_ptr, mask_ptr, scale_ptr, zp_ptr, numel, channels, inner, qmin, qmax,
                       BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < numel
    ch = (offs // inner) % channels
    x = tl.load(x_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    scale = tl.load(scale_ptr + ch, mask=valid, other=1.0)
    zp = tl.load(zp_ptr + ch, mask=valid, other=0).to(tl.float32)
    # 1 / scale rounded as IEEE division (torch's reference does the same); a
    # plain `/` may compile to an approximate division on GPUs.
    v = x * tl.math.div_rn(tl.full((BLOCK,), 1.0, tl.float32), scale)
    # Clamp first (one step beyond the range keeps the "was clamped" answer),
    # then round half to even: adding and subtracting 1.5 * 2**23 leaves the
    # integer part in fp32 (exact for |v| < 2**22; libdevice.rint has no
    # interpreter implementation).
    v = tl.minimum(tl.maximum(v, qmin - zp - 1.0), qmax - zp + 1.0)
    r = (v + 12582912.0) - 12582912.0
    q = r + zp
    in_range = (q >= qmin) & (q <= qmax)
    q = tl.minimum(tl.maximum(q, qmin * 1.0), qmax * 1.0)
    tl.store(out_ptr + offs, ((q - zp) * scale).to(out_ptr.dtype.element_ty), mask=valid)
    tl.store(mask_ptr + offs, in_range.to(tl.int8), mask=valid)


def _launch(x: torch.Tensor, scale, zero_point, bits: int, axis: int | None, signed: bool):
    require(x, "x", (torch.float32, torch.float16, torch.bfloat16))
    qmin, qmax = quant_range(bits, signed)
    s, z, channels, inner = _per_slice(x, scale, zero_point, axis)
    out = torch.empty_like(x)
    keep = torch.empty(x.shape, dtype=torch.int8, device=x.device)
    check_launch(_fake_quant_kernel, x=x, scale=s, zero_point=z)
    block = 1024
    _fake_quant_kernel[(triton.cdiv(x.numel(), block),)](x, out, keep, s, z, x.numel(), channels, inner,
                                                         qmin, qmax, BLOCK=block)
    return out, keep


@torch.no_grad()
def quantize_dequantize(x: torch.Tensor, scale, zero_point, bits: int = 8, axis: int | None = None,
                        signed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, in_range)``: ``x`` quantized and dequantized in one kernel, and a
    bool tensor that is True where the code was not clamped. No gradient."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`x` is a {type(x).__name__}, expected a torch tensor.")
    out, keep = _launch(x.detach(), scale, zero_point, bits, axis, signed)
    return out, keep.bool()
