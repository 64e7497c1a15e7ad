"""Lab 13's trusted checks pass the reference solution, pass correct solutions
written differently, and fail the typical mistakes (run with
``pytest solutions/lab13_on_device_training`` or ``-m lab13_on_device_training``)."""
import pytest

from autograder.labtest import lab_tests

LAB = "lab13_on_device_training"
pytestmark = pytest.mark.lab13_on_device_training

# The set-up cell's imports (the solution cells only define functions and a class).
PREAMBLE = """
import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from helpers import ondevice
QUICK, SEED, BATCH = True, 0, 32
"""

# name: (solution cell, fragment, replacement, the test cell that must fail)
MISTAKES = {
    # ---- 1.1
    "param memory: frozen weights cost nothing": (
        "task_1_1_param_memory_code", "return 4 * total, 4 * trained, 4 * trained",
        "return 4 * trained, 4 * trained, 4 * trained", "task_1_1_param_memory"),
    "param memory: Adam's two buffers": (
        "task_1_1_param_memory_code", "return 4 * total, 4 * trained, 4 * trained",
        "return 4 * total, 4 * trained, 8 * trained", "task_1_1_param_memory"),
    "param memory: gradients for every element": (
        "task_1_1_param_memory_code", "return 4 * total, 4 * trained, 4 * trained",
        "return 4 * total, 4 * total, 4 * trained", "task_1_1_param_memory"),
    # ---- 1.2
    "accountant: bias training keeps the input": (
        "task_1_2_training_memory_code", 'if row["kind"] in ("conv", "linear") and row["train_weight"]:',
        'if row["kind"] in ("conv", "linear") and (row["train_weight"] or row["train_bias"]):',
        "task_1_2_training_memory"),
    "accountant: ReLU masks always kept": (
        "task_1_2_training_memory_code", 'elif row["kind"] == "relu" and grad_flows:',
        'elif row["kind"] == "relu":', "task_1_2_training_memory"),
    "accountant: ReLU keeps fp32 outputs": (
        "task_1_2_training_memory_code", "acts = math.ceil(batch_size * math.prod(row[\"out_shape\"]) / 8)",
        "acts = 4 * batch_size * math.prod(row[\"out_shape\"])", "task_1_2_training_memory"),
    "accountant: the output instead of the input": (
        "task_1_2_training_memory_code", "acts = 4 * batch_size * math.prod(row[\"in_shape\"])",
        "acts = 4 * batch_size * math.prod(row[\"out_shape\"])", "task_1_2_training_memory"),
    "accountant: one image, not the batch": (
        "task_1_2_training_memory_code", "acts = 4 * batch_size * math.prod(row[\"in_shape\"])",
        "acts = 4 * math.prod(row[\"in_shape\"])", "task_1_2_training_memory"),
    "accountant: a layer's own bias makes its ReLU keep a mask before it is known": (
        "task_1_2_training_memory_code",
        '        out[row["name"]] = {"weights": weights, "grads": grads, "optimizer": optimizer, "activations": acts}\n'
        '        grad_flows = grad_flows or bool(row["train_weight"]) or bool(row["train_bias"])',
        '        grad_flows = grad_flows or bool(row["train_weight"])\n'
        '        out[row["name"]] = {"weights": weights, "grads": grads, "optimizer": optimizer, "activations": acts}',
        "task_1_2_training_memory"),
    # ---- 2.1
    "schemes: bias-only without the classifier weight": (
        "task_2_1_scheme_parameters_code", 'keep = biases | head\n', 'keep = biases\n',
        "task_2_1_scheme_parameters"),
    "schemes: sparse forgets the biases": (
        "task_2_1_scheme_parameters_code", "keep = biases | head | set(selection or ())",
        "keep = head | set(selection or ())", "task_2_1_scheme_parameters"),
    "schemes: lite without its branches": (
        "task_2_1_scheme_parameters_code",
        'keep = biases | head | {n for n in names if ".lite." in n or n.startswith("lite.")}',
        "keep = biases | head", "task_2_1_scheme_parameters"),
    "schemes: sorted by name, not model order": (
        "task_2_1_scheme_parameters_code", "return [n for n in names if n in keep]", "return sorted(keep)",
        "task_2_1_scheme_parameters"),
    "schemes: an unknown scheme trains everything": (
        "task_2_1_scheme_parameters_code", 'raise ValueError(f"unknown scheme {scheme!r}")', "keep = set(names)",
        "task_2_1_scheme_parameters"),
    # ---- 2.2
    "lite: branch not initialised to zero": (
        "task_2_2_lite_residual_code", "nn.init.zeros_(self.lite.weight)", "pass", "task_2_2_lite_residual"),
    "lite: max pooling": (
        "task_2_2_lite_residual_code", "self.lite(F.avg_pool2d(x, self.reduction))",
        "self.lite(F.max_pool2d(x, self.reduction))", "task_2_2_lite_residual"),
    "lite: branch at full resolution": (
        "task_2_2_lite_residual_code", "self.lite(F.avg_pool2d(x, self.reduction))", "self.lite(x)",
        "task_2_2_lite_residual"),
    "lite: bilinear upsampling": (
        "task_2_2_lite_residual_code", 'mode="nearest")', 'mode="bilinear", align_corners=False)',
        "task_2_2_lite_residual"),
    "lite: groups ignored": (
        "task_2_2_lite_residual_code", "groups=groups, bias=False)", "bias=False)", "task_2_2_lite_residual"),
    "lite: the branch has a bias": (
        "task_2_2_lite_residual_code", "groups=groups, bias=False)", "groups=groups, bias=True)\n"
        "        nn.init.zeros_(self.lite.bias)", "task_2_2_lite_residual"),
    # ---- 3.1
    "select: greedy by gain per byte": (
        "task_3_1_select_sparse_code", "    items = [k for k, (gain, cost) in contrib.items() if gain > 0 and cost <= budget]",
        "    picked, used = [], 0\n"
        "    for k, (gain, cost) in sorted(contrib.items(), key=lambda kv: -kv[1][0] / kv[1][1]):\n"
        "        if gain > 0 and used + cost <= budget:\n"
        "            picked.append(k)\n"
        "            used += cost\n"
        "    return picked\n"
        "    items = [k for k, (gain, cost) in contrib.items() if gain > 0 and cost <= budget]",
        "task_3_1_select_sparse"),
    "select: greedy by gain": (
        "task_3_1_select_sparse_code", "    items = [k for k, (gain, cost) in contrib.items() if gain > 0 and cost <= budget]",
        "    picked, used = [], 0\n"
        "    for k, (gain, cost) in sorted(contrib.items(), key=lambda kv: -kv[1][0]):\n"
        "        if gain > 0 and used + cost <= budget:\n"
        "            picked.append(k)\n"
        "            used += cost\n"
        "    return picked\n"
        "    items = [k for k, (gain, cost) in contrib.items() if gain > 0 and cost <= budget]",
        "task_3_1_select_sparse"),
    "select: strictly under the budget": (
        "task_3_1_select_sparse_code", "if cost <= budget and (gain > best_gain", "if cost < budget and (gain > best_gain",
        "task_3_1_select_sparse"),
    "select: budget ignored": (
        "task_3_1_select_sparse_code", "if cost <= budget and (gain > best_gain", "if (gain > best_gain",
        "task_3_1_select_sparse"),
    "select: negative gains picked": (
        "task_3_1_select_sparse_code", "    return best\n", "    return best + [k for k, (g, c) in contrib.items() "
        "if g < 0 and c + best_cost <= budget][:1]\n", "task_3_1_select_sparse"),
    # ---- 4.1
    "QAS: s^-1 instead of s^-2": (
        "task_4_1_qas_code", "return grad_w / s ** 2, grad_b / (w_scale * x_scale) ** 2",
        "return grad_w / s, grad_b / (w_scale * x_scale)", "task_4_1_qas"),
    "QAS: multiplies by s^2": (
        "task_4_1_qas_code", "return grad_w / s ** 2, grad_b / (w_scale * x_scale) ** 2",
        "return grad_w * s ** 2, grad_b * (w_scale * x_scale) ** 2", "task_4_1_qas"),
    "QAS: bias without the input scale": (
        "task_4_1_qas_code", "grad_b / (w_scale * x_scale) ** 2", "grad_b / w_scale ** 2", "task_4_1_qas"),
    "QAS: one scale for the whole layer": (
        "task_4_1_qas_code", "s = w_scale.reshape((-1,) + (1,) * (grad_w.dim() - 1))", "s = w_scale.mean()",
        "task_4_1_qas"),
    "QAS: apply_qas leaves the biases": (
        "task_4_1_qas_code",
        "layer.weight.grad, layer.bias.grad = qas_scale(layer.weight.grad, layer.bias.grad, layer.w_scale,",
        "layer.weight.grad, _ = qas_scale(layer.weight.grad, layer.bias.grad, layer.w_scale,", "task_4_1_qas"),
    # ---- 4.2
    "ratios: the whole layer's norms (bias included)": (
        "task_4_2_ratios_code", "(layer.weight.norm() / layer.weight.grad.norm()).item()",
        "(torch.cat([layer.weight.flatten(), layer.bias.flatten()]).norm()"
        " / torch.cat([layer.weight.grad.flatten(), layer.bias.grad.flatten()]).norm()).item()", "task_4_2_ratios"),
    "ratios: inverted": (
        "task_4_2_ratios_code", "(layer.weight.norm() / layer.weight.grad.norm()).item()",
        "(layer.weight.grad.norm() / layer.weight.norm()).item()", "task_4_2_ratios"),
    "ratios: mean absolute values instead of norms": (
        "task_4_2_ratios_code", "(layer.weight.norm() / layer.weight.grad.norm()).item()",
        "(layer.weight.abs().mean() / layer.weight.grad.abs().mean()).item()", "task_4_2_ratios"),
}

