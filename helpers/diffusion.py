"""Lab 15 (diffusion and SIGE): the class-conditional denoising U-Net for 8x8
digits (the digits' own resolution; the classifier reads them upsampled to 16x16), its noise schedule and checkpoint, the quality score of generated
digits, the convolution stack SIGE runs on, edit masks, timing and figures.

Nothing here takes a DDPM or DDIM step, runs the sampling loop, or finds,
gathers or scatters the changed blocks of an edit: those are the lab's tasks.
The schedule constants (``BETAS``, ``ALPHA_BAR``) and the timestep spacing
(:func:`spaced_timesteps`) are given; the samplers that use them are not.

Images live in [-1, 1] for the diffusion model (:func:`to_model_range`) and in
[0, 1] for the quality classifier, which is the compression labs' baseline
``helpers.models.load_baseline()`` (VGGDigits on 16x16 digits from
``helpers.data.load_digits(size=16)``, 99.4% test accuracy).
"""
from __future__ import annotations

import math
import time
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------- the noise schedule

T_STEPS = 1000                      # training timesteps of the DDPM (Ho et al. 2020)
SIZE = 8                            # generated digits are 1 x 8 x 8 (the digits' own resolution)
CLASSIFIER_SIZE = 16                # the quality classifier reads them upsampled like load_digits(size=16)
BETAS = torch.linspace(1e-4, 0.02, T_STEPS, dtype=torch.float64)   # the linear schedule of DDPM
ALPHAS = 1.0 - BETAS
ALPHA_BAR = torch.cumprod(ALPHAS, dim=0)      # alpha_bar[t] = prod_{s <= t} alpha[s], t = 0..T-1


def spaced_timesteps(num_steps: int, t_max: int = T_STEPS) -> list[int]:
    """``num_steps`` timesteps, evenly spaced over ``0 .. t_max - 1``, in the
    order a sampler visits them: descending, first ``t_max - 1``, last ``0``.
    ``spaced_timesteps(1000) == [999, 998, ..., 0]``; ``spaced_timesteps(1) == [t_max - 1]``."""
    if not 1 <= num_steps <= t_max:
        raise ValueError(f"num_steps must be in 1..{t_max}, got {num_steps}")
    if num_steps == 1:
        return [t_max - 1]
    ts = torch.linspace(0, t_max - 1, num_steps, dtype=torch.float64).round().long().tolist()
    return sorted(set(int(t) for t in ts), reverse=True)


