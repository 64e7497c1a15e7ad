"""Find the submissions in what an instructor hands to ``effml grade``: a
folder of ``<student>/<lab>.ipynb`` and/or ``<student>.zip`` files, or one
student's folder or zip. Problems are recorded, never raised, so one bad
submission cannot stop a batch."""
from __future__ import annotations

import hashlib
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

_STUDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")


@dataclass
class Submission:
    student: str
    lab: str
    data: bytes | None          # the notebook file as submitted
    origin: str                 # where it came from, for messages
    problem: str = ""           # set when the submission cannot be graded as is

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data or b"").hexdigest()


def _lab_of(name: str, labs: list[str]) -> str | None:
    stem = Path(name).stem
    return stem if stem in labs else None


def _from_zip(student: str, path: Path, labs: list[str], only: str | None) -> list[Submission]:
    try:
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.namelist()
                       if m.endswith(".ipynb") and "__MACOSX" not in m and ".ipynb_checkpoints" not in m]
            found = {}
            for m in members:
                lab = _lab_of(m, labs)
                if lab and (only is None or lab == only) and lab not in found:
                    found[lab] = Submission(student, lab, zf.read(m), f"{path.name}:{m}")
            return list(found.values())
    except (zipfile.BadZipFile, OSError) as exc:
        lab = only or "unknown"
        return [Submission(student, lab, None, str(path), f"the zip file cannot be read ({exc})")]


def collect(path: Path, labs: list[str], only: str | None = None) -> tuple[list[Submission], list[str]]:
    """Return the submissions under ``path`` and warnings about what was skipped."""
    path = Path(path)
    subs: list[Submission] = []
    warnings: list[str] = []
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    entries = [path] if path.is_file() else sorted(path.iterdir())
    for entry in entries:
        if entry.name.startswith("."):
            continue
        student = entry.stem if entry.is_file() else entry.name
        if not _STUDENT.match(student):
            warnings.append(f"skipped {entry.name}: not a usable student id")
            continue
        if entry.is_file() and entry.suffix == ".zip":
            got = _from_zip(student, entry, labs, only)
        elif entry.is_dir():
            got = []
            for nb in sorted(entry.rglob("*.ipynb")):
                if ".ipynb_checkpoints" in nb.parts:
                    continue
                lab = _lab_of(nb.name, labs)
                if lab and (only is None or lab == only):
                    got.append(Submission(student, lab, nb.read_bytes(), str(nb)))
        else:
            warnings.append(f"skipped {entry.name}: expected a student folder or a .zip")
            continue
        if not got:
            expected = f"{only}.ipynb" if only else "a <lab>.ipynb"
            warnings.append(f"{student}: no {expected} found in {entry.name}")
        subs.extend(got)
    return subs, warnings
