"""Checks for Lesson 05: token sequences, the teacher-forcing loss, sampling controls, CFG.

Each check runs the learner's function on cases drawn from its own seeded generator and
compares it with minitok's reference. The cases are ordered so that the first one to fail
names the classic mistake: a class token that collides with code ids, a loss that predicts
a token from itself, top-p that drops the token crossing p, top-k applied after the draw,
guidance with its halves swapped.
"""

from __future__ import annotations

import torch

from minitok import prior, sampling
from minitok.checks._core import (
    CheckFailed,
    exercise,
    expect,
    expect_close,
    expect_equal,
    expect_shape,
    expect_tensor,
    show_hint,
)
from minitok.transformer import Transformer, TransformerConfig


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- sequences


@exercise("make_sequences", reference=prior.make_sequences)
def make_sequences(fn):
    g = _gen(0)
    K, N, G = 32, 6, 4
    codes = torch.randint(0, K, (N, G, G), generator=g)  # (N, G, G)
    labels = torch.tensor([0, 7, 3, 9, 1, 7])  # (N,)
    got = fn(codes, labels, K)
    expected = prior.make_sequences(codes, labels, K)
    expect_shape(got, (N, 1 + G * G), "make_sequences(codes, labels, K)",
                 hint="one class token in front of the G*G codes: (N, 1 + G*G)")
    expect_tensor(got, "the sequences", dtype=torch.long, hint="token ids are int64 (long)")
    if torch.equal(got[:, 0].cpu(), labels):
        raise CheckFailed(
            "the first token of each sequence is the bare label (0..9)",
            "ids 0..K-1 are already codes: class c must be the token K + c, after the codes",
        )
    expect_equal(got[:, 0], expected[:, 0], "the class tokens (first column)",
                 hint="class c has id num_codes + c")
    expect_equal(got[:, 1:], expected[:, 1:], "the codes after the class token",
                 hint="raster order, row by row: codes.reshape(N, -1)")
    return "class tokens K + label in front, codes in raster order"


# --------------------------------------------------------------------------- the loss


def _tiny_prior_model(num_codes: int, grid: int) -> Transformer:
    """A small random causal Transformer, built without touching the global RNG."""
    config = TransformerConfig(vocab_size=num_codes + 11, block_size=1 + grid * grid,
                               n_layer=2, n_head=2, n_embd=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Transformer(config)
    return model.eval()


def _loss_without_shift(model, seqs, num_codes):
    """The classic mistake: logits at position i scored against token i itself."""
    logits = model(seqs)[:, 1:, :num_codes]  # position i sees token i
    targets = seqs[:, 1:]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, num_codes), targets.reshape(-1))


@exercise("prior_loss", reference=prior.prior_loss)
def prior_loss(fn):
    K, G = 16, 4
    model = _tiny_prior_model(K, G)
    g = _gen(1)
    codes = torch.randint(0, K, (8, G, G), generator=g)
    labels = torch.randint(0, 10, (8,), generator=g)
    seqs = prior.make_sequences(codes, labels, K)  # (8, 17)
    got = fn(model, seqs, K)
    expect_tensor(got, "prior_loss(model, seqs, K)")
    expect_shape(got, (), "the loss", hint="average the cross-entropy to one number")
    expect(got.requires_grad, "the loss has no gradient",
           hint="compute it from the model's logits, without torch.no_grad() or .item()")
    with torch.no_grad():
        no_shift = _loss_without_shift(model, seqs, K)
        expected = prior.prior_loss(model, seqs, K)
    if torch.allclose(got.detach(), no_shift, atol=1e-5):
        raise CheckFailed(
            "your loss scores the logits at position i against token i itself",
            "shift by one: the model reads seqs[:, :-1] and is scored against seqs[:, 1:] "
            "(with the causal mask, position i sees token i, so predicting it is copying)",
        )
    expect_close(got.detach(), expected, "the loss", atol=1e-5,
                 hint="inputs seqs[:, :-1], targets seqs[:, 1:], only the first num_codes "
                      "logits, cross-entropy averaged over every position")
    return "a random tiny transformer on 8 sequences, shift and code-only logits"


