"""Plain data across the kernel boundary.

The grader's trusted checks call the student's functions in the sandboxed
kernel; arguments go in and results come back as JSON text with tagged
values, never as pickles, so nothing the student's code builds can run in
the grader. What may cross:

- ``None``, ``bool``, ``int``, ``float``, ``str``, ``list``, ``tuple``,
  ``dict`` (any of these as keys), ``bytes``;
- numpy arrays and scalars (``.npy`` bytes, loaded with ``allow_pickle=False``);
- torch tensors (as numpy, with the torch dtype), torch dtypes;
- ``torch.nn.Module`` results, as :class:`ModuleState` (class name and
  state dict), and ``ModuleSpec`` arguments (the kernel builds the named
  ``helpers`` class and loads the given state);
- references to the kernel's own variables (:class:`Ref`), as arguments only.

A call may also name a ``helpers`` function (``student.call("helpers.probes.f",
Ref("fold"), ...)``): a probe that drives the student's code in the kernel and
reports plain data, for results the wire cannot carry (a Qiskit circuit).

Anything else (a lying ``__eq__`` object, a generator, a custom class)
decodes to an :class:`WireError` that the check reports as "returned a
<type>, expected plain data". Decoded values have exact builtin types.

``KERNEL_SOURCE`` is the kernel half: plain Python sent with every call, so
it never depends on what the student's namespace holds. If the student has
patched what it uses, the result is garbage, and a check on garbage fails.
"""
from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field

MAX_MESSAGE_BYTES = 256 * 2**20
MAX_DEPTH = 64


class WireError(ValueError):
    """The kernel answered with something that is not plain data."""


@dataclass(frozen=True)
class Ref:
    """An argument that names a variable in the student's kernel (e.g. the
    notebook's trained ``model``): it is passed by name, never copied."""
    name: str


@dataclass(frozen=True)
class ModuleSpec:
    """An argument the kernel builds: ``factory`` is a dotted path under
    ``helpers`` (``helpers.models.DigitsCNN``), called with ``kwargs``, then
    loaded with ``state`` (a dict of tensors) when given."""
    factory: str
    kwargs: dict = field(default_factory=dict)
    state: dict | None = None


@dataclass
class ModuleState:
    """A ``torch.nn.Module`` that came back from the kernel: its class name
    (as the kernel reported it: informative only) and its state dict."""
    class_name: str
    state: dict
    training: bool = False


# ---------------------------------------------------------------- trusted side

def encode(value) -> str:
    """Arguments for the kernel, as JSON text."""
    return json.dumps(_enc(value, 0), allow_nan=True)


def _npy(arr) -> str:
    import numpy as np

    buf = io.BytesIO()
    arr = np.asarray(arr)
    np.save(buf, arr if arr.flags.c_contiguous else np.ascontiguousarray(arr), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _enc(v, depth):
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    if v is None or type(v) in (bool, int, float, str):
        return v
    if type(v) is list:
        return [_enc(x, depth + 1) for x in v]
    if type(v) is tuple:
        return {"$tuple": [_enc(x, depth + 1) for x in v]}
    if type(v) is dict:
        return {"$dict": [[_enc(k, depth + 1), _enc(x, depth + 1)] for k, x in v.items()]}
    if type(v) is bytes:
        return {"$bytes": base64.b64encode(v).decode("ascii")}
    if isinstance(v, Ref):
        return {"$ref": v.name}
    if isinstance(v, ModuleSpec):
        return {"$spec": v.factory, "kwargs": _enc(v.kwargs, depth + 1),
                "state": _enc(v.state, depth + 1)}
    mod = type(v).__module__
    if mod == "numpy" or mod.startswith("numpy."):
        import numpy as np

        if isinstance(v, np.ndarray):
            return {"$ndarray": _npy(v)}
        if isinstance(v, np.generic):
            return {"$npscalar": _npy(np.asarray(v))}
    if mod.startswith("torch"):
        import torch

        if isinstance(v, torch.Tensor):
            t = v.detach().cpu()
            dtype = str(t.dtype).replace("torch.", "")
            if t.dtype == torch.bfloat16:
                t = t.float()
            return {"$tensor": _npy(t.numpy()), "dtype": dtype}
        if isinstance(v, torch.dtype):
            return {"$dtype": str(v).replace("torch.", "")}
    raise WireError(f"cannot send a {type(v).__name__} to the kernel")


def decode(text: str, *, what: str = "the result"):
    """The kernel's answer as exact plain types; raises WireError otherwise."""
    if not isinstance(text, str):
        raise WireError(f"{what}: no answer from the kernel")
    if len(text) > MAX_MESSAGE_BYTES:
        raise WireError(f"{what} is larger than {MAX_MESSAGE_BYTES // 2**20} MiB")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"{what}: unreadable answer from the kernel ({type(exc).__name__})") from None
    return _dec(raw, 0, what)


