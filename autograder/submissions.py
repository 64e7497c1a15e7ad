"""Find the submissions in what an instructor hands to ``effml grade``: a
folder of ``<student>/<lab>.ipynb`` and/or ``<student>.zip`` files, or one
student's folder or zip. Problems are recorded, never raised, so one bad
submission cannot stop a batch.

The grader may run as root on files students made, so collection trusts
nothing below the path it is given:

- symbolic links are never followed (a linked student folder, notebook or
  sub-folder is skipped with a warning), and a notebook is opened with
  ``O_NOFOLLOW | O_NONBLOCK`` relative to its folder's descriptor and must be
  a regular file (a FIFO or a device is never read, and never blocks);
- a notebook above ``EFFML_MAX_NOTEBOOK_BYTES`` (50 MiB) is a submission with
  a problem and no data; reads stop at the limit whatever the size said;
- zips are only ever read into memory, never extracted: members with ``..``,
  absolute names or symlink entries are ignored; the member count, the total
  declared size, each notebook's declared size and compression ratio are
  checked before anything is inflated, and inflating stops at the limit.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

_STUDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
_MAX_STUDENT_ID = 100

MIB = 2**20
DEFAULT_MAX_NOTEBOOK_BYTES = 50 * MIB
MAX_ZIP_TOTAL_BYTES = 200 * MIB       # total declared uncompressed size of a zip
MAX_ZIP_MEMBERS = 10_000
MAX_RATIO = 100                       # compression ratio, for members above RATIO_MIN_BYTES
RATIO_MIN_BYTES = MIB
MAX_FILES_WALKED = 100_000            # entries looked at in one student's folder
MAX_DEPTH = 16                        # folder levels looked into below a student's folder
_CHUNK = MIB
_IGNORED_DIRS = {"__MACOSX", ".ipynb_checkpoints"}


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


def max_notebook_bytes() -> int:
    try:
        value = int(os.environ.get("EFFML_MAX_NOTEBOOK_BYTES", DEFAULT_MAX_NOTEBOOK_BYTES))
    except ValueError:
        return DEFAULT_MAX_NOTEBOOK_BYTES
    return value if value > 0 else DEFAULT_MAX_NOTEBOOK_BYTES


def _size(n: int) -> str:
    if n >= MIB:
        return f"{n // MIB} MiB" if n % MIB == 0 else f"{n / MIB:.1f} MiB"
    return f"{n} bytes"


def _too_big(n: int | None, limit: int, what: str = "the notebook") -> str:
    """``n`` None: the size is not known (reading stopped at the limit)."""
    if n is None:
        return f"{what} is larger than the {_size(limit)} limit"
    return f"{what} is {_size(n)}, above the {_size(limit)} limit"


def _lab_of(name: str, labs: list[str]) -> str | None:
    if not name.endswith(".ipynb"):
        return None
    stem = name[: -len(".ipynb")]
    return stem if stem in labs else None


def _wanted(lab: str | None, only: str | None) -> bool:
    return lab is not None and (only is None or lab == only)


def _usable_id(student: str) -> bool:
    return bool(_STUDENT.match(student)) and set(student) != {"."} and len(student) <= _MAX_STUDENT_ID


# ---------------------------------------------------------------- files


class _NotRegular(Exception):
    """A symlink, FIFO, device, socket or folder where a file was expected."""


def _open_regular(name: str | os.PathLike, dir_fd: int | None = None) -> int:
    """A descriptor for a regular file, never following a symlink and never
    blocking on a FIFO; raises _NotRegular otherwise."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        raise _NotRegular(f"cannot be read ({exc.strerror})") from exc
    if stat.S_ISLNK(st.st_mode):
        raise _NotRegular("a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        raise _NotRegular("not a regular file")
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _NotRegular("a symbolic link") from exc
        raise _NotRegular(f"cannot be read ({exc.strerror})") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # swapped after the check above
        os.close(fd)
        raise _NotRegular("not a regular file")
    return fd


def _read_bounded(read, limit: int) -> bytes | None:
    """Read at most ``limit`` bytes with ``read(n)``; None when there is more
    than that, whatever any header said."""
    parts, total = [], 0
    while True:
        chunk = read(min(_CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(parts)
        total += len(chunk)
        if total > limit:
            return None
        parts.append(chunk)


def _read_notebook(student: str, lab: str, name: str, dir_fd: int | None, origin: str) -> Submission:
    """The notebook ``name`` (in the folder ``dir_fd``); raises _NotRegular."""
    limit = max_notebook_bytes()
    fd = _open_regular(name, dir_fd)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            return Submission(student, lab, None, origin, _too_big(size, limit))
        data = _read_bounded(lambda n: os.read(fd, n), limit)
    except OSError as exc:
        return Submission(student, lab, None, origin, f"the notebook file cannot be read ({exc.strerror})")
    finally:
        os.close(fd)
    if data is None:
        return Submission(student, lab, None, origin, _too_big(None, limit))
    return Submission(student, lab, data, origin)


def _from_folder(student: str, folder: Path, labs: list[str], only: str | None,
                 warnings: list[str]) -> list[Submission]:
    """Every ``<lab>.ipynb`` in the folder and below it, without following links."""
    got: list[Submission] = []
    try:
        _walk(student, folder, labs, only, warnings, got)
    except (OSError, RecursionError) as exc:
        warnings.append(f"{student}: stopped looking in {folder.name}: {exc}")
    return got


def _walk(student: str, folder: Path, labs: list[str], only: str | None, warnings: list[str],
          got: list[Submission]) -> None:
    seen = 0
    walk = os.fwalk(folder, follow_symlinks=False, onerror=lambda exc: warnings.append(
        f"{student}: skipped {exc.filename}: {exc.strerror}"))
    for dirpath, dirnames, filenames, dir_fd in walk:
        rel = Path(dirpath).relative_to(folder)
        if len(rel.parts) >= MAX_DEPTH and dirnames:
            warnings.append(f"{student}: did not look below {folder.name}/{rel}: more than {MAX_DEPTH} levels deep")
            dirnames[:] = []
        keep = []
        for d in sorted(dirnames):
            if d in _IGNORED_DIRS:
                continue
            try:
                st = os.stat(d, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                warnings.append(f"{student}: skipped {folder.name}/{rel / d}: a symbolic link")
                continue
            keep.append(d)
        dirnames[:] = keep
        seen += len(dirnames)
        for f in sorted(filenames):
            seen += 1
            if seen > MAX_FILES_WALKED:
                warnings.append(f"{student}: stopped looking after {MAX_FILES_WALKED} entries in {folder.name}")
                dirnames[:] = []
                return
            lab = _lab_of(f, labs)
            shown = f"{folder.name}/{rel / f}"
            try:
                st = os.stat(f, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                warnings.append(f"{student}: skipped {shown}: a symbolic link")
                continue
            if not _wanted(lab, only):
                continue
            try:
                got.append(_read_notebook(student, lab, f, dir_fd, str(Path(dirpath) / f)))
            except _NotRegular as exc:
                warnings.append(f"{student}: skipped {shown}: {exc}")


# ---------------------------------------------------------------- zips


def _unsafe_member(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if ".." in parts:
        return "a path with '..'"
    if "\x00" in name:
        return "a name with a NUL byte"
    mode = info.external_attr >> 16
    if info.create_system == 3 and stat.S_ISLNK(mode):
        return "a symbolic link"
    return None


def _count_central_directory(f, size: int) -> int | None:
    """The number of entries the zip's central directory really holds (not
    what its end record says), read without building a ZipInfo per entry;
    None when the archive is not a zip (zipfile then says why)."""
    try:
        endrec = zipfile._EndRecData(f)
        if endrec is None:
            return None
        size_cd = endrec[zipfile._ECD_SIZE]
        start = endrec[zipfile._ECD_LOCATION] - size_cd
        if endrec[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:
            start -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
    except (AttributeError, IndexError, OSError, struct.error, zipfile.BadZipFile):
        return None
    if start < 0 or size_cd > size:
        return None
    count, pos = 0, 0
    while pos + 46 <= size_cd and count <= MAX_ZIP_MEMBERS:
        f.seek(start + pos)
        header = f.read(46)
        if len(header) < 46 or header[:4] != b"PK\x01\x02":
            break
        n, m, k = struct.unpack("<HHH", header[28:34])
        pos += 46 + n + m + k
        count += 1
    f.seek(0)
    return count


def _zip_problem(student, path_name, labs, only, problem, names=()) -> list[Submission]:
    """One submission per lab notebook the zip names (or one for the lab asked
    for, else "unknown"), each with the problem."""
    found = {}
    for name in names:
        lab = _lab_of(PurePosixPath(name.replace("\\", "/")).name, labs)
        if _wanted(lab, only) and lab not in found:
            found[lab] = Submission(student, lab, None, f"{path_name}:{name}", problem)
    return list(found.values()) or [Submission(student, only or "unknown", None, path_name, problem)]


def _from_zip(student: str, fd: int, path_name: str, labs: list[str], only: str | None,
              warnings: list[str]) -> list[Submission]:
    """The lab notebooks in the zip open at ``fd`` (which this closes)."""
    limit = max_notebook_bytes()
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_ZIP_TOTAL_BYTES:
            return _zip_problem(student, path_name, labs, only,
                                _too_big(size, MAX_ZIP_TOTAL_BYTES, "the zip file"))
        count = _count_central_directory(f, size)
        if count is not None and count > MAX_ZIP_MEMBERS:
            return _zip_problem(student, path_name, labs, only,
                                f"the zip file holds more than {MAX_ZIP_MEMBERS} members")
        try:
            with zipfile.ZipFile(f) as zf:
                infos = zf.infolist()
                if len(infos) > MAX_ZIP_MEMBERS:
                    return _zip_problem(student, path_name, labs, only,
                                        f"the zip file holds {len(infos)} members, above the limit of "
                                        f"{MAX_ZIP_MEMBERS}")
                total = sum(i.file_size for i in infos)
                if total > MAX_ZIP_TOTAL_BYTES:
                    return _zip_problem(student, path_name, labs, only,
                                        f"the zip file unpacks to {_size(total)}, above the "
                                        f"{_size(MAX_ZIP_TOTAL_BYTES)} limit", [i.filename for i in infos])
                found: dict[str, Submission] = {}
                for info in infos:
                    name = info.filename.replace("\\", "/")
                    parts = PurePosixPath(name).parts
                    if info.is_dir() or any(p in _IGNORED_DIRS for p in parts):
                        continue
                    lab = _lab_of(parts[-1] if parts else "", labs)
                    unsafe = _unsafe_member(info)
                    if unsafe:
                        warnings.append(f"{student}: ignored {path_name}:{info.filename!r}: {unsafe}")
                        continue
                    if not _wanted(lab, only) or lab in found:
                        continue
                    found[lab] = _read_member(zf, info, student, lab, f"{path_name}:{info.filename}", limit)
                return list(found.values())
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError,
                RuntimeError, zlib.error, struct.error) as exc:
            return [Submission(student, only or "unknown", None, path_name, f"the zip file cannot be read ({exc})")]


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, student: str, lab: str, origin: str,
                 limit: int) -> Submission:
    if info.flag_bits & 0x1:
        return Submission(student, lab, None, origin, f"{info.filename} is encrypted in the zip file")
    if info.file_size > limit:
        return Submission(student, lab, None, origin, _too_big(info.file_size, limit))
    if info.file_size > RATIO_MIN_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        ratio = info.file_size / max(info.compress_size, 1)
        return Submission(student, lab, None, origin,
                          f"{info.filename} is compressed {ratio:.0f}:1 in the zip file, above the "
                          f"{MAX_RATIO}:1 limit (a zip bomb?); zip it without compression")
    try:
        with zf.open(info) as member:
            data = _read_bounded(member.read, limit)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError,
            zlib.error) as exc:
        return Submission(student, lab, None, origin, f"{info.filename} cannot be read from the zip file ({exc})")
    if data is None:
        return Submission(student, lab, None, origin, _too_big(None, limit, info.filename))
    return Submission(student, lab, data, origin)


# ---------------------------------------------------------------- collect


def _is_student_folder(folder: Path, labs: list[str]) -> bool:
    """A single student's folder: it holds a ``<lab>.ipynb`` itself, and no
    zips or sub-folders that hold one (which would make it a batch with a
    stray notebook)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return False
    if not any(_lab_of(e.name, labs) for e in entries):
        return False
    for e in entries:
        if e.name.endswith(".zip"):
            return False
        if e.is_dir(follow_symlinks=False) and e.name not in _IGNORED_DIRS:
            try:
                if any(_lab_of(x, labs) for x in os.listdir(e.path)):
                    return False
            except OSError:
                continue
    return True


def _student_entry(entry: Path, student: str, labs: list[str], only: str | None,
                   warnings: list[str]) -> list[Submission] | None:
    """The submissions of one student's folder or zip; None when ``entry`` is
    neither (a warning says why)."""
    try:
        st = os.lstat(entry)
    except OSError as exc:
        warnings.append(f"skipped {entry.name}: {exc.strerror}")
        return None
    if stat.S_ISLNK(st.st_mode):
        warnings.append(f"skipped {entry.name}: a symbolic link")
        return None
    if stat.S_ISDIR(st.st_mode):
        return _from_folder(student, entry, labs, only, warnings)
    if entry.suffix == ".zip":
        try:
            fd = _open_regular(entry)
        except _NotRegular as exc:
            warnings.append(f"skipped {entry.name}: {exc}")
            return None
        return _from_zip(student, fd, entry.name, labs, only, warnings)
    warnings.append(f"skipped {entry.name}: expected a student folder or a .zip")
    return None


def collect(path: Path, labs: list[str], only: str | None = None) -> tuple[list[Submission], list[str]]:
    """Return the submissions under ``path`` and warnings about what was skipped.

    ``path`` (which the instructor names, so it may be a link) is a folder of
    student folders and zips, one student's folder (it holds ``<lab>.ipynb``
    itself) or one student's zip."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    path = path.resolve()
    subs: list[Submission] = []
    warnings: list[str] = []
    if path.is_dir() and not _is_student_folder(path, labs):
        entries = sorted(path.iterdir())
    else:
        entries = [path]
    for entry in entries:
        if entry.name.startswith("."):
            continue
        student = entry.name if entry.is_dir() or entry.suffix != ".zip" else entry.stem
        if not _usable_id(student):
            warnings.append(f"skipped {entry.name}: not a usable student id")
            continue
        got = _student_entry(entry, student, labs, only, warnings)
        if got is None:
            continue
        if not got:
            expected = f"{only}.ipynb" if only else "a <lab>.ipynb"
            warnings.append(f"{student}: no {expected} found in {entry.name}")
        subs.extend(got)
    return subs, warnings
