"""helpers/quantum.py: the non-graded machinery of Lab 10."""
import numpy as np
import pytest

import cirq  # mitiq's circuit format; installed with mitiq
from qiskit import QuantumCircuit  # noqa: E402
from qiskit.quantum_info import Operator  # noqa: E402
from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error  # noqa: E402

from helpers import quantum  # noqa: E402
from helpers.checks import CheckError  # noqa: E402


def _gate_noise(p1, p2):
    model = NoiseModel()
    model.add_all_qubit_quantum_error(depolarizing_error(p1, 1), list(quantum.GATES_1Q))
    model.add_all_qubit_quantum_error(depolarizing_error(p2, 2), list(quantum.GATES_2Q))
    return model


def _all_gates_circuit():
    qc = QuantumCircuit(2)
    for name in quantum.GATES_1Q:
        getattr(qc, name)(*([0.3] if name in ("rx", "ry", "rz") else []), 0)
    qc.cx(0, 1)
    qc.cz(1, 0)
    qc.ry(1.1, 1)
    return qc


@pytest.mark.parametrize("n_qubits,depth", [(1, 3), (2, 4), (3, 3), (5, 2)])
def test_rb_circuit_is_identity_and_uses_lab_gates(n_qubits, depth):
    qc = quantum.rb_circuit(n_qubits, depth, seed=7)
    assert Operator(qc).equiv(Operator(np.eye(2**n_qubits)))
    names = {inst.operation.name for inst in qc.data}
    assert names <= set(quantum.GATES_1Q) | set(quantum.GATES_2Q)
    assert abs(quantum.expectation_z(qc) - 1.0) < 1e-9


def test_rb_circuit_seeds_and_arguments():
    a, b = quantum.rb_circuit(3, 4, seed=1), quantum.rb_circuit(3, 4, seed=1)
    assert quantum.compare_gate_sequences(a, b) is None
    assert quantum.compare_gate_sequences(a, quantum.rb_circuit(3, 4, seed=2)) is not None
    with pytest.raises(ValueError, match="n_qubits >= 1"):
        quantum.rb_circuit(0, 3)


@pytest.mark.parametrize("n_qubits", [2, 3, 5])
def test_rb_circuit_gate_order_matches_cirq_moment_order(n_qubits):
    # The lab compares folds with Mitiq gate by gate: Cirq's all_operations()
    # order must be the order of circuit.data.
    qc = quantum.rb_circuit(n_qubits, 3, seed=n_qubits)
    ops = list(quantum.to_cirq(qc).all_operations())
    assert [tuple(q.x for q in op.qubits) for op in ops] == [
        tuple(qc.find_bit(q).index for q in inst.qubits) for inst in qc.data
    ]


def test_expectation_z_matches_depolarizing_analytics():
    bell = quantum.bell_circuit()
    assert abs(quantum.expectation_z(bell) - 1.0) < 1e-12
    # H then CX: <ZZ> is 1 whatever the 1-qubit noise, and the 2-qubit channel multiplies it by 1 - p2.
    assert abs(quantum.expectation_z(bell, _gate_noise(0.1, 0.2)) - 0.8) < 1e-9
    x = QuantumCircuit(1)
    x.x(0)
    assert abs(quantum.expectation_z(x, _gate_noise(0.1, 0.0)) - (-0.9)) < 1e-9
    ghz = quantum.ghz_circuit(3)
    assert abs(quantum.expectation_z(ghz, qubits=[1, 2]) - 1.0) < 1e-9
    assert abs(quantum.expectation_z(ghz, qubits=[0])) < 1e-9


def test_probabilities_put_qubit_zero_first():
    qc = QuantumCircuit(3)
    qc.x(0)
    expected = np.zeros(8)
    expected[0b100] = 1.0
    np.testing.assert_allclose(quantum.probabilities(qc), expected, atol=1e-12)
    qc.h(2)
    expected = np.zeros(8)
    expected[[0b100, 0b101]] = 0.5
    np.testing.assert_allclose(quantum.probabilities(qc), expected, atol=1e-12)


def test_sample_counts_and_counts_to_probs():
    qc = QuantumCircuit(2)
    qc.x(0)
    counts = quantum.sample_counts(qc, shots=100, seed=0)
    assert counts == {"01": 100}  # Qiskit keys: qubit 0 rightmost
    np.testing.assert_allclose(quantum.counts_to_probs(counts, 2), [0, 0, 1, 0])
    with pytest.raises(ValueError, match="expected 3"):
        quantum.counts_to_probs(counts, 3)


def test_sample_counts_applies_readout_error_and_is_seeded():
    model = NoiseModel()
    model.add_all_qubit_readout_error(ReadoutError([[0.9, 0.1], [0.3, 0.7]]))
    qc = QuantumCircuit(1)
    qc.x(0)
    counts = quantum.sample_counts(qc, model, shots=20_000, seed=3)
    assert abs(counts.get("0", 0) / 20_000 - 0.3) < 0.015
    assert counts == quantum.sample_counts(qc, model, shots=20_000, seed=3)


