"""Lab 09's graded checks, run by the grader against the student's kernel
(``autograder.trusted``); never released to students.

The student's code runs on N gloo ranks through the notebook's own
``launch``: each check hands it a ``helpers.probes.DistWorker`` (the lab's
test workers, no solution code) holding the student's functions (``Ref``)
and inputs built here, and gets back the ranks' results as plain data. The
expected values come from single-process references computed HERE with the
same seeded models and data (``helpers.distributed``'s toy models, plain
torch): data-parallel weights against single-process SGD/Adam, pipeline and
tensor-parallel gradients against the unsharded model.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from autograder.trusted import ModuleSpec, Ref, task
from helpers import distributed as hd
from helpers.checks import check, check_close, check_equal, check_in_range

def _run(student, job, world_size, fns, task_id, **params):
    """The ranks' results of DistWorker(job) on ``world_size`` ranks."""
    launch = student.function("launch")
    spec = ModuleSpec("helpers.probes.DistWorker", {"job": job, "fns": {name: Ref(name) for name in fns}, **params})
    # (launch's own default timeout, 60 s, is the notebook's TIMEOUT: a keyword argument named `timeout`
    # cannot be sent, Student.call takes it as its own)
    results = launch(spec, world_size)
    check(type(results) is list and len(results) == world_size,
          f"launch returned {type(results).__name__}, expected one result per rank", task=task_id)
    return results


def _tensor(v, name, t):
    check(isinstance(v, torch.Tensor), f"`{name}` is a {type(v).__name__}, expected a tensor", task=t,
          hint="did the function forget to `return` its result?" if v is None else None)
    return v


def _seq(v, n, name, t):
    check(type(v) in (list, tuple), f"`{name}` is a {type(v).__name__}, expected a list", task=t)
    if n is not None:
        check_equal(len(v), n, name=f"length of {name}", task=t)
    return list(v)


def train_single(model, data, targets, steps, batch_size, lr, optimizer="sgd", **opt_kwargs):
    """The notebook's reference: one process, global batch ``batch_size``, MSE loss."""
    opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(model.parameters(), lr=lr, **opt_kwargs)
    history = []
    for s in range(steps):
        xb, yb = data[s * batch_size:(s + 1) * batch_size], targets[s * batch_size:(s + 1) * batch_size]
        opt.zero_grad()
        F.mse_loss(model(xb), yb).backward()
        opt.step()
        history.append([p.detach().clone() for p in model.parameters()])
    return history


# ---------------------------------------------------------------- Task 1.1

def _check_allreduce(student, world_size, sizes, seed):
    shapes = [p.shape for p in hd.make_mlp(sizes, seed).parameters()]
    gen = torch.Generator().manual_seed(1000 + seed)
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(world_size)]
    for g in grads:
        g[-1] = None                      # a parameter without gradient stays without
    results = _run(student, "allreduce", world_size, ["allreduce_gradients"], "1.1",
                   sizes=sizes, seed=seed, grads=grads)
    for rank, got in enumerate(results):
        got = _seq(got, len(shapes), f"rank {rank}: gradients", "1.1")
        check(got[-1] is None, f"rank {rank}: the last bias had no gradient and must keep `.grad = None`.",
              task="1.1")
        for i, g in enumerate(got[:-1]):
            g = _tensor(g, f"rank {rank}, gradient of parameter {i}", "1.1")
            mean = sum(pr[i] for pr in grads) / world_size
            hint = None
            if g.shape == mean.shape and torch.allclose(g, mean * world_size, atol=1e-5):
                hint = "this is the sum over ranks: divide by world_size."
            elif g.shape == mean.shape and torch.allclose(g, mean / world_size, atol=1e-5):
                hint = "the gradient is divided by world_size twice."
            check_close(g, mean, name=f"rank {rank}, gradient of parameter {i} ({world_size} ranks)", task="1.1",
                        rtol=1e-5, atol=1e-6, hint=hint)


@task("task_1_1_allreduce_gradients")
def allreduce_gradients(student):
    _check_allreduce(student, 2, [4, 8, 3], 0)
    _check_allreduce(student, 3, [5, 7, 6, 2], 11)
    _check_allreduce(student, 4, [3, 5, 2], 12)


# ---------------------------------------------------------------- Tasks 1.2 and 1.4

