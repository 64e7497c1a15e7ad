"""Run a student's kernel, and nothing else, in a sandbox.

The executor (nbclient) and the trusted checks run in the grader; only the
kernel runs here, and it talks to the executor over Unix sockets (ZeroMQ's
``ipc`` transport) in a private run folder, the one host folder it can write.

bubblewrap (Debian package ``bubblewrap``) builds the kernel's world from
nothing: the system's ``/usr`` read-only, the Python environment, the
course's ``helpers`` and ``datasets`` read-only, a size-limited private
``/tmp`` as its home and working folder, generated ``/etc`` files (a
``hosts`` that names the sandbox, so loopback name lookups work), no
network but its own loopback, its own PID/IPC/UTS namespaces, a cleared
environment with a short allow-list, and an unprivileged uid (when the
grader runs as root: the real uid ``nobody`` with no capabilities; else a
user namespace). No ``.git``, ``solutions/``, gradebook, ``/root`` or host
socket is there. Per submission, a memory cgroup caps the kernel and all
its children together and a pids cgroup caps their number; ``prlimit``
caps CPU time, file size and open files per process.

Without bubblewrap, ``rlimits`` applies only the limits, with a warning.
"""
from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

NOBODY = 65534
CGROUP_ROOT = Path("/sys/fs/cgroup")
ENV_ALLOW = ("EFFML_QUICK", "EFFML_SEED", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "TRITON_INTERPRET", "LANG", "TZ")
# /etc entries programs in the kernel read (the dynamic linker, fonts, time zone, MIME types).
ETC_KEEP = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "fonts", "localtime",
            "mime.types", "ssl")


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass
class Limits:
    memory_bytes: int = field(default_factory=lambda: _env_int("EFFML_MEMORY_LIMIT", 6 * 2**30))
    tmp_bytes: int = field(default_factory=lambda: _env_int("EFFML_DISK_LIMIT", 2**30))
    cpu_seconds: int = field(default_factory=lambda: _env_int("EFFML_CPU_LIMIT", 3600))
    processes: int = field(default_factory=lambda: _env_int("EFFML_PROCESS_LIMIT", 256))
    file_bytes: int = field(default_factory=lambda: _env_int("EFFML_FILE_LIMIT", 512 * 2**20))
    open_files: int = 4096


@dataclass
class Sandbox:
    """What the kernel may see and use. Serialisable (``to_json``), since the
    executor child builds the kernel command from it."""
    kind: str                                           # bwrap | rlimits
    keep: list[str] = field(default_factory=list)        # read-only paths the kernel needs
    limits: Limits = field(default_factory=Limits)
    tag: str = ""                                       # names this batch's cgroups and run folders

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Sandbox":
        d = json.loads(text)
        return cls(d["kind"], d["keep"], Limits(**d["limits"]), d.get("tag", ""))

    def name(self) -> str:
        """A fresh name for one jail's cgroups and run folder."""
        return "effml-" + (f"{self.tag}-" if self.tag else "") + uuid.uuid4().hex[:12]

    # -- one kernel

    def session(self, run_dir: Path | None = None) -> "KernelJail":
        """A jail; its run folder (sockets, generated /etc) is ``/tmp/<name>``
        unless given (Unix socket paths must stay short)."""
        return KernelJail(self, Path(run_dir) if run_dir else Path("/tmp") / self.name())


