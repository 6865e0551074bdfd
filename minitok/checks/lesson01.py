"""Checks for Lesson 01: distances, nearest codes, feature maps, usage, one k-means step.

Each check starts with small cases built so that a classic mistake gives a recognisable wrong
answer, and names that mistake in its hint: the cross term's sign, argmin over the wrong
axis, a (B, C, H, W) map flattened without its permute (or its tokens reshaped back in the
wrong order), distances computed in bf16 under autocast, 0 log 0, an empty cluster's 0 / 0.
Inputs come from the checks' own torch.Generator, never from the global RNG.
"""

from __future__ import annotations

import math

import torch

from minitok import quantize
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

# --------------------------------------------------------------------------- shared helpers

PRECISION_HINT = (
    "the distances lost precision: under autocast (or with bf16/fp16 inputs) the matrix "
    "product ran in 16 bits. Compute them inside torch.autocast(device_type=z.device.type, "
    "enabled=False) after z.float() and codebook.float(), and return float32."
)


def _matches(got, value: torch.Tensor, exact: bool) -> bool:
    """True if `got` is a tensor of value's shape holding value (exactly, or to 1e-4)."""
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(value.shape):
        return False
    got, value = got.detach().cpu(), value.cpu()
    if exact:
        return torch.equal(got.long(), value.long())
    return bool(torch.allclose(got.double(), value.double(), rtol=1e-4, atol=1e-4))


def _known_mistake(got, wrong: list[tuple[str, torch.Tensor]], exact: bool) -> str | None:
    """The hint of the first known wrong answer that `got` equals, if any."""
    for hint, value in wrong:
        if _matches(got, value, exact):
            return hint
    return None


