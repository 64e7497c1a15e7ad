"""A static scan of the code a student wrote or changed in a notebook.

This is the grader's second line of defence. The first is that scores are
computed in the trusted grading process from the executed notebook, so no
finding here ever changes a score: each one says "needs review: <what>" for a
human to look at. The scan is deliberately narrow: it looks only at code cells
the student wrote or changed (compared with the released notebook), and only
for constructs ordinary lab code never needs (IPython hooks, patching imported
modules, ``sys.modules``, frames, ``exec`` of computed strings, comparison
dunders on student classes, processes, threads, sockets, ...).

A lab whose genuine solution needs one of the flagged constructs allows its
kind in the released notebook's metadata (the student cannot change that)::

    {"effml": {"scan_allow": ["threads"]}}

The kinds are the keys of :data:`KINDS`. A lab also names, in the same
metadata, the functions that would answer one of its tasks for the student
(a library's or a ``helpers`` one: they stay available to the other labs);
a student cell that uses one is flagged ``forbidden``::

    {"effml": {"scan_forbid": ["torch.fake_quantize_per_tensor_affine"]}}

Each entry is a dotted name (after resolving imports and aliases), and
covers what lies under it.
"""
from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass

# kind -> what a reviewer is told (the detail follows after a colon)
KINDS = {
    "parse_error": "code that does not parse",
    "shell": "shell command",
    "ipython_hook": "IPython hook or input/output transformer",
    "ipython": "use of the IPython shell object",
    "import_system": "import system manipulation",
    "trace": "tracing or profiling hook",
    "frames": "stack frame access",
    "exc_info": "exception state access",
    "stdio": "sys.stdout/sys.stderr replaced",
    "interpreter_hook": "interpreter hook",
    "builtins": "builtins access",
    "module_patch": "patches an imported module",
    "dunder_dict": "__dict__ or namespace write",
    "function_internals": "function internals",
    "code_objects": "function or code object built by hand",
    "class_dunder": "comparison or conversion method defined",
    "class_assign": "__class__ or __bases__ assigned",
    "introspection": "class hierarchy walk",
    "dynamic_attr": "computed attribute of a system module",
    "dynamic_code": "dynamic code (exec/eval/compile of a computed value)",
    "dynamic_import": "dynamic import",
    "native": "native code access",
    "process": "process control",
    "subprocess": "subprocess",
    "signal": "signal handling",
    "threads": "threads or processes in the background",
    "atexit": "exit hook",
    "gc": "garbage collector object walk",
    "unpickle": "unpickling",
    "weakref": "weak reference callbacks",
    "network": "network access",
    "system_paths": "system path (/proc, /dev, /sys)",
    "file_write": "file written outside the working folder or as a Python module",
    "filesystem": "file permission or link change",
    "kernel_protocol": "direct kernel protocol access",
    "grader_access": "grader internals",
    "course_files": "locates the course's files",
    "forbidden": "uses what this lab asks you to write yourself",
}


@dataclass(frozen=True)
class Finding:
    cell: int                 # index in the submitted notebook's cells (0-based)
    grade_id: str | None      # the cell's nbgrader grade_id, if any
    what: str
    line: int | None          # line in the cell's source (1-based)
    kind: str = ""            # a key of KINDS (what scan_allow names)

    def __str__(self) -> str:
        where = f"cell {self.cell}"
        if self.grade_id:
            where += f", {self.grade_id}"
        if self.line is not None:
            where += f", line {self.line}"
        return f"needs review: {self.what} ({where})"


# ------------------------------------------------------------------ rules

