"""Checks for Lesson 01: distances, nearest codes, feature maps, usage, k-means (a step, a fit).

Each check starts with small cases built so that a classic mistake gives a recognisable wrong
answer, and names that mistake in its hint: the cross term's sign, argmin over the wrong
axis, a (B, C, H, W) map flattened without its permute (or its tokens reshaped back in the
wrong order), distances computed in bf16 under autocast, 0 log 0, an empty cluster's 0 / 0,
a k-means loop that runs one step too many or never feeds its codebook back.
Inputs come from the checks' own torch.Generator, never from the global RNG; axes have
distinct sizes, and every check verifies that the inputs come back unchanged.
Each check also carries three hints on request (`hint(name)`): the idea, the formula, near-code.
"""

from __future__ import annotations

import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from minitok import quantize
from minitok.checks import expect, expect_close, expect_equal, expect_shape, expect_tensor
from minitok.checks._core import CheckFailed, exercise, probe, show_hint

# --------------------------------------------------------------------------- shared helpers

PRECISION_HINT = (
    "the distances lost precision: under autocast (or with bf16/fp16 inputs) the matrix "
    "product ran in 16 bits. Compute them in float32 whatever the inputs' dtype, with "
    "autocast turned off for the computation (torch.autocast(..., enabled=False)), and "
    "return float32."
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


VIEW_HINT = (
    "the input was not contiguous (a permuted map, a slice), and .view cannot flatten such a "
    "tensor: use .reshape, which copies only when it has to."
)


def _call(fn, *args, **kwargs):
    """fn(*args, **kwargs), with `.view` on a non-contiguous input named as the mistake."""
    try:
        return fn(*args, **kwargs)
    except RuntimeError as err:
        if "view size is not compatible" in str(err):
            raise CheckFailed(f"your code raised RuntimeError: {err}", VIEW_HINT) from err
        raise


def _unchanged(given: tuple, now: tuple, what: str, hint: str) -> None:
    """Fail unless every input tensor holds what it held before the call (`given`, clones)."""
    for before, after in zip(given, now, strict=True):
        expect(torch.equal(before, after), f"{what} changed the tensors it was given", hint)


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
DISTANCES_HINT = (
    "every pair's squared distance: ||z||^2 (N, 1) - 2 z @ codebook.T (N, K) + ||e||^2 (K,), "
    "an (N, K) float32 tensor."
)
TRANSPOSE_HINT = "rows are the N vectors and columns the K codes: (N, K), i.e. z @ codebook.T."
INPLACE_HINT = (
    "the function changed its inputs (an in-place op such as z.pow_(2), z -= ..., or a "
    "cast that wrote back): compute new tensors and leave z and codebook as they were."
)

SQUARED_DISTANCES_HINTS = (
    "Do not build z - e for every pair. Expand the square of a difference: one term depends "
    "only on z, one only on e, and the cross term on both. For all pairs at once the cross "
    "term is a single matrix product, and the other two broadcast onto it. Keep the arithmetic "
    "in float32 whatever autocast or the inputs' dtype say.",
    "||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2. Shapes: ||z||^2 is (N, 1) (sum over D, keepdim), "
    "z @ codebook.T is (N, K), ||e||^2 is (K,); the sum broadcasts to (N, K).",
    "with torch.autocast(device_type=z.device.type, enabled=False):\n"
    "    z, codebook = z.float(), codebook.float()\n"
    "    z_sq = (z * z).sum(dim=1, keepdim=True)  # (N, 1)\n"
    "    e_sq = ...                               # (K,)\n"
    "    return z_sq - 2 * ... + e_sq             # (N, K)",
)


@exercise("squared_distances", reference=quantize.squared_distances,
          hints=SQUARED_DISTANCES_HINTS)
def squared_distances(fn):
    g = torch.Generator().manual_seed(101)
    ref = quantize.squared_distances

    # 1. a case small enough to check by hand: N = 3 vectors, K = 4 codes, in D = 2
    z = torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, -1.0]])
    codebook = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0], [2.0, 2.0]])
    given = (z.clone(), codebook.clone())
    z_sq, e_sq = (z * z).sum(1, keepdim=True), (codebook * codebook).sum(1)
    cross = z @ codebook.t()
    wrong = [
        (SIGN_HINT, z_sq + 2 * cross + e_sq),
        (TWO_HINT, z_sq - cross + e_sq),
        (SQRT_HINT, (z_sq - 2 * cross + e_sq).sqrt()),
        (NO_ZSQ_HINT, e_sq - 2 * cross + 0 * z_sq),
    ]
    expected = torch.tensor([[1.0, 4.0, 2.0, 8.0], [4.0, 1.0, 5.0, 1.0], [5.0, 18.0, 20.0, 10.0]])
    got = fn(z, codebook)
    _unchanged(given, (z, codebook), "squared_distances", INPLACE_HINT)
    expect_tensor(got, "squared_distances(z, codebook)")
    expect_shape(got, (3, 4), "squared_distances of z (3, 2) to codebook (4, 2)",
                 hint=TRANSPOSE_HINT)
    if not _matches(got, expected, exact=False):
        expect_close(got, expected, "squared_distances of z (3, 2) to codebook (4, 2)",
                     hint=_known_mistake(got, wrong, exact=False) or DISTANCES_HINT)

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
    zb, cb = z.bfloat16(), codebook.bfloat16()
    got = fn(zb, cb)
    _unchanged((z.bfloat16(), codebook.bfloat16()), (zb, cb), "squared_distances", INPLACE_HINT)
    expect_tensor(got, "squared_distances of bf16 z and codebook", dtype=torch.float32,
                  hint=PRECISION_HINT)
    expect_close(got, expected, "squared_distances of bf16 z and codebook", atol=1e-3, rtol=0,
                 hint=PRECISION_HINT)
    return "a hand-checked case, random (50, 13), bf16 autocast, bf16 inputs, inputs unchanged"


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
NEAREST_HINT = (
    "each vector's token is the index of its smallest squared distance: "
    "squared_distances(rows, codebook).argmin(dim=1), int64."
)
CHUNK_HINT = (
    "with chunk_size the answer must not change: process rows start:start+chunk_size for "
    "start in range(0, N, chunk_size), including the last, shorter chunk."
)


