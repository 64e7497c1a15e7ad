"""Lab 16 (keyword spotting at the edge) machinery: data, noise, streams, training, plots.

What is here is *not* what the students write: the front end (framing,
windowing, mel filterbank, log-mel, MFCC), the DS-CNN, the int8 weight
recipe, the memory planner, the feature ring buffer, posterior smoothing and
detection are the lab's tasks. This module gives:

- :func:`load_corpus`: the shipped eSpeak NG corpus (``datasets/kws_words.npz``,
  built by ``datasets/build_kws.py``), checked against its sha256 in
  ``datasets/manifest.json``; 8 kHz words in three voice-disjoint splits and
  a babble track;
- noise: :func:`noise` (white, pink or babble) and :func:`mix_at_snr`;
- :func:`make_clips`: 1-second clips of the 12 classes (10 keywords,
  ``_unknown_``, ``_silence_``) at a given SNR, with random time shifts;
- :func:`make_stream`: a long recording with keywords at known times (or
  keyword-free) for streaming detection, and :func:`score_detections`;
- :func:`train_kws`: training through :func:`helpers.train.train`;
- plots: :func:`plot_features`, :func:`plot_accuracy_vs_snr`, :func:`plot_stream`.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np

DATASETS_DIR = Path(__file__).resolve().parent.parent / "datasets"
SAMPLE_RATE = 8000
CLIP_SAMPLES = SAMPLE_RATE  # 1-second clips, as in Speech Commands
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN, SILENCE = "_unknown_", "_silence_"
CLASSES = KEYWORDS + (UNKNOWN, SILENCE)
NOISE_KINDS = ("white", "pink", "babble")


# ---------------------------------------------------------------- the corpus

def _mu_law_decode(q: np.ndarray, mu: int = 255) -> np.ndarray:
    y = q.astype(np.float32) / mu * 2 - 1
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu).astype(np.float32)


@functools.lru_cache(maxsize=1)
def load_corpus() -> dict:
    """The shipped corpus after a sha256 check: ``{"words": [str], "audio":
    [float32 arrays in [-1, 1]], "split": [str], "voice": [int], "babble":
    float32 array, "sample_rate": 8000}``. The babble track's first two
    thirds feed train/val noise, the last third test noise and streams."""
    manifest = json.loads((DATASETS_DIR / "manifest.json").read_text())
    entry = manifest["kws_words"]
    path = DATASETS_DIR / entry["file"]
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; rebuild it with `{entry['build']}`")
    if hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
        raise ValueError(f"{path} does not match its checksum in datasets/manifest.json; "
                         f"rebuild it with `{entry['build']}`")
    with np.load(path) as z:
        audio = _mu_law_decode(z["audio"])
        ends = np.cumsum(z["lengths"])
        return {"words": [str(w) for w in z["words"]],
                "audio": np.split(audio, ends[:-1]),
                "split": [str(s) for s in z["split"]],
                "voice": z["voice"].astype(int).tolist(),
                "babble": _mu_law_decode(z["babble"]),
                "sample_rate": int(z["sample_rate"])}


def label_of(word: str) -> int:
    """Class index of a spoken word: its keyword index, or ``_unknown_``."""
    return KEYWORDS.index(word) if word in KEYWORDS else CLASSES.index(UNKNOWN)


# ---------------------------------------------------------------- noise

def noise(kind: str, n: int, rng: np.random.Generator, split: str = "train") -> np.ndarray:
    """``n`` samples of unit-RMS noise: ``white``, ``pink`` (1/f power,
    shaped in the frequency domain) or ``babble`` (a random excerpt of the
    corpus's babble track; ``split`` picks its train or test part)."""
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind == "pink":
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.arange(len(spec), dtype=np.float64)
        f[0] = 1.0
        x = np.fft.irfft(spec / np.sqrt(f), n)
    elif kind == "babble":
        track = load_corpus()["babble"]
        cut = 2 * len(track) // 3
        part = track[cut:] if split == "test" else track[:cut]
        reps = int(np.ceil(n / len(part))) + 1
        part = np.tile(part, reps)
        start = int(rng.integers(0, len(part) - n))
        x = part[start: start + n].astype(np.float64)
    else:
        raise ValueError(f"noise kind {kind!r} is not one of {NOISE_KINDS}")
    return (x / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32)


def mix_at_snr(speech: np.ndarray, noise_: np.ndarray, snr_db: float | None) -> np.ndarray:
    """``speech + g * noise`` with ``g`` chosen so that the speech-to-noise
    power ratio is ``snr_db`` (speech power measured where it is not silent);
    ``snr_db=None`` returns the clean speech."""
    speech = np.asarray(speech, dtype=np.float32)
    if snr_db is None:
        return speech.copy()
    active = speech[np.abs(speech) > 0.02 * (np.abs(speech).max() + 1e-12)]
    p_s = float(np.mean(active ** 2)) if active.size else 1e-4
    p_n = float(np.mean(np.asarray(noise_, dtype=np.float64) ** 2)) + 1e-12
    g = np.sqrt(p_s / (p_n * 10 ** (snr_db / 10)))
    return (speech + g * noise_).astype(np.float32)


# ---------------------------------------------------------------- clips

def make_clips(split: str, per_class: int, snr_db=None, *, seed: int = 0,
               snr_choices=None) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` one-second clips of each of the 12 classes from the
    voices of ``split`` (``"train"``, ``"val"`` or ``"test"``):
    ``(clips float32 [N, 8000], labels int64 [N])``. A word is placed at a
    random offset and gain and mixed with white/pink/babble noise at
    ``snr_db`` (``None``: clean; or, with ``snr_choices``, one SNR drawn per
    clip from that list, ``None`` entries meaning clean). ``_silence_`` clips
    are noise alone (or near-silence) at a random level."""
    rng = np.random.default_rng([seed, ["train", "val", "test"].index(split)])
    corpus = load_corpus()
    by_class = {c: [] for c in range(len(CLASSES))}
    for i, (w, s) in enumerate(zip(corpus["words"], corpus["split"])):
        if s == split:
            by_class[label_of(w)].append(i)
    clips, labels = [], []
    for c in range(len(CLASSES)):
        for k in range(per_class):
            kind = NOISE_KINDS[int(rng.integers(len(NOISE_KINDS)))]
            n = noise(kind, CLIP_SAMPLES, rng, split)
            if CLASSES[c] == SILENCE:
                clip = n * float(10 ** rng.uniform(-3.5, -1))
            else:
                word = corpus["audio"][by_class[c][int(rng.integers(len(by_class[c])))]]
                word = word[:CLIP_SAMPLES] * float(rng.uniform(0.3, 1.0))
                clip = np.zeros(CLIP_SAMPLES, np.float32)
                start = int(rng.integers(0, CLIP_SAMPLES - len(word) + 1))
                clip[start: start + len(word)] = word
                snr = snr_choices[int(rng.integers(len(snr_choices)))] if snr_choices is not None else snr_db
                clip = mix_at_snr(clip, n, snr)
            clips.append(clip)
            labels.append(c)
    return np.stack(clips).astype(np.float32), np.array(labels, dtype=np.int64)


# ---------------------------------------------------------------- streams

def make_stream(seconds: float, *, keywords: bool = True, snr_db: float = 20.0, seed: int = 0,
                gap=(1.0, 2.5), unknown_fraction: float = 0.3, split: str = "test") -> tuple[np.ndarray, list]:
    """A long test-voice recording: words separated by random gaps of
    ``gap`` seconds, over continuous babble+pink background noise at ``snr_db``
    (relative to the words' level). With ``keywords`` a fraction
    ``1 - unknown_fraction`` of the words are keywords; without, the stream
    holds only non-keywords ("keyword-free audio", for false alarms). The
    words are spoken by the voices of ``split`` (``"test"``; ``"val"`` to
    choose an operating point without touching the test voices).
    Returns ``(audio float32, events)`` with events
    ``[(start_sample, end_sample, class_index)]`` of the keywords only."""
    rng = np.random.default_rng([seed, 7 if keywords else 8, ["train", "val", "test"].index(split)])
    corpus = load_corpus()
    test = [i for i, s in enumerate(corpus["split"]) if s == split]
    kw = [i for i in test if corpus["words"][i] in KEYWORDS]
    unk = [i for i in test if corpus["words"][i] not in KEYWORDS]
    n = int(seconds * SAMPLE_RATE)
    speech = np.zeros(n, np.float32)
    events, pos = [], int(rng.uniform(*gap) * SAMPLE_RATE)
    while True:
        use_kw = keywords and rng.random() >= unknown_fraction
        idx = (kw if use_kw else unk)[int(rng.integers(len(kw if use_kw else unk)))]
        word = corpus["audio"][idx] * float(rng.uniform(0.5, 1.0))
        if pos + len(word) >= n:
            break
        speech[pos: pos + len(word)] = word
        if use_kw:
            events.append((pos, pos + len(word), label_of(corpus["words"][idx])))
        pos += len(word) + int(rng.uniform(*gap) * SAMPLE_RATE)
    background = 0.5 * noise("babble", n, rng, split) + noise("pink", n, rng)
    level = 0.25 ** 2 * 0.5  # mean power of an active word at gain ~0.7
    g = np.sqrt(level / (np.mean(background ** 2) * 10 ** (snr_db / 10)))
    return (speech + g * background).astype(np.float32), events


def score_detections(detections, events, n_samples: int, *, hop: int, tolerance_s: float = 1.0) -> dict:
    """Match detections ``[(frame_index, class_index)]`` (``frame_index``
    counted in feature hops of ``hop`` samples, the frame at which the
    detector fired) against ``events`` from :func:`make_stream`: a keyword is
    found when a detection of its class fires between its start and
    ``tolerance_s`` after its end; every other detection is a false alarm.
    Returns ``{"hits", "keywords", "hit_rate", "false_alarms", "hours",
    "false_alarms_per_hour"}``."""
    used = set()
    hits = 0
    for start, end, c in events:
        for j, (t, d) in enumerate(detections):
            s = (int(t) + 1) * hop
            if j not in used and int(d) == c and start <= s <= end + tolerance_s * SAMPLE_RATE:
                used.add(j)
                hits += 1
                break
    false_alarms = len(detections) - len(used)
    hours = n_samples / SAMPLE_RATE / 3600
    return {"hits": hits, "keywords": len(events), "hit_rate": hits / max(len(events), 1),
            "false_alarms": false_alarms, "hours": hours, "false_alarms_per_hour": false_alarms / hours}


# ---------------------------------------------------------------- training

def train_kws(model, x, y, *, epochs: int, batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
              progress: bool = True) -> list[float]:
    """Train ``model`` on features ``x`` ``[N, 1, T, F]`` and labels ``y``
    with Adam and a cosine learning-rate schedule, one
    :func:`helpers.train.train` call per epoch, on CPU. Returns the losses."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from helpers.train import train

    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)),
                        batch_size=batch_size, shuffle=True, generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    losses = []
    for _ in range(epochs):
        losses += train(model, loader, epochs=1, optimizer=opt, device="cpu", progress=progress)
        sched.step()
    return losses


def predict(model, x, batch_size: int = 512) -> np.ndarray:
    """Class predictions of a float model on features ``x`` ``[N, 1, T, F]``."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(model(torch.as_tensor(x[i: i + batch_size], dtype=torch.float32)).argmax(1).numpy())
    return np.concatenate(out)


# ---------------------------------------------------------------- grading probes (plain data out)

def describe_model(build, kwargs: dict, input_shape=(2, 1, 49, 10)) -> dict:
    """Probe for the grader: build ``build(**kwargs)`` and report its leaf
    layers in order (type and hyper-parameters), its output shape on zeros of
    ``input_shape``, and whether :func:`helpers.tinyml.quantize_model` accepts it."""
    import torch
    from torch import nn

    model = build(**kwargs)
    layers = []
    for m in model.modules():
        if len(list(m.children())):
            continue
        row = {"type": type(m).__name__}
        if isinstance(m, nn.Conv2d):
            row.update(in_channels=m.in_channels, out_channels=m.out_channels, kernel=list(m.kernel_size),
                       stride=list(m.stride), padding=list(m.padding), groups=m.groups, bias=m.bias is not None)
        elif isinstance(m, nn.Linear):
            row.update(in_features=m.in_features, out_features=m.out_features, bias=m.bias is not None)
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,)
            row.update(output_size="1" if all(v == 1 for v in size) else str(m.output_size))
        layers.append(row)
    with torch.no_grad():
        shape = list(model(torch.zeros(*input_shape)).shape)
    try:
        from helpers import tinyml

        tinyml.quantize_model(model, torch.rand(*input_shape))
        quantizable = ""
    except Exception as exc:  # noqa: BLE001 - reported as text
        quantizable = f"{type(exc).__name__}: {exc}"
    return {"layers": layers, "output_shape": shape, "quantize_error": quantizable}


def ring_probe(cls, n_frames: int, n_features: int, frames, query_after) -> dict:
    """Probe for the grader: push ``frames`` one by one into ``cls(n_frames,
    n_features)`` and return the windows read after the pushes counted in
    ``query_after``, with the largest number of values the object held."""
    ring = cls(n_frames, n_features)
    windows, held = [], 0
    for k, frame in enumerate(np.asarray(frames, dtype=np.float32), start=1):
        ring.push(frame.copy())
        size = 0
        for v in vars(ring).values():
            if isinstance(v, np.ndarray):
                size += v.size
            elif isinstance(v, (list, tuple)) or type(v).__name__ == "deque":
                size += sum(np.size(e) for e in v)
        held = max(held, size)
        if k in set(query_after):
            windows.append(np.asarray(ring.window(), dtype=np.float64))
    return {"windows": windows, "held": held}
