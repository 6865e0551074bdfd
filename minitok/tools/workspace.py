"""The learner's own copy of the lessons, and how far they have got.

    minitok workspace     copy lessons/ into workspace/ (only the notebooks not there yet)
    minitok progress      the exercises passed and written in each workspace notebook, a
                          line per lesson as it goes (a stub is "not done" by reading it)

`make lab` runs `minitok workspace` and opens Jupyter on workspace/, so a learner's work
lives in a folder that git ignores, that `make test` and `minitok assign` never look at,
and that no command ever overwrites. When a lesson is updated after the copy was made, the
learner's copy is kept and the new version waits in lessons/ (the notebook's metadata
remembers which version was copied).
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from types import SimpleNamespace

import nbformat

from minitok.tools.assign import AssignError, safe_write

FOLDER = "workspace"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_workspace(root: Path, folder: str = FOLDER) -> int:
    """Copy every lessons/NN_*.ipynb that is not in `folder` yet; never overwrite one, never
    write through a symlink (a link in `folder` is left alone, with a message)."""
    lessons = sorted((root / "lessons").glob("[0-9][0-9]_*.ipynb"))
    if not lessons:
        print(f"minitok workspace: no lessons in {root / 'lessons'}")
        return 1
    target = root / folder
    if target.is_symlink():
        print(f"minitok workspace: {folder}/ is a symlink: minitok never writes through one")
        return 1
    target.mkdir(exist_ok=True)
    code = 0
    for lesson in lessons:
        mine = target / lesson.name
        if mine.is_symlink():
            print(f"{folder}/{lesson.name} is a symlink: not written through (replace it with "
                  "the file itself, or remove it to get a fresh copy)")
            code = 1
        elif not mine.exists():
            notebook = nbformat.read(lesson, as_version=4)
            notebook.metadata["minitok"] = {"lesson_sha256": _digest(lesson)}
            try:
                safe_write(mine, nbformat.writes(notebook), new=True)
            except AssignError as err:
                print(f"minitok workspace: {err}")
                code = 1
                continue
            print(f"copied lessons/{lesson.name} to {folder}/{lesson.name}")
        elif nbformat.read(mine, as_version=4).metadata.get("minitok", {}).get(
                "lesson_sha256") != _digest(lesson):
            print(f"kept your {folder}/{lesson.name}; lessons/{lesson.name} has changed since "
                  f"you copied it (compare them, or copy the new one under another name)")
    return code


def progress(root: Path, folder: str = FOLDER, sandbox: str = "auto") -> int:
    """The workspace's notebooks judged by the grader's checks, a line per lesson as it goes.

    An exercise still as `assign` wrote it is "not done" by reading the notebook
    (grading.submission.prejudge); a lesson with anything else to judge is graded with the
    same checks and workers as `minitok grade`."""
    mine = sorted((root / folder).glob("[0-9][0-9]_*.ipynb"))
    if not mine:
        print(f"minitok progress: no notebooks in {folder}/ yet: run `make lab` first")
        return 1
    print(f"{'lesson':<28} {'passed':>7} {'written':>8}   still to do", flush=True)
    modes = set()
    for path in mine:
        report = _read_only(path)
        if report is None:
            from minitok.tools.grade import grade_reports

            (report,), mode = grade_reports([path], timeout=60.0, sandbox=sandbox)
            modes.add(mode)
        print(_line(path, report), flush=True)
    how = f"sandbox: {', '.join(sorted(modes))}" if modes else "every exercise read, none run"
    print(f"(judged with the same checks as `minitok grade`; {how})")
    return 0


def _read_only(path: Path) -> SimpleNamespace | None:
    """The lesson's report when reading it decides every exercise (a stub, a missing def,
    minitok's reference used), without starting a worker; None when something must run."""
    from minitok.checks._core import exercises_in
    from minitok.tools.grading import submission

    try:
        notebook = submission.read(path)
        lesson, alias = submission.lesson_of(notebook)
        checks = exercises_in(importlib.import_module(f"minitok.checks.{lesson}"))
    except (submission.SubmissionError, ImportError) as err:
        return SimpleNamespace(error=str(err), exercises=[], score=0, max_score=0)
    decided = submission.prejudge(notebook, checks, alias)
    if set(decided) != set(checks):
        return None
    exercises = [decided[name].to_dict() for name in checks]
    return SimpleNamespace(error=None, exercises=exercises, max_score=len(checks),
                           score=sum(e["status"] == "passed" for e in exercises))


def _line(path: Path, report) -> str:
    """One lesson's line: passed, written (no longer the stub), the exercises left."""
    if report.error:
        return f"{path.stem:<28} {'-':>7} {'-':>8}   cannot grade: {report.error}"
    todo = [e["exercise"] for e in report.exercises if e["status"] != "passed"]
    written = sum(e["status"] != "not done" for e in report.exercises)
    return (f"{path.stem:<28} {report.score:>3}/{report.max_score:<3} "
            f"{written:>4}/{report.max_score:<3}   {', '.join(todo) or 'all done'}")
