"""Machinery for Lab 09 (distributed training): a launcher that runs a
function on N torch.distributed ranks from a notebook, timing and
communication-measurement utilities, toy models and data.

Only Lab 09 imports this module (``from helpers import distributed``); the
parallelism techniques themselves are the student's work and are not here.

The launcher forks, so functions defined in a notebook cell can run on the
ranks without being importable::

    from helpers.distributed import launch

    def hello(rank, world_size):
        t = torch.tensor([rank])
        dist.all_reduce(t)
        return t.item()

    launch(hello, world_size=2)        # -> [1, 1]

Every rank is a fresh process with one CPU thread, joined into a process
group (gloo on CPU; NCCL with one GPU per rank when ``backend="nccl"``, in
which case the calling process must not have initialised CUDA before the
fork). Return values travel back with ``torch.save``. A rank that raises, or
a run that outlives ``timeout``, kills all ranks and raises
:class:`DistributedError` naming the rank, with its traceback.
"""
from __future__ import annotations

import contextlib
import ctypes
import datetime
import functools
import math
import multiprocessing as mp
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistributedError",
    "DistributedTimeoutError",
    "launch",
    "free_port",
    "device",
    "toy_regression",
    "make_mlp",
    "ControlledStage",
    "make_pipeline_stages",
    "tensor_bytes",
    "CommLog",
    "count_collectives",
]

DEFAULT_TIMEOUT_S = 60.0
# After the first rank fails, the others get this long to exit on their own
# (gloo usually notices the dead peer at once) before they are killed.
_FAIL_GRACE_S = 1.0
# free_port() can race with other processes; a taken port is retried this often.
_PORT_ATTEMPTS = 3


class DistributedError(RuntimeError):
    """A rank raised (or died); the message carries its traceback."""


class DistributedTimeoutError(DistributedError):
    """The ranks did not finish in time and were killed."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def device() -> torch.device:
    """The device this rank computes on: its GPU under NCCL, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _die_with_parent() -> None:
    # Linux only: SIGKILL this rank if the notebook kernel dies, so no rank
    # is ever left waiting in a collective after its launcher has gone. (The
    # signal follows the *thread* that forked: launch from a long-lived one,
    # as a notebook's cells are.)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _rank_main(fn, rank, world_size, backend, port, tmpdir, timeout, args, kwargs):
    _die_with_parent()
    code, phase = 0, "init"
    try:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                          LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
        # Ranks share the machine's cores; one thread each keeps them from
        # oversubscribing it (and keeps timings comparable).
        torch.set_num_threads(1)
        if backend == "nccl":
            torch.cuda.set_device(rank % torch.cuda.device_count())
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout))
        phase = "run"
        result = fn(rank, world_size, *args, **kwargs)
        try:
            torch.save(result, os.path.join(tmpdir, f"rank{rank}.pt"))
        except Exception as exc:  # an unpicklable return value
            raise TypeError(f"the value returned on rank {rank} cannot be sent back to the notebook "
                            f"({exc}); return tensors, numbers, lists or dicts") from exc
    except BaseException:
        code = 1
        with open(os.path.join(tmpdir, f"rank{rank}.err"), "w") as f:
            f.write(f"{time.time():.6f} {phase}\n{traceback.format_exc()}")
    finally:
        with contextlib.suppress(Exception):
            if dist.is_initialized():
                dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _read_error(tmpdir: str, rank: int, exitcode: int | None) -> tuple[float, str, str]:
    """(time of failure, phase "init" or "run", traceback) of a failed rank."""
    path = os.path.join(tmpdir, f"rank{rank}.err")
    if os.path.exists(path):
        with open(path) as f:
            header, _, tb = f.read().partition("\n")
        stamp, phase = header.split()
        return float(stamp), phase, tb.rstrip()
    if exitcode is not None and exitcode < 0:
        return math.inf, "run", f"rank {rank} was killed by signal {-exitcode} (out of memory?) without a Python traceback"
    return math.inf, "run", f"rank {rank} exited with code {exitcode} without a Python traceback"


class _PortTaken(Exception):
    """Another process took the rendezvous port between free_port() and the bind."""


def _port_in_use(traceback_text: str) -> bool:
    text = traceback_text.lower()
    return "eaddrinuse" in text or "address already in use" in text


def _kill(procs) -> None:
    for p in procs:
        if p.exitcode is None:
            p.kill()
    for p in procs:
        p.join()


@functools.cache
def _preload_autograd() -> None:
    # The first backward with an explicit gradient imports sympy and ~500
    # modules (over a second on a busy laptop). Doing it once here, before
    # the fork, spares every rank that cost in the middle of its timings.
    x = torch.ones(2, requires_grad=True)
    (x * 1.0).backward(torch.ones(2))


