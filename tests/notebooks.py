"""Helpers for the notebook tests: find notebooks, execute them, pull out their exercises."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat

from minitok.tools.grading.server import load_statements
from minitok.tools.grading.submission import lesson_of, parse_cells

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))
LESSONS = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))


def write_notebook(path: Path, *sources: str) -> Path:
    """A notebook whose code cells hold `sources`, as a learner's file would."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(notebook, path)
    return path


def execute(path: Path, env: dict[str, str], timeout: int = 600) -> nbformat.NotebookNode:
    """Execute a notebook in a fresh kernel (in its own folder) and return it with outputs."""
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    old = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client = NotebookClient(
            notebook,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        )
        client.execute()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return notebook


def stream_text(notebook: nbformat.NotebookNode) -> str:
    """Everything the notebook printed, joined."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(output.get("text", ""))
    return "".join(parts)


def check_module_name(notebook: nbformat.NotebookNode) -> str:
    """The lesson's check module, from its `from minitok.checks import lessonNN as check`."""
    return f"minitok.checks.{lesson_of(parse_cells(notebook.cells))[0]}"


def exercise_namespace(notebook: nbformat.NotebookNode) -> dict:
    """Execute only the imports and the def/class blocks of a notebook's code cells.

    That gives the notebook's own versions of its functions without running its training
    cells (the same extraction and loading the grader's workers use), so a test can compare
    them with the package.
    """
    namespace: dict = {"__name__": "solution_notebook"}
    problems = load_statements(parse_cells(notebook.cells).kept(), namespace)
    assert not problems, problems
    return namespace
