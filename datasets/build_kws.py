"""Build lab 16's keyword-spotting corpus: spoken words synthesised with eSpeak NG.

Every utterance is one word spoken by one voice (an English accent of eSpeak NG
combined with a voice variant: 8 accents x 12 variants), at a random speed and
pitch, resampled to 8 kHz, trimmed of leading/trailing silence, peak-normalised
and stored as 8-bit mu-law (G.711-style telephone audio). The 10 keywords
have 60 utterances each; the non-keywords (``_unknown_``) are the 25 other
Speech Commands words (10 utterances each) plus 95 everyday words (6 each,
none a homophone of a keyword), so that the unknown class is varied enough
for a streaming detector to learn what is *not* a keyword. Voices are split
between train / val / test, so the test words are spoken by voices the model
never heard. A babble track (several voices reading sentences at once, no
keyword in them) is stored for noise; white/pink noise is generated at load
time (``helpers.audio``). The corpus is written once, compactly, to
``datasets/kws_words.npz`` (``numpy.savez_compressed``) and its sha256 goes in
the ``kws_words`` entry of ``datasets/manifest.json`` (the other entries are
kept). Grading never synthesises audio: only this script needs ``espeak-ng``.

    apt-get install -y espeak-ng     # once
    python datasets/build_kws.py

Seeded; on the same eSpeak NG version a rebuild reproduces the file.
"""
from __future__ import annotations

import io
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers.models import record_in_manifest  # noqa: E402

OUT = ROOT / "datasets" / "kws_words.npz"
SEED = 0
SR = 8000

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow", "zero",
                 "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "learn", "follow",
                 "forward", "visual", "backward")
# more non-keywords (everyday words, no homophone of a keyword): a richer _unknown_ class, so that the
# model learns what is NOT a keyword instead of memorising 25 words; fewer utterances each
EXTRA_UNKNOWN = ("apple", "water", "table", "green", "music", "paper", "window", "garden", "yellow", "orange",
                 "purple", "morning", "evening", "coffee", "river", "mountain", "city", "phone", "kitchen",
                 "doctor", "money", "number", "family", "little", "small", "close", "play", "next", "back",
                 "hello", "thanks", "please", "maybe", "never", "always", "today", "tomorrow", "monday",
                 "friday", "summer", "winter", "chair", "door", "floor", "wall", "book", "pencil", "teacher",
                 "animal", "horse", "mouse", "fish", "rabbit", "lion", "tiger", "bread", "butter", "cheese",
                 "milk", "sugar", "salt", "red", "blue", "black", "white", "brown", "around", "under", "over",
                 "inside", "here", "there", "where", "what", "very", "sun",
                 "moon", "star", "rain", "snow", "wind", "fire", "stone", "sand", "ocean", "island", "bridge",
                 "road", "car", "bus", "train", "plane", "ship", "bike", "sister")
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
           "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")
# utterances per word and split (voices differ between splits)
PER_KEYWORD = {"train": 40, "val": 6, "test": 14}
PER_UNKNOWN = {"train": 7, "val": 1, "test": 2}
PER_EXTRA = {"train": 4, "val": 1, "test": 1}
BABBLE_SECONDS = 30
BABBLE_TEXT = ("the weather was fine and the children walked to the market before lunch",
               "a small boat drifted past the harbour while the sailors mended their nets",
               "she read the letter twice and then put it back in the drawer",
               "the train to the city was late again this morning",
               "they painted the kitchen a pale shade of green last summer",
               "my brother bought a new bicycle with a basket at the front")


def speak(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """eSpeak NG's waveform for ``text`` as float in [-1, 1] at 8 kHz."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                         check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64) / 32768.0
    if rate != 22050:
        raise RuntimeError(f"unexpected eSpeak NG sample rate {rate}")
    return resample_poly(x, 160, 441)


def trim(x: np.ndarray, rel: float = 0.02) -> np.ndarray:
    idx = np.flatnonzero(np.abs(x) > rel * np.abs(x).max())
    return x[max(idx[0] - 80, 0): idx[-1] + 80]


def mu_law(x: np.ndarray, mu: int = 255) -> np.ndarray:
    y = np.sign(x) * np.log1p(mu * np.abs(np.clip(x, -1, 1))) / np.log1p(mu)
    return np.round((y + 1) / 2 * mu).astype(np.uint8)


def main() -> None:
    rng = np.random.default_rng(SEED)
    voices = [f"{a}+{v}" for a in ACCENTS for v in VARIANTS]
    order = rng.permutation(len(voices))
    n_test, n_val = len(voices) // 5, len(voices) // 10
    pools = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    words, voice_ids, splits, speeds, pitches, chunks = [], [], [], [], [], []
    for word in KEYWORDS + UNKNOWN_WORDS + EXTRA_UNKNOWN:
        counts = PER_KEYWORD if word in KEYWORDS else PER_UNKNOWN if word in UNKNOWN_WORDS else PER_EXTRA
        for split, n in counts.items():
            for _ in range(n):
                v = int(rng.choice(pools[split]))
                speed, pitch = int(rng.integers(120, 200)), int(rng.integers(20, 80))
                x = trim(speak(word, voices[v], speed, pitch))
                chunks.append(mu_law(0.9 * x / np.abs(x).max()))
                words.append(word), voice_ids.append(v), splits.append(split)
                speeds.append(speed), pitches.append(pitch)
    # babble: four voices (none of the test voices' ids matter: it is noise) reading sentences, summed
    babble = np.zeros(BABBLE_SECONDS * SR)
    for k in range(4):
        pos = int(rng.integers(0, SR))
        while pos < len(babble):
            text = BABBLE_TEXT[int(rng.integers(len(BABBLE_TEXT)))]
            x = speak(text, voices[int(rng.integers(len(voices)))], int(rng.integers(130, 190)),
                      int(rng.integers(20, 80)))
            x = x[: len(babble) - pos]
            babble[pos: pos + len(x)] += x / (np.abs(x).max() + 1e-9)
            pos += len(x) + int(rng.integers(0, SR // 4))
    babble /= np.abs(babble).max()
    lengths = np.array([len(c) for c in chunks], dtype=np.int32)
    np.savez_compressed(
        OUT, audio=np.concatenate(chunks), lengths=lengths, words=np.array(words), voice=np.array(voice_ids),
        split=np.array(splits), speed=np.array(speeds, dtype=np.int16), pitch=np.array(pitches, dtype=np.int16),
        voices=np.array(voices), babble=mu_law(0.9 * babble), sample_rate=np.int32(SR))
    record_in_manifest("kws_words", OUT, "python datasets/build_kws.py", utterances=len(words), sample_rate=SR,
                       espeak_ng=subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip())
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB, {len(words)} utterances, "
          f"{lengths.sum() / SR:.0f} s of speech)")


if __name__ == "__main__":
    main()
