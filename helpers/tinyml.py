"""TinyML track machinery (labs 04 and 05).

Lab 05 deploys an int8 MobileNetV2-style model to a microcontroller budget.
This module holds what is *not* the technique the students write (memory
planning, patch-based inference, code generation):

- :class:`QGraph`, an int8 model as a list of operators over named tensors,
  built from a float model by :func:`quantize_model` (post-training, per-channel
  symmetric int8 weights, per-tensor asymmetric int8 activations, int32 bias,
  fixed-point requantization: the arithmetic of ``helpers.kernels.int8``);
- the int8 reference: :func:`run_op` and :func:`run_reference` (numpy/torch);
- :func:`mcu_mobilenet`, the float MobileNetV2-style model the lab deploys;
- the C side: :func:`kernel_source` (``helpers/kernels/c/int8.c`` plus
  ``helpers/kernels/c/tinyml_ops.c``), :func:`run_op_c` (the ``add`` and
  ``avgpool`` ops of ``tinyml_ops.c`` on arrays), :func:`c_array` and :func:`compile_model`, which
  compiles a generated C file defining
  ``void model_run(const int8_t *input, int8_t *output)`` and runs it.

Tensors are single images, channels last: ``(H, W, C)``.
"""
from __future__ import annotations

import ctypes
import functools
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from helpers.kernels.cjit import C_SOURCE_DIR

# The C of add_int8 / avgpool_int8, with the other kernels (shipped as package data).
OPS_C = C_SOURCE_DIR / "tinyml_ops.c"
KINDS = ("conv", "dwconv", "add", "avgpool", "linear")
# Generated models compile single-threaded, as a microcontroller runs them.
MCU_FLAGS = ("-O2", "-shared", "-fPIC")


# ---------------------------------------------------------------- the int8 graph

@dataclass
class QTensor:
    name: str
    shape: tuple          # (H, W, C) for feature maps, (N,) for vectors
    scale: float
    zero_point: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class QOp:
    """One int8 operator. ``conv`` weight is ``[OC, K, K, C]``, ``dwconv``
    ``[K, K, C]``, ``linear`` ``[N, K]``; ``multiplier``/``shift`` hold one
    value per output channel (``add``: one per input; ``avgpool``: one)."""
    name: str
    kind: str
    inputs: list
    output: str
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    multiplier: np.ndarray | None = None
    shift: np.ndarray | None = None
    act_min: int = -128
    act_max: int = 127


@dataclass
class QGraph:
    tensors: dict
    ops: list
    input: str = "input"
    output: str = field(default="")

    def macs(self, op: QOp) -> int:
        """Multiply-accumulates of ``op`` for one image."""
        out, inp = self.tensors[op.output], self.tensors[op.inputs[0]]
        if op.kind == "conv":
            return out.nbytes * op.kernel * op.kernel * inp.shape[-1]
        if op.kind == "dwconv":
            return out.nbytes * op.kernel * op.kernel
        if op.kind == "linear":
            return out.nbytes * inp.nbytes
        return 0

    def flash_bytes(self) -> int:
        """Bytes of constant data: int8 weights, int32 bias, multipliers and shifts."""
        return int(sum(a.nbytes for op in self.ops
                       for a in (op.weight, op.bias, op.multiplier, op.shift) if a is not None))

    def consumers(self, name: str) -> list[int]:
        """Indices of the ops that read tensor ``name``."""
        return [i for i, op in enumerate(self.ops) if name in op.inputs]


def toy_graph(shapes: dict, ops: list, output: str | None = None) -> QGraph:
    """A weightless graph for planning exercises: ``shapes`` maps tensor names
    (the first is the input) to ``(H, W, C)``; ``ops`` are tuples
    ``(kind, inputs, output[, kernel, stride, padding])``."""
    tensors = {name: QTensor(name, tuple(shape), 1.0, 0) for name, shape in shapes.items()}
    qops = []
    for kind, inputs, out, *geometry in ops:
        if kind not in KINDS:
            raise ValueError(f"op kind {kind!r} is not one of {KINDS}")
        k, s, p = (list(geometry) + [1, 1, 0][len(geometry):])[:3]
        qops.append(QOp(out, kind, list(inputs), out, kernel=k, stride=s, padding=p))
    return QGraph(tensors, qops, next(iter(shapes)), output or qops[-1].output)


