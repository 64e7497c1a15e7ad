"""Lab 02's trusted checks pass the reference solution, pass correct
solutions written differently, and fail the typical mistakes (run with
``pytest solutions/lab02_quantization`` or ``-m lab02_quantization``)."""
import pytest

from autograder.labtest import lab_tests, locked_cell

LAB = "lab02_quantization"
pytestmark = pytest.mark.lab02_quantization


def _locked_cell(grade_id):
    return locked_cell(LAB, grade_id)


# The set-up cell (the solution cells need only its imports and the baseline), and `results`,
# which the locked k-means cell fills and the int8 cell extends.
PREAMBLE = """
import copy
import math
import types

import torch
from torch import nn
import torch.nn.functional as F

from helpers import figures, profile
from helpers.compression import digits_accuracy, integer_conv2d, integer_linear, weight_layers
from helpers.data import digits_loaders, load_digits
from helpers.models import VGGDigits, load_baseline
from helpers.train import seed_everything, train

plots = types.SimpleNamespace()  # figures are not graded
QUICK, SEED = True, 0
seed_everything(SEED)
TRAIN_LIMIT, CODEBOOK_EPOCHS, CALIB_SIZE = 64, 1, 128
fp32 = load_baseline()
fp32_acc = 99.44  # the baseline's test accuracy (measured for real before the int8 cell)
fp32_kb = profile.model_size_bytes(fp32, 32) / 1024
results = {"fp32": (fp32_kb, fp32_acc)}
"""

# The locked int8 cell (calibration, int8_model, int8_acc_drop) for the check that reads them.
EXTRA = {"task_2_7_quantize_layer": "fp32_acc = digits_accuracy(fp32)\n" + _locked_cell("int8_model_run")}

