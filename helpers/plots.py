"""Figures the labs draw. Each returns the matplotlib Figure so a test can
inspect it; notebooks display it inline."""
from __future__ import annotations

import math
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


def plot_codebooks(weights, levels: Mapping[str, Sequence[float]], *, bins: int = 80, title: str = ""):
    """A weight histogram with the quantization levels of each method drawn
    as vertical lines: where a method spends its levels against where the
    weights are."""
    plt = _plt()
    w = weights.detach().flatten().cpu().numpy() if hasattr(weights, "detach") else weights
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(w, bins=bins, color="0.75")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, values) in enumerate(levels.items()):
        values = values.detach().flatten().cpu().tolist() if hasattr(values, "detach") else list(values)
        for j, v in enumerate(values):
            ax.axvline(v, color=colors[i % len(colors)], lw=1, alpha=0.8, ls="-" if i == 0 else "--",
                       label=label if j == 0 else None)
    ax.set(xlabel="weight value", ylabel="count", title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_tradeoff(points: Mapping[str, tuple[float, float]], *, xlabel: str = "", ylabel: str = "",
                  title: str = "", logx: bool = False):
    """One labelled point per method, e.g. model size against accuracy."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for label, (x, y) in points.items():
        ax.scatter([x], [y], s=40)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logx:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_memory_plans(usage: Mapping[str, Sequence[float]], *, budget: float | None = None,
                      xlabels: Sequence[str] | None = None, ylabel: str = "SRAM in use (KiB)", title: str = ""):
    """Memory in use at each step of each plan (steps on x), with the budget as a line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for label, values in usage.items():
        ax.plot(range(len(values)), list(values), marker=".", label=label)
    if budget is not None:
        ax.axhline(budget, color="tab:red", ls="--", label="budget")
    if xlabels is not None:
        ax.set_xticks(range(len(xlabels)), list(xlabels), rotation=90, fontsize=7)
    ax.set(ylabel=ylabel, title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_channel_magnitudes(magnitudes, *, highlight: Sequence[int] = (), ylabel: str = "mean |x|", title: str = ""):
    """A value per input channel, the highlighted channels in red: the few
    channels that carry most of the activation magnitude."""
    plt = _plt()
    m = magnitudes.detach().flatten().cpu().numpy() if hasattr(magnitudes, "detach") else magnitudes
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(range(len(m)), m, width=1.0, color="0.6")
    hl = [int(i) for i in highlight]
    if hl:
        ax.bar(hl, [m[i] for i in hl], width=1.0, color="tab:red", label=f"top {len(hl)} channels")
        ax.legend()
    ax.set(xlabel="input channel", ylabel=ylabel, title=title)
    fig.tight_layout()
    return fig


def plot_stacked_bars(stacks: Mapping[str, Mapping[str, float]], *, ylabel: str = "", title: str = "",
                      rotate: bool = False):
    """One bar per key of ``stacks``, stacked from its parts (the same part
    names in every bar, e.g. weights, gradients, optimizer state, activations)."""
    plt = _plt()
    names = list(stacks)
    parts = list(dict.fromkeys(p for bar in stacks.values() for p in bar))
    fig, ax = plt.subplots(figsize=(max(5.5, 0.8 * len(names)), 3.4))
    bottom = [0.0] * len(names)
    for part in parts:
        vals = [float(stacks[n].get(part, 0.0)) for n in names]
        ax.bar(names, vals, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set(ylabel=ylabel, title=title)
    if rotate:
        ax.tick_params(axis="x", rotation=45)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_categories(series: Mapping[str, Mapping[str, float]], *, xlabel: str = "", ylabel: str = "",
                    title: str = "", logy: bool = False):
    """One line per series over named categories (e.g. a value per layer)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for label, values in series.items():
        ax.plot(list(values), list(values.values()), marker="o", label=label)
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_frames(clip, *, classes: Sequence[str], label: int | None = None, predictions: Sequence[int] | None = None,
                confidences: Sequence[float] | None = None, title: str = ""):
    """The frames of a video clip ``[T, 1, H, W]`` in a row; with ``predictions``, the class
    predicted after each frame (green when it is the label) above it."""
    plt = _plt()
    T = clip.shape[0]
    fig, axes = plt.subplots(1, T, figsize=(1.35 * T, 1.9))
    for t, ax in enumerate(axes):
        ax.imshow(clip[t, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"t={t}", fontsize=8)
        if predictions is not None:
            text = classes[int(predictions[t])]
            if confidences is not None:
                text += f"\n{100 * float(confidences[t]):.0f}%"
            ok = label is not None and int(predictions[t]) == int(label)
            ax.set_title(text, fontsize=7, color="tab:green" if ok else "tab:red")
    head = title or ""
    if label is not None:
        head = (head + "  " if head else "") + f"label: {classes[int(label)]}"
    fig.suptitle(head, fontsize=9)
    fig.tight_layout()
    return fig


def plot_grid(images01, *, nrow: int = 10, title: str = "", row_labels: Sequence[str] | None = None):
    """A grid of ``[N, 1, H, W]`` images in [0, 1], ``nrow`` per row."""
    plt = _plt()
    n = images01.shape[0]
    rows = math.ceil(n / nrow)
    fig, axes = plt.subplots(rows, nrow, figsize=(0.75 * nrow, 0.75 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images01[i, 0].detach().cpu().numpy(), cmap="gray_r", vmin=0, vmax=1)
    if row_labels:
        for r, label in enumerate(row_labels[:rows]):
            axes[r, 0].set_title(label, fontsize=7, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_quality_vs_steps(steps: Sequence[int], acc: Sequence[float], conf: Sequence[float], *,
                          ddpm: tuple[int, float, float] | None = None, title: str = ""):
    """DDIM quality (classifier accuracy and confidence) against the number of
    steps, with the DDPM reference ``(steps, accuracy, confidence)`` as dashed lines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    ax.plot(steps, acc, marker="o", label="DDIM accuracy")
    ax.plot(steps, conf, marker="s", label="DDIM confidence")
    if ddpm:
        n, a, c = ddpm
        ax.axhline(a, ls="--", color="tab:blue", alpha=0.6, label=f"DDPM {n} steps accuracy")
        ax.axhline(c, ls=":", color="tab:orange", alpha=0.8, label=f"DDPM {n} steps confidence")
    ax.set(xscale="log", xlabel="sampling steps (network evaluations)", ylabel="fraction", ylim=(0, 1.02),
           title=title)
    ax.set_xticks(list(steps), [str(s) for s in steps], minor=False)
    ax.set_xticks([], minor=True)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_sige_scaling(fractions: Sequence[float], macs_ratio: Sequence[float], speedup: Sequence[float],
                      *, title: str = ""):
    """MAC reduction and wall-time speedup of SIGE over dense recomputation
    against the edited area."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    pct = [100 * f for f in fractions]
    ax.plot(pct, macs_ratio, marker="o", label="MACs: dense / SIGE")
    ax.plot(pct, speedup, marker="s", label="wall time: dense / SIGE")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="edited area (% of the image)", ylabel="reduction (x)", title=title)
    ax.set_xticks(pct, [f"{p:g}%" for p in pct], minor=False)
    ax.set_xticks([], minor=True)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_edit(original01, edited01, masks: Sequence, *,
              titles: Sequence[str] = ()):
    """The original and edited images, then the changed region at each layer."""
    plt = _plt()
    n = 2 + len(masks)
    fig, axes = plt.subplots(1, n, figsize=(1.9 * n, 2.1))
    axes[0].imshow(original01.squeeze().cpu().numpy(), cmap="gray_r", vmin=0, vmax=1)
    axes[1].imshow(edited01.squeeze().cpu().numpy(), cmap="gray_r", vmin=0, vmax=1)
    for ax, m in zip(axes[2:], masks):
        ax.imshow(m.float().cpu().numpy(), cmap="Reds", vmin=0, vmax=1)
    for ax, t in zip(axes, ["original", "edited", *titles]):
        ax.set_title(t, fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_features(wave, log_mel, mfcc, *, sample_rate: int, title: str = ""):
    """A clip's waveform, log-mel spectrogram ``[n_mels, T]`` and MFCCs ``[n_mfcc, T]``."""
    import numpy as np

    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3))
    axes[0].plot(np.arange(len(wave)) / sample_rate, wave, lw=0.5)
    axes[0].set(xlabel="time (s)", title=f"waveform {title}")
    axes[1].imshow(log_mel, origin="lower", aspect="auto")
    axes[1].set(xlabel="frame", ylabel="mel band", title="log-mel")
    axes[2].imshow(mfcc, origin="lower", aspect="auto")
    axes[2].set(xlabel="frame", ylabel="coefficient", title="MFCC")
    fig.tight_layout()
    return fig


def plot_accuracy_vs_snr(curves: dict, target: float | None = None):
    """``curves``: ``{name: {snr label: accuracy fraction}}`` (same labels, in order)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, accs in curves.items():
        ax.plot(list(accs), [100 * v for v in accs.values()], marker="o", label=name)
    if target is not None:
        ax.axhline(100 * target, color="gray", ls="--", lw=1, label="target (clean)")
    ax.set(xlabel="SNR (dB)", ylabel="test accuracy (%)", title="keyword spotting accuracy vs noise")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_stream(audio, posteriors, smoothed, detections, events, *, sample_rate: int, classes: Sequence[str],
                n_keywords: int, hop: int, stride: int, threshold: float, seconds: float = 20.0):
    """The first ``seconds`` of an audio stream: waveform with the true
    keywords, and the best keyword posterior (raw, smoothed; the first
    ``n_keywords`` classes) with the detections."""
    import numpy as np

    plt = _plt()
    fig, axes = plt.subplots(2, 1, figsize=(12, 4.5), sharex=True)
    n = int(seconds * sample_rate)
    axes[0].plot(np.arange(min(n, len(audio))) / sample_rate, audio[:n], lw=0.3)
    for s, e, c in events:
        if s < n:
            axes[0].axvspan(s / sample_rate, e / sample_rate, color="tab:green", alpha=0.3)
            axes[0].text(s / sample_rate, 0.9 * np.abs(audio[:n]).max(), classes[c], fontsize=8)
    steps = np.asarray(posteriors)
    t = (np.arange(len(steps)) + 1) * stride * hop / sample_rate
    keep = t <= seconds
    axes[1].plot(t[keep], steps[keep, :n_keywords].max(1), lw=0.6, label="best keyword posterior")
    axes[1].plot(t[keep], np.asarray(smoothed)[keep, :n_keywords].max(1), lw=1.2, label="smoothed")
    axes[1].axhline(threshold, color="gray", ls="--", lw=1)
    for frame, c in detections:
        ts = (frame + 1) * hop / sample_rate
        if ts <= seconds:
            axes[1].axvline(ts, color="tab:red", lw=1)
            axes[1].text(ts, 1.02, classes[c], fontsize=8, color="tab:red")
    axes[1].set(xlabel="time (s)", ylim=(0, 1.1))
    axes[1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