class KernelJail:
    """The sandbox of one kernel: cgroups, the run folder, the command."""

    def __init__(self, sandbox: Sandbox, run_dir: Path):
        self.sandbox, self.run_dir = sandbox, run_dir
        self.groups: dict[str, Path] = {}
        self.uid = NOBODY if os.geteuid() == 0 else os.geteuid()

    def __enter__(self):
        lim = self.sandbox.limits
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=False)
        etc = self.run_dir / "etc"
        etc.mkdir()
        (etc / "hosts").write_text("127.0.0.1\tlocalhost effml\n::1\tlocalhost ip6-localhost\n")
        (etc / "hostname").write_text("effml\n")
        (etc / "nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files\n")
        (etc / "passwd").write_text(f"student:x:{self.uid}:{self.uid}:student:/tmp/home:/bin/sh\n")
        (etc / "group").write_text(f"student:x:{self.uid}:\n")
        for f in etc.iterdir():
            f.chmod(0o644)
        etc.chmod(0o755)
        if os.geteuid() == 0:
            os.chown(self.run_dir, self.uid, self.uid)  # the kernel creates its sockets here
        name = self.run_dir.name if self.run_dir.name.startswith("effml-") else self.sandbox.name()
        for controller, settings in (("memory", {"memory.limit_in_bytes": lim.memory_bytes,
                                                  "memory.memsw.limit_in_bytes": lim.memory_bytes}),
                                     ("pids", {"pids.max": lim.processes})):
            group = _make_cgroup(controller, name, settings)
            if group:
                self.groups[controller] = group
        return self

    def __exit__(self, *exc):
        for group in self.groups.values():
            _empty_and_remove_cgroup(group)
        shutil.rmtree(self.run_dir, ignore_errors=True)  # never follows links

    def memory_exceeded(self) -> bool:
        group = self.groups.get("memory")
        if not group:
            return False
        try:
            oom = (group / "memory.oom_control").read_text()
            return any(line.split()[-1] != "0" for line in oom.splitlines() if line.startswith("oom_kill "))\
                or int((group / "memory.failcnt").read_text()) > 0 and "under_oom 1" in oom
        except (OSError, ValueError, IndexError):
            return False

    def wrap(self, cmd: list[str]) -> list[str]:
        """``cmd`` (the kernel) as it runs in this jail."""
        lim = self.sandbox.limits
        enter = []
        if self.groups:
            script = "; ".join(f"echo $$ > {shlex.quote(str(g / 'cgroup.procs'))}" for g in self.groups.values())
            enter = ["sh", "-c", script + '; exec "$@"', "effml-enter"]
        nproc = [] if "pids" in self.groups else [f"--nproc={lim.processes}"]
        prlimit = ["prlimit", f"--cpu={lim.cpu_seconds}", f"--fsize={lim.file_bytes}",
                   f"--nofile={lim.open_files}", *nproc]
        if self.sandbox.kind == "rlimits":
            return enter + prlimit + ["--"] + cmd
        if "memory" not in self.groups:  # no cgroup: at least cap each process
            prlimit.append(f"--data={lim.memory_bytes}")
        return enter + prlimit + ["--"] + self._bwrap() + ["--"] + self._drop() + cmd

    def _drop(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]

    def _bwrap(self) -> list[str]:
        lim = self.sandbox.limits
        args = ["bwrap", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--hostname", "effml", "--die-with-parent", "--new-session",
                "--clearenv"]
        if os.geteuid() != 0:
            args += ["--unshare-user", "--uid", str(self.uid), "--gid", str(self.uid)]
        args += ["--ro-bind", "/usr", "/usr"]
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            p = Path(top)
            if p.is_symlink():
                args += ["--symlink", os.readlink(p), top]
            elif p.is_dir():
                args += ["--ro-bind", top, top]
        args += ["--perms", "0755", "--dir", "/etc"]
        for name in ETC_KEEP:
            if Path("/etc", name).exists():
                args += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
        for name in ("hosts", "hostname", "nsswitch.conf", "passwd", "group"):
            args += ["--ro-bind", str(self.run_dir / "etc" / name), f"/etc/{name}"]
        args += ["--proc", "/proc", "--dev", "/dev",  # POSIX semaphores (multiprocessing, joblib) need /dev/shm
                 "--perms", "01777", "--size", str(lim.tmp_bytes), "--tmpfs", "/dev/shm"]
        if Path("/sys/devices/system/cpu").is_dir():  # CPU counts for OpenMP/BLAS
            # Readable parents: gloo lists /sys/bus/pci/devices and tolerates ENOENT, not EACCES.
            for d in ("/sys", "/sys/devices", "/sys/devices/system"):
                args += ["--perms", "0755", "--dir", d]
            args += ["--ro-bind", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]
        args += ["--perms", "01777", "--size", str(lim.tmp_bytes), "--tmpfs", "/tmp"]
        keep = [p for p in sorted({str(Path(p).resolve()) for p in self.sandbox.keep}) if Path(p).exists()]
        # bwrap makes missing parents mode 0700 (root's): the kernel's uid must traverse them.
        parents = sorted({str(a) for p in keep + [str(self.run_dir)] for a in Path(p).parents
                          if str(a) not in ("/", "/tmp", "/usr")}, key=lambda a: a.count("/"))
        for parent in parents:
            args += ["--perms", "0755", "--dir", parent]
        for path in keep:
            args += ["--ro-bind", path, path]
        args += ["--bind", str(self.run_dir), str(self.run_dir),
                 "--perms", "01777", "--dir", "/tmp/home", "--perms", "01777", "--dir", "/tmp/work",
                 "--chdir", "/tmp/work"]
        env = {"HOME": "/tmp/home", "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
               "TMPDIR": "/tmp", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "PYTHONNOUSERSITE": "1",
               "JUPYTER_RUNTIME_DIR": "/tmp/home/.jupyter-runtime", "JUPYTER_DATA_DIR": "/tmp/home/.jupyter",
               "IPYTHONDIR": "/tmp/home/.ipython", "MPLCONFIGDIR": "/tmp/home/.mpl",
               "EFFML_CACHE_DIR": "/tmp/home/.effml-cache", "XDG_CACHE_HOME": "/tmp/home/.cache",
               "TRITON_CACHE_DIR": "/tmp/home/.triton", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.update({k: os.environ[k] for k in ENV_ALLOW if k in os.environ})
        for key, value in env.items():
            args += ["--setenv", key, value]
        return args


def _make_cgroup(controller: str, name: str, settings: dict) -> Path | None:
    base = CGROUP_ROOT / controller
    if os.geteuid() != 0 or not os.access(base, os.W_OK):
        return None
    group = base / name
    try:
        group.mkdir()
    except OSError:
        return None
    for key, value in settings.items():
        try:
            (group / key).write_text(str(value))
        except OSError:
            if key == "memory.limit_in_bytes" or key == "pids.max":
                _remove_cgroup(group)
                return None
    return group


def _remove_cgroup(group: Path) -> None:
    try:
        group.rmdir()
    except OSError:
        pass


def _empty_and_remove_cgroup(group: Path, wait_s: float = 10.0) -> None:
    """Kill what is left in the group (a kernel's forked children outlive it
    for a moment) and remove it once the kernel has reaped them."""
    import signal
    import time

    deadline = time.monotonic() + wait_s
    while True:
        try:
            pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            group.rmdir()
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)


