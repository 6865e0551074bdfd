"""Your Lesson 04 Transformer, with the shipped weights, drawing Lesson 05's digits."""

from __future__ import annotations

import os

import nbformat
import pytest
import torch

from minitok import checkpoints, prior
from minitok.earlier import find_notebook, passed, same_logits, yours
from minitok.tools.assign import strip_code
from minitok.transformer import Transformer, TransformerConfig

from notebooks import ROOT  # isort: skip

LESSON04 = "04_transformer.ipynb"


@pytest.fixture
def reference(device):
    return checkpoints.load("prior", device=device).transformer


def mutated(tmp_path, old: str, new: str):
    """A copy of the solved Lesson 04 with one edit in its Transformer cell."""
    notebook = nbformat.read(ROOT / "solutions" / LESSON04, as_version=4)
    cell = next(c for c in notebook.cells if c.source.startswith("class Transformer("))
    assert old in cell.source
    cell.source = cell.source.replace(old, new)
    nbformat.write(notebook, tmp_path / LESSON04)
    return tmp_path


def test_the_solved_lesson_04_stands_in_with_the_same_logits(reference, capsys):
    mine = yours(reference, folder=ROOT / "solutions")
    assert type(mine) is not Transformer and type(mine).__name__ == "Transformer"
    assert type(mine).__module__ == "lesson04"  # built from the notebook, not imported
    assert torch.equal(mine.head.weight, reference.head.weight) and not mine.training
    assert same_logits(mine, reference) <= 1e-4
    assert "your Transformer from lesson 04" in capsys.readouterr().out


def test_fresh_weights_stand_in_and_train_as_minitoks(capsys):
    """Lesson 07 trains your class from minitok's initial weights: the line says which
    weights it holds, and one optimiser step moves yours as it moves minitok's."""
    torch.manual_seed(0)
    reference = Transformer(TransformerConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2,
                                              n_embd=8))
    mine = yours(reference, folder=ROOT / "solutions", weights="minitok's initial weights")
    assert mine is not reference
    assert "your Transformer from lesson 04, with minitok's initial weights: the same logits" \
        in capsys.readouterr().out
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(1))
    for model in (mine, reference):
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        model(idx).logsumexp(-1).mean().backward()
        optimizer.step()
    assert same_logits(mine, reference) <= 1e-4


def test_standing_in_leaves_the_lessons_random_numbers_alone(reference):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    yours(reference, folder=ROOT / "solutions")  # builds a model: draws initial weights
    assert torch.equal(torch.rand(3), expected)


def test_an_unfinished_lesson_04_says_so_and_leaves_minitoks(reference, capsys):
    assert yours(reference, folder=ROOT / "lessons") is reference
    said = capsys.readouterr().out
    assert "using minitok's Transformer" in said and "NotImplementedError" in said
    assert "yours in 04_transformer.ipynb" in said  # the file read
    assert "Transformer.__init__" in said and "not finished" in said  # the exercise


@pytest.mark.parametrize("helper", ["attention", "split_heads"])
def test_an_unfinished_helper_is_named_although_the_classes_are_done(reference, tmp_path,
                                                                     capsys, helper):
    notebook = nbformat.read(ROOT / "solutions" / LESSON04, as_version=4)
    cell = next(c for c in notebook.cells if c.source.startswith(f"def {helper}("))
    cell.source = strip_code(cell.source, helper)
    nbformat.write(notebook, tmp_path / LESSON04)
    assert yours(reference, folder=tmp_path) is reference
    said = capsys.readouterr().out
    assert f"{helper} (cell {notebook.cells.index(cell) + 1}) is not finished yet" in said, said


@pytest.mark.parametrize("old, new, reason", [
    ("self.head = nn.Linear", "self.out = nn.Linear", "out.weight"),  # another name: strict load
    # positions from 0 at every cached step: only the cached path differs
    ("start = 0 if cache is None else cache.length", "start = 0", "only through the KV cache"),
    ("cache.advance(T)", "cache.advance(T + 1)", "new positions > max_len"),  # cache overruns
    # a wrong final layer: both paths differ, and it says so
    ("return self.head(self.ln_f(x))", "return self.head(x)", "read at once and"),
])
def test_a_wrong_transformer_is_refused_with_the_reason(reference, tmp_path, capsys,
                                                        old, new, reason):
    folder = mutated(tmp_path, old, new)
    assert yours(reference, folder=folder) is reference
    said = capsys.readouterr().out
    assert "using minitok's Transformer" in said and reason in said, said


def test_no_notebook_beside_this_one_is_said_and_strict_mode_raises(reference, tmp_path, capsys,
                                                                   monkeypatch):
    assert yours(reference, folder=tmp_path) is reference
    assert f"no 04_*.ipynb in {tmp_path}" in capsys.readouterr().out
    monkeypatch.setenv("MINITOK_STRICT", "1")
    with pytest.raises(LookupError, match="04_"):
        yours(reference, folder=tmp_path)