def precision_trap(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Vectors whose nearest code is certain in float32 but not in bf16: (z, codebook, answer).

    16 distinct codes on an integer lattice, shifted by +16 in every coordinate, and 64
    vectors that are copies of known codes moved by at most 0.125 per coordinate. The true
    nearest code wins by a squared-distance margin of at least 0.6, while ||z||^2, z.e and
    ||e||^2 are each about 2,400: float32 resolves them to 0.0002, bf16 only to 16, so the
    expansion in bf16 picks wrong codes. Every value is exact in bf16 (multiples of 1/8 near
    16), so bf16 *inputs* are no excuse: only 16-bit arithmetic is wrong.
    """
    codes = torch.zeros(0, 8)
    while codes.shape[0] < 16:  # draw until 16 distinct lattice points
        draw = torch.randint(0, 4, (32, 8), generator=generator).float()
        codes = torch.unique(torch.cat([codes, draw]), dim=0)
    codes = codes[torch.randperm(codes.shape[0], generator=generator)[:16]]  # (16, 8)
    answer = torch.randint(0, 16, (64,), generator=generator)  # (64,)
    nudge = torch.randint(-1, 2, (64, 8), generator=generator).float() * 0.125  # (64, 8)
    return codes[answer] + nudge + 16.0, codes + 16.0, answer


# --------------------------------------------------------------------------- squared_distances

SIGN_HINT = "the cross term has a minus sign: ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2."
TWO_HINT = "the cross term is 2 z.e (twice the dot product): ||z||^2 - 2 z.e + ||e||^2."
SQRT_HINT = "return the squared distances: no square root (argmin does not need it)."
NO_ZSQ_HINT = (
    "||z||^2 is missing: the argmin would not change, but this function returns the "
    "distances themselves."
)
TRANSPOSE_HINT = "rows are the N vectors and columns the K codes: (N, K), i.e. z @ codebook.T."


@exercise("squared_distances", reference=quantize.squared_distances)
def squared_distances(fn):
    g = torch.Generator().manual_seed(101)
    ref = quantize.squared_distances

    # 1. a case small enough to check by hand: 3 vectors, 2 codes, in 2-D
    z = torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, -1.0]])
    codebook = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z_sq, e_sq = (z * z).sum(1, keepdim=True), (codebook * codebook).sum(1)
    cross = z @ codebook.t()
    wrong = [
        (SIGN_HINT, z_sq + 2 * cross + e_sq),
        (TWO_HINT, z_sq - cross + e_sq),
        (SQRT_HINT, (z_sq - 2 * cross + e_sq).sqrt()),
        (NO_ZSQ_HINT, e_sq - 2 * cross + 0 * z_sq),
        (TRANSPOSE_HINT, (z_sq - 2 * cross + e_sq).t()),
    ]
    expected = torch.tensor([[1.0, 4.0], [4.0, 1.0], [5.0, 18.0]])
    got = fn(z, codebook)
    expect_tensor(got, "squared_distances(z, codebook)")
    if not _matches(got, expected, exact=False):
        expect_close(got, expected, "squared_distances of z (3, 2) to codebook (2, 2)",
                     hint=_known_mistake(got, wrong, exact=False) or SIGN_HINT)

    # 2. random vectors, N != K != D
    z = torch.randn(50, 6, generator=g)
    codebook = torch.randn(13, 6, generator=g)
    got = fn(z, codebook)
    expect_shape(got, (50, 13), "squared_distances of z (50, 6) to codebook (13, 6)",
                 hint=TRANSPOSE_HINT)
    expect_close(got, ref(z, codebook), "squared_distances (50, 13)", atol=1e-4, rtol=1e-5)

    # 3. under bf16 autocast the distances must stay float32-accurate
    z, codebook, _ = precision_trap(g)
    expected = ref(z, codebook)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = fn(z, codebook)
    expect_tensor(got, "squared_distances under bf16 autocast", dtype=torch.float32,
                  hint=PRECISION_HINT)
    expect_close(got, expected, "squared_distances under bf16 autocast", atol=1e-3, rtol=0,
                 hint=PRECISION_HINT)

    # 4. bf16 inputs (exact values) must give the same float32 distances
    got = fn(z.bfloat16(), codebook.bfloat16())
    expect_tensor(got, "squared_distances of bf16 z and codebook", dtype=torch.float32,
                  hint=PRECISION_HINT)
    expect_close(got, expected, "squared_distances of bf16 z and codebook", atol=1e-3, rtol=0,
                 hint=PRECISION_HINT)
    return "a hand-checked case, random (50, 13), bf16 autocast, bf16 inputs"


# --------------------------------------------------------------------------- nearest_code

AXIS_HINT = (
    "take argmin over dim=1, the K codes of each vector: argmin over dim=0 finds, for each "
    "code, its nearest vector."
)
ARGMAX_HINT = (
    "the nearest code has the smallest distance: argmin, not argmax (or check the sign of "
    "the cross term in squared_distances)."
)
LEADING_HINT = (
    "z can have any leading shape (..., D): flatten it with z.reshape(-1, D) and reshape "
    "the indices back to z.shape[:-1]."
)
CHUNK_HINT = (
    "with chunk_size the answer must not change: process rows start:start+chunk_size for "
    "start in range(0, N, chunk_size), including the last, shorter chunk."
)


@exercise("nearest_code", reference=quantize.nearest_code)
def nearest_code(fn):
    g = torch.Generator().manual_seed(102)
    ref = quantize.nearest_code

    # 1. N = 7 vectors, K = 4 codes: the answer has one index per vector
    z = torch.randn(7, 3, generator=g)
    codebook = torch.randn(4, 3, generator=g)
    distances = quantize.squared_distances(z, codebook)  # (7, 4)
    got = fn(z, codebook)
    expect_tensor(got, "nearest_code(z, codebook)", dtype=torch.int64,
                  hint="return the indices from argmin (int64), not the distances or codes.")
    expect_shape(got, (7,), "nearest_code of z (7, 3) with K = 4 codes",
                 hint=AXIS_HINT if tuple(got.shape) == (4,) else LEADING_HINT)
    wrong = [(ARGMAX_HINT, distances.argmax(dim=1))]
    expect_equal(got, ref(z, codebook), "indices of z (7, 3)",
                 hint=_known_mistake(got, wrong, exact=True) or ARGMAX_HINT)

    # 2. as many vectors as codes, so argmin over the wrong axis has the right shape
    z = torch.randn(6, 3, generator=g)
    codebook = torch.randn(6, 3, generator=g)
    distances = quantize.squared_distances(z, codebook)  # (6, 6)
    got = fn(z, codebook)
    wrong = [(AXIS_HINT, distances.argmin(dim=0)), (ARGMAX_HINT, distances.argmax(dim=1))]
    expect_equal(got, ref(z, codebook), "indices of z (6, 3) with K = 6",
                 hint=_known_mistake(got, wrong, exact=True) or AXIS_HINT)

    # 3. leading dimensions are kept: (2, 3, 5, D) -> (2, 3, 5)
    z = torch.randn(2, 3, 5, 4, generator=g)
    codebook = torch.randn(9, 4, generator=g)
    got = fn(z, codebook)
    expect_shape(got, (2, 3, 5), "nearest_code of z (2, 3, 5, 4)", hint=LEADING_HINT)
    expect_equal(got, ref(z, codebook), "indices of z (2, 3, 5, 4)", hint=LEADING_HINT)

    # 4. chunks: the same answer for every chunk size, also when it does not divide N
    z = torch.randn(10, 4, generator=g)
    expected = ref(z, codebook)
    for chunk_size in (1, 3, 10, 64):
        got = fn(z, codebook, chunk_size=chunk_size)
        expect_equal(got, expected, f"indices with chunk_size={chunk_size} (N = 10)",
                     hint=CHUNK_HINT)

    # 5. under bf16 autocast the codes must be float32's
    z, codebook, answer = precision_trap(g)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = fn(z, codebook)
    expect_equal(got, answer, "indices under bf16 autocast", hint=PRECISION_HINT)
    return "N != K, N == K, leading dims, chunk sizes 1/3/10/64, bf16 autocast"


# --------------------------------------------------------------------------- quantize_feature_map

PERMUTE_HINT = (
    "a (B, C, H, W) map holds one C-vector per position (b, h, w): flatten it with "
    "z.permute(0, 2, 3, 1).reshape(-1, C). z.reshape(-1, C) mixes channels of different "
    "positions."
)
HW_HINT = (
    "the tokens come back as (B, H, W): permute(0, 2, 3, 1) puts H before W, and the indices "
    "reshape to (B, H, W) in that same order."
)
BACK_HINT = (
    "codebook[indices] is (B, H, W, C): permute(0, 3, 1, 2) it back to (B, C, H, W); "
    "reshaping it to (B, C, H, W) scrambles channels and positions."
)
ORDER_HINT = "return (quantized, indices): the (B, C, H, W) map first, then the (B, H, W) tokens."


@exercise("quantize_feature_map", reference=quantize.quantize)
def quantize_feature_map(fn):
    g = torch.Generator().manual_seed(103)
    b, c, h, w = 2, 3, 4, 5  # all different, so no wrong reshape has the right shape by luck
    z = torch.randn(b, c, h, w, generator=g)
    codebook = torch.randn(12, c, generator=g)
    expected_q, expected_idx = quantize.quantize(z, codebook)

    out = fn(z, codebook)
    expect(isinstance(out, tuple) and len(out) == 2,
           f"quantize_feature_map should return a pair (quantized, indices), got {type(out).__name__}",
           hint=ORDER_HINT)
    quantized, indices = out
    if isinstance(quantized, torch.Tensor) and tuple(quantized.shape) == (b, h, w):
        raise CheckFailed("quantized has the tokens' shape (B, H, W)", ORDER_HINT)

    # the tokens first: the classic flattening mistakes give these instead
    wrong = [
        (PERMUTE_HINT, quantize.nearest_code(z.reshape(-1, c), codebook).reshape(b, h, w)),
        (HW_HINT, quantize.nearest_code(z.permute(0, 3, 2, 1), codebook).reshape(b, h, w)),
    ]
    expect_tensor(indices, "indices", hint=ORDER_HINT)
    expect_shape(indices, (b, h, w), "indices of a (2, 3, 4, 5) map", hint=HW_HINT)
    expect_equal(indices, expected_idx, "indices (B, H, W)",
                 hint=_known_mistake(indices, wrong, exact=True) or PERMUTE_HINT)

    # then the quantized map, back in (B, C, H, W)
    looked_up = codebook[expected_idx]  # (B, H, W, C)
    wrong = [(BACK_HINT, looked_up.reshape(b, c, h, w))]
    expect_shape(quantized, (b, c, h, w), "quantized map", hint=BACK_HINT)
    expect_close(quantized, expected_q, "quantized map (B, C, H, W)", atol=1e-6, rtol=0,
                 hint=_known_mistake(quantized, wrong, exact=False) or BACK_HINT)
    return "a (2, 3, 4, 5) map: token order and the quantized map's layout"


# --------------------------------------------------------------------------- usage

ZERO_LOG_HINT = (
    "codes never used have p = 0, and 0 log 0 counts as 0: keep only p > 0 before "
    "p * log(p) (log(0) is -inf and 0 * -inf is NaN)."
)
NORMALISE_HINT = "p_k = count_k / (number of indices), so that the p_k sum to 1; not / K."
EXP_HINT = "perplexity is exp(entropy), not the entropy itself."
BASE_HINT = "use one base for log and exp: exp(-sum p ln p) (or 2 ** (-sum p log2 p))."
FLATTEN_HINT = "indices may have any shape, e.g. a (B, H, W) grid: count over all of them."


def _number(got, what: str, hint: str | None = None) -> float:
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    expect(isinstance(got, (int, float)), f"{what} should be a number, got {type(got).__name__}",
           hint=hint or "return a Python float (e.g. with .item()).")
    return float(got)


def _expect_number(got, expected: float, what: str, wrong: list[tuple[str, float]],
                   hint: str) -> None:
    value = _number(got, what)
    if math.isclose(value, expected, rel_tol=1e-6, abs_tol=1e-9):
        return
    if math.isnan(value):
        raise CheckFailed(f"{what} is NaN, expected {expected:.6g}", ZERO_LOG_HINT)
    for mistake, candidate in wrong:
        if math.isclose(value, candidate, rel_tol=1e-6, abs_tol=1e-9):
            hint = mistake
            break
    raise CheckFailed(f"{what} should be {expected:.6g}, got {value:.6g}", hint)


@exercise("codebook_usage", reference=quantize.codebook_usage)
def codebook_usage(fn):
    # 5 indices, K = 10: codes 0, 1 and 3 are used, so usage is 3 / 10
    indices = torch.tensor([0, 0, 0, 1, 3])
    wrong = [
        ("usage counts distinct codes (e.g. torch.unique), not every index.", 5 / 10),
        ("divide by the number of codes K, not by the number of indices.", 3 / 5),
    ]
    _expect_number(fn(indices, 10), 3 / 10, "codebook_usage([0, 0, 0, 1, 3], 10)", wrong,
                   hint="usage = (number of distinct codes used) / K.")
    # a (B, H, W) grid of tokens, K = 8: 3 distinct codes among 8 indices
    grid = torch.tensor([[[1, 1], [2, 7]], [[7, 7], [1, 2]]])
    _expect_number(fn(grid, 8), 3 / 8, "codebook_usage of a (2, 2, 2) grid, K = 8", [],
                   hint=FLATTEN_HINT)
    return "5 indices with K = 10, a (2, 2, 2) grid with K = 8"


@exercise("perplexity", reference=quantize.perplexity)
def perplexity(fn):
    # 1. indices 0, 0, 1, 2 with K = 5: p = (1/2, 1/4, 1/4, 0, 0), entropy 1.5 bits
    indices = torch.tensor([0, 0, 1, 2])
    nats = 1.5 * math.log(2)
    by_k = torch.tensor([2 / 5, 1 / 5, 1 / 5])  # counts / K instead of counts / N
    wrong = [
        (EXP_HINT, nats),
        (EXP_HINT, 1.5),
        (BASE_HINT, math.exp(1.5)),
        (BASE_HINT, 2**nats),
        (NORMALISE_HINT, math.exp(-(by_k * by_k.log()).sum().item())),
    ]
    _expect_number(fn(indices, 5), 2**1.5, "perplexity([0, 0, 1, 2], K=5)", wrong,
                   hint="perplexity = exp(-sum_k p_k log p_k), p_k = count_k / N.")

    # 2. the two extremes: every code equally often -> K; one code only -> 1
    _expect_number(fn(torch.arange(8).repeat(3), 8), 8.0, "perplexity of uniform use, K = 8",
                   [(EXP_HINT, math.log(8))], hint="uniform use of K codes gives exactly K.")
    _expect_number(fn(torch.full((6,), 2), 8), 1.0, "perplexity of one code, K = 8",
                   [(EXP_HINT, 0.0)], hint="a single code used gives exactly 1.")

    # 3. a (B, H, W) grid of tokens
    grid = torch.tensor([[[0, 0], [1, 2]], [[0, 0], [1, 2]]])  # the case-1 histogram, twice
    _expect_number(fn(grid, 5), 2**1.5, "perplexity of a (2, 2, 2) grid, K = 5", [],
                   hint=FLATTEN_HINT)
    return "a hand-computed histogram with unused codes, uniform, single code, a grid"


# --------------------------------------------------------------------------- kmeans_step

EMPTY_HINT = (
    "a code that no vector chose has no mean (0 / 0): leave it where it was, e.g. update "
    "only the codes with count > 0."
)
MEAN_HINT = "move each code to the MEAN of its vectors: their sum divided by their count."
CLONE_HINT = (
    "kmeans_step changed the codebook it was given: start from codebook.clone() and return "
    "the new one."
)


@exercise("kmeans_step", reference=quantize.kmeans_step)
def kmeans_step(fn):
    g = torch.Generator().manual_seed(105)

    # 1. two clusters by hand, and a third code far away that no vector chooses
    vectors = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [12.0, 10.0]])
    codebook = torch.tensor([[1.0, 1.0], [11.0, 9.0], [100.0, 100.0]])
    given = codebook.clone()
    expected = torch.tensor([[1.0, 0.0], [11.0, 10.0], [100.0, 100.0]])
    got = fn(vectors, codebook)
    expect_tensor(got, "kmeans_step(vectors, codebook)")
    expect_shape(got, (3, 2), "the new codebook", hint="return the whole (K, D) codebook.")
    if bool(torch.isnan(got).any()):
        raise CheckFailed("the new codebook holds NaN (code 2 has no vectors)", EMPTY_HINT)
    wrong = [
        (EMPTY_HINT, torch.tensor([[1.0, 0.0], [11.0, 10.0], [0.0, 0.0]])),
        (MEAN_HINT, torch.tensor([[2.0, 0.0], [22.0, 20.0], [100.0, 100.0]])),
        (MEAN_HINT, torch.tensor([[2.0, 0.0], [22.0, 20.0], [0.0, 0.0]])),
    ]
    expect_close(got, expected, "the new codebook, 4 vectors, 3 codes",
                 hint=_known_mistake(got, wrong, exact=False) or MEAN_HINT)
    expect_equal(codebook, given, "the codebook passed in", hint=CLONE_HINT)

    # 2. random vectors, codes started on some of them
    vectors = torch.randn(300, 3, generator=g)
    codebook = vectors[torch.randperm(300, generator=g)[:10]].clone()
    given = codebook.clone()
    got = fn(vectors, codebook)
    expect_close(got, quantize.kmeans_step(vectors, given), "the new codebook (10, 3)",
                 atol=1e-5, rtol=1e-5, hint=MEAN_HINT)
    expect_equal(codebook, given, "the codebook passed in", hint=CLONE_HINT)
    return "a hand-made case with an empty code, 300 random vectors"


def hint(name: str, level: int | None = None) -> None:
    """The next hint for exercise `name` (1 the idea, 2 the formula, 3 near-code)."""
    show_hint(__name__, name, level)
