"""Non-graded machinery for Lab 10 (quantum ML and noise mitigation).

Example circuits, the randomized-benchmarking-style circuit generator, running
a circuit on a (noisy) Aer density-matrix simulator, conversion to and from
Cirq (so results can be compared with Mitiq, which works on Cirq circuits),
and the lab's plots. The mitigation techniques themselves (folding,
extrapolation, readout-error inversion, noise models) are the students' work
and are deliberately not here.

Conventions used throughout the lab:

* Probability vectors are indexed by the bitstring ``b0 b1 ... b(n-1)`` with
  qubit 0 as the most significant bit (Mitiq's and PennyLane's order).
  Qiskit's count keys are the other way round; :func:`counts_to_probs`
  converts.
* Circuits use only the gates in :data:`GATES_1Q` and :data:`GATES_2Q`.

Imported only by Lab 10, never by ``helpers/__init__.py``, so qiskit is
imported at module top.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from contextlib import contextmanager
from typing import Mapping, Sequence

import numpy as np
from qiskit import QuantumCircuit
from qiskit.quantum_info import Operator, SparsePauliOp
from qiskit_aer import AerSimulator  # also registers QuantumCircuit.save_* instructions

__all__ = [
    "GATES_1Q",
    "GATES_2Q",
    "CLIFFORD_1Q",
    "bell_circuit",
    "ghz_circuit",
    "rb_circuit",
    "expectation_z",
    "probabilities",
    "sample_counts",
    "counts_to_probs",
    "tvd",
    "to_cirq",
    "from_cirq",
    "compare_gate_sequences",
    "pennylane_gate",
    "reference_free",
    "classifier_dataset",
    "plot_extrapolation",
    "plot_error_vs_depth",
]

#: Gate names the lab's circuits (and folded versions of them) may contain.
GATES_1Q = ("id", "x", "y", "z", "h", "s", "sdg", "sx", "sxdg", "rx", "ry", "rz")
GATES_2Q = ("cx", "cz")
#: Single-qubit Clifford gates the RB-style generator draws from.
CLIFFORD_1Q = ("h", "s", "sdg", "x", "y", "z", "sx")
_PAULIS = ("x", "y", "z")


def bell_circuit() -> QuantumCircuit:
    """(|00> + |11>)/sqrt(2), no measurements."""
    qc = QuantumCircuit(2, name="bell")
    qc.h(0)
    qc.cx(0, 1)
    return qc


def ghz_circuit(n_qubits: int) -> QuantumCircuit:
    """(|0...0> + |1...1>)/sqrt(2) on ``n_qubits`` qubits, no measurements."""
    qc = QuantumCircuit(n_qubits, name=f"ghz{n_qubits}")
    qc.h(0)
    for q in range(n_qubits - 1):
        qc.cx(q, q + 1)
    return qc


def rb_circuit(n_qubits: int, depth: int, seed: int = 0) -> QuantumCircuit:
    """A randomized-benchmarking-style circuit: ``depth`` random Clifford
    layers followed by their inverse, so the ideal output is ``|0...0>`` and
    the ideal ``<Z...Z>`` is exactly 1.

    Each layer is a random single-qubit Clifford on every qubit, then a brick
    of CNOTs (offset alternating between layers) with a random Pauli on any
    qubit the brick leaves idle. Every layer touches every qubit, so the
    order of ``circuit.data`` equals Cirq's moment order and gate-level
    folds line up one-to-one with Mitiq's.
    """
    if n_qubits < 1 or depth < 0:
        raise ValueError(f"rb_circuit needs n_qubits >= 1 and depth >= 0, got {n_qubits}, {depth}.")
    rng = np.random.default_rng(seed)
    half = QuantumCircuit(n_qubits)
    for layer in range(depth):
        for q in range(n_qubits):
            getattr(half, str(rng.choice(CLIFFORD_1Q)))(q)
        paired = set()
        for q in range(layer % 2, n_qubits - 1, 2):
            half.cx(q, q + 1)
            paired.update((q, q + 1))
        for q in range(n_qubits):
            if q not in paired:
                getattr(half, str(rng.choice(_PAULIS)))(q)
    qc = half.compose(half.inverse())
    qc.name = f"rb{n_qubits}x{depth}"
    return qc


def _check_gates(circuit: QuantumCircuit) -> None:
    allowed = set(GATES_1Q) | set(GATES_2Q) | {"barrier"}
    bad = sorted({inst.operation.name for inst in circuit.data} - allowed)
    if bad:
        raise ValueError(
            f"circuit contains {bad}; the lab's simulators accept only {GATES_1Q + GATES_2Q} "
            "(remove measurements: the helpers add them)."
        )


def _simulator(noise_model, seed: int | None = None):
    kwargs = {"method": "density_matrix"}
    if noise_model is not None:
        kwargs["noise_model"] = noise_model
    if seed is not None:
        kwargs["seed_simulator"] = int(seed)
    return AerSimulator(**kwargs)


def expectation_z(circuit: QuantumCircuit, noise_model=None, qubits: Sequence[int] | None = None) -> float:
    """Exact ``<Z...Z>`` on ``qubits`` (default: all) of the state the circuit
    prepares, by density-matrix simulation with ``noise_model``'s gate errors.

    No shots: the value is deterministic. Readout errors do not enter (they act
    on measurement outcomes, and nothing is measured here).
    """
    _check_gates(circuit)
    n = circuit.num_qubits
    qubits = list(range(n)) if qubits is None else [int(q) for q in qubits]
    qc = circuit.copy()
    qc.save_expectation_value(SparsePauliOp("Z" * len(qubits)), qubits, label="ez")
    result = _simulator(noise_model).run(qc).result()
    return float(np.real(result.data(0)["ez"]))


def probabilities(circuit: QuantumCircuit, noise_model=None) -> np.ndarray:
    """Exact outcome probabilities (qubit 0 most significant) of the state the
    circuit prepares, by density-matrix simulation with ``noise_model``'s gate
    errors; readout errors do not enter (nothing is measured)."""
    _check_gates(circuit)
    n = circuit.num_qubits
    qc = circuit.copy()
    qc.save_probabilities(label="p")
    little = np.asarray(_simulator(noise_model).run(qc).result().data(0)["p"], dtype=float)
    # Aer indexes with qubit 0 as the least significant bit: reverse the bits.
    return little.reshape([2] * n).transpose(range(n - 1, -1, -1)).reshape(-1)


def sample_counts(circuit: QuantumCircuit, noise_model=None, shots: int = 4096,
                  seed: int = 0) -> dict[str, int]:
    """Measure all qubits ``shots`` times on the noisy simulator (gate and
    readout errors both apply). Keys are Qiskit bitstrings (qubit 0 rightmost);
    use :func:`counts_to_probs` to get a probability vector."""
    _check_gates(circuit)
    qc = circuit.copy()
    qc.measure_all()
    return dict(_simulator(noise_model, seed).run(qc, shots=int(shots)).result().get_counts())


def counts_to_probs(counts: Mapping[str, int], n_qubits: int) -> np.ndarray:
    """Qiskit counts -> probability vector of length ``2**n_qubits`` with qubit 0
    as the most significant bit."""
    probs = np.zeros(2**n_qubits)
    for key, c in counts.items():
        bits = key.replace(" ", "")
        if len(bits) != n_qubits:
            raise ValueError(f"count key {key!r} has {len(bits)} bits, expected {n_qubits}.")
        probs[int(bits[::-1], 2)] += c
    total = probs.sum()
    if total <= 0:
        raise ValueError("counts are empty.")
    return probs / total


def tvd(p: Sequence[float], q: Sequence[float]) -> float:
    """Total-variation distance ``0.5 * sum |p - q|``."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    if p.shape != q.shape:
        raise ValueError(f"tvd of vectors with shapes {p.shape} and {q.shape}.")
    return 0.5 * float(np.abs(p - q).sum())


