"""The static scan of student code (autograder/scan.py): each construct it is
for is flagged, ordinary lab code and every lab's real solution are not, only
what the student wrote or changed is scanned, and nothing a student submits
makes it raise."""
from __future__ import annotations

import copy
import time

import nbformat
import pytest

from autograder import scan as scan_module
from autograder.course import Course
from autograder.scan import KINDS, Finding, cells_to_scan, scan_notebook

COURSE = Course()

SETUP = """\
import os, sys, io, math, pathlib, shutil, importlib
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.distributed as dist
import matplotlib.pyplot as plt
import helpers.checks
from helpers.checks import check_close
"""


def _cell(source, grade_id=None, solution=False, locked=False):
    cell = nbformat.v4.new_code_cell(source)
    if grade_id:
        cell.metadata["nbgrader"] = {"grade_id": grade_id, "solution": solution, "locked": locked,
                                     "grade": False, "schema_version": 3, "task": False}
    return cell


def _release(*extra, allow=None):
    nb = nbformat.v4.new_notebook()
    nb.cells = [_cell(SETUP, "setup", locked=True),
                nbformat.v4.new_markdown_cell("Write the function."),
                _cell("# YOUR CODE HERE\nraise NotImplementedError()", "task_code", solution=True),
                _cell("check_close(f(1), 2)", "task", locked=True), *extra]
    if allow is not None:
        nb.metadata["effml"] = {"scan_allow": allow}
    return nb


def _submit(release, source):
    nb = copy.deepcopy(release)
    nb.cells[2].source = source
    return nb


def _scan(source, release=None):
    release = release or _release()
    return scan_notebook(_submit(release, source), release)


# ---------------------------------------------------------------- (a) each construct is flagged

