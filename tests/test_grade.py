"""`minitok grade` on real submissions: solved, unsolved, one mistake; its reports, its
arguments; a lesson's verdicts are the same in the notebook and in the grader; the worker
process carries gradients, in-place changes and probes (lessons 02-04).

Also: the sandbox works wherever Python lives (a virtual environment under /tmp, in a home,
in the checkout), a sandbox that cannot run stops the run with one error, a busy machine
costs a correct submission nothing, the progress bar and the gradebook's student column.

Attacks and broken files are in tests/test_grade_hostile.py.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import nbformat
import pytest
from notebooks import ROOT, write_notebook

import minitok.tools.grade as grade_module
from minitok import maskgit
from minitok.checks import lesson06, verdict
from minitok.checks._core import run_check
from minitok.tools.cli import main as cli
from minitok.tools.grade import Report, csv_text, grade, grade_reports, student_names
from minitok.tools.grading import sandbox

SOLUTION = ROOT / "solutions" / "01_vector_quantization.ipynb"
LESSON = ROOT / "lessons" / "01_vector_quantization.ipynb"
EXERCISES = 7
MISTAKES = {  # exercise -> (the solution's line, a classic mistake, words of the hint)
    "squared_distances": ("z_sq - 2.0 * z @ codebook.T", "z_sq + 2.0 * z @ codebook.T", "sign"),
    "perplexity": ("(p * p.log()).sum()", "(p * p.log2()).sum()", "log"),
    # kmeans calls kmeans_step: a wrong step must cost the step only, and a wrong loop the loop
    "kmeans_step": ("sums[used] / counts[used, None]", "sums[used]", "mean of its vectors"),
    "kmeans": ("for _ in range(iters):", "for _ in range(iters + 1):", "exactly iters times"),
}

pytestmark = pytest.mark.slow


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mutated(path, old: str, new: str):
    """The solution with one line of one exercise changed into a classic mistake."""
    notebook = nbformat.read(SOLUTION, as_version=4)
    hits = 0
    for cell in notebook.cells:
        if old in cell.source:
            cell.source = cell.source.replace(old, new)
            hits += 1
    assert hits == 1, f"the solution no longer contains {old!r}"
    nbformat.write(notebook, path)
    return path


@pytest.fixture(scope="module")
def lesson01(tmp_path_factory):
    """One run over the solution, the unsolved lesson and one mistake per MISTAKES entry."""
    folder = tmp_path_factory.mktemp("grade")
    paths = {"solution": SOLUTION, "lesson": LESSON}
    paths.update({name: _mutated(folder / f"{name}.ipynb", old, new)
                  for name, (old, new, _) in MISTAKES.items()})
    before = _digest(SOLUTION)
    json_path, csv_path = folder / "out" / "report.json", folder / "out" / "grades.csv"
    code = grade(list(paths.values()), json_path=json_path, csv_path=csv_path, timeout=120,
                 jobs=2)
    content = json.loads(json_path.read_text())
    reports = dict(zip(paths, content["submissions"], strict=True))
    return {"code": code, "reports": reports, "grader": content["grader"], "csv": csv_path,
            "solution_unchanged": _digest(SOLUTION) == before}


def test_solution_gets_full_marks_and_is_not_modified(lesson01):
    report = lesson01["reports"]["solution"]
    assert lesson01["code"] == 0 and lesson01["solution_unchanged"]
    assert report["lesson"] == "lesson01"
    assert (report["score"], report["max_score"]) == (EXERCISES, EXERCISES)


def test_unsolved_lesson_scores_zero_without_error(lesson01):
    report = lesson01["reports"]["lesson"]
    assert report["error"] is None
    assert (report["score"], report["max_score"]) == (0, EXERCISES)
    assert {item["status"] for item in report["exercises"]} == {"not done"}


@pytest.mark.parametrize("exercise", list(MISTAKES))
def test_one_mistake_fails_exactly_that_exercise(lesson01, exercise):
    status = {item["exercise"]: item for item in lesson01["reports"][exercise]["exercises"]}
    assert status[exercise]["status"] == "failed"
    assert MISTAKES[exercise][2] in (status[exercise]["hint"] or "").lower()
    others = {name: item["status"] for name, item in status.items() if name != exercise}
    assert set(others.values()) == {"passed"}, others


def test_the_reports_say_how_it_ran_and_the_csv_is_a_gradebook(lesson01):
    assert lesson01["grader"]["sandbox"] in ("bubblewrap", "none (process limits only)")
    rows = list(csv.DictReader(lesson01["csv"].open()))
    assert [row["total"] for row in rows] == ["7", "0", "6", "6", "6", "6"]
    assert [row["student"].rsplit("/")[-1] for row in rows[2:]] == list(MISTAKES)  # the files
    assert rows[0]["nearest_code"] == "1" and rows[1]["nearest_code"] == "0"
    assert rows[2]["squared_distances"] == "0" and rows[2]["error"] == ""


def test_not_a_notebook_is_a_clear_error(tmp_path, capsys):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{ this is not json")
    assert grade([broken], timeout=10) == 1
    out = capsys.readouterr().out
    assert "cannot grade: broken.ipynb is not valid JSON" in out
    assert broken.read_text() == "{ this is not json"


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("args, words", [
    (["--timeout", "nan"], "--timeout must be a finite number"),
    (["--timeout", "inf"], "--timeout must be a finite number"),
    (["--timeout", "0"], "--timeout must lie in (0, inf]"),
    (["--timeout", "-5"], "--timeout must lie in (0, inf]"),
    (["--jobs", "0"], "--jobs must be a positive int"),
])
def test_bad_arguments_are_refused_before_grading(tmp_path, capsys, args, words):
    assert cli(["grade", str(SOLUTION), *args]) == 2
    assert words in capsys.readouterr().err


def test_a_report_never_lands_on_a_submission(tmp_path, capsys):
    submission = tmp_path / "sub.ipynb"
    submission.write_bytes(SOLUTION.read_bytes())
    assert cli(["grade", str(submission), "--json", str(submission)]) == 2
    assert cli(["grade", str(submission), "--csv", str(submission / "x.csv")]) == 2
    assert cli(["grade", str(submission), "--json", str(tmp_path / "r"),
                "--csv", str(tmp_path / "r")]) == 2
    assert submission.read_bytes() == SOLUTION.read_bytes()
    assert "would overwrite the submission" in capsys.readouterr().err


def test_a_report_goes_into_a_new_folder(tmp_path):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("[]")
    report = tmp_path / "new" / "folder" / "report.json"
    assert grade([broken], json_path=report, timeout=10) == 1
    assert json.loads(report.read_text())["submissions"][0]["error"]


# --------------------------------------------------------------------------- one verdict

FLOAT32_GAMMA = '''def gamma(schedule, ratio):
    r = torch.as_tensor(ratio, dtype=torch.float32)  # float32: floors come out one short
    return torch.cos(math.pi / 2 * r).clamp(1e-6, 1.0)
'''


def test_one_wrong_exercise_costs_only_itself_in_the_notebook_and_in_the_grader(tmp_path):
    """Lesson 06: a float32 gamma makes the learner's own mask_len plan 511 instead of 512;
    mask_len is judged with minitok's gamma, in the notebook and in the grader alike."""
    mask_len = inspect.getsource(maskgit.mask_len)
    cells = ["import math\nimport torch\nfrom minitok.checks import lesson06 as check",
             FLOAT32_GAMMA, mask_len]
    namespace: dict = {}
    for cell in cells:
        exec(cell, namespace)
    assert run_check("mask_len", lesson06.mask_len.test, namespace["mask_len"]).status == "failed"
    assert verdict(lesson06.mask_len, namespace["mask_len"]).passed  # the notebook's check
    path = write_notebook(tmp_path / "06.ipynb", *cells)
    (report,), _ = grade_reports([path], timeout=120, jobs=2)
    status = {item["exercise"]: item["status"] for item in report.exercises}
    assert status["mask_len"] == "passed", report


