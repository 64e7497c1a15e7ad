"""Runtime and target figures of the vision compression labs (01-03).

Executes each solution notebook with the lab runner (``autograder.labrun``; QUICK
mode by default, full mode with ``--full``), times it, and reads back the figures the notebooks
record with ``helpers.figures.record``.

    python benchmarks/vision.py            # QUICK, human-readable table
    python benchmarks/vision.py --json     # ... and a JSON summary as the last line
    python benchmarks/vision.py --full     # full mode (the targets), several minutes
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autograder.labrun import run_solution  # noqa: E402

LABS = ("lab01_pruning", "lab02_quantization", "lab03_qat_kd")
# The figures the targets name, with the bound each must meet.
TARGETS = {
    "pruned_size_ratio": ("<=", 0.25),
    "pruned_acc_drop": ("<=", 1.0),
    "channel_speedup": (">", 1.0),
    "int8_acc_drop": ("<=", 0.5),
    "qat_int4_acc_drop": ("<=", 1.0),
}


def run_lab(lab: str, quick: bool) -> tuple[float, dict]:
    """Execute one solution notebook; return (seconds, recorded figures)."""
    figures, seconds = run_solution(lab, quick=quick)
    return seconds, figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="full mode instead of QUICK (slow)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    parser.add_argument("--labs", nargs="+", choices=LABS, default=list(LABS))
    args = parser.parse_args(argv)

    runtime, metrics = {}, {}
    for lab in args.labs:
        print(f"running {lab} ({'full' if args.full else 'QUICK'}) ...", file=sys.stderr, flush=True)
        runtime[lab], found = run_lab(lab, quick=not args.full)
        metrics.update(found)

    print(f"{'lab':<22}{'runtime (s)':>12}")
    for lab, seconds in runtime.items():
        print(f"{lab:<22}{seconds:>12.1f}")
    print(f"\n{'figure':<28}{'value':>10}  target")
    missed = []
    for name, value in sorted(metrics.items()):
        op, bound = TARGETS.get(name, (None, None))
        target = f"{op} {bound:g}" if op else ""
        ok = op is None or (value <= bound if op == "<=" else value > bound)
        if not ok:
            missed.append(name)
        print(f"{name:<28}{value:>10.3f}  {target}{'' if ok else '  MISSED'}")
    if args.json:
        print(json.dumps({"mode": "full" if args.full else "quick", **metrics,
                          "runtime_s": {lab: round(s, 1) for lab, s in runtime.items()}, "missed": missed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