def _check_dp(student, world_size, sizes, seed, steps, batch_size, lr, accum=None):
    t = "1.2" if accum is None else "1.4"
    data, targets = hd.toy_regression(steps * batch_size, sizes[0], sizes[-1], seed)
    model = hd.make_mlp(sizes, seed)
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    ref = train_single(model, data, targets, steps, batch_size, lr)
    fns = ["dp_train"] if accum is None else ["dp_train_accum"]
    params = dict(sizes=sizes, seed=seed, steps=steps, batch_size=batch_size, lr=lr, accum=accum)
    what = f"{world_size} ranks, {steps} steps" + (f", {accum} micro-batches" if accum else "")
    for rank, res in enumerate(_run(student, "dp_train", world_size, fns, t, **params)):
        history = _seq(res["history"], steps, f"rank {rank}: the list returned ({what})", t)
        worst = 0.0
        for s, (got_step, want_step) in enumerate(zip(history, ref)):
            got_step = _seq(got_step, len(want_step), f"rank {rank}: the parameters after step {s}", t)
            for i, (got, want) in enumerate(zip(got_step, want_step)):
                got = _tensor(got, f"rank {rank}, step {s}, parameter {i}", t)
                check_equal(tuple(got.shape), tuple(want.shape), name=f"shape of parameter {i}", task=t)
                worst = max(worst, (got - want).abs().max().item())
        hint = ("each rank must train on its own shard and average (not sum) the gradients." if accum is None else
                "scale each micro-batch loss by 1/accum_steps so the accumulated gradient is a mean.")
        check_in_range(worst, 0, 1e-5, name=f"rank {rank}: max |w_dp - w_single| ({what})", task=t, hint=hint)
        if accum is not None:
            # Once per optimizer step: all the gradients (any number of all-reduce calls, e.g. one of the
            # flattened gradients), not once per micro-batch.
            sent = sum(payload for name, payload in res["calls"] if name == "all_reduce")
            check_in_range(sent / (steps * n_bytes), 1.0, 1.5, task=t,
                           name=f"rank {rank}: bytes all-reduced over {steps} steps / (steps * gradient bytes)",
                           hint="communicate once per optimizer step, after the last micro-batch, not after each one.")


@task("task_1_2_dp_train")
def dp_train(student):
    _check_dp(student, 2, [8, 32, 4], 0, 5, 16, 0.1)
    _check_dp(student, 3, [6, 10, 10, 3], 12, 3, 12, 0.05)


@task("task_1_4_grad_accumulation")
def grad_accumulation(student):
    _check_dp(student, 2, [8, 16, 4], 0, 3, 16, 0.1, accum=4)
    _check_dp(student, 3, [5, 12, 12, 2], 16, 2, 18, 0.05, accum=3)


# ---------------------------------------------------------------- Task 1.3

def _check_bucketed(student, world_size, sizes, seed, cap, frozen=False):
    t = "1.3"
    model = hd.make_mlp(sizes, seed)
    if frozen:
        model[0].bias.requires_grad_(False)
    params = list(model.parameters())
    trainable = [i for i, p in enumerate(params) if p.requires_grad]
    expected = []
    for step in range(2):
        per_rank = []
        for r in range(world_size):
            model.zero_grad()
            x, y = hd.toy_regression(8, sizes[0], sizes[-1], seed + 100 * step + r)
            F.mse_loss(model(x), y).backward()
            per_rank.append([p.grad.clone() if p.grad is not None else None for p in params])
        expected.append(per_rank)
    results = _run(student, "bucketed", world_size, ["BucketedAllReducer"], t, sizes=sizes, seed=seed, cap=cap,
                   frozen=frozen)
    for rank, res in enumerate(results):
        buckets = [[int(i) for i in _seq(b, None, "a bucket", t)] for b in _seq(res["buckets"], None, "buckets", t)]
        flat = [i for b in buckets for i in b]
        check_equal(flat, trainable[::-1], name=f"rank {rank}: parameter indices in bucket order (cap {cap} B)",
                    task=t, hint="buckets hold each parameter that requires grad once, in reverse order of "
                                 "model.parameters().")
        for b in buckets:
            size = sum(params[i].numel() * 4 for i in b)
            check(len(b) == 1 or size <= cap, f"rank {rank}: bucket {b} holds {size} bytes, over the cap of {cap}.",
                  task=t)
        for b1, b2 in zip(buckets, buckets[1:]):
            size = sum(params[i].numel() * 4 for i in b1 + [b2[0]])
            check(size > cap, f"rank {rank}: parameter {b2[0]} would fit in bucket {b1} (greedy: fill a bucket "
                  f"up to {cap} bytes before starting the next).", task=t)
        calls = _seq(res["calls"], 2, "the calls of each step", t)
        grads = _seq(res["grads"], 2, "the gradients of each step", t)
        for step in range(2):
            check_equal(calls[step].count("all_reduce"), len(buckets), task=t,
                        name=f"rank {rank}, step {step}: number of dist.all_reduce calls",
                        hint="one asynchronous all-reduce per bucket, nothing else.")
            if len(buckets) > 1:
                check("input_grad" in calls[step] and
                      calls[step].index("all_reduce") < calls[step].index("input_grad"),
                      f"rank {rank}, step {step}: no all-reduce started before backward finished; launch a "
                      "bucket's all-reduce from the gradient hook, as soon as the bucket is complete.", task=t)
            for i, got in enumerate(_seq(grads[step], len(params), "gradients", t)):
                if i not in trainable:
                    check(got is None, f"parameter {i} does not require grad and must keep `.grad = None`.", task=t)
                    continue
                mean = sum(pr[i] for pr in expected[step]) / world_size
                check_close(_tensor(got, f"gradient of parameter {i}", t), mean, task=t,
                            name=f"rank {rank}, step {step}, gradient of parameter {i} ({world_size} ranks, cap {cap})",
                            rtol=1e-5, atol=1e-6,
                            hint="average (sum / world_size) once, and reset the reducer's state in wait().")


