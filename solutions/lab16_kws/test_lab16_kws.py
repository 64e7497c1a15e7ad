"""Lab 16's trusted checks pass the reference solution, pass correct
solutions written differently, and fail the typical mistakes (run with
``pytest solutions/lab16_kws`` or ``-m lab16_kws``)."""
import pytest

from autograder.labtest import lab_tests

LAB = "lab16_kws"
pytestmark = pytest.mark.lab16_kws

# The solution cells only define functions; they need the set-up cell's imports, not its data.
PREAMBLE = """
import math
import numpy as np
import torch
from torch import nn
from helpers import audio, figures, tinyml
QUICK, SEED = True, 0
"""

# name: (solution cell, fragment, replacement, the test cell that must fail)
MISTAKES = {
    # ---- 1.1
    "framing: frames do not overlap (step = frame length)": (
        "task_1_1_framing_code", "n_frames = 1 + (len(x) - frame_length) // hop_length\n"
        "    idx = hop_length * np.arange(n_frames)[:, None]",
        "n_frames = len(x) // frame_length\n    idx = frame_length * np.arange(n_frames)[:, None]", "task_1_1_framing"),
    "framing: the last whole frame dropped": (
        "task_1_1_framing_code", "n_frames = 1 + (len(x) - frame_length) // hop_length",
        "n_frames = (len(x) - frame_length) // hop_length", "task_1_1_framing"),
    "framing: symmetric Hann (np.hanning)": (
        "task_1_1_framing_code", "return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)", "return np.hanning(n)",
        "task_1_1_framing"),
    "framing: a too-short signal gives no frames instead of ValueError": (
        "task_1_1_framing_code",
        'raise ValueError(f"a signal of {len(x)} samples is shorter than one frame ({frame_length})")',
        "return np.zeros((0, frame_length))", "task_1_1_framing"),
    "framing: librosa.util.frame": (
        "task_1_1_framing_code", "    idx = hop_length * np.arange(n_frames)[:, None] + np.arange(frame_length)[None, :]\n"
        "    return x[idx]",
        "    import librosa\n    return librosa.util.frame(x, frame_length=frame_length, hop_length=hop_length).T",
        "task_1_1_framing"),
    # ---- 1.2
    "mel: edges equally spaced in Hz (linear scale)": (
        "task_1_2_mel_filterbank_code", "edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))",
        "edges = np.linspace(fmin, fmax, n_mels + 2)", "task_1_2_mel_filterbank"),
    "mel: natural log in the mel formula": (
        "task_1_2_mel_filterbank_code", "return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)",
        "return 2595.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)", "task_1_2_mel_filterbank"),
    "mel: triangles linear in mel, not in Hz": (
        "task_1_2_mel_filterbank_code",
        "rising = (freqs[None, :] - lower) / (center - lower)\n"
        "    falling = (upper - freqs[None, :]) / (upper - center)",
        "fm, lo_m, c_m, up_m = hz_to_mel(freqs)[None, :], hz_to_mel(lower), hz_to_mel(center), hz_to_mel(upper)\n"
        "    rising = (fm - lo_m) / (c_m - lo_m)\n    falling = (up_m - fm) / (up_m - c_m)", "task_1_2_mel_filterbank"),
    "mel: n_mels edges instead of n_mels + 2": (
        "task_1_2_mel_filterbank_code", "n_mels + 2))", "n_mels))", "task_1_2_mel_filterbank"),
    # ---- 1.3
    "log-mel: magnitude instead of power spectrum": (
        "task_1_3_log_mel_code", "power = np.abs(np.fft.rfft(frames, axis=1)) ** 2",
        "power = np.abs(np.fft.rfft(frames, axis=1))", "task_1_3_log_mel"),
    "log-mel: log of zero (no epsilon)": (
        "task_1_3_log_mel_code", "@ power.T + EPS)", "@ power.T)", "task_1_3_log_mel"),
    "log-mel: no window": (
        "task_1_3_log_mel_code", "n_fft, hop_length) * hann_window(n_fft)", "n_fft, hop_length)", "task_1_3_log_mel"),
    "log-mel: log10": ("task_1_3_log_mel_code", "return np.log(", "return np.log10(", "task_1_3_log_mel"),
    "log-mel: calls librosa": (
        "task_1_3_log_mel_code",
        "    frames = frame_signal(np.asarray(x, dtype=np.float64), n_fft, hop_length) * hann_window(n_fft)\n"
        "    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2\n"
        "    return np.log(mel_filterbank(sr, n_fft, n_mels, fmin, fmax) @ power.T + EPS)",
        "    import librosa\n    return np.log(librosa.feature.melspectrogram(y=np.asarray(x, dtype=np.float64), sr=sr, "
        "n_fft=n_fft, hop_length=hop_length, center=False, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=True, norm=None) "
        "+ EPS)", "task_1_3_log_mel"),
    # ---- 1.4
    "mfcc: DCT without the orthonormal c0 factor": (
        "task_1_4_mfcc_code", "    basis[0] /= np.sqrt(2.0)\n", "", "task_1_4_mfcc"),
    "mfcc: unnormalised DCT-II (scipy's norm=None)": (
        "task_1_4_mfcc_code", " * np.sqrt(2.0 / n)\n    basis[0] /= np.sqrt(2.0)", " * 2.0", "task_1_4_mfcc"),
    "mfcc: DCT-III instead of DCT-II": (
        "task_1_4_mfcc_code",
        "basis = np.cos(np.pi * k * (2 * np.arange(n)[None, :] + 1) / (2 * n)) * np.sqrt(2.0 / n)\n"
        "    basis[0] /= np.sqrt(2.0)\n    return basis @ log_mel",
        "basis = np.cos(np.pi * np.arange(n)[None, :] * (2 * k + 1) / (2 * n)) * np.sqrt(2.0 / n)\n"
        "    basis[:, 0] /= np.sqrt(2.0)\n    return basis @ log_mel", "task_1_4_mfcc"),
    "mfcc: scipy.fft.dct": (
        "task_1_4_mfcc_code", "    return basis @ log_mel",
        "    import scipy.fft\n    return scipy.fft.dct(log_mel, type=2, norm='ortho', axis=0)[:n_mfcc]",
        "task_1_4_mfcc"),
    # ---- 2.1
    "ds-cnn: a standard conv instead of depthwise": (
        "task_2_1_ds_cnn_code", ", groups=channels)", ")", "task_2_1_ds_cnn"),
    "ds-cnn: BatchNorm in the blocks": (
        "task_2_1_ds_cnn_code", "nn.Conv2d(channels, channels, 1), nn.ReLU6()]",
        "nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels), nn.ReLU6()]", "task_2_1_ds_cnn"),
    "ds-cnn: ReLU instead of ReLU6": (
        "task_2_1_ds_cnn_code", "padding=1), nn.ReLU6()]", "padding=1), nn.ReLU()]", "task_2_1_ds_cnn"),
    "ds-cnn: stem with stride 1": (
        "task_2_1_ds_cnn_code", "3, stride=2, padding=1)", "3, stride=1, padding=1)", "task_2_1_ds_cnn"),
    # ---- 3.1
    "int8: one scale for the whole tensor": (
        "task_3_1_int8_recipe_code", "max_abs = w.reshape(w.shape[0], -1).abs().amax(dim=1)",
        "max_abs = w.abs().max().expand(w.shape[0])", "task_3_1_int8_recipe"),
    "int8: scale max|w| / 128": (
        "task_3_1_int8_recipe_code", "min=1e-12) / 127.0", "min=1e-12) / 128.0", "task_3_1_int8_recipe"),
    "int8: activation range not extended to 0": (
        "task_3_1_int8_recipe_code", "lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)",
        "lo, hi = float(lo), float(hi)", "task_3_1_int8_recipe"),
    "int8: zero point with the wrong sign": (
        "task_3_1_int8_recipe_code", "round(-128 - lo / scale)", "round(-128 + lo / scale)", "task_3_1_int8_recipe"),
    # ---- 3.2
    "planner: tensors never freed": (
        "task_3_2_plan_memory_code", "if first <= i <= last)", "if first <= i)", "task_3_2_plan_memory"),
    "planner: every depthwise in place (even when its input lives on)": (
        "task_3_2_plan_memory_code", 'if op.kind == "dwconv" and life[src.name][1] == i and dst.nbytes <= src.nbytes:',
        'if op.kind == "dwconv":', "task_3_2_plan_memory"),
    "planner: only the op's own input and output": (
        "task_3_2_plan_memory_code",
        "usage = [sum(graph.tensors[t].nbytes for t, (first, last) in life.items() if first <= i <= last)\n"
        "             for i in range(len(graph.ops))]",
        "usage = [sum(graph.tensors[t].nbytes for t in graph.ops[i].inputs) + graph.tensors[graph.ops[i].output].nbytes\n"
        "             for i in range(len(graph.ops))]", "task_3_2_plan_memory"),
    "planner: in place without the one-channel buffer": (
        "task_3_2_plan_memory_code", "usage[i] += src.shape[0] * src.shape[1] - dst.nbytes",
        "usage[i] -= dst.nbytes", "task_3_2_plan_memory"),
    # ---- 4.1
    "ring: overwrites the wrong slot (advances before writing)": (
        "task_4_1_ring_buffer_code",
        "self.buffer[self.pos] = frame\n        self.pos = (self.pos + 1) % len(self.buffer)",
        "self.pos = (self.pos + 1) % len(self.buffer)\n        self.buffer[self.pos] = frame", "task_4_1_ring_buffer"),
    "ring: window not unrolled (storage order)": (
        "task_4_1_ring_buffer_code", "return np.concatenate([self.buffer[self.pos:], self.buffer[:self.pos]])",
        "return self.buffer.copy()", "task_4_1_ring_buffer"),
    "ring: newest first": (
        "task_4_1_ring_buffer_code", "return np.concatenate([self.buffer[self.pos:], self.buffer[:self.pos]])",
        "return np.concatenate([self.buffer[self.pos:], self.buffer[:self.pos]])[::-1]", "task_4_1_ring_buffer"),
    "ring: a growing list of every frame": (
        "task_4_1_ring_buffer_code",
        "    def push(self, frame) -> None:\n        self.buffer[self.pos] = frame\n"
        "        self.pos = (self.pos + 1) % len(self.buffer)\n\n    def window(self) -> np.ndarray:\n"
        "        return np.concatenate([self.buffer[self.pos:], self.buffer[:self.pos]])",
        "        self.frames = []\n\n    def push(self, frame) -> None:\n        self.frames.append(np.array(frame))\n\n"
        "    def window(self) -> np.ndarray:\n        n = len(self.buffer)\n        w = np.zeros_like(self.buffer)\n"
        "        last = self.frames[-n:]\n        if last:\n            w[n - len(last):] = np.stack(last)\n        return w",
        "task_4_1_ring_buffer"),
    # ---- 4.2
    "smoothing: centred window (averages future steps)": (
        "task_4_2_smoothing_code",
        "start = np.maximum(0, t - window + 1)\n    return (csum[t + 1] - csum[start]) / (t + 1 - start)[:, None]",
        "start = np.maximum(0, t - window // 2)\n    end = np.minimum(len(p), start + window)\n"
        "    return (csum[end] - csum[start]) / (end - start)[:, None]", "task_4_2_smoothing"),
    "smoothing: divides by the window at the start (zero padding)": (
        "task_4_2_smoothing_code", "/ (t + 1 - start)[:, None]", "/ window", "task_4_2_smoothing"),
    # ---- 4.3
    "detect: no refractory period (a word counted several times)": (
        "task_4_3_detection_code", "(last is None or t - last >= refractory)", "True", "task_4_3_detection"),
    "detect: unknown/silence may trigger (argmax over all classes)": (
        "task_4_3_detection_code", "c = int(np.argmax(row[:n_keywords]))", "c = int(np.argmax(row))",
        "task_4_3_detection"),
    "detect: threshold not strict": (
        "task_4_3_detection_code", "row[c] > threshold", "row[c] >= threshold", "task_4_3_detection"),
    "detect: refractory off by one": (
        "task_4_3_detection_code", "t - last >= refractory", "t - last > refractory", "task_4_3_detection"),
}

