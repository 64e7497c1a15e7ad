"""Lab 16's graded checks, run by the grader against the student's kernel
(``autograder.trusted``); never released to students.

The front end (Tasks 1.1-1.4) is compared with ``librosa`` (the oracle, run
here) through ``helpers.probes.call_plain``, which also reports whether
librosa, scipy's FFT/DCT or signal code ran during the student's call (the
task is to write them). The DS-CNN (2.1) is described layer by layer in the
kernel by ``helpers.audio.describe_model``; the ring buffer (4.1) is driven by
``helpers.audio.ring_probe``. Every expected value is computed here.
"""
import numpy as np
import torch

from autograder.trusted import ModuleSpec, Ref, task
from helpers.checks import check, check_close, check_equal, check_shape

FORBID = ["librosa", "scipy.signal", "scipy.fft", "scipy.fftpack", "torchaudio", "python_speech_features"]


def _call(student, t, name, *args, catch=False, **kwargs):
    out = student.call("helpers.probes.call_plain", Ref(name), list(args), dict(kwargs), catch, FORBID)
    check(type(out) is dict and "value" in out, f"calling {name} gave an unreadable answer.", task=t)
    if out["forbidden"]:
        check(False, f"your {name} called {out['forbidden']}: librosa/scipy are the reference the tests compare "
              "with; write it with numpy.", task=t)
    return out


def _arr(value, t, name):
    try:
        return np.asarray(value.detach().numpy() if hasattr(value, "detach") else value, dtype=np.float64)
    except (TypeError, ValueError):
        check(False, f"{name} must be an array of numbers, got {type(value).__name__}", task=t)


# ---------------------------------------------------------------- Part 1: the front end (librosa oracle)

@task("task_1_1_framing")
def framing(student):
    import librosa
    from scipy.signal import get_window

    t = "1.1"
    rng = np.random.default_rng(11)
    for n, fl, hop in ((20, 8, 4), (8000, 256, 160), (1001, 200, 80), (50, 10, 10), (64, 16, 24), (256, 256, 160)):
        x = rng.standard_normal(n)
        got = _arr(_call(student, t, "frame_signal", x, fl, hop)["value"], t, "frame_signal's result")
        want = librosa.util.frame(x, frame_length=fl, hop_length=hop).T
        check_shape(got, want.shape, name=f"frames of {n} samples (frame {fl}, hop {hop})", task=t,
                    hint="n_frames = 1 + (len(x) - frame_length) // hop_length; frames start every hop_length")
        check_close(got, want, atol=0, rtol=0, name=f"frames of {n} samples (frame {fl}, hop {hop})", task=t)
    out = _call(student, t, "frame_signal", np.zeros(100), 256, 160, catch=True)
    check(out["raised"] is not None and "ValueError" in out["raised"],
          "frame_signal of a signal shorter than one frame must raise ValueError", task=t)
    for n in (8, 256, 400, 7):
        got = _arr(_call(student, t, "hann_window", n)["value"], t, "hann_window's result")
        check_close(got, get_window("hann", n, fftbins=True), atol=1e-9, name=f"hann_window({n})", task=t,
                    hint="the periodic Hann window: 0.5 - 0.5 cos(2 pi k / n)")


