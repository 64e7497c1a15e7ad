"""Lab 06's trusted checks pass the reference solution, pass correct
solutions written differently, and fail the typical mistakes (run with
``pytest solutions/lab06_awq`` or ``-m lab06_awq``).

The notebook's set-up loads SmolLM2-135M; the checks never use it (they build
tiny Llamas with ``helpers.llm.tiny_llama``), so the preamble only defines
what the solution cells read from the set-up. Task 7.2 grades the results of
the locked cells (``ppl``): ``RESULTS`` re-runs those cells in small, on a tiny
Llama with outlier channels and text it generated itself, after the solution
cells, so a broken pipeline shows in task 7.2's check as it would in the lab.
"""
import pytest

from autograder.labtest import lab_tests

PREAMBLE = """
import math, os, time
os.environ.setdefault("TRITON_INTERPRET", "1")
import torch
from torch import nn
from tqdm.auto import tqdm
from helpers import llm
from helpers.llm import block_linears, perplexity
GROUP, CLIP_TOKENS = 128, 512
"""

# The lab's results cells (rtn_results, salient_results, awq_results) in small: a
# tiny Llama whose norms have outlier channels, evaluated on text sampled from
# itself (so any change of its function raises the perplexity).
RESULTS = """
GROUP = 64
model = llm.tiny_llama(seed=0, hidden=256, intermediate=512, layers=2, heads=8, kv_heads=4, vocab=128)
with torch.no_grad():
    for layer in model.model.layers:
        layer.input_layernorm.weight[:4] *= 12
        layer.post_attention_layernorm.weight[4:8] *= 12
    model.lm_head.weight.mul_(4.0)      # a confident model: its own samples are easy for it
    torch.manual_seed(0)
    out = model.generate(torch.zeros(24, 1, dtype=torch.long), do_sample=True, max_new_tokens=64,
                         min_new_tokens=64, pad_token_id=0)
eval_ids = out[:16].reshape(-1)
calib_ids = out[16:, :48]
FP32_BLOCKS = {k: v.clone() for k, v in model.state_dict().items() if ".layers." in k}
def restore_fp32():
    model.load_state_dict(FP32_BLOCKS, strict=False)
def _ppl(): return perplexity(model, eval_ids, seq_len=65, progress=False)
ppl = {"fp32": _ppl()}
for bits in (3, 4):
    restore_fp32(); quantize_model_rtn(model, bits, GROUP); ppl[f"rtn_w{bits}"] = _ppl()
restore_fp32()
linears = block_linears(model)
act_mean = llm.input_abs_mean(model, calib_ids, linears)
with torch.no_grad():
    for kind in ("activation", "weight", "random"):
        restore_fp32()
        gen = torch.Generator().manual_seed(0)
        for name, lin in linears.items():
            keep = salient_channels(channel_importance(lin.weight, act_mean[name], kind, gen), 0.01)
            lin.weight.copy_(quantize_keep_channels(lin.weight, keep, 3, GROUP))
        ppl[f"keep1_{kind}_w3"] = _ppl()
for bits in (3, 4):
    restore_fp32()
    awq_apply(model, calib_ids, bits, GROUP, n_grid=10, clip=True)
    quantize_model_rtn(model, bits, GROUP)
    ppl[f"awq_w{bits}"] = _ppl()
restore_fp32()
"""
EXTRA = {"task_7_2_awq_results": RESULTS}
LAB = "lab06_awq"
pytestmark = pytest.mark.lab06_awq

