"""Where things live: the course root (this repository) and the grading
work directory (git-ignored), and the nbgrader CourseDirectory over them."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# What nbgrader must not copy from solutions/<lab>/ into a release: its own
# defaults plus the lab's trusted checks and instructor-only tests.
NEVER_RELEASED = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "grader.py", "test_*.py",
                  "conftest.py", "*.md"]
LAB_ID = re.compile(r"^lab\d\d_[a-z0-9_]+$")
COURSE_CONFIG = "nbgrader_config.py"


def is_course_root(path: Path) -> bool:
    """A course folder holds nbgrader's config and the instructor notebooks."""
    path = Path(path)
    return (path / COURSE_CONFIG).is_file() and (path / "solutions").is_dir()


def find_course_root(start: Path | None = None) -> Path:
    """The course ``effml`` acts on from ``start`` (default: the current
    folder): the first of ``start`` and its parents that holds
    ``nbgrader_config.py`` and a ``solutions/`` folder. Raises
    FileNotFoundError with a one-line message when there is none."""
    start = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if is_course_root(folder):
            return folder
    raise FileNotFoundError(f"not inside a course (no {COURSE_CONFIG} found from {start} upwards); "
                            "pass --course DIR")


def course_root_at(path: Path) -> Path:
    """``path`` checked as a course folder (for ``--course DIR``)."""
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"--course {path}: no such folder")
    if not is_course_root(folder):
        raise FileNotFoundError(f"--course {path}: not a course folder (needs {COURSE_CONFIG} "
                                "and a solutions/ folder)")
    return folder


@dataclass
class Course:
    root: Path = REPO_ROOT
    workdir: Path = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        self.root = Path(self.root).resolve()
        if self.workdir is None:
            self.workdir = Path(os.environ.get("EFFML_WORKDIR", self.root / "grading"))
        self.workdir = Path(self.workdir).resolve()

    # -- paths
    @property
    def solutions(self) -> Path:
        return self.root / "solutions"

    @property
    def labs_dir(self) -> Path:
        return self.root / "labs"

    @property
    def db_path(self) -> Path:
        return self.workdir / "gradebook.db"

    @property
    def db_url(self) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)  # sqlite creates the file, not the folder
        return f"sqlite:///{self.db_path}"

    def submitted(self, student: str, lab: str) -> Path:
        return self.workdir / "submitted" / student / lab

    def autograded(self, student: str, lab: str) -> Path:
        return self.workdir / "autograded" / student / lab

    def feedback_dir(self) -> Path:
        return self.workdir / "feedback"

    def solution_notebook(self, lab: str) -> Path:
        return self.solutions / lab / f"{lab}.ipynb"

    def checks_file(self, lab: str) -> Path:
        """The lab's trusted checks (``autograder.trusted``); never released."""
        return self.solutions / lab / "grader.py"

    def release_notebook(self, lab: str) -> Path:
        return self.labs_dir / lab / f"{lab}.ipynb"

    def labs(self) -> list[str]:
        """Lab ids that have a solution notebook, in order."""
        if not self.solutions.is_dir():
            return []
        return sorted(p.name for p in self.solutions.iterdir()
                      if LAB_ID.match(p.name) and (p / f"{p.name}.ipynb").exists())

    def check_lab(self, lab: str) -> str:
        if lab not in self.labs():
            known = ", ".join(self.labs()) or "none"
            raise SystemExit(f"unknown lab {lab!r}; labs with a solution notebook: {known}")
        return lab

    def coursedir(self, release_directory: Path | None = None):
        """nbgrader's CourseDirectory for this course (absolute paths, so the
        work directory may live anywhere)."""
        from nbgrader.coursedir import CourseDirectory

        self.workdir.mkdir(parents=True, exist_ok=True)
        return CourseDirectory(
            root=str(self.root),
            source_directory=str(self.solutions),
            release_directory=str(release_directory or self.labs_dir),
            submitted_directory=str(self.workdir / "submitted"),
            autograded_directory=str(self.workdir / "autograded"),
            feedback_directory=str(self.workdir / "feedback"),
            db_url=self.db_url,
            ignore=NEVER_RELEASED,
        )
