"""Build the sample submissions for lab 00 from the release and the solution.

    python samples/build_samples.py        # rewrite samples/lab00_basics/
    python samples/build_samples.py --check  # exit 1 if they are out of date

Each sample is the student notebook (labs/) with some answers filled in from
the solution, plus the damage the sample is about. Expected grades live in
samples/expected.json and are asserted by tests/test_grading.py and `effml demo`.
Attacks on the grader are built on the fly by tests/test_adversarial.py.
"""
from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
LAB = "lab00_basics"
OUT = ROOT / "samples" / LAB
ALL_TASKS = ("1_1", "1_2", "1_3", "2_1", "2_2", "3_1", "3_2", "4_1")
ANSWER = ("At batch 1 the CNN runs at a small fraction of the GMAC/s it reaches at batch 64: fixed "
          "per-layer overheads dominate a tiny model. Pooling and the linear layer move much data "
          "for few MACs, so they are memory-bound.")


def _grade_id(cell) -> str:
    return cell.metadata.get("nbgrader", {}).get("grade_id", "")


def answered(tasks=ALL_TASKS):
    """The release with the solution cells of ``tasks`` filled in."""
    release = nbformat.read(ROOT / "labs" / LAB / f"{LAB}.ipynb", as_version=4)
    solution = nbformat.read(ROOT / "solutions" / LAB / f"{LAB}.ipynb", as_version=4)
    answers = {_grade_id(c): c.source for c in solution.cells if c.metadata.get("nbgrader", {}).get("solution")}
    for cell in release.cells:
        gid = _grade_id(cell)
        if not cell.metadata.get("nbgrader", {}).get("solution"):
            continue
        if any(gid.startswith(f"task_{t}_") for t in tasks):
            if cell.cell_type == "markdown":
                cell.source = ANSWER
            else:
                cell.source = "\n".join(l for l in answers[gid].splitlines()
                                        if "BEGIN SOLUTION" not in l and "END SOLUTION" not in l)
    return release


def _cell(nb, grade_id):
    return next(c for c in nb.cells if _grade_id(c) == grade_id)


def samples() -> dict[str, bytes]:
    """Relative path -> file content."""
    files = {}

    def put(student, nb):
        files[f"{student}/{LAB}.ipynb"] = nbformat.writes(nb).encode() + b"\n"

    put("alice_full", answered())
    put("bob_blank", nbformat.read(ROOT / "labs" / LAB / f"{LAB}.ipynb", as_version=4))
    put("carol_partial", answered(("1_1", "1_2", "2_1")))

    looping = answered()
    cell = _cell(looping, "task_3_2_pareto_code")
    cell.source = "while True:  # stuck\n    pass\n\n" + cell.source
    put("dave_infinite_loop", looping)

    # Erin's file is cut in half (not valid JSON); zipped, so the repository holds no broken .ipynb.
    text = nbformat.writes(answered())
    files["erin_broken_json.zip"] = _zip(f"{LAB}.ipynb", text[: len(text) // 2])

    deleted = answered()
    deleted.cells = [c for c in deleted.cells if _grade_id(c) != "task_1_3_mac_count"]
    put("frank_deleted_test", deleted)

    # Grace edits a test cell to pass and gets Task 1.1 wrong; she submits a zip.
    tampered = answered()
    _cell(tampered, "task_1_1_output_size_code").source = (
        "def conv2d_output_size(h, kernel, stride=1, padding=0, dilation=1):\n"
        "    return (h + 2 * padding - kernel) // stride + 1  # forgets dilation\n")
    _cell(tampered, "task_1_1_output_size").source = "pass  # tests removed\n"
    files["grace_tampered.zip"] = _zip(f"submission/{LAB}.ipynb", nbformat.writes(tampered))
    return files


def _zip(name: str, text: str) -> bytes:
    """A zip holding one file, byte-stable (fixed timestamp)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), text)
    return buf.getvalue()


def _sync(out: Path, want: dict[str, bytes], check: bool) -> list[str]:
    have = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} if out.exists() else {}
    if check:
        return sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    for rel, data in want.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for rel in set(have) - set(want):
        (out / rel).unlink()
    return []


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="exit 1 if samples/ is out of date")
    args = ap.parse_args(argv)
    stale = []
    for out, want in ((OUT, samples()),):
        stale += [f"{out.relative_to(ROOT)}/{k}" for k in _sync(out, want, args.check)]
        if not args.check:
            print(f"wrote {len(want)} samples under {out.relative_to(ROOT)}")
    for k in stale:
        print(f"stale sample: {k}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
