"""Lab 10's graded checks, run by the grader against the student's kernel
(``autograder.trusted``); never released to students.

Each check re-runs the notebook's visible test on the grader's side and adds
the hidden cases. Qiskit circuits and noise models cannot cross the wire: the
grader sends them as plain descriptions that ``helpers.probes`` factories
build in the kernel (``ModuleSpec``), and calls the student's functions
through ``helpers.probes.call_plain``, which reports circuits and noise models
back as plain descriptions that are rebuilt and simulated here. Expected
values come from Aer, PennyLane and Mitiq run here, never from the kernel;
where the lab forbids Mitiq, ``call_plain`` reports whether Mitiq's (or
PennyLane's mitigation) code ran during the call.
"""
import contextlib
import io
import math
import warnings

import numpy as np

from autograder.trusted import ModuleSpec, Ref, task
from helpers import probes, quantum
from helpers.checks import check, check_close, check_equal, check_in_range, check_shape

with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
    warnings.simplefilter("ignore")
    import pennylane as qml
    from mitiq.rem.inverse_confusion_matrix import (closest_positive_distribution,
                                                    generate_tensored_inverse_confusion_matrix)
    from mitiq.zne.inference import ExpFactory, LinearFactory, RichardsonFactory
    from mitiq.zne.scaling import fold_gates_at_random
    from mitiq.zne.scaling import fold_global as mitiq_fold_global
    from pennylane import numpy as pnp
    from qiskit import QuantumCircuit
    from qiskit.quantum_info import Operator
    from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error

# The references the lab compares with; the student's code must not call them.
FORBID = ["mitiq", "pennylane.noise.mitigate"]
LAB_GATES = set(quantum.GATES_1Q) | set(quantum.GATES_2Q) | {"barrier"}


# ---------------------------------------------------------------- plumbing

def _circuit(qc: QuantumCircuit) -> ModuleSpec:
    """A circuit argument: rebuilt in the kernel from its gate list."""
    plain = probes.to_plain(qc)
    return ModuleSpec("helpers.probes.qiskit_circuit", {"n_qubits": plain["n_qubits"], "gates": plain["gates"]})


def _noise(model) -> ModuleSpec | None:
    """A noise-model argument: rebuilt in the kernel with NoiseModel.from_dict."""
    if model is None:
        return None
    return ModuleSpec("helpers.probes.qiskit_noise_model", {"spec": model.to_dict(serializable=True)})


def _what(value) -> str:
    if isinstance(value, dict) and "qiskit" in value:
        return f"a {value['qiskit']}"
    return f"a {type(value).__name__}"


def _call(student, t: str, name: str, *args, forbid: bool = False, catch: bool = False, **kwargs) -> dict:
    """The student's ``name(*args, **kwargs)`` through ``helpers.probes.call_plain``."""
    out = student.call("helpers.probes.call_plain", Ref(name), list(args), dict(kwargs), catch,
                       FORBID if forbid else [])
    check(type(out) is dict and {"value", "args", "forbidden", "raised"} <= set(out),
          f"calling {name} gave an unreadable answer.", task=t)
    if out["forbidden"]:
        check(False, f"your code called {out['forbidden']}. Mitiq (and PennyLane's mitigation transforms) are "
              "the reference the tests compare against; implement the technique yourself with numpy and qiskit.",
              task=t)
    return out


def _as_circuit(value, what: str, t: str) -> QuantumCircuit:
    """A circuit the kernel reported, rebuilt here (lab gates only)."""
    check(isinstance(value, dict) and value.get("qiskit") == "QuantumCircuit",
          f"{what} returned {_what(value)}, expected a qiskit QuantumCircuit.", task=t)
    check(value.get("clbits", 0) == 0, f"{what} returned a circuit with classical bits; the lab's circuits "
          "have none (no measurements).", task=t)
    bad = sorted({str(g[0]) for g in value["gates"]} - LAB_GATES)
    check(not bad, f"{what} returned a circuit with the gates {bad}; the lab's circuits use only "
          f"{sorted(LAB_GATES - {'barrier'})} (append single gates, not sub-circuits).", task=t)
    try:
        return probes.qiskit_circuit(value["n_qubits"], value["gates"])
    except Exception as exc:  # noqa: BLE001 - a malformed gate list is the student's
        check(False, f"{what} returned a circuit that could not be rebuilt ({type(exc).__name__}: {exc}).", task=t)


def _as_noise_model(value, what: str, t: str):
    check(isinstance(value, dict) and value.get("qiskit") == "NoiseModel",
          f"{what} returned {_what(value)}, expected a qiskit_aer.noise.NoiseModel.", task=t)
    try:
        return probes.qiskit_noise_model(value["dict"])
    except Exception as exc:  # noqa: BLE001
        check(False, f"{what} returned a noise model that could not be read ({type(exc).__name__}).", task=t)


def _ref_noise(p1, p2, readout=None) -> NoiseModel:
    model = NoiseModel()
    model.add_all_qubit_quantum_error(depolarizing_error(p1, 1), list(quantum.GATES_1Q))
    model.add_all_qubit_quantum_error(depolarizing_error(p2, 2), list(quantum.GATES_2Q))
    if readout is not None:
        p01, p10 = readout
        model.add_all_qubit_readout_error(ReadoutError([[1 - p01, p01], [p10, 1 - p10]]))
    return model


def _confusion(p01, p10) -> np.ndarray:
    return np.array([[1 - p01, p10], [p01, 1 - p10]])


def _complex_pair(m) -> np.ndarray:
    m = np.asarray(m, dtype=complex)
    return np.stack([m.real, m.imag])


