"""Attacks on the grader (tests/adversarial/attacks.py), graded in one batch
per lab through ``autograder.grade`` with the sandbox on, on lab 00 and on
an LLM lab (lab 08).

- A notebook that does not do the work (blank release or wrong answers) plus
  any cheat earns 0 points.
- A full-marks notebook plus any escape keeps its marks where its kernel
  survives, leaks nothing (the probe prints what it could see), writes
  nothing outside its jail, harms no other student (a control submission in
  the same batch scores full marks), and the batch finishes.
- Hostile submission files (a zip bomb, a symlinked student folder, a FIFO
  posing as a notebook) are refused at collection with a reason.
"""
from __future__ import annotations

import ast
import csv
import hashlib
import json
import os
import re
import stat
import time
import zipfile
from pathlib import Path

import nbformat
import pytest

from adversarial.attacks import ATTACKS, INJECTED_MARKDOWN, PWNED
from autograder.course import Course
from autograder.grade import GradeOptions, grade
from autograder.sandbox import bwrap_works, make_sandbox, sandbox_tag
from autograder.submissions import collect

ROOT = Course().root
CANARY = "EFFML_CANARY_SECRET"

pytestmark = pytest.mark.notebook


def _gid(cell) -> str:
    return cell.metadata.get("nbgrader", {}).get("grade_id", "")


def release(lab):
    return nbformat.read(ROOT / "labs" / lab / f"{lab}.ipynb", as_version=4)


def answered(lab, markdown=None):
    """The release with every solution cell filled in from the solution."""
    nb = release(lab)
    sol = nbformat.read(ROOT / "solutions" / lab / f"{lab}.ipynb", as_version=4)
    answers = {_gid(c): c.source for c in sol.cells if c.metadata.get("nbgrader", {}).get("solution")}
    for cell in nb.cells:
        if not cell.metadata.get("nbgrader", {}).get("solution"):
            continue
        if cell.cell_type == "markdown":
            cell.source = markdown or "A written answer."
        else:
            cell.source = "\n".join(l for l in answers[_gid(cell)].splitlines()
                                    if "BEGIN SOLUTION" not in l and "END SOLUTION" not in l)
    return nb


def solution_names(lab) -> list[str]:
    """Names the lab's solution cells define at top level (what the checks call)."""
    sol = nbformat.read(ROOT / "solutions" / lab / f"{lab}.ipynb", as_version=4)
    names = []
    for c in sol.cells:
        if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution"):
            src = "\n".join(l for l in c.source.splitlines() if not l.lstrip().startswith(("%", "!")))
            for node in ast.parse(src).body:
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    names.append(node.name)
                elif isinstance(node, ast.Assign):
                    names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return sorted(set(names))


