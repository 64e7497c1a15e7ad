"""A once-for-all (OFA) supernet for digits, and extraction of its subnetworks.

Non-graded machinery of lab 04 (NAS). The supernet is a MobileNetV2-style
network with elastic input resolution, depth, kernel size and width:

    stem: 3x3 conv, 1 -> 8 channels, stride 1, BN, ReLU6
    3 stages of inverted-residual (MBConv) blocks, widths 16, 24, 32; the
      first block of each stage has stride 2; up to 3 blocks per stage
    global average pool, linear 32 -> 10

An architecture ("arch") is a dict in OFA's format::

    {"r": 16,                 # input resolution, one of RESOLUTIONS
     "d": [3, 1, 2],          # active blocks per stage, each in DEPTHS
     "k": [5, 3, 3, ...],     # depthwise kernel size per block slot (9 slots)
     "e": [4, 2, 3, ...]}     # expand ratio per block slot (9 slots)

Block slot ``3 * stage + i`` is active when ``i < d[stage]``; the ``k``/``e``
entries of inactive slots are ignored. Elastic kernels share the centre of the
5x5 weight, elastic width keeps the first ``e * c_in`` hidden channels, elastic
depth keeps the first blocks of a stage (as in OFA, Cai et al., ICLR 2020).

:func:`build_subnet` turns an arch into a standalone static network whose
BatchNorm statistics are recalibrated for that arch and folded into the convs.
"""
from __future__ import annotations

import copy
import random
from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F

RESOLUTIONS = (10, 12, 14, 16)
DEPTHS = (1, 2, 3)
KERNELS = (3, 5)
EXPANDS = (2, 3, 4)
STEM_CHANNELS = 8
STAGE_CHANNELS = (16, 24, 32)
STAGE_STRIDES = (2, 2, 2)
MAX_DEPTH = max(DEPTHS)
NUM_SLOTS = MAX_DEPTH * len(STAGE_CHANNELS)
NUM_CLASSES = 10
CALIB_SIZE = 256  # training images used to recalibrate BatchNorm of a subnet


def validate_arch(arch: dict) -> None:
    """Raise a ValueError that says what is wrong with ``arch``."""
    if not isinstance(arch, dict) or set(arch) != {"r", "d", "k", "e"}:
        raise ValueError(f"an arch is a dict with keys r, d, k, e; got {arch!r}")
    if arch["r"] not in RESOLUTIONS:
        raise ValueError(f"arch['r']={arch['r']!r}, expected one of {RESOLUTIONS}")
    if len(arch["d"]) != len(STAGE_CHANNELS) or any(d not in DEPTHS for d in arch["d"]):
        raise ValueError(f"arch['d']={arch['d']!r}, expected {len(STAGE_CHANNELS)} values in {DEPTHS}")
    for key, choices in (("k", KERNELS), ("e", EXPANDS)):
        vals = arch[key]
        if len(vals) != NUM_SLOTS or any(v not in choices for v in vals):
            raise ValueError(f"arch[{key!r}]={vals!r}, expected {NUM_SLOTS} values in {choices}")


def active_blocks(arch: dict) -> list[dict]:
    """The active blocks of ``arch`` in order: dicts with ``slot``, ``stage``,
    ``c_in``, ``c_out``, ``stride``, ``k``, ``e``."""
    blocks, c_in = [], STEM_CHANNELS
    for s, (c_out, stride) in enumerate(zip(STAGE_CHANNELS, STAGE_STRIDES)):
        for i in range(arch["d"][s]):
            slot = MAX_DEPTH * s + i
            blocks.append({"slot": slot, "stage": s, "c_in": c_in, "c_out": c_out,
                           "stride": stride if i == 0 else 1, "k": arch["k"][slot], "e": arch["e"][slot]})
            c_in = c_out
    return blocks


def sample_arch(rng: random.Random) -> dict:
    """A uniformly random arch (every slot gets a k and an e, active or not)."""
    return {"r": rng.choice(RESOLUTIONS),
            "d": [rng.choice(DEPTHS) for _ in STAGE_CHANNELS],
            "k": [rng.choice(KERNELS) for _ in range(NUM_SLOTS)],
            "e": [rng.choice(EXPANDS) for _ in range(NUM_SLOTS)]}


# ---------------------------------------------------------------- supernet

class _DynamicBN(nn.BatchNorm2d):
    """BatchNorm over the first ``x.shape[1]`` channels (elastic width)."""

    def forward(self, x):
        c = x.shape[1]
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
                            self.training, self.momentum, self.eps)