# Cirq conversion: Mitiq folds Cirq circuits. (Mitiq's own qiskit conversion
# goes through OpenQASM and needs the optional `ply` parser; these two
# functions cover the lab's gate set without it.)

def to_cirq(circuit: QuantumCircuit):
    """The circuit as a ``cirq.Circuit`` on ``cirq.LineQubit`` s, gate for gate."""
    import cirq

    _check_gates(circuit)
    qubits = cirq.LineQubit.range(circuit.num_qubits)
    fixed = {
        "id": cirq.I, "x": cirq.X, "y": cirq.Y, "z": cirq.Z, "h": cirq.H,
        "s": cirq.S, "sdg": cirq.S**-1, "sx": cirq.X**0.5, "sxdg": cirq.X**-0.5,
        "cx": cirq.CNOT, "cz": cirq.CZ,
    }
    rotations = {"rx": cirq.rx, "ry": cirq.ry, "rz": cirq.rz}
    out = cirq.Circuit()
    for inst in circuit.data:
        name = inst.operation.name
        if name == "barrier":
            continue
        qs = [qubits[circuit.find_bit(q).index] for q in inst.qubits]
        gate = rotations[name](float(inst.operation.params[0])) if name in rotations else fixed[name]
        out.append(gate.on(*qs))
    return out


