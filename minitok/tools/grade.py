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
   (submission, exercise), with limits on CPU time, memory, file size and processes, a
   scrubbed environment, a private folder and, as root, a uid of its own; inside bubblewrap
   when it is installed (no network, read-only files, no view of other submissions or of
   the course): grading/zygote.py, grading/sandbox.py. The worker only sends back plain
   data (grading/wire.py); nothing it prints or exits with is taken as a verdict;
4. this process prints a verdict per exercise and writes the reports, each atomically,
   never onto a submission: JSON (`--json`) and a gradebook CSV (`--csv`, one row per
   student and lesson, one column per exercise). Everything printed that comes from a
   submission (its file name, its messages) is escaped and quoted, so that it can draw
   nothing on the terminal and never reads as a verdict.

The first judge begins with a preflight: a worker of its first zygote loads an empty
submission; if that fails (a sandbox that cannot run here), the run stops with one error,
scores nothing and writes no report. A file that is not a regular file (a symbolic link, a
folder, a FIFO, a device) is refused as a submission, with a line in the report; the others
are graded.

docs/instructors.md says what is guaranteed with and without the sandbox.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import os
import shutil
import stat
import sys
import tempfile
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path

from minitok import validate
from minitok.checks import exercises_in
from minitok.tools.grading import submission
from minitok.tools.grading.judge import Unit, run_units
from minitok.tools.grading.sandbox import (
    MAX_JOBS,
    MODES,
    ZygoteError,
    build_library,
    bwrap_problem,
    make_plan,
    release_uids,
)

NO_SANDBOX = ("without the sandbox, a worker can read every file the grader's user can read "
              "(as root: every file readable by anyone): other submissions, and minitok's "
              "installed source, from which a submission can run minitok's reference and "
              "score as if it were its own. Grade untrusted work with bubblewrap.")
PROGRESS_AFTER = 2.0  # seconds: a run shorter than this shows no progress bar


class GraderCannotRun(ValueError):
    """The grader cannot run a worker here (a sandbox that does not work): nothing graded."""


@dataclass
class Report:
    """One submission's grade."""

    submission: str
    lesson: str | None
    student: str = ""
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
    chosen = [Path(os.path.realpath(r)) for r in reports if r is not None]
    if len(set(chosen)) != len(chosen):
        raise ValueError("--json and --csv must be different files")
    for report in chosen:
        if report.is_dir():
            raise ValueError(f"the report {report} is a folder")
        for path in paths:
            sub = Path(os.path.realpath(path))
            if report == sub or sub in report.parents:
                raise ValueError(f"the report {report} would overwrite the submission {path}")


# --------------------------------------------------------------------------- grading


def grade_reports(paths: list[Path], timeout: float = 60.0, jobs: int | None = None,
                  sandbox: str = "auto", reports: list[Path] = (),
                  progress: bool = False) -> tuple[list[Report], str]:
    """Grade every submission; (reports in the order given, the isolation mode used).

    GraderCannotRun (a ValueError) when no worker can run here: nothing is graded then.
    `progress`: show a progress bar on stderr when the run lasts."""
    timeout = validate.number(timeout, "--timeout", low=0, low_open=True)
    jobs = validate.positive_int((os.cpu_count() or 1) if jobs is None else jobs, "--jobs")
    if jobs > MAX_JOBS:
        raise ValueError(f"--jobs must be at most {MAX_JOBS}, got {jobs}")
    mode = sandbox_mode(sandbox)
    paths = [Path(p) for p in paths]
    students = student_names(paths)
    graded = [_read(path, student) for path, student in zip(paths, students, strict=True)]
    regular = [path for path in paths if refusal(path) is None]
    plan = make_plan(mode, timeout, regular, list(reports), jobs)
    try:
        units = _units(graded, plan)
        bar = _progress_bar(len(units)) if progress else None
        try:  # a failed preflight (judge.run_units) returns no verdict at all
            results = run_units(units, plan, jobs, bar.update if bar else None)
        except ZygoteError as err:
            raise GraderCannotRun(cannot_run(mode, err)) from None
        finally:
            if bar is not None:
                bar.close()
    finally:
        release_uids(plan)
        shutil.rmtree(plan.run_dir, ignore_errors=True)
    for report, _, decided in graded:
        for verdict in decided.values():
            result = results[verdict] if isinstance(verdict, int) else verdict
            report.exercises.append(result.to_dict())
        report.score = sum(item["status"] == "passed" for item in report.exercises)
    return [report for report, _, _ in graded], mode


def cannot_run(mode: str, err: Exception) -> str:
    """The one error of a run whose workers cannot start (see grade_reports)."""
    way_out = ("grade without it with --sandbox none (read the threat model in docs/instructors.md "
               "first: a worker can then read your files)" if mode == "bwrap" else
               "check that this Python can start and import torch")
    return (f"cannot start a grading worker (sandbox: {MODES[mode]}): {err}. Nothing was "
            f"graded and no report was written; {way_out}.")


def _progress_bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, file=sys.stderr, unit="exercise", desc="grading",
                delay=PROGRESS_AFTER, dynamic_ncols=True)


