"""Lab 04's trusted checks pass the reference solution, pass correct
solutions written differently, and fail the typical mistakes (run with
``pytest solutions/lab04_nas`` or ``-m lab04_nas``)."""
import pytest

from autograder.labtest import lab_tests

# The set-up cell, and the locked cell of search helpers the solution cells use.
PREAMBLE = """
import math, random, time
import numpy as np
import torch
from torch import nn
from helpers import ofa, profile

supernet = ofa.load_supernet()


def arch_cost(arch: dict) -> dict:
    return {"macs": predict_macs(arch), "peak": predict_peak_activation(arch)}


def is_feasible(cost: dict, budget: dict) -> bool:
    return all(cost[key] <= limit for key, limit in budget.items())


def arch_key(arch: dict) -> tuple:
    return arch["r"], tuple(arch["d"]), tuple((b["k"], b["e"]) for b in ofa.active_blocks(arch))
"""
LAB = "lab04_nas"
pytestmark = pytest.mark.lab04_nas

# name: (solution cell, fragment, replacement, the test cell that must fail)
MISTAKES = {
    "extremes: largest arch with the smallest kernel": (
        "task_1_1_extremes_code", '"k": [max(ofa.KERNELS)] * ofa.NUM_SLOTS', '"k": [min(ofa.KERNELS)] * ofa.NUM_SLOTS',
        "task_1_1_extremes"),
    "space size: inactive slots counted": (
        "task_1_1_extremes_code", "per_stage = sum(per_block ** d for d in depths)",
        "per_stage = len(depths) * per_block ** max(depths)", "task_1_1_extremes"),
    "space size: resolutions forgotten": (
        "task_1_1_extremes_code", "return len(resolutions) * per_stage ** n_stages", "return per_stage ** n_stages",
        "task_1_1_extremes"),
    "macs: depthwise conv counted as a full conv": (
        "task_2_1_predict_macs_code", "macs += hidden * out * out * b[\"k\"] ** 2 ",
        "macs += hidden * out * out * hidden * b[\"k\"] ** 2 ", "task_2_1_predict_macs"),
    "macs: stride-2 size rounded down": (
        "task_2_1_predict_macs_code", "        out = out_size(size, b[\"k\"], b[\"stride\"])\n        macs",
        "        out = size // b[\"stride\"]\n        macs", "task_2_1_predict_macs"),
    "macs: classifier forgotten": (
        "task_2_1_predict_macs_code", "return macs + ofa.STAGE_CHANNELS[-1] * ofa.NUM_CLASSES", "return macs",
        "task_2_1_predict_macs"),
    "macs: measured on the built subnetwork": (
        "task_2_1_predict_macs_code", "    def out_size(size, k, stride):\n        return (size + 2",
        "    net = ofa.build_subnet(supernet, arch, calib_x=torch.rand(8, 1, arch['r'], arch['r']))\n"
        "    return profile.count_macs(net, torch.zeros(1, 1, arch['r'], arch['r']))\n"
        "    def out_size(size, k, stride):\n        return (size + 2", "task_2_1_predict_macs"),
    "peak: the largest single activation": (
        "task_2_2_predict_peak_code", "size * size * hidden + out * out * hidden,  # depthwise",
        "max(size * size, out * out) * hidden,  # depthwise", "task_2_2_predict_peak"),
    "peak: the depthwise output at the input resolution": (
        "task_2_2_predict_peak_code", "size * size * hidden + out * out * hidden,  # depthwise",
        "2 * size * size * hidden,  # depthwise", "task_2_2_predict_peak"),
    "peak: profiled on the built subnetwork": (
        "task_2_2_predict_peak_code", "    def out_size(size, k, stride):\n        return (size + 2",
        "    x = torch.zeros(1, 1, arch['r'], arch['r'])\n"
        "    net = ofa.build_subnet(supernet, arch, calib_x=torch.rand(8, 1, arch['r'], arch['r']))\n"
        "    return profile.peak_activation_bytes(net, x, bits=8)\n"
        "    def out_size(size, k, stride):\n        return (size + 2", "task_2_2_predict_peak"),
    "encoding: inactive slots encoded": (
        "task_3_1_encode_arch_code", "    for b in ofa.active_blocks(arch):\n        base",
        "    for b in [{'slot': i, 'k': arch['k'][i], 'e': arch['e'][i]} for i in range(ofa.NUM_SLOTS)]:\n        base",
        "task_3_1_encode_arch"),
    "encoding: float64": (
        "task_3_1_encode_arch_code", "vec = np.zeros(ENCODING_SIZE, dtype=np.float32)", "vec = np.zeros(ENCODING_SIZE)",
        "task_3_1_encode_arch"),
    "predictor: standardized targets never undone": (
        "task_3_2_accuracy_predictor_code", "return self.mlp(x).squeeze(-1) * self.std + self.mean",
        "return self.mlp(x).squeeze(-1)", "task_3_2_accuracy_predictor"),
    "predictor: not trained": (
        "task_3_2_accuracy_predictor_code", "    for _ in range(epochs):\n", "    for _ in range(0):\n",
        "task_3_2_accuracy_predictor"),
    "predictor: a hand-tuned score": (
        "task_3_2_accuracy_predictor_code", "    return model.eval()",
        "    class Score(nn.Module):\n"
        "        def forward(self, x):\n"
        "            return 90 + x[:, -1] - x[:, -4]\n"
        "    return Score()", "task_3_2_accuracy_predictor"),
    "random search: infeasible archs evaluated": (
        "task_4_1_random_search_code", "        if is_feasible(cost_fn(arch), budget):\n            history",
        "        if True:\n            history", "task_4_1_random_search"),
    "random search: best of the last evaluation": (
        "task_4_1_random_search_code", "best_arch, best_fit = max(history, key=lambda h: h[1])",
        "best_arch, best_fit = history[-1]", "task_4_1_random_search"),
    "random search: no RuntimeError": (
        "task_4_1_random_search_code", "            raise RuntimeError(", "            return None, None, history\n"
        "            raise RuntimeError(", "task_4_1_random_search"),
    "mutate: modifies the input": (
        "task_4_2_mutate_crossover_code", '    return {"r": pick(arch["r"], ofa.RESOLUTIONS),',
        '    for key, choices in (("d", ofa.DEPTHS), ("k", ofa.KERNELS), ("e", ofa.EXPANDS)):\n'
        '        for i, v in enumerate(arch[key]):\n'
        '            arch[key][i] = pick(v, choices)\n'
        '    arch["r"] = pick(arch["r"], ofa.RESOLUTIONS)\n'
        '    return arch\n'
        '    return {"r": pick(arch["r"], ofa.RESOLUTIONS),', "task_4_2_mutate_crossover"),
    "mutate: shares the input's lists": (
        "task_4_2_mutate_crossover_code", '    return {"r": pick(arch["r"], ofa.RESOLUTIONS),',
        '    if prob == 0:\n        return dict(arch)\n    return {"r": pick(arch["r"], ofa.RESOLUTIONS),',
        "task_4_2_mutate_crossover"),
    "mutate: every gene always changes to a new value": (
        "task_4_2_mutate_crossover_code",
        "pick = lambda value, choices: rng.choice(choices) if rng.random() < prob else value",
        "pick = lambda value, choices: rng.choice([c for c in choices if c != value]) if rng.random() < 2 * prob "
        "else value", "task_4_2_mutate_crossover"),
    "crossover: biased towards the first parent": (
        "task_4_2_mutate_crossover_code", "pick = lambda x, y: x if rng.random() < 0.5 else y",
        "pick = lambda x, y: x if rng.random() < 0.8 else y", "task_4_2_mutate_crossover"),
    "evolution: duplicates evaluated": (
        "task_4_3_evolutionary_search_code", "if arch_key(arch) not in seen and is_feasible(cost_fn(arch), budget):",
        "if is_feasible(cost_fn(arch), budget):", "task_4_3_evolutionary_search"),
    "evolution: infeasible children evaluated": (
        "task_4_3_evolutionary_search_code", "if arch_key(arch) not in seen and is_feasible(cost_fn(arch), budget):",
        "if arch_key(arch) not in seen:", "task_4_3_evolutionary_search"),
    "evolution: the least fit kept as parents": (
        "task_4_3_evolutionary_search_code", "key=lambda p: p[1], reverse=True)[:n_parents]",
        "key=lambda p: p[1])[:n_parents]", "task_4_3_evolutionary_search"),
    "evolution: parents re-evaluated": (
        "task_4_3_evolutionary_search_code", "        population = parents + evaluate(children)",
        "        population = evaluate([p[0] for p in parents] + children)", "task_4_3_evolutionary_search"),
    "pareto: strict dominance only": (
        "task_5_1_pareto_front_code", "        if top > best_cheaper:", "        if top >= best_cheaper:",
        "task_5_1_pareto_front"),
    "pareto: ties at equal cost dropped": (
        "task_5_1_pareto_front_code", "front += [int(i) for i in group if accs[i] == top]",
        "front += [int(group[int(np.argmax(accs[group]))])]", "task_5_1_pareto_front"),
}