# name: (solution cell, fragment, replacement, the test cell that must fail)
MISTAKES = {
    # ---- 1.1
    "pseudo-quantize: no zero point": (
        "task_1_1_pseudo_quantize_code",
        "q = torch.clamp(torch.round(g / scale) + zero, 0, q_max)\n"
        "        out[..., start:start + group_size] = (q - zero) * scale",
        "q = torch.clamp(torch.round(g / scale), 0, q_max)\n"
        "        out[..., start:start + group_size] = q * scale",
        "task_1_1_pseudo_quantize"),
    "pseudo-quantize: one range for the whole row": (
        "task_1_1_pseudo_quantize_code",
        "for start in range(0, w.shape[-1], group_size):",
        "for start in range(0, w.shape[-1], w.shape[-1]):",
        "task_1_1_pseudo_quantize"),
    "pseudo-quantize: groups along the output rows": (
        "task_1_1_pseudo_quantize_code",
        "w_min = g.amin(dim=-1, keepdim=True)\n        w_max = g.amax(dim=-1, keepdim=True)",
        "w_min = g.amin(dim=0, keepdim=True)\n        w_max = g.amax(dim=0, keepdim=True)",
        "task_1_1_pseudo_quantize"),
    "pseudo-quantize: 2**b levels instead of 2**b - 1 steps": (
        "task_1_1_pseudo_quantize_code", "q_max = 2 ** n_bits - 1\n    out", "q_max = 2 ** n_bits\n    out",
        "task_1_1_pseudo_quantize"),
    "pseudo-quantize: constant group divides by zero": (
        "task_1_1_pseudo_quantize_code", "(w_max - w_min).clamp(min=1e-5) / q_max", "(w_max - w_min) / q_max",
        "task_1_1_pseudo_quantize"),
    "pseudo-quantize: writes into its input": (
        "task_1_1_pseudo_quantize_code", "out = torch.empty_like(w)", "out = w", "task_1_1_pseudo_quantize"),
    "RTN: every linear, the tied head (embedding) too": (
        "task_1_1_pseudo_quantize_code", "for linear in block_linears(model).values():",
        "for linear in [m for m in model.modules() if isinstance(m, nn.Linear)]:", "task_1_1_pseudo_quantize"),
    "RTN: model not changed in place": (
        "task_1_1_pseudo_quantize_code",
        "linear.weight.copy_(pseudo_quantize(linear.weight, n_bits, group_size))",
        "w_q = pseudo_quantize(linear.weight, n_bits, group_size)",
        "task_1_1_pseudo_quantize"),
    # ---- 2.1
    "salient: weight importance per output row": (
        "task_2_1_salient_channels_code", "return weight.abs().mean(dim=0)", "return weight.abs().mean(dim=1)",
        "task_2_1_salient_channels"),
    "salient: signed weights": (
        "task_2_1_salient_channels_code", "return weight.abs().mean(dim=0)", "return weight.mean(dim=0)",
        "task_2_1_salient_channels"),
    "salient: random scores ignore the generator": (
        "task_2_1_salient_channels_code", "torch.rand(weight.shape[1], generator=generator)",
        "torch.rand(weight.shape[1])", "task_2_1_salient_channels"),
    "salient: least important channels": (
        "task_2_1_salient_channels_code", "torch.topk(importance, k).indices",
        "torch.topk(importance, k, largest=False).indices", "task_2_1_salient_channels"),
    "salient: floor instead of round": (
        "task_2_1_salient_channels_code", "max(1, round(fraction * importance.numel()))",
        "max(1, int(fraction * importance.numel()))", "task_2_1_salient_channels"),
    "keep channels: kept columns quantized too": (
        "task_2_1_salient_channels_code", "    out[:, keep] = w[:, keep]\n", "", "task_2_1_salient_channels"),
    "keep channels: kept rows instead of columns": (
        "task_2_1_salient_channels_code", "out[:, keep] = w[:, keep]", "out[keep % w.shape[0]] = w[keep % w.shape[0]]",
        "task_2_1_salient_channels"),
    # ---- 3.1
    "scale: applied on the wrong side": (
        "task_3_1_scale_salient_code",
        "pseudo_quantize(w * s[None, :], n_bits, group_size) / s[None, :]",
        "pseudo_quantize(w / s[None, :], n_bits, group_size) * s[None, :]",
        "task_3_1_scale_salient"),
    "scale: not undone": (
        "task_3_1_scale_salient_code",
        "pseudo_quantize(w * s[None, :], n_bits, group_size) / s[None, :]",
        "pseudo_quantize(w * s[None, :], n_bits, group_size)",
        "task_3_1_scale_salient"),
    "scale: on the output rows": (
        "task_3_1_scale_salient_code",
        "pseudo_quantize(w * s[None, :], n_bits, group_size) / s[None, :]",
        "pseudo_quantize(w * s[:w.shape[0], None], n_bits, group_size) / s[:w.shape[0], None]",
        "task_3_1_scale_salient"),
    "salient scale: s_value everywhere": (
        "task_3_1_scale_salient_code", "s = torch.ones(in_features)", "s = torch.full((in_features,), float(s_value))",
        "task_3_1_scale_salient"),
    # ---- 4.1
    "search: leaves the weights quantized": (
        "task_4_1_search_scale_code",
        "    for lin, w in zip(group.linears, originals):\n        lin.weight.copy_(w)\n    return",
        "    return",
        "task_4_1_search_scale"),
    "search: scales not normalised": (
        "task_4_1_search_scale_code", "s = s / (s.max() * s.min()).sqrt()", "pass", "task_4_1_search_scale"),
    "search: alpha grid ends at 1": (
        "task_4_1_search_scale_code", "alpha = i / n_grid", "alpha = i / (n_grid - 1)", "task_4_1_search_scale"),
    "search: o_proj scales not tied": (
        "task_4_1_search_scale_code", "    x_mean = llm.tie_channels(x_mean, group.prev_channel)\n", "",
        "task_4_1_search_scale"),
    "search: error against the previous candidate, not the fp output": (
        "task_4_1_search_scale_code", "        losses.append(loss)\n",
        "        losses.append(loss)\n        target = group.run(x)\n", "task_4_1_search_scale"),
    "search: scales from the weights": (
        "task_4_1_search_scale_code", "x_mean = x.abs().reshape(-1, x.shape[-1]).float().mean(dim=0)",
        "x_mean = torch.cat([l.weight for l in group.linears]).abs().mean(dim=0)", "task_4_1_search_scale"),
    # ---- 5.1
    "clip: judged on the weights, not the output": (
        "task_5_1_search_clip_code",
        "err = (xg @ q.T - target).pow(2).mean(dim=0)[:, None]",
        "err = (q - wg).pow(2).mean(dim=1, keepdim=True)",
        "task_5_1_search_clip"),
    "clip: one threshold per group, not per row": (
        "task_5_1_search_clip_code", "err = (xg @ q.T - target).pow(2).mean(dim=0)[:, None]",
        "err = (xg @ q.T - target).pow(2).mean().expand(wg.shape[0], 1)", "task_5_1_search_clip"),
    "clip: max_shrink ignored": (
        "task_5_1_search_clip_code", "for i in range(int(max_shrink * n_grid)):", "for i in range(n_grid):",
        "task_5_1_search_clip"),
    "clip: apply_clip only clamps from above": (
        "task_5_1_search_clip_code", "torch.clamp(w[:, start:start + group_size], -m, m)",
        "torch.clamp(w[:, start:start + group_size], max=m)", "task_5_1_search_clip"),
    "clip: apply_clip in place": (
        "task_5_1_search_clip_code", "    out = w.clone()\n    for j", "    out = w\n    for j",
        "task_5_1_search_clip"),
    # ---- 6.1
    "fold: on the wrong side": (
        "task_6_1_fold_scales_code", "lin.weight.mul_(s[None, :])", "lin.weight.div_(s[None, :])",
        "task_6_1_fold_scales"),
    "fold: producing norm not divided": (
        "task_6_1_fold_scales_code",
        "    else:  # RMSNorm\n        prev.weight.div_(s_prev)",
        "    else:  # RMSNorm\n        pass",
        "task_6_1_fold_scales"),
    "fold: producing linear's input columns divided": (
        "task_6_1_fold_scales_code", "prev.weight.div_(s_prev[:, None])",
        "prev.weight[:, :len(s)].div_(s[None, :prev.weight.shape[1]])", "task_6_1_fold_scales"),
    "fold: bias not divided": (
        "task_6_1_fold_scales_code", "            prev.bias.div_(s_prev)", "            pass",
        "task_6_1_fold_scales"),
    "fold: grouped-query channels ignored": (
        "task_6_1_fold_scales_code", "s_prev[group.prev_channel] = s", "s_prev[:len(s)] = s[:n_prev]",
        "task_6_1_fold_scales"),
    # ---- 7.1
    "AWQ: scales searched but not folded": (
        "task_7_1_awq_apply_code", "fold_scales(group, s)", "pass", "task_7_1_awq_apply"),
    "AWQ: q_proj and k_proj clipped too": (
        "task_7_1_awq_apply_code", "if lin in (block.self_attn.q_proj, block.self_attn.k_proj):", "if False:",
        "task_7_1_awq_apply"),
    "AWQ: clip ignored": (
        "task_7_1_awq_apply_code", "        if clip:", "        if False:", "task_7_1_awq_apply"),
    "AWQ: n_blocks ignored": (
        "task_7_1_awq_apply_code", "model.model.layers[:n_blocks] if n_blocks else model.model.layers",
        "model.model.layers", "task_7_1_awq_apply"),
    "AWQ: every block searched on the first block's input": (
        "task_7_1_awq_apply_code", "        hidden = next_hidden\n", "", "task_7_1_awq_apply"),
    # ---- 7.2: the results of a broken pipeline
    "results: scales folded on the wrong side": (
        "task_6_1_fold_scales_code", "lin.weight.mul_(s[None, :])", "lin.weight.div_(s[None, :])",
        "task_7_2_awq_results"),
    "results: RTN quantizes nothing": (
        "task_1_1_pseudo_quantize_code", "linear.weight.copy_(pseudo_quantize(linear.weight, n_bits, group_size))",
        "pseudo_quantize(linear.weight, n_bits, group_size)", "task_7_2_awq_results"),
    "results: salient channels chosen at random": (
        "task_2_1_salient_channels_code", "    if kind == \"activation\":\n        return act_mean",
        "    if kind == \"activation\":\n        return torch.rand(weight.shape[1], generator=generator)",
        "task_7_2_awq_results"),
    # ---- 8.1
    "int codes: without the zero point": (
        "task_8_1_int_codes_code",
        "codes = torch.clamp(torch.round(g / scales[..., None]) + zeros[..., None], 0, q_max)",
        "codes = torch.clamp(torch.round(g / scales[..., None]), 0, q_max)",
        "task_8_1_int_codes"),
    "int codes: truncated instead of rounded": (
        "task_8_1_int_codes_code", "torch.clamp(torch.round(g / scales[..., None]) + zeros[..., None], 0, q_max)",
        "torch.clamp(torch.trunc(g / scales[..., None]) + zeros[..., None], 0, q_max)", "task_8_1_int_codes"),
    "int codes: float codes": (
        "task_8_1_int_codes_code", "return codes.reshape(out_f, in_f).to(torch.uint8)",
        "return codes.reshape(out_f, in_f)", "task_8_1_int_codes"),
    "int codes: groups across rows": (
        "task_8_1_int_codes_code", "g = w.reshape(out_f, in_f // group_size, group_size)",
        "g = w.reshape(in_f // group_size, out_f, group_size)",
        "task_8_1_int_codes"),
}