CHUNK_MEMORY_HINT = (
    "chunk_size bounds the memory: compute the distances of one chunk of rows at a time, "
    "(chunk_size, K), and keep only its argmin; never the (N, K) distances of all rows at "
    "once (not even to cut them into chunks afterwards)."
)


class _PeakElements(TorchDispatchMode):
    """Records the most elements any tensor made inside the block had."""

    def __init__(self):
        super().__init__()
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in tree_flatten(out)[0]:
            if isinstance(item, torch.Tensor):
                self.peak = max(self.peak, item.numel())
        return out


def _peak_probe(fn, z: torch.Tensor, codebook: torch.Tensor, chunk_size: int):
    """Runs where the learner's function lives (checks.probe): nearest_code's indices with
    `chunk_size`, and the most elements of any tensor it made."""
    with _PeakElements() as peak:
        out = fn(z, codebook, chunk_size=chunk_size)
    return out, peak.peak


NEAREST_CODE_HINTS = (
    "A vector's token is the code at the smallest squared distance. Flatten z to one row per "
    "vector, compute the distances with squared_distances, and pick the best code of each "
    "row. Rows do not depend on each other, so with chunk_size do the same a few rows at a "
    "time; then give the indices z's leading shape back.",
    "z (..., D) -> flat (N, D), N the product of z.shape[:-1]; a chunk of n rows gives "
    "distances (n, K); argmin over the K codes (dim=1) gives (n,) int64; all chunks together "
    "are (N,), reshaped to z.shape[:-1]. The chunks are rows start : start + chunk_size for "
    "start = 0, chunk_size, 2 chunk_size, ... (the last one may be shorter).",
    "flat = z.reshape(-1, z.shape[-1])                      # (N, D)\n"
    "step = len(flat) if chunk_size is None else chunk_size\n"
    "indices = torch.empty(len(flat), dtype=torch.long, device=z.device)\n"
    "for start in range(0, len(flat), step):\n"
    "    indices[start:start + step] = ...                  # argmin of the chunk's distances\n"
    "return indices.reshape(...)",
)


