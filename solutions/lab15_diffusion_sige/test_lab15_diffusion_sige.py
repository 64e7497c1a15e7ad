"""Lab 15's trusted checks pass the reference solution, pass correct
solutions written differently, and fail the typical mistakes (run with
``pytest solutions/lab15_diffusion_sige`` or ``-m lab15_diffusion_sige``)."""
import pytest

from autograder.labtest import lab_tests

# Stand-in for the locked set-up cell: the solution cells need only these names
# (the checks build their own models in the kernel).
PREAMBLE = """
import math, time
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from helpers import diffusion
from helpers.diffusion import ALPHA_BAR, T_STEPS, spaced_timesteps
torch.manual_seed(0)
"""
LAB = "lab15_diffusion_sige"
pytestmark = pytest.mark.lab15_diffusion_sige

DDPM = "task_1_1_ddpm_step_code"
DDIM = "task_1_2_ddim_step_code"
LOOP = "task_1_3_sample_code"
MASK = "task_2_1_downsample_mask_code"
BLOCKS = "task_2_2_active_blocks_code"
GATHER = "task_2_3_gather_code"
SCATTER = "task_2_4_scatter_code"
ENGINE = "task_2_5_sige_engine_code"

GATHER_LOOP = ("        ya, xa = max(y0, 0), max(x0, 0)\n"
               "        yb, xb = min(y0 + size, h), min(x0 + size, w)\n"
               "        out[i, :, ya - y0:yb - y0, xa - x0:xb - x0] = x[0, :, ya:yb, xa:xb]\n")

