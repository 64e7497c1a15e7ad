"""Measure a model: parameters, MACs, size at a bit width, latency, peak
activation memory. Labs compare students' hand counts against these."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn


def count_params(model: nn.Module, *, nonzero_only: bool = False) -> int:
    """Number of parameters (or of non-zero parameters, for pruned models)."""
    if nonzero_only:
        return int(sum((p != 0).sum().item() for p in model.parameters()))
    return int(sum(p.numel() for p in model.parameters()))


def model_size_bytes(model: nn.Module, bits: int = 32, *, nonzero_only: bool = False) -> float:
    """Storage of the parameters at ``bits`` bits each (indices of sparse
    formats are not counted)."""
    return count_params(model, nonzero_only=nonzero_only) * bits / 8


@dataclass
class LayerProfile:
    name: str
    kind: str
    output_shape: tuple
    params: int
    macs: int
    input_elems: int
    output_elems: int


def _layer_macs(module: nn.Module, out: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return out.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    return 0


@torch.no_grad()
def profile_layers(model: nn.Module, example: torch.Tensor) -> list[LayerProfile]:
    """One row per leaf module that ran, in execution order (batch included in
    the element counts: pass a batch of one for per-sample figures)."""
    rows: list[LayerProfile] = []
    hooks = []

    def hook(name):
        def fn(module, inputs, out):
            inp = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            rows.append(LayerProfile(
                name=name, kind=type(module).__name__, output_shape=tuple(out.shape),
                params=sum(p.numel() for p in module.parameters(recurse=False)),
                macs=_layer_macs(module, out),
                input_elems=inp.numel() if inp is not None else 0,
                output_elems=out.numel()))
        return fn

    for name, module in model.named_modules():
        if not list(module.children()):
            hooks.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        model(example)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return rows


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of Conv2d and Linear layers for ``example``."""
    return sum(r.macs for r in profile_layers(model, example))


def peak_activation_bytes(model: nn.Module, example: torch.Tensor, bits: int = 32) -> int:
    """Peak activation memory of layer-by-layer execution: the largest
    input + output of any layer (what must be live at once in a sequential
    model), at ``bits`` per element."""
    rows = profile_layers(model, example)
    inplace = lambda r: r.kind in ("ReLU", "ReLU6", "Dropout", "Identity", "Flatten")  # noqa: E731
    peak = max(r.output_elems if inplace(r) else r.input_elems + r.output_elems for r in rows)
    return peak * bits // 8


@torch.no_grad()
def measure_latency(model: nn.Module, example: torch.Tensor, *, warmup: int = 5,
                    repeats: int = 20) -> float:
    """Median wall-clock seconds of one forward pass after ``warmup`` runs."""
    model.eval()
    for _ in range(warmup):
        model(example)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(example)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def format_table(rows: list[LayerProfile]) -> str:
    """A plain-text per-layer table (name, type, output shape, params, MACs)."""
    head = f"{'layer':<22}{'type':<12}{'output':<20}{'params':>10}{'MACs':>12}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.name:<22}{r.kind:<12}{str(r.output_shape):<20}{r.params:>10,}{r.macs:>12,}")
    lines.append(f"{'total':<54}{sum(r.params for r in rows):>10,}{sum(r.macs for r in rows):>12,}")
    return "\n".join(lines)
