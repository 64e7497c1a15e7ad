"""Kernel benchmark: every kernel of helpers/kernels against its torch reference.

    python benchmarks/kernels.py [--quick] [--only NAME ...] [--threads 2] [--repeats 30]
                                 [--n 4096] [--k 4096] [--bandwidth-mib 256] [--json]

One entry (a ``Config``) per kernel: the C kernels (int8 GEMM / conv2d /
depthwise conv, CSR SpMV, the five int4 GEMV variants, lab 05's add and
average pool), and the Triton kernels (W4A16 AWQ GEMV, NF4 dequantize and
matmul, fake quantization per tensor and per channel). ``run(config)`` times
the kernel and its reference the same way (warm-up calls, then calls
interleaved round robin, so load from other jobs hits both alike; the median
is shown) and checks the kernel's answer: ``max|diff|`` against the exact
answer (the reference's output, or the module's spec where the timed reference
is the plain torch operation, e.g. fp32 ``torch.mv`` for the int4 GEMV), and
``ok`` when it is within the entry's tolerance, so a fast wrong kernel shows.

GB/s counts the bytes the kernel must move at least (every input read once,
every output written once) over its median time; ``%bw`` compares it with the
machine's memory bandwidth, measured in the same run as a copy between two
``--bandwidth-mib`` arrays (read + write bytes, best of 5, ``np.copyto`` or
torch's threaded ``copy_``, whichever is faster). A working set that fits in the
L3 cache can beat that figure; the entry ``int4 gemv beyond L3`` (not with
``--quick``) runs the fastest int4 GEMV on a weight 1.25x the L3's size, so its
fraction of copy bandwidth is the kernel's real limit (goal >= 70%). The int4
GEMV rows also count GOPS (a multiply-add is 2 operations, 2*N*K per GEMV, on
pre-quantized activations).

Triton kernels run natively on a CUDA GPU when there is one (with bigger sizes
and the GPU's own copy bandwidth); otherwise under the Triton interpreter
(TRITON_INTERPRET=1, set here), which is slow: tiny sizes, few repeats, and
their GB/s says nothing about the kernel. ``--quick`` runs smaller sizes with
fewer repeats. With ``--json`` the last line is a JSON object: ``kernels`` (name
-> figures), ``bandwidth_gbs``, ``bandwidth_fraction`` (kernel -> achieved GB/s
over copy bandwidth; ``gemv_int4`` is the beyond-L3 entry), and for lab 07 ``gemv_int4_gops`` (per variant)
and ``torch_fp32_gops``. The exit status is 1 when a kernel is wrong.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    """A built benchmark: the calls to time and how to judge the answer."""
    kernel: Callable[[], Any]
    reference: Callable[[], Any]
    nbytes: int                     # least bytes the kernel moves: inputs read once, outputs written once
    expected: Any = None            # the exact answer, when the timed reference is not it
    rtol: float = 0.0               # allowed max|diff|, relative to max|expected|
    atol: float = 0.0
    ops: int = 0                    # operations per call (2 per multiply-add), for GOPS


@dataclass
class Config:
    name: str
    shape: str
    reference: str                  # what the timed reference is
    build: Callable[[], Case]
    device: str = "cpu"
    slow: bool = False              # under the Triton interpreter: few repeats
    group: str = ""


@dataclass
class Sizes:
    gemm: tuple = (64, 512, 512)            # M, N, K
    conv: tuple = (32, 32, 32, 64)          # H, W, C, OC (3x3, padding 1)
    dwconv: tuple = (64, 64, 64)            # H, W, C (3x3, padding 1)
    spmv: tuple = (4096, 4096, 0.9)         # rows, cols, sparsity
    gemv: tuple = (4096, 4096)              # N, K
    w4a16: tuple = (1, 256, 256)            # M, K, N
    nf4: tuple = (256, 256)                 # N, K (dequantize all; matmul with one row of x)
    fake_quant: tuple = (64, 1024)          # channels, inner
    add: tuple = (48, 48, 32)               # H, W, C
    pool: tuple = (12, 12, 256)             # H, W, C
    triton_device: str = "cpu"


QUICK = dict(gemm=(16, 128, 256), conv=(16, 16, 16, 32), dwconv=(32, 32, 32), spmv=(1024, 1024, 0.9),
             gemv=(1024, 1024), w4a16=(1, 128, 128), nf4=(64, 128), fake_quant=(16, 256), add=(24, 24, 16),
             pool=(6, 6, 64))
GPU = dict(w4a16=(1, 4096, 4096), nf4=(4096, 4096), fake_quant=(4096, 4096))
GPU_QUICK = dict(w4a16=(1, 1024, 1024), nf4=(1024, 1024), fake_quant=(1024, 1024))


# ---------------------------------------------------------------- timing and bandwidth

def time_calls(fns: dict, repeats: int, warmup: int = 2, sync: Callable[[], None] = lambda: None) -> dict:
    """Median and best seconds of each function, calls interleaved round robin."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: (sorted(ts)[len(ts) // 2], min(ts)) for name, ts in times.items()}


