"""Figures the labs draw. Each returns the matplotlib Figure so a test can
inspect it; notebooks display it inline."""
from __future__ import annotations

from typing import Mapping, Sequence


def _plt():
    import matplotlib
    if matplotlib.get_backend().lower() == "agg" or not _in_notebook():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
        return get_ipython() is not None and "IPKernelApp" in get_ipython().config
    except Exception:  # IPython missing or not a kernel
        return False


def plot_curves(series: Mapping[str, Sequence[float]], *, xlabel: str = "epoch",
                ylabel: str = "loss", title: str = ""):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label, values in series.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_bars(values: Mapping[str, float], *, ylabel: str = "", title: str = "", log: bool = False):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(values)), 3.2))
    ax.bar(list(values), list(values.values()), color="tab:blue")
    ax.set(ylabel=ylabel, title=title)
    if log:
        ax.set_yscale("log")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


def plot_weight_histograms(named_weights: Mapping[str, "object"], *, bins: int = 64, cols: int = 3):
    """One histogram per tensor (e.g. ``dict(model.named_parameters())``)."""
    import math

    plt = _plt()
    names = list(named_weights)
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        w = named_weights[name]
        w = w.detach().flatten().cpu().numpy() if hasattr(w, "detach") else w
        ax.hist(w, bins=bins, color="tab:blue")
        ax.set_title(name, fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_xy(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, xlabel: str = "",
            ylabel: str = "", title: str = "", logx: bool = False, logy: bool = False):
    """Several (x, y) lines on one axis."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label, (x, y) in series.items():
        ax.plot(x, y, marker="o", label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    return fig