def _float(value, what: str, t: str) -> float:
    check(isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool),
          f"{what} returned a {type(value).__name__}, expected a float.", task=t)
    return float(value)


def _same_gates(got: QuantumCircuit, want: QuantumCircuit) -> str | None:
    return quantum.compare_gate_sequences(got, want)


# ---------------------------------------------------------------- Part 1

@task("task_1_1_noise_model")
def noise_model(student):
    def build(*args, **kwargs):
        desc = f"build_noise_model{args}" + (f" with {kwargs}" if kwargs else "")
        return _as_noise_model(_call(student, "1.1", "build_noise_model", *args, **kwargs)["value"], desc, "1.1")

    qx = QuantumCircuit(1)
    qx.x(0)
    nm = build(0.1, 0.2)
    check_close(quantum.probabilities(qx, nm), [0.05, 0.95], name="outcome probabilities after X with p1=0.1",
                task="1.1", hint="depolarizing_error(p1, 1) must follow every gate in quantum.GATES_1Q")
    check_close(quantum.expectation_z(quantum.bell_circuit(), nm), 0.8, name="<ZZ> of the Bell state with p2=0.2",
                task="1.1", hint="<ZZ> = 1 - p2 here: put depolarizing_error(p2, 2) on the gates in quantum.GATES_2Q")
    nm_ro = build(0.0, 0.0, readout=(0.05, 0.2))
    shots = 20_000
    c0 = quantum.sample_counts(QuantumCircuit(1), nm_ro, shots=shots, seed=1)
    check_close(c0.get("1", 0) / shots, 0.05, rtol=0, atol=0.01, name="P(read 1 | prepared 0) with readout=(0.05, 0.2)",
                task="1.1", hint="readout=(p01, p10): ReadoutError([[1 - p01, p01], [p10, 1 - p10]]) (rows: prepared state)")
    c1 = quantum.sample_counts(qx, nm_ro, shots=shots, seed=2)
    check_close(c1.get("0", 0) / shots, 0.2, rtol=0, atol=0.01, name="P(read 0 | prepared 1) with readout=(0.05, 0.2)",
                task="1.1", hint="is the readout matrix transposed? rows are the prepared state")
    # Every gate of the lab's gate set must be noisy: an RB circuit plus the non-Clifford gates.
    circ = quantum.rb_circuit(3, 2, seed=11)
    circ.rx(0.7, 0); circ.ry(1.1, 1); circ.rz(0.4, 2); circ.sxdg(0); circ.id(1); circ.cz(1, 2); circ.h(2); circ.cx(2, 0)
    for p1, p2 in [(0.02, 0.07), (0.0, 0.15), (0.09, 0.0)]:
        got, ref = build(p1, p2), _ref_noise(p1, p2)
        check_close(quantum.probabilities(circ, got), quantum.probabilities(circ, ref), atol=1e-9,
                    name=f"noisy probabilities of a 3-qubit circuit with p1={p1}, p2={p2}", task="1.1")
        check_close(quantum.expectation_z(circ, got, qubits=[0, 2]), quantum.expectation_z(circ, ref, qubits=[0, 2]),
                    atol=1e-9, name=f"<Z0 Z2> with p1={p1}, p2={p2}", task="1.1")
    # Readout on every qubit, asymmetric the other way round.
    ghz, shots = quantum.ghz_circuit(3), 50_000
    got = quantum.counts_to_probs(quantum.sample_counts(ghz, build(0, 0, (0.15, 0.02)), shots=shots, seed=5), 3)
    want = quantum.counts_to_probs(quantum.sample_counts(ghz, _ref_noise(0, 0, (0.15, 0.02)), shots=shots, seed=6), 3)
    check_close(got, want, rtol=0, atol=0.012, name="GHZ outcome frequencies with readout=(0.15, 0.02)", task="1.1",
                hint="the readout error must apply to every qubit")


