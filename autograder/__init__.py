"""Release, execute, grade and report on the EfficientML labs.

Built on nbgrader (release, cell restoration, gradebook, feedback) and
papermill (parameterised execution). The `effml` command is `autograder.cli`.
"""

import os as _os
import shutil as _shutil
import sys as _sys

# nbgrader runs its database migrations by shelling out to `alembic`, which
# lives beside this interpreter; make it findable when the venv is not activated.
if _shutil.which("alembic") is None:
    _os.environ["PATH"] = _os.path.dirname(_sys.executable) + _os.pathsep + _os.environ.get("PATH", "")
