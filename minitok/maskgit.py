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

Token ids, in one table (the same first K + 11 as Lesson 05's prior, so that the lesson
compares two ways of generating, not two layouts):

    0 .. K-1     the tokenizer's K codes (the only ids MaskGIT ever predicts)
    K .. K+9     the class tokens: class c has id K + c
    K+10         the null class (label 10), "no class given", for guidance
    K+11         [MASK]

The class token goes in front of the 64 grid tokens, as in the reference; the logits are cut
to the K codes before sampling, so a sample is always a code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from minitok import validate
from minitok.checkpoints import Checkpointable
from minitok.prior import TokenGridConfig
from minitok.sampling import cfg_logits, drop_labels
from minitok.training import fit
from minitok.transformer import Transformer

SCHEDULES = ("cosine", "linear", "square")  # and "pow<k>" for any k > 0, e.g. "pow3"
MIN_MASK_RATIO = 1e-6  # the reference clips gamma to [1e-6, 1]


# --------------------------------------------------------------------------- mask schedules


def _power(schedule: str) -> float:
    """The exponent k of a power schedule ("square" = 2, "pow3" = 3), or a clear error."""
    k = 2.0 if schedule == "square" else None
    if isinstance(schedule, str) and schedule.startswith("pow"):
        try:
            k = float(schedule[3:])
        except ValueError:
            k = None
    if k is None or not (math.isfinite(k) and k > 0):
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)} or 'pow<k>' with "
                         f"k > 0 (e.g. 'pow3'), got {schedule!r}")
    return k


def gamma(schedule: str, ratio) -> torch.Tensor:
    """gamma(r): the fraction of tokens still masked at ratio r in [0, 1], in float64.

    cosine  cos(pi/2 r)   reveals few tokens early (gamma stays near 1) and many late
    linear  1 - r         the same number every step
    square  1 - r^2       (and "pow<k>": 1 - r^k) even more cautious than cosine at the start

    Every schedule starts at gamma(0) = 1 (all masked) and ends at gamma(1) = 0; as in the
    reference the value is clipped to [1e-6, 1]. float64, because the counts taken from it
    are floors: in float32, JAX's default and so what the official loop computes,
    1024 cos(pi/3) is 511.99997 and its floor 511, not 512 (docs/references.md, MaskGIT).
    """
    r = torch.as_tensor(ratio, dtype=torch.float64)
    if not bool(((r >= 0) & (r <= 1)).all()):  # also refuses NaN
        raise ValueError(f"ratio must be in [0, 1], got {ratio!r}")
    if schedule == "cosine":
        g = torch.cos(math.pi / 2 * r)
    elif schedule == "linear":
        g = 1 - r
    else:
        g = 1 - r ** _power(schedule)
    return g.clamp(MIN_MASK_RATIO, 1.0)


def mask_len(n_initial: torch.Tensor, n_unknown: torch.Tensor, step: int, steps: int,
             schedule: str = "cosine") -> torch.Tensor:
    """How many tokens decoding step `step` (0-based) leaves masked, per row. (B,) -> (B,).

    The plan is floor(N0 * gamma((t+1)/T)): N0 is the number masked *at the start* (not the
    grid size: when inpainting only part of the grid is masked), and the ratio is (t+1)/T
    because it counts the steps done once this one is finished. Then, as the reference:
      - at least one token is revealed per step: at most n_unknown - 1 stay masked;
      - at least one stays masked until the last step (the reference's max(1, .));
      - a row with nothing left to mask stays at 0, and the last step reveals everything.
    """
    if step == steps - 1:
        return torch.zeros_like(n_unknown)  # the last step's samples are the output
    planned = torch.floor(n_initial.double() * gamma(schedule, (step + 1) / steps)).long()
    keep = torch.minimum(n_unknown - 1, planned).clamp(min=1)  # (B,)
    return torch.minimum(keep, n_unknown)  # (B,) 0 where nothing is unknown