@task("task_1_2_pennylane_noise")
def pennylane_noise(student):
    def value(name, *args, **kwargs):
        return _call(student, "1.2", name, *args, **kwargs)["value"]

    ops = value("depolarizing_kraus_2q", 0.3)
    check(isinstance(ops, (list, tuple, np.ndarray)) and len(ops) == 16,
          f"depolarizing_kraus_2q returned {len(ops) if hasattr(ops, '__len__') else ops!r} operators, expected 16 "
          "(one per two-qubit Pauli).", task="1.2")
    ops = [np.asarray(k, dtype=complex) for k in ops]
    check_shape(ops[0], (4, 4), name="a two-qubit Kraus operator", task="1.2")
    for k in ops:
        check_shape(k, (4, 4), name="every two-qubit Kraus operator", task="1.2")
    check_close(_complex_pair(sum(k.conj().T @ k for k in ops)), _complex_pair(np.eye(4)), atol=1e-10,
                name="sum of K^dagger K (2-qubit depolarizing), [real, imag]", task="1.2",
                hint="Kraus operators of a channel must satisfy sum K^dagger K = I")
    # The channel itself: (1 - p) rho + p I/4 on random density matrices (any Kraus set of it passes).
    rng = np.random.default_rng(12)
    for p in (0.3, 0.07):
        kraus = ops if p == 0.3 else [np.asarray(k, dtype=complex) for k in value("depolarizing_kraus_2q", p)]
        for _ in range(2):
            a = rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4))
            rho = a @ a.conj().T
            rho /= np.trace(rho)
            got = sum(k @ rho @ k.conj().T for k in kraus)
            check_close(_complex_pair(got), _complex_pair((1 - p) * rho + p * np.eye(4) / 4), atol=1e-10,
                        name=f"depolarizing_kraus_2q({p}) applied to a random state, [real, imag]", task="1.2",
                        hint="rho -> (1 - p) rho + p I/4, with I/4 the average of P rho P over the 16 Paulis")
    rk = [np.asarray(k, dtype=complex) for k in value("readout_kraus", 0.1, 0.25)]
    check_close(_complex_pair(sum(k.conj().T @ k for k in rk)), _complex_pair(np.eye(2)), atol=1e-10,
                name="sum of K^dagger K (readout), [real, imag]", task="1.2")
    check_close(_complex_pair(sum(k @ np.diag([1.0, 0.0]) @ k.conj().T for k in rk)), _complex_pair(np.diag([0.9, 0.1])),
                atol=1e-10, name="readout channel applied to |0><0|, [real, imag]", task="1.2",
                hint="|0> must become |1> with probability p01")
    check_close(_complex_pair(sum(k @ np.diag([0.0, 1.0]) @ k.conj().T for k in rk)), _complex_pair(np.diag([0.25, 0.75])),
                atol=1e-10, name="readout channel applied to |1><1|, [real, imag]", task="1.2",
                hint="|1> must become |0> with probability p10")

    def probs(circ, *args, **kwargs):
        got = value("pennylane_probs", _circuit(circ), *args, **kwargs)
        try:
            return np.asarray(got, dtype=float)
        except (TypeError, ValueError):
            check(False, f"pennylane_probs returned a {type(got).__name__}, expected a numpy array.", task="1.2")

    qx = QuantumCircuit(1)
    qx.x(0)
    check_close(probs(qx, 0.1, 0.0), [0.05, 0.95], atol=1e-10, name="probabilities after X with p1=0.1", task="1.2",
                hint="Qiskit's p (replace by I/2) and DepolarizingChannel's q (each Pauli with q/3) differ: P(0) must be p/2")
    check_close(probs(quantum.bell_circuit(), 0.0, 0.0, readout=(0.1, 0.2)), [0.425, 0.125, 0.125, 0.325],
                atol=1e-10, name="Bell-state probabilities with readout=(0.1, 0.2)", task="1.2")
    check_close(probs(quantum.bell_circuit(), 0.0, 0.2), [0.45, 0.05, 0.05, 0.45], atol=1e-10,
                name="Bell-state probabilities with p2=0.2", task="1.2", hint="the two-qubit channel must follow every CX/CZ")
    circ = quantum.rb_circuit(3, 2, seed=4)
    circ.rx(0.3, 2); circ.ry(0.8, 0); circ.cz(0, 1); circ.sx(1); circ.rz(1.3, 1); circ.h(1)
    for p1, p2, ro in [(0.04, 0.1, (0.06, 0.18)), (0.0, 0.3, (0.2, 0.01)), (0.15, 0.0, None)]:
        want = quantum.probabilities(circ, _ref_noise(p1, p2))
        if ro is not None:
            a = _confusion(*ro)
            want = np.kron(np.kron(a, a), a) @ want
        check_close(probs(circ, p1, p2, readout=ro), want, atol=1e-8,
                    name=f"probabilities of a 3-qubit circuit with p1={p1}, p2={p2}, readout={ro}", task="1.2",
                    hint="compare with Aer: every 1-qubit gate gets the 1-qubit channel, every 2-qubit gate the 2-qubit one")


# ---------------------------------------------------------------- Part 2

@task("task_2_1_drift")
def drift(student):
    fit = student.function("fit_decay")

    def pair(got, what):
        check(isinstance(got, (list, tuple)) and len(got) == 2, f"{what} returned {got!r}, expected (A, f).", task="2.1")
        return [_float(g, what, "2.1") for g in got]

    depths = [1, 2, 4, 8]
    check_close(pair(fit(depths, [0.9 * 0.95**d for d in depths]), "fit_decay"), [0.9, 0.95], atol=1e-9,
                name="fit_decay on exact data (A, f)", task="2.1",
                hint="fit a straight line to log(values) against depth: slope log(f), intercept log(A)")
    rng = np.random.default_rng(3)
    ds = np.array([1, 2, 3, 6, 10])
    vals = 0.8 * 0.9**ds * np.exp(rng.normal(0, 0.05, ds.size))
    slope, intercept = np.polyfit(ds, np.log(vals), 1)
    check_close(pair(fit([int(d) for d in ds], [float(v) for v in vals]), "fit_decay"),
                [np.exp(intercept), np.exp(slope)], rtol=1e-7, atol=1e-9,
                name="fit_decay on noisy data", task="2.1", hint="least squares on log(values), not on the values")

    def drift_of(*args, **kwargs):
        got = _call(student, "2.1", "drift_vs_depth", *args, **kwargs)["value"]
        try:
            return np.asarray(got, dtype=float)
        except (TypeError, ValueError):
            check(False, f"drift_vs_depth returned a {type(got).__name__}, expected a numpy array.", task="2.1")

    zero = drift_of(None, 2, [1, 3], n_circuits=2)
    check_shape(zero, (2,), name="drift_vs_depth(None, 2, [1, 3])", task="2.1")
    check_close(zero, [0.0, 0.0], atol=1e-9, name="drift without noise", task="2.1")
    ref = _ref_noise(0.01, 0.05)
    depths = [1, 2, 5]
    want = [np.mean([abs(quantum.expectation_z(c, ref) - quantum.expectation_z(c))
                     for c in (quantum.rb_circuit(3, d, seed=7 + i) for i in range(2))]) for d in depths]
    got = drift_of(_noise(ref), 3, depths, n_circuits=2, seed=7)
    check_close(got, want, atol=1e-9, name="drift_vs_depth(noise, 3, [1, 2, 5], n_circuits=2, seed=7)", task="2.1",
                hint="circuit i at depth d is quantum.rb_circuit(n_qubits, d, seed=seed + i)")
    check(np.all(np.diff(got) > 0), "the drift should grow with depth.", task="2.1")
    ref2 = _ref_noise(0.03, 0.0)
    want2 = [np.mean([abs(quantum.expectation_z(quantum.rb_circuit(2, d, seed=i), ref2) - 1.0) for i in range(3)])
             for d in (3, 1)]
    check_close(drift_of(_noise(ref2), 2, [3, 1]), want2, atol=1e-9,
                name="drift_vs_depth(noise, 2, [3, 1]) with the default n_circuits=3, seed=0", task="2.1")


