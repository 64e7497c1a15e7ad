"""TinyML track machinery: the OFA supernet (lab 04) and the int8 deployment
helpers (lab 05)."""
from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from helpers import ofa, profile, tinyml
from helpers.kernels.cjit import compile_c
from helpers.kernels.int8 import quantize_multiplier
from helpers.models import DATASETS_DIR


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: extra threads only contend on a shared machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _arch(r=12, d=(2, 1, 3), k=3, e=3):
    return {"r": r, "d": list(d), "k": [k] * ofa.NUM_SLOTS, "e": [e] * ofa.NUM_SLOTS}


# ---------------------------------------------------------------- lab 04: OFA

def test_checkpoint_matches_manifest():
    entry = json.loads((DATASETS_DIR / "manifest.json").read_text())["ofa_digits"]
    path = DATASETS_DIR / entry["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    assert entry["build"] == "python datasets/build_ofa_digits.py"
    net = ofa.load_supernet()
    assert not net.training


@pytest.mark.parametrize("bad, fragment", [
    ({"r": 11, "d": [1, 1, 1], "k": [3] * 9, "e": [2] * 9}, "arch['r']"),
    ({"r": 10, "d": [1, 4, 1], "k": [3] * 9, "e": [2] * 9}, "arch['d']"),
    ({"r": 10, "d": [1, 1, 1], "k": [3] * 8, "e": [2] * 9}, "arch['k']"),
    ({"r": 10, "d": [1, 1, 1], "k": [3] * 9, "e": [6] * 9}, "arch['e']"),
    ({"r": 10, "d": [1, 1, 1]}, "keys r, d, k, e"),
])
def test_validate_arch_says_what_is_wrong(bad, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        ofa.validate_arch(bad)


def test_sample_arch_is_valid_and_seeded():
    a = [ofa.sample_arch(random.Random(3)) for _ in range(2)]
    assert a[0] == a[1]
    for arch in (ofa.sample_arch(random.Random(i)) for i in range(50)):
        ofa.validate_arch(arch)


def test_active_blocks_follow_depth_and_strides():
    blocks = ofa.active_blocks(_arch(d=(2, 1, 3)))
    assert [b["slot"] for b in blocks] == [0, 1, 3, 6, 7, 8]
    assert [b["stride"] for b in blocks] == [2, 1, 2, 2, 1, 1]
    assert [(b["c_in"], b["c_out"]) for b in blocks][:3] == [(8, 16), (16, 16), (16, 24)]


def test_subnet_has_folded_bn_and_elastic_weights():
    torch.manual_seed(0)
    net = ofa.OFASupernet().eval()
    arch = _arch(k=3, e=2)
    sub = ofa.build_subnet(net, arch, calib_x=torch.rand(16, 1, 12, 12))
    kinds = {type(m).__name__ for m in sub.modules() if not list(m.children())}
    assert kinds == {"Conv2d", "ReLU6", "AdaptiveAvgPool2d", "Flatten", "Linear"}
    first = sub[1].body
    assert first[0].out_channels == 2 * ofa.STEM_CHANNELS          # hidden = e * c_in
    assert first[2].kernel_size == (3, 3) and first[2].groups == 16


def test_subnet_equals_supernet_with_its_own_batch_statistics():
    """A subnet calibrated on a batch computes what the supernet computes in
    train mode (batch statistics) on that batch, up to BN's unbiased running
    variance (n / (n - 1) with n = batch * H * W)."""
    torch.manual_seed(1)
    net = ofa.OFASupernet()
    x = torch.rand(64, 1, 14, 14)
    arch = {"r": 14, "d": [3, 2, 1], "k": [5, 3, 5, 3, 5, 3, 5, 3, 5], "e": [4, 2, 3, 3, 2, 4, 2, 3, 4]}
    with torch.no_grad():
        want = net.train()(x, arch)
    got = ofa.build_subnet(net, arch, calib_x=x)(x)
    assert torch.allclose(got, want, rtol=1e-2, atol=1e-2 * want.abs().max().item())


def test_profile_counts_of_built_subnet_grow_with_the_arch():
    torch.manual_seed(0)
    net = ofa.OFASupernet()
    small, big = _arch(r=10, d=(1, 1, 1), k=3, e=2), _arch(r=16, d=(3, 3, 3), k=5, e=4)
    macs = [profile.count_macs(ofa.build_subnet(net, a, torch.rand(4, 1, a["r"], a["r"])),
                               torch.zeros(1, 1, a["r"], a["r"])) for a in (small, big)]
    assert macs[0] < macs[1] / 10


def test_shipped_supernet_accuracy_range():
    net = ofa.load_supernet()
    big = _arch(r=16, d=(3, 3, 3), k=5, e=4)
    small = _arch(r=10, d=(1, 1, 1), k=3, e=2)
    acc_big = ofa.measure_accuracy(ofa.build_subnet(net, big), "test", 16)
    acc_small = ofa.measure_accuracy(ofa.build_subnet(net, small), "test", 10)
    assert acc_big >= 97.0 and 75.0 <= acc_small < acc_big


# ---------------------------------------------------------------- lab 05: int8 deployment

SMALL_BLOCKS = ((2, 8, 1, 5), (3, 12, 2), (2, 12, 1))


@pytest.fixture(scope="module")
def small_graph():
    torch.manual_seed(0)
    model = tinyml.mcu_mobilenet(resolution=24, stem=8, blocks=SMALL_BLOCKS, seed=1)
    return model, tinyml.quantize_model(model, torch.rand(16, 1, 24, 24))


def test_quantize_model_structure(small_graph):
    _, g = small_graph
    kinds = [op.kind for op in g.ops]
    assert kinds == ["conv", "conv", "dwconv", "conv", "add", "conv", "dwconv", "conv",
                     "conv", "dwconv", "conv", "add", "avgpool", "linear"]
    assert g.ops[4].inputs == ["conv0", "b1.project"]            # residual: block input + project
    assert g.tensors["b1.dw"].shape == (12, 12, 16) and g.ops[2].kernel == 5 and g.ops[2].padding == 2
    assert g.tensors["b2.dw"].shape == (6, 6, 24)
    conv = g.ops[1]
    assert conv.weight.dtype == np.int8 and conv.weight.shape == (16, 1, 1, 8)   # [OC, K, K, C]
    assert conv.bias.dtype == np.int32 and np.abs(conv.weight).max() == 127      # per-channel symmetric
    assert g.output == "fc" and g.tensors["fc"].shape == (10,)


def test_int8_reference_tracks_the_float_model(small_graph):
    model, g = small_graph
    x = torch.rand(8, 1, 24, 24)
    want = model(x).detach().numpy()
    out = g.tensors[g.output]
    for i in range(len(x)):
        q = tinyml.run_reference(g, tinyml.quantize_input(g, x[i]))[g.output]
        got = (q.astype(np.float64) - out.zero_point) * out.scale
        assert np.abs(got - want[i]).max() < 0.1 * np.abs(want).max()


def test_c_ops_match_the_reference():
    g = tinyml.toy_graph({"a": (3, 5, 7), "b": (3, 5, 7), "y": (3, 5, 7), "p": (7,)},
                         [("add", ["a", "b"], "y"), ("avgpool", ["y"], "p")])
    for name, t in g.tensors.items():
        t.scale, t.zero_point = {"a": (0.05, -3), "b": (0.02, 10), "y": (0.04, -7), "p": (0.05, 0)}[name]
    add, pool = g.ops
    add.multiplier, add.shift = quantize_multiplier([0.05 / 0.04, 0.02 / 0.04])
    pool.multiplier, pool.shift = quantize_multiplier([0.04 / (15 * 0.05)])
    rng = np.random.default_rng(0)
    a, b = (rng.integers(-128, 128, (3, 5, 7)).astype(np.int8) for _ in range(2))
    y = tinyml.run_op_c(g, add, [a, b])
    np.testing.assert_array_equal(y, tinyml.run_op(g, add, [a, b]))
    p = tinyml.run_op_c(g, pool, [y])
    np.testing.assert_array_equal(p, tinyml.run_op(g, pool, [y]))
    with pytest.raises(ValueError, match="add, avgpool"):
        tinyml.run_op_c(g, tinyml.QOp("c", "conv", ["a"], "y"), [a])
    # The same C, concatenated with int8.c as generated models get it, still compiles.
    assert compile_c(tinyml.kernel_source(), name="tinyml_ops_test", flags=tinyml.MCU_FLAGS).add_int8
    mean = ((y.astype(np.float64) + 7) * 0.04).mean(axis=(0, 1))
    assert np.abs(p.astype(np.float64) * 0.05 - mean).max() <= 0.03


def test_compile_model_runs_model_run(small_graph):
    _, g = small_graph
    # A stand-in "generated" program: logits = the first 10 input bytes.
    src = tinyml.kernel_source() + "#include <string.h>\nvoid model_run(const int8_t *input, int8_t *output) " \
                                   "{ memcpy(output, input, 10); }\n"
    cm = tinyml.compile_model(src, g, name="tinyml_stub")
    x = np.arange(24 * 24, dtype=np.int64).astype(np.int8).reshape(24, 24, 1)
    np.testing.assert_array_equal(cm(x), x.reshape(-1)[:10])
    assert cm.latency(x, repeats=3) > 0
    with pytest.raises(ValueError, match="model_run"):
        tinyml.compile_model("int main(void) { return 0; }", g)


def test_errors_say_what_to_fix(small_graph):
    _, g = small_graph
    with pytest.raises(ValueError, match=r"int8 of shape \(24, 24, 1\)"):
        tinyml.run_reference(g, np.zeros((24, 24, 1), np.float32))
    with pytest.raises(ValueError, match="MaxPool2d"):
        tinyml.quantize_model(nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2)), torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="op kind 'pool'"):
        tinyml.toy_graph({"x": (2, 2, 1), "y": (1,)}, [("pool", ["x"], "y")])


def test_toy_graph_and_c_array():
    g = tinyml.toy_graph({"x": (8, 8, 4), "e": (8, 8, 8), "d": (4, 4, 8)},
                         [("conv", ["x"], "e"), ("dwconv", ["e"], "d", 3, 2, 1)])
    assert (g.input, g.output) == ("x", "d")
    assert (g.ops[1].kernel, g.ops[1].stride, g.ops[1].padding) == (3, 2, 1)
    assert g.macs(g.ops[0]) == 8 * 8 * 8 * 4 and g.macs(g.ops[1]) == 4 * 4 * 8 * 9
    assert g.consumers("e") == [1]
    assert tinyml.c_array("w", np.array([[1, -2], [3, 4]]), "int32_t") == \
        "static const int32_t w[4] = {1,-2,3,4};\n"