# --------------------------------------------------------------------------- the worker


def test_gradients_in_place_changes_and_probes_cross_the_process_boundary(tmp_path):
    """Lesson 02's solution: straight-through gradients and the codebook's, the EMA's inputs
    left alone, a class built in the worker (Lessons 03 and 04, whose full marks need the
    adaptive weight's probe and a KV cache written in place, are graded in test_export).
    And a Transformer that is minitok's own class: not the learner's."""
    paths = [ROOT / "solutions" / "02_straight_through.ipynb"]
    shortcut = write_notebook(tmp_path / "04.ipynb", "from minitok.checks import lesson04 as "
                              "check", "from minitok import transformer\n\n"
                              "class Transformer(transformer.Transformer):\n    pass")
    *reports, cheat = grade_reports([*paths, shortcut], timeout=120, jobs=2)[0]
    for report in reports:
        assert report.error is None and report.score == report.max_score, report
    forward = {item["exercise"]: item for item in cheat.exercises}["Transformer"]
    assert forward["status"] == "failed"
    assert "minitok's reference transformer.Transformer" in forward["message"]


# --------------------------------------------------------------------------- where Python lives

SMALL = ["import sys\nimport torch\nfrom minitok.checks import lesson01 as check",
         "def codebook_usage(indices, num_codes):\n"
         "    return torch.unique(indices).numel() / num_codes",
         "def perplexity(indices, num_codes):\n"
         "    raise ValueError('PREFIX=' + sys.prefix + ' EXE=' + sys.executable)"]
