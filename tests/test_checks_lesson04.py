"""Lesson 04's checks fail each classic mistake with the hint that names it.

What every lesson's checks must do (pass the reference, report an unfinished exercise, leave
the RNG and thread count alone) is tested once for all lessons in tests/test_checks_all.py.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from checking import assert_each_hint_is_its_own, assert_fails_with, verdict

from minitok import transformer
from minitok.checks import exercises_in, lesson04
from minitok.transformer import MLP, TransformerBase, causal_mask, merge_heads, split_heads

pytestmark = pytest.mark.usefixtures("transport")  # local and through the wire

# --------------------------------------------------------------------------- attention


def attention_parts(q, k, v, mask=None, scale=None, dim=-1, fill=float("-inf"), invert=False,
                    after=False):
    """A hand-written attention with a knob for each classic mistake."""
    d = q.shape[-1]
    scores = q @ k.transpose(-2, -1) * (1 / math.sqrt(d) if scale is None else scale)
    if mask is not None and not after:
        hide = mask if invert else ~mask
        scores = scores.masked_fill(hide, fill)
    weights = torch.softmax(scores, dim=dim)
    if mask is not None and after:
        weights = weights * mask
    return weights @ v


def test_attention_accepts_a_hand_written_version():
    assert verdict(lesson04.attention, attention_parts).passed


def test_attention_scaled_by_1_over_d_fails():
    def wrong(q, k, v, mask=None):
        return attention_parts(q, k, v, mask, scale=1 / q.shape[-1])

    assert_fails_with(lesson04.attention, wrong, "1/sqrt(d_head)", "1/d")


def test_attention_unscaled_fails():
    assert_fails_with(lesson04.attention, lambda q, k, v, mask=None:
                      attention_parts(q, k, v, mask, scale=1.0), "1/sqrt(d_head)")


def test_attention_softmax_over_the_wrong_axis_fails():
    def wrong(q, k, v, mask=None):
        return attention_parts(q, k, v, mask, dim=-2)

    assert_fails_with(lesson04.attention, wrong, "dim=-1", "over the keys")


def test_attention_masking_with_zero_instead_of_minus_inf_fails():
    def wrong(q, k, v, mask=None):
        return attention_parts(q, k, v, mask, fill=0.0)

    assert_fails_with(lesson04.attention, wrong, "-inf", "Masking with 0")


def test_attention_with_the_mask_meaning_reversed_fails():
    def wrong(q, k, v, mask=None):
        return attention_parts(q, k, v, mask, invert=True)

    assert_fails_with(lesson04.attention, wrong, "True where a query MAY attend")


def test_attention_masking_after_the_softmax_fails():
    def wrong(q, k, v, mask=None):
        return attention_parts(q, k, v, mask, after=True)

    assert_fails_with(lesson04.attention, wrong, "before the softmax")


# --------------------------------------------------------------------------- causal mask


def mask_with(diagonal_shift=0, top_left=False, upper=False, dtype=torch.bool):
    def make(T_q, T_k=None, device=None):
        T_k = T_q if T_k is None else T_k
        ones = torch.ones(T_q, T_k, dtype=torch.bool, device=device)
        if upper:
            return torch.triu(ones, diagonal=T_k - T_q).to(dtype)
        base = 0 if top_left else T_k - T_q
        return torch.tril(ones, diagonal=base + diagonal_shift).to(dtype)

    return make


def test_causal_mask_accepts_a_hand_written_version():
    assert verdict(lesson04.causal_mask, mask_with()).passed


def test_causal_mask_hiding_the_diagonal_fails():
    assert_fails_with(lesson04.causal_mask, mask_with(diagonal_shift=-1), "hides the diagonal")


def test_causal_mask_showing_the_future_fails():
    assert_fails_with(lesson04.causal_mask, mask_with(diagonal_shift=1),
                      "shows the future", "off by one")


def test_causal_mask_aligned_top_left_fails():
    assert_fails_with(lesson04.causal_mask, mask_with(top_left=True), "bottom-right", "key 0 only")


def test_causal_mask_upper_triangle_fails():
    assert_fails_with(lesson04.causal_mask, mask_with(upper=True), "lower triangle")


def test_causal_mask_of_floats_fails():
    assert_fails_with(lesson04.causal_mask, mask_with(dtype=torch.float32), "bool")


# --------------------------------------------------------------------------- heads


def test_split_heads_without_transpose_fails():
    def wrong(x, n_head):
        B, T, C = x.shape
        return x.view(B, n_head, T, C // n_head)

    assert_fails_with(lesson04.split_heads, wrong, "transpose(1, 2)", "cuts across tokens")


def test_merge_heads_without_transpose_fails():
    def wrong(x):
        B, H, T, d = x.shape
        return x.reshape(B, T, H * d)

    assert_fails_with(lesson04.merge_heads, wrong, "transpose(1, 2) back")


def test_merge_heads_with_view_fails_on_a_real_attention_output():
    """x.transpose(1, 2).view(...) works on split_heads' output (transposed back, it is
    contiguous again) but not on attention's output, a contiguous (B, H, T, d) tensor."""
    def with_view(x):
        B, H, T, d = x.shape
        return x.transpose(1, 2).view(B, T, H * d)

    assert_fails_with(lesson04.merge_heads, with_view, "Use .reshape")


