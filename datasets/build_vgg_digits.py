"""Build the compression labs' baseline: VGGDigits on 16x16 digits.

Seeded and CPU-only, so a rebuild on the same torch version reproduces the
checkpoint; it writes ``datasets/vgg_digits.pt`` (``state_dict`` and the
test ``accuracy``) and updates the ``vgg_digits`` entry of
``datasets/manifest.json`` without touching the other entries.

    python datasets/build_vgg_digits.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers.data import digits_loaders  # noqa: E402
from helpers.models import VGGDigits, save_checkpoint  # noqa: E402
from helpers.train import evaluate, seed_everything, train  # noqa: E402

SEED = 0
EPOCHS = 20
SIZE = 16


def main() -> None:
    torch.set_num_threads(1)  # thread count changes float summation order
    seed_everything(SEED)
    loaders = digits_loaders(batch_size=64, size=SIZE, seed=SEED)
    model = VGGDigits()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, EPOCHS)
    for _ in range(EPOCHS):
        train(model, loaders["train"], epochs=1, optimizer=opt, device="cpu", progress=False)
        sched.step()
    acc = evaluate(model, loaders["test"], device="cpu")
    print(f"val {evaluate(model, loaders['val'], device='cpu'):.2f}%  test {acc:.2f}%")
    save_checkpoint("vgg_digits", {"state_dict": model.state_dict(), "accuracy": acc}, "python datasets/build_vgg_digits.py",
                    test_accuracy=round(acc, 2))


if __name__ == "__main__":
    main()
