"""Lab 05's trusted checks pass the reference solution, pass correct
solutions written differently, and fail the typical mistakes (run with
``pytest solutions/lab05_tinyengine`` or ``-m lab05_tinyengine``)."""
import pytest

from autograder.labtest import lab_tests, locked_cell

LAB = "lab05_tinyengine"
pytestmark = pytest.mark.lab05_tinyengine


def _locked_cell(grade_id):
    return locked_cell(LAB, grade_id)


# The set-up cell's imports and thread setting (the checks build their own graphs: no model, no data
# here) and the locked `patch_helpers` cell (patch_grid, area) the solution cells use, as in the notebook.
PREAMBLE = """
import time
import numpy as np
import torch
from helpers import tinyml
torch.set_num_threads(1)  # as the set-up cell: the int8 reference's fp64 convs crawl on oversubscribed threads
""" + _locked_cell("patch_helpers")

# name: (solution cell, fragment, replacement, the test cell that must fail)
MISTAKES = {
    "lifetimes: input alive from op 0": (
        "task_1_1_layer_by_layer_code", "life = {graph.input: (-1, -1)}", "life = {graph.input: (0, 0)}",
        "task_1_1_layer_by_layer"),
    "lifetimes: last reader not updated (a skip dies early)": (
        "task_1_1_layer_by_layer_code", "life[name] = (life[name][0], i)",
        "life[name] = (life[name][0], max(life[name][1], i) if life[name][1] < 0 else life[name][1])",
        "task_1_1_layer_by_layer"),
    "layer by layer: only the op's inputs and output": (
        "task_1_1_layer_by_layer_code", "for t, (first, last) in life.items() if first <= i <= last)",
        "for t in set(graph.ops[i].inputs + [graph.ops[i].output]))", "task_1_1_layer_by_layer"),
    "layer by layer: the output counted from the op after": (
        "task_1_1_layer_by_layer_code", "if first <= i <= last)", "if first < i <= last)",
        "task_1_1_layer_by_layer"),
    "in-place: no last-reader condition": (
        "task_2_1_inplace_code", "if op.kind == \"dwconv\" and life[src.name][1] == i and dst.nbytes <= src.nbytes:",
        "if op.kind == \"dwconv\":", "task_2_1_inplace"),
    "in-place: scratch forgotten": (
        "task_2_1_inplace_code", "usage[i] += src.shape[0] * src.shape[1] - dst.nbytes", "usage[i] -= dst.nbytes",
        "task_2_1_inplace"),
    "in-place: scratch of the output's size (stride-2)": (
        "task_2_1_inplace_code", "usage[i] += src.shape[0] * src.shape[1] - dst.nbytes",
        "usage[i] += dst.shape[0] * dst.shape[1] - dst.nbytes", "task_2_1_inplace"),
    "in-place: output size not compared": (
        "task_2_1_inplace_code", "life[src.name][1] == i and dst.nbytes <= src.nbytes", "life[src.name][1] == i",
        "task_2_1_inplace"),
    "receptive field: not clipped to the input": (
        "task_3_1_receptive_field_code", "return ((max(0, y0 * s - p), min(in_shape[0], (y1 - 1) * s - p + k)),\n"
        "            (max(0, x0 * s - p), min(in_shape[1], (x1 - 1) * s - p + k)))",
        "return ((y0 * s - p, (y1 - 1) * s - p + k), (x0 * s - p, (x1 - 1) * s - p + k))",
        "task_3_1_receptive_field"),
    "receptive field: stride ignored": (
        "task_3_1_receptive_field_code", "k, s, p = op.kernel, op.stride, op.padding",
        "k, s, p = op.kernel, 1, op.padding", "task_3_1_receptive_field"),
    "receptive field: one row short (y1 * s - p)": (
        "task_3_1_receptive_field_code", "min(in_shape[0], (y1 - 1) * s - p + k)",
        "min(in_shape[0], y1 * s - p + k - 2)", "task_3_1_receptive_field"),
    "receptive field: H used for the columns": (
        "task_3_1_receptive_field_code", "min(in_shape[1], (x1 - 1) * s - p + k)",
        "min(in_shape[0], (x1 - 1) * s - p + k)", "task_3_1_receptive_field"),
    "stage regions: the last reader wins (no union)": (
        "task_3_1_receptive_field_code", "            if name in regions:", "            if False:",
        "task_3_1_receptive_field"),
    "patch plan: tiles without channels": (
        "task_3_2_patch_plan_code", "tile = {t: area(r) * graph.tensors[t].shape[2] for t, r in regions.items()}",
        "tile = {t: area(r) for t, r in regions.items()}", "task_3_2_patch_plan"),
    "patch plan: rest layer by layer (no in-place)": (
        "task_3_2_patch_plan_code", "rest_peak = max(plan_inplace(graph)[n_ops:])",
        "rest_peak = max(plan_layer_by_layer(graph)[n_ops:])", "task_3_2_patch_plan"),
    "patch plan: no halo (tiles = the patch itself)": (
        "task_3_2_patch_plan_code", "        regions = stage_regions(graph, n_ops, region)\n        tile",
        "        regions = {t: region for t in stage_regions(graph, n_ops, region)}\n        tile", "task_3_2_patch_plan"),
    "patch plan: no ValueError at a bad split": (
        "task_3_2_patch_plan_code", "    if crossing:\n", "    if False:\n", "task_3_2_patch_plan"),
    "patch plan: overhead without the -1": (
        "task_3_2_patch_plan_code", "\"macs_overhead\": patch_macs / stage_macs - 1",
        "\"macs_overhead\": patch_macs / stage_macs", "task_3_2_patch_plan"),
    "patch execution: padding with 0 instead of the zero point": (
        "task_3_3_patch_execution_code", "sub = np.pad(sub, pads, constant_values=t.zero_point)",
        "sub = np.pad(sub, pads, constant_values=0)", "task_3_3_patch_execution"),
    "patch execution: op's own padding on every tile (no halo handling)": (
        "task_3_3_patch_execution_code", "tiles[op.output] = tinyml.run_op(graph, op, ins, padding=0)",
        "tiles[op.output] = tinyml.run_op(graph, op, [tiles[n] for n in op.inputs])[:y1 - y0, :x1 - x0]",
        "task_3_3_patch_execution"),
    "arena: everything at offset 0": (
        "task_4_1_arena_code", "        offsets[name] = offset\n", "        offsets[name] = 0\n", "task_4_1_arena"),
    "arena: lifetimes ignored (bump allocator)": (
        "task_4_1_arena_code", "if f <= last and first <= l)", ")", "task_4_1_arena"),
    "arena: in-place output not sharing its input's offset": (
        "task_4_1_arena_code", "        if name in shared:", "        if False:", "task_4_1_arena"),
    "arena: in-place even when the input is read again": (
        "task_4_1_arena_code", "if op.kind == \"dwconv\" and life[src.name][1] == i and dst.nbytes <= src.nbytes:",
        "if op.kind == \"dwconv\":", "task_4_1_arena"),
    "codegen: input and output zero points swapped": (
        "task_4_2_codegen_code", "{op.padding}, {op.padding}, {y.shape[0]}, {y.shape[1]}, {x.zero_point}, {y.zero_point}, {q});\")\n"
        "        elif op.kind == \"dwconv\" and",
        "{op.padding}, {op.padding}, {y.shape[0]}, {y.shape[1]}, {y.zero_point}, {x.zero_point}, {q});\")\n"
        "        elif op.kind == \"dwconv\" and", "task_4_2_codegen"),
    "codegen: never in place": (
        "task_4_2_codegen_code", "elif op.kind == \"dwconv\" and offsets[x.name] == offsets[y.name]:",
        "elif False:", "task_4_2_codegen"),
    "codegen: stride 1 everywhere": (
        "task_4_2_codegen_code", "{op.kernel}, {op.kernel}, {op.stride}, {op.stride}", "{op.kernel}, {op.kernel}, 1, 1",
        "task_4_2_codegen"),
    "codegen: the add uses its first input's zero point for both": (
        "task_4_2_codegen_code", "{b.zero_point}, {y.zero_point}, {n}_m", "{x.zero_point}, {y.zero_point}, {n}_m",
        "task_4_2_codegen"),
    "codegen: malloc'd arena": (
        "task_4_2_codegen_code", "lines = [\"#include <string.h>\", f\"static int8_t arena[{arena}];\"]",
        "lines = [\"#include <string.h>\\n#include <stdlib.h>\", f\"static int8_t arena[{arena}];\\n"
        "static int8_t *scratch_unused(void) {{ return malloc(1); }}\"]", "task_4_2_codegen"),
    "codegen: the C does not compile": (
        "task_4_2_codegen_code", "body.append(f\"    memcpy(output, arena + {offsets[graph.output]}, "
        "{T[graph.output].nbytes});\")",
        "body.append(f\"    memcpy(output, arena + {offsets[graph.output]}, {T[graph.output].nbytes})\")",
        "task_4_2_codegen"),
    "codegen: the logits copied from the wrong tensor": (
        "task_4_2_codegen_code", "memcpy(output, arena + {offsets[graph.output]}",
        "memcpy(output, arena + {offsets[graph.ops[-2].output]}", "task_4_2_codegen"),
}