# Correct solutions written differently: full marks.
ALTERNATIVES = {
    "param memory as a list": (
        "task_1_1_param_memory_code", "return 4 * total, 4 * trained, 4 * trained",
        "return [4 * total, 4 * trained, 4 * trained]", "task_1_1_param_memory"),
    "accountant: grad flow found by looking back": (
        "task_1_2_training_memory_code", 'elif row["kind"] == "relu" and grad_flows:',
        'elif row["kind"] == "relu" and any(r["train_weight"] or r["train_bias"] '
        'for r in table[:table.index(row)]):', "task_1_2_training_memory"),
    "accountant: mask bytes by integer division": (
        "task_1_2_training_memory_code", "acts = math.ceil(batch_size * math.prod(row[\"out_shape\"]) / 8)",
        "acts = -(-batch_size * math.prod(row[\"out_shape\"]) // 8)", "task_1_2_training_memory"),
    "select by dynamic programming over items": (
        "task_3_1_select_sparse_code", "    items = [k for k, (gain, cost) in contrib.items() if gain > 0 and cost <= budget]",
        "    states = {0: (0.0, [])}  # cost -> (gain, items)\n"
        "    for k, (gain, cost) in contrib.items():\n"
        "        if gain <= 0:\n"
        "            continue\n"
        "        for c0, (g0, pick) in list(states.items()):\n"
        "            c1 = c0 + cost\n"
        "            if c1 <= budget and (c1 not in states or states[c1][0] < g0 + gain):\n"
        "                states[c1] = (g0 + gain, pick + [k])\n"
        "    return max(states.values(), key=lambda s: s[0])[1]\n"
        "    items = [k for k, (gain, cost) in contrib.items() if gain > 0 and cost <= budget]",
        "task_3_1_select_sparse"),
    "QAS with explicit multiplications and in-place grads": (
        "task_4_1_qas_code",
        "        layer.weight.grad, layer.bias.grad = qas_scale(layer.weight.grad, layer.bias.grad, layer.w_scale,\n"
        "                                                       layer.x_scale)",
        "        gw, gb = qas_scale(layer.weight.grad, layer.bias.grad, layer.w_scale, layer.x_scale)\n"
        "        layer.weight.grad.copy_(gw)\n"
        "        layer.bias.grad.copy_(gb)",
        "task_4_1_qas"),
    "lite with nn.Conv2d and upsampling by the output size": (
        "task_2_2_lite_residual_code",
        "self.lite = ondevice.Conv2d(conv.in_channels, conv.out_channels, 3, stride=conv.stride, padding=1,",
        "self.lite = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=conv.stride, padding=1,",
        "task_2_2_lite_residual"),
}


globals().update(lab_tests(LAB, PREAMBLE, MISTAKES, ALTERNATIVES))