@exercise("nearest_code", reference=quantize.nearest_code, hints=NEAREST_CODE_HINTS)
def nearest_code(fn):
    g = torch.Generator().manual_seed(102)
    ref = quantize.nearest_code

    # 1. N = 7 vectors, K = 4 codes: the answer has one index per vector
    z = torch.randn(7, 3, generator=g)
    codebook = torch.randn(4, 3, generator=g)
    given = (z.clone(), codebook.clone())
    distances = quantize.squared_distances(z, codebook)  # (7, 4)
    got = fn(z, codebook)
    _unchanged(given, (z, codebook), "nearest_code", INPLACE_HINT)
    expect_tensor(got, "nearest_code(z, codebook)", dtype=torch.int64,
                  hint="return the indices from argmin (int64), not the distances or codes.")
    expect_shape(got, (7,), "nearest_code of z (7, 3) with K = 4 codes",
                 hint=AXIS_HINT if tuple(got.shape) == (4,) else LEADING_HINT)
    wrong = [(ARGMAX_HINT, distances.argmax(dim=1))]
    expect_equal(got, ref(z, codebook), "indices of z (7, 3)",
                 hint=_known_mistake(got, wrong, exact=True) or NEAREST_HINT)

    # 2. as many vectors as codes, so argmin over the wrong axis has the right shape
    z = torch.randn(6, 3, generator=g)
    codebook = torch.randn(6, 3, generator=g)
    distances = quantize.squared_distances(z, codebook)  # (6, 6)
    got = fn(z, codebook)
    wrong = [(AXIS_HINT, distances.argmin(dim=0)), (ARGMAX_HINT, distances.argmax(dim=1))]
    expect_equal(got, ref(z, codebook), "indices of z (6, 3) with K = 6",
                 hint=_known_mistake(got, wrong, exact=True) or NEAREST_HINT)

    # 3. leading dimensions are kept: (2, 3, 5, D) -> (2, 3, 5)
    z = torch.randn(2, 3, 5, 4, generator=g)
    codebook = torch.randn(9, 4, generator=g)
    got = _call(fn, z, codebook)
    expect_shape(got, (2, 3, 5), "nearest_code of z (2, 3, 5, 4)", hint=LEADING_HINT)
    expect_equal(got, ref(z, codebook), "indices of z (2, 3, 5, 4)", hint=LEADING_HINT)

    # 4. a channels-last view of a (B, C, H, W) map, as quantize hands it over: not contiguous
    fmap = torch.randn(2, 4, 3, 5, generator=g)  # (B, C, H, W)
    view = fmap.permute(0, 2, 3, 1)  # (B, H, W, C), a view
    got = _call(fn, view, codebook)
    expect_equal(got, ref(view, codebook), "indices of a permuted (2, 3, 5, 4) view",
                 hint=VIEW_HINT)

    # 5. chunks: the same answer for every chunk size, also when it does not divide N,
    #    with 1-D and with leading dimensions (chunks are over all N = 30 vectors)
    z = torch.randn(10, 4, generator=g)
    expected = ref(z, codebook)
    for chunk_size in (1, 3, 10, 64):
        got = fn(z, codebook, chunk_size=chunk_size)
        expect_equal(got, expected, f"indices with chunk_size={chunk_size} (N = 10)",
                     hint=CHUNK_HINT)
    z = torch.randn(2, 3, 5, 4, generator=g)
    got = _call(fn, z, codebook, chunk_size=7)
    expect_equal(got, ref(z, codebook), "indices of z (2, 3, 5, 4) with chunk_size=7",
                 hint=CHUNK_HINT)

    # 6. under bf16 autocast the codes must be float32's
    z, codebook, answer = precision_trap(g)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = fn(z, codebook)
    expect_equal(got, answer, "indices under bf16 autocast", hint=PRECISION_HINT)

    # 7. chunk_size is there for memory: no tensor as large as all N x K distances
    many, wide = torch.randn(512, 2, generator=g), torch.randn(64, 2, generator=g)
    got, peak = probe(_peak_probe, fn, many, wide, 8)
    expect_equal(got, ref(many, wide), "indices of z (512, 2) with chunk_size=8",
                 hint=CHUNK_HINT)
    expect(peak < 512 * 64 // 4,
           f"with chunk_size=8 your nearest_code made a tensor of {peak} elements; the "
           f"distances of all N = 512 vectors to K = 64 codes are {512 * 64}",
           CHUNK_MEMORY_HINT)
    return ("N != K, N == K, leading dims, a permuted view, chunk sizes 1/3/7/10/64, "
            "bf16 autocast, inputs unchanged")


