"""Lab 13's graded checks, run by the grader against the student's kernel
(``autograder.trusted``); never released to students.

Inputs are built here with fixed seeds; expected values come from the references
below. Task 1.2 is also checked against what autograd really saves: the grader
runs a forward pass of the real model here under ``saved_tensors_hooks`` and
compares, layer by layer, which layer inputs (conv/linear) and ReLU outputs were
saved with where the student's accountant counts activations. Models reach the
student's functions as ``ModuleSpec``s or through ``helpers.ondevice`` probes.
"""
import math
import random
from collections import Counter

import torch
import torch.nn.functional as F

from autograder.trusted import ModuleSpec, Ref, task
from helpers import ondevice
from helpers.checks import check, check_close, check_equal

PARTS = ("weights", "grads", "optimizer", "activations")


# ---------------------------------------------------------------- references

def _ref_param(row):
    total = row["weight_numel"] + row["bias_numel"]
    trained = row["weight_numel"] * bool(row["train_weight"]) + row["bias_numel"] * bool(row["train_bias"])
    return 4 * total, 4 * trained, 4 * trained


def _ref_memory(table, batch):
    out, flows = {}, False
    for row in table:
        w, g, o = _ref_param(row)
        a = 0
        if row["kind"] in ("conv", "linear") and row["train_weight"]:
            a = 4 * batch * math.prod(row["in_shape"])
        elif row["kind"] == "relu" and flows:
            a = math.ceil(batch * math.prod(row["out_shape"]) / 8)
        out[row["name"]] = {"weights": w, "grads": g, "optimizer": o, "activations": a}
        flows = flows or row["train_weight"] or row["train_bias"]
    return out


def _scheme(names, scheme, selection=None):
    head = {"fc.weight", "fc.bias"}
    biases = {n for n in names if n.endswith(".bias")}
    keep = {"full": set(names), "last": head, "bias": biases | head,
            "lite": biases | head | {n for n in names if ".lite." in n},
            "sparse": biases | head | set(selection or ())}[scheme]
    return [n for n in names if n in keep]


def _best_gain(contrib, budget):
    items = list(contrib.items())
    best = 0.0
    for mask in range(1 << len(items)):
        cost = sum(c for i, (_, (g, c)) in enumerate(items) if mask >> i & 1)
        if cost <= budget:
            best = max(best, sum(g for i, (_, (g, c)) in enumerate(items) if mask >> i & 1))
    return best


def _list(value, what, task_id):
    check(type(value) in (list, tuple), f"{what} returned a {type(value).__name__}, expected a list.", task=task_id)
    return list(value)


# ---------------------------------------------------------------- Task 1

@task("task_1_1_param_memory")
def param_memory(student):
    f = student.function("param_memory")
    rng = random.Random(0)
    rows = [{"name": "fc", "kind": "linear", "in_shape": (64,), "out_shape": (10,), "weight_numel": 640,
             "bias_numel": 10, "train_weight": False, "train_bias": True},
            {"name": "relu", "kind": "relu", "in_shape": (4, 2, 2), "out_shape": (4, 2, 2), "weight_numel": 0,
             "bias_numel": 0, "train_weight": False, "train_bias": False}]
    for _ in range(6):
        rows.append({"name": "c", "kind": "conv", "in_shape": (3, 8, 8), "out_shape": (5, 8, 8),
                     "weight_numel": rng.randint(1, 5000), "bias_numel": rng.choice([0, 7, 32]),
                     "train_weight": rng.random() < 0.5, "train_bias": rng.random() < 0.5})
    for row in rows:
        got = _list(f(row), "param_memory", "1.1")
        check_equal([int(v) for v in got], list(_ref_param(row)), name=f"param_memory({row})", task="1.1",
                    hint="frozen weights still take memory; gradients and momentum only for trained elements")


def _table(model, trainable, input_shape=(1, 16, 16)):
    return ondevice.layer_table(model, trainable, input_shape)


def _check_memory(f, model, trainable, batch, what):
    table = _table(model, trainable)
    got = f(table, batch)
    check(type(got) is dict, f"training_memory returned a {type(got).__name__}, expected a dict.", task="1.2")
    want = _ref_memory(table, batch)
    check_equal(sorted(got), sorted(want), name=f"the layers of training_memory ({what})", task="1.2")
    for name, parts in want.items():
        check(type(got[name]) is dict, f"training_memory(...)[{name!r}] is not a dict.", task="1.2")
        for part in PARTS:
            check(part in got[name], f"training_memory(...)[{name!r}] has no {part!r}.", task="1.2")
            check_equal(int(got[name][part]), parts[part], name=f"{what}, batch {batch}: {name} {part}", task="1.2")
    return got


