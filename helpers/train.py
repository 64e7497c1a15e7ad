"""Training and evaluation loops with progress bars, seeding and device choice."""
from __future__ import annotations

import os
import random
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn


def seed_everything(seed: int = 0) -> None:
    """Seed Python, numpy and torch so QUICK runs are reproducible."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_device(prefer: str | None = None) -> torch.device:
    """``EFFML_DEVICE`` or ``prefer`` if given, else CUDA when present, else CPU."""
    name = prefer or os.environ.get("EFFML_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _progress(iterable, desc: str, enabled: bool, total: int | None = None):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)


def train(model: nn.Module, loader: Iterable, *, epochs: int = 1, lr: float = 1e-3,
          optimizer: torch.optim.Optimizer | None = None,
          loss_fn: Callable | None = None,
          after_step: Callable[[nn.Module], None] | None = None,
          device: torch.device | str | None = None, progress: bool = True) -> list[float]:
    """Train ``model`` and return the mean loss of each epoch.

    ``after_step(model)`` runs after every optimizer step (pruning labs use it
    to re-apply masks); ``loss_fn(outputs, targets, inputs)`` defaults to
    cross-entropy on the outputs.
    """
    device = torch.device(device) if device else get_device()
    model.to(device)
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for epoch in range(epochs):
        model.train()
        total, count = 0.0, 0
        for x, y in _progress(loader, f"epoch {epoch + 1}/{epochs}", progress):
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            out = model(x)
            loss = loss_fn(out, y, x) if loss_fn else nn.functional.cross_entropy(out, y)
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step(model)
            total += loss.item() * len(y)
            count += len(y)
        history.append(total / max(count, 1))
    return history


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, *, device: torch.device | str | None = None,
             progress: bool = False) -> float:
    """Top-1 accuracy in percent; the model's train/eval mode is kept."""
    device = torch.device(device) if device else get_device()
    was_training = model.training
    model.to(device).eval()
    correct = count = 0
    try:
        for x, y in _progress(loader, "eval", progress):
            pred = model(x.to(device)).argmax(dim=1)
            correct += (pred == y.to(device)).sum().item()
            count += len(y)
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate() got an empty loader")
    return 100.0 * correct / count


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy as a fraction of ``model`` on tensors ``(x, y)``, in
    eval mode (the model's mode is kept)."""
    was_training = model.training
    model.eval()
    try:
        correct = sum((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
                      for i in range(0, len(y), batch_size))
    finally:
        model.train(was_training)
    return correct / max(len(y), 1)
