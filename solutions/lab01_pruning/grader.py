"""Lab 01's graded checks, run by the grader against the student's kernel
(``autograder.trusted``); never released to students.

Each check re-runs the notebook's visible test and its former hidden tests on
the grader's side. Inputs (weights, small ``VGGDigits`` with fixed seeds) are
built here and sent as tensors or ``ModuleSpec``s; expected values come from the
references below, ``helpers.profile`` and ``helpers.compression`` computed here.
The notebook's own results (``sparse_model``, ``scan``, ``dense_stats``...) are
read only to be checked against references computed here.

Two things cannot come back from a plain call: an instance of the student's
``FineGrainedPruner`` and the hyper-parameters (``out_channels``...) of the
modules a function returns. For those the check calls a probe that drives the
student's code in the kernel and reports plain data
(``helpers.probes.pruner_session``, ``call_with_layers``).

Speed is not graded on this machine's clock: Task 2.3 grades the MACs and
parameters ``measure`` reports (exact, against ``helpers.profile``) and its
latency method on models of known latency (``helpers.probes.sleepy_net``: a
forward pass that sleeps a set time and computes almost nothing), where the
sleep bounds the reported milliseconds from below and the ratio between a slow
and a fast model follows the sleeps with generous margins for a busy machine.
The notebook's measured speedup of the channel-pruned model is not graded;
its MACs must fall (checked against ``helpers.profile`` here).
"""
import math

import torch
from torch import nn

from autograder.trusted import ModuleSpec, ModuleState, Ref, task
from helpers import profile
from helpers.checks import CheckError, check, check_close, check_equal, check_in_range, check_shape
from helpers.compression import digits_accuracy, weight_layers
from helpers.models import VGGDigits, load_baseline

EXAMPLE = (1, 1, 16, 16)


# ---------------------------------------------------------------- references and helpers

def _ref_prune(w: torch.Tensor, s: float) -> torch.Tensor:
    """The magnitude-pruning mask (1 = kept) with round(s * numel) zeros."""
    n = round(min(max(s, 0.0), 1.0) * w.numel())
    if n == 0:
        return torch.ones_like(w)
    if n == w.numel():
        return torch.zeros_like(w)
    imp = w.abs()
    return (imp > imp.flatten().kthvalue(n).values).to(w.dtype)


def _importance(weight: torch.Tensor) -> torch.Tensor:
    return torch.stack([weight[:, i].norm() for i in range(weight.shape[1])])


def _state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _vgg(cfg, seed: int, random_bn: bool = False) -> VGGDigits:
    torch.manual_seed(seed)
    model = VGGDigits(cfg=cfg)
    if random_bn:  # non-trivial BatchNorm statistics, so a forgotten permutation shows
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_()
                    m.running_mean.normal_()
                    m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _spec(model: VGGDigits, cfg) -> ModuleSpec:
    return ModuleSpec("helpers.models.VGGDigits", {"cfg": tuple(cfg)}, _state(model))


def _probe(student, task_id: str, name: str, *args) -> dict:
    """``helpers.probes.<name>(*args)`` in the kernel: a probe that drives the student's
    code (passed as ``Ref``s) and reports plain data (a dict)."""
    record = student.call(f"helpers.probes.{name}", *args)
    check(type(record) is dict, f"the grader's probe {name} gave a {type(record).__name__}, expected its "
          "record.", task=task_id)
    return record


def _module_state(value, what: str, task_id: str) -> dict:
    check(isinstance(value, ModuleState), f"{what} is a {type(value).__name__}, expected an nn.Module.",
          task=task_id)
    return value.state