# --------------------------------------------------------------------------- filters


@exercise("top_k_filter", reference=sampling.top_k_filter)
def top_k_filter(fn):
    logits = torch.randn(4, 10, generator=_gen(2))
    got = fn(logits.clone(), 3)
    expected = sampling.top_k_filter(logits, 3)
    expect_shape(got, tuple(logits.shape), "top_k_filter(logits, 3)")
    expect_equal(torch.isfinite(got), torch.isfinite(expected), "which logits survive",
                 hint="keep the k largest logits of each row and set the others to "
                      "-inf (not 0: exp(0) = 1 is still a chance)")
    expect_equal(got[torch.isfinite(got)], logits[torch.isfinite(expected)],
                 "the surviving logits", hint="leave the kept logits unchanged")
    try:
        big = fn(logits.clone(), 50)
    except RuntimeError as err:
        raise CheckFailed(f"k = 50 > V = 10 raised {err}",
                          "clamp k to the vocabulary size: k = min(k, V)") from None
    expect_equal(big, logits, "top_k_filter(logits, 50) with V = 10",
                 hint="a k larger than the vocabulary keeps every logit")
    ties = torch.tensor([[3.0, 1.0, 1.0, 1.0, 0.0]])
    kept = int(torch.isfinite(fn(ties.clone(), 2)).sum())
    expect(kept == 2, f"with logits {ties.tolist()[0]} and k = 2, {kept} logits survive",
           hint="exactly k survive: `logits < kth_value` keeps every tie; keep the positions "
                "torch.topk returns instead (scatter them into a row of -inf)")
    return "k < V, k > V (clamped), ties at the k-th value"


@exercise("top_p_filter", reference=sampling.top_p_filter)
def top_p_filter(fn):
    tiny = fn(torch.randn(5, 12, generator=_gen(3)), 1e-6)
    expect_shape(tiny, (5, 12), "top_p_filter(logits, 1e-6)")
    expect_equal(torch.isfinite(tiny).sum(-1), torch.ones(5, dtype=torch.long),
                 "tokens kept per row for p = 1e-6",
                 hint="always keep at least the most likely token")
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]])  # sorted: 0.5, 0.3 (crosses 0.6), ...
    got = fn(probs.log(), 0.6)
    expect_shape(got, (1, 4), "top_p_filter(logits, 0.6)")
    kept = torch.isfinite(got)
    if kept.tolist() == [[False, True, False, False]]:
        raise CheckFailed(
            "with probabilities [0.15, 0.5, 0.05, 0.3] and p = 0.6 you keep only 0.5",
            "0.5 alone does not reach 0.6: keep the token that crosses p (0.3) too; keep a "
            "token while the mass ranked above it is < p",
        )
    expect_equal(kept, torch.tensor([[False, True, False, True]]),
                 "which tokens survive for p = 0.6",
                 hint="the smallest set of most likely tokens whose total reaches p, in the "
                      "original (unsorted) positions")
    logits = 2.0 * torch.randn(8, 20, generator=_gen(4))
    for p in (0.3, 0.75, 0.9):
        got = fn(logits.clone(), p)
        expected = sampling.top_p_filter(logits, p)
        expect_equal(torch.isfinite(got), torch.isfinite(expected),
                     f"which tokens survive for p = {p}",
                     hint="sort descending, cumulative softmax, then map the kept set back "
                          "to vocabulary order (scatter with the sort's indices)")
        expect_equal(got[torch.isfinite(got)], logits[torch.isfinite(expected)],
                     f"the surviving logits for p = {p}",
                     hint="return the original logits, with -inf where a token is dropped")
    return "the crossing token, at least one token, 8 random rows at three p"


# --------------------------------------------------------------------------- sampling


def _draw(fn, logits, n, seed, **kwargs):
    got = fn(logits.expand(n, -1), generator=_gen(seed), **kwargs)
    expect_shape(got, (n,), f"sample_logits on ({n}, V) logits",
                 hint="one token id per row: squeeze the multinomial's sample dimension")
    expect_tensor(got, "the sampled tokens", dtype=torch.long)
    return got


