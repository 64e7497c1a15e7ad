"""Lab 04's graded checks, run by the grader against the student's kernel
(``autograder.trusted``); never released to students.

Each check re-runs the notebook's visible test and its former hidden tests on
the grader's side. Expected values come from references computed here: the
subnetworks are built from the supernet and profiled here (``helpers.ofa``,
``helpers.profile``), the encodings, Pareto fronts and the random-search
baseline of Task 4.3 come from the reference implementations below.

The searches get their ``rng`` and their cost and fitness functions as
objects the kernel builds (``helpers.probes.seeded_random``, ``SearchFn``):
the fitness functions record every arch they were called with, and those
records (not the student's own report) are checked here. ``mutate`` and
``crossover`` get archs that say whether the result is (or shares a list
with) the input (``helpers.probes.tracked_arch``).

Speed is not graded on this machine's clock: the efficiency predictor must be
analytic, and the check watches (``helpers.probes.watched_arch``) that no
subnetwork is built, profiled or run while it computes. The accuracy
predictor of Task 3.2 is trained in the kernel by a probe
(``helpers.probes.fit_predict``) on tables built here, and its predictions come
back through ``is_feasible`` of the locked search cell (the wire has no
request that only builds an argument; ``is_feasible(report, {})`` returns
True without reading it).
"""
import random
from functools import lru_cache

import numpy as np
import torch
from scipy.stats import spearmanr

from autograder.trusted import ModuleSpec, Ref, StudentError, task
from helpers import ofa, probes, profile
from helpers.checks import check, check_equal, check_in_range

SMALLEST = {"r": 10, "d": [1] * 3, "k": [3] * 9, "e": [2] * 9}
LARGEST = {"r": 16, "d": [3] * 3, "k": [5] * 9, "e": [4] * 9}


# ---------------------------------------------------------------- references

@lru_cache(maxsize=1)
def _supernet():
    return ofa.load_supernet()


def _measured(arch):
    """(MACs, int8 peak activation bytes) of the built subnetwork of ``arch``."""
    g = torch.Generator().manual_seed(0)
    net = ofa.build_subnet(_supernet(), arch, calib_x=torch.rand(8, 1, arch["r"], arch["r"], generator=g))
    x = torch.zeros(1, 1, arch["r"], arch["r"])
    return profile.count_macs(net, x), profile.peak_activation_bytes(net, x, bits=8)


def _ref_encoding(arch):
    vec = np.zeros(49, np.float32)
    vec[(10, 12, 14, 16).index(arch["r"])] = 1
    for s in range(3):
        for i in range(arch["d"][s]):
            slot = 3 * s + i
            vec[4 + 5 * slot + (3, 5).index(arch["k"][slot])] = 1
            vec[4 + 5 * slot + 2 + (2, 3, 4).index(arch["e"][slot])] = 1
    return vec


def _feat(a):
    """Task 3.2's own encoding (not Task 3.1's), so that task depends on itself only."""
    act = [i < a["d"][s] for s in range(3) for i in range(3)]
    e = [float(m and a["e"][j] == v) for j, m in enumerate(act) for v in (2, 3, 4)]
    k = [float(m and a["k"][j] == v) for j, m in enumerate(act) for v in (3, 5)]
    return np.array(e + k + [float(a["r"] == v) for v in (10, 12, 14, 16)], dtype=np.float32)


@lru_cache(maxsize=1)
def _measured_table(n=160, seed=2024):
    """Validation accuracies of ``n`` random subnetworks, measured here once."""
    rng = random.Random(seed)
    archs = [ofa.sample_arch(rng) for _ in range(n)]
    acc = np.array(ofa.measure_accuracies(_supernet(), archs, split="val", progress=False), dtype=np.float32)
    return np.stack([_feat(a) for a in archs]), acc


def _arch_key(arch):
    return arch["r"], tuple(arch["d"]), tuple((b["k"], b["e"]) for b in ofa.active_blocks(arch))


def _feasible(arch, budget):
    cost = probes.toy_cost(arch)
    return all(cost[k] <= v for k, v in budget.items())


def _ref_random_search_best(fitness, n_evals, seed):
    rng, best = random.Random(seed), None
    for _ in range(n_evals):
        f = fitness(ofa.sample_arch(rng))
        best = f if best is None else max(best, f)
    return best