def sweep(tag: str) -> None:
    """At the end of a batch: nothing of its jails stays behind (cgroups, run folders)."""
    if not tag:
        return
    for controller in ("memory", "pids"):
        for group in (CGROUP_ROOT / controller).glob(f"effml-{tag}-*"):
            _empty_and_remove_cgroup(group)
    for run_dir in Path("/tmp").glob(f"effml-{tag}-*"):
        if not run_dir.is_symlink():
            shutil.rmtree(run_dir, ignore_errors=True)


STALE_CGROUP_S = 600


def reap_stale_cgroups() -> None:
    """Remove empty cgroups that killed grading runs left behind. Only old
    ones: a cgroup another batch (or test process) made a moment ago is empty
    until its kernel enters it, and removing it then fails that kernel's start."""
    now = time.time()
    for controller in ("memory", "pids"):
        base = CGROUP_ROOT / controller
        if os.access(base, os.W_OK):
            for group in base.glob("effml-*"):
                try:
                    if now - group.stat().st_mtime < STALE_CGROUP_S:
                        continue
                except OSError:
                    continue
                _remove_cgroup(group)  # fails, harmlessly, while processes remain


@functools.lru_cache(maxsize=1)
def _interpreter_paths() -> list[str]:
    """The venv and the Python it was made from: the kernel runs them."""
    return sorted({str(Path(sys.prefix).resolve()), str(Path(sys.base_prefix).resolve())})