@task("task_1_2_mel_filterbank")
def mel_filterbank(student):
    import librosa

    t = "1.2"
    check_close(_arr(_call(student, t, "hz_to_mel", [0.0, 700.0, 4000.0])["value"], t, "hz_to_mel"),
                librosa.hz_to_mel(np.array([0.0, 700.0, 4000.0]), htk=True), rtol=1e-9, atol=1e-9,
                name="hz_to_mel([0, 700, 4000])", task=t, hint="HTK: 2595 log10(1 + f / 700)")
    check_close(_arr(_call(student, t, "mel_to_hz", [0.0, 500.0, 2146.06])["value"], t, "mel_to_hz"),
                librosa.mel_to_hz(np.array([0.0, 500.0, 2146.06]), htk=True), rtol=1e-9, atol=1e-9,
                name="mel_to_hz", task=t)
    for sr, n_fft, n_mels, fmin, fmax in ((8000, 256, 40, 20.0, 4000.0), (16000, 512, 64, 0.0, None),
                                          (8000, 200, 23, 100.0, 3500.0), (22050, 1024, 128, 0.0, 8000.0)):
        got = _arr(_call(student, t, "mel_filterbank", sr, n_fft, n_mels, fmin, fmax)["value"], t, "filterbank")
        want = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=True, norm=None)
        check_shape(got, want.shape, name=f"mel_filterbank({sr}, {n_fft}, {n_mels})", task=t,
                    hint="[n_mels, n_fft // 2 + 1]")
        check_close(got, want, atol=1e-5, rtol=1e-4, name=f"mel_filterbank({sr}, {n_fft}, {n_mels}, {fmin}, {fmax})",
                    task=t, hint="edges equally spaced in mel (HTK), triangles linear in Hz, peak 1")


@task("task_1_3_log_mel")
def log_mel(student):
    import librosa

    t = "1.3"
    rng = np.random.default_rng(13)
    tt = np.arange(8000) / 8000
    cases = [(np.sin(2 * np.pi * 440 * tt) + 0.1 * rng.standard_normal(8000), 8000, 256, 160, 40, 20.0, 4000.0),
             (rng.standard_normal(4000) * np.linspace(0, 1, 4000), 8000, 256, 128, 32, 0.0, None),
             (np.concatenate([np.zeros(1000), rng.standard_normal(2000)]), 16000, 512, 256, 64, 0.0, 8000.0)]
    for x, sr, n_fft, hop, n_mels, fmin, fmax in cases:
        got = _arr(_call(student, t, "log_mel_spectrogram", x, sr, n_fft, hop, n_mels, fmin, fmax)["value"], t,
                   "log_mel_spectrogram")
        s = librosa.feature.melspectrogram(y=x, sr=sr, n_fft=n_fft, hop_length=hop, win_length=n_fft, window="hann",
                                           center=False, power=2.0, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=True,
                                           norm=None)
        want = np.log(s + 1e-6)
        check_shape(got, want.shape, name=f"log-mel ({len(x)} samples, hop {hop}, {n_mels} mels)", task=t,
                    hint="[n_mels, n_frames], no padding")
        check(bool(np.all(np.isfinite(got))), "the log-mel has -inf/nan values: add EPS = 1e-6 before the log",
              task=t)
        check_close(got, want, atol=2e-4, rtol=1e-4, name=f"log-mel ({len(x)} samples, {n_mels} mels)", task=t,
                    hint="Hann-windowed frames, POWER spectrum |rfft|**2, mel filters, natural log(. + 1e-6)")


@task("task_1_4_mfcc")
def mfcc(student):
    import librosa

    t = "1.4"
    rng = np.random.default_rng(14)
    for n_mels, n_frames, n_mfcc in ((40, 49, 10), (40, 5, 40), (23, 7, 13), (64, 3, 1)):
        s = rng.standard_normal((n_mels, n_frames)) * 3 - 5
        got = _arr(_call(student, t, "mfcc", s, n_mfcc)["value"], t, "mfcc")
        want = librosa.feature.mfcc(S=s, n_mfcc=n_mfcc, dct_type=2, norm="ortho")
        check_shape(got, want.shape, name=f"mfcc of [{n_mels}, {n_frames}]", task=t,
                    hint="[n_mfcc, n_frames]: the DCT runs along the mel axis")
        check_close(got, want, atol=1e-6, rtol=1e-6, name=f"mfcc({n_mfcc}) of [{n_mels}, {n_frames}]", task=t,
                    hint="orthonormal DCT-II: sqrt(2/N), and c0 divided by sqrt(2)")


# ---------------------------------------------------------------- Part 2: the DS-CNN