def test_split_heads_with_a_flat_view_fails_on_a_slice_of_qkv():
    def flat_view(x, n_head):
        B, T, C = x.shape
        return x.view(B * T * C).view(B, T, n_head, C // n_head).transpose(1, 2)

    assert_fails_with(lesson04.split_heads, flat_view, "Use .reshape")


# --------------------------------------------------------------------------- hints


def test_every_check_has_three_hints_on_demand(capsys):
    for name, check_fn in exercises_in(lesson04).items():
        assert len(check_fn.hints) == 3 and all(len(h) > 40 for h in check_fn.hints), name
        lesson04.hint(name, 3)
        assert f"hint 3 of 3 for {name}" in capsys.readouterr().out


# --------------------------------------------------------------------------- SelfAttention


def attention_class(mask="causal", heads="split", qkv="split", scale=None, proj=True,
                    use_layer=True, dropout=True, advance=False, qkv_name="qkv", use_cache=True):
    """A hand-written SelfAttention with a knob for each classic mistake."""

    class SelfAttention(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.n_head = config.n_head
            self.causal = config.causal
            setattr(self, qkv_name, nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias))
            self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
            self.drop = nn.Dropout(config.dropout if dropout else 0.0)

        def forward(self, x, cache=None, layer=0):
            B, T, C = x.shape
            H = self.n_head
            if qkv == "split":
                q, k, v = getattr(self, qkv_name)(x).split(C, dim=2)
            else:
                q, k, v = self.qkv(x).view(B, T, H, 3 * (C // H)).split(C // H, dim=3)
                q, k, v = (t.reshape(B, T, C) for t in (q, k, v))
            if heads == "split":
                q, k, v = (split_heads(t, H) for t in (q, k, v))
            else:
                q, k, v = (t.reshape(B, H, T, C // H) for t in (q, k, v))
            T_k = T
            if mask == "square" and self.causal:  # built before the cache update
                m = causal_mask(T)
            if cache is not None and use_cache:
                k, v = cache.update(layer if use_layer else 0, k, v)
                T_k = k.shape[2]
                if advance:
                    cache.advance(T)
            if mask == "causal":
                m = causal_mask(T, T_k) if self.causal else None
            elif mask == "top-left":
                m = torch.tril(torch.ones(T, T_k, dtype=torch.bool)) if self.causal else None
            elif mask in ("none", "after-softmax") or not self.causal:
                m = None
            d = q.shape[-1]
            scores = q @ k.transpose(-2, -1) * (1 / math.sqrt(d) if scale is None else scale)
            if m is not None:
                scores = scores.masked_fill(~m, float("-inf"))
            if mask == "after-softmax" and self.causal:  # weights zeroed, not renormalised
                weights = torch.softmax(scores, dim=-1).masked_fill(~causal_mask(T, T_k), 0)
            else:
                weights = torch.softmax(scores, dim=-1)
            y = weights @ v
            y = merge_heads(y) if heads == "split" else y.reshape(B, T, C)
            return self.drop(self.proj(y) if proj else y)

    return SelfAttention


def test_self_attention_accepts_a_hand_written_version():
    assert verdict(lesson04.SelfAttention, attention_class()).passed


def test_self_attention_accepts_sdpa_with_an_explicit_mask():
    base = attention_class()

    class SelfAttention(base):
        def forward(self, x, cache=None, layer=0):
            B, T, C = x.shape
            q, k, v = (split_heads(t, self.n_head) for t in self.qkv(x).split(C, dim=2))
            if cache is not None:
                k, v = cache.update(layer, k, v)
            mask = causal_mask(T, k.shape[2]) if self.causal else None
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            return self.drop(self.proj(merge_heads(y)))

    assert verdict(lesson04.SelfAttention, SelfAttention).passed


SELF_ATTENTION_MISTAKES = [
    ({"qkv_name": "c_attn"}, ("attribute names", "qkv (Linear C -> 3C)")),
    ({"mask": "none"}, ("the future", "must mask its scores")),
    ({"mask": "top-left"}, ("LAST T", "bottom-right")),
    ({"mask": "square"}, ("built for the new tokens only", "one column per key")),
    ({"heads": "view"}, ("heads split in the wrong order",)),
    ({"qkv": "interleaved"}, ("q, then k, then v",)),
    ({"scale": 1 / 8}, ("wrong scale",)),
    ({"scale": 1.0}, ("wrong scale",)),
    ({"proj": False}, ("self.proj",)),
    ({"use_layer": False}, ("its own slot", "the `layer` argument")),
    ({"advance": True}, ("leaves cache.length",)),
    ({"dropout": False}, ("dropout is missing",)),
]
SELF_ATTENTION_MISTAKES_IDS = ["names", "no-mask", "top-left", "mask-before-cache", "heads",
                               "qkv-order", "scale-1/C", "unscaled", "no-proj", "layer",
                               "advance", "no-dropout"]


@pytest.mark.parametrize(("knobs", "words"), SELF_ATTENTION_MISTAKES,
                         ids=SELF_ATTENTION_MISTAKES_IDS)
def test_self_attention_mistakes_fail_with_their_hint(knobs, words):
    assert_fails_with(lesson04.SelfAttention, attention_class(**knobs), *words)


def test_self_attention_mistakes_each_get_their_own_hint():
    rows = [(attention_class(**knobs), words) for knobs, words in SELF_ATTENTION_MISTAKES]
    assert_each_hint_is_its_own(lesson04.SelfAttention, rows)


def test_self_attention_ignoring_its_cache_fails():
    assert_fails_with(lesson04.SelfAttention, attention_class(use_cache=False),
                      "ignored its cache", "cached and new")


@pytest.mark.parametrize("knobs", [{"mask": "after-softmax"}, {"scale": 0.3}],
                         ids=["mask-after-softmax", "odd-scale"])
def test_self_attention_mistakes_no_hint_knows_get_the_general_hint(knobs):
    """No known mistake gives these outputs: the hint is the general one, not the last
    known mistake's (a loop variable once shadowed it)."""
    result = verdict(lesson04.SelfAttention, attention_class(**knobs))
    assert result.status == "failed" and result.hint == lesson04.SELF_ATTENTION_HINT, \
        result.render()


def test_self_attention_masking_a_bidirectional_layer_fails():
    base = attention_class()

    class SelfAttention(base):
        def __init__(self, config):
            super().__init__(config)
            self.causal = True  # ignores config.causal

    assert_fails_with(lesson04.SelfAttention, SelfAttention, "config.causal False")


def test_self_attention_no_mask_only_under_a_cache_fails():
    base = attention_class()

    class SelfAttention(base):
        def forward(self, x, cache=None, layer=0):
            causal = self.causal
            self.causal = causal and cache is None  # "one query at a time needs no mask"
            try:
                return super().forward(x, cache, layer)
            finally:
                self.causal = causal

    assert_fails_with(lesson04.SelfAttention, SelfAttention, "still needed", "cache or not")


# --------------------------------------------------------------------------- Block


def block_class(kind="pre-norm", pass_cache=True, in_place=False, names=("ln1", "ln2")):
    class Block(nn.Module):
        def __init__(self, config):
            super().__init__()
            setattr(self, names[0], nn.LayerNorm(config.n_embd, bias=config.bias))
            self.attn = transformer.SelfAttention(config)
            setattr(self, names[1], nn.LayerNorm(config.n_embd, bias=config.bias))
            self.mlp = MLP(config)

        def forward(self, x, cache=None, layer=0):
            ln1, ln2 = getattr(self, names[0]), getattr(self, names[1])
            args = (cache, layer) if pass_cache else ()
            if kind == "post-norm":
                x = ln1(x + self.attn(x, *args))
                return ln2(x + self.mlp(x))
            if kind == "no-residual":
                x = self.attn(ln1(x), *args)
                return self.mlp(ln2(x))
            if kind == "one-norm":
                x = x + self.attn(ln1(x), *args)
                return x + self.mlp(ln1(x))
            if kind == "no-mlp-residual":
                x = x + self.attn(ln1(x), *args)
                return self.mlp(ln2(x))
            if kind == "mlp-first":
                x = x + self.mlp(ln2(x))
                return x + self.attn(ln1(x), *args)
            if in_place:
                x += self.attn(ln1(x), *args)
                x += self.mlp(ln2(x))
                return x
            x = x + self.attn(ln1(x), *args)
            return x + self.mlp(ln2(x))

    return Block


def test_block_accepts_a_hand_written_version():
    assert verdict(lesson04.Block, block_class()).passed


BLOCK_MISTAKES = [
    ({"names": ("norm1", "norm2")}, ("attribute names", "ln1, attn")),
    ({"kind": "post-norm"}, ("post-norm", "pre-norm")),
    ({"kind": "no-residual"}, ("residual connection is missing",)),
    ({"kind": "one-norm"}, ("from the x after the attention",)),
    ({"kind": "mlp-first"}, ("attention first",)),
    ({"pass_cache": False}, ("pass the cache and the layer's number",)),
    ({"in_place": True}, ("not x += ...",)),
]
BLOCK_MISTAKES_IDS = ["names", "post-norm", "no-residual", "one-norm", "mlp-first", "cache",
                      "in-place"]


@pytest.mark.parametrize(("knobs", "words"), BLOCK_MISTAKES,
                         ids=BLOCK_MISTAKES_IDS)
def test_block_mistakes_fail_with_their_hint(knobs, words):
    assert_fails_with(lesson04.Block, block_class(**knobs), *words)


def test_block_mistakes_each_get_their_own_hint():
    rows = [(block_class(**knobs), words) for knobs, words in BLOCK_MISTAKES]
    assert_each_hint_is_its_own(lesson04.Block, rows)


def test_block_without_the_mlp_residual_gets_the_general_hint():
    result = verdict(lesson04.Block, block_class(kind="no-mlp-residual"))
    assert result.status == "failed" and result.hint == lesson04.BLOCK_HINT, result.render()


# --------------------------------------------------------------------------- Transformer


def transformer_class(offset=True, advance="after", layer_index=True, pass_cache=True,
                      positions=True, ln_f=True, embed_dropout=True, head_bias=False):
    """A hand-written Transformer with a knob for each classic mistake."""

    class Transformer(TransformerBase):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.wte = nn.Embedding(config.vocab_size, config.n_embd)
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
            self.drop = nn.Dropout(config.dropout if embed_dropout else 0.0)
            self.blocks = nn.ModuleList([transformer.Block(config)
                                         for _ in range(config.n_layer)])
            self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
            self.head = nn.Linear(config.n_embd, config.vocab_size, bias=head_bias)
            self.init_weights()

        def forward(self, idx, cache=None):
            B, T = idx.shape
            if cache is not None and advance == "before":
                cache.advance(T)
            start = 0 if cache is None or not offset else cache.length
            if advance == "before" and cache is not None:
                start -= T
            pos = torch.arange(start, start + T)
            x = self.wte(idx) + (self.wpe(pos) if positions else 0)
            x = self.drop(x)
            for layer, block in enumerate(self.blocks):
                if pass_cache and layer_index:
                    x = block(x, cache, layer)
                elif pass_cache:
                    x = block(x, cache)
                else:
                    x = block(x)
            if cache is not None and advance == "after":
                cache.advance(T)
            return self.head(self.ln_f(x) if ln_f else x)

    return Transformer


def test_transformer_accepts_a_hand_written_version():
    assert verdict(lesson04.Transformer, transformer_class()).passed


TRANSFORMER_MISTAKES = [
    ({"head_bias": True}, ("attribute names", "bias=False")),
    ({"offset": False}, ("position ids not offset", "cache.length")),
    ({"layer_index": False}, ("slot 0", "its own layer number")),
    ({"advance": "before"}, ("before the blocks ran", "after the last block")),
    ({"advance": "never"}, ("did not move on", "once all layers are done")),
    ({"pass_cache": False}, ("wrote nothing", "pass the cache")),
    ({"positions": False}, ("position embedding is missing",)),
    ({"ln_f": False}, ("final LayerNorm is missing",)),
    ({"embed_dropout": False}, ("dropout on the embeddings is missing",)),
]
TRANSFORMER_MISTAKES_IDS = ["names", "offset", "layer-index", "advance-first", "no-advance",
                            "no-cache", "no-positions", "no-ln_f", "no-dropout"]


@pytest.mark.parametrize(("knobs", "words"), TRANSFORMER_MISTAKES,
                         ids=TRANSFORMER_MISTAKES_IDS)
def test_transformer_mistakes_fail_with_their_hint(knobs, words):
    assert_fails_with(lesson04.Transformer, transformer_class(**knobs), *words)


def test_transformer_mistakes_each_get_their_own_hint():
    rows = [(transformer_class(**knobs), words) for knobs, words in TRANSFORMER_MISTAKES]
    assert_each_hint_is_its_own(lesson04.Transformer, rows)


def test_self_attention_with_sdpa_is_causal_fails_under_a_cache():
    base = attention_class()

    class SelfAttention(base):
        def forward(self, x, cache=None, layer=0):
            B, T, C = x.shape
            q, k, v = (split_heads(t, self.n_head) for t in self.qkv(x).split(C, dim=2))
            if cache is not None:
                k, v = cache.update(layer, k, v)
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
            return self.drop(self.proj(merge_heads(y)))

    assert_fails_with(lesson04.SelfAttention, SelfAttention, "bottom-right", "is_causal=True")


def test_transformer_accepts_positions_sliced_from_the_table():
    base = transformer_class()

    class Transformer(base):
        def forward(self, idx, cache=None):
            T = idx.shape[1]
            start = cache.length if cache is not None else 0
            x = self.drop(self.wte(idx) + self.wpe.weight[start : start + T])
            for i in range(len(self.blocks)):
                x = self.blocks[i](x, cache=cache, layer=i)
            if cache is not None:
                cache.advance(T)
            return self.head(self.ln_f(x))

    assert verdict(lesson04.Transformer, Transformer).passed
