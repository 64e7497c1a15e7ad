"""Lab 14 (temporal shift module): the video backbones, the training loop on clips,
per-frame latency measurement and the clip figure.

Nothing here shifts channels in time or averages frames into a clip
prediction: those are the lab's tasks. :class:`VideoNet` is a per-frame 2D CNN
whose residual blocks come from a ``block(channels)`` factory (the student's
``ResidualShift`` for TSM, :class:`PlainResidual` for TSN) and whose per-frame
logits go through a ``consensus(frame_logits, n_segment)`` the student writes.
:class:`Conv3DNet` is the 3D-convolution baseline with the same stages.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from .data import MOTION_CLASSES

CHANNELS = (8, 16, 16)


def conv_branch(c: int) -> nn.Sequential:
    """The residual branch of a block: 3x3 convolution, batch norm, ReLU."""
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())


class PlainResidual(nn.Module):
    """A residual block without temporal modelling: ``x + net(x)`` (TSN)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return x + self.net(x)


def plain_block(c: int) -> PlainResidual:
    return PlainResidual(conv_branch(c))


class VideoNet(nn.Module):
    """A per-frame 2D CNN for clips ``[N, T, 1, H, W]`` (T = ``n_segment``).

    Frames are folded into the batch (``[N*T, 1, H, W]``) and go through
    ``stem`` (3x3 conv, BN, ReLU), then for each stage i ``blocks[i]`` (a
    residual block made by ``block(channels[i])``, default :class:`PlainResidual`)
    and ``transitions[i]`` (3x3 conv, BN, ReLU, 2x2 max-pool; the last one is a
    global average pool), then ``head`` (linear), giving per-frame logits
    ``[N*T, n_classes]``. ``forward`` returns ``consensus(frame_logits, n_segment)``
    when a consensus is given, else the per-frame logits.
    """

    def __init__(self, n_classes: int = len(MOTION_CLASSES), channels: Sequence[int] = CHANNELS,
                 n_segment: int = 8, block: Callable[[int], nn.Module] | None = None,
                 consensus: Callable | None = None):
        super().__init__()
        channels = list(channels)
        block = block or plain_block
        self.n_segment, self.consensus = n_segment, consensus
        self.stem = nn.Sequential(nn.Conv2d(1, channels[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels[0]), nn.ReLU())
        self.blocks = nn.ModuleList([block(c) for c in channels])
        trans = []
        for c_in, c_out in zip(channels, channels[1:]):
            trans.append(nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                                       nn.ReLU(), nn.MaxPool2d(2)))
        trans.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        self.transitions = nn.ModuleList(trans)
        self.head = nn.Linear(channels[-1], n_classes)

    def frame_logits(self, clips: torch.Tensor) -> torch.Tensor:
        """Per-frame logits ``[N*T, n_classes]`` of clips ``[N, T, 1, H, W]`` (or frames ``[N*T, 1, H, W]``)."""
        x = clips.flatten(0, 1) if clips.dim() == 5 else clips
        x = self.stem(x)
        for block, trans in zip(self.blocks, self.transitions):
            x = trans(block(x))
        return self.head(x)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        logits = self.frame_logits(clips)
        return self.consensus(logits, self.n_segment) if self.consensus is not None else logits

    def frame_forward(self, frames: torch.Tensor) -> torch.Tensor:
        """The 2D per-frame model: the same layers on frames ``[N, 1, H, W]`` with every
        block taken as ``x + net(x)`` (no temporal shift): the latency reference."""
        x = self.stem(frames)
        for block, trans in zip(self.blocks, self.transitions):
            x = trans(x + block.net(x))
        return self.head(x)


def video_net(eval: bool = True, **kwargs) -> VideoNet:
    """A :class:`VideoNet` with plain blocks, in eval mode (the grader builds models with it)."""
    model = VideoNet(**kwargs)
    return model.eval() if eval else model


class Conv3DNet(nn.Module):
    """The 3D-convolution baseline: the stages of :class:`VideoNet` with every 3x3
    convolution a 3x3x3 one over (time, height, width) and pooling over space only,
    then a global average pool over time and space. Returns clip logits ``[N, n_classes]``."""

    def __init__(self, n_classes: int = len(MOTION_CLASSES), channels: Sequence[int] = CHANNELS,
                 n_segment: int = 8):
        super().__init__()
        channels = list(channels)
        self.n_segment = n_segment

        def unit(c_in, c_out):
            return [nn.Conv3d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm3d(c_out), nn.ReLU()]

        self.stem = nn.Sequential(*unit(1, channels[0]))
        self.blocks = nn.ModuleList([nn.Sequential(*unit(c, c)) for c in channels])
        trans = [nn.Sequential(*unit(c_in, c_out), nn.MaxPool3d((1, 2, 2)))
                 for c_in, c_out in zip(channels, channels[1:])]
        trans.append(nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten()))
        self.transitions = nn.ModuleList(trans)
        self.head = nn.Linear(channels[-1], n_classes)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = self.stem(clips.transpose(1, 2))  # [N, C, T, H, W]
        for block, trans in zip(self.blocks, self.transitions):
            x = trans(x + block(x))
        return self.head(x)


