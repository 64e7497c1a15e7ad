"""Lab 05's graded checks, run by the grader against the student's kernel
(``autograder.trusted``); never released to students.

Every graph the student's functions see is built HERE (toy graphs and int8
MobileNets with seeded calibration) and sent to the kernel exactly, weights
and quantization parameters included (``helpers.probes.tinyml_graph``), so
the expected values (plans, regions, the int8 reference outputs) come from
the reference functions below and ``helpers.tinyml.run_reference`` computed
on the same graph in the grader. The generated C of Task 4.2 is compiled and
run in a jail of its own (``run_jailed``), never in the grader's process.
"""
import functools
import random
import re

import numpy as np
import torch

from autograder.trusted import ModuleSpec, StudentError, run_jailed, task
from helpers import tinyml
from helpers.checks import check, check_close, check_equal, check_in_range

# The lab's model (set-up cell): 96x96, the default blocks, seed 0. Only its shapes matter for the plans;
# the calibration here is the grader's own (the check sends this exact graph to the kernel).
LAB_MODEL = dict(resolution=96)
# Hidden models of the original tests (40x40 and 45x45 inputs, 5x5 kernels, other widths).
MODEL_40A = dict(resolution=40, stem=8, blocks=((3, 8, 1), (2, 12, 2), (2, 12, 1)))
MODEL_40B = dict(resolution=40, stem=8, blocks=((2, 8, 2, 5), (6, 8, 1), (3, 16, 1, 5)))
MODEL_45_3 = dict(resolution=45, stem=8, blocks=((2, 8, 1, 5), (2, 12, 2), (3, 12, 1, 5)))
MODEL_45 = dict(resolution=45, stem=8, blocks=((2, 8, 1, 5), (2, 12, 2), (3, 12, 1, 5), (2, 16, 2)))
MODEL_45_OTHER = dict(MODEL_45, num_classes=7, seed=3)


def _rand(shape, seed):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@functools.lru_cache(maxsize=None)
def _model(key, n_calib=4, calib_seed=100):
    spec = dict(key)
    res = spec["resolution"]
    return tinyml.quantize_model(tinyml.mcu_mobilenet(**spec), _rand((n_calib, 1, res, res), calib_seed))


def _graph(spec, n_calib=4, calib_seed=100):
    return _model(tuple(sorted(spec.items())), n_calib, calib_seed)


def _toy(shapes, ops):
    return tinyml.toy_graph(shapes, ops)


def _send(g):
    """The graph as the kernel builds it: exactly this one."""
    tensors = {name: (list(t.shape), float(t.scale), int(t.zero_point)) for name, t in g.tensors.items()}
    ops = [dict(name=op.name, kind=op.kind, inputs=list(op.inputs), output=op.output, kernel=int(op.kernel),
                stride=int(op.stride), padding=int(op.padding), weight=op.weight, bias=op.bias,
                multiplier=op.multiplier, shift=op.shift, act_min=int(op.act_min), act_max=int(op.act_max))
           for op in g.ops]
    return ModuleSpec("helpers.probes.tinyml_graph", {"tensors": tensors, "ops": ops, "input": g.input,
                                                      "output": g.output})


def _input(g, seed):
    h, w, c = g.tensors[g.input].shape
    return tinyml.quantize_input(g, _rand((c, h, w), seed))


CHAIN = dict(shapes={"x": (4, 4, 2), "a": (4, 4, 4), "b": (2, 2, 4)},
             ops=[("conv", ["x"], "a", 3, 1, 1), ("dwconv", ["a"], "b", 3, 2, 1)])
BLOCK = dict(shapes={"x": (8, 8, 4), "e": (8, 8, 8), "d": (8, 8, 8), "p": (8, 8, 4), "y": (8, 8, 4)},
             ops=[("conv", ["x"], "e"), ("dwconv", ["e"], "d", 3, 1, 1), ("conv", ["d"], "p"),
                  ("add", ["x", "p"], "y")])