def from_cirq(circuit, n_qubits: int | None = None) -> QuantumCircuit:
    """A Cirq circuit over the lab's gate set (as Mitiq's folding returns it,
    with inverses such as ``S**-1`` or ``Rx(-t)``) back to Qiskit, in
    ``all_operations()`` order."""
    import cirq

    ops = list(circuit.all_operations())
    if n_qubits is None:
        n_qubits = 1 + max(q.x for op in ops for q in op.qubits)
    qc = QuantumCircuit(n_qubits)
    for op in ops:
        g, qs = op.gate, [q.x for q in op.qubits]
        if isinstance(g, (cirq.Rx, cirq.Ry, cirq.Rz)):
            # Rx(t) is XPowGate(exponent=t/pi, global_shift=-1/2): the angle is exponent * pi.
            getattr(qc, type(g).__name__.lower())(float(g.exponent) * np.pi, *qs)
            continue
        e = float(getattr(g, "exponent", 1.0))
        name = None
        if isinstance(g, cirq.IdentityGate):
            name = "id"
        elif isinstance(g, cirq.HPowGate) and abs(abs(e) - 1) < 1e-12:
            name = "h"
        elif isinstance(g, cirq.XPowGate):
            name = {1.0: "x", -1.0: "x", 0.5: "sx", -0.5: "sxdg"}.get(e)
        elif isinstance(g, cirq.YPowGate) and abs(abs(e) - 1) < 1e-12:
            name = "y"
        elif isinstance(g, cirq.ZPowGate):
            name = {1.0: "z", -1.0: "z", 0.5: "s", -0.5: "sdg"}.get(e)
        elif isinstance(g, cirq.CXPowGate) and abs(abs(e) - 1) < 1e-12:
            name = "cx"
        elif isinstance(g, cirq.CZPowGate) and abs(abs(e) - 1) < 1e-12:
            name = "cz"
        if name is None or getattr(g, "global_shift", 0.0) != 0.0:
            raise ValueError(f"from_cirq: no lab gate for {op!r}.")
        getattr(qc, name)(*qs)
    return qc


def _per_qubit(circuit: QuantumCircuit) -> list[list[tuple[tuple[int, ...], np.ndarray, str]]]:
    seqs: list[list] = [[] for _ in range(circuit.num_qubits)]
    for inst in circuit.data:
        if inst.operation.name == "barrier":
            continue
        qargs = tuple(circuit.find_bit(q).index for q in inst.qubits)
        mat = Operator(inst.operation).data
        for q in qargs:
            seqs[q].append((qargs, mat, inst.operation.name))
    return seqs


def _same_up_to_phase(a: np.ndarray, b: np.ndarray, atol: float) -> bool:
    return a.shape == b.shape and abs(abs(np.vdot(a, b)) - a.shape[0]) < atol


def compare_gate_sequences(got: QuantumCircuit, want: QuantumCircuit, atol: float = 1e-8) -> str | None:
    """``None`` when, on every qubit, the two circuits apply the same gates (as
    matrices, up to global phase) in the same order; otherwise a sentence
    saying where they first differ. Insensitive to how gates on different
    qubits are interleaved, which is what distinguishes circuits with the
    same noisy behaviour."""
    if got.num_qubits != want.num_qubits:
        return f"the circuit has {got.num_qubits} qubits, expected {want.num_qubits}"
    for q, (a, b) in enumerate(zip(_per_qubit(got), _per_qubit(want))):
        for i, (ga, gb) in enumerate(zip(a, b)):
            if ga[0] != gb[0] or not _same_up_to_phase(ga[1], gb[1], atol):
                return (f"on qubit {q}, gate #{i} is {ga[2]} on qubits {ga[0]}, "
                        f"expected {gb[2]} on qubits {gb[0]}")
        if len(a) != len(b):
            return f"qubit {q} has {len(a)} gates, expected {len(b)}"
    return None


