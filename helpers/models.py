"""Small models the labs share, and loading of the shipped checkpoints."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

DATASETS_DIR = Path(__file__).resolve().parent.parent / "datasets"


class DigitsCNN(nn.Module):
    """Lab 00's CNN for 16x16 digits: two conv blocks and a linear classifier."""

    def __init__(self, channels: tuple[int, int] = (8, 16), num_classes: int = 10, size: int = 16):
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(c2 * (size // 4) ** 2, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


# VGG-style configuration for the compression labs: numbers are conv widths,
# "M" a 2x2 max-pool. Input 1x16x16 -> 64x2x2 before the classifier.
VGG_DIGITS_CFG = (16, 16, "M", 32, 32, "M", 64, 64, "M")


class VGGDigits(nn.Module):
    """The compression labs' baseline: conv-BN-ReLU stacks and one linear layer."""

    def __init__(self, cfg=VGG_DIGITS_CFG, num_classes: int = 10, in_channels: int = 1, size: int = 16):
        super().__init__()
        layers, c = [], in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                size //= 2
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.backbone = nn.Sequential(*layers)
        self.classifier = nn.Linear(c * size * size, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.backbone(x), 1))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_checkpoint(name: str) -> dict:
    """Load ``datasets/<file>`` for the manifest entry ``name`` after checking
    its sha256, so a stale or corrupt checkpoint fails loudly."""
    manifest = json.loads((DATASETS_DIR / "manifest.json").read_text())
    if name not in manifest:
        raise KeyError(f"no checkpoint {name!r} in datasets/manifest.json; known: {sorted(manifest)}")
    entry = manifest[name]
    path = DATASETS_DIR / entry["file"]
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; rebuild it with `{entry['build']}`")
    digest = _sha256(path)
    if digest != entry["sha256"]:
        raise ValueError(f"{path} does not match its checksum in datasets/manifest.json; "
                         f"rebuild it with `{entry['build']}`")
    return torch.load(path, map_location="cpu", weights_only=True)


def record_in_manifest(name: str, path: Path, build: str, **facts) -> None:
    """Write the ``datasets/manifest.json`` entry ``name`` of a file a build
    script under ``datasets/`` made: file, sha256, the command that rebuilds
    it and ``facts`` (its test accuracy...); the other entries stay as they are."""
    manifest_path = DATASETS_DIR / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest[name] = {"file": Path(path).name, "sha256": _sha256(Path(path)), "build": build, **facts}
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"wrote {path} and the {name} entry of {manifest_path}")


def save_checkpoint(name: str, payload: dict, build: str, **facts) -> Path:
    """Save ``payload`` as ``datasets/<name>.pt`` and record it in the manifest."""
    path = DATASETS_DIR / f"{name}.pt"
    torch.save(payload, path)
    record_in_manifest(name, path, build, **facts)
    return path


def load_baseline() -> VGGDigits:
    """The pretrained VGGDigits baseline of labs 01-03, in eval mode."""
    model = VGGDigits()
    model.load_state_dict(load_checkpoint("vgg_digits")["state_dict"])
    return model.eval()