# --------------------------------------------------------------------------- quantize_feature_map

PERMUTE_HINT = (
    "a (B, C, H, W) map holds one C-vector per position (b, h, w): move the channels last "
    "before flattening to rows of C. z.reshape(-1, C) straight away mixes channels of "
    "different positions."
)
HW_HINT = (
    "the tokens come back as (B, H, W): permute(0, 2, 3, 1) puts H before W, and the indices "
    "reshape to (B, H, W) in that same order."
)
BACK_HINT = (
    "codebook[indices] is (B, H, W, C): permute(0, 3, 1, 2) it back to (B, C, H, W); "
    "reshaping it to (B, C, H, W) scrambles channels and positions."
)
TOKENS_HINT = (
    "the tokens of a map: one row per position (b, h, w), channels last, the nearest code "
    "of each row, reshaped to (B, H, W)."
)
LOOKUP_HINT = (
    "the quantized map is each token's code, codebook[indices] (B, H, W, C), in the map's "
    "layout (B, C, H, W)."
)
ORDER_HINT = "return (quantized, indices): the (B, C, H, W) map first, then the (B, H, W) tokens."


QUANTIZE_FEATURE_MAP_HINTS = (
    "Each position (b, h, w) of the map holds one C-vector, spread across the channels. Put "
    "the channels last so that each position's vector is one row, quantize the rows with "
    "nearest_code, then bring the looked-up codes back to the map's (B, C, H, W) layout.",
    "(B, C, H, W) -permute-> (B, H, W, C) -reshape-> (B*H*W, C) -nearest_code-> (B*H*W,) "
    "-reshape-> (B, H, W) tokens; codebook[tokens] is (B, H, W, C) -permute-> (B, C, H, W).",
    "b, c, h, w = z.shape\n"
    "rows = z.____(...).reshape(-1, c)        # (B*H*W, C): channels last first, then flatten\n"
    "indices = nearest_code(rows, codebook).reshape(...)   # (B, H, W)\n"
    "quantized = ...                          # codebook rows, back to (B, C, H, W)\n"
    "return quantized, indices",
)


@exercise("quantize_feature_map", reference=quantize.quantize, hints=QUANTIZE_FEATURE_MAP_HINTS)
def quantize_feature_map(fn):
    g = torch.Generator().manual_seed(103)
    b, c, h, w = 2, 3, 4, 5  # all different, so no wrong reshape has the right shape by luck
    z = torch.randn(b, c, h, w, generator=g)
    codebook = torch.randn(12, c, generator=g)
    given = (z.clone(), codebook.clone())
    expected_q, expected_idx = quantize.quantize(z, codebook)

    out = _call(fn, z, codebook)
    _unchanged(given, (z, codebook), "quantize_feature_map", INPLACE_HINT)
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
                 hint=_known_mistake(indices, wrong, exact=True) or TOKENS_HINT)

    # then the quantized map, back in (B, C, H, W)
    looked_up = codebook[expected_idx]  # (B, H, W, C)
    wrong = [(BACK_HINT, looked_up.reshape(b, c, h, w))]
    expect_shape(quantized, (b, c, h, w), "quantized map", hint=BACK_HINT)
    expect_close(quantized, expected_q, "quantized map (B, C, H, W)", atol=1e-6, rtol=0,
                 hint=_known_mistake(quantized, wrong, exact=False) or LOOKUP_HINT)
    return "a (2, 3, 4, 5) map: token order, the quantized map's layout, inputs unchanged"


