"""Non-graded machinery shared by the compression labs (01 pruning, 02
post-training quantization, 03 QAT and distillation).

It gives data, evaluation, bookkeeping and exact integer arithmetic; the
techniques themselves (masks, quantizers, folding, distillation losses) are
what the students write in the labs.
"""
from __future__ import annotations

import torch
from torch import nn

from helpers.data import load_digits

IMAGE_SIZE = 16  # the VGGDigits baseline sees 16x16 digits


def digits_accuracy(model: nn.Module, split: str = "test") -> float:
    """Top-1 accuracy in percent of ``model`` on a full split of the labs'
    16x16 digits, on CPU; the model's train/eval mode is kept."""
    from torch.utils.data import DataLoader, TensorDataset

    from helpers.train import evaluate

    return evaluate(model, DataLoader(TensorDataset(*load_digits(split, size=IMAGE_SIZE)), batch_size=256),
                    device="cpu")


def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The Conv2d and Linear modules of ``model`` by name, in definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def sparsity(tensor: torch.Tensor) -> float:
    """Fraction of exact zeros in ``tensor``."""
    return 1.0 - tensor.count_nonzero().item() / tensor.numel()


# ---------------------------------------------------------------- exact integer arithmetic

# float64 represents every integer below 2**53 exactly, so a conv of small
# integers computed in float64 is the exact integer result: the int32
# accumulation an int8 accelerator performs, without an integer conv kernel
# (PyTorch's CPU conv has none).
_INT_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def _require_int(t: torch.Tensor, name: str, caller: str) -> None:
    if not isinstance(t, torch.Tensor) or t.dtype not in _INT_DTYPES:
        got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
        raise TypeError(f"{caller}: `{name}` must be an integer tensor (e.g. torch.int8 or torch.int32), "
                        f"got {got}; quantize it first")


def _to_int32(acc: torch.Tensor, caller: str) -> torch.Tensor:
    limit = 2 ** 31
    if acc.numel() and (acc.max() >= limit or acc.min() < -limit):
        raise OverflowError(f"{caller}: the accumulator overflows int32; are the inputs int8-range values?")
    return (acc.round() if acc.is_floating_point() else acc).to(torch.int32)


def integer_conv2d(x: torch.Tensor, weight: torch.Tensor, *, stride=1, padding=0) -> torch.Tensor:
    """Exact integer 2-D convolution (zero padding) of integer tensors
    ``x`` ``[N, C, H, W]`` and ``weight`` ``[K, C, R, S]``; returns int32."""
    _require_int(x, "x", "integer_conv2d")
    _require_int(weight, "weight", "integer_conv2d")
    acc = nn.functional.conv2d(x.to(torch.float64), weight.to(torch.float64), stride=stride, padding=padding)
    return _to_int32(acc, "integer_conv2d")


def integer_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Exact ``x @ weight.T`` of integer tensors ``x`` ``[N, in]`` and
    ``weight`` ``[out, in]``; returns int32."""
    _require_int(x, "x", "integer_linear")
    _require_int(weight, "weight", "integer_linear")
    acc = x.to(torch.int64) @ weight.to(torch.int64).T
    return _to_int32(acc, "integer_linear")