# ---------------------------------------------------------------- Part 3

def _folded(student, t, name, circ, scale, **kwargs) -> QuantumCircuit:
    out = _call(student, t, name, _circuit(circ), scale, forbid=True, **kwargs)
    args = ", ".join([str(scale)] + [f"{k}={v}" for k, v in kwargs.items()])
    got = _as_circuit(out["value"], f"{name}(circuit, {args})", t)
    before = probes.to_plain(circ)
    after = out["args"][0]
    check(isinstance(after, dict) and after.get("gates") == before["gates"],
          f"{name} modified its input circuit.", task=t, hint="build a new circuit (circuit.copy(), copy_empty_like())")
    return got


@task("task_3_1_fold_global")
def fold_global(student):
    bell = quantum.bell_circuit()
    check(_same_gates(_folded(student, "3.1", "fold_global", bell, 1), bell) is None,
          "fold_global(circuit, 1) must return the circuit unchanged.", task="3.1")
    msg = _same_gates(_folded(student, "3.1", "fold_global", bell, 3), bell.compose(bell.inverse()).compose(bell))
    check(msg is None, f"fold_global(bell, 3) must be C C^dagger C: {msg}.", task="3.1")
    rb = quantum.rb_circuit(2, 3, seed=1)
    f = _folded(student, "3.1", "fold_global", rb, 2.2)
    check(Operator(f).equiv(Operator(rb)), "fold_global(circuit, 2.2) changes the circuit's unitary.", task="3.1",
          hint="fold with the inverse (C^dagger: reversed order AND each gate inverted)")
    n = len(rb.data)
    check_equal(len(f.data), n + 2 * round(1.2 * n / 2), name="len(fold_global(rb, 2.2).data)", task="3.1",
                hint="k = round(fraction * n / 2) gates are folded for the fractional part")
    out = _call(student, "3.1", "fold_global", _circuit(rb), 0.5, forbid=True, catch=True)
    check(out["raised"] is not None and "ValueError" in out["raised"],
          "fold_global(circuit, 0.5) must raise ValueError (scale < 1).", task="3.1")
    for n_qubits, depth, seed, scale in [(2, 2, 3, 1.3), (3, 3, 5, 2.0), (3, 2, 8, 2.7), (5, 2, 2, 3.0), (2, 4, 9, 4.4),
                                        (4, 1, 6, 5.6), (1, 5, 4, 1.9)]:
        circ = quantum.rb_circuit(n_qubits, depth, seed=seed)
        circ.rx(0.4 + seed, 0)
        for q in range(1, n_qubits):
            circ.ry(0.3 * q, q)
        want = quantum.from_cirq(mitiq_fold_global(quantum.to_cirq(circ), scale), n_qubits)
        got = _folded(student, "3.1", "fold_global", circ, scale)
        msg = _same_gates(got, want)
        check(msg is None, f"fold_global(circuit, {scale}) differs from Mitiq's global folding: {msg}.", task="3.1",
              hint="fractional part: invert the LAST k = round(fraction * n / 2) gates, then re-apply them")
        check(Operator(got).equiv(Operator(circ)), f"fold_global(circuit, {scale}) changes the unitary.", task="3.1")


@task("task_3_2_fold_gates")
def fold_gates(student):
    rb = quantum.rb_circuit(2, 2, seed=2)
    n = len(rb.data)
    want3 = rb.copy_empty_like()
    for inst in rb.data:
        want3.append(inst)
        want3.append(inst.operation.inverse(), inst.qubits)
        want3.append(inst)
    msg = _same_gates(_folded(student, "3.2", "fold_gates", rb, 3, seed=0), want3)
    check(msg is None, f"fold_gates(circuit, 3) must turn every gate G into G G^dagger G: {msg}.", task="3.2")
    check(_same_gates(_folded(student, "3.2", "fold_gates", rb, 1, seed=0), rb) is None,
          "fold_gates(circuit, 1) must return the circuit unchanged.", task="3.2")
    f = _folded(student, "3.2", "fold_gates", rb, 1.6, seed=0)
    check_equal(len(f.data), n + 2 * round(0.6 * n / 2), name="len(fold_gates(rb, 1.6).data)", task="3.2",
                hint="k = round((scale - (2m + 1)) * n / 2) gates get one extra fold")
    check(Operator(f).equiv(Operator(rb)), "fold_gates(circuit, 1.6) changes the circuit's unitary.", task="3.2")
    out = _call(student, "3.2", "fold_gates", _circuit(rb), 0.9, forbid=True, catch=True, seed=0)
    check(out["raised"] is not None and "ValueError" in out["raised"],
          "fold_gates(circuit, 0.9) must raise ValueError (scale < 1).", task="3.2")
    for n_qubits, depth, seed, scale in [(2, 3, 0, 1.4), (3, 2, 4, 2.2), (3, 3, 1, 3.0), (5, 1, 7, 3.9), (2, 2, 11, 5.3),
                                        (4, 2, 3, 1.8)]:
        circ = quantum.rb_circuit(n_qubits, depth, seed=seed + 20)
        circ.rz(0.9, n_qubits - 1)
        want = quantum.from_cirq(fold_gates_at_random(quantum.to_cirq(circ), scale, seed=seed,
                                                      fidelities={"single": 0.99, "double": 0.99}), n_qubits)
        got = _folded(student, "3.2", "fold_gates", circ, scale, seed=seed)
        msg = _same_gates(got, want)
        check(msg is None, f"fold_gates(circuit, {scale}, seed={seed}) differs from Mitiq's local folding: {msg}.",
              task="3.2", hint="the extra folds go to the first k indices of np.random.RandomState(seed).permutation(n)")
        check(Operator(got).equiv(Operator(circ)), f"fold_gates(circuit, {scale}) changes the unitary.", task="3.2")


