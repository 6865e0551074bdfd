"""Past the digits: `minitok train`, the course's models on your own images, on one CPU, one
GPU or many.

    minitok shapes shapes/ --n 2000                      # no pictures at hand? coloured shapes
    minitok train tokenizer --images shapes/ --size 32 --channels 3 --out runs/tok
    minitok train maskgit --images shapes/ --tokenizer runs/tok/tokenizer.pt --out runs/mg
    torchrun --nproc_per_node=4 -m minitok train tokenizer ... --device cuda

One training loop for the three models, written out like nanoGPT's train.py: the settings
in a dataclass, the data and the model built once, then the lessons' own loop
(`training.train_loop`: the learning-rate schedule) runs the steps, and each step is the
model's own lesson's (in bf16 autocast on a GPU): VQTokenizer's `tokenizer_step` (Lesson 03),
ARPrior's `prior_batch_loss` (Lesson 05) and MaskGIT's `maskgit_loss` (Lesson 06) with
`training.optimizer_step`. The prior and MaskGIT learn the token grids of a tokenizer
checkpoint, one class per subfolder of --images (else one class).

Under `torchrun --nproc_per_node=N` it is data-parallel on PyTorch's own engine:
DistributedDataParallel (gloo on CPU, NCCL on CUDA) averages the gradients. Every process
draws the same global batch of N x --batch-size examples and takes every N-th one
(DistributedSampler's split), so N processes take the same steps as one process given the
global batch. Only rank 0 shows progress and writes files.

Files in --out:

    <model>.pt          the final model, a minitok checkpoint: checkpoints.load(kind, path)
    state.pt            the training state, to continue with --resume (below)
    samples_<step>.png  a sample grid every --sample-every steps: for the tokenizer, images
                        over their reconstructions; for the prior and MaskGIT, generated
                        token grids decoded by the tokenizer (a row per class)

The training state is not a model checkpoint: it holds what continuing needs, as tensors and
plain values (it loads with torch.load(weights_only=True)):

    {"format": STATE_FORMAT, "step": steps done, "world_size": processes,
     "settings": the RUN_FIELDS of TrainSettings, "tokenizer_sha256": str or None,
     "model": state dict, "optimizer": optimizer state dict,
     "rng": one dict per rank, {"torch": CPU state, "cuda": CUDA state or None,
            "python": [version, (625,) int64 tensor, gauss], "numpy": {"key": (624,) int64
            tensor, "pos", "has_gauss", "gauss"}, "batches": the batch generator's state}}

With the same settings a resumed run is bit-identical to one that never stopped. A larger
--steps continues the same run with the schedule stretched to the new length.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from minitok import checkpoints, validate
from minitok.course import seed_everything
from minitok.data import load_image_classes
from minitok.maskgit import MaskGIT, MaskGITConfig, decode, maskgit_loss
from minitok.prior import ARPrior, PriorConfig, ar_generate, prior_batch_loss
from minitok.tokenizer import TokenizerConfig, TrainConfig, VQTokenizer, tokenizer_step
from minitok.training import CLIP, LR, adamw, optimizer_step, train_loop

MODELS = ("tokenizer", "prior", "maskgit")
STATE_FORMAT = "minitok-train-state-2"  # 2: the optimizer keeps its initial_lr
P_UNCOND = 0.1  # the prior's and MaskGIT's label dropout, for guidance (Lessons 05, 06)
MAX_SIZE = 64  # (64 / 2)^2 = 1,024 tokens per image for the prior and MaskGIT
SAMPLES_PER_ROW = 8


@dataclass(frozen=True)
class TrainSettings:
    """Everything a run depends on: the flags of `minitok train`."""

    model: str  # "tokenizer", "prior" or "maskgit"
    images: str  # the image folder: images (one class) or one subfolder per class
    out: str  # the folder for the model, the training state and the samples
    size: int = 32  # images are resized to size x size
    channels: int = 3  # 3: colour, 1: grey
    tokenizer: str | None = None  # prior, MaskGIT: the tokenizer checkpoint they model
    steps: int = 2000
    batch_size: int = 32  # per process: the global batch is batch_size x processes
    lr: float | None = None  # peak learning rate; None: the lessons' (2e-3 / 3e-3)
    seed: int = 0
    resume: bool = False  # continue from out/state.pt
    device: str = "cpu"  # "cpu" or "cuda" (under torchrun, each process its LOCAL_RANK GPU)
    sample_every: int = 250
    checkpoint_every: int = 250
    timeout: float = 300.0  # seconds a process waits for the others before giving up
    num_codes: int = 256  # tokenizer: K, the codebook size
    width: int = 32  # tokenizer: convolution channels (GroupNorm takes 8 groups of them)
    dead_code_threshold: float = TokenizerConfig.dead_code_threshold  # tokenizer; 0: no restarts
    n_layer: int = 4  # prior, MaskGIT: the transformer's size (Lessons 05 and 06)
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.1

    @property
    def peak_lr(self) -> float:
        """--lr, or the lessons' peak learning rate for this model."""
        return (TrainConfig.lr if self.model == "tokenizer" else LR) if self.lr is None else self.lr


