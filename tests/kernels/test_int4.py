"""int4 weight-only GEMV (TinyChatEngine format): packing and the five C variants."""
import pytest
import torch

from helpers.kernels.cjit import compile_c
from helpers.kernels.int4 import (VARIANTS, Int4Weight, c_source, dequantize_int4, gemv_int4,
                                  gemv_int4_quantized, gemv_int4_spec, quantize_activation_int8,
                                  quantize_weight_int4)

SHAPES = [(1, 32), (5, 100), (67, 64), (130, 300)]   # (N, K): ragged N and K included


def test_packing_layout_is_documented_one():
    # A block whose entries are exactly (code - 8) * 0.5 with code 0 present
    # (largest magnitude -4.0 -> scale 0.5) quantizes losslessly.
    codes = torch.tensor([(3 * j + 1) % 16 for j in range(32)])
    codes[5] = 0
    w = ((codes - 8) * 0.5).float().reshape(1, 32)
    packed = quantize_weight_int4(w)
    assert packed.scales.tolist() == [[0.5]]
    expected = [int(codes[j]) | (int(codes[j + 16]) << 4) for j in range(16)]
    assert packed.codes.tolist() == [expected]
    torch.testing.assert_close(dequantize_int4(packed), w, rtol=0, atol=0)


def test_quantization_error_within_half_step():
    torch.manual_seed(0)
    w = torch.randn(9, 70)
    packed = quantize_weight_int4(w)
    assert packed.codes.shape == (9, 48) and packed.scales.shape == (9, 3) and packed.k == 70
    scale = packed.scales.repeat_interleave(32, dim=1)[:, :70]
    err = (dequantize_int4(packed) - w).abs()
    # Q4_0 maps the largest magnitude to code 0 (-8); the opposite end only
    # reaches +7, so values beyond +7.5 steps clip to 7 (at most one step off).
    clipped = w / scale > 7.5
    assert (err[~clipped] <= scale.abs()[~clipped] / 2 + 1e-6).all()
    assert (err[clipped] <= scale.abs()[clipped] + 1e-6).all()


def test_activation_quantization():
    x = torch.tensor([0.0] * 31 + [127.0] + [0.0] * 32)
    xq, xs = quantize_activation_int8(x)
    assert xq.dtype == torch.int8 and xs.tolist() == [1.0, 0.0]
    assert xq[31] == 127 and int(xq.abs().sum()) == 127


def test_spec_approximates_float_matmul():
    torch.manual_seed(1)
    w, x = torch.randn(64, 256), torch.randn(256)
    y = gemv_int4_spec(x, quantize_weight_int4(w))
    rel = (y - w @ x).norm() / (w @ x).norm()
    assert rel < 0.15


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("n,k", SHAPES)
def test_variant_matches_spec(variant, n, k):
    torch.manual_seed(n * 1000 + k)
    packed = quantize_weight_int4(torch.randn(n, k))
    x = torch.randn(k)
    torch.testing.assert_close(gemv_int4(x, packed, variant), gemv_int4_spec(x, packed), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("variant", ["multithread", "all"])
def test_thread_count_does_not_change_result(variant):
    torch.manual_seed(3)
    packed = quantize_weight_int4(torch.randn(203, 96))
    x = torch.randn(96)
    one = gemv_int4(x, packed, variant, num_threads=1)
    torch.testing.assert_close(gemv_int4(x, packed, variant, num_threads=2), one, rtol=0, atol=0)


def test_batch_of_vectors():
    torch.manual_seed(4)
    packed = quantize_weight_int4(torch.randn(20, 64))
    x = torch.randn(3, 64)
    y = gemv_int4(x, packed)
    assert y.shape == (3, 20)
    torch.testing.assert_close(y, gemv_int4_spec(x, packed), rtol=1e-5, atol=1e-4)


def test_student_library_is_called(tmp_path, monkeypatch):
    # A notebook compiles its own source and passes the library in; a wrong
    # kernel must give a wrong answer (the lab grades the student's code).
    monkeypatch.setenv("EFFML_CACHE_DIR", str(tmp_path))
    torch.manual_seed(5)
    packed, x = quantize_weight_int4(torch.randn(8, 64)), torch.randn(64)
    good = compile_c(c_source(), name="student_int4")
    torch.testing.assert_close(gemv_int4(x, packed, "reference", lib=good), gemv_int4_spec(x, packed))
    bad_src = c_source().replace("int hi = (byte >> 4) - 8;", "int hi = (byte >> 4);")
    bad = compile_c(bad_src, name="student_int4")
    assert not torch.allclose(gemv_int4(x, packed, "reference", lib=bad), gemv_int4_spec(x, packed))
    with pytest.raises(AttributeError, match="gemv_int4_simd"):
        gemv_int4(x, packed, "simd", lib=compile_c("void f(void) {}", name="empty"))


def test_bad_inputs_say_what_to_fix():
    packed = quantize_weight_int4(torch.randn(4, 64))
    with pytest.raises(ValueError, match="K=64"):
        gemv_int4(torch.randn(63), packed)
    with pytest.raises(TypeError, match="floating-point"):
        gemv_int4(torch.ones(64, dtype=torch.int32), packed)
    with pytest.raises(ValueError, match="not one of"):
        gemv_int4(torch.randn(64), packed, "fastest")
    with pytest.raises(TypeError, match="quantize_weight_int4"):
        gemv_int4(torch.randn(64), torch.randn(4, 64))
    xq, xs = quantize_activation_int8(torch.randn(128))
    with pytest.raises(ValueError, match="not contiguous"):
        gemv_int4_quantized(xq[::2], xs[:2], packed)
    with pytest.raises(TypeError, match="dtype float32, expected int8"):
        gemv_int4_quantized(xq[:64].float(), xs[:2], packed)
    with pytest.raises(ValueError, match=r"expected \(64,\)"):
        gemv_int4_quantized(xq, xs, packed)
    corrupt = Int4Weight(packed.codes[:, :16].contiguous(), packed.scales, packed.k)
    with pytest.raises(ValueError, match="packed.scales"):
        gemv_int4(torch.randn(64), corrupt)


@pytest.mark.parametrize("variant", ["simd", "all"])
def test_scalar_fallback_without_avx2(tmp_path, monkeypatch, variant):
    # Without AVX2 (or NEON) the SIMD variants take the #else branch: same results.
    monkeypatch.setenv("EFFML_CACHE_DIR", str(tmp_path))
    lib = compile_c(c_source(), name="int4_no_avx2", extra_flags=("-mno-avx2",))
    torch.manual_seed(6)
    packed, x = quantize_weight_int4(torch.randn(37, 96)), torch.randn(96)
    torch.testing.assert_close(gemv_int4(x, packed, variant, lib=lib), gemv_int4_spec(x, packed),
                               rtol=1e-5, atol=1e-4)
