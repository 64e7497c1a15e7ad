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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lab import lab_benchmark  # noqa: E402

LAB = "lab14_tsm"
# key: (target, ">=" or "<=", what)
TARGETS = {
    "tsm_vs_tsn_acc_gain": (0.30, ">=", "TSM - TSN test accuracy (fraction)"),
    "conv3d_macs_ratio": (2.0, ">=", "3D CNN MACs / TSM MACs"),
    "online_tsm_latency_ratio": (1.2, "<=", "online TSM / 2D per-frame latency"),
}


def verdicts(figures: dict) -> list[tuple[str, bool]]:
    return [(f"{what}: {figures[key]:.3f} ({sense} {target:g})",
             figures[key] >= target if sense == ">=" else figures[key] <= target)
            for key, (target, sense, what) in TARGETS.items()]


if __name__ == "__main__":
    sys.exit(lab_benchmark(LAB, "Lab 14", tuple(TARGETS), verdicts, doc=__doc__))
