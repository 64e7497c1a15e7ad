"""The tests of labs 06 and 08 catch the mistakes students make.

Each case takes a solution notebook, swaps one fragment of one solution cell
for a typical mistake (no zero point, scales on the wrong side, scales not
folded, LoRA B not zero at init, gradients reaching the frozen base, ...),
executes the lab's solution cells in a fresh namespace up to the task's test
cell, then the test cell itself (visible and hidden tests), and expects it to
fail with the task's ``CheckError``. The unmodified solution passes the same
harness, so a failure is the mistake's doing and not the harness's.

The notebooks' set-up cells load SmolLM2; here a small preamble defines what
the solution and test cells use instead (a tiny Llama as ``model``).
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import nbformat
import pytest

from helpers.checks import CheckError

ROOT = Path(__file__).resolve().parents[1]

PREAMBLE = {
    "lab06_awq": '''
import math, os, time
os.environ.setdefault("TRITON_INTERPRET", "1")
import torch
from torch import nn
from tqdm.auto import tqdm
from helpers import llm
from helpers.llm import block_linears
GROUP, CLIP_TOKENS = 128, 512
# task 8.1's test quantizes model.layers.0.mlp.down_proj: in_features a multiple of 128
model = llm.tiny_llama(seed=0, hidden=128, intermediate=256, heads=4, kv_heads=2, layers=1)
''',
    "lab08_qlora": '''
import math, time
import torch
from torch import nn
from tqdm.auto import tqdm
from helpers import llm
from helpers.llm import block_linears
''',
}

# (lab, solution cell, fragment of its source, the mistake, test cell that must fail)
MISTAKES = {
    # ---- lab 06: AWQ
    "awq: no zero point": (
        "lab06_awq", "task_1_1_pseudo_quantize_code",
        "q = torch.clamp(torch.round(g / scale) + zero, 0, q_max)\n"
        "        out[..., start:start + group_size] = (q - zero) * scale",
        "q = torch.clamp(torch.round(g / scale), 0, q_max)\n"
        "        out[..., start:start + group_size] = q * scale",
        "task_1_1_pseudo_quantize"),
    "awq: one range for the whole row": (
        "lab06_awq", "task_1_1_pseudo_quantize_code",
        "for start in range(0, w.shape[-1], group_size):",
        "for start in range(0, w.shape[-1], w.shape[-1]):",
        "task_1_1_pseudo_quantize"),
    "awq: weight importance per output row": (
        "lab06_awq", "task_2_1_salient_channels_code",
        "return weight.abs().mean(dim=0)", "return weight.abs().mean(dim=1)",
        "task_2_1_salient_channels"),
    "awq: scale applied on the wrong side": (
        "lab06_awq", "task_3_1_scale_salient_code",
        "pseudo_quantize(w * s[None, :], n_bits, group_size) / s[None, :]",
        "pseudo_quantize(w / s[None, :], n_bits, group_size) * s[None, :]",
        "task_3_1_scale_salient"),
    "awq: scale not undone": (
        "lab06_awq", "task_3_1_scale_salient_code",
        "pseudo_quantize(w * s[None, :], n_bits, group_size) / s[None, :]",
        "pseudo_quantize(w * s[None, :], n_bits, group_size)",
        "task_3_1_scale_salient"),
    "awq: scale search leaves the weights quantized": (
        "lab06_awq", "task_4_1_search_scale_code",
        "    for lin, w in zip(group.linears, originals):\n        lin.weight.copy_(w)\n    return",
        "    return",
        "task_4_1_search_scale"),
    "awq: scales not normalised": (
        "lab06_awq", "task_4_1_search_scale_code",
        "s = s / (s.max() * s.min()).sqrt()", "pass",
        "task_4_1_search_scale"),
    "awq: clipping judged on the weights, not the output": (
        "lab06_awq", "task_5_1_search_clip_code",
        "err = (xg @ q.T - target).pow(2).mean(dim=0)[:, None]",
        "err = (q - wg).pow(2).mean(dim=1, keepdim=True)",
        "task_5_1_search_clip"),
    "awq: folded on the wrong side": (
        "lab06_awq", "task_6_1_fold_scales_code",
        "lin.weight.mul_(s[None, :])", "lin.weight.div_(s[None, :])",
        "task_6_1_fold_scales"),
    "awq: producing layer not divided": (
        "lab06_awq", "task_6_1_fold_scales_code",
        "    else:  # RMSNorm\n        prev.weight.div_(s_prev)",
        "    else:  # RMSNorm\n        pass",
        "task_6_1_fold_scales"),
    "awq: scales searched but not folded": (
        "lab06_awq", "task_7_1_awq_apply_code",
        "fold_scales(group, s)", "pass",
        "task_7_1_awq_apply"),
    "awq: integer codes without the zero point": (
        "lab06_awq", "task_8_1_int_codes_code",
        "codes = torch.clamp(torch.round(g / scales[..., None]) + zeros[..., None], 0, q_max)",
        "codes = torch.clamp(torch.round(g / scales[..., None]), 0, q_max)",
        "task_8_1_int_codes"),
    # ---- lab 08: QLoRA
    "qlora: symmetric code book": (
        "lab08_qlora", "task_1_1_nf4_code_book_code",
        "negative = -normal.icdf(torch.linspace(offset, 0.5, 8)[:-1])",
        "negative = -normal.icdf(torch.linspace(offset, 0.5, 9)[:-1])",
        "task_1_1_nf4_code_book"),
    "qlora: code book not normalised to [-1, 1]": (
        "lab08_qlora", "task_1_1_nf4_code_book_code",
        "return (values / values.max()).float()", "return values.float()",
        "task_1_1_nf4_code_book"),
    "qlora: one absmax for the whole tensor": (
        "lab08_qlora", "task_2_1_blockwise_code",
        "absmax = blocks.abs().amax(dim=1)",
        "absmax = blocks.abs().amax().expand(blocks.shape[0]).clone()",
        "task_2_1_blockwise"),
    "qlora: nibbles in the wrong order": (
        "lab08_qlora", "task_2_1_blockwise_code",
        "return (idx[0::2] << 4) | idx[1::2]", "return (idx[1::2] << 4) | idx[0::2]",
        "task_2_1_blockwise"),
    "qlora: double quantization without the mean": (
        "lab08_qlora", "task_3_1_double_quant_code",
        "mean = absmax.mean().item()", "mean = 0.0",
        "task_3_1_double_quant"),
    "qlora: second-level scales not counted": (
        "lab08_qlora", "task_3_1_double_quant_code",
        "return 4 + 8 / block_size + 32 / (block_size * block_size2)", "return 4 + 8 / block_size",
        "task_3_1_double_quant"),
    "qlora: FP4 with two zeros": (
        "lab08_qlora", "task_4_1_code_books_code",
        "torch.cat([-magnitudes.flip(0), torch.zeros(1), magnitudes])",
        "torch.cat([-magnitudes.flip(0), torch.zeros(2), magnitudes])",
        "task_4_1_code_books"),
    "qlora: LoRA B not zero at init": (
        "lab08_qlora", "task_5_1_lora_layer_code",
        "self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank))",
        "self.lora_B = nn.Parameter(torch.randn(self.out_features, rank) * 0.01)",
        "task_5_1_lora_layer"),
    "qlora: gradients reach the frozen base": (
        "lab08_qlora", "task_5_1_lora_layer_code",
        "self.scaling = alpha / rank", "self.scaling = alpha / rank\n        self.base = base",
        "task_5_1_lora_layer"),
    "qlora: scaling alpha instead of alpha / rank": (
        "lab08_qlora", "task_5_1_lora_layer_code",
        "self.scaling = alpha / rank", "self.scaling = alpha",
        "task_5_1_lora_layer"),
    "qlora: model not frozen": (
        "lab08_qlora", "task_6_1_add_lora_code",
        "model.requires_grad_(False)", "pass",
        "task_6_1_add_lora"),
    "qlora: training leaves the model in train mode": (
        "lab08_qlora", "task_7_1_finetune_code",
        "    model.eval()\n    return losses", "    return losses",
        "task_7_1_finetune"),
    "qlora: merged without the scaling": (
        "lab08_qlora", "task_8_1_merge_code",
        "module.dequantized_weight() + module.scaling * module.lora_B @ module.lora_A",
        "module.dequantized_weight() + module.lora_B @ module.lora_A",
        "task_8_1_merge"),
}


def _cells(lab: str) -> list[tuple[str, str, bool]]:
    """(grade_id, source, is a solution cell) of the lab's graded code cells, in order."""
    nb = nbformat.read(ROOT / "solutions" / lab / f"{lab}.ipynb", as_version=4)
    out = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and (meta.get("solution") or meta.get("grade")):
            out.append((meta["grade_id"], cell.source, bool(meta.get("solution"))))
    return out


