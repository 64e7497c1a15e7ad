import sys, time, json, shutil
from pathlib import Path
from autograder.grade import grade, GradeOptions
from autograder.sandbox import make_sandbox
from autograder.course import Course
from autograder.submissions import Submission
from autograder.report import format_table
lab = sys.argv[1]
work = Path("/tmp/t_grade_"+lab); shutil.rmtree(work, ignore_errors=True)
c=Course(workdir=work)
subs=[Submission("solution", lab, c.solution_notebook(lab).read_bytes(), "sol"),
      Submission("blank", lab, c.release_notebook(lab).read_bytes(), "blank")]
t=time.time()
res=grade(c, subs, GradeOptions(sandbox=make_sandbox("bwrap", c), workers=int(sys.argv[2]) if len(sys.argv)>2 else 1))
print(format_table(res)); print(time.time()-t)
for r in res: print(r.student, r.tasks, r.reasons, r.review, r.exec_s, r.check_s)
