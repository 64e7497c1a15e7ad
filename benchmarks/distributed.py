"""Lab 09 benchmark: the distributed-training figures of the solution notebook.

    python benchmarks/distributed.py [--full] [--timeout 900] [--json]

Executes ``solutions/lab09_distributed/lab09_distributed.ipynb`` with the
lab runner (QUICK mode unless ``--full``) and reads the figures its last cell
records (``helpers.figures``): the largest weight difference between
data-parallel and single-process training, the largest difference between
the tensor-parallel MLP and the unsharded one, the GPipe bubble measured for
m = 1, 2, 4, 8 micro-batches on 4 stages next to (p-1)/(m+p-1), the ZeRO-1
optimizer-memory ratio, and the bytes each scheme sends per rank and step.

The bubble is measured with stages whose forward and backward sleep a fixed
time per sample (``helpers.distributed.ControlledStage``): bubble = 1 -
sum of the stages' busy time / (stages x makespan), best of a few runs.
The machine may be shared: the load average is printed so readers can judge.

With ``--json`` the last line is a JSON object with keys ``dp_max_abs_diff``,
``tp_max_abs_diff``, ``bubble_measured`` and ``bubble_formula`` (maps from the
number of micro-batches to the fraction), ``zero_mem_ratio``,
``comm_bytes_per_rank`` and ``runtime_s`` (wall time of the notebook run).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autograder.labrun import run_solution  # noqa: E402

NOTEBOOK = ROOT / "solutions" / "lab09_distributed" / "lab09_distributed.ipynb"


def run_notebook(quick: bool, timeout: int) -> tuple[dict, float]:
    return run_solution("lab09_distributed", quick=quick, cell_timeout=timeout)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="full mode instead of QUICK (slower, steadier)")
    parser.add_argument("--timeout", type=int, default=900, help="per-cell time limit in seconds")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args(argv)

    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; executing {NOTEBOOK.name} "
          f"({'full' if args.full else 'QUICK'} mode)", flush=True)
    figures, runtime = run_notebook(quick=not args.full, timeout=args.timeout)
    print(f"data parallel vs single process: max |w diff| = {figures['dp_max_abs_diff']:.2e}")
    print(f"tensor-parallel MLP vs unsharded: max |diff|  = {figures['tp_max_abs_diff']:.2e}")
    print(f"ZeRO-1 optimizer memory per rank, sharded / unsharded = {figures['zero_mem_ratio']:.4f}")
    print("GPipe bubble (4 stages):")
    for m, measured in figures["bubble_measured"].items():
        formula = figures["bubble_formula"][m]
        print(f"  m={m:>2}: measured {measured:.3f}  formula {formula:.3f}  ratio {measured / formula:.2f}")
    print("bytes sent per rank and step:")
    for scheme, row in figures["comm_bytes_per_rank"].items():
        print(f"  {scheme:55s} measured {row['measured']:>10,.0f}  computed {row['computed']:>10,.0f}")
    print(f"notebook runtime {runtime:.1f} s")
    if args.json:
        print(json.dumps({**figures, "runtime_s": round(runtime, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