@task("task_1_3_bucketed_allreduce")
def bucketed_allreduce(student):
    _check_bucketed(student, 2, [8, 16, 16, 4], 0, cap=700)
    _check_bucketed(student, 3, [6, 12, 10, 5, 3], 13, cap=300, frozen=True)
    _check_bucketed(student, 2, [5, 9, 3], 14, cap=10**6)
    _check_bucketed(student, 2, [5, 9, 3], 15, cap=1)


# ---------------------------------------------------------------- Task 2.1

def _adam_state_bytes(sizes, seed, lr, eps):
    """Bytes of torch.optim.Adam's state (plain data parallelism: the full state on every rank)."""
    model = hd.make_mlp(sizes, seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, eps=eps)
    x, y = hd.toy_regression(4, sizes[0], sizes[-1], seed)
    F.mse_loss(model(x), y).backward()
    opt.step()
    return hd.tensor_bytes(opt.state)


def _check_zero(student, world_size, sizes, seed, steps=3, batch_size=12, lr=0.01, eps=1e-8):
    t = "2.1"
    data, targets = hd.toy_regression(steps * batch_size, sizes[0], sizes[-1], seed)
    ref = train_single(hd.make_mlp(sizes, seed), data, targets, steps, batch_size, lr, optimizer="adam", eps=eps)[-1]
    plain = _adam_state_bytes(sizes, seed, lr, eps)
    results = _run(student, "zero", world_size, ["ShardedAdam"], t, sizes=sizes, seed=seed, steps=steps,
                   batch_size=batch_size, lr=lr, eps=eps)
    diffs = []
    for rank, res in enumerate(results):
        got = _seq(res["params"], len(ref), f"rank {rank}: parameters", t)
        for i, (g, w) in enumerate(zip(got, ref)):
            check_equal(tuple(_tensor(g, f"parameter {i}", t).shape), tuple(w.shape), name=f"shape of parameter {i}",
                        task=t)
            diffs.append((g - w).abs().flatten())
    diffs = torch.cat(diffs)
    # Adam divides by sqrt(v): for the rare weight whose gradient is ~0, the order of the all-reduce's
    # summation alone moves its update by a visible fraction of lr. So: every weight within lr/10, and on
    # average 1e-6.
    hint = ("average the reduce-scattered gradient, follow torch.optim.Adam's update, "
            "and write the all-gathered chunks back in parameter order.")
    what = f"{world_size} ranks, sizes {sizes}" + (f", eps={eps}" if eps != 1e-8 else "")
    check_in_range(diffs.max().item(), 0, lr / 10, name=f"max |w_zero - w_adam| ({what})", task=t, hint=hint)
    check_in_range(diffs.mean().item(), 0, 1e-6, name=f"mean |w_zero - w_adam| ({what})", task=t, hint=hint)
    for rank, res in enumerate(results):
        check_in_range(res["state_bytes"] / plain, 0.5 / world_size, 1.02 / world_size + 0.01,
                       name=f"rank {rank}: optimizer state bytes sharded / unsharded ({what})", task=t,
                       hint="self.state must hold only this rank's chunk of exp_avg and exp_avg_sq.")


