"""Lab 16 benchmark: the keyword-spotting figures of the solution notebook.

    python benchmarks/kws.py [--quick] [--timeout 900] [--json]

Executes ``solutions/lab16_kws/lab16_kws.ipynb`` with the lab runner (FULL mode
unless ``--quick``) and reads the figures it records (``helpers.figures``):

* ``kws_acc``: DS-CNN test accuracy (fraction) per SNR ("clean", "20", "10", "5", "0" dB) on 12 classes
  (10 keywords, unknown, silence), test voices unseen in training; target clean >= 0.90;
* ``kws_int8_acc_drop``: fp32 - int8 accuracy (fraction) on clean test clips; target <= 0.01;
* ``kws_sram_bytes`` / ``kws_flash_bytes``: peak SRAM (lab 05 planner, in-place depthwise) and flash of the
  int8 model; targets <= 64 KB and <= 256 KB;
* ``kws_false_alarms_per_hour``: false alarms of the streaming detector on keyword-free audio; target < 5
  (with ``kws_detection_rate`` >= 0.90 on a keyword stream).

With ``--json`` the last line is a JSON object with those keys and ``runtime_s``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lab import lab_benchmark  # noqa: E402

LAB = "lab16_kws"
KEYS = ("kws_acc", "kws_int8_acc_drop", "kws_sram_bytes", "kws_flash_bytes", "kws_false_alarms_per_hour",
        "kws_detection_rate")


def show(f: dict) -> None:
    print("  accuracy per SNR: " + ", ".join(f"{k}: {100 * v:.1f}%" for k, v in f["kws_acc"].items()))


def verdicts(f: dict) -> list[tuple[str, bool]]:
    acc = f["kws_acc"]
    return [
        (f"clean accuracy {100 * acc['clean']:.1f}% (>= 90%)", acc["clean"] >= 0.90),
        (f"int8 accuracy drop {100 * f['kws_int8_acc_drop']:.2f} points (<= 1)", f["kws_int8_acc_drop"] <= 0.01),
        (f"peak SRAM {f['kws_sram_bytes']:,} B (<= 65,536)", f["kws_sram_bytes"] <= 64 * 1024),
        (f"flash {f['kws_flash_bytes']:,} B (<= 262,144)", f["kws_flash_bytes"] <= 256 * 1024),
        (f"detection rate {100 * f['kws_detection_rate']:.1f}% (>= 90%)", f["kws_detection_rate"] >= 0.90),
        (f"false alarms per hour {f['kws_false_alarms_per_hour']:.1f} (< 5)", f["kws_false_alarms_per_hour"] < 5),
    ]


if __name__ == "__main__":
    sys.exit(lab_benchmark(LAB, "Lab 16", KEYS, verdicts, show, doc=__doc__))