def _ref_pareto(c, a):
    keep = [i for i in range(len(c)) if not any(c[j] <= c[i] and a[j] >= a[i] and (c[j] < c[i] or a[j] > a[i])
                                                for j in range(len(c)))]
    return sorted(keep, key=lambda i: (c[i], i))


# ---------------------------------------------------------------- reading results back

def _as_arch(value, what, task_id):
    """A returned arch as a plain dict of ints and lists (lists or tuples accepted)."""
    check(type(value) is dict and set(value) == {"r", "d", "k", "e"},
          f"{what} is not an arch dict with keys r, d, k, e (got {str(value)[:120]}).", task=task_id)
    out = {}
    for key, v in value.items():
        if key == "r":
            check(isinstance(v, (int, np.integer)) and not isinstance(v, bool), f"{what}['r'] is not an int.",
                  task=task_id)
            out[key] = int(v)
        else:
            check(type(v) in (list, tuple) and all(isinstance(x, (int, np.integer)) for x in v),
                  f"{what}[{key!r}] is not a list of ints.", task=task_id)
            out[key] = [int(x) for x in v]
    try:
        ofa.validate_arch(out)
    except ValueError as err:
        check(False, f"{what} is not a valid arch: {err}", task=task_id)
    return out


def _untrack(value, where="the arch"):
    """A result of mutate/crossover with tracked inputs: (plain value, the parts
    of it that are the grader's own input objects)."""
    if type(value) is dict and value.get("tracked") in ("arch", "list") and "value" in value:
        inner, more = _untrack(value["value"], where)
        return inner, ([where] if value["same"] else []) + more
    if type(value) is dict:
        out, shared = {}, []
        for k, v in value.items():
            out[k], more = _untrack(v, f"its {k!r} list")
            shared += more
        return out, shared
    return value, []


def _search_log(record, task_id):
    check(type(record) is dict and type(record.get("calls")) is list,
          "the grader could not read back its fitness function's record.", task=task_id)
    return [(_as_arch(a, "an evaluated arch", task_id), f) for a, f in record["calls"]]


# ---------------------------------------------------------------- Task 1.1

@task("task_1_1_extremes")
def extremes(student):
    for name, want in (("smallest_arch", SMALLEST), ("largest_arch", LARGEST)):
        got = _as_arch(student.function(name)(), f"{name}()", "1.1")
        check_equal(got, want, name=f"{name}()", task="1.1",
                    hint="every choice at its minimum / maximum, inactive slots included")
    size = student.function("design_space_size")
    for args, want, hint in [
            ((1, (1,), (3,), (2,), (16,)), 1, None),
            ((1, (1, 2), (3, 5), (2,), (16,)), 2 + 4, "a stage of depth 1 has 2 distinct networks, of depth 2 it "
                                                      "has 2 * 2"),
            ((3, (1, 2, 3), (3, 5), (2, 3, 4), (10, 12, 14, 16)), 4 * (6 + 36 + 216) ** 3,
             "count each stage's depths separately: inactive slots do not make new networks"),
            ((2, (2, 4), (3, 5, 7), (1, 6), (32,)), (6 ** 2 + 6 ** 4) ** 2, None),
            ((4, (0, 1), (3,), (4,), (8, 9)), 2 * 2 ** 4, "a stage of depth 0 is one network (no blocks)"),
            ((2, [1, 3], [3, 5, 7], [3, 6], [128, 160, 192, 224, 256]), 5 * (6 + 6 ** 3) ** 2, None)]:
        got = size(*args)
        check(isinstance(got, (int, np.integer)) and not isinstance(got, bool),
              f"design_space_size{args} returned a {type(got).__name__}, expected an int.", task="1.1")
        check_equal(int(got), want, name=f"design_space_size{args}", task="1.1", hint=hint)


# ---------------------------------------------------------------- Tasks 2.1 and 2.2

