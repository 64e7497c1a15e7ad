"""nbgrader configuration for the course (read by nbgrader's CLI and
JupyterLab's formgrader; `effml` builds the same layout in
autograder/course.py)."""
import os

from autograder.release import generate_assignment_preprocessors

c = get_config()  # noqa: F821 - provided by nbgrader

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.environ.get("EFFML_WORKDIR", os.path.join(HERE, "grading"))

c.CourseDirectory.root = HERE
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "labs"
# Working directories, all git-ignored under grading/.
c.CourseDirectory.submitted_directory = os.path.join(WORK, "submitted")
c.CourseDirectory.autograded_directory = os.path.join(WORK, "autograded")
c.CourseDirectory.feedback_directory = os.path.join(WORK, "feedback")
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(WORK, "gradebook.db")

# Stubs name their task: raise NotImplementedError("Task 1.2").
c.GenerateAssignment.preprocessors = generate_assignment_preprocessors()