# Correct solutions written differently: full marks.
ALTERNATIVES = {
    "space size with math.prod": (
        "task_1_1_extremes_code", "    per_block = len(kernels) * len(expands)\n",
        "    per_stage = sum((len(kernels) * len(expands)) ** d for d in depths)\n"
        "    return int(len(resolutions) * math.prod([per_stage] * n_stages))\n"
        "    per_block = len(kernels) * len(expands)\n", "task_1_1_extremes"),
    "macs by summing per-layer tuples": (
        "task_2_1_predict_macs_code", "    def out_size(size, k, stride):\n        return (size + 2",
        "    layers, size = [(ofa.STEM_CHANNELS, arch['r'], arch['r'], 1, 3)], arch['r']\n"
        "    for b in ofa.active_blocks(arch):\n"
        "        h = b['e'] * b['c_in']\n"
        "        out = math.floor((size - 1) / b['stride']) + 1\n"
        "        layers += [(h, size, size, b['c_in'], 1), (h, out, out, 1, b['k']), (b['c_out'], out, out, h, 1)]\n"
        "        size = out\n"
        "    return sum(c * hh * ww * cin * k * k for c, hh, ww, cin, k in layers) + 32 * 10\n"
        "    def out_size(size, k, stride):\n        return (size + 2", "task_2_1_predict_macs"),
    "peak from a list of activation pairs": (
        "task_2_2_predict_peak_code", "    def out_size(size, k, stride):\n        return (size + 2",
        "    size, pairs = arch['r'], []\n"
        "    prev = size * size\n"
        "    cur = ofa.STEM_CHANNELS * size * size\n"
        "    pairs.append(prev + cur)\n"
        "    for b in ofa.active_blocks(arch):\n"
        "        h, out = b['e'] * b['c_in'], -(-size // b['stride'])\n"
        "        acts = [h * size * size, h * out * out, b['c_out'] * out * out]\n"
        "        for a in acts:\n"
        "            pairs.append(cur + a)\n"
        "            cur = a\n"
        "        size = out\n"
        "    pairs += [cur + ofa.STAGE_CHANNELS[-1], ofa.STAGE_CHANNELS[-1] + ofa.NUM_CLASSES]\n"
        "    return max(pairs)\n"
        "    def out_size(size, k, stride):\n        return (size + 2", "task_2_2_predict_peak"),
    "encoding from slot indices": (
        "task_3_1_encode_arch_code", "    vec = np.zeros(ENCODING_SIZE, dtype=np.float32)\n",
        "    parts = [np.eye(4, dtype=np.float32)[ofa.RESOLUTIONS.index(arch['r'])]]\n"
        "    for slot in range(ofa.NUM_SLOTS):\n"
        "        if slot % 3 < arch['d'][slot // 3]:\n"
        "            parts += [np.eye(2, dtype=np.float32)[ofa.KERNELS.index(arch['k'][slot])],\n"
        "                      np.eye(3, dtype=np.float32)[ofa.EXPANDS.index(arch['e'][slot])]]\n"
        "        else:\n"
        "            parts.append(np.zeros(5, np.float32))\n"
        "    return np.concatenate(parts)\n"
        "    vec = np.zeros(ENCODING_SIZE, dtype=np.float32)\n", "task_3_1_encode_arch"),
    "predictor: a one-hidden-layer tanh MLP": (
        "task_3_2_accuracy_predictor_code", "    model = Predictor(Xt.shape[1], yt.mean(), yt.std() + 1e-6)\n",
        "    net = nn.Sequential(nn.Linear(Xt.shape[1], 128), nn.Tanh(), nn.Linear(128, 1))\n"
        "    mu, sd = float(yt.mean()), float(yt.std()) + 1e-6\n"
        "    opt = torch.optim.Adam(net.parameters(), lr=1e-2)\n"
        "    for _ in range(epochs):\n"
        "        opt.zero_grad()\n"
        "        nn.functional.mse_loss(net(Xt)[:, 0], (yt - mu) / sd).backward()\n"
        "        opt.step()\n"
        "\n"
        "    class Scaled(nn.Module):\n"
        "        def __init__(self):\n"
        "            super().__init__()\n"
        "            self.net = net\n"
        "\n"
        "        def forward(self, x):\n"
        "            return self.net(x) * sd + mu\n"
        "    return Scaled()\n"
        "    model = Predictor(Xt.shape[1], yt.mean(), yt.std() + 1e-6)\n", "task_3_2_accuracy_predictor"),
    "random search with a for loop over tries": (
        "task_4_1_random_search_code", "    history, tries = [], 0\n",
        "    history = []\n"
        "    for _ in range(max_tries):\n"
        "        if len(history) == n_evals:\n"
        "            break\n"
        "        arch = ofa.sample_arch(rng)\n"
        "        if is_feasible(cost_fn(arch), budget):\n"
        "            history.append((arch, fitness_fn(arch)))\n"
        "    if len(history) < n_evals:\n"
        "        raise RuntimeError(f'budget {budget} too tight')\n"
        "    i = max(range(len(history)), key=lambda j: history[j][1])\n"
        "    return history[i][0], history[i][1], history\n"
        "    history, tries = [], 0\n", "task_4_1_random_search"),
    "mutate on a deep copy": (
        "task_4_2_mutate_crossover_code", '    pick = lambda value, choices:',
        '    import copy as _copy\n'
        '    out = _copy.deepcopy(arch)\n'
        '    for key, choices in (("d", ofa.DEPTHS), ("k", ofa.KERNELS), ("e", ofa.EXPANDS)):\n'
        '        for i in range(len(out[key])):\n'
        '            if rng.random() < prob:\n'
        '                out[key][i] = rng.choice(choices)\n'
        '    if rng.random() < prob:\n'
        '        out["r"] = rng.choice(ofa.RESOLUTIONS)\n'
        '    return out\n'
        '    pick = lambda value, choices:', "task_4_2_mutate_crossover"),
    "evolution written differently": (
        "task_4_3_evolutionary_search_code", "    history, seen = [], set()\n",
        "    seen, history = set(), []\n"
        "\n"
        "    def draw(make):\n"
        "        for _ in range(max_tries):\n"
        "            a = make()\n"
        "            if arch_key(a) in seen or not is_feasible(cost_fn(a), budget):\n"
        "                continue\n"
        "            seen.add(arch_key(a))\n"
        "            return a\n"
        "        raise RuntimeError('the budget is too tight')\n"
        "\n"
        "    def ev(a):\n"
        "        f = fitness_fn(a)\n"
        "        history.append((a, f))\n"
        "        return f, a\n"
        "\n"
        "    pop = [ev(draw(lambda: ofa.sample_arch(rng))) for _ in range(population_size)]\n"
        "    n_par, n_mut = max(1, int(parent_ratio * population_size)), round(mutation_ratio * population_size)\n"
        "    for _ in range(1, generations):\n"
        "        pop.sort(key=lambda t: -t[0])\n"
        "        parents = pop[:n_par]\n"
        "        pa = [a for _, a in parents]\n"
        "        kids = [draw(lambda: mutate(rng.choice(pa), mutate_prob, rng)) if i < n_mut else\n"
        "                draw(lambda: mutate(crossover(rng.choice(pa), rng.choice(pa), rng), mutate_prob, rng))\n"
        "                for i in range(population_size - n_par)]\n"
        "        pop = parents + [ev(k) for k in kids]\n"
        "    f, a = max(((f, a) for a, f in history), key=lambda t: t[0])\n"
        "    return a, f, history\n"
        "    history, seen = [], set()\n", "task_4_3_evolutionary_search"),
    "pareto by brute force": (
        "task_5_1_pareto_front_code",
        "    costs, accs = np.asarray(costs, dtype=float), np.asarray(accs, dtype=float)\n",
        "    pts = list(zip(costs, accs))\n"
        "    keep = [i for i, (c, a) in enumerate(pts)\n"
        "            if not any(c2 <= c and a2 >= a and (c2 < c or a2 > a) for c2, a2 in pts)]\n"
        "    return sorted(keep, key=lambda i: (pts[i][0], i))\n"
        "    costs, accs = np.asarray(costs, dtype=float), np.asarray(accs, dtype=float)\n",
        "task_5_1_pareto_front"),
}


globals().update(lab_tests(LAB, PREAMBLE, MISTAKES, ALTERNATIVES))
