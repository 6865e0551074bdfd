"""Checks for Lesson 04: attention, the causal mask, heads, and the learner's GPT.

Each check runs the learner's function on small seeded cases, ordered so that the first
failing case names the classic mistake behind it. The three class checks (`SelfAttention`,
`Block`, `Transformer`) build the learner's class, load the shipped prior's weights into it
with load_state_dict(strict=True), and compare its outputs with minitok's on those weights,
with and without a KV cache; a wrong output is compared with the outputs of the classic
wrong versions, so that the hint names the mistake actually made.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math

import torch

from minitok import transformer
from minitok.checks import expect, expect_close, expect_equal, expect_shape, expect_tensor
from minitok.checks._core import CheckFailed, exercise, show_hint

# --------------------------------------------------------------------------- attention

SCALE_HINT = (
    "the scores are not scaled by 1/sqrt(d_head), where d_head is the size of each query "
    "(q's last dimension): scaling by 1/d (or not at all) gives these numbers."
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
    "your mask is read the wrong way round: in this course it is True where a query MAY "
    "attend, so the scores to hide are those where it is False. "
    "(torch.nn.MultiheadAttention's attn_mask uses the opposite convention.)"
)
AFTER_SOFTMAX_HINT = (
    "mask the scores before the softmax, not the weights after it: zeroing weights after "
    "the softmax leaves rows that no longer sum to 1."
)


def _inputs(g: torch.Generator, T_q: int, T_k: int, d: int = 16, B: int = 2, H: int = 3):
    q = torch.randn(B, H, T_q, d, generator=g)
    k = torch.randn(B, H, T_k, d, generator=g)
    return q, k


ATTENTION_HINTS = (
    "Score every (query, key) pair by a dot product, scale the scores so that their spread "
    "does not grow with the head size, hide what the mask forbids, turn each query's scores "
    "into weights that sum to 1, and average the values with those weights.",
    "scores = q k^T / sqrt(d) with d = q.shape[-1]: (..., T_q, T_k). Hidden scores become "
    "-inf (exp(-inf) = 0). weights = softmax over the keys (the last dim). "
    "out = weights @ v: (..., T_q, d_v).",
    "scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
    "if mask is not None:\n    scores = scores.masked_fill(~mask, float('-inf'))\n"
    "weights = torch.softmax(scores, dim=...)  # which dim holds the keys?\n"
    "return weights @ v",
)


@exercise("attention", reference=transformer.attention, hints=ATTENTION_HINTS)
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
    "i included). Your triangle stops one diagonal too low."
)
FUTURE_HINT = (
    "your mask shows the future (off by one): query i may see keys 0..i only, never i+1. "
    "Your triangle reaches one diagonal too high."
)
UPPER_HINT = (
    "your mask is the upper triangle: True must mean 'may attend', and a query may attend "
    "to the past (keys j <= i): the lower triangle."
)
TOP_LEFT_HINT = (
    "with T_q < T_k the queries are the LAST T_q positions (new tokens after a cache): "
    "query i sits at position T_k - T_q + i and sees keys 0..T_k - T_q + i, so the triangle "
    "is aligned to the bottom-right corner, yours to the top-left one. "
    "A top-left aligned mask (SDPA's is_causal=True) lets a single new query see key 0 only."
)
MASK_HINT = (
    "query i may attend to keys 0..(T_k - T_q + i), no fewer and no more: write that rule "
    "out by hand for T_q = 3, T_k = 7 and compare it with your mask, row by row."
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
    return MASK_HINT


def _expect_mask(fn, T_q: int, T_k: int | None) -> None:
    got = fn(T_q) if T_k is None else fn(T_q, T_k)
    T_k = T_q if T_k is None else T_k
    what = f"causal_mask({T_q})" if T_q == T_k else f"causal_mask({T_q}, {T_k})"
    expect_tensor(got, what, dtype=torch.bool,
                  hint="the mask is a bool tensor (True or False per pair), not numbers")
    expect_shape(got, (T_q, T_k), what, hint="one row per query, one column per key")
    expected = transformer.causal_mask(T_q, T_k)
    got = got.cpu()
    if not torch.equal(got, expected):
        expect_equal(got, expected, what, hint=_diagnose(got, T_q, T_k))


CAUSAL_MASK_HINTS = (
    "Row i is query i, column j is key j; True where the query may look. Without a cache a "
    "token sees itself and the tokens before it. With a cache the T_q queries are the LAST "
    "T_q of the T_k positions.",
    "query i sits at position T_k - T_q + i and may see keys j <= T_k - T_q + i: a lower "
    "triangle shifted right by T_k - T_q (bottom-right aligned), of dtype bool.",
    "ones = torch.ones(T_q, T_k, dtype=torch.bool, device=device)\n"
    "return ...   # a lower triangle of ones: which torch function, and which diagonal\n"
    "             # keeps query i's keys 0 .. T_k - T_q + i?",
)


@exercise("causal_mask", reference=transformer.causal_mask, hints=CAUSAL_MASK_HINTS)
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


SPLIT_HINTS = (
    "Each token's C channels are cut into n_head consecutive slices of d = C // n_head; "
    "head h gets slice h of every token. Then the heads move in front of the tokens, so "
    "that attention runs over (T, d) for each (batch, head).",
    "(B, T, C) -> (B, T, n_head, d) keeps each token's channels together; swapping the "
    "token and head axes gives (B, n_head, T, d).",
    "x.view(B, T, n_head, C // n_head).transpose(?, ?)",
)
MERGE_HINTS = (
    "Undo split_heads step by step, in reverse order: tokens back in front of the heads, "
    "then each token's heads side by side.",
    "(B, H, T, d) -> (B, T, H, d) -> (B, T, H * d); the transposed tensor is not contiguous, "
    "so use reshape (or .contiguous().view).",
    "B, H, T, d = x.shape\nreturn x.transpose(?, ?).reshape(B, T, ...)  # which axes swap back?",
)


@exercise("split_heads", reference=transformer.split_heads, hints=SPLIT_HINTS)
def split_heads(fn):
    x = torch.arange(2 * 5 * 12, dtype=torch.float32).reshape(2, 5, 12)  # every value distinct
    got = fn(x, 3)
    expect_shape(got, (2, 3, 5, 4), "split_heads(x (2, 5, 12), n_head=3)",
                 hint="(B, T, C) -> (B, n_head, T, C // n_head)")
    expect_equal(got, transformer.split_heads(x, 3), "split_heads(x, 3)", hint=SPLIT_HINT)
    x = torch.randn(1, 7, 8, generator=torch.Generator().manual_seed(0))
    expect_equal(fn(x, 2), transformer.split_heads(x, 2), "split_heads(x (1, 7, 8), 2)",
                 hint=SPLIT_HINT)
    # what SelfAttention hands over: q, k, v are slices of qkv(x).split(C, dim=2), views
    # whose tokens are 3C apart in memory (not contiguous)
    for i, part in enumerate(_qkv_parts(2, 5, 12)):
        expect_equal(_heads_call(fn, part, 3), transformer.split_heads(part, 3),
                     f"split_heads of {'qkv'[i]}, a slice of qkv(x).split(C, dim=2)",
                     hint=SPLIT_HINT)
    return "every channel lands in its head, for its token"


@exercise("merge_heads", reference=transformer.merge_heads, hints=MERGE_HINTS)
def merge_heads(fn):
    x = torch.arange(2 * 5 * 12, dtype=torch.float32).reshape(2, 5, 12)
    heads = transformer.split_heads(x, 3)  # (2, 3, 5, 4)
    got = fn(heads)
    expect_shape(got, (2, 5, 12), "merge_heads(heads (2, 3, 5, 4))",
                 hint="(B, H, T, d) -> (B, T, H * d)")
    expect_equal(got, x, "merge_heads(split_heads(x, 3))", hint=MERGE_HINT)
    # what SelfAttention hands over: attention's output, a contiguous (B, H, T, d) tensor
    q, k, v = (transformer.split_heads(part, 3) for part in _qkv_parts(2, 5, 12))
    y = transformer.attention(q, k, v, transformer.causal_mask(5))  # (2, 3, 5, 4)
    expect_equal(_heads_call(fn, y), transformer.merge_heads(y),
                 "merge_heads of an attention output (2, 3, 5, 4), as SelfAttention gives it",
                 hint=MERGE_HINT)
    return "merge_heads undoes split_heads exactly"


HEADS_VIEW_HINT = (
    "the tensor you were given is laid out as its callers make it, not always contiguous "
    "(an attention output transposed, a slice of qkv(x)): .view fails where the layout "
    "does not allow it. Use .reshape (or .contiguous().view)."
)


def _qkv_parts(B: int, T: int, C: int) -> tuple[torch.Tensor, ...]:
    """q, k, v (B, T, C) as SelfAttention cuts them: views of one (B, T, 3C) tensor."""
    qkv = torch.randn(B, T, 3 * C, generator=torch.Generator().manual_seed(1))
    return qkv.split(C, dim=2)


def _heads_call(fn, *args):
    """fn(*args), with `.view` on a layout it does not fit named as the mistake."""
    try:
        return fn(*args)
    except RuntimeError as err:
        if "view size is not compatible" in str(err):
            raise CheckFailed(f"your code raised RuntimeError: {err}", HEADS_VIEW_HINT) from err
        raise


# --------------------------------------------------------------------------- the learner's GPT
#
# The class checks run on the shipped prior's weights (C = 64, H = 4, d = 16, 4 layers,
# V = 75) with inputs of distinct sizes (B = 3, T = 7 or 13), in eval mode (dropout off)
# and without gradients.

NAMES_HINT = (
    "use the package's attribute names and shapes, so that the shipped weights load: "
    "SelfAttention has qkv (Linear C -> 3C) and proj (Linear C -> C); Block has ln1, attn, "
    "ln2, mlp; Transformer has wte, wpe, blocks (an nn.ModuleList), ln_f and head "
    "(Linear C -> V, bias=False); Linear and LayerNorm layers have a bias only when "
    "config.bias is True."
)


@functools.cache
def _prior() -> transformer.Transformer:
    """The shipped prior's transformer, in eval mode (loaded once)."""
    from minitok import checkpoints  # (a checkpoint load, only when a class check runs)

    with torch.random.fork_rng(devices=[]):  # a first load draws from the global RNG
        return checkpoints.load("prior").transformer.eval()