def add_noise(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alpha_bar=ALPHA_BAR) -> torch.Tensor:
    """The forward process q(x_t | x_0): ``sqrt(ab_t) x0 + sqrt(1 - ab_t) noise`` (training only)."""
    ab = alpha_bar.to(x0.dtype)[t].view(-1, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def to_model_range(images01: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels -> the model's [-1, 1]."""
    return images01 * 2 - 1


def to_image(x: torch.Tensor) -> torch.Tensor:
    """The model's [-1, 1] -> [0, 1] pixels, clipped."""
    return ((x + 1) / 2).clamp(0, 1)


# ---------------------------------------------------------------- the U-Net

def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps ``t`` [N] -> [N, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


class ResBlock(nn.Module):
    """conv3x3 - GroupNorm - SiLU (+ embedding) - conv3x3 - GroupNorm - SiLU, plus the input."""

    def __init__(self, c: int, emb_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.norm1 = nn.GroupNorm(min(8, c), c)
        self.emb = nn.Linear(emb_dim, c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.norm2 = nn.GroupNorm(min(8, c), c)

    def forward(self, x, emb):
        h = F.silu(self.norm1(self.conv1(x)) + self.emb(emb)[:, :, None, None])
        return x + F.silu(self.norm2(self.conv2(h)))


class TinyUNet(nn.Module):
    """A class-conditional denoising U-Net for 1 x 8 x 8 images (any size divisible by 4), predicting the
    noise: ``model(x_t, t, labels) -> eps`` (same shape as ``x_t``).

    ``t`` is an int or a long tensor ``[N]`` of timesteps in ``0 .. T_STEPS - 1``;
    ``labels`` a long tensor ``[N]`` of digit classes. Levels H x W (``base``
    channels) and 4x4 (``2 * base``), a 2x2 middle (for 8x8 inputs); skip connections by concatenation.
    The encoder's convolutions ``in_conv``, ``enc1.conv1``, ``enc1.conv2``, ``down1``,
    ``enc2.conv1``, ``enc2.conv2`` are what :func:`conv_stack_from_unet` copies."""

    def __init__(self, base: int = 32, num_classes: int = 10, emb_dim: int = 64):
        super().__init__()
        c, c2 = base, 2 * base
        self.emb_dim = emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes, emb_dim)
        self.in_conv = nn.Conv2d(1, c, 3, padding=1)
        self.enc1 = ResBlock(c, emb_dim)
        self.down1 = nn.Conv2d(c, c2, 3, stride=2, padding=1)
        self.enc2 = ResBlock(c2, emb_dim)
        self.down2 = nn.Conv2d(c2, c2, 3, stride=2, padding=1)
        self.mid = ResBlock(c2, emb_dim)
        self.up2 = nn.Conv2d(2 * c2, c2, 3, padding=1)
        self.dec2 = ResBlock(c2, emb_dim)
        self.up1 = nn.Conv2d(c2 + c, c, 3, padding=1)
        self.dec1 = ResBlock(c, emb_dim)
        self.out = nn.Sequential(nn.GroupNorm(min(8, c), c), nn.SiLU(), nn.Conv2d(c, 1, 3, padding=1))

    def forward(self, x, t, labels):
        n = x.shape[0]
        t = torch.as_tensor(t, device=x.device).long().reshape(-1).expand(n) if not (
            isinstance(t, torch.Tensor) and t.numel() == n) else t.long().reshape(n)
        emb = self.time_mlp(timestep_embedding(t, self.emb_dim)) + self.class_emb(labels.long().reshape(n))
        h1 = self.enc1(self.in_conv(x), emb)                      # c  x H x W
        h2 = self.enc2(self.down1(h1), emb)                       # c2 x H/2 x W/2
        m = self.mid(self.down2(h2), emb)                         # c2 x H/4 x W/4
        u = F.interpolate(m, scale_factor=2, mode="nearest")
        u = self.dec2(self.up2(torch.cat([u, h2], 1)), emb)       # c2 x H/2 x W/2
        u = F.interpolate(u, scale_factor=2, mode="nearest")
        u = self.dec1(self.up1(torch.cat([u, h1], 1)), emb)       # c  x H x W
        return self.out(u)


def load_unet() -> TinyUNet:
    """The trained U-Net (``datasets/diffusion_digits.pt``, checksum checked), in eval mode."""
    from .models import load_checkpoint

    ckpt = load_checkpoint("diffusion_digits")
    model = TinyUNet(**ckpt.get("config", {}))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def load_classifier() -> nn.Module:
    """The quality classifier: the compression labs' VGGDigits baseline (16x16, [0, 1] pixels)."""
    from .models import load_baseline

    return load_baseline()


@torch.no_grad()
def quality(images01: torch.Tensor, labels: torch.Tensor, classifier: nn.Module | None = None) -> dict:
    """How recognisable generated digits are as the class they were asked for:
    ``{"accuracy": fraction classified as the requested class, "confidence":
    mean softmax probability of the requested class}``."""
    classifier = classifier or load_classifier()
    x = images01.float()
    if x.shape[-1] != CLASSIFIER_SIZE:   # bilinear, exactly as helpers.data.load_digits upsamples
        x = F.interpolate(x, size=(CLASSIFIER_SIZE, CLASSIFIER_SIZE), mode="bilinear", align_corners=False)
    probs = classifier.eval()(x).softmax(1)
    labels = labels.long()
    return {"accuracy": (probs.argmax(1) == labels).float().mean().item(),
            "confidence": probs.gather(1, labels[:, None]).mean().item()}


# ---------------------------------------------------------------- the convolution stack SIGE runs on

class ConvStack(nn.Module):
    """A plain stack of convolutions: ``convs[i]`` (padding ``k // 2``, stride 1
    or 2) followed by ``acts[i]`` (SiLU, or Identity after the last). Every
    non-linearity is point-wise, so an output pixel depends only on the
    ``k x k`` window of the layer below (its receptive field).
    ``spec``: a list of ``(in_channels, out_channels, kernel_size, stride)``."""

    def __init__(self, spec: Sequence[Sequence[int]]):
        super().__init__()
        self.spec = [tuple(int(v) for v in s) for s in spec]
        self.convs = nn.ModuleList(nn.Conv2d(ci, co, k, stride=s, padding=k // 2) for ci, co, k, s in self.spec)
        self.acts = nn.ModuleList(nn.SiLU() if i < len(self.spec) - 1 else nn.Identity()
                                  for i in range(len(self.spec)))

    def forward(self, x):
        for conv, act in zip(self.convs, self.acts):
            x = act(conv(x))
        return x

    @torch.no_grad()
    def activations(self, x) -> list[torch.Tensor]:
        """``[x, a_1, ..., a_L]``: the input and every layer's output (what SIGE caches)."""
        acts = [x.clone()]
        for conv, act in zip(self.convs, self.acts):
            acts.append(act(conv(acts[-1])))
        return acts


UNET_ENCODER = ("in_conv", "enc1.conv1", "enc1.conv2", "down1", "enc2.conv1", "enc2.conv2")


def conv_stack_from_unet(unet: TinyUNet, names: Sequence[str] = UNET_ENCODER) -> ConvStack:
    """The U-Net encoder's convolutions (trained weights), as a :class:`ConvStack`
    without norms, embeddings or skips (SIGE's engine needs local layers)."""
    modules = dict(unet.named_modules())
    convs = [modules[n] for n in names]
    stack = ConvStack([(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs])
    with torch.no_grad():
        for dst, src in zip(stack.convs, convs):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
    return stack.eval()


def edit_mask(size: int, fraction: float, *, center: tuple[float, float] = (0.5, 0.5)) -> torch.Tensor:
    """A square bool mask ``[size, size]`` covering ``fraction`` of the image
    (rounded to whole pixels), centred at ``center`` (fractions of the size)."""
    side = max(1, min(size, round(math.sqrt(fraction) * size)))
    cy, cx = round(center[0] * size), round(center[1] * size)
    y0 = min(max(cy - side // 2, 0), size - side)
    x0 = min(max(cx - side // 2, 0), size - side)
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[y0:y0 + side, x0:x0 + side] = True
    return mask


def apply_edit(image: torch.Tensor, other: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``image`` with the pixels under ``mask`` taken from ``other`` (the "edit")."""
    return torch.where(mask, other, image)


def upscale(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of ``[N, C, h, w]`` images to ``size x size``."""
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def stack_macs(stack: ConvStack, x: torch.Tensor) -> int:
    """MACs of the dense forward of ``stack`` on ``x`` (``helpers.profile.count_macs``)."""
    from .profile import count_macs

    return count_macs(stack, x)


def interleaved_times(fns: Mapping[str, Callable[[], object]], *, repeats: int = 10, warmup: int = 2) -> dict:
    """Best-of-``repeats`` wall-clock seconds of each ``fn`` in ``fns``, timed in
    turns (one call of each per round), so that load from other processes hits
    them alike; the minimum is the least disturbed estimate of a call's own cost
    on shared cores (other processes only ever add time)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(v) for name, v in times.items()}


# ---------------------------------------------------------------- a probe for the graders

class StepProbe:
    """A stand-in for a sampler step, ``probe(x_t, eps, alpha_bar_t, alpha_bar_prev, noise)``,
    that the grader hands to the student's sampling loop: a fixed function of
    its inputs (not a diffusion step, and ignoring ``noise``) so the loop's
    result can be recomputed without the student's random stream."""

    def __call__(self, x_t, eps, alpha_bar_t, alpha_bar_prev, noise=None):
        ab_t, ab_prev = float(alpha_bar_t), float(alpha_bar_prev)
        return x_t * math.sqrt(ab_prev / ab_t) + (ab_prev - ab_t) * eps + 0.01 * ab_prev


def probe_step(x_t, eps, ab_t, ab_prev):
    """What :class:`StepProbe` returns (the grader's side)."""
    return StepProbe()(x_t, eps, ab_t, ab_prev)