@task("task_3_3_extrapolate")
def extrapolate(student):
    def ext(name, *args, **kwargs):
        return _float(_call(student, "3.3", name, *args, forbid=True, **kwargs)["value"], name, "3.3")

    s = [1.0, 2.0, 3.0]
    check_close(ext("richardson_extrapolate", s, [0.9 - 0.1 * x + 0.01 * x**2 for x in s]), 0.9, atol=1e-9,
                name="richardson_extrapolate of an exact quadratic", task="3.3",
                hint="the degree-2 polynomial through 3 points reproduces a quadratic exactly")
    check_close(ext("linear_extrapolate", s, [0.8 - 0.05 * x for x in s]), 0.8, atol=1e-9,
                name="linear_extrapolate of an exact line", task="3.3")
    check_close(ext("exponential_extrapolate", s, [0.1 + 0.8 * math.exp(-0.2 * x) for x in s], asymptote=0.1), 0.9,
                atol=1e-9, name="exponential_extrapolate of an exact exponential (asymptote 0.1)", task="3.3")
    rng = np.random.default_rng(21)
    for scales in ([1.0, 1.5, 2.5, 4.0], [1.0, 1.3, 1.9], [1.2, 3.0, 5.0, 7.0, 9.0]):
        values = 0.85 * np.exp(-0.15 * np.array(scales)) + rng.normal(0, 0.01, len(scales))
        got = [ext("richardson_extrapolate", scales, values), ext("linear_extrapolate", scales, values),
               ext("exponential_extrapolate", scales, values, asymptote=0.0),
               ext("exponential_extrapolate", scales, -values + 0.05, asymptote=0.05)]
        want = [RichardsonFactory.extrapolate(scales, values), LinearFactory.extrapolate(scales, values),
                ExpFactory.extrapolate(scales, values, asymptote=0.0),
                ExpFactory.extrapolate(scales, -values + 0.05, asymptote=0.05)]
        check_close(got, want, rtol=1e-6, atol=1e-8,
                    name=f"[Richardson, linear, exponential, exponential (negative values)] at scales {scales}",
                    task="3.3", hint="use the scales you are given; weight the log fit; take sign from the linear intercept")
    # Values as a plain list and as a numpy array, scales not starting at 1.
    values = [0.71, 0.52, 0.40]
    check_close(ext("richardson_extrapolate", [1.5, 2.0, 3.5], np.array(values)),
                RichardsonFactory.extrapolate([1.5, 2.0, 3.5], values), rtol=1e-9, atol=1e-9,
                name="richardson_extrapolate at scales [1.5, 2, 3.5]", task="3.3")


@task("task_3_4_zne")
def zne(student):
    def run(circ, model, scales, **kwargs):
        out = _call(student, "3.4", "zne_expectation", _circuit(circ), _noise(model), scales, forbid=True, **kwargs)
        got = out["value"]
        check(isinstance(got, (list, tuple)) and len(got) == 2,
              f"zne_expectation returned {_what(got)}, expected (estimate, values).", task="3.4")
        est = _float(got[0], "zne_expectation's estimate", "3.4")
        try:
            values = np.asarray(got[1], dtype=float)
        except (TypeError, ValueError):
            check(False, "zne_expectation's values are not a numpy array of numbers.", task="3.4")
        return est, values, out["kwargs"]

    # fold and extrapolate are the ones given; the estimate is what extrapolate returns.
    est, values, kw = run(quantum.rb_circuit(2, 2, seed=5), None, [1.0, 1.7, 2.9],
                          fold=ModuleSpec("helpers.probes.FoldProbe"),
                          extrapolate=ModuleSpec("helpers.probes.ExtrapolateProbe", {"value": 123.0}))
    seen = kw["fold"]["scales"]
    check(seen == [1.0, 1.7, 2.9], f"fold was called with scales {seen}, expected [1.0, 1.7, 2.9] in order.", task="3.4")
    check_close(values, [1.0, 1.0, 1.0], atol=1e-9, name="values of an ideal run", task="3.4")
    check_close(est, 123.0, name="the estimate (must come from `extrapolate`)", task="3.4")
    # Hidden: a 3-qubit circuit folded by Mitiq, a noise model of the grader's, non-integer scales.
    ref = _ref_noise(0.01, 0.04)
    circ = quantum.rb_circuit(3, 2, seed=13)
    scales = [1.0, 1.8, 3.4]
    folded = {s: quantum.from_cirq(mitiq_fold_global(quantum.to_cirq(circ), s), 3) for s in scales}
    want_values = [quantum.expectation_z(folded[s], ref) for s in scales]
    want = float(np.polyval(np.polyfit(scales, want_values, 2), 0.0))
    table = {s: {k: v for k, v in probes.to_plain(c).items() if k in ("n_qubits", "gates")} for s, c in folded.items()}
    got, got_values, kw = run(circ, ref, scales, fold=ModuleSpec("helpers.probes.FoldProbe", {"table": table}),
                              extrapolate=ModuleSpec("helpers.probes.ExtrapolateProbe", {"value": want}))
    check_close(got_values, want_values, atol=1e-9, name="noisy values at scales [1.0, 1.8, 3.4]", task="3.4",
                hint="run each folded circuit with the noise model you are given")
    calls = kw["extrapolate"]["calls"]
    check(len(calls) == 1, f"extrapolate was called {len(calls)} times, expected once.", task="3.4")
    check_close(calls[0][0], scales, atol=1e-12, name="the scales passed to extrapolate", task="3.4",
                hint="extrapolate from the scales you were given, with the values in the same order")
    check_close(calls[0][1], want_values, atol=1e-9, name="the values passed to extrapolate", task="3.4")
    check_close(got, want, atol=1e-9, name="ZNE estimate at scales [1.0, 1.8, 3.4]", task="3.4")
    # The lab's target, recomputed here: your fold_global and richardson_extrapolate (the defaults)
    # on the notebook's shallow RB circuit with the lab's noise must cut the error at least 3x.
    noise = _ref_noise(0.005, 0.03)
    rb = quantum.rb_circuit(2, 3, seed=0)
    ideal, noisy = quantum.expectation_z(rb), quantum.expectation_z(rb, noise)
    est, values, _ = run(rb, noise, [1.0, 2.0, 3.0])
    check_close(values[0], noisy, atol=1e-9, name="the value at scale 1 (the unfolded circuit)", task="3.4")
    reduction = abs(noisy - ideal) / max(abs(est - ideal), 1e-12)
    check_in_range(reduction, 3, None, name="ZNE error reduction on the RB circuit", task="3.4",
                   hint="zne_expectation with your fold_global and richardson_extrapolate (the defaults)")


