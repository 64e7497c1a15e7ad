"""Lab 01's trusted checks pass the reference solution, pass correct
solutions written differently, and fail the typical mistakes (run with
``pytest solutions/lab01_pruning`` or ``-m lab01_pruning``)."""
import pytest

from autograder.labtest import lab_tests

LAB = "lab01_pruning"
pytestmark = pytest.mark.lab01_pruning

# The set-up cell with tiny fine-tuning (64 images, one epoch): fast, but too short to
# win back the accuracy pruning costs, so Task 1.6's solution is proven with QUICK_PREAMBLE
# (the notebook's QUICK settings) and its mistakes by the reason they fail (REASONS).
SETUP = """
import copy
import types

import torch
from torch import nn

from helpers import figures, profile
from helpers.compression import digits_accuracy, sparsity, weight_layers
from helpers.data import digits_loaders
from helpers.models import VGGDigits, load_baseline
from helpers.train import seed_everything, train

QUICK, SEED = True, 0
seed_everything(SEED)
TRAIN_LIMIT, FINETUNE_EPOCHS = {limit}, {epochs}
loaders = digits_loaders(size=16, train_limit=TRAIN_LIMIT, seed=SEED)
plots = types.SimpleNamespace(plot_weight_histograms=lambda *a, **k: None,  # figures are not graded
                              plot_xy=lambda *a, **k: None)
dense = load_baseline()
dense_acc = 99.44  # the baseline's test accuracy, printed by the cells (not graded)
dense_params = profile.count_params(dense)
"""
PREAMBLE = SETUP.format(limit=64, epochs=1)
QUICK_PREAMBLE = SETUP.format(limit=600, epochs=4)

# Stand-ins for the locked cells that run after the solution cells, for the checks that
# read their results: the scan (a cheap metric instead of 49 validation runs) and the
# channel-pruning and measurement cells (on a small VGG instead of the baseline).
EXTRA = {
    "task_1_4_sensitivity_scan": """
SCAN_SPARSITIES = [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
scan = sensitivity_scan(dense, SCAN_SPARSITIES, lambda m: 50.0)
""",
    "task_2_3_measure": """
dense = VGGDigits(cfg=(4, 4, "M", 8, "M")).eval()
CHANNEL_PRUNE_RATIO = 0.5
channel_pruned = channel_prune(apply_channel_sorting(dense), CHANNEL_PRUNE_RATIO)
dense_stats, pruned_stats = measure(dense), measure(channel_pruned)
""",
}

