"""Lesson 06: MaskGIT, generating every token of an image at once and keeping the best.

An autoregressive prior (Lesson 05) writes the 64 tokens of an 8x8 grid one at a time, 64
forward passes. MaskGIT (Chang et al. 2022) trains a *bidirectional* transformer to fill in
masked tokens, then generates in a handful of rounds:

    start: every token is [MASK]
    each step t = 0 .. T-1:
        predict all masked positions at once, sample a token for each
        confidence = the probability of the token just sampled (+inf for known tokens)
        re-mask the least confident ones, so that N0 * gamma((t+1)/T) stay masked
    after T steps (8 here) nothing is masked: 8 forward passes instead of 64.

gamma is the *mask schedule*: the fraction still masked at ratio r = (t+1)/T. Training masks
ceil(gamma(r) N) random positions for a random r, so the model sees every masking level that
decoding will show it.

We follow google-research/maskgit (`libml/mask_schedule.py`, `libml/parallel_decode.py`)
step by step; the few places where minitok differs are said where they happen.

Token ids, as in the reference, in one table (Lesson 05's prior uses the same first K + 11):

    0 .. K-1     the tokenizer's K codes (the only ids MaskGIT ever predicts)
    K .. K+9     the class tokens: class c has id K + c
    K+10         the null class, "no class given", for classifier-free guidance
    K+11         [MASK]

The class token goes in front of the 64 grid tokens, as in the reference; the logits are cut
to the K codes before sampling, so a sample is always a code.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from minitok.checkpoints import checkpoint_path, load_checkpoint, save_checkpoint
from minitok.prior import PriorConfig, pairwise_distance_per_class
from minitok.transformer import Transformer, TransformerConfig

SCHEDULES = ("cosine", "linear", "square")  # and "pow<k>" for any k > 0, e.g. "pow3"
MIN_MASK_RATIO = 1e-6  # the reference clips gamma to [1e-6, 1]


# --------------------------------------------------------------------------- input checks


def _check_int(value, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_number(value, name: str, minimum: float = 0.0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= minimum):
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {value!r}")


def _schedule_exponent(name) -> float | None:
    """The exponent k of a power schedule ("square" = 2, "pow3" = 3), None for the others."""
    if name == "square":
        return 2.0
    if isinstance(name, str) and name.startswith("pow"):
        try:
            k = float(name[3:])
        except ValueError:
            return None
        return k if math.isfinite(k) and k > 0 else None
    return None


def check_schedule_name(name) -> None:
    """Raise a clear error unless `name` is a schedule minitok knows."""
    if name in ("cosine", "linear") or _schedule_exponent(name) is not None:
        return
    raise ValueError(
        f"schedule: unknown name {name!r}; expected one of {', '.join(SCHEDULES)} "
        "or 'pow<k>' with k > 0 (e.g. 'pow3')"
    )


# --------------------------------------------------------------------------- mask schedules


def schedule(name: str, ratio):
    """gamma(r): the fraction of tokens still masked at ratio r in [0, 1].

    cosine  cos(pi/2 r)   reveals few tokens early (gamma stays near 1) and many late
    linear  1 - r         the same number every step
    square  1 - r^2       (and "pow<k>": 1 - r^k) even more cautious than cosine at the start

    Every schedule starts at gamma(0) = 1 (all masked) and ends at gamma(1) = 0; as in the
    reference the value is clipped to [1e-6, 1]. `ratio` may be a float (returns a float)
    or a tensor (returns a tensor of the same shape, float64 for exact counts).
    """
    check_schedule_name(name)
    is_tensor = isinstance(ratio, torch.Tensor)
    r = ratio.double() if is_tensor else torch.tensor(float(ratio), dtype=torch.float64)
    if not bool(((r >= 0) & (r <= 1)).all()):
        raise ValueError(f"ratio must be in [0, 1], got {ratio!r}")
    if name == "cosine":
        gamma = torch.cos(math.pi / 2 * r)
    elif name == "linear":
        gamma = 1 - r
    else:
        gamma = 1 - r ** _schedule_exponent(name)
    gamma = gamma.clamp(MIN_MASK_RATIO, 1.0)
    return gamma if is_tensor else float(gamma)


def mask_len(n_initial: torch.Tensor, n_unknown: torch.Tensor, step: int, steps: int,
             name: str = "cosine") -> torch.Tensor:
    """How many tokens decoding step `step` (0-based) leaves masked, per row. (B,) -> (B,).

    The plan is floor(N0 * gamma((t+1)/T)): N0 is the number masked *at the start* (not the
    grid size: when inpainting only part of the grid is masked), and the ratio is (t+1)/T
    because it counts the steps done once this one is finished. Then, as the reference:
      - at least one token is revealed per step: at most n_unknown - 1 stay masked;
      - at least one stays masked until the last step (the reference's max(1, .));
      - a row with nothing left to mask stays at 0, and the last step reveals everything.
    """
    _check_int(steps, "steps", 1)
    if not 0 <= step < steps:
        raise ValueError(f"step must be in 0..steps-1 = 0..{steps - 1}, got {step!r}")
    if step == steps - 1:
        return torch.zeros_like(n_unknown)  # the last step's samples are the output
    ratio = (step + 1) / steps
    planned = torch.floor(n_initial.double() * schedule(name, ratio)).long()  # (B,)
    keep_masked = torch.minimum(n_unknown - 1, planned).clamp(min=1)  # (B,)
    return torch.minimum(keep_masked, n_unknown)  # (B,) 0 where nothing is unknown


def mask_counts(n_masked: int, steps: int, name: str = "cosine") -> list[int]:
    """The number of tokens still masked after each of `steps` decoding steps.

    The official table, cosine: mask_counts(256, 8) == [251, 236, 212, 181, 142, 97, 49, 0].
    `n_masked` is the number masked at the start (the whole grid, or the inpainted region).
    """
    _check_int(n_masked, "n_masked", 0)
    _check_int(steps, "steps", 1)
    check_schedule_name(name)
    n_initial = torch.tensor([n_masked])
    unknown = n_initial.clone()
    counts = []
    for t in range(steps):
        unknown = mask_len(n_initial, unknown, t, steps, name)
        counts.append(int(unknown))
    return counts


# --------------------------------------------------------------------------- training


def random_mask(tokens: torch.Tensor, mask_id: int, schedule_name: str = "cosine",
                ratio: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The training masker: hide ceil(gamma(r) N) uniformly chosen tokens of each row.

    tokens: (B, N) code ids. For each row draw r ~ U(0, 1) (or take `ratio`, (B,), to choose
    it), and replace ceil(gamma(r) N) positions, chosen uniformly at random, by `mask_id`.
    Returns (inputs, mask): inputs (B, N) with mask_id at the hidden positions and the true
    tokens elsewhere, mask (B, N) bool, True where hidden. At least one token is hidden
    (gamma >= 1e-6). With the cosine schedule the mean hidden fraction is 2/pi = 0.637.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.is_floating_point():
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"tokens must be a (B, N) integer tensor, got {shape}")
    B, N = tokens.shape
    device = tokens.device
    if ratio is None:
        ratio = _uniform((B,), generator, device)  # (B,)
    elif not isinstance(ratio, torch.Tensor) or tuple(ratio.shape) != (B,):
        raise ValueError(f"ratio must be a (B,) = ({B},) tensor or None, got {ratio!r}")
    n_hidden = torch.ceil(schedule(schedule_name, ratio.to(device)) * N).long()  # (B,)
    # A uniformly random subset of size n: the n positions with the smallest random scores.
    scores = _uniform((B, N), generator, device)  # (B, N)
    rank = scores.argsort(dim=1).argsort(dim=1)  # (B, N), each row a permutation of 0..N-1
    mask = rank < n_hidden[:, None]  # (B, N)
    inputs = tokens.masked_fill(mask, mask_id)  # (B, N)
    return inputs, mask


def masked_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy over the masked positions only, averaged over them.

    logits: (B, N, K) over the codes, targets: (B, N) code ids, mask: (B, N) bool. The
    positions the model could see in its input carry no loss: predicting a token you were
    shown teaches nothing. (The reference trains with label_smoothing = 0.1.)
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2] or mask.shape != targets.shape:
        raise ValueError(
            "masked_loss: expected logits (B, N, K), targets (B, N), mask (B, N); got "
            f"{tuple(logits.shape)}, {tuple(targets.shape)}, {tuple(mask.shape)}"
        )
    if not bool(mask.any()):
        raise ValueError("mask: no position is masked, so there is nothing to predict")
    return F.cross_entropy(logits[mask], targets[mask], label_smoothing=label_smoothing)


# --------------------------------------------------------------------------- decoding pieces


def _uniform(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """U[0, 1) noise drawn on the generator's device (so seeded runs match), then moved."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where).to(device)


def gumbel_noise(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard Gumbel noise -log(-log U). argmax(logits + G) is a sample of softmax(logits)."""
    u = _uniform(shape, generator, device).clamp(min=1e-20)  # avoid log(0)
    return -torch.log(-torch.log(u))


def sample_with_confidence(logits: torch.Tensor, tokens: torch.Tensor, mask_id: int,
                           generator: torch.Generator | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample every masked position; score each sample by its probability.

    logits: (B, N, K) over the K codes, tokens: (B, N) the current grid with mask_id where
    unknown. Returns (sampled, confidence), both (B, N):
      sampled     a code drawn from softmax(logits) at masked positions, the known token
                  everywhere else (a known token is never resampled);
      confidence  softmax(logits)[sampled] at masked positions, +inf at known ones, so
                  that a known token is never among the least confident.
    """
    unknown = tokens == mask_id  # (B, N)
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # (B, N, K)
    draws = (log_probs + gumbel_noise(log_probs.shape, generator, logits.device)).argmax(-1)
    sampled = torch.where(unknown, draws, tokens)  # (B, N)
    probs = log_probs.exp()  # (B, N, K)
    picked = probs.gather(-1, sampled.clamp(max=logits.shape[-1] - 1)[..., None])[..., 0]
    confidence = torch.where(unknown, picked, torch.full_like(picked, math.inf))  # (B, N)
    return sampled, confidence


def remask_lowest(confidence: torch.Tensor, n_mask: torch.Tensor, temperature: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Choose, per row, the n_mask[b] positions to mask again: the least confident ones.

    confidence: (B, N) probabilities (+inf where the token is known), n_mask: (B,) ints.
    The score is log(confidence) + temperature * Gumbel noise, so that with temperature > 0
    a less likely token sometimes survives (more diverse samples); with temperature 0 the
    re-masked set is exactly the n_mask lowest-probability positions. Returns (B, N) bool.
    Known tokens (+inf) are never chosen as long as n_mask <= the number unknown.
    """
    score = torch.log(confidence)  # (B, N), +inf stays +inf
    if temperature > 0:
        score = score + temperature * gumbel_noise(score.shape, generator, score.device)
    rank = score.argsort(dim=1, stable=True).argsort(dim=1)  # (B, N), 0 = least confident
    return rank < n_mask[:, None].to(rank.device)  # (B, N), exactly n_mask[b] per row


# --------------------------------------------------------------------------- the decode loop


class DecodeSteps(NamedTuple):
    """Every step of a decode, for pictures: both (steps, B, h, w) token grids."""

    revealed: torch.Tensor  # the grid after step t, mask_id where still masked
    predicted: torch.Tensor  # what the model sampled at step t for every position


def decode_tokens(model, labels: torch.Tensor, tokens: torch.Tensor, steps: int = 8,
                  schedule_name: str = "cosine", choice_temperature: float = 4.5,
                  generator: torch.Generator | None = None, cfg_scale: float = 1.0,
                  temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The MaskGIT loop on flat sequences. tokens: (B, N), mask_id where to generate.

    `model(tokens, labels)` returns (B, N, K) logits over the codes. Returns
    (final (B, N), revealed (T, B, N), predicted (T, B, N)). One forward pass per step.
    """
    mask_id = model.mask_id
    n_initial = (tokens == mask_id).sum(dim=1)  # (B,) N0: counted once, at the start
    revealed, predicted = [], []
    for t in range(steps):
        logits = _code_logits(model, tokens, labels, cfg_scale) / temperature  # (B, N, K)
        sampled, confidence = sample_with_confidence(logits, tokens, mask_id, generator)
        n_unknown = (tokens == mask_id).sum(dim=1)  # (B,)
        n_mask = mask_len(n_initial, n_unknown, t, steps, schedule_name)  # (B,)
        ratio = (t + 1) / steps
        # The choice temperature anneals linearly to 0 at the last step.
        remask = remask_lowest(confidence, n_mask, choice_temperature * (1 - ratio), generator)
        tokens = sampled.masked_fill(remask, mask_id)  # (B, N)
        revealed.append(tokens)
        predicted.append(sampled)
    return tokens, torch.stack(revealed), torch.stack(predicted)


def _code_logits(model, tokens: torch.Tensor, labels: torch.Tensor, cfg_scale: float):
    """The model's (B, N, K) code logits, with classifier-free guidance when cfg_scale != 1.

    Guidance runs [cond; null] as one doubled batch (one forward pass) and combines
    u + s (c - u) before sampling, as Lesson 05 does for the AR prior.
    """
    if cfg_scale == 1.0:
        return model(tokens, labels)
    null = torch.full_like(labels, model.null_class)
    both = model(torch.cat([tokens, tokens]), torch.cat([labels, null]))  # (2B, N, K)
    cond, uncond = both.chunk(2)
    return uncond + cfg_scale * (cond - uncond)


@contextmanager
def _eval_mode(model):
    """Run with dropout off, then put the model back as it was."""
    was_training = getattr(model, "training", False)
    if isinstance(model, nn.Module):
        model.eval()
    try:
        yield
    finally:
        if isinstance(model, nn.Module):
            model.train(was_training)


@torch.no_grad()
def decode(model, cond: torch.Tensor, steps: int = 8, schedule: str = "cosine",
           choice_temperature: float = 4.5, generator: torch.Generator | None = None,
           init_tokens: torch.Tensor | None = None, init_mask: torch.Tensor | None = None,
           cfg_scale: float = 1.0, temperature: float = 1.0, return_steps: bool = False):
    """Generate (B, h, w) token grids for class labels `cond` (B,) in `steps` forward passes.

    schedule: "cosine" (default), "linear", "square" or "pow<k>".
    choice_temperature: the Gumbel noise on the confidence (4.5 as the reference), annealed
        linearly to 0 at the last step.
    init_tokens, init_mask: inpainting. init_tokens (B, h, w) codes and init_mask (B, h, w)
        bool, True where to generate; the other tokens are kept exactly. The mask schedule
        then counts from the number masked at the start, not from h * w.
    cfg_scale: classifier-free guidance (1 = none; the model must have a null class).
    temperature: divides the logits before sampling tokens (1 as the reference).
    return_steps: also return a DecodeSteps with the grid after every step.
    """
    _check_int(steps, "steps", 1)
    check_schedule_name(schedule)
    _check_number(choice_temperature, "choice_temperature")
    _check_number(cfg_scale, "cfg_scale")
    _check_number(temperature, "temperature", minimum=1e-6)
    if cfg_scale != 1.0 and getattr(model, "null_class", None) is None:
        raise ValueError("cfg_scale != 1 needs a model trained with a null class (null_class)")
    labels = _check_labels(model, cond)
    tokens, shape = _initial_tokens(model, labels, init_tokens, init_mask)  # (B, N)
    with _eval_mode(model):
        final, revealed, predicted = decode_tokens(
            model, labels, tokens, steps, schedule, choice_temperature, generator, cfg_scale,
            temperature,
        )
    grids = final.view(shape)  # (B, h, w)
    if not return_steps:
        return grids
    trace = DecodeSteps(revealed.view(steps, *shape), predicted.view(steps, *shape))
    return grids, trace


def _check_labels(model, cond) -> torch.Tensor:
    if not isinstance(cond, torch.Tensor) or cond.dim() != 1 or cond.is_floating_point():
        got = tuple(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__
        raise ValueError(f"cond must be a (B,) integer tensor of class labels, got {got}")
    if cond.numel() == 0:
        raise ValueError("cond is empty: pass at least one class label")
    if bool((cond < 0).any() | (cond >= model.num_classes).any()):
        raise ValueError(
            f"cond: class labels must be in 0..{model.num_classes - 1}, got {cond.tolist()}"
        )
    return cond.long()


def _initial_tokens(model, labels, init_tokens, init_mask) -> tuple[torch.Tensor, tuple]:
    """The starting (B, N) sequence: all [MASK], or init_tokens with init_mask masked."""
    B, side = labels.shape[0], model.grid_size
    device = labels.device
    if init_tokens is None and init_mask is None:
        shape = (B, side, side)
        return torch.full((B, side * side), model.mask_id, device=device), shape
    if init_tokens is None or init_mask is None:
        raise ValueError("inpainting needs both init_tokens (B, h, w) and init_mask (B, h, w)")
    expected = (B, side, side)
    if tuple(init_tokens.shape) != expected:
        raise ValueError(
            f"init_tokens must have shape (B, h, w) = {expected}, got {tuple(init_tokens.shape)}"
        )
    if tuple(init_mask.shape) != tuple(init_tokens.shape):
        raise ValueError(
            f"init_mask must have the shape of init_tokens {tuple(init_tokens.shape)}, "
            f"got {tuple(init_mask.shape)}"
        )
    if init_mask.dtype != torch.bool:
        raise ValueError(
            f"init_mask must be a bool tensor (True = generate), got {init_mask.dtype}"
        )
    known = init_tokens[~init_mask]
    if bool((known < 0).any() | (known >= model.num_codes).any()):
        raise ValueError(
            f"init_tokens: known tokens must be codes in 0..{model.num_codes - 1}"
        )
    tokens = init_tokens.to(device).long().masked_fill(init_mask.to(device), model.mask_id)
    return tokens.view(B, -1), expected


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class MaskGITConfig(PriorConfig):
    """MaskGIT's token layout and its transformer's size: Lesson 05's prior's, plus [MASK].

    It extends `PriorConfig`, so the two models share their fields (num_codes K, grid_size G,
    num_classes, the transformer's size, the AR prior's by default), their checks and their
    first K + 11 ids (null_id = K + num_classes): the comparison in this lesson is between two
    ways of generating, not two layouts. MaskGIT adds one id, [MASK], and attends both ways.
    The transformer reads 1 + G*G tokens: the class token, then the grid in raster order.
    """

    @property
    def mask_id(self) -> int:
        """[MASK], the id of a hidden token: one past the null class."""
        return self.null_id + 1

    @property
    def vocab_size(self) -> int:
        """The prior's table (K codes + the class tokens + the null class) + [MASK]."""
        return super().vocab_size + 1

    def transformer_config(self) -> TransformerConfig:
        # the prior's transformer (with this vocab_size), but every token sees every other
        # token: the point of MaskGIT
        return replace(super().transformer_config(), causal=False)


class MaskGIT(nn.Module):
    """A bidirectional Transformer that predicts the codes behind [MASK] tokens.

    forward(tokens (B, G*G) codes or mask_id, labels (B,)) -> (B, G*G, K) code logits.
    A label of `num_classes` (= `null_class`) means "no class" (classifier-free guidance).
    """

    def __init__(self, config: MaskGITConfig):
        super().__init__()
        if not isinstance(config, MaskGITConfig):
            raise TypeError(f"config must be a MaskGITConfig, got {type(config).__name__}")
        self.config = config
        self.transformer = Transformer(config.transformer_config())

    # what decode needs to know about a model (a test can fake these)
    num_codes = property(lambda self: self.config.num_codes)
    num_classes = property(lambda self: self.config.num_classes)
    null_class = property(lambda self: self.config.num_classes)  # the label that means none
    mask_id = property(lambda self: self.config.mask_id)
    grid_size = property(lambda self: self.config.grid_size)

    @property
    def device(self) -> torch.device:
        return self.transformer.head.weight.device

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        K, N = self.config.num_codes, self.config.num_tokens
        if tokens.dim() != 2 or tokens.shape[1] != N:
            raise ValueError(f"tokens must be (B, {N}), got shape {tuple(tokens.shape)}")
        if labels.shape != tokens.shape[:1]:
            raise ValueError(
                f"labels must be (B,) = ({tokens.shape[0]},), got {tuple(labels.shape)}"
            )
        class_token = (labels.long() + K)[:, None]  # (B, 1): K + label, K + 10 for "none"
        idx = torch.cat([class_token, tokens], dim=1)  # (B, 1 + N)
        logits = self.transformer(idx)  # (B, 1 + N, V)
        return logits[:, 1:, :K]  # (B, N, K): the grid positions, the codes only


def maskgit_loss(model: MaskGIT, codes: torch.Tensor, labels: torch.Tensor,
                 p_uncond: float = 0.1, label_smoothing: float = 0.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """One training loss: mask a random share of each grid, predict the hidden codes.

    codes: (B, G, G) or (B, G*G) token grids, labels: (B,). The class is dropped to "none"
    with probability p_uncond (for guidance); the model sees mask_id at every hidden
    position and the true codes elsewhere, and only the hidden positions carry a loss.
    """
    targets = codes.reshape(codes.shape[0], -1).long()  # (B, N)
    inputs, mask = random_mask(targets, model.mask_id, "cosine", None, generator)  # (B, N)
    drop = _uniform(labels.shape, generator, labels.device) < p_uncond  # (B,)
    labels = labels.long().masked_fill(drop, model.null_class)
    logits = model(inputs, labels)  # (B, N, K)
    return masked_loss(logits, targets, mask, label_smoothing)


def train_maskgit(model: MaskGIT, codes: torch.Tensor, labels: torch.Tensor, steps: int,
                  batch_size: int = 64, lr: float = 3e-3, weight_decay: float = 0.05,
                  p_uncond: float = 0.1, label_smoothing: float = 0.0, seed: int = 0,
                  progress: bool = True) -> list[float]:
    """Train with AdamW for `steps` mini-batches; returns the losses.

    The same recipe as Lesson 05's `train_prior` (AdamW, warm-up over 5% of the steps, cosine
    down to 10% of lr, gradient clipping at 1), so that the comparison is between the two ways
    of generating, not two ways of training. Batches, masks and label dropout come from a
    generator seeded with `seed`: the same call gives the same losses on the same machine.
    """
    from tqdm.auto import tqdm

    _check_int(steps, "steps", 1)
    G = model.config.grid_size
    if codes.dim() != 3 or tuple(codes.shape[1:]) != (G, G) or labels.shape != codes.shape[:1]:
        raise ValueError(
            f"codes must be (M, {G}, {G}) token grids and labels (M,), got "
            f"{tuple(codes.shape)} and {tuple(labels.shape)}"
        )
    generator = torch.Generator().manual_seed(seed)
    device = model.device
    codes, labels = codes.to(device), labels.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay,
                                  betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    losses = []
    model.train()
    bar = tqdm(range(steps), desc="maskgit", disable=not progress)
    for step in bar:
        scale = min(1.0, (step + 1) / warmup)
        scale *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(1, steps - 1)))
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        rows = torch.randint(0, codes.shape[0], (batch_size,), generator=generator).to(device)
        loss = maskgit_loss(model, codes[rows], labels[rows], p_uncond, label_smoothing,
                            generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return losses


def save_maskgit(model: MaskGIT, path=None, meta: dict | None = None):
    """Write the model as a weights-only checkpoint (see minitok/checkpoints.py)."""
    path = checkpoint_path("maskgit") if path is None else path
    return save_checkpoint(path, "maskgit", asdict(model.config), model, meta)


def load_maskgit(path=None, device=None) -> MaskGIT:
    """The shipped MaskGIT (minitok/checkpoints/maskgit.pt, rebuilt by scripts/train_maskgit.py)."""
    payload = load_checkpoint(checkpoint_path("maskgit") if path is None else path, "maskgit")
    model = MaskGIT(MaskGITConfig(**payload["config"]))
    model.load_state_dict(payload["state_dict"])
    model.meta = payload["meta"]
    return model.to(device or "cpu").eval()


# --------------------------------------------------------------------------- the race against AR


def diversity(images: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor,
              reference_labels: torch.Tensor) -> float:
    """How varied the samples of each class are, relative to real digits of that class.

    For each class: Lesson 05's spread (the mean pairwise L2 distance between its samples),
    divided by the same for the real digits of the class; then the mean over classes. 1.0
    means as varied as real handwriting, 0 means every sample of a class is the same image.
    """
    mine = pairwise_distance_per_class(images, labels)  # {class: mean distance}
    real = pairwise_distance_per_class(reference, reference_labels)
    ratios = [mine[c] / real[c] for c in mine if c in real]
    if not ratios:
        raise ValueError("diversity needs at least two samples of some class")
    return sum(ratios) / len(ratios)


@dataclass
class RaceSetting:
    """One row of the comparison: the AR prior, or MaskGIT with a number of steps and a schedule."""

    method: str  # "AR" or "MaskGIT"
    steps: int = 0  # MaskGIT's decoding steps
    schedule: str = "cosine"

    @property
    def name(self) -> str:
        return "AR (KV cache)" if self.method == "AR" else f"MaskGIT {self.steps} {self.schedule}"


def race_settings(steps=(4, 8, 12), schedules=("cosine", "linear", "square")) -> list[RaceSetting]:
    """AR, then MaskGIT at every number of steps with cosine, then the other schedules at 8."""
    rows = [RaceSetting("AR")]
    rows += [RaceSetting("MaskGIT", s, "cosine") for s in steps]
    rows += [RaceSetting("MaskGIT", 8, name) for name in schedules if name != "cosine"]
    return rows


def _generate(setting: RaceSetting, maskgit_model, prior, labels, generator):
    """(B, G, G) token grids for `labels` by one setting."""
    from minitok.prior import generate as ar_generate

    if setting.method == "AR":
        return ar_generate(prior, labels, generator=generator)
    return decode(maskgit_model, labels, steps=setting.steps, schedule=setting.schedule,
                  generator=generator)


def _seconds_per_image(setting, maskgit_model, prior, batch: int, repeats: int, seed: int):
    """Median wall-clock seconds per image over `repeats` batches (after one warm-up batch)."""
    import time

    device = maskgit_model.device
    labels = (torch.arange(batch) % 10).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    _generate(setting, maskgit_model, prior, labels, generator)  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        _generate(setting, maskgit_model, prior, labels, generator)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / batch)
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def race(maskgit_model: MaskGIT, prior, tokenizer, classifier, settings=None,
         samples_per_class: int = 50, latency_repeats: int = 5, throughput_repeats: int = 2,
         seed: int = 0) -> list[dict]:
    """MaskGIT against the AR prior on the same tokenizer: one dict per setting.

    passes/image: forward passes to make one image (a batch shares them);
    positions/image: token positions those passes compute (a cached AR pass computes 1, a
        MaskGIT pass all 1 + G*G): the work, as opposed to the number of waits;
    ms/image @1, @64: median wall-clock milliseconds per image at batch 1 and at batch 64;
    accuracy: the digit classifier reads the requested class, over 10 * samples_per_class
        samples; diversity: see `diversity` (1.0 = as varied as real test digits).
    """
    from minitok.data import load_digits
    from minitok.prior import count_forward

    settings = race_settings() if settings is None else settings
    device = maskgit_model.device
    real, real_labels = load_digits("test", size=tokenizer.config.image_size)
    labels = (torch.arange(10 * samples_per_class) % 10).to(device)
    rows = []
    for setting in settings:
        model = prior.transformer if setting.method == "AR" else maskgit_model.transformer
        generator = torch.Generator(device=device).manual_seed(seed)
        with count_forward(model) as stats:
            grids = _generate(setting, maskgit_model, prior, labels, generator)
        images = tokenizer.decode(grids.to(tokenizer.device)).cpu()
        rows.append({
            "setting": setting.name,
            "passes/image": stats["passes"],
            "positions/image": stats["positions"] / labels.shape[0],
            "ms/image @1": 1000 * _seconds_per_image(setting, maskgit_model, prior, 1,
                                                     latency_repeats, seed),
            "ms/image @64": 1000 * _seconds_per_image(setting, maskgit_model, prior, 64,
                                                      throughput_repeats, seed),
            "accuracy": classifier.accuracy(images, labels.cpu()),
            "diversity": diversity(images, labels.cpu(), real, real_labels),
        })
    return rows


def race_table(rows: list[dict]) -> str:
    """The rows of `race` as an aligned text table, with speed-ups relative to AR."""
    ar = next((r for r in rows if r["setting"].startswith("AR")), rows[0])
    head = (f"{'setting':<20} {'passes/img':>10} {'positions/img':>13} {'ms/img @1':>10} "
            f"{'x AR @1':>8} {'ms/img @64':>10} {'x AR @64':>8} {'accuracy':>9} {'diversity':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['setting']:<20} {r['passes/image']:>10d} {r['positions/image']:>13.0f} "
            f"{r['ms/image @1']:>10.2f} {ar['ms/image @1'] / r['ms/image @1']:>7.1f}x "
            f"{r['ms/image @64']:>10.3f} {ar['ms/image @64'] / r['ms/image @64']:>7.1f}x "
            f"{100 * r['accuracy']:>8.1f}% {r['diversity']:>9.2f}"
        )
    return "\n".join(lines)