# Dotted names (after resolving import aliases) and what kind they are. A
# pattern matches the name itself and anything under it; ``*`` matches within
# one component.
_QUALIFIED = [
    ("import_system", ["sys.modules", "sys.meta_path", "sys.path_hooks", "sys.path_importer_cache"]),
    ("trace", ["sys.settrace", "sys.setprofile", "sys.gettrace", "sys.monitoring", "threading.settrace",
               "threading.setprofile", "threading.settrace_all_threads", "threading.setprofile_all_threads"]),
    ("frames", ["sys._getframe", "sys._current_frames", "sys._current_exceptions", "inspect.currentframe",
                "inspect.stack", "inspect.trace", "inspect.getouterframes", "inspect.getinnerframes",
                "inspect.getframeinfo", "traceback.walk_stack", "traceback.walk_tb"]),
    ("exc_info", ["sys.exc_info", "sys.exception", "sys.last_type", "sys.last_value", "sys.last_traceback",
                  "sys.last_exc"]),
    ("interpreter_hook", ["sys.excepthook", "sys.__excepthook__", "sys.displayhook", "sys.__displayhook__",
                          "sys.addaudithook", "sys.unraisablehook", "sys.breakpointhook", "sys.setrecursionlimit",
                          "sys.setswitchinterval", "sys.set_asyncgen_hooks", "sys.set_coroutine_origin_tracking_depth",
                          "faulthandler"]),
    ("builtins", ["builtins", "__builtins__"]),
    ("code_objects", ["types.FunctionType", "types.LambdaType", "types.CodeType"]),
    ("dynamic_import", ["importlib.reload", "importlib.util", "importlib.machinery", "importlib.abc",
                        "importlib._bootstrap", "importlib._bootstrap_external", "imp", "runpy", "zipimport",
                        "pkgutil.get_loader", "pkgutil.find_loader"]),
    ("native", ["ctypes", "_ctypes", "cffi", "_cffi_backend"]),
    ("process", ["os._exit", "os.abort", "os.kill", "os.killpg", "os.fork", "os.forkpty", "os.system", "os.popen",
                 "os.exec*", "os.spawn*", "os.posix_spawn*", "os.register_at_fork", "os.setsid", "os.setpgrp",
                 "os.setpgid", "os.set*uid", "os.set*gid", "os.chroot", "os.pidfd_open"]),
    ("subprocess", ["subprocess", "_posixsubprocess", "pty", "pexpect"]),
    ("signal", ["signal", "_signal"]),
    ("threads", ["threading", "_thread", "multiprocessing", "_multiprocessing", "concurrent.futures",
                 "torch.multiprocessing"]),
    ("atexit", ["atexit"]),
    ("gc", ["gc.get_referrers", "gc.get_referents", "gc.get_objects", "gc.callbacks"]),
    ("unpickle", ["pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle", "cPickle", "marshal.load",
                  "marshal.loads", "dill.load", "dill.loads", "dill.Unpickler", "cloudpickle.load",
                  "cloudpickle.loads", "shelve", "copyreg"]),
    ("weakref", ["weakref", "_weakref"]),
    ("network", ["socket", "_socket", "socketserver", "ssl", "urllib.request", "http.client", "http.server",
                 "requests", "httpx", "ftplib", "smtplib", "telnetlib", "xmlrpc"]),
    ("filesystem", ["os.symlink", "os.link", "os.mkfifo", "os.mknod", "os.chmod", "os.lchmod", "os.fchmod",
                    "os.chown", "os.lchown", "os.fchown", "shutil.rmtree", "shutil.chown"]),
    ("kernel_protocol", ["zmq", "jupyter_client", "ipykernel", "comm", "IPython.kernel",
                         "IPython.display.publish_display_data", "IPython.core.display.publish_display_data",
                         "IPython.core.display_functions.publish_display_data"]),
    ("grader_access", ["nbgrader", "autograder", "papermill", "nbval", "nbclient", "nbconvert", "sqlite3",
                       "sqlalchemy"]),
]


def _compile_patterns():
    out = []
    for kind, patterns in _QUALIFIED:
        for p in patterns:
            rx = re.escape(p).replace(r"\*", "[A-Za-z0-9_]*")
            out.append((kind, re.compile(rf"^{rx}(?:\.|$)")))
    return out


_QUALIFIED_RX = _compile_patterns()

# The parts of IPython ordinary lab code imports; anything else of IPython is its internals.
_IPYTHON_OK = ("IPython.display", "IPython.core.display", "IPython.core.display_functions", "IPython.lib.display",
               "IPython.get_ipython", "IPython.core.getipython.get_ipython")

# Settings under an imported module that lab code legitimately assigns.
_SETTINGS_OK = ("torch.backends.", "pandas.options.", "os.environ", "matplotlib.rcParams",
                "matplotlib.pyplot.rcParams", "numpy.seterr")

_FUNCTION_INTERNALS = {"__code__", "__globals__", "__closure__", "__defaults__", "__kwdefaults__",
                       "func_code", "func_globals"}
_FRAME_ATTRS = {"f_back", "f_locals", "f_globals", "f_builtins", "f_trace", "tb_frame", "gi_frame", "cr_frame",
                "ag_frame"}
_CLASS_DUNDERS = {"__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__bool__", "__float__", "__int__",
                  "__index__", "__array__", "__array_ufunc__", "__array_function__", "__array_priority__",
                  "__array_wrap__", "__array_finalize__", "__torch_function__", "__torch_dispatch__",
                  "__getattr__", "__getattribute__", "__instancecheck__", "__subclasscheck__"}
# Attributes of the IPython shell that hook into how cells run or report.
_IPYTHON_HOOKS = {"set_custom_exc", "custom_exceptions", "events", "input_transformers_cleanup",
                  "input_transformers_post", "input_transformer_manager", "ast_transformers", "showtraceback",
                  "showsyntaxerror", "display_pub", "displayhook", "display_formatter", "kernel", "set_hook",
                  "register_magic_function", "register_magics", "magics_manager", "excepthook"}