def _run_test_cell(lab: str, test_id: str, patch: tuple[str, str, str] | None = None) -> None:
    """Execute the preamble and the solution cells before ``test_id``
    (``patch`` = (cell, old, new) changes one of them), then ``test_id``."""
    ns: dict = {"__name__": "__main__"}
    exec(PREAMBLE[lab], ns)
    cells = _cells(lab)
    assert test_id in [gid for gid, _, _ in cells], f"{lab} has no test cell {test_id}"
    for gid, source, is_solution in cells:
        if gid == test_id:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                exec(compile(source, f"<{lab}:{gid}>", "exec"), ns)
            return
        if not is_solution:
            continue
        if patch and gid == patch[0]:
            assert patch[1] in source, f"the solution of {gid} changed: update this mistake"
            source = source.replace(patch[1], patch[2])
        exec(compile(source, f"<{lab}:{gid}>", "exec"), ns)


TESTED = sorted({(lab, test) for lab, _, _, _, test in MISTAKES.values()})


@pytest.mark.parametrize("lab,test_id", TESTED)
def test_the_solution_passes_the_harness(lab, test_id):
    _run_test_cell(lab, test_id)


@pytest.mark.parametrize("name", MISTAKES)
def test_the_mistake_is_caught(name):
    lab, cell, old, new, test_id = MISTAKES[name]
    with pytest.raises(CheckError, match=r"Task \d"):
        _run_test_cell(lab, test_id, (cell, old, new))


def test_every_task_has_a_mistake_on_file():
    """Each autograded task of both labs has at least one mistake its tests must catch."""
    for lab in PREAMBLE:
        tests = {gid for gid, _, is_solution in _cells(lab) if not is_solution}
        covered = {test for l, _, _, _, test in MISTAKES.values() if l == lab}
        assert tests - covered <= {"task_7_2_awq_results"}, f"{lab}: no mistake for {sorted(tests - covered)}"
