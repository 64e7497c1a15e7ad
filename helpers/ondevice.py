"""On-device training (lab 13): the small CNN, its pretrained checkpoint, the
shifted domain it is adapted to, a layer table for memory accounting, training
loops, and the simulated int8 training graph.

What the students write (and this module does not): the training-memory
accountant, the update schemes, TinyTL's lite residual module, the sparse-update
selection under a budget, and quantization-aware scaling (QAS).

- :class:`Conv2d` is ``nn.Conv2d`` with a backward that keeps only what it
  needs: the input only when the *weight* needs a gradient (a bias gradient is
  a sum of the output gradient; the input gradient needs the weight only).
  PyTorch's generic convolution node keeps the input whatever is trained; a
  training engine built for a device (TinyEngine's, PockEngine) prunes that at
  compile time, and this class does the same, so what autograd saves is what
  the lab's accountant counts.
- :class:`OnDeviceCNN`: 4 convs (16x16 -> 8x8 -> 4x4 -> 4x4) + ReLUs, global
  average pool, linear; 33 K parameters on 16x16 digits.
- :func:`load_pretrained`: the checkpoint ``datasets/ondevice_digits.pt``
  (built by ``datasets/build_ondevice_digits.py``, sha256 checked against
  ``datasets/manifest.json``), trained on clean digits.
- :func:`domain_data`: digits of the pretraining domain (``"clean"``) or of
  the new one (``"shifted"``: rotated by 90 degrees), built from :func:`helpers.data.load_digits`.
- :class:`QuantizedCNN`: the same network as an int8 graph (per-channel int8
  weights ``W_q = W / s_W``, int8 activations, int32 biases ``b_q = b / (s_W s_x)``)
  whose integer tensors are trained directly (as floats rounded with a
  straight-through estimator in the forward pass), the set-up of "On-Device
  Training Under 256KB Memory" (Lin et al., 2022), Section 3.1.
"""
from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F
from torch import nn

from helpers.data import load_digits
from helpers.models import DATASETS_DIR, load_checkpoint

CHECKPOINT = "ondevice_digits"
SIZE = 16
CHANNELS = (16, 32, 32, 64)
MOMENTUM = 0.9  # every training loop here is SGD with momentum: one fp32 buffer per trained element


# ---------------------------------------------------------------- a conv that saves only what backward needs

class _ConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, groups):
        ctx.conf = (stride, padding, groups, tuple(x.shape), tuple(weight.shape))
        ctx.has_bias = bias is not None
        need_w = ctx.needs_input_grad[1]
        need_x = ctx.needs_input_grad[0]
        # the input only for the weight gradient, the weight only for the input gradient
        ctx.save_for_backward(x if need_w else None, weight if need_x else None)
        return F.conv2d(x, weight, bias, stride, padding, 1, groups)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, groups, x_shape, w_shape = ctx.conf
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.nn.grad.conv2d_input(x_shape, weight, grad, stride, padding, 1, groups)
        if ctx.needs_input_grad[1]:
            gw = torch.nn.grad.conv2d_weight(x, w_shape, grad, stride, padding, 1, groups)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum(dim=(0, 2, 3))
        return gx, gw, gb, None, None, None


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (dilation 1, zero padding) whose backward saves the input
    only when the weight is trained."""

    def forward(self, x):
        if not torch.is_grad_enabled():
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)
        return _ConvFn.apply(x, self.weight, self.bias, self.stride, self.padding, self.groups)


# ---------------------------------------------------------------- the model

class OnDeviceCNN(nn.Module):
    """conv1 (3x3) - conv2 (3x3, stride 2) - conv3 (3x3, stride 2) - conv4 (3x3),
    each followed by a ReLU, then global average pool, flatten, fc."""

    def __init__(self, channels=CHANNELS, num_classes: int = 10):
        super().__init__()
        c1, c2, c3, c4 = channels
        self.conv1, self.relu1 = Conv2d(1, c1, 3, padding=1), nn.ReLU()
        self.conv2, self.relu2 = Conv2d(c1, c2, 3, stride=2, padding=1), nn.ReLU()
        self.conv3, self.relu3 = Conv2d(c2, c3, 3, stride=2, padding=1), nn.ReLU()
        self.conv4, self.relu4 = Conv2d(c3, c4, 3, padding=1), nn.ReLU()
        self.pool, self.flatten = nn.AdaptiveAvgPool2d(1), nn.Flatten()
        self.fc = nn.Linear(c4, num_classes)

    def forward(self, x):
        x = self.relu1(self.conv1(x))
        x = self.relu2(self.conv2(x))
        x = self.relu3(self.conv3(x))
        x = self.relu4(self.conv4(x))
        return self.fc(self.flatten(self.pool(x)))


CONV_NAMES = ("conv1", "conv2", "conv3", "conv4")


def load_pretrained() -> OnDeviceCNN:
    """The network pretrained on clean digits (``datasets/ondevice_digits.pt``), in eval mode."""
    model = OnDeviceCNN()
    model.load_state_dict(load_checkpoint(CHECKPOINT)["state_dict"])
    return model.eval()


def pretrained_accuracy() -> float:
    """The checkpoint's clean test accuracy (percent) as the manifest records it."""
    return json.loads((DATASETS_DIR / "manifest.json").read_text())[CHECKPOINT]["test_accuracy"]