CONSTRUCTS = [
    # IPython hooks, transformers and the shell object
    ("get_ipython().set_custom_exc((Exception,), handler)", "ipython_hook", "set_custom_exc"),
    ("get_ipython().events.register('post_run_cell', f)", "ipython_hook", "events"),
    ("ip = get_ipython()\nip.events.register('pre_run_cell', f)", "ipython_hook", "events"),
    ("get_ipython().input_transformers_cleanup.append(f)", "ipython_hook", "input_transformers_cleanup"),
    ("get_ipython().input_transformers_post.append(f)", "ipython_hook", "input_transformers_post"),
    ("get_ipython().ast_transformers.append(t)", "ipython_hook", "ast_transformers"),
    ("get_ipython().showtraceback = lambda *a, **k: None", "ipython_hook", "showtraceback"),
    ("get_ipython().display_pub.publish = f", "ipython_hook", "display_pub"),
    ("get_ipython().displayhook.flush = f", "ipython_hook", "displayhook"),
    ("get_ipython().kernel.shell = None", "ipython_hook", "kernel"),
    ("get_ipython().set_hook('complete_command', f)", "ipython_hook", "set_hook"),
    ("get_ipython().register_magic_function(f)", "ipython_hook", "register_magic_function"),
    ("shell.ast_transformers.append(t)", "ipython_hook", "ast_transformers"),
    ("get_ipython().run_cell('x = 1')", "ipython", "run_cell"),
    ("get_ipython().user_ns['check_close'] = f", "ipython", "user_ns"),
    ("from IPython import get_ipython as g\ng().ex('x = 1')", "ipython", "ex"),
    ("shell = get_ipython()", "ipython", "kept or passed on"),
    ("hook(get_ipython)", "ipython", "used other than called"),
    ("get_ipython().run_line_magic('load_ext', 'my_extension')", "ipython", "%load_ext"),
    ("get_ipython().magic('run other.py')", "ipython", "%run"),
    ("%load_ext my_extension", "ipython", "%load_ext"),
    ("%%writefile helpers/checks.py\ndef check_close(*a, **k): pass", "ipython", "%%writefile"),
    ("from IPython.core.interactiveshell import InteractiveShell", "ipython", "IPython internals"),
    # shell escapes
    ("!ls -la", "shell", "!ls"),
    ("files = !ls", "shell", "!ls"),
    ("%%bash\nrm -rf /", "shell", "%%bash"),
    ("%%script bash\nls", "shell", "%%script"),
    ("%%sh\nls", "shell", "%%sh"),
    ("%sx ls", "shell", "%sx"),
    ("get_ipython().system('ls')", "shell", "!ls"),
    ("if True:\n    !ls", "shell", "!ls"),
    # sys
    ("sys.modules['helpers.checks'] = fake", "import_system", "sys.modules"),
    ("sys.meta_path.insert(0, finder)", "import_system", "sys.meta_path"),
    ("sys.path_hooks.append(hook)", "import_system", "sys.path_hooks"),
    ("from sys import modules\nmodules.clear()", "import_system", "sys.modules"),
    ("s = __import__('sys')\ns.modules.clear()", "import_system", "sys.modules"),
    ("getattr(sys, 'modules')['x'] = 1", "import_system", "sys.modules"),
    ("sys.settrace(tracer)", "trace", "sys.settrace"),
    ("sys.setprofile(tracer)", "trace", "sys.setprofile"),
    ("import threading\nthreading.settrace(tracer)", "trace", "threading.settrace"),
    ("caller = sys._getframe(1)", "frames", "sys._getframe"),
    ("etype, value, tb = sys.exc_info()", "exc_info", "sys.exc_info"),
    ("sys.stdout = io.StringIO()", "stdio", "sys.stdout assigned"),
    ("sys.stderr = open(os.devnull, 'w')", "stdio", "sys.stderr assigned"),
    ("setattr(sys, 'stdout', sink)", "stdio", "stdout"),
    ("sys.excepthook = handler", "interpreter_hook", "sys.excepthook"),
    ("sys.displayhook = handler", "interpreter_hook", "sys.displayhook"),
    ("sys.addaudithook(hook)", "interpreter_hook", "sys.addaudithook"),
    # builtins
    ("import builtins", "builtins", "import builtins"),
    ("import builtins\nbuiltins.print = quiet", "builtins", "builtins"),
    ("__builtins__.print = quiet", "builtins", "__builtins__"),
    ("__builtins__['print'] = quiet", "builtins", "__builtins__"),
    ("from builtins import print as p", "builtins", "builtins"),
    # patching imported modules
    ("np.allclose = lambda *a, **k: True", "module_patch", "np.allclose assigned"),
    ("helpers.checks.check_close = lambda *a, **k: None", "module_patch", "helpers.checks.check_close"),
    ("import helpers.checks as hc\nhc.check_close = lambda *a, **k: None", "module_patch", "hc.check_close"),
    ("from helpers import checks\nchecks.check_close = lambda *a, **k: None", "module_patch", "checks.check_close"),
    ("torch.Tensor.__eq__ = lambda a, b: True", "module_patch", "torch.Tensor.__eq__"),
    ("dist.all_reduce = fake_all_reduce", "module_patch", "dist.all_reduce"),
    ("np.testing.assert_allclose = lambda *a, **k: None", "module_patch", "np.testing.assert_allclose"),
    ("torch.allclose += 1", "module_patch", "torch.allclose"),
    ("setattr(np, 'allclose', ok)", "module_patch", "setattr(np, 'allclose')"),
    ("setattr(helpers.checks, name, ok)", "module_patch", "setattr(helpers.checks, ...)"),
    ("delattr(np, 'allclose')", "module_patch", "delattr"),
    ("del np.allclose", "module_patch", "np.allclose deleted"),
    ("helpers.checks.TOLERANCES['rtol'] = 1.0", "module_patch", "helpers.checks.TOLERANCES[...]"),
    ("obj.__dict__['x'] = 1", "dunder_dict", "obj.__dict__[...] written"),
    ("obj.__dict__.update(values)", "dunder_dict", "obj.__dict__.update"),
    ("obj.__dict__ = {}", "dunder_dict", "obj.__dict__ assigned"),
    ("globals()['check_close'] = ok", "dunder_dict", "globals()[...] written"),
    ("globals().update(check_close=ok)", "dunder_dict", "globals().update"),
    ("vars(np)['allclose'] = ok", "dunder_dict", "vars(np)"),
    ("ns = np.__dict__", "dunder_dict", "np.__dict__"),
    ("f.__code__ = g.__code__", "function_internals", "__code__"),
    ("g = f.__globals__", "function_internals", "__globals__"),
    ("cells = f.__closure__", "function_internals", "__closure__"),
    ("f.__defaults__ = (1,)", "function_internals", "__defaults__"),
    ("f.__kwdefaults__ = {}", "function_internals", "__kwdefaults__"),
    ("code = getattr(f, '__code__')", "function_internals", "__code__"),
    ("import types\ng = types.FunctionType(code, {})", "code_objects", "types.FunctionType"),
    ("import types\nc = types.CodeType(*args)", "code_objects", "types.CodeType"),
    ("from types import FunctionType\ng = FunctionType(code, {})", "code_objects", "FunctionType"),
    ("subclasses = object.__subclasses__()", "introspection", "__subclasses__"),
    # comparison and conversion dunders
    ("x.__class__ = Fake", "class_assign", "__class__ assigned"),
    ("setattr(x, '__class__', Fake)", "class_assign", "__class__"),
    ("class A:\n    __eq__ = lambda self, other: True", "class_dunder", "A.__eq__"),
    ("A = type('A', (), {'__eq__': lambda s, o: True})", "class_dunder", "'__eq__' named in a string"),
    ("setattr(A, '__eq__', always)", "class_dunder", "__eq__"),
    # dynamic code and imports
    ("exec(code)", "dynamic_code", "exec(code)"),
    ("eval(expr)", "dynamic_code", "eval(expr)"),
    ("compile(src, 'f', 'exec')", "dynamic_code", "compile(src)"),
    ("e = eval", "dynamic_code", "eval used other than called"),
    ("x = eval('1 + 1' + s)", "dynamic_code", "eval"),
    ("import builtins\nbuiltins.exec(code)", "dynamic_code", "builtins.exec"),
    ("exec('import os\\nos.system(\"ls\")')", "process", "os.system"),
    ("exec('''\nx = 1\nimport subprocess\n''')", "subprocess", "import subprocess"),
    ("%time exec(code)", "dynamic_code", "exec"),
    ("%timeit -n 3 -r 2 exec(code)", "dynamic_code", "exec"),
    ("%%time\nx = 1\nimport subprocess", "subprocess", "import subprocess"),
    ("%%capture out\nnp.allclose = ok", "module_patch", "np.allclose"),
    ("m = __import__(name)", "dynamic_import", "__import__ of a computed name"),
    ("m = importlib.import_module(name)", "dynamic_import", "importlib.import_module"),
    ("importlib.reload(helpers.checks)", "dynamic_import", "importlib.reload"),
    ("import importlib.util\nspec = importlib.util.spec_from_file_location('x', p)", "dynamic_import",
     "importlib.util"),
    ("m = __import__('subprocess')", "subprocess", "subprocess"),
    ("getattr(sys, name)", "dynamic_attr", "getattr(sys, ...)"),
    ("getattr(get_ipython(), name)", "dynamic_attr", "getattr(get_ipython(), ...)"),
    # native code, processes, threads, hooks
    ("import ctypes", "native", "ctypes"),
    ("from ctypes import CDLL", "native", "ctypes"),
    ("from cffi import FFI", "native", "cffi"),
    ("os._exit(0)", "process", "os._exit"),
    ("os.kill(os.getppid(), 9)", "process", "os.kill"),
    ("pid = os.fork()", "process", "os.fork"),
    ("os.system('ls')", "process", "os.system"),
    ("os.execv('/bin/sh', ['sh'])", "process", "os.execv"),
    ("os.spawnlp(os.P_NOWAIT, 'sh', 'sh')", "process", "os.spawnlp"),
    ("out = os.popen('ls').read()", "process", "os.popen"),
    ("from os import system\nsystem('ls')", "process", "os.system"),
    ("import subprocess", "subprocess", "subprocess"),
    ("subprocess.run(['ls'])", "subprocess", "subprocess"),
    ("import pty", "subprocess", "pty"),
    ("import signal", "signal", "signal"),
    ("from signal import signal, SIGINT, SIG_IGN\nsignal(SIGINT, SIG_IGN)", "signal", "signal"),
    ("import threading", "threads", "threading"),
    ("import _thread", "threads", "_thread"),
    ("import multiprocessing as mp", "threads", "multiprocessing"),
    ("from concurrent.futures import ThreadPoolExecutor", "threads", "concurrent.futures"),
    ("import concurrent.futures", "threads", "concurrent.futures"),
    ("import torch.multiprocessing as mp", "threads", "torch.multiprocessing"),
    ("import atexit\natexit.register(f)", "atexit", "atexit"),
    ("import gc\nrefs = gc.get_referrers(check_close)", "gc", "gc.get_referrers"),
    ("import gc\nobjs = gc.get_objects()", "gc", "gc.get_objects"),
    ("import inspect\nframe = inspect.currentframe()", "frames", "inspect.currentframe"),
    ("import inspect\nstack = inspect.stack()", "frames", "inspect.stack"),
    ("caller = frame.f_back", "frames", "f_back"),
    ("names = frame.f_locals", "frames", "f_locals"),
    ("g = frame.f_globals", "frames", "f_globals"),
    ("f = tb.tb_frame", "frames", "tb_frame"),
    ("import pickle\nobj = pickle.loads(blob)", "unpickle", "pickle.loads"),
    ("import marshal\ncode = marshal.loads(blob)", "unpickle", "marshal.loads"),
    ("import dill\nobj = dill.loads(blob)", "unpickle", "dill.loads"),
    ("import weakref\nweakref.finalize(obj, f)", "weakref", "weakref"),
    ("import socket", "network", "socket"),
    ("s = socket.socket()", "network", "socket"),
    # files
    ("data = open('/proc/self/environ').read()", "system_paths", "/proc/self/environ"),
    ("tty = open('/dev/tty', 'w')", "system_paths", "/dev/tty"),
    ("open('/sys/kernel/mm/x').read()", "system_paths", "/sys/kernel"),
    ("pids = os.listdir('/proc')", "system_paths", "/proc"),
    ("open('/tmp/out.txt', 'w').write('x')", "file_write", "writes an absolute path"),
    ("open('/home/me/x', mode='a')", "file_write", "writes an absolute path"),
    ("with open('~/x', 'wb') as f:\n    pass", "file_write", "writes an absolute path"),
    ("pathlib.Path('/etc/x').write_text('')", "file_write", "writes an absolute path"),
    ("open('helpers/checks.py', 'w').write('')", "file_write", "writes a Python module"),
    ("fd = os.open('/etc/x', os.O_WRONLY | os.O_CREAT)", "file_write", "writes an absolute path"),
    ("shutil.copy('mine.py', '/work/helpers/checks.py')", "file_write", "writes an absolute path"),
    ("os.symlink('/etc/passwd', 'x')", "filesystem", "os.symlink"),
    ("os.mkfifo('pipe')", "filesystem", "os.mkfifo"),
    ("os.chmod('f', 0o777)", "filesystem", "os.chmod"),
    ("shutil.rmtree('data')", "filesystem", "shutil.rmtree"),
    # the kernel protocol
    ("import zmq", "kernel_protocol", "zmq"),
    ("from jupyter_client import BlockingKernelClient", "kernel_protocol", "jupyter_client"),
    ("from ipykernel.comm import Comm", "kernel_protocol", "ipykernel"),
    ("import comm", "kernel_protocol", "comm"),
    ("from IPython.display import publish_display_data", "kernel_protocol", "publish_display_data"),
    ("import IPython\nIPython.display.publish_display_data({'text/plain': 'ok'})", "kernel_protocol",
     "publish_display_data"),
    # the grader and the course's files
    ("import sqlite3", "grader_access", "sqlite3"),
    ("from nbgrader.api import Gradebook", "grader_access", "nbgrader"),
    ("db = 'grading/gradebook.db'", "grader_access", "gradebook"),
    ("root = pathlib.Path(helpers.__file__).parent", "course_files", "helpers.__file__"),
]


