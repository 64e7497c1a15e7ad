"""W4A16 GEMM/GEMV: fp16/fp32 activations times int4 weights in AWQ's packing.

AWQ format for a linear layer with in_features K and out_features N
(W is stored transposed, [K, N], so that y = x @ W)::

    qweight int32 [K, N/8]     8 columns per int32: nibble i (bits 4i..4i+3) of
                               qweight[k, c] holds column 8c + AWQ_ORDER[i],
                               AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
    qzeros  int32 [K/g, N/8]   zero points, packed the same way
    scales  fp16  [K/g, N]     g = group_size (128) consecutive input rows share one
    W[k, n] = (q[k, n] - z[k // g, n]) * s[k // g, n]

:func:`w4a16_matmul` dequantizes each [BLOCK_K, BLOCK_N] tile of W inside the K
loop and multiplies it on the fly; :func:`w4a16_matmul_spec` is the torch
reference. :func:`pack_awq` builds the format from integer codes.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import check_launch, dot_precision, require

__all__ = ["AWQ_ORDER", "AWQ_REVERSE_ORDER", "pack_awq", "unpack_awq", "w4a16_dequantize_spec",
           "w4a16_matmul_spec", "w4a16_matmul"]

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)          # column held by nibble i
AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)  # nibble holding column j


def _pack_rows(codes_kn: torch.Tensor) -> torch.Tensor:
    """[R, N] codes 0..15 -> [R, N/8] int32 in AWQ order."""
    r, n = codes_kn.shape
    cols = codes_kn.to(torch.int64).reshape(r, n // 8, 8)
    packed = torch.zeros(r, n // 8, dtype=torch.int64)
    for i, col in enumerate(AWQ_ORDER):
        packed |= cols[..., col] << (4 * i)
    packed = torch.where(packed >= 2**31, packed - 2**32, packed)  # as a two's complement int32
    return packed.to(torch.int32)


def _unpack_rows(packed: torch.Tensor) -> torch.Tensor:
    """[R, N/8] int32 -> [R, N] codes (int32)."""
    shifts = torch.tensor([4 * AWQ_REVERSE_ORDER[j] for j in range(8)], dtype=torch.int32, device=packed.device)
    codes = (packed.unsqueeze(-1) >> shifts) & 0xF
    return codes.reshape(packed.shape[0], -1)


def pack_awq(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int = 128):
    """Pack a group-quantized linear weight into AWQ's format.

    ``codes`` integers in [0, 15], shape [N, K] (nn.Linear layout), quantized in
    groups of ``group_size`` along K; ``scales`` [N, K/g] and integer ``zeros``
    [N, K/g] in [0, 15], so that ``W[n, k] ~= (codes[n, k] - zeros[n, k//g]) * scales[n, k//g]``.
    Returns ``(qweight int32 [K, N/8], qzeros int32 [K/g, N/8], scales fp16 [K/g, N])``.
    """
    if codes.dim() != 2:
        raise ValueError(f"`codes` has shape {tuple(codes.shape)}, expected [N, K] (nn.Linear layout).")
    n, k = codes.shape
    if n % 8 or k % group_size:
        raise ValueError(f"AWQ packing needs N % 8 == 0 and K % group_size == 0; got N={n}, K={k}, "
                         f"group_size={group_size}.")
    groups = k // group_size
    for name, t in (("scales", scales), ("zeros", zeros)):
        if tuple(t.shape) != (n, groups):
            raise ValueError(f"`{name}` has shape {tuple(t.shape)}, expected [N, K/group_size] = ({n}, {groups}).")
    for name, t in (("codes", codes), ("zeros", zeros)):
        if t.is_floating_point() or t.min() < 0 or t.max() > 15:
            raise ValueError(f"`{name}` must hold integers in [0, 15] (4-bit codes).")
    qweight = _pack_rows(codes.cpu().T.contiguous())
    qzeros = _pack_rows(zeros.cpu().T.contiguous())
    return (qweight.to(codes.device), qzeros.to(codes.device),
            scales.T.contiguous().to(torch.float16))


def unpack_awq(qweight: torch.Tensor, qzeros: torch.Tensor):
    """Inverse of the packing: (codes [K, N], zeros [K/g, N]) as int32."""
    return _unpack_rows(qweight), _unpack_rows(qzeros)


def w4a16_dequantize_spec(qweight, qzeros, scales, group_size: int = 128) -> torch.Tensor:
    """Reference dequantization: W [K, N] in fp32."""
    q, z = unpack_awq(qweight, qzeros)
    z = z.repeat_interleave(group_size, dim=0)
    s = scales.float().repeat_interleave(group_size, dim=0)
    return (q - z).float() * s


def w4a16_matmul_spec(x: torch.Tensor, qweight, qzeros, scales, group_size: int = 128) -> torch.Tensor:
    """Reference: x [..., K] @ W [K, N] in fp32, returned in x's dtype."""
    return (x.float() @ w4a16_dequantize_spec(qweight, qzeros, scales, group_size)).to(x.dtype)


@triton.jit
def _w4a16_kernel(x_ptr, qw_ptr, qz_ptr, s_ptr, y_ptr, M, N, K, group_size,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  DOT_PRECISION: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    # Bit offset of column n inside its int32 (the inverse of AWQ_ORDER).
    j = offs_n % 8
    shifts = ((j % 2) * 4 + j // 2) * 4
    packed_cols = N // 8
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        x = tl.load(x_ptr + offs_m[:, None] * K + offs_k[None, :],
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        mask_kn = mask_k[:, None] & mask_n[None, :]
        packed = tl.load(qw_ptr + offs_k[:, None] * packed_cols + (offs_n // 8)[None, :], mask=mask_kn, other=0)
        q = (packed >> shifts[None, :]) & 0xF
        g = offs_k // group_size
        packed_z = tl.load(qz_ptr + g[:, None] * packed_cols + (offs_n // 8)[None, :], mask=mask_kn, other=0)
        z = (packed_z >> shifts[None, :]) & 0xF
        s = tl.load(s_ptr + g[:, None] * N + offs_n[None, :], mask=mask_kn, other=0.0)
        w = (q - z).to(tl.float32) * s.to(tl.float32)
        acc += tl.dot(x, w.to(x.dtype), input_precision=DOT_PRECISION)
    tl.store(y_ptr + offs_m[:, None] * N + offs_n[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=mask_m[:, None] & mask_n[None, :])


def w4a16_matmul(x: torch.Tensor, qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                 group_size: int = 128) -> torch.Tensor:
    """y = x @ W with W in AWQ format: x [..., K] fp16/fp32 -> [..., N] in x's dtype.

    A vector x ([K] or [1, K]) is the GEMV case of LLM decoding.
    """
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        raise TypeError("`x` must be a tensor [..., K].")
    k = x.shape[-1]
    require(qweight, "qweight", torch.int32, (k, None))
    n = qweight.shape[1] * 8
    if k % group_size:
        raise ValueError(f"K={k} is not a multiple of group_size={group_size}.")
    require(qzeros, "qzeros", torch.int32, (k // group_size, n // 8))
    require(scales, "scales", (torch.float16, torch.float32), (k // group_size, n))
    x2 = x.reshape(-1, k)
    require(x2, "x", (torch.float16, torch.float32, torch.bfloat16))
    check_launch(_w4a16_kernel, x=x2, qweight=qweight, qzeros=qzeros, scales=scales)
    m = x2.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    block_m, block_n, block_k = 16, 64, 64
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    _w4a16_kernel[grid](x2, qweight, qzeros, scales, y, m, n, k, group_size,
                        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, DOT_PRECISION=dot_precision(x))
    return y.reshape(*x.shape[:-1], n)
