"""The C JIT layer: build, cache, errors, pointer checks, lazy imports."""
import ctypes
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.kernels import cjit
from helpers.kernels.cjit import CompileError, compile_c, compile_file, ptr

REPO = Path(__file__).resolve().parents[2]

SCALE_SRC = textwrap.dedent("""
    #ifndef FACTOR
    #define FACTOR 2.0f
    #endif
    void scale(float *y, const float *x, int n) {
        for (int i = 0; i < n; i++) y[i] = FACTOR * x[i];
    }
""")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFML_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cjit, "_LOADED", {})
    return tmp_path


def _run_scale(lib, x):
    lib.scale.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.scale.restype = None
    y = np.empty_like(x)
    lib.scale(ptr(y, "float32", name="y", writable=True), ptr(x, "float32", name="x"), x.size)
    return y


def test_compile_and_call(cache):
    lib = compile_c(SCALE_SRC, name="scale_test")
    x = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(_run_scale(lib, x), 2 * x)


def test_cache_hit_in_process_and_on_disk(cache, monkeypatch):
    first = compile_c(SCALE_SRC, name="scale_test")
    assert first.cache_hit is False
    assert compile_c(SCALE_SRC, name="scale_test").cache_hit is True
    # A new process finds the .so on disk and runs no compiler.
    monkeypatch.setattr(cjit, "_LOADED", {})
    monkeypatch.setattr(cjit.subprocess, "run", lambda *a, **k: pytest.fail("compiler ran on a cache hit"))
    again = compile_c(SCALE_SRC, name="scale_test")
    assert again.cache_hit is True and again.so_path == first.so_path


def test_flags_recorded(cache):
    lib = compile_c(SCALE_SRC, name="scale_test")
    meta = json.loads(lib.so_path.with_suffix(".json").read_text())
    for flag in ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"):
        assert flag in meta["flags"]
    assert meta["compiler_version"] and lib.flags == meta["command"]


def test_changed_source_or_flags_rebuild(cache):
    base = compile_c(SCALE_SRC, name="scale_test")
    changed = compile_c(SCALE_SRC.replace("FACTOR * x[i]", "FACTOR * x[i] + 1.0f"), name="scale_test")
    flagged = compile_c(SCALE_SRC, name="scale_test", extra_flags=("-DFACTOR=3.0f",))
    assert not changed.cache_hit and not flagged.cache_hit
    assert len({base.so_path, changed.so_path, flagged.so_path}) == 3
    x = np.ones(3, dtype=np.float32)
    np.testing.assert_array_equal(_run_scale(changed, x), 3 * x)
    np.testing.assert_array_equal(_run_scale(flagged, x), 3 * x)


def test_concurrent_builds_load_whole_library(cache):
    # Two processes build the same new source at once; each must load a complete .so.
    code = ("import ctypes; from helpers.kernels.cjit import compile_c; "
            f"lib = compile_c({SCALE_SRC!r} + '/* race */', name='race'); print(lib.so_path)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0]
    assert not any(p.name.startswith(".build-") for p in cache.iterdir())


def test_compile_error_points_at_student_line(cache):
    src = "float f(float x) {\n    float y = x * 2;\n    return y +;\n}\n"
    with pytest.raises(CompileError) as info:
        compile_c(src, name="broken")
    msg = str(info.value)
    assert "line 3" in msg and "return y +;" in msg
    assert "Traceback" not in msg and str(cache) not in msg
    assert info.value.diagnostics[0][0] == 3


def test_compile_error_undeclared_name(cache):
    src = "int g(int a) {\n  return a + b;\n}\n"
    with pytest.raises(CompileError, match=r"line 2.*'b' undeclared"):
        compile_c(src, name="undeclared")


def test_bad_arguments(cache):
    with pytest.raises(TypeError, match="compile_file"):
        compile_c(Path("x.c"))
    with pytest.raises(ValueError, match="identifier"):
        compile_c(SCALE_SRC, name="my kernel")
    with pytest.raises(FileNotFoundError, match="not found"):
        compile_file("no_such_kernel.c")


def test_compile_file_finds_package_sources(cache):
    lib = compile_file("sparse.c")
    assert hasattr(lib, "spmv_csr_f32") and lib.so_path.parent == cache


@pytest.mark.parametrize("make, match", [
    (lambda: np.zeros(4, dtype=np.float64), r"dtype float64, expected float32.*astype\(np.float32\)"),
    (lambda: torch.zeros(4, dtype=torch.int32), r"dtype int32, expected float32.*\.to\(torch.float32\)"),
    (lambda: np.zeros((4, 4), dtype=np.float32)[:, 1], r"not contiguous.*ascontiguousarray"),
    (lambda: torch.zeros(4, 4).T[0], r"not contiguous.*\.contiguous\(\)"),
    (lambda: np.zeros(5, dtype=np.float32), r"shape \(5,\), expected \(4,\)"),
    (lambda: torch.zeros(4, requires_grad=True), "requires grad"),
    (lambda: [0.0] * 4, "expected a numpy array or a torch tensor"),
])
def test_ptr_rejects_bad_arrays(make, match):
    with pytest.raises((TypeError, ValueError), match=match):
        ptr(make(), "float32", name="x", shape=(4,))


def test_ptr_read_only_array():
    a = np.zeros(4, dtype=np.float32)
    a.flags.writeable = False
    ptr(a, "float32", name="a")
    with pytest.raises(ValueError, match="read-only"):
        ptr(a, "float32", name="a", writable=True)


def test_ptr_gives_data_address():
    a = np.arange(4, dtype=np.int32)
    t = torch.arange(4, dtype=torch.int32)
    assert ptr(a, "int32", name="a").value == a.ctypes.data
    assert ptr(t, "int32", name="t", shape=(None,)).value == t.data_ptr()


def test_imports_are_lazy(tmp_path):
    code = ("import sys, helpers, helpers.kernels, helpers.kernels.triton; "
            "helpers.kernels.int4; helpers.kernels.int8; helpers.kernels.sparse; "
            "assert 'triton' not in sys.modules, 'triton imported'")
    env = {**os.environ, "PYTHONPATH": str(REPO), "EFFML_CACHE_DIR": str(tmp_path / "c")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir()), "something was compiled"


def test_unusable_cache_dir_falls_back_to_temp(tmp_path, monkeypatch):
    # A path below a regular file cannot be created, even by root (as a
    # read-only home in the grading sandbox cannot).
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("EFFML_CACHE_DIR", str(tmp_path / "a_file" / "kernels"))
    monkeypatch.setattr(cjit.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(cjit, "_LOADED", {})
    lib = compile_c(SCALE_SRC, name="scale_test")
    assert lib.so_path.parent.parent == tmp_path and lib.so_path.parent.name.startswith("effml-kernels-")