# --------------------------------------------------------------------------- usage

ZERO_LOG_HINT = (
    "codes never used have p = 0, and 0 log 0 counts as 0: keep only p > 0 before "
    "p * log(p) (log(0) is -inf and 0 * -inf is NaN)."
)
NORMALISE_HINT = "p_k = count_k / (number of indices), so that the p_k sum to 1; not / K."
EXP_HINT = "perplexity is exp(entropy), not the entropy itself."
BASE_HINT = "use one base for log and exp: exp(-sum p ln p) (or 2 ** (-sum p log2 p))."
FLATTEN_HINT = "indices may have any shape, e.g. a (B, H, W) grid: count over all of them."


FLOAT_HINT = "return a Python float (e.g. with .item()), not a tensor or an int."
INDICES_CHANGED_HINT = (
    "the function changed the indices it was given (an in-place sort_, flatten into a view "
    "you then wrote to, ...): count on copies and leave indices as they were."
)


def _number(got, what: str) -> float:
    expect(isinstance(got, float) and not isinstance(got, bool),
           f"{what} should be a Python float, got {type(got).__name__}", hint=FLOAT_HINT)
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


def _histogram_grid(values: list[int], generator: torch.Generator) -> torch.Tensor:
    """`values` repeated to 24 indices, shuffled, as a (2, 3, 4) grid (axes of distinct sizes)."""
    flat = torch.tensor(values).repeat(24 // len(values))  # (24,)
    return flat[torch.randperm(24, generator=generator)].reshape(2, 3, 4)


CODEBOOK_USAGE_HINTS = (
    "Usage asks which codes appear at all, not how often: find the different values among "
    "the indices (whatever their shape) and compare their number with the codebook's size.",
    "usage = (number of distinct values in indices) / num_codes: a float in (0, 1], 1.0 when "
    "every code appears at least once.",
    "torch.unique(...) of a tensor of any shape gives its distinct values; .numel() counts "
    "them; dividing two ints with / gives the Python float to return.",
)


@exercise("codebook_usage", reference=quantize.codebook_usage, hints=CODEBOOK_USAGE_HINTS)
def codebook_usage(fn):
    g = torch.Generator().manual_seed(104)
    # 5 indices, K = 10: codes 0, 1 and 3 are used, so usage is 3 / 10
    indices = torch.tensor([0, 0, 0, 1, 3])
    wrong = [
        ("usage counts distinct codes (e.g. torch.unique), not every index.", 5 / 10),
        ("divide by the number of codes K, not by the number of indices.", 3 / 5),
    ]
    got = fn(indices, 10)
    _unchanged((torch.tensor([0, 0, 0, 1, 3]),), (indices,), "codebook_usage",
               INDICES_CHANGED_HINT)
    _expect_number(got, 3 / 10, "codebook_usage([0, 0, 0, 1, 3], 10)", wrong,
                   hint="usage = (number of distinct codes used) / K.")
    # a (2, 3, 4) grid of tokens, K = 8: 3 distinct codes among 24 indices
    grid = _histogram_grid([1, 1, 2, 7, 7, 7], g)
    given = grid.clone()
    got = fn(grid, 8)
    _unchanged((given,), (grid,), "codebook_usage", INDICES_CHANGED_HINT)
    _expect_number(got, 3 / 8, "codebook_usage of a (2, 3, 4) grid, K = 8", [],
                   hint=FLATTEN_HINT)
    return "5 indices with K = 10, a (2, 3, 4) grid with K = 8, a Python float, inputs unchanged"


PERPLEXITY_HINTS = (
    "Turn the indices into a histogram over the K codes, make it a probability distribution, "
    "take its entropy and undo the log: the result counts the codes effectively in use (K for "
    "uniform use, 1 for a single code).",
    "p_k = count_k / N (N = the number of indices, over all axes); H = -sum over p_k > 0 of "
    "p_k ln p_k (unused codes contribute 0); perplexity = exp(H), as a Python float.",
    "counts = torch.bincount(indices.flatten(), minlength=num_codes)  # (K,)\n"
    "p = ...                  # each code's share of the indices, as float64\n"
    "p = p[p > 0]             # 0 log 0 = 0: unused codes drop out\n"
    "return math.exp(...)     # exp of the entropy in nats, a Python float",
)


@exercise("perplexity", reference=quantize.perplexity, hints=PERPLEXITY_HINTS)
def perplexity(fn):
    g = torch.Generator().manual_seed(105)
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
    got = fn(indices, 5)
    _unchanged((torch.tensor([0, 0, 1, 2]),), (indices,), "perplexity", INDICES_CHANGED_HINT)
    _expect_number(got, 2**1.5, "perplexity([0, 0, 1, 2], K=5)", wrong,
                   hint="perplexity = exp(-sum_k p_k log p_k), p_k = count_k / N.")

    # 2. the two extremes: every code equally often -> K; one code only -> 1
    _expect_number(fn(torch.arange(8).repeat(3), 8), 8.0, "perplexity of uniform use, K = 8",
                   [(EXP_HINT, math.log(8))], hint="uniform use of K codes gives exactly K.")
    _expect_number(fn(torch.full((6,), 2), 8), 1.0, "perplexity of one code, K = 8",
                   [(EXP_HINT, 0.0)], hint="a single code used gives exactly 1.")

    # 3. a (2, 3, 4) grid of tokens holding the case-1 histogram six times
    grid = _histogram_grid([0, 0, 1, 2], g)
    given = grid.clone()
    got = fn(grid, 5)
    _unchanged((given,), (grid,), "perplexity", INDICES_CHANGED_HINT)
    _expect_number(got, 2**1.5, "perplexity of a (2, 3, 4) grid, K = 5", [], hint=FLATTEN_HINT)
    return ("a hand-computed histogram with unused codes, uniform, single code, a (2, 3, 4) "
            "grid, a Python float, inputs unchanged")


# --------------------------------------------------------------------------- kmeans_step

EMPTY_HINT = (
    "a code that no vector chose has no mean (0 / 0): leave it where it was, e.g. update "
    "only the codes with count > 0."
)
MEAN_HINT = "move each code to the MEAN of its vectors: their sum divided by their count."
CLONE_HINT = (
    "kmeans_step changed the codebook it was given: write the new codes into a copy and "
    "return that."
)


VECTORS_CHANGED_HINT = (
    "the function changed the vectors it was given: work on new tensors (indexing, "
    "torch.unique, index_add_ on a fresh zeros tensor) and leave vectors as they were."
)

KMEANS_STEP_HINTS = (
    "Two halves: give every vector its nearest code (nearest_code), then move every code to "
    "the average of the vectors that chose it. A code that no vector chose has no average and "
    "stays where it is. Build the new codebook on a copy.",
    "indices = nearest_code(vectors, codebook), (N,); for each code k with count_k > 0: "
    "new e_k = (sum of the vectors with index k) / count_k; codes with count_k = 0 keep e_k. "
    "Returns a new (K, D) tensor.",
    "indices = nearest_code(vectors, codebook)                   # (N,)\n"
    "sums = torch.zeros_like(codebook).____(0, indices, vectors) # (K, D): add each vector "
    "to its code's row\n"
    "counts = ...                                                # (K,) vectors per code\n"
    "new_codebook = codebook.clone()\n"
    "used = ...\n"
    "new_codebook[used] = ...                                    # the average\n"
    "return new_codebook",
)


@exercise("kmeans_step", reference=quantize.kmeans_step, hints=KMEANS_STEP_HINTS)
def kmeans_step(fn):
    g = torch.Generator().manual_seed(105)

    # 1. two clusters by hand, and a third code far away that no vector chooses
    vectors = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [12.0, 10.0]])
    codebook = torch.tensor([[1.0, 1.0], [11.0, 9.0], [100.0, 100.0]])
    given, given_vectors = codebook.clone(), vectors.clone()
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
    _unchanged((given_vectors,), (vectors,), "kmeans_step", VECTORS_CHANGED_HINT)

    # 2. random vectors, codes started on some of them
    vectors = torch.randn(300, 3, generator=g)
    codebook = vectors[torch.randperm(300, generator=g)[:10]].clone()
    given, given_vectors = codebook.clone(), vectors.clone()
    got = fn(vectors, codebook)
    expect_close(got, quantize.kmeans_step(given_vectors, given), "the new codebook (10, 3)",
                 atol=1e-5, rtol=1e-5, hint=MEAN_HINT)
    expect_equal(codebook, given, "the codebook passed in", hint=CLONE_HINT)
    _unchanged((given_vectors,), (vectors,), "kmeans_step", VECTORS_CHANGED_HINT)
    return "a hand-made case with an empty code, 300 random vectors, inputs unchanged"


