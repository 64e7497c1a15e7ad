"""The skeleton of a lab benchmark: execute the solution notebook with the
lab runner (full mode by default: the issues' targets are full mode's;
``--quick`` for QUICK), read the figures it recorded
(``helpers.figures``), print them and a verdict per target, and with
``--json`` end with one JSON line of the figures and ``runtime_s``. Exit 0
when every target is met, 1 when one is missed, 2 when a figure is missing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def lab_benchmark(lab: str, title: str, keys: Sequence[str],
                  verdicts: Callable[[dict], list[tuple[str, bool]]],
                  show: Callable[[dict], None] | None = None, argv=None, doc: str = "") -> int:
    """``verdicts(figures) -> [(target line, met)]``; ``show(figures)`` prints
    the figures worth reading before the verdicts."""
    from autograder.labrun import run_solution

    parser = argparse.ArgumentParser(description=(doc or title).splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="QUICK mode instead of full (the targets are full mode's)")
    parser.add_argument("--timeout", type=int, default=None, help="per-cell time limit in seconds")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args(argv)

    figures, runtime = run_solution(lab, quick=args.quick, cell_timeout=args.timeout)
    print(f"{title} ({'QUICK' if args.quick else 'full'} mode), notebook wall time {runtime:.1f} s")
    missing = [k for k in keys if k not in figures]
    if missing:
        print(f"the notebook recorded no {', '.join(missing)}", file=sys.stderr)
        return 2
    if show:
        show(figures)
    results = verdicts(figures)
    for what, ok in results:
        print(f"  target: {what} ({'meets' if ok else 'MISSES'})")
    if args.json:
        print(json.dumps({**{k: figures[k] for k in keys}, "runtime_s": round(runtime, 2)}, sort_keys=True))
    return 0 if all(ok for _, ok in results) else 1
