"""TinyML track machinery: the OFA supernet (lab 04) and the int8 deployment
helpers (lab 05)."""
from __future__ import annotations

import hashlib
import json
import random

import pytest
import torch
from torch import nn

from helpers import ofa, profile
from helpers.models import DATASETS_DIR
from helpers.tinyml import record_metric


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


def test_record_metric(tmp_path, monkeypatch):
    monkeypatch.delenv("EFFML_METRICS_FILE", raising=False)
    record_metric("ignored", 1.0)                     # no file, no error
    path = tmp_path / "m.jsonl"
    monkeypatch.setenv("EFFML_METRICS_FILE", str(path))
    record_metric("a", 1.5)
    record_metric("b", True)
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"a": 1.5}, {"b": True}]