GRADE_ONE = ("import json, sys; from minitok.tools.grade import grade_reports; "
             "(r,), mode = grade_reports([sys.argv[1]], timeout=60, jobs=1, sandbox=sys.argv[2]); "
             "print(json.dumps({'mode': mode, 'exercises': r.exercises}))")


def _venv(folder: Path) -> Path:
    """A virtual environment at `folder` (no pip: cheap) that imports torch from this one:
    its own prefix and interpreter, the grader's packages through a .pth file."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    packages = sysconfig.get_paths()["purelib"]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (folder / "lib" / version / "site-packages" / "grader.pth").write_text(packages + "\n")
    return folder / "bin" / "python"


def _grade_with(python: Path, submission: Path, mode: str, home: Path | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if home is not None:
        env["HOME"] = str(home)
    done = subprocess.run([str(python), "-c", GRADE_ONE, str(submission), mode], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("where", ["tmp", "home", "checkout"])
@pytest.mark.parametrize("mode", ["bwrap", "none"])
def test_the_grader_runs_from_a_python_wherever_it_lives(tmp_path, where, mode):
    """The grader's Python in a venv under /tmp, in a home folder (hidden by the sandbox)
    and in the course checkout (hidden too): its workers run that very interpreter, and a
    correct exercise passes."""
    if mode == "bwrap" and sandbox.bwrap_problem():
        pytest.skip(f"no sandbox here: {sandbox.bwrap_problem()}")
    home = None
    if where == "tmp":
        base = Path(tempfile.mkdtemp(prefix="grader-venv-", dir="/tmp"))
    elif where == "home":  # outside /tmp, so that only the hidden home covers it
        home = Path(tempfile.mkdtemp(prefix="grader-home-", dir="/var/tmp"))
        base = home
    else:
        base = Path(tempfile.mkdtemp(prefix=".grader-venv-", dir=ROOT))
    try:
        python = _venv(base / "venv")
        submission = write_notebook(tmp_path / "small.ipynb", *SMALL)
        got = _grade_with(python, submission, mode, home)
        verdicts = {item["exercise"]: item for item in got["exercises"]}
        assert got["mode"] == mode
        assert verdicts["codebook_usage"]["status"] == "passed", verdicts
        message = verdicts["perplexity"]["message"]
        assert f"PREFIX={base / 'venv'}" in message, message
        assert f"EXE={base / 'venv' / 'bin' / 'python'}" in message, message
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("mode", ["bwrap", "none"])
def test_a_sandbox_that_cannot_run_stops_the_run_with_one_error(tmp_path, capsys,
                                                                monkeypatch, mode):
    """Workers that cannot start (here: an interpreter that is not there, as a Python the
    sandbox does not show would be): one error, exit status 2, no report, nothing scored."""
    if mode == "bwrap" and sandbox.bwrap_problem():
        pytest.skip(f"no sandbox here: {sandbox.bwrap_problem()}")
    command = sandbox.Plan.command

    def missing_python(self, *args):
        return [("/nonexistent/bin/python" if part == sys.executable else part)
                for part in command(self, *args)]

    monkeypatch.setattr(sandbox.Plan, "command", missing_python)
    submission = write_notebook(tmp_path / "small.ipynb", *SMALL)
    report = tmp_path / "grades.csv"
    assert cli(["grade", str(submission), "--csv", str(report), "--sandbox", mode]) == 2
    out, err = capsys.readouterr()
    assert err.count("cannot start a grading worker") == 1, err
    assert f"(sandbox: {sandbox.MODES[mode]})" in err and "/nonexistent/bin/python" in err
    assert "Nothing was graded" in err
    assert ("--sandbox none" in err) == (mode == "bwrap")
    assert not report.exists() and "[ERROR]" not in out and "score:" not in out


# --------------------------------------------------------------------------- load


def _solution_classes(path: Path, solution: Path, *classes: str) -> Path:
    """A notebook at `path` of the solution's import cell and the cells defining `classes`."""
    cells = [cell.source for cell in nbformat.read(solution, as_version=4).cells
             if cell.cell_type == "code"]
    keep = [cells[0], *(source for source in cells if any(
        source.startswith(f"class {c}(") for c in classes))]
    assert len(keep) == 1 + len(classes), solution
    return write_notebook(path, *keep)


