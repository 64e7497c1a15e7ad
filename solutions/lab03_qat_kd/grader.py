"""Lab 03's graded checks, run by the grader against the student's kernel
(``autograder.trusted``); never released to students.

Each check re-runs the notebook's visible test and its former hidden tests on
the grader's side, with inputs and reference values computed here.

Gradients do not cross the wire, so the kernel runs the backward passes on
probes and sends the gradients back as plain tensors:
``helpers.probes.grad_leaf`` is a leaf tensor for ``fake_quantize`` and the
distillation losses (the result's backward runs when it is sent back, the
leaf's gradient comes back with ``args_back``), and
``helpers.probes.vgg_probe`` is a ``VGGDigits`` handed to ``prepare_qat``
whose copy reports its effective weights, one forward/backward pass and its
test-set predictions.

The trained models (Tasks 1.3, 2.2, 3.1) are checked for what is
deterministic: they have the required structure and bit width, they were
trained, and the accuracies the notebook reports are those of the models (a
model rebuilt from its float weights here, or by the student's own
``prepare_qat`` at the task's bit width). How much accuracy a short training
reaches (QAT within a point of fp32, distillation beating the student alone,
QAT + KD beating QAT) is not graded here: it varies with the seed by more
than the margins (the notebook's visible tests still print it). Task 3.1's
combined QAT + KD training step is graded on a fixed small model and batch.
"""
import numbers
from functools import lru_cache

import torch
from torch import nn
from torch.nn.utils import parametrize

from autograder.trusted import ModuleSpec, ModuleState, Ref, task
from helpers.checks import check, check_close
from helpers.compression import IMAGE_SIZE, digits_accuracy
from helpers.data import load_digits
from helpers.models import VGG_DIGITS_CFG, VGGDigits, load_baseline

BITS = (8, 4, 3, 2)
STUDENT_CFG = (8, "M", 16, "M", 16, "M")
KD_T = 4.0
PARAM_SUFFIX = ".parametrizations.weight.original"


# ---------------------------------------------------------------- references

def _ref_fake_quantize(x, scale, zero_point, bits):
    """(value, STE mask) of the lab's fake quantizer."""
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    q = torch.round(x / scale) + zero_point
    return (q.clamp(qmin, qmax) - zero_point) * scale, ((q >= qmin) & (q <= qmax)).to(x.dtype)


class _RefWeightFakeQuant(nn.Module):
    """Symmetric per-output-channel fake quantization with an STE (Task 1.2)."""

    def __init__(self, bits):
        super().__init__()
        self.bits = bits

    def forward(self, w):
        qmax = 2 ** (self.bits - 1) - 1
        s = w.detach().abs().reshape(w.shape[0], -1).amax(1).clamp(min=1e-8) / qmax
        s = s.view(-1, *[1] * (w.dim() - 1))
        return w + (torch.round(w / s).clamp(-qmax - 1, qmax) * s - w).detach()


def _ref_qat(cfg, state, bits):
    """``VGGDigits(cfg)`` with ``state`` and reference fake-quantized weights."""
    model = VGGDigits(cfg=cfg)
    model.load_state_dict(state)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            parametrize.register_parametrization(m, "weight", _RefWeightFakeQuant(bits))
    return model


