"""Lab 14's trusted checks pass the reference solution, pass correct
solutions written differently, and fail the typical mistakes (run with
``pytest solutions/lab14_tsm`` or ``-m lab14_tsm``)."""
import pytest

from autograder.labtest import lab_tests

# Stand-ins for the locked cells: the checks read `causal_model` and `test_clips`
# (an untrained VideoNet has the causal model's layers) and call `ResidualShift`.
PREAMBLE = """
import math, time
import numpy as np
import torch
from torch import nn
from helpers import data, video
torch.manual_seed(0)
T = 8
test_clips, test_labels = data.moving_digits("test", 4, frames=T, seed=0)
causal_model = video.video_net()
"""
LAB = "lab14_tsm"
pytestmark = pytest.mark.lab14_tsm

SHIFT = "task_2_1_temporal_shift_code"
ONLINE = "task_2_3_online_shift_code"
COUNT = "task_3_1_count_macs_code"
STEP = "task_4_1_online_tsm_code"

# name: (solution cell, fragment, replacement, the test cell that must fail)
MISTAKES = {
    "consensus: frames and clips swapped in the reshape": (
        "task_1_1_consensus_code", "view(nt // n_segment, n_segment, k).mean(dim=1)",
        "view(n_segment, nt // n_segment, k).mean(dim=0)", "task_1_1_consensus"),
    "consensus: max instead of mean": (
        "task_1_1_consensus_code", ".mean(dim=1)", ".max(dim=1).values", "task_1_1_consensus"),
    "consensus: sum instead of mean": (
        "task_1_1_consensus_code", ".mean(dim=1)", ".sum(dim=1)", "task_1_1_consensus"),
    "shift: roll instead of shift (no zero padding)": (
        SHIFT, "        out[:, :-1, :fold] = x[:, 1:, :fold]                            # shift left: t sees t+1\n"
               "        out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]            # shift right: t sees t-1\n",
        "        out[:, :, :fold] = torch.roll(x[:, :, :fold], -1, dims=1)\n"
        "        out[:, :, fold:2 * fold] = torch.roll(x[:, :, fold:2 * fold], 1, dims=1)\n",
        "task_2_1_temporal_shift"),
    "shift: both directions reversed": (
        SHIFT, "        out[:, :-1, :fold] = x[:, 1:, :fold]                            # shift left: t sees t+1\n"
               "        out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]            # shift right: t sees t-1\n",
        "        out[:, 1:, :fold] = x[:, :-1, :fold]\n"
        "        out[:, :-1, fold:2 * fold] = x[:, 1:, fold:2 * fold]\n",
        "task_2_1_temporal_shift"),
    "shift: fold computed with round": (
        SHIFT, "fold = c // fold_div", "fold = round(c / fold_div)", "task_2_1_temporal_shift"),
    "shift: fold computed with ceil": (
        SHIFT, "fold = c // fold_div", "fold = math.ceil(c / fold_div)", "task_2_1_temporal_shift"),
    "shift: batch and time swapped in the reshape": (
        SHIFT, "x = x.view(nt // n_segment, n_segment, c, h, w)\n    out = torch.zeros_like(x)",
        "x = x.view(n_segment, nt // n_segment, c, h, w).transpose(0, 1)\n    out = torch.zeros_like(x)",
        "task_2_1_temporal_shift"),
    "shift: the batch dimension shifted instead of time": (
        SHIFT, "x = x.view(nt // n_segment, n_segment, c, h, w)\n    out = torch.zeros_like(x)",
        "x = x.view(nt // n_segment, n_segment, c, h, w).transpose(0, 1)\n    out = torch.zeros_like(x)",
        "task_2_1_temporal_shift"),
    "shift: causal shift looks ahead": (
        SHIFT, "out[:, 1:, :fold] = x[:, :-1, :fold]                            # frame t sees t-1",
        "out[:, :-1, :fold] = x[:, 1:, :fold]", "task_2_1_temporal_shift"),
    "shift: causal flag ignored": (
        SHIFT, "    if causal:\n", "    if False:\n", "task_2_1_temporal_shift"),
    "shift: in place on the input": (
        SHIFT, "    out = torch.zeros_like(x)\n", "    out = x\n    x = x.clone()\n    out[:, :, :] = 0\n",
        "task_2_1_temporal_shift"),
    "residual shift: the identity path shifted too": (
        "task_2_2_residual_shift_code",
        "return x + self.net(temporal_shift(x, self.n_segment, self.fold_div, causal=self.causal))",
        "x = temporal_shift(x, self.n_segment, self.fold_div, causal=self.causal)\n        return x + self.net(x)",
        "task_2_2_residual_shift"),
    "residual shift: shift after the branch": (
        "task_2_2_residual_shift_code",
        "return x + self.net(temporal_shift(x, self.n_segment, self.fold_div, causal=self.causal))",
        "return x + temporal_shift(self.net(x), self.n_segment, self.fold_div, causal=self.causal)",
        "task_2_2_residual_shift"),
    "residual shift: no residual": (
        "task_2_2_residual_shift_code", "return x + self.net(", "return self.net(", "task_2_2_residual_shift"),
    "residual shift: the block's fold_div ignored": (
        "task_2_2_residual_shift_code", "temporal_shift(x, self.n_segment, self.fold_div, causal=self.causal)",
        "temporal_shift(x, self.n_segment, causal=self.causal)", "task_2_2_residual_shift"),
    "online shift: cache not updated": (
        ONLINE, "return out, x[:, :fold]", "return out, cache", "task_2_3_online_shift"),
    "online shift: cache updated before use": (
        ONLINE, "    if cache is None:\n        cache = torch.zeros_like(x[:, :fold])\n",
        "    cache = x[:, :fold]\n", "task_2_3_online_shift"),
    "online shift: no zeros at the first frame": (
        ONLINE, "cache = torch.zeros_like(x[:, :fold])", "cache = x[:, :fold]", "task_2_3_online_shift"),
    "online shift: the last fold of channels cached": (
        ONLINE, "return out, x[:, :fold]", "return out, x[:, x.shape[1] - fold:]", "task_2_3_online_shift"),
    "online shift: fold computed with round": (
        ONLINE, "fold = x.shape[1] // fold_div", "fold = round(x.shape[1] / fold_div)", "task_2_3_online_shift"),
    "online shift: x modified in place": (
        ONLINE, "    out = torch.cat([cache, x[:, fold:]], dim=1)\n    return out, x[:, :fold]",
        "    new = x[:, :fold].clone()\n    x[:, :fold] = cache\n    return x, new", "task_2_3_online_shift"),
    "counter: Conv3d depth ignored": (
        COUNT, "math.prod(module.kernel_size)", "module.kernel_size[0] * module.kernel_size[1]",
        "task_3_1_count_macs"),
    "counter: Conv3d not counted": (
        COUNT, "if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear))", "if isinstance(m, (nn.Conv2d, nn.Linear))",
        "task_3_1_count_macs"),
    "counter: groups ignored": (
        COUNT, "(module.in_channels // module.groups)", "module.in_channels", "task_3_1_count_macs"),
    "counter: a linear layer's leading dimensions ignored": (
        COUNT, "macs += output.numel() * module.in_features",
        "macs += output.shape[0] * module.in_features * module.out_features", "task_3_1_count_macs"),
    "counter: parameters of conv and linear weights only": (
        COUNT, "int(sum(p.numel() for p in model.parameters()))",
        "int(sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear))))",
        "task_3_1_count_macs"),
    "counter: bias additions counted as MACs": (
        COUNT, "macs += output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)",
        "macs += output.numel() * ((module.in_channels // module.groups) * math.prod(module.kernel_size)"
        " + (module.bias is not None))", "task_3_1_count_macs"),
    "online TSM: caches reset at every frame": (
        STEP, "shifted, cache = online_shift(x, cache, fold_div)", "shifted, cache = online_shift(x, None, fold_div)",
        "task_4_1_online_tsm"),
    "online TSM: the old caches returned": (
        STEP, "return model.head(x), new_caches", "return model.head(x), caches", "task_4_1_online_tsm"),
    "online TSM: the identity path shifted too": (
        STEP, "x = trans(x + block.net(shifted))", "x = trans(shifted + block.net(shifted))", "task_4_1_online_tsm"),
    "online TSM: no shift": (
        STEP, "x = trans(x + block.net(shifted))", "x = trans(x + block.net(x))", "task_4_1_online_tsm"),
    "online TSM: fold_div not passed on": (
        STEP, "online_shift(x, cache, fold_div)", "online_shift(x, cache)", "task_4_1_online_tsm"),
    "online TSM: past frames buffered and the clip recomputed": (
        STEP, "    if caches is None:\n        caches = [None] * len(model.blocks)\n",
        "    frames = list(caches or []) + [frame]\n"
        "    clip = torch.stack(frames, 1)\n"
        "    n, t = clip.shape[:2]\n"
        "    x = model.stem(clip.flatten(0, 1))\n"
        "    for block, trans in zip(model.blocks, model.transitions):\n"
        "        x = trans(x + block.net(temporal_shift(x, t, fold_div, causal=True)))\n"
        "    return model.head(x).view(n, t, -1)[:, -1], frames\n",
        "task_4_1_online_tsm"),
}

