"""benchmarks/kernels.py has an entry for every kernel, each correct, and keeps
its JSON contract (tiny sizes)."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KERNELS = REPO / "helpers" / "kernels"


def test_benchmark_covers_every_kernel_and_keeps_its_json_contract():
    cmd = [sys.executable, str(REPO / "benchmarks" / "kernels.py"), "--quick", "--n", "64", "--k", "96",
           "--repeats", "2", "--bandwidth-mib", "4", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    kernels = summary["kernels"]
    assert summary["all_ok"] and all(r["ok"] for r in kernels.values())
    sources = {p.name for p in (KERNELS / "c").glob("*.c")}
    sources |= {f"triton/{p.name}" for p in (KERNELS / "triton").glob("*.py") if not p.name.startswith("_")}
    assert sources - {r["group"] for r in kernels.values()} == set(), "add an entry to benchmarks/kernels.py"
    for r in kernels.values():
        assert r["ms"] > 0 and r["ref_ms"] > 0 and r["gbs"] > 0 and r["max_abs_diff"] <= r["tolerance"]
    assert set(summary["gemv_int4_gops"]) == {"reference", "unroll", "multithread", "simd", "all"}
    assert all(g > 0 for g in summary["gemv_int4_gops"].values())
    assert summary["torch_fp32_gops"] > 0 and summary["bandwidth_gbs"] > 0
    assert "fits in" in proc.stdout or "exceeds" in proc.stdout or "L3 size unknown" in proc.stdout