# name: (solution cell, fragment, replacement, the test cell that must fail)
MISTAKES = {
    # ---- 1.1
    "k-means: an empty cluster divides by zero": (
        "task_1_1_kmeans_code", "codebook = torch.where(counts > 0, sums / counts.clamp(min=1), codebook)",
        "codebook = sums / counts", "task_1_1_kmeans"),
    "k-means: centroids never moved": (
        "task_1_1_kmeans_code", "codebook = torch.where(counts > 0, sums / counts.clamp(min=1), codebook)",
        "pass", "task_1_1_kmeans"),
    "k-means: nearest by signed difference": (
        "task_1_1_kmeans_code", "return order[torch.bucketize(w, (sorted_cb[1:] + sorted_cb[:-1]) / 2)]",
        "return (w[:, None] - codebook[None, :]).argmin(1)", "task_1_1_kmeans"),
    "k-means: int32 labels": (
        "task_1_1_kmeans_code", "return codebook, assign(codebook).view(weight.shape)",
        "return codebook, assign(codebook).view(weight.shape).to(torch.int32)", "task_1_1_kmeans"),
    # ---- 1.2
    "update codebook: not in place": (
        "task_1_2_update_codebook_code",
        "codebook.copy_(torch.where(counts > 0, sums / counts.clamp(min=1), codebook))",
        "codebook = torch.where(counts > 0, sums / counts.clamp(min=1), codebook)", "task_1_2_update_codebook"),
    "update codebook: an empty cluster goes to 0": (
        "task_1_2_update_codebook_code", "torch.where(counts > 0, sums / counts.clamp(min=1), codebook)",
        "sums / counts.clamp(min=1)", "task_1_2_update_codebook"),
    # ---- 2.1
    "linear: range not extended to 0": (
        "task_2_1_linear_quantize_code", "rmin = min(fp_tensor.min().item(), 0.0)", "rmin = fp_tensor.min().item()",
        "task_2_1_linear_quantize"),
    "linear: int8 conversion wraps (no clamp)": (
        "task_2_1_linear_quantize_code", "return q.clamp(qmin, qmax).to(torch.int8)", "return q.to(torch.int8)",
        "task_2_1_linear_quantize"),
    "linear: zero point added after clamping": (
        "task_2_1_linear_quantize_code",
        "q = torch.round(fp_tensor / scale) + zero_point\n    return q.clamp(qmin, qmax).to(torch.int8)",
        "q = torch.round(fp_tensor / scale).clamp(qmin, qmax) + zero_point\n    return q.to(torch.int8)",
        "task_2_1_linear_quantize"),
    "linear: the scale as a tensor": (
        "task_2_1_linear_quantize_code", "    return scale, zero_point\n",
        "    return torch.tensor(scale), zero_point\n", "task_2_1_linear_quantize"),
    "linear: an all-zero tensor divides by zero": (
        "task_2_1_linear_quantize_code", "    if rmax == rmin:\n        return 1.0, 0\n", "",
        "task_2_1_linear_quantize"),
    # ---- 2.2
    "per-channel: one scale for the whole tensor": (
        "task_2_2_per_channel_code", "max_abs = w.abs().reshape(w.shape[0], -1).amax(dim=1)",
        "max_abs = w.abs().max().expand(w.shape[0])", "task_2_2_per_channel"),
    "per-channel: qmax = 2**(bits-1)": (
        "task_2_2_per_channel_code", "qmax = 2 ** (bits - 1) - 1", "qmax = 2 ** (bits - 1)", "task_2_2_per_channel"),
    # ---- 2.3
    "bias: input scale forgotten": (
        "task_2_3_bias_code", "(weight_scales.double() * input_scale)", "weight_scales.double()", "task_2_3_bias"),
    "bias: int64 codes": (
        "task_2_3_bias_code", ".to(torch.int32)", ".to(torch.int64)", "task_2_3_bias"),
    # ---- 2.4
    "requantize: truncation instead of rounding": (
        "task_2_4_requantize_code",
        "rounded = (prod + (torch.ones_like(total_shift) << (total_shift - 1))) >> total_shift",
        "rounded = prod >> total_shift", "task_2_4_requantize"),
    "multiplier: m0 == 2**31 not renormalised": (
        "task_2_4_requantize_code", "    if m0 == 2 ** 31:\n        m0 //= 2\n        exponent += 1\n", "",
        "task_2_4_requantize"),
    "multiplier: shift with the wrong sign": (
        "task_2_4_requantize_code", "return int(m0), int(-exponent)", "return int(m0), int(exponent)",
        "task_2_4_requantize"),
    "requantize: int8 conversion before clamping": (
        "task_2_4_requantize_code", "return (rounded + zero_point).clamp(qmin, qmax).to(torch.int8)",
        "return (rounded + zero_point).to(torch.int8).clamp(qmin, qmax)", "task_2_4_requantize"),
    # ---- 2.5
    "integer conv: input zero point not subtracted": (
        "task_2_5_integer_layers_code", "acc = integer_conv2d(q_x.to(torch.int32) - z_x, q_w",
        "acc = integer_conv2d(q_x.to(torch.int32), q_w", "task_2_5_integer_layers"),
    "integer linear: bias not added": (
        "task_2_5_integer_layers_code", "acc = integer_linear(q_x.to(torch.int32) - z_x, q_w) + q_bias.view(1, -1)",
        "acc = integer_linear(q_x.to(torch.int32) - z_x, q_w)", "task_2_5_integer_layers"),
    "integer conv: stride dropped": (
        "task_2_5_integer_layers_code", "q_w, stride=stride, padding=padding)", "q_w, padding=padding)",
        "task_2_5_integer_layers"),
    # ---- 2.6
    "fold: eps forgotten": (
        "task_2_6_fold_bn_code", "torch.sqrt(bn.running_var + bn.eps)", "torch.sqrt(bn.running_var)",
        "task_2_6_fold_bn"),
    "fold: the conv's own bias ignored": (
        "task_2_6_fold_bn_code", "bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)",
        "bias = torch.zeros_like(bn.running_mean)", "task_2_6_fold_bn"),
    "fold: stride dropped": (
        "task_2_6_fold_bn_code", "stride=conv.stride,\n", "\n", "task_2_6_fold_bn"),
    "fold: scales the original conv in place": (
        "task_2_6_fold_bn_code", "folded.weight.copy_(conv.weight * a.view(-1, 1, 1, 1))",
        "folded.weight.copy_(conv.weight.mul_(a.view(-1, 1, 1, 1)))", "task_2_6_fold_bn"),
    # ---- 2.7
    "quantize layer: multiplier inverted": (
        "task_2_7_quantize_layer_code", "quantize_multiplier(float(input_scale * s / output_scale))",
        "quantize_multiplier(float(output_scale / (input_scale * s)))", "task_2_7_quantize_layer"),
    "quantize layer: bias at the output scale": (
        "task_2_7_quantize_layer_code", "quantize_bias(layer.bias, w_scales, input_scale)",
        "quantize_bias(layer.bias, w_scales, output_scale)", "task_2_7_quantize_layer"),
    "quantize layer: stride and padding as tuples": (
        "task_2_7_quantize_layer_code", "layer.stride[0], layer.padding[0]", "layer.stride, layer.padding",
        "task_2_7_quantize_layer"),
    "quantize layer: weights at 7 bits": (
        "task_2_7_quantize_layer_code", "quantize_weight_per_channel(layer.weight, 8)",
        "quantize_weight_per_channel(layer.weight, 7)", "task_2_7_quantize_layer"),
}