def _ref_layers(n_classes, channels, n_blocks):
    conv = lambda ci, co, k, s, p, g: {"type": "Conv2d", "in_channels": ci, "out_channels": co, "kernel": [k, k],  # noqa: E731
                                       "stride": [s, s], "padding": [p, p], "groups": g, "bias": True}
    relu = {"type": "ReLU6"}
    layers = [conv(1, channels, 3, 2, 1, 1), relu]
    for _ in range(n_blocks):
        layers += [conv(channels, channels, 3, 1, 1, channels), relu, conv(channels, channels, 1, 1, 0, 1), relu]
    return layers + [{"type": "AdaptiveAvgPool2d", "output_size": "1"}, {"type": "Flatten"},
                     {"type": "Linear", "in_features": channels, "out_features": n_classes, "bias": True}]


@task("task_2_1_ds_cnn")
def ds_cnn(student):
    t = "2.1"
    for kwargs in ({"n_classes": 12, "channels": 64, "n_blocks": 4}, {"n_classes": 5, "channels": 16, "n_blocks": 2},
                   {"n_classes": 12, "channels": 32, "n_blocks": 5}):
        got = student.call("helpers.audio.describe_model", Ref("ds_cnn"), kwargs)
        check(type(got) is dict and "layers" in got, "ds_cnn could not be described", task=t)
        want = _ref_layers(kwargs["n_classes"], kwargs["channels"], kwargs["n_blocks"])
        layers = got["layers"]
        check_equal(len(layers), len(want), name=f"number of layers of ds_cnn(**{kwargs})", task=t)
        for i, (g, w) in enumerate(zip(layers, want)):
            check_equal(g, w, name=f"layer {i} of ds_cnn(**{kwargs})", task=t,
                        hint="stem conv (stride 2) + ReLU6, then per block depthwise 3x3 (groups=channels) + ReLU6, "
                        "pointwise 1x1 + ReLU6; pool, flatten, linear")
        check_equal(got["output_shape"], [2, kwargs["n_classes"]], name="output shape", task=t)
        check(got["quantize_error"] == "", f"tinyml.quantize_model rejects the model: {got['quantize_error']}", task=t)


# ---------------------------------------------------------------- Part 3: int8 and memory

@task("task_3_1_int8_recipe")
def int8_recipe(student):
    from helpers.tinyml import _qparams

    t = "3.1"
    g = torch.Generator().manual_seed(31)
    for shape in ((8, 4, 3, 3), (16, 1, 3, 3), (12, 64), (3, 5)):
        w = torch.randn(*shape, generator=g) * torch.logspace(-3, 0, shape[0]).view(-1, *[1] * (len(shape) - 1))
        if shape == (3, 5):
            w[1] = 0.0
        out = student.call("quantize_weight_per_channel", w)
        check(isinstance(out, (tuple, list)) and len(out) == 2, "return (q, scales)", task=t)
        q, scales = out
        check(isinstance(q, torch.Tensor) and q.dtype == torch.int8, "codes must be a torch.int8 tensor", task=t)
        check_shape(q, shape, name="codes", task=t)
        s = torch.as_tensor(scales).double().flatten()
        check_shape(s, (shape[0],), name="scales", task=t, hint="one scale per output channel (dim 0)")
        w2 = w.double().reshape(shape[0], -1)
        want_s = w2.abs().amax(1) / 127
        nz = want_s > 0
        check_close(s[nz], want_s[nz], rtol=1e-6, name=f"scales of a {shape} weight", task=t, hint="max|w_c| / 127")
        check(bool((s > 0).all()), "every scale must be positive (a zero channel too)", task=t)
        want_q = torch.round(w2 / torch.where(nz, want_s, torch.ones_like(want_s))[:, None]).clamp(-127, 127)
        diff = (q.double().reshape(shape[0], -1) - want_q).abs()
        check(int(diff.max()) <= 1 and float((diff > 0).double().mean()) < 0.01,
              f"codes of a {shape} weight differ from round(w / S_c) clamped to [-127, 127]", task=t)
    for lo, hi in ((0.0, 6.0), (-1.5, 2.0), (0.5, 2.0), (-3.0, -1.0), (-0.01, 100.0), (0.0, 0.0)):
        out = student.call("activation_qparams", lo, hi)
        check(isinstance(out, (tuple, list)) and len(out) == 2, "return (scale, zero_point)", task=t)
        sc, zp = out
        want_sc, want_zp = _qparams(lo, hi)
        check(isinstance(zp, (int, np.integer)) and not isinstance(zp, bool), "the zero point must be an int", task=t)
        check_close(float(sc), want_sc, rtol=1e-9, name=f"scale of [{lo}, {hi}]", task=t,
                    hint="extend the range to contain 0, then (hi - lo) / 255")
        check_equal(int(zp), want_zp, name=f"zero point of [{lo}, {hi}]", task=t,
                    hint="clamp(round(-128 - lo / scale), -128, 127)")