# ... and the distinctive ones of those, flagged on any object (an alias of the shell may hide it).
_IPYTHON_HOOKS_ANYWHERE = {"set_custom_exc", "input_transformers_cleanup", "input_transformers_post",
                           "input_transformer_manager", "ast_transformers", "showtraceback", "display_pub",
                           "set_hook", "register_magic_function", "register_magics", "custom_exceptions"}
_SAFE_LINE_MAGICS = {"matplotlib", "time", "timeit", "autoreload"}
_CODE_MAGICS = {"time", "timeit"}         # their argument is Python code: scanned too
_CODE_CELL_MAGICS = _CODE_MAGICS | {"capture"}
_SHELL_MAGICS = {"system", "sx", "sc", "bash", "sh", "script", "perl", "ruby", "python", "python2", "python3",
                 "pypy", "!"}
_DYNAMIC_CODE = {"eval", "exec", "compile", "builtins.eval", "builtins.exec", "builtins.compile"}
_DYNAMIC_IMPORT = {"__import__", "builtins.__import__", "importlib.import_module", "importlib.__import__"}
_OPEN = {"open", "io.open", "builtins.open", "codecs.open", "os.open", "io.FileIO", "_io.open"}
_PATH = {"pathlib.Path", "pathlib.PosixPath", "pathlib.PurePath", "pathlib.PurePosixPath"}
_PATH_WRITES = {"write_text", "write_bytes", "touch", "mkdir", "unlink", "rmdir", "rename", "replace",
                "symlink_to", "hardlink_to", "chmod", "lchmod"}
_COPIES = {"shutil.copy", "shutil.copy2", "shutil.copyfile", "shutil.copytree", "shutil.move", "os.rename",
           "os.replace", "os.remove", "os.unlink", "os.rmdir", "os.removedirs", "os.makedirs", "os.mkdir"}
_NAMESPACES = {"globals", "vars", "locals"}
_MUTATORS = {"update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__"}
# Modules whose attributes a computed getattr should not reach.
_SENSITIVE_MODULES = {"sys", "os", "builtins", "__builtins__", "importlib", "gc", "inspect", "types", "ctypes",
                      "subprocess", "signal", "threading", "IPython", "get_ipython()", "socket", "posix", "io",
                      "shutil", "pickle", "marshal"}
_STDLIB = set(getattr(sys, "stdlib_module_names", ())) | {"sys", "os", "builtins"}
_SYSTEM_PREFIXES = ("/proc/", "/sys/", "/dev/")
_SYSTEM_OK = {"/dev/null", "/dev/stdout", "/dev/stderr"}
_MAX_NESTING = 4
# Builtins flagged even where the notebook binds the same name somewhere (a
# parameter called ``eval`` in one function must not hide ``eval(...)`` elsewhere).
_NEVER_SHADOWED = {"eval", "exec", "compile", "__import__", "setattr", "delattr", "getattr", "hasattr", "globals",
                   "vars", "locals", "open", "get_ipython", "__builtins__"}


