"""CSR sparse matrix-vector product (fp32) for pruned layers.

    csr = to_csr(linear.weight)          # dense [rows, cols] -> CSR, zeros dropped
    y = spmv(csr, x)                      # x [cols] or [B, cols] -> [rows] or [B, rows]

CSR layout: ``indptr`` int32 [rows + 1], ``indices`` int32 [nnz] (column of each
nonzero, ascending within a row), ``values`` float32 [nnz]; row r's nonzeros are
``values[indptr[r]:indptr[r+1]]``.
"""
from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

import torch

from .cjit import compile_file, ptr

__all__ = ["CSRMatrix", "to_csr", "spmv", "spmv_spec"]


@dataclass
class CSRMatrix:
    indptr: torch.Tensor
    indices: torch.Tensor
    values: torch.Tensor
    shape: tuple[int, int]

    @property
    def nnz(self) -> int:
        return self.values.numel()

    @property
    def density(self) -> float:
        return self.nnz / max(1, self.shape[0] * self.shape[1])

    def to_dense(self) -> torch.Tensor:
        counts = (self.indptr[1:] - self.indptr[:-1]).long()
        rows = torch.repeat_interleave(torch.arange(self.shape[0]), counts)
        dense = torch.zeros(self.shape, dtype=torch.float32)
        dense[rows, self.indices.long()] = self.values
        return dense


def to_csr(dense: torch.Tensor) -> CSRMatrix:
    """Dense 2-D tensor -> CSR (entries equal to 0 are dropped)."""
    if not isinstance(dense, torch.Tensor) or dense.dim() != 2:
        raise ValueError(f"to_csr expects a 2-D torch tensor, got {getattr(dense, 'shape', type(dense).__name__)}.")
    if not dense.is_floating_point():
        raise TypeError(f"to_csr expects a floating-point tensor, got {dense.dtype}.")
    d = dense.detach().to("cpu", torch.float32)
    rows, cols = d.nonzero(as_tuple=True)                 # row-major order
    counts = torch.bincount(rows, minlength=d.shape[0])
    indptr = torch.zeros(d.shape[0] + 1, dtype=torch.int32)
    indptr[1:] = torch.cumsum(counts, 0)
    return CSRMatrix(indptr, cols.to(torch.int32).contiguous(), d[rows, cols].contiguous(),
                     (int(d.shape[0]), int(d.shape[1])))


def spmv_spec(csr: CSRMatrix, x: torch.Tensor) -> torch.Tensor:
    """Torch reference: y = A x through the dense matrix (x [cols] or [B, cols])."""
    return x @ csr.to_dense().T


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    lib = compile_file("sparse.c")
    lib.spmv_csr_f32.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int]
    lib.spmv_csr_f32.restype = None
    return lib


def spmv(csr: CSRMatrix, x: torch.Tensor) -> torch.Tensor:
    """y = A x with the C kernel; x float32 [cols] or [B, cols]."""
    if not isinstance(csr, CSRMatrix):
        raise TypeError(f"`csr` is a {type(csr).__name__}; make it with to_csr(dense).")
    rows, cols = csr.shape
    if not isinstance(x, torch.Tensor) or x.dim() not in (1, 2) or x.shape[-1] != cols:
        raise ValueError(f"`x` has shape {tuple(getattr(x, 'shape', ()))}, expected ({cols},) or (B, {cols}).")
    if x.dim() == 2:
        return torch.stack([spmv(csr, xi) for xi in x])
    y = torch.empty(rows, dtype=torch.float32)
    _lib().spmv_csr_f32(ptr(csr.indptr, "int32", name="csr.indptr", shape=(rows + 1,)),
                        ptr(csr.indices, "int32", name="csr.indices", shape=(csr.nnz,)),
                        ptr(csr.values, "float32", name="csr.values", shape=(csr.nnz,)),
                        ptr(x, "float32", name="x"), ptr(y, "float32", name="y", writable=True), rows)
    return y
