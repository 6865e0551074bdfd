"""`minitok demo` end to end: a real picture whose panels are checked, a table that is computed.

The demo runs once (--quick, through the command line) into a temporary folder; the tests
then re-derive what it printed and drew from the shipped models, independently.
"""

from __future__ import annotations

import contextlib
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from minitok import checkpoints
from minitok.checkpoints import checkpoint_path
from minitok.classifier import load_classifier
from minitok.data import load_digits
from minitok.tools import demo as demo_mod
from minitok.tools.cli import main

PER_CLASS = 3  # --quick
SHIPPED = {name: checkpoint_path(name).is_file()
           for name in ("prior", "maskgit", "anytoany", "diffusion", "var")}
DIFFUSION = f"diffusion, DDIM {demo_mod.DIFFUSION_STEPS} steps"
VAR = "VAR, 4 scales, guidance s=2"
METHODS = (["AR prior, no guidance (s=1)", "AR prior, guidance s=2"] if SHIPPED["prior"] else []
           ) + (["MaskGIT, 8 steps"] if SHIPPED["maskgit"] else [])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """Run `minitok demo --quick --out DIR` once; return (DIR, what it printed)."""
    out = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--quick", "--out", str(out), "--seed", "0"]) == 0
    return out, printed.getvalue()


def table_rows(printed: str) -> dict[str, list[str]]:
    """The printed table as {method: [accuracy, diversity, ms, passes]} (strings)."""
    rows = {}
    for line in printed.splitlines():
        match = re.match(r"^(.{42}) +(\d+\.\d)% +(\d+\.\d\d)(.*)$", line)
        if match:
            rows[match.group(1).strip()] = [match.group(2), match.group(3),
                                            *match.group(4).split()]
    return rows


def test_table_accuracies_are_the_classifiers_on_the_saved_samples(quick_run):
    out, printed = quick_run
    rows = table_rows(printed)
    samples = torch.load(out / "demo_samples.pt", weights_only=True)
    tokenizer, classifier = checkpoints.load("tokenizer"), load_classifier()
    labels = samples["labels"]
    assert labels.tolist() == [c for c in range(10) for _ in range(PER_CLASS)]
    expected_methods = METHODS + (["any-to-any: text -> image, guidance s=2"] if SHIPPED["anytoany"] else [])
    for method in expected_methods:
        grids = samples[method]  # (N, 8, 8) token grids
        assert grids.shape == (10 * PER_CLASS, 8, 8)
        accuracy = classifier.accuracy(tokenizer.decode(grids), labels)
        assert rows[method][0] == f"{100 * accuracy:.1f}", method
    if SHIPPED["diffusion"]:
        images = samples[DIFFUSION]  # pixels: the diffusion model draws no tokens
        assert images.shape == (10 * PER_CLASS, 1, 16, 16) and images.abs().max() <= 1
        accuracy = classifier.accuracy(images, labels)
        assert rows[DIFFUSION][0] == f"{100 * accuracy:.1f}"
    if SHIPPED["var"]:
        tokens = samples[VAR]  # (N, 85): its token maps, coarse to fine
        assert tokens.shape == (10 * PER_CLASS, 1 + 4 + 16 + 64)
        images = checkpoints.load("var_tokenizer").decode(tokens)  # its own decoder
        assert rows[VAR][0] == f"{100 * classifier.accuracy(images, labels):.1f}"

    real, real_labels = load_digits("test", size=16)
    recons = tokenizer.decode(tokenizer.encode(real))
    assert rows["real test digits (reference)"][0] == f"{100 * classifier.accuracy(real, real_labels):.1f}"
    assert rows["tokenizer: encode + decode (test digits)"][0] == (
        f"{100 * classifier.accuracy(recons, real_labels):.1f}")


def test_table_counts_forward_passes_and_says_what_it_used(quick_run):
    _, printed = quick_run
    rows = table_rows(printed)
    if SHIPPED["prior"]:
        assert rows["AR prior, no guidance (s=1)"][-1] == "64"  # one pass per token of 8 x 8
        assert rows["AR prior, guidance s=2"][-1] == "64"  # guidance doubles the batch
    if SHIPPED["maskgit"]:
        assert rows["MaskGIT, 8 steps"][-1] == "8"
    if SHIPPED["diffusion"]:
        assert rows[DIFFUSION][-1] == str(demo_mod.DIFFUSION_STEPS)  # one pass per step
        assert 0 < float(rows[DIFFUSION][1]) < 3
    if SHIPPED["var"]:
        assert rows[VAR][-1] == "4"  # one pass per scale: 1, 2, 4, 8
        assert 0 < float(rows[VAR][1]) < 3
    for method in METHODS:
        assert float(rows[method][2]) > 0  # ms/image was measured
        assert 0 < float(rows[method][1]) < 3  # diversity relative to real digits
    assert "shipped checkpoints" in printed
    for name, present in SHIPPED.items():
        assert (f"no minitok/checkpoints/{name}.pt" in printed) is not present, name