# ---------------------------------------------------------------- Part 4

def _matrices(got, n, what, t):
    check(isinstance(got, (list, tuple)) and len(got) == n,
          f"{what}: expected one matrix per qubit ({n}), got {len(got) if hasattr(got, '__len__') else got!r}.", task=t)
    out = []
    for q, m in enumerate(got):
        try:
            m = np.asarray(m, dtype=float)
        except (TypeError, ValueError):
            check(False, f"{what}: A_{q} is not a matrix of numbers.", task=t)
        check_shape(m, (2, 2), name=f"A_{q}", task=t)
        out.append(m)
    return out


@task("task_4_1_calibrate")
def calibrate(student):
    def mats(n, model, shots, seed):
        got = _call(student, "4.1", "calibrate_confusion", n, _noise(model), shots=shots, seed=seed)["value"]
        return _matrices(got, n, f"calibrate_confusion({n}, ..., shots={shots}, seed={seed})", "4.1")

    ro = NoiseModel()
    ro.add_all_qubit_readout_error(ReadoutError([[0.95, 0.05], [0.15, 0.85]]))
    for q, m in enumerate(mats(2, ro, 40_000, 3)):
        check_close(m.sum(axis=0), [1.0, 1.0], atol=1e-9, name=f"column sums of A_{q}", task="4.1",
                    hint="A[i, j] = P(read i | prepared j): each column is a distribution over outcomes")
        check_close(m, [[0.95, 0.15], [0.05, 0.85]], rtol=0, atol=0.01,
                    name=f"A_{q} for readout (p01, p10) = (0.05, 0.15)", task="4.1",
                    hint="columns are the prepared state: A[1, 0] = P(read 1 | prepared 0) = p01")
    per_qubit = [(0.02, 0.12), (0.1, 0.03), (0.0, 0.2)]
    ro3 = NoiseModel()
    for q, (p01, p10) in enumerate(per_qubit):
        ro3.add_readout_error(ReadoutError([[1 - p01, p01], [p10, 1 - p10]]), [q])
    got = mats(3, ro3, 40_000, 8)
    for q, (p01, p10) in enumerate(per_qubit):
        check_close(got[q].sum(axis=0), [1.0, 1.0], atol=1e-9, name=f"column sums of A_{q} (3 qubits)", task="4.1")
        check_close(got[q], _confusion(p01, p10), rtol=0, atol=0.01,
                    name=f"A_{q} when each qubit has its own readout error", task="4.1",
                    hint="qubit 0 is the rightmost bit of Qiskit's count keys")


def _ref_calibration(n, model, shots, seed):
    zeros, ones = QuantumCircuit(n), QuantumCircuit(n)
    ones.x(range(n))
    mats = [np.zeros((2, 2)) for _ in range(n)]
    for prepared, (circ, s) in enumerate([(zeros, seed), (ones, seed + 1)]):
        for key, c in quantum.sample_counts(circ, model, shots=shots, seed=s).items():
            for q, bit in enumerate(key[::-1]):
                mats[q][int(bit), prepared] += c
    return [m / m.sum(axis=0, keepdims=True) for m in mats]