def _predictor_check(student, fname, index, task_id, seeds, hint):
    f = student.function(fname)
    watched = student.function(fname, args_back=True)
    archs = [dict(LARGEST), dict(SMALLEST)]
    rng = random.Random(seeds[0])
    archs += [ofa.sample_arch(rng) for _ in range(3)]
    rng = random.Random(seeds[1])
    for r in ofa.RESOLUTIONS:
        for _ in range(4):
            arch = ofa.sample_arch(rng)
            arch["r"] = r
            archs.append(arch)
    for i, arch in enumerate(archs):
        if i < 3:  # analytic: nothing is built, profiled or run while it computes
            got, (record,) = watched(ModuleSpec("helpers.probes.watched_arch", {"arch": arch}))
            check(type(record) is dict and type(record.get("ran")) is list,
                  "the grader could not read back its watched arch.", task=task_id)
            if record["ran"]:
                check(False, f"{fname}({arch}) ran {record['ran'][0]}: compute it with formulas from the arch dict, "
                      "do not build, profile or run the subnetwork.", task=task_id)
        else:
            got = f(arch)
        check(isinstance(got, (int, np.integer)) and not isinstance(got, bool),
              f"{fname}({arch}) returned a {type(got).__name__}, expected an int.", task=task_id)
        check_equal(int(got), _measured(arch)[index], name=f"{fname}({arch})", task=task_id, hint=hint)


@task("task_2_1_predict_macs")
def predict_macs(student):
    _predictor_check(student, "predict_macs", 0, "2.1", (0, 4242),
                     "check the output size of stride-2 convs and the hidden width e * c_in")


@task("task_2_2_predict_peak")
def predict_peak(student):
    _predictor_check(student, "predict_peak_activation", 1, "2.2", (1, 777),
                     "the peak is a maximum over layers of input + output elements")


# ---------------------------------------------------------------- Task 3.1

@task("task_3_1_encode_arch")
def encode_arch(student):
    f = student.function("encode_arch")
    visible = {"r": 12, "d": [1, 1, 1], "k": [5] + [3] * 8, "e": [4] + [2] * 8}
    rng = random.Random(99)
    archs = [visible, dict(SMALLEST), dict(LARGEST)] + [ofa.sample_arch(rng) for _ in range(50)]
    for arch in archs:
        got = f(arch)
        check(isinstance(got, np.ndarray), f"encode_arch returned a {type(got).__name__}, expected a numpy array.",
              task="3.1")
        check_equal(got.shape, (49,), name=f"the shape of encode_arch({arch})", task="3.1")
        check(got.dtype == np.float32, f"encode_arch returned dtype {got.dtype}, expected float32.", task="3.1")
        check_equal(got, _ref_encoding(arch), name=f"encode_arch({arch})", task="3.1")
        twin = {**arch, "k": list(arch["k"]), "e": list(arch["e"])}
        for s in range(3):
            for i in range(arch["d"][s], 3):
                twin["k"][3 * s + i] = rng.choice((3, 5))
                twin["e"][3 * s + i] = rng.choice((2, 3, 4))
        check_equal(f(twin), _ref_encoding(arch), name="encoding of an arch with other inactive slots", task="3.1",
                    hint="inactive slots must be all zeros")


# ---------------------------------------------------------------- Task 3.2

def _fit_predict(student, X, y, X_test, kwargs, what):
    spec = ModuleSpec("helpers.probes.fit_predict", {"fn": Ref("train_accuracy_predictor"), "X": X, "y": y,
                                                      "X_test": X_test, "kwargs": kwargs})
    _, args = student.call("is_feasible", spec, {}, args_back=True)
    report = args[0] if type(args) is list and len(args) == 2 else None
    check(type(report) is dict and "is_module" in report,
          "the grader could not read back its probe (is `is_feasible` from the locked search cell still defined?)",
          task="3.2")
    check(report["is_module"], f"train_accuracy_predictor must return a torch.nn.Module (got a {report['type']}).",
          task="3.2")
    pred = report["predictions"]
    check(isinstance(pred, torch.Tensor) and pred.numel() == len(X_test),
          f"the predictor returned {getattr(pred, 'numel', lambda: 0)()} values for {len(X_test)} archs ({what}).",
          task="3.2", hint="map a float32 tensor [M, 49] to [M] (or [M, 1]) predicted accuracies")
    pred = pred.reshape(-1).double().numpy()
    check(np.isfinite(pred).all(), f"the predictor returned NaN or inf ({what}).", task="3.2")
    return pred


