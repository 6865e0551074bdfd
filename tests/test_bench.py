"""`python -m minitok.bench --quick`: every section runs and lands in one table.

Timings are never asserted (the machine may be busy); what is checked is that each
section measures something, that the ratios are the ones its measured values give, that
the report records the date and the machine, and that a failing section is reported.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minitok.checkpoints import checkpoint_path
from minitok.tools import bench

ROOT = Path(__file__).resolve().parents[1]  # this course checkout
NUMBER = r"[0-9][0-9,]*\.?[0-9]*"


def test_every_lesson_has_a_section():
    assert list(bench.SECTIONS) == ["nearest_code", "tokenizer", "kv_cache", "ar", "maskgit",
                                    "anytoany", "diffusion", "var", "grading", "notebooks"]


@pytest.mark.slow  # runs benchmarks (--quick sizes)
@pytest.mark.parametrize("name", [n for n in bench.SECTIONS if n != "notebooks"])
def test_quick_section_measures(name):
    rows, seconds = bench.run_all(quick=True, sections=[name], log=lambda s: None)
    assert rows and set(seconds) == {name}
    assert not any("FAILED" in r.benchmark for r in rows), [r.measured for r in rows]
    for r in rows:
        if r.ratio is not None:
            assert r.ratio >= 0 and r.ratio == r.ratio  # a number, not NaN
        if r.met is not None:
            assert r.goal  # a verdict always says which goal
    # every section is a module of the package; any-to-any and diffusion need checkpoints
    needs = {"anytoany": ["anytoany"], "diffusion": ["diffusion", "diffusion_decoder"],
             "var": ["var"]}
    present = all(checkpoint_path(kind).is_file() for kind in needs.get(name, []))
    assert ("not measured" in rows[0].measured) is not present, rows[0]


@pytest.mark.parametrize("name", [n for n in bench.SECTIONS if n != "notebooks"])
def test_each_section_is_a_module_of_the_package(name):
    module = bench.load_section(name)
    assert module is importlib.import_module(f"minitok.tools.bench.{name}")
    assert module.__file__ == str(ROOT / "minitok" / "tools" / "bench" / f"{name}.py")
    source = Path(module.__file__).read_text()
    assert "sys.path" not in source and "E402" not in source  # imports, not path hacks


# `python -m minitok.bench.<name> --help` for every section, in one interpreter (torch starts
# once): runpy.run_module(name, run_name="__main__") is what `python -m` runs. Prints, per
# section, a JSON line: the exit code, stdout and stderr.
RUN_AS_MODULES = """
import contextlib, io, json, runpy, sys
for name in sys.argv[1:]:
    out, err, code = io.StringIO(), io.StringIO(), 0
    sys.argv = [name, "--help"]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module(name, run_name="__main__", alter_sys=True)
        except SystemExit as stop:
            code = stop.code or 0
        except BaseException as crash:
            code, _ = 1, print(repr(crash), file=sys.stderr)
    print(json.dumps({"name": name, "code": code, "out": out.getvalue(), "err": err.getvalue()}))
"""


@pytest.fixture(scope="module")
def ran_as_modules(tmp_path_factory) -> dict[str, dict]:
    """Each section's `--help` run as a module from a folder outside the checkout."""
    names = [f"minitok.bench.{n}" for n in bench.SECTIONS if n != "notebooks"]
    result = subprocess.run([sys.executable, "-c", RUN_AS_MODULES, *names], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path_factory.mktemp("elsewhere"))
    assert result.returncode == 0, result.stderr
    runs = [json.loads(line) for line in result.stdout.splitlines()]
    return {run["name"].rsplit(".", 1)[1]: run for run in runs}


@pytest.mark.parametrize("name", [n for n in bench.SECTIONS if n != "notebooks"])
def test_each_section_runs_as_a_module_from_any_folder(name, ran_as_modules):
    result = ran_as_modules[name]
    assert result["code"] == 0, result["err"]
    assert result["out"].startswith("usage:") and not result["err"]
    assert f"python -m minitok.bench.{name}" in bench.load_section(name).__doc__


