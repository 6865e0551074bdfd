"""One verdict everywhere: an answer that uses notebook-level constants, lambdas, helpers from
other cells and decorators gets the same verdict in the notebook (the check called there),
in `minitok grade` and in `minitok progress` (nbgrader: tests/test_nbgrader.py). Where the
grader cannot keep a statement, the verdict names the name and says why; an endless loop in
one def's default argument costs only its own exercise.
"""

from __future__ import annotations

import pytest
from notebooks import write_notebook

from minitok.checks import lesson01, verdict
from minitok.tools.grade import grade_reports
from minitok.tools.workspace import progress

pytestmark = pytest.mark.slow

HEAD = "import torch\nfrom minitok.checks import lesson01 as check"
NOTEBOOK_LEVEL = ("TWO = 2.0\nentropy = lambda p: -(p * p.log()).sum()\n\n\n"
                  "def passthrough(fn):\n    return fn")
HELPER = "def distinct(x):\n    return torch.unique(x).numel()"
SQUARED = ("@passthrough\ndef squared_distances(z, codebook):\n"
           "    with torch.autocast(device_type=z.device.type, enabled=False):\n"
           "        z, codebook = z.float(), codebook.float()\n"
           "        return ((z * z).sum(1, keepdim=True) - TWO * z @ codebook.T\n"
           "                + (codebook * codebook).sum(1))\n\n\n"
           "squared_distances = check.squared_distances(squared_distances)")
PERPLEXITY = ("def perplexity(indices, num_codes):\n"
              "    counts = torch.bincount(indices.flatten(), minlength=num_codes)\n"
              "    p = counts.double() / indices.numel()\n"
              "    return torch.exp(entropy(p[p > 0])).item()")
USAGE = ("@torch.no_grad()\ndef codebook_usage(indices, num_codes):\n"
         "    return distinct(indices) / num_codes")
TRAINING = "HALF = float('0.5')\nfor step in range(3):\n    pass"  # not kept: a call, a loop
NEAREST = ("def nearest_code(z, codebook, chunk_size=None):\n"
           "    flat = z.reshape(-1, z.shape[-1])\n"
           "    step = chunk_size or max(len(flat), 1)\n"
           "    found = torch.cat([squared_distances(flat[i:i + step], codebook).argmin(dim=1)\n"
           "                       for i in range(0, len(flat), step)] or [flat.new_zeros(0).long()])\n"
           "    return (found * int(2 * HALF)).reshape(z.shape[:-1])")
CELLS = [HEAD, NOTEBOOK_LEVEL, HELPER, SQUARED, PERPLEXITY, USAGE, TRAINING, NEAREST]
KEPT = ["squared_distances", "perplexity", "codebook_usage"]


def _in_the_notebook() -> dict[str, str]:
    """Each exercise's verdict as the notebook's own check gives it (cells run in order)."""
    namespace: dict = {}
    for cell in CELLS:
        exec(cell, namespace)
    return {name: verdict(getattr(lesson01, name), namespace[name]).status
            for name in KEPT + ["nearest_code"]}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("verdicts")
    path = write_notebook(folder / "01_vector_quantization.ipynb", *CELLS)
    (report,), _ = grade_reports([path], timeout=60, jobs=2)
    return folder, {item["exercise"]: item for item in report.exercises}


def test_constants_lambdas_helpers_and_decorators_pass_in_the_notebook_and_the_grader(graded):
    notebook = _in_the_notebook()
    _, grader = graded
    assert {name: notebook[name] for name in KEPT} == dict.fromkeys(KEPT, "passed")
    assert {name: grader[name]["status"] for name in KEPT} == dict.fromkeys(KEPT, "passed"), \
        {name: grader[name]["message"] for name in KEPT}


def test_a_constant_from_a_training_cell_costs_its_exercise_and_says_why(graded):
    assert _in_the_notebook()["nearest_code"] == "passed"  # the notebook ran that cell
    _, grader = graded
    item = grader["nearest_code"]
    assert item["status"] == "error"
    assert "HALF is not defined outside the notebook: cell 7, line 1 binds it" in item["message"]
    assert "it calls a function" in item["message"]


def test_progress_gives_the_graders_verdicts(graded, tmp_path, capsys):
    folder, grader = graded
    (tmp_path / "workspace").mkdir()
    (tmp_path / "workspace" / "01_vector_quantization.ipynb").write_bytes(
        (folder / "01_vector_quantization.ipynb").read_bytes())
    assert progress(tmp_path) == 0
    (row,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("01_")]
    passed = sum(item["status"] == "passed" for item in grader.values())
    assert row.split()[1] == f"{passed}/7" and passed == 3
    assert "nearest_code" in row and "perplexity" not in row


