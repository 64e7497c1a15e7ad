"""Lab 10's trusted checks pass the reference solution, pass correct
solutions written differently, and fail the typical mistakes (run with
``pytest solutions/lab10_qml`` or ``-m lab10_qml``)."""
import pytest

from autograder.labtest import lab_tests, locked_cell

LAB = "lab10_qml"
pytestmark = pytest.mark.lab10_qml

# The notebook's own locked set-up cells (parameters in QUICK mode, setup, vqc_model), run as it runs them.
PREAMBLE = "QUICK, SEED = True, 0\n" + locked_cell(LAB, "setup") + "\n" + locked_cell(LAB, "vqc_model") + "\n"
# The locked cell after Task 5.1 (vqc_run) trains the notebook's `params`, which the check of 5.1
# evaluates. Training takes seconds, so it runs once, with the solution's train_vqc, and every
# case of 5.1 gets the result (a mistake must be caught by the check's own calls).
VQC_RUN = "params, vqc_losses = train_vqc(initial_params(SEED), X_train, y_train, P_VQC, VQC_STEPS)\n"
_TRAINED: dict = {}


def after(harness, test_id: str) -> str:
    if test_id != "task_5_1_vqc":
        return ""
    if "params" not in _TRAINED:
        import numpy as np

        _TRAINED["params"] = np.asarray(harness.namespace(extra=VQC_RUN)["params"]).tolist()
    return f"params = pnp.array({_TRAINED['params']!r}, requires_grad=True)\n"

