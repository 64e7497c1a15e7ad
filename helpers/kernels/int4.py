"""int4 weight-only GEMV (TinyChatEngine format), C kernels + torch reference.

Packing layout (the C source ``c/int4_gemv.c`` says the same)::

    W [N, K] fp32, K padded with zeros to a multiple of 32, blocks of 32 along K.
    codes  uint8   [N, K/2]   block b of row n is codes[n, 16*b : 16*b + 16];
                              byte j holds column 32*b + j in its LOW nibble and
                              column 32*b + 16 + j in its HIGH nibble.
    scales float32 [N, K/32]  W[n, k] ~= (code - 8) * scales[n, k // 32]
    activations: xq int8 [K], xs float32 [K/32], x[k] ~= xq[k] * xs[k // 32]
    y[n] = sum_b scales[n, b] * xs[b] * sum_{k in block b} (code[n, k] - 8) * xq[k]

Weights use llama.cpp's Q4_0 rule per block: the entry of largest magnitude
``m`` maps to code 0 (scale = m / -8), the rest round to nearest. Activations are
symmetric int8 per block (scale = max|x| / 127).

Usage::

    from helpers.kernels.int4 import quantize_weight_int4, gemv_int4
    packed = quantize_weight_int4(linear.weight)     # once
    y = gemv_int4(x, packed, variant="all")          # x [K] or [B, K] fp32
"""
from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

import torch

from .cjit import compile_file, ptr

__all__ = [
    "BLOCK",
    "VARIANTS",
    "Int4Weight",
    "quantize_weight_int4",
    "dequantize_int4",
    "quantize_activation_int8",
    "gemv_int4",
    "gemv_int4_quantized",
    "gemv_int4_spec",
    "c_source",
]

BLOCK = 32
VARIANTS = ("reference", "unroll", "multithread", "simd", "all")


@dataclass
class Int4Weight:
    """A packed int4 weight: ``codes`` uint8 [N, K_pad/2], ``scales`` float32
    [N, K_pad/32]; ``k`` is the unpadded number of input features."""
    codes: torch.Tensor
    scales: torch.Tensor
    k: int

    @property
    def n(self) -> int:
        return self.codes.shape[0]

    @property
    def k_padded(self) -> int:
        return self.codes.shape[1] * 2


def c_source() -> str:
    """The C source of all variants (students start from ``gemv_int4_reference``)."""
    from .cjit import C_SOURCE_DIR
    return (C_SOURCE_DIR / "int4_gemv.c").read_text()


def _pad_k(t: torch.Tensor) -> torch.Tensor:
    pad = (-t.shape[-1]) % BLOCK
    return torch.nn.functional.pad(t, (0, pad)) if pad else t


def _check_float(t, name: str, ndim: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"`{name}` is a {type(t).__name__}, expected a torch tensor.")
    if t.dim() not in ndim:
        want = " or ".join(f"{d}-D" for d in ndim)
        raise ValueError(f"`{name}` has shape {tuple(t.shape)}, expected a {want} tensor.")
    if not t.is_floating_point():
        raise TypeError(f"`{name}` has dtype {t.dtype}, expected a floating-point tensor (e.g. `{name}.float()`).")
    return t.detach().to("cpu", torch.float32)


def quantize_weight_int4(w: torch.Tensor) -> Int4Weight:
    """Quantize a fp weight [N, K] (nn.Linear layout) to the packed int4 format."""
    w = _check_float(w, "w", (2,))
    n, k = w.shape
    blocks = _pad_k(w).reshape(n, -1, BLOCK)
    idx = blocks.abs().argmax(dim=-1, keepdim=True)
    scale = torch.gather(blocks, -1, idx) / -8.0
    inv = torch.where(scale == 0, torch.zeros_like(scale), 1.0 / scale)
    q = torch.clamp(torch.round(blocks * inv) + 8, 0, 15).to(torch.uint8)
    codes = q[..., :16] | (q[..., 16:] << 4)
    return Int4Weight(codes.reshape(n, -1).contiguous(), scale.squeeze(-1).contiguous(), k)


def _unpack_codes(packed: Int4Weight) -> torch.Tensor:
    c = packed.codes.reshape(packed.n, -1, 16)
    return torch.cat([c & 0x0F, c >> 4], dim=-1).reshape(packed.n, -1)