def _build(fn, config: transformer.TransformerConfig, state: dict, what: str):
    """The learner's class built for `config`, with `state` loaded strictly, in eval mode."""
    with torch.random.fork_rng(devices=[]):  # their __init__ draws weights: not from ours
        module = fn(config)
    try:
        module.load_state_dict({name: t.clone() for name, t in state.items()}, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise CheckFailed(f"the shipped weights do not load into your {what} "
                          f"(load_state_dict(strict=True)): {detail[:400]}", NAMES_HINT) from None
    module.eval()
    return module


def _cache(B: int, max_len: int) -> transformer.KVCache:
    config = _prior().config
    return transformer.KVCache(config.n_layer, B, config.n_head, max_len, config.head_dim)


def _expect_output(got: torch.Tensor, expected: torch.Tensor, what: str, wrong: list,
              hint: str) -> None:
    """Fail when `got` differs from `expected`: with the hint of the wrong version that `got`
    equals (`wrong()`: (output, hint) pairs, computed only on a mismatch), else with `hint`."""
    if isinstance(got, torch.Tensor) and got.shape == expected.shape:
        if torch.allclose(got.double(), expected.double(), atol=1e-4, rtol=1e-4):
            return
        for output, mistake in wrong():
            if output.shape == got.shape and torch.allclose(got.double(), output.double(),
                                                            atol=1e-4, rtol=1e-4):
                raise CheckFailed(f"{what} differs from minitok's on the same weights", mistake)
    expect_close(got, expected, what, atol=1e-4, rtol=1e-4, hint=hint)


# --------------------------------------------------------------------------- SelfAttention

NO_MASK_HINT = (
    "the output of token t changed with the tokens after it: a causal layer (config.causal "
    "True) must mask its scores; without the mask every token sees the future."
)
BIDIRECTIONAL_HINT = (
    "with config.causal False there is no mask at all: every token sees every token "
    "(MaskGIT's model). Keep config.causal in self.causal and mask only when it is True."
)
TOP_LEFT_CACHE_HINT = (
    "with a cache the T new queries are the LAST T of the T_k keys: the mask must be "
    "aligned to the bottom-right corner (your causal_mask is, given both sizes). A top-left "
    "triangle (SDPA's is_causal=True) hides cached keys the new tokens may see."
)
NO_MASK_CACHE_HINT = (
    "with a cache and several new tokens, the mask is still needed: the first new token "
    "must not see the second. A causal layer masks its scores on every call, cache or not."
)
MASK_SIZE_HINT = (
    "with a cache, the keys are the cached ones plus the new ones: your mask was built for "
    "the new tokens only, and it needs one column per key, so it can only be built once the "
    "cache has handed back all the keys."
)
HEADS_ORDER_HINT = (
    "heads split in the wrong order: a direct view/reshape of (B, T, C) to (B, H, T, d) "
    "mixes the channels of different tokens. Cut each token's channels into heads first "
    "(your split_heads does), and put them back with merge_heads."
)
QKV_ORDER_HINT = (
    "qkv(x) holds q, then k, then v, each C channels wide, one block after the other. "
    "Another order (or a per-head interleaving) does not match the shipped weights."
)
ATTN_SCALE_HINT = (
    "wrong scale: the scores are divided by sqrt(d), d = C // n_head, the head size (your "
    "attention does this), not by sqrt(C) or d."
)
PROJ_HINT = (
    "the output projection is missing: after merging the heads, the output goes through "
    "self.proj (Linear C -> C), then dropout."
)
NO_UPDATE_HINT = (
    "your layer ignored its cache: with a cache, the new keys and values are written into "
    "it first, and the queries attend to everything it then holds, cached and new, before "
    "the mask and the attention."
)
LAYER_SLOT_HINT = (
    "write this layer's keys and values into its own slot: the cache holds one slot per "
    "layer, and the `layer` argument says which one is this layer's."
)
SELF_ATTENTION_HINT = (
    "go through your forward step by step against the recipe: q, k, v from one qkv "
    "projection (C channels each), each into heads; with a cache, this layer's keys and "
    "values added to it; the mask (bottom-right, when causal); attention; heads merged; "
    "proj; dropout. Print the shapes at each step on a small input."
)
DROPOUT_HINT = (
    "dropout is missing: in train() mode the output should change from call to call when "
    "config.dropout > 0, so the output goes through a dropout layer of that rate."
)


def _attend(ref, x, cache=None, layer=0, mask="causal", scale=None, heads="split",
            qkv="split", proj=True):
    """minitok's SelfAttention.forward with a knob per classic mistake (for the hints)."""
    B, T, C = x.shape
    H = ref.n_head
    if qkv == "split":
        q, k, v = ref.qkv(x).split(C, dim=2)
    else:  # q, k, v interleaved per head
        q, k, v = ref.qkv(x).view(B, T, H, 3 * (C // H)).split(C // H, dim=3)
        q, k, v = (t.reshape(B, T, C) for t in (q, k, v))
    if heads == "split":
        q, k, v = (transformer.split_heads(t, H) for t in (q, k, v))
    else:
        q, k, v = (t.reshape(B, H, T, C // H) for t in (q, k, v))
    if cache is not None:
        k, v = cache.update(layer, k, v)
    T_k = k.shape[2]
    masks = {"causal": transformer.causal_mask(T, T_k), "none": None,
             "top-left": torch.tril(torch.ones(T, T_k, dtype=torch.bool))}
    d = q.shape[-1]
    scores = q @ k.transpose(-2, -1) * (1 / math.sqrt(d) if scale is None else scale)
    if masks[mask] is not None:
        scores = scores.masked_fill(~masks[mask], float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v
    y = transformer.merge_heads(y) if heads == "split" else y.reshape(B, T, C)
    return ref.proj(y) if proj else y


def _attention_mistakes(ref, x, cache=None, layer=0, causal=True):
    """(output, hint) of each classic wrong SelfAttention on these inputs."""
    def run(**knobs):
        return _attend(ref, x, copy.deepcopy(cache), layer, **knobs)

    mask = "causal" if causal else "none"
    wrong = []
    if causal:
        wrong.append((run(mask="none"), NO_MASK_CACHE_HINT if cache is not None else NO_MASK_HINT))
        if cache is not None:
            wrong.append((run(mask="top-left"), TOP_LEFT_CACHE_HINT))
    else:
        wrong.append((run(mask="causal"), BIDIRECTIONAL_HINT))
    wrong += [
        (run(mask=mask, heads="view"), HEADS_ORDER_HINT),
        (run(mask=mask, qkv="interleaved"), QKV_ORDER_HINT),
        (run(mask=mask, scale=1 / math.sqrt(x.shape[-1])), ATTN_SCALE_HINT),
        (run(mask=mask, scale=1 / (x.shape[-1] // ref.n_head)), ATTN_SCALE_HINT),
        (run(mask=mask, scale=1.0), ATTN_SCALE_HINT),
        (run(mask=mask, proj=False), PROJ_HINT),
    ]
    return wrong


def _call(module, *args, hint: str = MASK_SIZE_HINT):
    """module(*args); a size error (a mask built for the new tokens only) gets `hint`."""
    try:
        return module(*args)
    except RuntimeError as err:
        if "size of tensor" in str(err) or "must match the size" in str(err):
            raise CheckFailed(f"your code raised RuntimeError: {err}", hint) from None
        raise


SELF_ATTENTION_HINTS = (
    "One Linear layer makes each token's query, key and value; split them into heads, "
    "attend within each head (your attention, with the causal mask when config.causal), "
    "put the heads back side by side and project. With a cache, the new keys and values "
    "are appended to this layer's slot first, and the new queries attend to all of them.",
    "qkv: Linear(C, 3C) -> q, k, v (B, T, C) each -> heads (B, H, T, d). With a cache: "
    "k, v = cache.update(layer, k, v), now (B, H, T_k, d). mask: causal_mask(T, T_k). "
    "attention -> (B, H, T, d) -> merge_heads (B, T, C) -> proj -> drop.",
    "B, T, C = x.shape\n"
    "q, k, v = self.qkv(x).____(C, dim=2)     # three (B, T, C) tensors\n"
    "q, k, v = ...                            # each into heads: (B, H, T, d)\n"
    "if cache is not None:\n"
    "    k, v = ...                           # this layer's slot: now (B, H, T_k, d)\n"
    "mask = ... if self.causal else None      # (T, T_k)\n"
    "y = ...                                  # attend, then heads back to (B, T, C)\n"
    "return self.drop(self.proj(y))",
)


@exercise("SelfAttention", reference=transformer.SelfAttention, hints=SELF_ATTENTION_HINTS)
def SelfAttention(fn):  # noqa: N802 (the exercise is a class)
    prior = _prior()
    config = prior.config
    ref = prior.blocks[1].attn  # the shipped prior's second layer
    state = ref.state_dict()
    mine = _build(fn, config, state, "SelfAttention")
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 7, config.n_embd, generator=g)  # (B, T, C): 3, 7, 64
    with torch.no_grad():
        full = _whole_sequence(mine, ref, x, "SelfAttention",
                               "compute new tensors; never write into x",
                               lambda: _attention_mistakes(ref, x), SELF_ATTENTION_HINT)

        # A bidirectional layer: no mask at all.
        open_config = dataclasses.replace(config, causal=False)
        bidirectional = _build(fn, open_config, state, "SelfAttention")
        expected = _attend(ref, x, mask="none")
        _expect_output(bidirectional(x), expected, "the output of a causal=False layer",
                  lambda: _attention_mistakes(ref, x, causal=False), BIDIRECTIONAL_HINT)

        # A prefill into an empty cache, at layer 2.
        cache = _cache(3, 9)
        got = mine(x[:, :5], cache, 2)
        expected_cache = _cache(3, 9)
        ref(x[:, :5], expected_cache, 2)
        others = torch.cat([cache.keys[:2], cache.keys[3:]]).abs().sum().item()
        expect(cache.keys.abs().sum().item() > 0, "after a prefill at layer 2 the cache "
               "holds nothing", NO_UPDATE_HINT)
        expect(cache.keys[2].abs().sum().item() > 0 and others == 0,
               "after a prefill at layer 2 the cache's slot 2 should hold the keys and the "
               "other slots nothing", LAYER_SLOT_HINT)
        expect(cache.length == 0, "your SelfAttention moved cache.length (the Transformer "
               "does that once, after its last layer)",
               "SelfAttention only writes into the cache and leaves cache.length alone: the "
               "Transformer moves it on once, after its last block.")
        expect_close(cache.keys, expected_cache.keys, "the cached keys after the prefill",
                     hint=QKV_ORDER_HINT)
        expect_close(cache.values, expected_cache.values, "the cached values after the prefill",
                     hint=QKV_ORDER_HINT)
        _expect_output(got, full[:, :5], "the output of a 5-token prefill into a cache",
                  lambda: _attention_mistakes(ref, x[:, :5], _cache(3, 9), 2), SELF_ATTENTION_HINT)

        # Two new tokens after the 5 cached ones (the cache filled by minitok's layer).
        cache = _cache(3, 9)
        ref(x[:, :5], cache, 2)
        cache.advance(5)
        before = copy.deepcopy(cache)
        got = _call(mine, x[:, 5:7], cache, 2)
        expect_close(cache.keys[2, :, :, :7], full_keys(ref, x, 2), "the cached keys after "
                     "2 new tokens", hint=LAYER_SLOT_HINT)
        _expect_output(got, full[:, 5:7], "the output of 2 new tokens after 5 cached ones",
                  lambda: _attention_mistakes(ref, x[:, 5:7], before, 2), SELF_ATTENTION_HINT)

        # Dropout in training mode (dropout 0.1 in the prior's config).
        mine.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            noisy = mine(x)
        mine.eval()
        expect(not torch.allclose(noisy, full), "in train() mode your SelfAttention's output "
               "equals the eval() output", DROPOUT_HINT)
    return ("the shipped prior's second layer loads; causal and bidirectional outputs, a "
            "prefill into layer 2's cache slot, 2 new tokens after 5 cached")


def _whole_sequence(mine, ref, x, name, in_place_hint, mistakes, hint) -> torch.Tensor:
    """The layer `ref`'s output on all of x (B, T, C), once the learner's layer `mine` has left
    x unchanged and given that output, in x's shape, without a cache."""
    x_before = x.clone()
    full = ref(x)
    got = mine(x)
    expect(torch.equal(x, x_before), f"your {name} changed its input x", in_place_hint)
    expect_shape(got, tuple(x.shape), f"{name}(x {tuple(x.shape)})",
                 hint="the output has the input's shape (B, T, C)")
    _expect_output(got, full, "the output without a cache", mistakes, hint)
    return full


def full_keys(ref, x, layer):
    """The keys ref writes for all of x at `layer` (B, H, T, d)."""
    cache = _cache(x.shape[0], x.shape[1])
    ref(x, cache, layer)
    return cache.keys[layer]


# --------------------------------------------------------------------------- Block

POST_NORM_HINT = (
    "that is a post-norm block (normalise after adding, as in the 2017 Transformer). "
    "minitok's blocks are pre-norm: each sub-layer reads a normalised copy of x, and its "
    "output is added to the untouched x."
)
RESIDUAL_HINT = (
    "a residual connection is missing: each sub-layer's output is ADDED to the x it read "
    "from, it does not replace it."
)
NORM_HINT = (
    "each sub-layer reads its own normalised copy of x: the attention's through ln1, the "
    "MLP's through ln2 (the second from the x after the attention's residual)."
)
ORDER_HINT = "attention first (tokens talk), then the MLP (each token on its own)."
BLOCK_CACHE_HINT = (
    "pass the cache and the layer's number on to the attention: without them it cannot "
    "write into, or read from, this layer's slot."
)
IN_PLACE_HINT = (
    "write x = x + ..., not x += ...: the in-place version changes the tensor the caller "
    "passed in (the previous block's output)."
)
BLOCK_HINT = (
    "go through your forward step by step: the attention (given the cache and the layer's "
    "number) reads a normalised x and its output is added to x; then the MLP reads a "
    "normalised copy of that result, and its output is added in turn."
)


def _block_mistakes(ref, x, cache=None, layer=0):
    """(output, hint) of each classic wrong Block on these inputs."""
    def attn(h, layer=layer):
        return ref.attn(h, copy.deepcopy(cache), layer)

    a = attn(ref.ln1(x))
    return [
        (ref.ln2(ref.ln1(x + attn(x)) + ref.mlp(ref.ln1(x + attn(x)))), POST_NORM_HINT),
        (ref.mlp(ref.ln2(a)), RESIDUAL_HINT),
        (a + ref.mlp(ref.ln2(a)), RESIDUAL_HINT),
        (x + a + ref.mlp(ref.ln2(a)), RESIDUAL_HINT),
        (a + ref.mlp(ref.ln2(x + a)), RESIDUAL_HINT),
        ((x + a) + ref.mlp(ref.ln2(x)), NORM_HINT),
        ((x + a) + ref.mlp(ref.ln1(x + a)), NORM_HINT),
        ((x + attn(x)) + ref.mlp(x + attn(x)), NORM_HINT),
        (x + ref.mlp(ref.ln2(x)) + attn(ref.ln1(x + ref.mlp(ref.ln2(x)))), ORDER_HINT),
    ]


BLOCK_HINTS = (
    "Two sub-layers, each with a residual connection: the attention lets the tokens talk, "
    "the MLP (given: minitok's MLP) lets each token think on its own. Pre-norm: each "
    "sub-layer reads a LayerNorm'd copy of x, and its output is added to x itself.",
    "x <- x + attn(LN1(x)), then x <- x + mlp(LN2(x)); the attention gets the cache and "
    "the layer's number. Layers: ln1, attn (your SelfAttention), ln2, mlp.",
    "# __init__: self.ln1, self.attn (your SelfAttention), self.ln2, self.mlp = MLP(config)\n"
    "x = x + self.attn(____, cache, layer)   # what does the attention read?\n"
    "x = x + ...\n"
    "return x",
)


@exercise("Block", reference=transformer.Block, hints=BLOCK_HINTS)
def Block(fn):  # noqa: N802 (the exercise is a class)
    prior = _prior()
    config = prior.config
    ref = prior.blocks[2]
    mine = _build(fn, config, ref.state_dict(), "Block")
    g = torch.Generator().manual_seed(7)
    x = 2.0 * torch.randn(3, 7, config.n_embd, generator=g) + 0.5  # not normalised already
    with torch.no_grad():
        full = _whole_sequence(mine, ref, x, "Block", IN_PLACE_HINT,
                               lambda: _block_mistakes(ref, x), BLOCK_HINT)

        cache = _cache(3, 9)
        got = mine(x[:, :5], cache, 3)
        expect(cache.keys[3].abs().sum().item() > 0 and cache.keys[:3].abs().sum().item() == 0,
               "after a prefill at layer 3 the cache's slot 3 should hold the keys and the "
               "other slots nothing", BLOCK_CACHE_HINT)
        cache.advance(5)
        got = torch.cat([got, mine(x[:, 5:7], cache, 3)], dim=1)
        _expect_output(got, full, "the output of a 5-token prefill and 2 more tokens "
                       "through the cache", list, BLOCK_CACHE_HINT)
    return "the shipped prior's block 3 loads; pre-norm residual output, with and without a cache"


# --------------------------------------------------------------------------- Transformer

ADVANCE_HINT = (
    "the cache's length did not move on: once the last block is done, the cache must count "
    "the T new positions as filled (KVCache.advance). Every layer writes its keys and values "
    "at positions cache.length .. cache.length + T - 1, so the length may only grow once "
    "all layers are done."
)
ADVANCE_FIRST_HINT = (
    "the cache's length moved on before the blocks ran: they then write the new keys T "
    "places too far, and attend to empty slots. Move it on once, after the last block."
)
LAYER_INDEX_HINT = (
    "every block wrote into the cache's slot 0: give each block its own layer number "
    "(0 for the first block, 1 for the next, ...), so that each writes into its own slot."
)
PASS_CACHE_HINT = (
    "the prefill wrote nothing into the cache: pass the cache (and the layer's number) on "
    "to every block."
)
OFFSET_HINT = (
    "position ids not offset by the cache: the new tokens come after the cache.length cached "
    "ones, so their positions start at cache.length, not at 0. (Without a cache, they start "
    "at 0.)"
)
NO_POSITIONS_HINT = (
    "the position embedding is missing: each token's vector is its token's embedding plus "
    "its position's (wpe), positions offset by the cache's length under a cache."
)
NO_LN_F_HINT = (
    "the final LayerNorm is missing: the head reads the last block's output normalised by "
    "ln_f, not the raw output."
)
TRANSFORMER_HINT = (
    "go through your forward step by step: positions start at the cache's length (0 without "
    "one); token plus position embeddings, then dropout; every block gets the cache and its "
    "own layer number; the cache moves on once, after the last block; the head reads the "
    "final LayerNorm's output."
)
EMBED_DROPOUT_HINT = (
    "dropout on the embeddings is missing: the sum of the token and position embeddings "
    "goes through self.drop. In train() mode, with every block in eval() mode, the logits "
    "should change from call to call when config.dropout > 0."
)


def _forward(ref, idx, cache=None, start=None, positions=True, ln_f=True):
    """minitok's Transformer.forward with a knob per classic mistake (for the hints)."""
    T = idx.shape[1]
    if start is None:
        start = 0 if cache is None else cache.length
    x = ref.wte(idx)
    if positions:
        x = x + ref.wpe(torch.arange(start, start + T))
    for layer, block in enumerate(ref.blocks):
        x = block(x, cache, layer)
    if cache is not None:
        cache.advance(T)
    return ref.head(ref.ln_f(x) if ln_f else x)


def _forward_mistakes(ref, idx, cache=None):
    def run(**knobs):
        return _forward(ref, idx, copy.deepcopy(cache), **knobs)

    wrong = [(run(positions=False), NO_POSITIONS_HINT), (run(ln_f=False), NO_LN_F_HINT)]
    if cache is not None and cache.length > 0:
        wrong.insert(0, (run(start=0), OFFSET_HINT))
    return wrong


TRANSFORMER_HINTS = (
    "The model: a token table and a position table (their vectors are added), your blocks "
    "in order, a final LayerNorm and a head that gives logits over the vocabulary. With a "
    "cache, idx holds only the new tokens: their positions continue after the cached ones, "
    "every block writes into its own layer's slot, and the cache's length moves on once, "
    "at the end.",
    "idx (B, T) -> wte (B, T, C) + wpe(pos) (T, C), pos = start .. start + T - 1 with "
    "start = cache.length (0 without one) -> drop -> block(x, cache, layer) for "
    "layer = 0 .. n_layer - 1 -> cache.advance(T) -> ln_f -> head: (B, T, V).",
    "start = 0 if cache is None else cache.length\n"
    "pos = torch.arange(start, start + T, device=idx.device)\n"
    "x = self.drop(self.wte(idx) + self.wpe(pos))\n"
    "for layer, block in enumerate(self.blocks):\n    x = ...\n"
    "if cache is not None:\n    ...\nreturn self.head(self.ln_f(x))",
)


def _check_cache_writes(cache, expected, T: int) -> None:
    """Name what went wrong when the prefill's cache differs from minitok's."""
    keys, want = cache.keys, expected.keys
    if torch.allclose(keys, want, atol=1e-4, rtol=1e-4):
        return
    expect(keys.abs().sum().item() > 0, "the prefill wrote nothing into the cache",
           PASS_CACHE_HINT)
    expect(keys[1:].abs().sum().item() > 0, "after the prefill only the cache's slot 0 "
           "holds keys", LAYER_INDEX_HINT)
    expect(keys[:, :, :, :T].abs().sum().item() > 0, f"the prefill wrote its keys after "
           f"position {T}, not at positions 0 .. {T - 1}", ADVANCE_FIRST_HINT)
    expect_close(keys, want, "the cached keys after the prefill", atol=1e-4, rtol=1e-4,
                 hint=TRANSFORMER_HINT)


@exercise("Transformer", reference=transformer.Transformer, hints=TRANSFORMER_HINTS)
def Transformer(fn):  # noqa: N802 (the exercise is a class)
    prior = _prior()
    config = prior.config  # the shipped prior's: V = 75, 65 positions, 4 layers of 64
    mine = _build(fn, config, prior.state_dict(), "Transformer")
    g = torch.Generator().manual_seed(8)
    B, T = 3, 13
    idx = torch.randint(0, 64, (B, T), generator=g)  # codes ...
    idx[:, 0] = 64 + torch.randint(0, 10, (B,), generator=g)  # ... after a class token
    idx_before = idx.clone()
    with torch.no_grad():
        full = prior(idx)  # (3, 13, 75)
        got = mine(idx)
        expect(torch.equal(idx, idx_before), "your Transformer changed its input idx",
               "compute new tensors; never write into idx")
        expect_shape(got, (B, T, config.vocab_size), "Transformer(idx (3, 13))",
                     hint="logits: one row of vocab_size scores per position, (B, T, V)")
        _expect_output(got, full, "the logits without a cache",
                       lambda: _forward_mistakes(prior, idx), TRANSFORMER_HINT)

        # Prefill 5 tokens, then 1, then 2, then one at a time to the end.
        cache = _cache(B, T)
        expected_cache = _cache(B, T)
        prior(idx[:, :5], expected_cache)
        got = mine(idx[:, :5], cache)
        _check_cache_writes(cache, expected_cache, 5)
        expect(cache.length == 5,
               f"after a 5-token prefill cache.length should be 5, got {cache.length}",
               ADVANCE_HINT)
        _expect_output(got, full[:, :5], "the logits of the 5-token prefill",
                       lambda: _forward_mistakes(prior, idx[:, :5], _cache(B, T)), TRANSFORMER_HINT)
        t = 5
        for n in (1, 2, 1, 1, 1, 1, 1):
            before = copy.deepcopy(cache)
            got = mine(idx[:, t : t + n], cache)
            _expect_output(got, full[:, t : t + n],
                           f"the logits of {n} new token(s) at position {t} (after {t} cached)",
                           functools.partial(_forward_mistakes, prior, idx[:, t : t + n],
                                             before),
                           TRANSFORMER_HINT)
            expect(cache.length == t + n, f"cache.length should be {t + n} after "
                   f"position {t + n - 1}, got {cache.length}", ADVANCE_HINT)
            t += n

        # Dropout on the embeddings (the blocks in eval mode, dropout 0.1 in the config).
        mine.train()
        mine.blocks.eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            noisy = mine(idx)
        mine.eval()
        expect(not torch.allclose(noisy, full), "in train() mode your Transformer's logits "
               "equal the eval() ones", EMBED_DROPOUT_HINT)
    return ("the shipped prior's weights load with strict=True; the same logits without a "
            "cache, and through it: a 5-token prefill, then 1, 2 and 1-token steps")


def hint(name: str, level: int | None = None) -> None:
    """The next hint for exercise `name` (1 the idea, 2 the formula, 3 near-code)."""
    show_hint(__name__, name, level)