# The settings a resumed run must share with the one that wrote the state.
RUN_FIELDS = ("model", "size", "channels", "batch_size", "lr", "seed", "num_codes", "width",
              "dead_code_threshold", "n_layer", "n_head", "n_embd", "dropout")


def check_settings(s: TrainSettings) -> TrainSettings:
    """Refuse settings that cannot work, each with a message that says what would."""
    validate.one_of(s.model, "model", MODELS)
    for name in ("steps", "batch_size", "sample_every", "checkpoint_every", "num_codes",
                 "width", "n_layer", "n_head", "n_embd"):
        validate.positive_int(getattr(s, name), name)
    validate.non_negative_int(s.seed, "seed")
    validate.number(s.num_codes, "num_codes", low=2)  # one code: every image the same tokens
    validate.one_of(s.channels, "channels", (1, 3))
    validate.number(s.timeout, "timeout", low=0, low_open=True)
    validate.number(s.dropout, "dropout", low=0, high=1, high_open=True)
    validate.number(s.dead_code_threshold, "dead_code_threshold", low=0)
    if s.lr is not None:
        validate.number(s.lr, "lr", low=0, low_open=True)
    if isinstance(s.size, bool) or not isinstance(s.size, int) or s.size % 2 or not (
            8 <= s.size <= MAX_SIZE):
        raise ValueError(
            f"size must be an even number of pixels from 8 to {MAX_SIZE}, got {s.size!r}. The "
            f"tokenizer halves the image once (a stride-2 convolution) and its decoder doubles "
            f"it back, so an odd size cannot come back to itself; and the prior and MaskGIT "
            f"read (size / 2)^2 tokens per image, 1,024 at {MAX_SIZE} px, with attention's cost "
            f"growing as its square. Larger images need a tokenizer that downsamples 8x or 16x, "
            f"as real ones do (docs/past-the-digits.md)")
    if s.width % 8:
        raise ValueError(f"width must be a multiple of 8 (the tokenizer's GroupNorm splits its "
                         f"channels into 8 groups), got {s.width}")
    if (s.model == "tokenizer") == (s.tokenizer is not None):
        raise ValueError("the prior and MaskGIT need --tokenizer PATH (a checkpoint written by "
                         "`minitok train tokenizer`); the tokenizer takes none")
    return s


# --------------------------------------------------------------------------- processes


class Processes(NamedTuple):
    """Where this process stands: its rank, how many there are, its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0, the one process that shows progress and writes files."""
        return self.rank == 0