@task("task_3_2_accuracy_predictor")
def accuracy_predictor(student):
    # Synthetic tables with a known structure: a predictor that really learns ranks them.
    g = np.random.default_rng(5)
    for trial in range(2):
        Xs = np.stack([_feat(ofa.sample_arch(random.Random(1000 * trial + i))) for i in range(240)])
        w = g.normal(size=Xs.shape[1])
        ys = 90 + Xs @ w + 0.5 * (Xs[:, 4:] @ w[4:]) ** 2 / Xs.shape[1] + g.normal(0, 0.3, len(Xs))
        pred = _fit_predict(student, Xs[:180], ys[:180], Xs[180:], {"seed": trial + 1}, f"synthetic table {trial}")
        rho = spearmanr(pred, ys[180:]).correlation
        check_in_range(0.0 if np.isnan(rho) else rho, 0.85, 1.0,
                       name=f"Spearman correlation on synthetic table {trial}", task="3.2",
                       hint="the predictor must learn from X and y, not return a fixed or hand-tuned score")
    # Measured accuracies of real subnetworks (measured here once): predictions in percent, ranked better than
    # chance. The reference ranks this table at 0.53-0.63 and other random tables at about 0.5, so the notebook's
    # target of 0.5 is not a threshold to grade on.
    X, acc = _measured_table()
    cut = int(0.75 * len(X))
    pred = _fit_predict(student, X[:cut], acc[:cut], X[cut:], {"seed": 0}, "measured table")
    check_in_range(float(np.mean(pred)), 50, 100, name="mean predicted accuracy (percent)", task="3.2",
                   hint="predict accuracies in percent (undo any standardization of the targets)")
    rho = spearmanr(pred, acc[cut:]).correlation
    check_in_range(0.0 if np.isnan(rho) else rho, 0.25, 1.0,
                   name="Spearman correlation on held-out measured archs", task="3.2")


# ---------------------------------------------------------------- Task 4.1

def _search_specs(kind, target=None):
    return (ModuleSpec("helpers.probes.SearchFn", {"kind": kind, "target": target}),
            ModuleSpec("helpers.probes.SearchFn", {"kind": "cost"}))


@task("task_4_1_random_search")
def random_search(student):
    search = student.function("random_search", args_back=True)
    for seed, budget, n in ((0, {"macs": 20_000, "peak": 500}, 30), (3, {"macs": 13_500}, 57),
                            (4, {"macs": 60_000, "peak": 400}, 57), (5, {"peak": 300}, 57)):
        fitness, cost = _search_specs("bigger")
        got, (record, *_) = search(fitness, cost, budget, n, ModuleSpec("helpers.probes.seeded_random", {"seed": seed}))
        _check_search_result(got, _search_log(record, "4.1"), budget, n, "random_search", "4.1")
    try:
        student.function("random_search", timeout=120)(ModuleSpec("helpers.probes.SearchFn", {"kind": "bigger"}),
                                                        ModuleSpec("helpers.probes.SearchFn", {"kind": "cost"}),
                                                        {"macs": 10}, 5,
                                                        ModuleSpec("helpers.probes.seeded_random", {"seed": 0}),
                                                        max_tries=500)
    except StudentError as err:
        check(str(err).startswith("RuntimeError"), f"random_search with an impossible budget raised {err}, "
              "expected a RuntimeError.", task="4.1")
    else:
        check(False, "random_search with an impossible budget must raise RuntimeError", task="4.1")


def _check_search_result(got, log, budget, n_evals, name, task_id):
    check(type(got) in (tuple, list) and len(got) == 3, f"{name} must return (best_arch, best_fitness, history).",
          task=task_id)
    best, fit, hist = got
    check_equal(len(log), n_evals, name=f"number of fitness evaluations of {name}", task=task_id)
    keys = set()
    for arch, _ in log:
        check(_feasible(arch, budget), f"an infeasible arch was evaluated: {arch}", task=task_id,
              hint="check the budget before calling fitness_fn")
        keys.add(_arch_key(arch))
    check(type(hist) in (list, tuple), f"history is a {type(hist).__name__}, expected a list.", task=task_id)
    check_equal(len(hist), len(log), name="len(history)", task=task_id)
    for (arch, f), item in zip(log, hist):
        check(type(item) in (list, tuple) and len(item) == 2, "history holds (arch, fitness) pairs.", task=task_id)
        check_equal(_as_arch(item[0], "an arch in history", task_id), arch, name="an arch in history (in order)",
                    task=task_id)
        check_equal(item[1], f, name="a fitness value in history", task=task_id)
    best = _as_arch(best, "best_arch", task_id)
    check(_feasible(best, budget), f"the best arch {best} is infeasible under {budget}", task=task_id)
    check_equal(fit, max(f for _, f in log), name="best_fitness", task=task_id, hint="return the best fitness seen")
    check_equal(probes.toy_bigger(best), fit, name="fitness of best_arch", task=task_id)
    return keys