# --------------------------------------------------------------------------- kmeans

GLOBAL_RNG_HINT = (
    "kmeans drew from (or reseeded) the global RNG: draw every random number from the "
    "`generator` argument, e.g. torch.randperm(n, generator=generator), and never call "
    "torch.manual_seed."
)
OWN_GENERATOR_HINT = (
    "two generators seeded differently gave the same codebook: draw the start from the "
    "`generator` you are given, as it is (no generator of your own, no manual_seed on it)."
)
DISTINCT_HINT = (
    "the start must be K distinct vectors: draw the positions among the U distinct rows of "
    "vectors, not among all N vectors (digit patches repeat)."
)
REPLACEMENT_HINT = (
    "the start drew positions with replacement (torch.randint can pick one vector twice, and "
    "two equal codes split their vectors): draw K different positions, the first K of a "
    "random permutation (torch.randperm)."
)
START_HINT = (
    "the start codebook (iters=0) is not minitok's for the same generator: the convention "
    "(hint 2) is the distinct rows, sorted as torch.unique sorts them, at the first K "
    "positions of one random permutation of U drawn from `generator`."
)
FEED_HINT = (
    "each step must start from the previous step's codebook: yours started every step from "
    "the same one. Feed each step the codebook the step before returned, and return the "
    "last."
)
LOOP_HINT = (
    "the start (iters=0) is right, the steps after it are not: exactly iters steps of "
    "kmeans_step, each from the codebook the previous step returned."
)
KMEANS_HINTS = (
    "A fit is a start and a loop: pick K distinct vectors at random, with the generator you are "
    "given, then improve that codebook with kmeans_step, again and again, each step starting "
    "from the codebook the previous step returned.",
    "start = the rows of torch.unique(vectors, dim=0) (U distinct rows, sorted) at positions "
    "torch.randperm(U, generator=generator)[:num_codes]; then codebook <- kmeans_step(vectors, "
    "codebook), exactly iters times (iters = 0 returns the start).",
    "distinct = ...                    # (U, D) the distinct rows, sorted\n"
    "start = ...                       # K positions drawn with torch.randperm(U, "
    "generator=...)\n"
    "codebook = distinct[start]        # (K, D)\n"
    "for _ in range(iters):\n"
    "    codebook = ...\n"
    "return codebook",
)


