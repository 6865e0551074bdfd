"""Checks for Lesson 04: attention, the causal mask, heads, and a forward pass with a KV cache.

Each check runs the learner's function on small seeded cases, ordered so that the first
failing case names the classic mistake behind it.
"""

from __future__ import annotations

import torch

from minitok import transformer
from minitok.checks import exercise, expect, expect_close, expect_equal, expect_shape, expect_tensor
from minitok.checks._core import show_hint

# --------------------------------------------------------------------------- attention

SCALE_HINT = (
    "scale the scores by 1/sqrt(d_head), where d_head = q.shape[-1]: "
    "scores = q @ k.transpose(-2, -1) / math.sqrt(d). Scaling by 1/d (or not at all) "
    "gives these numbers."
)
AXIS_HINT = (
    "take the softmax over the keys, the last dimension (dim=-1), so that each query's "
    "weights sum to 1; a softmax over dim=-2 normalises over the queries instead."
)
ZERO_MASK_HINT = (
    "fill the hidden scores with float('-inf') before the softmax, so that exp(-inf) = 0 "
    "gives them no weight. Masking with 0 still gives them a share (exp(0) = 1)."
)
MASK_MEANING_HINT = (
    "in this course the mask is True where a query MAY attend: use scores.masked_fill(~mask, "
    "float('-inf')). (torch.nn.MultiheadAttention's attn_mask uses the opposite convention.)"
)
AFTER_SOFTMAX_HINT = (
    "mask the scores before the softmax, not the weights after it: zeroing weights after "
    "the softmax leaves rows that no longer sum to 1."
)


def _inputs(g: torch.Generator, T_q: int, T_k: int, d: int = 16, B: int = 2, H: int = 3):
    q = torch.randn(B, H, T_q, d, generator=g)
    k = torch.randn(B, H, T_k, d, generator=g)
    return q, k


@exercise("attention", reference=transformer.attention)
def attention(fn):
    g = torch.Generator().manual_seed(4)
    # With v = identity, attention's output *is* the weight matrix, so each property of the
    # weights can be looked at on its own.
    q, k = _inputs(g, T_q=3, T_k=5)
    eye = torch.eye(5).expand(2, 3, 5, 5)  # (B, H, T_k, T_k)
    weights = fn(q, k, eye)
    expect_shape(weights, (2, 3, 3, 5), "attention(q (2,3,3,16), k (2,3,5,16), v (2,3,5,5))",
                 hint="the output is (..., T_q, d_v): weights (T_q, T_k) @ v (T_k, d_v)")
    expect_close(weights.sum(-1), torch.ones(2, 3, 3), "each query's weights (their sum)",
                 atol=1e-5, hint=AXIS_HINT)
    expected = transformer.attention(q, k, eye)
    expect_close(weights, expected, "the weights without a mask", atol=1e-5, hint=SCALE_HINT)

    # A mask: hidden keys get exactly 0, the others still sum to 1.
    q, k = _inputs(g, T_q=5, T_k=5)
    eye = torch.eye(5).expand(2, 3, 5, 5)
    mask = transformer.causal_mask(5)
    weights = fn(q, k, eye, mask)
    expect_shape(weights, (2, 3, 5, 5), "attention with a (5, 5) mask")
    if torch.all(torch.nan_to_num(weights)[..., mask] == 0):
        expect(False, "the weights are 0 exactly where the mask is True", MASK_MEANING_HINT)
    hidden = weights[..., ~mask].abs().max().item()
    expect(hidden == 0, f"keys the mask hides still get weight (up to {hidden:.3g})",
           ZERO_MASK_HINT)
    expect_close(weights.sum(-1), torch.ones(2, 3, 5), "each query's masked weights (their sum)",
                 atol=1e-5, hint=AFTER_SOFTMAX_HINT)
    expect_close(weights, transformer.attention(q, k, eye, mask), "the masked weights",
                 atol=1e-5, hint=SCALE_HINT)

    # Real values, a broadcast (T_q, T_k) mask, d_v != d.
    q, k = _inputs(g, T_q=4, T_k=7, d=8)
    v = torch.randn(2, 3, 7, 6, generator=g)
    mask = transformer.causal_mask(4, 7)
    expect_close(fn(q, k, v, mask), transformer.attention(q, k, v, mask),
                 "attention(q, k, v, mask) with T_q=4, T_k=7, d=8, d_v=6", atol=1e-5,
                 hint="out = softmax(masked scores) @ v, with shapes (..., T_q, T_k) @ (..., T_k, d_v)")
    return "weights sum to 1 over keys, 1/sqrt(d) scaling, -inf masking, d_v != d"