def start_processes(device: str, timeout: float) -> Processes:
    """This process's rank and device, and the process group when torchrun started several.

    torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them this is the only process.
    Collectives wait at most `timeout` seconds, so a process whose partner died stops with
    an error instead of waiting forever.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    where = torch.device(device)
    if where.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: torch {torch.__version__} sees no CUDA GPU; "
                             f"use --device cpu")
        if world > 1:
            if local >= torch.cuda.device_count():
                raise ValueError(f"LOCAL_RANK {local}, but this machine has "
                                 f"{torch.cuda.device_count()} CUDA GPUs: start one process "
                                 f"per GPU (torchrun --nproc_per_node)")
            where = torch.device("cuda", local)
        elif where.index is None:
            where = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(where)
    elif where.type != "cpu":
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    if world > 1:
        dist.init_process_group("nccl" if where.type == "cuda" else "gloo",
                                timeout=timedelta(seconds=timeout))
    return Processes(rank, world, where)


class ProcessLost(RuntimeError):
    """Another process of the run died or stopped answering."""


# What gloo's RuntimeErrors say when a peer is gone: most name gloo's source file; the error
# raised on a connection already closed by an earlier timeout names nothing else.
GLOO_LOST = ("/gloo/", "Application timeout caused pair closure", "Connection closed by peer",
             "Connection reset by peer", "Timed out waiting")


def lost_peer(err: RuntimeError) -> bool:
    """Whether a collective failed: NCCL raises a DistError, gloo a plain RuntimeError."""
    message = str(err).lower()
    return isinstance(err, dist.DistError) or any(m.lower() in message for m in GLOO_LOST)


# --------------------------------------------------------------------------- data and models


class Data(NamedTuple):
    """What a run learns from: x (N, C, S, S) images or (N, G, G) token grids, labels (N,)."""

    x: Tensor
    labels: Tensor
    classes: list[str]


def load_data(s: TrainSettings, device: torch.device, tokenizer: VQTokenizer | None) -> Data:
    """The image folder, as images (tokenizer) or as the tokenizer's grids (prior, MaskGIT)."""
    images, labels, classes = load_image_classes(s.images, s.size, grayscale=s.channels == 1)
    if tokenizer is not None:  # encoded once, in chunks, on the device
        images = torch.cat([tokenizer.encode(chunk.to(device)) for chunk in images.split(256)])
    return Data(images.to(device), labels.to(device), classes)


def load_tokenizer(s: TrainSettings, device: torch.device) -> VQTokenizer:
    """The tokenizer checkpoint of a prior or MaskGIT run, checked against --size/--channels."""
    tokenizer = checkpoints.load("tokenizer", s.tokenizer, device)
    config = tokenizer.config
    if (config.image_size, config.in_channels) != (s.size, s.channels):
        raise ValueError(f"tokenizer {s.tokenizer} reads {config.image_size} px images with "
                         f"{config.in_channels} channels, but this run has --size {s.size} "
                         f"--channels {s.channels}: give the same ones it was trained with")
    return tokenizer


def build_model(s: TrainSettings, tokenizer: VQTokenizer | None, classes: int) -> nn.Module:
    """A new model of the kind `s.model`, sized by the settings (and the tokenizer's grid)."""
    if s.model == "tokenizer":
        return VQTokenizer(TokenizerConfig(image_size=s.size, in_channels=s.channels,
                                           channels=s.width, num_codes=s.num_codes,
                                           dead_code_threshold=s.dead_code_threshold))
    sizes = dict(num_codes=tokenizer.num_codes, grid_size=tokenizer.grid_size,
                 num_classes=classes, n_layer=s.n_layer, n_head=s.n_head, n_embd=s.n_embd,
                 dropout=s.dropout)
    return ARPrior(PriorConfig(**sizes)) if s.model == "prior" else MaskGIT(MaskGITConfig(**sizes))


@torch.no_grad()
def warm_start(tokenizer: VQTokenizer, data: Data, count: int, generator: torch.Generator) -> None:
    """Fit the codebook by k-means to `count` images drawn with the batch generator: one
    training-mode forward pass, the same in every process, before DDP starts."""
    rows = torch.randint(0, len(data.x), (count,), generator=generator)
    tokenizer.train()(data.x[rows.to(data.x.device)])


def make_optimizer(s: TrainSettings, model: nn.Module) -> torch.optim.Optimizer:
    """Lesson 03's Adam for the tokenizer; the token models' AdamW (training.adamw)."""
    if s.model == "tokenizer":
        return torch.optim.Adam(model.parameters(), lr=s.peak_lr)
    return adamw(model, s.peak_lr)


# --------------------------------------------------------------------------- one step


