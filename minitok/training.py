"""The one training recipe every minitok model shares: schedule, loop, optimiser.

    lr_scale     linear warm-up, then a cosine from the peak down to 10% of it
    train_loop   runs `step_fn(step)` for every step with the schedule applied, a progress
                 bar, and the losses it returns collected into a history (`minitok train`
                 runs on it too, resuming at any step)
    optimizer_step  zero_grad, backward, gradient-norm clipping, step
    adamw        the token models' optimiser (AR prior, MaskGIT, any-to-any, `minitok train`):
                 AdamW with betas (0.9, 0.95); CLIP is their gradient-norm clipping
    fit          the token models' recipe (Lesson 05's exercise): AdamW, the schedule,
                 clipping at CLIP, random mini-batches, a held-out loss printed as it goes

Loops run under `course.reproducible()` (one CPU thread, deterministic kernels): the same
call with the same seed gives the same model on the same CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from minitok.course import reproducible
from minitok.validate import non_negative_int, number, positive_int

WARMUP_FRACTION = 0.05  # the default warm-up: the first 5% of the steps
FLOOR = 0.1  # the cosine ends at 10% of the peak learning rate
LR = 3e-3  # the token models' peak learning rate
CLIP = 1.0  # the token models' gradients are clipped to this norm


def lr_scale(step: int, steps: int, warmup: int | None = None) -> float:
    """The learning rate at `step` of `steps`, as a fraction of the peak.

    Linear warm-up over the first `warmup` steps (default 5% of them, at least one), then a
    cosine from 1 down to FLOOR over the steps that remain. The warm-up keeps Adam's first,
    badly estimated updates small; the decay lets the last steps settle.
    """
    warmup = max(1, steps // 20) if warmup is None else max(1, warmup)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)  # 0 -> 1 after the warm-up
    return FLOOR + (1 - FLOOR) * 0.5 * (1 + math.cos(math.pi * progress))


def train_loop(step_fn: Callable[[int], dict[str, float]], steps: int,
               optimizers: list[torch.optim.Optimizer], warmup: int | None = None,
               desc: str = "train", progress: bool = True, start: int = 0
               ) -> dict[str, list[float]]:
    """Call `step_fn(step)` for step start .. steps-1; return every value it reported, by name.

    Before each step the learning rate of every parameter group of `optimizers` is set to
    its initial value times `lr_scale(step, steps, warmup)`. `step_fn` does the work (loss,
    backward, `optimizer_step`) and returns the numbers to log, e.g. {"loss": 1.93}. The
    initial value is kept in the group as "initial_lr" (as torch's schedulers keep it), so a
    run that resumes from a saved optimizer at `start` follows the same schedule.
    """
    from tqdm.auto import tqdm

    positive_int(steps, "steps")
    groups = [(group, group.setdefault("initial_lr", group["lr"]))
              for opt in optimizers for group in opt.param_groups]
    history: dict[str, list[float]] = {}
    bar = tqdm(range(start, steps), desc=desc, disable=not progress, initial=start, total=steps)
    with reproducible():
        for step in bar:
            for group, peak in groups:
                group["lr"] = peak * lr_scale(step, steps, warmup)
            for name, value in step_fn(step).items():
                history.setdefault(name, []).append(value)
            if step % 50 == 0 or step == steps - 1:
                bar.set_postfix({name: f"{values[-1]:.4f}" for name, values in history.items()})
    return history


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, parameters,
                   clip: float | None = CLIP) -> None:
    """One update: zero the gradients, backpropagate `loss`, clip the gradients' total norm
    to `clip` (None: no clipping, as Lesson 03 trains the tokenizer), step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        nn.utils.clip_grad_norm_(parameters, clip)
    optimizer.step()


def adamw(model: nn.Module, lr: float = LR, weight_decay: float = 0.05) -> torch.optim.AdamW:
    """The token models' optimiser: AdamW with betas (0.9, 0.95), nanoGPT's and LlamaGen's.

    beta2 = 0.95 (not Adam's 0.999) lets the estimate of each gradient's scale follow
    changes sooner: the usual choice for transformers.
    """
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay,
                             betas=(0.9, 0.95))


def fit(model: nn.Module, batch_loss: Callable[[torch.Generator], torch.Tensor], steps: int,
        lr: float = LR, weight_decay: float = 0.05, warmup: int | None = None, seed: int = 0,
        eval_loss: Callable[[], torch.Tensor | float] | None = None, eval_every: int = 100,
        *, desc: str = "train", progress: bool = False) -> list[float]:
    """Train a token model; returns each step's training loss (floats, before its update).

    Lesson 05's exercise `fit`, line for line: AdamW with betas (0.9, 0.95), each step's
    learning rate lr * lr_scale(step, steps, warmup) (warm-up, then cosine), the model in
    train mode, `batch_loss(generator)` with one generator seeded with `seed` for the whole
    run (so the batches, masks and dropped labels repeat), zero_grad, backward, gradient
    norm clipped to CLIP, step. With `eval_loss` (a function of no arguments returning a
    held-out loss) the model is measured in eval mode without gradients after every
    `eval_every`-th update and after the last, and a line is printed. The model is left in
    eval mode. Beyond the notebook's version: the arguments are checked here, the loop runs
    under `course.reproducible()` (one thread, deterministic kernels), and a progress bar
    named `desc` shows when `progress` is True.
    """
    from tqdm.auto import tqdm

    positive_int(steps, "steps")
    number(lr, "lr", low=0, low_open=True)
    number(weight_decay, "weight_decay", low=0)
    if warmup is not None:
        non_negative_int(warmup, "warmup")
    non_negative_int(seed, "seed")
    if eval_loss is not None and not callable(eval_loss):
        raise TypeError(f"eval_loss must be a function or None, got {type(eval_loss).__name__}")
    positive_int(eval_every, "eval_every")
    with reproducible():
        generator = torch.Generator().manual_seed(seed)  # every batch is drawn from it
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay,
                                      betas=(0.9, 0.95))
        losses = []
        for step in tqdm(range(steps), desc=desc, disable=not progress):
            for group in optimizer.param_groups:
                group["lr"] = lr * lr_scale(step, steps, warmup)  # warm-up, then cosine
            model.train()  # dropout on (a held-out measure switched it off)
            loss = batch_loss(generator)
            optimizer.zero_grad(set_to_none=True)  # the last step's gradients are spent
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), CLIP)  # after backward, before step
            optimizer.step()
            losses.append(loss.item())
            if eval_loss is not None and ((step + 1) % eval_every == 0 or step + 1 == steps):
                model.eval()
                with torch.no_grad():
                    held_out = float(eval_loss())
                print(f"step {step + 1:4d}: train loss {losses[-1]:.3f}, "
                      f"held-out loss {held_out:.3f}")
        model.eval()
    return losses
