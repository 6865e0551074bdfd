"""Checks for Lesson 06: mask schedules, the training masker and loss, the MaskGIT decode loop.

Each check runs the learner's function on small seeded cases, in the order that makes the
first failure name the likely mistake: a schedule without its clip or computed in float32,
the ratio t/T instead of (t+1)/T, floor instead of ceil when masking for training, a loss
over every position or without its label smoothing, confidence taken from raw logits, known
tokens resampled, the most confident tokens re-masked, and the decode loop counting its
schedule from the grid size, leaving masks at the end, annealing the choice temperature
wrongly or guiding in the wrong direction.

The decode loop is judged with a fake model whose logits the check controls and which
records every input it is shown, so the check sees what the loop did at every step; then
its tokens are compared with minitok's loop run on the same generator seed.

The counts per step are computed here from the official formula (google-research/maskgit
publishes the formula, not tables), in float64; docs/references.md (MaskGIT) says where
float32, JAX's default, would differ.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from minitok import maskgit
from minitok.checks import expect, expect_close, expect_equal, expect_shape, expect_tensor
from minitok.checks._core import CheckFailed, exercise, show_hint

# --------------------------------------------------------------------------- gamma

NO_CLIP = (
    "gamma(1) should be clipped to 1e-6, not 0: every schedule is clipped to [1e-6, 1] "
    "(the official code's jnp.clip(mask_ratio, 1e-6, 1.)), so that training always hides "
    "at least one token."
)
FLOAT32 = (
    "for a Python float ratio gamma returned float32: torch.as_tensor(ratio) and "
    "torch.tensor(ratio) make torch's default dtype, float32. The counts are floors of "
    "N0 * gamma, and in float32 1024 * cos(pi/3) is 511.99997, whose floor is 511, not 512: "
    "one token too many stays masked. Compute in float64 (dtype=torch.float64) or return a "
    "Python float (math.cos)."
)
GAMMA_HINTS = (
    "gamma(r) is the fraction of the tokens still MASKED at ratio r: every schedule starts "
    "at 1 (all masked) and falls to 0 at r = 1; cosine stays near 1 early, so the first steps "
    "reveal few tokens.",
    "cosine cos(pi/2 r), linear 1 - r, square 1 - r^2; then clip to [1e-6, 1]. Work in "
    "float64 whatever ratio is (a float or a tensor).",
    "r = torch.as_tensor(ratio, dtype=torch.float64); pick the formula by name (an else "
    "branch raises ValueError naming the schedule); return g.clamp(1e-6, 1.0).",
)


def _as_float_tensor(got, what: str) -> torch.Tensor:
    if isinstance(got, (int, float)):
        return torch.tensor(float(got), dtype=torch.float64)
    expect_tensor(got, what)
    return got.detach().double().cpu()


@exercise("gamma", reference=maskgit.gamma, hints=GAMMA_HINTS)
def gamma(fn):
    ratios = torch.tensor([0.0, 0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
    for name in ("cosine", "linear", "square"):
        expected = maskgit.gamma(name, ratios)
        got = _as_float_tensor(fn(name, ratios), f"gamma({name!r}, ratios)")
        expect_shape(got, tuple(ratios.shape), f"gamma({name!r}, ratios)")
        if got.numel() and abs(float(got[0]) - 1.0) > 1e-6:
            raise CheckFailed(
                f"gamma({name!r}, 0) = {float(got[0]):.4g}, but at ratio 0 every token is "
                "still masked",
                "gamma(r) is the fraction still MASKED: gamma(0) = 1, gamma(1) = 0, not the "
                "fraction revealed.",
            )
        expect_close(
            got, expected, f"gamma({name!r}, r) for r = {ratios.tolist()}", atol=1e-6,
            hint="each schedule by its name: cosine, linear and square (see the table above).",
        )
    expect_equal(ratios, torch.tensor([0.0, 0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64),
                 "ratio after the call", hint="do not change ratio in place.")
    for name in ("cosine", "linear", "square"):
        at_one = _as_float_tensor(fn(name, 1.0), f"gamma({name!r}, 1.0)")
        expect_close(at_one.reshape(()), torch.tensor(1e-6, dtype=torch.float64),
                     f"gamma({name!r}, 1.0)", atol=1e-9, rtol=1e-3, hint=NO_CLIP)
    # The stated dtype: float64 (or a Python float), so that the counts' floors are exact.
    got = fn("cosine", 8 / 12)
    if isinstance(got, torch.Tensor):
        expect(got.dtype == torch.float64,
               f"gamma('cosine', 8 / 12) has dtype {got.dtype}, expected float64 (or a float)",
               hint=FLOAT32 if got.dtype in (torch.float32, torch.float16, torch.bfloat16)
               else "return a float64 tensor or a Python float.")
    else:
        expect(isinstance(got, float), f"gamma('cosine', 8 / 12) should be a float64 tensor or "
               f"a float, got {type(got).__name__}")
    expect(math.floor(1024 * float(got)) == 512,
           f"floor(1024 * gamma('cosine', 8 / 12)) = {math.floor(1024 * float(got))}, the "
           "float64 value is 512", hint=FLOAT32)
    try:
        fn("cosin", 0.5)
    except NotImplementedError:
        raise
    except Exception as err:  # any error will do, as long as it names the schedule
        expect("cosin" in str(err), f"gamma('cosin', 0.5) raised {err!r}, which does not name "
               "the schedule", hint="raise ValueError(f'unknown schedule {schedule!r}').")
    else:
        raise CheckFailed("gamma('cosin', 0.5) returned a value: an unknown schedule should "
                          "be an error that names it",
                          "end the if/elif chain with else: raise ValueError(...) naming it.")
    return "3 schedules at 7 ratios, the clip, float64 for a float ratio, an unknown name"


# --------------------------------------------------------------------------- mask_len

OFF_BY_ONE = (
    "the ratio is off by one: after step t (0-based) t + 1 of T steps are done, so use "
    "r = (t + 1) / T, not t / T. With t / T the first step reveals a single token."
)
NO_CLAMP = (
    "clamp as the official loop does: keep at most n_unknown - 1 masked (every step reveals "
    "at least one token) and at least 1 masked until the last step, where nothing stays "
    "masked."
)
FLOAT32_COUNT = (
    "one token off only where N0 * gamma is a whole number (1024 cos(pi/3) = 512): float32 "
    "arithmetic inside mask_len. The gamma it calls here is minitok's (float64), so the "
    "float32 comes from mask_len itself, e.g. gamma(schedule, torch.tensor((t + 1) / T)) "
    "(a float32 ratio) or a float32 product: pass the ratio as a Python float and multiply "
    "in float64 (n_initial.double())."
)
COUNT_DTYPE = (
    "a count is an integer tensor, like n_initial: torch.floor keeps the float dtype, so "
    "turn the planned count into integers (.long()) before the clamps (remask_lowest and "
    "range() need integers)."
)
MASK_LEN_HINTS = (
    "after step t, t + 1 of the T steps are done; the share still masked is the schedule at "
    "that ratio, applied to N0, the number masked at the START (not the grid size). Then "
    "every step must reveal at least one token, one must wait until the last step, and the "
    "last step leaves nothing masked.",
    "planned = floor(N0 * gamma((t + 1) / T)); keep = max(1, min(n_unknown - 1, planned)); "
    "never more than n_unknown (a row with nothing unknown stays 0); 0 at t = T - 1.",
    "if step == steps - 1:\n"
    "    return ...                                  # the last step keeps nothing masked\n"
    "ratio = ...                                     # steps done after this one, as a share\n"
    "planned = torch.floor(n_initial.double() * ____).long()   # the schedule's count, of N0\n"
    "keep = ...                                      # at least 1, at most n_unknown - 1\n"
    "return torch.minimum(keep, n_unknown)",
)
# The official formula evaluated by minitok, N0 = 256, T = 8 (cosine); float32 and float64
# agree here. Computed, not published (docs/references.md, MaskGIT).
TABLE_256 = [251, 236, 212, 181, 142, 97, 49, 0]


def _counts(fn, n_initial: torch.Tensor, steps: int, name: str) -> list[list[int]]:
    """Run a mask_len function over every step; returns one list of counts per step."""
    unknown = n_initial.clone()
    counts = []
    for t in range(steps):
        before = (n_initial.clone(), unknown.clone())
        got = fn(n_initial, unknown, t, steps, name)
        expect_tensor(got, f"mask_len(..., step={t}, steps={steps})")
        expect(not (got.is_floating_point() or got.is_complex() or got.dtype == torch.bool),
               f"mask_len(..., step={t}, steps={steps}) has dtype {got.dtype}, expected an "
               "integer tensor", hint=COUNT_DTYPE)
        expect_shape(got, tuple(n_initial.shape), f"mask_len(..., step={t}, steps={steps})")
        expect(torch.equal(n_initial, before[0]) and torch.equal(unknown, before[1]),
               "mask_len changed n_initial or n_unknown in place",
               hint="compute a new tensor; leave the inputs as they are.")
        unknown = got.long()
        counts.append(unknown.tolist())
    return counts


def _off_by_one(n_initial, n_unknown, step, steps, name):
    planned = torch.floor(n_initial.double() * maskgit.gamma(name, step / steps)).long()
    if step == steps - 1:
        return torch.zeros_like(n_unknown)
    return torch.minimum(torch.minimum(n_unknown - 1, planned).clamp(min=1), n_unknown)


@exercise("mask_len", reference=maskgit.mask_len, hints=MASK_LEN_HINTS)
def mask_len(fn):
    n = torch.tensor([256])
    got = [c[0] for c in _counts(fn, n, 8, "cosine")]
    if got != TABLE_256:
        wrong = [c[0] for c in _counts(_off_by_one, n, 8, "cosine")]
        hint = OFF_BY_ONE if got == wrong else (
            "floor(N0 * gamma((t + 1) / T)) tokens stay masked after step t; the last step "
            "leaves 0."
        )
        raise CheckFailed(
            f"N0 = 256, T = 8 (cosine): still masked after each step {got}, the official "
            f"formula gives {TABLE_256}",
            hint,
        )
    for n0, steps, name in ((1024, 12, "cosine"), (64, 8, "linear"), (64, 4, "square")):
        expected = maskgit.mask_counts(n0, steps, name)
        got = [c[0] for c in _counts(fn, torch.tensor([n0]), steps, name)]
        wrong = [i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b]
        hint = FLOAT32_COUNT if (name == "cosine" and wrong == [7] and got[7] == 511) else \
            "use the schedule you are given by name, at r = (t + 1) / T."
        expect(got == expected, f"N0 = {n0}, T = {steps} ({name}): got {got}, expected "
               f"{expected} (float64)", hint=hint)
    expected = maskgit.mask_counts(4, 8, "cosine")
    got = [c[0] for c in _counts(fn, torch.tensor([4]), 8, "cosine")]
    expect(got == expected, f"N0 = 4, T = 8 (cosine): got {got}, expected {expected}",
           hint=NO_CLAMP)
    rows = torch.tensor([64, 10, 1, 0, 37])  # every row counts from its own N0
    got = _counts(fn, rows, 8, "cosine")
    expected = [[maskgit.mask_counts(int(n0), 8)[t] for n0 in rows] for t in range(8)]
    expect(got == expected, f"a batch with N0 = {rows.tolist()}: got {got}, expected {expected}",
           hint="work per row: n_initial and n_unknown are (B,) tensors; a row with nothing "
           "masked stays at 0.")
    return "the formula's counts 251..49, 0 and 512 at 8/12 (float64), three schedules, " \
        "the small-N clamp, a batch"


# --------------------------------------------------------------------------- random_mask


def _expected_mean_fraction(n: int) -> float:
    """E[ceil(cos(pi/2 r) N)] / N for r ~ U(0, 1), by a fine midpoint rule."""
    r = (torch.arange(200_000, dtype=torch.float64) + 0.5) / 200_000
    return float(torch.ceil(torch.cos(math.pi / 2 * r) * n).mean() / n)


RANDOM_MASK_HINTS = (
    "training must show the model every masking level decoding will: each row draws its own "
    "ratio r, hides the share gamma(r) of its positions (rounded up, so at least one), "
    "chosen uniformly at random, and the model sees mask_id there.",
    "n = ceil(gamma(r) * N) per row, r ~ U(0, 1) from the generator; a uniform subset of "
    "size n: rank N random scores per row and hide the n smallest.",
    "B, N = tokens.shape\n"
    "if ratio is None:\n"
    "    ratio = torch.rand(B, generator=generator, dtype=torch.float64)   # one per row\n"
    "n_hidden = ...                                  # (B,) how many to hide: the schedule, "
    "of N\n"
    "rank = torch.rand(B, N, generator=generator).____   # a random rank per position, 0..N-1\n"
    "mask = ...                                      # (B, N) True at the n_hidden lowest ranks\n"
    "return tokens.masked_fill(mask, mask_id), mask",
)


@exercise("random_mask", reference=maskgit.random_mask, hints=RANDOM_MASK_HINTS)
def random_mask(fn):
    g = torch.Generator().manual_seed(6)
    K, mask_id = 12, 99
    tokens = torch.randint(0, K, (4, 16), generator=g)  # (B, N)
    ratio = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=torch.float64)
    out = fn(tokens, mask_id, "cosine", ratio, torch.Generator().manual_seed(0))
    expect(isinstance(out, tuple) and len(out) == 2, "random_mask should return (inputs, mask)")
    inputs, mask = out
    expect_shape(inputs, (4, 16), "inputs")
    expect_tensor(mask, "mask", dtype=torch.bool, hint="mask is a bool tensor, True = hidden")
    expect_shape(mask, (4, 16), "mask")
    expected = torch.ceil(maskgit.gamma("cosine", ratio) * 16).long()  # (B,)
    hidden = mask.sum(dim=1)
    if torch.equal(hidden, torch.floor(maskgit.gamma("cosine", ratio) * 16).long()):
        raise CheckFailed(
            f"hidden per row {hidden.tolist()}, expected {expected.tolist()}",
            "round UP: hide ceil(gamma(r) N) tokens, so at least one is always hidden.",
        )
    expect_equal(hidden, expected, "the number hidden per row for r = [0, 0.3, 0.7, 1]",
                 hint="hide ceil(gamma(r) * N) tokens: gamma(r) is the fraction masked, "
                 "not r itself.")
    expect(bool((inputs[mask] == mask_id).all()),
           "some hidden positions do not hold mask_id in inputs",
           hint="the model must not see the answer: put mask_id at every hidden position.")
    expect_equal(inputs[~mask], tokens[~mask], "inputs at the visible positions",
                 hint="visible positions keep their true tokens.")
    expect_equal(tokens, torch.randint(0, K, (4, 16), generator=torch.Generator().manual_seed(6)),
                 "tokens after the call", hint="do not change tokens in place: use masked_fill.")

    # Which positions are hidden must be uniform: each is hidden about as often as any other.
    many = torch.zeros(2000, 16, dtype=torch.long)
    half = torch.full((2000,), 0.7, dtype=torch.float64)  # ceil(16 cos(0.35 pi)) = 8 of 16
    _, mask = fn(many, mask_id, "cosine", half, torch.Generator().manual_seed(1))
    freq = mask.double().mean(dim=0)  # (16,), about 0.5 each
    expect(bool(((freq - 0.5).abs() < 0.06).all()),
           f"hidden frequency per position {[round(f, 2) for f in freq.tolist()]}, "
           "expected about 0.5 each",
           hint="choose the hidden positions uniformly at random (e.g. the n smallest of "
           "torch.rand scores per row), not the first n.")

    # Drawing r itself: over many rows the mean hidden fraction is about 2/pi for cosine.
    many = torch.zeros(4000, 64, dtype=torch.long)
    _, mask = fn(many, mask_id, "cosine", None, torch.Generator().manual_seed(2))
    mean = float(mask.double().mean())
    target = _expected_mean_fraction(64)
    expect(abs(mean - target) < 0.015,
           f"mean hidden fraction {mean:.3f} with r ~ U(0, 1), expected {target:.3f} "
           f"(2/pi = {2 / math.pi:.3f} plus rounding up)",
           hint="draw one r ~ U(0, 1) per row with the generator, then hide "
           "ceil(gamma(r) N) positions.")
    again = fn(many, mask_id, "cosine", None, torch.Generator().manual_seed(2))[1]
    expect(torch.equal(mask, again), "two calls with the same seeded generator differ",
           hint="draw every random number from `generator`.")
    return "counts ceil(gamma(r) N), no answers shown, uniform positions, mean fraction ~2/pi"


# --------------------------------------------------------------------------- masked_loss


MASKED_LOSS_HINTS = (
    "the positions the model saw in its input carry no loss: only the hidden ones are "
    "predicted, and each hidden position counts once (the mean over them).",
    "the cross-entropy of logits[mask] (M, K) against targets[mask] (M,), averaged over the "
    "M hidden positions; label_smoothing as F.cross_entropy's.",
    "return F.cross_entropy(____, ____, label_smoothing=label_smoothing)\n"
    "# which rows of logits (B, N, K) and targets (B, N) take part? a bool index picks them",
)


@exercise("masked_loss", reference=maskgit.masked_loss, hints=MASKED_LOSS_HINTS)
def masked_loss(fn):
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(3, 10, 6, generator=g) * 2  # (B, N, K)
    targets = torch.randint(0, 6, (3, 10), generator=g)  # (B, N)
    mask = torch.rand(3, 10, generator=g) < 0.4  # (B, N)
    saved = (logits.clone(), targets.clone(), mask.clone())
    expected = F.cross_entropy(logits[mask], targets[mask])
    got = fn(logits, targets, mask)
    expect_shape(got, (), "the loss (a scalar)")
    flat = F.cross_entropy(logits.reshape(-1, 6), targets.reshape(-1))
    if torch.allclose(got.detach(), flat):
        raise CheckFailed(
            "the loss is the cross-entropy over every position",
            "only the masked positions carry a loss: the visible ones were in the input, "
            "so predicting them teaches nothing. Use logits[mask] and targets[mask].",
        )
    if torch.allclose(got.detach(), F.cross_entropy(logits[~mask], targets[~mask])):
        raise CheckFailed("the loss is over the VISIBLE positions",
                          "mask is True where the token was hidden: use logits[mask].")
    if torch.allclose(got.detach(), expected * mask.sum()):
        raise CheckFailed("the loss is a sum over the masked positions",
                          "average over the masked positions (F.cross_entropy's mean).")
    expect_close(got, expected, "the masked cross-entropy",
                 hint="F.cross_entropy(logits[mask], targets[mask]).")
    smooth = fn(logits, targets, mask, label_smoothing=0.2)
    expect_shape(smooth, (), "the loss with label_smoothing=0.2")
    if torch.allclose(smooth.detach(), expected):
        raise CheckFailed("label_smoothing=0.2 gave the loss without smoothing",
                          "pass label_smoothing on to F.cross_entropy (it spreads that share "
                          "of each target over all K codes).")
    expect_close(smooth, F.cross_entropy(logits[mask], targets[mask], label_smoothing=0.2),
                 "the masked cross-entropy with label_smoothing=0.2",
                 hint="label_smoothing as F.cross_entropy's: the target is (1 - e) one-hot + "
                 "e / K everywhere, K the number of codes.")
    expect(torch.equal(logits, saved[0]) and torch.equal(targets, saved[1])
           and torch.equal(mask, saved[2]), "masked_loss changed its inputs in place",
           hint="index with logits[mask]; do not write into the inputs.")
    return "cross-entropy averaged over the masked positions only, with label smoothing"


# --------------------------------------------------------------------------- sample_with_confidence

RAW_LOGITS = (
    "confidence is the PROBABILITY of the sampled token: softmax(logits) gathered at the "
    "sampled code, not the raw logit (logits of different positions are not comparable)."
)
RESAMPLED = (
    "a known token was resampled: only positions holding mask_id are sampled; every other "
    "position keeps its token (torch.where(unknown, sampled, tokens))."
)


SAMPLE_HINTS = (
    "a masked position gets a token drawn from the model's distribution there (a sample, not "
    "the most likely code); a known position keeps its token. The confidence of a sample is "
    "how likely the model found it, comparable across positions; known tokens must never be "
    "re-masked.",
    "sampled = a draw from softmax(logits) where tokens == mask_id, tokens elsewhere; "
    "confidence = softmax(logits) at the sampled code there, +inf where known.",
    "log_probs = ...                                  # (B, N, K)\n"
    "u = torch.rand(log_probs.shape, generator=generator, device=log_probs.device)\n"
    "draws = (log_probs + ____).argmax(-1)            # Gumbel-max: one draw per position\n"
    "unknown = tokens == mask_id\n"
    "sampled = ...                                    # draws where unknown, tokens elsewhere\n"
    "picked = ...                                     # the probability of each draw (gather)\n"
    "confidence = ...                                 # picked where unknown, +inf elsewhere\n"
    "return sampled, confidence",
)


@exercise("sample_with_confidence", reference=maskgit.sample_with_confidence, hints=SAMPLE_HINTS)
def sample_with_confidence(fn):
    g = torch.Generator().manual_seed(8)
    K, mask_id = 5, 17
    logits = torch.randn(4, 12, K, generator=g) * 2  # (B, N, K)
    tokens = torch.randint(0, K, (4, 12), generator=g)  # (B, N)
    unknown = torch.rand(4, 12, generator=g) < 0.5
    tokens = tokens.masked_fill(unknown, mask_id)
    out = fn(logits, tokens, mask_id, torch.Generator().manual_seed(0))
    expect(isinstance(out, tuple) and len(out) == 2,
           "sample_with_confidence should return (sampled, confidence)")
    sampled, confidence = out
    expect_shape(sampled, (4, 12), "sampled")
    expect_tensor(sampled, "sampled", dtype=torch.int64,
                  hint="sampled holds token ids, int64 like tokens: argmax and "
                  "torch.multinomial give int64; keep it (no .float()).")
    expect_shape(confidence, (4, 12), "confidence")
    expect_equal(sampled[~unknown], tokens[~unknown], "sampled at the known positions",
                 hint=RESAMPLED)
    codes = sampled[unknown]
    expect(bool(((codes >= 0) & (codes < K)).all()),
           "sampled holds ids outside the codebook at masked positions",
           hint="sample from the K code logits; never keep mask_id.")
    expect(bool(torch.isinf(confidence[~unknown]).all() and (confidence[~unknown] > 0).all()),
           "confidence at the known positions is not +inf",
           hint="give known tokens confidence +inf so they are never re-masked.")
    probs = torch.softmax(logits, dim=-1).gather(-1, sampled.clamp(0, K - 1)[..., None])[..., 0]
    raw = logits.gather(-1, sampled.clamp(0, K - 1)[..., None])[..., 0]
    conf = confidence[unknown].detach().float()
    if torch.allclose(conf, raw[unknown]):
        raise CheckFailed("confidence equals the raw logit of the sampled token", RAW_LOGITS)
    if torch.allclose(conf, probs[unknown].log()):
        raise CheckFailed("confidence is the log-probability",
                          "return the probability itself, softmax(logits)[sampled].")
    expect_close(conf, probs[unknown], "confidence at the masked positions", hint=RAW_LOGITS)
    again = fn(logits, tokens, mask_id, torch.Generator().manual_seed(0))[0]
    expect(torch.equal(sampled, again), "two calls with the same seeded generator sampled "
           "different tokens", hint="draw every random number from `generator`.")

    # The samples follow softmax(logits): not the argmax, not uniform.
    p = torch.tensor([0.1, 0.2, 0.3, 0.4])
    many = torch.full((1, 4000), mask_id)
    logits = p.log().expand(1, 4000, 4).clone()
    drawn, _ = fn(logits, many, mask_id, torch.Generator().manual_seed(1))
    freq = torch.bincount(drawn[0].clamp(0, 3), minlength=4).double() / 4000
    expect(bool(((freq - p.double()).abs() < 0.03).all()),
           f"over 4000 draws with probabilities {p.tolist()} the codes came out "
           f"{[round(f, 3) for f in freq.tolist()]}",
           hint="SAMPLE each masked position from softmax(logits) (torch.multinomial or "
           "Gumbel-max), not argmax.")
    return "known tokens kept, confidence = softmax probability (+inf where known), sampling"


# --------------------------------------------------------------------------- remask_lowest

MOST_CONFIDENT = (
    "the MOST confident tokens were re-masked: keep the confident ones and mask again the "
    "n_mask LOWEST scores (sort ascending, or topk(..., largest=False))."
)


REMASK_HINTS = (
    "keep the samples the model was surest of and hide the rest again; a little noise on "
    "the scores lets a less likely token survive now and then (more varied samples). Known "
    "tokens (+inf) must never be chosen.",
    "score = log(confidence) + temperature * Gumbel, Gumbel = -log(-log(U)) from the "
    "generator; True at the n_mask[b] LOWEST scores of row b.",
    "score = ...                              # log of the confidence, (B, N); known stay +inf\n"
    "if temperature > 0:\n"
    "    u = torch.rand(score.shape, generator=generator, device=score.device)\n"
    "    score = score + temperature * ____   # Gumbel noise from u\n"
    "rank = ...                               # each position's rank in its row, lowest = 0\n"
    "return ...                               # True at the n_mask[b] lowest of row b",
)


@exercise("remask_lowest", reference=maskgit.remask_lowest, hints=REMASK_HINTS)
def remask_lowest(fn):
    inf = math.inf
    confidence = torch.tensor([
        [0.9, 0.2, inf, 0.5, 0.05, inf, 0.7, 0.3],
        [inf, 0.6, 0.1, 0.8, inf, 0.4, 0.95, 0.15],
        [0.3, inf, inf, 0.2, 0.9, 0.6, inf, 0.1],
    ])
    n_mask = torch.tensor([3, 2, 0])
    saved = confidence.clone()
    got = fn(confidence, n_mask, 0.0, torch.Generator().manual_seed(0))
    expect(torch.equal(confidence, saved), "remask_lowest changed confidence in place",
           hint="build the score as a new tensor (torch.log(confidence) + ...).")
    expect_tensor(got, "the re-mask", dtype=torch.bool, hint="return a bool tensor, True = mask")
    expect_shape(got, (3, 8), "the re-mask")
    expected = maskgit.remask_lowest(confidence, n_mask, 0.0)
    finite = torch.isfinite(confidence)
    most = confidence.masked_fill(~finite, -inf).argsort(dim=1, descending=True).argsort(dim=1)
    if torch.equal(got, most < n_mask[:, None]):
        raise CheckFailed("the most confident positions were chosen", MOST_CONFIDENT)
    expect_equal(got.sum(dim=1), n_mask, "the number re-masked per row (n_mask = [3, 2, 0])",
                 hint="re-mask exactly n_mask[b] positions in row b.")
    expect(not bool((got & ~finite).any()), "a known token (+inf confidence) was re-masked",
           hint="known tokens have confidence +inf: they are never among the lowest.")
    expect_equal(got, expected, "the re-mask at temperature 0",
                 hint="with temperature 0 re-mask exactly the n_mask lowest confidences.")

    # With noise: still exactly n_mask per row, still never a known token.
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        noisy = fn(confidence, n_mask, 4.5, g)
        expect_equal(noisy.sum(dim=1), n_mask, "the number re-masked per row at temperature 4.5")
        expect(not bool((noisy & ~finite).any()),
               "a known token (+inf confidence) was re-masked at temperature 4.5",
               hint="add the noise to log(confidence): +inf stays +inf.")
    first = fn(confidence, n_mask, 4.5, torch.Generator().manual_seed(3))
    again = fn(confidence, n_mask, 4.5, torch.Generator().manual_seed(3))
    expect(torch.equal(first, again), "two calls with the same seeded generator re-masked "
           "different positions at temperature 4.5",
           hint="draw the Gumbel noise from `generator`.")

    # The noise goes on log(confidence): P(lower of 1e-4 and 2e-4 is chosen) = 2/3 at T = 1.
    pair = torch.tensor([[1e-4, 2e-4]]).expand(4000, 2).contiguous()
    chosen = fn(pair, torch.ones(4000, dtype=torch.long), 1.0, torch.Generator().manual_seed(2))
    share = float(chosen[:, 0].double().mean())
    expect(abs(share - 2 / 3) < 0.04,
           f"with confidences 1e-4 and 2e-4 at temperature 1 the lower one was re-masked "
           f"{share:.2f} of the time, expected 2/3",
           hint="score = log(confidence) + temperature * Gumbel noise, Gumbel = -log(-log(U)); "
           "re-mask the n_mask lowest scores.")
    return "the lowest at temperature 0, exact counts, known tokens never, Gumbel on log-confidence"


# --------------------------------------------------------------------------- decode_loop

FROM_GRID_SIZE = (
    "the schedule counted from the grid size N: when inpainting only N0 tokens are masked "
    "at the start, and floor(N0 * gamma((t + 1) / T)) must follow N0 = (tokens == "
    "mask_id).sum(1), counted once before the loop."
)
SAME_DRAWS = (
    "each step: sample_with_confidence(logits / temperature, tokens, mask_id, generator), "
    "then mask_len(N0, n_unknown, t, steps, schedule), then remask_lowest(confidence, n_mask, "
    "choice temperature, generator), then tokens = sampled with mask_id at the re-masked "
    "positions: the same generator, in this order, gives minitok's tokens for the same seed."
)
GUIDANCE_DIRECTION = (
    "guidance points the wrong way: logits = u + s (c - u) with c the logits for the real "
    "labels and u those for the null class (cfg_logits(cond, uncond, s)); with [cond; null] "
    "as the doubled batch, .chunk(2) gives (cond, uncond) in that order."
)
DECODE_LOOP_HINTS = (
    "start from the tokens given (mask_id where to generate) and count N0, the number masked "
    "at the start, once. Each step: one forward pass over the whole grid, a sample and its "
    "confidence for every masked position, then keep the confident samples and re-mask the "
    "least confident, so that the schedule's count stays masked; the last step keeps all.",
    "at step t: logits (B, N, K) from the model (with guidance, u + s (c - u) from one "
    "doubled batch [cond; null]), divided by temperature; n_mask = mask_len(N0, n_unknown, "
    "t, steps, schedule); the choice temperature is choice_temperature * (1 - (t + 1) / "
    "steps), 0 at the last step. Record (tokens, sampled) in trace after each step.",
    "n_initial = ...                                   # (B,) masked at the start, counted once\n"
    "for t in range(steps):\n"
    "    logits = ...                                  # model(tokens, labels); guided: one\n"
    "                                                  # doubled batch, then u + s (c - u)\n"
    "    sampled, confidence = sample_with_confidence(____, tokens, mask_id, generator)\n"
    "    n_mask = mask_len(n_initial, ____, t, steps, schedule)\n"
    "    choice = ...                                  # choice_temperature, annealed to 0\n"
    "    remask = remask_lowest(...)\n"
    "    tokens = ...                                  # the samples, re-masked where remask\n"
    "    if trace is not None:\n"
    "        trace.append(...)\n"
    "return tokens",
)


class _SpyModel:
    """A fake MaskGIT: fixed logits per position (one set for the real labels, one for the
    null class), and a record of every input it is shown (the first B rows of each pass)."""

    def __init__(self, cond: torch.Tensor, mask_id: int, uncond: torch.Tensor | None = None):
        self.cond = cond  # (B, N, K)
        self.uncond = cond if uncond is None else uncond  # (B, N, K)
        self.mask_id = mask_id
        self.num_codes = cond.shape[-1]
        self.null_class = 10
        self.inputs: list[torch.Tensor] = []
        self.batch_sizes: list[int] = []

    def __call__(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        B = self.cond.shape[0]
        self.inputs.append(tokens[:B].clone())
        self.batch_sizes.append(tokens.shape[0])
        rows = torch.arange(tokens.shape[0]) % B
        null = (labels == self.null_class)[:, None, None]  # (rows, 1, 1)
        return torch.where(null, self.uncond[rows], self.cond[rows]).clone()


def _peaked_logits(B: int, N: int, K: int, seed: int) -> torch.Tensor:
    """Each position prefers one code with probability 0.9996 to 0.999998: all but certain.

    The peak heights are 9 .. 14, a different one for every position of a row, so that the
    probabilities of the preferred codes are distinct even in float32.
    """
    g = torch.Generator().manual_seed(seed)
    best = torch.randint(0, K, (B, N), generator=g)
    order = torch.stack([torch.randperm(N, generator=g) for _ in range(B)])  # (B, N)
    height = 9 + 5 * order.float() / N  # (B, N) distinct peak heights
    return F.one_hot(best, K).float() * height[..., None]  # (B, N, K)


def _run_loop(fn, tokens, steps, choice_temperature, seed, K=4, **options):
    B, N = tokens.shape
    model = _SpyModel(_peaked_logits(B, N, K, seed), mask_id=K + 11)
    tokens = tokens.masked_fill(tokens < 0, model.mask_id)  # -1 marks "to generate"
    labels = torch.arange(B) % 10
    given = tokens.clone()
    final = fn(model, labels, tokens, steps, choice_temperature,
               torch.Generator().manual_seed(seed), **options)
    expect(torch.equal(tokens, given), "the loop changed the tokens it was given in place",
           hint="build new tensors each step (masked_fill, torch.where), not in-place writes.")
    return model, tokens, final


SCHEDULE_COUNTS = ("after step t keep floor(N0 * gamma((t + 1) / T)) masked (mask_len), "
                   "nothing after the last step.")
COUNT_MISTAKES = {
    "grid": FROM_GRID_SIZE,
    "current": "N0 is the number masked at the start, counted once before the loop: "
    "recounted every step, the plan floor(N0 * gamma((t + 1) / T)) shrinks too fast.",
    "no_recount": "count the tokens still masked again at every step, n_unknown = (tokens == "
    "mask_id).sum(1), and pass it to mask_len: it caps each step so that at least one token "
    "is revealed.",
    "cosine": "the schedule is an argument: pass `schedule` on to mask_len.",
}


def _masked_counts(n0: int, N: int, steps: int, schedule: str, mistake: str) -> list[int]:
    """The number masked the model sees at each step with one counting `mistake`: N0 taken
    from the grid size N, recounted every step, the unknown tokens never recounted, or the
    schedule left at cosine."""
    counts = [n0]
    for t in range(steps - 1):
        initial = {"grid": N, "current": counts[-1]}.get(mistake, n0)
        unknown = n0 if mistake == "no_recount" else counts[-1]
        n_mask = maskgit.mask_len(torch.tensor([initial]), torch.tensor([unknown]), t, steps,
                                  "cosine" if mistake == "cosine" else schedule)
        counts.append(int(n_mask))
    return counts


def _judge_loop(model, start, final, steps, what, schedule="cosine"):
    mask_id = model.mask_id
    K = model.num_codes
    expect_shape(final, tuple(start.shape), f"{what}: the output")
    expect_tensor(final, f"{what}: the output", dtype=start.dtype,
                  hint="the output holds token ids, in the dtype of `tokens` (int64).")
    expect(len(model.inputs) == steps,
           f"{what}: the model was called {len(model.inputs)} times for {steps} steps",
           hint="one forward pass per step, on the whole grid at once.")
    n0 = (start == mask_id).sum(dim=1)  # (B,)
    N = start.shape[1]
    for b in range(start.shape[0]):
        expected = [int(n0[b])] + maskgit.mask_counts(int(n0[b]), steps, schedule)[:-1]
        got = [int((x[b] == mask_id).sum()) for x in model.inputs]
        if got != expected:
            hint = SCHEDULE_COUNTS
            for mistake, text in COUNT_MISTAKES.items():
                if got != expected and got == _masked_counts(int(n0[b]), N, steps, schedule,
                                                             mistake):
                    hint = text
            raise CheckFailed(
                f"{what}, row {b}: masked tokens the model saw at each step {got}, "
                f"the {schedule} schedule gives {expected}", hint)
    expect(not bool((final == mask_id).any()), f"{what}: the output still holds mask ids",
           hint="at the last step nothing stays masked: its samples are the output.")
    expect(bool(((final >= 0) & (final < K)).all()), f"{what}: the output holds non-codes")
    seen = model.inputs + [final]
    for t in range(len(seen) - 1):
        known = seen[t] != mask_id
        expect(torch.equal(seen[t + 1][known], seen[t][known]),
               f"{what}: a token known before step {t} changed at step {t}",
               hint="tokens given at the start and tokens revealed at an earlier step never "
               "change: sample only where the input holds mask_id.")


def _variant_loop(model, labels, tokens, steps, choice_temperature, generator, schedule,
                  cfg_scale, temperature, choice="annealed", guidance="right", draw="sample"):
    """minitok's loop with one classic mistake switched on, to name a learner's mistake."""
    mask_id = model.mask_id
    n_initial = (tokens == mask_id).sum(dim=1)
    for t in range(steps):
        if cfg_scale == 1.0:
            logits = model(tokens, labels)
        else:
            null = torch.full_like(labels, model.null_class)
            cond, uncond = model(torch.cat([tokens, tokens]), torch.cat([labels, null])).chunk(2)
            if guidance == "reversed":
                cond, uncond = uncond, cond
            logits = uncond + cfg_scale * (cond - uncond)
        if draw == "sample":
            sampled, confidence = maskgit.sample_with_confidence(logits / temperature, tokens,
                                                                 mask_id, generator)
        else:  # the most likely code, and its probability
            unknown = tokens == mask_id
            probs = torch.softmax(logits / temperature, dim=-1)  # (B, N, K)
            best, sampled = probs.max(dim=-1)
            sampled = torch.where(unknown, sampled, tokens)
            confidence = torch.where(unknown, best, torch.full_like(best, math.inf))
        n_mask = maskgit.mask_len(n_initial, (tokens == mask_id).sum(dim=1), t, steps, schedule)
        share = {"annealed": 1 - (t + 1) / steps, "t/T": 1 - t / steps, "constant": 1.0}[choice]
        remask = maskgit.remask_lowest(confidence, n_mask, choice_temperature * share, generator)
        tokens = sampled.masked_fill(remask, mask_id)
    return tokens


def _random_logits(B: int, N: int, K: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    return torch.randn(B, N, K, generator=torch.Generator().manual_seed(seed)) * scale


def _compare_with_minitok(fn, cond, uncond, start, labels, steps, choice_temperature, schedule,
                          cfg_scale, temperature, seed, what):
    """The learner's loop and minitok's on the same fake model, start and seed."""
    mask_id = 15

    def run(loop, tau=temperature, **variant):
        model = _SpyModel(cond, mask_id, uncond)
        trace: list = []
        args = (model, labels, start.clone(), steps, choice_temperature,
                torch.Generator().manual_seed(seed), schedule, cfg_scale, tau)
        out = loop(*args, **variant) if variant else loop(*args, trace)
        return out, trace, model

    expected, expected_trace, _ = run(maskgit.decode_loop)
    got, trace, model = run(fn)
    expect_shape(got, tuple(start.shape), f"{what}: the output")
    again, _, _ = run(fn)
    expect(torch.equal(got, again), f"{what}: two runs with the same seeded generator differ",
           hint="draw every random number from `generator`: pass it to sample_with_confidence "
           "and to remask_lowest.")
    guided = cfg_scale != 1.0
    expect(len(model.batch_sizes) == steps,
           f"{what}: the model was called {len(model.batch_sizes)} times for {steps} steps",
           hint="one forward pass per step; with guidance, [tokens; tokens] with [labels; "
           "null] as ONE doubled batch." if guided else "one forward pass per step.")
    B = start.shape[0]
    expect(all(size == (2 * B if guided else B) for size in model.batch_sizes),
           f"{what}: batch sizes seen by the model {model.batch_sizes} for B = {B}",
           hint="with guidance (cfg_scale != 1) one doubled batch [cond; null] per step; at "
           "cfg_scale = 1 the plain batch (u + 1 (c - u) = c: the null half is wasted work).")
    if not torch.equal(got, expected):
        hint = SAME_DRAWS
        variants = {"t/T": "the choice temperature lags one step: anneal with (t + 1) / T, "
                    "so that it is 0 at the last step, not t / T.",
                    "constant": "the choice temperature must anneal: choice_temperature * "
                    "(1 - (t + 1) / steps) at step t, not a constant."}
        for choice, text in variants.items():
            if torch.equal(got, run(_variant_loop, choice=choice)[0]):
                hint = text
        if torch.equal(got, run(_variant_loop, draw="argmax")[0]):
            hint = ("the tokens are the argmax: SAMPLE every masked position from "
                    "softmax(logits) (sample_with_confidence), or every run gives the same "
                    "digit.")
        if guided and torch.equal(got, run(_variant_loop, guidance="reversed")[0]):
            hint = GUIDANCE_DIRECTION
        if temperature != 1.0:
            for tau, text in ((1.0, "the temperature was ignored"),
                              (1 / temperature, "the logits were multiplied by the temperature")):
                if torch.equal(got, run(maskgit.decode_loop, tau)[0]):
                    hint = f"{text}: divide the logits by `temperature` before sampling."
        expect_equal(got, expected, f"{what}: the tokens, against minitok's loop on the same "
                     "seed", hint=hint)
    expect(len(trace) == steps, f"{what}: trace holds {len(trace)} entries for {steps} steps",
           hint="if trace is a list, append (tokens, sampled) once after every step.")
    for t, ((tokens_t, sampled_t), (exp_tokens, exp_sampled)) in enumerate(
            zip(trace, expected_trace, strict=True)):
        expect_equal(tokens_t, exp_tokens, f"{what}: trace[{t}][0], the grid after step {t}",
                     hint="trace[t] = (the grid after step t with mask_id where still masked, "
                     "what was sampled at step t everywhere).")
        expect_equal(sampled_t, exp_sampled, f"{what}: trace[{t}][1], the samples of step {t}",
                     hint="trace[t][1] is `sampled` of step t (every position).")


@exercise("decode_loop", reference=maskgit.decode_loop, hints=DECODE_LOOP_HINTS)
def decode_loop(fn):
    B, N = 3, 16
    # Generation from scratch, no choice noise: the confident tokens are revealed first.
    model, start, final = _run_loop(fn, torch.full((B, N), -1), 4, 0.0, seed=0)
    expect(len(model.inputs) == 4,
           f"the model was called {len(model.inputs)} times for 4 steps",
           hint="one forward pass per step, on the whole grid at once.")
    after_first = model.inputs[1] != model.mask_id  # (B, N) revealed by step 0
    height = model.cond.amax(dim=-1)  # (B, N): a higher peak is a more confident sample
    for b in range(B):
        n = int(after_first[b].sum())
        top = height[b].argsort(descending=True)[:n]
        expect(bool(after_first[b, top].all()),
               f"row {b}: step 0 kept {after_first[b].nonzero().flatten().tolist()}, but the "
               f"most confident positions are {sorted(top.tolist())}",
               hint="keep the confident tokens; re-mask the least confident ones.")
    _judge_loop(model, start, final, 4, "generating 16 tokens in 4 steps")

    # Inpainting: some tokens given, the schedule follows the number masked at the start.
    g = torch.Generator().manual_seed(3)
    grid = torch.randint(0, 4, (B, N), generator=g)
    holes = torch.zeros(B, N, dtype=torch.bool)
    holes[0, :5] = True  # 5 of 16 to fill
    holes[1, 4:13] = True  # 9 of 16
    holes[2] = True  # everything
    start = grid.masked_fill(holes, -1)
    model, start, final = _run_loop(fn, start, 6, 4.5, seed=4)
    _judge_loop(model, start, final, 6, "inpainting with 5, 9 and 16 of 16 masked in 6 steps")
    expect_equal(final[~holes], grid[~holes], "the given tokens in the output",
                 hint="tokens given at the start are never resampled.")

    # The schedule by name.
    model, start, final = _run_loop(fn, torch.full((B, N), -1), 5, 4.5, seed=5,
                                    schedule="linear")
    _judge_loop(model, start, final, 5, "16 tokens in 5 steps, linear schedule", "linear")

    # Token for token against minitok's loop: same fake model, same start, same seed.
    # A choice temperature of 1 keeps the noise comparable with log(confidence), so that
    # its annealing shows; 40 positions, so that a wrong one shows in the tokens.
    K, N = 5, 40
    cond = _random_logits(B, N, K, seed=6)
    uncond = _random_logits(B, N, K, seed=7)
    labels = torch.tensor([3, 0, 7])
    start = torch.randint(0, K, (B, N), generator=torch.Generator().manual_seed(8))
    start[:, ::2] = 15  # half the grid to generate, 15 = the fake model's mask_id
    start[2] = 15
    _compare_with_minitok(fn, cond, uncond, start, labels, 6, 1.0, "cosine", 1.0, 1.0, 9,
                          "no guidance, choice temperature 1")
    _compare_with_minitok(fn, cond, uncond, start, labels, 5, 3.0, "square", 1.0, 0.5, 10,
                          "temperature 0.5, square schedule")
    _compare_with_minitok(fn, cond, uncond, start, labels, 6, 4.5, "cosine", 3.0, 1.0, 11,
                          "guidance cfg_scale 3")
    return ("one pass per step, the schedule from N0 and by name, known tokens fixed, "
            "confident ones first, minitok's tokens and trace for the same seed, with "
            "temperature and guidance")


def hint(name: str, level: int | None = None) -> None:
    """The next hint for exercise `name` (1 the idea, 2 the formula, 3 near-code)."""
    show_hint(__name__, name, level)