ALTERNATIVES = {
    "framing: sliding_window_view; hann from np.hanning(n + 1)": (
        "task_1_1_framing_code", "    idx = hop_length * np.arange(n_frames)[:, None] + np.arange(frame_length)[None, :]\n"
        "    return x[idx]",
        "    return np.lib.stride_tricks.sliding_window_view(x, frame_length)[::hop_length][:n_frames].copy()",
        "task_1_1_framing"),
    "hann: np.hanning(n + 1)[:-1]": (
        "task_1_1_framing_code", "return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)",
        "return np.hanning(n + 1)[:-1]", "task_1_1_framing"),
    "mel: a loop over filters": (
        "task_1_2_mel_filterbank_code",
        "    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]\n"
        "    rising = (freqs[None, :] - lower) / (center - lower)\n"
        "    falling = (upper - freqs[None, :]) / (upper - center)\n"
        "    return np.maximum(0.0, np.minimum(rising, falling))",
        "    fb = np.zeros((n_mels, len(freqs)))\n    for m in range(n_mels):\n"
        "        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]\n"
        "        for k, f in enumerate(freqs):\n            if lo < f <= c:\n                fb[m, k] = (f - lo) / (c - lo)\n"
        "            elif c < f < hi:\n                fb[m, k] = (hi - f) / (hi - c)\n    return fb",
        "task_1_2_mel_filterbank"),
    "log-mel: real**2 + imag**2, float32 frames": (
        "task_1_3_log_mel_code", "power = np.abs(np.fft.rfft(frames, axis=1)) ** 2",
        "spec = np.fft.rfft(frames, axis=1)\n    power = spec.real ** 2 + spec.imag ** 2", "task_1_3_log_mel"),
    "mfcc: a loop over coefficients": (
        "task_1_4_mfcc_code",
        "    basis = np.cos(np.pi * k * (2 * np.arange(n)[None, :] + 1) / (2 * n)) * np.sqrt(2.0 / n)\n"
        "    basis[0] /= np.sqrt(2.0)\n    return basis @ log_mel",
        "    out = np.zeros((n_mfcc, log_mel.shape[1]))\n    for kk in range(n_mfcc):\n"
        "        w = np.cos(np.pi * kk * (2 * np.arange(n) + 1) / (2 * n))\n"
        "        out[kk] = (w[:, None] * log_mel).sum(0) * math.sqrt((1 if kk else 0.5) * 2 / n)\n    return out",
        "task_1_4_mfcc"),
    "ds-cnn: nested blocks": (
        "task_2_1_ds_cnn_code",
        "    layers = [nn.Conv2d(1, channels, 3, stride=2, padding=1), nn.ReLU6()]\n    for _ in range(n_blocks):\n"
        "        layers += [nn.Conv2d(channels, channels, 3, padding=1, groups=channels), nn.ReLU6(),\n"
        "                   nn.Conv2d(channels, channels, 1), nn.ReLU6()]\n"
        "    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, n_classes))",
        "    stem = nn.Sequential(nn.Conv2d(1, channels, 3, 2, 1), nn.ReLU6())\n"
        "    blocks = [nn.Sequential(nn.Sequential(nn.Conv2d(channels, channels, (3, 3), 1, 1, groups=channels), nn.ReLU6()),\n"
        "                            nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU6())) for _ in range(n_blocks)]\n"
        "    return nn.Sequential(stem, *blocks, nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(1), nn.Linear(channels, n_classes))",
        "task_2_1_ds_cnn"),
    "int8: numpy arithmetic, list results": (
        "task_3_1_int8_recipe_code",
        "    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)\n    scale = max(hi - lo, 1e-8) / 255.0\n"
        "    return scale, int(min(max(round(-128 - lo / scale), -128), 127))",
        "    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)\n    scale = float(max(hi - lo, 1e-8)) / 255\n"
        "    return [scale, int(np.clip(np.round(-128 - lo / scale), -128, 127))]", "task_3_1_int8_recipe"),
    "planner: a tuple, set of live tensors": (
        "task_3_2_plan_memory_code", "    return usage\n", "    return tuple(usage)\n", "task_3_2_plan_memory"),
    "ring: a count and np.roll": (
        "task_4_1_ring_buffer_code", "        return np.concatenate([self.buffer[self.pos:], self.buffer[:self.pos]])",
        "        return np.roll(self.buffer, -self.pos, axis=0)", "task_4_1_ring_buffer"),
    "smoothing: a loop": (
        "task_4_2_smoothing_code",
        "    csum = np.cumsum(np.vstack([np.zeros((1, p.shape[1])), p]), axis=0)\n    t = np.arange(len(p))\n"
        "    start = np.maximum(0, t - window + 1)\n    return (csum[t + 1] - csum[start]) / (t + 1 - start)[:, None]",
        "    return np.array([p[max(0, i - window + 1): i + 1].mean(axis=0) for i in range(len(p))])",
        "task_4_2_smoothing"),
    "detect: lists and a countdown": (
        "task_4_3_detection_code",
        "    detections, last = [], None\n    for t, row in enumerate(np.asarray(smoothed)):\n"
        "        c = int(np.argmax(row[:n_keywords]))\n"
        "        if row[c] > threshold and (last is None or t - last >= refractory):\n"
        "            detections.append((t, c))\n            last = t\n    return detections",
        "    out, wait = [], 0\n    for t in range(len(smoothed)):\n        wait -= 1\n"
        "        keys = list(smoothed[t][:n_keywords])\n        c = keys.index(max(keys))\n"
        "        if keys[c] > threshold and wait <= 0:\n            out.append([t, c])\n            wait = refractory\n"
        "    return out", "task_4_3_detection"),
}

globals().update(lab_tests(LAB, PREAMBLE, MISTAKES, ALTERNATIVES))
