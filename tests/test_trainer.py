"""`minitok train`: bad input, the files a run writes, exact resume, and DDP on two CPU
processes (gloo) against one process on the same global batch.

The multi-process tests start real processes (torchrun, or two ranks started by hand with
the variables torchrun sets) in their own process group, and kill that group when they end,
so that no process outlives its test.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from minitok import checkpoints
from minitok.data import make_shapes
from minitok.tools import trainer
from minitok.tools.trainer import STATE_FORMAT, TrainSettings, check_settings, run, train

TINY = dict(size=16, channels=3, steps=2, batch_size=4, width=16, num_codes=16, n_layer=1,
            n_head=2, n_embd=32, sample_every=1000, checkpoint_every=1000, timeout=30.0)


def tiny(model: str, images, out, **changes) -> TrainSettings:
    """Settings for a model small enough to train in a second."""
    return TrainSettings(model, str(images), str(out), **{**TINY, **changes})


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """24 coloured shapes of 16 px, one subfolder per shape (3 classes)."""
    return make_shapes(tmp_path_factory.mktemp("shapes"), 24, size=16, classes=True)


@pytest.fixture(scope="module")
def tokenizer_path(shapes, tmp_path_factory) -> Path:
    """A tokenizer trained for two steps on the shapes, for the prior and MaskGIT."""
    return train(tiny("tokenizer", shapes, tmp_path_factory.mktemp("tok")))


def cli_flags(s: TrainSettings) -> list[str]:
    """The `minitok train` command line of settings `s` (the CLI's flags are its fields)."""
    flags = [s.model]
    for field in dataclasses.fields(s)[1:]:
        value = getattr(s, field.name)
        flag = "--" + field.name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is not None and value is not False:
            flags += [flag, str(value)]
    return flags


def params(path: Path, kind: str) -> dict[str, torch.Tensor]:
    return checkpoints.load(kind, path).state_dict()


def max_difference(a: dict, b: dict) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("size", [33, 6, 128])
def test_a_size_the_tokenizer_cannot_take_says_which_work_and_why(size):
    with pytest.raises(ValueError, match="even number of pixels from 8 to 64") as err:
        check_settings(tiny("tokenizer", "x", "y", size=size))
    assert "halves the image" in str(err.value) and "downsamples 8x or 16x" in str(err.value)


def test_other_settings_that_cannot_work_are_refused_by_name():
    with pytest.raises(ValueError, match="width must be a multiple of 8"):
        check_settings(tiny("tokenizer", "x", "y", width=20))
    with pytest.raises(ValueError, match="need --tokenizer"):
        check_settings(tiny("maskgit", "x", "y"))
    with pytest.raises(ValueError, match="channels must be one of 1, 3"):
        check_settings(tiny("tokenizer", "x", "y", channels=2))
    with pytest.raises(ValueError, match="model must be one of"):
        check_settings(tiny("vqgan", "x", "y"))


def test_a_codebook_of_one_code_is_refused_before_anything_runs(tmp_path, capsys):
    """--num-codes 1 would train to the end a tokenizer whose every image is the same tokens."""
    from minitok.tools.cli import main

    make_shapes(tmp_path / "images", 3, size=16)
    flags = cli_flags(tiny("tokenizer", tmp_path / "images", tmp_path / "out", num_codes=1))
    assert main(["train", *flags]) == 2
    assert "num_codes must lie in [2, inf], got 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before the first step, nothing written
    with pytest.raises(ValueError, match="num_codes must lie in"):
        check_settings(tiny("tokenizer", "x", "y", num_codes=1))
    check_settings(tiny("tokenizer", "x", "y", num_codes=2))
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "codebook size, at least 2 (default 256)" in " ".join(capsys.readouterr().out.split())


def test_bad_folders_are_clear_errors_not_tracebacks(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run(tiny("tokenizer", tmp_path / "empty", tmp_path / "out")) == 2
    assert "holds no images" in capsys.readouterr().err
    make_shapes(tmp_path / "some", 3, size=16)
    (tmp_path / "some" / "cat.jpg").write_bytes(b"\xff\xd8 truncated")
    assert run(tiny("tokenizer", tmp_path / "some", tmp_path / "out")) == 2
    assert "cat.jpg" in capsys.readouterr().err
    assert run(tiny("tokenizer", tmp_path / "missing", tmp_path / "out")) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_token_model_refuses_a_tokenizer_of_another_size(shapes, tokenizer_path, tmp_path):
    with pytest.raises(ValueError, match="reads 16 px images with 3 channels.*--size 32"):
        train(tiny("prior", shapes, tmp_path, size=32, tokenizer=str(tokenizer_path)))


# --------------------------------------------------------------------------- one process


@pytest.mark.parametrize("kind", ["tokenizer", "prior", "maskgit"])
def test_a_run_writes_a_model_checkpoint_a_training_state_and_samples(kind, shapes,
                                                                      tokenizer_path, tmp_path):
    extra = {} if kind == "tokenizer" else {"tokenizer": str(tokenizer_path)}
    path = train(tiny(kind, shapes, tmp_path, sample_every=1, **extra))
    model = checkpoints.load(kind, path)  # the model checkpoint format, verified
    assert model.meta["script"] == f"minitok train {kind}"
    assert model.meta["recipe"]["classes"] == ["circle", "square", "triangle"]
    assert model.meta["results"]["images_per_second"] > 0
    if kind != "tokenizer":
        assert model.config.num_classes == 3
        checkpoints.check_tokenizer(model, checkpoints.load("tokenizer", tokenizer_path))
    state = torch.load(tmp_path / "state.pt", weights_only=True)  # tensors and plain values
    assert state["format"] == STATE_FORMAT and state["step"] == 2 and state["world_size"] == 1
    assert set(state["rng"][0]) == {"torch", "cuda", "python", "numpy", "batches"}
    samples = sorted(p.name for p in tmp_path.glob("samples_*.png"))
    assert samples == ["samples_000001.png", "samples_000002.png"]


class Interrupted(Exception):
    """Stands for a run stopped (Ctrl-C, a lost machine) right after writing its state."""


@pytest.mark.parametrize("kind", ["tokenizer", "maskgit"])
def test_a_resumed_run_is_bit_identical_to_one_that_never_stopped(kind, shapes, tokenizer_path,
                                                                  tmp_path, monkeypatch):
    # The tokenizer restarts dead codes and MaskGIT uses dropout: both draw from the global
    # torch RNG, so only a state that restores it (and the batch generator) can match.
    extra = {} if kind == "tokenizer" else {"tokenizer": str(tokenizer_path)}
    whole = train(tiny(kind, shapes, tmp_path / "whole", steps=5, checkpoint_every=2, **extra))

    save_state = trainer.save_state

    def save_then_stop(path, step, *args):
        save_state(path, step, *args)
        if step == 2:
            raise Interrupted

    monkeypatch.setattr(trainer, "save_state", save_then_stop)
    parts = tiny(kind, shapes, tmp_path / "parts", steps=5, checkpoint_every=2, **extra)
    with pytest.raises(Interrupted):
        train(parts)
    monkeypatch.undo()
    resumed = train(dataclasses.replace(parts, resume=True))
    a, b = params(whole, kind), params(resumed, kind)
    assert all(torch.equal(a[name], b[name]) for name in a)
    with pytest.raises(ValueError, match="other settings: batch_size 4 \\(now 8\\)"):
        train(dataclasses.replace(parts, resume=True, batch_size=8))


def test_resume_without_a_state_says_where_it_looked(shapes, tmp_path):
    with pytest.raises(FileNotFoundError, match="no training state at .*state.pt"):
        train(tiny("tokenizer", shapes, tmp_path, resume=True))


def test_the_command_line_writes_shapes_and_trains_on_them(tmp_path, capsys):
    from minitok.tools.cli import main

    assert main(["shapes", str(tmp_path / "img"), "--n", "6", "--size", "16"]) == 0
    settings = tiny("tokenizer", tmp_path / "img", tmp_path / "out")
    assert main(["train", *cli_flags(settings)]) == 0
    assert "tokenizer: 2 steps, 8 images" in capsys.readouterr().out
    assert checkpoints.load("tokenizer", tmp_path / "out" / "tokenizer.pt").num_codes == 16


# --------------------------------------------------------------------------- several processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], **env) -> subprocess.Popen:
    """A process in its own group (so that `stop` ends it and all its children)."""
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, **env})


