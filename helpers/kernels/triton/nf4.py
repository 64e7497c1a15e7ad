"""NF4 (4-bit NormalFloat, QLoRA) blockwise dequantization and matmul.

Format (the same bytes as bitsandbytes' ``quantize_4bit(..., quant_type="nf4")``)::

    W, any shape, flattened row-major into numel values (numel even)
    packed  uint8 [numel/2]   element 2i in the HIGH nibble of byte i, 2i+1 in the low one
    code    fp32  [16]        NF4_CODE: the 16 NormalFloat levels in [-1, 1]
    absmax  fp32  [ceil(numel/64)]   W[i] = code[nibble(i)] * absmax[i // 64]

With double quantization (QLoRA's "DQ") the absmax values are themselves
stored in 8 bits, in blocks of 256::

    absmax_q      uint8 [nblocks]            indices into absmax_code
    absmax_code   fp32  [256]                bitsandbytes' signed dynamic 8-bit map
    absmax_scale  fp32  [ceil(nblocks/256)]
    absmax_offset fp32                       the mean of absmax, subtracted first
    absmax[b] = absmax_code[absmax_q[b]] * absmax_scale[b // 256] + absmax_offset

:func:`quantize_nf4` makes this format in torch; :func:`from_bitsandbytes`
wraps bitsandbytes' output in it. :func:`nf4_dequantize` / :func:`nf4_matmul`
(``x @ W.T``) are the Triton kernels, ``*_spec`` their torch references.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._launch import check_launch, dot_precision, require

__all__ = ["NF4_CODE", "dynamic_map", "NF4Weight", "quantize_nf4", "from_bitsandbytes",
           "nf4_dequantize_spec", "nf4_matmul_spec", "nf4_dequantize", "nf4_matmul"]

# The NF4 levels as bitsandbytes stores them (QLoRA paper, appendix E).
NF4_CODE = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
], dtype=torch.float32)

BLOCKSIZE = 64
ABSMAX_BLOCKSIZE = 256


def dynamic_map() -> torch.Tensor:
    """bitsandbytes' signed dynamic 8-bit map (``create_dynamic_map(signed=True)``):
    a sign, an exponent in unary (base 10) and a linear fraction; 256 sorted values."""
    data: list[float] = []
    for i in range(7):                                 # exponents 1e-6 .. 1e0
        fraction = torch.linspace(0.1, 1, 2**i + 1, dtype=torch.float32)
        means = (fraction[:-1] + fraction[1:]) / 2.0
        data += (10 ** (-6 + i) * means).tolist()
        data += (-(10 ** (-6 + i)) * means).tolist()
    data += [0.0, 1.0]
    data += [0.0] * (256 - len(data))
    return torch.tensor(sorted(data), dtype=torch.float32)


@dataclass
class NF4Weight:
    packed: torch.Tensor
    shape: tuple[int, ...]
    absmax: torch.Tensor | None = None            # fp32, when not double-quantized
    absmax_q: torch.Tensor | None = None          # uint8, when double-quantized
    absmax_code: torch.Tensor | None = None
    absmax_scale: torch.Tensor | None = None
    absmax_offset: float = 0.0
    blocksize: int = BLOCKSIZE
    absmax_blocksize: int = ABSMAX_BLOCKSIZE

    @property
    def double_quant(self) -> bool:
        return self.absmax_q is not None

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def _nearest(values: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    return (values.unsqueeze(-1) - table).abs().argmin(dim=-1).to(torch.uint8)


def quantize_nf4(w: torch.Tensor, blocksize: int = BLOCKSIZE, double_quant: bool = False) -> NF4Weight:
    """Blockwise NF4 quantization in torch (each value to the nearest NF4 level)."""
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        raise TypeError("quantize_nf4 expects a floating-point torch tensor.")
    flat = w.detach().float().cpu().reshape(-1)
    if flat.numel() % 2:
        raise ValueError(f"NF4 packs two values per byte: numel must be even, got {flat.numel()}.")
    nblocks = -(-flat.numel() // blocksize)
    padded = torch.nn.functional.pad(flat, (0, nblocks * blocksize - flat.numel()))
    blocks = padded.reshape(nblocks, blocksize)
    absmax = blocks.abs().amax(dim=1)
    normed = blocks / torch.where(absmax == 0, torch.ones_like(absmax), absmax).unsqueeze(1)
    idx = _nearest(normed.reshape(-1)[: flat.numel()], NF4_CODE)
    packed = (idx[0::2] << 4) | idx[1::2]
    out = NF4Weight(packed.contiguous(), tuple(w.shape), blocksize=blocksize)
    if not double_quant:
        out.absmax = absmax
        return out
    offset = absmax.mean()
    centered = absmax - offset
    n2 = -(-nblocks // ABSMAX_BLOCKSIZE)
    c_blocks = torch.nn.functional.pad(centered, (0, n2 * ABSMAX_BLOCKSIZE - nblocks)).reshape(n2, -1)
    scale = c_blocks.abs().amax(dim=1)
    normed2 = c_blocks / torch.where(scale == 0, torch.ones_like(scale), scale).unsqueeze(1)
    code8 = dynamic_map()
    out.absmax_q = _nearest(normed2.reshape(-1)[:nblocks], code8).contiguous()
    out.absmax_code, out.absmax_scale, out.absmax_offset = code8, scale, float(offset)
    return out


def from_bitsandbytes(packed: torch.Tensor, state) -> NF4Weight:
    """Wrap ``bitsandbytes.functional.quantize_4bit(..., quant_type="nf4")`` output."""
    if getattr(state, "quant_type", "nf4") != "nf4":
        raise ValueError(f"expected an NF4 quant state, got quant_type={state.quant_type!r}.")
    out = NF4Weight(packed.reshape(-1).contiguous(), tuple(state.shape), blocksize=state.blocksize)
    if state.nested:
        out.absmax_q = state.absmax.contiguous()
        out.absmax_code = state.state2.code.float().contiguous()
        out.absmax_scale = state.state2.absmax.float().contiguous()
        out.absmax_offset = float(state.offset)
        out.absmax_blocksize = state.state2.blocksize
    else:
        out.absmax = state.absmax.float().contiguous()
    return out


def _absmax_spec(w: NF4Weight) -> torch.Tensor:
    if not w.double_quant:
        return w.absmax.float()
    scale = w.absmax_scale.repeat_interleave(w.absmax_blocksize)[: w.absmax_q.numel()]
    return w.absmax_code[w.absmax_q.long()] * scale + w.absmax_offset


def nf4_dequantize_spec(w: NF4Weight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Reference dequantization to a tensor of ``w.shape``."""
    nibbles = torch.stack([w.packed >> 4, w.packed & 0xF], dim=-1).reshape(-1).long()
    absmax = _absmax_spec(w).repeat_interleave(w.blocksize)[: w.numel]
    return (NF4_CODE.to(w.packed.device)[nibbles] * absmax).reshape(w.shape).to(dtype)


