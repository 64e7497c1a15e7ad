"""nbgrader configuration for the course (read by nbgrader's CLI and
JupyterLab's formgrader; `effml` builds the same layout in
autograder/course.py)."""
import os

from autograder.course import NEVER_RELEASED
from autograder.nbgrader_setup import configure
from autograder.release import generate_assignment_preprocessors
from autograder.report import feedback_preprocessors
from autograder.sanitize import HTML_FILTERS

c = get_config()  # noqa: F821 - provided by nbgrader

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.environ.get("EFFML_WORKDIR", os.path.join(HERE, "grading"))

c.CourseDirectory.root = HERE
c.CourseDirectory.ignore = NEVER_RELEASED  # the trusted checks (grader.py) are never released
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "labs"
# Working directories, all git-ignored under grading/.
c.CourseDirectory.submitted_directory = os.path.join(WORK, "submitted")
c.CourseDirectory.autograded_directory = os.path.join(WORK, "autograded")
c.CourseDirectory.feedback_directory = os.path.join(WORK, "feedback")
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(WORK, "gradebook.db")

# nbgrader on its own (a fresh clone, Formgrader, `nbgrader autograde`, the
# Validate button, the Assignment List): the grading folder is created (the
# gradebook's sqlite needs it), the exchange for release/fetch/submit/collect
# is `$EFFML_EXCHANGE` (default grading/exchange; on a shared JupyterHub
# e.g. /srv/nbgrader/exchange) for course `$EFFML_COURSE_ID` (default
# "effml"), and nbgrader's notebook runs take each lab's limits from its
# solution notebook and QUICK mode from EFFML_QUICK (default on), as
# `effml grade` does (autograder/nbgrader_setup.py).
configure(c, HERE)

# Stubs name their task: raise NotImplementedError("Task 1.2").
c.GenerateAssignment.preprocessors = generate_assignment_preprocessors()

# Formgrader (and `nbgrader generate_feedback`) render student notebooks with
# nbconvert's HTMLExporter, in nbgrader's templates, inside the instructor's
# logged-in Jupyter page. What a student wrote or printed must not run there:
# sanitize_html drops JavaScript and widget outputs and cleans HTML outputs;
# nbgrader's templates render markdown cells without that cleaning, so the
# markdown filter is replaced by one that cleans its HTML (no scripts, event
# handlers, styles or javascript: links); untrusted_outputs keeps only output
# mimetypes and metadata the templates render safely.
c.HTMLExporter.sanitize_html = True
c.HTMLExporter.filters = HTML_FILTERS
c.HTMLExporter.preprocessors = ["autograder.sanitize.untrusted_outputs"]
# nbgrader's own feedback (`nbgrader generate_feedback`, Formgrader's button):
# hidden tests removed and long cells cut, as in `effml feedback`.
c.GenerateFeedback.preprocessors = feedback_preprocessors()
