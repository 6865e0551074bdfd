"""The README shows only numbers a command prints: its demo table is what `minitok demo`
prints with the default seed (less the time column, which depends on the machine)."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
from notebooks import ROOT

from minitok.tools.cli import main

pytestmark = pytest.mark.slow

ROW = re.compile(r"^(.*?)\s+(\d+\.\d)%\s+(\d+\.\d\d)(?:\s+(\S+)\s+(\S+))?\s*$")


def demo_table(printed: str) -> str:
    """The table `minitok demo` printed, as the README's Markdown (no ms/image column)."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("method "))
    rows = ["| method | accuracy | diversity | passes/image |", "|---|---|---|---|"]
    for line in lines[start + 2:]:
        match = ROW.match(line)
        if match is None:
            break
        method, accuracy, diversity, _, passes = match.groups()
        rows.append(f"| {method} | {accuracy}% | {diversity} | {passes or ''} |")
    assert len(rows) > 4, printed  # the real digits, the reconstructions, the generators
    return "\n".join(rows)


def test_the_readme_demo_table_is_what_minitok_demo_prints(tmp_path):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--out", str(tmp_path), "--seed", "0"]) == 0
    table = demo_table(printed.getvalue())
    readme = (ROOT / "README.md").read_text()
    assert table in readme, f"README's demo table is stale; `minitok demo` prints:\n{table}"


def test_the_table_reader_reads_every_row():
    printed = ("minitok demo: 20 samples per class, seed 0, device cpu\n"
               "method                                     accuracy diversity  ms/image "
               "passes/image\n" + "-" * 84 + "\n"
               "real test digits (reference)                 97.8%      1.00                       \n"
               "tokenizer reconstructions                    97.5%      0.98      0.22            1\n"
               "AR prior, guidance s=2                      100.0%      0.80      4.10           64\n"
               "MaskGIT, 8 steps                             99.0%      0.77      9.00            8\n"
               "  accuracy: the Lesson 03 classifier\n")
    assert demo_table(printed).splitlines()[2:] == [
        "| real test digits (reference) | 97.8% | 1.00 |  |",
        "| tokenizer reconstructions | 97.5% | 0.98 | 1 |",
        "| AR prior, guidance s=2 | 100.0% | 0.80 | 64 |",
        "| MaskGIT, 8 steps | 99.0% | 0.77 | 8 |"]