# a tensor read by two later ops, and a long skip over several ops
LONG_SKIP = dict(shapes={"x": (6, 6, 3), "a": (6, 6, 5), "b": (3, 3, 7), "c": (3, 3, 7), "d": (3, 3, 7),
                         "y": (3, 3, 7)},
                 ops=[("conv", ["x"], "a", 3, 1, 1), ("conv", ["a"], "b", 3, 2, 1), ("dwconv", ["b"], "c", 3, 1, 1),
                      ("dwconv", ["c"], "d", 5, 1, 2), ("add", ["b", "d"], "y")])
# the depthwise input e is read again by the add: no in-place there; the stride-2 one is in place
DW_READ_AGAIN = dict(shapes={"x": (8, 8, 4), "e": (8, 8, 8), "d": (8, 8, 8), "y": (8, 8, 8), "z": (4, 4, 8)},
                     ops=[("conv", ["x"], "e"), ("dwconv", ["e"], "d", 3, 1, 1), ("add", ["e", "d"], "y"),
                          ("dwconv", ["y"], "z", 3, 2, 1)])
# a (toy) depthwise op whose output is larger than its input: not in place
DW_GROWS = dict(shapes={"x": (6, 6, 2), "a": (6, 6, 4), "b": (6, 6, 8), "c": (6, 6, 8)},
                ops=[("conv", ["x"], "a"), ("dwconv", ["a"], "b", 3, 1, 1), ("dwconv", ["b"], "c", 3, 1, 1)])
# x is read by a 1x1 conv (no halo) and, later, by a 5x5 conv: its region is the union of both needs
TWO_READERS = dict(shapes={"x": (10, 10, 2), "a": (10, 10, 3), "b": (10, 10, 3), "y": (10, 10, 3)},
                   ops=[("conv", ["x"], "a"), ("conv", ["x"], "b", 5, 1, 2), ("add", ["a", "b"], "y")])


# ---------------------------------------------------------------- references (the solution's, ported)

def _ref_life(g):
    life = {g.input: (-1, -1)}
    for i, op in enumerate(g.ops):
        life[op.output] = (i, i)
        for n in op.inputs:
            life[n] = (life[n][0], i)
    return life


def _ref_lbl(g):
    life = _ref_life(g)
    return [sum(g.tensors[t].nbytes for t, (a, b) in life.items() if a <= i <= b) for i in range(len(g.ops))]


def _inplace_ops(g):
    """output -> input of the depthwise ops that may run in place."""
    life = _ref_life(g)
    return {op.output: op.inputs[0] for i, op in enumerate(g.ops)
            if op.kind == "dwconv" and life[op.inputs[0]][1] == i
            and g.tensors[op.output].nbytes <= g.tensors[op.inputs[0]].nbytes}


def _ref_inplace(g):
    use, inplace = _ref_lbl(g), _inplace_ops(g)
    for i, op in enumerate(g.ops):
        if op.output in inplace:
            s, d = g.tensors[op.inputs[0]], g.tensors[op.output]
            use[i] += s.shape[0] * s.shape[1] - d.nbytes
    return use


def _ref_in_region(op, r, shape):
    if op.kind not in ("conv", "dwconv"):
        return r
    (y0, y1), (x0, x1) = r
    k, s, p = op.kernel, op.stride, op.padding
    return ((max(0, y0 * s - p), min(shape[0], (y1 - 1) * s - p + k)),
            (max(0, x0 * s - p), min(shape[1], (x1 - 1) * s - p + k)))


def _ref_regions(g, n_ops, out_region):
    reg = {g.ops[n_ops - 1].output: out_region}
    for op in reversed(g.ops[:n_ops]):
        for n in op.inputs:
            need = _ref_in_region(op, reg[op.output], g.tensors[n].shape)
            if n in reg:
                (a0, a1), (b0, b1) = reg[n]
                need = ((min(a0, need[0][0]), max(a1, need[0][1])), (min(b0, need[1][0]), max(b1, need[1][1])))
            reg[n] = need
    return reg


