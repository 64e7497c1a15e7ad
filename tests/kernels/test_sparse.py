"""CSR conversion and the CSR sparse matrix-vector kernel."""
import pytest
import torch

from helpers.kernels.sparse import CSRMatrix, spmv, spmv_spec, to_csr


def _pruned(rows, cols, density, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    w[torch.rand(rows, cols, generator=g) >= density] = 0
    return w


def test_csr_layout():
    w = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 3.0]])
    csr = to_csr(w)
    assert csr.indptr.tolist() == [0, 1, 1, 3]
    assert csr.indices.tolist() == [1, 0, 2]
    assert csr.values.tolist() == [2.0, 1.0, 3.0]
    assert csr.nnz == 3 and csr.density == pytest.approx(3 / 9)
    assert torch.equal(csr.to_dense(), w)


@pytest.mark.parametrize("rows,cols,density", [(1, 1, 1.0), (13, 29, 0.2), (64, 33, 0.05), (200, 300, 0.5),
                                               (7, 9, 0.0)])
def test_spmv_matches_dense(rows, cols, density):
    w = _pruned(rows, cols, density, rows * cols)
    csr = to_csr(w)
    assert torch.equal(csr.to_dense(), w)
    x = torch.randn(cols)
    torch.testing.assert_close(spmv(csr, x), w @ x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(spmv(csr, x), spmv_spec(csr, x), rtol=1e-5, atol=1e-5)


def test_spmv_batch():
    w = _pruned(11, 17, 0.3, 1)
    x = torch.randn(4, 17)
    torch.testing.assert_close(spmv(to_csr(w), x), x @ w.T, rtol=1e-5, atol=1e-5)


def test_bad_inputs_say_what_to_fix():
    csr = to_csr(_pruned(5, 8, 0.5, 2))
    with pytest.raises(ValueError, match=r"expected \(8,\) or \(B, 8\)"):
        spmv(csr, torch.randn(7))
    with pytest.raises(TypeError, match="dtype float64, expected float32"):
        spmv(csr, torch.randn(8, dtype=torch.float64))
    with pytest.raises(ValueError, match="not contiguous"):
        spmv(csr, torch.randn(16)[::2])
    with pytest.raises(TypeError, match="to_csr"):
        spmv(torch.randn(5, 8), torch.randn(8))
    with pytest.raises(ValueError, match="2-D"):
        to_csr(torch.randn(8))
    broken = CSRMatrix(csr.indptr, csr.indices.long(), csr.values, csr.shape)
    with pytest.raises(TypeError, match="csr.indices"):
        spmv(broken, torch.randn(8))
