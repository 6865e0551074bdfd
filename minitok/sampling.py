"""Lesson 05: turning next-token logits into a token, one idea per function.

A language model (or an image prior) gives, at every step, a vector of logits over the
vocabulary. How we pick the next token from it decides what the samples look like:

    temperature   divide the logits by T: T < 1 sharpens, T > 1 flattens the distribution
    top-k         keep only the k most likely tokens
    top-p         keep the smallest set of most likely tokens whose probability reaches p
    greedy        always take the most likely token (the limit T -> 0)
    guidance      push the conditional logits away from the unconditional ones (CFG)

The order follows LlamaGen's `generate.py` and nanoGPT: guidance first, then temperature,
then top-k, then top-p, then softmax and one draw. Filtering sets the dropped logits to -inf,
so softmax gives them probability exactly 0 and the kept tokens are renormalised.

Every function here checks its arguments, each a line that reads no tensor values (no
device sync), except that `sample_logits` looks for NaN and for rows left all -inf (one
sync): the samplers of Lessons 05-07 call them on every step, and a learner calls them
directly.
"""

from __future__ import annotations

import math

import torch

from minitok import validate


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide the logits by `temperature` (> 0). T = 1 changes nothing.

    softmax(l / T): as T -> 0 all the mass goes to the largest logit (greedy), as T -> inf
    the distribution becomes uniform. T = 0 is not a number we can divide by, so greedy
    decoding has its own flag instead.
    """
    validate.float_tensor(logits, "logits")  # integer logits would be rounded already
    if isinstance(temperature, bool) or not (isinstance(temperature, (int, float))
                                             and temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be finite and > 0 (or greedy=True): {temperature!r}")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row, set the others to -inf. logits: (B, V).

    Exactly k survive, even when logits tie at the k-th value (we keep the positions
    `torch.topk` returns, not every logit >= the k-th). A k larger than the vocabulary is
    clamped to V (`torch.topk` itself would raise), so it simply keeps everything.
    """
    validate.float_tensor(logits, "logits")
    validate.positive_int(k, "k")  # k = 0 would leave a row of -inf: no token to draw
    k = min(k, logits.shape[-1])
    values, indices = torch.topk(logits, k, dim=-1)  # (B, k), (B, k)
    filtered = torch.full_like(logits, float("-inf"))  # (B, V)
    return filtered.scatter(-1, indices, values)  # (B, V), exactly k finite per row


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of top tokens whose probability reaches p.

    Sort the tokens by probability. A token is kept when the mass of the tokens ranked
    above it is still below p, so the token that *crosses* p is kept, and the most likely
    token (mass above it: 0) is always kept. p = 1 keeps every token (returned as is, so
    that no rounding in the cumulative sum can drop a tail token). logits: (B, V).
    """
    validate.float_tensor(logits, "logits")
    validate.number(p, "p", low=0, high=1, low_open=True)  # p = 0 keeps nothing, NaN all
    if p == 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
    probs = torch.softmax(sorted_logits, dim=-1)  # (B, V)
    mass_above = torch.cumsum(probs, dim=-1) - probs  # (B, V) mass of the better-ranked tokens
    keep_sorted = mass_above < p  # (B, V), True for a prefix that includes the crossing token
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)  # back to vocab order
    return logits.masked_fill(~keep, float("-inf"))


def sample_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, generator: torch.Generator | None = None,
                  greedy: bool = False) -> torch.Tensor:
    """Draw one token per row from (B, V) logits: temperature, then top-k, then top-p.

    Returns (B,) int64 ids. With `greedy=True` it returns the argmax (temperature and the
    filters cannot change which logit is largest, so they are not needed). The filters act
    on the logits BEFORE softmax and the draw: a token they drop can never be sampled.
    Pass a `torch.Generator` (on the logits' device) to make the draw reproducible. Longer
    than the notebook's by its checks: it is where every sampler's settings come in.
    """
    validate.float_tensor(logits, "logits", dim=2)
    # one device sync for both: argmax would return a NaN's position, and a row of -inf
    # (nothing left to draw) makes softmax NaN
    nan, empty = torch.stack([torch.isnan(logits).any(),
                              (logits == float("-inf")).all(dim=-1).any()]).tolist()
    if nan:
        raise ValueError("logits hold NaN values: no token can be chosen from them")
    if empty:
        raise ValueError("logits have a row that is all -inf: no token is left to draw")
    if top_k is not None:
        validate.positive_int(top_k, "top_k")
    if top_p is not None:
        validate.number(top_p, "top_p", low=0, high=1, low_open=True)
    validate.flag(greedy, "greedy")
    validate.generator(generator)
    if greedy:
        return logits.argmax(dim=-1)  # (B,) transformer.greedy, Lesson 04's default pick
    logits = apply_temperature(logits, temperature)  # (B, V)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)  # (B, V), dropped tokens have probability 0
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)


def cfg_logits(cond: torch.Tensor, uncond: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """Classifier-free guidance: u + s (c - u), computed on logits before any sampling step.

    s = 0 gives the unconditional model, s = 1 the conditional one, s > 1 moves further in
    the direction "what the class adds", which makes samples more typical of their class
    (and less diverse). cond, uncond: the same shape, e.g. (B, V). The one line of the
    formula comes after three of checks: a non-tensor, an infinite scale or halves that
    broadcast would otherwise fail cryptically or give a silently wrong answer, in every
    sampler of Lessons 05-07.
    """
    validate.same_shape(validate.float_tensor(cond, "cond"),
                        validate.float_tensor(uncond, "uncond"), "cond and uncond")
    validate.number(cfg_scale, "cfg_scale", low=0)
    return uncond + cfg_scale * (cond - uncond)


def drop_labels(labels: torch.Tensor, p_uncond: float, null_class: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Condition dropout: each label becomes the null class with probability p_uncond.

    This is how one model learns both p(image | class) and p(image), which guidance needs:
    about 10% of the training examples say "no class". Returns a new tensor. It runs on
    every training step, so its checks read no tensor values: the labels' range is checked
    once by the training function.
    """
    validate.int_tensor(labels, "labels", dim=1)
    validate.number(p_uncond, "p_uncond", low=0, high=1)
    validate.non_negative_int(null_class, "null_class")
    validate.generator(generator)
    draw = torch.rand(labels.shape[0], generator=generator, device="cpu").to(labels.device)
    return labels.masked_fill(draw < p_uncond, null_class)  # (B,)