# name: (solution cell, fragment, replacement, the test cell that must fail)
MISTAKES = {
    "DDPM: variance term missing": (
        DDPM, "return mean + math.sqrt(var) * noise", "return mean", "task_1_1_ddpm_step"),
    "DDPM: variance beta instead of the posterior beta-tilde": (
        DDPM, "var = beta * (1 - alpha_bar_prev) / (1 - alpha_bar_t)", "var = beta", "task_1_1_ddpm_step"),
    "DDPM: alpha_bar instead of alpha in the mean's scale": (
        DDPM, "/ math.sqrt(1 - beta)", "/ math.sqrt(alpha_bar_t)", "task_1_1_ddpm_step"),
    "DDPM: eps scaled by sqrt(1 - alpha_bar_prev)": (
        DDPM, "beta / math.sqrt(1 - alpha_bar_t) * eps", "beta / math.sqrt(1 - alpha_bar_prev) * eps",
        "task_1_1_ddpm_step"),
    "DDPM: beta from the global schedule (wrong for respaced steps)": (
        DDPM, "beta = 1 - alpha_bar_t / alpha_bar_prev",
        "beta = float(diffusion.BETAS[int((ALPHA_BAR - alpha_bar_t).abs().argmin())])", "task_1_1_ddpm_step"),
    "DDIM: direction term with alpha_bar_t": (
        DDIM, "math.sqrt(max(1 - alpha_bar_prev - sigma ** 2, 0.0)) * eps",
        "math.sqrt(max(1 - alpha_bar_t - sigma ** 2, 0.0)) * eps", "task_1_2_ddim_step"),
    "DDIM: eta ignored": (
        DDIM, "    sigma = eta * math.sqrt(", "    sigma = 0 * math.sqrt(", "task_1_2_ddim_step"),
    "DDIM: sigma not taken out of the direction term": (
        DDIM, "1 - alpha_bar_prev - sigma ** 2", "1 - alpha_bar_prev", "task_1_2_ddim_step"),
    "DDIM: x0 not divided by sqrt(alpha_bar_t)": (
        DDIM, ") / math.sqrt(alpha_bar_t)", ")", "task_1_2_ddim_step"),
    "loop: alpha_bar_prev from t - 1 (wrong alpha index for spaced steps)": (
        LOOP, "alpha_bar_prev = float(alpha_bar[timesteps[i + 1]]) if i + 1 < len(timesteps) else 1.0",
        "alpha_bar_prev = float(alpha_bar[t - 1]) if t > 0 else 1.0", "task_1_3_sample"),
    "loop: alpha_bar_prev from the previous timestep in the list": (
        LOOP, "alpha_bar_prev = float(alpha_bar[timesteps[i + 1]]) if i + 1 < len(timesteps) else 1.0",
        "alpha_bar_prev = float(alpha_bar[timesteps[i - 1]]) if i > 0 else 1.0", "task_1_3_sample"),
    "loop: the last step to alpha_bar[0] instead of 1": (
        LOOP, "if i + 1 < len(timesteps) else 1.0", "if i + 1 < len(timesteps) else float(alpha_bar[0])",
        "task_1_3_sample"),
    "loop: the global schedule instead of the alpha_bar argument": (
        LOOP, "        alpha_bar_t = float(alpha_bar[t])\n",
        "        alpha_bar = ALPHA_BAR\n        alpha_bar_t = float(alpha_bar[t])\n", "task_1_3_sample"),
    "loop: the model called with the step index instead of the timestep": (
        LOOP, "torch.full((x.shape[0],), int(t), dtype=torch.long)",
        "torch.full((x.shape[0],), i, dtype=torch.long)", "task_1_3_sample"),
    "loop: alpha_bar_t and alpha_bar_prev swapped": (
        LOOP, "x = step(x, eps, alpha_bar_t, alpha_bar_prev, noise)",
        "x = step(x, eps, alpha_bar_prev, alpha_bar_t, noise)", "task_1_3_sample"),
    "mask: not dilated by the receptive field": (
        MASK, "F.max_pool2d(m, kernel_size, stride=stride, padding=padding)[0, 0] > 0",
        "F.max_pool2d(m, 1, stride=stride)[0, 0] > 0", "task_2_1_downsample_mask"),
    "mask: stride ignored in the downsampling": (
        MASK, "F.max_pool2d(m, kernel_size, stride=stride, padding=padding)",
        "F.max_pool2d(m, kernel_size, stride=1, padding=padding)", "task_2_1_downsample_mask"),
    "mask: padding ignored (window not centred)": (
        MASK, "F.max_pool2d(m, kernel_size, stride=stride, padding=padding)",
        "F.max_pool2d(F.pad(m, (0, 2 * padding, 0, 2 * padding)), kernel_size, stride=stride)",
        "task_2_1_downsample_mask"),
    "blocks: (col, row) instead of (row, col)": (
        BLOCKS, "return tiles.nonzero()", "return tiles.nonzero().flip(1)", "task_2_2_active_blocks"),
    "blocks: column-major order": (
        BLOCKS, "return tiles.nonzero()", "return tiles.t().nonzero().flip(1)", "task_2_2_active_blocks"),
    "blocks: tiles taken as strided pixels": (
        BLOCKS, "tiles = mask.reshape(h // block, block, w // block, block).any(dim=3).any(dim=1)",
        "tiles = mask[::block, ::block]", "task_2_2_active_blocks"),
    "gather: no halo (patches of block * stride)": (
        GATHER, "size = (block - 1) * stride + kernel_size", "size = block * stride", "task_2_3_gather"),
    "gather: stride ignored in the block offset": (
        GATHER, "y0, x0 = by * block * stride - padding, bx * block * stride - padding",
        "y0, x0 = by * block - padding, bx * block - padding", "task_2_3_gather"),
    "gather: padding ignored in the offset": (
        GATHER, "y0, x0 = by * block * stride - padding, bx * block * stride - padding",
        "y0, x0 = by * block * stride, bx * block * stride", "task_2_3_gather"),
    "gather: the patch clipped to the image, borders replicated instead of zero": (
        GATHER, GATHER_LOOP,
        "        ys = [min(max(v, 0), h - 1) for v in range(y0, y0 + size)]\n"
        "        xs = [min(max(v, 0), w - 1) for v in range(x0, x0 + size)]\n"
        "        out[i] = x[0][:, ys][:, :, xs]\n", "task_2_3_gather"),
    "scatter: into a copy instead of the cache": (
        SCATTER, "    for (by, bx), o in zip(blocks.tolist(), out_blocks):\n",
        "    cache = cache.clone()\n    for (by, bx), o in zip(blocks.tolist(), out_blocks):\n", "task_2_4_scatter"),
    "scatter: rows and columns swapped": (
        SCATTER, "cache[0, :, by * block:(by + 1) * block, bx * block:(bx + 1) * block] = o",
        "cache[0, :, bx * block:(bx + 1) * block, by * block:(by + 1) * block] = o", "task_2_4_scatter"),
    "engine: mask not dilated (output differs near the edit border)": (
        ENGINE, "mask = downsample_mask(mask, k, s, p)", "mask = mask[::s, ::s]", "task_2_5_sige_engine"),
    "engine: scatter into a copy of the cache": (
        ENGINE, "scatter_(cache[i + 1], out, blocks, block)", "scatter_(cache[i + 1].clone(), out, blocks, block)",
        "task_2_5_sige_engine"),
    "engine: blocks gathered without the halo": (
        ENGINE, "        patches = gather(cache[i], blocks, block, k, s, p)\n"
                "        out = act(F.conv2d(patches, conv.weight, conv.bias, stride=s))\n",
        "        patches = gather(cache[i], blocks, block, s, s, 0)\n"
        "        out = act(F.conv2d(patches, conv.weight, conv.bias, stride=s, padding=p))\n",
        "task_2_5_sige_engine"),
    "engine: stride ignored in the mask downsampling": (
        ENGINE, "mask = downsample_mask(mask, k, s, p)", "mask = downsample_mask(mask, k, 1, p)",
        "task_2_5_sige_engine"),
    "engine: activation forgotten": (
        ENGINE, "out = act(F.conv2d(patches, conv.weight, conv.bias, stride=s))",
        "out = F.conv2d(patches, conv.weight, conv.bias, stride=s)", "task_2_5_sige_engine"),
    "engine: the input not copied into the cache": (
        ENGINE, "    cache[0].copy_(x_new)\n", "    cache = [x_new] + cache[1:]\n", "task_2_5_sige_engine"),
    "engine: dense recomputation written into the cache": (
        ENGINE, "    cache[0].copy_(x_new)\n",
        "    cache[0].copy_(x_new)\n"
        "    for i, (conv, act) in enumerate(zip(stack.convs, stack.acts)):\n"
        "        cache[i + 1].copy_(act(conv(cache[i])))\n", "task_2_5_sige_engine"),
    "engine: MACs of the gathered patches (halo counted)": (
        ENGINE, "macs += len(blocks) * block * block * conv.out_channels",
        "macs += len(blocks) * patches.shape[-1] ** 2 * conv.out_channels", "task_2_5_sige_engine"),
}

