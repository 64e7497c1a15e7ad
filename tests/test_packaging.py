"""Set-up files agree with each other."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _names(reqs):
    return {re.split(r"[<>=!\[ ]", r.strip(), maxsplit=1)[0].lower(): r.strip() for r in reqs}


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | {r for extra in project["optional-dependencies"].values() for r in extra}
    pip_lines = []
    in_pip = False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if re.match(r"\s+- pip:\s*$", line):
            in_pip = True
            continue
        m = re.match(r"\s+- (.+)$", line)
        if in_pip and m and m.group(1) != "-e .":
            pip_lines.append(m.group(1))
    assert set(pip_lines) == wanted, (set(pip_lines) ^ wanted)


def test_torch_is_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]


def test_import_helpers_is_lean():
    code = ("import sys, helpers, helpers.checks, helpers.data, helpers.plots; "
            "heavy = [m for m in ('torch', 'triton', 'transformers', 'qiskit') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_jupyterlab_has_nbgrader_enabled():
    bindir = Path(sys.executable).parent
    lab = subprocess.run([str(bindir / "jupyter"), "labextension", "list"], capture_output=True, text=True)
    assert re.search(r"@jupyter/nbgrader v\S+ \S*enabled", lab.stdout + lab.stderr)
    server = subprocess.run([str(bindir / "jupyter"), "server", "extension", "list"], capture_output=True, text=True)
    assert re.search(r"nbgrader.server_extensions.formgrader \S*enabled", server.stdout + server.stderr)


# What a build must not pick up from the working tree (ignored by git or machine-local).
_NOT_SOURCES = (".git", ".venv", "grading", "build", "dist", "__pycache__", "*.egg-info", ".pytest_cache",
                ".hypothesis", ".ipynb_checkpoints", ".cache")


def test_wheel_ships_every_c_source_of_helpers_and_no_solutions_or_tests(tmp_path):
    """Built from a copy of the tree (a build writes egg-info and build/ next to
    its sources): every .c/.h under helpers/ is in the wheel, and nothing of
    solutions/ or tests/ is."""
    import shutil
    import zipfile

    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*_NOT_SOURCES))
    out = tmp_path / "wheel"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "helpers").rglob("*")
                     if p.suffix in (".c", ".h") and p.is_file())
    assert "helpers/kernels/c/tinyml_ops.c" in sources
    assert [s for s in sources if s not in names] == [], "add them to [tool.setuptools.package-data]"
    leaked = sorted(n for n in names if n.split("/")[0] in ("solutions", "tests"))
    assert leaked == []