def _literal(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _short(node, limit: int = 60) -> str:
    try:
        text = ast.unparse(node)
    except Exception:  # noqa: BLE001 - only for messages
        text = type(node).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_absolute(path: str) -> bool:
    return path.startswith(("/", "~")) and path not in _SYSTEM_OK


# ------------------------------------------------------------------ names


class _Names:
    """What the names of the notebook stand for: ``aliases`` maps a local name
    to the dotted name it was imported as (``np`` -> ``numpy``), ``modules``
    are the names bound by imports (or assigned from one), ``bound`` every
    other name the notebook binds (so a local variable called ``signal`` is
    not the module)."""

    def __init__(self):
        self.aliases: dict[str, str] = {}
        self.modules: set[str] = set()
        self.bound: set[str] = set()

    def add(self, tree) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        self._alias(a.asname, a.name)
                    else:
                        top = a.name.split(".")[0]
                        self._alias(top, top)
            elif isinstance(node, ast.ImportFrom):
                base = "." * (node.level or 0) + (node.module or "")
                for a in node.names:
                    if a.name != "*":
                        self._alias(a.asname or a.name, f"{base}.{a.name}" if base else a.name)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.bound.add(node.name)
            elif isinstance(node, ast.arg):
                self.bound.add(node.arg)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                self.bound.add(node.id)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                self.bound.add(node.name)
            elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
                self.bound.add(node.name)
            elif isinstance(node, ast.MatchMapping) and node.rest:
                self.bound.add(node.rest)

    def _alias(self, name: str, target: str) -> None:
        self.aliases.setdefault(name, target)
        self.modules.add(name)

    def add_assignments(self, trees) -> None:
        """``s = sys``, ``ip = get_ipython()``, ``m = __import__("os")``: the
        name stands for what it was assigned, when every binding of the name
        is such an assignment (``x = np.float32`` here and ``x = Net()``
        there makes ``x`` an ordinary variable)."""
        stores: dict[str, int] = {}
        for tree in trees:
            for node in ast.walk(tree):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    stores[node.id] = stores.get(node.id, 0) + 1
                elif isinstance(node, ast.arg):
                    stores[node.arg] = stores.get(node.arg, 0) + 1
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    stores[node.name] = stores.get(node.name, 0) + 1
        for _ in range(2):  # twice: ``a = sys`` then ``b = a``
            found: dict[str, list[str]] = {}
            for tree in trees:
                for node in ast.walk(tree):
                    if not isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)):
                        continue
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    q = self._module_value(node.value)
                    if q is None:
                        continue
                    for t in targets:
                        if isinstance(t, ast.Name) and t.id not in self.modules:
                            found.setdefault(t.id, []).append(q)
            for name, values in found.items():
                if len(values) == stores.get(name, 0):
                    self.aliases[name] = values[0]
                    self.modules.add(name)

    def _module_value(self, value) -> str | None:
        if value is None or not isinstance(value, (ast.Name, ast.Attribute, ast.Call)):
            return None
        q = self.resolve(value)
        if q is None:
            return None
        root = self.root(value)
        if (q == "get_ipython()" or q.startswith("get_ipython().") or (root is not None and root in self.modules)
                or q.split(".")[0] in _STDLIB or q in _DYNAMIC_CODE | _DYNAMIC_IMPORT):
            return q
        return None

    def root(self, node) -> str | None:
        while isinstance(node, ast.Attribute):
            node = node.value
        return node.id if isinstance(node, ast.Name) else None

    def resolve(self, node) -> str | None:
        """The dotted name an expression stands for, or None."""
        if isinstance(node, ast.Name):
            if node.id in self.aliases:
                return self.aliases[node.id]
            if node.id in self.bound and node.id not in _NEVER_SHADOWED:
                return None
            return node.id
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Call):
            f = self.resolve(node.func)
            if f in ("get_ipython", "IPython.get_ipython", "IPython.core.getipython.get_ipython"):
                return "get_ipython()"
            if f in _DYNAMIC_IMPORT and node.args and _literal(node.args[0]):
                return _literal(node.args[0])
        return None

    def is_module(self, node) -> bool:
        """Is the root of this attribute chain an imported module (approximately:
        a name an import statement bound, or an unbound standard-library name)?"""
        base = node
        while isinstance(base, ast.Attribute):
            base = base.value
        if isinstance(base, ast.Call):
            return self.resolve(base) is not None
        if not isinstance(base, ast.Name):
            return False
        root = base.id
        if root in self.modules:
            return True
        return root not in self.bound and root in _STDLIB


# ------------------------------------------------------------------ the scan of one source


