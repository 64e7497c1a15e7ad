"""helpers.compression (shared machinery of labs 01-03) and the VGGDigits
baseline checkpoint they load."""
import hashlib
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import compression
from helpers.data import DIGITS_SPLIT_SIZES, digits_loaders
from helpers.models import DATASETS_DIR, VGGDigits, load_baseline, load_checkpoint
from helpers.train import evaluate


# ---------------------------------------------------------------- checkpoint

def _manifest_entry():
    return json.loads((DATASETS_DIR / "manifest.json").read_text())["vgg_digits"]


def test_manifest_checksum_matches_checkpoint():
    entry = _manifest_entry()
    digest = hashlib.sha256((DATASETS_DIR / entry["file"]).read_bytes()).hexdigest()
    assert digest == entry["sha256"], f"datasets/{entry['file']} is stale: rerun `{entry['build']}`"
    assert entry["build"] == "python datasets/build_vgg_digits.py"


def test_baseline_reaches_its_stated_accuracy():
    entry = _manifest_entry()
    acc = compression.digits_accuracy(load_baseline())
    assert acc == pytest.approx(entry["test_accuracy"], abs=0.01)
    assert acc == pytest.approx(load_checkpoint("vgg_digits")["accuracy"], abs=0.01)
    assert acc >= 98.0, "the baseline is too weak for the compression targets"


# ---------------------------------------------------------------- data and evaluation

def test_train_limit_cuts_only_the_training_split():
    loaders = digits_loaders(size=16, train_limit=100, batch_size=32)
    assert len(loaders["train"].dataset) == 100
    assert len(loaders["val"].dataset) == DIGITS_SPLIT_SIZES["val"]
    assert len(loaders["test"].dataset) == DIGITS_SPLIT_SIZES["test"]
    x, y = next(iter(loaders["test"]))
    assert x.shape == (32, 1, 16, 16) and y.dtype == torch.int64


def test_digits_loaders_shuffle_reproducibly():
    first = [digits_loaders(size=16, train_limit=64, seed=3)["train"] for _ in range(2)]
    a, b = (next(iter(loader))[1] for loader in first)
    assert torch.equal(a, b)


def test_digits_accuracy_matches_the_training_harness_and_restores_mode():
    torch.manual_seed(0)
    model = VGGDigits(cfg=(4, "M", 8, "M")).train()
    ref = evaluate(model, digits_loaders(batch_size=50, size=16)["val"], device="cpu")
    assert model.training, "evaluate keeps the model's mode"
    assert compression.digits_accuracy(model, split="val") == pytest.approx(ref)
    assert model.training, "digits_accuracy must restore training mode"


def test_weight_layers_in_definition_order():
    layers = compression.weight_layers(VGGDigits())
    assert list(layers)[0] == "backbone.0" and list(layers)[-1] == "classifier"
    assert len(layers) == 7
    assert all(isinstance(m, (nn.Conv2d, nn.Linear)) for m in layers.values())


def test_sparsity_counts_exact_zeros():
    assert compression.sparsity(torch.tensor([0.0, 1e-9, 0.0, -2.0])) == pytest.approx(0.5)
    assert compression.sparsity(torch.zeros(3, 3)) == 1.0


# ---------------------------------------------------------------- exact integer arithmetic

def _conv_reference(x, w, stride, padding):
    """Integer convolution by explicit sums in int64."""
    x = F.pad(x.to(torch.int64), (padding,) * 4)
    n, c, h, wd = x.shape
    k, _, r, s = w.shape
    oh, ow = (h - r) // stride + 1, (wd - s) // stride + 1
    out = torch.zeros(n, k, oh, ow, dtype=torch.int64)
    for i in range(oh):
        for j in range(ow):
            patch = x[:, :, i * stride:i * stride + r, j * stride:j * stride + s]
            out[:, :, i, j] = torch.einsum("ncrs,kcrs->nk", patch, w.to(torch.int64))
    return out


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 0), (1, 0)])
def test_integer_conv2d_is_exact(stride, padding):
    g = torch.Generator().manual_seed(stride * 10 + padding)
    x = torch.randint(-255, 256, (2, 64, 7, 7), generator=g, dtype=torch.int32)  # int8 minus a zero point
    w = torch.randint(-127, 128, (5, 64, 3, 3), generator=g, dtype=torch.int8)
    out = compression.integer_conv2d(x, w, stride=stride, padding=padding)
    assert out.dtype == torch.int32
    assert torch.equal(out.to(torch.int64), _conv_reference(x, w, stride, padding))


def test_integer_linear_is_exact():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-255, 256, (4, 300), generator=g, dtype=torch.int32)
    w = torch.randint(-127, 128, (6, 300), generator=g, dtype=torch.int8)
    out = compression.integer_linear(x, w)
    assert out.dtype == torch.int32
    assert torch.equal(out.to(torch.int64), x.to(torch.int64) @ w.to(torch.int64).T)


def test_integer_ops_reject_float_inputs_with_a_clear_message():
    with pytest.raises(TypeError, match="integer tensor"):
        compression.integer_conv2d(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3, dtype=torch.int8))
    with pytest.raises(TypeError, match="quantize it first"):
        compression.integer_linear(torch.zeros(1, 3, dtype=torch.int8), torch.zeros(2, 3))


def test_integer_ops_refuse_to_overflow_int32():
    x = torch.full((1, 2), 2 ** 30, dtype=torch.int64)
    with pytest.raises(OverflowError):
        compression.integer_linear(x, torch.ones(1, 2, dtype=torch.int64))