# ---------------------------------------------------------------- Task 4.2

def _genes(a):
    return [a["r"], *a["d"], *a["k"], *a["e"]]


def _check_new(shared, message):
    if shared:
        check(False, f"{message}: {shared[0]} is an input's own object.", task="4.2",
              hint="build a new dict with new lists, e.g. with list comprehensions or copy.deepcopy")


@task("task_4_2_mutate_crossover")
def mutate_crossover(student):
    mutate = student.function("mutate", args_back=True)
    crossover = student.function("crossover", args_back=True)
    rng = random.Random(0)
    a, b = ofa.sample_arch(rng), ofa.sample_arch(rng)

    def tracked(arch):
        return ModuleSpec("helpers.probes.tracked_arch", {"arch": arch})

    def seeded(seed):
        return ModuleSpec("helpers.probes.seeded_random", {"seed": seed})

    got, (back, *_) = mutate(tracked(a), 0.0, seeded(1))
    got, shared = _untrack(got)
    check_equal(_as_arch(got, "mutate(arch, 0.0)", "4.2"), a, name="mutate(arch, 0.0)", task="4.2",
                hint="with prob 0 nothing changes")
    _check_new(shared, "mutate must return a new arch, not the input")
    check_equal(_untrack(back)[0], a, name="the arch after mutate", task="4.2", hint="do not modify the input in place")
    for i in range(10):
        got, (back, *_) = mutate(tracked(a), 1.0, seeded(10 + i))
        got, shared = _untrack(got)
        _as_arch(got, "mutate(arch, 1.0)", "4.2")
        _check_new(shared, "mutate must return a new arch, not the input")
        check_equal(_untrack(back)[0], a, name="the arch after mutate", task="4.2",
                    hint="do not modify the input in place")
        got, (back_a, back_b, _) = crossover(tracked(a), tracked(b), seeded(100 + i))
        got, shared = _untrack(got)
        child = _as_arch(got, "crossover(a, b)", "4.2")
        _check_new(shared, "crossover must build a new arch and new lists")
        check(all(g in (x, y) for g, x, y in zip(_genes(child), _genes(a), _genes(b))),
              "every gene of a crossover child must come from one of the parents", task="4.2")
        check(_untrack(back_a)[0] == a and _untrack(back_b)[0] == b, "crossover modified a parent in place.",
              task="4.2")
    # rates: resampling may redraw the same value, so the change rate lies between p/2 and p
    f = student.function("mutate")
    sample = random.Random(123)
    for p in (0.1, 0.5):
        changed = 0
        for i in range(100):
            x = ofa.sample_arch(sample)
            y = _as_arch(f(x, p, seeded(1000 * (p > 0.2) + 2000 + i)), f"mutate(arch, {p})", "4.2")
            changed += sum(g != h for g, h in zip(_genes(x), _genes(y)))
        check_in_range(changed / (100 * 22), 0.4 * p, 1.1 * p, name=f"fraction of genes changed by mutate(prob={p})",
                       task="4.2", hint="resample each gene independently with probability prob")
    f = student.function("crossover")
    from_a = diff = 0
    for i in range(80):
        x, y = ofa.sample_arch(sample), ofa.sample_arch(sample)
        c = _as_arch(f(x, y, seeded(5000 + i)), "crossover(a, b)", "4.2")
        for g, u, v in zip(_genes(c), _genes(x), _genes(y)):
            check(g in (u, v), "every gene of a crossover child must come from one of the parents", task="4.2")
            if u != v:
                diff += 1
                from_a += g == u
    check_in_range(from_a / diff, 0.4, 0.6, name="fraction of differing genes taken from the first parent",
                   task="4.2", hint="take each gene from either parent with probability 1/2, independently")