def mask_counts(n_masked: int, steps: int, schedule: str = "cosine") -> list[int]:
    """The number of tokens still masked after each of `steps` decoding steps.

    The official formula evaluated (the repository publishes the formula, not tables), e.g.
    cosine: mask_counts(256, 8) == [251, 236, 212, 181, 142, 97, 49, 0]. `n_masked` is the
    number masked at the start (the whole grid, or the inpainted region).
    """
    validate.non_negative_int(n_masked, "n_masked")
    validate.positive_int(steps, "steps")
    n_initial = unknown = torch.tensor([n_masked])
    counts = []
    for t in range(steps):
        unknown = mask_len(n_initial, unknown, t, steps, schedule)
        counts.append(int(unknown))
    return counts


# --------------------------------------------------------------------------- training


def random_mask(tokens: torch.Tensor, mask_id: int, schedule: str = "cosine",
                ratio: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The training masker: hide ceil(gamma(r) N) uniformly chosen tokens of each row.

    tokens: (B, N) code ids. For each row draw r ~ U(0, 1) (or take `ratio`, (B,), to choose
    it), and replace ceil(gamma(r) N) positions, chosen uniformly at random, by `mask_id`.
    Returns (inputs, mask): inputs (B, N) with mask_id at the hidden positions and the true
    tokens elsewhere, mask (B, N) bool, True where hidden. At least one token is hidden
    (gamma >= 1e-6). With the cosine schedule the mean hidden fraction is 2/pi = 0.637.
    """
    B, N = validate.int_tensor(tokens, "tokens", dim=2).shape
    validate.non_negative_int(mask_id, "mask_id")
    if ratio is None:
        ratio = torch.rand(B, generator=generator, dtype=torch.float64)  # (B,)
    n_hidden = torch.ceil(gamma(schedule, ratio) * N).long().to(tokens.device)  # (B,)
    # A uniformly random subset of size n: the n positions with the smallest random scores.
    scores = torch.rand(B, N, generator=generator).to(tokens.device)  # (B, N)
    rank = scores.argsort(dim=1).argsort(dim=1)  # (B, N), each row a permutation of 0..N-1
    mask = rank < n_hidden[:, None]  # (B, N)
    return tokens.masked_fill(mask, mask_id), mask


def masked_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy over the masked positions only, averaged over them.

    logits: (B, N, K) over the codes, targets: (B, N) code ids, mask: (B, N) bool. The
    positions the model could see in its input carry no loss: predicting a token you were
    shown teaches nothing. label_smoothing: as F.cross_entropy's (the paper trains with
    0.1). Unlike the notebook's one line, an all-False mask is refused: the mean
    over nothing is a NaN.
    """
    if not bool(mask.any()):
        raise ValueError("mask: no position is masked, so there is nothing to predict")
    return F.cross_entropy(logits[mask], targets[mask], label_smoothing=label_smoothing)


# --------------------------------------------------------------------------- decoding pieces


def gumbel_noise(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard Gumbel noise -log(-log U), U drawn on the CPU (or the generator's device) so
    that seeded runs match. argmax(logits + G) is a sample of softmax(logits)."""
    where = generator.device if generator is not None else "cpu"
    u = torch.rand(shape, generator=generator, device=where).to(device).clamp(min=1e-20)
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
    _check_tokens(tokens, logits, generator)
    unknown = tokens == mask_id  # (B, N)
    log_probs = torch.log_softmax(logits.float(), dim=-1)  # (B, N, K)
    draws = (log_probs + gumbel_noise(log_probs.shape, generator, logits.device)).argmax(-1)
    sampled = torch.where(unknown, draws, tokens)  # (B, N): known tokens kept
    picked = log_probs.exp().gather(-1, draws[..., None])[..., 0]  # (B, N)
    confidence = torch.where(unknown, picked, torch.full_like(picked, math.inf))
    return sampled, confidence


def _check_tokens(tokens, logits, generator) -> None:
    """sample_with_confidence's arguments: integer tokens (B, N) for logits (B, N, K)."""
    if validate.int_tensor(tokens, "tokens", dim=2).shape != logits.shape[:2]:
        raise ValueError(f"tokens must be (B, N) = {tuple(logits.shape[:2])} as logits (B, N, K), "
                         f"got shape {tuple(tokens.shape)}")
    validate.generator(generator)


def remask_lowest(confidence: torch.Tensor, n_mask: torch.Tensor, temperature: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Choose, per row, the n_mask[b] positions to mask again: the least confident ones.

    confidence: (B, N) probabilities (+inf where the token is known), n_mask: (B,) ints.
    The score is log(confidence) + temperature * Gumbel noise, so that with temperature > 0
    a less likely token sometimes survives (more diverse samples); with temperature 0 the
    re-masked set is exactly the n_mask lowest-probability positions. Returns (B, N) bool.
    Known tokens (+inf) are never chosen as long as n_mask <= the number unknown.
    """
    _check_remask(confidence, n_mask, temperature, generator)
    score = torch.log(confidence)  # (B, N), +inf stays +inf
    if temperature > 0:
        score = score + temperature * gumbel_noise(score.shape, generator, score.device)
    rank = score.argsort(dim=1, stable=True).argsort(dim=1)  # (B, N), 0 = least confident
    return rank < n_mask[:, None].to(rank.device)  # (B, N), exactly n_mask[b] per row


def _check_remask(confidence, n_mask, temperature, generator) -> None:
    """remask_lowest's arguments: a count in [0, N] for each row of (B, N) confidences."""
    B, N = validate.float_tensor(confidence, "confidence", dim=2).shape
    if validate.index_tensor(n_mask, "n_mask", N + 1, dim=1).shape != (B,):
        raise ValueError(f"n_mask must be ({B},), one count per row, got {tuple(n_mask.shape)}")
    validate.number(temperature, "temperature", low=0)
    validate.generator(generator)


# --------------------------------------------------------------------------- the decode loop


def decode_loop(model, labels: torch.Tensor, tokens: torch.Tensor, steps: int = 8,
                choice_temperature: float = 4.5, generator: torch.Generator | None = None,
                schedule: str = "cosine", cfg_scale: float = 1.0, temperature: float = 1.0,
                trace: list | None = None) -> torch.Tensor:
    """MaskGIT's parallel decoding on flat (B, N) sequences (mask_id where to generate):
    one forward pass per step; returns the final (B, N) codes.

    `model(tokens, labels)` gives (B, N, K) code logits. With cfg_scale != 1 the pass is
    the doubled batch [cond; null] of Lesson 05, combined by `cfg_logits`. The logits are
    divided by `temperature` before sampling; the choice temperature anneals linearly to 0
    at the last step. With `trace`, (revealed, predicted) is appended after every step: the
    grid with mask_id where still masked, and what was sampled everywhere.
    """
    validate.positive_int(steps, "steps")
    mask_id = model.mask_id
    n_initial = (tokens == mask_id).sum(dim=1)  # (B,) N0, counted once
    for t in range(steps):
        if cfg_scale == 1.0:
            logits = model(tokens, labels)  # (B, N, K): one pass for every position
        else:  # [cond; null] in one doubled batch: still one pass
            null = torch.full_like(labels, model.null_class)
            both = model(torch.cat([tokens, tokens]), torch.cat([labels, null]))  # (2B, N, K)
            logits = cfg_logits(*both.chunk(2), cfg_scale)  # (B, N, K)
        sampled, confidence = sample_with_confidence(logits / temperature, tokens, mask_id,
                                                     generator)
        n_unknown = (tokens == mask_id).sum(dim=1)  # (B,)
        n_mask = mask_len(n_initial, n_unknown, t, steps, schedule)  # (B,)
        choice = choice_temperature * (1 - (t + 1) / steps)  # anneals to 0
        remask = remask_lowest(confidence, n_mask, choice, generator)
        tokens = sampled.masked_fill(remask, mask_id)  # (B, N)
        if trace is not None:
            trace.append((tokens, sampled))
    return tokens


class DecodeSteps(NamedTuple):
    """Every step of a decode, for pictures: both (steps, B, h, w) token grids."""

    revealed: torch.Tensor  # the grid after step t, mask_id where still masked
    predicted: torch.Tensor  # what the model sampled at step t for every position


@torch.no_grad()
def decode(model, labels: torch.Tensor, steps: int = 8, schedule: str = "cosine",
           choice_temperature: float = 4.5, generator: torch.Generator | None = None,
           init_tokens: torch.Tensor | None = None, init_mask: torch.Tensor | None = None,
           cfg_scale: float = 1.0, temperature: float = 1.0, return_steps: bool = False,
           loop=decode_loop):
    """Generate (B, G, G) token grids for class labels (B,) in `steps` forward passes.

    The arguments are checked here, the start is laid out (all [MASK], or a grid with a
    hole) and `loop` (`decode_loop`, or a learner's loop with its signature) does the work.

    schedule: "cosine" (default), "linear", "square" or "pow<k>".
    choice_temperature: the Gumbel noise on the confidence (4.5 as the reference), annealed
        linearly to 0 at the last step.
    init_tokens, init_mask: inpainting. init_tokens (B, G, G) codes and init_mask (B, G, G)
        bool, True where to generate; the other tokens are kept exactly. The mask schedule
        then counts from the number masked at the start, not from G * G.
    cfg_scale: classifier-free guidance (1 = none). temperature: divides the logits before
        sampling tokens (1 as the reference). return_steps: also return a DecodeSteps.
    loop: the decode loop that runs the steps, called as `decode_loop` is.
    """
    validate.positive_int(steps, "steps")
    gamma(schedule, 0.0)  # an unknown schedule fails here, before any forward pass
    validate.number(choice_temperature, "choice_temperature", low=0)
    validate.number(cfg_scale, "cfg_scale", low=0)
    validate.number(temperature, "temperature", low=0, low_open=True)
    validate.generator(generator)
    labels = validate.index_tensor(labels, "labels", model.num_classes, dim=1)
    tokens = _initial_tokens(model, labels, init_tokens, init_mask)  # (B, N)
    was_training = getattr(model, "training", False)  # a stand-in model need not be a Module
    if was_training:
        model.eval()
    trace = []
    final = loop(model, labels, tokens, steps, choice_temperature, generator, schedule,
                 cfg_scale, temperature, trace)
    if was_training:
        model.train()
    shape = (labels.shape[0], model.grid_size, model.grid_size)
    if not return_steps:
        return final.view(shape)
    revealed, predicted = (torch.stack(t).view(steps, *shape) for t in zip(*trace, strict=True))
    return final.view(shape), DecodeSteps(revealed, predicted)


def _initial_tokens(model, labels, init_tokens, init_mask) -> torch.Tensor:
    """The starting (B, N) sequence: all [MASK], or init_tokens with init_mask masked."""
    B, G = labels.shape[0], model.grid_size
    if init_tokens is None and init_mask is None:
        return torch.full((B, G * G), model.mask_id, device=labels.device)
    if init_tokens is None or init_mask is None:
        raise ValueError("inpainting needs both init_tokens (B, G, G) and init_mask (B, G, G)")
    validate.index_tensor(init_tokens, "init_tokens", model.num_codes)
    if tuple(init_tokens.shape) != (B, G, G) or init_mask.shape != init_tokens.shape:
        raise ValueError(f"init_tokens and init_mask must both be (B, G, G) = {(B, G, G)}, got "
                         f"{tuple(init_tokens.shape)} and {tuple(init_mask.shape)}")
    if init_mask.dtype != torch.bool:
        raise TypeError(f"init_mask must be a bool tensor (True = generate), got {init_mask.dtype}")
    tokens = init_tokens.to(labels.device).long().masked_fill(init_mask.to(labels.device),
                                                              model.mask_id)
    return tokens.view(B, -1)


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class MaskGITConfig(TokenGridConfig):
    """MaskGIT's token layout and its transformer's size (by default the AR prior's).

    The fields are the AR prior's (prior.TokenGridConfig); one id more, [MASK], and a
    transformer in which every token attends to every other one.
    """

    causal = False

    @property
    def mask_id(self) -> int:
        """[MASK], the id of a hidden token: one past the null class's id."""
        return self.num_codes + self.num_classes + 1

    @property
    def vocab_size(self) -> int:
        """K codes + the class tokens + the null class + [MASK]."""
        return self.mask_id + 1


class MaskGIT(Checkpointable):
    """A bidirectional Transformer that predicts the codes behind [MASK] tokens.

    forward(tokens (B, G*G) codes or mask_id, labels (B,)) -> (B, G*G, K) code logits.
    A label of `null_class` (= num_classes) means "no class" (classifier-free guidance).
    """

    kind = "maskgit"
    config_class = MaskGITConfig

    def __init__(self, config: MaskGITConfig):
        super().__init__(config)  # a MaskGITConfig: a PriorConfig would build a causal model
        self.transformer = Transformer(config.transformer_config())

    # what decode needs to know about a model (a test can fake these)
    num_codes = property(lambda self: self.config.num_codes)
    num_classes = property(lambda self: self.config.num_classes)
    null_class = property(lambda self: self.config.null_class)
    mask_id = property(lambda self: self.config.mask_id)
    grid_size = property(lambda self: self.config.grid_size)

    @property
    def device(self) -> torch.device:
        return self.transformer.head.weight.device

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        c = self.config  # tokens: codes or [MASK]; labels: classes or the null class
        B, N = validate.index_tensor(tokens, "tokens", c.mask_id + 1, dim=2).shape
        validate.index_tensor(labels, "labels", c.null_class + 1, dim=1)
        if N != c.tokens_per_image or labels.shape != (B,):
            raise ValueError(f"tokens must be (B, {c.tokens_per_image}) and labels (B,), got "
                             f"{tuple(tokens.shape)} and {tuple(labels.shape)}")
        K = self.config.num_codes
        class_token = (labels.long() + K)[:, None]  # (B, 1): K + label, K + 10 for "none"
        logits = self.transformer(torch.cat([class_token, tokens], dim=1))  # (B, 1 + N, V)
        return logits[:, 1:, :K]  # (B, N, K): the grid positions, the codes only


def maskgit_loss(model: MaskGIT, codes: torch.Tensor, labels: torch.Tensor,
                 p_uncond: float = 0.1, label_smoothing: float = 0.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """One training loss: mask a random share of each grid, predict the hidden codes.

    codes: (B, G, G) or (B, G*G) token grids, labels: (B,). The class is dropped to "none"
    with probability p_uncond (for guidance); the model sees mask_id at every hidden
    position and the true codes elsewhere, and only the hidden positions carry a loss.
    """
    validate.index_tensor(codes, "codes", model.num_codes)  # a code >= K is no target
    # before the labels are dropped: a label beyond the null class could be replaced by it
    validate.index_tensor(labels, "labels", model.null_class + 1)
    targets = codes.reshape(codes.shape[0], -1).long()  # (B, N)
    inputs, mask = random_mask(targets, model.mask_id, generator=generator)  # (B, N) each
    labels = drop_labels(labels.long(), p_uncond, model.null_class, generator)  # (B,)
    return masked_loss(model(inputs, labels), targets, mask, label_smoothing)


def train_maskgit(model: MaskGIT, codes: torch.Tensor, labels: torch.Tensor, steps: int,
                  batch_size: int = 64, lr: float = 3e-3, p_uncond: float = 0.1,
                  label_smoothing: float = 0.0, seed: int = 0, progress: bool = True
                  ) -> list[float]:
    """Train on token grids (M, G, G) and labels (M,); returns the loss of each step.

    The recipe is `training.fit`'s, the same as Lesson 05's prior, so that the comparison is
    between two ways of generating, not two ways of training.
    """
    G = model.config.grid_size
    validate.index_tensor(codes, "codes", model.num_codes, dim=3)
    validate.index_tensor(labels, "labels", model.num_classes, dim=1)
    if tuple(codes.shape[1:]) != (G, G) or labels.shape != codes.shape[:1]:
        raise ValueError(f"codes must be (M, {G}, {G}) token grids and labels (M,), got "
                         f"{tuple(codes.shape)} and {tuple(labels.shape)}")
    validate.positive_int(batch_size, "batch_size")
    validate.number(p_uncond, "p_uncond", low=0, high=1)
    validate.number(label_smoothing, "label_smoothing", low=0, high=1)
    codes, labels = codes.to(model.device), labels.to(model.device)

    def batch_loss(generator: torch.Generator) -> torch.Tensor:
        rows = torch.randint(0, codes.shape[0], (batch_size,), generator=generator)
        rows = rows.to(model.device)
        return maskgit_loss(model, codes[rows], labels[rows], p_uncond, label_smoothing,
                            generator)

    return fit(model, batch_loss, steps, lr=lr, seed=seed, desc="maskgit", progress=progress)