# Correct solutions written differently: full marks.
ALTERNATIVES = {
    "DDPM: with torch.sqrt on tensors and alphas": (
        DDPM, "    beta = 1 - alpha_bar_t / alpha_bar_prev\n"
              "    mean = (x_t - beta / math.sqrt(1 - alpha_bar_t) * eps) / math.sqrt(1 - beta)\n"
              "    var = beta * (1 - alpha_bar_prev) / (1 - alpha_bar_t)\n"
              "    return mean + math.sqrt(var) * noise",
        "    a_t, a_p = torch.tensor(alpha_bar_t), torch.tensor(alpha_bar_prev)\n"
        "    alpha = a_t / a_p\n"
        "    mean = (x_t - (1 - alpha) / torch.sqrt(1 - a_t) * eps) / torch.sqrt(alpha)\n"
        "    sigma = torch.sqrt((1 - alpha) * (1 - a_p) / (1 - a_t))\n"
        "    return (mean + sigma * noise).to(x_t.dtype)", "task_1_1_ddpm_step"),
    "DDPM: via the predicted x0 and the posterior mean": (
        DDPM, "    mean = (x_t - beta / math.sqrt(1 - alpha_bar_t) * eps) / math.sqrt(1 - beta)\n",
        "    x0 = (x_t - math.sqrt(1 - alpha_bar_t) * eps) / math.sqrt(alpha_bar_t)\n"
        "    mean = (math.sqrt(alpha_bar_prev) * beta / (1 - alpha_bar_t) * x0\n"
        "            + math.sqrt(1 - beta) * (1 - alpha_bar_prev) / (1 - alpha_bar_t) * x_t)\n", "task_1_1_ddpm_step"),
    "DDIM: noise added unconditionally (zeros when missing)": (
        DDIM, "    if sigma > 0:\n        x_prev = x_prev + sigma * noise\n",
        "    z = torch.zeros_like(x_t) if noise is None else noise\n    x_prev = x_prev + sigma * z\n",
        "task_1_2_ddim_step"),
    "loop: zip over (t, t_prev) pairs, the model called with a broadcast int tensor": (
        LOOP, "    for i, t in enumerate(timesteps):\n"
              "        alpha_bar_t = float(alpha_bar[t])\n"
              "        alpha_bar_prev = float(alpha_bar[timesteps[i + 1]]) if i + 1 < len(timesteps) else 1.0\n"
              "        eps = model(x, torch.full((x.shape[0],), int(t), dtype=torch.long), labels)\n",
        "    nxt = list(timesteps[1:]) + [None]\n"
        "    for t, tp in zip(timesteps, nxt):\n"
        "        alpha_bar_t = alpha_bar[t].item()\n"
        "        alpha_bar_prev = 1.0 if tp is None else alpha_bar[tp].item()\n"
        "        eps = model(x, torch.tensor([t] * len(x)), labels)\n", "task_1_3_sample"),
    "mask: explicit loops over output pixels": (
        MASK, "    m = mask.float()[None, None]\n"
              "    return F.max_pool2d(m, kernel_size, stride=stride, padding=padding)[0, 0] > 0",
        "    h, w = mask.shape\n"
        "    ho, wo = (h + 2 * padding - kernel_size) // stride + 1, (w + 2 * padding - kernel_size) // stride + 1\n"
        "    padded = F.pad(mask.float(), (padding, padding, padding, padding))\n"
        "    out = torch.zeros(ho, wo, dtype=torch.bool)\n"
        "    for y in range(ho):\n"
        "        for x in range(wo):\n"
        "            out[y, x] = padded[y * stride:y * stride + kernel_size, x * stride:x * stride + kernel_size].any()\n"
        "    return out", "task_2_1_downsample_mask"),
    "blocks: a list of [row, col] lists from loops": (
        BLOCKS, "    tiles = mask.reshape(h // block, block, w // block, block).any(dim=3).any(dim=1)\n"
                "    return tiles.nonzero()",
        "    found = [[by, bx] for by in range(h // block) for bx in range(w // block)\n"
        "             if mask[by * block:(by + 1) * block, bx * block:(bx + 1) * block].any()]\n"
        "    return torch.tensor(found, dtype=torch.long).reshape(-1, 2)", "task_2_2_active_blocks"),
    "gather: pad once, unfold and index (vectorised)": (
        GATHER, "    _, c, h, w = x.shape\n",
        "    xp = F.pad(x, (padding, padding, padding, padding))\n"
        "    tiles = xp[0].unfold(1, size, block * stride).unfold(2, size, block * stride)\n"
        "    return tiles[:, blocks[:, 0], blocks[:, 1]].transpose(0, 1).contiguous()\n"
        "    _, c, h, w = x.shape\n", "task_2_3_gather"),
    "scatter: advanced-index assignment into a block view": (
        SCATTER, "    for (by, bx), o in zip(blocks.tolist(), out_blocks):\n",
        "    _, c, h, w = cache.shape\n"
        "    grid = cache[0].view(c, h // block, block, w // block, block).permute(1, 3, 0, 2, 4)\n"
        "    grid[blocks[:, 0], blocks[:, 1]] = out_blocks\n"
        "    return cache\n"
        "    for (by, bx), o in zip(blocks.tolist(), out_blocks):\n", "task_2_4_scatter"),
    "engine: conv called through the module's own _conv_forward, MACs from weight shape": (
        ENGINE, "        out = act(F.conv2d(patches, conv.weight, conv.bias, stride=s))\n"
                "        scatter_(cache[i + 1], out, blocks, block)\n"
                "        macs += len(blocks) * block * block * conv.out_channels * (conv.in_channels // conv.groups) * k * k\n",
        "        if len(blocks) == 0:\n"
        "            continue\n"
        "        out = act(F.conv2d(patches, conv.weight, conv.bias, stride=conv.stride))\n"
        "        cache[i + 1] = scatter_(cache[i + 1], out, blocks, block)\n"
        "        macs += out.numel() * conv.weight[0].numel()\n", "task_2_5_sige_engine"),
}


globals().update(lab_tests(LAB, PREAMBLE, MISTAKES, ALTERNATIVES))
