"""Lab 00's trusted checks pass the reference solution, pass correct
solutions written differently, and fail the typical mistakes (run with
``pytest solutions/lab00_basics`` or ``-m lab00_basics``)."""
import pytest

from autograder.labtest import lab_tests

PREAMBLE = """
import math, time
import numpy as np
import torch
from torch import nn
"""
LAB = "lab00_basics"
pytestmark = pytest.mark.lab00_basics

# name: (solution cell, fragment, replacement, the test cell that must fail)
MISTAKES = {
    "output size: true division": (
        "task_1_1_output_size_code", "// stride + 1", "/ stride + 1", "task_1_1_output_size"),
    "output size: dilation ignored": (
        "task_1_1_output_size_code", "dilation * (kernel - 1)", "(kernel - 1)", "task_1_1_output_size"),
    "params: groups ignored": (
        "task_1_2_param_count_code", "(c_in // groups)", "c_in", "task_1_2_param_count"),
    "params: bias always counted": (
        "task_1_2_param_count_code", "(c_out if bias else 0)", "c_out", "task_1_2_param_count"),
    "MACs: groups ignored": (
        "task_1_3_mac_count_code", "(c_in // groups) * kernel * kernel", "c_in * kernel * kernel",
        "task_1_3_mac_count"),
    "MACs: h_out used twice": (
        "task_1_3_mac_count_code", "c_out * h_out * w_out", "c_out * h_out * h_out", "task_1_3_mac_count"),
    "size: bits taken as bytes": (
        "task_2_1_model_size_code", "num_params * bits / 8 / 1024", "num_params * bits / 1024",
        "task_2_1_model_size"),
    "size: rounded to whole KiB": (
        "task_2_1_model_size_code", "num_params * bits / 8 / 1024", "num_params * bits // 8 // 1024",
        "task_2_1_model_size"),
    "peak: largest single activation": (
        "task_2_2_peak_memory_code", "max(a + b for a, b in zip(sizes, sizes[1:]))", "max(sizes)",
        "task_2_2_peak_memory"),
    "peak: sum of all activations": (
        "task_2_2_peak_memory_code", "max(a + b for a, b in zip(sizes, sizes[1:]))", "sum(sizes)",
        "task_2_2_peak_memory"),
    "latency: mean instead of median": (
        "task_3_1_latency_code", "float(np.median(times))", "float(np.mean(times))", "task_3_1_latency"),
    "latency: warm-up calls timed": (
        "task_3_1_latency_code", "    for _ in range(warmup):\n        fn()\n", "", "task_3_1_latency"),
    "pareto: strict dominance only": (
        "task_3_2_pareto_code", "(c2 <= c and a2 >= a) and (c2 < c or a2 > a)", "(c2 < c and a2 > a)",
        "task_3_2_pareto"),
    "pareto: not sorted": (
        "task_3_2_pareto_code", "return sorted(set(front))", "return list(reversed(front))", "task_3_2_pareto"),
}

# Correct solutions written differently: full marks.
ALTERNATIVES = {
    "output size with math.floor": (
        "task_1_1_output_size_code", "return (h + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1",
        "return int(math.floor((h + 2 * padding - dilation * (kernel - 1) - 1) / stride)) + 1",
        "task_1_1_output_size"),
    "latency with statistics.median and a list comprehension": (
        "task_3_1_latency_code", "    return float(np.median(times))",
        "    import statistics\n    return statistics.median(times)", "task_3_1_latency"),
    "pareto by a sweep over cost": (
        "task_3_2_pareto_code", "    front = []\n    for c, a in points:",
        "    best, out = None, []\n"
        "    for c, a in sorted(set(points), key=lambda p: (p[0], -p[1])):\n"
        "        if best is None or a > best:\n"
        "            if out and out[-1][0] == c:\n"
        "                continue\n"
        "            out.append((c, a)); best = a\n"
        "    return out\n"
        "    front = []\n    for c, a in points:",
        "task_3_2_pareto"),
}


globals().update(lab_tests(LAB, PREAMBLE, MISTAKES, ALTERNATIVES))
