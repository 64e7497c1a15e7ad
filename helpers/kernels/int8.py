"""int8 GEMM / conv2d / depthwise conv2d with int32 accumulation (C kernels)
and their numpy references.

Arithmetic (TFLite / TinyEngine)::

    acc = bias[oc] + sum (x - x_zero_point) * w        int32, weights symmetric
    y   = clamp(requant(acc) + y_zero_point, act_min, act_max)   int8
    requant(acc) = (acc * multiplier + 2**(r-1)) >> r,   r = 31 - shift

so ``requant`` multiplies by the real scale ``multiplier * 2**(shift - 31)``
(``s_x * s_w / s_y`` in a quantized layer), rounding half up. Get
``multiplier, shift`` from a real scale with :func:`quantize_multiplier`;
either may be a scalar or one value per output channel.

Layouts are channels-last like TFLite: x [N, H, W, C], conv weight
[OC, KH, KW, C], depthwise weight [KH, KW, C], GEMM ``a`` [M, K] times weight
``b`` [N, K] (nn.Linear layout) -> [M, N]. Inputs may be numpy arrays or CPU
torch tensors (int8, C-contiguous); the output has the type of ``x``/``a``.
"""
from __future__ import annotations

import ctypes
import functools
from typing import Any

import numpy as np

from .cjit import compile_file, ptr

__all__ = [
    "quantize_multiplier",
    "requantize_spec",
    "gemm_int8",
    "gemm_int8_spec",
    "conv2d_int8",
    "conv2d_int8_spec",
    "depthwise_conv2d_int8",
    "depthwise_conv2d_int8_spec",
    "depthwise_conv2d_int8_inplace",
]


def quantize_multiplier(real_scale: Any) -> tuple[np.ndarray, np.ndarray]:
    """Real scale(s) in (0, 2**30) -> (multiplier int32 in [2**30, 2**31), shift int32)
    with ``real ~= multiplier * 2**(shift - 31)`` (TFLite's QuantizeMultiplier)."""
    real = np.atleast_1d(np.asarray(real_scale, dtype=np.float64))
    if np.any(~np.isfinite(real)) or np.any(real <= 0):
        raise ValueError(f"requantization scales must be positive and finite, got {real_scale!r}.")
    mant, exp = np.frexp(real)                       # real = mant * 2**exp, mant in [0.5, 1)
    mult = np.round(mant * 2.0**31).astype(np.int64)
    carry = mult == 2**31                            # mantissa rounded up to 1.0
    mult[carry] //= 2
    exp[carry] += 1
    if np.any(exp < -31) or np.any(exp > 30):
        raise ValueError(f"requantization scale out of range (need about 2**-31 .. 2**30): {real_scale!r}.")
    return mult.astype(np.int32), exp.astype(np.int32)


def requantize_spec(acc: np.ndarray, multiplier: Any, shift: Any, out_zero_point: int,
                    act_min: int = -128, act_max: int = 127) -> np.ndarray:
    """Reference requantization of int32 accumulators, broadcasting per-channel
    parameters along the last axis."""
    acc = np.asarray(acc, dtype=np.int64)
    r = 31 - np.asarray(shift, dtype=np.int64)
    v = (acc * np.asarray(multiplier, dtype=np.int64) + (np.int64(1) << (r - 1))) >> r
    return np.clip(v + out_zero_point, act_min, act_max).astype(np.int8)


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    lib = compile_file("int8.c")
    P, I = ctypes.c_void_p, ctypes.c_int
    lib.gemm_int8.argtypes = [P] * 6 + [I] * 7
    lib.gemm_int8.restype = None
    lib.conv2d_int8.argtypes = [P] * 6 + [I] * 17
    lib.conv2d_int8.restype = None
    lib.depthwise_conv2d_int8.argtypes = [P] * 6 + [I] * 16
    lib.depthwise_conv2d_int8.restype = None
    lib.depthwise_conv2d_int8_inplace.argtypes = [P] * 5 + [I] * 15
    lib.depthwise_conv2d_int8_inplace.restype = ctypes.c_int
    return lib


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _shape(x: Any, name: str, ndim: int, what: str) -> tuple[int, ...]:
    if not (isinstance(x, np.ndarray) or _is_torch(x)):
        raise TypeError(f"`{name}` is a {type(x).__name__}, expected a numpy array or torch tensor {what}.")
    if x.ndim != ndim:
        raise ValueError(f"`{name}` has shape {tuple(x.shape)}, expected {ndim} dims {what}.")
    return tuple(int(d) for d in x.shape)


def _empty_like_kind(x: Any, shape: tuple[int, ...]):
    if _is_torch(x):
        import torch
        return torch.empty(shape, dtype=torch.int8)
    return np.empty(shape, dtype=np.int8)


