"""Lab 10 benchmark: the noise-mitigation figures of the solution notebook.

    python benchmarks/qml.py [--full] [--timeout 600] [--json]

Executes ``solutions/lab10_qml/lab10_qml.ipynb`` with the lab runner (QUICK mode
unless ``--full``) and reads the figures it records (``helpers.figures``):

* ``zne_error_reduction``: |noisy - ideal| / |ZNE - ideal| of <ZZ> on a shallow
  2-qubit randomized-benchmarking-style circuit (global folding at scales
  1, 2, 3, Richardson extrapolation); target >= 3;
* ``rem_tvd_reduction``: total-variation distance of a Bell state from ideal,
  raw / after readout-error mitigation (least squares); target >= 10;
* the variational classifier's test accuracy under noise and the mean
  distance of its outputs from the noiseless ones, raw and after ZNE.

With ``--json`` the last line is a JSON object with those keys and
``runtime_s`` (wall time of the notebook run, kernel start included).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autograder.labrun import run_solution  # noqa: E402

TARGETS = {"zne_error_reduction": 3.0, "rem_tvd_reduction": 10.0}


def run_notebook(quick: bool, timeout: int) -> tuple[dict, float]:
    return run_solution("lab10_qml", quick=quick, cell_timeout=timeout)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="full mode instead of QUICK (slower)")
    parser.add_argument("--timeout", type=int, default=600, help="per-cell time limit in seconds")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args(argv)

    figures, runtime = run_notebook(quick=not args.full, timeout=args.timeout)
    mode = "full" if args.full else "QUICK"
    print(f"Lab 10 ({mode} mode), notebook wall time {runtime:.1f} s")
    for key, target in TARGETS.items():
        value = figures[key]
        verdict = "meets" if value >= target else "MISSES"
        print(f"  {key:24s} {value:8.1f}x   target >= {target:g}x ({verdict})")
    print(f"  VQC test accuracy under noise      {figures['vqc_test_accuracy_noisy']:.3f}")
    print(f"  VQC |output - noiseless|  noisy    {figures['vqc_output_error_noisy']:.4f}")
    print(f"  VQC |output - noiseless|  ZNE      {figures['vqc_output_error_zne']:.4f}")
    if args.json:
        print(json.dumps({**figures, "runtime_s": round(runtime, 2)}, sort_keys=True))
    return 0 if all(figures[k] >= t for k, t in TARGETS.items()) else 1


if __name__ == "__main__":
    sys.exit(main())