# name: (solution cell, fragment, replacement, the test cell that must fail)
MISTAKES = {
    "noise model: readout matrix transposed": (
        "task_1_1_noise_model_code", "ReadoutError([[1 - p01, p01], [p10, 1 - p10]])",
        "ReadoutError([[1 - p01, p10], [p01, 1 - p10]])", "task_1_1_noise_model"),
    "noise model: rotations and sxdg left noiseless": (
        "task_1_1_noise_model_code", "depolarizing_error(p1, 1), list(quantum.GATES_1Q)",
        "depolarizing_error(p1, 1), ['id', 'x', 'y', 'z', 'h', 's', 'sdg', 'sx']", "task_1_1_noise_model"),
    "noise model: readout error on qubit 0 only": (
        "task_1_1_noise_model_code", "model.add_all_qubit_readout_error(ReadoutError([[1 - p01, p01], [p10, 1 - p10]]))",
        "model.add_readout_error(ReadoutError([[1 - p01, p01], [p10, 1 - p10]]), [0])", "task_1_1_noise_model"),
    "noise model: p2 on the one-qubit gates": (
        "task_1_1_noise_model_code", "depolarizing_error(p1, 1)", "depolarizing_error(p2, 1)", "task_1_1_noise_model"),
    "pennylane: DepolarizingChannel given Qiskit's p": (
        "task_1_2_pennylane_noise_code", "qml.DepolarizingChannel(3 * p1 / 4, wires=wires[0])",
        "qml.DepolarizingChannel(p1, wires=wires[0])", "task_1_2_pennylane_noise"),
    "pennylane: identity Kraus weight 1 - p": (
        "task_1_2_pennylane_noise_code", "1 - 15 * p / 16 if i == j == 0", "1 - p if i == j == 0",
        "task_1_2_pennylane_noise"),
    "pennylane: readout flips swapped": (
        "task_1_2_pennylane_noise_code", "up = np.sqrt(p01) * np.array([[0.0, 0.0], [1.0, 0.0]])\n"
        "    down = np.sqrt(p10) * np.array([[0.0, 1.0], [0.0, 0.0]])",
        "up = np.sqrt(p10) * np.array([[0.0, 0.0], [1.0, 0.0]])\n"
        "    down = np.sqrt(p01) * np.array([[0.0, 1.0], [0.0, 0.0]])", "task_1_2_pennylane_noise"),
    "pennylane: readout channel on wire 0 only": (
        "task_1_2_pennylane_noise_code", "qml.QubitChannel(readout_kraus(*readout), wires=w)",
        "qml.QubitChannel(readout_kraus(*readout), wires=0)", "task_1_2_pennylane_noise"),
    "drift: fit on the values, not their log": (
        "task_2_1_drift_code", "np.log(np.asarray(values, dtype=float)), 1)", "np.asarray(values, dtype=float), 1)",
        "task_2_1_drift"),
    "drift: seed not offset per circuit": (
        "task_2_1_drift_code", "quantum.rb_circuit(n_qubits, d, seed=seed + i)", "quantum.rb_circuit(n_qubits, d, seed=i)",
        "task_2_1_drift"),
    "drift: signed difference": (
        "task_2_1_drift_code", "errs.append(abs(quantum.expectation_z(circ, noise_model) - quantum.expectation_z(circ)))",
        "errs.append(quantum.expectation_z(circ, noise_model) - quantum.expectation_z(circ))", "task_2_1_drift"),
    "fold_global: reverse_ops instead of the inverse": (
        "task_3_1_fold_global_code", "folded.compose(circuit.inverse(), inplace=True)",
        "folded.compose(circuit.reverse_ops(), inplace=True)", "task_3_1_fold_global"),
    "fold_global: folds the first k gates": (
        "task_3_1_fold_global_code", "circuit.data[n - k:]", "circuit.data[:k]", "task_3_1_fold_global"),
    "fold_global: int() instead of round()": (
        "task_3_1_fold_global_code", "k = round(fraction * n / 2)", "k = int(fraction * n / 2)", "task_3_1_fold_global"),
    "fold_global: modifies its input": (
        "task_3_1_fold_global_code", "folded = circuit.copy()", "folded = circuit", "task_3_1_fold_global"),
    "fold_global: no ValueError below 1": (
        "task_3_1_fold_global_code", "raise ValueError(f\"fold_global needs scale >= 1, got {scale}.\")",
        "pass", "task_3_1_fold_global"),
    "fold_global: calls Mitiq": (
        "task_3_1_fold_global_code", "    if scale < 1:\n        raise ValueError(f\"fold_global",
        "    from mitiq.zne.scaling import fold_global as _mfg\n"
        "    if scale >= 1:\n        return quantum.from_cirq(_mfg(quantum.to_cirq(circuit), scale), circuit.num_qubits)\n"
        "    if scale < 1:\n        raise ValueError(f\"fold_global", "task_3_1_fold_global"),
    "fold_gates: default_rng instead of RandomState": (
        "task_3_2_fold_gates_code", "np.random.RandomState(seed).permutation(n)",
        "np.random.default_rng(seed).permutation(n)", "task_3_2_fold_gates"),
    "fold_gates: m rounded": (
        "task_3_2_fold_gates_code", "m = int((scale - 1) / 2)", "m = round((scale - 1) / 2)", "task_3_2_fold_gates"),
    "fold_gates: folds not inverted": (
        "task_3_2_fold_gates_code", "folded.append(inst.operation.inverse(), inst.qubits, inst.clbits)",
        "folded.append(inst.operation, inst.qubits, inst.clbits)", "task_3_2_fold_gates"),
    "extrapolate: linear returns the slope": (
        "task_3_3_extrapolate_code", "return float(intercept)\n    ### END SOLUTION\n\n\ndef exponential",
        "return float(slope)\n    ### END SOLUTION\n\n\ndef exponential", "task_3_3_extrapolate"),
    "extrapolate: unweighted log fit": (
        "task_3_3_extrapolate_code", ", w=np.sqrt(shifted))", ")", "task_3_3_extrapolate"),
    "extrapolate: sign of the exponential ignored": (
        "task_3_3_extrapolate_code", "sign = np.sign(linear_extrapolate(s, v) - asymptote)", "sign = 1.0",
        "task_3_3_extrapolate"),
    "extrapolate: Richardson assumes scales 1, 2, 3": (
        "task_3_3_extrapolate_code", "    s = np.asarray(scales, dtype=float)\n    v = np.asarray(values, dtype=float)\n"
        "    total = 0.0", "    s = np.arange(1.0, len(scales) + 1)\n    v = np.asarray(values, dtype=float)\n"
        "    total = 0.0", "task_3_3_extrapolate"),
    "zne: extrapolate argument ignored": (
        "task_3_4_zne_code", "return float(extrapolate(list(scales), values)), values",
        "return float(richardson_extrapolate(list(scales), values)), values", "task_3_4_zne"),
    "zne: noise model ignored": (
        "task_3_4_zne_code", "quantum.expectation_z(fold(circuit, s), noise_model)",
        "quantum.expectation_z(fold(circuit, s))", "task_3_4_zne"),
    "zne: fold argument ignored": (
        "task_3_4_zne_code", "quantum.expectation_z(fold(circuit, s), noise_model)",
        "quantum.expectation_z(fold_global(circuit, s), noise_model)", "task_3_4_zne"),
    "calibrate: Qiskit's bit order kept": (
        "task_4_1_calibrate_code", "bits = key[::-1]", "bits = key", "task_4_1_calibrate"),
    "calibrate: matrix transposed": (
        "task_4_1_calibrate_code", "matrices[q][int(bits[q]), prepared] += c", "matrices[q][prepared, int(bits[q])] += c",
        "task_4_1_calibrate"),
    "calibrate: rows normalised instead of columns": (
        "task_4_1_calibrate_code", "m / m.sum(axis=0, keepdims=True)", "m / m.sum(axis=1, keepdims=True)",
        "task_4_1_calibrate"),
    "mitigate: confusion matrix transposed": (
        "task_4_2_mitigate_code", "np.linalg.inv(np.asarray(a, dtype=float))", "np.linalg.inv(np.asarray(a, dtype=float).T)",
        "task_4_2_mitigate"),
    "mitigate: Kronecker order reversed": (
        "task_4_2_mitigate_code", "inverse = np.kron(inverse, np.linalg.inv(np.asarray(a, dtype=float)))",
        "inverse = np.kron(np.linalg.inv(np.asarray(a, dtype=float)), inverse)", "task_4_2_mitigate"),
    "mitigate: clip and renormalise instead of projecting": (
        "task_4_2_mitigate_code", "    u = np.sort(q)[::-1]",
        "    q = np.clip(q, 0, None)\n    return q / q.sum()\n    u = np.sort(q)[::-1]", "task_4_2_mitigate"),
    "mitigate: calls Mitiq": (
        "task_4_2_mitigate_code", "    inverse = np.ones((1, 1))",
        "    from mitiq.rem.inverse_confusion_matrix import generate_tensored_inverse_confusion_matrix as _g\n"
        "    return _g(len(confusions), confusions) @ np.asarray(probs, dtype=float)\n"
        "    inverse = np.ones((1, 1))", "task_4_2_mitigate"),
    "vqc: loss recorded after the step": (
        "task_5_1_vqc_code", "params, loss = opt.step_and_cost(cost, params)",
        "params = opt.step(cost, params)\n        loss = cost(params)", "task_5_1_vqc"),
    "vqc: trained without noise": (
        "task_5_1_vqc_code", "return pnp.mean((vqc_outputs(w, X, p) - labels) ** 2)",
        "return pnp.mean((vqc_outputs(w, X, 0.0) - labels) ** 2)", "task_5_1_vqc"),
    "vqc: ZNE at fixed scales 1, 2, 3": (
        "task_5_1_vqc_code", "vqc_outputs(params, X, p * s)) for s in scales])",
        "vqc_outputs(params, X, p * s)) for s in [1.0, 2.0, 3.0]])", "task_5_1_vqc"),
}