@task("task_4_2_mitigate")
def mitigate(student):
    def mit(name, probs, mats):
        got = _call(student, "4.2", name, probs, mats, forbid=True)["value"]
        try:
            return np.asarray(got, dtype=float)
        except (TypeError, ValueError):
            check(False, f"{name} returned a {type(got).__name__}, expected a numpy array.", task="4.2")

    a = np.array([[0.9, 0.2], [0.1, 0.8]])
    check_close(mit("mitigate_inverse", [0.55, 0.45], [a]), [0.5, 0.5], atol=1e-9,
                name="mitigate_inverse([0.55, 0.45], [A])", task="4.2",
                hint="solve A p = measured with A[i, j] = P(read i | prepared j); is A transposed?")
    check_close(mit("mitigate_inverse", [0.3, 0.2, 0.1, 0.4], [np.eye(2), np.eye(2)]), [0.3, 0.2, 0.1, 0.4],
                atol=1e-12, name="mitigate_inverse with identity confusion matrices", task="4.2")
    check_close(mit("mitigate_inverse", [1.0, 0.0], [a]), [8 / 7, -1 / 7], atol=1e-9,
                name="mitigate_inverse([1, 0], [A])", task="4.2")
    check_close(mit("mitigate_least_squares", [1.0, 0.0], [a]), [1.0, 0.0], atol=1e-9,
                name="mitigate_least_squares([1, 0], [A])", task="4.2",
                hint="project the quasi-probabilities onto the probability simplex")
    check_close(mit("mitigate_least_squares", [0.55, 0.45], [a]), [0.5, 0.5], atol=1e-9,
                name="mitigate_least_squares of an already valid result", task="4.2")
    rng = np.random.default_rng(17)
    for n in (2, 3):
        mats = []
        for _ in range(n):
            p01, p10 = rng.uniform(0.01, 0.15), rng.uniform(0.05, 0.25)
            mats.append(_confusion(p01, p10))
        full = mats[0]
        for m in mats[1:]:
            full = np.kron(full, m)
        for trial in range(3):
            p_true = rng.dirichlet(np.ones(2**n) * 0.3)
            measured = np.clip(full @ p_true + rng.normal(0, 0.01, 2**n), 0, None)
            measured /= measured.sum()
            want_inv = generate_tensored_inverse_confusion_matrix(n, mats) @ measured
            got_inv = mit("mitigate_inverse", measured, mats)
            got_ls = mit("mitigate_least_squares", measured, mats)
            check_close(got_inv, want_inv, atol=1e-9, name=f"mitigate_inverse with {n} different per-qubit matrices",
                        task="4.2", hint="kron(inv(A_0), inv(A_1), ...) with qubit 0 first")
            check(got_ls.shape == (2**n,) and np.all(got_ls >= -1e-12) and abs(got_ls.sum() - 1) < 1e-9,
                  "mitigate_least_squares must return probabilities (>= 0, summing to 1).", task="4.2")
            check_close(got_ls, closest_positive_distribution(want_inv), atol=2e-4,
                        name=f"mitigate_least_squares with {n} per-qubit matrices (vs Mitiq)", task="4.2")
    # The lab's target, recomputed here: on the notebook's readout-only Bell experiment (calibration and
    # counts sampled here), your mitigate_least_squares must cut the total-variation distance at least 10x.
    ro_only = _ref_noise(0.0, 0.0, (0.03, 0.07))
    shots = 50_000
    bell_ideal = np.array([0.5, 0.0, 0.0, 0.5])
    confusions = _ref_calibration(2, ro_only, shots, seed=0)
    raw = quantum.counts_to_probs(quantum.sample_counts(quantum.bell_circuit(), ro_only, shots=shots, seed=10), 2)
    ls = mit("mitigate_least_squares", raw, confusions)
    reduction = quantum.tvd(raw, bell_ideal) / max(quantum.tvd(ls, bell_ideal), 1e-12)
    check_in_range(reduction, 10, None, name="Bell-state TVD reduction by readout mitigation", task="4.2",
                   hint="mitigate_least_squares of the measured Bell-state probabilities with calibrated matrices")


# ---------------------------------------------------------------- Part 5

N_LAYERS = 3
_VQC_DEVICE = qml.device("default.mixed", wires=2)


@qml.qnode(_VQC_DEVICE, diff_method="backprop")
def _vqc_circuit(params, x, p):
    for layer in range(params.shape[0]):
        for w in range(2):
            for gate, angle in ((qml.RY, x[w]), (qml.RY, params[layer, w, 0]), (qml.RZ, params[layer, w, 1])):
                gate(angle, wires=w)
                qml.DepolarizingChannel(p, wires=w)
        qml.CNOT(wires=[0, 1])
        for w in range(2):
            qml.DepolarizingChannel(p, wires=w)
    return qml.expval(qml.PauliZ(1))


def _vqc_outputs(params, X, p):
    return np.asarray(_vqc_circuit(params, pnp.array(np.asarray(X).T, requires_grad=False), p), dtype=float)


def _initial_params(seed):
    return np.random.default_rng(seed).normal(0, 0.5, (N_LAYERS, 2, 2))


def _ref_train(params0, X, y, p, steps, lr):
    params = pnp.array(params0, requires_grad=True)
    labels = pnp.array(np.asarray(y, dtype=float), requires_grad=False)
    opt = qml.AdamOptimizer(lr)

    def cost(w):
        return pnp.mean((_vqc_circuit(w, pnp.array(np.asarray(X).T, requires_grad=False), p) - labels) ** 2)

    losses = []
    for _ in range(steps):
        params, loss = opt.step_and_cost(cost, params)
        losses.append(float(loss))
    return np.asarray(params), np.array(losses)


def _ref_zne(params, X, p, scales):
    vals = np.array([_vqc_outputs(params, X, p * s) for s in scales])
    return np.array([RichardsonFactory.extrapolate(scales, vals[:, i]) for i in range(vals.shape[1])])