@task("task_2_1_sharded_adam")
def sharded_adam(student):
    _check_zero(student, 2, [16, 33, 8], 0)
    _check_zero(student, 3, [7, 11, 5], 21, steps=2, batch_size=9)
    # Adam ignores the scale of the gradient unless eps is comparable to it:
    # with a large eps, a sum instead of an average changes the update.
    _check_zero(student, 2, [6, 8, 4], 22, steps=2, batch_size=8, eps=0.05)


# ---------------------------------------------------------------- Task 3.1

def _check_gpipe(student, world_size, width, batch, n_micro, seed):
    t = "3.1"
    stages = hd.make_pipeline_stages(world_size, width, seed)
    x, target = hd.toy_regression(batch, width, width, seed)
    out = x
    for s in stages:
        out = s(out)
    loss = F.mse_loss(out, target)
    loss.backward()
    what = f"{world_size} stages, {n_micro} micro-batches"
    results = _run(student, "gpipe", world_size, ["gpipe_step"], t, width=width, batch=batch, n_micro=n_micro,
                   seed=seed)
    for rank, res in enumerate(results):
        got_loss = res["loss"]
        if rank == world_size - 1:
            check(type(got_loss) is float, f"the last rank returned {got_loss!r}, expected the loss as a float.",
                  task=t)
            check_close(got_loss, loss.item(), name=f"loss ({what})", task=t, rtol=1e-5, atol=1e-6,
                        hint="sum the micro-batch losses, each divided by n_micro.")
        else:
            check(got_loss is None, f"rank {rank} returned {got_loss!r}, expected None.", task=t)
        grads = _seq(res["grads"], 2, f"rank {rank}: the stage's gradients", t)
        for name, g, p in zip(["weight", "bias"], grads, stages[rank].parameters()):
            check(g is not None, f"rank {rank}: the stage's {name} has no gradient; run backward on every stage.",
                  task=t)
            g = _tensor(g, f"rank {rank}: the stage's {name} gradient", t)
            hint = None
            if n_micro > 1 and g.shape == p.grad.shape and torch.allclose(g, p.grad * n_micro, rtol=1e-4):
                hint = "the gradient is n_micro times too large: divide each micro-batch loss by n_micro."
            check_close(g, p.grad, name=f"rank {rank}: stage {name} gradient ({what})", task=t, rtol=1e-4, atol=1e-6,
                        hint=hint)


@task("task_3_1_gpipe")
def gpipe(student):
    _check_gpipe(student, 2, 8, 8, 1, 0)
    _check_gpipe(student, 2, 8, 8, 4, 0)
    _check_gpipe(student, 3, 6, 6, 3, 31)
    _check_gpipe(student, 4, 5, 8, 2, 32)


# ---------------------------------------------------------------- Task 3.2

def _bubble(p, m):
    return (p - 1) / (m + p - 1)


def _timings(student, world_size, n_micro, batch, width, fwd_s, bwd_s, seed):
    t = "3.2"
    results = _run(student, "timed", world_size, ["timed_gpipe_step"], t, n_micro=n_micro, batch=batch, width=width,
                   fwd_s=fwd_s, bwd_s=bwd_s, seed=seed)
    out = []
    for rank, res in enumerate(results):
        check(type(res) in (list, tuple) and len(res) == 2 and all(type(v) in (int, float) for v in res),
              f"rank {rank}: timed_gpipe_step returned {res!r}, expected (elapsed_seconds, busy_seconds)", task=t)
        elapsed, busy = float(res[0]), float(res[1])
        # busy is the stage's sleeps (the arithmetic is negligible): it only ever overshoots, a little
        check(0.95 * (fwd_s + bwd_s) <= busy <= min(elapsed + 1e-6, 2 * (fwd_s + bwd_s) + 0.1),
              f"rank {rank}: timed_gpipe_step returned (elapsed {elapsed:.3f} s, busy {busy:.3f} s); expected busy "
              f"about fwd_s + bwd_s = {fwd_s + bwd_s:.2f} s and elapsed >= busy.", task=t,
              hint="build the stage with per-sample costs fwd_s / batch and bwd_s / batch, start the clock after "
                   "dist.barrier(), and return (elapsed, stage.busy_s).")
        out.append((elapsed, busy))
    return out