def launch(fn: Callable, world_size: int, *args, timeout: float = DEFAULT_TIMEOUT_S,
           backend: str = "gloo", **kwargs) -> list:
    """Run ``fn(rank, world_size, *args, **kwargs)`` on ``world_size`` ranks.

    Returns the list of the ranks' return values, indexed by rank. Raises
    :class:`DistributedError` with the traceback of the first rank that
    failed, or :class:`DistributedTimeoutError` after ``timeout`` seconds;
    in both cases every rank has been killed when the error is raised.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if backend == "gloo" and sys.platform.startswith("linux"):
        # Gloo picks its interface from the hostname, which may not resolve in
        # a sandbox without network; all ranks are local, so use loopback.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    _preload_autograd()
    for attempt in range(_PORT_ATTEMPTS):
        try:
            return _launch_once(fn, world_size, args, kwargs, timeout, backend, free_port())
        except _PortTaken:
            if attempt == _PORT_ATTEMPTS - 1:
                raise DistributedError(f"{fn.__name__}: could not start the process group: "
                                       f"{_PORT_ATTEMPTS} free ports in a row were taken by other "
                                       "processes before rank 0 could listen on them.") from None
    raise AssertionError("unreachable")


def _launch_once(fn, world_size, args, kwargs, timeout, backend, port) -> list:
    ctx = mp.get_context("fork")
    tmpdir = tempfile.mkdtemp(prefix="effml_dist_")
    procs = [ctx.Process(target=_rank_main, name=f"effml-rank{r}", daemon=True,
                         args=(fn, r, world_size, backend, port, tmpdir, timeout, args, kwargs))
             for r in range(world_size)]
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        fail_deadline = None
        while True:
            running = [p for p in procs if p.exitcode is None]
            failed = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
            if failed and fail_deadline is None:
                fail_deadline = time.monotonic() + _FAIL_GRACE_S
            if not running or (fail_deadline is not None and time.monotonic() > fail_deadline):
                break
            if time.monotonic() > deadline:
                stuck = [r for r, p in enumerate(procs) if p.exitcode is None]
                _kill(procs)
                raise DistributedTimeoutError(
                    f"{fn.__name__}: rank(s) {stuck} of {world_size} still running after {timeout:g} s; "
                    "all ranks were killed. A rank is probably waiting in a collective or a recv that "
                    "another rank never reaches: check that every rank calls the same collectives in "
                    "the same order (none inside `if rank == ...`) and that every send has a matching "
                    "recv.")
            multiprocessing.connection.wait([p.sentinel for p in running], timeout=0.05)
        _kill(procs)
        failed = [r for r, p in enumerate(procs) if p.exitcode != 0]
        if failed:
            errors = sorted((*_read_error(tmpdir, r, procs[r].exitcode), r) for r in failed)
            if any(phase == "init" and _port_in_use(tb) for _, phase, tb, _ in errors):
                raise _PortTaken()
            _, _, tb, first = errors[0]
            others = ""
            if len(errors) > 1:
                others = (f"\n\n(rank(s) {[r for *_, r in errors[1:]]} stopped too, most likely "
                          f"because rank {first} left its collectives.)")
            raise DistributedError(f"{fn.__name__} failed on rank {first} of {world_size}:\n\n{tb}{others}")
        return [torch.load(os.path.join(tmpdir, f"rank{r}.pt"), map_location="cpu", weights_only=False)
                for r in range(world_size)]
    finally:
        _kill(procs)
        shutil.rmtree(tmpdir, ignore_errors=True)


# ---------------------------------------------------------------- toy data and models

def toy_regression(n: int, d_in: int, d_out: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples of a noisy random linear-plus-tanh regression problem."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g)
    w = torch.randn(d_in, d_out, generator=g) / math.sqrt(d_in)
    y = torch.tanh(x @ w) + 0.1 * torch.randn(n, d_out, generator=g)
    return x, y


def make_mlp(sizes: list[int], seed: int = 0) -> nn.Sequential:
    """Linear layers of the given sizes with tanh in between, seeded."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class _SleepBackward(torch.autograd.Function):
    """Identity at the end of the stage; its backward sleeps the stage's
    backward time and opens the busy interval that _MarkBackwardEnd closes."""

    @staticmethod
    def forward(ctx, x, seconds, stage):
        ctx.seconds, ctx.stage = seconds, stage
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.stage._backward_start = time.perf_counter()
        time.sleep(ctx.seconds)
        return grad, None, None


class _MarkBackwardEnd(torch.autograd.Function):
    """Identity on the stage's input and weight; its backward, which runs once
    both gradients are computed, closes the stage's busy interval. (The weight
    keeps it in the graph when the input needs no gradient, on the first stage.)"""

    @staticmethod
    def forward(ctx, stage, x, weight):
        ctx.stage = stage
        return x.view_as(x), weight.view_as(weight)

    @staticmethod
    def backward(ctx, grad_x, grad_weight):
        stage = ctx.stage
        stage.busy_s += time.perf_counter() - stage._backward_start
        return None, grad_x, grad_weight