@task("task_5_1_vqc")
def vqc(student):
    def train(p0, X, y, p, steps, lr):
        got = _call(student, "5.1", "train_vqc", ModuleSpec("helpers.probes.trainable_array", {"values": p0}),
                    X, y, p, steps=steps, lr=lr, forbid=True)["value"]
        check(isinstance(got, (list, tuple)) and len(got) == 2,
              f"train_vqc returned {_what(got)}, expected (params, losses).", task="5.1")
        try:
            return np.asarray(got[0], dtype=float), np.asarray(got[1], dtype=float)
        except (TypeError, ValueError):
            check(False, "train_vqc must return numeric params and losses.", task="5.1")

    def zne_out(params, X, p, scales):
        got = _call(student, "5.1", "zne_outputs", ModuleSpec("helpers.probes.trainable_array", {"values": params}),
                    X, p, scales, forbid=True)["value"]
        try:
            return np.asarray(got, dtype=float)
        except (TypeError, ValueError):
            check(False, f"zne_outputs returned a {type(got).__name__}, expected a numpy array.", task="5.1")

    Xs, ys = quantum.classifier_dataset(10, seed=41)
    p0 = _initial_params(5)
    trained, losses = train(p0, Xs, ys, 0.03, 6, 0.1)
    check_shape(losses, (6,), name="losses", task="5.1", hint="one loss per step")
    start = float(np.mean((_vqc_outputs(p0, Xs, 0.03) - ys) ** 2))
    check_close(losses[0], start, rtol=1e-6, atol=1e-9, name="losses[0]", task="5.1",
                hint="the first loss is the MSE of the NOISY classifier at params0")
    check(losses[-1] < losses[0], f"the loss did not decrease ({losses[0]:.4f} -> {losses[-1]:.4f}).", task="5.1")
    check_shape(trained, (N_LAYERS, 2, 2), name="trained params", task="5.1")
    want_params, want_losses = _ref_train(p0, Xs, ys, 0.03, 6, 0.1)
    check_close(losses, want_losses, rtol=1e-5, atol=1e-8, name="losses of 6 Adam steps (lr=0.1, p=0.03)", task="5.1",
                hint="losses[t] is the loss before step t: opt.step_and_cost(cost, params) with qml.AdamOptimizer(lr)")
    check_close(trained, want_params, rtol=1e-5, atol=1e-7, name="params after 6 Adam steps", task="5.1",
                hint="full-batch qml.AdamOptimizer(lr) steps on the MSE of the noisy classifier")
    p1 = _initial_params(9)
    _, losses_h = train(p1, Xs, ys, 0.1, 3, 0.05)
    check_shape(losses_h, (3,), name="losses (3 steps)", task="5.1")
    start_h = float(np.mean((_vqc_outputs(p1, Xs, 0.1) - ys) ** 2))
    check_close(losses_h[0], start_h, rtol=1e-6, atol=1e-9, name="losses[0] at noise p=0.1", task="5.1",
                hint="train on vqc_outputs(params, X, p) with the p you are given")
    check_close(losses_h, _ref_train(p1, Xs, ys, 0.1, 3, 0.05)[1], rtol=1e-5, atol=1e-8,
                name="losses of 3 Adam steps (lr=0.05, p=0.1)", task="5.1", hint="use the lr you are given")

    z0 = zne_out(p0, Xs, 0.0, [1.0, 2.0, 3.0])
    check_close(z0, _vqc_outputs(p0, Xs, 0.0), atol=1e-8, name="zne_outputs with p=0", task="5.1",
                hint="without noise every scale gives the same value, and so must the extrapolation")
    scales = [1.0, 1.5, 2.5]
    check_close(zne_out(p1, Xs, 0.05, scales), _ref_zne(p1, Xs, 0.05, scales), atol=1e-7,
                name="zne_outputs at scales [1, 1.5, 2.5]", task="5.1",
                hint="noise strength p * s for each scale, Richardson per data point over the given scales")

    # The notebook's classifier, trained under noise by your train_vqc (the locked cell after Task 5.1):
    # test accuracy and what ZNE recovers, recomputed here from its parameters.
    got = student.call("helpers.probes.to_plain", Ref("params"))
    try:
        params = np.asarray(got, dtype=float)
    except (TypeError, ValueError):
        check(False, "the notebook's `params` (trained by the cell after Task 5.1) is not an array.", task="5.1")
    check_shape(params, (N_LAYERS, 2, 2), name="the notebook's trained `params`", task="5.1")
    seed, n_train, p_vqc = student.value("SEED"), student.value("N_TRAIN"), 0.02
    check(type(seed) is int and type(n_train) is int and 1 <= n_train <= 1000,
          "the notebook's SEED and N_TRAIN must be the set-up cells' integers.", task="5.1")
    X_test, y_test = quantum.classifier_dataset(n_train, seed=seed + 100)
    out_ideal, out_noisy = _vqc_outputs(params, X_test, 0.0), _vqc_outputs(params, X_test, p_vqc)
    acc = float(np.mean(np.sign(out_noisy) == y_test))
    check_in_range(acc, 0.75, None, name="test accuracy of the classifier trained under noise", task="5.1")
    out_zne = zne_out(params, X_test, p_vqc, [1.0, 2.0, 3.0])
    check_close(out_zne, _ref_zne(params, X_test, p_vqc, [1.0, 2.0, 3.0]), atol=1e-7,
                name="zne_outputs of the notebook's classifier", task="5.1")
    err_noisy, err_zne = float(np.mean(np.abs(out_noisy - out_ideal))), float(np.mean(np.abs(out_zne - out_ideal)))
    check(err_zne < 0.5 * err_noisy, "ZNE should at least halve the outputs' distance to the noiseless ones "
          f"(noisy {err_noisy:.4f}, ZNE {err_zne:.4f}).", task="5.1")