def _ref_patch(g, n_ops, n):
    """(stage_peak, rest_peak, macs_overhead)."""
    T = g.ops[n_ops - 1].output
    life = _ref_life(g)
    full = g.tensors[g.input].nbytes + g.tensors[T].nbytes
    peak = pm = 0
    rows = [(i * g.tensors[T].shape[0] // n, (i + 1) * g.tensors[T].shape[0] // n) for i in range(n)]
    cols = [(j * g.tensors[T].shape[1] // n, (j + 1) * g.tensors[T].shape[1] // n) for j in range(n)]
    for reg in [(r, c) for r in rows for c in cols]:
        R = _ref_regions(g, n_ops, reg)
        tile = {t: (r[0][1] - r[0][0]) * (r[1][1] - r[1][0]) * g.tensors[t].shape[2] for t, r in R.items()}
        for i, op in enumerate(g.ops[:n_ops]):
            peak = max(peak, full + sum(tile[t] for t, (a, b) in life.items() if a <= i <= b and t not in (g.input, T)))
            o = g.tensors[op.output]
            pm += g.macs(op) * tile[op.output] // o.nbytes
    rest = max(_ref_inplace(g)[n_ops:])
    return peak, rest, pm / sum(g.macs(op) for op in g.ops[:n_ops]) - 1


# ---------------------------------------------------------------- reading the student's answers

def _int(v, name, t):
    ok = type(v) in (int, bool) or isinstance(v, np.integer) or (
        isinstance(v, (float, np.floating)) and float(v).is_integer())
    check(ok and type(v) is not bool, f"`{name}` holds {v!r}, expected an integer number of bytes/indices", task=t)
    return int(v)


def _ints(got, name, t):
    """A list/tuple/array of integers, as a list of ints."""
    if isinstance(got, torch.Tensor):
        got = got.tolist()
    elif isinstance(got, np.ndarray):
        check(got.ndim == 1, f"`{name}` has shape {got.shape}, expected one value per op", task=t)
        got = got.tolist()
    check(type(got) in (list, tuple), f"`{name}` is a {type(got).__name__}, expected a list of integers", task=t)
    return [_int(v, name, t) for v in got]


def _pair(v, name, t):
    if isinstance(v, np.ndarray):
        v = v.tolist()
    check(type(v) in (list, tuple) and len(v) == 2, f"`{name}` is {v!r}, expected a pair (start, end)", task=t)
    return (_int(v[0], name, t), _int(v[1], name, t))


def _region(v, name, t):
    if isinstance(v, np.ndarray):
        v = v.tolist()
    check(type(v) in (list, tuple) and len(v) == 2,
          f"`{name}` is {v!r}, expected a region ((y0, y1), (x0, x1))", task=t)
    return (_pair(v[0], name, t), _pair(v[1], name, t))


def _dict(got, name, t):
    check(type(got) is dict, f"`{name}` is a {type(got).__name__}, expected a dict", task=t)
    return got


# ---------------------------------------------------------------- Task 1.1

def _check_lifetimes(f, g, name, hint=None):
    got = _dict(f(_send(g)), name, "1.1")
    want = _ref_life(g)
    check_equal(sorted(got, key=str), sorted(want), name=f"the tensors in {name}", task="1.1",
                hint="one entry per tensor: the graph input and every op's output")
    check_equal({k: _pair(v, f"{name}[{k!r}]", "1.1") for k, v in got.items()}, want, name=name, task="1.1",
                hint=hint or "(index of the producing op, -1 for the input; index of the last op that reads it)")


def _check_plan(f, g, ref, name, t, hint=None):
    check_equal(_ints(f(_send(g)), name, t), ref(g), name=name, task=t, hint=hint)


@task("task_1_1_layer_by_layer")
def layer_by_layer(student):
    life, plan = student.function("lifetimes"), student.function("plan_layer_by_layer")
    chain, block, skip = _toy(**CHAIN), _toy(**BLOCK), _toy(**LONG_SKIP)
    _check_lifetimes(life, chain, "lifetimes(chain)")
    check_equal(_ints(plan(_send(chain)), "plan_layer_by_layer(chain)", "1.1"), [32 + 64, 64 + 16],
                name="plan_layer_by_layer(chain)", task="1.1")
    check_equal(_ints(plan(_send(block)), "plan_layer_by_layer(residual block)", "1.1"), [768, 1280, 1024, 768],
                name="plan_layer_by_layer(residual block)", task="1.1",
                hint="the block input x stays alive until the add reads it")
    lab = _graph(LAB_MODEL)
    got = _ints(plan(_send(lab)), "plan_layer_by_layer(the lab's model)", "1.1")
    check_equal(max(got) if got else None, 331_776, name="peak of the lab's model", task="1.1")
    check_equal(got, _ref_lbl(lab), name="plan_layer_by_layer(the lab's model)", task="1.1")
    _check_lifetimes(life, skip, "lifetimes(graph with a long skip)")
    _check_lifetimes(life, block, "lifetimes(residual block)", hint="the block input x is last read by the add")
    _check_plan(plan, skip, _ref_lbl, "plan_layer_by_layer(graph with a long skip)", "1.1",
                hint="count every tensor produced before op i and read at or after op i")
    _check_plan(plan, _toy(**TWO_READERS), _ref_lbl, "plan_layer_by_layer(a tensor read by two convs)", "1.1")
    for spec in (MODEL_40A, MODEL_40B):
        _check_plan(plan, _graph(spec), _ref_lbl, f"plan_layer_by_layer(model {spec['blocks']})", "1.1")


# ---------------------------------------------------------------- Task 2.1

@task("task_2_1_inplace")
def inplace(student):
    plan = student.function("plan_inplace")
    check_equal(_ints(plan(_send(_toy(**BLOCK))), "plan_inplace(residual block)", "2.1"),
                [768, 256 + 512 + 64, 1024, 768], name="plan_inplace(residual block)", task="2.1",
                hint="in place: the depthwise output reuses its input's buffer, plus one channel of scratch")
    lab = _graph(LAB_MODEL)
    got = _ints(plan(_send(lab)), "plan_inplace(the lab's model)", "2.1")
    check_equal(max(got) if got else None, 221_184, name="in-place peak of the lab's model", task="2.1")
    check_equal(got, _ref_inplace(lab), name="plan_inplace(the lab's model)", task="2.1")
    _check_plan(plan, _toy(**DW_READ_AGAIN), _ref_inplace, "plan_inplace(depthwise input read again later)", "2.1",
                hint="only when the depthwise op is the last reader of its input")
    _check_plan(plan, _toy(**DW_GROWS), _ref_inplace, "plan_inplace(a depthwise output larger than its input)",
                "2.1", hint="in place only when the output is no larger than the input")
    _check_plan(plan, _toy(**LONG_SKIP), _ref_inplace, "plan_inplace(graph with a long skip)", "2.1")
    for spec in (MODEL_40A, MODEL_40B):
        _check_plan(plan, _graph(spec), _ref_inplace, f"plan_inplace(model {spec['blocks']})", "2.1",
                    hint="a stride-2 depthwise conv needs a scratch channel of the input's size H_in * W_in")


# ---------------------------------------------------------------- Task 3.1

def _qop(kind, k, s, p):
    return ModuleSpec("helpers.tinyml.QOp", {"name": "c", "kind": kind, "inputs": ["x"], "output": "y",
                                             "kernel": k, "stride": s, "padding": p})


def _check_regions(f, g, n_ops, out_region, name, hint=None):
    got = _dict(f(_send(g), n_ops, out_region), name, "3.1")
    want = _ref_regions(g, n_ops, out_region)
    check_equal(sorted(got, key=str), sorted(want), name=f"the tensors in {name}", task="3.1",
                hint="every tensor the stage reads or writes, the input and the stage output included")
    check_equal({k: _region(v, f"{name}[{k!r}]", "3.1") for k, v in got.items()}, want, name=name, task="3.1",
                hint=hint)


@task("task_3_1_receptive_field")
def receptive_field(student):
    f, regions = student.function("input_region"), student.function("stage_regions")
    c3 = _qop("conv", 3, 1, 1)
    check_equal(_region(f(c3, ((0, 4), (0, 4)), (8, 8, 2)), "input_region", "3.1"), ((0, 5), (0, 5)),
                name="conv 3x3 s1, top-left patch", task="3.1",
                hint="one halo row/column on each side, clipped at the image border")
    check_equal(_region(f(c3, ((2, 4), (3, 5)), (8, 8, 2)), "input_region", "3.1"), ((1, 5), (2, 6)),
                name="conv 3x3 s1, inner patch", task="3.1")
    block = _toy(**BLOCK)
    r = _dict(regions(_send(block), 4, ((0, 4), (4, 8))), "stage_regions(block, 4, ((0, 4), (4, 8)))", "3.1")
    for name, want, hint in (("d", ((0, 4), (4, 8)), None), ("e", ((0, 5), (3, 8)), None),
                             ("x", ((0, 5), (3, 8)), "x feeds the expand conv (needs the halo) and the add: "
                                                     "take the union")):
        check(name in r, f"stage_regions(block, ...) has no region for {name!r}", task="3.1")
        check_equal(_region(r[name], f"region of {name}", "3.1"), want, name=f"region of {name}", task="3.1",
                    hint=hint)
    # non-conv ops need the same region
    for kind in ("add", "avgpool"):
        op = ModuleSpec("helpers.tinyml.QOp", {"name": "o", "kind": kind, "inputs": ["x"], "output": "y"})
        check_equal(_region(f(op, ((1, 3), (2, 5)), (6, 6, 4)), "input_region", "3.1"), ((1, 3), (2, 5)),
                    name=f"input_region of an {kind} op", task="3.1", hint="add and avgpool need the same region")
    rng = random.Random(8)
    for _ in range(120):   # each is a call into the kernel (~50 ms when grading)
        k = rng.choice((1, 3, 5, 7))
        s = rng.choice((1, 2))
        p = k // 2
        H = rng.randint(k, 30)
        W = rng.randint(k, 30)
        OH, OW = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
        y0 = rng.randrange(OH)
        y1 = rng.randint(y0 + 1, OH)
        x0 = rng.randrange(OW)
        x1 = rng.randint(x0 + 1, OW)
        kind = rng.choice(("conv", "dwconv"))
        rows = [oy * s - p + ky for oy in range(y0, y1) for ky in range(k) if 0 <= oy * s - p + ky < H]
        cols = [ox * s - p + kx for ox in range(x0, x1) for kx in range(k) if 0 <= ox * s - p + kx < W]
        got = f(_qop(kind, k, s, p), ((y0, y1), (x0, x1)), (H, W, 3))
        name = f"input_region({kind}, k={k}, s={s}, p={p}, out=(({y0}, {y1}), ({x0}, {x1})), in_shape=({H}, {W}, 3))"
        check_equal(_region(got, name, "3.1"), ((min(rows), max(rows) + 1), (min(cols), max(cols) + 1)),
                    name=name, task="3.1", hint="rows oy * s - p .. oy * s - p + k - 1, clipped to the input")
    _check_regions(regions, _toy(**TWO_READERS), 3, ((4, 6), (0, 3)), "stage_regions(a tensor read by two convs)",
                   hint="a tensor read by several ops needs the union of their regions")
    _check_regions(regions, block, 4, ((5, 8), (0, 3)), "stage_regions(block, 4, ((5, 8), (0, 3)))")
    q = _graph(MODEL_45_3)
    for n_ops in (5, 8, 12):
        T = q.tensors[q.ops[n_ops - 1].output]
        for reg in (((0, 3), (0, 4)), ((5, 9), (2, 7)), ((T.shape[0] - 2, T.shape[0]), (0, T.shape[1]))):
            _check_regions(regions, q, n_ops, reg, f"stage_regions(model, {n_ops}, {reg})")


# ---------------------------------------------------------------- Task 3.2

def _plan_dict(got, name):
    got = _dict(got, name, "3.2")
    for key in ("peak", "stage_peak", "rest_peak", "macs_overhead"):
        check(key in got, f"`{name}` has no key {key!r}", task="3.2")
    return got


@task("task_3_2_patch_plan")
def patch_plan(student):
    f = student.function("patch_plan")
    lab = _graph(LAB_MODEL)
    p = _plan_dict(f(_send(lab), 8, 3), "patch_plan(graph, 8, 3)")
    check_equal(_int(p["rest_peak"], "rest_peak", "3.2"), 82_944,
                name="rest_peak of the lab's model (stage = 8 ops)", task="3.2")
    check_equal(_int(p["stage_peak"], "stage_peak", "3.2"), 70_416,
                name="stage_peak of the lab's model (stage = 8 ops, 3x3 patches)", task="3.2",
                hint="input + T + the tiles alive at each op, tile size = region area * channels")
    check_equal(_int(p["peak"], "peak", "3.2"), 82_944, name="peak (the larger of the two)", task="3.2")
    check_close(p["macs_overhead"], 0.123489, atol=1e-4, name="macs_overhead (stage = 8 ops, 3x3 patches)",
                task="3.2")
    for g, n_ops, n, what in ((lab, 3, 2, "the lab's model: conv0 is still needed by b1.add"),
                              (lab, 10, 2, "the lab's model: b3's input is still needed by b3.add"),
                              (_graph(MODEL_45), 10, 2, "another model, inside a residual block")):
        try:
            f(_send(g), n_ops, n)
            raised = ""
        except StudentError as exc:
            raised = str(exc)
        check(raised.startswith("ValueError"), f"patch_plan(graph, {n_ops}, {n}) splits inside a block ({what}): "
              f"it must raise ValueError" + (f", it raised {raised[:200]}" if raised else ""), task="3.2")
    q = _graph(MODEL_45)
    for g, n_ops, n in ((lab, 5, 4), (lab, 8, 2), (lab, 6, 2), (q, 5, 3), (q, 8, 4), (q, 12, 2), (q, 1, 3)):
        name = f"patch_plan(n_ops={n_ops}, {n}x{n} patches)"
        p = _plan_dict(f(_send(g), n_ops, n), name)
        sp, rp, ov = _ref_patch(g, n_ops, n)
        check_equal(_int(p["stage_peak"], "stage_peak", "3.2"), sp, name=f"stage_peak of {name}", task="3.2",
                    hint="tiles include the halo of every later op in the stage")
        check_equal(_int(p["rest_peak"], "rest_peak", "3.2"), rp, name=f"rest_peak of {name}", task="3.2",
                    hint="the ops after the stage, layer by layer with in-place depthwise")
        check_equal(_int(p["peak"], "peak", "3.2"), max(sp, rp), name=f"peak of {name}", task="3.2")
        check_close(p["macs_overhead"], ov, atol=2e-3, name=f"macs_overhead of {name}", task="3.2",
                    hint="the halo pixels are recomputed by every patch that needs them")


# ---------------------------------------------------------------- Task 3.3

@task("task_3_3_patch_execution")
def patch_execution(student):
    f = student.function("run_patch_stage")
    lab = _graph(LAB_MODEL)
    q = _graph(MODEL_45)
    cases = [(lab, 8, 3, 1), (lab, 5, 4, 2), (lab, 8, 5, 3), (q, 5, 3, 4), (q, 8, 4, 5), (q, 12, 2, 6),
             (q, 1, 3, 7)]
    for g, n_ops, n, seed in cases:
        x = _input(g, seed)
        T = g.ops[n_ops - 1].output
        want = tinyml.run_reference(g, x)[T]
        got = f(_send(g), n_ops, n, x)
        name = f"patch-based {T} (n_ops={n_ops}, {n}x{n} patches, {g.tensors[g.input].shape[0]}px model)"
        check(isinstance(got, (np.ndarray, torch.Tensor)), f"run_patch_stage returned a {type(got).__name__}, "
              "expected an int8 array", task="3.3")
        check_equal(np.asarray(got), want, name=name, task="3.3",
                    hint="differences along patch borders mean a wrong halo; along the image border, wrong padding")


# ---------------------------------------------------------------- Task 4.1

def _check_arena(f, g, inplace, name, size_range):
    got = f(_send(g), inplace)
    check(type(got) in (list, tuple) and len(got) == 2,
          f"allocate({name}, {inplace}) returned {type(got).__name__}, expected (offsets, arena_size)", task="4.1")
    offsets, size = _dict(got[0], "offsets", "4.1"), _int(got[1], "arena_size", "4.1")
    names = [g.input] + [op.output for op in g.ops]
    check_equal(sorted(offsets, key=str), sorted(names), name=f"tensors with an offset ({name}, inplace={inplace})",
                task="4.1")
    offsets = {k: _int(v, f"offset of {k}", "4.1") for k, v in offsets.items()}
    life = _ref_life(g)
    shared = _inplace_ops(g) if inplace else {}
    for a in names:
        oa, sa = offsets[a], g.tensors[a].nbytes
        check(0 <= oa and oa + sa <= size, f"tensor {a} [{oa}, {oa + sa}) lies outside the arena of {size} B "
              f"({name}, inplace={inplace})", task="4.1")
        for b in names:
            if a < b and life[a][0] <= life[b][1] and life[b][0] <= life[a][1] and shared.get(a) != b \
                    and shared.get(b) != a:
                ob, sb = offsets[b], g.tensors[b].nbytes
                check(oa + sa <= ob or ob + sb <= oa, f"tensors {a} [{oa}, {oa + sa}) and {b} [{ob}, {ob + sb}) "
                      f"overlap but are alive at the same time ({name}, inplace={inplace})", task="4.1")
    for out, src in shared.items():
        check_equal(offsets[out], offsets[src], name=f"offset of the in-place depthwise output {out} ({name})",
                    task="4.1", hint="an in-place depthwise output gets the same offset as its input")
    lo, hi = size_range
    check_in_range(size, lo, hi, name=f"arena size ({name}, inplace={inplace})", task="4.1",
                   hint="first fit: each tensor at the lowest offset free during its whole lifetime")
    return offsets


@task("task_4_1_arena")
def arena(student):
    f = student.function("allocate")
    lab = _graph(LAB_MODEL)
    # (the in-place plan's peak includes the depthwise scratch channel, which is not in the arena)
    for inplace_, peak in ((False, max(_ref_lbl(lab))), (True, max(_ref_inplace(lab)))):
        _check_arena(f, lab, inplace_, "the lab's model", (0.95 * peak, 1.1 * peak))
    q = _graph(MODEL_45)
    for inplace_ in (False, True):
        _check_arena(f, q, inplace_, "another model",
                     (max(_ref_lbl(q)) * (0.5 if inplace_ else 1.0), 1.1 * max(_ref_lbl(q))))
    g = _toy(**DW_READ_AGAIN)
    offs = _check_arena(f, g, True, "a toy graph", (0, None))
    check(offs["d"] != offs["e"], "d cannot overwrite e in place: the add still reads e", task="4.1")
    check_equal(offs["z"], offs["y"], name="offset of z (in-place stride-2 depthwise)", task="4.1")
    g = _toy(**DW_GROWS)
    offs = _check_arena(f, g, True, "a toy graph whose depthwise output grows", (0, None))
    check(offs["b"] != offs["a"], "b is larger than a: it cannot take a's buffer in place", task="4.1")
    check(offs["c"] == offs["b"], "c (depthwise, last reader of b, same size) must take b's offset in place",
          task="4.1")


# ---------------------------------------------------------------- Task 4.2

# Compiles and runs generated C in a jail of its own (autograder.trusted.run_jailed): reads
# {"programs": [{"source", "in_shape", "out_shape", "inputs"}]} on stdin, prints the outputs as JSON.
_RUN_C = r"""
import json, sys
import numpy as np
from helpers import tinyml
from helpers.kernels.cjit import CompileError
job = json.load(sys.stdin)
answers = []
for i, prog in enumerate(job["programs"]):
    g = tinyml.QGraph({"input": tinyml.QTensor("input", tuple(prog["in_shape"]), 1.0, 0),
                       "output": tinyml.QTensor("output", tuple(prog["out_shape"]), 1.0, 0)}, [], "input", "output")
    try:
        model = tinyml.compile_model(prog["source"], g, name=f"lab05_check_{i}")
    except (CompileError, ValueError) as exc:
        answers.append({"error": str(exc)[:3000]})
        continue
    outs = [model(np.asarray(x, dtype=np.int8).reshape(prog["in_shape"])).tolist() for x in prog["inputs"]]
    answers.append({"outputs": outs})
print(json.dumps(answers))
"""


def _own_code(src):
    return src.replace(tinyml.kernel_source(), "")


@task("task_4_2_codegen")
def codegen(student):
    gen, alloc = student.function("generate_c"), student.function("allocate")
    lab = _graph(LAB_MODEL)
    other = _graph(MODEL_45_OTHER, n_calib=8, calib_seed=101)
    jobs = []
    for g, inplace_, seeds, what in ((lab, True, (11, 12, 13), "the lab's model, inplace=True"),
                                     (_graph(MODEL_45), False, (14, 18), "a 45x45 model, inplace=False"),
                                     (other, True, (15, 16, 17), "another model (45x45 input, 5x5 kernels, "
                                                                 "7 classes), inplace=True")):
        src = gen(_send(g), inplace_)
        check(type(src) is str and "model_run" in src, "generate_c must return C source defining model_run",
              task="4.2")
        own = _own_code(src)
        check("malloc" not in own, "the generated code must not call malloc: use static buffers", task="4.2")
        calls_inplace = "depthwise_conv2d_int8_inplace(" in own
        if inplace_:
            check(calls_inplace, f"with inplace=True the code must call depthwise_conv2d_int8_inplace ({what})",
                  task="4.2")
        else:
            check(not calls_inplace, "with inplace=False no depthwise op runs in place", task="4.2")
        if g is lab and inplace_:
            size = alloc(_send(g), True)
            check(type(size) in (list, tuple) and len(size) == 2, "allocate must return (offsets, arena_size)",
                  task="4.2")
            check(re.search(r"static\s+int8_t\s+arena\s*\[\s*%d\s*\]" % _int(size[1], "arena size", "4.2"), own)
                  is not None, "the generated code must declare `static int8_t arena[<arena size from allocate>]`",
                  task="4.2")
        xs = [_input(g, s) for s in seeds]
        jobs.append((what, g, xs, {"source": src, "in_shape": list(g.tensors[g.input].shape),
                                   "out_shape": list(g.tensors[g.output].shape), "inputs": [x.tolist() for x in xs]}))
    answers = run_jailed(_RUN_C, {"programs": [job for *_, job in jobs]}, timeout=300)
    check(type(answers) is list and len(answers) == len(jobs), "running the generated C gave no usable answer",
          task="4.2")
    for (what, g, xs, _), answer in zip(jobs, answers):
        check(type(answer) is dict and "error" not in answer and "outputs" in answer,
              f"the generated C ({what}) did not compile:\n{(answer or {}).get('error', '')[:1500]}", task="4.2")
        check(type(answer["outputs"]) is list and len(answer["outputs"]) == len(xs),
              f"running the generated C ({what}) gave no outputs", task="4.2")
        for x, out in zip(xs, answer["outputs"]):
            want = tinyml.run_reference(g, x)[g.output]
            check_equal(np.asarray(out, dtype=np.int64).reshape(-1), want.astype(np.int64).reshape(-1),
                        name=f"logits of the generated C ({what})", task="4.2",
                        hint="compare intermediate tensors: copy one from the arena to `output` to find the "
                             "first wrong op")
