"""Lab 08's trusted checks pass the reference solution, pass correct
solutions written differently, and fail the typical mistakes (run with
``pytest solutions/lab08_qlora`` or ``-m lab08_qlora``)."""
import pytest

from autograder.labtest import lab_tests

# Stand-ins for the locked set-up cells. The notebook loads SmolLM2 there; the checks never use
# it (they build tiny Llamas), so nothing is loaded here.
PREAMBLE = """
import math, time
import torch
from torch import nn
from tqdm.auto import tqdm
from helpers import llm
from helpers.llm import block_linears
"""
LAB = "lab08_qlora"
pytestmark = pytest.mark.lab08_qlora

# name: (solution cell, fragment, replacement, the test cell that must fail)
MISTAKES = {
    # ---- moved from tests/test_wrong_answers.py
    "qlora: symmetric code book": (
        "task_1_1_nf4_code_book_code",
        "negative = -normal.icdf(torch.linspace(offset, 0.5, 8)[:-1])",
        "negative = -normal.icdf(torch.linspace(offset, 0.5, 9)[:-1])",
        "task_1_1_nf4_code_book"),
    "qlora: code book not normalised to [-1, 1]": (
        "task_1_1_nf4_code_book_code",
        "return (values / values.max()).float()", "return values.float()",
        "task_1_1_nf4_code_book"),
    "qlora: one absmax for the whole tensor": (
        "task_2_1_blockwise_code",
        "absmax = blocks.abs().amax(dim=1)",
        "absmax = blocks.abs().amax().expand(blocks.shape[0]).clone()",
        "task_2_1_blockwise"),
    "qlora: nibbles in the wrong order": (
        "task_2_1_blockwise_code",
        "return (idx[0::2] << 4) | idx[1::2]", "return (idx[1::2] << 4) | idx[0::2]",
        "task_2_1_blockwise"),
    "qlora: double quantization without the mean": (
        "task_3_1_double_quant_code",
        "mean = absmax.mean().item()", "mean = 0.0",
        "task_3_1_double_quant"),
    "qlora: second-level scales not counted": (
        "task_3_1_double_quant_code",
        "return 4 + 8 / block_size + 32 / (block_size * block_size2)", "return 4 + 8 / block_size",
        "task_3_1_double_quant"),
    "qlora: FP4 with two zeros": (
        "task_4_1_code_books_code",
        "torch.cat([-magnitudes.flip(0), torch.zeros(1), magnitudes])",
        "torch.cat([-magnitudes.flip(0), torch.zeros(2), magnitudes])",
        "task_4_1_code_books"),
    "qlora: LoRA B not zero at init": (
        "task_5_1_lora_layer_code",
        "self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank))",
        "self.lora_B = nn.Parameter(torch.randn(self.out_features, rank) * 0.01)",
        "task_5_1_lora_layer"),
    "qlora: gradients reach the frozen base": (
        "task_5_1_lora_layer_code",
        "self.scaling = alpha / rank", "self.scaling = alpha / rank\n        self.base = base",
        "task_5_1_lora_layer"),
    "qlora: scaling alpha instead of alpha / rank": (
        "task_5_1_lora_layer_code",
        "self.scaling = alpha / rank", "self.scaling = alpha",
        "task_5_1_lora_layer"),
    "qlora: model not frozen": (
        "task_6_1_add_lora_code",
        "model.requires_grad_(False)", "pass",
        "task_6_1_add_lora"),
    "qlora: training leaves the model in train mode": (
        "task_7_1_finetune_code",
        "    model.eval()\n    return losses", "    return losses",
        "task_7_1_finetune"),
    "qlora: merged without the scaling": (
        "task_8_1_merge_code",
        "module.dequantized_weight() + module.scaling * module.lora_B @ module.lora_A",
        "module.dequantized_weight() + module.lora_B @ module.lora_A",
        "task_8_1_merge"),
    # ---- more
    "code book: offset 1 - 1/32 instead of delta": (
        "task_1_1_nf4_code_book_code", "offset = 0.9677083", "offset = 1 - 1 / 32", "task_1_1_nf4_code_book"),
    "blockwise: block maximum instead of absolute maximum": (
        "task_2_1_blockwise_code", "absmax = blocks.abs().amax(dim=1)", "absmax = blocks.amax(dim=1)",
        "task_2_1_blockwise"),
    "blockwise: unpack puts the low nibble first": (
        "task_2_1_blockwise_code", "torch.stack([packed >> 4, packed & 0xF], dim=1)",
        "torch.stack([packed & 0xF, packed >> 4], dim=1)", "task_2_1_blockwise"),
    "blockwise: indices rounded on a uniform grid": (
        "task_2_1_blockwise_code", "idx = (normed.reshape(-1, 1) - code[None, :]).abs().argmin(dim=1)",
        "idx = torch.round((normed.reshape(-1) + 1) / 2 * (code.numel() - 1)).long()", "task_2_1_blockwise"),
    "double quant: truncated instead of rounded": (
        "task_3_1_double_quant_code", "torch.round(block / c * 127).to(torch.int8)", "(block / c * 127).to(torch.int8)",
        "task_3_1_double_quant"),
    "double quant: one scale for all blocks": (
        "task_3_1_double_quant_code", "c = block.abs().max().clamp(min=1e-12)",
        "c = centered.abs().max().clamp(min=1e-12)", "task_3_1_double_quant"),
    "code books: INT4 with 16 levels": (
        "task_4_1_code_books_code", "torch.arange(-7, 8, dtype=torch.float32) / 7",
        "torch.arange(-8, 8, dtype=torch.float32) / 8", "task_4_1_code_books"),
    "code books: block size ignored in the MSE": (
        "task_4_1_code_books_code", "idx, absmax = quantize_blockwise(w, code, block_size)\n    return",
        "idx, absmax = quantize_blockwise(w, code, 64)\n    block_size = 64\n    return", "task_4_1_code_books"),
    "LoRA: NF4 weight stored as a frozen Parameter": (
        "task_5_1_lora_layer_code", 'self.register_buffer("packed", pack_4bit(idx))',
        "self.packed = nn.Parameter(pack_4bit(idx), requires_grad=False)", "task_5_1_lora_layer"),
    "LoRA: forward without the scaling": (
        "task_5_1_lora_layer_code", "return base + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling",
        "return base + (x @ self.lora_A.T @ self.lora_B.T)", "task_5_1_lora_layer"),
    "LoRA: A starts at zero": (
        "task_5_1_lora_layer_code", "nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))",
        "nn.init.zeros_(self.lora_A)", "task_5_1_lora_layer"),
    "LoRA: the fp32 weight kept as a buffer": (
        "task_5_1_lora_layer_code", 'self.register_buffer("packed", pack_4bit(idx))',
        'self.register_buffer("packed", pack_4bit(idx))\n        self.register_buffer("w_fp32", base.weight.detach().clone())',
        "task_5_1_lora_layer"),
    "LoRA: base output detached from the input": (
        "task_5_1_lora_layer_code", "base = x @ self.dequantized_weight().T",
        "base = x.detach() @ self.dequantized_weight().T", "task_5_1_lora_layer"),
    "add_lora: attention linears only": (
        "task_6_1_add_lora_code", "    for name, linear in list(block_linears(model).items()):\n",
        "    for name, linear in [kv for kv in block_linears(model).items() if 'self_attn' in kv[0]]:\n",
        "task_6_1_add_lora"),
    "add_lora: counts every parameter": (
        "task_6_1_add_lora_code", "return sum(p.numel() for p in model.parameters() if p.requires_grad)",
        "return sum(p.numel() for p in model.parameters())", "task_6_1_add_lora"),
    "add_lora: rank and alpha not passed on": (
        "task_6_1_add_lora_code", "LoRALinearNF4(linear, rank, alpha)", "LoRALinearNF4(linear)", "task_6_1_add_lora"),
    "finetune: no zero_grad": (
        "task_7_1_finetune_code", "        opt.zero_grad(set_to_none=True)\n", "", "task_7_1_finetune"),
    "finetune: the same window every step": (
        "task_7_1_finetune_code", "seed=seed + step", "seed=seed", "task_7_1_finetune"),
    "finetune: loss tensors instead of floats": (
        "task_7_1_finetune_code", "losses.append(loss.item())", "losses.append(loss.detach())", "task_7_1_finetune"),
    "finetune: lr ignored": (
        "task_7_1_finetune_code", "torch.optim.AdamW(params, lr=lr, weight_decay=0.0)",
        "torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)", "task_7_1_finetune"),
    "merge: linear with a bias": (
        "task_8_1_merge_code", "merged = nn.Linear(module.in_features, module.out_features, bias=False)",
        "merged = nn.Linear(module.in_features, module.out_features)\n"
        "            nn.init.zeros_(merged.bias)", "task_8_1_merge"),
    "merge: adapters dropped": (
        "task_8_1_merge_code", "module.dequantized_weight() + module.scaling * module.lora_B @ module.lora_A",
        "module.dequantized_weight()", "task_8_1_merge"),
}