def _toy(shapes, ops):
    from helpers import tinyml

    return tinyml.toy_graph(shapes, ops)


def _ref_plan(graph, inplace):
    life = {graph.input: (-1, -1)}
    for i, op in enumerate(graph.ops):
        life[op.output] = (i, i)
        for name in op.inputs:
            life[name] = (life[name][0], i)
    usage = [sum(graph.tensors[n].nbytes for n, (f, l) in life.items() if f <= i <= l) for i in range(len(graph.ops))]
    if inplace:
        for i, op in enumerate(graph.ops):
            src, dst = graph.tensors[op.inputs[0]], graph.tensors[op.output]
            if op.kind == "dwconv" and life[src.name][1] == i and dst.nbytes <= src.nbytes:
                usage[i] += src.shape[0] * src.shape[1] - dst.nbytes
    return usage


def _spec(graph):
    tensors = {n: (list(tt.shape), tt.scale, tt.zero_point) for n, tt in graph.tensors.items()}
    ops = [{"name": op.name, "kind": op.kind, "inputs": list(op.inputs), "output": op.output, "kernel": op.kernel,
            "stride": op.stride, "padding": op.padding} for op in graph.ops]
    return ModuleSpec("helpers.probes.tinyml_graph", {"tensors": tensors, "ops": ops, "input": graph.input,
                                                       "output": graph.output})


@task("task_3_2_plan_memory")
def plan_memory(student):
    t = "3.2"
    graphs = [
        _toy({"x": (8, 8, 4), "a": (4, 4, 16), "b": (4, 4, 16), "c": (4, 4, 16), "p": (16,), "y": (12,)},
             [("conv", ["x"], "a", 3, 2, 1), ("dwconv", ["a"], "b", 3, 1, 1), ("conv", ["b"], "c"),
              ("avgpool", ["c"], "p"), ("linear", ["p"], "y")]),
        # a residual: the block input stays alive across the block, so its dwconv cannot go in place
        _toy({"x": (10, 10, 2), "a": (10, 10, 8), "b": (10, 10, 8), "c": (10, 10, 8), "d": (10, 10, 8),
              "p": (8,), "y": (3,)},
             [("conv", ["x"], "a"), ("dwconv", ["a"], "b", 3, 1, 1), ("conv", ["b"], "c"), ("add", ["a", "c"], "d"),
              ("avgpool", ["d"], "p"), ("linear", ["p"], "y")]),
        # a strided depthwise (smaller output) in a DS-CNN-like chain
        _toy({"x": (25, 5, 1), "a": (13, 3, 32), "b": (13, 3, 32), "c": (7, 2, 32), "d": (7, 2, 48), "p": (48,),
              "y": (12,)},
             [("conv", ["x"], "a", 3, 2, 1), ("dwconv", ["a"], "b", 3, 1, 1), ("dwconv", ["b"], "c", 3, 2, 1),
              ("conv", ["c"], "d"), ("avgpool", ["d"], "p"), ("linear", ["p"], "y")]),
    ]
    for k, g in enumerate(graphs):
        for inplace in (False, True):
            got = student.call("plan_memory", _spec(g), inplace)
            check(isinstance(got, (list, tuple)), "plan_memory must return a list (one int per op)", task=t)
            check_equal([int(v) for v in got], _ref_plan(g, inplace), name=f"usage per op of graph {k} "
                        f"(inplace={inplace})", task=t,
                        hint="a tensor lives from its producer to its last reader; in place only when the dwconv's "
                        "input dies there")