def pennylane_gate(name: str, params: Sequence[float], wires: Sequence[int]) -> None:
    """Apply the PennyLane operation for the lab gate ``name`` (inside a QNode)."""
    import pennylane as qml

    fixed = {
        "id": qml.Identity, "x": qml.PauliX, "y": qml.PauliY, "z": qml.PauliZ,
        "h": qml.Hadamard, "s": qml.S, "sx": qml.SX, "cx": qml.CNOT, "cz": qml.CZ,
    }
    wires = list(wires)
    if name in ("rx", "ry", "rz"):
        getattr(qml, name.upper())(float(params[0]), wires=wires)
    elif name in ("sdg", "sxdg"):
        qml.adjoint(fixed[name[:-2]])(wires=wires)
    elif name in fixed:
        fixed[name](wires=wires)
    else:
        raise ValueError(f"pennylane_gate: unknown gate {name!r}; the lab uses {GATES_1Q + GATES_2Q}.")


def _reference_paths() -> tuple[str, ...]:
    paths = []
    spec = importlib.util.find_spec("mitiq")
    if spec is not None and spec.submodule_search_locations:
        paths += [os.path.join(p, "") for p in spec.submodule_search_locations]
    spec = importlib.util.find_spec("pennylane")
    if spec is not None and spec.submodule_search_locations:
        # PennyLane's own folding / extrapolation / ZNE transforms.
        paths += [os.path.join(p, "noise", "mitigate.py") for p in spec.submodule_search_locations]
    return tuple(paths)


@contextmanager
def reference_free(task: str):
    """Run a student's function with the reference mitigation libraries off
    limits: fails the check (naming the task) if any code of Mitiq, or of
    PennyLane's folding/extrapolation transforms, ran inside the block.

    Test cells wrap calls to the student's functions in it, so a task cannot
    be passed by calling the reference the tests compare against.
    """
    from helpers.checks import CheckError

    paths = _reference_paths()
    hits: list[str] = []

    def profiler(frame, event, arg):
        if event == "call" and not hits and frame.f_code.co_filename.startswith(paths):
            hits.append(f"{frame.f_code.co_name} in {frame.f_code.co_filename}")

    previous = sys.getprofile()
    sys.setprofile(profiler)
    try:
        yield
    finally:
        sys.setprofile(previous)
    if hits:
        raise CheckError(
            f"Task {task}: your code called {hits[0]}. Mitiq (and PennyLane's mitigation "
            "transforms) are the reference the tests compare against; implement the technique "
            "yourself with numpy and qiskit."
        )


def classifier_dataset(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points in ``[0, pi]^2`` with labels in {-1, +1}: +1 inside a
    circle, balanced, with a margin so a 2-qubit classifier can separate them."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    centre, radius = np.array([np.pi / 2, np.pi / 2]), 1.0
    while len(xs) < n:
        x = rng.uniform(0, np.pi, size=2)
        r = np.linalg.norm(x - centre)
        if abs(r - radius) < 0.15:
            continue
        label = 1 if r < radius else -1
        if sum(1 for y in ys if y == label) >= (n + 1) // 2:
            continue
        xs.append(x)
        ys.append(label)
    return np.array(xs), np.array(ys, dtype=float)


def plot_extrapolation(scales: Sequence[float], values: Sequence[float],
                       estimates: Mapping[str, float], ideal: float | None = None,
                       title: str = "Zero-noise extrapolation"):
    """Measured ``values`` at noise ``scales``, each method's zero-noise
    ``estimates`` ({name: value}) at scale 0, and the ideal value. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(scales, values, "ko-", label="measured (folded circuits)")
    for marker, (name, value) in zip("s^vD<>", estimates.items()):
        ax.plot([0.0], [value], marker, ms=8, label=f"{name}: {value:.4f}")
    if ideal is not None:
        ax.axhline(ideal, color="g", lw=1, label="ideal")
    ax.set_xlabel("noise scale factor")
    ax.set_ylabel("expectation value")
    ax.set_xlim(-0.2, max(scales) + 0.3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_error_vs_depth(depths: Sequence[int], errors: Mapping[str, Sequence[float]],
                        title: str = "Error against depth"):
    """``errors`` ({name: error per depth}) against circuit depth. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, err in errors.items():
        ax.plot(depths, err, "o-", label=name)
    ax.set_xlabel("depth (random layers before the inverse)")
    ax.set_ylabel("|noisy - ideal|")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