def expected_layout():
    """The picture's layout, rebuilt from what the demo is documented to draw."""
    groups = [("digit | rebuilt", 2)] + [(m, PER_CLASS) for m in METHODS]
    if SHIPPED["maskgit"]:
        groups.append(("steps", 8))
    if SHIPPED["anytoany"]:
        groups.append(("text", PER_CLASS))
    if SHIPPED["diffusion"]:
        groups.append(("diffusion", PER_CLASS))
    if SHIPPED["var"]:
        groups.append(("VAR", PER_CLASS))
    return demo_mod.layout(groups, rows=10, size=16)


def cell(img: np.ndarray, plan: dict, group: int, row: int, col: int) -> np.ndarray:
    x, y = plan["cells"][(group, row, col)]
    return img[y : y + plan["cell"], x : x + plan["cell"]]


def test_picture_is_a_png_with_every_panel(quick_run):
    out, _ = quick_run
    with Image.open(out / "demo.png") as png:
        png.verify()
    with Image.open(out / "demo.png") as png:
        assert png.format == "PNG"
        img = np.asarray(png.convert("RGB"))
    plan = expected_layout()
    assert img.shape == (plan["height"], plan["width"], 3)

    # column 0 of group 0: the first held-out digit of each class, drawn exactly
    real, labels = load_digits("test", size=16)
    for c in range(10):
        first = int((labels == c).nonzero()[0])
        assert np.array_equal(cell(img, plan, 0, c, 0), demo_mod.render(real[first])), c

    # MaskGIT's steps (the group after its samples): step 1 is mostly masked (blue), the last
    # step is the sample
    blue = np.array(demo_mod.MASKED, dtype=np.uint8)
    steps, samples = len(METHODS) + 1, len(METHODS)
    for c in range(10 if SHIPPED["maskgit"] else 0):
        first_step = cell(img, plan, steps, c, 0)
        assert (first_step == blue).all(axis=2).mean() > 0.5
        last_step = cell(img, plan, steps, c, 7)
        assert not (last_step == blue).all(axis=2).any()
        sample = cell(img, plan, samples, c, 0).astype(int)  # MaskGIT's first sample of class c
        assert np.abs(last_step.astype(int) - sample).max() <= 1
    # every sample panel holds a drawn digit, not an empty cell
    last = len(plan["starts"]) - 1
    pixel_groups = [last - 1, last] if SHIPPED["diffusion"] and SHIPPED["var"] else (
        [last] if SHIPPED["diffusion"] or SHIPPED["var"] else [])  # diffusion, then VAR
    for g in [*range(1, len(METHODS) + 1), *pixel_groups]:
        for c in range(10):
            for col in range(PER_CLASS):
                assert (cell(img, plan, g, c, col) < 128).any(), (g, c, col)


def test_bad_arguments_are_named(tmp_path, capsys):
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    cases = [(["--seed", "-1"], "--seed"), (["--device", "tpu"], "--device"),
             (["--out", str(not_a_folder)], "--out"), (["--train", str(not_a_folder)], "--train")]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "--device cuda"))
    for args, named in cases:
        assert main(["demo", "--out", str(tmp_path / "o"), *args]) == 2, args
        assert named in capsys.readouterr().err, args
    assert not (tmp_path / "o").exists()  # nothing ran


@pytest.mark.slow
def test_train_from_scratch_writes_and_uses_its_checkpoints(tmp_path):
    models = tmp_path / "models"
    result = demo_mod.demo(tmp_path / "out", seed=0, quick=True, train=models)
    for name in ("tokenizer", "prior", "maskgit"):  # the classifier retrains in seconds
        payload = torch.load(models / f"{name}.pt", weights_only=True)
        assert payload["kind"] == name
        checkpoints.load(name, models / f"{name}.pt")  # a sound checkpoint of its kind
    notes = "\n".join(result.notes)
    assert f"trained from scratch into {models}" in notes
    for name, steps in demo_mod.QUICK_TRAIN_STEPS.items():
        shipped = checkpoints.load_payload(checkpoint_path(name), name)["meta"]["recipe"]["steps"]
        assert f"{name}: {steps} training steps (shipped: {shipped})" in notes
    assert "not retrained by --train" in notes
    assert "diffusion: not retrained by --train" in notes
    assert "VAR: not retrained by --train" in notes
    assert [r["method"] for r in result.rows][2:] == [  # every generator, no any-to-any row
        "AR prior, no guidance (s=1)", "AR prior, guidance s=2", "MaskGIT, 8 steps"]
    # the tokens behind the table were drawn with the new models: its tokenizer decodes them
    samples = torch.load(result.samples, weights_only=True)
    tokenizer = checkpoints.load("tokenizer", models / "tokenizer.pt")
    accuracy = load_classifier().accuracy(tokenizer.decode(samples["MaskGIT, 8 steps"]),
                                          samples["labels"])
    assert abs(accuracy - result.rows[4]["accuracy"]) < 1e-9
