"""`minitok grade`: score learners' submitted lesson notebooks, exercise by exercise.

    minitok grade submissions/*.ipynb --json report.json --csv grades.csv --timeout 60

A submission is untrusted code, so the grader never runs it in a process that judges it:

1. this process reads every notebook (never writing to it, never executing it: see
   grading/submission.py), finds its lesson, keeps its imports and def/class blocks, and
   scores 0 at once an exercise that is not defined, or that is minitok's own solution
   (imported, aliased, or called from the def);
2. `--jobs` judge processes (default: one per core) run each exercise's check: the check
   builds the inputs, computes minitok's reference and compares (grading/judge.py);
3. the learner's function runs in a worker forked from a warm zygote, one worker per
   (submission, exercise), with limits on time, memory, CPU, file size and processes, a
   scrubbed environment, a private folder and, as root, a uid of its own; inside bubblewrap
   when it is installed (no network, read-only files, no view of other submissions or of
   the course): grading/zygote.py, grading/sandbox.py. The worker only sends back plain
   data (grading/wire.py); nothing it prints or exits with is taken as a verdict;
4. this process prints a verdict per exercise and writes the reports, each atomically,
   never onto a submission: JSON (`--json`) and a gradebook CSV (`--csv`, one row per
   submission, one column per exercise).

docs/instructors.md says what is guaranteed with and without the sandbox.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from minitok import validate
from minitok.checks import exercises_in
from minitok.checks._core import Result
from minitok.tools.grading import submission
from minitok.tools.grading.judge import Unit, run_units
from minitok.tools.grading.sandbox import MODES, build_library, bwrap_problem, make_plan


@dataclass
class Report:
    """One submission's grade."""

    submission: str
    lesson: str | None
    score: int = 0
    max_score: int = 0
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    exercises: list[dict] = field(default_factory=list)


def sandbox_mode(choice: str) -> str:
    """"bwrap" or "none" for --sandbox auto|bwrap|none; ValueError if bwrap is asked for
    and cannot run here."""
    validate.one_of(choice, "--sandbox", ("auto", "bwrap", "none"))
    if choice == "none":
        return "none"
    problem = bwrap_problem()
    if problem and choice == "bwrap":
        raise ValueError(f"--sandbox bwrap: {problem}")
    return "none" if problem else "bwrap"


def check_report_paths(paths: list[Path], reports: list[Path | None]) -> None:
    """Refuse a report that would land on a submission, inside one, or on another report."""
    chosen = [Path(r).resolve() for r in reports if r is not None]
    if len(set(chosen)) != len(chosen):
        raise ValueError("--json and --csv must be different files")
    for report in chosen:
        if report.is_dir():
            raise ValueError(f"the report {report} is a folder")
        for path in paths:
            sub = Path(path).resolve()
            if report == sub or sub in report.parents:
                raise ValueError(f"the report {report} would overwrite the submission {path}")


# --------------------------------------------------------------------------- grading


def grade_reports(paths: list[Path], timeout: float = 60.0, jobs: int | None = None,
                  sandbox: str = "auto", reports: list[Path] = ()) -> tuple[list[Report], str]:
    """Grade every submission; (reports in the order given, the isolation mode used)."""
    timeout = validate.number(timeout, "--timeout", low=0, low_open=True)
    jobs = validate.positive_int((os.cpu_count() or 1) if jobs is None else jobs, "--jobs")
    mode = sandbox_mode(sandbox)
    graded = [_read(Path(p)) for p in paths]
    plan = make_plan(mode, timeout, [Path(p) for p in paths], list(reports))
    try:
        units = _units(graded, plan)
        results = run_units(units, plan, jobs)
    finally:
        shutil.rmtree(plan.run_dir, ignore_errors=True)
    for report, _, decided in graded:
        for verdict in decided.values():
            result = results[verdict] if isinstance(verdict, int) else verdict
            report.exercises.append(result.to_dict())
        report.score = sum(item["status"] == "passed" for item in report.exercises)
    return [report for report, _, _ in graded], mode


