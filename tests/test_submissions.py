"""Collecting submissions safely (autograder/submissions.py): the grader runs
as root on files students made, so links are never followed, FIFOs and
devices never read, sizes are bounded and zips are never extracted."""
from __future__ import annotations

import io
import os
import stat
import struct
import threading
import time
import tracemalloc
import zipfile

import pytest

from autograder import submissions
from autograder.course import Course
from autograder.submissions import Submission, collect

LABS = Course().labs()
LAB = "lab00_basics"
NB = b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
MIB = 2**20


def _write(path, data=NB):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _zip(path, members):
    """members: name -> bytes, or a ZipInfo -> bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _only(subs, student):
    return [s for s in subs if s.student == student]


def _collect_with_timeout(*args, timeout=10.0, unblock=None):
    """collect() in a thread: a FIFO that blocked it would hang the test run."""
    result = {}
    thread = threading.Thread(target=lambda: result.update(out=collect(*args)), daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        for fifo in unblock or []:  # let the stuck thread go
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"collect() still running after {timeout} s: it blocked")
    return result["out"]


# ---------------------------------------------------------------- the usual layouts


def test_a_batch_of_folders_and_zips(tmp_path):
    _write(tmp_path / "alice" / f"{LAB}.ipynb")
    _write(tmp_path / "carol" / "work" / "nested" / f"{LAB}.ipynb", NB + b" ")
    _zip(tmp_path / "bob.zip", {f"bob/{LAB}.ipynb": NB + b"  ", "bob/notes.txt": b"hi"})
    _write(tmp_path / ".hidden" / f"{LAB}.ipynb")
    subs, warnings = collect(tmp_path, LABS)
    assert [(s.student, s.lab, s.data, s.problem) for s in subs] == [
        ("alice", LAB, NB, ""), ("bob", LAB, NB + b"  ", ""), ("carol", LAB, NB + b" ", "")]
    assert warnings == []
    assert subs[1].origin == f"bob.zip:bob/{LAB}.ipynb"
    assert subs[0].sha256 == Submission("x", LAB, NB, "o").sha256


def test_a_single_students_folder(tmp_path):
    alice = tmp_path / "alice"
    _write(alice / f"{LAB}.ipynb")
    _write(alice / "lab01_pruning.ipynb", NB + b" ")
    _write(alice / "data" / "notes.txt", b"x")
    subs, warnings = collect(alice, LABS)
    assert sorted((s.student, s.lab) for s in subs) == [("alice", LAB), ("alice", "lab01_pruning")]
    assert warnings == []
    subs, _ = collect(alice, LABS, "lab01_pruning")
    assert [(s.student, s.lab, s.data) for s in subs] == [("alice", "lab01_pruning", NB + b" ")]


def test_a_single_students_zip(tmp_path):
    path = _zip(tmp_path / "alice.zip", {f"submission/{LAB}.ipynb": NB})
    subs, warnings = collect(path, LABS)
    assert [(s.student, s.lab, s.data, s.problem) for s in subs] == [("alice", LAB, NB, "")]
    assert warnings == []


def test_a_batch_with_a_stray_notebook_stays_a_batch(tmp_path):
    _write(tmp_path / f"{LAB}.ipynb")
    _write(tmp_path / "alice" / f"{LAB}.ipynb")
    _zip(tmp_path / "bob.zip", {f"{LAB}.ipynb": NB})
    subs, warnings = collect(tmp_path, LABS)
    assert [s.student for s in subs] == ["alice", "bob"]
    assert warnings == [f"skipped {LAB}.ipynb: expected a student folder or a .zip"]


def test_the_path_given_may_be_a_link(tmp_path):
    _write(tmp_path / "real" / "alice" / f"{LAB}.ipynb")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    subs, warnings = collect(tmp_path / "link", LABS)
    assert [s.student for s in subs] == ["alice"] and warnings == []


def test_missing_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        collect(tmp_path / "nope", LABS)


def test_student_ids(tmp_path):
    for name in ["bad name", "-rf", "a$"]:
        _write(tmp_path / name / f"{LAB}.ipynb")
    _write(tmp_path / "ok.student@uni-1" / f"{LAB}.ipynb")
    subs, warnings = collect(tmp_path, LABS)
    assert [s.student for s in subs] == ["ok.student@uni-1"]
    assert sorted(warnings) == sorted(f"skipped {n}: not a usable student id" for n in ["bad name", "-rf", "a$"])
    assert not submissions._usable_id("...") and not submissions._usable_id("..")
    assert not submissions._usable_id("x" * 101) and submissions._usable_id("a..b")


def test_duplicates_checkpoints_and_macosx(tmp_path):
    _zip(tmp_path / "bob.zip", {
        f"__MACOSX/{LAB}.ipynb": b"resource fork",
        f".ipynb_checkpoints/{LAB}.ipynb": b"checkpoint",
        f"a/{LAB}.ipynb": NB,
        f"b/{LAB}.ipynb": NB + b"second",
    })
    _write(tmp_path / "alice" / ".ipynb_checkpoints" / f"{LAB}.ipynb", b"checkpoint")
    _write(tmp_path / "alice" / "__MACOSX" / f"{LAB}.ipynb", b"fork")
    _write(tmp_path / "alice" / "x" / f"{LAB}.ipynb")
    subs, warnings = collect(tmp_path, LABS)
    assert [(s.student, s.data) for s in subs] == [("alice", NB), ("bob", NB)]
    assert warnings == []


def test_a_bad_zip_is_a_problem_not_an_exception(tmp_path):
    _write(tmp_path / "erin.zip", b"this is not a zip")
    subs, _ = collect(tmp_path, LABS, LAB)
    assert [(s.student, s.lab, s.data) for s in subs] == [("erin", LAB, None)]
    assert "cannot be read" in subs[0].problem


# ---------------------------------------------------------------- links, FIFOs, devices


def test_a_linked_student_folder_is_skipped(tmp_path):
    _write(tmp_path / "alice" / f"{LAB}.ipynb")
    (tmp_path / "mallory").symlink_to(tmp_path / "alice")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    _write(outside / f"{LAB}.ipynb", b"secret")
    (tmp_path / "trudy").symlink_to(outside)
    subs, warnings = collect(tmp_path, LABS)
    assert [s.student for s in subs] == ["alice"]
    assert "skipped mallory: a symbolic link" in warnings
    assert "skipped trudy: a symbolic link" in warnings


@pytest.mark.parametrize("target", ["other_student", "/etc/passwd"])
def test_a_linked_notebook_is_skipped(tmp_path, target):
    _write(tmp_path / "alice" / f"{LAB}.ipynb", b"alice's work")
    target = tmp_path / "alice" / f"{LAB}.ipynb" if target == "other_student" else target
    (tmp_path / "mallory").mkdir()
    (tmp_path / "mallory" / f"{LAB}.ipynb").symlink_to(target)
    subs, warnings = collect(tmp_path, LABS)
    assert [(s.student, s.data) for s in subs] == [("alice", b"alice's work")]
    assert f"mallory: skipped mallory/{LAB}.ipynb: a symbolic link" in warnings
    assert "mallory: no a <lab>.ipynb found in mallory" in warnings
    # The same as a single student's folder.
    subs, warnings = collect(tmp_path / "mallory", LABS)
    assert subs == [] and f"mallory: skipped mallory/{LAB}.ipynb: a symbolic link" in warnings


def test_links_inside_a_folder_are_not_followed(tmp_path):
    _write(tmp_path / "alice" / f"{LAB}.ipynb", b"alice's work")
    (tmp_path / "mallory" / "sub").mkdir(parents=True)
    (tmp_path / "mallory" / "sub" / "alice").symlink_to(tmp_path / "alice")
    (tmp_path / "mallory" / "etc").symlink_to("/etc")
    (tmp_path / "mallory" / "notes.txt").symlink_to("/etc/passwd")
    subs, warnings = collect(tmp_path, LABS)
    assert [s.student for s in subs] == ["alice"]
    assert "mallory: skipped mallory/sub/alice: a symbolic link" in warnings
    assert "mallory: skipped mallory/etc: a symbolic link" in warnings
    assert "mallory: skipped mallory/notes.txt: a symbolic link" in warnings


def test_a_fifo_named_like_a_notebook_never_blocks(tmp_path):
    (tmp_path / "mallory").mkdir()
    fifo = tmp_path / "mallory" / f"{LAB}.ipynb"
    os.mkfifo(fifo)
    os.mkfifo(tmp_path / "eve.zip")
    _write(tmp_path / "alice" / f"{LAB}.ipynb")
    subs, warnings = _collect_with_timeout(tmp_path, LABS, unblock=[fifo, tmp_path / "eve.zip"])
    assert [s.student for s in subs] == ["alice"]
    assert f"mallory: skipped mallory/{LAB}.ipynb: not a regular file" in warnings
    assert "skipped eve.zip: not a regular file" in warnings
    subs, warnings = _collect_with_timeout(tmp_path / "mallory", LABS, unblock=[fifo])
    assert subs == []
    subs, warnings = _collect_with_timeout(tmp_path / "eve.zip", LABS, unblock=[tmp_path / "eve.zip"])
    assert subs == [] and warnings == ["skipped eve.zip: not a regular file"]


def test_open_regular_refuses_fifos_links_and_devices(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to("/etc/passwd")
    for name in [tmp_path / "fifo", tmp_path / "link", "/dev/null", tmp_path]:
        with pytest.raises(submissions._NotRegular):
            submissions._open_regular(name)


# ---------------------------------------------------------------- sizes


def test_an_oversize_notebook_is_a_problem_without_data(tmp_path):
    path = tmp_path / "alice" / f"{LAB}.ipynb"
    path.parent.mkdir()
    with open(path, "wb") as f:
        f.truncate(60 * MIB)  # sparse: costs no disk
    subs, warnings = collect(tmp_path, LABS)
    assert [(s.student, s.lab, s.data) for s in subs] == [("alice", LAB, None)]
    assert subs[0].problem == "the notebook is 60 MiB, above the 50 MiB limit"
    assert warnings == []


def test_the_notebook_limit_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFML_MAX_NOTEBOOK_BYTES", "1000")
    _write(tmp_path / "alice" / f"{LAB}.ipynb", b"x" * 1500)
    _write(tmp_path / "bob" / f"{LAB}.ipynb", b"x" * 1000)
    _zip(tmp_path / "carol.zip", {f"{LAB}.ipynb": b"y" * 1001})
    subs, _ = collect(tmp_path, LABS)
    by = {s.student: s for s in subs}
    assert by["alice"].data is None and by["alice"].problem == "the notebook is 1500 bytes, above the 1000 bytes limit"
    assert by["bob"].data == b"x" * 1000 and by["bob"].problem == ""
    assert by["carol"].data is None and "above the 1000 bytes limit" in by["carol"].problem


def test_the_bounded_reader_stops_at_the_limit():
    src = io.BytesIO(b"z" * (5 * MIB))
    assert submissions._read_bounded(src.read, 3 * MIB) is None
    assert src.tell() <= 3 * MIB + 1
    assert submissions._read_bounded(io.BytesIO(b"abc").read, 3) == b"abc"


def _zeros_zip(path, name, size):
    chunk = bytes(MIB)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open(name, "w", force_zip64=True) as member:
            for _ in range(size // MIB):
                member.write(chunk)
    return path


def test_a_zip_bomb_is_refused_quickly_and_without_inflating_it(tmp_path):
    bomb = _zeros_zip(tmp_path / "mallory.zip", f"{LAB}.ipynb", 400 * MIB)
    assert bomb.stat().st_size < 2 * MIB
    tracemalloc.start()
    start = time.monotonic()
    try:
        subs, _ = collect(tmp_path, LABS)
        elapsed = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 5
    assert peak < 16 * MIB
    assert [(s.student, s.lab, s.data) for s in subs] == [("mallory", LAB, None)]
    assert "limit" in subs[0].problem and "400 MiB" in subs[0].problem


def test_a_notebook_above_the_limit_in_a_zip(tmp_path):
    _zeros_zip(tmp_path / "mallory.zip", f"{LAB}.ipynb", 60 * MIB)
    subs, _ = collect(tmp_path, LABS)
    assert subs[0].data is None and subs[0].problem == "the notebook is 60 MiB, above the 50 MiB limit"


def test_a_compression_ratio_above_100_is_refused(tmp_path):
    _zeros_zip(tmp_path / "mallory.zip", f"{LAB}.ipynb", 2 * MIB)
    subs, _ = collect(tmp_path, LABS)
    assert subs[0].data is None and "above the 100:1 limit" in subs[0].problem
    # Small members are not held to it (a tiny notebook of repeated text compresses well too).
    _zip(tmp_path / "alice.zip", {f"{LAB}.ipynb": b" " * 500_000})
    subs, _ = collect(tmp_path / "alice.zip", LABS)
    assert subs[0].problem == "" and len(subs[0].data) == 500_000


def _patch_central_sizes(path, declared):
    """Make the central directory claim every member holds ``declared`` bytes."""
    data = bytearray(path.read_bytes())
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        struct.pack_into("<I", data, pos + 24, declared)
        pos = data.find(b"PK\x01\x02", pos + 4)
    path.write_bytes(bytes(data))


def test_a_zip_whose_header_lies_about_the_size_is_still_bounded(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFML_MAX_NOTEBOOK_BYTES", str(MIB))
    path = tmp_path / "mallory.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{LAB}.ipynb", bytes(8 * MIB))
    _patch_central_sizes(path, 1000)
    assert zipfile.ZipFile(path).infolist()[0].file_size == 1000
    tracemalloc.start()
    try:
        subs, _ = collect(tmp_path, LABS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MIB
    assert [(s.student, s.data) for s in subs] == [("mallory", None)]
    assert subs[0].problem


def test_too_many_members(tmp_path):
    path = tmp_path / "mallory.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{LAB}.ipynb", NB)
        for i in range(10_001):
            zf.writestr(f"f{i}", b"")
    start = time.monotonic()
    subs, _ = collect(tmp_path, LABS)
    assert time.monotonic() - start < 5
    assert [(s.student, s.data) for s in subs] == [("mallory", None)]
    assert "more than 10000 members" in subs[0].problem


def test_a_zip_too_big_in_total(tmp_path, monkeypatch):
    monkeypatch.setattr(submissions, "MAX_ZIP_TOTAL_BYTES", 3 * MIB)
    _zip(tmp_path / "mallory.zip", {f"{LAB}.ipynb": NB, "data.bin": b"a" * 2 * MIB, "more.bin": b"b" * 2 * MIB})
    subs, _ = collect(tmp_path, LABS)
    assert [(s.student, s.lab, s.data) for s in subs] == [("mallory", LAB, None)]
    assert subs[0].problem == "the zip file unpacks to 4.0 MiB, above the 3 MiB limit"
    # A zip file itself above the total limit is refused before it is opened.
    _write(tmp_path / "trudy.zip", os.urandom(3 * MIB + 1))
    subs, _ = collect(tmp_path / "trudy.zip", LABS, LAB)
    assert [(s.lab, s.data) for s in subs] == [(LAB, None)]
    assert subs[0].problem == "the zip file is 3.0 MiB, above the 3 MiB limit"


# ---------------------------------------------------------------- unsafe members


def test_path_traversal_and_absolute_members_are_ignored(tmp_path):
    work = tmp_path / "batch"
    work.mkdir()
    _zip(work / "mallory.zip", {f"../{LAB}.ipynb": b"evil", f"/tmp/{LAB}.ipynb": b"evil",
                                f"a/../../{LAB}.ipynb": b"evil", f"C:/x/{LAB}.ipynb": b"evil"})
    _zip(work / "trudy.zip", {f"../../{LAB}.ipynb": b"evil", f"ok/{LAB}.ipynb": NB})
    before = sorted(p.name for p in tmp_path.rglob("*"))
    subs, warnings = collect(work, LABS)
    assert [(s.student, s.data, s.origin) for s in subs] == [("trudy", NB, f"trudy.zip:ok/{LAB}.ipynb")]
    assert f"mallory: ignored mallory.zip:'../{LAB}.ipynb': a path with '..'" in warnings
    assert f"mallory: ignored mallory.zip:'/tmp/{LAB}.ipynb': an absolute path" in warnings
    assert f"mallory: ignored mallory.zip:'C:/x/{LAB}.ipynb': an absolute path" in warnings
    assert "mallory: no a <lab>.ipynb found in mallory.zip" in warnings
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing extracted anywhere


def test_symlink_members_are_ignored(tmp_path):
    info = zipfile.ZipInfo(f"{LAB}.ipynb")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "mallory.zip", "w") as zf:
        zf.writestr(info, "/etc/passwd")
        zf.writestr(f"later/{LAB}.ipynb", NB)
    subs, warnings = collect(tmp_path, LABS)
    assert [(s.student, s.data) for s in subs] == [("mallory", NB)]
    assert f"mallory: ignored mallory.zip:'{LAB}.ipynb': a symbolic link" in warnings


def test_an_encrypted_member_is_a_problem(tmp_path):
    path = _zip(tmp_path / "alice.zip", {f"{LAB}.ipynb": b"\x00" * 12 + NB})
    data = bytearray(path.read_bytes())   # zipfile cannot encrypt: set the flag bit by hand
    for sig, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = data.find(sig)
        data[pos + at] |= 0x1
    path.write_bytes(bytes(data))
    assert zipfile.ZipFile(path).infolist()[0].flag_bits & 0x1
    subs, _ = collect(tmp_path, LABS)
    assert [(s.student, s.lab, s.data) for s in subs] == [("alice", LAB, None)]
    assert "encrypted" in subs[0].problem


def test_windows_separators_in_member_names(tmp_path):
    _zip(tmp_path / "alice.zip", {f"work\\{LAB}.ipynb": NB, f"..\\..\\lab01_pruning.ipynb": b"evil"})
    subs, warnings = collect(tmp_path, LABS)
    assert [(s.lab, s.data) for s in subs] == [(LAB, NB)]
    assert any("a path with '..'" in w for w in warnings)


def test_deep_folders_are_not_walked_forever(tmp_path):
    deep = tmp_path / "mallory"
    for i in range(submissions.MAX_DEPTH + 4):
        deep = deep / f"d{i}"
    _write(deep / f"{LAB}.ipynb")
    _write(tmp_path / "mallory" / "d0" / f"{LAB}.ipynb", NB + b" ")
    subs, warnings = collect(tmp_path, LABS)
    assert [(s.student, s.data) for s in subs] == [("mallory", NB + b" ")]
    assert any("levels deep" in w for w in warnings)