def test_an_endless_default_argument_costs_only_its_own_exercise(tmp_path):
    path = write_notebook(
        tmp_path / "loop.ipynb", HEAD, NOTEBOOK_LEVEL, HELPER, PERPLEXITY, USAGE,
        "def spin():\n    while True:\n        pass\n\n\n"
        "def kmeans_step(x, codebook, _=spin()):\n    return codebook")
    (report,), _ = grade_reports([path], timeout=5, jobs=2)
    status = {item["exercise"]: item["status"] for item in report.exercises}
    assert status == {"squared_distances": "not done", "nearest_code": "not done",
                      "quantize_feature_map": "not done", "codebook_usage": "passed",
                      "perplexity": "passed", "kmeans_step": "error", "kmeans": "not done"}


def test_prejudging_judges_a_kept_lambda_and_refuses_what_does_not_run(tmp_path):
    """An exercise bound by a lambda is judged like a def; one bound by a call scores 0
    saying why; a stub (as assign wrote it) is "not done" without running it."""
    from notebooks import LESSONS

    from minitok.tools.grading.submission import lesson_of, prejudge, read

    stubs = read(LESSONS[0])
    lesson, alias = lesson_of(stubs)
    checks = {name: getattr(lesson01, name) for name in ("squared_distances", "nearest_code",
                                                         "codebook_usage", "perplexity")}
    assert {name: result.status for name, result in prejudge(stubs, checks, alias).items()} == \
        dict.fromkeys(checks, "not done")
    path = write_notebook(
        tmp_path / "lambdas.ipynb", HEAD + "\nfrom minitok import quantize",
        "squared_distances = lambda z, c: ((z[:, None] - c[None]) ** 2).sum(-1)",
        "nearest_code = torch.compile(lambda z, c, chunk_size=None: z)",
        "codebook_usage = lambda i, k: quantize.codebook_usage(i, k)",
        "perplexity = quantize.perplexity")
    decided = prejudge(read(path), checks, lesson_of(read(path))[1])
    assert "squared_distances" not in decided  # it runs in a worker
    assert decided["nearest_code"].status == "failed"
    assert "does not run outside the notebook: it calls a function" in \
        decided["nearest_code"].message
    assert decided["codebook_usage"].status == "failed"
    assert "minitok's reference" in decided["codebook_usage"].message
    assert "is minitok's reference, bound by an assignment" in decided["perplexity"].message


# --------------------------------------- lesson 09: the earlier lessons' functions it binds

L09_HEAD = ("import torch\nimport torch.nn.functional as F\nfrom minitok import msvq\n"
            "from minitok import var as V\nfrom minitok.checks import lesson09 as check\n"
            "from minitok.earlier import passed")
L09_BINDS = ('nearest_code = passed("01", "nearest_code")\n'
             'sample_logits = passed("05", "sample_logits")\ncfg_logits = passed("05", "cfg_logits")')


@pytest.mark.slow
def test_lesson09_binds_minitoks_earlier_functions_while_a_check_runs_here_and_in_the_grader(
        tmp_path):
    """encode_scales and var_generate call nearest_code, sample_logits and cfg_logits, which
    the notebook binds to the learner's own with earlier.passed: a call, which does not run
    in the grader's worker. Both bind minitok's under those names (check.EARLIER) while a
    check runs, so the notebook and `minitok grade` give one verdict."""
    import nbformat
    from notebooks import ROOT

    from minitok.checks import lesson09 as check

    solved = nbformat.read(ROOT / "solutions" / "09_next_scale.ipynb", as_version=4)
    defs = {name: next(c.source for c in solved.cells if c.source.startswith(f"def {name}("))
            for name in ("encode_scales", "var_generate")}
    assert set(check.EARLIER) == {"nearest_code", "sample_logits", "cfg_logits"}
    namespace = {}  # the names left unbound: the check binds them
    exec(L09_HEAD + "\n" + "\n\n".join(defs.values()), namespace)
    for name in defs:
        assert verdict(getattr(check, name), namespace[name]).status == "passed", name
        assert "nearest_code" not in namespace  # and unbinds them again
    path = write_notebook(tmp_path / "09_next_scale.ipynb", L09_HEAD, L09_BINDS, *defs.values())
    (report,), _ = grade_reports([path], timeout=120, jobs=2)
    status = {item["exercise"]: (item["status"], item["message"]) for item in report.exercises}
    assert {name: status[name][0] for name in defs} == dict.fromkeys(defs, "passed"), status
