"""Kernel benchmark: int4 GEMV variants vs torch fp32 matvec, and memory bandwidth.

    python benchmarks/kernels.py [--n 4096] [--k 4096] [--threads 2] [--repeats 30] [--json]

Each figure is the median of ``--repeats`` timed calls after warm-up calls
(the best call is shown too).
GOPS counts a multiply-add as 2 operations (2*N*K per GEMV). The int4 timings
are of the C call on pre-quantized activations (quantizing x is O(K), the same
for every variant). With ``--json`` the last line is a JSON object with keys
``gemv_int4_gops`` (per variant), ``torch_fp32_gops`` and ``bandwidth_gbs``.
The machine may be shared: the load average is printed so readers can judge
the multi-threaded figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

READ_BW_SOURCE = r"""
#include <stdint.h>
/* Reads the array `passes` times (each thread its own static half every pass,
 * so a cache-sized array stays in that core's caches): bytes * passes / time
 * is the read bandwidth. Many passes amortize the cost of starting threads. */
uint64_t read_sum(const uint64_t *a, long n, int passes) {
    uint64_t s = 0;
#pragma omp parallel reduction(+ : s)
    for (int p = 0; p < passes; p++) {
#pragma omp for simd schedule(static) nowait
        for (long i = 0; i < n; i++) s += a[i];
    }
    return s;
}
"""


def time_calls(fns: dict, repeats: int, warmup: int = 3) -> dict:
    """(median, best) wall time of each function. Calls are interleaved
    round-robin so that load from other processes on a shared machine hits all
    alike; the best time is the run least disturbed by that load."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (sorted(ts)[len(ts) // 2], min(ts)) for name, ts in times.items()}