def with_attack(nb, lab, attack):
    nb = nbformat.from_dict(nb)
    code = attack.code.strip("\n").replace("{names}", repr(solution_names(lab)))
    if code.startswith("# the notebook's test cells carry"):
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.metadata["tags"] = ["skip-execution", "raises-exception"]
        return nb
    if attack.at_end:
        nb.cells.append(nbformat.v4.new_code_cell(code))
        return nb
    first = next(c for c in nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution"))
    first.source = code + "\n\n" + first.source
    return nb


def _combine(attacks):
    """Several attacks of one class in one notebook (the LLM lab runs fewer, longer notebooks)."""
    from adversarial.attacks import Attack

    head = [a for a in attacks if not a.at_end and not a.code.startswith("# the notebook")]
    tail = [a for a in attacks if a.at_end]
    out = []
    if head:
        out.append(Attack(attacks[0].kind, attacks[0].klass, "\n\n".join(a.code for a in head)))
    if tail:
        out.append(Attack(attacks[0].kind, attacks[0].klass, "\n\n".join(a.code for a in tail), at_end=True))
    return out


def build_batch(lab: str, folder: Path, combine: bool) -> dict[str, str]:
    """Write the submissions; return student -> what is expected of it."""
    expect = {}

    def put(student, nb, what):
        (folder / student).mkdir(parents=True)
        nbformat.write(nb, folder / student / f"{lab}.ipynb")
        expect[student] = what

    put("control_full", answered(lab), "full")
    if combine:
        # An LLM notebook takes minutes on a busy machine: every cheat in one blank notebook, every
        # escape in one full-marks notebook (each attack alone is graded on lab 00).
        by_group = {}
        for name, attack in ATTACKS.items():
            if name in ("skip_tags", "forked_memory"):  # lab 00 has these; they add nothing here
                continue
            if attack.klass == "exhaustion":  # each is graded alone on lab 00; here they would mask the probe
                continue
            by_group.setdefault("cheat_all" if attack.kind == "cheat" else "escape_all", []).append(attack)
        for student, attacks in by_group.items():
            kind = attacks[0].kind
            nb = release(lab) if kind == "cheat" else answered(lab, INJECTED_MARKDOWN)
            for attack in _combine(attacks):
                nb = with_attack(nb, lab, attack)
            put(student, nb, "zero" if kind == "cheat" else "sandbox_leak")
    else:
        for name, attack in ATTACKS.items():
            if attack.kind == "cheat":
                put(f"cheat_{name}", with_attack(release(lab), lab, attack), "zero")
            else:
                markdown = INJECTED_MARKDOWN if name == "script_injection" else None
                put(f"escape_{name}", with_attack(answered(lab, markdown), lab, attack), attack.klass)
    # Hostile files around the notebooks: refused at collection, never opened as notebooks.
    bomb = folder / "zip_bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open(f"{lab}.ipynb", "w", force_zip64=True) as member:
            chunk = b"\0" * 2**20
            for _ in range(400):
                member.write(chunk)
    expect["zip_bomb"] = "refused"
    (folder / "linked_student").symlink_to(folder / "control_full")
    (folder / "fifo_student").mkdir()
    os.mkfifo(folder / "fifo_student" / f"{lab}.ipynb")
    return expect


def _digests() -> dict:
    out = {}
    for top in ("solutions", "labs", "helpers", "autograder"):
        for p in sorted((ROOT / top).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    for p in (ROOT / ".git" / "HEAD", ROOT / "nbgrader_config.py"):
        out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class AttackBatch:
    """The tests, run for each lab by a subclass (one xdist scope each)."""
    LAB = ""
    COMBINE = False

    @pytest.fixture(scope="class")
    def batch(self, tmp_path_factory):
        assert bwrap_works(), "bubblewrap is required for these tests: `make venv` installs it"
        lab = self.LAB
        folder = tmp_path_factory.mktemp(f"attacks-{lab}")
        expect = build_batch(lab, folder / "subs", self.COMBINE)
        course = Course(workdir=folder / "grading")
        before = _digests()
        Path(PWNED).unlink(missing_ok=True)
        os.environ[CANARY] = "the grader's secret"
        try:
            start = time.monotonic()
            subs, warnings = collect(folder / "subs", course.labs(), lab)
            # An attack that ignores interrupts is stopped by the notebook limit.
            # One notebook at a time: pytest-xdist already runs two test processes on CI's 2 cores.
            options = GradeOptions(workers=1, cell_timeout=180, notebook_timeout=1500 if self.COMBINE else 600,
                                   sandbox=make_sandbox("bwrap", course))
            results = {r.student: r for r in grade(course, subs, options)}
            wall = time.monotonic() - start
        finally:
            os.environ.pop(CANARY, None)
        return dict(lab=lab, course=course, expect=expect, results=results, warnings=warnings,
                    before=before, after=_digests(), wall=wall, folder=folder)

    def test_the_batch_finishes_with_every_notebook_graded(self, batch):
        assert sorted(batch["results"]) == sorted(batch["expect"])

    def test_the_control_submission_scores_full_marks(self, batch):
        r = batch["results"]["control_full"]
        assert r.auto_max > 0 and r.auto_score == r.auto_max, (r.status, r.reasons, r.tasks)

    def test_cheats_earn_nothing(self, batch):
        earned = {s: (r.auto_score, {k: v for k, v in r.tasks.items() if v}) for s, r in batch["results"].items()
                  if batch["expect"][s] == "zero" and r.auto_score != 0}
        assert earned == {}

    def test_escapes_keep_the_marks_their_work_earned(self, batch):
        lost = {s: (r.auto_score, r.auto_max, r.status, r.reasons) for s, r in batch["results"].items()
                if batch["expect"][s] in ("host_side", "sandbox_leak", "script_injection")
                and r.auto_score != r.auto_max}
        assert lost == {}

    def test_tampering_is_flagged_for_review_without_touching_scores(self, batch):
        from autograder.report import format_table, results

        results_ = batch["results"]
        assert results_["control_full"].review == []
        unflagged = [s for s, r in results_.items() if batch["expect"][s] == "zero" and not r.review
                     and not s.endswith("skip_tags")]  # tags are metadata, not code
        assert unflagged == []
        table = format_table(results(batch["course"], self.LAB))
        assert "needs review" in table

    def test_hostile_files_are_refused_at_collection(self, batch):
        text = "\n".join(batch["warnings"])
        assert "linked_student" in text and "fifo_student" in text, text
        bomb = batch["results"]["zip_bomb"]
        assert bomb.status == "invalid" and bomb.auto_score == 0 and "limit" in bomb.reason, bomb

    def test_nothing_leaks_into_the_kernel(self, batch):
        nb = self._notebook(batch, "escape_all" if self.COMBINE else "escape_leak_probe")
        probe = json.loads(re.search(r"LEAKPROBE (\{.*\})", self._stdout(nb)).group(1))
        assert probe["uid"] != 0 and probe["euid"] != 0
        course_root = str(ROOT)
        # /root exists only as the mount point of the Python installation; /tmp is the jail's own.
        assert set(probe["root_listing"]) <= {".pyenv"}, probe["root_listing"]
        leaked = [p for p in probe["readable"]
                  if p.startswith(("/etc/shadow", "/proc/1/environ", "/home", "/tmp/pytest-of"))
                  # the course folder itself may be listed (in the jail it holds only the mounts below)
                  or (p.startswith(course_root + "/") and not p.startswith((f"{course_root}/helpers",
                                                                        f"{course_root}/datasets",
                                                                        f"{course_root}/.venv")))]
        assert leaked == [], probe
        # The only sockets it reaches are its own kernel's, in its own run folder.
        assert len({str(Path(s).parent) for s in probe["sockets"]}) <= 1, probe["sockets"]
        assert not [s for s in probe["sockets"] if not s.startswith("/tmp/effml-")], probe["sockets"]
        assert probe["env_canary"] == [] and probe["network"] is False, probe
        assert probe["history"] == [], probe

    def test_nothing_is_written_outside_and_no_link_is_followed(self, batch):
        assert not Path(PWNED).exists()
        assert batch["before"] == batch["after"], "course files changed during grading"
        work = batch["course"].workdir
        odd = [str(p) for p in work.rglob("*") if p.is_symlink() or stat.S_ISFIFO(p.lstat().st_mode)]
        assert odd == []
        assert not (work / "exec").exists() or not any((work / "exec").rglob("*.ipynb")), \
            "execution folders are removed after grading"

    def test_no_process_cgroup_or_run_folder_is_left_behind(self, batch):
        import psutil

        left = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
                if str(batch["course"].workdir) in " ".join(p.info["cmdline"] or [])]
        assert left == []
        tag = sandbox_tag(batch["course"])
        for controller in ("memory", "pids"):
            base = Path("/sys/fs/cgroup") / controller
            assert list(base.glob(f"effml-{tag}-*")) == []
        assert list(Path("/tmp").glob(f"effml-{tag}-*")) == []

    def test_reports_are_sanitised(self, batch):
        from autograder.report import export_csv, format_table, generate_feedback, results

        course = batch["course"]
        table = format_table(results(course, self.LAB))
        assert "\x1b" not in table and "\x07" not in table
        for path in export_csv(course, batch["folder"] / "export", self.LAB):
            with open(path, newline="") as f:
                for row in csv.reader(f):
                    for cell in row:
                        assert not re.match(r"^[=+@\t\r]", cell), (path.name, cell[:80])
        pages = generate_feedback(course, self.LAB)
        assert len(pages) >= len(batch["results"]) - 1
        for page in pages:
            html = page.read_text(errors="replace")
            low = html.lower()
            # Escaped student text (&lt;script&gt;) is harmless; live tags and attributes are not.
            assert not re.search(r"<script", low), page
            assert not re.search(r"<[a-z][^>]*\son[a-z]+\s*=", low), page
            assert not re.search(r"(href|src)\s*=\s*[\"']?\s*javascript:", low), page
            assert "content-security-policy" in low, page

    # -- helpers
    def _notebook(self, batch, student):
        return nbformat.read(batch["course"].autograded(student, self.LAB) / f"{self.LAB}.ipynb", as_version=4)

    @staticmethod
    def _stdout(nb) -> str:
        return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                       if o.get("output_type") == "stream")

    @staticmethod
    def _text(nb) -> str:
        return json.dumps([c.get("outputs", []) for c in nb.cells])