class Share:
    """The model as one of several processes runs it, inside a lesson's batch loss.

    The lesson's function draws the global batch (its rows, dropped labels and masks come
    from the batch generator, the same in every process) and calls the model on all of it.
    Through a Share the model runs on rows rank, rank + world, ... only (DistributedSampler's
    split) and the other rows get zero logits, constants without a gradient. The lesson's
    loss, a mean over the global batch, then carries this process's rows' part of the
    global gradient, so `world` times it, averaged over the processes by DDP, is the global
    batch's gradient. The lesson's function reads the model's config, device and ids
    (mask_id, null_class) through the Share.
    """

    def __init__(self, net: nn.Module, model: nn.Module, procs: Processes):
        self.net, self.model, self.procs = net, model, procs

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def __call__(self, tokens: Tensor, *labels: Tensor) -> Tensor:
        mine = slice(self.procs.rank, None, self.procs.world)
        logits = self.net(tokens[mine], *(y[mine] for y in labels))  # (B, T, V)
        every = logits.new_zeros(tokens.shape[0], *logits.shape[1:])  # (n, T, V)
        every[mine] = logits
        return every


def train_step(s: TrainSettings, procs: Processes, net: nn.Module, model: nn.Module,
               optimizer: torch.optim.Optimizer, data: Data, generator: torch.Generator
               ) -> float:
    """One step on this process's share of the global batch; returns the global batch's loss.

    Each model's step is its lesson's: the tokenizer's `tokenizer_step` (Lesson 03: no
    clipping), the prior's `prior_batch_loss` (Lesson 05), MaskGIT's `maskgit_loss` (Lesson
    06), those two through a `Share` and `training.optimizer_step` with the lessons' CLIP.
    Everything random about the global batch is drawn with `generator`, the same in every
    process, so N processes take the step one process takes on the global batch.
    """
    n = s.batch_size * procs.world  # the global batch
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if procs.device.type == "cuda"
                else nullcontext())  # bf16 on a GPU; a CPU trains in float32
    if s.model == "tokenizer":  # every example counts the same: the share's own mean
        rows = torch.randint(0, len(data.x), (n,), generator=generator).to(data.x.device)
        with autocast:
            stats = tokenizer_step(net, data.x[rows][procs.rank::procs.world], optimizer)
        return sum_over_processes(stats["rec"] + stats["vq"], procs) / procs.world
    share = Share(net, model, procs) if procs.world > 1 else net
    with autocast:
        if s.model == "prior":
            loss = prior_batch_loss(share, data.x, data.labels, generator, n, P_UNCOND)
        else:
            rows = torch.randint(0, len(data.x), (n,), generator=generator).to(data.x.device)
            loss = maskgit_loss(share, data.x[rows], data.labels[rows], P_UNCOND,
                                generator=generator)
    optimizer_step(loss * procs.world, optimizer, net.parameters(), CLIP)
    # Each other process's rows score log K at every position (zero logits: uniform), so
    # the processes' losses add up to the global batch's plus (world - 1) log K.
    return sum_over_processes(loss.item(), procs) - (procs.world - 1) * math.log(
        model.config.num_codes)


def sum_over_processes(value: float, procs: Processes) -> float:
    """The sum of `value` over the processes (one process: the value)."""
    if procs.world == 1:
        return value
    total = torch.tensor(value, dtype=torch.float64, device=procs.device)
    dist.all_reduce(total)
    return total.item()


def sync_codebook(s: TrainSettings, procs: Processes, model: nn.Module) -> None:
    """Under DDP, give every process rank 0's codebook after a step that may restart codes.

    A dead-code restart (Lesson 02) copies vectors of the process's own share of the batch
    into the codebook, outside the gradient, so each process would restart its codes
    differently and the copies of the model would drift apart. Rank 0's copy wins, the rule
    DDP applies to buffers (its usage counts among them).
    """
    if procs.world > 1 and s.model == "tokenizer" and s.dead_code_threshold > 0:
        dist.broadcast(model.quantizer.codebook.data, src=0)


