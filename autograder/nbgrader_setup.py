"""What nbgrader's own tools need to behave like ``effml`` (read by
``nbgrader_config.py``): the grading folder and the exchange exist, and
nbgrader's notebook runs (``nbgrader autograde``, Formgrader's Autograde
button, the Validate button) use each lab's limits and QUICK mode from the
same place ``effml grade`` takes them: :func:`autograder.labrun.notebook_limits`
of the lab's *solution* notebook, and :func:`autograder.labrun.mode` of the
``EFFML_QUICK``/``EFFML_SEED`` environment (QUICK unless ``EFFML_QUICK=0``,
as ``effml grade`` grades QUICK unless ``--full``).

nbgrader runs notebooks with its ``Execute`` preprocessor (30 s per cell by
default, the kernel inheriting the server's environment). Here:

- ``LabExecute`` replaces ``Execute`` in ``Autograde.autograde_preprocessors``:
  the assignment being graded names the lab, whose solution sets the limit.
- The Validate button's ``Validator`` has a fixed preprocessor list, so the
  class-wide ``Execute.timeout_func`` gives the limit of the lab whose
  folder the notebook is in (the Validator runs in that folder).
- The mode reaches the kernel as its first lines (``IPKernelApp.exec_lines``
  setting the environment the lab's locked parameters cell reads), so a
  student's own interactive kernels keep their mode.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from .course import LAB_ID, Course
from .labrun import Limits, mode, notebook_limits

DEFAULT_COURSE_ID = "effml"


def quick_from_environment() -> bool:
    """QUICK unless ``EFFML_QUICK`` says 0/false (``effml grade``'s default)."""
    return os.environ.get("EFFML_QUICK", "1").strip().lower() not in ("0", "false", "no", "")


def seed_from_environment() -> int:
    try:
        return int(os.environ.get("EFFML_SEED", "0"))
    except ValueError:
        return 0


def kernel_environment() -> dict:
    """The environment a graded kernel gets (the mode), from labrun.mode."""
    return mode(quick_from_environment(), seed_from_environment())[1]


def kernel_arguments() -> list[str]:
    """ipykernel arguments: nbgrader's default (no history file) and the mode."""
    code = f"import os; os.environ.update({json.dumps(kernel_environment())})"
    return ["--HistoryManager.hist_file=:memory:", f"--IPKernelApp.exec_lines={code}"]


def lab_limits(course: Course, lab: str | None) -> Limits:
    """The lab's limits from its solution notebook; the defaults for anything else."""
    if lab and LAB_ID.match(lab) and course.solution_notebook(lab).is_file():
        return notebook_limits(course.solution_notebook(lab))
    return Limits()


class FolderTimeout:
    """``Execute.timeout_func``: the cell limit of the lab whose folder is the
    current one (nbgrader's Validator runs a notebook from its folder:
    ``labs/<lab>/`` or a student's fetched ``<lab>/``)."""

    def __init__(self, course: Course):
        self.course = course

    def __call__(self, cell=None) -> int:
        return lab_limits(self.course, Path.cwd().name).cell_timeout


def lab_execute_class(course: Course):
    """nbgrader's Execute with the graded lab's cell limit."""
    from nbgrader.preprocessors import Execute

    class LabExecute(Execute):
        """nbgrader's Execute with the cell limit of the assignment being
        graded (its solution notebook's metadata over effml's defaults)."""

        def preprocess(self, nb, resources, *args, **kwargs):
            lab = (resources or {}).get("nbgrader", {}).get("assignment")
            self.timeout_func = None
            self.timeout = lab_limits(course, lab).cell_timeout
            return super().preprocess(nb, resources, *args, **kwargs)

    return LabExecute


def make_exchange(path: str | Path) -> Path:
    """The nbgrader exchange folder: world-writable and sticky, as nbgrader
    expects (students write their own inbound files, only the owner may
    delete them); left as it is when it exists or cannot be made."""
    path = Path(path)
    if not path.is_dir():
        try:
            path.mkdir(parents=True)
            path.chmod(0o777 | stat.S_ISVTX)
        except OSError:
            pass  # nbgrader says "exchange directory does not exist"
    return path


def configure(c, root: str | Path) -> None:
    """Set nbgrader's configuration ``c`` for the course at ``root``."""
    root = Path(root)
    course = Course(root=root)
    work = course.workdir
    work.mkdir(parents=True, exist_ok=True)  # the gradebook's folder: sqlite makes the file, not the folder
    c.CourseDirectory.course_id = os.environ.get("EFFML_COURSE_ID", DEFAULT_COURSE_ID)
    c.Exchange.root = str(make_exchange(os.environ.get("EFFML_EXCHANGE", work / "exchange")))
    c.Execute.timeout_func = FolderTimeout(course)
    c.Execute.extra_arguments = kernel_arguments()
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import Execute

    executor = lab_execute_class(course)
    c.Autograde.autograde_preprocessors = [executor if p is Execute else p
                                           for p in Autograde.class_traits()["autograde_preprocessors"].default()]