# Correct solutions written differently: full marks.
ALTERNATIVES = {
    "k-means assignment with torch.cdist": (
        "task_1_1_kmeans_code", "return order[torch.bucketize(w, (sorted_cb[1:] + sorted_cb[:-1]) / 2)]",
        "return torch.cdist(w[:, None], codebook[:, None]).argmin(1)", "task_1_1_kmeans"),
    "linear quantize rounding after adding the zero point": (
        "task_2_1_linear_quantize_code",
        "q = torch.round(fp_tensor / scale) + zero_point\n    return q.clamp(qmin, qmax).to(torch.int8)",
        "return torch.clamp(torch.round(fp_tensor / scale + zero_point), qmin, qmax).to(torch.int8)",
        "task_2_1_linear_quantize"),
    "multiplier by halving and doubling": (
        "task_2_4_requantize_code",
        "    mantissa, exponent = math.frexp(m)",
        "    shift = 0\n"
        "    while m < 0.5:\n"
        "        m, shift = m * 2, shift + 1\n"
        "    while m >= 1:\n"
        "        m, shift = m / 2, shift - 1\n"
        "    m0 = round(m * 2 ** 31)\n"
        "    if m0 == 2 ** 31:\n"
        "        m0, shift = m0 // 2, shift - 1\n"
        "    return int(m0), int(shift)\n"
        "    mantissa, exponent = math.frexp(m)",
        "task_2_4_requantize"),
    "requantize with a floor division": (
        "task_2_4_requantize_code",
        "rounded = (prod + (torch.ones_like(total_shift) << (total_shift - 1))) >> total_shift",
        "one = torch.ones_like(total_shift)\n"
        "    rounded = torch.div(prod + (one << (total_shift - 1)), one << total_shift, rounding_mode='floor')",
        "task_2_4_requantize"),
    "fold by copying the conv": (
        "task_2_6_fold_bn_code", "    folded = nn.Conv2d(",
        "    folded = copy.deepcopy(conv)\n"
        "    b = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)\n"
        "    folded.weight.mul_(a.view(-1, 1, 1, 1))\n"
        "    folded.bias = nn.Parameter(bn.bias + (b - bn.running_mean) * a)\n"
        "    return folded\n"
        "    folded = nn.Conv2d(",
        "task_2_6_fold_bn"),
}


globals().update(lab_tests(LAB, PREAMBLE, MISTAKES, ALTERNATIVES,
                           extra=lambda harness, test_id: EXTRA.get(test_id, "")))