def test_measurements_are_rejected_with_a_clear_message():
    qc = QuantumCircuit(1, 1)
    qc.measure(0, 0)
    with pytest.raises(ValueError, match="remove measurements"):
        quantum.expectation_z(qc)


def test_tvd():
    assert quantum.tvd([0.5, 0.5], [1.0, 0.0]) == pytest.approx(0.5)
    assert quantum.tvd([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    with pytest.raises(ValueError):
        quantum.tvd([1.0], [0.5, 0.5])


def test_cirq_round_trip_keeps_gates_and_unitary():
    qc = _all_gates_circuit()
    circuit = quantum.to_cirq(qc)
    # Qiskit's matrices put qubit 0 last, Cirq's first.
    np.testing.assert_allclose(cirq.unitary(circuit), Operator(qc.reverse_bits()).data, atol=1e-9)
    back = quantum.from_cirq(circuit, 2)
    assert quantum.compare_gate_sequences(back, qc) is None


def test_from_cirq_reads_mitiq_folds():
    from mitiq.zne.scaling import fold_gates_at_random, fold_global

    qc = _all_gates_circuit()
    for folded in (fold_global(quantum.to_cirq(qc), 2.4),
                   fold_gates_at_random(quantum.to_cirq(qc), 3.0, seed=1)):
        back = quantum.from_cirq(folded, 2)
        assert Operator(back).equiv(Operator(qc))
    assert len(quantum.from_cirq(fold_global(quantum.to_cirq(qc), 3.0), 2).data) == 3 * len(qc.data)


def test_from_cirq_rejects_gates_outside_the_lab_set():
    q = cirq.LineQubit.range(1)
    with pytest.raises(ValueError, match="no lab gate"):
        quantum.from_cirq(cirq.Circuit(cirq.T(q[0])))


def test_compare_gate_sequences():
    a = QuantumCircuit(2)
    a.h(0)
    a.x(1)
    a.cx(0, 1)
    b = QuantumCircuit(2)  # same per-qubit sequences, interleaved differently
    b.x(1)
    b.h(0)
    b.cx(0, 1)
    assert quantum.compare_gate_sequences(a, b) is None
    c = a.copy()
    c.s(0)
    assert "qubit 0 has 3 gates, expected 2" in quantum.compare_gate_sequences(c, a)
    d = QuantumCircuit(2)
    d.h(0)
    d.y(1)
    d.cx(0, 1)
    assert "on qubit 1, gate #0 is y" in quantum.compare_gate_sequences(d, a)
    e = QuantumCircuit(2)  # rz(pi) is Z up to a global phase
    e.rz(np.pi, 0)
    f = QuantumCircuit(2)
    f.z(0)
    assert quantum.compare_gate_sequences(e, f) is None


def test_reference_free_flags_mitiq_calls_only():
    from mitiq.zne.inference import RichardsonFactory

    with quantum.reference_free("3.3"):
        np.polyfit([1, 2, 3], [1.0, 0.9, 0.8], 1)
    with pytest.raises(CheckError, match="Task 3.3: your code called extrapolate"):
        with quantum.reference_free("3.3"):
            RichardsonFactory.extrapolate([1, 2, 3], [1.0, 0.9, 0.85])


def test_reference_free_flags_pennylane_mitigation_transforms():
    import pennylane as qml

    with pytest.raises(CheckError, match="Task 5.1"):
        with quantum.reference_free("5.1"):
            qml.noise.richardson_extrapolate(np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.9, 0.85]))


def test_pennylane_gate_matches_qiskit():
    import pennylane as qml

    qc = _all_gates_circuit()
    dev = qml.device("default.mixed", wires=2)

    @qml.qnode(dev)
    def run():
        for inst in qc.data:
            quantum.pennylane_gate(inst.operation.name, inst.operation.params,
                                   [qc.find_bit(q).index for q in inst.qubits])
        return qml.probs(wires=[0, 1])

    np.testing.assert_allclose(run(), quantum.probabilities(qc), atol=1e-10)
    with pytest.raises(ValueError, match="unknown gate 't'"):
        quantum.pennylane_gate("t", [], [0])


def test_classifier_dataset():
    X, y = quantum.classifier_dataset(21, seed=4)
    assert X.shape == (21, 2) and y.shape == (21,)
    assert set(np.unique(y)) == {-1.0, 1.0}
    assert abs((y == 1).sum() - (y == -1).sum()) <= 1
    assert X.min() >= 0 and X.max() <= np.pi
    inside = np.linalg.norm(X - np.pi / 2, axis=1) < 1.0
    np.testing.assert_array_equal(np.where(inside, 1.0, -1.0), y)
    X2, y2 = quantum.classifier_dataset(21, seed=4)
    np.testing.assert_array_equal(X, X2)


def test_plots_return_figures():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = quantum.plot_extrapolation([1, 2, 3], [0.9, 0.8, 0.7], {"Richardson": 1.0}, ideal=1.0)
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 3
    fig2 = quantum.plot_error_vs_depth([1, 2], {"noisy": [0.1, 0.2], "ZNE": [0.01, 0.02]})
    assert len(fig2.axes[0].lines) == 2
    plt.close("all")
