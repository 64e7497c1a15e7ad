"""Generate the student notebooks (labs/) from the instructor notebooks
(solutions/) with nbgrader, and strip outputs from committed notebooks."""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import nbformat

from .course import Course
from .tasks import code_stub


def _task_stub_preprocessor():
    from nbgrader.preprocessors import ClearSolutions

    class TaskStubClearSolutions(ClearSolutions):
        """nbgrader's ClearSolutions with a stub that names the cell's task."""

        def preprocess_cell(self, cell, resources, cell_index):
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
            language = resources["language"]
            saved = dict(self.code_stub)
            self.code_stub = {**saved, language: code_stub(grade_id)}
            try:
                return super().preprocess_cell(cell, resources, cell_index)
            finally:
                self.code_stub = saved

    return TaskStubClearSolutions


def generate_assignment_preprocessors() -> list:
    """nbgrader's generate_assignment pipeline with task-naming stubs."""
    from nbgrader.converters import GenerateAssignment
    from nbgrader.preprocessors import ClearSolutions

    return [(_task_stub_preprocessor() if p is ClearSolutions else p)
            for p in GenerateAssignment().preprocessors]


def generate_assignment(course: Course, lab: str, release_dir: Path | None = None) -> Path:
    """Run nbgrader's generate_assignment for ``lab`` into ``release_dir``
    (default ``labs/``), recording its cells (hidden tests included) in the
    course gradebook. Returns the released notebook's path."""
    from nbgrader.converters import GenerateAssignment
    from traitlets.config import Config

    course.check_lab(lab)
    coursedir = course.coursedir(release_directory=release_dir)
    coursedir.assignment_id = lab
    config = Config()
    config.GenerateAssignment.preprocessors = generate_assignment_preprocessors()
    config.GenerateAssignment.force = True
    converter = GenerateAssignment(coursedir=coursedir, config=config)
    converter.log.setLevel(logging.WARNING)
    converter.start()
    out = Path(coursedir.release_directory) / lab / f"{lab}.ipynb"
    _normalise(out)
    return out


def _normalise(path: Path) -> None:
    """Write the notebook the way nbformat does, so a release is byte-stable."""
    nb = nbformat.read(path, as_version=4)
    nbformat.write(nb, path)


def release(course: Course, lab: str) -> Path:
    """Regenerate ``labs/<lab>/`` from ``solutions/<lab>/``."""
    target = course.labs_dir / lab
    if target.exists():
        shutil.rmtree(target)
    return generate_assignment(course, lab)


def ensure_in_gradebook(course: Course, lab: str) -> None:
    """Grading needs the lab's source cells in the gradebook (to restore
    locked and hidden test cells); record them without touching labs/."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(course.db_url) as gb:
        try:
            nb = gb.find_notebook(lab, lab)
            recorded = bool(nb.source_cells)
        except MissingEntry:
            recorded = False
    if not recorded:
        with tempfile.TemporaryDirectory() as tmp:
            generate_assignment(course, lab, Path(tmp))


def stale_files(course: Course, lab: str) -> list[str]:
    """Files of ``labs/<lab>`` that differ from a fresh release (empty when up to date)."""
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Course(root=course.root, workdir=Path(tmp) / "work")
        fresh_root = Path(tmp) / "release"
        generate_assignment(scratch, lab, fresh_root)
        fresh, committed = fresh_root / lab, course.labs_dir / lab
        names = {p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()}
        if committed.exists():
            names |= {p.relative_to(committed) for p in committed.rglob("*") if p.is_file()}
        stale = []
        for name in sorted(names):
            a, b = fresh / name, committed / name
            if not (a.exists() and b.exists() and a.read_bytes() == b.read_bytes()):
                stale.append(str(Path("labs") / lab / name))
        return stale


def strip_outputs(path: Path) -> bool:
    """Clear outputs and execution counts in place; True if the file changed."""
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count = [], None
            changed = True
    if changed:
        nbformat.write(nb, path)
    return changed
