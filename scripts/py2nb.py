"""Author a lesson as a percent-format script, then turn it into a notebook.

    python scripts/py2nb.py draft.py solutions/NN_topic.ipynb

Cells start with `# %%` (code) or `# %% [markdown]` (Markdown, each line prefixed with `# `).
Then execute it (restart and run all, strictly) before committing:

    MINITOK_STRICT=1 .venv/bin/jupyter nbconvert --to notebook --execute --inplace \
        solutions/NN_topic.ipynb
    .venv/bin/python -m minitok assign
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def convert(text: str) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "display_name": "Python 3", "language": "python", "name": "python3"
    }
    notebook.metadata["language_info"] = {"name": "python"}
    chunks: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            kind = "markdown" if "[markdown]" in line else "code"
            chunks.append((kind, []))
        elif chunks:
            chunks[-1][1].append(line)
    for kind, lines in chunks:
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        if kind == "markdown":
            body = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines)
            notebook.cells.append(nbformat.v4.new_markdown_cell(body))
        else:
            notebook.cells.append(nbformat.v4.new_code_cell("\n".join(lines)))
    return notebook


if __name__ == "__main__":
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    nbformat.write(convert(source.read_text()), target)
    print(f"wrote {target}")
