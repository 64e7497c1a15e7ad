"""helpers: data, profile, checks."""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile

import numpy as np
import pytest
import torch
from torch import nn

from helpers import checks, data, models, profile


def test_digit_splits_are_fixed_disjoint_and_complete():
    sizes = {}
    seen = []
    for split in ("train", "val", "test"):
        x, y = data.load_digits(split)
        x2, _ = data.load_digits(split)
        assert torch.equal(x, x2)
        assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        sizes[split] = len(y)
        seen.append({tuple(row) for row in x.flatten(1).numpy().round(4)})
    assert sizes == {"train": 1257, "val": 180, "test": 360}
    assert sum(sizes.values()) == 1797
    big, _ = data.load_digits("test", size=16, limit=10)
    assert big.shape == (10, 1, 16, 16)
    with pytest.raises(ValueError, match="split must be"):
        data.load_digits("dev")


def test_shakespeare_splits_are_by_play_and_disjoint():
    parts = {s: set(data.shakespeare_split(s)) for s in ("calibration", "eval", "train")}
    assert not (parts["calibration"] & parts["eval"]) and not (parts["train"] & parts["eval"])
    assert len(parts["train"]) + 6 == len(data.shakespeare_plays())
    text = data.shakespeare_text("hamlet")
    assert "HAMLET:" in text and "**" not in text and "To be, or not to be" in text


def _fixture_cifar(tmp_path):
    """A tiny archive in the real CIFAR-10 python format."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, n in [*[(f"data_batch_{i}", 4) for i in range(1, 6)], ("test_batch", 3)]:
            blob = pickle.dumps({b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                                 b"labels": list(rng.integers(0, 10, n))})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    path = tmp_path / "fixture.tar.gz"
    path.write_bytes(buf.getvalue())
    return path, hashlib.md5(buf.getvalue()).hexdigest()


def test_cifar10_download_and_cache(tmp_path):
    archive, md5 = _fixture_cifar(tmp_path)
    root = tmp_path / "cache"
    ds = data.load_cifar10("train", root=root, url=archive.as_uri(), md5=md5)
    assert ds.images.shape == (20, 32, 32, 3) and ds.images.dtype == np.uint8 and ds.labels.shape == (20,)
    archive.unlink()  # the second load must come from the cache
    assert data.load_cifar10("test", root=root, url=archive.as_uri(), md5=md5).images.shape == (3, 32, 32, 3)


def test_a_corrupt_download_is_rejected_and_leaves_nothing(tmp_path):
    archive, _ = _fixture_cifar(tmp_path)
    with pytest.raises(OSError, match="checksum mismatch"):
        data.download(archive.as_uri(), tmp_path / "out" / "x.tar.gz", md5="0" * 32)
    assert list((tmp_path / "out").iterdir()) == []


def test_profile_counts_match_the_formulas():
    m = models.DigitsCNN(channels=(8, 16))
    x = torch.zeros(1, 1, 16, 16)
    assert profile.count_params(m) == (8 * 9 + 8) + (16 * 8 * 9 + 16) + (16 * 16 * 10 + 10)
    assert profile.count_macs(m, x) == 8 * 16 * 16 * 9 + 16 * 8 * 8 * 8 * 9 + 256 * 10
    assert profile.model_size_bytes(m, bits=4) == profile.count_params(m) / 2
    # conv1 output (8x16x16) + pool1 output (8x8x8), fp32
    assert profile.peak_activation_bytes(m, x) == (8 * 256 + 8 * 64) * 4
    assert profile.measure_latency(m, x, warmup=1, repeats=3) > 0
    dw = nn.Conv2d(8, 8, 3, groups=8, padding=1)
    assert profile.count_macs(dw, torch.zeros(1, 8, 4, 4)) == 8 * 16 * 9
    pruned = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        pruned.weight[:2] = 0
    assert profile.count_params(pruned, nonzero_only=True) == 8


def test_check_messages_name_the_task_and_the_problem():
    with pytest.raises(checks.CheckError, match=r"Task 1.2: `mask` has shape \(4, 3\), expected \(3, 4\)"):
        checks.check_shape(torch.zeros(4, 3), (3, 4), name="mask", task="1.2")
    with pytest.raises(checks.CheckError, match=r"wrong order"):
        checks.check_shape(torch.zeros(4, 3), (3, 4), name="mask", task="1.2")
    with pytest.raises(checks.CheckError, match=r"differs .* in 1 of 3 entries; largest difference at index \(2,\): got 4, expected 3"):
        checks.check_close(np.array([1.0, 2.0, 4.0]), torch.tensor([1.0, 2.0, 3.0]), name="y", task="2.1")
    with pytest.raises(checks.CheckError, match="forget to `return`"):
        checks.check_type(None, float, name="loss", task="1.1")
    with pytest.raises(checks.CheckError, match=r"in \[0, 1\]"):
        checks.check_in_range(1.5, 0, 1, name="p", task="3.1")
    with pytest.raises(checks.CheckError, match="dtype"):
        checks.check_dtype(torch.zeros(2, dtype=torch.int32), torch.int8, name="q", task="2.2")
    with pytest.raises(checks.CheckError, match="NaN"):
        checks.check_finite(torch.tensor([1.0, float("nan")]), name="z", task="1.1")
    checks.check_close(torch.ones(3), np.ones(3), name="ok", task="1.1")
    checks.check_equal([1, 2], [1, 2], name="ok")
    assert issubclass(checks.CheckError, AssertionError)  # nbgrader counts it as a failed test


def test_a_build_script_records_its_checkpoint_in_the_manifest(tmp_path, monkeypatch):
    from helpers import models

    monkeypatch.setattr(models, "DATASETS_DIR", tmp_path)
    (tmp_path / "manifest.json").write_text('{"other": {"file": "o.pt"}}')
    path = models.save_checkpoint("tiny", {"state_dict": {"w": torch.ones(2)}}, "python datasets/build_tiny.py",
                                  test_accuracy=97.5)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["other"] == {"file": "o.pt"}                      # the other entries stay
    assert manifest["tiny"]["file"] == path.name == "tiny.pt" and manifest["tiny"]["test_accuracy"] == 97.5
    assert torch.equal(models.load_checkpoint("tiny")["state_dict"]["w"], torch.ones(2))
    path.write_bytes(path.read_bytes() + b"x")                          # a stale file fails loudly
    with pytest.raises(ValueError, match="rebuild it with `python datasets/build_tiny.py`"):
        models.load_checkpoint("tiny")