class _Scan:
    def __init__(self, names: _Names, forbid: tuple[str, ...] = ()):
        self.names = names
        self.forbid = forbid
        self.found: list[tuple[int, str, str]] = []   # (line, kind, detail)

    def add(self, kind: str, detail: str, line: int | None) -> None:
        self.found.append((line or 1, kind, detail))

    # -- entry points

    def source(self, src: str, offset: int = 0, depth: int = 0) -> None:
        """Scan a cell (or code inside a literal string, ``depth`` > 0)."""
        tree = self.parse(src, offset)
        if tree is not None:
            self.tree(tree, offset, depth)

    def parse(self, src: str, offset: int = 0):
        try:
            return ast.parse(src)
        except SyntaxError as exc:
            msg = exc.msg if getattr(exc, "msg", None) else str(exc)
            self.add("parse_error", msg, (exc.lineno or 1) + offset)
        except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
            self.add("parse_error", str(exc)[:80] or type(exc).__name__, 1 + offset)
        return None

    def tree(self, tree, offset: int, depth: int) -> None:
        parents = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node
        self.parents = parents
        for node in ast.walk(tree):
            line = getattr(node, "lineno", 1) + offset
            try:
                self.node(node, line, offset, depth)
            except RecursionError:
                self.add("parse_error", "too deeply nested to scan", line)
                return

    # -- one node

    def node(self, node, line: int, offset: int, depth: int) -> None:
        n = self.names
        if isinstance(node, ast.Import):
            for a in node.names:
                self.qualified(a.name, f"import {a.name}", line)
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            self.qualified(mod, f"from {mod} import ...", line)
            for a in node.names:
                if a.name != "*":
                    self.qualified(f"{mod}.{a.name}", f"from {mod} import {a.name}", line)
                    self.attribute_name(a.name, f"from {mod} import {a.name}", line, store=False)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            q = n.resolve(node)
            if q:
                self.qualified(q, node.id, line)
                self.ipython_ref(node, q, line)
                parent = self.parents.get(node)
                if q in _DYNAMIC_CODE and not (isinstance(parent, ast.Call) and parent.func is node):
                    self.add("dynamic_code", f"{node.id} used other than called on a literal", line)
        elif isinstance(node, ast.Attribute):
            self.attribute(node, line, offset, depth)
        elif isinstance(node, ast.Call):
            self.call(node, line, offset, depth)
        elif isinstance(node, ast.ClassDef):
            self.classdef(node, offset)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, (ast.Store, ast.Del)):
            self.subscript_store(node, line)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            self.constant(node.value, line)

    def qualified(self, q: str, shown: str, line: int, store: bool = False) -> bool:
        hit = False
        for name in self.forbid:
            if q == name or q.startswith(name + "."):
                self.add("forbidden", shown if q in shown else f"{shown} ({q})", line)
                hit = True
        for kind, rx in _QUALIFIED_RX:
            if rx.match(q):
                self.add(kind, shown if q in shown else f"{shown} ({q})", line)
                hit = True
        if q.startswith("IPython.") and not q.startswith(_IPYTHON_OK) and not hit:
            self.add("ipython", f"IPython internals {q}", line)
            hit = True
        if store and q in ("sys.stdout", "sys.stderr", "sys.stdin", "sys.__stdout__", "sys.__stderr__"):
            self.add("stdio", f"{shown} assigned", line)
            hit = True
        return hit

    def attribute_name(self, attr: str, shown: str, line: int, store: bool) -> None:
        if attr in _FUNCTION_INTERNALS:
            self.add("function_internals", shown, line)
        if attr in _FRAME_ATTRS:
            self.add("frames", shown, line)
        if attr == "__builtins__":
            self.add("builtins", shown, line)
        if attr == "__subclasses__":
            self.add("introspection", shown, line)
        if attr in _IPYTHON_HOOKS_ANYWHERE:
            self.add("ipython_hook", shown, line)
        if store:
            if attr in ("__class__", "__bases__"):
                self.add("class_assign", f"{shown} assigned", line)
            if attr in _CLASS_DUNDERS:
                self.add("class_dunder", f"{shown} assigned", line)
            if attr == "__dict__":
                self.add("dunder_dict", f"{shown} assigned", line)

    def attribute(self, node: ast.Attribute, line: int, offset: int, depth: int) -> None:
        n = self.names
        store = isinstance(node.ctx, (ast.Store, ast.Del))
        shown = _short(node)
        self.attribute_name(node.attr, shown, line, store)
        if node.attr in ("register", "unregister") and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "events":
            self.add("ipython_hook", shown, line)
        if node.attr == "__dict__" and not store and n.is_module(node.value):
            self.add("dunder_dict", f"{shown} (the namespace of a module)", line)
        if node.attr in ("__file__", "__path__", "__spec__", "__loader__") and n.is_module(node.value):
            self.add("course_files", shown, line)
        q = n.resolve(node)
        if q is not None:
            hit = self.qualified(q, shown, line, store)
            self.ipython_ref(node, q, line)
            if store and not hit and n.is_module(node) and not q.startswith(_SETTINGS_OK) \
                    and not q.startswith("get_ipython()"):
                self.add("module_patch", f"{shown} {'deleted' if isinstance(node.ctx, ast.Del) else 'assigned'}",
                         line)
        base = n.resolve(node.value)
        if base == "get_ipython()":
            self.ipython_attribute(node, line, offset, depth)

    def ipython_ref(self, node, q: str, line: int) -> None:
        """``get_ipython`` kept in a variable or passed on (not ``get_ipython().x``)."""
        parent = self.parents.get(node)
        if q in ("get_ipython", "IPython.get_ipython", "IPython.core.getipython.get_ipython"):
            if not (isinstance(parent, ast.Call) and parent.func is node):
                self.add("ipython", f"{_short(node)} used other than called", line)

    def ipython_attribute(self, node: ast.Attribute, line: int, offset: int, depth: int) -> None:
        attr = node.attr
        call = self.parents.get(node)
        call = call if isinstance(call, ast.Call) and call.func is node else None
        args = [_literal(a) for a in call.args] if call else []
        if attr in ("system", "getoutput"):
            cmd = args[0] if args and args[0] is not None else "..."
            self.add("shell", f"!{cmd}"[:60], line)
            return
        if attr in ("run_line_magic", "magic", "run_cell_magic") and args and args[0] is not None:
            if attr == "magic":
                name, _, rest = args[0].lstrip("%").partition(" ")
            else:
                name, rest = args[0], (args[1] if len(args) > 1 else None)
            cell = attr == "run_cell_magic"
            shown = ("%%" if cell else "%") + name
            if name in _SHELL_MAGICS:
                self.add("shell", shown, line)
                return
            if cell and name in _CODE_CELL_MAGICS:
                if rest and name in _CODE_MAGICS:          # %%timeit's line is setup code
                    self.nested(_strip_timeit_options(rest), line - 1, depth)
                body = args[2] if len(args) > 2 else None
                if body is not None:
                    self.nested(body, line, depth)        # the body starts on the line after %%time
                return
            if not cell and (name in _SAFE_LINE_MAGICS or (name == "load_ext" and rest == "autoreload")
                             or (name == "config" and rest is not None and rest.startswith("InlineBackend."))):
                if name in _CODE_MAGICS and rest is not None:
                    self.nested(_strip_timeit_options(rest), line - 1, depth)
                return
            self.add("ipython", f"magic {shown}", line)
            return
        if attr in _IPYTHON_HOOKS:
            self.add("ipython_hook", f"get_ipython().{attr}", line)
        else:
            self.add("ipython", f"get_ipython().{attr}", line)

    def nested(self, src: str, offset: int, depth: int) -> None:
        """Code inside a string (``exec("...")``, ``%time ...``): scanned with
        the lines of the enclosing cell."""
        if depth >= _MAX_NESTING:
            self.add("dynamic_code", "code nested too deeply in strings", offset + 1)
            return
        saved = self.parents
        tree = self.parse(src, offset)
        if tree is not None:
            self.tree(tree, offset, depth + 1)
        self.parents = saved

    def call(self, node: ast.Call, line: int, offset: int, depth: int) -> None:
        n = self.names
        f = n.resolve(node.func)
        first = node.args[0] if node.args else None
        if n.resolve(node) == "get_ipython()":
            parent = self.parents.get(node)
            if not (isinstance(parent, ast.Attribute) and parent.value is node):
                self.add("ipython", "get_ipython() kept or passed on", line)
        if f in _DYNAMIC_CODE:
            src = _literal(first) if first is not None else None
            if src is None:
                self.add("dynamic_code", f"{_short(node.func)}({_short(first, 30) if first else ''})", line)
            else:
                self.nested(src, getattr(first, "lineno", line - offset) + offset - 1, depth)
        elif f in _DYNAMIC_IMPORT:
            name = _literal(first) if first is not None else None
            if name is None:
                self.add("dynamic_import", f"{_short(node.func)} of a computed name", line)
            else:
                self.qualified(name, f"{_short(node.func)}({name!r})", line)
        elif f in ("setattr", "delattr", "builtins.setattr", "builtins.delattr") and first is not None:
            self.setattr_call(node, f, line)
        elif f in ("getattr", "hasattr", "builtins.getattr") and first is not None and len(node.args) > 1:
            name = _literal(node.args[1])
            base = n.resolve(first)
            if name is not None:
                self.attribute_name(name, f"{f}({_short(first, 30)}, {name!r})", line, store=False)
                if base:
                    self.qualified(f"{base}.{name}", f"{f}({_short(first, 30)}, {name!r})", line)
            elif base and (base.split(".")[0] in _SENSITIVE_MODULES or base.startswith("get_ipython()")):
                self.add("dynamic_attr", f"{f}({_short(first, 30)}, ...)", line)
        elif f in _NAMESPACES and node.args and n.is_module(first) and n.resolve(first):
            self.add("dunder_dict", f"vars({_short(first, 30)}) (the namespace of a module)", line)
        if isinstance(node.func, ast.Attribute) and node.func.attr in _MUTATORS:
            target = node.func.value
            if self.is_namespace(target):
                self.add("dunder_dict", f"{_short(node.func)}(...)", line)
        self.file_write(node, f, line)

    def is_namespace(self, node) -> bool:
        if isinstance(node, ast.Attribute) and node.attr == "__dict__":
            return True
        return isinstance(node, ast.Call) and self.names.resolve(node.func) in _NAMESPACES

    def setattr_call(self, node: ast.Call, f: str, line: int) -> None:
        n = self.names
        target = node.args[0]
        name = _literal(node.args[1]) if len(node.args) > 1 else None
        verb = f.split(".")[-1]
        shown = f"{verb}({_short(target, 30)}, {repr(name) if name is not None else '...'})"
        if name is not None:
            self.attribute_name(name, shown, line, store=True)
        base = n.resolve(target)
        hit = False
        if base is not None and name is not None:
            hit = self.qualified(f"{base}.{name}", shown, line, store=True)
        if base is not None and (base.split(".")[0] in _SENSITIVE_MODULES or base.startswith("get_ipython()")) \
                and name is None:
            self.add("dynamic_attr", shown, line)
            hit = True
        if not hit and n.is_module(target) and not (base and f"{base}.{name}".startswith(_SETTINGS_OK)):
            self.add("module_patch", shown, line)

    def subscript_store(self, node: ast.Subscript, line: int) -> None:
        n = self.names
        value = node.value
        if self.is_namespace(value):
            self.add("dunder_dict", f"{_short(value)}[...] written", line)
            return
        q = n.resolve(value)
        if q is not None and isinstance(value, ast.Attribute) and n.is_module(value) \
                and not q.startswith(_SETTINGS_OK) and not self.qualified(q, _short(value), line):
            self.add("module_patch", f"{_short(value)}[...] written", line)

    def classdef(self, node: ast.ClassDef, offset: int) -> None:
        for stmt in node.body:
            names = []
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [stmt.name]
            elif isinstance(stmt, ast.Assign):
                names = [t.id for t in stmt.targets if isinstance(t, ast.Name)]
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                names = [stmt.target.id]
            for name in names:
                if name in _CLASS_DUNDERS:
                    self.add("class_dunder", f"{node.name}.{name}", stmt.lineno + offset)

    def constant(self, value: str, line: int) -> None:
        if (value.startswith(_SYSTEM_PREFIXES) or value in ("/proc", "/sys", "/dev")) \
                and value.split()[0] not in _SYSTEM_OK:
            self.add("system_paths", repr(value[:40]), line)
        if value in _CLASS_DUNDERS:
            self.add("class_dunder", f"{value!r} named in a string", line)
        if value in _FUNCTION_INTERNALS:
            self.add("function_internals", f"{value!r} named in a string", line)
        if value in ("__builtins__", "builtins"):
            self.add("builtins", f"{value!r} named in a string", line)
        if "gradebook" in value.lower():
            self.add("grader_access", repr(value[:40]), line)

    # -- files

    def file_write(self, node: ast.Call, f: str | None, line: int) -> None:
        n = self.names
        path = None
        writes = False
        if f in _OPEN and node.args:
            path = _literal(node.args[0])
            if f == "os.open":
                flags = node.args[1] if len(node.args) > 1 else None
                writes = flags is not None and any(
                    isinstance(x, (ast.Attribute, ast.Name)) and (getattr(x, "attr", None) or getattr(x, "id", ""))
                    in ("O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC") for x in ast.walk(flags))
            else:
                mode = node.args[1] if len(node.args) > 1 else next(
                    (k.value for k in node.keywords if k.arg == "mode"), None)
                mode_s = _literal(mode) if mode is not None else "r"
                writes = mode_s is None or any(c in mode_s for c in "wax+")
        elif isinstance(node.func, ast.Attribute) and node.func.attr in _PATH_WRITES:
            inner = node.func.value
            if isinstance(inner, ast.Call) and n.resolve(inner.func) in _PATH and inner.args:
                path, writes = _literal(inner.args[0]), True
        elif f in _COPIES and node.args:
            path = _literal(node.args[-1]) if f.startswith("shutil.") else _literal(node.args[0])
            writes = True
        if path is None or not writes:
            return
        if _is_absolute(path):
            self.add("file_write", f"{_short(node.func)}({path[:40]!r}) writes an absolute path", line)
        elif path.endswith((".py", ".pth", ".so", ".pyc")):
            self.add("file_write", f"{_short(node.func)}({path[:40]!r}) writes a Python module", line)


