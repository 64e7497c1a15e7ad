"""Lab 14 benchmark: the temporal shift module's figures from the solution notebook.

    python benchmarks/video.py [--quick] [--timeout SECONDS] [--json]

Executes ``solutions/lab14_tsm/lab14_tsm.ipynb`` the way the grader does
(``autograder.labrun.run_solution``), in FULL mode unless ``--quick``, and reads
the figures the notebook records with ``helpers.figures.record``:

* ``tsm_vs_tsn_acc_gain``: TSM's test accuracy minus TSN's on the motion-order
  clips, as a fraction (0.30 = 30 points), at the same MACs; target >= 0.30;
* ``conv3d_macs_ratio``: the 3D CNN's MACs per clip over TSM's; target >= 2
  (the notebook also prints whether its accuracy is no better than TSM's);
* ``online_tsm_latency_ratio``: online TSM's latency per frame over the 2D
  per-frame model's, same weights, single-threaded; target <= 1.2.

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

LAB = "lab14_tsm"
# key: (target, ">=" or "<=", what)
TARGETS = {
    "tsm_vs_tsn_acc_gain": (0.30, ">=", "TSM - TSN test accuracy (fraction)"),
    "conv3d_macs_ratio": (2.0, ">=", "3D CNN MACs / TSM MACs"),
    "online_tsm_latency_ratio": (1.2, "<=", "online TSM / 2D per-frame latency"),
}


def run_notebook(quick: bool, timeout: int) -> tuple[dict, float]:
    from autograder.labrun import run_solution

    return run_solution(LAB, quick=quick, cell_timeout=timeout)


def meets(value: float, target: float, sense: str) -> bool:
    return value >= target if sense == ">=" else value <= target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="QUICK mode instead of full (the targets are full mode's)")
    parser.add_argument("--timeout", type=int, default=None, help="per-cell time limit in seconds (default: labrun's)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args(argv)

    figures, runtime = run_notebook(quick=args.quick, timeout=args.timeout)
    print(f"Lab 14 ({'QUICK' if args.quick else 'full'} mode), notebook wall time {runtime:.1f} s")
    missing = [k for k in TARGETS if k not in figures]
    if missing:
        print(f"the notebook recorded no {', '.join(missing)}")
        return 2
    for key, (target, sense, what) in TARGETS.items():
        value = figures[key]
        verdict = "meets" if meets(value, target, sense) else "MISSES"
        print(f"  {key:26s} {value:8.3f}   target {sense} {target:g}  ({what}; {verdict})")
    if args.json:
        print(json.dumps({**{k: figures[k] for k in TARGETS}, "runtime_s": round(runtime, 2)}, sort_keys=True))
    return 0 if all(meets(figures[k], t, s) for k, (t, s, _) in TARGETS.items()) else 1


if __name__ == "__main__":
    sys.exit(main())