def _channel_params(channels: int, bias, multiplier, shift, act_min: int, act_max: int):
    """Per-channel int32 arrays (kept alive by the caller) and their pointers."""
    def per_channel(v, name):
        a = np.asarray(v.numpy() if _is_torch(v) else v)
        if a.ndim == 0 or a.size == 1:
            a = np.full(channels, a.reshape(-1)[0])
        if a.shape != (channels,):
            raise ValueError(f"`{name}` has shape {a.shape}, expected a scalar or ({channels},) (one per output channel).")
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"`{name}` has dtype {a.dtype}, expected integers (use quantize_multiplier(scale)).")
        return np.ascontiguousarray(a, dtype=np.int32)
    m, s = per_channel(multiplier, "multiplier"), per_channel(shift, "shift")
    if np.any(s < -31) or np.any(s > 30):
        raise ValueError("`shift` must lie in [-31, 30]; get it from quantize_multiplier(scale).")
    if not -128 <= act_min <= act_max <= 127:
        raise ValueError(f"act_min={act_min}, act_max={act_max}: need -128 <= act_min <= act_max <= 127.")
    b = None if bias is None else per_channel(bias, "bias")
    keep = (m, s, b)
    bias_ptr = None if b is None else ptr(b, "int32", name="bias")
    return keep, bias_ptr, ptr(m, "int32", name="multiplier"), ptr(s, "int32", name="shift")


def _out_size(size: int, k: int, stride: int, pad: int, name: str) -> int:
    out = (size + 2 * pad - k) // stride + 1
    if out <= 0:
        raise ValueError(f"{name}: kernel {k} with padding {pad} does not fit the input size {size}.")
    return out


def gemm_int8(a, b, bias=None, *, a_zero_point: int, out_zero_point: int, multiplier, shift,
              act_min: int = -128, act_max: int = 127):
    """int8 [M, K] x int8 [N, K]^T -> int8 [M, N] (bias int32 [N] optional)."""
    M, K = _shape(a, "a", 2, "[M, K]")
    N, Kb = _shape(b, "b", 2, "[N, K]")
    if Kb != K:
        raise ValueError(f"`b` has K={Kb} columns but `a` has K={K}; b is the weight in nn.Linear layout [N, K].")
    keep, bias_p, mult_p, shift_p = _channel_params(N, bias, multiplier, shift, act_min, act_max)
    out = _empty_like_kind(a, (M, N))
    _lib().gemm_int8(ptr(a, "int8", name="a"), ptr(b, "int8", name="b"), bias_p, mult_p, shift_p,
                     ptr(out, "int8", name="out", writable=True), M, N, K,
                     int(a_zero_point), int(out_zero_point), act_min, act_max)
    del keep
    return out


def _np(x) -> np.ndarray:
    return x.numpy() if _is_torch(x) else np.asarray(x)


def gemm_int8_spec(a, b, bias=None, *, a_zero_point, out_zero_point, multiplier, shift,
                   act_min=-128, act_max=127) -> np.ndarray:
    acc = (_np(a).astype(np.int64) - a_zero_point) @ _np(b).astype(np.int64).T
    if bias is not None:
        acc = acc + _np(bias).astype(np.int64)
    return requantize_spec(acc, _np(multiplier), _np(shift), out_zero_point, act_min, act_max)


def conv2d_int8(x, w, bias=None, *, stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                x_zero_point: int, out_zero_point: int, multiplier, shift,
                act_min: int = -128, act_max: int = 127):
    """int8 conv2d, NHWC: x [N, H, W, C], w [OC, KH, KW, C] -> [N, OH, OW, OC]."""
    N, H, W, C = _shape(x, "x", 4, "[N, H, W, C] (channels last)")
    OC, KH, KW, Cw = _shape(w, "w", 4, "[OC, KH, KW, C]")
    if Cw != C:
        raise ValueError(f"`w` has {Cw} input channels (last dim), `x` has C={C}.")
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    OH, OW = _out_size(H, KH, sh, ph, "height"), _out_size(W, KW, sw, pw, "width")
    keep, bias_p, mult_p, shift_p = _channel_params(OC, bias, multiplier, shift, act_min, act_max)
    out = _empty_like_kind(x, (N, OH, OW, OC))
    _lib().conv2d_int8(ptr(x, "int8", name="x"), ptr(w, "int8", name="w"), bias_p, mult_p, shift_p,
                       ptr(out, "int8", name="out", writable=True), N, H, W, C, OC, KH, KW, sh, sw, ph, pw,
                       OH, OW, int(x_zero_point), int(out_zero_point), act_min, act_max)
    del keep
    return out