def check_replicas(model: nn.Module, procs: Processes) -> None:
    """Refuse to finish if the processes' copies of the parameters differ: DDP assumes they
    never do, and anything that changes one copy outside the gradient step breaks that."""
    if procs.world == 1:
        return
    flat = torch.cat([p.detach().double().flatten() for p in model.parameters()])  # (P,)
    ramp = torch.arange(1, len(flat) + 1, dtype=torch.float64, device=flat.device)
    low = torch.stack([flat.sum(), (flat * ramp).sum()])  # two checksums, one order-aware
    high = low.clone()
    dist.all_reduce(low, dist.ReduceOp.MIN)
    dist.all_reduce(high, dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RuntimeError("the processes' copies of the model differ after training: "
                           "something changed one copy outside the gradient step")


# --------------------------------------------------------------------------- samples


@torch.no_grad()
def sample_rows(s: TrainSettings, model: nn.Module, data: Data,
                tokenizer: VQTokenizer | None) -> list[Tensor]:
    """The rows of the sample grid, each (n, C, S, S) in [-1, 1], the same draws each time
    (a generator seeded with the run's seed) so that the grids show the model improving."""
    if s.model == "tokenizer":
        picks = torch.linspace(0, len(data.x) - 1, SAMPLES_PER_ROW).round().long()
        images = data.x[picks.to(data.x.device)]  # (8, C, S, S)
        model.eval()
        rows = [images, model.decode(model.encode(images))]
        model.train()
        return rows
    generator = torch.Generator(model.device).manual_seed(s.seed)
    classes = min(len(data.classes), SAMPLES_PER_ROW)
    rows = 2 if classes == 1 else classes
    labels = torch.arange(rows, device=model.device).remainder(classes)
    labels = labels.repeat_interleave(SAMPLES_PER_ROW)  # (rows * 8,)
    if s.model == "prior":
        grids = ar_generate(model, labels, generator=generator)
    else:
        grids = decode(model, labels, generator=generator)
    return list(tokenizer.decode(grids).split(SAMPLES_PER_ROW))


def save_grid(rows: list[Tensor], path: Path) -> Path:
    """Write rows of (n, C, S, S) images in [-1, 1] as one PNG, enlarged to >= 64 px each."""
    from PIL import Image

    images = torch.stack([torch.stack(list(row)) for row in rows]).float().cpu()  # (R, n, C, S, S)
    images = ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    R, n, C, S, _ = images.shape
    scale, pad = max(1, 64 // S), 2
    cells = images.repeat_interleave(scale, -1).repeat_interleave(scale, -2).expand(
        R, n, 3, S * scale, S * scale)  # grey -> RGB
    cell = S * scale + pad
    canvas = torch.full((3, R * cell + pad, n * cell + pad), 255, dtype=torch.uint8)
    for r in range(R):
        for c in range(n):
            canvas[:, pad + r * cell: (r + 1) * cell, pad + c * cell: (c + 1) * cell] = cells[r, c]
    Image.fromarray(canvas.permute(1, 2, 0).numpy()).save(path)
    return path


# --------------------------------------------------------------------------- training state


def rng_state(generator: torch.Generator, device: torch.device) -> dict:
    """Every random state of this process, as tensors and plain values."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
            "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                      "pos": np_state["state"]["pos"], "has_gauss": np_state["has_gauss"],
                      "gauss": np_state["gauss"]},
            "batches": generator.get_state()}


def set_rng_state(state: dict, generator: torch.Generator, device: torch.device) -> None:
    """Put back what `rng_state` saved (a CUDA state only where this run is on CUDA too)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal.tolist()), gauss))
    numpy = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": numpy["key"].numpy().astype(np.uint32),
                                   "pos": numpy["pos"]},
                         "has_gauss": numpy["has_gauss"], "gauss": numpy["gauss"]})
    generator.set_state(state["batches"])


