"""Run a submission's executor and kernel in a sandbox.

bubblewrap (Debian package ``bubblewrap``): read-only root, a private /tmp,
no network (loopback only, enough for the kernel's sockets), its own PID
namespace so everything it started dies with it, and the course's secrets
(hidden tests in solutions/, the gradebook and other students' files in the
grading work directory, the submissions folder) replaced by empty folders.
Resource limits (memory, CPU time, processes, file size, open files) are set
with ``prlimit`` in both modes. Without bubblewrap, ``rlimits`` applies only
the limits, with a warning: no isolation.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

SANDBOX_UID = 1000  # an unprivileged uid inside the user namespace
# RLIMIT_NPROC does not hold a process tree started by root (measured here: 100
# forks under a limit of 32 inside bwrap), so where the cgroup v1 pids
# controller is writable each submission gets its own pids cgroup instead.
PIDS_CGROUP = Path("/sys/fs/cgroup/pids")


@dataclass
class Limits:
    memory_bytes: int = int(os.environ.get("EFFML_MEMORY_LIMIT", 6 * 2**30))
    cpu_seconds: int = int(os.environ.get("EFFML_CPU_LIMIT", 3600))
    processes: int = int(os.environ.get("EFFML_PROCESS_LIMIT", 256))
    file_bytes: int = int(os.environ.get("EFFML_FILE_LIMIT", 512 * 2**20))
    open_files: int = 4096


@dataclass
class Sandbox:
    kind: str                          # bwrap | rlimits
    hide: list[Path] = field(default_factory=list)
    keep: list[Path] = field(default_factory=list)  # read-only paths the child needs (course, venv)
    limits: Limits = field(default_factory=Limits)

    def limit_prefix(self) -> list[str]:
        lim = self.limits
        return ["prlimit", f"--data={lim.memory_bytes}", f"--cpu={lim.cpu_seconds}",
                f"--nproc={lim.processes}", f"--fsize={lim.file_bytes}", f"--nofile={lim.open_files}", "--"]

    def _pids_cgroup(self, workdir: Path) -> Path | None:
        if os.geteuid() != 0 or not os.access(PIDS_CGROUP, os.W_OK):
            return None
        group = PIDS_CGROUP / f"effml-{abs(hash(str(workdir))):x}-{os.getpid()}"
        try:
            group.mkdir(exist_ok=True)
            (group / "pids.max").write_text(str(self.limits.processes))
        except OSError:
            return None
        return group

    def release(self, workdir: Path) -> None:
        """Remove the submission's cgroup once everything in it has ended."""
        group = PIDS_CGROUP / f"effml-{abs(hash(str(Path(workdir).resolve()))):x}-{os.getpid()}"
        try:
            group.rmdir()
        except OSError:
            pass

    def __call__(self, cmd: list[str], workdir: Path) -> list[str]:
        workdir = Path(workdir).resolve()
        group = self._pids_cgroup(workdir)
        enter = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(group)] if group else []
        if self.kind == "rlimits":
            return enter + self.limit_prefix() + cmd
        args = enter + ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        # The private /tmp must not hide the course or its interpreter (a CI clone often lives in /tmp).
        for path in sorted({Path(p).resolve() for p in self.keep}):
            if path.is_relative_to("/tmp"):
                args += ["--ro-bind", str(path), str(path)]
        for path in self.hide:
            if path.exists():
                args += ["--tmpfs", str(path.resolve())]
        # Bound after the hiding tmpfs mounts, so a work dir inside a hidden folder is still visible.
        args += ["--bind", str(workdir), str(workdir),
                 "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                 "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
                 "--die-with-parent", "--new-session",
                 "--setenv", "HOME", "/tmp/home",
                 "--setenv", "JUPYTER_RUNTIME_DIR", "/tmp/jupyter-runtime",
                 "--setenv", "JUPYTER_DATA_DIR", "/tmp/jupyter-data",
                 "--setenv", "IPYTHONDIR", "/tmp/ipython",
                 "--setenv", "MPLCONFIGDIR", "/tmp/mpl",
                 "--setenv", "EFFML_CACHE_DIR", "/tmp/effml-cache",
                 "--chdir", str(workdir)]
        return args + self.limit_prefix() + cmd


@functools.lru_cache(maxsize=1)
def _interpreter_paths() -> list[Path]:
    """The venv and the Python it was made from: the sandboxed child runs them."""
    return [Path(sys.prefix), Path(sys.base_prefix)]


def bwrap_works() -> bool:
    """bubblewrap is installed and can create the namespaces we ask for here."""
    if not shutil.which("bwrap"):
        return False
    import tempfile

    keep = _interpreter_paths() + [Path(__file__).resolve().parent.parent]
    with tempfile.TemporaryDirectory() as work:
        probe = Sandbox("bwrap", keep=keep)([sys.executable, "-c", "import autograder; print('ok')"], Path(work))
        try:
            out = subprocess.run(probe, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return False
    return out.returncode == 0 and out.stdout.strip() == "ok"


def _reap_stale_cgroups() -> None:
    """Remove the empty cgroups of grading processes that were killed before cleaning up."""
    if not os.access(PIDS_CGROUP, os.W_OK):
        return
    for group in PIDS_CGROUP.glob("effml-*-*"):
        owner = group.name.rsplit("-", 1)[-1]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            try:
                group.rmdir()
            except OSError:
                pass


def make_sandbox(kind: str, course, extra_hide: list[Path] | None = None) -> Sandbox | None:
    """``auto``: bubblewrap where it works, else resource limits with a
    warning; ``none``: run on the host (trusted notebooks only)."""
    if kind == "none":
        return None
    # Hidden tests, every gradebook and submission folder the course keeps, and the caller's extras.
    hide = [course.solutions, course.workdir, course.root / "grading", course.root / "samples"] + list(extra_hide or [])
    if kind in ("auto", "bwrap"):
        if bwrap_works():
            return Sandbox("bwrap", hide, keep=[course.root] + _interpreter_paths())
        if kind == "bwrap":
            raise SystemExit("bubblewrap is not usable here: install the Debian package `bubblewrap` "
                             "(`make venv` does), or pass --sandbox rlimits")
        warnings.warn("bubblewrap is not installed or not usable: submissions run with resource limits "
                      "only, NOT isolated from the course files or the network. Install `bubblewrap`.",
                      stacklevel=2)
    if not shutil.which("prlimit"):
        raise SystemExit("prlimit (util-linux) is missing: cannot apply resource limits")
    return Sandbox("rlimits", hide)