def _kmeans_data() -> torch.Tensor:
    """170 vectors in D = 3: five noisy clusters, and one vector repeated 20 more times.

    With K = 7 codes, Lloyd's steps 0 to 6 from any of the check's starts give seven
    different codebooks, so a loop that runs one step too many or too few shows.
    """
    g = torch.Generator().manual_seed(106)
    centers = torch.randn(5, 3, generator=g) * 3  # (5, D)
    vectors = centers[torch.randint(0, 5, (150,), generator=g)] + torch.randn(150, 3, generator=g)
    return torch.cat([vectors, vectors[:1].repeat(20, 1)])  # (170, 3)


def _kmeans_probe(fn, vectors: torch.Tensor, num_codes: int, iters: int, seed: int):
    """kmeans(vectors, num_codes, iters, generator seeded with `seed`), run where the learner's
    function lives: (what it returned, whether the global RNG moved, whether vectors changed).
    The global RNG is put back as it was, whatever the learner's code did."""
    given = vectors.clone()
    state = torch.get_rng_state()
    try:
        out = fn(vectors, num_codes, iters=iters, generator=torch.Generator().manual_seed(seed))
        moved = not torch.equal(torch.get_rng_state(), state)
    finally:
        torch.set_rng_state(state)
    return out, moved, not torch.equal(vectors, given)