@exercise("sample_logits", reference=sampling.sample_logits)
def sample_logits(fn):
    logits = torch.randn(16, 30, generator=_gen(5))
    expect_equal(fn(logits, greedy=True), logits.argmax(-1), "sample_logits(greedy=True)",
                 hint="greedy means the argmax of each row, no randomness")
    flat = torch.linspace(0.0, 0.3, 30)[None]  # (1, 30) nearly uniform: filters matter
    drawn = _draw(fn, flat, 4000, 6, top_k=2)
    outside = int((drawn < 28).sum())
    expect(outside == 0,
           f"with top_k=2, {outside} of 4000 samples are outside the 2 most likely tokens",
           hint="filter the logits BEFORE softmax and the draw; a sample outside the top-k "
                "means top-k came after sampling (or not at all)")
    drawn = _draw(fn, flat, 4000, 7, top_p=0.2)
    nucleus = torch.isfinite(sampling.top_p_filter(flat, 0.2))[0]
    expect(bool(nucleus[drawn].all()),
           "with top_p=0.2 some samples are outside the nucleus",
           hint="apply top_p_filter to the logits before softmax and the draw")
    a = _draw(fn, logits[:1], 500, 8)
    b = _draw(fn, logits[:1], 500, 8)
    expect_equal(a, b, "two draws with equally seeded generators",
                 hint="pass generator=generator to torch.multinomial")
    n, settings = 40_000, {"temperature": 0.5, "top_k": 5, "top_p": 0.7}
    base = torch.tensor([[1.0, 0.5, 0.4, 0.2, 0.0, -0.2, 0.3, -1.0]])
    drawn = _draw(fn, base, n, 9, **settings)
    filtered = sampling.top_p_filter(sampling.top_k_filter(base / 0.5, 5), 0.7)
    expected = torch.softmax(filtered[0].double(), -1)  # (V,)
    freq = torch.bincount(drawn, minlength=8).double() / n
    sigma = (expected * (1 - expected) / n).sqrt()
    expect(bool(((freq - expected).abs() <= 5 * sigma + 2e-3).all()),
           f"frequencies {[round(v, 3) for v in freq.tolist()]} do not match the expected "
           f"{[round(v, 3) for v in expected.tolist()]} (temperature 0.5, top_k 5, top_p 0.7)",
           hint="order: divide by the temperature, then top-k, then top-p, then softmax "
                "and torch.multinomial")
    return "greedy, top-k and top-p before the draw, seeded, frequencies of all three"


@exercise("cfg_logits", reference=sampling.cfg_logits)
def cfg_logits(fn):
    g = _gen(10)
    cond, uncond = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    swapped = "the halves are swapped: guidance starts from the unconditional logits u " \
              "and moves past the conditional ones: u + s (c - u)"
    got = fn(cond, uncond, 1.0)
    expect_tensor(got, "cfg_logits(cond, uncond, 1.0)")
    if torch.allclose(got, uncond, atol=1e-6):
        raise CheckFailed("scale 1 gives the unconditional logits", swapped)
    expect_close(got, cond, "cfg_logits(cond, uncond, 1.0)", atol=1e-6,
                 hint="s = 1 must be plain conditional sampling (no guidance)")
    expect_close(fn(cond, uncond, 0.0), uncond, "cfg_logits(cond, uncond, 0.0)", atol=1e-6,
                 hint="s = 0 is the unconditional model")
    got = fn(cond, uncond, 2.5)
    if torch.allclose(got, cond + 2.5 * (uncond - cond), atol=1e-5):
        raise CheckFailed("scale 2.5 gives c + s (u - c)", swapped)
    expect_close(got, sampling.cfg_logits(cond, uncond, 2.5), "cfg_logits(cond, uncond, 2.5)",
                 hint="u + s (c - u)")
    return "s = 0, 1, 2.5"


def hint(name: str, level: int | None = None) -> None:
    """The next hint for exercise `name` (1 the idea, 2 the formula, 3 near-code)."""
    show_hint(__name__, name, level)