class TestAttacksOnLab00(AttackBatch):
    LAB = "lab00_basics"

    def test_resource_attacks_are_contained(self, batch):
        text = self._text(self._notebook(batch, "escape_fork_bomb"))
        children = int(re.search(r"fork refused after (\d+) children", text).group(1))
        assert children < 300
        text = self._text(self._notebook(batch, "escape_disk_filler"))
        held = [int(m) for m in re.findall(r"disk full at (\d+) MiB", text)]
        assert held and max(held) <= 1024, "the jail's /tmp holds at most its 1 GiB"
        size = (batch["course"].autograded("escape_output_flood",
                                           self.LAB) / f"{self.LAB}.ipynb").stat().st_size
        assert size < 16 * 2**20

    def test_memory_of_forked_children_is_limited_together(self, batch):
        r = batch["results"]["escape_forked_memory"]
        text = self._text(self._notebook(batch, "escape_forked_memory"))
        # Either the OOM killer took the children (the kernel lives on) or the kernel, and said so.
        assert r.status in ("ok", "errors", "kernel_died"), r.status
        if r.status == "kernel_died":
            assert "memory" in r.reason
        else:
            assert "child" in text


class TestAttacksOnLab08(AttackBatch):
    LAB = "lab08_qlora"
    COMBINE = True