def _lloyd(vectors: torch.Tensor, codebook: torch.Tensor, steps: int) -> torch.Tensor:
    for _ in range(steps):
        codebook = quantize.kmeans_step(vectors, codebook)
    return codebook


@exercise("kmeans", reference=quantize.kmeans, hints=KMEANS_HINTS)
def kmeans(fn):
    vectors = _kmeans_data()  # (N, D) = (170, 3)
    num_codes, iters = 7, 3

    def fit(steps: int, seed: int) -> torch.Tensor:
        out, moved, changed = probe(_kmeans_probe, fn, vectors, num_codes, steps, seed)
        what = f"kmeans(vectors (170, 3), num_codes=7, iters={steps})"
        expect(not moved, f"{what} changed the global RNG's state", GLOBAL_RNG_HINT)
        expect(not changed, f"{what} changed the vectors it was given", VECTORS_CHANGED_HINT)
        expect_tensor(out, what, hint="return the fitted (num_codes, D) codebook.")
        expect_shape(out, (num_codes, 3), what, hint="return the fitted (num_codes, D) codebook.")
        return out

    def start(seed: int) -> torch.Tensor:
        return quantize.kmeans(vectors, num_codes, iters=0,
                               generator=torch.Generator().manual_seed(seed))

    def same(got: torch.Tensor, expected: torch.Tensor) -> bool:
        return _matches(got, expected, exact=False)

    # 1. a fit of iters = 3 steps from the start that generator seed 11 gives
    got = fit(iters, 11)
    expected = _lloyd(vectors, start(11), iters)
    if not same(got, expected):
        wrong = [(f"the codebook is {n} Lloyd steps from the start, not iters = {iters}: run "
                  "kmeans_step exactly iters times, e.g. for _ in range(iters).",
                  _lloyd(vectors, start(11), n)) for n in (iters - 1, iters + 1)]
        wrong += [(FEED_HINT, _lloyd(vectors, start(11), n)) for n in (0, 1)]
        repeated = vectors[torch.randperm(len(vectors), generator=torch.Generator().manual_seed(11))]
        wrong += [(DISTINCT_HINT, _lloyd(vectors, repeated[:num_codes], n))
                  for n in (iters, 0)]
        distinct = torch.unique(vectors, dim=0)  # (U, D)
        drawn = torch.randint(0, len(distinct), (num_codes,),
                              generator=torch.Generator().manual_seed(11))  # with replacement
        wrong += [(REPLACEMENT_HINT, _lloyd(vectors, distinct[drawn], iters))]
        hint = _known_mistake(got, wrong, exact=False)
        if hint is None and same(fit(iters, 12), got):
            hint = OWN_GENERATOR_HINT
        if hint is None and same(fit(0, 11), start(11)):
            hint = LOOP_HINT
        expect_close(got, expected, f"kmeans after iters={iters} steps (generator seed 11)",
                     hint=hint or START_HINT)

    # 2. iters = 0 is the start itself, and another seed gives another start
    for seed in (12, 13):
        got = fit(0, seed)
        wrong = [("iters=0 must return the start itself: run kmeans_step exactly iters times.",
                  _lloyd(vectors, start(seed), 1))]
        expect_close(got, start(seed), f"kmeans with iters=0 (generator seed {seed})",
                     hint=_known_mistake(got, wrong, exact=False) or START_HINT)
    return ("3 steps and the start (iters=0) for three seeds, repeated vectors, the global RNG "
            "and the vectors untouched")


def hint(name: str, level: int | None = None) -> None:
    """The next hint for exercise `name` (1 the idea, 2 the formula, 3 near-code)."""
    show_hint(__name__, name, level)