def dequantize_int4(packed: Int4Weight) -> torch.Tensor:
    """The fp32 weight [N, K] the packed codes stand for."""
    q = _unpack_codes(packed).to(torch.float32) - 8
    w = q.reshape(packed.n, -1, BLOCK) * packed.scales.unsqueeze(-1)
    return w.reshape(packed.n, -1)[:, :packed.k]


def quantize_activation_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per block of 32 along the last dim: (xq int8 [.., K_pad], xs fp32 [.., K_pad/32])."""
    x = _check_float(x, "x", (1, 2))
    blocks = _pad_k(x).reshape(*x.shape[:-1], -1, BLOCK)
    scale = blocks.abs().amax(dim=-1, keepdim=True) / 127.0
    inv = torch.where(scale == 0, torch.zeros_like(scale), 1.0 / scale)
    xq = torch.clamp(torch.round(blocks * inv), -127, 127).to(torch.int8)
    return xq.reshape(*x.shape[:-1], -1).contiguous(), scale.squeeze(-1).contiguous()


def gemv_int4_spec(x: torch.Tensor, packed: Int4Weight) -> torch.Tensor:
    """Torch reference: the exact sums the C kernels compute (fp64 here)."""
    xq, xs = quantize_activation_int8(x)
    q = (_unpack_codes(packed).to(torch.int64) - 8).reshape(packed.n, -1, BLOCK)
    xb = xq.to(torch.int64).reshape(*xq.shape[:-1], 1, -1, BLOCK)
    isum = (q * xb).sum(-1).to(torch.float64)                       # [.., N, K/32]
    scale = packed.scales.to(torch.float64) * xs.to(torch.float64).unsqueeze(-2)
    return (isum * scale).sum(-1).to(torch.float32)


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    return _bind(compile_file("int4_gemv.c"))


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    for v in VARIANTS:
        fn = getattr(lib, f"gemv_int4_{v}", None)
        if fn is not None:
            fn.restype = None
            fn.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int] * 3
    return lib


def gemv_int4_quantized(xq: torch.Tensor, xs: torch.Tensor, packed: Int4Weight, variant: str = "all",
                        *, out: torch.Tensor | None = None, num_threads: int = 0,
                        lib: ctypes.CDLL | None = None) -> torch.Tensor:
    """One C call on already-quantized activations (xq int8 [K_pad], xs fp32 [K_pad/32]).

    ``lib`` may be a library compiled from your own source (``compile_c``)
    exporting ``gemv_int4_<variant>`` with the signature of ``c/int4_gemv.c``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} is not one of {VARIANTS}.")
    lib = _lib() if lib is None else _bind(lib)
    fn = getattr(lib, f"gemv_int4_{variant}", None)
    if fn is None:
        raise AttributeError(f"the library defines no function `gemv_int4_{variant}`.")
    n, kp = packed.n, packed.k_padded
    if out is None:
        out = torch.empty(n, dtype=torch.float32)
    fn(ptr(packed.codes, "uint8", name="packed.codes", shape=(n, kp // 2)),
       ptr(packed.scales, "float32", name="packed.scales", shape=(n, kp // BLOCK)),
       ptr(xq, "int8", name="xq", shape=(kp,)),
       ptr(xs, "float32", name="xs", shape=(kp // BLOCK,)),
       ptr(out, "float32", name="out", shape=(n,), writable=True),
       n, kp, num_threads)
    return out


def gemv_int4(x: torch.Tensor, packed: Int4Weight, variant: str = "all", *, num_threads: int = 0,
              lib: ctypes.CDLL | None = None) -> torch.Tensor:
    """y = W x with int4 weights: x fp32 [K] or [B, K] -> fp32 [N] or [B, N].

    x is quantized per block of 32 (:func:`quantize_activation_int8`), then
    ``gemv_int4_<variant>`` runs once per row of x; ``lib`` as in
    :func:`gemv_int4_quantized`.
    """
    if not isinstance(packed, Int4Weight):
        raise TypeError(f"`packed` is a {type(packed).__name__}; make it with quantize_weight_int4(w).")
    x = _check_float(x, "x", (1, 2))
    if x.shape[-1] != packed.k:
        raise ValueError(f"`x` has {x.shape[-1]} features (last dim), the weight expects K={packed.k}.")
    xq, xs = quantize_activation_int8(x)
    if x.dim() == 1:
        return gemv_int4_quantized(xq, xs, packed, variant, num_threads=num_threads, lib=lib)
    return torch.stack([gemv_int4_quantized(xq[i], xs[i], packed, variant, num_threads=num_threads, lib=lib)
                        for i in range(x.shape[0])])