# ---------------------------------------------------------------- Task 4.3

@task("task_4_3_evolutionary_search")
def evolutionary_search(student):
    evo = student.function("evolutionary_search", args_back=True)
    for seed, budget, pop, gens, kwargs in (
            (0, {"macs": 20_000, "peak": 500}, 12, 4, {}),
            (1, {"macs": 15_000}, 10, 5, {"parent_ratio": 0.3, "mutation_ratio": 0.4, "mutate_prob": 0.3}),
            (2, {"macs": 60_000, "peak": 300}, 10, 5,
             {"parent_ratio": 0.3, "mutation_ratio": 0.4, "mutate_prob": 0.3})):
        fitness, cost = _search_specs("bigger")
        got, (record, *_) = evo(fitness, cost, budget, pop, gens,
                                ModuleSpec("helpers.probes.seeded_random", {"seed": seed}), **kwargs)
        log = _search_log(record, "4.3")
        n_parents = max(1, int(kwargs.get("parent_ratio", 0.25) * pop))
        n_evals = pop + (gens - 1) * (pop - n_parents)
        keys = _check_search_result(got, log, budget, n_evals, "evolutionary_search", "4.3")
        check_equal(len(keys), len(log), name="number of distinct networks evaluated", task="4.3",
                    hint="discard children whose arch_key was evaluated before: no network is evaluated twice")
    # Selection must work: matching a hidden target arch, evolution beats random sampling at equal evaluations.
    target = ofa.sample_arch(random.Random(31))
    target["d"] = [3, 3, 3]
    evo_total = rand_total = 0
    for seed in range(3):
        fitness, cost = _search_specs("match", target)
        got, (record, *_) = evo(fitness, cost, {}, 20, 8, ModuleSpec("helpers.probes.seeded_random", {"seed": seed}))
        log = _search_log(record, "4.3")
        check(type(got) in (tuple, list) and len(got) == 3 and got[1] == max(f for _, f in log),
              "evolutionary_search must return the best fitness it evaluated.", task="4.3")
        evo_total += max(f for _, f in log)
        rand_total += _ref_random_search_best(lambda a: probes.toy_match(a, target), len(log), seed)
    check(evo_total > rand_total + 3, f"evolution (mean best {evo_total / 3:.1f} matching genes) should clearly beat "
          f"random search ({rand_total / 3:.1f}) at equal evaluations: keep the fittest as parents", task="4.3")


# ---------------------------------------------------------------- Task 5.1

@task("task_5_1_pareto_front")
def pareto_front(student):
    f = student.function("pareto_front")

    def same(got, want, name):
        check(type(got) in (list, tuple) or (isinstance(got, np.ndarray) and got.ndim == 1),
              f"pareto_front returned a {type(got).__name__}, expected a list of indices.", task="5.1")
        check(all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in got),
              "pareto_front must return integer indices.", task="5.1")
        check_equal([int(i) for i in got], want, name=name, task="5.1",
                    hint="indices of the non-dominated points, sorted by cost then index")

    same(f([1, 2, 3], [50, 60, 70]), [0, 1, 2], "front of an increasing curve")
    same(f([3, 1, 2], [70, 80, 60]), [1], "pareto_front([3, 1, 2], [70, 80, 60])")
    g = np.random.default_rng(11)
    for n in (1, 7, 40, 200):
        c, a = g.integers(0, 12, n), g.integers(0, 12, n)   # many ties
        same(f(c, a), _ref_pareto(c, a), f"front of {n} random points with ties")
        c, a = g.random(n) * 1e5, 90 + 10 * g.random(n)
        same(f([float(v) for v in c], [float(v) for v in a]), _ref_pareto(c, a), f"front of {n} random points")
    same(f([5, 5, 5], [1, 1, 1]), [0, 1, 2], "front of identical points")
    same(f([1, 2], [5, 5]), [0], "front of equal accuracy, different cost")
    same(f([2, 2, 1], [5, 6, 4]), [2, 1], "equal cost, different accuracy")