def test_notebooks_outside_a_checkout_are_not_measured(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no solutions/ here or above
    for quick in (True, False):
        rows = bench.notebook_rows(quick=quick)
        assert [(r.benchmark, r.measured, r.met) for r in rows] == [
            ("executing the solution notebooks",
             "not measured: no solutions/ folder here (run from a course checkout)", None)]


def test_the_checkout_is_found_from_a_folder_inside_it(monkeypatch):
    monkeypatch.chdir(ROOT / "minitok" / "tools" / "bench")
    assert bench.course_root() == ROOT


@pytest.mark.slow  # runs benchmarks (--quick sizes)
def test_ratios_are_the_measured_values_ratios():
    rows, _ = bench.run_all(quick=True, sections=["kv_cache"], log=lambda s: None)
    assert [r.benchmark for r in rows] == ["KV cache speed-up, 32 tokens, batch 1",
                                           "KV cache speed-up, 64 tokens, batch 1"]
    for r in rows:
        cached, recompute = (float(x) for x in re.findall(NUMBER, r.measured)[:2])
        assert r.ratio == pytest.approx(recompute / cached, rel=0.05, abs=0.02)


def test_quick_notebooks_are_skipped_and_said_so(monkeypatch):
    monkeypatch.chdir(ROOT)
    rows = bench.notebook_rows(quick=True)
    assert len(rows) == 1 and "skipped by --quick" in rows[0].measured


@pytest.mark.slow  # runs benchmarks (--quick sizes)
def test_command_writes_markdown_with_date_and_machine(tmp_path):
    out = tmp_path / "report" / "bench.md"
    result = subprocess.run(
        [sys.executable, "-m", "minitok.bench", "--quick", "--only", "notebooks",
         "--only", "kv_cache", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert text in result.stdout  # the table printed is the table written
    assert re.search(r"on \d{4}-\d\d-\d\d \d\d:\d\d UTC", text)
    assert f"torch {torch.__version__}" in text and "CPUs" in text
    assert "| benchmark | measured | ratio | goal | met |" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 1 + 2  # header, the 2 KV rows, the skipped notebooks row
    assert "--quick" in text
    assert "skipped by --quick" in text


@pytest.mark.slow  # runs benchmarks (--quick sizes)
def test_command_runs_outside_the_checkout(tmp_path):
    """The installed package needs no checkout: from another folder the notebooks row says
    why it was not measured, and the other sections run."""
    result = subprocess.run(
        [sys.executable, "-m", "minitok.bench", "--quick", "--only", "notebooks",
         "--only", "kv_cache"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 1 + 2  # header, the notebooks row, the 2 KV rows
    assert ("| executing the solution notebooks | not measured: no solutions/ folder here (run "
            "from a course checkout) |") in result.stdout
    assert "FAILED" not in result.stdout


def test_a_section_whose_extra_is_missing_is_skipped_and_named(monkeypatch, capsys):
    """A learner's install (no dev extra): the section says what it needs, the others run,
    and the exit code stays 0."""
    monkeypatch.setitem(bench.NEEDS, "nearest_code", ("no_such_module_for_minitok", "dev"))
    monkeypatch.setitem(bench.SECTIONS, "kv_cache", lambda quick: [bench.Row("kv", "1 ms")])
    assert bench.main(["--quick", "--only", "nearest_code", "--only", "kv_cache"]) == 0
    printed = capsys.readouterr().out
    assert ("| nearest_code: skipped | not measured: needs no_such_module_for_minitok (pip "
            "install 'minitok[dev]', or make setup-instructor) |") in printed
    assert "| kv | 1 ms |" in printed and "FAILED" not in printed


def test_the_real_needs_are_met_where_the_tests_run():
    assert [name for name in bench.NEEDS if bench.missing_need(name)] == []


def test_a_failing_section_is_a_failed_row_and_exit_code_1(monkeypatch, capsys):
    def broken(quick):
        raise RuntimeError("boom")

    monkeypatch.setitem(bench.SECTIONS, "notebooks", broken)
    assert bench.main(["--quick", "--only", "notebooks"]) == 1
    out = capsys.readouterr().out
    assert "| notebooks: FAILED | RuntimeError: boom |" in out


def test_threads_are_restored_after_each_section(monkeypatch):
    seen = []
    monkeypatch.setitem(bench.SECTIONS, "notebooks",
                        lambda quick: seen.append(torch.get_num_threads()) or [])
    before = torch.get_num_threads()
    bench.run_all(quick=True, sections=["notebooks"], threads=1, log=lambda s: None)
    assert seen == [1] and torch.get_num_threads() == before


@pytest.mark.parametrize("args", [["--threads", "0"], ["--only", "nonsense"], ["--out", "."]])
def test_bad_arguments_exit_2(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--quick", *args])
    assert exit_info.value.code == 2
    assert args[0] in capsys.readouterr().err


def test_a_failing_notebook_is_its_own_failed_row(monkeypatch):
    def execute(path):
        if path.name.startswith("02"):
            raise subprocess.CalledProcessError(
                1, "nbconvert", stderr="Traceback...\n\x1b[31mValueError\x1b[39m: bad cell\nmore")
        return 60.0

    monkeypatch.setattr(bench, "execute_notebook", execute)
    monkeypatch.chdir(ROOT / "solutions")  # found from a folder inside the checkout too
    rows = bench.notebook_rows(quick=False)
    notebooks = sorted((ROOT / "solutions").glob("*.ipynb"))
    assert len(rows) == len(notebooks) >= 2
    failed = [r for r in rows if "FAILED" in r.benchmark]
    assert [r.measured for r in failed] == ["ValueError: bad cell"]
    assert all(r.ratio == pytest.approx(60 / 180) for r in rows if r not in failed)
    assert [r.benchmark.split()[1] for r in rows] == [f"solutions/{p.name}" for p in notebooks]
