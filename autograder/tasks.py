"""One task id everywhere: grade id ``task_1_2_fine_grained_prune`` <->
heading ``Task 1.2`` <-> stub ``NotImplementedError("Task 1.2")``."""
from __future__ import annotations

import re

_GRADE_ID = re.compile(r"^task_(\d+)_(\d+)(?:_|$)")


def task_number(grade_id: str) -> str | None:
    """``"task_1_2_fine_grained_prune_code"`` -> ``"1.2"``; None for other ids."""
    m = _GRADE_ID.match(grade_id or "")
    return f"{int(m.group(1))}.{int(m.group(2))}" if m else None


def code_stub(grade_id: str) -> str:
    task = task_number(grade_id)
    message = f'"Task {task}"' if task else ""
    return f"# YOUR CODE HERE\nraise NotImplementedError({message})"
