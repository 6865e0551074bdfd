"""The `minitok` command installed outside a checkout, or without the lab extra: assign,
workspace and progress say in one line what they need instead of a traceback."""

from __future__ import annotations

import importlib.util

import pytest
from notebooks import ROOT

from minitok.tools import cli

COMMANDS = [["assign", "--check"], ["workspace"], ["progress"]]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda argv: argv[0])
def test_outside_a_checkout_the_command_says_where_to_run(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no solutions/ here or above
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    message = str(stop.value.code)
    assert message.startswith(f"minitok {argv[0]}: run this inside the course folder")
    assert str(tmp_path.resolve()) in message
    assert not (tmp_path / "workspace").exists()  # nothing was written


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda argv: argv[0])
def test_without_nbformat_the_command_names_the_extra(argv, monkeypatch):
    monkeypatch.chdir(ROOT)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "nbformat" else real(name, *a))
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert str(stop.value.code) == (
        f"minitok {argv[0]}: needs nbformat, which comes with the lab extra: pip install "
        f"'minitok[lab]' (or `make setup` in the course folder)")