def add_lite_residuals(model: nn.Module, lite_cls, names=CONV_NAMES, **kwargs) -> nn.Module:
    """A copy of ``model`` whose convs ``names`` are wrapped as ``lite_cls(conv, **kwargs)``
    (the student's TinyTL lite residual module)."""
    import copy

    model = copy.deepcopy(model)
    for name in names:
        setattr(model, name, lite_cls(getattr(model, name), **kwargs))
    return model


# ---------------------------------------------------------------- data

def shift_domain(x: torch.Tensor) -> torch.Tensor:
    """The new domain: the new device's camera is mounted sideways, so its digits are
    rotated by 90 degrees (counter-clockwise)."""
    return torch.rot90(x, 1, dims=(-2, -1)).contiguous()


def domain_data(domain: str = "shifted", split: str = "train", limit: int | None = None):
    """``(x, y)`` 16x16 digits of ``domain`` ("clean" or "shifted") and ``split``."""
    if domain not in ("clean", "shifted"):
        raise ValueError(f"domain must be 'clean' or 'shifted', got {domain!r}")
    x, y = load_digits(split, size=SIZE, limit=limit)
    if domain == "shifted":
        x = shift_domain(x)
    return x, y


# ---------------------------------------------------------------- describing a model for the accountant

def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.ReLU):
        return "relu"
    return "other"


def layer_table(model: nn.Module, trainable, input_shape=(1, SIZE, SIZE)) -> list[dict]:
    """The leaf modules of ``model`` in the order a forward pass runs them, as plain
    data: ``name``, ``kind`` ("conv", "linear", "relu", "other"), per-sample
    ``in_shape`` and ``out_shape``, ``weight_numel`` and ``bias_numel`` (0 when
    absent), and ``train_weight`` / ``train_bias`` (whether the parameter's full
    name is in ``trainable``)."""
    trainable = set(trainable)
    rows, hooks = [], []

    def hook(module, inputs, output, name):
        w, b = getattr(module, "weight", None), getattr(module, "bias", None)
        w = w if isinstance(w, torch.Tensor) else None
        b = b if isinstance(b, torch.Tensor) else None
        rows.append({"name": name, "kind": _kind(module),
                     "in_shape": tuple(int(d) for d in inputs[0].shape[1:]),
                     "out_shape": tuple(int(d) for d in output.shape[1:]),
                     "weight_numel": int(w.numel()) if w is not None else 0,
                     "bias_numel": int(b.numel()) if b is not None else 0,
                     "train_weight": w is not None and f"{name}.weight" in trainable,
                     "train_bias": b is not None and f"{name}.bias" in trainable})

    for name, module in model.named_modules():
        if name and not list(module.children()):
            hooks.append(module.register_forward_hook(lambda m, i, o, name=name: hook(m, i, o, name)))
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    return rows


def set_trainable(model: nn.Module, names) -> list[nn.Parameter]:
    """``requires_grad`` on exactly the parameters ``names``; returns them."""
    names = set(names)
    unknown = names - {n for n, _ in model.named_parameters()}
    if unknown:
        raise KeyError(f"no parameters {sorted(unknown)} in the model")
    params = []
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
        if n in names:
            params.append(p)
    return params