def _autograd_oracle(model, trainable, breakdown, batch, what):
    """The layers whose input (conv/linear) or output (ReLU) autograd saves must be exactly
    the layers the accountant charges activations to."""
    ondevice.set_trainable(model, trainable)
    params = {p.data_ptr() for p in model.parameters()}
    ins, outs = {}, {}
    hooks = []

    def record(module, inputs, output, name):
        ins[name], outs[name] = inputs[0].data_ptr(), output.data_ptr()

    for name, m in model.named_modules():
        if name and not list(m.children()):
            hooks.append(m.register_forward_hook(lambda m, i, o, name=name: record(m, i, o, name)))
    saved = Counter()
    x = torch.rand(batch, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.autograd.graph.saved_tensors_hooks(
            lambda t: (saved.update([t.data_ptr()]) if t.data_ptr() not in params else None) or t, lambda t: t):
        model(x)
    for h in hooks:
        h.remove()
    expected = Counter()
    table = {r["name"]: r for r in _table(model, trainable)}
    for name, parts in breakdown.items():
        if int(parts["activations"]) > 0:
            expected.update([ins[name] if table[name]["kind"] in ("conv", "linear") else outs[name]])
    check(saved == expected, f"{what}: autograd saved activations for other layers than your accountant "
          "counts.", task="1.2", hint="a conv keeps its input only for its weight gradient; a ReLU keeps a mask "
          "only when an earlier layer trains")


@task("task_1_2_training_memory")
def training_memory(student):
    f = student.function("training_memory")
    torch.manual_seed(0)
    cases = []
    for channels in ((16, 32, 32, 64), (4, 8, 8, 12)):
        model = ondevice.OnDeviceCNN(channels)
        names = [n for n, _ in model.named_parameters()]
        for scheme, sel in (("full", None), ("last", None), ("bias", None), ("sparse", ["conv3.weight"]),
                            ("sparse", ["conv1.weight"])):
            cases.append((model, _scheme(names, scheme, sel), f"{channels} {scheme} {sel or ''}"))
        cases.append((model, ["conv2.bias"], f"{channels} conv2.bias only"))
        cases.append((model, [], f"{channels} nothing trained"))
        cases.append((model, ["conv3.weight"], f"{channels} conv3.weight only"))
    for i, (model, trainable, what) in enumerate(cases):
        batch = (2, 3, 32)[i % 3]
        got = _check_memory(f, model, trainable, batch, what)
        if i % 3 != 2:
            _autograd_oracle(model, trainable, got, batch, what)


# ---------------------------------------------------------------- Task 2

@task("task_2_1_scheme_parameters")
def scheme_parameters(student):
    f = student.function("scheme_parameters")
    for channels in ((16, 32, 32, 64), (4, 8, 8, 12)):
        names = [n for n, _ in ondevice.OnDeviceCNN(channels).named_parameters()]
        for scheme, sel in (("full", None), ("last", None), ("bias", None), ("sparse", ["conv4.weight"]),
                            ("sparse", ["conv1.weight", "conv3.weight"]), ("sparse", [])):
            got = student.call("helpers.ondevice.probe_scheme", Ref("scheme_parameters"), list(channels), scheme,
                               sel)
            check_equal(_list(got, "scheme_parameters", "2.1"), _scheme(names, scheme, sel),
                        name=f"scheme_parameters(model {channels}, {scheme!r}, {sel})", task="2.1",
                        hint="in named_parameters() order")
        lite_names = [n for n, _ in ondevice.add_lite_residuals(ondevice.OnDeviceCNN(channels),
                                                                ondevice.LiteStandIn).named_parameters()]
        got = student.call("helpers.ondevice.probe_scheme", Ref("scheme_parameters"), list(channels), "lite", None,
                           True)
        check_equal(_list(got, "scheme_parameters", "2.1"), _scheme(lite_names, "lite"),
                    name=f"scheme_parameters(lite model {channels}, 'lite')", task="2.1")
    try:
        got = student.call("helpers.ondevice.probe_scheme", Ref("scheme_parameters"), [4, 8, 8, 12], "everything")
    except Exception as err:  # the kernel's error comes back as a wire error
        got = err
    check(not isinstance(got, list), "scheme_parameters(model, 'everything') should raise a ValueError.", task="2.1")


def _ref_lite(conv, lite_w, x, reduction, stride):
    out = conv(x)
    branch = F.conv2d(F.avg_pool2d(x, reduction), lite_w, stride=stride, padding=1, groups=conv_groups(lite_w, conv))
    return out + F.interpolate(branch, size=out.shape[-2:], mode="nearest")


def conv_groups(lite_w, conv):
    return conv.in_channels // lite_w.shape[1]


@task("task_2_2_lite_residual")
def lite_residual(student):
    g = torch.Generator().manual_seed(0)
    for c_in, c_out, stride, size, reduction, groups in ((4, 8, 2, 8, 2, 1), (6, 6, 1, 8, 2, 3),
                                                         (8, 16, 1, 16, 4, 2), (3, 5, 2, 12, 2, 1)):
        conv = ondevice.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        with torch.no_grad():
            for p in conv.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        x = torch.rand(2, c_in, size, size, generator=g)
        kwargs = dict(in_channels=c_in, out_channels=c_out, kernel_size=3, stride=stride, padding=1)
        state = {k: v.clone() for k, v in conv.state_dict().items()}
        rec = student.call("helpers.ondevice.probe_lite", Ref("LiteResidual"), kwargs, state, x,
                           {"reduction": reduction, "groups": groups})
        check(type(rec) is dict, "the lite residual probe failed.", task="2.2")
        what = f"LiteResidual(conv {c_in}->{c_out} stride {stride}, reduction {reduction}, groups {groups})"
        check(rec["conv_is_wrapped"], f"{what}: self.conv is not the wrapped conv.", task="2.2")
        check_equal(dict(rec["lite_params"]), {"weight": (c_out, c_in // groups, 3, 3)},
                    name=f"{what}: the parameters of self.lite", task="2.2", hint="a grouped 3x3 conv without bias")
        check_close(rec["out"], conv(x), atol=1e-5, name=f"{what}: output at initialisation", task="2.2",
                    hint="initialise the lite weight to zero")
        lite_w = torch.randn(c_out, c_in // groups, 3, 3, generator=g) * 0.3
        rec = student.call("helpers.ondevice.probe_lite", Ref("LiteResidual"), kwargs, state, x,
                           {"reduction": reduction, "groups": groups}, {"weight": lite_w})
        xr = x.clone().requires_grad_(True)
        want = _ref_lite(conv, lite_w, xr, reduction, stride)
        want.sum().backward()
        check_close(rec["out"], want.detach(), atol=1e-4, name=f"{what}: output", task="2.2",
                    hint="average-pool the input, lite conv, nearest upsampling to the output size, add")
        check_close(rec["grad_x"], xr.grad, atol=1e-4, name=f"{what}: input gradient", task="2.2")


# ---------------------------------------------------------------- Task 3

def _check_select(f, contrib, budget, what):
    got = _list(f(contrib, budget), "select_sparse", "3.1")
    check(all(type(k) is str and k in contrib for k in got), f"{what}: unknown items in {got}.", task="3.1")
    check(len(set(got)) == len(got), f"{what}: an item is picked twice: {got}.", task="3.1")
    cost = sum(contrib[k][1] for k in got)
    check(cost <= budget, f"{what}: the selection {got} costs {cost} bytes, over the budget {budget}.", task="3.1")
    gain = sum(contrib[k][0] for k in got)
    best = _best_gain(contrib, budget)
    check(gain >= best - 1e-9, f"{what}: the selection {got} gains {gain:.4f}, the best selection under the "
          f"budget gains {best:.4f}.", task="3.1", hint="a 0/1 knapsack: greedy gain per byte is not optimal")


@task("task_3_1_select_sparse")
def select_sparse(student):
    f = student.function("select_sparse")
    _check_select(f, {"a": (0.05, 100), "b": (0.04, 60), "c": (0.03, 50)}, 110, "the visible case")
    _check_select(f, {"a": (-0.01, 1), "b": (0.02, 500)}, 100, "nothing useful fits")
    _check_select(f, {"a": (0.02, 100), "b": (0.03, 100)}, 200, "exactly at the budget")
    _check_select(f, {"a": (0.1, 50), "b": (-0.2, 1), "c": (0.0, 5)}, 60, "a negative gain")
    rng = random.Random(3)
    for trial in range(8):
        contrib = {f"layer{i}.weight": (round(rng.uniform(-0.05, 0.2), 4), rng.randint(1, 400) * 1024)
                   for i in range(rng.randint(3, 11))}
        budget = rng.randint(100, 1500) * 1024
        _check_select(f, contrib, budget, f"random table {trial}")


# ---------------------------------------------------------------- Task 4

def _qmodel(seed):
    torch.manual_seed(seed)
    model = ondevice.OnDeviceCNN((4, 8, 8, 12))
    x = torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(seed))
    return ondevice.QuantizedCNN.from_float(model, x), x


@task("task_4_1_qas")
def qas(student):
    f = student.function("qas_scale")
    g = torch.Generator().manual_seed(0)
    for shape in ((2, 3), (5, 3, 3, 3), (7, 4, 1, 1)):
        gw, gb = torch.randn(shape, generator=g), torch.randn(shape[0], generator=g)
        s_w = torch.rand(shape[0], generator=g) * 0.05 + 0.001
        s_x = torch.tensor(0.02 + 0.1 * torch.rand(1, generator=g).item())
        got = _list(f(gw, gb, s_w, s_x), "qas_scale", "4.1")
        check(len(got) == 2, "qas_scale should return (grad_w, grad_b).", task="4.1")
        view = s_w.view((-1,) + (1,) * (len(shape) - 1))
        check_close(got[0], gw / view ** 2, rtol=1e-4, name=f"QAS weight gradient {shape}", task="4.1",
                    hint="divide output channel c by s_W[c] ** 2")
        check_close(got[1], gb / (s_w * s_x) ** 2, rtol=1e-4, name=f"QAS bias gradient {shape}", task="4.1",
                    hint="the bias code is b / (s_W s_x)")
    for seed in (0, 1):
        q, x = _qmodel(seed)
        y = torch.arange(len(x)) % 10
        state = {k: v.clone() for k, v in q.state_dict().items()}
        got = student.call("helpers.ondevice.probe_qas", Ref("apply_qas"), state, [4, 8, 8, 12], x, y)
        check(type(got) is dict, "the QAS probe failed.", task="4.1")
        F.cross_entropy(q(x), y).backward()
        for name, layer in ondevice.quantized_layers(q):
            view = layer.w_scale.view((-1,) + (1,) * (layer.weight.dim() - 1))
            check_close(got[f"{name}.weight"], layer.weight.grad / view ** 2, rtol=1e-4,
                        name=f"apply_qas: {name}.weight.grad", task="4.1")
            check_close(got[f"{name}.bias"], layer.bias.grad / (layer.w_scale * layer.x_scale) ** 2, rtol=1e-4,
                        name=f"apply_qas: {name}.bias.grad", task="4.1")


def _ref_ratios(model, x, y, qas=False):
    for p in model.parameters():
        p.requires_grad_(True)
        p.grad = None
    F.cross_entropy(model(x), y).backward()
    out = {}
    for name, layer in ondevice.weight_layers(model):
        grad = layer.weight.grad
        if qas:
            grad = grad / layer.w_scale.view((-1,) + (1,) * (grad.dim() - 1)) ** 2
        out[name] = (layer.weight.norm() / grad.norm()).item()
    return out


@task("task_4_2_ratios")
def ratios(student):
    f = student.function("weight_grad_ratios")
    for seed, channels in ((0, (16, 32, 32, 64)), (1, (4, 8, 8, 12))):
        torch.manual_seed(seed)
        model = ondevice.OnDeviceCNN(channels)
        g = torch.Generator().manual_seed(seed)
        x, y = torch.rand(6, 1, 16, 16, generator=g), torch.randint(0, 10, (6,), generator=g)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        got = f(ModuleSpec("helpers.ondevice.OnDeviceCNN", {"channels": list(channels)}, state), x, y)
        check(type(got) is dict, "weight_grad_ratios should return a dict.", task="4.2")
        want = _ref_ratios(model, x, y)
        check_equal(sorted(got), sorted(want), name="the layers of weight_grad_ratios", task="4.2")
        for name in want:
            check_close(float(got[name]), want[name], rtol=1e-3, name=f"||W|| / ||G|| of {name} (seed {seed})",
                        task="4.2")
    q, x = _qmodel(2)
    y = torch.arange(len(x)) % 10
    state = {k: v.clone() for k, v in q.state_dict().items()}
    got = f(ModuleSpec("helpers.ondevice.QuantizedCNN", {"channels": [4, 8, 8, 12]}, state), x, y)
    want = _ref_ratios(q, x, y)
    for name in want:
        check_close(float(got[name]), want[name], rtol=1e-3, name=f"int8 graph: ||W_q|| / ||G|| of {name}",
                    task="4.2")
