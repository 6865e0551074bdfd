"""`minitok export`: the learner's passed exercises as a package; `demo --yours` on it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from minitok import maskgit, quantize, sampling, tokenizer, training, transformer
from minitok.tools import cli
from minitok.tools.capstone import (
    LOOPS,
    STAGES,
    Parts,
    capstone,
    format_table,
    load_package,
    ran_line,
    run_capstone,
    stage_lines,
)
from minitok.tools.export import Lesson, export, package_files, references, write_package

ROOT = Path(__file__).resolve().parents[1]


def _lessons(folder: Path, missing: dict[str, list[str]] | None = None) -> list[Lesson]:
    """Every notebook of `folder` as if graded: all passed but the `missing` ones."""
    lessons = []
    for path in sorted(folder.glob("0[1-9]_*.ipynb")):
        number = path.name[:2]
        gone = (missing or {}).get(number, [])
        names = list(references(f"lesson{number}"))
        lessons.append(Lesson(number, path, [n for n in names if n not in gone], gone))
    return lessons


@pytest.fixture
def mytok(tmp_path):
    """The solutions written as a package, with lesson 06's mask_len not passed; imported."""
    out = tmp_path / "mytok_solutions"
    write_package(package_files(_lessons(ROOT / "solutions", {"06": ["mask_len"]}),
                                out.name), out, force=False)
    yield load_package(out)
    for name in [m for m in sys.modules if m.split(".")[0] == out.name]:
        del sys.modules[name]


def test_the_exported_solutions_compute_what_minitok_computes(mytok):
    g = torch.Generator().manual_seed(0)
    z, codebook = torch.randn(50, 4, generator=g), torch.randn(9, 4, generator=g)
    assert torch.equal(mytok.lesson01.nearest_code(z, codebook),
                       quantize.nearest_code(z, codebook))
    cond, uncond = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    assert torch.allclose(mytok.lesson05.cfg_logits(cond, uncond, 2.5),
                          sampling.cfg_logits(cond, uncond, 2.5))
    assert torch.equal(mytok.lesson04.causal_mask(4, 6), transformer.causal_mask(4, 6))
    ratio = torch.rand(20, generator=g, dtype=torch.float64)
    assert torch.allclose(mytok.lesson06.gamma("cosine", ratio), maskgit.gamma("cosine", ratio))
    config = transformer.TransformerConfig(vocab_size=11, block_size=6, n_layer=1, n_head=2,
                                           n_embd=8)
    torch.manual_seed(0)
    ref = transformer.Transformer(config).eval()
    mine = mytok.lesson04.Transformer(config).eval()
    mine.load_state_dict(ref.state_dict(), strict=True)
    idx = torch.randint(0, 11, (2, 6), generator=g)
    assert torch.allclose(mine(idx), ref(idx), atol=1e-5)


def test_modules_import_each_other_and_fall_back_to_minitok(mytok):
    # lesson 06's decode_loop calls cfg_logits: the learner's, from their lesson 05
    assert mytok.lesson06.cfg_logits is mytok.lesson05.cfg_logits
    # mask_len did not pass: minitok's stands in, and the docstring and README say so
    assert mytok.lesson06.mask_len is maskgit.mask_len
    assert "mask_len (minitok.maskgit.mask_len)" in mytok.lesson06.__doc__
    readme = (Path(mytok.__file__).parent / "README.md").read_text()
    assert "| 06 | 06_maskgit.ipynb |" in readme and "| mask_len |" in readme
    assert "mask_len" not in mytok.YOURS["lesson06"] and "Transformer" in mytok.YOURS["lesson04"]
    source = Path(mytok.lesson06.__file__).read_text()
    assert "### BEGIN SOLUTION" not in source and "def decode_loop(" in source
    assert "minitok.checks" not in source


def test_export_of_unsolved_lessons_says_nothing_is_yours(tmp_path, capsys):
    work = tmp_path / "workspace"
    shutil.copytree(ROOT / "lessons", work)
    assert export(work, tmp_path / "mytok", sandbox="none") == 1
    out = capsys.readouterr().out
    total = sum(len(references(f"lesson{p.name[:2]}")) for p in work.glob("0[1-9]_*.ipynb"))
    assert f"none of the {total} exercises" in out and "nothing is yours" in out
    assert not (tmp_path / "mytok").exists()


def test_export_never_overwrites_nor_writes_through_a_symlink(tmp_path):
    files = {"__init__.py": "", "README.md": "new\n"}
    out = tmp_path / "mytok"
    out.mkdir()
    (out / "mine.py").write_text("my edits\n")
    with pytest.raises(FileExistsError, match="never overwrites"):
        write_package(files, out, force=False)
    with pytest.raises(FileExistsError, match="never overwrites"):
        export(tmp_path, out)  # refused before any grading
    moved = write_package(files, out, force=True)
    assert moved == tmp_path / "mytok.old-1" and (moved / "mine.py").read_text() == "my edits\n"
    assert (out / "README.md").read_text() == "new\n"
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "linked"
    link.symlink_to(target)
    with pytest.raises(FileExistsError, match="symbolic link"):
        write_package(files, link, force=True)
    assert list(target.iterdir()) == []