def layer_stack(layers: Sequence[Sequence]) -> nn.Sequential:
    """A model built from plain data, for the grader's MAC-counter cases: each layer is
    ``("conv2d" | "conv3d", c_in, c_out, kernel, stride, padding, groups, bias)``,
    ``("linear", in, out, bias)``, ``("relu",)``, ``("bn2d", c)``, ``("bn3d", c)``,
    ``("flatten",)``, ``("pool2d", k)`` or ``("identity",)``."""
    mods = []
    for spec in layers:
        kind, *a = spec
        if kind in ("conv2d", "conv3d"):
            conv = nn.Conv2d if kind == "conv2d" else nn.Conv3d
            c_in, c_out, k, s, p, g, bias = a
            k, s, p = (tuple(v) if isinstance(v, (list, tuple)) else v for v in (k, s, p))
            mods.append(conv(c_in, c_out, k, stride=s, padding=p, groups=g, bias=bias))
        elif kind == "linear":
            mods.append(nn.Linear(a[0], a[1], bias=a[2]))
        elif kind == "relu":
            mods.append(nn.ReLU())
        elif kind == "bn2d":
            mods.append(nn.BatchNorm2d(a[0]))
        elif kind == "bn3d":
            mods.append(nn.BatchNorm3d(a[0]))
        elif kind == "flatten":
            mods.append(nn.Flatten())
        elif kind == "pool2d":
            mods.append(nn.MaxPool2d(a[0]))
        elif kind == "identity":
            mods.append(nn.Identity())
        else:
            raise ValueError(f"unknown layer kind {kind!r}")
    return nn.Sequential(*mods).eval()


@torch.no_grad()
def apply_block(block_cls, net: nn.Module, n_segment: int, fold_div: int, causal: bool, x: torch.Tensor):
    """``block_cls(net, n_segment, fold_div=fold_div, causal=causal)(x)``: how the grader runs a
    student's residual block class on its own branch and input (the block itself is the student's)."""
    return block_cls(net, n_segment, fold_div=fold_div, causal=causal).eval()(x)


# ---------------------------------------------------------------- training and evaluation

def train_video(model: nn.Module, clips: torch.Tensor, labels: torch.Tensor, *, epochs: int = 5,
                lr: float = 3e-3, batch_size: int = 32, seed: int = 0, progress: bool = True) -> list[float]:
    """``helpers.train.train`` on clips: Adam with cross-entropy on the clip logits
    ``model(clips)`` and a one-cycle learning-rate schedule; the mean loss of each epoch.
    The model is left in eval mode."""
    from torch.utils.data import DataLoader, TensorDataset

    from .train import train

    loader = DataLoader(TensorDataset(clips, labels), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, epochs * len(loader)))
    history = train(model, loader, epochs=epochs, optimizer=opt, after_step=lambda _: sched.step(),
                    device="cpu", progress=progress)
    model.eval()
    return history


# ---------------------------------------------------------------- latency

@torch.no_grad()
def step_latency(steps: Mapping[str, Callable], clip: torch.Tensor, *, warmup: int = 3,
                 repeats: int = 30) -> dict[str, float]:
    """Median seconds per frame of each streaming ``step(frame, state) -> (output, state)``
    fed the frames of ``clip`` ``[T, 1, H, W]`` one at a time (``state`` starts as None).

    Single-threaded, the steps timed in turns, each clip's time taken as the CPU time of
    this thread (``time.thread_time``): what one dedicated core would take, which other
    processes on a shared machine do not inflate (wall-clock time would count the time
    the process waits for a core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    frames = [f.unsqueeze(0) for f in clip]

    def one_clip(step):
        state = None
        start = time.thread_time()
        for f in frames:
            _, state = step(f, state)
        return (time.thread_time() - start) / len(frames)

    try:
        for _ in range(warmup):
            for step in steps.values():
                one_clip(step)
        times = {name: [] for name in steps}
        for _ in range(repeats):
            for name, step in steps.items():
                times[name].append(one_clip(step))
    finally:
        torch.set_num_threads(threads)
    return {name: statistics.median(t) for name, t in times.items()}
