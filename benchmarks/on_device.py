"""Lab 13 benchmark: on-device training figures of the solution notebook.

    python benchmarks/on_device.py [--quick] [--json]

Executes ``solutions/lab13_on_device_training`` the way the grader does
(``autograder.labrun.run_solution``; FULL mode by default, the issue's figures;
``--quick`` for QUICK mode) and reads the figures the notebook records with
``helpers.figures.record``:

* ``training_memory_bytes``: scheme -> training memory in bytes at batch 32
  (weights, gradients, SGD momentum, saved activations); target: full / bias >= 5;
* ``sparse_update_acc_gap``: full fine-tuning's test accuracy minus the sparse
  update's (a fraction, 0.02 = 2 points); target <= 0.02 at <= 1/3 of full's memory;
* ``qas_acc_gain``: int8 training's test accuracy with QAS minus without (a
  fraction); target > 0.

With ``--json`` the last line is a JSON object with those keys and ``runtime_s``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lab import lab_benchmark  # noqa: E402

LAB = "lab13_on_device_training"
KEYS = ("training_memory_bytes", "sparse_update_acc_gap", "qas_acc_gain")


def show(figures: dict) -> None:
    for scheme, b in figures["training_memory_bytes"].items():
        print(f"  {scheme:8s} {b / 1024:9.1f} KiB")


def verdicts(figures: dict) -> list[tuple[str, bool]]:
    mem = figures["training_memory_bytes"]
    ratio, frac = mem["full"] / mem["bias"], mem["sparse"] / mem["full"]
    gap, gain = figures["sparse_update_acc_gap"], figures["qas_acc_gain"]
    return [(f"bias-only memory: full / bias = {ratio:.1f}x (>= 5x)", ratio >= 5),
            (f"sparse update: {gap:+.4f} below full fine-tuning (<= 0.02)", gap <= 0.02),
            (f"sparse update memory: {frac:.2f} of full (<= 0.33)", frac <= 1 / 3),
            (f"int8 QAS gain: {gain:+.4f} (> 0)", gain > 0)]


if __name__ == "__main__":
    sys.exit(lab_benchmark(LAB, "Lab 13", KEYS, verdicts, show, doc=__doc__))
