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

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAB = "lab13_on_device_training"
KEYS = ("training_memory_bytes", "sparse_update_acc_gap", "qas_acc_gain")


def main(argv=None) -> int:
    from autograder.labrun import run_solution

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="QUICK mode instead of full mode")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args(argv)

    figures, seconds = run_solution(LAB, quick=args.quick)
    missing = [k for k in KEYS if k not in figures]
    if missing:
        print(f"the notebook recorded no {missing}", file=sys.stderr)
        return 1
    mem = figures["training_memory_bytes"]
    ratio = mem["full"] / mem["bias"]
    frac = mem["sparse"] / mem["full"]
    gap, gain = figures["sparse_update_acc_gap"], figures["qas_acc_gain"]
    checks = {
        f"bias-only memory: full / bias = {ratio:.1f}x (target >= 5x)": ratio >= 5,
        f"sparse update: {gap:+.4f} below full fine-tuning (target <= 0.02)": gap <= 0.02,
        f"sparse update memory: {frac:.2f} of full (target <= 0.33)": frac <= 1 / 3,
        f"int8 QAS gain: {gain:+.4f} (target > 0)": gain > 0,
    }
    print(f"Lab 13 ({'QUICK' if args.quick else 'full'} mode), notebook wall time {seconds:.1f} s")
    for scheme, b in mem.items():
        print(f"  {scheme:8s} {b / 1024:9.1f} KiB")
    for line, ok in checks.items():
        print(f"  {line}: {'meets' if ok else 'MISSES'}")
    if args.json:
        print(json.dumps({**{k: figures[k] for k in KEYS}, "runtime_s": round(seconds, 2)}, sort_keys=True))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