def kernel_keep(course_root: Path) -> list[str]:
    """What a kernel needs of the course: the environment, ``helpers`` and
    the checkpoints in ``datasets`` (not the solutions, the gradebook, .git)."""
    root = Path(course_root).resolve()
    return _interpreter_paths() + [str(root / "helpers"), str(root / "datasets")]


@functools.lru_cache(maxsize=4)
def bwrap_problem(course_root: str | None = None) -> str:
    """Why bubblewrap cannot build the jail here ("" when it can): a jailed
    ``import helpers`` is tried, twice before giving up (a busy machine)."""
    if not shutil.which("bwrap") or not shutil.which("prlimit"):
        return "bwrap or prlimit is not installed"
    import tempfile

    root = Path(course_root) if course_root else Path(__file__).resolve().parent.parent
    sandbox = Sandbox("bwrap", keep=kernel_keep(root))
    problem = ""
    for _ in range(2):
        with tempfile.TemporaryDirectory(prefix="effml-probe-") as tmp:
            # A fresh name: it names the probe's cgroups, and two processes may probe at once.
            with sandbox.session(Path(tmp) / sandbox.name()) as jail:
                cmd = jail.wrap([sys.executable, "-c", "import helpers, os; print('ok', os.getuid())"])
                try:
                    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
                except (OSError, subprocess.TimeoutExpired) as exc:
                    problem = f"the jailed probe failed: {exc}"
                    continue
        if out.returncode == 0 and out.stdout.split()[:1] == ["ok"]:
            return ""
        problem = f"the jailed probe exited {out.returncode}: {(out.stderr or out.stdout).strip()[-300:]}"
        time.sleep(1)
    return problem


def bwrap_works(course_root: str | None = None) -> bool:
    """bubblewrap is installed and can build the jail here."""
    return not bwrap_problem(course_root)


def sandbox_tag(course) -> str:
    """The tag of a course work directory's jails (tests find what a batch left behind)."""
    import hashlib

    return hashlib.sha256(str(Path(course.workdir).resolve()).encode()).hexdigest()[:8]


def make_sandbox(kind: str, course, extra_hide=None) -> Sandbox | None:
    """``auto``: bubblewrap where it works, else resource limits with a
    warning; ``none``: run on the host (trusted notebooks only).
    ``extra_hide`` is accepted for compatibility: the jail shows only what
    it lists, so nothing else needs hiding."""
    if kind == "none":
        return None
    reap_stale_cgroups()
    if kind in ("auto", "bwrap"):
        if bwrap_works(str(course.root)):
            return Sandbox("bwrap", keep=kernel_keep(course.root), tag=sandbox_tag(course))
        if kind == "bwrap":
            raise SystemExit(f"bubblewrap is not usable here ({bwrap_problem(str(course.root))}): install the "
                             "Debian package `bubblewrap` (`make venv` does), or pass --sandbox rlimits")
        warnings.warn(f"bubblewrap is not usable ({bwrap_problem(str(course.root))}): kernels run with resource limits "
                      "only, NOT isolated from the course files or the network. Install `bubblewrap`.",
                      stacklevel=2)
    if not shutil.which("prlimit"):
        raise SystemExit("prlimit (util-linux) is missing: cannot apply resource limits")
    return Sandbox("rlimits", keep=[], tag=sandbox_tag(course))