def _vgg_from_state(state: dict, what: str, task_id: str) -> VGGDigits:
    """A ``VGGDigits`` with the conv widths and pools the state dict implies,
    loaded with it (raises a check failure if it is not a VGGDigits state)."""
    convs = {}
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "backbone" and parts[2] == "weight" and getattr(value, "ndim", 0) == 4:
            convs[int(parts[1])] = int(value.shape[0])
    cls = state.get("classifier.weight")
    check(bool(convs) and isinstance(cls, torch.Tensor) and cls.ndim == 2,
          f"{what} does not look like a VGGDigits (no backbone convolutions or classifier).", task=task_id)
    cfg, idx = [], 0
    while idx <= max(convs):
        if idx in convs:
            cfg.append(convs[idx])
            idx += 3  # conv, BatchNorm, ReLU
        else:
            cfg.append("M")
            idx += 1
    side = math.isqrt(max(int(cls.shape[1]) // [c for c in cfg if c != "M"][-1], 1))
    while 16 // 2 ** cfg.count("M") > side:  # the pools after the last convolution
        cfg.append("M")
    model = VGGDigits(cfg=cfg)
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckError(f"Task {task_id}: {what} does not load into a VGGDigits with convolution widths "
                         f"{[c for c in cfg if c != 'M']}: {str(exc).splitlines()[0][:300]}") from None
    return model.eval()


_BASELINE = {}


def _baseline():
    """The pretrained baseline, its parameter count and test accuracy (computed once)."""
    if not _BASELINE:
        model = load_baseline()
        _BASELINE.update(model=model, params=profile.count_params(model), acc=digits_accuracy(model))
    return _BASELINE


def _sparsity_dict(student, task_id: str) -> dict:
    sd = student.value("sparsity_dict")
    check(type(sd) is dict, f"`sparsity_dict` is a {type(sd).__name__}, expected a dict.", task=task_id)
    names = {f"{n}.weight" for n in weight_layers(_baseline()["model"])}
    check(set(sd) <= names, f"unknown keys {sorted(map(str, set(sd) - names))} in `sparsity_dict`; "
          f"use {sorted(names)}.", task=task_id)
    for k, v in sd.items():
        check(type(v) in (int, float) or (hasattr(v, "dtype") and getattr(v, "ndim", 1) == 0),
              f"sparsity_dict[{k!r}] is a {type(v).__name__}, expected a number.", task=task_id)
    sd = {k: float(v) for k, v in sd.items()}
    check(all(0 <= s <= 1 for s in sd.values()), "every sparsity must be in [0, 1].", task=task_id)
    return sd


# ---------------------------------------------------------------- Part 1: fine-grained pruning

def _check_prune(prune, shape, s, seed):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    mask, (after, *_) = prune(w.clone(), s)
    check(isinstance(mask, torch.Tensor), f"fine_grained_prune returned a {type(mask).__name__}, "
          "expected the mask tensor.", task="1.2", hint="return the mask (and prune the tensor in place)")
    check_shape(mask, shape, name="mask", task="1.2")
    check(mask.dtype == w.dtype, f"the mask has dtype {mask.dtype}, expected {w.dtype} (same as the tensor).",
          task="1.2")
    check(bool(((mask == 0) | (mask == 1)).all()), "the mask must contain only 0 and 1.", task="1.2")
    zeros = int((mask == 0).sum())
    want = s * w.numel()
    check(abs(zeros - want) <= 1, f"with sparsity {s} on {w.numel()} entries the mask prunes {zeros}, "
          f"expected round({want:g}).", task="1.2")
    check_equal(after, w * mask, name=f"tensor {tuple(shape)} after pruning at {s}", task="1.2",
                hint="prune in place: multiply the tensor by the mask (tensor.mul_(mask))")
    if 0 < zeros < w.numel():
        kept, pruned = w.abs()[mask == 1], w.abs()[mask == 0]
        check(kept.min() >= pruned.max(), f"a pruned weight has magnitude {pruned.max():.4f}, larger than "
              f"a kept one ({kept.min():.4f}).", task="1.2",
              hint="prune the weights with the SMALLEST |w| and rank by magnitude, not by signed value")


@task("task_1_2_fine_grained_prune")
def fine_grained_prune(student):
    prune = student.function("fine_grained_prune", args_back=True)
    cases = [((8, 6), 0.5), ((4, 3, 3, 3), 0.75)]  # the visible cases (seeds 1, 2)
    for i, (shape, s) in enumerate(cases):
        _check_prune(prune, shape, s, seed=1 + i)
    for i, (shape, s) in enumerate([((16, 8, 3, 3), 0.9), ((10, 40), 0.33), ((7, 5), 0.0),
                                    ((7, 5), 1.0), ((3, 1, 3, 3), 0.2), ((64, 256), 0.97)]):
        _check_prune(prune, shape, s, seed=100 + i)
    mask, _ = prune(-torch.arange(1.0, 11.0), 0.5)  # all negative: magnitude ranking keeps -10..-6
    check_equal(mask, torch.tensor([0.0] * 5 + [1.0] * 5), name="mask of -[1..10] at 50%", task="1.2",
                hint="rank by |w|, not by the signed value")


def _check_pruner(student, cfg, sparsities, seed):
    model = _vgg(cfg, seed)
    before = _state(model)
    g = torch.Generator().manual_seed(seed + 1000)
    params = dict(model.named_parameters())
    # Two "training steps" that move every weight, pruned ones included.
    steps = [{n: torch.rand(p.shape, generator=g) + 0.5 for n, p in params.items()} for _ in range(2)]
    rec = _probe(student, "1.3", "pruner_session", Ref("FineGrainedPruner"), _spec(model, cfg), dict(sparsities),
                 steps)
    masks, pruned = rec["masks"], rec["pruned"]
    check(type(masks) is dict, f"`masks` is a {type(masks).__name__}, expected a dict.", task="1.3")
    check(set(masks) == set(sparsities), f"`masks` has keys {sorted(map(str, masks))}, "
          f"expected {sorted(sparsities)}.", task="1.3")
    for name, s in sparsities.items():
        check(isinstance(masks[name], torch.Tensor), f"masks[{name!r}] is a {type(masks[name]).__name__}, "
              "expected a tensor.", task="1.3")
        check_shape(masks[name], params[name].shape, name=f"masks[{name!r}]", task="1.3")
        zeros = float((pruned[name] == 0).float().mean())
        check_in_range(zeros, s - 0.02, s + 0.02, name=f"sparsity of {name}", task="1.3")
    for name in params:
        if name not in sparsities:
            check_equal(pruned[name], before[name], name=f"{name} (not in sparsity_dict)", task="1.3")
    prev = pruned
    for k, (step, applied) in enumerate(zip(steps, rec["applied"])):
        for name in params:
            moved = prev[name] + step[name]
            if name in sparsities:
                check_equal(applied[name] == 0, masks[name] == 0, name=f"zeros of {name} after apply "
                            f"(training step {k + 1})", task="1.3",
                            hint="apply() must re-use the stored masks, not prune again")
                check_close(applied[name], moved * (masks[name] != 0), name=f"{name} after apply", task="1.3",
                            hint="apply() multiplies the parameter by its stored mask")
            else:
                check_close(applied[name], moved, name=f"{name} (not in sparsity_dict) after apply", task="1.3",
                            hint="leave the parameters that are not in sparsity_dict alone")
        prev = applied


@task("task_1_3_pruner")
def pruner(student):
    _check_pruner(student, (8, "M", 16, "M"), {"backbone.0.weight": 0.5, "classifier.weight": 0.8}, seed=0)
    _check_pruner(student, (4, 6, "M", 8, "M", 8, "M"), {"backbone.3.weight": 0.7, "backbone.7.weight": 0.25,
                                                         "backbone.11.weight": 0.9}, seed=7)


def _check_scan(student, cfg, sparsities, seed):
    model = _vgg(cfg, seed)
    before = _state(model)
    result, (after, *_) = student.call("sensitivity_scan", _spec(model, cfg), list(sparsities),
                                       ModuleSpec("helpers.probes.ZeroFraction"), args_back=True)
    check(type(result) is dict, f"sensitivity_scan returned a {type(result).__name__}, expected a dict.",
          task="1.4")
    layers = weight_layers(model)
    want_keys = [f"{n}.weight" for n in layers]
    check(list(result) == want_keys, f"the scan has keys {list(result)}, expected {want_keys}.", task="1.4")
    total = sum(m.weight.numel() for m in layers.values())
    for name, m in layers.items():
        want = [round(s * m.weight.numel()) / total for s in sparsities]
        got = result[f"{name}.weight"]
        check(type(got) in (list, tuple) or isinstance(got, torch.Tensor),
              f"scan[{name + '.weight'!r}] is a {type(got).__name__}, expected a list.", task="1.4")
        check_close(got, want, atol=2 / total, name=f"scan of {name}.weight with sparsities {list(sparsities)}",
                    task="1.4", hint="prune one layer at a time and restore it before pruning the next")
    state = _module_state(after, "the model after the scan", "1.4")
    for n, t in before.items():
        check_equal(state.get(n), t, name=f"{n} after the scan", task="1.4",
                    hint="restore every layer's original weights after scanning it")


@task("task_1_4_sensitivity_scan")
def sensitivity_scan(student):
    _check_scan(student, (8, "M", 16, "M"), [0.5, 0.9], seed=0)
    _check_scan(student, (4, 6, "M", 8, "M"), [0.1, 0.35, 0.6, 0.99], seed=3)
    scan = student.value("scan")
    names = [f"{n}.weight" for n in weight_layers(_baseline()["model"])]
    check(type(scan) is dict and sorted(map(str, scan)) == sorted(names)
          and all(type(v) in (list, tuple) and len(v) == 7 for v in scan.values()),
          "`scan` of the baseline should have 7 layers with one accuracy per sparsity.", task="1.4")
    for name, accs in scan.items():
        for a in accs:
            check_in_range(a, 0, 100, name=f"a validation accuracy in scan[{name!r}]", task="1.4")


@task("task_1_5_choose_sparsities")
def choose_sparsities(student):
    sd = _sparsity_dict(student, "1.5")
    model = load_baseline()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, s in sd.items():
            params[name].mul_(_ref_prune(params[name], s))
    ratio = profile.count_params(model, nonzero_only=True) / _baseline()["params"]
    check_in_range(ratio, 0, 0.25, name="non-zero parameters / dense parameters", task="1.5",
                   hint="raise the sparsity of the largest layers")


@task("task_1_6_finetune")
def finetune(student):
    sd = _sparsity_dict(student, "1.6")
    model = _vgg_from_state(_module_state(student.value("sparse_model"), "`sparse_model`", "1.6"),
                            "`sparse_model`", "1.6")
    base = _baseline()
    base_params = dict(base["model"].named_parameters())
    params = {n: p.detach() for n, p in model.named_parameters()}
    check(set(params) == set(base_params) and all(params[n].shape == base_params[n].shape for n in params),
          "`sparse_model` does not have the baseline's layers.", task="1.6")
    # The masks the student's own pruner gave the baseline: their fine_grained_prune on its weights.
    prune = student.function("fine_grained_prune")
    for name, s in sd.items():
        mask = prune(base_params[name].detach().clone(), s)
        check(isinstance(mask, torch.Tensor) and tuple(mask.shape) == tuple(params[name].shape),
              f"fine_grained_prune did not return a mask of {name}'s shape.", task="1.6")
        check(abs(int((mask == 0).sum()) - s * mask.numel()) <= 1,
              f"fine_grained_prune's mask of {name} does not prune {s:g} of it.", task="1.6")
        check(bool((params[name][mask == 0] == 0).all()),
              f"{name} has non-zero weights where its mask is 0 after fine-tuning.", task="1.6",
              hint="pass after_step=pruner.apply to train()")
    check_in_range(profile.count_params(model, nonzero_only=True) / base["params"], 0, 0.25,
                   name="size ratio after fine-tuning", task="1.6")
    acc = digits_accuracy(model)
    check_close(student.value("pruned_acc"), acc, atol=100 / 360 + 1e-6, rtol=0, name="pruned_acc", task="1.6",
                hint="pruned_acc = digits_accuracy(sparse_model), after fine-tuning")
    moved = any(not torch.equal(params[n][params[n] != 0], base_params[n].detach()[params[n] != 0])
                for n in params)
    check(moved, "sparse_model's weights are those right after pruning: it was not fine-tuned.", task="1.6")
    check_in_range(base["acc"] - acc, None, 1.0, name="accuracy drop (points)", task="1.6",
                   hint="fine-tune longer or lower the sparsity of sensitive layers")


# ---------------------------------------------------------------- Part 2: channel pruning

def _check_importance(f, shape, seed):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    imp = f(w)
    check_shape(imp, (shape[1],), name=f"importance of a {tuple(shape)} weight", task="2.1",
                hint="one value per INPUT channel (dim 1)")
    check_close(imp, _importance(w), rtol=1e-4, name=f"importance of a {tuple(shape)} weight", task="2.1",
                hint="the L2 norm of weight[:, i]")


def _convs_bns(cfg):
    """Backbone indices of the convolutions and their BatchNorms for ``cfg``."""
    convs, idx = [], 0
    for v in cfg:
        if v == "M":
            idx += 1
        else:
            convs.append(idx)
            idx += 3
    return convs


def _check_sorting(sort, cfg, seed):
    model = _vgg(cfg, seed, random_bn=True)
    before = _state(model)
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want = model(x)
    result, (after, *_) = sort(_spec(model, cfg))
    after_state = _module_state(after, "the input model", "2.1")
    check(all(torch.equal(after_state.get(k), v) for k, v in before.items()),
          "apply_channel_sorting changed its input model; sort a copy (copy.deepcopy).", task="2.1")
    state = _module_state(result, "apply_channel_sorting's result", "2.1")
    sorted_model = _vgg_from_state(state, "apply_channel_sorting's result", "2.1")
    with torch.no_grad():
        got = sorted_model(x)
    check_close(got, want, rtol=1e-4, atol=1e-4, name=f"output of the sorted model (cfg {cfg})", task="2.1",
                hint="permute the conv's output channels, its BatchNorm (weight, bias, running stats) "
                     "and the next conv's input channels with the same order")
    for i, idx in enumerate(_convs_bns(cfg)[1:]):
        imp = _importance(state[f"backbone.{idx}.weight"])
        check(bool((imp[:-1] >= imp[1:] - 1e-6).all()),
              f"the output channels of conv {i} are not sorted by decreasing importance.", task="2.1")


@task("task_2_1_channel_sorting")
def channel_sorting(student):
    f = student.function("get_input_channel_importance")
    for shape, seed in [((16, 8, 3, 3), 0), ((5, 12, 1, 1), 11), ((32, 3, 5, 5), 12)]:
        _check_importance(f, shape, seed)
    sort = student.function("apply_channel_sorting", args_back=True)
    for cfg, seed in [((8, "M", 16, "M"), 0), ((6, 10, "M", 12, 12, "M", 7, "M"), 5)]:
        _check_sorting(sort, cfg, seed)


def _check_prune_channels(student, cfg, ratio, seed):
    model = _vgg(cfg, seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    before = _state(model)
    rec = _probe(student, "2.2", "call_with_layers", Ref("channel_prune"), [_spec(model, cfg), ratio])
    after = _module_state(rec["args"][0], "the input model", "2.2")
    check(all(torch.equal(after.get(k), v) for k, v in before.items()),
          "channel_prune changed its input model; prune a copy (copy.deepcopy).", task="2.2")
    state = _module_state(rec["result"], "channel_prune's result", "2.2")
    layers = rec["layers"] or {}
    widths = [v for v in cfg if v != "M"]
    keep = [int(round((1 - ratio) * c)) for c in widths[:-1]] + [widths[-1]]
    convs = _convs_bns(cfg)
    got = [tuple(state[f"backbone.{i}.weight"].shape)[0] if f"backbone.{i}.weight" in state else None
           for i in convs]
    check(got == keep, f"with prune_ratio={ratio} the convs have {got} output channels, expected {keep}.",
          task="2.2")
    cin = 1
    for i, k in zip(convs, keep):
        check_equal(state[f"backbone.{i}.weight"], before[f"backbone.{i}.weight"][:k, :cin],
                    name=f"pruned conv weight backbone.{i}.weight", task="2.2",
                    hint="keep the FIRST channels (sorting put the important ones first)")
        for t in ("weight", "bias", "running_mean", "running_var"):
            key = f"backbone.{i + 1}.{t}"
            check_equal(state.get(key), before[key][:k], name=f"pruned BatchNorm {t} ({key})", task="2.2")
        conv, bn = layers.get(f"backbone.{i}", {}), layers.get(f"backbone.{i + 1}", {})
        check(conv.get("out_channels") == k and conv.get("in_channels") == cin and bn.get("num_features") == k,
              "update out_channels / in_channels / num_features of the sliced modules.", task="2.2")
        cin = k
    pruned = _vgg_from_state(state, "channel_prune's result", "2.2")
    with torch.no_grad():
        out = pruned(torch.randn(2, 1, 16, 16))
    check(tuple(out.shape) == (2, 10), f"the pruned model outputs shape {tuple(out.shape)}, expected (2, 10).",
          task="2.2")


@task("task_2_2_channel_prune")
def channel_prune(student):
    _check_prune_channels(student, (8, "M", 16, "M", 16, "M"), 0.5, seed=0)
    _check_prune_channels(student, (6, 10, "M", 12, 12, "M", 7, "M"), 0.3, seed=4)
    _check_prune_channels(student, (6, 10, "M", 7, "M"), 0.0, seed=5)


def _check_stats(stats, model, what):
    check(type(stats) is dict and {"macs", "params", "latency_ms"} <= set(stats),
          f"{what} has keys {sorted(map(str, stats)) if type(stats) is dict else type(stats).__name__}, "
          "expected macs, params, latency_ms.", task="2.3")
    for key in ("macs", "params", "latency_ms"):
        v = stats[key]
        check(type(v) in (int, float) or (hasattr(v, "dtype") and getattr(v, "ndim", 1) == 0),
              f"{what}[{key!r}] is a {type(v).__name__}, expected a number.", task="2.3")
    check_equal(int(stats["macs"]), profile.count_macs(model, torch.zeros(*EXAMPLE)), name=f"{what}['macs']",
                task="2.3", hint="count MACs for ONE 1x1x16x16 image")
    check_equal(int(stats["params"]), profile.count_params(model), name=f"{what}['params']", task="2.3")
    check(math.isfinite(float(stats["latency_ms"])) and float(stats["latency_ms"]) > 0,
          f"{what}['latency_ms'] is {stats['latency_ms']!r}, expected a positive time.", task="2.3")


@task("task_2_3_measure")
def measure(student):
    f = student.function("measure", args_back=True)
    cfg = (2, "M", 4, "M")
    small = _vgg(cfg, 0)
    stats, _ = f(_spec(small, cfg))
    _check_stats(stats, small, f"measure(VGGDigits(cfg={cfg}))")
    # Latency on models of known latency: a forward pass that sleeps 10 ms or 40 ms.
    # The sleep is a hard lower bound; the upper bounds and the ratio leave room for a
    # busy machine (they catch seconds or microseconds, and a figure that does not
    # follow the model's latency).
    net = VGGDigits(cfg=[4, "M"])
    latencies = {}
    for sleep in (0.01, 0.04):
        ms = 1e3 * sleep
        stats, (record,) = f(ModuleSpec("helpers.probes.sleepy_net", {"schedule": [sleep], "cfg": (4, "M")}))
        _check_stats(stats, net, f"measure(a model whose forward pass takes {ms:g} ms)")
        batches = record.get("batches", []) if type(record) is dict else []
        check(not batches or 256 in batches, f"measure() ran the model on batches of {sorted(set(batches))}, "
              "expected the latency of a batch of 256 images.", task="2.3")
        latencies[sleep] = float(stats["latency_ms"])
        check_in_range(latencies[sleep], 0.95 * ms, 20 * ms + 200,
                       name=f"latency_ms of a model whose forward pass takes {ms:g} ms", task="2.3",
                       hint="report the time of one forward pass in milliseconds")
    check_in_range(latencies[0.04] / latencies[0.01], 1.2, 5.5,
                   name="latency ratio of a 40 ms model to a 10 ms model", task="2.3",
                   hint="time the model you are given (one forward pass of a batch of 256 images)")
    # The notebook's figures: MACs and parameters of the dense and the channel-pruned model.
    dense = _vgg_from_state(_module_state(student.value("dense"), "`dense`", "2.3"), "`dense`", "2.3")
    pruned = _vgg_from_state(_module_state(student.value("channel_pruned"), "`channel_pruned`", "2.3"),
                             "`channel_pruned`", "2.3")
    dense_stats, pruned_stats = student.value("dense_stats"), student.value("pruned_stats")
    _check_stats(dense_stats, dense, "dense_stats")
    _check_stats(pruned_stats, pruned, "pruned_stats")
    check(pruned_stats["macs"] < dense_stats["macs"], "the channel-pruned model should need fewer MACs.",
          task="2.3")