def test_a_package_cannot_take_the_name_of_a_module_in_use(tmp_path):
    for name in ("torch", "minitok"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
        with pytest.raises(ValueError, match="already imported"):
            load_package(tmp_path / name)
    with pytest.raises(ValueError, match="no __init__.py"):
        load_package(tmp_path / "nothing")


def test_progress_line_says_which_stages_run_on_their_code():
    assert all("0/" in line for line in stage_lines(set()))
    everything = {(lesson, name) for parts in STAGES.values() for lesson, name, _ in parts}
    assert all("yours" in line and "minitok's" not in line for line in stage_lines(everything))
    some = everything - {("lesson06", "decode_loop")}
    maskgit_line = [line for line in stage_lines(some) if line.startswith("MaskGIT")][0]
    assert maskgit_line == "MaskGIT: 4/5 yours (minitok's: decode_loop)"
    assert stage_lines(set())[0] == ("tokenizer: 0/3 yours (minitok's: tokenizer_step, "
                                     "fit_tokenizer, tokens_to_image)")


def test_every_stage_runs_exercises_and_their_references():
    """Each (lesson, name, reference) of STAGES is an exercise of that lesson whose check
    holds that reference; each stage's training loop is one of its exercises."""
    for stage, parts in STAGES.items():
        for lesson, name, reference in parts:
            assert references(lesson)[name] == (reference.__module__, reference.__name__)
        assert LOOPS[stage] in [name for _, name, _ in parts]
    assert references("lesson03")["fit_tokenizer"] == ("minitok.tokenizer", "fit_tokenizer")
    assert references("lesson05")["fit"] == ("minitok.training", "fit")


# The learner's loops as `minitok export` writes them (the solutions'), wrapped to record what
# they trained; with the lessons' signatures exactly, so an extra keyword argument fails.
YOUR_FIT = """

TRAINED = []
_exported_fit = fit


def fit(model, batch_loss, steps, lr=3e-3, weight_decay=0.05, warmup=None, seed=0,
        eval_loss=None, eval_every=100):
    TRAINED.append((type(model).__name__, steps))
    return _exported_fit(model, batch_loss, steps, lr, weight_decay, warmup, seed, eval_loss,
                         eval_every)
"""
YOUR_FIT_TOKENIZER = """

TRAINED = []
_exported_fit_tokenizer = fit_tokenizer


def fit_tokenizer(model, images, train, step_fn, disc=None, progress=False):
    TRAINED.append((type(model).__name__, train.steps))
    return _exported_fit_tokenizer(model, images, train, step_fn, disc, progress)
"""
LOOP_NAMES = ("fit", "fit_tokenizer")


def _recording_loops(package: Path, listed: bool = True) -> Path:
    """The package with its loops wrapped to record what they trained; with `listed` False
    they are taken out of YOURS (so not theirs, though in the modules)."""
    for module, text in (("lesson05.py", YOUR_FIT), ("lesson03.py", YOUR_FIT_TOKENIZER)):
        (package / module).write_text((package / module).read_text() + text)
    if not listed:
        init = package / "__init__.py"
        init.write_text(init.read_text() + "YOURS = {k: tuple(n for n in v if n not in "
                        f"{LOOP_NAMES!r}) for k, v in YOURS.items()}}\n")
    return package


def test_the_loops_are_theirs_only_when_their_package_lists_them(tmp_path):
    files = package_files(_lessons(ROOT / "solutions"), "loops")
    assert "def fit(" in files["lesson05.py"] and "def fit_tokenizer(" in files["lesson03.py"]
    for listed in (True, False):
        out = tmp_path / str(listed) / "loops"
        write_package(files, out, force=False)
        package = load_package(_recording_loops(out, listed))
        try:
            parts = Parts(package)
            assert (parts.fit is package.lesson05.fit) is listed
            assert (parts.fit is training.fit) is not listed
            assert (parts.fit_tokenizer is package.lesson03.fit_tokenizer) is listed
            assert (parts.fit_tokenizer is tokenizer.fit_tokenizer) is not listed
            assert (set(LOOP_NAMES) & parts.missing == set()) is listed
        finally:
            for name in [m for m in sys.modules if m.split(".")[0] == out.name]:
                del sys.modules[name]
    none = Parts(None)
    assert none.fit is training.fit and none.fit_tokenizer is tokenizer.fit_tokenizer
    assert ran_line("tokenizer", none) == (
        "minitok's tokenizer_step, tokens_to_image (yours has not passed yet); the training "
        "loop: minitok's tokenizer.fit_tokenizer")
    assert ran_line("AR prior", none).endswith("; the training loop: minitok's training.fit")


def test_capstone_runs_their_code_beside_the_shipped_pipeline(tmp_path):
    """A fast path: two training steps each; what ran is the package's code, their loops too."""
    out = tmp_path / "mycap"
    write_package(package_files(_lessons(ROOT / "solutions", {"06": ["decode_loop"]}),
                                out.name), out, force=False)
    _recording_loops(out)
    try:
        result = capstone(out, tmp_path / "out", quick=True,
                          steps={"tokenizer": 2, "prior": 2, "maskgit": 2})
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == out.name]:
            del sys.modules[name]
    parts = result["parts"]
    assert parts.ar_generate.__module__ == "mycap.lesson05"
    assert parts.Transformer.__module__ == "mycap.lesson04"
    assert parts.fit.__module__ == "mycap.lesson05"
    assert parts.fit.__globals__["TRAINED"] == [("ARPrior", 2), ("MaskGIT", 2)]
    assert parts.fit_tokenizer.__module__ == "mycap.lesson03"
    assert parts.fit_tokenizer.__globals__["TRAINED"] == [("VQTokenizer", 2)]
    assert parts.decode_loop is maskgit.decode_loop and parts.missing == {"decode_loop"}
    methods = [row["method"] for row in result["yours"]]
    assert methods == [row["method"] for row in result["shipped"]] and len(methods) == 3
    for row in result["yours"] + result["shipped"]:
        assert 0 <= row["accuracy"] <= 1 and row["fd"] >= 0 and row["passes/image"] > 0
    assert [row["passes/image"] for row in result["yours"]] == [2, 64, 8]
    assert result["picture"].is_file()
    table = format_table(result["yours"], result["shipped"], parts)
    assert ("ran your Transformer, random_mask, masked_loss; minitok's decode_loop (yours has "
            "not passed yet); the training loop: your fit") == table.splitlines()[-1].strip()
    assert "ran your Transformer, prior_batch_loss, ar_generate; the training loop: your fit\n" \
        in table
    assert ("ran your tokenizer_step, tokens_to_image; the training loop: your fit_tokenizer\n"
            in table)


