"""docs/architecture.md matches the tree: every module it names exists, and
every module of `helpers` and `autograder` is named."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "architecture.md").read_text()


def _layout_block() -> str:
    return DOC.split("## Layout", 1)[1].split("```", 2)[1]


def _listed() -> set[str]:
    """Paths named in the layout block, resolved against their parent folder lines."""
    listed, stack = set(), []
    for line in _layout_block().splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        name = line.strip().split()[0]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "/".join([p for _, p in stack] + [name.rstrip("/")])
        listed.add(path)
        if name.endswith("/"):
            stack.append((indent, name.rstrip("/")))
    return listed


def test_every_listed_module_exists():
    missing = [p for p in _listed() if p.endswith(".py") and "<lab>" not in p and not (ROOT / p).exists()]
    assert missing == []


def test_every_package_module_is_listed():
    listed = _listed()
    unlisted = []
    for pkg in ("helpers", "autograder"):
        for path in sorted((ROOT / pkg).glob("*.py")):
            rel = f"{pkg}/{path.name}"
            if path.name != "__init__.py" and rel not in listed:
                unlisted.append(rel)
    assert unlisted == [], "add them to docs/architecture.md"


def test_listed_folders_exist():
    folders = [p for p in _listed() if "." not in p.split("/")[-1] and "<lab>" not in p and p != "README"]
    missing = [p for p in folders if not (ROOT / p).exists()]
    assert missing == []


def test_the_metadata_keys_it_documents_are_the_ones_read():
    keys = set(re.findall(r"^\| `(\w+)` \|", DOC, flags=re.M))
    source = (ROOT / "autograder" / "labrun.py").read_text() + (ROOT / "tests" / "test_labs.py").read_text()
    assert keys and all(f'"{k}"' in source for k in keys), keys