# Correct solutions written differently: full marks.
ALTERNATIVES = {
    "noise model: one gate at a time, numpy readout matrix": (
        "task_1_1_noise_model_code",
        "    model.add_all_qubit_quantum_error(depolarizing_error(p1, 1), list(quantum.GATES_1Q))\n"
        "    model.add_all_qubit_quantum_error(depolarizing_error(p2, 2), list(quantum.GATES_2Q))",
        "    for g in quantum.GATES_1Q:\n        model.add_all_qubit_quantum_error(depolarizing_error(p1, 1), g)\n"
        "    for g in quantum.GATES_2Q:\n        model.add_all_qubit_quantum_error(depolarizing_error(p2, 2), [g])",
        "task_1_1_noise_model"),
    "pennylane: Qiskit's one-qubit channel as explicit Kraus operators": (
        "task_1_2_pennylane_noise_code",
        "                qml.DepolarizingChannel(3 * p1 / 4, wires=wires[0])",
        "                ks = [np.sqrt(1 - 3 * p1 / 4) * PAULIS[0]] + [np.sqrt(p1 / 4) * P for P in PAULIS[1:]]\n"
        "                qml.QubitChannel(ks, wires=wires[0])",
        "task_1_2_pennylane_noise"),
    "fit_decay with lstsq": (
        "task_2_1_drift_code",
        "    slope, intercept = np.polyfit(np.asarray(depths, dtype=float), np.log(np.asarray(values, dtype=float)), 1)",
        "    d = np.asarray(depths, dtype=float)\n"
        "    (intercept, slope), *_ = np.linalg.lstsq(np.stack([np.ones_like(d), d], 1), np.log(values), rcond=None)",
        "task_2_1_drift"),
    "fold_global from an empty QuantumCircuit, gate by gate": (
        "task_3_1_fold_global_code", "    num_folds, fraction = divmod(scale - 1, 2)\n",
        "    num_folds, fraction = divmod(scale - 1, 2)\n"
        "    n = len(circuit.data)\n"
        "    k = round(fraction * n / 2)\n"
        "    out = QuantumCircuit(circuit.num_qubits)\n"
        "    def inv(insts):\n"
        "        for inst in reversed(insts):\n"
        "            out.append(inst.operation.inverse(), inst.qubits)\n"
        "    def fwd(insts):\n"
        "        for inst in insts:\n"
        "            out.append(inst.operation, inst.qubits)\n"
        "    fwd(circuit.data)\n"
        "    for _ in range(int(num_folds)):\n"
        "        inv(circuit.data); fwd(circuit.data)\n"
        "    if k:\n"
        "        inv(circuit.data[n - k:]); fwd(circuit.data[n - k:])\n"
        "    return out\n",
        "task_3_1_fold_global"),
    "fold_gates with a list of extra-fold flags and a fresh circuit": (
        "task_3_2_fold_gates_code", "    extra = set(np.random.RandomState(seed).permutation(n)[:k].tolist())\n",
        "    flags = np.zeros(n, dtype=int)\n"
        "    flags[np.random.RandomState(seed).permutation(n)[:k]] = 1\n"
        "    out = QuantumCircuit(circuit.num_qubits)\n"
        "    for inst, f in zip(circuit.data, flags):\n"
        "        out.append(inst.operation, inst.qubits)\n"
        "        for _ in range(m + int(f)):\n"
        "            out.append(inst.operation.inverse(), inst.qubits)\n"
        "            out.append(inst.operation, inst.qubits)\n"
        "    return out\n"
        "    extra = set(np.random.RandomState(seed).permutation(n)[:k].tolist())\n",
        "task_3_2_fold_gates"),
    "Richardson by polyfit, linear by lstsq": (
        "task_3_3_extrapolate_code", "    s = np.asarray(scales, dtype=float)\n    v = np.asarray(values, dtype=float)\n"
        "    total = 0.0",
        "    return float(np.polyval(np.polyfit(scales, values, len(scales) - 1), 0.0))\n"
        "    s = np.asarray(scales, dtype=float)\n    v = np.asarray(values, dtype=float)\n    total = 0.0",
        "task_3_3_extrapolate"),
    "zne with a loop and a list of values": (
        "task_3_4_zne_code",
        "    values = np.array([quantum.expectation_z(fold(circuit, s), noise_model) for s in scales])",
        "    values = []\n    for s in scales:\n        values.append(quantum.expectation_z(fold(circuit, s), noise_model))\n"
        "    values = np.asarray(values)",
        "task_3_4_zne"),
    "calibrate from marginal probabilities": (
        "task_4_1_calibrate_code", "    matrices = [np.zeros((2, 2)) for _ in range(n_qubits)]",
        "    out = [np.zeros((2, 2)) for _ in range(n_qubits)]\n"
        "    for j, (c, s) in enumerate([(zeros, seed), (ones, seed + 1)]):\n"
        "        p = quantum.counts_to_probs(quantum.sample_counts(c, noise_model, shots=shots, seed=s), n_qubits)\n"
        "        p = p.reshape([2] * n_qubits)\n"
        "        for q in range(n_qubits):\n"
        "            marg = p.sum(axis=tuple(a for a in range(n_qubits) if a != q))\n"
        "            out[q][:, j] = marg\n"
        "    return out\n"
        "    matrices = [np.zeros((2, 2)) for _ in range(n_qubits)]",
        "task_4_1_calibrate"),
    "mitigate: solve the full system, project by bisection on theta": (
        "task_4_2_mitigate_code", "    q = mitigate_inverse(probs, confusions)\n    u = np.sort(q)[::-1]",
        "    full = np.ones((1, 1))\n"
        "    for a in confusions:\n"
        "        full = np.kron(full, a)\n"
        "    q = np.linalg.solve(full, np.asarray(probs, dtype=float))\n"
        "    lo, hi = q.min() - 1.0, q.max()\n"
        "    for _ in range(200):\n"
        "        mid = (lo + hi) / 2\n"
        "        lo, hi = (mid, hi) if np.maximum(q - mid, 0).sum() > 1 else (lo, mid)\n"
        "    return np.maximum(q - (lo + hi) / 2, 0.0)\n"
        "    u = np.sort(q)[::-1]",
        "task_4_2_mitigate"),
    "vqc: cost before the step, then opt.step": (
        "task_5_1_vqc_code", "        params, loss = opt.step_and_cost(cost, params)",
        "        loss = cost(params)\n        params = opt.step(cost, params)",
        "task_5_1_vqc"),
}


globals().update(lab_tests(LAB, PREAMBLE, MISTAKES, ALTERNATIVES, extra=after))
