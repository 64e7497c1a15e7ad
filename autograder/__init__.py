"""Release, execute, grade and report on the EfficientML labs.

Built on nbgrader (release, cell restoration, gradebook, feedback) and
papermill (parameterised execution). The `effml` command is `autograder.cli`.
"""