@pytest.mark.parametrize("source,kind,detail", CONSTRUCTS, ids=[c[0][:50] for c in CONSTRUCTS])
def test_each_construct_is_flagged(source, kind, detail):
    findings = _scan(source)
    hits = [f for f in findings if f.kind == kind]
    assert hits, f"no {kind} finding for {source!r}: {[str(f) for f in findings]}"
    assert detail in hits[0].what, hits[0].what
    assert hits[0].what.startswith(KINDS[kind])
    assert hits[0].cell == 2 and hits[0].grade_id == "task_code"


DUNDERS = ["__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__bool__", "__float__", "__int__",
           "__index__", "__array__", "__array_ufunc__", "__array_function__", "__torch_function__",
           "__getattr__", "__getattribute__", "__instancecheck__", "__subclasscheck__"]


@pytest.mark.parametrize("dunder", DUNDERS)
def test_comparison_and_conversion_dunders_in_a_student_class_are_flagged(dunder):
    source = f"class Answer:\n    def __init__(self, v):\n        self.v = v\n\n    def {dunder}(self, *args):\n" \
             f"        return True\n"
    findings = _scan(source)
    assert [(f.kind, f.what, f.line) for f in findings] == \
        [("class_dunder", f"{KINDS['class_dunder']}: Answer.{dunder}", 5)]


