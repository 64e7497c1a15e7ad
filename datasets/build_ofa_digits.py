"""Build lab 04's once-for-all supernet on digits with progressive shrinking.

Seeded and CPU-only (about two minutes on 2 cores). Progressive shrinking
(Cai et al., OFA) trains the largest network first, then lets the kernel
size, the depth and finally the width vary, each phase sampling subnets from
a larger part of the design space; the input resolution varies throughout.
Writes ``datasets/ofa_digits.pt`` (``state_dict``, the test accuracy of the
largest and smallest subnets) and updates the ``ofa_digits`` entry of
``datasets/manifest.json`` without touching the other entries.

    python datasets/build_ofa_digits.py
"""
from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers import ofa  # noqa: E402
from helpers.data import load_digits  # noqa: E402
from helpers.models import save_checkpoint  # noqa: E402
from helpers.train import seed_everything  # noqa: E402

SEED = 0
BATCH = 64
LR = 3e-3
# (phase, epochs, subnets per step): each phase opens one more elastic dimension.
PHASES = (("full", 12, 1), ("kernel", 6, 2), ("depth", 8, 2), ("width", 10, 2))


def sample_for_phase(phase: str, rng: random.Random) -> dict:
    arch = ofa.sample_arch(rng)
    if phase in ("full", "kernel", "depth"):
        arch["e"] = [max(ofa.EXPANDS)] * ofa.NUM_SLOTS
    if phase in ("full", "kernel"):
        arch["d"] = [ofa.MAX_DEPTH] * len(ofa.STAGE_CHANNELS)
    if phase == "full":
        arch["k"] = [max(ofa.KERNELS)] * ofa.NUM_SLOTS
    return arch


def extreme_arch(pick) -> dict:
    return {"r": pick(ofa.RESOLUTIONS), "d": [pick(ofa.DEPTHS)] * len(ofa.STAGE_CHANNELS),
            "k": [pick(ofa.KERNELS)] * ofa.NUM_SLOTS, "e": [pick(ofa.EXPANDS)] * ofa.NUM_SLOTS}


def main() -> None:
    torch.set_num_threads(1)  # thread count changes float summation order
    seed_everything(SEED)
    rng = random.Random(SEED)
    gen = torch.Generator().manual_seed(SEED)
    train_x = {r: load_digits("train", size=r)[0] for r in ofa.RESOLUTIONS}
    train_y = load_digits("train")[1]
    net = ofa.OFASupernet()
    start = time.time()
    for phase, epochs, n_sub in PHASES:
        opt = torch.optim.Adam(net.parameters(), lr=LR)
        steps = epochs * ((len(train_y) + BATCH - 1) // BATCH)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        net.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(train_y), generator=gen).split(BATCH):
                opt.zero_grad()
                for _ in range(n_sub):
                    arch = sample_for_phase(phase, rng)
                    loss = F.cross_entropy(net(train_x[arch["r"]][idx], arch), train_y[idx]) / n_sub
                    loss.backward()
                opt.step()
                sched.step()
        print(f"phase {phase:<6} done after {time.time() - start:.0f}s")
    net.eval()
    accs = {}
    for name, pick in (("largest", max), ("smallest", min)):
        arch = extreme_arch(pick)
        accs[name] = round(ofa.measure_accuracy(ofa.build_subnet(net, arch), "test", arch["r"]), 2)
    print(f"test accuracy: largest {accs['largest']:.2f}%, smallest {accs['smallest']:.2f}%")
    save_checkpoint("ofa_digits", {"state_dict": net.state_dict(), "test_accuracy": accs},
                    "python datasets/build_ofa_digits.py",
                    test_accuracy_largest=accs["largest"], test_accuracy_smallest=accs["smallest"])


if __name__ == "__main__":
    main()