def stop(proc: subprocess.Popen) -> None:
    """End the process group `start` made, if anything in it still runs."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def torchrun(s: TrainSettings) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
            f"--master_port={free_port()}", "-m", "minitok", "train", *cli_flags(s)]


def wait_for(path: Path, procs: list[subprocess.Popen], seconds: float = 120) -> None:
    """Wait until `path` exists (the run is training), failing if a process ends first."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        for proc in procs:
            assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"no {path} after {seconds} s"
        time.sleep(0.1)


def worker_of_rank(launcher: int, rank: int) -> int:
    """The pid of torchrun's worker with RANK=rank (its children, read from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if parent == launcher and f"RANK={rank}".encode() in env:
            return int(entry.name)
    raise AssertionError(f"torchrun {launcher} has no worker of rank {rank}")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tokenizer", "prior", "maskgit"])
def test_one_ddp_step_equals_one_step_of_one_process_on_the_global_batch(
        kind, shapes, tokenizer_path, tmp_path):
    # lr 1e-5: Adam's first step moves every weight by about lr whatever its gradient's
    # size, so float noise in a gradient near zero (two processes sum it in another order)
    # can move a weight by a good part of lr: at lr 1e-4 one tokenizer weight differed by
    # 4e-7 (at the default 2e-3, by 8e-6), at 1e-5 no weight by more than a float32 ulp of
    # the codebook (1.2e-7), while a wrong split moves weights by about lr. No dropout and
    # no dead-code restarts: both draw per process.
    extra = {} if kind == "tokenizer" else {"tokenizer": str(tokenizer_path)}
    settings = tiny(kind, shapes, tmp_path / "ddp", steps=1, lr=1e-5, dropout=0.0,
                    dead_code_threshold=0.0, **extra)
    proc = start(torchrun(settings))
    try:
        output, _ = proc.communicate(timeout=300)
    finally:
        stop(proc)
    assert proc.returncode == 0, output[-3000:]
    ddp_path = tmp_path / "ddp" / f"{kind}.pt"
    one_path = train(dataclasses.replace(settings, out=str(tmp_path / "one"), batch_size=8))
    ddp, one = params(ddp_path, kind), params(one_path, kind)
    half = params(train(dataclasses.replace(settings, out=str(tmp_path / "half"))), kind)
    assert max_difference(ddp, one) <= 1e-6
    assert max_difference(ddp, half) > 5e-6, "a step on rank 0's share alone differs"
    losses = [checkpoints.load(kind, path).meta["results"]["final_loss"]
              for path in (ddp_path, one_path)]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5), "the loss shown: the global batch's"


def test_ddp_keeps_the_copies_equal_when_the_tokenizer_restarts_codes(shapes, tmp_path):
    # Restarts copy each process's own vectors into the codebook; rank 0's codebook is
    # broadcast after each step, and the run checks the copies at the end.
    settings = tiny("tokenizer", shapes, tmp_path, steps=6, num_codes=64)
    proc = start(torchrun(settings))
    try:
        output, _ = proc.communicate(timeout=300)
    finally:
        stop(proc)
    assert proc.returncode == 0, output[-3000:]
    assert "2 x cpu" in output and (tmp_path / "tokenizer.pt").is_file()


def test_a_killed_rank_ends_the_run_with_an_error_not_a_hang(shapes, tmp_path):
    settings = tiny("tokenizer", shapes, tmp_path, steps=100_000, checkpoint_every=1)
    proc = start(torchrun(settings))
    try:
        wait_for(tmp_path / "state.pt", [proc])
        os.kill(worker_of_rank(proc.pid, 1), signal.SIGKILL)
        began = time.monotonic()
        output, _ = proc.communicate(timeout=60)
        seconds = time.monotonic() - began
    finally:
        stop(proc)
    assert proc.returncode != 0 and seconds < 60
    assert "rank      : 1" in output and "SIGKILL" in output, output[-3000:]


@pytest.mark.parametrize("message, lost", [
    ("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer", True),
    ("Application timeout caused pair closure", True),  # no file named: seen under load in CI
    ("Timed out waiting 15000ms for recv operation to complete", True),
    ("mat1 and mat2 shapes cannot be multiplied (4x3 and 4x8)", False),
    ("CUDA out of memory. Tried to allocate 2.00 GiB", False),
])
def test_a_lost_peer_is_told_apart_from_an_ordinary_error(message, lost):
    assert trainer.lost_peer(RuntimeError(message)) is lost


@pytest.mark.slow
def test_a_hung_rank_makes_the_other_stop_within_the_timeout_with_a_clear_error(shapes,
                                                                                 tmp_path):
    # Two ranks started by hand with the variables torchrun sets, so that rank 0's own
    # error is seen (torchrun would also wait 30 s for the stopped rank before killing it).
    settings = tiny("tokenizer", shapes, tmp_path, steps=100_000, checkpoint_every=1,
                    timeout=15.0)
    env = dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2")
    command = [sys.executable, "-m", "minitok", "train", *cli_flags(settings)]
    ranks = [start(command, RANK=str(r), LOCAL_RANK=str(r), **env) for r in (0, 1)]
    try:
        wait_for(tmp_path / "state.pt", ranks)
        os.kill(ranks[1].pid, signal.SIGSTOP)  # alive, but never answers again
        began = time.monotonic()
        output, _ = ranks[0].communicate(timeout=60)
        seconds = time.monotonic() - began
    finally:
        for proc in ranks:
            stop(proc)
    assert ranks[0].returncode == 1 and seconds < 60, output[-3000:]
    assert "minitok train (rank 0): rank 0 of 2 stopped" in output
    assert "did not answer within --timeout 15 s" in output