def _strip_timeit_options(line: str) -> str:
    return re.sub(r"^\s*(?:-[nrp]\s*\d+\s+|-[tcoq]\s+)*", "", line)


# ------------------------------------------------------------------ notebooks


_TRANSFORMER = None


def _transform(src: str) -> str:
    """IPython syntax (``%magic``, ``!shell``, ``x?``) to the Python IPython runs."""
    global _TRANSFORMER
    if _TRANSFORMER is None:
        try:
            from IPython.core.inputtransformer2 import TransformerManager
            _TRANSFORMER = TransformerManager()
        except Exception:  # noqa: BLE001 - no IPython: the small fallback below
            _TRANSFORMER = False
    if _TRANSFORMER:
        try:
            return _TRANSFORMER.transform_cell(src)
        except Exception:  # noqa: BLE001
            pass
    return _fallback_transform(src)


def _fallback_transform(src: str) -> str:
    lines = src.split("\n")
    first = lines[0].lstrip() if lines else ""
    if first.startswith("%%"):
        name, _, rest = first[2:].partition(" ")
        return f"get_ipython().run_cell_magic({name!r}, {rest!r}, {chr(10).join(lines[1:])!r})"
    out = []
    for ln in lines:
        s = ln.lstrip()
        indent = ln[: len(ln) - len(s)]
        if s.startswith("!"):
            out.append(f"{indent}get_ipython().system({s.lstrip('!')!r})")
        elif s.startswith("%"):
            name, _, rest = s.lstrip("%").partition(" ")
            out.append(f"{indent}get_ipython().run_line_magic({name!r}, {rest!r})")
        else:
            out.append(ln)
    return "\n".join(out)