def autograd_saved_bytes(model: nn.Module, trainable, batch_size: int = 2) -> int:
    """Bytes of the (non-parameter) tensors autograd actually saves for backward in one
    forward pass of ``model`` with ``trainable`` parameters (each storage counted once)."""
    set_trainable(model, trainable)
    params = {p.data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        if t.data_ptr() not in params:
            seen[(t.data_ptr(), t.dtype)] = t.numel() * t.element_size()
        return t

    x = torch.rand(batch_size, 1, SIZE, SIZE)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(seen.values())


# ---------------------------------------------------------------- training

def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, trainable, *, epochs: int = 10, lr: float = 0.05,
        batch_size: int = 32, seed: int = 0, grad_transform=None, weight_decay: float = 0.0,
        clip: float | None = None, progress: bool = False) -> list[float]:
    """Train the parameters ``trainable`` (names) of ``model`` in place with SGD
    (momentum 0.9), a short linear warm-up and a cosine learning rate; the rest stay frozen. ``grad_transform(model)``
    runs after each backward pass (QAS). Returns the mean loss per epoch."""
    params = set_trainable(model, trainable)
    if not params:
        return []
    opt = torch.optim.SGD(params, lr=lr, momentum=MOMENTUM, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(y) / batch_size)
    warm = max(1, steps // 10)  # linear warm-up over the first 10% of the steps, then cosine
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    g = torch.Generator().manual_seed(seed)
    history = []
    epochs_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm
        epochs_iter = tqdm(epochs_iter, desc="epochs", leave=False)
    for _ in epochs_iter:
        model.train()
        order = torch.randperm(len(y), generator=g)
        total = 0.0
        for i in range(0, len(y), batch_size):
            idx = order[i:i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            if grad_transform is not None:
                grad_transform(model)
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        history.append(total / len(y))
    set_trainable(model, [n for n, _ in model.named_parameters()])
    return history


# ---------------------------------------------------------------- the int8 graph (simulated)

def _round_ste(t: torch.Tensor) -> torch.Tensor:
    return t + (torch.round(t) - t).detach()


class QLayer(nn.Module):
    """One int8 conv or linear layer of :class:`QuantizedCNN`.

    Parameters (trained directly, as an int8 engine would): ``weight`` = W_q, the int8
    weight codes (per output channel scale ``w_scale`` = s_W, so W = s_W * W_q), and
    ``bias`` = b_q, the int32 bias codes (b = s_W * s_x * b_q). The input is quantized to
    int8 codes x_q = round(x / s_x) with the fixed scale ``x_scale`` = s_x. The output is
    y = s_x * s_W * (conv(x_q, round(W_q)) + b_q): what an integer kernel computes before
    requantization. Rounding passes the gradient straight through (STE), so the
    gradient of W_q is s_W times the fp32 gradient of W, and that of b_q is s_W * s_x
    times the fp32 gradient of b."""

    def __init__(self, kind: str, weight_shape, stride: int = 1, padding: int = 0):
        super().__init__()
        self.kind, self.stride, self.padding = kind, stride, padding
        out = weight_shape[0]
        self.weight = nn.Parameter(torch.zeros(weight_shape))
        self.bias = nn.Parameter(torch.zeros(out))
        self.register_buffer("w_scale", torch.ones(out))
        self.register_buffer("x_scale", torch.ones(()))

    def forward(self, x):
        xq = _round_ste(x / self.x_scale).clamp(-128, 127)
        wq = _round_ste(self.weight).clamp(-127, 127)
        if self.kind == "conv":
            acc = F.conv2d(xq, wq, self.bias, self.stride, self.padding)
            return acc * (self.x_scale * self.w_scale).view(1, -1, 1, 1)
        return F.linear(xq, wq, self.bias) * (self.x_scale * self.w_scale)


class QuantizedCNN(nn.Module):
    """:class:`OnDeviceCNN` as an int8 graph of :class:`QLayer` (same layer names)."""

    def __init__(self, channels=CHANNELS, num_classes: int = 10):
        super().__init__()
        c1, c2, c3, c4 = channels
        self.conv1 = QLayer("conv", (c1, 1, 3, 3), 1, 1)
        self.conv2 = QLayer("conv", (c2, c1, 3, 3), 2, 1)
        self.conv3 = QLayer("conv", (c3, c2, 3, 3), 2, 1)
        self.conv4 = QLayer("conv", (c4, c3, 3, 3), 1, 1)
        self.fc = QLayer("linear", (num_classes, c4))

    def forward(self, x):
        for name in CONV_NAMES:
            x = F.relu(getattr(self, name)(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    @classmethod
    @torch.no_grad()
    def from_float(cls, model: OnDeviceCNN, calib_x: torch.Tensor) -> "QuantizedCNN":
        """Quantize ``model``: per-output-channel symmetric weight scales max|W| / 127,
        per-tensor input scales max|x| / 127 measured on ``calib_x``."""
        channels = tuple(getattr(model, n).out_channels for n in CONV_NAMES)
        q = cls(channels, model.fc.out_features)
        inputs = {}
        hooks = [getattr(model, n).register_forward_hook(
            lambda m, i, o, n=n: inputs.__setitem__(n, i[0])) for n in (*CONV_NAMES, "fc")]
        model.eval()
        model(calib_x)
        for h in hooks:
            h.remove()
        for name in (*CONV_NAMES, "fc"):
            src, dst = getattr(model, name), getattr(q, name)
            w = src.weight.detach()
            s_w = w.abs().reshape(w.shape[0], -1).amax(1).clamp(min=1e-8) / 127
            s_x = inputs[name].abs().max().clamp(min=1e-8) / 127
            shape = (-1,) + (1,) * (w.dim() - 1)
            dst.w_scale.copy_(s_w)
            dst.x_scale.copy_(s_x)
            dst.weight.copy_(torch.round(w / s_w.view(shape)))
            dst.bias.copy_(torch.round(src.bias.detach() / (s_w * s_x)))
        return q.eval()


def quantized_layers(model: nn.Module) -> list[tuple[str, QLayer]]:
    """``(name, layer)`` of every :class:`QLayer` of ``model``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QLayer)]


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` of every conv, linear or int8 layer with a weight, in order."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear, QLayer))]


# ---------------------------------------------------------------- probes for the grader's checks

def probe_lite(lite_cls, conv_kwargs: dict, conv_state: dict, x: torch.Tensor, kwargs: dict,
               lite_state: dict | None = None) -> dict:
    """Builds ``lite_cls(Conv2d(**conv_kwargs) with conv_state, **kwargs)`` (the student's
    lite residual module), optionally loads ``lite_state`` into its ``lite`` conv, and
    reports its output on ``x``, its parameter names and shapes, and the output gradient
    of x (a sum of the outputs)."""
    conv = Conv2d(**conv_kwargs)
    conv.load_state_dict(conv_state)
    module = lite_cls(conv, **kwargs)
    if lite_state is not None:
        module.lite.load_state_dict(lite_state)
    x = x.clone().requires_grad_(True)
    out = module(x)
    out.sum().backward()
    return {"out": out.detach(), "grad_x": x.grad.detach(),
            "params": {n: tuple(p.shape) for n, p in module.named_parameters()},
            "lite_params": {n: tuple(p.shape) for n, p in module.lite.named_parameters()},
            "conv_is_wrapped": module.conv is conv}


def probe_qas(apply_qas, qstate: dict, channels, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Builds a :class:`QuantizedCNN` with ``qstate``, runs forward and backward of the
    cross-entropy on ``(x, y)``, calls ``apply_qas(model)`` and reports every gradient."""
    model = QuantizedCNN(tuple(channels))
    model.load_state_dict(qstate)
    F.cross_entropy(model(x), y).backward()
    apply_qas(model)
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


class LiteStandIn(nn.Module):
    """A stand-in with the attributes of a lite residual module (``conv``, the wrapped
    conv, and ``lite``, a conv) but no forward: for checks that only read parameter names."""

    def __init__(self, conv: nn.Conv2d, **kwargs):
        super().__init__()
        self.conv = conv
        self.lite = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1, bias=False)


def probe_scheme(scheme_fn, channels, scheme: str, selection=None, lite: bool = False):
    """``scheme_fn(model, scheme, selection)`` on a fresh :class:`OnDeviceCNN` (``lite``:
    its convs wrapped in :class:`LiteStandIn`)."""
    model = OnDeviceCNN(tuple(channels))
    if lite:
        model = add_lite_residuals(model, LiteStandIn)
    return scheme_fn(model, scheme, selection)