# name: (solution cell, fragment, replacement, the test cell that must fail)
MISTAKES = {
    # ---- 1.2
    "prune: the largest weights": (
        "task_1_2_fine_grained_prune_code", "mask = (importance > threshold)", "mask = (importance <= threshold)",
        "task_1_2_fine_grained_prune"),
    "prune: signed value instead of magnitude": (
        "task_1_2_fine_grained_prune_code", "importance = tensor.abs()", "importance = tensor.clone()",
        "task_1_2_fine_grained_prune"),
    "prune: not in place": (
        "task_1_2_fine_grained_prune_code", "tensor.mul_(mask)", "tensor = tensor * mask",
        "task_1_2_fine_grained_prune"),
    "prune: a bool mask": (
        "task_1_2_fine_grained_prune_code", "mask = (importance > threshold).to(tensor.dtype)",
        "mask = importance > threshold", "task_1_2_fine_grained_prune"),
    "prune: sparsity 0 not handled": (
        "task_1_2_fine_grained_prune_code", "    if num_zeros == 0:\n        return torch.ones_like(tensor)\n", "",
        "task_1_2_fine_grained_prune"),
    # ---- 1.3
    "pruner: apply keeps the current zeros (masks recomputed)": (
        "task_1_3_pruner_code", "param.mul_(self.masks[name])", "param.mul_((param != 0).to(param.dtype))",
        "task_1_3_pruner"),
    "pruner: apply prunes again": (
        "task_1_3_pruner_code", "param.mul_(self.masks[name])",
        "fine_grained_prune(param.data, float((self.masks[name] == 0).float().mean()))", "task_1_3_pruner"),
    "pruner: masks keyed by module name": (
        "task_1_3_pruner_code", "self.masks[name] = fine_grained_prune(param.data, sparsity_dict[name])",
        "self.masks[name.rsplit('.', 1)[0]] = fine_grained_prune(param.data, sparsity_dict[name])",
        "task_1_3_pruner"),
    "pruner: every parameter pruned": (
        "task_1_3_pruner_code",
        "            if name in sparsity_dict:\n"
        "                self.masks[name] = fine_grained_prune(param.data, sparsity_dict[name])",
        "            self.masks[name] = fine_grained_prune(param.data, sparsity_dict.get(name, 0.3))",
        "task_1_3_pruner"),
    # ---- 1.4
    "scan: the layer is never restored": (
        "task_1_4_sensitivity_scan_code", "            layer.weight.copy_(original)\n", "",
        "task_1_4_sensitivity_scan"),
    "scan: the saved weights alias the layer (no clone)": (
        "task_1_4_sensitivity_scan_code", "original = layer.weight.detach().clone()",
        "original = layer.weight.detach()", "task_1_4_sensitivity_scan"),
    "scan: keys without .weight": (
        "task_1_4_sensitivity_scan_code", 'results[f"{name}.weight"] = scores', "results[name] = scores",
        "task_1_4_sensitivity_scan"),
    # ---- 1.5
    "sparsities: the largest layer pruned too little": (
        "task_1_5_choose_sparsities_code", '"backbone.17.weight": 0.85,', '"backbone.17.weight": 0.3,',
        "task_1_5_choose_sparsities"),
    "sparsities: a module name instead of a parameter name": (
        "task_1_5_choose_sparsities_code", '"classifier.weight": 0.7,', '"classifier": 0.7,',
        "task_1_5_choose_sparsities"),
    # ---- 1.6
    "fine-tune: masks not re-applied": (
        "task_1_6_finetune_code", ", after_step=pruner.apply", "", "task_1_6_finetune"),
    "fine-tune: not fine-tuned": (
        "task_1_6_finetune_code",
        'train(sparse_model, loaders["train"], epochs=FINETUNE_EPOCHS, lr=1e-3, after_step=pruner.apply, '
        'device="cpu")\n', "", "task_1_6_finetune"),
    # ---- 2.1
    "importance: per output channel": (
        "task_2_1_channel_sorting_code", "sum(dim=(0, 2, 3))", "sum(dim=(1, 2, 3))", "task_2_1_channel_sorting"),
    "sorting: increasing importance": (
        "task_2_1_channel_sorting_code", "descending=True", "descending=False", "task_2_1_channel_sorting"),
    "sorting: BatchNorm running stats not permuted": (
        "task_2_1_channel_sorting_code", "for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):",
        "for t in (bn.weight, bn.bias):", "task_2_1_channel_sorting"),
    "sorting: next conv's input channels not permuted": (
        "task_2_1_channel_sorting_code", "        next_conv.weight.copy_(next_conv.weight[:, order])\n", "",
        "task_2_1_channel_sorting"),
    "sorting: sorts the input model in place": (
        "task_2_1_channel_sorting_code", "    model = copy.deepcopy(model)\n    convs", "    convs",
        "task_2_1_channel_sorting"),
    # ---- 2.2
    "channel prune: keeps the last channels": (
        "task_2_2_channel_prune_code", "conv.weight = nn.Parameter(conv.weight[:keep].clone())",
        "conv.weight = nn.Parameter(conv.weight[conv.out_channels - keep:].clone())", "task_2_2_channel_prune"),
    "channel prune: running_var not sliced": (
        "task_2_2_channel_prune_code", "        bn.running_var = bn.running_var[:keep].clone()\n", "",
        "task_2_2_channel_prune"),
    "channel prune: out_channels not updated": (
        "task_2_2_channel_prune_code", "        conv.out_channels = keep\n", "", "task_2_2_channel_prune"),
    "channel prune: prunes the input model in place": (
        "task_2_2_channel_prune_code", "    model = copy.deepcopy(model)\n", "", "task_2_2_channel_prune"),
    # ---- 2.3
    "measure: MACs of the whole batch": (
        "task_2_3_measure_code", '"macs": profile.count_macs(model, example)',
        '"macs": profile.count_macs(model, batch)',
        "task_2_3_measure"),
    "measure: latency in seconds": (
        "task_2_3_measure_code", '"latency_ms": 1e3 * profile.measure_latency', '"latency_ms": profile.measure_latency',
        "task_2_3_measure"),
    "measure: one image timed instead of a batch of 256": (
        "task_2_3_measure_code", "profile.measure_latency(model, batch, repeats=30)",
        "profile.measure_latency(model, example, repeats=30)", "task_2_3_measure"),
    "measure: non-zero parameters": (
        "task_2_3_measure_code", '"params": profile.count_params(model)',
        '"params": profile.count_params(model, nonzero_only=True)', "task_2_3_measure"),
}