def _qparams(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 (scale, zero point) covering [lo, hi] and 0."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-8) / 255.0
    return scale, int(np.clip(round(-128 - lo / scale), -128, 127))


def _multiplier(real):
    from helpers.kernels.int8 import quantize_multiplier
    return quantize_multiplier(real)


def _float_ops(model):
    """Flatten a MobileNetV2-style ``nn.Sequential`` into (kind, module, relu6,
    residual) steps; see :func:`quantize_model` for what is accepted."""
    from torch import nn
    from helpers.ofa import InvertedResidual

    steps = []

    def walk(module, prefix):
        for child in module.children() if isinstance(module, nn.Sequential) else [module]:
            if isinstance(child, nn.Sequential):
                walk(child, prefix)
            elif isinstance(child, nn.Conv2d):
                dw = child.groups > 1
                if dw and not (child.groups == child.in_channels == child.out_channels):
                    raise ValueError(f"{prefix}: grouped conv with groups={child.groups} is neither "
                                     "a plain nor a depthwise conv")
                steps.append({"kind": "dwconv" if dw else "conv", "module": child, "relu6": False})
            elif isinstance(child, nn.ReLU6):
                steps[-1]["relu6"] = True
            elif isinstance(child, InvertedResidual):
                start = len(steps)
                walk(child.body, prefix)
                if child.use_residual:
                    steps.append({"kind": "add", "from": start, "relu6": False})
                steps[start]["block_start"] = True
            elif isinstance(child, nn.AdaptiveAvgPool2d):
                steps.append({"kind": "avgpool", "relu6": False})
            elif isinstance(child, nn.Linear):
                steps.append({"kind": "linear", "module": child, "relu6": False})
            elif isinstance(child, (nn.Flatten, nn.Identity)):
                continue
            else:
                raise ValueError(f"quantize_model does not support {type(child).__name__} layers")

    walk(model, "model")
    return steps


def quantize_model(model, calib_x) -> QGraph:
    """Post-training int8 quantization of a float ``nn.Sequential`` made of
    Conv2d (plain or depthwise, with bias or none), ReLU6,
    :class:`helpers.ofa.InvertedResidual` blocks (without BatchNorm: fold it
    first, as :func:`helpers.ofa.build_subnet` does), AdaptiveAvgPool2d(1),
    Flatten and Linear. Activation ranges come from ``calib_x``
    (float ``[N, C, H, W]``); the input is quantized with range [0, 1]."""
    import torch

    steps = _float_ops(model)
    tensors = {"input": None}
    ops: list[QOp] = []
    x = calib_x.float()
    _, c_in, h, w = x.shape
    tensors["input"] = QTensor("input", (h, w, c_in), *_qparams(0.0, 1.0))
    values = {"input": x}
    current, block_in, n_block, n_conv = "input", "input", 0, 0
    with torch.no_grad():
        for step in steps:
            kind = step["kind"]
            if step.get("block_start"):
                n_block += 1
                block_in = current
            prefix = f"b{n_block}." if n_block else ""
            if kind in ("conv", "dwconv"):
                m = step["module"]
                name = prefix + ({"conv": "conv", "dwconv": "dw"}[kind] if n_block else f"conv{n_conv}")
                if n_block and kind == "conv":
                    name = prefix + ("expand" if current == block_in else "project")
                n_conv += 1
                y = torch.nn.functional.conv2d(values[current], m.weight, m.bias, m.stride, m.padding,
                                               groups=m.groups)
            elif kind == "add":
                name = prefix + "add"
                y = values[block_in] + values[current]
            elif kind == "avgpool":
                name = "pool"
                y = values[current].mean(dim=(2, 3))
            else:
                m = step["module"]
                name = "fc"
                y = torch.nn.functional.linear(values[current].flatten(1), m.weight, m.bias)
            if step["relu6"]:
                y = torch.clamp(y, 0.0, 6.0)
            values[name] = y
            shape = tuple(y.shape[2:]) + (y.shape[1],) if y.dim() == 4 else (y.shape[1],)
            out = QTensor(name, shape, *_qparams(y.min().item(), y.max().item()))
            tensors[name] = out
            inp = tensors[current]
            act_min, act_max = -128, 127
            if step["relu6"]:
                act_min = max(-128, out.zero_point)
                act_max = min(127, out.zero_point + int(round(6.0 / out.scale)))
            op = QOp(name, kind, [current], name, act_min=act_min, act_max=act_max)
            if kind in ("conv", "dwconv", "linear"):
                wt = m.weight.detach().double().numpy()
                w2 = wt.reshape(wt.shape[0], -1)
                s_w = np.maximum(np.abs(w2).max(axis=1), 1e-12) / 127.0
                wq = np.clip(np.round(w2 / s_w[:, None]), -127, 127).astype(np.int8).reshape(wt.shape)
                bias = m.bias.detach().double().numpy() if m.bias is not None else np.zeros(wt.shape[0])
                op.bias = np.round(bias / (inp.scale * s_w)).astype(np.int32)
                op.multiplier, op.shift = _multiplier(inp.scale * s_w / out.scale)
                if kind == "conv":
                    op.weight = np.ascontiguousarray(wq.transpose(0, 2, 3, 1))      # [OC, K, K, C]
                elif kind == "dwconv":
                    op.weight = np.ascontiguousarray(wq[:, 0].transpose(1, 2, 0))   # [K, K, C]
                else:
                    op.weight = np.ascontiguousarray(wq)                            # [N, K]
                if kind != "linear":
                    op.kernel, op.stride, op.padding = m.kernel_size[0], m.stride[0], m.padding[0]
            elif kind == "add":
                op.inputs = [block_in, current]
                a, b = tensors[block_in], tensors[current]
                op.multiplier, op.shift = _multiplier([a.scale / out.scale, b.scale / out.scale])
            else:  # avgpool
                hw = inp.shape[0] * inp.shape[1]
                op.multiplier, op.shift = _multiplier(inp.scale / (hw * out.scale))
            ops.append(op)
            current = name
    return QGraph(tensors, ops, "input", current)


def quantize_input(graph: QGraph, x) -> np.ndarray:
    """A float image ``[C, H, W]`` (or a batch of one) in [0, 1] -> int8 ``(H, W, C)``."""
    t = graph.tensors[graph.input]
    a = np.asarray(x.detach().numpy() if hasattr(x, "detach") else x, dtype=np.float64).reshape(
        t.shape[2], t.shape[0], t.shape[1])
    q = np.clip(np.round(a / t.scale) + t.zero_point, -128, 127).astype(np.int8)
    return np.ascontiguousarray(q.transpose(1, 2, 0))


# ---------------------------------------------------------------- int8 reference

def _rq(v: np.ndarray, mult, shift) -> np.ndarray:
    r = 31 - np.int64(shift)
    return (np.asarray(v, dtype=np.int64) * np.int64(mult) + (np.int64(1) << (r - 1))) >> r


def run_op(graph: QGraph, op: QOp, inputs: list, padding: int | None = None) -> np.ndarray:
    """Reference int8 result of ``op`` on int8 arrays ``inputs`` (one per
    ``op.inputs``; feature maps ``(h, w, C)`` of any spatial size). ``padding``
    overrides ``op.padding``: pass 0 to run a conv on a tile you have already
    padded (with the input's zero point) yourself."""
    from helpers.kernels import int8 as k8

    t_in = [graph.tensors[n] for n in op.inputs]
    out = graph.tensors[op.output]
    pad = op.padding if padding is None else padding
    kw = dict(x_zero_point=t_in[0].zero_point, out_zero_point=out.zero_point, multiplier=op.multiplier,
              shift=op.shift, act_min=op.act_min, act_max=op.act_max)
    x = np.asarray(inputs[0])
    if op.kind == "conv":
        return k8.conv2d_int8_spec(x[None], op.weight, op.bias, stride=op.stride, padding=pad, **kw)[0]
    if op.kind == "dwconv":
        return k8.depthwise_conv2d_int8_spec(x[None], op.weight, op.bias, stride=op.stride, padding=pad, **kw)[0]
    if op.kind == "linear":
        kw["a_zero_point"] = kw.pop("x_zero_point")
        return k8.gemm_int8_spec(x.reshape(1, -1), op.weight, op.bias, **kw)[0]
    if op.kind == "add":
        a, b = (np.asarray(v, dtype=np.int64) for v in inputs)
        v = (out.zero_point + _rq(a - t_in[0].zero_point, op.multiplier[0], op.shift[0])
             + _rq(b - t_in[1].zero_point, op.multiplier[1], op.shift[1]))
        return np.clip(v, op.act_min, op.act_max).astype(np.int8)
    if op.kind == "avgpool":
        acc = (x.astype(np.int64) - t_in[0].zero_point).reshape(-1, x.shape[-1]).sum(axis=0)
        return np.clip(_rq(acc, op.multiplier[0], op.shift[0]) + out.zero_point,
                       op.act_min, op.act_max).astype(np.int8)
    raise ValueError(f"unknown op kind {op.kind!r}; expected one of {KINDS}")


def run_reference(graph: QGraph, x_q: np.ndarray) -> dict:
    """Every tensor of ``graph`` (name -> int8 array) for the int8 input ``x_q`` ``(H, W, C)``."""
    want = graph.tensors[graph.input].shape
    if tuple(x_q.shape) != want or x_q.dtype != np.int8:
        raise ValueError(f"the input must be int8 of shape {want} (H, W, C), got {x_q.dtype} {tuple(x_q.shape)}; "
                         "use quantize_input(graph, image)")
    values = {graph.input: x_q}
    for op in graph.ops:
        values[op.output] = run_op(graph, op, [values[n] for n in op.inputs])
    return values


# ---------------------------------------------------------------- the lab's model

# (expand ratio, output channels, stride[, depthwise kernel = 3]) of each inverted-residual block.
MCU_BLOCKS = ((4, 16, 1), (4, 24, 2), (4, 24, 1), (4, 32, 2), (4, 32, 1), (4, 48, 2), (4, 48, 1), (4, 64, 1))


def mcu_mobilenet(resolution: int = 96, in_channels: int = 1, stem: int = 16, blocks=MCU_BLOCKS,
                  num_classes: int = 10, seed: int = 0):
    """A float MobileNetV2-style ``nn.Sequential`` (no BatchNorm, biases on,
    seeded random weights): 3x3 stride-2 stem, inverted-residual blocks, global
    pool, linear. Deployment is weight-agnostic; lab 05 checks bit-exactness and
    memory, not accuracy."""
    import torch
    from torch import nn
    from helpers.ofa import InvertedResidual

    gen = torch.Generator().manual_seed(seed)
    layers = [nn.Sequential(nn.Conv2d(in_channels, stem, 3, 2, 1), nn.ReLU6())]
    c = stem
    for e, c_out, s, *k in blocks:
        layers.append(InvertedResidual(c, c_out, e * c, k[0] if k else 3, s, bn=False))
        c = c_out
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.05)
    return model.eval()