def _load_npy(b64, what):
    import numpy as np

    try:
        arr = np.load(io.BytesIO(base64.b64decode(b64, validate=True)), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any malformed payload is a wire error
        raise WireError(f"{what}: malformed array ({type(exc).__name__})") from None
    if arr.dtype.hasobject or arr.dtype.fields is not None:
        raise WireError(f"{what}: arrays of objects or records are not plain data")
    return arr


_TORCH_DTYPES = {"float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8",
                 "uint8", "bool", "complex64", "complex128"}


def _dec(v, depth, what):
    if depth > MAX_DEPTH:
        raise WireError(f"{what} is nested too deeply")
    if v is None or type(v) in (bool, int, float, str):
        return v
    if type(v) is list:
        return [_dec(x, depth + 1, what) for x in v]
    if type(v) is not dict or len(v) == 0:
        raise WireError(f"{what}: malformed answer")
    tag = next(iter(v))
    if tag == "$tuple" and type(v[tag]) is list:
        return tuple(_dec(x, depth + 1, what) for x in v[tag])
    if tag == "$dict" and type(v[tag]) is list:
        out = {}
        for pair in v[tag]:
            if type(pair) is not list or len(pair) != 2:
                raise WireError(f"{what}: malformed dict")
            key = _dec(pair[0], depth + 1, what)
            try:
                hash(key)
            except TypeError:
                raise WireError(f"{what}: a dict key is not hashable") from None
            out[key] = _dec(pair[1], depth + 1, what)
        return out
    if tag == "$bytes" and type(v[tag]) is str:
        return base64.b64decode(v[tag])
    if tag == "$ndarray" and type(v[tag]) is str:
        return _load_npy(v[tag], what)
    if tag == "$npscalar" and type(v[tag]) is str:
        arr = _load_npy(v[tag], what)
        if arr.ndim != 0:
            raise WireError(f"{what}: malformed scalar")
        return arr[()]
    if tag == "$tensor" and type(v[tag]) is str and v.get("dtype") in _TORCH_DTYPES:
        import torch

        arr = _load_npy(v[tag], what)
        return torch.from_numpy(arr.copy()).to(getattr(torch, v["dtype"]))
    if tag == "$dtype" and v[tag] in _TORCH_DTYPES:
        import torch

        return getattr(torch, v[tag])
    if tag == "$module" and type(v[tag]) is str:
        state = _dec(v.get("state"), depth + 1, what)
        if type(state) is not dict:
            raise WireError(f"{what}: malformed module state")
        return ModuleState(v[tag][:200], state, bool(v.get("training") is True))
    if tag == "$unsupported" and type(v[tag]) is str:
        raise WireError(f"{what} is a {v[tag][:80]}, expected plain data (numbers, strings, lists, "
                        f"dicts, arrays or tensors)")
    if tag == "$error" and type(v[tag]) is str:
        raise StudentError(v[tag][:2000])
    raise WireError(f"{what}: malformed answer")


class StudentError(Exception):
    """The student's code raised; the message is the kernel's one-line summary."""


# ---------------------------------------------------------------- kernel side

# Runs inside the student's kernel. Only the standard library, numpy and torch
# (when the value is a tensor) are used; the request is a JSON string literal.
KERNEL_SOURCE = r'''
def __effml_call(request, mime):
    from IPython import get_ipython
    from IPython.display import publish_display_data
    publish_display_data({mime: __effml_answer(request, get_ipython().user_ns)})


def __effml_answer(request, ns):
    import base64, io, json, sys, traceback

    def npy(arr):
        import numpy as np
        buf = io.BytesIO()
        arr = np.asarray(arr)  # 0-d stays 0-d: ascontiguousarray would make it 1-d
        np.save(buf, arr if arr.flags.c_contiguous else np.ascontiguousarray(arr), allow_pickle=False)
        return base64.b64encode(buf.getvalue()).decode("ascii")

    def load(b64):
        import numpy as np
        return np.load(io.BytesIO(base64.b64decode(b64)), allow_pickle=False)

    def dec(v):
        if v is None or type(v) in (bool, int, float, str):
            return v
        if type(v) is list:
            return [dec(x) for x in v]
        tag = next(iter(v))
        if tag == "$tuple":
            return tuple(dec(x) for x in v[tag])
        if tag == "$dict":
            return {dec(k): dec(x) for k, x in v[tag]}
        if tag == "$bytes":
            return base64.b64decode(v[tag])
        if tag == "$ndarray":
            return load(v[tag])
        if tag == "$npscalar":
            return load(v[tag])[()]
        if tag == "$tensor":
            import torch
            return torch.from_numpy(load(v[tag]).copy()).to(getattr(torch, v["dtype"]))
        if tag == "$dtype":
            import torch
            return getattr(torch, v[tag])
        if tag == "$ref":
            if v[tag] not in ns:
                raise NameError(f"name {v[tag]!r} is not defined in the notebook")
            return ns[v[tag]]
        if tag == "$spec":
            import importlib
            path = v[tag]
            if not path.startswith("helpers."):
                raise ValueError("only helpers classes can be built")
            modname, _, attr = path.rpartition(".")
            obj = getattr(importlib.import_module(modname), attr)(**dec(v["kwargs"]))
            state = dec(v["state"])
            if state is not None:
                obj.load_state_dict(state)
            return obj
        raise ValueError(f"unknown tag {tag}")

    def enc(v, depth=0):
        if depth > 60:
            return {"$unsupported": "deeply nested value"}
        t = type(v)
        if v is None or t in (bool, int, float, str):
            return v
        if t is list:
            return [enc(x, depth + 1) for x in v]
        if t is tuple:
            return {"$tuple": [enc(x, depth + 1) for x in v]}
        if t is dict:
            return {"$dict": [[enc(k, depth + 1), enc(x, depth + 1)] for k, x in v.items()]}
        if t is bytes:
            return {"$bytes": base64.b64encode(v).decode("ascii")}
        mod = t.__module__ or ""
        if mod == "numpy" or mod.startswith("numpy."):
            import numpy as np
            if t is np.ndarray:
                if v.dtype.hasobject or v.dtype.fields is not None:
                    return {"$unsupported": "numpy array of objects"}
                return {"$ndarray": npy(v)}
            if isinstance(v, np.generic) and not isinstance(v, np.object_):
                return {"$npscalar": npy(np.asarray(v))}
        if "torch" in sys.modules:
            import torch
            if t in (torch.Tensor, torch.nn.Parameter):
                x = v.detach().cpu()
                if x.is_sparse:
                    x = x.to_dense()
                dtype = str(x.dtype).replace("torch.", "")
                if x.dtype == torch.bfloat16:
                    x = x.float()
                return {"$tensor": npy(x.contiguous().numpy()), "dtype": dtype}
            if t is torch.dtype:
                return {"$dtype": str(v).replace("torch.", "")}
            if isinstance(v, torch.nn.Module) and not hasattr(v, "__effml_plain__"):
                return {"$module": t.__module__ + "." + t.__qualname__,
                        "state": enc(dict(v.state_dict()), depth + 1), "training": bool(v.training)}
        if (t.__module__ or "").startswith("helpers.") and hasattr(v, "__effml_plain__"):
            return enc(v.__effml_plain__(), depth + 1)  # a grader's probe reports its record
        return {"$unsupported": t.__name__}

    req = json.loads(request)
    try:
        if req["op"] == "call":
            name = req["name"]
            if name.startswith("helpers."):
                # a grader's probe that drives the student's code (passed as Refs) and reports
                # plain data, for results the wire cannot carry (a Qiskit circuit)
                import importlib
                modname, _, attr = name.rpartition(".")
                fn = getattr(importlib.import_module(modname), attr)
            elif name in ns:
                fn = ns[name]
            else:
                raise NameError(f"{name!r} is not defined in your notebook (did its cell run?)")
            args, kwargs = dec(req["args"]), dec(req["kwargs"])
            out = fn(*args, **kwargs)
            # args_back: functions that work in place (a pruned tensor, a fine-tuned model)
            payload = {"$tuple": [enc(out), [enc(a) for a in args]]} if req.get("args_back") else enc(out)
        elif req["op"] == "get":
            name = req["name"]
            if name not in ns:
                raise NameError(f"{name!r} is not defined in your notebook (did its cell run?)")
            payload = enc(ns[name])
        elif req["op"] == "source":
            name = req["name"]
            payload = ns.get(name) if type(ns.get(name)) is str else None
        else:
            raise ValueError("unknown op")
    except BaseException as exc:
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" (line {tb[-1].lineno})" if tb else ""
        payload = {"$error": f"{type(exc).__name__}: {exc}"[:1500] + where}
    try:
        return json.dumps(payload)
    except (TypeError, ValueError) as exc:
        return json.dumps({"$error": f"the result could not be sent: {exc}"[:500]})
'''