# --------------------------------------------------------------------------- causal mask

DIAGONAL_HINT = (
    "your mask hides the diagonal: a token may attend to itself (query i sees keys 0..i, "
    "i included). Use torch.tril with diagonal=T_k - T_q, not one less."
)
FUTURE_HINT = (
    "your mask shows the future (off by one): query i may see keys 0..i only, never i+1. "
    "Use torch.tril with diagonal=T_k - T_q, not one more."
)
UPPER_HINT = (
    "your mask is the upper triangle: True must mean 'may attend', and a query may attend "
    "to the past (keys j <= i): the lower triangle, torch.tril."
)
TOP_LEFT_HINT = (
    "with T_q < T_k the queries are the LAST T_q positions (new tokens after a cache): "
    "query i sits at position T_k - T_q + i and sees keys 0..T_k - T_q + i, so the triangle "
    "is aligned to the bottom-right corner: torch.tril(ones, diagonal=T_k - T_q). "
    "A top-left aligned mask (SDPA's is_causal=True) lets a single new query see key 0 only."
)


def _diagnose(got: torch.Tensor, T_q: int, T_k: int) -> str:
    """Name the mistake behind a wrong (T_q, T_k) mask."""
    ones = torch.ones(T_q, T_k, dtype=torch.bool)
    shift = T_k - T_q
    known = [
        (torch.tril(ones, diagonal=shift - 1), DIAGONAL_HINT),
        (torch.tril(ones, diagonal=shift + 1), FUTURE_HINT),
        (torch.tril(ones), TOP_LEFT_HINT),
        (torch.tril(ones, diagonal=-1), TOP_LEFT_HINT),
        (torch.triu(ones, diagonal=shift), UPPER_HINT),
        (~torch.tril(ones, diagonal=shift), UPPER_HINT),
    ]
    for wrong, hint in known:
        if torch.equal(got, wrong):
            return hint
    return "query i may attend to keys 0..(T_k - T_q + i): torch.tril(ones(T_q, T_k), diagonal=T_k - T_q)"


def _expect_mask(fn, T_q: int, T_k: int | None) -> None:
    got = fn(T_q) if T_k is None else fn(T_q, T_k)
    T_k = T_q if T_k is None else T_k
    what = f"causal_mask({T_q})" if T_q == T_k else f"causal_mask({T_q}, {T_k})"
    expect_tensor(got, what, dtype=torch.bool,
                  hint="build it as a bool tensor: torch.ones(..., dtype=torch.bool)")
    expect_shape(got, (T_q, T_k), what, hint="one row per query, one column per key")
    expected = transformer.causal_mask(T_q, T_k)
    got = got.cpu()
    if not torch.equal(got, expected):
        expect_equal(got, expected, what, hint=_diagnose(got, T_q, T_k))


@exercise("causal_mask", reference=transformer.causal_mask)
def causal_mask(fn):
    _expect_mask(fn, 5, None)
    _expect_mask(fn, 1, None)
    _expect_mask(fn, 3, 7)  # 3 new queries after 4 cached tokens
    _expect_mask(fn, 1, 6)  # one new token: sees every key
    got = fn(4, 4, device="cpu")
    expect_tensor(got, "causal_mask(4, 4, device='cpu')", dtype=torch.bool)
    return "square masks, and T_q < T_k aligned to the bottom-right corner"


# --------------------------------------------------------------------------- heads

SPLIT_HINT = (
    "view the channels as (B, T, n_head, d) first, then transpose(1, 2) to (B, n_head, T, d). "
    "Viewing straight to (B, n_head, T, d) cuts across tokens: a 'head' would then hold "
    "channels of several different tokens."
)
MERGE_HINT = (
    "transpose(1, 2) back to (B, T, H, d) first, then reshape to (B, T, H*d). Reshaping "
    "(B, H, T, d) directly mixes the tokens of different heads."
)