def _source(cell) -> str:
    src = cell.get("source", "") if hasattr(cell, "get") else ""
    if isinstance(src, list):
        src = "".join(s for s in src if isinstance(s, str))
    return src if isinstance(src, str) else ""


def _nbgrader(cell) -> dict:
    meta = cell.get("metadata") if hasattr(cell, "get") else None
    nbg = meta.get("nbgrader") if hasattr(meta, "get") else None
    return nbg if isinstance(nbg, dict) else {}


def _grade_id(cell) -> str | None:
    gid = _nbgrader(cell).get("grade_id")
    return gid if isinstance(gid, str) else None


def _normal(src: str) -> str:
    return "\n".join(line.rstrip() for line in src.strip("\n").split("\n")).rstrip()


def _cells(nb):
    cells = nb.get("cells", []) if hasattr(nb, "get") else []
    for i, cell in enumerate(cells if isinstance(cells, list) else []):
        if hasattr(cell, "get"):
            yield i, cell


def _code_cells(nb):
    for i, cell in _cells(nb):
        if cell.get("cell_type") == "code":
            yield i, cell


def _metadata_names(release_nb, key: str) -> set[str]:
    """The strings listed under ``effml.<key>`` of the release's metadata."""
    try:
        allow = release_nb.metadata.get("effml", {}).get(key, [])
        return {a for a in allow if isinstance(a, str)} if isinstance(allow, (list, tuple)) else set()
    except AttributeError:
        return set()


