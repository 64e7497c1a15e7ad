"""The one figures channel (``helpers.figures``) and the one lab runner
(``autograder.labrun``) that executes notebooks for the CLI, grading and the
benchmarks."""
import json
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from autograder.labrun import Limits, mode, notebook_limits, run_lab
from helpers import figures

ROOT = Path(__file__).resolve().parents[1]


def test_record_is_a_noop_without_a_figures_file(tmp_path, monkeypatch):
    monkeypatch.delenv(figures.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert figures.record("a", 1.5) == 1.5
    assert list(tmp_path.iterdir()) == []


def test_record_appends_and_read_keeps_the_last_value(tmp_path, monkeypatch):
    path = tmp_path / "f.jsonl"
    monkeypatch.setenv(figures.ENV, str(path))
    figures.record("acc", 0.5)
    figures.record("ppl", {"fp32": 10.25, "w4": np.float32(11.5)})
    figures.record("acc", torch.tensor(0.75))
    figures.record("curve", np.arange(3))
    figures.record("ok", True)
    assert figures.read(path) == {"acc": 0.75, "ppl": {"fp32": 10.25, "w4": 11.5}, "curve": [0, 1, 2], "ok": True}
    assert len(path.read_text().splitlines()) == 5


def test_read_rejects_a_line_that_is_not_a_figure(tmp_path):
    assert figures.read(tmp_path / "missing.jsonl") == {}
    path = tmp_path / "f.jsonl"
    path.write_text('{"name": "a", "value": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"f.jsonl:2: not a figure line"):
        figures.read(path)


def test_a_value_that_is_not_data_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(figures.ENV, str(tmp_path / "f.jsonl"))
    with pytest.raises(TypeError, match="figure values"):
        figures.record("model", object())


def test_no_other_figures_channel_is_left():
    """Labs, helpers and benchmarks report figures only through helpers.figures."""
    pattern = re.compile(r"EFFML_METRICS|LAB10_RESULTS|\"FIGURES |record_metric|printed_json|" + figures.ENV)
    offenders = []
    for folder in ("helpers", "solutions", "benchmarks", "autograder"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".ipynb") and path.name != "figures.py" and pattern.search(path.read_text()):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


# ---------------------------------------------------------------- the lab runner

def _notebook(path: Path, source: str, **effml) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("QUICK = False\nSEED = 0", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if effml:
        nb.metadata["effml"] = effml
    nbformat.write(nb, path)
    return path


def test_limits_come_from_the_notebook_over_one_set_of_defaults(tmp_path):
    nb = _notebook(tmp_path / "a.ipynb", "pass", cell_timeout=42, check_timeout=7)
    assert notebook_limits(nb) == Limits(cell_timeout=42, notebook_timeout=Limits().notebook_timeout,
                                         check_timeout=7)
    assert notebook_limits(nb).override(cell_timeout=None, notebook_timeout=99).notebook_timeout == 99
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{ not json")
    assert notebook_limits(broken) == Limits()


def test_mode_sets_parameters_and_environment_together():
    assert mode(True, 3) == ({"QUICK": True, "SEED": 3}, {"EFFML_QUICK": "1", "EFFML_SEED": "3"})
    assert mode(False, None) == ({"QUICK": False}, {"EFFML_QUICK": "0"})
    assert mode(None, None) == ({}, {})


@pytest.mark.notebook
def test_run_lab_passes_the_mode_and_collects_figures(tmp_path):
    nb = _notebook(tmp_path / "lab.ipynb", "import os\nfrom helpers import figures\n"
                   "figures.record('mode', [QUICK, SEED, os.environ['EFFML_QUICK'], os.environ['EFFML_SEED']])\n"
                   "figures.record('threads', os.environ.get('OMP_NUM_THREADS'))")
    out = tmp_path / "out" / "lab.ipynb"
    res = run_lab(nb, out, quick=True, seed=5, concurrent=2, figures=tmp_path / "f.jsonl", cwd=ROOT)
    assert res.status == "ok", res.reason
    got = figures.read(tmp_path / "f.jsonl")
    assert got["mode"] == [True, 5, "1", "5"]
    assert got["threads"] is not None and int(got["threads"]) >= 1
    executed = json.dumps(nbformat.read(out, as_version=4).cells[1].outputs)
    assert "Error" not in executed


def test_every_notebook_execution_goes_through_the_lab_runner():
    """One mapping of (lab, QUICK, SEED, limits) to an execution: outside the
    executor itself, only ``autograder.labrun`` calls ``execute``."""
    pattern = re.compile(r"\bexecute\s*\(|\bimport\b[^\n]*[ ,(]execute\b|[\"']EFFML_(QUICK|SEED)[\"']\s*:")
    callers = sorted(str(p.relative_to(ROOT)) for folder in ("autograder", "benchmarks", "helpers")
                     for p in (ROOT / folder).rglob("*.py")
                     if p.name not in ("execute.py", "labrun.py") and pattern.search(p.read_text()))
    assert callers == []