# Correct solutions written differently: full marks.
ALTERNATIVES = {
    "pseudo-quantize by reshaping padded groups": (
        "task_1_1_pseudo_quantize_code", "    q_max = 2 ** n_bits - 1\n    out = torch.empty_like(w)",
        "    q_max = 2 ** n_bits - 1\n"
        "    n_out, n_in = w.shape\n"
        "    pad = (-n_in) % group_size\n"
        "    wp = torch.cat([w, w[:, -1:].expand(n_out, pad)], dim=1) if pad else w\n"
        "    g = wp.reshape(n_out, -1, group_size)\n"
        "    lo, hi = g.min(dim=2, keepdim=True).values, g.max(dim=2, keepdim=True).values\n"
        "    step = torch.clamp(hi - lo, min=1e-5) / q_max\n"
        "    zp = torch.clamp(torch.round(-lo / step), 0, q_max)\n"
        "    deq = (torch.clamp(torch.round(g / step) + zp, 0, q_max) - zp) * step\n"
        "    return deq.reshape(n_out, -1)[:, :n_in].clone()\n"
        "    out = torch.empty_like(w)",
        "task_1_1_pseudo_quantize"),
    "RTN with named_modules and .data": (
        "task_1_1_pseudo_quantize_code",
        "    for linear in block_linears(model).values():\n"
        "        linear.weight.copy_(pseudo_quantize(linear.weight, n_bits, group_size))",
        "    for name, m in model.model.layers.named_modules():\n"
        "        if isinstance(m, nn.Linear):\n"
        "            m.weight.data = pseudo_quantize(m.weight.data, n_bits, group_size)",
        "task_1_1_pseudo_quantize"),
    "salient channels by argsort": (
        "task_2_1_salient_channels_code", "    return torch.topk(importance, k).indices",
        "    return torch.argsort(importance, descending=True)[:k]", "task_2_1_salient_channels"),
    "random importance as a permutation": (
        "task_2_1_salient_channels_code", "return torch.rand(weight.shape[1], generator=generator)",
        "return torch.randperm(weight.shape[1], generator=generator).float()", "task_2_1_salient_channels"),
    "weight importance as a sum": (
        "task_2_1_salient_channels_code", "return weight.abs().mean(dim=0)", "return weight.abs().sum(dim=0)",
        "task_2_1_salient_channels"),
    "scale by diag and matmul": (
        "task_3_1_scale_salient_code", "return pseudo_quantize(w * s[None, :], n_bits, group_size) / s[None, :]",
        "return pseudo_quantize(w @ torch.diag(s), n_bits, group_size) @ torch.diag(1 / s)",
        "task_3_1_scale_salient"),
    "salient scale with index_fill": (
        "task_3_1_scale_salient_code", "    s = torch.ones(in_features)\n    s[salient] = s_value\n    return s",
        "    return torch.ones(in_features).index_fill(0, torch.as_tensor(salient), float(s_value))",
        "task_3_1_scale_salient"),
    "search: losses as floats": (
        "task_4_1_search_scale_code", "        losses.append(loss)", "        losses.append(float(loss))",
        "task_4_1_search_scale"),
    "search: alphas from linspace": (
        "task_4_1_search_scale_code", "alpha = i / n_grid", "alpha = float(torch.linspace(0, 1, n_grid + 1)[i])",
        "task_4_1_search_scale"),
    "search: normalised with exp(mean of log extremes)": (
        "task_4_1_search_scale_code", "s = s / (s.max() * s.min()).sqrt()",
        "s = s * torch.exp(-0.5 * (s.max().log() + s.min().log()))", "task_4_1_search_scale"),
    "clip searched for all groups at once": (
        "task_5_1_search_clip_code", "    max_vals = []\n    for start in range(0, w.shape[1], group_size):",
        "    out_f, in_f = w.shape\n"
        "    res = torch.empty(out_f, math.ceil(in_f / group_size))\n"
        "    for j, start in enumerate(range(0, in_f, group_size)):\n"
        "        wg, xg = w[:, start:start + group_size], x[:, start:start + group_size]\n"
        "        ref = xg @ wg.T\n"
        "        top = wg.abs().max(dim=1).values\n"
        "        cands = [top * (1 - i / n_grid) for i in range(int(max_shrink * n_grid))]\n"
        "        errs = torch.stack([((xg @ pseudo_quantize(torch.max(torch.min(wg, c[:, None]), -c[:, None]), n_bits,"
        " wg.shape[1]).T - ref) ** 2).mean(0) for c in cands])\n"
        "        res[:, j] = torch.stack(cands)[errs.argmin(0), torch.arange(out_f)]\n"
        "    return res\n"
        "    max_vals = []\n    for start in range(0, w.shape[1], group_size):",
        "task_5_1_search_clip"),
    "fold by reassigning the product": (
        "task_6_1_fold_scales_code", "    for lin in group.linears:\n        lin.weight.mul_(s[None, :])",
        "    for lin in group.linears:\n        lin.weight.copy_(lin.weight * s.reshape(1, -1))",
        "task_6_1_fold_scales"),
    "fold: per-channel scatter with a loop": (
        "task_6_1_fold_scales_code", "    s_prev = torch.ones(n_prev, dtype=s.dtype)\n    s_prev[group.prev_channel] = s",
        "    s_prev = torch.ones(n_prev, dtype=s.dtype)\n"
        "    for j, c in enumerate(group.prev_channel.tolist()):\n"
        "        s_prev[c] = s[j]",
        "task_6_1_fold_scales"),
    "AWQ: clip each group right after its scales": (
        "task_7_1_awq_apply_code", "            group.x = group.x / s\n        if clip:\n            for group in groups:\n",
        "            group.x = group.x / s\n            if clip:\n",
        "task_7_1_awq_apply"),
    "int codes with a per-group loop": (
        "task_8_1_int_codes_code", "    out_f, in_f = w.shape\n    q_max",
        "    q_max = 2 ** n_bits - 1\n"
        "    cs, ss, zs = [], [], []\n"
        "    for start in range(0, w.shape[1], group_size):\n"
        "        g = w[:, start:start + group_size]\n"
        "        d = (g.max(1).values - g.min(1).values).clamp(min=1e-5) / q_max\n"
        "        z = (-g.min(1).values / d).round().clamp(0, q_max)\n"
        "        cs.append((g / d[:, None]).round().add(z[:, None]).clamp(0, q_max))\n"
        "        ss.append(d); zs.append(z)\n"
        "    return torch.cat(cs, 1).byte(), torch.stack(ss, 1), torch.stack(zs, 1).byte()\n"
        "    out_f, in_f = w.shape\n    q_max",
        "task_8_1_int_codes"),
}


globals().update(lab_tests(LAB, PREAMBLE, MISTAKES, ALTERNATIVES, extra=lambda harness, test_id: EXTRA.get(test_id, "")))
