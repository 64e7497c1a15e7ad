"""int8 GEMM / conv2d / depthwise conv (incl. in place) against the numpy references."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from helpers.kernels.int8 import (conv2d_int8, conv2d_int8_spec, depthwise_conv2d_int8,
                                  depthwise_conv2d_int8_inplace, depthwise_conv2d_int8_spec, gemm_int8,
                                  gemm_int8_spec, quantize_multiplier, requantize_spec)

FEW = settings(max_examples=12, deadline=None)


def _i8(rng, shape):
    return rng.integers(-128, 128, shape, dtype=np.int8)


def _requant_args(rng, channels, per_channel, k):
    # Scales that map the accumulator range onto int8, so outputs are not all clipped.
    base = 1.0 / (64.0 * np.sqrt(k) * 16)
    scales = rng.uniform(0.5, 2.0, channels if per_channel else 1) * base
    mult, shift = quantize_multiplier(scales)
    return dict(multiplier=mult, shift=shift, out_zero_point=int(rng.integers(-20, 20)))


def test_quantize_multiplier_represents_scale():
    scales = np.array([1e-6, 0.0123, 0.5, 0.999999999, 1.0, 3.7])
    mult, shift = quantize_multiplier(scales)
    assert mult.dtype == np.int32 and ((mult >= 2**30) & (mult < 2**31)).all()
    np.testing.assert_allclose(mult * 2.0 ** (shift.astype(float) - 31), scales, rtol=2**-30)
    with pytest.raises(ValueError, match="positive"):
        quantize_multiplier([0.1, 0.0])


def test_requantize_rounds_half_up_and_clamps():
    mult, shift = quantize_multiplier(0.5)
    out = requantize_spec(np.array([5, -5, 7, 1000, -1000]), mult, shift, out_zero_point=1, act_min=-128, act_max=127)
    assert out.tolist() == [4, -1, 5, 127, -128]      # 2.5->3, -2.5->-2, 3.5->4, then +1


@FEW
@given(m=st.integers(1, 9), n=st.integers(1, 17), k=st.integers(1, 70), per_channel=st.booleans(),
       with_bias=st.booleans(), relu=st.booleans(), seed=st.integers(0, 2**16))
def test_gemm_matches_spec(m, n, k, per_channel, with_bias, relu, seed):
    rng = np.random.default_rng(seed)
    a, b = _i8(rng, (m, k)), _i8(rng, (n, k))
    bias = rng.integers(-5000, 5000, n).astype(np.int32) if with_bias else None
    kw = _requant_args(rng, n, per_channel, k)
    kw.update(a_zero_point=int(rng.integers(-128, 128)), act_min=kw["out_zero_point"] if relu else -128)
    out = gemm_int8(a, b, bias, **kw)
    assert out.dtype == np.int8 and out.shape == (m, n)
    np.testing.assert_array_equal(out, gemm_int8_spec(a, b, bias, **kw))


def test_gemm_spec_is_scaled_float_product():
    rng = np.random.default_rng(0)
    a, b = _i8(rng, (4, 32)), _i8(rng, (6, 32))
    scale = 1 / 2000
    mult, shift = quantize_multiplier(scale)
    got = gemm_int8_spec(a, b, a_zero_point=3, out_zero_point=0, multiplier=mult, shift=shift)
    want = np.clip(np.floor((a.astype(float) - 3) @ b.T.astype(float) * scale + 0.5), -128, 127)
    np.testing.assert_array_equal(got, want)


CONV_CASES = [  # N, H, W, C, OC, KH, KW, stride, padding
    (1, 5, 5, 1, 1, 1, 1, 1, 0),
    (2, 9, 11, 3, 4, 3, 3, 2, 1),
    (1, 8, 6, 5, 7, 3, 1, (1, 2), (1, 0)),
    (3, 7, 7, 16, 8, 5, 5, 1, 2),
    (1, 4, 4, 2, 3, 4, 4, 1, 0),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_spec(case):
    n, h, w, c, oc, kh, kw, stride, padding = case
    rng = np.random.default_rng(sum(case[:7]))
    x, wt = _i8(rng, (n, h, w, c)), _i8(rng, (oc, kh, kw, c))
    bias = rng.integers(-3000, 3000, oc).astype(np.int32)
    kw_ = _requant_args(rng, oc, True, kh * kw * c)
    kw_.update(x_zero_point=int(rng.integers(-128, 128)), stride=stride, padding=padding)
    got = conv2d_int8(torch.from_numpy(x), torch.from_numpy(wt), torch.from_numpy(bias), **kw_)
    want = conv2d_int8_spec(x, wt, bias, **kw_)
    assert isinstance(got, torch.Tensor) and tuple(got.shape) == want.shape
    np.testing.assert_array_equal(got.numpy(), want)
    assert ((want > -128) & (want < 127)).mean() > 0.5, "degenerate test: output saturated"


DW_CASES = [  # N, H, W, C, KH, KW, stride, padding
    (1, 6, 6, 4, 3, 3, 1, 1),
    (2, 9, 7, 3, 3, 3, 2, 1),
    (1, 10, 8, 5, 5, 5, 1, 2),
    (1, 5, 9, 2, 1, 3, (2, 1), 0),
]


def _dw_setup(case):
    n, h, w, c, kh, kw, stride, padding = case
    rng = np.random.default_rng(sum(case[:6]))
    x, wt = _i8(rng, (n, h, w, c)), _i8(rng, (kh, kw, c))
    bias = rng.integers(-2000, 2000, c).astype(np.int32)
    kw_ = _requant_args(rng, c, True, kh * kw)
    kw_.update(x_zero_point=int(rng.integers(-50, 50)), stride=stride, padding=padding)
    return x, wt, bias, kw_


@pytest.mark.parametrize("case", DW_CASES)
def test_depthwise_matches_spec(case):
    x, wt, bias, kw = _dw_setup(case)
    want = depthwise_conv2d_int8_spec(x, wt, bias, **kw)
    np.testing.assert_array_equal(depthwise_conv2d_int8(x, wt, bias, **kw), want)
    assert ((want > -128) & (want < 127)).mean() > 0.5, "degenerate test: output saturated"


@pytest.mark.parametrize("case", DW_CASES)
def test_depthwise_in_place_overwrites_input(case):
    x, wt, bias, kw = _dw_setup(case)
    want = depthwise_conv2d_int8_spec(x, wt, bias, **kw)
    h, w = x.shape[1:3]
    for i in range(x.shape[0]):
        buf = x[i].copy()
        out = depthwise_conv2d_int8_inplace(buf, wt, bias, height=h, width=w, **kw)
        assert np.shares_memory(out, buf)
        np.testing.assert_array_equal(out, want[i])
        np.testing.assert_array_equal(buf.reshape(-1)[: out.size], want[i].reshape(-1))


def test_depthwise_in_place_torch_buffer():
    x, wt, bias, kw = _dw_setup(DW_CASES[0])
    buf = torch.from_numpy(x[0].reshape(-1).copy())
    out = depthwise_conv2d_int8_inplace(buf, wt, bias, height=6, width=6, **kw)
    assert out.data_ptr() == buf.data_ptr()
    np.testing.assert_array_equal(out.numpy(), depthwise_conv2d_int8_spec(x, wt, bias, **kw)[0])


def test_bad_inputs_say_what_to_fix():
    rng = np.random.default_rng(0)
    x, wt = _i8(rng, (1, 6, 6, 4)), _i8(rng, (8, 3, 3, 4))
    mult, shift = quantize_multiplier(0.01)
    kw = dict(x_zero_point=0, out_zero_point=0, multiplier=mult, shift=shift)
    with pytest.raises(TypeError, match=r"dtype int16, expected int8.*astype\(np.int8\)"):
        conv2d_int8(x.astype(np.int16), wt, **kw)
    with pytest.raises(ValueError, match="not contiguous"):
        conv2d_int8(np.transpose(x, (0, 2, 1, 3)), wt, **kw)
    with pytest.raises(ValueError, match=r"4 dims \[N, H, W, C\]"):
        conv2d_int8(x[0], wt, **kw)
    with pytest.raises(ValueError, match="input channels"):
        conv2d_int8(x, wt[..., :3].copy(), **kw)
    with pytest.raises(ValueError, match=r"expected a scalar or \(8,\)"):
        conv2d_int8(x, wt, multiplier=np.full(3, 2**30), shift=0, x_zero_point=0, out_zero_point=0)
    with pytest.raises(ValueError, match="does not fit"):
        conv2d_int8(x, _i8(rng, (2, 9, 9, 4)), **kw)
    with pytest.raises(ValueError, match="nn.Linear layout"):
        gemm_int8(_i8(rng, (2, 5)), _i8(rng, (3, 6)), a_zero_point=0, **{k: kw[k] for k in kw if k != "x_zero_point"})
    dw = _i8(rng, (3, 3, 4))
    with pytest.raises(ValueError, match="OH\\*OW <= H\\*W"):
        depthwise_conv2d_int8_inplace(x[0].copy(), dw, height=6, width=6, padding=2, **kw)
    with pytest.raises(ValueError, match="one image"):
        depthwise_conv2d_int8_inplace(x.copy(), dw, height=6, width=5, **kw)
    ro = x[0].copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        depthwise_conv2d_int8_inplace(ro, dw, height=6, width=6, **kw)