# Correct solutions written differently: full marks.
ALTERNATIVES = {
    "code book from scipy's normal quantiles, float64 then cast": (
        "task_1_1_nf4_code_book_code", "    normal = torch.distributions.Normal(0.0, 1.0)\n",
        "    from scipy.stats import norm\n"
        "    import numpy as np\n"
        "    pos = norm.ppf(np.linspace(0.9677083, 0.5, 9)[:-1])\n"
        "    neg = -norm.ppf(np.linspace(0.9677083, 0.5, 8)[:-1])\n"
        "    v = np.sort(np.concatenate([pos, [0.0], neg]))\n"
        "    return torch.tensor(v / v.max(), dtype=torch.float32)\n"
        "    normal = torch.distributions.Normal(0.0, 1.0)\n",
        "task_1_1_nf4_code_book"),
    "blockwise with bucketize on midpoints, packing by reshape": (
        "task_2_1_blockwise_code", "    idx = (normed.reshape(-1, 1) - code[None, :]).abs().argmin(dim=1)\n",
        "    mids = (code[1:] + code[:-1]) / 2\n"
        "    idx = torch.bucketize(normed.reshape(-1), mids, right=False)\n",
        "task_2_1_blockwise"),
    "pack with reshape and arithmetic": (
        "task_2_1_blockwise_code", "    return (idx[0::2] << 4) | idx[1::2]\n",
        "    pairs = idx.to(torch.uint8).reshape(-1, 2)\n"
        "    return pairs[:, 0] * 16 + pairs[:, 1]\n",
        "task_2_1_blockwise"),
    "double quantization vectorised with padding": (
        "task_3_1_double_quant_code", "    mean = absmax.mean().item()\n",
        "    n = absmax.numel()\n"
        "    m = float(absmax.mean())\n"
        "    padded = torch.nn.functional.pad(absmax - m, (0, -n % block_size))\n"
        "    blocks = padded.reshape(-1, block_size)\n"
        "    c = blocks.abs().amax(1).clamp(min=1e-12)\n"
        "    q = torch.round(blocks * 127 / c[:, None]).to(torch.int8).reshape(-1)[:n]\n"
        "    return q, c.float(), m\n"
        "    mean = absmax.mean().item()\n",
        "task_3_1_double_quant"),
    "code books as explicit lists": (
        "task_4_1_code_books_code", "    magnitudes = torch.tensor([0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]) / 6\n",
        "    vals = sorted({s * m / 6 for m in (0, 0.5, 1, 1.5, 2, 3, 4, 6) for s in (1, -1)})\n"
        "    return torch.tensor(vals, dtype=torch.float32)\n"
        "    magnitudes = torch.tensor([0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]) / 6\n",
        "task_4_1_code_books"),
    "LoRA with F.linear, other buffer names and the mean as a buffer": (
        "task_5_1_lora_layer_code",
        '        self.register_buffer("packed", pack_4bit(idx))\n'
        '        self.register_buffer("absmax_q", q)\n'
        '        self.register_buffer("absmax_scales", scales)\n'
        '        self.absmax_mean = mean\n',
        '        self.register_buffer("w_nf4", pack_4bit(idx))\n'
        '        self.register_buffer("am_q", q)\n'
        '        self.register_buffer("am_s", scales)\n'
        '        self.register_buffer("am_mean", torch.tensor(mean))\n'
        '        self.packed = self.w_nf4\n'
        '        self.absmax_q, self.absmax_scales = self.am_q, self.am_s\n'
        '        self.absmax_mean = mean\n',
        "task_5_1_lora_layer"),
    "LoRA forward with F.linear and the update computed first": (
        "task_5_1_lora_layer_code",
        "        base = x @ self.dequantized_weight().T\n"
        "        return base + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling\n",
        "        update = nn.functional.linear(nn.functional.linear(x, self.lora_A), self.lora_B)\n"
        "        return nn.functional.linear(x, self.dequantized_weight()) + self.scaling * update\n",
        "task_5_1_lora_layer"),
    "add_lora over named_modules, count by requires_grad": (
        "task_6_1_add_lora_code", "    model.requires_grad_(False)\n",
        "    for p in model.parameters():\n"
        "        p.requires_grad = False\n"
        "    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and '.layers.' in f'.{n}']\n"
        "    for n, m in targets:\n"
        "        parent = model.get_submodule(n.rsplit('.', 1)[0])\n"
        "        setattr(parent, n.rsplit('.', 1)[1], LoRALinearNF4(m, rank=rank, alpha=alpha))\n"
        "    return sum(p.numel() for p in model.parameters() if p.requires_grad)\n",
        "task_6_1_add_lora"),
    "finetune: zero_grad before the forward pass": (
        "task_7_1_finetune_code",
        "        loss = model(batch, labels=batch).loss\n"
        "        loss.backward()\n"
        "        opt.step()\n"
        "        opt.zero_grad(set_to_none=True)\n",
        "        opt.zero_grad()\n"
        "        loss = model(batch, labels=batch).loss\n"
        "        loss.backward()\n"
        "        opt.step()\n",
        "task_7_1_finetune"),
    "finetune optimizer with default weight decay": (
        "task_7_1_finetune_code", "torch.optim.AdamW(params, lr=lr, weight_decay=0.0)", "torch.optim.AdamW(params, lr=lr)",
        "task_7_1_finetune"),
    "merge by recursion over named_children": (
        "task_8_1_merge_code", "    for name, module in list(model.named_modules()):\n",
        "    for child_name, child in list(model.named_children()):\n"
        "        if isinstance(child, LoRALinearNF4):\n"
        "            lin = nn.Linear(child.in_features, child.out_features, bias=False)\n"
        "            lin.weight.copy_(child.dequantized_weight() + child.scaling * (child.lora_B @ child.lora_A))\n"
        "            setattr(model, child_name, lin)\n"
        "        else:\n"
        "            merge_lora(child)\n"
        "    return\n"
        "    for name, module in list(model.named_modules()):\n",
        "task_8_1_merge"),
}


globals().update(lab_tests(LAB, PREAMBLE, MISTAKES, ALTERNATIVES))
