"""Triton kernels against their torch specs (interpreter on CPU, see conftest)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.kernels import triton as tk
from helpers.kernels.triton.fake_quant import fake_quantize_spec, quantize_dequantize


def fake_quantize(*args, **kwargs):
    return quantize_dequantize(*args, **kwargs)[0]
from helpers.kernels.triton.nf4 import (NF4_CODE, NF4Weight, dynamic_map, from_bitsandbytes, nf4_dequantize,
                                        nf4_dequantize_spec, nf4_matmul, nf4_matmul_spec, quantize_nf4)
from helpers.kernels.triton.w4a16 import (AWQ_ORDER, pack_awq, unpack_awq, w4a16_dequantize_spec, w4a16_matmul,
                                          w4a16_matmul_spec)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
REPO = Path(__file__).resolve().parents[2]


def test_available_here():
    assert tk.available() and (DEVICE == "cuda" or tk.interpreter_enabled())


# ---------------------------------------------------------------- W4A16 (AWQ)

def _awq_weight(n, k, g, seed):
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (n, k), generator=gen)
    zeros = torch.randint(0, 16, (n, k // g), generator=gen)
    scales = torch.rand(n, k // g, generator=gen) * 0.02 + 0.001
    return codes, scales, zeros


def test_awq_column_order():
    # Columns 0..7 holding codes 0..7: nibble i must hold column AWQ_ORDER[i].
    codes = torch.arange(8).repeat(128, 1).T.contiguous()       # [N=8, K=128], row n = code n
    qweight, qzeros, _ = pack_awq(codes, torch.ones(8, 1), torch.zeros(8, 1, dtype=torch.long))
    assert qweight.shape == (128, 1) and qzeros.shape == (1, 1)
    assert AWQ_ORDER == (0, 2, 4, 6, 1, 3, 5, 7)
    assert int(qweight[0, 0]) == 0x75316420


def test_awq_pack_roundtrip_and_dequant():
    codes, scales, zeros = _awq_weight(24, 256, 128, 0)
    qweight, qzeros, s = pack_awq(codes, scales, zeros)
    q, z = unpack_awq(qweight, qzeros)
    assert torch.equal(q, codes.T.int()) and torch.equal(z, zeros.T.int())
    want = (codes - zeros.repeat_interleave(128, 1)) * scales.half().float().repeat_interleave(128, 1)
    torch.testing.assert_close(w4a16_dequantize_spec(qweight, qzeros, s), want.T, rtol=0, atol=0)


@pytest.mark.parametrize("m,n,k,g", [(1, 8, 128, 128), (3, 40, 256, 128), (17, 72, 128, 64), (1, 136, 384, 128)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_w4a16_matches_spec(m, n, k, g, dtype):
    qweight, qzeros, scales = (t.to(DEVICE) for t in pack_awq(*_awq_weight(n, k, g, m + n), group_size=g))
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(k)).to(DEVICE, dtype)
    got = w4a16_matmul(x, qweight, qzeros, scales, group_size=g)
    want = w4a16_matmul_spec(x, qweight, qzeros, scales, group_size=g)
    assert got.dtype == dtype and got.shape == (m, n)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol * want.abs().max().item())


def test_w4a16_gemv_vector():
    qweight, qzeros, scales = pack_awq(*_awq_weight(16, 128, 128, 9))
    x = torch.randn(128)
    torch.testing.assert_close(w4a16_matmul(x.to(DEVICE), *(t.to(DEVICE) for t in (qweight, qzeros, scales))).cpu(),
                               w4a16_matmul_spec(x, qweight, qzeros, scales), rtol=1e-4, atol=1e-4)


def test_w4a16_bad_inputs():
    qweight, qzeros, scales = pack_awq(*_awq_weight(16, 128, 128, 1))
    with pytest.raises(ValueError, match="qweight"):
        w4a16_matmul(torch.randn(2, 64), qweight, qzeros, scales)
    with pytest.raises(TypeError, match="qweight.*int32"):
        w4a16_matmul(torch.randn(2, 128), qweight.long(), qzeros, scales)
    with pytest.raises(ValueError, match="not contiguous"):
        w4a16_matmul(torch.randn(128, 2).T, qweight, qzeros, scales)
    with pytest.raises(ValueError, match="N % 8"):
        pack_awq(*_awq_weight(12, 128, 128, 1))
    with pytest.raises(ValueError, match=r"integers in \[0, 15\]"):
        codes, s, z = _awq_weight(8, 128, 128, 1)
        pack_awq(codes + 16, s, z)


@pytest.mark.skipif(DEVICE == "cuda", reason="the interpreter's bf16 restriction applies on CPU only")
def test_bf16_rejected_under_interpreter():
    qweight, qzeros, scales = pack_awq(*_awq_weight(8, 128, 128, 2))
    with pytest.raises(TypeError, match="bfloat16.*fp32/fp16"):
        w4a16_matmul(torch.randn(1, 128, dtype=torch.bfloat16), qweight, qzeros, scales)
    with pytest.raises(TypeError, match="bfloat16"):
        fake_quantize(torch.randn(4, dtype=torch.bfloat16), 0.1, 0)


@pytest.mark.skipif(DEVICE == "cuda", reason="checks the CPU path without the interpreter")
def test_cpu_tensor_without_interpreter_says_how_to_fix():
    code = ("import torch; from helpers.kernels.triton.fake_quant import quantize_dequantize\n"
            "try:\n    quantize_dequantize(torch.randn(8), 0.1, 0)\n"
            "except RuntimeError as e:\n    print(e)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TRITON_INTERPRET": "0"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "TRITON_INTERPRET" in proc.stdout and "restart the kernel" in proc.stdout


# ---------------------------------------------------------------- NF4

def test_nf4_code_table_shape():
    assert NF4_CODE.shape == (16,) and torch.all(NF4_CODE[1:] > NF4_CODE[:-1])
    assert NF4_CODE[0] == -1 and NF4_CODE[7] == 0 and NF4_CODE[15] == 1
    table = dynamic_map()
    assert table.shape == (256,) and torch.all(table[1:] >= table[:-1]) and table.max() == 1


def test_nf4_tables_match_bitsandbytes():
    import bitsandbytes.functional as bnbf  # the oracle; `make venv` installs it
    assert torch.equal(NF4_CODE, bnbf.get_4bit_type("nf4", device="cpu").float())
    assert torch.equal(dynamic_map(), bnbf.create_dynamic_map(signed=True).float())


@pytest.mark.parametrize("double_quant", [False, True])
def test_nf4_quantize_matches_bitsandbytes(double_quant):
    import bitsandbytes.functional as bnbf  # the oracle; `make venv` installs it
    w = torch.randn(40, 300, generator=torch.Generator().manual_seed(0))
    packed, state = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=double_quant, quant_type="nf4")
    ours = quantize_nf4(w, double_quant=double_quant)
    assert torch.equal(ours.packed, packed.reshape(-1))
    if double_quant:
        assert torch.equal(ours.absmax_q, state.absmax)
        torch.testing.assert_close(ours.absmax_scale, state.state2.absmax)
    else:
        torch.testing.assert_close(ours.absmax, state.absmax)
    want = bnbf.dequantize_4bit(packed, state)
    theirs = from_bitsandbytes(packed, state)
    torch.testing.assert_close(nf4_dequantize_spec(theirs), want, rtol=0, atol=0)
    torch.testing.assert_close(nf4_dequantize(theirs), want, rtol=1e-6, atol=1e-6)


def test_nf4_packing_and_error_bound():
    w = torch.tensor([[-1.0, 1.0, 0.0, 0.5] * 16])        # one block, absmax 1
    q = quantize_nf4(w)
    assert q.packed[:2].tolist() == [(0 << 4) | 15, (7 << 4) | 12]     # 0.5 -> nearest level 12 (0.4407)
    w = torch.randn(33, 70, generator=torch.Generator().manual_seed(1))
    q = quantize_nf4(w)
    gap = (NF4_CODE[1:] - NF4_CODE[:-1]).max() / 2
    absmax = q.absmax.repeat_interleave(64)[: w.numel()].reshape(w.shape)
    assert ((nf4_dequantize_spec(q) - w).abs() <= gap * absmax + 1e-6).all()


@pytest.mark.parametrize("shape", [(3, 50), (64, 64), (130, 160)])   # partial blocks; >256 blocks
@pytest.mark.parametrize("double_quant", [False, True])
def test_nf4_dequantize_matches_spec(shape, double_quant):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(shape[0]))
    q = quantize_nf4(w, double_quant=double_quant)
    if double_quant and w.numel() > 64 * 256:
        assert q.absmax_scale.numel() > 1
    q = _to_device(q)
    for dtype in (torch.float32, torch.float16):
        got = nf4_dequantize(q, dtype=dtype)
        assert got.dtype == dtype and got.shape == shape
        torch.testing.assert_close(got.cpu(), nf4_dequantize_spec(_to_device(q, "cpu"), dtype=dtype),
                                   rtol=1e-3 if dtype == torch.float16 else 1e-6, atol=1e-6)


def _to_device(q: NF4Weight, device=DEVICE) -> NF4Weight:
    fields = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(q).items()}
    return NF4Weight(**fields)


@pytest.mark.parametrize("m,n,k", [(1, 8, 64), (5, 33, 100), (17, 40, 192)])
@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_nf4_matmul_matches_spec(m, n, k, double_quant, dtype):
    gen = torch.Generator().manual_seed(m * n * k)
    q = _to_device(quantize_nf4(torch.randn(n, k, generator=gen), double_quant=double_quant))
    x = torch.randn(m, k, generator=gen).to(DEVICE, dtype)
    got = nf4_matmul(x, q)
    want = nf4_matmul_spec(x.cpu(), _to_device(q, "cpu"))
    assert got.dtype == dtype and got.shape == (m, n)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.cpu().float(), want.float(), rtol=tol, atol=tol * want.abs().max().item())


def test_nf4_bad_inputs():
    q = quantize_nf4(torch.randn(8, 64))
    with pytest.raises(ValueError, match=r"expected \[\.\.\., 64\]"):
        nf4_matmul(torch.randn(2, 63), q)
    with pytest.raises(TypeError, match="quantize_nf4"):
        nf4_dequantize(torch.zeros(4))
    with pytest.raises(ValueError, match="numel must be even"):
        quantize_nf4(torch.randn(3, 3))
    bad = NF4Weight(q.packed, q.shape, absmax=q.absmax.half())
    with pytest.raises(TypeError, match="w.absmax.*float32"):
        nf4_dequantize(bad)


# ---------------------------------------------------------------- fake quantization

@pytest.mark.parametrize("shape", [(7,), (4, 6, 5), (3, 1025)])
@pytest.mark.parametrize("bits,signed", [(8, False), (4, True), (2, False)])
def test_fake_quant_per_tensor(shape, bits, signed):
    gen = torch.Generator().manual_seed(bits)
    x = (torch.randn(*shape, generator=gen) * 2).to(DEVICE)
    x.view(-1)[:4] = torch.tensor([0.5, 1.5, 2.5, -0.5]) * 0.1       # ties: round half to even
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    zp = (qmin + qmax) // 2
    got = fake_quantize(x, 0.1, zp, bits=bits, signed=signed)
    torch.testing.assert_close(got, fake_quantize_spec(x, 0.1, zp, bits=bits, signed=signed), rtol=0, atol=0)
    torch.testing.assert_close(fake_quantize_spec(x, 0.1, zp, bits=bits, signed=signed),
                               torch.fake_quantize_per_tensor_affine(x, 0.1, zp, qmin, qmax), rtol=0, atol=0)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_fake_quant_per_channel(axis):
    gen = torch.Generator().manual_seed(axis + 5)
    x = torch.randn(3, 4, 5, generator=gen).to(DEVICE)
    c = x.shape[axis]
    scale = (torch.rand(c, generator=gen) * 0.05 + 0.01).to(DEVICE)
    zp = torch.randint(-5, 5, (c,), generator=gen, dtype=torch.int32).to(DEVICE)
    got = fake_quantize(x, scale, zp, bits=8, axis=axis, signed=True)
    want = torch.fake_quantize_per_channel_affine(x, scale, zp, axis % x.dim(), -128, 127)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(fake_quantize_spec(x, scale, zp, bits=8, axis=axis, signed=True), want, rtol=0, atol=0)


def test_fake_quant_fp16_and_straight_through_gradient():
    x = (torch.randn(64, generator=torch.Generator().manual_seed(3)) * 2).to(DEVICE)
    torch.testing.assert_close(fake_quantize(x.half(), 0.05, 8, bits=4),
                               fake_quantize_spec(x.half(), 0.05, 8, bits=4), rtol=0, atol=0)
    # The kernel gives no gradient (lab 03 Task 1.1 is the straight-through estimator); its in-range mask
    # is the one torch's estimator passes the gradient through.
    ours, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, in_range = quantize_dequantize(ours, 0.05, 8, bits=4)
    assert out.grad_fn is None and not out.requires_grad and in_range.dtype == torch.bool
    torch.fake_quantize_per_tensor_affine(ref, 0.05, 8, 0, 15).sum().backward()
    assert torch.equal(in_range, ref.grad != 0)
    assert 0 < int((~in_range).sum()) < 64, "test should clip some values and keep others"


def test_fake_quant_bad_inputs():
    x = torch.randn(3, 4).to(DEVICE)
    with pytest.raises(ValueError, match="needs 4 scales"):
        fake_quantize(x, torch.ones(3), torch.zeros(3), axis=1)
    with pytest.raises(ValueError, match="pass axis="):
        fake_quantize(x, torch.ones(3), torch.zeros(3))
    with pytest.raises(ValueError, match="2..16 bits"):
        fake_quantize(x, 0.1, 0, bits=1)
    with pytest.raises(ValueError, match="integers"):
        fake_quantize(x, 0.1, 0.5)
    with pytest.raises(ValueError, match="positive"):
        fake_quantize(x, torch.tensor([0.1, 0.0, 0.1, 0.1]), torch.zeros(4), axis=1)
