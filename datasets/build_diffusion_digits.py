"""Build lab 15's denoising model: a class-conditional TinyUNet (DDPM, 1000
steps, epsilon prediction) on scikit-learn's 8x8 digits.

Seeded and CPU-only (one thread), so a rebuild on the same torch version
reproduces the checkpoint; it writes ``datasets/diffusion_digits.pt`` (the
EMA weights as ``state_dict``, the model ``config`` and the measured
``quality``) and updates only the ``diffusion_digits`` entry of
``datasets/manifest.json``. The quality is that of 200 digits (20 per class)
sampled with 20 deterministic DDIM steps (written here, independent of the
lab's tasks), scored by ``helpers.models.load_baseline()`` (VGGDigits, 16x16).

The training loop is written out rather than ``helpers.train.train``: the
model takes ``(x_t, t, labels)`` and the loss is on sampled noise, which that
loop (``model(x)`` and a classification loss) does not express.

    python datasets/build_diffusion_digits.py      # about 10 minutes on one thread
"""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers import diffusion  # noqa: E402
from helpers.models import save_checkpoint  # noqa: E402
from helpers.data import load_digits  # noqa: E402
from helpers.train import seed_everything  # noqa: E402

SEED = 0
STEPS = 2400
BATCH = 128
LR = 2e-3
EMA = 0.995
CONFIG = {"base": 32, "num_classes": 10, "emb_dim": 64}


@torch.no_grad()
def ddim20(model, labels, gen):
    """20 deterministic DDIM steps (the quality figure stored in the manifest)."""
    ab = diffusion.ALPHA_BAR
    ts = diffusion.spaced_timesteps(20)
    x = torch.randn(len(labels), 1, diffusion.SIZE, diffusion.SIZE, generator=gen)
    for i, t in enumerate(ts):
        a_t, a_p = ab[t].item(), (ab[ts[i + 1]].item() if i + 1 < len(ts) else 1.0)
        eps = model(x, torch.full((len(labels),), t), labels)
        x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
        x = a_p ** 0.5 * x0 + (1 - a_p) ** 0.5 * eps
    return diffusion.to_image(x)


def main() -> None:
    torch.set_num_threads(1)  # thread count changes float summation order
    seed_everything(SEED)
    x_all, y_all = load_digits("train", size=diffusion.SIZE)
    x_all = diffusion.to_model_range(x_all)
    model = diffusion.TinyUNet(**CONFIG)
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=STEPS, pct_start=0.05)
    gen = torch.Generator().manual_seed(SEED)
    start, running = time.time(), 0.0
    for step in range(STEPS):
        idx = torch.randint(0, len(x_all), (BATCH,), generator=gen)
        x0, y = x_all[idx], y_all[idx]
        t = torch.randint(0, diffusion.T_STEPS, (BATCH,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        loss = F.mse_loss(model(diffusion.add_noise(x0, t, noise), t, y), noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - EMA)
        running = 0.98 * running + 0.02 * loss.item()
        if step % 200 == 0 or step == STEPS - 1:
            print(f"step {step:5d}  loss {running:.4f}  {time.time() - start:.0f} s", flush=True)
    labels = torch.arange(200) % 10
    q = diffusion.quality(ddim20(ema, labels, torch.Generator().manual_seed(1)), labels)
    print(f"DDIM 20 steps, 200 digits: accuracy {q['accuracy']:.3f}, confidence {q['confidence']:.3f}")
    save_checkpoint("diffusion_digits", {"state_dict": ema.state_dict(), "config": CONFIG,
                                         "quality_ddim20": {k: round(v, 4) for k, v in q.items()}},
                    "python datasets/build_diffusion_digits.py",
                    ddim20_accuracy=round(q["accuracy"], 4), ddim20_confidence=round(q["confidence"], 4))


if __name__ == "__main__":
    main()