class _DynamicMBConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        hidden = c_in * max(EXPANDS)
        self.c_in, self.c_out, self.stride = c_in, c_out, stride
        self.expand = nn.Conv2d(c_in, hidden, 1, bias=False)
        self.bn1 = _DynamicBN(hidden)
        self.depthwise = nn.Conv2d(hidden, hidden, max(KERNELS), groups=hidden, bias=False)
        self.bn2 = _DynamicBN(hidden)
        self.project = nn.Conv2d(hidden, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)

    def weights(self, k: int, e: int):
        """The (expand, depthwise, project) weights of the ``k``/``e`` subnet block."""
        hidden = e * self.c_in
        start = (max(KERNELS) - k) // 2
        dw = self.depthwise.weight[:hidden, :, start:start + k, start:start + k]
        return self.expand.weight[:hidden], dw, self.project.weight[:, :hidden]

    def forward(self, x, k: int, e: int):
        w1, w2, w3 = self.weights(k, e)
        h = F.relu6(self.bn1(F.conv2d(x, w1)))
        h = F.relu6(self.bn2(F.conv2d(h, w2, stride=self.stride, padding=k // 2, groups=w2.shape[0])))
        h = self.bn3(F.conv2d(h, w3))
        return x + h if self.stride == 1 and self.c_in == self.c_out else h


class OFASupernet(nn.Module):
    """The supernet; ``forward(x, arch)`` runs the subnet ``arch`` on ``x``
    (whose spatial size should be ``arch["r"]``)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, STEM_CHANNELS, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(STEM_CHANNELS), nn.ReLU6())
        blocks, c_in = [], STEM_CHANNELS
        for c_out, stride in zip(STAGE_CHANNELS, STAGE_STRIDES):
            for i in range(MAX_DEPTH):
                blocks.append(_DynamicMBConv(c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Linear(STAGE_CHANNELS[-1], NUM_CLASSES)

    def forward(self, x, arch: dict):
        x = self.stem(x)
        for b in active_blocks(arch):
            x = self.blocks[b["slot"]](x, b["k"], b["e"])
        return self.classifier(x.mean(dim=(2, 3)))


# ---------------------------------------------------------------- static subnets

class InvertedResidual(nn.Module):
    """A static MBConv block: 1x1 expand + ReLU6, kxk depthwise + ReLU6,
    1x1 project, and a residual add when the shapes allow it."""

    def __init__(self, c_in: int, c_out: int, hidden: int, k: int, stride: int, bn: bool = True):
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if bn else (lambda c: nn.Identity())
        self.use_residual = stride == 1 and c_in == c_out
        self.body = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, bias=not bn), norm(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, k, stride, k // 2, groups=hidden, bias=not bn), norm(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, c_out, 1, bias=not bn), norm(c_out))

    def forward(self, x):
        y = self.body(x)
        return x + y if self.use_residual else y


def _fuse_bn(module: nn.Module) -> nn.Module:
    """Fold every Conv2d-BatchNorm2d pair of ``module`` (in eval mode) into a
    Conv2d with bias, leaving no BatchNorm in the tree."""
    for name, child in module.named_children():
        if isinstance(child, nn.Sequential):
            items, fused = list(child), []
            i = 0
            while i < len(items):
                conv = items[i]
                if isinstance(conv, nn.Conv2d) and i + 1 < len(items) and isinstance(items[i + 1], nn.BatchNorm2d):
                    fused.append(torch.nn.utils.fusion.fuse_conv_bn_eval(conv, items[i + 1]))
                    i += 2
                else:
                    fused.append(_fuse_bn(conv))
                    i += 1
            setattr(module, name, nn.Sequential(*fused))
        else:
            _fuse_bn(child)
    return module


@torch.no_grad()
def build_subnet(supernet: OFASupernet, arch: dict, calib_x: torch.Tensor | None = None) -> nn.Module:
    """A standalone ``nn.Sequential`` for ``arch`` with the supernet's weights.

    BatchNorm statistics are re-estimated on ``calib_x`` (default: the first
    :data:`CALIB_SIZE` training digits at resolution ``arch["r"]``), because
    the supernet's running statistics average over many subnets; then BN is
    folded into the convs. The result is in eval mode and has only Conv2d,
    ReLU6, AdaptiveAvgPool2d, Flatten and Linear leaves.
    """
    validate_arch(arch)
    if calib_x is None:
        from helpers.data import load_digits
        calib_x = load_digits("train", size=arch["r"], limit=CALIB_SIZE)[0]
    stem = copy.deepcopy(supernet.stem)
    layers: list[nn.Module] = [stem]
    for b in active_blocks(arch):
        src = supernet.blocks[b["slot"]]
        hidden = b["e"] * b["c_in"]
        block = InvertedResidual(b["c_in"], b["c_out"], hidden, b["k"], b["stride"])
        w1, w2, w3 = src.weights(b["k"], b["e"])
        body = block.body
        body[0].weight.copy_(w1)
        body[3].weight.copy_(w2)
        body[6].weight.copy_(w3)
        for bn, src_bn in ((body[1], src.bn1), (body[4], src.bn2), (body[7], src.bn3)):
            c = bn.num_features
            bn.weight.copy_(src_bn.weight[:c])
            bn.bias.copy_(src_bn.bias[:c])
        layers.append(block)
    head = nn.Linear(STAGE_CHANNELS[-1], NUM_CLASSES)
    head.load_state_dict(supernet.classifier.state_dict())
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    # Cumulative-average BN statistics over the calibration set.
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    for chunk in calib_x.split(128):
        net(chunk)
    net.eval()
    return _fuse_bn(net)


# ---------------------------------------------------------------- checkpoint

def load_supernet() -> OFASupernet:
    """The trained supernet shipped as ``datasets/ofa_digits.pt`` (checked
    against its sha256 in the manifest), in eval mode."""
    from helpers.models import load_checkpoint

    net = OFASupernet()
    net.load_state_dict(load_checkpoint("ofa_digits")["state_dict"])
    return net.eval()


@torch.no_grad()
def measure_accuracy(subnet: nn.Module, split: str = "val", resolution: int = 16,
                     limit: int | None = None) -> float:
    """Top-1 accuracy (percent) of a built subnet on a digits split at
    ``resolution`` (which must be the arch's ``r``)."""
    from helpers.data import load_digits

    x, y = load_digits(split, size=resolution, limit=limit)
    subnet.eval()
    return 100.0 * (subnet(x).argmax(1) == y).float().mean().item()


def measure_accuracies(supernet: OFASupernet, archs: Sequence[dict], split: str = "val",
                       progress: bool = True) -> list[float]:
    """Measured accuracy of each arch (built with :func:`build_subnet`)."""
    from tqdm.auto import tqdm

    it = tqdm(archs, desc="measure", leave=False) if progress else archs
    return [measure_accuracy(build_subnet(supernet, a), split, a["r"]) for a in it]
