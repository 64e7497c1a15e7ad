"""Executes each lab's solution notebook ONCE per test run, with nbval, and
checks everything on that one execution.

``pytest solutions/`` (part of `make test`) collects every
``solutions/labNN_*/labNN_*.ipynb``: nbval runs it cell by cell in QUICK mode
(EFFML_QUICK=1, read by the parameters cell), each cell a test item; a last
item per notebook rebuilds the executed notebook from nbval's outputs and
checks it the way the grader does: every autograded test cell scores full
marks, no cell failed, and the outputs the lab promises (``effml.expected_output``
regexes in the notebook metadata) were printed.
"""
from __future__ import annotations

import os
import re
import time

import pytest

os.environ.setdefault("EFFML_QUICK", "1")
os.environ.setdefault("EFFML_SEED", "0")
# `-n 2` runs two workers (and their kernels) on CI's 2 cores: split the cores
# between them before anything imports torch, or OpenMP oversubscription makes
# every notebook 2x slower.
from autograder.execute import thread_env  # noqa: E402

for _var, _value in thread_env(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))).items():
    os.environ.setdefault(_var, _value)


def pytest_configure(config):
    if hasattr(config.option, "nbval_current_env"):
        # Run notebooks in this environment's kernel, not whatever `python3` kernelspec is installed.
        config.option.nbval_current_env = True
        config.option.nbval_cell_timeout = int(os.environ.get("EFFML_CELL_TIMEOUT", "1800"))


def pytest_collect_file(file_path, parent):
    if (file_path.suffix == ".ipynb" and file_path.parent.parent.name == "solutions"
            and file_path.stem == file_path.parent.name and not parent.config.option.nbval
            and not parent.config.option.nbval_lax):
        return LabNotebook.from_parent(parent, path=file_path)
    return None


def _nbval():
    from nbval.plugin import IPyNbCell, IPyNbFile
    return IPyNbFile, IPyNbCell


class LabNotebook(_nbval()[0]):
    """nbval's notebook collector plus one grading check at the end."""

    def collect(self):
        self.cell_items = []
        self.started = None
        for item in super().collect():
            self.cell_items.append(item)
            yield item
        yield LabChecks.from_parent(self, name="grading checks")

    def setup(self):
        self.started = time.monotonic()
        super().setup()


class LabChecks(pytest.Item):
    def runtest(self):
        import nbformat

        from autograder.scoring import score_cells

        nbfile = self.parent
        # Reported in the terminal summary; user_properties travel back from xdist workers.
        self.user_properties.append(("quick_runtime_s", (nbfile.path.parent.name,
                                                         time.monotonic() - (nbfile.started or time.monotonic()))))
        nb = nbformat.read(str(nbfile.path), as_version=4)
        code_cells = [c for c in nb.cells if c.cell_type == "code"]
        problems = []
        for cell, item in zip(code_cells, nbfile.cell_items):
            if item.test_outputs is None:
                cell.outputs = [nbformat.v4.new_output("error", ename="CellNotExecuted", evalue="", traceback=[])]
                continue
            cell.outputs = [nbformat.from_dict(o) for o in item.test_outputs]
            for o in cell.outputs:
                if o.get("output_type") == "error":
                    gid = cell.metadata.get("nbgrader", {}).get("grade_id", "")
                    problems.append(f"{item.name} {gid}: {o.get('ename')}: {o.get('evalue')}")
        for row in score_cells(nb):
            if not row.manual and row.score != row.max_score:
                problems.append(f"{row.grade_id} scores {row.score:g}/{row.max_score:g}: {row.message or 'no error shown'}")
        stdout = "".join(o.get("text", "") for c in code_cells for o in c.outputs if o.get("output_type") == "stream")
        for pattern in nb.metadata.get("effml", {}).get("expected_output", []):
            if not re.search(pattern, stdout):
                problems.append(f"the solution never printed a line matching {pattern!r}")
        if problems:
            raise AssertionError("the solution notebook does not pass its own grading:\n  " + "\n  ".join(problems))

    def reportinfo(self):
        return self.path, 0, f"{self.parent.path.name}: grading checks"


def pytest_terminal_summary(terminalreporter):
    runtimes = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            for key, value in getattr(report, "user_properties", []):
                if key == "quick_runtime_s":
                    runtimes[value[0]] = value[1]
    if runtimes:
        terminalreporter.write_sep("-", "QUICK-mode solution runtimes (nbval, one execution each)")
        for lab, secs in sorted(runtimes.items()):
            terminalreporter.write_line(f"{lab}: {secs:.1f} s")
