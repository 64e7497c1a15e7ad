"""Lab 15 benchmark: DDIM quality against steps and SIGE's savings, from the solution notebook.

    python benchmarks/diffusion.py [--quick] [--timeout SECONDS] [--json]

Executes ``solutions/lab15_diffusion_sige/lab15_diffusion_sige.ipynb`` the way
the grader does (``autograder.labrun.run_solution``), in FULL mode unless
``--quick``, and reads the figures the notebook records with
``helpers.figures.record``:

* ``ddim_quality``: step count (string) -> fraction of generated digits the
  VGG classifier reads as the requested class, deterministic DDIM;
  ``ddpm_quality``: the same for DDPM (1000 steps; 200 respaced steps in QUICK).
  Target: DDIM at 20 steps within 0.05 of DDPM;
* ``sige_macs_ratio``: edit fraction (``"0.01"``, ``"0.05"``, ``"0.2"``, ``"0.5"``)
  -> dense MACs / SIGE MACs; target >= 4 at 5%;
* ``sige_speedup``: edit fraction -> dense wall time / SIGE wall time (one
  thread, timed in turns); target >= 2 at 5%, falling towards 1 as the edit grows;
* ``sige_max_abs_diff``: max |SIGE - dense| for the 5% edit; target < 1e-4.

With ``--json`` the last line is a JSON object with those keys and
``runtime_s`` (wall time of the notebook run, kernel start included).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lab import lab_benchmark  # noqa: E402

LAB = "lab15_diffusion_sige"
KEYS = ("ddim_quality", "ddpm_quality", "sige_macs_ratio", "sige_speedup", "sige_max_abs_diff")


def show(figures: dict) -> None:
    print(f"  ddim_quality     {figures['ddim_quality']}   (ddpm_quality {figures['ddpm_quality']})")
    print(f"  sige_macs_ratio  {figures['sige_macs_ratio']}")
    print(f"  sige_speedup     {figures['sige_speedup']}")
    print(f"  sige_max_abs_diff {figures['sige_max_abs_diff']:.2e}")


def verdicts(fig: dict) -> list[tuple[str, bool]]:
    """(what, met) for each target of the issue."""
    ddpm = next(iter(fig["ddpm_quality"].values()))
    ddim20 = fig["ddim_quality"].get("20", 0.0)
    macs, speed = fig["sige_macs_ratio"], fig["sige_speedup"]
    return [
        (f"DDIM 20 steps {ddim20:.3f} within 0.05 of DDPM {ddpm:.3f}", ddpm - ddim20 <= 0.05),
        (f"5% edit: {macs['0.05']:.2f}x fewer MACs (>= 4)", macs["0.05"] >= 4),
        (f"5% edit: {speed['0.05']:.2f}x faster (>= 2)", speed["0.05"] >= 2),
        (f"speedup falls as the edit grows: {speed['0.01']:.2f}x at 1% -> {speed['0.5']:.2f}x at 50%",
         speed["0.5"] < speed["0.05"] and speed["0.5"] < 1.5),
        (f"max |SIGE - dense| {fig['sige_max_abs_diff']:.1e} < 1e-4", fig["sige_max_abs_diff"] < 1e-4),
    ]


if __name__ == "__main__":
    sys.exit(lab_benchmark(LAB, "Lab 15", KEYS, verdicts, show, doc=__doc__))