@task("task_3_2_bubble")
def bubble(student):
    t = "3.2"
    formula, from_timings = student.function("bubble_formula"), student.function("bubble_from_timings")
    for p, m in ((4, 1), (4, 8), (1, 5), (3, 6), (2, 3), (8, 32)):
        check_close(formula(p, m), _bubble(p, m), name=f"bubble_formula({p}, {m})", task=t)
    for timings in ([(2.0, 1.0), (1.5, 1.0)], [(1.0, 0.2), (3.0, 2.5), (2.0, 0.3)], [(4.0, 4.0), (4.0, 4.0)],
                    [(0.5, 0.1), (2.0, 0.5), (1.0, 0.9), (1.5, 1.5)]):
        want = 1.0 - sum(b for _, b in timings) / (len(timings) * max(e for e, _ in timings))
        check_close(from_timings(timings), want, name=f"bubble_from_timings({timings})", task=t,
                    hint="T = max elapsed; bubble = 1 - sum(busy) / (p * T).")
    # timed_gpipe_step on a known workload: every stage is busy fwd_s + bwd_s per step.
    _timings(student, 3, 2, 6, 4, 0.06, 0.12, 32)
    # The notebook's measurement (the locked cell, with the student's gpipe_step) ...
    measured = student.value("bubble_measured")
    check(type(measured) is dict and all(m in measured for m in (1, 2, 4, 8)),
          "the measurement cell did not finish: fix the error it shows and run it again.", task=t)
    for m in (1, 2, 4, 8):
        ratio = float(measured[m]) / _bubble(4, m)
        check(0.75 <= ratio <= 1.25, f"measured bubble {measured[m]:.3f} for m={m} is {ratio:.2f} times the "
              "formula, outside [0.75, 1.25]. Does each stage forward all micro-batches before any backward, and "
              "send without waiting for the receiver (dist.isend)?", task=t)
    for a, b in zip((1, 2, 4), (2, 4, 8)):
        check(measured[b] < measured[a], f"the bubble did not shrink from m={a} to m={b}: "
              f"{measured[a]:.3f} -> {measured[b]:.3f}.", task=t)
    # ... and one measured here, on 3 stages (noise only ever adds idle time: keep the smaller of two runs).
    bubbles = {}
    for m in (1, 4):
        runs = [_timings(student, 3, m, 12, 8, 0.2, 0.4, 33) for _ in range(2)]
        bubbles[m] = min(1.0 - sum(b for _, b in r) / (len(r) * max(e for e, _ in r)) for r in runs)
        ratio = bubbles[m] / _bubble(3, m)
        check(0.7 <= ratio <= 1.3, f"the bubble measured by the grader with your timed_gpipe_step and gpipe_step "
              f"(3 stages, m={m}) is {bubbles[m]:.3f}, {ratio:.2f} times the formula {_bubble(3, m):.3f}, outside "
              "[0.7, 1.3].", task=t, hint="forward all micro-batches before any backward, and send with dist.isend")


# ---------------------------------------------------------------- Part 4: tensor parallelism

def _linears(d_in, d_hidden, d_out, batch, seed):
    g = torch.Generator().manual_seed(seed)
    fc1, fc2 = nn.Linear(d_in, d_hidden), nn.Linear(d_hidden, d_out)
    with torch.no_grad():
        for layer in (fc1, fc2):
            bound = 1 / math.sqrt(layer.in_features)
            layer.weight.copy_((torch.rand(layer.weight.shape, generator=g) * 2 - 1) * bound)
            layer.bias.copy_((torch.rand(layer.bias.shape, generator=g) * 2 - 1) * bound)
        fc2.bias.copy_(torch.randn(d_out, generator=g))   # a bias large enough that adding it N times shows
    x = torch.randn(batch, d_in, generator=g)
    return fc1, fc2, x


def _state(layer):
    return {k: v.detach().clone() for k, v in layer.state_dict().items()}


