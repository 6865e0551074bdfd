"""The learner's own copy of the lessons, and how far they have got.

    minitok workspace     copy lessons/ into workspace/ (only the notebooks not there yet)
    minitok progress      the exercises passed in each workspace notebook, lesson by lesson

`make lab` runs `minitok workspace` and opens Jupyter on workspace/, so a learner's work
lives in a folder that git ignores, that `make test` and `minitok assign` never look at,
and that no command ever overwrites. When a lesson is updated after the copy was made, the
learner's copy is kept and the new version waits in lessons/ (the notebook's metadata
remembers which version was copied).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nbformat

FOLDER = "workspace"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_workspace(root: Path, folder: str = FOLDER) -> int:
    """Copy every lessons/NN_*.ipynb that is not in `folder` yet; never overwrite one."""
    lessons = sorted((root / "lessons").glob("[0-9][0-9]_*.ipynb"))
    if not lessons:
        print(f"minitok workspace: no lessons in {root / 'lessons'}")
        return 1
    target = root / folder
    target.mkdir(exist_ok=True)
    for lesson in lessons:
        mine = target / lesson.name
        if not mine.exists():
            notebook = nbformat.read(lesson, as_version=4)
            notebook.metadata["minitok"] = {"lesson_sha256": _digest(lesson)}
            nbformat.write(notebook, mine)
            print(f"copied lessons/{lesson.name} to {folder}/{lesson.name}")
            continue
        copied = nbformat.read(mine, as_version=4).metadata.get("minitok", {})
        if copied.get("lesson_sha256") != _digest(lesson):
            print(f"kept your {folder}/{lesson.name}; lessons/{lesson.name} has changed since "
                  f"you copied it (compare them, or copy the new one under another name)")
    return 0


def progress(root: Path, folder: str = FOLDER, sandbox: str = "auto") -> int:
    """Grade the workspace's notebooks with the grader's checks; print a table per lesson."""
    from minitok.tools.grade import grade_reports

    mine = sorted((root / folder).glob("[0-9][0-9]_*.ipynb"))
    if not mine:
        print(f"minitok progress: no notebooks in {folder}/ yet: run `make lab` first")
        return 1
    reports, mode = grade_reports(mine, timeout=60.0, sandbox=sandbox)
    print(f"{'lesson':<28} {'passed':>7}   still to do")
    for path, report in zip(mine, reports, strict=True):
        if report.error:
            print(f"{path.stem:<28} {'-':>7}   cannot grade: {report.error}")
            continue
        todo = [e["exercise"] for e in report.exercises if e["status"] != "passed"]
        print(f"{path.stem:<28} {report.score:>3}/{report.max_score:<3}   "
              f"{', '.join(todo) or 'all done'}")
    print(f"(graded with the same checks as `minitok grade`; sandbox: {mode})")
    return 0
