"""Compile C source with the system compiler and load it with ctypes.

Used by the C kernels in ``helpers/kernels/c/`` and by notebooks where a
student writes a kernel in C::

    from helpers.kernels.cjit import compile_c, ptr
    lib = compile_c(SOURCE, name="my_gemv")            # a ctypes.CDLL
    lib.my_gemv.restype = None
    lib.my_gemv(ptr(y, "float32", name="y", writable=True), ptr(x, "float32", name="x"), n)

Builds use ``cc -O3 -march=native -fopenmp -shared -fPIC`` (``$CC`` overrides
the compiler) and are cached in ``$EFFML_CACHE_DIR`` (default
``~/.cache/effml/kernels``), keyed by the hash of source, flags, compiler
version and host CPU. Each build leaves ``<name>-<hash>.json`` next to the
``.so`` recording the exact command line. A failed build raises
:class:`CompileError` whose message lists the compiler's diagnostics with line
numbers of the source as given (nothing is prepended to it).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = [
    "CompileError",
    "DEFAULT_FLAGS",
    "C_SOURCE_DIR",
    "cache_dir",
    "compile_c",
    "compile_file",
    "ptr",
]

DEFAULT_FLAGS: tuple[str, ...] = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
C_SOURCE_DIR = Path(__file__).resolve().parent / "c"

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Loaded libraries of this process by cache key: dlopen of a path twice returns
# the same handle anyway, this also skips the hashing of the file system.
_LOADED: dict[str, ctypes.CDLL] = {}


class CompileError(RuntimeError):
    """The C compiler rejected the source. ``diagnostics`` holds
    ``(line, column, kind, message)`` tuples; ``compiler_output`` the raw text."""

    def __init__(self, message: str, diagnostics: list[tuple[int, int, str, str]], compiler_output: str):
        super().__init__(message)
        self.diagnostics = diagnostics
        self.compiler_output = compiler_output


def cache_dir() -> Path:
    """Where builds are cached: ``$EFFML_CACHE_DIR`` or ``~/.cache/effml/kernels``;
    if that is not writable (a grading sandbox with a read-only home), a
    per-user folder in the temp dir."""
    env = os.environ.get("EFFML_CACHE_DIR")
    path = Path(env) if env else Path.home() / ".cache" / "effml" / "kernels"
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / f"effml-kernels-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def _compiler() -> str:
    cc = os.environ.get("CC", "cc")
    found = shutil.which(cc)
    if found is None:
        raise CompileError(
            f"no C compiler found: `{cc}` is not on PATH. Install gcc (Debian: `apt-get install gcc`) "
            "or point $CC at a compiler.", [], "")
    return found


@functools.lru_cache(maxsize=None)
def _compiler_version(cc: str) -> str:
    out = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else cc


@functools.lru_cache(maxsize=1)
def _host_fingerprint() -> str:
    # -march=native code must not be loaded on another CPU sharing the cache dir.
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features", "model name")):
                flags += line
    except OSError:
        pass
    return platform.machine() + platform.processor() + flags


def _format_error(name: str, source: str, output: str, src_path: str, cmd: Sequence[str]) -> CompileError:
    lines = source.splitlines()
    pattern = re.compile(re.escape(src_path) + r":(\d+):(\d+): (fatal error|error|warning|note): (.*)")
    diagnostics: list[tuple[int, int, str, str]] = []
    report = []
    for raw in output.splitlines():
        m = pattern.match(raw)
        if not m:
            continue
        line, col, kind, msg = int(m[1]), int(m[2]), m[3], m[4]
        diagnostics.append((line, col, kind, msg))
        if kind == "note":
            continue
        report.append(f"  line {line}, column {col}: {kind}: {msg}")
        if 1 <= line <= len(lines):
            code = lines[line - 1].expandtabs(4)
            report.append(f"    {line:4d} | {code}")
            report.append("         | " + " " * (col - 1) + "^")
    if not report:  # linker errors and the like carry no line: show the text as is
        report = ["  " + r.replace(src_path, f"{name}.c") for r in output.strip().splitlines()]
    n_err = sum(1 for d in diagnostics if d[2] in ("error", "fatal error"))
    head = f"C source `{name}` did not compile ({n_err or 'some'} error(s); line numbers are those of your source):"
    tail = f"\n(command: {' '.join(cmd)})"
    return CompileError(head + "\n" + "\n".join(report) + tail, diagnostics,
                        output.replace(src_path, f"{name}.c"))


def compile_c(source: str, name: str = "kernel", extra_flags: Iterable[str] = (), *,
              flags: Sequence[str] = DEFAULT_FLAGS) -> ctypes.CDLL:
    """Compile C ``source`` (the text, not a path) into a shared library and load it.

    Returns a ``ctypes.CDLL`` with extra attributes ``so_path``, ``flags``
    (the full compiler command), ``cache_hit`` (True when no compiler ran).
    Declare ``argtypes``/``restype`` of the functions you call.
    """
    if not isinstance(source, str):
        raise TypeError(f"compile_c expects the C source as a str, got {type(source).__name__}; "
                        "for a file use compile_file(path).")
    if not _NAME_RE.match(name):
        raise ValueError(f"name {name!r} must be a C-like identifier (letters, digits, _).")
    cc = _compiler()
    all_flags = [*flags, *extra_flags]
    key_text = "\0".join([source, *all_flags, cc, _compiler_version(cc), _host_fingerprint()])
    digest = hashlib.sha256(key_text.encode()).hexdigest()[:20]
    key = f"{name}-{digest}"
    if key in _LOADED:
        lib = _LOADED[key]
        lib.cache_hit = True
        return lib

    root = cache_dir()
    so_path = root / f"{key}.so"
    cmd_record = [cc, *all_flags, f"{name}.c", "-o", so_path.name]
    cache_hit = so_path.exists()
    if not cache_hit:
        # Build in a private temp dir on the same file system, then rename: a
        # rename is atomic, so a concurrent process sees no .so or a whole one.
        with tempfile.TemporaryDirectory(dir=root, prefix=f".build-{name}-") as tmp:
            src = Path(tmp) / f"{name}.c"
            src.write_text(source)
            out = Path(tmp) / f"{name}.so"
            cmd = [cc, *all_flags, str(src), "-o", str(out)]
            # LC_ALL=C: plain ASCII quotes in diagnostics, whatever the locale.
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                  env={**os.environ, "LC_ALL": "C"})
            if proc.returncode != 0:
                raise _format_error(name, source, proc.stderr + proc.stdout, str(src), cmd_record) from None
            meta = {"name": name, "compiler": cc, "compiler_version": _compiler_version(cc),
                    "flags": all_flags, "command": cmd_record}
            meta_tmp = Path(tmp) / "meta.json"
            meta_tmp.write_text(json.dumps(meta, indent=1))
            os.replace(meta_tmp, root / f"{key}.json")
            os.replace(out, so_path)
    lib = ctypes.CDLL(str(so_path))
    lib.so_path = so_path
    lib.flags = cmd_record
    lib.cache_hit = cache_hit
    _LOADED[key] = lib
    return lib


def compile_file(path: str | os.PathLike, extra_flags: Iterable[str] = ()) -> ctypes.CDLL:
    """Compile a C file; a bare file name is looked up in ``helpers/kernels/c/``."""
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = C_SOURCE_DIR / p
    if not p.exists():
        raise FileNotFoundError(f"C source {path} not found (looked in the current directory and {C_SOURCE_DIR}).")
    return compile_c(p.read_text(), name=re.sub(r"\W", "_", p.stem), extra_flags=extra_flags)


def _dtype_name(x: Any) -> str:
    return str(x.dtype).replace("torch.", "")


def ptr(x: Any, dtype: str, *, name: str, shape: Sequence[int | None] | None = None,
        writable: bool = False) -> ctypes.c_void_p:
    """Check a numpy array or CPU torch tensor and return its data pointer.

    ``dtype`` is a numpy-style name ("float32", "int8", "uint8", "int32", ...);
    ``shape`` may contain None for "any size". The array must be C-contiguous.
    The caller must keep ``x`` alive while the C function runs.
    """
    import numpy as np

    is_np = isinstance(x, np.ndarray)
    is_torch = type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")
    if not (is_np or is_torch):
        raise TypeError(f"`{name}` is a {type(x).__name__}, expected a numpy array or a torch tensor.")
    if is_torch and x.device.type != "cpu":
        raise ValueError(f"`{name}` is on {x.device}; C kernels run on the CPU: pass `{name}.cpu()`.")
    got = _dtype_name(x)
    if got != dtype:
        fix = f"`{name}.to(torch.{dtype})`" if is_torch else f"`{name}.astype(np.{dtype})`"
        raise TypeError(f"`{name}` has dtype {got}, expected {dtype}: convert with {fix}.")
    if shape is not None:
        got_shape = tuple(x.shape)
        ok = len(got_shape) == len(shape) and all(w is None or g == w for g, w in zip(got_shape, shape))
        if not ok:
            want = "(" + ", ".join("*" if w is None else str(w) for w in shape) + ("," if len(shape) == 1 else "") + ")"
            raise ValueError(f"`{name}` has shape {got_shape}, expected {want}.")
    contiguous = x.flags["C_CONTIGUOUS"] if is_np else x.is_contiguous()
    if not contiguous:
        fix = f"`np.ascontiguousarray({name})`" if is_np else f"`{name}.contiguous()`"
        raise ValueError(f"`{name}` is not contiguous in memory (a transpose or slice?): pass {fix}.")
    if writable and is_np and not x.flags["WRITEABLE"]:
        raise ValueError(f"`{name}` is read-only but the kernel writes to it: pass a writable copy.")
    if is_torch and x.requires_grad:
        raise ValueError(f"`{name}` requires grad; C kernels do not track gradients: pass `{name}.detach()`.")
    address = x.ctypes.data if is_np else x.data_ptr()
    return ctypes.c_void_p(address)