class ControlledStage(nn.Module):
    """One pipeline stage (Linear + tanh) with a controlled compute time.

    Forward sleeps ``fwd_s_per_sample`` and backward ``bwd_s_per_sample``
    per sample of the batch it is given, so a stage costs the same in total
    whatever the number of micro-batches, and the cost dwarfs the real
    arithmetic: pipeline timings stay stable on a busy 2-core laptop.
    ``busy_s`` accumulates the time spent in this stage's forward and
    backward (sleep plus arithmetic), measured with ``time.perf_counter``.
    """

    def __init__(self, width: int, fwd_s_per_sample: float = 0.0, bwd_s_per_sample: float = 0.0):
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.fwd_s_per_sample = fwd_s_per_sample
        self.bwd_s_per_sample = bwd_s_per_sample
        self.busy_s = 0.0
        self._backward_start = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        weight = self.linear.weight
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
            x, weight = _MarkBackwardEnd.apply(self, x, weight)
        y = torch.tanh(nn.functional.linear(x, weight, self.linear.bias))
        time.sleep(self.fwd_s_per_sample * x.shape[0])
        if y.requires_grad:
            y = _SleepBackward.apply(y, self.bwd_s_per_sample * x.shape[0], self)
        self.busy_s += time.perf_counter() - start
        return y


def make_pipeline_stages(n_stages: int, width: int, seed: int = 0, fwd_s_per_sample: float = 0.0,
                         bwd_s_per_sample: float = 0.0) -> list[ControlledStage]:
    """The stages of one model, identical on every rank for a given seed."""
    torch.manual_seed(seed)
    return [ControlledStage(width, fwd_s_per_sample, bwd_s_per_sample) for _ in range(n_stages)]


# ---------------------------------------------------------------- memory and communication

def tensor_bytes(obj: Any) -> int:
    """Bytes held by the distinct tensor storages among the values in ``obj``.

    Walks dict values, lists and tuples, so ``tensor_bytes(optimizer.state)``
    measures an optimizer's state (dict keys, such as the parameters that
    ``torch.optim`` keys its state by, are not counted). A storage shared by
    several tensors (views) is counted once.
    """
    seen: set[int] = set()
    total = 0

    def walk(o: Any) -> None:
        nonlocal total
        if isinstance(o, torch.Tensor):
            storage = o.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)

    walk(obj)
    return total


def _nbytes(t: Any) -> int:
    if isinstance(t, torch.Tensor):
        return t.numel() * t.element_size()
    if isinstance(t, (list, tuple)):
        return sum(_nbytes(x) for x in t)
    return 0


class CommLog:
    """What the collectives called on this rank moved.

    ``calls`` is a list of ``(name, payload_bytes, wire_bytes)``: the payload
    is the size of the tensor(s) handed to the call; ``wire_bytes`` is what
    this rank sends under the usual algorithms (ring all-reduce
    ``2 (N-1)/N`` of the payload, reduce-scatter and all-gather ``(N-1)/N``
    of the full buffer, point-to-point the tensor itself, recv nothing).
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, float]] = []

    @property
    def payload_bytes(self) -> int:
        return sum(c[1] for c in self.calls)

    @property
    def wire_bytes(self) -> float:
        return sum(c[2] for c in self.calls)

    def count(self, name: str) -> int:
        return sum(1 for c in self.calls if c[0] == name)


# name -> (index or keyword of the tensor argument, wire bytes as a function of payload and N)
_COLLECTIVES: dict[str, tuple[int, str, Callable[[int, int], float]]] = {
    "all_reduce": (0, "tensor", lambda b, n: 2 * (n - 1) / n * b),
    "reduce_scatter": (1, "input_list", lambda b, n: (n - 1) / n * b),
    "reduce_scatter_tensor": (1, "input", lambda b, n: (n - 1) / n * b),
    "all_gather": (0, "tensor_list", lambda b, n: (n - 1) / n * b),
    "all_gather_into_tensor": (0, "output_tensor", lambda b, n: (n - 1) / n * b),
    "broadcast": (0, "tensor", lambda b, n: b),
    "send": (0, "tensor", lambda b, n: b),
    "isend": (0, "tensor", lambda b, n: b),
    "recv": (0, "tensor", lambda b, n: 0),
    "irecv": (0, "tensor", lambda b, n: 0),
}


@contextlib.contextmanager
def count_collectives():
    """Within the block, log every ``torch.distributed`` collective and
    point-to-point call made on this rank through ``dist.<name>``; yields a
    :class:`CommLog`. Use inside a launched function."""
    log = CommLog()
    originals = {}

    def wrap(name, original, pos, key, wire):
        @functools.wraps(original)
        def counted(*args, **kwargs):
            tensor = args[pos] if len(args) > pos else kwargs.get(key)
            payload = _nbytes(tensor)
            log.calls.append((name, payload, wire(payload, dist.get_world_size())))
            return original(*args, **kwargs)
        return counted

    for name, (pos, key, wire) in _COLLECTIVES.items():
        original = getattr(dist, name, None)
        if original is not None:
            originals[name] = original
            setattr(dist, name, wrap(name, original, pos, key, wire))
    try:
        yield log
    finally:
        for name, original in originals.items():
            setattr(dist, name, original)