@pytest.mark.parametrize(("option", "said"), [
    (["--device", "cuda"], "--device cuda: with --yours the capstone runs on the CPU only"),
    (["--train", "models"], "--train: with --yours the capstone trains your pipeline itself"),
])
def test_demo_yours_refuses_device_and_train_naming_the_option(option, said, tmp_path, capsys):
    """Refused before anything is read or trained: the package need not even exist."""
    argv = ["demo", "--yours", str(tmp_path / "absent"), "--out", str(tmp_path / "out"), *option]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.startswith(f"minitok demo: {said}")
    assert not (tmp_path / "out").exists()


def test_run_capstone_says_why_it_refuses(tmp_path, capsys):
    assert run_capstone(tmp_path / "absent", device="cuda:0") == 2
    err = capsys.readouterr().err
    assert err.startswith("minitok demo: --device cuda:0:") and "drop --device" in err
    assert run_capstone(tmp_path / "absent", train=tmp_path / "models") == 2
    assert capsys.readouterr().err.startswith("minitok demo: --train:")


@pytest.mark.slow
def test_export_grades_the_solutions_and_everything_is_theirs(tmp_path, capsys):
    """Lessons 03-05's solutions, graded in workers, are all theirs: full marks there take
    the adaptive weight's probe, a KV cache written in place and classes built in the worker
    crossing the process boundary (test_grade's gradients test grades Lesson 02)."""
    work = tmp_path / "workspace"
    work.mkdir()
    for name in ("03_image_tokenizer.ipynb", "04_transformer.ipynb",
                 "05_autoregressive.ipynb"):
        shutil.copy(ROOT / "solutions" / name, work)
    shutil.copy(ROOT / "lessons" / "06_maskgit.ipynb", work)  # untouched: read, not run
    assert export(work, tmp_path / "mine", sandbox="none") == 0
    out = capsys.readouterr().out
    n03 = len(references("lesson03"))
    assert f"lesson03: {n03}/{n03} yours" in out
    assert "lesson04: 7/7 yours" in out and "lesson05: 9/9 yours" in out
    assert "lesson06: 0/7 yours" in out
    assert not (tmp_path / "mine" / "lesson06.py").exists()
    package = load_package(tmp_path / "mine")
    try:
        assert package.YOURS["lesson05"][-1] == "ar_generate"
        # the training loops are theirs, as they wrote them, and the capstone runs them
        assert "fit" in package.YOURS["lesson05"]
        assert "fit_tokenizer" in package.YOURS["lesson03"]
        parts = Parts(package)
        assert parts.fit is package.lesson05.fit and parts.fit.__module__ == "mine.lesson05"
        assert parts.fit_tokenizer is package.lesson03.fit_tokenizer
        assert "def fit(model, batch_loss" in Path(package.lesson05.__file__).read_text()
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == "mine"]:
            del sys.modules[name]