def test_a_busy_machine_costs_a_correct_submission_nothing(tmp_path):
    """Correct class exercises (Lesson 02's VectorQuantizer, Lesson 04's Transformer and its
    parts), one submission per worker, while busy loops hold every core: the limits count
    CPU time, so every one passes."""
    paths = [_solution_classes(tmp_path / "02.ipynb", ROOT / "solutions" /
                               "02_straight_through.ipynb", "VectorQuantizer"),
             _solution_classes(tmp_path / "04.ipynb", ROOT / "solutions" / "04_transformer.ipynb",
                               "SelfAttention", "Block", "Transformer")]
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(os.cpu_count() or 1)]
    try:
        reports, _ = grade_reports(paths, timeout=60, jobs=2)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    graded = {item["exercise"]: item["status"] for report in reports
              for item in report.exercises if item["status"] != "not done"}
    assert graded == dict.fromkeys(["VectorQuantizer", "SelfAttention", "Block", "Transformer"],
                                   "passed"), reports


# --------------------------------------------------------------------------- reports


def test_the_gradebook_has_a_row_per_student_and_lesson(tmp_path, lesson01):
    """nbgrader's submitted/<student>/<assignment>/ layout names the student, elsewhere the
    file does; two notebooks of one lesson from one student make one row, with every
    exercise passed in either (the fixture's graded mistakes fail one exercise each)."""
    nbgrader = [tmp_path / "submitted" / student / "lesson01" / name for student, name in (
        ("alice", "01_vector_quantization.ipynb"), ("bob", "01_vector_quantization.ipynb"),
        ("bob", "01_again.ipynb"))]
    assert student_names(nbgrader) == ["alice", "bob", "bob"]
    plain = [tmp_path / "class" / "carol.ipynb", tmp_path / "class" / "dan.ipynb"]
    assert student_names(plain) == ["carol", "dan"]
    graded = lesson01["reports"]
    reports = [Report(**{**graded[name], "student": student}) for name, student in (
        ("solution", "alice"), ("squared_distances", "bob"), ("kmeans", "bob"),
        ("lesson", "carol"))]
    rows = list(csv.DictReader(csv_text(reports).splitlines()))
    assert [(row["student"], row["lesson"], row["total"]) for row in rows] == [
        ("alice", "lesson01", "7"), ("bob", "lesson01", "7"), ("carol", "lesson01", "0")]
    assert rows[1]["submission"].count(".ipynb") == 2