def _check_parallel_linear(student, world_size, d_in, d_hidden, d_out, batch, seed):
    t = "4.1"
    fc1, fc2, x = _linears(d_in, d_hidden, d_out, batch, seed)
    with torch.no_grad():
        h = fc1(x)
        y_row, y_mlp = fc2(h), fc2(F.gelu(h))
    k = d_hidden // world_size
    tol = dict(rtol=1e-5, atol=1e-5, task=t)
    results = _run(student, "parallel_linear", world_size, ["ColumnParallelLinear", "RowParallelLinear"], t,
                   fc1=_state(fc1), fc2=_state(fc2), x=x)
    what = f"{world_size} ranks, {d_in}->{d_hidden}->{d_out}"
    for rank, res in enumerate(results):
        check_equal([int(n) for n in _seq(res["n_params"], 2, "parameter counts", t)], [k * d_in + k, d_out * k + d_out],
                    task=t, name=f"rank {rank}: parameters held by (ColumnParallelLinear, RowParallelLinear) ({what})",
                    hint="keep only this rank's shard: rows of the weight for column-, columns for row-parallel.")
        check_close(_tensor(res["col"], "column-parallel output", t), h[:, rank * k:(rank + 1) * k],
                    name=f"rank {rank}: column-parallel output slice ({what})", **tol)
        check_close(_tensor(res["col_gathered"], "gathered output", t), h,
                    name=f"rank {rank}: column-parallel gathered output ({what})", **tol)
        hint = "the partial outputs must be summed (all_reduce with SUM) and the bias added once, after the sum."
        check_close(_tensor(res["row"], "row-parallel output", t), y_row,
                    name=f"rank {rank}: row-parallel output ({what})", hint=hint, **tol)
        check_close(_tensor(res["row_full"], "row-parallel output", t), y_row,
                    name=f"rank {rank}: row-parallel output from the full input ({what})",
                    hint="with input_is_parallel=False, take this rank's slice of the input features.", **tol)
        check_close(_tensor(res["mlp"], "MLP output", t), y_mlp, name=f"rank {rank}: Megatron MLP output ({what})",
                    **tol)


@task("task_4_1_parallel_linear")
def parallel_linear(student):
    _check_parallel_linear(student, 2, 8, 16, 6, 4, 0)
    _check_parallel_linear(student, 4, 5, 12, 7, 3, 41)
    _check_parallel_linear(student, 3, 10, 9, 4, 5, 42)


_TP_NAMES = {"y": "output", "x": "input gradient", "w1": "first-layer weight gradient",
             "b1": "first-layer bias gradient", "w2": "second-layer weight gradient", "b2": "second-layer bias gradient"}
_TP_HINTS = {"x": "f's backward must all-reduce (sum) the input gradient over the ranks.",
             "y": "g's forward must sum the partial outputs (all_reduce), and b2 is added once, after it.",
             "w1": "g's backward is the identity: all-reducing there multiplies the gradients by N.",
             "b1": "g's backward is the identity: all-reducing there multiplies the gradients by N."}


def _check_tp(student, world_size, d_in, d_hidden, d_out, batch, seed):
    t = "4.2"
    fc1, fc2, x = _linears(d_in, d_hidden, d_out, batch, seed)
    cot = torch.linspace(-1, 1, batch * d_out).view(batch, d_out)
    xr = x.clone().requires_grad_()
    y = fc2(F.gelu(fc1(xr)))
    (y * cot).sum().backward()
    ref = {"y": y.detach(), "x": xr.grad, "w1": fc1.weight.grad, "b1": fc1.bias.grad, "w2": fc2.weight.grad,
           "b2": fc2.bias.grad}
    results = _run(student, "tp_mlp", world_size, ["tp_mlp_forward"], t, fc1=_state(fc1), fc2=_state(fc2), x=x,
                   cotangent=cot)
    k = d_hidden // world_size
    what = f"{world_size} ranks, dims ({d_in}, {d_hidden}, {d_out}, batch {batch})"
    for rank, res in enumerate(results):
        rows = slice(rank * k, (rank + 1) * k)
        want = {"y": ref["y"], "x": ref["x"], "w1": ref["w1"][rows], "b1": ref["b1"][rows],
                "w2": ref["w2"][:, rows], "b2": ref["b2"]}
        for name, w in want.items():
            got = res[name]
            check(got is not None, f"rank {rank}: no {_TP_NAMES[name]} ({what})", task=t, hint=_TP_HINTS.get(name))
            check_close(_tensor(got, _TP_NAMES[name], t), w, name=f"rank {rank}: {_TP_NAMES[name]} ({what})",
                        task=t, rtol=1e-5, atol=1e-5, hint=_TP_HINTS.get(name))


@task("task_4_2_tp_autograd")
def tp_autograd(student):
    _check_tp(student, 2, 16, 64, 16, 8, 0)
    _check_tp(student, 3, 5, 12, 7, 4, 43)
    _check_tp(student, 4, 6, 8, 3, 2, 44)