# Correct solutions written differently: full marks.
ALTERNATIVES = {
    "consensus: sum over a reshape divided by T": (
        "task_1_1_consensus_code", "return frame_logits.view(nt // n_segment, n_segment, k).mean(dim=1)",
        "return frame_logits.reshape(-1, n_segment, k).sum(1) / n_segment", "task_1_1_consensus"),
    "consensus: a loop over clips": (
        "task_1_1_consensus_code", "return frame_logits.view(nt // n_segment, n_segment, k).mean(dim=1)",
        "return torch.stack([frame_logits[i:i + n_segment].mean(0) for i in range(0, nt, n_segment)])",
        "task_1_1_consensus"),
    "shift: torch.cat of padded slices (as in the paper's code path without a buffer)": (
        SHIFT, "    out = torch.zeros_like(x)\n",
        "    z = torch.zeros_like(x[:, :1])\n"
        "    if causal:\n"
        "        left = torch.cat([z[:, :, :fold], x[:, :-1, :fold]], 1)\n"
        "        return torch.cat([left, x[:, :, fold:]], 2).reshape(nt, c, h, w)\n"
        "    a = torch.cat([x[:, 1:, :fold], z[:, :, :fold]], 1)\n"
        "    b = torch.cat([z[:, :, fold:2 * fold], x[:, :-1, fold:2 * fold]], 1)\n"
        "    return torch.cat([a, b, x[:, :, 2 * fold:]], 2).reshape(nt, c, h, w)\n"
        "    out = torch.zeros_like(x)\n",
        "task_2_1_temporal_shift"),
    "shift: a clone modified in place, with a frame loop": (
        SHIFT, "    out = torch.zeros_like(x)\n",
        "    out = x.clone()\n"
        "    for t in range(n_segment):\n"
        "        if causal:\n"
        "            out[:, t, :fold] = x[:, t - 1, :fold] if t > 0 else 0\n"
        "        else:\n"
        "            out[:, t, :fold] = x[:, t + 1, :fold] if t + 1 < n_segment else 0\n"
        "            out[:, t, fold:2 * fold] = x[:, t - 1, fold:2 * fold] if t > 0 else 0\n"
        "    return out.reshape(nt, c, h, w)\n",
        "task_2_1_temporal_shift"),
    "residual shift: in two statements, keyword arguments": (
        "task_2_2_residual_shift_code",
        "return x + self.net(temporal_shift(x, self.n_segment, self.fold_div, causal=self.causal))",
        "shifted = temporal_shift(x, n_segment=self.n_segment, fold_div=self.fold_div, causal=self.causal)\n"
        "        out = self.net(shifted)\n        return out + x",
        "task_2_2_residual_shift"),
    "online shift: a clone with the cache written in, a cloned cache": (
        ONLINE, "    out = torch.cat([cache, x[:, fold:]], dim=1)\n    return out, x[:, :fold]",
        "    out = x.clone()\n    out[:, :fold] = cache\n    return out, x[:, :fold].clone()",
        "task_2_3_online_shift"),
    "online shift: a tuple-free list return": (
        ONLINE, "    out = torch.cat([cache, x[:, fold:]], dim=1)\n    return out, x[:, :fold]",
        "    out = torch.cat([cache, x[:, fold:]], dim=1)\n    return [out, x[:, :fold].contiguous()]",
        "task_2_3_online_shift"),
    "counter: kernel taps from the weight's shape": (
        COUNT, "macs += output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)",
        "macs += output.numel() * module.weight[0].numel()", "task_3_1_count_macs"),
    "counter: layers matched by type name, no try/finally": (
        COUNT, "if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear))",
        "if type(m).__name__ in ('Conv2d', 'Conv3d', 'Linear')", "task_3_1_count_macs"),
    "online TSM: an index loop and a tuple of caches": (
        STEP, "    for block, trans, cache in zip(model.blocks, model.transitions, caches):\n"
              "        shifted, cache = online_shift(x, cache, fold_div)\n"
              "        x = trans(x + block.net(shifted))\n"
              "        new_caches.append(cache)\n"
              "    return model.head(x), new_caches",
        "    for i in range(len(model.blocks)):\n"
        "        shifted, c = online_shift(x, caches[i], fold_div)\n"
        "        x = model.transitions[i](model.blocks[i].net(shifted) + x)\n"
        "        new_caches.append(c)\n"
        "    return model.head(x), tuple(new_caches)",
        "task_4_1_online_tsm"),
}


globals().update(lab_tests(LAB, PREAMBLE, MISTAKES, ALTERNATIVES))