def _source_grads(model):
    return {n: (m.parametrizations.weight.original.grad if parametrize.is_parametrized(m, "weight")
                else m.weight.grad)
            for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def _ref_kd(student_logits, teacher_logits, labels, T, alpha):
    p_t = torch.softmax(teacher_logits / T, dim=1)
    kl = (p_t * (torch.log(p_t) - torch.log_softmax(student_logits / T, dim=1))).sum(dim=1).mean()
    ce = -torch.log_softmax(student_logits, dim=1)[torch.arange(len(labels)), labels].mean()
    return alpha * T * T * kl + (1 - alpha) * ce


@lru_cache(maxsize=1)
def _teacher_state():
    return {k: v.clone() for k, v in load_baseline().state_dict().items()}


def _teacher():
    model = VGGDigits()
    model.load_state_dict(_teacher_state())
    return model.eval()


@lru_cache(maxsize=1)
def _test_split():
    return load_digits("test", size=IMAGE_SIZE)


def _train_images(n, offset=0):
    x, y = load_digits("train", size=IMAGE_SIZE)
    return x[offset:offset + n].clone(), y[offset:offset + n].clone()


# ---------------------------------------------------------------- reading models back

def _levels(w):
    return max(len(torch.unique(w[c])) for c in range(w.shape[0]))


def _float_state(state, cfg, name, task_id):
    """The model's state dict with float weights under ``.weight`` keys, and
    whether its weights are parametrized (a ``prepare_qat`` model)."""
    check(type(state) is ModuleState, f"`{name}` is a {type(state).__name__}, expected a model.", task=task_id)
    out, parametrized = {}, []
    for key, value in state.state.items():
        if key.endswith(PARAM_SUFFIX):
            key = key[:-len(PARAM_SUFFIX)] + ".weight"
            parametrized.append(key)
        out[key] = value
    want = VGGDigits(cfg=cfg).state_dict()
    check(sorted(out) == sorted(want) and all(tuple(out[k].shape) == tuple(v.shape) for k, v in want.items()),
          f"`{name}` is not a VGGDigits(cfg={cfg}) (its state dict has other entries or shapes).", task=task_id)
    return out, parametrized


def _ptq_acc(student, name, state, cfg, bits, task_id):
    """Test accuracy of ``prepare_qat(model, bits)`` (the student's), evaluated
    without training, ``model`` a ``VGGDigits(cfg)`` with ``state``."""
    x, y = _test_split()
    got = student.function("prepare_qat")(ModuleSpec("helpers.probes.vgg_probe", {"cfg": list(cfg), "eval_inputs": x},
                                                     state), bits)
    check(type(got) is dict and "predictions" in got,
          f"prepare_qat did not return a copy of the model it was given (rebuilding {name} at {bits} bits).",
          task=task_id, hint="return copy.deepcopy(model) with the weights parametrized")
    preds = got["predictions"]
    check(isinstance(preds, torch.Tensor) and preds.shape == y.shape, f"{name}: no predictions came back.",
          task=task_id)
    return 100.0 * (preds == y).float().mean().item()


def _view(student, name, key, task_id):
    """``digits_accuracy`` of the notebook's model ``name`` (``name[key]``) run in the
    kernel through a ``helpers.probes.model_view``: the test accuracy of what it
    predicted (computed here), its effective weights and its state."""
    _, y = _test_split()
    label = name if key is None else f"{name}[{key}]"
    _, args = student.call("digits_accuracy", ModuleSpec("helpers.probes.model_view", {"model": Ref(name), "key": key}),
                           args_back=True)
    got = args[0] if type(args) is list and len(args) == 1 else None
    check(type(got) is dict and isinstance(got.get("predictions"), torch.Tensor)
          and tuple(got["predictions"].shape) == tuple(y.shape),
          f"the grader could not evaluate {label} on the test split (is `digits_accuracy` from the set-up cell "
          "still defined?)", task=task_id)
    return 100.0 * (got["predictions"] == y).float().mean().item(), got


def _check_reported_acc(reported, actual, name, task_id, hint=None):
    check(isinstance(reported, numbers.Real) and not isinstance(reported, bool),
          f"`{name}` is a {type(reported).__name__}, expected a number (the test accuracy in %).", task=task_id)
    check_close(reported, actual, atol=100.0 / len(_test_split()[1]) + 1e-6, rtol=0,
                name=f"{name} (the test accuracy of the model, in %)", task=task_id, hint=hint)


def _check_trained(float_state, before, cfg, name, reference, task_id):
    names = [n for n, _ in VGGDigits(cfg=cfg).named_parameters()]
    same = [n for n in names if torch.equal(float_state[n], before[n])]
    if same:
        check(False, f"`{name}` was not trained: its {same[0]} is still that of {reference}.", task=task_id)


# ---------------------------------------------------------------- Task 1.1

def _fq_case(shape, scale, zero_point, bits, seed, spread=3.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * spread
    return x, scale, zero_point, bits, torch.randn(*shape, generator=g)


@task("task_1_1_fake_quantize")
def fake_quantize(student):
    fq = student.function("fake_quantize", args_back=True)
    per_row = torch.rand(6, 1, generator=torch.Generator().manual_seed(9)) + 0.05
    per_channel = torch.rand(3, 1, 1, 1, generator=torch.Generator().manual_seed(10)) * 0.05 + 0.005
    cases = [_fq_case((50,), 0.5, 0, 4, seed=0),                  # the visible case
             _fq_case((6, 40), per_row, 3, 3, seed=1),
             _fq_case((4, 3, 5, 5), 0.1, -2, 2, seed=2),
             _fq_case((200,), 0.02, 0, 8, seed=3),
             _fq_case((3, 8, 2, 2), per_channel, -5, 8, seed=4, spread=2.0),
             _fq_case((30,), torch.tensor(0.25), 1, 5, seed=5)]
    for x, scale, zp, bits, weights in cases:
        label = f"fake_quantize(x of shape {tuple(x.shape)}, {bits} bits, zero point {zp})"
        out, (leaf, *_) = fq(ModuleSpec("helpers.probes.grad_leaf", {"value": x, "cotangent": weights}),
                             scale, zp, bits)
        want, inside = _ref_fake_quantize(x, scale, zp, bits)
        if isinstance(out, torch.Tensor):
            check(False, f"{label}: the output carries no gradient from x: use a straight-through estimator.",
                  task="1.1")
        check(type(out) is dict and "value" in out, f"{label} returned a {type(out).__name__}, expected a tensor.",
              task="1.1")
        check_close(out["value"], want, rtol=1e-6, atol=1e-6, name=f"{label} output", task="1.1",
                    hint="scale * (clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point)")
        check(out["requires_grad"], f"{label}: the output carries no gradient: use a straight-through estimator.",
              task="1.1")
        grad = leaf["grad"] if type(leaf) is dict else None
        check(grad is not None, f"{label}: no gradient reaches x.", task="1.1",
              hint="calling torch.round alone gives no useful gradient: use the detach trick or an autograd.Function")
        check_close(grad, weights * inside, atol=1e-6, name=f"gradient of {label} w.r.t. x", task="1.1",
                    hint="the STE passes the gradient where the value is inside [qmin, qmax] and blocks it where "
                         "clamped")


# ---------------------------------------------------------------- Task 1.2

@task("task_1_2_prepare_qat")
def prepare_qat(student):
    prep = student.function("prepare_qat", args_back=True)
    cases = [((4, "M", 8, "M"), 4, 0, False),                     # the visible case
             ((6, 6, "M", 5, "M", 8, "M"), 2, 1, False),
             ((3, "M", 4, "M"), 8, 2, False),
             ((5, "M", 6, "M", 4, "M"), 3, 3, True)]               # a zero output channel, trained BN statistics
    for cfg, bits, seed, hard in cases:
        label = f"prepare_qat(VGGDigits(cfg={cfg}), {bits})"
        torch.manual_seed(seed)
        model = VGGDigits(cfg=cfg).eval()
        if hard:
            with torch.no_grad():
                model.backbone[0].weight[1].zero_()
                for m in model.modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.running_mean.uniform_(-0.5, 0.5)
                        m.running_var.uniform_(0.5, 2.0)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        g = torch.Generator().manual_seed(100 + seed)
        x, cot = torch.randn(4, 1, 16, 16, generator=g), torch.randn(4, 10, generator=g)
        got, (given, _) = prep(ModuleSpec("helpers.probes.vgg_probe", {"cfg": list(cfg), "inputs": x, "cotangent": cot},
                                          state), bits)
        check(type(given) is dict and not any(given["parametrized"].values())
              and all(isinstance(given["state"].get(k), torch.Tensor) and torch.equal(given["state"][k], v)
                      for k, v in state.items()),
              f"{label} changed its input model; work on a copy.", task="1.2", hint="copy.deepcopy(model)")
        check(type(got) is dict and "weights" in got,
              f"{label} returned a {getattr(got, 'class_name', type(got).__name__)}, not a copy of the model it was "
              "given.", task="1.2", hint="return copy.deepcopy(model) with the weights parametrized")
        ref = _ref_qat(cfg, state, bits).eval()
        out = ref(x)
        (out * cot).sum().backward()
        ref_grads = _source_grads(ref)
        for name, m in ref.named_modules():
            if not isinstance(m, (nn.Conv2d, nn.Linear)):
                continue
            check(got["parametrized"].get(name), f"{label}: {name}.weight is not parametrized.", task="1.2",
                  hint="parametrize.register_parametrization(layer, 'weight', WeightFakeQuant(bits)) for every "
                       "Conv2d and Linear")
            w = got["weights"][name]
            check(_levels(w) <= 2 ** bits - 1, f"{label}: {name} has {_levels(w)} distinct values in a channel, more "
                  f"than {2 ** bits - 1} for {bits} bits: is the weight fake-quantized?", task="1.2")
            check_close(w, m.weight.detach(), rtol=1e-5, atol=1e-6, name=f"{label}: fake-quantized {name}.weight",
                        task="1.2", hint="symmetric per-output-channel scale max|w_c| / (2**(bits-1) - 1), zero point "
                                         "0, and a tiny floor so a zero channel does not divide by zero")
        check_close(got["outputs"], out.detach(), rtol=1e-4, atol=1e-5, name=f"{label}: output", task="1.2")
        for name, want in ref_grads.items():
            grad = got["grads"][name]
            check(grad is not None and grad.abs().sum() > 0, f"{label}: no gradient reaches the float weights of "
                  f"{name}.", task="1.2", hint="the straight-through estimator of Task 1.1 must let gradients through")
            check_close(grad, want, rtol=1e-4, atol=1e-5, name=f"{label}: gradient of {name}'s float weights",
                        task="1.2")


# ---------------------------------------------------------------- Task 1.3

@task("task_1_3_ptq_vs_qat")
def ptq_vs_qat(student):
    ptq_acc, qat_acc = student.value("ptq_acc"), student.value("qat_acc")
    qat_models = student.value("qat_models")
    for name, d in (("ptq_acc", ptq_acc), ("qat_acc", qat_acc), ("qat_models", qat_models)):
        check(type(d) is dict and sorted(d) == sorted(BITS),
              f"`{name}` needs one entry per bit width in {list(BITS)}.", task="1.3")
    teacher = _teacher_state()
    for bits in BITS:
        acc = _ptq_acc(student, "the teacher", teacher, VGG_DIGITS_CFG, bits, "1.3")
        _check_reported_acc(ptq_acc[bits], acc, f"ptq_acc[{bits}]", "1.3",
                            hint="PTQ is prepare_qat(teacher, bits) evaluated without training")
    for bits in BITS:
        name = f"qat_models[{bits}]"
        acc, got = _view(student, "qat_models", bits, "1.3")
        for layer, w in got["weights"].items():
            check(_levels(w) <= 2 ** bits - 1, f"{name} is not quantized to {bits} bits ({layer} has {_levels(w)} "
                  "distinct values in a channel).", task="1.3", hint="train prepare_qat(teacher, bits)")
        state, _ = _float_state(ModuleState("", got["state"]), VGG_DIGITS_CFG, name, "1.3")
        _check_trained(state, teacher, VGG_DIGITS_CFG, name, "the teacher", "1.3")
        _check_reported_acc(qat_acc[bits], acc, f"qat_acc[{bits}]", "1.3",
                            hint="qat_acc[bits] is the test accuracy of qat_models[bits]")


# ---------------------------------------------------------------- Task 2.1

def _kd_case(n, c, seed):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(n, c, generator=g) * 3, torch.randn(n, c, generator=g) * 3
    return s, t, torch.randint(0, c, (n,), generator=g)


@task("task_2_1_distillation_loss")
def distillation_loss(student):
    kd = student.function("distillation_loss", args_back=True)
    cases = [(8, 10, 4.0, 0.9, 0), (32, 10, 1.0, 0.5, 1), (5, 7, 8.0, 1.0, 2), (64, 3, 2.5, 0.0, 3),
             (16, 10, None, None, 4)]                              # the defaults, T=4 and alpha=0.9
    for n, c, T, alpha, seed in cases:
        s, t, y = _kd_case(n, c, seed)
        kwargs = {} if T is None else {"T": T, "alpha": alpha}
        label = f"distillation loss (T={T}, alpha={alpha})" if T is not None else "distillation loss (default T, alpha)"
        got, (s_back, t_back, *_) = kd(ModuleSpec("helpers.probes.grad_leaf", {"value": s}),
                                       ModuleSpec("helpers.probes.grad_leaf", {"value": t}), y, **kwargs)
        s_ref = s.clone().requires_grad_(True)
        want = _ref_kd(s_ref, t, y, 4.0 if T is None else T, 0.9 if alpha is None else alpha)
        want.backward()
        check(type(got) is dict and "value" in got,
              f"{label}: returned a {type(got).__name__}, expected a scalar tensor computed from the logits.",
              task="2.1", hint="a loss that does not depend on student_logits cannot train the student")
        check(got["value"].dim() == 0, f"{label}: the loss has shape {tuple(got['value'].shape)}, expected a scalar.",
              task="2.1", hint="reduction='batchmean' for the KL term, the mean for the cross-entropy")
        check_close(got["value"], want.detach(), rtol=1e-4, atol=1e-6, name=label, task="2.1",
                    hint="KL(teacher || student) at temperature T, times T**2, batch-averaged, plus (1 - alpha) * CE; "
                         "note F.kl_div's argument order")
        t_grad = t_back["grad"] if type(t_back) is dict else None
        check(t_grad is None or t_grad.abs().max() == 0, f"{label}: gradients flow into the teacher's logits; "
              "detach them.", task="2.1")
        s_grad = s_back["grad"] if type(s_back) is dict else None
        check(s_grad is not None and s_grad.abs().sum() > 0, f"{label}: no gradient reaches the student's logits.",
              task="2.1")
        check_close(s_grad, s_ref.grad, rtol=1e-4, atol=1e-6, name=f"{label}: gradient w.r.t. the student's logits",
                    task="2.1")


# ---------------------------------------------------------------- Task 2.2

def _kd_reference(outputs, x):
    with torch.no_grad():
        t = _teacher()(x)
    s = outputs.clone().requires_grad_(True)
    loss = _ref_kd(s, t, torch.zeros(len(x), dtype=torch.long), KD_T, 1.0)
    loss.backward()
    return loss.detach(), s.grad


@task("task_2_2_train_students")
def train_students(student):
    init = student.value("student_init")
    init_state, _ = _float_state(init, STUDENT_CFG, "student_init", "2.2")
    for name, acc_name in (("student_kd", "kd_acc"), ("student_alone", "alone_acc")):
        state, parametrized = _float_state(student.value(name), STUDENT_CFG, name, "2.2")
        check(not parametrized, f"`{name}` has fake-quantized weights: Task 2.2 trains fp32 students.", task="2.2")
        _check_trained(state, init_state, STUDENT_CFG, name, "student_init", "2.2")
        model = VGGDigits(cfg=STUDENT_CFG)
        model.load_state_dict(state)
        _check_reported_acc(student.value(acc_name), digits_accuracy(model), acc_name, "2.2")
    # kd_loss_fn: the soft term against the teacher only, whatever the transfer set's labels say
    kd_loss_fn = student.function("kd_loss_fn", args_back=True)
    x, _ = _train_images(8)
    outputs = torch.randn(8, 10, generator=torch.Generator().manual_seed(5)) * 2
    want, want_grad = _kd_reference(outputs, x)
    for labels in (torch.zeros(8, dtype=torch.long), torch.arange(8) % 10, torch.full((8,), 7)):
        got, (back, *_) = kd_loss_fn(ModuleSpec("helpers.probes.grad_leaf", {"value": outputs}), labels, x)
        check(type(got) is dict and "value" in got,
              f"kd_loss_fn returned a {type(got).__name__}, expected a scalar tensor computed from the outputs.",
              task="2.2")
        check_close(got["value"], want, rtol=1e-4, atol=1e-6, name="kd_loss_fn on a transfer batch", task="2.2",
                    hint="distill from teacher(inputs) (eval mode) with T=4 and alpha=1.0: the transfer images are "
                         "unlabelled")
        grad = back["grad"] if type(back) is dict else None
        check(grad is not None, "kd_loss_fn: no gradient reaches the student's outputs.", task="2.2")
        check_close(grad, want_grad, rtol=1e-4, atol=1e-7, name="gradient of kd_loss_fn w.r.t. the outputs",
                    task="2.2")


# ---------------------------------------------------------------- Task 3.1

@task("task_3_1_qat_kd")
def qat_kd(student):
    kd_state, _ = _float_state(student.value("student_kd"), STUDENT_CFG, "student_kd", "3.1")
    acc = _ptq_acc(student, "student_kd", kd_state, STUDENT_CFG, 2, "3.1")
    _check_reported_acc(student.value("student_ptq_acc"), acc, "student_ptq_acc", "3.1")
    for name, acc_name in (("student_qat", "student_qat_acc"), ("student_qat_kd", "student_qat_kd_acc")):
        acc, got = _view(student, name, None, "3.1")
        for layer, w in got["weights"].items():
            check(_levels(w) <= 3, f"{name} is not a 2-bit model ({layer} has {_levels(w)} distinct values in a "
                  "channel, more than 3).", task="3.1", hint="start from prepare_qat(student_kd, 2)")
        state, _ = _float_state(ModuleState("", got["state"]), STUDENT_CFG, name, "3.1")
        _check_trained(state, kd_state, STUDENT_CFG, name, "student_kd", "3.1")
        _check_reported_acc(student.value(acc_name), acc, acc_name, "3.1")
    # One QAT + KD training step on a fixed model and batch: 2-bit fake-quantized weights, the teacher's soft targets.
    torch.manual_seed(31)
    model = VGGDigits(cfg=STUDENT_CFG)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, _ = _train_images(16, offset=100)
    labels = torch.zeros(16, dtype=torch.long)
    got = student.function("prepare_qat")(
        ModuleSpec("helpers.probes.vgg_probe", {"cfg": list(STUDENT_CFG), "inputs": x, "labels": labels,
                                                "loss_fn": Ref("kd_loss_fn"), "train": True}, state), 2)
    check(type(got) is dict and "grads" in got, "prepare_qat did not return a copy of the model it was given.",
          task="3.1")
    ref = _ref_qat(STUDENT_CFG, state, 2).train()
    with torch.no_grad():
        t = _teacher()(x)
    loss = _ref_kd(ref(x), t, labels, KD_T, 1.0)
    loss.backward()
    check_close(got["loss"], loss.detach(), rtol=1e-4, atol=1e-6,
                name="the QAT + KD loss of a 2-bit student on a fixed batch", task="3.1",
                hint="kd_loss_fn on prepare_qat(model, 2): the soft term against the fp32 teacher")
    for name, want in _source_grads(ref).items():
        check_close(got["grads"][name], want, rtol=1e-3, atol=1e-6,
                    name=f"the QAT + KD gradient of {name}'s float weights", task="3.1")
