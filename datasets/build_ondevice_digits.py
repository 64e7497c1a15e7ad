"""Build lab 13's pretrained network: helpers.ondevice.OnDeviceCNN on clean 16x16 digits.

Seeded and CPU-only (one thread), so a rebuild on the same torch version reproduces the
checkpoint; it writes ``datasets/ondevice_digits.pt`` (``state_dict`` and the clean test
``accuracy``) and updates only the ``ondevice_digits`` entry of ``datasets/manifest.json``.
Lab 13 then adapts this network to the shifted domain (``helpers.ondevice.domain_data``).

    python datasets/build_ondevice_digits.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers.ondevice import OnDeviceCNN, domain_data  # noqa: E402
from helpers.models import save_checkpoint  # noqa: E402
from helpers.train import accuracy, seed_everything  # noqa: E402

SEED = 0
EPOCHS = 30
BATCH = 32


def main() -> None:
    torch.set_num_threads(1)  # thread count changes float summation order
    seed_everything(SEED)
    x, y = domain_data("clean", "train")
    model = OnDeviceCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    steps = EPOCHS * ((len(y) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(SEED)
    for _ in range(EPOCHS):
        model.train()
        order = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), BATCH):
            idx = order[i:i + BATCH]
            opt.zero_grad()
            # label smoothing keeps the logits moderate, so adapting with SGD starts from sane gradients
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx], label_smoothing=0.1).backward()
            opt.step()
            sched.step()
    acc = 100 * accuracy(model, *domain_data("clean", "test"))
    shifted = 100 * accuracy(model, *domain_data("shifted", "test"))
    print(f"clean: val {100 * accuracy(model, *domain_data('clean', 'val')):.2f}%  test {acc:.2f}%; "
          f"shifted test {shifted:.2f}% (before adaptation)")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    save_checkpoint("ondevice_digits", {"state_dict": state, "accuracy": acc}, "python datasets/build_ondevice_digits.py",
                    test_accuracy=round(acc, 2), shifted_test_accuracy=round(shifted, 2))


if __name__ == "__main__":
    main()