def test_under_nbgraders_autograder_a_lone_notebook_falls_back(reference, tmp_path, capsys,
                                                              monkeypatch):
    """nbgrader grades each submission alone (no earlier notebook beside it): the hand-off
    must fall back, not raise, or every cell after it would fail for a correct submission."""
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert yours(reference, folder=tmp_path) is reference
    assert passed("05", "ar_generate", folder=tmp_path) is prior.ar_generate
    assert capsys.readouterr().out.count("using minitok's") == 2


def test_maskgits_bidirectional_weights_stand_in_too(device, capsys):
    reference = checkpoints.load("maskgit", device=device).transformer
    assert not reference.config.causal
    mine = yours(reference, folder=ROOT / "solutions")
    assert mine is not reference and not mine.config.causal
    assert same_logits(mine, reference) <= 1e-4
    assert "bidirectional" in capsys.readouterr().out


def test_a_jupyter_copy_is_not_read_before_the_lesson_and_is_named(reference, tmp_path, capsys):
    """JupyterLab's Duplicate makes 04_transformer-Copy1.ipynb, which sorts first."""
    mutated(tmp_path, "self.head = nn.Linear", "self.out = nn.Linear")  # the lesson: wrong
    (tmp_path / LESSON04).rename(tmp_path / "04_transformer-Copy1.ipynb")
    (tmp_path / LESSON04).write_bytes((ROOT / "solutions" / LESSON04).read_bytes())  # right
    assert find_notebook("04", tmp_path) == (tmp_path / LESSON04,
                                             [tmp_path / "04_transformer-Copy1.ipynb"])
    mine = yours(reference, folder=tmp_path)
    assert mine is not reference
    said = capsys.readouterr().out
    assert "read 04_transformer.ipynb; also beside it, not read: 04_transformer-Copy1" in said


def test_only_copies_the_newest_is_read_and_named(reference, tmp_path, capsys):
    mutated(tmp_path, "self.head = nn.Linear", "self.out = nn.Linear")
    (tmp_path / LESSON04).rename(tmp_path / "04_transformer-Copy1.ipynb")
    newer = tmp_path / "04_transformer (2).ipynb"
    newer.write_bytes((ROOT / "solutions" / LESSON04).read_bytes())
    os.utime(tmp_path / "04_transformer-Copy1.ipynb", (1, 1))
    assert find_notebook("04", tmp_path)[0] == newer
    assert yours(reference, folder=tmp_path) is not reference
    assert "also beside it, not read: 04_transformer-Copy1.ipynb" in capsys.readouterr().out


# ---------------------------------------------------------------- functions: `passed`


def test_a_passing_function_is_yours_with_its_helpers(capsys):
    mine = passed("05", "ar_generate", folder=ROOT / "solutions")
    assert mine is not prior.ar_generate and mine.__wrapped__.__globals__["__name__"] == "lesson05"
    assert "your ar_generate from lesson 05 (it passes its check)" in capsys.readouterr().out


def test_an_unfinished_function_says_so_and_leaves_minitoks(capsys):
    assert passed("05", "ar_generate", folder=ROOT / "lessons") is prior.ar_generate
    said = capsys.readouterr().out
    assert "using minitok's ar_generate: yours in 05_autoregressive.ipynb" in said
    assert "ar_generate is not finished yet" in said


def test_a_wrong_function_is_refused_with_its_checks_words_and_a_wrong_helper_replaced(
        tmp_path, capsys):
    notebook = nbformat.read(ROOT / "solutions" / "05_autoregressive.ipynb", as_version=4)
    cell = next(c for c in notebook.cells if c.source.startswith("def cfg_logits("))
    cell.source = cell.source.replace("def cfg_logits(", "def cfg_logits(*a, **k):\n"
                                      "    return a[0]\n\n\ndef _unused(")
    nbformat.write(notebook, tmp_path / "05_autoregressive.ipynb")
    mine = passed("05", "ar_generate", folder=tmp_path)  # its own check binds minitok's
    assert mine.__wrapped__.__globals__["cfg_logits"] is prior.cfg_logits  # theirs failed
    assert passed("05", "cfg_logits", folder=tmp_path) is prior.cfg_logits
    assert "its check says" in capsys.readouterr().out


@pytest.mark.parametrize(("name", "call"), [
    ("lesson", lambda: find_notebook("0?", ROOT / "solutions")),  # a glob would find lesson 04
    ("lesson", lambda: find_notebook(4, ROOT / "solutions")),
    ("lesson", lambda: passed("99", "fit")),
    ("name", lambda: passed("05", "nope")),
    ("reference", lambda: yours("x")),
], ids=["glob", "int", "no-lesson", "no-exercise", "not-a-model"])
def test_bad_arguments_are_refused_by_name_before_any_fallback(name, call, capsys):
    with pytest.raises((ValueError, TypeError), match=rf"^{name}\b"):
        call()
    assert "using minitok's" not in capsys.readouterr().out