# Task 1.6 with PREAMBLE cannot win back the accuracy (the solution fails there too, on
# the accuracy drop): its mistakes must fail for their own reason, found in the message.
REASONS = {
    "fine-tune: masks not re-applied": "where its mask is 0",
    "fine-tune: not fine-tuned": "it was not fine-tuned",
}

# Correct solutions written differently: full marks.
ALTERNATIVES = {
    "prune by argsort of the magnitudes": (
        "task_1_2_fine_grained_prune_code", "    importance = tensor.abs()\n",
        "    mask = torch.ones(tensor.numel(), dtype=tensor.dtype)\n"
        "    mask[tensor.abs().flatten().argsort()[:num_zeros]] = 0\n"
        "    mask = mask.view_as(tensor)\n"
        "    tensor.mul_(mask)\n"
        "    return mask\n"
        "    importance = tensor.abs()\n",
        "task_1_2_fine_grained_prune"),
    "pruner applies by masked assignment": (
        "task_1_3_pruner_code", "                param.mul_(self.masks[name])",
        "                param[self.masks[name] == 0] = 0", "task_1_3_pruner"),
    "scan restores from a saved state dict": (
        "task_1_4_sensitivity_scan_code",
        "    results = {}\n    for name, layer in weight_layers(model).items():",
        "    results = {}\n"
        "    saved = copy.deepcopy(model.state_dict())\n"
        "    for name, layer in weight_layers(model).items():\n"
        "        scores = []\n"
        "        for s in sparsities:\n"
        "            fine_grained_prune(layer.weight.data, s)\n"
        "            scores.append(evaluate_fn(model))\n"
        "            model.load_state_dict(saved)\n"
        "        results[name + '.weight'] = scores\n"
        "    return results\n"
        "    for name, layer in weight_layers(model).items():",
        "task_1_4_sensitivity_scan"),
    "importance with torch.linalg.vector_norm": (
        "task_2_1_channel_sorting_code",
        "    return weight.detach().pow(2).sum(dim=(0, 2, 3)).sqrt()",
        "    return torch.linalg.vector_norm(weight.detach(), dim=(0, 2, 3))",
        "task_2_1_channel_sorting"),
    "channel prune with new modules": (
        "task_2_2_channel_prune_code",
        "    model = copy.deepcopy(model)\n    convs",
        "    model = copy.deepcopy(model)\n"
        "    idx = [i for i, m in enumerate(model.backbone) if isinstance(m, nn.Conv2d)]\n"
        "    for i, j in zip(idx[:-1], idx[1:]):\n"
        "        conv, bn, nxt = model.backbone[i], model.backbone[i + 1], model.backbone[j]\n"
        "        keep = int(round((1 - prune_ratio) * conv.out_channels))\n"
        "        new_conv = nn.Conv2d(conv.in_channels, keep, 3, padding=1, bias=False)\n"
        "        new_conv.weight.copy_(conv.weight[:keep])\n"
        "        new_bn = nn.BatchNorm2d(keep)\n"
        "        new_bn.load_state_dict({k: (v[:keep] if v.dim() else v) for k, v in bn.state_dict().items()})\n"
        "        new_next = nn.Conv2d(keep, nxt.out_channels, 3, padding=1, bias=False)\n"
        "        new_next.weight.copy_(nxt.weight[:, :keep])\n"
        "        model.backbone[i], model.backbone[i + 1], model.backbone[j] = new_conv, new_bn, new_next\n"
        "    return model\n"
        "    convs",
        "task_2_2_channel_prune"),
    "measure with its own median timer": (
        "task_2_3_measure_code",
        '"latency_ms": 1e3 * profile.measure_latency(model, batch, repeats=30)}',
        '"latency_ms": _median_ms(model, batch)}\n\n\n'
        "def _median_ms(model, batch, warmup=3, repeats=15):\n"
        "    import statistics, time\n"
        "    model.eval()\n"
        "    with torch.no_grad():\n"
        "        for _ in range(warmup):\n"
        "            model(batch)\n"
        "        times = []\n"
        "        for _ in range(repeats):\n"
        "            t0 = time.perf_counter()\n"
        "            model(batch)\n"
        "            times.append((time.perf_counter() - t0) * 1000)\n"
        "    return statistics.median(times)",
        "task_2_3_measure"),
}

QUICK_TESTS = {"task_1_6_finetune"}  # proven with the notebook's QUICK fine-tuning


globals().update(lab_tests(LAB, PREAMBLE, MISTAKES, ALTERNATIVES, extra=lambda harness, test_id: EXTRA.get(test_id, ""),
                           reasons=REASONS, solution_preambles=dict.fromkeys(QUICK_TESTS, QUICK_PREAMBLE)))
