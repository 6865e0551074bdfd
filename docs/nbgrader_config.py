"""nbgrader settings for grading minitok's lessons: copy this file into your nbgrader course
folder (the one holding source/, submitted/ and gradebook.db) and edit the course id.

nbgrader executes every notebook it autogrades. Two settings decide whether a solved lesson
scores what `minitok grade` gives it:

- the cell timeout: nbgrader's default of 30 s per cell is too short for the lessons (Lesson
  01's codebook loop, Lesson 08's training cell, and on a loaded machine even an import cell
  can take longer); a cell that times out stops the notebook and every test after it scores 0.
- MINITOK_FAST=1: the lessons' fast mode (fewer training steps, smaller samples), the mode
  the checks are written for when a notebook runs unattended. The kernels nbgrader starts
  inherit its environment, so setting it here reaches them.

tests/test_nbgrader.py grades a solved and an unsolved Lesson 01 with this very file.
"""

import os

c = get_config()  # noqa: F821 (nbgrader defines get_config when it reads this file)

c.CourseDirectory.course_id = "minitok"  # your course's id
c.Execute.timeout = 900  # seconds per cell (nbgrader's default: 30)
os.environ.setdefault("MINITOK_FAST", "1")  # the lessons' fast mode, in every kernel