def host_bandwidth_gbs(mib: int, tries: int = 5) -> float:
    """Copy bandwidth of main memory: read + write bytes over the best of
    ``tries`` copies between two ``mib`` MiB arrays (``np.copyto``, one thread,
    and torch's ``copy_`` with the benchmark's threads: the faster counts)."""
    import numpy as np
    import torch

    src = np.ones(mib * 1024**2 // 8)
    dst = np.zeros_like(src)
    ts, td = torch.from_numpy(src), torch.from_numpy(dst)   # torch's copy_ uses the threads the kernels have
    timed = time_calls({"numpy": lambda: np.copyto(dst, src), "torch": lambda: td.copy_(ts)}, tries, warmup=1)
    return 2 * src.nbytes / min(best for _, best in timed.values()) / 1e9


def cuda_bandwidth_gbs(mib: int, tries: int = 5) -> float:
    import torch

    src = torch.ones(mib * 1024**2 // 4, device="cuda")
    dst = torch.empty_like(src)
    best = time_calls({"copy": lambda: dst.copy_(src)}, tries, warmup=1, sync=torch.cuda.synchronize)["copy"][1]
    return 2 * src.nbytes / best / 1e9


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


# ---------------------------------------------------------------- the entries

def _int8_params(rng, channels: int, fan_in: int):
    """int32 bias, requantization (multiplier, shift) that keeps most outputs
    off the clamp for int8 inputs summed over ``fan_in`` products."""
    import numpy as np

    from helpers.kernels.int8 import quantize_multiplier

    bias = rng.integers(-2000, 2000, channels).astype(np.int32)
    mult, shift = quantize_multiplier(rng.uniform(0.5, 1.5, channels) * 40.0 / (74.0**2 * math.sqrt(fan_in)))
    return bias, dict(multiplier=mult, shift=shift, out_zero_point=-5)


def int8_configs(s: Sizes) -> list[Config]:
    import numpy as np

    from helpers.kernels import int8 as k8

    rng = np.random.default_rng(0)

    def i8(*shape):
        return rng.integers(-128, 128, shape).astype(np.int8)

    def gemm() -> Case:
        m, n, k = s.gemm
        a, b = i8(m, k), i8(n, k)
        bias, kw = _int8_params(rng, n, k)
        kw["a_zero_point"] = 3
        return Case(lambda: k8.gemm_int8(a, b, bias, **kw), lambda: k8.gemm_int8_spec(a, b, bias, **kw),
                    a.nbytes + b.nbytes + m * n + 12 * n, ops=2 * m * n * k)

    def conv(depthwise: bool, inplace: bool = False) -> Callable[[], Case]:
        def build() -> Case:
            if depthwise:
                h, w_, c = s.dwconv
                oc, x, w = c, i8(1, h, w_, c), i8(3, 3, c)
            else:
                h, w_, c, oc = s.conv
                x, w = i8(1, h, w_, c), i8(oc, 3, 3, c)
            bias, kw = _int8_params(rng, oc, 9 * (1 if depthwise else c))
            kw.update(x_zero_point=-2, padding=1)
            spec = k8.depthwise_conv2d_int8_spec if depthwise else k8.conv2d_int8_spec
            if inplace:
                # The kernel overwrites its input: each call gets a fresh copy (timed with it).
                def kernel():
                    return k8.depthwise_conv2d_int8_inplace(x[0].copy(), w, bias, height=h, width=w_, **kw)
            else:
                fn = k8.depthwise_conv2d_int8 if depthwise else k8.conv2d_int8
                kernel = functools.partial(fn, x, w, bias, **kw)
            macs = h * w_ * oc * 9 * (1 if depthwise else c)
            # The in-place kernel takes one image [H, W, C]; the others a batch [1, H, W, C].
            return Case(kernel, lambda: spec(x, w, bias, **kw)[0] if inplace else spec(x, w, bias, **kw),
                        x.nbytes + w.nbytes + h * w_ * oc + 12 * oc, ops=2 * macs)
        return build

    ref = "numpy int64 spec"
    m, n, k = s.gemm
    h, w, c, oc = s.conv
    dh, dw, dc = s.dwconv
    return [
        Config("int8 gemm", f"{m}x{k} @ {n}x{k}^T", ref, gemm, group="int8.c"),
        Config("int8 conv2d", f"{h}x{w}x{c} -> {oc}, 3x3", "torch fp64 conv2d spec", conv(False), group="int8.c"),
        Config("int8 depthwise", f"{dh}x{dw}x{dc}, 3x3", "torch fp64 conv2d spec", conv(True), group="int8.c"),
        Config("int8 depthwise in place", f"{dh}x{dw}x{dc}, 3x3 (+copy)", "torch fp64 conv2d spec",
               conv(True, inplace=True), group="int8.c"),
    ]


def sparse_configs(s: Sizes) -> list[Config]:
    import torch

    from helpers.kernels.sparse import spmv, to_csr

    rows, cols, sparsity = s.spmv

    def build() -> Case:
        gen = torch.Generator().manual_seed(1)
        dense = torch.randn(rows, cols, generator=gen)
        dense[torch.rand(rows, cols, generator=gen) < sparsity] = 0
        csr, x = to_csr(dense), torch.randn(cols, generator=gen)
        nbytes = csr.values.nbytes + csr.indices.nbytes + csr.indptr.nbytes + x.nbytes + 4 * rows
        return Case(lambda: spmv(csr, x), lambda: torch.mv(dense, x), nbytes, rtol=1e-5, ops=2 * csr.nnz)

    return [Config("sparse spmv (CSR)", f"{rows}x{cols}, {sparsity:.0%} zeros", "torch.mv fp32 dense", build,
                   group="sparse.c")]


def int4_configs(s: Sizes, threads: int) -> list[Config]:
    import torch

    from helpers.kernels import int4

    n, k = s.gemv

    @functools.lru_cache(maxsize=1)
    def setup():
        gen = torch.Generator().manual_seed(0)
        w, x = torch.randn(n, k, generator=gen), torch.randn(k, generator=gen)
        packed = int4.quantize_weight_int4(w)
        xq, xs = int4.quantize_activation_int8(x)
        return w, x, packed, xq, xs, int4.gemv_int4_spec(x, packed)

    def build(variant: str) -> Callable[[], Case]:
        def case() -> Case:
            w, x, packed, xq, xs, exact = setup()
            out = torch.empty(n)
            nbytes = packed.codes.nbytes + packed.scales.nbytes + xq.nbytes + xs.nbytes + out.nbytes
            return Case(lambda: int4.gemv_int4_quantized(xq, xs, packed, variant, out=out, num_threads=threads),
                        lambda: torch.mv(w, x), nbytes, expected=exact, rtol=1e-5, atol=1e-4, ops=2 * n * k)
        return case

    return [Config(f"int4 gemv {v}", f"{n}x{k}, batch 1", "torch.mv fp32", build(v), group="int4_gemv.c")
            for v in int4.VARIANTS]


BEYOND_L3 = "int4 gemv beyond L3"


def int4_beyond_cache_config(threads: int, l3: int | None) -> Config:
    """The fastest int4 GEMV on a weight larger than the last-level cache
    (1.25x L3, at least 256 MiB of codes), so every call streams it from
    memory: its GB/s against the copy bandwidth is the kernel's real limit.
    The reference is a copy of the same weight bytes (torch ``copy_``); the
    exact answer is the spec, computed in row blocks."""
    import torch

    from helpers.kernels import int4

    k = 16384
    n = max(256 * 2**20, int(1.25 * (l3 or 0))) * 2 // k // 64 * 64

    def case() -> Case:
        gen = torch.Generator().manual_seed(1)
        codes = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8, generator=gen)
        scales = torch.rand(n, k // int4.BLOCK, generator=gen) * 0.02
        packed = int4.Int4Weight(codes, scales, k)
        x = torch.randn(k, generator=gen)
        xq, xs = int4.quantize_activation_int8(x)
        exact = torch.cat([int4.gemv_int4_spec(x, int4.Int4Weight(codes[r:r + 1024], scales[r:r + 1024], k))
                           for r in range(0, n, 1024)])
        out, copy = torch.empty(n), torch.empty_like(codes)
        nbytes = codes.nbytes + scales.nbytes + xq.nbytes + xs.nbytes + out.nbytes
        return Case(lambda: int4.gemv_int4_quantized(xq, xs, packed, "all", out=out, num_threads=threads),
                    lambda: copy.copy_(codes), nbytes, expected=exact, rtol=1e-5, atol=1e-4, ops=2 * n * k)

    return Config(BEYOND_L3, f"{n}x{k}, batch 1", "copy of the codes", case, group="int4_gemv.c")


def tinyml_configs(s: Sizes) -> list[Config]:
    import numpy as np

    from helpers import tinyml
    from helpers.kernels.int8 import quantize_multiplier

    @functools.lru_cache(maxsize=1)
    def setup():
        shapes = {"a": s.add, "b": s.add, "y": s.add, "x": s.pool, "p": s.pool[-1:]}
        g = tinyml.toy_graph(shapes, [("add", ["a", "b"], "y"), ("avgpool", ["x"], "p")])
        qparams = {"a": (0.05, -3), "b": (0.02, 10), "y": (0.04, -7), "x": (0.04, 1), "p": (0.01, 0)}
        for name, (scale, zero_point) in qparams.items():
            g.tensors[name].scale, g.tensors[name].zero_point = scale, zero_point
        add, pool = g.ops
        add.multiplier, add.shift = quantize_multiplier([0.05 / 0.04, 0.02 / 0.04])
        pool.multiplier, pool.shift = quantize_multiplier([0.04 / (s.pool[0] * s.pool[1] * 0.01)])
        rng = np.random.default_rng(2)
        arrays = {name: rng.integers(-128, 128, g.tensors[name].shape).astype(np.int8) for name in "abx"}
        return g, arrays

    def build(index: int) -> Callable[[], Case]:
        def case() -> Case:
            g, arrays = setup()
            op = g.ops[index]
            inputs = [arrays[name] for name in op.inputs]
            nbytes = sum(a.nbytes for a in inputs) + g.tensors[op.output].nbytes
            return Case(lambda: tinyml.run_op_c(g, op, inputs), lambda: tinyml.run_op(g, op, inputs), nbytes)
        return case

    return [Config("tinyml add_int8", "x".join(map(str, s.add)), "numpy spec (run_op)", build(0),
                   group="tinyml_ops.c"),
            Config("tinyml avgpool_int8", "x".join(map(str, s.pool)), "numpy spec (run_op)", build(1),
                   group="tinyml_ops.c")]


def triton_configs(s: Sizes) -> list[Config]:
    import torch

    from helpers.kernels.triton import fake_quant, nf4, w4a16

    dev = s.triton_device
    slow = dev == "cpu"
    dtype = torch.float32 if slow else torch.float16        # the interpreter: fp32 keeps it exact
    tol = 1e-4 if dtype == torch.float32 else 2e-2

    def gemv_w4a16() -> Case:
        m, k, n = s.w4a16
        gen = torch.Generator().manual_seed(3)
        codes = torch.randint(0, 16, (n, k), generator=gen)
        zeros = torch.randint(0, 16, (n, k // 128), generator=gen)
        scales = torch.rand(n, k // 128, generator=gen) * 0.02 + 0.001
        qw, qz, sc = (t.to(dev) for t in w4a16.pack_awq(codes, scales, zeros))
        x = torch.randn(m, k, generator=gen).to(dev, dtype)
        nbytes = qw.nbytes + qz.nbytes + sc.nbytes + x.nbytes + m * n * x.element_size()
        return Case(lambda: w4a16.w4a16_matmul(x, qw, qz, sc), lambda: w4a16.w4a16_matmul_spec(x, qw, qz, sc),
                    nbytes, rtol=tol, ops=2 * m * n * k)

    @functools.lru_cache(maxsize=1)
    def nf4_weight():
        n, k = s.nf4
        q = nf4.quantize_nf4(torch.randn(n, k, generator=torch.Generator().manual_seed(4)))
        q.packed, q.absmax = q.packed.to(dev), q.absmax.to(dev)
        return q, q.packed.nbytes + q.absmax.nbytes

    def nf4_dequant() -> Case:
        q, wbytes = nf4_weight()
        return Case(lambda: nf4.nf4_dequantize(q), lambda: nf4.nf4_dequantize_spec(q), wbytes + 4 * q.numel,
                    rtol=1e-6)

    def nf4_gemv() -> Case:
        q, wbytes = nf4_weight()
        n, k = s.nf4
        x = torch.randn(1, k, generator=torch.Generator().manual_seed(5)).to(dev, dtype)
        return Case(lambda: nf4.nf4_matmul(x, q), lambda: nf4.nf4_matmul_spec(x, q),
                    wbytes + x.nbytes + n * x.element_size(), rtol=tol, ops=2 * n * k)

    def fake_quantize(per_channel: bool) -> Callable[[], Case]:
        def build() -> Case:
            c, inner = s.fake_quant
            gen = torch.Generator().manual_seed(6)
            x = (torch.randn(c, inner, generator=gen) * 2).to(dev)
            nbytes = x.nbytes * 2 + x.numel()           # x in, out and the int8 in-range mask
            if per_channel:
                scale = (torch.rand(c, generator=gen) * 0.05 + 0.01).to(dev)
                zp = torch.randint(-5, 5, (c,), generator=gen, dtype=torch.int32).to(dev)
                return Case(lambda: fake_quant.quantize_dequantize(x, scale, zp, bits=8, axis=0, signed=True)[0],
                            lambda: torch.fake_quantize_per_channel_affine(x, scale, zp, 0, -128, 127), nbytes)
            return Case(lambda: fake_quant.quantize_dequantize(x, 0.05, 128)[0],
                        lambda: torch.fake_quantize_per_tensor_affine(x, 0.05, 128, 0, 255), nbytes)
        return build

    where = "interpreter" if slow else dev
    m, k, n = s.w4a16
    nn_, nk = s.nf4
    c, inner = s.fake_quant
    specs = [
        ("triton w4a16 (AWQ)", f"{m}x{k} @ {k}x{n}, g128", "torch spec", gemv_w4a16, "w4a16.py"),
        ("triton nf4 dequantize", f"{nn_}x{nk}", "torch spec", nf4_dequant, "nf4.py"),
        ("triton nf4 matmul", f"1x{nk} @ {nk}x{nn_}", "torch spec", nf4_gemv, "nf4.py"),
        ("triton fake quant tensor", f"{c}x{inner}, 8 bit", "torch.fake_quantize_per_tensor_affine",
         fake_quantize(False), "fake_quant.py"),
        ("triton fake quant channel", f"{c}x{inner}, 8 bit, axis 0", "torch.fake_quantize_per_channel_affine",
         fake_quantize(True), "fake_quant.py"),
    ]
    return [Config(name, shape, ref, build, device=where, slow=slow, group=f"triton/{src}")
            for name, shape, ref, build, src in specs]


# ---------------------------------------------------------------- run one entry

def _as_float64(x):
    import numpy as np
    import torch

    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def run(config: Config, repeats: int, sync: Callable[[], None] = lambda: None) -> dict:
    """Build the entry, check the kernel's answer, time kernel and reference."""
    import numpy as np

    case = config.build()
    got = _as_float64(case.kernel())            # converted now: a kernel may reuse its output buffer
    ref_out = _as_float64(case.reference())
    exact = ref_out if case.expected is None else _as_float64(case.expected)
    if got.shape != exact.shape:
        diff, tol = math.inf, 0.0
    else:
        diff = float(np.max(np.abs(got - exact))) if got.size else 0.0
        tol = case.atol + case.rtol * float(np.max(np.abs(exact)) if exact.size else 0.0)
    timed = time_calls({"kernel": case.kernel, "reference": case.reference},
                       min(repeats, 5) if config.slow else repeats, warmup=1 if config.slow else 2, sync=sync)
    (med, best), (ref_med, _) = timed["kernel"], timed["reference"]
    return {"group": config.group, "shape": config.shape, "device": config.device, "reference": config.reference,
            "ms": med * 1e3, "best_ms": best * 1e3, "ref_ms": ref_med * 1e3, "speedup": ref_med / med,
            "gbs": case.nbytes / med / 1e9, "working_set_mib": case.nbytes / 1024**2,
            "gops": case.ops / med / 1e9 if case.ops else None,
            "max_abs_diff": diff, "tolerance": tol, "ok": bool(diff <= tol)}


def _json_number(v):
    """Floats rounded; NaN and infinity (a kernel's answer of the wrong shape) as null: strict JSON."""
    if isinstance(v, float):
        return round(v, 6) if math.isfinite(v) else None
    return v


def print_table(rows: dict, bandwidth: dict) -> None:
    head = (f"{'kernel':<26} {'shape':<27} {'device':<11} {'ms':>9} {'ref ms':>9} {'speedup':>8} "
            f"{'GB/s':>7} {'%bw':>5} {'max|diff|':>9} {'ok':>5}  reference")
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        bw = bandwidth["cuda" if r["device"] == "cuda" else "cpu"]
        ok = "ok" if r["ok"] else "WRONG"
        print(f"{name:<26} {r['shape']:<27} {r['device']:<11} {r['ms']:9.3f} {r['ref_ms']:9.3f} "
              f"{r['speedup']:7.1f}x {r['gbs']:7.2f} {100 * r['gbs'] / bw:4.0f}% {r['max_abs_diff']:9.2g} "
              f"{ok:>5}  {r['reference']}")


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="run the entries whose name contains one of these words (e.g. int4 triton)")
    parser.add_argument("--n", type=int, help="int4 GEMV output features (default 4096, --quick 1024)")
    parser.add_argument("--k", type=int, help="int4 GEMV input features (default 4096, --quick 1024)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, help="timed calls per entry (default 30, --quick 10)")
    parser.add_argument("--bandwidth-mib", type=int, default=256, help="size of each array of the copy test")
    parser.add_argument("--omp-wait-policy", default="passive", choices=["passive", "active", "default"],
                        help="OpenMP idle threads sleep (passive) or spin (active); passive is much "
                             "less disturbed on a machine shared with other jobs")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = parser.parse_args(argv)
    repeats = args.repeats or (10 if args.quick else 30)

    # OpenMP reads these when its runtime starts: set them before torch or a kernel loads.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.omp_wait_policy != "default":
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy
    sys.path.insert(0, str(ROOT))
    import torch

    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ.setdefault("TRITON_INTERPRET", "1")      # read when the Triton kernels are defined
    torch.set_num_threads(args.threads)
    from helpers.kernels import triton as triton_kernels

    sizes = Sizes(**(QUICK if args.quick else {}))
    if cuda:
        sizes = Sizes(**{**vars(sizes), **(GPU_QUICK if args.quick else GPU), "triton_device": "cuda"})
    if args.n or args.k:
        sizes.gemv = (args.n or sizes.gemv[0], args.k or sizes.gemv[1])

    l3 = l3_bytes()
    configs = [*int8_configs(sizes), *sparse_configs(sizes), *int4_configs(sizes, args.threads),
               *([] if args.quick else [int4_beyond_cache_config(args.threads, l3)]), *tinyml_configs(sizes)]
    skipped = {}
    if triton_kernels.available():
        configs += triton_configs(sizes)
    else:
        skipped["triton"] = "Triton is not installed, or no GPU and TRITON_INTERPRET is off"
    if args.only:
        configs = [c for c in configs if any(word in c.name for word in args.only)]

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    bandwidth = {"cpu": host_bandwidth_gbs(args.bandwidth_mib)}
    if cuda:
        bandwidth["cuda"] = cuda_bandwidth_gbs(args.bandwidth_mib)
    print(f"kernels vs their references, {args.threads} threads, median of {repeats} "
          f"(Triton interpreter: of {min(repeats, 5)}); load average {load:.1f} on {os.cpu_count()} CPUs")
    copied = 2 * args.bandwidth_mib * 1024**2
    l3_note = ("L3 size unknown" if l3 is None else
               f"{'fits in' if copied <= l3 else 'exceeds'} the {l3 / 1024**2:.0f} MiB L3")
    print(f"memory bandwidth: {bandwidth['cpu']:.1f} GB/s (copy, 2 x {args.bandwidth_mib} MiB, "
          f"read + write, best of 5; {l3_note})"
          + (f"; GPU {bandwidth['cuda']:.0f} GB/s (torch copy_)" if cuda else ""), flush=True)

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rows = {}
    for config in configs:
        rows[config.name] = run(config, repeats, sync=sync if config.device == "cuda" else (lambda: None))
    print()
    print_table(rows, bandwidth)
    for what, why in skipped.items():
        print(f"skipped {what}: {why}")

    gemv = {name.removeprefix("int4 gemv "): r for name, r in rows.items()
            if name.startswith("int4 gemv ") and name != BEYOND_L3}
    summary: dict = {
        "threads": args.threads, "quick": args.quick, "repeats": repeats, "load_average": load,
        "omp_wait_policy": args.omp_wait_policy, "cuda": cuda,
        "bandwidth_gbs": round(bandwidth["cpu"], 2), "bandwidth_working_set_mib": args.bandwidth_mib,
        "cuda_bandwidth_gbs": round(bandwidth["cuda"], 1) if cuda else None,
        "l3_mib": None if l3 is None else l3 / 1024**2,
        "kernels": {name: {key: _json_number(v) for key, v in r.items()} for name, r in rows.items()},
        # Achieved GB/s over the copy bandwidth of the same device. For kernels
        # whose working set fits in a cache this can pass 1; `gemv_int4` is the
        # one that cannot (its weight is larger than the L3).
        "bandwidth_fraction": {
            ("gemv_int4" if name == BEYOND_L3 else name.replace(" ", "_")):
                round(r["gbs"] / bandwidth["cuda" if r["device"] == "cuda" else "cpu"], 4)
            for name, r in rows.items()},
        "skipped": skipped, "all_ok": all(r["ok"] for r in rows.values()),
    }
    if gemv:
        n, k = sizes.gemv
        summary["gemv_int4_gops"] = {v: round(r["gops"], 3) for v, r in gemv.items()}
        ref_ms = sorted(r["ref_ms"] for r in gemv.values())[len(gemv) // 2]
        summary["torch_fp32_gops"] = round(2 * n * k / (ref_ms / 1e3) / 1e9, 3)
        if {"all", "reference"} <= gemv.keys():
            print(f"int4 gemv: all / reference = {gemv['reference']['ms'] / gemv['all']['ms']:.1f}x (goal >= 10x), "
                  f"all / torch fp32 = {gemv['all']['speedup']:.1f}x (goal >= 2x)")
    if load > (os.cpu_count() or 1):
        print(f"note: the machine is busy (load {load:.1f} > {os.cpu_count()} CPUs): multi-threaded calls wait "
              "for their threads to be scheduled; see best_ms in --json for the least disturbed calls.")
    if BEYOND_L3 in rows:
        frac = summary["bandwidth_fraction"]["gemv_int4"]
        row = rows[BEYOND_L3]
        print(f"{BEYOND_L3} ({row['working_set_mib']:.0f} MiB): "
              f"{row['gbs']:.1f} GB/s = {100 * frac:.0f}% of copy bandwidth (goal >= 70%)")
    wrong = [name for name, r in rows.items() if not r["ok"]]
    if wrong:
        print(f"WRONG: {', '.join(wrong)} differ from their reference beyond the tolerance", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main()["all_ok"] else 1)