def l3_bytes() -> int | None:
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "level").read_text().strip() == "3":
                size = (index / "size").read_text().strip()
                units = {"K": 1024, "M": 1024**2, "G": 1024**3}
                return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
        except OSError:
            continue
    return None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--bandwidth-mib", type=int, default=1024,
                        help="working set of the main-memory bandwidth test")
    parser.add_argument("--omp-wait-policy", default="passive", choices=["passive", "active", "default"],
                        help="OpenMP idle threads sleep (passive) or spin (active); passive is much "
                             "less disturbed on a machine shared with other jobs")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = parser.parse_args(argv)

    # OpenMP reads these when the runtime starts: set them before torch or a kernel loads.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.omp_wait_policy != "default":
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import ctypes

    import numpy as np
    import torch

    from helpers.kernels.cjit import compile_c, ptr
    from helpers.kernels.int4 import VARIANTS, gemv_int4_quantized, quantize_activation_int8, quantize_weight_int4

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n, k, ops = args.n, args.k, 2 * args.n * args.k
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"int4 GEMV n={n} k={k} batch 1, {args.threads} threads, median of {args.repeats} "
          f"(load average {load:.1f} on {os.cpu_count()} CPUs, OMP_WAIT_POLICY={args.omp_wait_policy})")

    w, x = torch.randn(n, k), torch.randn(k)
    packed = quantize_weight_int4(w)
    xq, xs = quantize_activation_int8(x)
    out = torch.empty(n)
    int4_bytes = packed.codes.numel() + packed.scales.numel() * 4
    fns = {v: (lambda v=v: gemv_int4_quantized(xq, xs, packed, v, out=out, num_threads=args.threads))
           for v in VARIANTS}
    fns["torch"] = lambda: torch.mv(w, x)
    timed = time_calls(fns, args.repeats)
    secs = {name: med for name, (med, _) in timed.items()}
    best = {name: ops / fastest / 1e9 for name, (_, fastest) in timed.items()}
    gops = {v: ops / secs[v] / 1e9 for v in VARIANTS}
    print(f"  {'kernel':<17} {'GOPS':>8} {'ms':>9} {'weights GB/s':>13} {'best GOPS':>10}")
    for v in VARIANTS:
        print(f"  int4 {v:<12} {gops[v]:8.2f} {secs[v] * 1e3:9.3f} {int4_bytes / secs[v] / 1e9:13.1f} {best[v]:10.2f}")
    torch_gops = ops / secs["torch"] / 1e9
    print(f"  {'torch fp32 mv':<17} {torch_gops:8.2f} {secs['torch'] * 1e3:9.3f} "
          f"{w.numel() * 4 / secs['torch'] / 1e9:13.1f} {best['torch']:10.2f}")

    lib = compile_c(READ_BW_SOURCE, name="read_bw")
    lib.read_sum.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_int]
    lib.read_sum.restype = ctypes.c_uint64
    l3 = l3_bytes()

    def bandwidth(mib: int) -> tuple[float, float]:
        """(median, best) GB/s of reading ``mib`` MiB, about 2 GiB per timed call."""
        buf = np.ones(mib * 1024**2 // 8, dtype=np.uint64)
        p = ptr(buf, "uint64", name="buf")
        passes = max(1, 2048 // mib)
        med, fastest = time_calls({"read": lambda: lib.read_sum(p, buf.size, passes)},
                                  max(5, args.repeats // 3))["read"]
        return buf.nbytes * passes / med / 1e9, buf.nbytes * passes / fastest / 1e9

    def fits(nbytes: int) -> str:
        if l3 is None:
            return "L3 size unknown"
        return f"{'fits in' if nbytes <= l3 else 'exceeds'} the {l3 / 1024**2:.0f} MiB L3"

    bw, bw_best = bandwidth(args.bandwidth_mib)
    small = max(1, int(int4_bytes / 1024**2))
    bw_small, bw_small_best = bandwidth(small)
    print(f"memory read bandwidth ({args.threads} threads), median (best):\n"
          f"  {bw:6.1f} ({bw_best:.1f}) GB/s over {args.bandwidth_mib} MiB ({fits(args.bandwidth_mib * 1024**2)})\n"
          f"  {bw_small:6.1f} ({bw_small_best:.1f}) GB/s over {small} MiB ({fits(small * 1024**2)})")
    print(f"working sets: int4 weights {int4_bytes / 1024**2:.1f} MiB ({fits(int4_bytes)}), "
          f"fp32 weights {w.numel() * 4 / 1024**2:.0f} MiB ({fits(w.numel() * 4)})")
    ratio_ref, ratio_torch = gops["all"] / gops["reference"], gops["all"] / torch_gops
    print(f"all / reference = {ratio_ref:.1f}x (goal >= 10x), all / torch fp32 = {ratio_torch:.1f}x (goal >= 2x)")
    if load > (os.cpu_count() or 1):
        print(f"note: the machine is busy (load {load:.1f} > {os.cpu_count()} CPUs): a multi-threaded call waits "
              "for its threads to be scheduled, so its median is mostly that wait; the best column is the "
              "least disturbed run.")

    summary = {
        "n": n, "k": k, "threads": args.threads, "load_average": load, "omp_wait_policy": args.omp_wait_policy,
        "gemv_int4_gops": {v: round(g, 3) for v, g in gops.items()},
        "torch_fp32_gops": round(torch_gops, 3),
        "gemv_int4_gops_best": {v: round(best[v], 3) for v in VARIANTS},
        "torch_fp32_gops_best": round(best["torch"], 3),
        "bandwidth_gbs": round(bw, 2),
        "bandwidth_working_set_mib": args.bandwidth_mib,
        "bandwidth_best_gbs": round(bw_best, 2),
        "bandwidth_in_l3_gbs": round(bw_small, 2),
        "bandwidth_in_l3_best_gbs": round(bw_small_best, 2),
        "bandwidth_in_l3_working_set_mib": small,
        "l3_mib": None if l3 is None else l3 / 1024**2,
        "int4_weight_mib": round(int4_bytes / 1024**2, 2),
    }
    if args.json:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