# ---------------------------------------------------------------- C

def kernel_source() -> str:
    """C source of every kernel a generated model may call: ``conv2d_int8``,
    ``depthwise_conv2d_int8``, ``depthwise_conv2d_int8_inplace``, ``gemm_int8``
    (``helpers/kernels/c/int8.c``), ``add_int8`` and ``avgpool_int8``
    (``helpers/kernels/c/tinyml_ops.c``). Prepend it to the generated code."""
    return (C_SOURCE_DIR / "int8.c").read_text() + "\n" + OPS_C.read_text() + "\n"


@functools.lru_cache(maxsize=1)
def _ops_lib() -> ctypes.CDLL:
    from helpers.kernels.cjit import compile_c

    lib = compile_c(OPS_C.read_text(), name="tinyml_ops", flags=MCU_FLAGS)
    P, I = ctypes.c_void_p, ctypes.c_int
    lib.add_int8.argtypes = [P, P, P] + [I] * 4 + [P, P, I, I]
    lib.add_int8.restype = None
    lib.avgpool_int8.argtypes = [P, P] + [I] * 8
    lib.avgpool_int8.restype = None
    return lib


def run_op_c(graph: QGraph, op: QOp, inputs: list) -> np.ndarray:
    """The C result of an ``add`` or ``avgpool`` op (``tinyml_ops.c``, built
    as :func:`compile_model` builds); :func:`run_op` is its reference."""
    from helpers.kernels.cjit import ptr

    if op.kind not in ("add", "avgpool"):
        raise ValueError(f"run_op_c runs the ops of tinyml_ops.c (add, avgpool), not {op.kind!r}; "
                         "the others are in helpers.kernels.int8")
    t_in = [graph.tensors[n] for n in op.inputs]
    out_t = graph.tensors[op.output]
    x = [np.ascontiguousarray(v, dtype=np.int8) for v in inputs]
    mult = np.ascontiguousarray(op.multiplier, dtype=np.int32)
    shift = np.ascontiguousarray(op.shift, dtype=np.int32)
    if op.kind == "add":
        if x[0].shape != x[1].shape:
            raise ValueError(f"add: the inputs have shapes {x[0].shape} and {x[1].shape}; they must match")
        y = np.empty_like(x[0])
        _ops_lib().add_int8(ptr(x[0], "int8", name="a"), ptr(x[1], "int8", name="b"),
                            ptr(y, "int8", name="y", writable=True), y.size, t_in[0].zero_point,
                            t_in[1].zero_point, out_t.zero_point, ptr(mult, "int32", name="multiplier"),
                            ptr(shift, "int32", name="shift"), op.act_min, op.act_max)
        return y
    channels = x[0].shape[-1]
    y = np.empty(channels, dtype=np.int8)
    _ops_lib().avgpool_int8(ptr(x[0], "int8", name="x"), ptr(y, "int8", name="y", writable=True),
                            x[0].size // channels, channels, t_in[0].zero_point, out_t.zero_point,
                            int(mult[0]), int(shift[0]), op.act_min, op.act_max)
    return y