def _conv_acc(x, w, bias, stride, padding, x_zero_point, groups):
    import torch
    xs = torch.from_numpy(_np(x).astype(np.float64) - x_zero_point).permute(0, 3, 1, 2)
    ws = torch.from_numpy(_np(w).astype(np.float64))
    # Integer products summed in fp64 are exact here (|acc| < 2**53).
    acc = torch.nn.functional.conv2d(xs, ws, stride=stride, padding=padding, groups=groups)
    acc = acc.permute(0, 2, 3, 1).numpy().astype(np.int64)
    return acc if bias is None else acc + _np(bias).astype(np.int64)


def conv2d_int8_spec(x, w, bias=None, *, stride=1, padding=0, x_zero_point, out_zero_point,
                     multiplier, shift, act_min=-128, act_max=127) -> np.ndarray:
    acc = _conv_acc(x, np.transpose(_np(w), (0, 3, 1, 2)), bias, stride, padding, x_zero_point, 1)
    return requantize_spec(acc, _np(multiplier), _np(shift), out_zero_point, act_min, act_max)


def depthwise_conv2d_int8(x, w, bias=None, *, stride: int | tuple[int, int] = 1,
                          padding: int | tuple[int, int] = 0, x_zero_point: int, out_zero_point: int,
                          multiplier, shift, act_min: int = -128, act_max: int = 127):
    """int8 depthwise conv2d, NHWC: x [N, H, W, C], w [KH, KW, C] -> [N, OH, OW, C]."""
    N, H, W, C = _shape(x, "x", 4, "[N, H, W, C] (channels last)")
    KH, KW, Cw = _shape(w, "w", 3, "[KH, KW, C]")
    if Cw != C:
        raise ValueError(f"`w` has {Cw} channels (last dim), `x` has C={C}.")
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    OH, OW = _out_size(H, KH, sh, ph, "height"), _out_size(W, KW, sw, pw, "width")
    keep, bias_p, mult_p, shift_p = _channel_params(C, bias, multiplier, shift, act_min, act_max)
    out = _empty_like_kind(x, (N, OH, OW, C))
    _lib().depthwise_conv2d_int8(ptr(x, "int8", name="x"), ptr(w, "int8", name="w"), bias_p, mult_p, shift_p,
                                 ptr(out, "int8", name="out", writable=True), N, H, W, C, KH, KW, sh, sw,
                                 ph, pw, OH, OW, int(x_zero_point), int(out_zero_point), act_min, act_max)
    del keep
    return out


def depthwise_conv2d_int8_spec(x, w, bias=None, *, stride=1, padding=0, x_zero_point, out_zero_point,
                               multiplier, shift, act_min=-128, act_max=127) -> np.ndarray:
    wt = np.transpose(_np(w), (2, 0, 1))[:, None]          # [C, 1, KH, KW]
    acc = _conv_acc(x, wt, bias, stride, padding, x_zero_point, groups=_np(x).shape[-1])
    return requantize_spec(acc, _np(multiplier), _np(shift), out_zero_point, act_min, act_max)


def depthwise_conv2d_int8_inplace(buf, w, bias=None, *, height: int, width: int,
                                  stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                                  x_zero_point: int, out_zero_point: int, multiplier, shift,
                                  act_min: int = -128, act_max: int = 127):
    """Depthwise conv of ONE image whose output overwrites its input.

    ``buf`` is a writable int8 buffer (1-D, or [H, W, C]) holding the input
    [height, width, C]; afterwards its first OH*OW*C entries hold the output.
    Returns that output as a [OH, OW, C] view of ``buf`` (no copy). Extra memory
    used: one channel, height*width bytes.
    """
    KH, KW, C = _shape(w, "w", 3, "[KH, KW, C]")
    size = int(np.prod(buf.shape)) if hasattr(buf, "shape") else -1
    if size != height * width * C:
        raise ValueError(f"`buf` holds {size} values, expected height*width*C = {height}*{width}*{C} = "
                         f"{height * width * C} (one image, channels last).")
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    OH, OW = _out_size(height, KH, sh, ph, "height"), _out_size(width, KW, sw, pw, "width")
    if OH * OW > height * width:
        raise ValueError(f"output {OH}x{OW} is larger than the input {height}x{width}: "
                         "an in-place depthwise conv needs OH*OW <= H*W (reduce the padding).")
    keep, bias_p, mult_p, shift_p = _channel_params(C, bias, multiplier, shift, act_min, act_max)
    rc = _lib().depthwise_conv2d_int8_inplace(
        ptr(buf, "int8", name="buf", writable=True), ptr(w, "int8", name="w"), bias_p, mult_p, shift_p,
        height, width, C, KH, KW, sh, sw, ph, pw, OH, OW, int(x_zero_point), int(out_zero_point),
        act_min, act_max)
    del keep
    if rc != 0:
        raise MemoryError(f"depthwise_conv2d_int8_inplace could not allocate its {height * width}-byte scratch buffer.")
    return buf.reshape(-1)[: OH * OW * C].reshape(OH, OW, C)