def test_the_kinds_flagged_are_distinct_and_readable():
    kinds = {kind for _, kind, _ in CONSTRUCTS} | {"class_dunder", "parse_error", "forbidden"}  # forbidden: below
    assert kinds == set(KINDS)
    assert len(set(KINDS.values())) == len(KINDS)


# ---------------------------------------------------------------- no false positives

ORDINARY = '''\
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from collections import defaultdict
import re, json, time, itertools, functools

class Net(nn.Module):
    """A small network."""

    def __init__(self, n, hidden=8):
        super().__init__()
        self.fc = nn.Linear(n, hidden)
        self.out = nn.Linear(hidden, 2)
        self.cache = {}

    def forward(self, x):
        return self.out(F.relu(self.fc(x)))

    def __repr__(self):
        return f"Net({self.fc.in_features})"

    def __len__(self):
        return 2

model = Net(4)
model.eval()
model.train(False)
teacher = Net(4).eval()
with torch.no_grad():
    y = model(torch.zeros(1, 4))
fc = getattr(model, "fc")
name = "out"
layer = getattr(model, name)
setattr(model, "extra", nn.Linear(4, 4))
setattr(model, name, nn.Linear(8, 2))
values = [i * i for i in range(10) if i % 2]
table = {k: v for k, v in zip("abc", range(3))}
print(f"{values[0]:.3f} {np.mean(values)} {table!r}")
model.cache["x"] = y
self_like = type("Point", (), {"x": 1})
torch.backends.cudnn.deterministic = True
torch.backends.cudnn.benchmark = False
os.environ["OMP_NUM_THREADS"] = "1"
plt.rcParams["figure.figsize"] = (4, 3)
np.random.seed(0)
torch.manual_seed(0)
torch.set_num_threads(1)
compiled = torch.compile(model)
pattern = re.compile(r"a+")
total = eval("1 + 2")
exec("z = 3")
with open("results.json", "w") as fh:
    json.dump(table, fh)
with open(os.devnull, "w") as sink:
    print("quiet", file=sink)
data = open("/dev/null").read()
start = time.perf_counter()
def scale(signal, factor=2):
    return signal * factor
def evaluate(eval_model, loader=()):
    eval_model.eval()
    return sum(1 for _ in loader)
accuracy = evaluate(model)
state = {k: v.clone() for k, v in model.state_dict().items()}
assert np.allclose(np.ones(3), 1.0)
grads = [p.grad for p in model.parameters()]
lengths = sorted(values, key=lambda v: -v)
counts = defaultdict(int)
@functools.lru_cache(maxsize=None)
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
'''