def c_array(name: str, values, ctype: str = "int8_t") -> str:
    """``static const <ctype> name[n] = {...};`` for a flat array of integers."""
    flat = np.asarray(values).reshape(-1)
    body = ",".join(str(int(v)) for v in flat)
    return f"static const {ctype} {name}[{flat.size}] = {{{body}}};\n"


class CModel:
    """A compiled generated model: ``model(x_q)`` runs ``model_run`` on an
    int8 ``(H, W, C)`` input and returns the int8 output."""

    def __init__(self, lib, in_shape: tuple, out_shape: tuple):
        self.lib, self.in_shape, self.out_shape = lib, tuple(in_shape), tuple(out_shape)
        lib.model_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.model_run.restype = None

    def __call__(self, x_q: np.ndarray) -> np.ndarray:
        from helpers.kernels.cjit import ptr

        x = np.ascontiguousarray(x_q)
        out = np.zeros(self.out_shape, dtype=np.int8)
        self.lib.model_run(ptr(x, "int8", name="x_q", shape=self.in_shape),
                           ptr(out, "int8", name="out", writable=True))
        return out

    def latency(self, x_q: np.ndarray, repeats: int = 10) -> float:
        """Median seconds of one ``model_run`` after a warm-up call."""
        self(x_q)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            self(x_q)
            times.append(time.perf_counter() - t)
        return statistics.median(times)


def compile_model(source: str, graph: QGraph, name: str = "model") -> CModel:
    """Compile a generated C file (which must define
    ``void model_run(const int8_t *input, int8_t *output)``) single-threaded,
    as a microcontroller runs it, and wrap it as a :class:`CModel`."""
    from helpers.kernels.cjit import compile_c

    if "model_run" not in source:
        raise ValueError("the generated C must define `void model_run(const int8_t *input, int8_t *output)`")
    lib = compile_c(source, name=name, flags=MCU_FLAGS)
    return CModel(lib, graph.tensors[graph.input].shape, graph.tensors[graph.output].shape)