# ---------------------------------------------------------------- Part 4: streaming

@task("task_4_1_ring_buffer")
def ring_buffer(student):
    t = "4.1"
    rng = np.random.default_rng(41)
    for n_frames, n_feat, n_push in ((4, 2, 6), (49, 10, 130), (5, 3, 5), (3, 1, 2), (7, 4, 64)):
        frames = rng.standard_normal((n_push, n_feat)).astype(np.float32)
        queries = sorted({1, n_frames - 1, n_frames, n_frames + 1, n_push, max(1, n_push // 2)} - {0})
        queries = [q for q in queries if 1 <= q <= n_push]
        out = student.call("helpers.audio.ring_probe", Ref("FeatureRing"), n_frames, n_feat, frames, queries)
        for q, win in zip(queries, out["windows"]):
            want = np.zeros((n_frames, n_feat))
            last = frames[max(0, q - n_frames): q]
            want[n_frames - len(last):] = last
            check_shape(win, (n_frames, n_feat), name=f"window after {q} pushes", task=t)
            check_close(win, want, atol=1e-6, name=f"window after {q} pushes (ring of {n_frames})", task=t,
                        hint="oldest first; each push overwrites the oldest row; unwritten rows are zeros at the front")
        check(out["held"] <= 2 * n_frames * n_feat + 16, f"after {n_push} pushes the ring holds {out['held']} values "
              f"for a window of {n_frames * n_feat}: keep n_frames rows, not every frame", task=t)


def _ref_smooth(p, w):
    return np.stack([p[max(0, i - w + 1): i + 1].mean(0) for i in range(len(p))])


@task("task_4_2_smoothing")
def smoothing(student):
    t = "4.2"
    rng = np.random.default_rng(42)
    for steps, classes, w in ((4, 2, 2), (50, 12, 3), (10, 12, 1), (7, 3, 20), (30, 5, 6)):
        p = rng.dirichlet(np.ones(classes), size=steps)
        got = _arr(student.call("smooth_posteriors", p, w), t, "smooth_posteriors")
        check_shape(got, p.shape, name=f"smoothed [{steps}, {classes}]", task=t)
        check_close(got, _ref_smooth(p, w), atol=1e-9, name=f"smoothing over {w} steps", task=t,
                    hint="row t is the mean of rows max(0, t-window+1)..t: causal, the available rows at the start")


def _ref_detect(s, th, refr, nk):
    dets, last = [], None
    for i, row in enumerate(s):
        c = int(np.argmax(row[:nk]))
        if row[c] > th and (last is None or i - last >= refr):
            dets.append((i, c))
            last = i
    return dets


@task("task_4_3_detection")
def detection(student):
    t = "4.3"
    rng = np.random.default_rng(43)
    cases = []
    s = np.zeros((8, 12))
    s[2:5, 3] = 0.9
    s[7, 11] = 0.99
    s[6, 1] = 0.8
    cases.append((s, 0.5, 3, 10))
    s = np.zeros((20, 12))
    s[:, 10] = 0.95                  # unknown dominates everywhere: no detection
    s[5:9, 2] = 0.6                  # a keyword above threshold but below unknown
    s[12, 4] = 0.5                   # exactly at the threshold: not strictly above
    cases.append((s, 0.5, 4, 10))
    for _ in range(3):
        s = rng.dirichlet(np.ones(12) * 0.3, size=200)
        cases.append((s, 0.6, int(rng.integers(2, 12)), 10))
    s = np.zeros((12, 5))
    s[[0, 3, 6, 9], 1] = 0.9         # detections exactly `refractory` apart are all kept
    cases.append((s, 0.5, 3, 3))
    for s, th, refr, nk in cases:
        got = student.call("detect", s, th, refr, nk)
        check(isinstance(got, (list, tuple)), "detect must return a list of (step, class)", task=t)
        got = [tuple(int(v) for v in d) for d in got]
        check_equal(got, _ref_detect(s, th, refr, nk), name=f"detections (threshold {th}, refractory {refr})", task=t,
                    hint="best of the first n_keywords columns, strictly above threshold, and t - t_last >= refractory")