def test_ordinary_lab_code_raises_nothing():
    assert _scan(ORDINARY) == []


@pytest.mark.parametrize("source", [
    "%matplotlib inline",
    "%time z = np.ones(3)",
    "%timeit -n 3 np.ones(3)",
    "%%time\nz = np.ones(3)",
    "%%capture output\nz = np.ones(3)",
    "%%capture --no-stderr output\nz = np.ones(3)",
    "%%timeit -n 2 x = np.ones(3)\nz = x + 1",
    "%load_ext autoreload\n%autoreload 2",
    "%config InlineBackend.figure_format = 'retina'",
    "get_ipython().run_line_magic('matplotlib', 'inline')",
    "from IPython.display import display, HTML, clear_output\ndisplay(HTML('<b>x</b>'))\nclear_output()",
    "import IPython\nIPython.display.display(1)",
    "print(eval('1 + 1'))",
])
def test_harmless_magics_and_display_raise_nothing(source):
    assert _scan(source) == []


def _labs():
    return COURSE.labs()


def _solution_and_release(lab):
    solution = nbformat.read(COURSE.solution_notebook(lab), as_version=4)
    release = nbformat.read(COURSE.release_notebook(lab), as_version=4)
    return solution, release


def _solution_cells(nb):
    return [i for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")]


@pytest.mark.parametrize("lab", _labs())
def test_no_finding_on_any_solution_cell_of_a_real_lab(lab):
    """The solution notebook scanned against its release: every solution cell
    is scanned, and nothing is flagged (the locked test cells, hidden tests
    and all, are the instructor's and not scanned)."""
    solution, release = _solution_and_release(lab)
    sols = _solution_cells(solution)
    assert sols
    assert cells_to_scan(solution, release) == sols
    assert [str(f) for f in scan_notebook(solution, release)] == []


@pytest.mark.parametrize("lab", _labs())
def test_a_perfect_submission_raises_nothing(lab):
    """The release with every solution cell filled in from the solution
    notebook (what a perfect student hands in): exactly the solution cells are
    scanned, and there is no finding at all."""
    solution, release = _solution_and_release(lab)
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in solution.cells
               if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")}
    submitted = copy.deepcopy(release)
    for cell in submitted.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in answers:
            cell.source = answers[gid]
    assert cells_to_scan(submitted, release) == _solution_cells(submitted)
    assert [str(f) for f in scan_notebook(submitted, release)] == []


# What each attack of tests/adversarial/attacks.py must show a reviewer: the
# kinds named here at least. Attacks with none (filling the disk, flooding
# output, scripts in outputs, tags) are stopped by limits and sanitising, not
# by the scan.
ATTACK_KINDS = {
    "custom_exc": {"ipython_hook"}, "no_traceback": {"ipython_hook"}, "ast_transformer": {"ipython_hook"},
    "input_transformer": {"ipython_hook"}, "post_run_hook": {"ipython_hook"}, "iopub_filter": {"ipython_hook"},
    "fake_checks_module": {"import_system", "module_patch"}, "import_hook": {"import_system"},
    "code_objects": {"function_internals"}, "patch_numpy": {"module_patch"}, "settrace": {"trace"},
    "background_thread": {"threads"}, "lying_objects": {"class_dunder"},
    "execute_result_first": {"kernel_protocol"}, "forge_executor": {"process", "signal"},
    "links_and_fifos": {"filesystem"}, "leak_probe": {"network", "system_paths", "course_files"},
    "forked_memory": {"process"}, "fork_bomb": {"process"},
}


@pytest.mark.parametrize("name", sorted(ATTACK_KINDS))
def test_the_attacks_on_file_are_flagged(name):
    """Each attack the adversarial tests grade, pasted into the first solution
    cell of lab 00, is flagged with the kinds a reviewer must see."""
    from adversarial.attacks import ATTACKS
    release = nbformat.read(COURSE.release_notebook("lab00_basics"), as_version=4)
    nb = copy.deepcopy(release)
    cell = next(c for c in nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution"))
    cell.source = ATTACKS[name].code.replace("{names}", "['conv2d_output_size']") + "\n" + cell.source
    found = {f.kind for f in scan_notebook(nb, release)}
    assert ATTACK_KINDS[name] <= found, (name, found)


def test_every_attack_that_code_can_show_is_listed():
    from adversarial.attacks import ATTACKS
    unscanned = {"skip_tags", "disk_filler", "output_flood", "script_injection", "escape_codes"}
    assert set(ATTACKS) - unscanned == set(ATTACK_KINDS)


# ---------------------------------------------------------------- (c) what is scanned


def test_unchanged_locked_and_release_cells_are_not_scanned():
    release = _release(_cell("import subprocess\nsys.settrace(None)"),             # instructor code, no grade_id
                       _cell("os.system('true')", "locked_demo", locked=True))
    release.cells[0].source += "import threading\n"
    untouched = copy.deepcopy(release)
    assert cells_to_scan(untouched, release) == [2]     # the solution cell only (still the stub)
    assert scan_notebook(untouched, release) == []
    # Whitespace at line ends or around the cell is no change.
    untouched.cells[5].source = "os.system('true')   \n\n"
    assert scan_notebook(untouched, release) == []


def test_edited_and_added_cells_are_scanned():
    release = _release(_cell("print('demo')"), _cell("# YOUR CODE HERE", "other_code", solution=True))
    nb = copy.deepcopy(release)
    nb.cells.insert(3, _cell("x = 1\nimport socket"))                          # a cell the student added
    nb.cells[5].source = "print('demo')\nimport signal"                       # edited cell without grade_id
    nb.cells[6].metadata["nbgrader"]["solution"] = False                      # a solution cell, flag removed
    nb.cells[6].source = "import pty"
    nb.cells.append(_cell("import atexit", "made_up_id"))                       # an id the release lacks
    findings = scan_notebook(nb, release)
    assert [(f.cell, f.kind, f.line, f.grade_id) for f in findings] == [
        (3, "network", 2, None), (5, "signal", 2, None), (6, "subprocess", 1, "other_code"),
        (7, "atexit", 1, "made_up_id")]


def test_locked_cells_are_the_instructors_unless_duplicated():
    """The grader restores a locked cell from the gradebook (hidden tests
    included) before anything runs, so its source, edited or not, is never
    student code; copies of a locked id are (nbgrader keeps one)."""
    release = _release()
    nb = copy.deepcopy(release)
    nb.cells[3].source += "\n### BEGIN HIDDEN TESTS\ndist.all_reduce = logged\n### END HIDDEN TESTS"
    assert cells_to_scan(nb, release) == [2]
    nb.cells[0].source = "import ctypes\n" + SETUP                           # an edited locked cell: restored
    nb.cells[0].metadata["nbgrader"]["locked"] = False
    nb.cells[0].metadata["nbgrader"]["solution"] = True
    assert scan_notebook(nb, release) == []
    nb.cells.append(_cell("import ctypes", "setup", locked=True))              # a second copy of the id
    findings = scan_notebook(nb, release)
    assert [(f.cell, f.kind) for f in findings] == [(0, "native"), (4, "native")]
    copied = copy.deepcopy(release)
    copied.cells.append(copy.deepcopy(release.cells[3]))                       # an unchanged copy: nothing new
    assert scan_notebook(copied, release) == []


def test_solution_cells_are_always_scanned_even_if_unchanged():
    release = _release()
    release.cells[2].source = "import subprocess  # the stub itself"
    assert [f.kind for f in scan_notebook(copy.deepcopy(release), release)] == ["subprocess"]


def test_each_kind_once_per_cell_first_line_sorted():
    source = "x = 1\nnp.sum = f\nnp.mean = g\nimport socket\nimport socket as s2\n"
    release = _release(_cell("y = 2", "other_code", solution=True))
    nb = _submit(release, source)
    nb.cells[4].source = "import ctypes\nnp.max = h"
    findings = scan_notebook(nb, release)
    assert [(f.cell, f.kind, f.line) for f in findings] == [
        (2, "module_patch", 2), (2, "network", 4), (4, "native", 1), (4, "module_patch", 2)]
    assert "np.sum" in findings[0].what


def test_finding_text():
    f = Finding(3, "task_1_1_code", "patches an imported module: np.allclose assigned", 2, "module_patch")
    assert str(f) == "needs review: patches an imported module: np.allclose assigned (cell 3, task_1_1_code, line 2)"
    assert str(Finding(4, None, "subprocess: import subprocess", None)) == \
        "needs review: subprocess: import subprocess (cell 4)"
    with pytest.raises(Exception):
        f.cell = 1  # frozen


def test_a_lab_may_allow_a_kind_in_its_release_metadata():
    source = "import threading\nimport socket"
    assert {f.kind for f in _scan(source)} == {"threads", "network"}
    release = _release(allow=["threads"])
    assert {f.kind for f in _scan(source, release)} == {"network"}
    # The student's own copy of the metadata counts for nothing.
    release = _release()
    nb = _submit(release, source)
    nb.metadata["effml"] = {"scan_allow": list(KINDS)}
    assert {f.kind for f in scan_notebook(nb, release)} == {"threads", "network"}


def test_shadowed_names_are_not_modules_but_builtins_stay_flagged():
    assert _scan("def f(signal, inspect):\n    return signal.mean() + inspect.stack")  == []
    # A parameter called eval somewhere does not hide the builtin elsewhere.
    assert [f.kind for f in _scan("def g(eval):\n    return eval\nexec(code)")] == ["dynamic_code"]


def test_without_ipython_the_fallback_still_sees_magics(monkeypatch):
    monkeypatch.setattr(scan_module, "_TRANSFORMER", False)
    assert [f.kind for f in _scan("!ls\nx = 1")] == ["shell"]
    assert [f.kind for f in _scan("%%bash\nls")] == ["shell"]
    assert _scan("%matplotlib inline\nx = 1") == []


# ---------------------------------------------------------------- (d) malformed code and notebooks


@pytest.mark.parametrize("source,line", [
    ("def f(:\n    pass", 1),
    ("x = 1\ny = (\n", 2),
    ("x = 1\n\treturn 3\n  y", 2),
    ("x = 1\x00", 1),
    ("print('unterminated", 1),
    ("(" * 300 + ")" * 300, 1),
    ("x = " + "-" * 200000 + "1", 1),
    ("x" + ".y" * 100000, 1),
])
def test_malformed_code_gives_a_finding_not_an_exception(source, line):
    start = time.monotonic()
    findings = _scan(source)
    assert time.monotonic() - start < 30
    if findings:  # the deeply nested ones may parse, then they are simply too deep to matter
        assert findings[0].kind == "parse_error" and findings[0].line == line
        assert findings[0].what.startswith("code that does not parse")


def test_a_parse_error_does_not_hide_other_cells():
    release = _release(_cell("y = 2", "other_code", solution=True))
    nb = _submit(release, "def f(:")
    nb.cells[4].source = "import socket"
    assert [(f.cell, f.kind) for f in scan_notebook(nb, release)] == [(2, "parse_error"), (4, "network")]


def test_malformed_notebooks_do_not_raise():
    release = _release()
    nb = copy.deepcopy(release)
    nb.cells[2].metadata["nbgrader"] = "not a dict"
    nb.cells.append(nbformat.from_dict({"cell_type": "code", "metadata": {}, "outputs": [],
                                        "source": ["import ", "socket\n"]}))   # lines, as in the file format
    nb.cells.append(nbformat.from_dict({"cell_type": "code", "metadata": {"nbgrader": {"grade_id": 7}},
                                        "source": None, "outputs": []}))
    nb.cells.append(nbformat.from_dict({"cell_type": "code", "metadata": None, "source": "import pty"}))
    findings = scan_notebook(nb, release)
    assert {f.kind for f in findings} == {"network", "subprocess"}
    assert scan_notebook(nbformat.v4.new_notebook(), release) == []
    assert scan_notebook(nbformat.from_dict({"cells": "nonsense", "metadata": {}}), release) == []
    odd_release = nbformat.from_dict({"cells": [], "metadata": {"effml": {"scan_allow": "threads"}}})
    assert [f.kind for f in scan_notebook(_submit(release, "import threading"), odd_release)] == ["threads"]


@pytest.mark.parametrize("code", [
    "from helpers.kernels.triton.fake_quant import quantize_dequantize as fq\n",
    "from helpers.kernels import triton as tk\ny = tk.fake_quant.quantize_dequantize(x, 0.1, 0, 4, signed=True)[0]\n",
    "import torch as T\ny = T.fake_quantize_per_tensor_affine(x, 0.1, 0, -8, 7)\n",
    "from torch.ao.quantization import FakeQuantize\n",
])
def test_what_answers_a_task_for_the_student_is_flagged_in_that_lab_only(code):
    """Lab 03 asks for fake quantization with an STE: its release forbids the
    helpers' Triton kernel and torch's own fake quantization (`scan_forbid`);
    other labs may use them."""
    def flagged(lab):
        release = nbformat.read(COURSE.release_notebook(lab), as_version=4)
        nb = copy.deepcopy(release)
        cell = next(c for c in nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution"))
        cell.source = code + cell.source
        return {f.kind for f in scan_notebook(nb, release)}

    assert "forbidden" in flagged("lab03_qat_kd")
    assert "forbidden" not in flagged("lab00_basics")
