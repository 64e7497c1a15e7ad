"""benchmarks/kernels.py runs and keeps its JSON contract (tiny sizes)."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_benchmark_json_contract():
    cmd = [sys.executable, str(REPO / "benchmarks" / "kernels.py"), "--n", "64", "--k", "96", "--repeats", "2",
           "--bandwidth-mib", "4", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(summary["gemv_int4_gops"]) == {"reference", "unroll", "multithread", "simd", "all"}
    assert all(g > 0 for g in summary["gemv_int4_gops"].values())
    assert summary["torch_fp32_gops"] > 0 and summary["bandwidth_gbs"] > 0
    assert "fits in" in proc.stdout or "exceeds" in proc.stdout or "L3 size unknown" in proc.stdout