@pytest.mark.parametrize("after, shown", [(0.0, True), (3600.0, False)])
def test_a_run_longer_than_progress_after_shows_a_progress_bar_on_stderr(tmp_path, capsys,
                                                                         monkeypatch, after,
                                                                         shown):
    """The bar shows once a run has lasted PROGRESS_AFTER seconds (2), and a shorter run
    shows none; set to 0 and to an hour here, since how long two exercises take (two judges
    importing torch) is the machine's, not the test's."""
    monkeypatch.setattr(grade_module, "PROGRESS_AFTER", after)
    path = write_notebook(tmp_path / "small.ipynb", *SMALL)
    assert grade([path], timeout=120, jobs=2) == 0
    out, err = capsys.readouterr()
    assert ("grading: 100%" in err and "2/2" in err) == shown, err
    assert "grading:" not in out and ("grading:" in err) == shown


def test_a_judge_that_spends_too_much_cpu_on_an_answer_is_ended(monkeypatch, tmp_path):
    """Whatever a worker answers, the judge's CPU per unit is bounded: past the bound the
    pool ends the judge, and the unit is an error that says why; the run goes on."""
    from minitok.tools.grading import judge

    def busy(self, unit):
        if unit.exercise == "spin":
            while True:
                pass
        return judge.Result(unit.exercise, "passed", "ok")

    monkeypatch.setattr(judge.Judge, "grade", busy)
    monkeypatch.setattr(judge.Judge, "preflight", lambda self, unit: None)
    monkeypatch.setattr(judge, "JUDGE_CPU_SECONDS", 1)
    plan = sandbox.Plan("none", tmp_path, timeout=0.5)
    units = [judge.Unit(0, "lesson01", "spin", []), judge.Unit(1, "lesson01", "fine", [])]
    results = judge.run_units(units, plan, jobs=1)
    assert results[0].status == "error" and "s of CPU time judging" in results[0].message
    assert results[1].status == "passed"


def test_a_failed_preflight_stops_the_run_with_no_verdict(monkeypatch, tmp_path):
    """The first judge preflights before its first unit (sandbox.preflight); when that fails,
    run_units raises its error and returns no verdict, whatever the other judge graded."""
    from minitok.tools.grading import judge

    def cannot(self, unit):
        raise sandbox.ZygoteError("no worker can start here")

    monkeypatch.setattr(judge.Judge, "grade",
                        lambda self, unit: judge.Result(unit.exercise, "passed", "ok"))
    monkeypatch.setattr(judge.Judge, "preflight", cannot)
    plan = sandbox.Plan("none", tmp_path, timeout=0.5)
    units = [judge.Unit(n, "lesson01", f"exercise{n}", []) for n in range(4)]
    with pytest.raises(sandbox.ZygoteError, match="no worker can start here"):
        judge.run_units(units, plan, jobs=2)