def save_state(path: Path, step: int, s: TrainSettings, procs: Processes, model: nn.Module,
               optimizer: torch.optim.Optimizer, generator: torch.Generator,
               tokenizer: VQTokenizer | None) -> None:
    """Write the training state (every process takes part: each sends rank 0 its RNGs).

    It goes to a temporary file first and then replaces `path`, so a run killed while
    saving leaves the previous state intact.
    """
    rngs = [rng_state(generator, procs.device)]
    if procs.world > 1:
        rngs = [None] * procs.world
        dist.all_gather_object(rngs, rng_state(generator, procs.device))
    if not procs.main:
        return
    state = {"format": STATE_FORMAT, "step": step, "world_size": procs.world,
             "settings": {name: getattr(s, name) for name in RUN_FIELDS},
             "tokenizer_sha256": tokenizer.checkpoint_sha256 if tokenizer else None,
             "model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": rngs}
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def load_state(path: Path, s: TrainSettings, procs: Processes,
               tokenizer: VQTokenizer | None) -> dict:
    """The training state at `path`, refused unless this run can continue it exactly."""
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no training state at {path} (a run writes one "
                                f"every --checkpoint-every steps)")
    state = checkpoints.read_safely(path, lambda why: ValueError(
        f"--resume: {path} is not a readable training state ({why})"))
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"--resume: {path} is not a training state of format {STATE_FORMAT}")
    changed = [f"{name} {old!r} (now {getattr(s, name)!r})"
               for name, old in state["settings"].items() if old != getattr(s, name)]
    if changed:
        raise ValueError(f"--resume: {path} was written with other settings: "
                         f"{', '.join(changed)}; resume with the ones it was written with")
    if state["step"] > s.steps:
        raise ValueError(f"--resume: {path} is at step {state['step']}, past --steps {s.steps}")
    if state["world_size"] != procs.world:
        raise ValueError(f"--resume: {path} was written by {state['world_size']} processes; "
                         f"resume with as many (torchrun --nproc_per_node), since the global "
                         f"batch and every process's random stream depend on it")
    sha = tokenizer.checkpoint_sha256 if tokenizer else None
    if state["tokenizer_sha256"] != sha:
        raise ValueError(f"--resume: {path} was trained on the tokens of another tokenizer "
                         f"checkpoint than {s.tokenizer}")
    return state


# --------------------------------------------------------------------------- the loop


def train(s: TrainSettings) -> Path:
    """Train `s.model` as the settings say; returns the path of the final model checkpoint."""
    check_settings(s)
    procs = start_processes(s.device, s.timeout)
    try:
        return _train(s, procs)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _train(s: TrainSettings, procs: Processes) -> Path:
    out, device = Path(s.out), procs.device
    seed_everything(s.seed)  # every process builds the same model
    tokenizer = None if s.model == "tokenizer" else load_tokenizer(s, device)
    data = load_data(s, device, tokenizer)
    model = build_model(s, tokenizer, len(data.classes)).to(device)
    optimizer = make_optimizer(s, model)
    generator = torch.Generator().manual_seed(s.seed)  # the batches: the same in every process
    start = 0
    if s.resume:
        state = load_state(out / "state.pt", s, procs, tokenizer)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"][procs.rank], generator, device)
        start = state["step"]
    else:
        if s.model == "tokenizer":
            warm_start(model, data, s.batch_size * procs.world, generator)
        seed_everything(s.seed + procs.rank)  # dropout differs between processes
    net = model
    if procs.world > 1:
        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if procs.main:
        out.mkdir(parents=True, exist_ok=True)
        print(describe(s, procs, data, model, start), flush=True)
    try:
        seconds, loss = _loop(s, procs, net, model, optimizer, generator, data, tokenizer, start)
    except RuntimeError as err:
        if not lost_peer(err):
            raise
        raise ProcessLost(f"rank {procs.rank} of {procs.world} stopped: "
                          f"{str(err).splitlines()[0][:300]}. In a run of several processes "
                          f"this means another one died or did not answer within --timeout "
                          f"{s.timeout:g} s: look for its own error") from err
    check_replicas(model, procs)
    path = out / f"{s.model}.pt"
    if procs.main:
        images = (s.steps - start) * s.batch_size * procs.world
        results = {"final_loss": loss, "images_per_second": images / max(seconds, 1e-9)}
        recipe = {**asdict(s), "processes": procs.world, "classes": data.classes}
        meta = checkpoints.training_meta(f"minitok train {s.model}", recipe, seconds, results,
                                         tokenizer)
        checkpoints.save(model, path, meta)
        print(f"{s.model}: {s.steps - start} steps, {images:,} images in {seconds:.1f} s of "
              f"training steps: {results['images_per_second']:.1f} images/s on {procs.world} "
              f"x {device.type}; final loss {loss:.4f}; wrote {path}", flush=True)
    if procs.world > 1:
        dist.barrier()  # no process reports success before rank 0 has written the model
    return path


