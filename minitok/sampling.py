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
"""

from __future__ import annotations

import math

import torch

from minitok import validate


def _check_logits(logits: torch.Tensor) -> None:
    """Clear errors for a batch of logits."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.dim() != 2 or logits.shape[-1] == 0:
        raise ValueError(f"logits must be (B, V) with V >= 1, got shape {tuple(logits.shape)}")


def _check_top_k(k) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be a positive int or None, got {k!r}")


def _check_top_p(p) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be a number in (0, 1], got {p!r}")


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide the logits by `temperature` (> 0). T = 1 changes nothing.

    softmax(l / T): as T -> 0 all the mass goes to the largest logit (greedy), as T -> inf
    the distribution becomes uniform. T = 0 is not a number we can divide by, so greedy
    decoding has its own flag instead.
    """
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number, got {type(temperature).__name__}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(
            f"temperature must be a finite number > 0, got {temperature!r}; "
            "for argmax decoding pass greedy=True"
        )
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row, set the others to -inf. logits: (B, V).

    Exactly k survive, even when logits tie at the k-th value (we keep the positions
    `torch.topk` returns, not every logit >= the k-th). A k larger than the vocabulary is
    clamped to V (`torch.topk` itself would raise), so it simply keeps everything.
    """
    _check_logits(logits)
    _check_top_k(k)
    k = min(k, logits.shape[-1])
    values, indices = torch.topk(logits, k, dim=-1)  # (B, k), (B, k)
    filtered = torch.full_like(logits, float("-inf"))  # (B, V)
    return filtered.scatter(-1, indices, values)  # (B, V), k finite entries per row


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of top tokens whose probability reaches p.

    Sort the tokens by probability. A token is kept when the mass of the tokens ranked
    above it is still below p, so the token that *crosses* p is kept, and the most likely
    token (mass above it: 0) is always kept. p = 1 keeps every token. logits: (B, V).
    """
    _check_logits(logits)
    _check_top_p(p)
    if p == 1.0:
        return logits  # nothing to drop (and no rounding in a cumsum can drop a tail token)
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
    probs = torch.softmax(sorted_logits, dim=-1)  # (B, V)
    mass_above = torch.cumsum(probs, dim=-1) - probs  # (B, V) mass of the better-ranked tokens
    keep_sorted = mass_above < p  # (B, V), True for a prefix that includes the crossing token
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)  # back to vocab order
    return logits.masked_fill(~keep, float("-inf"))


def greedy_pick(logits: torch.Tensor) -> torch.Tensor:
    """The most likely token of each row: (B, V) -> (B,). Deterministic; no randomness."""
    _check_logits(logits)
    return logits.argmax(dim=-1)


def sample_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    greedy: bool = False,
) -> torch.Tensor:
    """Draw one token per row from (B, V) logits: temperature, then top-k, then top-p.

    Returns (B,) int64 ids. With `greedy=True` it returns the argmax (temperature and the
    filters cannot change which logit is largest, so they are not needed). The filters act
    on the logits BEFORE softmax and the draw: a token they drop can never be sampled.
    Pass a `torch.Generator` (on the logits' device) to make the draw reproducible.
    """
    _check_logits(logits)
    if top_k is not None:
        _check_top_k(top_k)
    if top_p is not None:
        _check_top_p(top_p)
    if greedy:
        return greedy_pick(logits)
    logits = apply_temperature(logits, temperature)  # (B, V)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = torch.softmax(logits.float(), dim=-1)  # (B, V), dropped tokens have probability 0
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B,)


def cfg_logits(cond: torch.Tensor, uncond: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """Classifier-free guidance: u + s (c - u), computed on logits before any sampling step.

    s = 0 gives the unconditional model, s = 1 the conditional one, s > 1 moves further in
    the direction "what the class adds", which makes samples more typical of their class
    (and less diverse). cond, uncond: the same shape, e.g. (B, V).
    """
    validate.same_shape(cond, uncond, "cond and uncond")
    validate.number(cfg_scale, "cfg_scale", low=0)
    return uncond + cfg_scale * (cond - uncond)


def drop_labels(labels: torch.Tensor, p_uncond: float, null_class: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Condition dropout: each label becomes the null class with probability p_uncond.

    This is how one model learns both p(image | class) and p(image), which guidance needs:
    about 10% of the training examples say "no class". Returns a new tensor.
    """
    draw = torch.rand(labels.shape[0], generator=generator, device="cpu").to(labels.device)
    return labels.masked_fill(draw < p_uncond, null_class)  # (B,)
