"""Probes the grader's trusted checks hand to a student's function inside the
kernel: callables that record how they were called, e.g. to check that a
latency timer warms up and takes the median. The grader builds them in the
kernel by name (``autograder.wire.ModuleSpec``) and reads back their record
(``__effml_plain__``) as plain data."""
from __future__ import annotations

import time


class SleepProbe:
    """Sleeps ``schedule[i]`` seconds on its i-th call (the last value
    repeats) and records every call's start time."""

    def __init__(self, schedule):
        self.schedule = [float(s) for s in schedule] or [0.0]
        self.calls = []

    def __call__(self, *args, **kwargs):
        self.calls.append(time.perf_counter())
        time.sleep(self.schedule[min(len(self.calls) - 1, len(self.schedule) - 1)])

    def __effml_plain__(self) -> dict:
        return {"calls": len(self.calls)}


def tinyml_graph(tensors, ops, input="input", output=""):
    """A ``helpers.tinyml.QGraph`` rebuilt exactly from plain data (lab 05):
    the grader builds its graphs on its own side (weights, scales and zero
    points included) and sends them as ``ModuleSpec("helpers.probes.tinyml_graph",
    {...})``, so the student's functions see the very graph the grader's
    reference used. ``tensors``: name -> (shape, scale, zero_point), in the
    graph's order; ``ops``: dicts of ``helpers.tinyml.QOp`` fields."""
    from helpers import tinyml

    qtensors = {name: tinyml.QTensor(name, tuple(int(d) for d in shape), float(scale), int(zp))
                for name, (shape, scale, zp) in tensors.items()}
    qops = [tinyml.QOp(**dict(op, inputs=list(op["inputs"]))) for op in ops]
    return tinyml.QGraph(qtensors, qops, input, output)


# ---- lab 06 (AWQ): layer groups and generators built from plain data, so the
# grader's reference and the student's function see the same group.

_AWQ_TYPES: dict = {}


def _awq_types():
    """The probe classes, made on first use (``import helpers.probes`` stays cheap)."""
    if not _AWQ_TYPES:
        import torch
        from torch import nn

        from helpers.llm import LayerGroup

        class ConcatLinears(nn.Module):
            """Linears reading one input, outputs concatenated (like gate/up)."""

            def __init__(self, linears):
                super().__init__()
                self.linears = nn.ModuleList(linears)

            def forward(self, x):
                return torch.cat([lin(x) for lin in self.linears], dim=-1)

        class GroupProbe(LayerGroup):
            """A ``helpers.llm.LayerGroup``; reports its linears' weights and
            the state dict of the module it belongs to."""

            owner = None

            def __effml_plain__(self) -> dict:
                return {"weights": [lin.weight.detach().clone() for lin in self.linears],
                        "state": {k: v.detach().clone() for k, v in self.owner.state_dict().items()}}

        _AWQ_TYPES.update(ConcatLinears=ConcatLinears, GroupProbe=GroupProbe)
    return _AWQ_TYPES


def awq_linears_group(weights, x):
    """A ``LayerGroup`` of bias-free linears with the given weights (``[out, in]``
    each) reading ``x`` (``[..., in]``); ``run`` concatenates their outputs and
    ``prev`` is an identity (lab 06's scale search)."""
    import torch
    from torch import nn

    types = _awq_types()
    linears = []
    for w in weights:
        lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            lin.weight.copy_(w)
        linears.append(lin)
    inspect = types["ConcatLinears"](linears)
    group = types["GroupProbe"]("toy", nn.Identity(), linears, inspect, torch.arange(weights[0].shape[1]), x)
    group.owner = inspect
    return group


def awq_llama_group(model, block, group, state=None, bias=(), ids=None):
    """Group ``group`` (qkv, o, gate_up, down) of decoder block ``block`` of
    ``helpers.llm.tiny_llama(**model)``, whose linears named in ``bias`` get a
    bias, loaded with ``state`` when given; with ``ids`` (``[B, T]``) its
    calibration input ``x`` is captured as the lab's AWQ pipeline does.
    Reports its linears' weights and the whole model's state (lab 06)."""
    import torch
    from torch import nn

    from helpers import llm

    m = llm.tiny_llama(**model)
    modules = dict(m.named_modules())
    for name in bias:
        lin = modules[name]
        lin.bias = nn.Parameter(torch.zeros(lin.out_features))
    if state is not None:
        m.load_state_dict(state)
    blk = m.model.layers[block]
    groups = llm.llama_layer_groups(blk)
    if ids is not None:
        hidden, kwargs = llm.capture_block_inputs(m, ids)
        for earlier in m.model.layers[:block]:
            hidden = llm.block_output(earlier, hidden, kwargs)
        llm.capture_group_inputs(blk, groups, hidden, kwargs)
    g = {g.name: g for g in groups}[group]
    probe = _awq_types()["GroupProbe"](g.name, g.prev, g.linears, g.inspect, g.prev_channel, g.x,
                                       g.inspect_kwargs)
    probe.owner = m
    return probe


def seeded_generator(seed):
    """``torch.Generator().manual_seed(seed)``, for functions that take a generator."""
    import torch

    return torch.Generator().manual_seed(int(seed))
