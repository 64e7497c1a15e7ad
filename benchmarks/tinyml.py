"""TinyML track benchmark: QUICK runtimes of labs 04 (NAS) and 05 (TinyEngine
deployment) and the target figures they print.

    python benchmarks/tinyml.py [--labs lab04_nas lab05_tinyengine] [--json]

Each solution notebook is executed by the lab runner (``autograder.labrun``) in
QUICK mode; the labs record their figures with ``helpers.figures.record``. With ``--json`` the last
line is a JSON object with ``runtime_s`` (lab -> seconds), ``peak_sram_reduction``
(layer-by-layer peak / patch-based + in-place peak), ``codegen_bit_exact``,
``evo_vs_random_acc_gain`` (points of predicted accuracy, evolution minus
random search at equal evaluations), ``evo_vs_random_test_acc_gain`` (the same
in measured test accuracy), ``predictor_spearman`` and ``plan_fits_budget``.
The machine may be shared: the load average is printed with the runtimes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autograder.labrun import run_solution  # noqa: E402

LABS = ("lab04_nas", "lab05_tinyengine")
TARGETS = {  # figure -> (target, how to read it)
    "predictor_spearman": (0.5, ">="),
    "evo_vs_random_acc_gain": (0.0, ">"),
    "peak_sram_reduction": (3.0, ">="),
    "codegen_bit_exact": (True, "=="),
    "plan_fits_budget": (True, "=="),
}




def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labs", nargs="+", default=list(LABS), choices=LABS)
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = parser.parse_args(argv)

    results: dict = {"runtime_s": {}}
    for lab in args.labs:
        print(f"running {lab} (QUICK) ...", flush=True)
        figures, seconds = run_solution(lab)
        results["runtime_s"][lab] = round(seconds, 1)
        results.update(figures)

    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for lab, secs in results["runtime_s"].items():
        print(f"{lab:<20} {secs:>7.1f} s (QUICK)")
    for name, (target, how) in TARGETS.items():
        if name in results:
            value = results[name]
            ok = {">=": lambda: value >= target, ">": lambda: value > target, "==": lambda: value == target}[how]()
            shown = f"{value:.3f}" if isinstance(value, float) else str(value)
            print(f"{name:<28} {shown:>8}   target {how} {target}: {'met' if ok else 'MISSED'}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