@exercise("split_heads", reference=transformer.split_heads)
def split_heads(fn):
    x = torch.arange(2 * 5 * 12, dtype=torch.float32).reshape(2, 5, 12)  # every value distinct
    got = fn(x, 3)
    expect_shape(got, (2, 3, 5, 4), "split_heads(x (2, 5, 12), n_head=3)",
                 hint="(B, T, C) -> (B, n_head, T, C // n_head)")
    expect_equal(got, transformer.split_heads(x, 3), "split_heads(x, 3)", hint=SPLIT_HINT)
    x = torch.randn(1, 7, 8, generator=torch.Generator().manual_seed(0))
    expect_equal(fn(x, 2), transformer.split_heads(x, 2), "split_heads(x (1, 7, 8), 2)",
                 hint=SPLIT_HINT)
    return "every channel lands in its head, for its token"


@exercise("merge_heads", reference=transformer.merge_heads)
def merge_heads(fn):
    x = torch.arange(2 * 5 * 12, dtype=torch.float32).reshape(2, 5, 12)
    heads = transformer.split_heads(x, 3)  # (2, 3, 5, 4)
    got = fn(heads)
    expect_shape(got, (2, 5, 12), "merge_heads(heads (2, 3, 5, 4))",
                 hint="(B, H, T, d) -> (B, T, H * d)")
    expect_equal(got, x, "merge_heads(split_heads(x, 3))", hint=MERGE_HINT)
    return "merge_heads undoes split_heads exactly"


# --------------------------------------------------------------------------- forward with cache

ADVANCE_HINT = (
    "after the last block, move the cache on: cache.advance(T). Every layer writes its keys "
    "and values at positions cache.length .. cache.length + T - 1, so the length may only "
    "grow once all layers are done."
)
OFFSET_HINT = (
    "position ids not offset by the cache: the new tokens come after the cache.length cached "
    "ones, so pos = torch.arange(cache.length, cache.length + T), not torch.arange(T). "
    "(Without a cache, start at 0.)"
)
FORWARD_HINT = (
    "x = model.wte(idx) + model.wpe(pos); then x = block(x, pos, cache, layer) for each "
    "block in order; then logits = model.head(model.ln_f(x))."
)


def _check_model() -> transformer.Transformer:
    """A small model with weights from the check's own generator (the global RNG untouched)."""
    config = transformer.TransformerConfig(vocab_size=23, block_size=16, n_layer=2, n_head=2,
                                           n_embd=16)
    with torch.random.fork_rng(devices=[]):
        model = transformer.Transformer(config).eval()
    g = torch.Generator().manual_seed(44)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model


def _reference_forward(model, idx, cache=None):
    """minitok's own forward pass (what the notebook falls back to)."""
    return model(idx, cache)


@exercise("transformer_forward", reference=_reference_forward,
          solution=transformer.Transformer.forward)
def transformer_forward(fn):
    model = _check_model()
    g = torch.Generator().manual_seed(5)
    idx = torch.randint(0, 23, (2, 12), generator=g)
    with torch.no_grad():
        full = model(idx)  # (2, 12, V): the reference, no cache
        expect_close(fn(model, idx), full, "logits without a cache", atol=1e-5, hint=FORWARD_HINT)
        cache = model.new_cache(2)
        prefill = fn(model, idx[:, :5], cache)
        written = cache.keys[:, :, :, :5].abs().sum().item()
        expect(written > 0, "the prefill wrote nothing into the cache",
               "pass the cache and the layer's number to every block: block(x, pos, cache, layer)")
        expect(cache.length == 5,
               f"after a 5-token prefill cache.length should be 5, got {cache.length}",
               ADVANCE_HINT)
        expect_close(prefill, full[:, :5], "logits of the 5-token prefill", atol=1e-5,
                     hint=FORWARD_HINT)
        for t in range(5, 12):
            step = fn(model, idx[:, t : t + 1], cache)
            expect_close(step, full[:, t : t + 1], f"logits of decode step at position {t}",
                         atol=1e-5, hint=OFFSET_HINT)
            expect(cache.length == t + 1,
                   f"cache.length should be {t + 1} after position {t}, got {cache.length}",
                   ADVANCE_HINT)
    return "no cache, prefill, then 7 one-token steps equal the full forward"


def hint(name: str, level: int | None = None) -> None:
    """The next hint for exercise `name` (1 the idea, 2 the formula, 3 near-code)."""
    show_hint(__name__, name, level)