def nf4_matmul_spec(x: torch.Tensor, w: NF4Weight) -> torch.Tensor:
    """Reference: x [..., K] @ dequant(W [N, K]).T in fp32, returned in x's dtype."""
    return (x.float() @ nf4_dequantize_spec(w).T).to(x.dtype)


@triton.jit
def _nf4_values(idx, mask, packed_ptr, code_ptr, absmax_ptr, absmax_q_ptr, absmax_code_ptr,
                absmax_scale_ptr, absmax_offset, blocksize, absmax_blocksize, DOUBLE_QUANT: tl.constexpr):
    """fp32 values of flat weight indices ``idx`` (any tile shape)."""
    byte = tl.load(packed_ptr + idx // 2, mask=mask, other=0).to(tl.int32)
    nibble = tl.where(idx % 2 == 0, byte >> 4, byte & 0xF)
    level = tl.load(code_ptr + nibble, mask=mask, other=0.0)
    block = idx // blocksize
    if DOUBLE_QUANT:
        q = tl.load(absmax_q_ptr + block, mask=mask, other=0).to(tl.int32)
        scale = tl.load(absmax_scale_ptr + block // absmax_blocksize, mask=mask, other=0.0)
        absmax = tl.load(absmax_code_ptr + q, mask=mask, other=0.0) * scale + absmax_offset
    else:
        absmax = tl.load(absmax_ptr + block, mask=mask, other=0.0)
    return level * absmax


@triton.jit
def _nf4_dequant_kernel(out_ptr, numel, packed_ptr, code_ptr, absmax_ptr, absmax_q_ptr, absmax_code_ptr,
                        absmax_scale_ptr, absmax_offset, blocksize, absmax_blocksize,
                        DOUBLE_QUANT: tl.constexpr, BLOCK: tl.constexpr):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < numel
    v = _nf4_values(idx, mask, packed_ptr, code_ptr, absmax_ptr, absmax_q_ptr, absmax_code_ptr,
                    absmax_scale_ptr, absmax_offset, blocksize, absmax_blocksize, DOUBLE_QUANT)
    tl.store(out_ptr + idx, v.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _nf4_matmul_kernel(x_ptr, y_ptr, M, N, K, packed_ptr, code_ptr, absmax_ptr, absmax_q_ptr, absmax_code_ptr,
                       absmax_scale_ptr, absmax_offset, blocksize, absmax_blocksize,
                       DOUBLE_QUANT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        x = tl.load(x_ptr + offs_m[:, None] * K + offs_k[None, :], mask=mask_m[:, None] & mask_k[None, :],
                    other=0.0)
        # Tile [BLOCK_K, BLOCK_N] of W.T: element (k, n) is W[n, k], flat index n*K + k.
        idx = offs_n[None, :] * K + offs_k[:, None]
        w = _nf4_values(idx, mask_k[:, None] & mask_n[None, :], packed_ptr, code_ptr, absmax_ptr, absmax_q_ptr,
                        absmax_code_ptr, absmax_scale_ptr, absmax_offset, blocksize, absmax_blocksize,
                        DOUBLE_QUANT)
        acc += tl.dot(x, w.to(x.dtype), input_precision=DOT_PRECISION)
    tl.store(y_ptr + offs_m[:, None] * N + offs_n[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=mask_m[:, None] & mask_n[None, :])


def _check_weight(w) -> None:
    if not isinstance(w, NF4Weight):
        raise TypeError(f"`w` is a {type(w).__name__}; make it with quantize_nf4() or from_bitsandbytes().")


def _state_args(w: NF4Weight, kernel, **extra: torch.Tensor):
    require(w.packed, "w.packed", torch.uint8, (w.numel // 2,))
    nblocks = -(-w.numel // w.blocksize)
    code = NF4_CODE.to(w.packed.device)
    if w.double_quant:
        require(w.absmax_q, "w.absmax_q", torch.uint8, (nblocks,))
        require(w.absmax_code, "w.absmax_code", torch.float32, (256,))
        require(w.absmax_scale, "w.absmax_scale", torch.float32, (-(-nblocks // w.absmax_blocksize),))
        tensors = dict(absmax=w.absmax_scale, absmax_q=w.absmax_q, absmax_code=w.absmax_code,
                       absmax_scale=w.absmax_scale)
    else:
        require(w.absmax, "w.absmax", torch.float32, (nblocks,))
        # Unused pointers of the other mode still need a valid tensor.
        tensors = dict(absmax=w.absmax, absmax_q=w.packed, absmax_code=w.absmax, absmax_scale=w.absmax)
    check_launch(kernel, packed=w.packed, code=code, **tensors, **extra)
    return (w.packed, code, tensors["absmax"], tensors["absmax_q"], tensors["absmax_code"],
            tensors["absmax_scale"], w.absmax_offset, w.blocksize, w.absmax_blocksize)


def nf4_dequantize(w: NF4Weight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Dequantize with the Triton kernel to a ``dtype`` tensor of ``w.shape``."""
    _check_weight(w)
    out = torch.empty(w.shape, dtype=dtype, device=w.packed.device)
    args = _state_args(w, _nf4_dequant_kernel, out=out)
    block = 1024
    _nf4_dequant_kernel[(triton.cdiv(w.numel, block),)](out, w.numel, *args, DOUBLE_QUANT=w.double_quant,
                                                        BLOCK=block)
    return out


def nf4_matmul(x: torch.Tensor, w: NF4Weight) -> torch.Tensor:
    """y = x @ dequant(W).T for an NF4 weight W [N, K]: x [..., K] fp16/fp32 -> [..., N]."""
    _check_weight(w)
    if len(w.shape) != 2:
        raise ValueError(f"nf4_matmul needs a 2-D weight [N, K], got shape {w.shape}.")
    n, k = w.shape
    if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[-1] != k:
        raise ValueError(f"`x` has shape {tuple(getattr(x, 'shape', ()))}, expected [..., {k}].")
    x2 = x.reshape(-1, k)
    require(x2, "x", (torch.float16, torch.float32, torch.bfloat16))
    m = x2.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    args = _state_args(w, _nf4_matmul_kernel, x=x2)
    grid = (triton.cdiv(m, 16), triton.cdiv(n, 32))
    _nf4_matmul_kernel[grid](x2, y, m, n, k, *args, DOUBLE_QUANT=w.double_quant,
                             BLOCK_M=16, BLOCK_N=32, BLOCK_K=64, DOT_PRECISION=dot_precision(x))
    return y.reshape(*x.shape[:-1], n)