def cells_to_scan(nb, release_nb) -> list[int]:
    """Indices of the code cells the student wrote or changed: solution cells,
    cells whose source differs from the release's cell with the same grade_id,
    and cells without a grade_id whose source is not in the release.

    A cell carrying the grade_id of a locked cell of the release is the
    instructor's, whatever its source: the grader overwrites it from the
    gradebook before anything runs (after which it holds the hidden tests,
    so it differs from the release). Only when the id appears more than once
    (nbgrader then strips all but one copy, which run as plain cells) are
    the copies scanned like any other cell."""
    by_id, sources, locked, solutions = {}, set(), set(), set()
    for _, cell in _cells(release_nb):
        gid = _grade_id(cell)
        meta = _nbgrader(cell)
        if gid is not None and meta.get("locked"):
            locked.add(gid)
        if cell.get("cell_type") != "code":
            continue
        src = _normal(_source(cell))
        sources.add(src)
        if gid is not None:
            by_id.setdefault(gid, src)
            if meta.get("solution"):
                solutions.add(gid)
    count: dict[str, int] = {}
    for _, cell in _cells(nb):
        gid = _grade_id(cell)
        if gid is not None:
            count[gid] = count.get(gid, 0) + 1
    out = []
    for i, cell in _code_cells(nb):
        src = _normal(_source(cell))
        gid = _grade_id(cell)
        if gid in locked and count[gid] == 1:
            continue
        if _nbgrader(cell).get("solution") or gid in solutions:
            out.append(i)
        elif gid is not None:
            if by_id.get(gid) != src:
                out.append(i)
        elif src not in sources:
            out.append(i)
    return out


def scan_notebook(nb, release_nb) -> list[Finding]:
    """Findings on the code the student wrote or changed in ``nb`` (see
    :func:`cells_to_scan`), sorted by cell then line, each kind at most once
    per cell. Never raises on a malformed submission."""
    allow = _metadata_names(release_nb, "scan_allow")
    forbid = tuple(sorted(_metadata_names(release_nb, "scan_forbid")))
    names = _Names()
    trees = {}
    # Names bound anywhere (the release's setup cells import numpy as np, ...).
    for which, notebook in (("nb", nb), ("release", release_nb)):
        for i, cell in _code_cells(notebook):
            try:
                tree = ast.parse(_transform(_source(cell)))
            except Exception:  # noqa: BLE001 - reported below if it is a scanned cell
                continue
            try:
                names.add(tree)
            except RecursionError:
                continue
            trees[(which, i)] = tree
    try:
        names.add_assignments(list(trees.values()))
    except RecursionError:
        pass
    cells = nb.get("cells", []) if hasattr(nb, "get") else []
    findings: list[Finding] = []
    for i in cells_to_scan(nb, release_nb):
        cell = cells[i]
        scan = _Scan(names, forbid)
        src = _source(cell)
        try:
            scan.source(_transform(src))
        except RecursionError:
            scan.add("parse_error", "too deeply nested to scan", 1)
        seen = set()
        for line, kind, detail in sorted(scan.found, key=lambda t: t[0]):
            if kind in seen or kind in allow:
                continue
            seen.add(kind)
            what = KINDS[kind] if kind == "parse_error" and not detail else f"{KINDS[kind]}: {detail}"
            findings.append(Finding(i, _grade_id(cell), what, line, kind))
    findings.sort(key=lambda f: (f.cell, f.line or 0))
    return findings