# Correct solutions written differently: full marks.
ALTERNATIVES = {
    "lifetimes via graph.consumers (lists)": (
        "task_1_1_layer_by_layer_code", "    life = {graph.input: (-1, -1)}\n    for i, op in enumerate(graph.ops):",
        "    life = {}\n"
        "    for name, first in [(graph.input, -1)] + [(op.output, i) for i, op in enumerate(graph.ops)]:\n"
        "        life[name] = [first, max(graph.consumers(name), default=first)]\n"
        "    return life\n"
        "    for i, op in enumerate(graph.ops):",
        "task_1_1_layer_by_layer"),
    "layer by layer with a sweep (numpy array result)": (
        "task_1_1_layer_by_layer_code",
        "    return [sum(graph.tensors[t].nbytes for t, (first, last) in life.items() if first <= i <= last)\n"
        "            for i in range(len(graph.ops))]",
        "    use = np.zeros(len(graph.ops), dtype=np.int64)\n"
        "    for t, (first, last) in life.items():\n"
        "        use[max(first, 0):last + 1] += graph.tensors[t].nbytes\n"
        "    return use",
        "task_1_1_layer_by_layer"),
    "in-place plan written from scratch": (
        "task_2_1_inplace_code", "    life = lifetimes(graph)\n    usage = plan_layer_by_layer(graph)",
        "    life = lifetimes(graph)\n"
        "    usage = []\n"
        "    for i, op in enumerate(graph.ops):\n"
        "        total = 0\n"
        "        for t, (first, last) in life.items():\n"
        "            if not first <= i <= last:\n"
        "                continue\n"
        "            x = graph.tensors[op.inputs[0]]\n"
        "            if (t == op.output and op.kind == 'dwconv' and life[x.name][1] == i\n"
        "                    and graph.tensors[t].nbytes <= x.nbytes):\n"
        "                total += x.shape[0] * x.shape[1]\n"
        "            else:\n"
        "                total += graph.tensors[t].nbytes\n"
        "        usage.append(total)\n"
        "    return usage\n"
        "    usage = plan_layer_by_layer(graph)",
        "task_2_1_inplace"),
    "receptive field from the first and last window (lists)": (
        "task_3_1_receptive_field_code", "    (y0, y1), (x0, x1) = out_region\n    k, s, p",
        "    (y0, y1), (x0, x1) = out_region\n"
        "    def span(a, b, n):\n"
        "        lo, hi = a * op.stride - op.padding, (b - 1) * op.stride - op.padding + op.kernel - 1\n"
        "        return [max(lo, 0), min(hi, n - 1) + 1]\n"
        "    return [span(y0, y1, in_shape[0]), span(x0, x1, in_shape[1])]\n"
        "    k, s, p",
        "task_3_1_receptive_field"),
    "stage regions by tensor, in reverse production order": (
        "task_3_1_receptive_field_code", "    regions = {graph.ops[n_ops - 1].output: out_region}\n    for op in",
        "    out = {graph.ops[n_ops - 1].output: out_region}\n"
        "    for name in reversed([graph.input] + [op.output for op in graph.ops[:n_ops - 1]]):\n"
        "        needs = [input_region(c, out[c.output], graph.tensors[name].shape)\n"
        "                 for c in graph.ops[:n_ops] if name in c.inputs]\n"
        "        if needs:\n"
        "            out[name] = ((min(r[0][0] for r in needs), max(r[0][1] for r in needs)),\n"
        "                         (min(r[1][0] for r in needs), max(r[1][1] for r in needs)))\n"
        "    return out\n"
        "    regions = {graph.ops[n_ops - 1].output: out_region}\n    for op in",
        "task_3_1_receptive_field"),
    "patch plan with float MAC fractions and numpy scalars": (
        "task_3_2_patch_plan_code",
        "patch_macs += graph.macs(op) * area(regions[op.output]) // (out.shape[0] * out.shape[1])",
        "patch_macs += graph.macs(op) * np.float64(area(regions[op.output]) / (out.shape[0] * out.shape[1]))",
        "task_3_2_patch_plan"),
    "patch execution: windows cut from a zero-point canvas of the padded input": (
        "task_3_3_patch_execution_code",
        "                sub = tiles[name][ny0 - ty0:ny1 - ty0, nx0 - tx0:nx1 - tx0]\n",
        "                sub = tiles[name][ny0 - ty0:ny1 - ty0, nx0 - tx0:nx1 - tx0]\n"
        "                if op.kind in (\"conv\", \"dwconv\"):\n"
        "                    k, s, p = op.kernel, op.stride, op.padding\n"
        "                    canvas = np.full((t.shape[0] + 2 * p, t.shape[1] + 2 * p, t.shape[2]), t.zero_point, np.int8)\n"
        "                    canvas[p + ny0:p + ny1, p + nx0:p + nx1] = sub\n"
        "                    ins.append(canvas[y0 * s:(y1 - 1) * s + k, x0 * s:(x1 - 1) * s + k])\n"
        "                    continue\n",
        "task_3_3_patch_execution"),
    "arena by best fit over free gaps": (
        "task_4_1_arena_code",
        "        offset = 0\n        for start, end in busy:\n            if offset + size <= start:\n"
        "                break\n            offset = max(offset, end)",
        "        best, cursor = None, 0\n"
        "        for start, end in busy + [(10**12, 10**12)]:\n"
        "            if start - cursor >= size and (best is None or start - cursor < best[1]):\n"
        "                best = (cursor, start - cursor)\n"
        "            cursor = max(cursor, end)\n"
        "        offset = best[0]",
        "task_4_1_arena"),
    "codegen with a macro for the arena pointer and a switch-free op table": (
        "task_4_2_codegen_code", "xp, yp = f\"arena + {offsets[x.name]}\", f\"arena + {offsets[y.name]}\"",
        "xp, yp = f\"&arena[{offsets[x.name]}]\", f\"(arena + {offsets[y.name]})\"", "task_4_2_codegen"),
    "codegen with the constants declared after a comment and the arena as `static int8_t arena [N]`": (
        "task_4_2_codegen_code", "lines = [\"#include <string.h>\", f\"static int8_t arena[{arena}];\"]",
        "lines = [\"#include <string.h>\", \"/* activations */\", f\"static  int8_t arena [ {arena} ];\"]",
        "task_4_2_codegen"),
}


globals().update(lab_tests(LAB, PREAMBLE, MISTAKES, ALTERNATIVES))