@contextlib.contextmanager
def _one_judge(mode: str, names: tuple[str, ...]):
    """A judge of lesson01's exercises `names`, in a plan of its own (as grade makes it)."""
    from minitok.checks import exercises_in, lesson01
    from minitok.tools.grading import judge

    plan = sandbox.make_plan(mode, 60, [], [], jobs=1)
    one = None
    try:
        checks = exercises_in(lesson01)
        for name in names:
            plan.libraries["lesson01", name] = sandbox.build_library(plan.run_dir, "lesson01",
                                                                     checks[name])
        one = judge.Judge(plan, 0)
        yield one
    finally:
        if one is not None:
            one.close()
        sandbox.release_uids(plan)
        shutil.rmtree(plan.run_dir, ignore_errors=True)


SWITCHED = ("squared_distances", "codebook_usage")


@pytest.mark.parametrize("mode", ["bwrap", "none"])
def test_one_judge_switches_exercises_each_with_its_own_library(tmp_path, mode):
    """A judge starts one process in the sandbox and forks a zygote per exercise: each zygote
    imports its exercise's copy of minitok, never one a previous zygote imported, and the
    previous zygote is dead once the next is ready. minitok's own function is the
    submission's: it raises in its exercise's copy and works in the other's."""
    from minitok.tools.grading import submission
    from minitok.tools.grading.judge import Unit
    from minitok.tools.grading.zygote import children_of

    if mode == "bwrap" and sandbox.bwrap_problem():
        pytest.skip(f"no sandbox here: {sandbox.bwrap_problem()}")
    theirs = submission.read(write_notebook(
        tmp_path / "theirs.ipynb", f"from minitok.quantize import {', '.join(SWITCHED)}")).kept()
    with _one_judge(mode, SWITCHED) as one:
        first, zygotes = None, []
        for name in (*SWITCHED, SWITCHED[0]):
            result = one.grade(Unit(0, "lesson01", name, theirs))
            assert result.status == "failed" and "minitok's reference" in result.message, (
                name, result)
            first = first or one.zygote.process.pid
            assert one.zygote.process.pid == first  # started once: torch imported once
            if mode == "none":  # the process in the sandbox is this one's child
                zygotes.append(children_of(first))
                assert len(zygotes[-1]) == 1, zygotes  # the previous zygote is gone
        other = Unit(0, "lesson01", SWITCHED[1], submission.read(write_notebook(
            tmp_path / "other.ipynb", f"import torch\nfrom minitok.quantize import {SWITCHED[0]}",
            "def codebook_usage(indices, num_codes):\n"
            "    squared_distances(torch.zeros(1, 1), torch.zeros(1, 1))\n"
            "    return torch.unique(indices).numel() / num_codes")).kept())
        assert one.grade(other).status == "passed"  # squared_distances works here
        assert len({pid for found in zygotes for pid in found}) == len(zygotes)


def test_a_library_that_cannot_be_put_in_place_costs_its_unit_only(tmp_path, monkeypatch):
    """Without root nor sandbox a worker can write its library folder; when the judge then
    cannot empty it, that unit is an error and the judge starts afresh in a new folder."""
    from minitok.tools.grading import submission
    from minitok.tools.grading.judge import Unit

    statements = submission.read(write_notebook(
        tmp_path / "theirs.ipynb", "import torch",
        "def codebook_usage(indices, num_codes):\n"
        "    return torch.unique(indices).numel() / num_codes")).kept()
    fill = sandbox._fill

    def refused(folder, library):
        raise PermissionError(13, "Permission denied", str(folder / "minitok"))

    with _one_judge("none", SWITCHED) as one:
        assert one.grade(Unit(0, "lesson01", "squared_distances", statements)).status == "not done"
        folder = one.zygote.library
        monkeypatch.setattr(sandbox, "_fill", refused)
        result = one.grade(Unit(1, "lesson01", "codebook_usage", statements))
        assert result.status == "error" and "cannot put the exercise's library" in result.message
        assert one.zygote is None and not folder.exists()
        monkeypatch.setattr(sandbox, "_fill", fill)
        assert one.grade(Unit(2, "lesson01", "codebook_usage", statements)).status == "passed"
        assert one.zygote.library != folder