def _read(path: Path) -> tuple[Report, list, dict]:
    """A submission's report so far, its kept statements, and its exercises' verdicts: a
    Result where one is known already, else the number of its unit (filled in by _units)."""
    report = Report(submission=str(path), lesson=None)
    try:
        notebook = submission.read(path)
        lesson, alias = submission.lesson_of(notebook)
        module = importlib.import_module(f"minitok.checks.{lesson}")
    except submission.SubmissionError as err:
        report.error = str(err)
        return report, [], {}
    except ImportError:
        report.error = f"there is no lesson {lesson} in this version of minitok"
        return report, [], {}
    checks = exercises_in(module)
    report.lesson, report.max_score, report.notes = lesson, len(checks), notebook.notes
    decided = submission.prejudge(notebook, checks, alias)
    return report, notebook.kept(), {name: decided.get(name) for name in checks}


def _units(graded: list, plan) -> list[Unit]:
    """The units still to run, exercise-major; builds each exercise's stripped library."""
    units = []
    for report, statements, decided in graded:
        for name, result in decided.items():
            if result is None:
                units.append(Unit(len(units), report.lesson, name, statements))
                decided[name] = len(units) - 1
    units.sort(key=lambda u: (u.lesson, _position(u), u.number))
    for lesson, name in dict.fromkeys((u.lesson, u.exercise) for u in units):
        check = exercises_in(importlib.import_module(f"minitok.checks.{lesson}"))[name]
        plan.libraries[lesson, name] = build_library(plan.run_dir, lesson, check)
    return units


def _position(unit: Unit) -> int:
    """The exercise's place in its lesson, so units run in lesson order."""
    checks = exercises_in(importlib.import_module(f"minitok.checks.{unit.lesson}"))
    return list(checks).index(unit.exercise)


# --------------------------------------------------------------------------- reports


def render(report: Report) -> str:
    lines = [f"{report.submission} ({report.lesson or 'unknown lesson'})"]
    if report.error:
        lines.append(f"  cannot grade: {report.error}")
    lines += [f"  note: {note}" for note in report.notes]
    for item in report.exercises:
        lines.append("  " + Result(**item).render().replace("\n", "\n  "))
    lines.append(f"  score: {report.score}/{report.max_score}")
    return "\n".join(lines)


def json_text(reports: list[Report], mode: str, timeout: float) -> str:
    grader = {"sandbox": MODES[mode], "timeout_s": timeout}
    return json.dumps({"grader": grader, "submissions": [asdict(r) for r in reports]},
                      indent=2) + "\n"


def csv_text(reports: list[Report]) -> str:
    """One row per submission, one column per exercise (1 passed, 0 not), as an LMS reads."""
    names = list(dict.fromkeys(item["exercise"] for r in reports for item in r.exercises))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["submission", "lesson", *names, "total", "max", "error"])
    for r in reports:
        passed = {item["exercise"]: int(item["status"] == "passed") for item in r.exercises}
        writer.writerow([_cell(r.submission), r.lesson or "", *[passed.get(n, "") for n in names],
                         r.score, r.max_score, _cell(r.error or "")])
    return out.getvalue()


def _cell(text: str) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and a rename, so
    a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def grade(paths: list[Path], json_path: Path | None = None, csv_path: Path | None = None,
          timeout: float = 60.0, jobs: int | None = None, sandbox: str = "auto") -> int:
    """Grade, print the verdicts, write the reports; 1 if a submission was ungradable.

    Raises ValueError for bad arguments, before anything is graded."""
    check_report_paths(paths, [json_path, csv_path])
    reports, mode = grade_reports(paths, timeout, jobs, sandbox,
                                  [Path(p) for p in (json_path, csv_path) if p])
    print(f"graded {len(reports)} submission(s); sandbox: {MODES[mode]}")
    for report in reports:
        print(render(report))
    if json_path is not None:
        write_atomically(Path(json_path), json_text(reports, mode, float(timeout)))
        print(f"wrote {json_path}")
    if csv_path is not None:
        write_atomically(Path(csv_path), csv_text(reports))
        print(f"wrote {csv_path}")
    return 1 if any(r.error for r in reports) else 0