def _loop(s: TrainSettings, procs: Processes, net: nn.Module, model: nn.Module,
          optimizer: torch.optim.Optimizer, generator: torch.Generator, data: Data,
          tokenizer: VQTokenizer | None, start: int) -> tuple[float, float]:
    """The steps from `start` to `s.steps` on the lessons' loop (`training.train_loop`: its
    schedule, its deterministic thread settings); returns (seconds in steps, last loss)."""
    out, seconds = Path(s.out), [0.0]

    def step_fn(step: int) -> dict[str, float]:
        began = time.perf_counter()
        loss = train_step(s, procs, net, model, optimizer, data, generator)
        sync_codebook(s, procs, model)
        seconds[0] += time.perf_counter() - began
        done = step + 1
        if procs.main and (done % s.sample_every == 0 or done == s.steps):
            save_grid(sample_rows(s, model, data, tokenizer), out / f"samples_{done:06d}.png")
        if done % s.checkpoint_every == 0 or done == s.steps:
            save_state(out / "state.pt", done, s, procs, model, optimizer, generator, tokenizer)
        return {"loss": loss}

    net.train()
    history = train_loop(step_fn, s.steps, [optimizer], desc=s.model, progress=procs.main,
                         start=start)
    return seconds[0], history["loss"][-1] if history else math.nan


def describe(s: TrainSettings, procs: Processes, data: Data, model: nn.Module, start: int) -> str:
    """The line rank 0 prints before training: what, on what, how big."""
    what = (f"{len(data.x):,} images of {s.size} px, {s.channels} channel(s), "
            f"{len(data.classes)} class(es)")
    params = sum(p.numel() for p in model.parameters())
    begin = f", resuming at step {start}" if start else ""
    return (f"training {s.model} ({params:,} parameters) on {what}; {s.steps} steps of "
            f"{s.batch_size} x {procs.world} process(es) on {procs.device.type}{begin}")


def run(s: TrainSettings) -> int:
    """`minitok train`: train, print a clear message instead of a traceback for bad input."""
    try:
        train(s)
    except (ValueError, OSError, ProcessLost) as err:
        rank = os.environ.get("RANK")
        print(f"minitok train{f' (rank {rank})' if rank else ''}: {err}", file=sys.stderr)
        return 1 if isinstance(err, ProcessLost) else 2
    return 0


def parse_args(argv: list[str]) -> TrainSettings:
    """`minitok train MODEL --images DIR --out DIR [...]`: one flag per TrainSettings field."""
    import argparse

    d = TrainSettings("tokenizer", "", "")  # the defaults, shown in --help
    title_and_commands = "\n\n".join(__doc__.split("\n\n")[:2])
    p = argparse.ArgumentParser(prog="minitok train", description=title_and_commands,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=MODELS)
    p.add_argument("--images", required=True,
                   help="folder of PNG/JPEG images, or one subfolder of them per class")
    p.add_argument("--out", required=True, help="folder for the model, state.pt and samples")
    p.add_argument("--tokenizer", default=None,
                   help="prior, maskgit: the tokenizer checkpoint (tokenizer.pt of a run)")
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate (default: tokenizer {TrainConfig.lr:g}, prior and "
                        f"maskgit {LR:g})")
    p.add_argument("--resume", action="store_true", help="continue from OUT/state.pt")
    p.add_argument("--device", default=d.device, help="cpu (default) or cuda")
    for name, help in FLAG_HELP.items():  # the other flags: the field's type and default
        default = getattr(d, name)
        p.add_argument("--" + name.replace("_", "-"), type=type(default), default=default,
                       help=f"{help} (default {default:g})" if help else f"default {default:g}")
    return TrainSettings(**vars(p.parse_args(argv)))


# The help of each flag that takes its type and default from its TrainSettings field.
FLAG_HELP = {
    "size": "pixels per side",
    "channels": "3 colour, 1 grey",
    "steps": "",
    "batch_size": "per process; the global batch is this x processes",
    "seed": "",
    "sample_every": "write a sample grid every N steps",
    "checkpoint_every": "write state.pt every N steps",
    "timeout": "seconds a process waits for the others",
    "num_codes": "tokenizer: codebook size, at least 2",
    "width": "tokenizer: convolution channels, a multiple of 8",
    "dead_code_threshold": "tokenizer: restart codes used less than this (Lesson 02; 0: never)",
    "n_layer": "prior, maskgit: transformer blocks",
    "n_head": "prior, maskgit: attention heads",
    "n_embd": "prior, maskgit: embedding width",
    "dropout": "prior, maskgit",
}


def main(argv: list[str]) -> int:
    """`minitok train ...` (the `minitok` command hands its arguments over)."""
    return run(parse_args(argv))