def student_names(paths: list[Path]) -> list[str]:
    """Who handed in each file: the <student> of nbgrader's submitted/<student>/<assignment>/
    (or autograded/) layout, else the file's path below the submissions' common folder."""
    absolute = [os.path.abspath(p) for p in paths]
    common = os.path.commonpath([os.path.dirname(p) for p in absolute]) if paths else ""
    names = []
    for path in absolute:
        parts = Path(path).parts
        if len(parts) >= 4 and parts[-4] in ("submitted", "autograded"):
            names.append(parts[-3])
        else:
            names.append(str(Path(os.path.relpath(path, common)).with_suffix("")))
    return names


def refusal(path: Path) -> str | None:
    """Why `path` is not a submission the grader reads (None: a regular file): a symbolic
    link (to solutions/, say), a folder, a FIFO, a device or a socket."""
    try:
        info = os.lstat(path)
    except OSError as err:
        return f"cannot read {path.name}: {err.strerror or err}"
    if stat.S_ISLNK(info.st_mode):
        return f"{path.name} is a symbolic link: hand in the notebook file itself"
    if stat.S_ISDIR(info.st_mode):
        return f"{path.name} is a folder, not a notebook"
    if not stat.S_ISREG(info.st_mode):
        return f"{path.name} is not a regular file (a FIFO, a device or a socket)"
    return None


def _read(path: Path, student: str) -> tuple[Report, list, dict]:
    """A submission's report so far, its kept statements, and its exercises' verdicts: a
    Result where one is known already, else the number of its unit (filled in by _units)."""
    report = Report(submission=str(path), lesson=None, student=student)
    report.error = refusal(path)
    if report.error:
        return report, [], {}
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


QUOTE = "\n        | "  # how a submission's text continues on another line


def escaped(text: str) -> str:
    """`text` safe to print: every control or formatting character (ANSI escapes, carriage
    returns, bidi overrides, line separators) written as an escape such as \\x1b; each
    line break starts a quoted line, so no line of it reads as a verdict."""
    out = []
    for char in text:
        if char == "\n":
            out.append(QUOTE)
        elif unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            out.append(char.encode("unicode_escape").decode("ascii") if ord(char) < 0x10000
                       else f"\\U{ord(char):08x}")
        else:
            out.append(char)
    return "".join(out)


def render(report: Report) -> str:
    """A submission's verdicts as printed: the grader's words at the start of each line,
    the submission's (file name, messages, hints) escaped and quoted after them."""
    label = {"passed": "PASS", "failed": "FAIL", "not done": "TODO", "error": "ERROR"}
    lines = [f"{escaped(report.submission)} ({report.lesson or 'unknown lesson'})"]
    if report.error:
        lines.append(f"  cannot grade: {escaped(report.error)}")
    lines += [f"  note: {escaped(note)}" for note in report.notes]
    for item in report.exercises:
        lines.append(f"  [{label[item['status']]}] {item['exercise']}: "
                     f"{escaped(item['message'])}")
        if item["hint"]:
            lines.append(f"         hint: {escaped(item['hint'])}")
    lines.append(f"  score: {report.score}/{report.max_score}")
    return "\n".join(lines)


def json_text(reports: list[Report], mode: str, timeout: float) -> str:
    grader = {"sandbox": MODES[mode], "timeout_s": timeout}
    if mode == "none":
        grader["warning"] = NO_SANDBOX
    return json.dumps({"grader": grader, "submissions": [asdict(r) for r in reports]},
                      indent=2) + "\n"


def csv_text(reports: list[Report]) -> str:
    """One row per student and lesson, one column per exercise (1 passed, 0 not), as an LMS
    reads. A student who handed in several notebooks of one lesson gets each exercise they
    passed in any of them; the row names every file."""
    names = list(dict.fromkeys(item["exercise"] for r in reports for item in r.exercises))
    rows: dict[tuple, list[Report]] = {}
    for r in reports:
        rows.setdefault((r.student, r.lesson or f"?{r.submission}"), []).append(r)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["student", "lesson", *names, "total", "max", "submission", "error"])
    for (student, _), group in rows.items():
        passed: dict[str, int] = {}
        for r in group:
            for item in r.exercises:
                won = int(item["status"] == "passed")
                passed[item["exercise"]] = max(passed.get(item["exercise"], 0), won)
        writer.writerow([_cell(student), group[0].lesson or "",
                         *[passed.get(n, "") for n in names], sum(passed.values()),
                         group[0].max_score, _cell("; ".join(r.submission for r in group)),
                         _cell("; ".join(r.error for r in group if r.error))])
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
                                  [Path(p) for p in (json_path, csv_path) if p], progress=True)
    print(f"graded {len(reports)} submission(s); sandbox: {MODES[mode]}")
    if mode == "none":
        print(f"warning: {NO_SANDBOX}")
    for report in reports:
        print(render(report))
    if json_path is not None:
        write_atomically(Path(json_path), json_text(reports, mode, float(timeout)))
        print(f"wrote {json_path}")
    if csv_path is not None:
        write_atomically(Path(csv_path), csv_text(reports))
        print(f"wrote {csv_path}")
    return 1 if any(r.error for r in reports) else 0
