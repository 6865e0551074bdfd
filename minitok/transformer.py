"""Lesson 04: a transformer over tokens, written from scratch, with a KV cache.

The same model serves the rest of the course:

    causal=True    the autoregressive prior (Lesson 05): token t sees tokens 0..t only
    causal=False   MaskGIT (Lesson 06): every token sees every other token
    any vocabulary the any-to-any model (Lesson 07): text and image tokens in one table

Reading order: `attention` (the one formula everything stands on), `causal_mask`,
`split_heads` / `merge_heads`, `KVCache`, then the modules `SelfAttention`, `MLP`, `Block`,
`Transformer` (what the lesson's learner writes, with these parameter names, so that the
shipped checkpoints load into their classes), and finally `generate`.

Positions are learned (nanoGPT's position table). Lesson 04 also shows 2D rotary embeddings
(`minitok.rope`), but no model of the course uses them.

Arguments are checked where they come in: `TransformerConfig`, `Transformer.forward`'s
token ids and cache, `new_cache` and `generate`. The functions the model calls on every
step (attention, the mask, the heads, the cache's writes) trust their inputs.

Shapes use B = batch, T = tokens, C = n_embd, H = n_head, d = C // H (head size),
V = vocab_size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from minitok import validate

# --------------------------------------------------------------------------- attention


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None
                      ) -> torch.Tensor:
    """How much each query looks at each key: softmax(q k^T / sqrt(d)), (..., T_q, T_k).

    Every row sums to 1. Where `mask` is False the score is set to -inf *before* the
    softmax, so that key gets a weight of exactly 0 (exp(-inf) = 0) and the other weights
    still sum to 1. A row whose mask is all False has no key to look at: its weights are
    NaN (0 / 0), so never build such a mask.
    """
    d = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # (..., T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)  # over the keys: each row sums to 1


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention: softmax(q k^T / sqrt(d)) v, (..., T_q, d_v).

    q (..., T_q, d), k (..., T_k, d), v (..., T_k, d_v): (B, H, T, d) in the model (any
    leading dims that broadcast work).
    mask: bool, broadcastable to (..., T_q, T_k), True where a query may attend to a key
    (note: torch.nn.MultiheadAttention's bool `attn_mask` means the opposite).

    Each output row is a weighted average of the value rows, weighted by how well the query
    matches each key. Equal to torch.nn.functional.scaled_dot_product_attention(q, k, v,
    attn_mask=mask). The notebook's solution in two steps: the weights (which the lesson
    plots), then their average of the values.
    """
    weights = attention_weights(q, k, mask)  # (..., T_q, T_k)
    return weights @ v  # (..., T_q, d_v)


def causal_mask(T_q: int, T_k: int | None = None, device=None) -> torch.Tensor:
    """Which key each query may look at: a (T_q, T_k) bool tensor, True = may attend.

    With T_k = T_q this is the lower triangle: token i sees tokens 0..i (itself included)
    and nothing after it. With a KV cache the T_q new queries are the *last* T_q of T_k
    positions, so the triangle is aligned to the bottom-right corner: query i sits at
    position T_k - T_q + i and sees keys 0..T_k - T_q + i. A single new query (T_q = 1)
    therefore sees every cached key. (A top-left aligned mask, which is what
    `scaled_dot_product_attention(..., is_causal=True)` builds, would let it see key 0 only.)
    """
    validate.positive_int(T_q, "T_q")  # no query: an empty mask that attends nowhere
    T_k = T_q if T_k is None else validate.positive_int(T_k, "T_k")
    if T_k < T_q:  # the first queries would see no key at all: NaN attention
        raise ValueError(f"T_k ({T_k}) must be >= T_q ({T_q}): the queries are the last T_q")
    ones = torch.ones(T_q, T_k, dtype=torch.bool, device=device)  # (T_q, T_k)
    return torch.tril(ones, diagonal=T_k - T_q)  # (T_q, T_k)


def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, C) -> (B, H, T, C/H): cut each token's channels into n_head heads.

    Token t's channels [h*d, (h+1)*d) become head h's vector for token t. The heads move to
    dimension 1 so that attention runs over (T, d) for every (batch, head) at once.
    """
    B, T, C = x.shape
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, H, T, d)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, d) -> (B, T, H*d): the inverse of split_heads, heads side by side again."""
    B, H, T, d = x.shape
    return x.transpose(1, 2).reshape(B, T, H * d)  # (B, T, C)


# --------------------------------------------------------------------------- config


@dataclass
class TransformerConfig:
    """Everything that decides a Transformer's shape.

    vocab_size: number of token ids (0..V-1). block_size: the longest sequence the model
    reads (its context). causal: True for next-token prediction, False for bidirectional
    attention (MaskGIT). bias: biases in the Linear and LayerNorm layers.
    """

    vocab_size: int
    block_size: int
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    causal: bool = True
    bias: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            validate.positive_int(getattr(self, name), name)
        validate.number(self.dropout, "dropout", low=0, high=1, high_open=True)
        for name in ("causal", "bias"):  # "no" would be read as True
            validate.flag(getattr(self, name), name)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def count_parameters(config: TransformerConfig) -> int:
    """The number of parameters of Transformer(config), from the config alone.

    Per block: two LayerNorms (2C each), the qkv projection (3C^2 + 3C), the output
    projection (C^2 + C) and the MLP (4C^2 + 4C, then 4C^2 + C): 12 C^2 + 13 C with biases.
    Plus the token table (V C), the position table (block_size C), the final LayerNorm (2C)
    and the head (C V, no bias).
    """
    validate.instance(config, "config", TransformerConfig)
    C, V, b = config.n_embd, config.vocab_size, int(config.bias)
    norm = C + b * C
    per_block = 2 * norm + (3 * C * C + b * 3 * C) + (C * C + b * C)  # norms + attention
    per_block += (4 * C * C + b * 4 * C) + (4 * C * C + b * C)  # MLP
    return V * C + config.block_size * C + config.n_layer * per_block + norm + C * V


# --------------------------------------------------------------------------- KV cache


class KVCache:
    """The keys and values every layer has computed so far, so that they are not recomputed.

    During generation token t attends to the keys and values of tokens 0..t. Those of
    tokens 0..t-1 do not change when token t arrives (the mask stops them from looking
    ahead), so they are kept here: each step computes q, k, v for the new token only.

    Storage is allocated once: (n_layer, B, H, max_len, d) for keys and values, of which
    the first `length` positions are filled. Make one with `model.new_cache(B)`: the model
    checks, on every call, that the cache was made for its shape (`made_for`).
    """

    def __init__(self, n_layer: int, batch_size: int, n_head: int, max_len: int,
                 head_dim: int, device=None, dtype: torch.dtype = torch.float32):
        self.made_for = (n_layer, batch_size, n_head, head_dim)
        shape = (n_layer, batch_size, n_head, max_len, head_dim)
        for name, size in zip(("n_layer", "batch_size", "n_head", "max_len", "head_dim"), shape,
                              strict=True):
            validate.positive_int(size, name)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype (keys and values are "
                            f"vectors), got {dtype!r}")
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # how many positions are filled

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    @property
    def max_len(self) -> int:
        return self.keys.shape[3]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write layer `layer`'s new keys/values (B, H, T, d) after the cached ones.

        Returns all of that layer's keys and values so far, (B, H, length + T, d). `length`
        itself moves on only in `advance`, once every layer has written its part.
        """
        end = self.length + k.shape[2]
        self.keys[layer, :, :, self.length:end] = k
        self.values[layer, :, :, self.length:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, T: int) -> None:
        """Count T more positions as cached (the model calls this after its last layer)."""
        if self.length + validate.non_negative_int(T, "T") > self.max_len:
            raise ValueError(f"T: {self.length} cached + {T} new positions > max_len {self.max_len}")
        self.length += T

    def reset(self) -> None:
        """Forget everything (the storage is reused)."""
        self.length = 0


# --------------------------------------------------------------------------- modules


class SelfAttention(nn.Module):
    """Multi-head self-attention: project to q, k, v, attend within each head, project back."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.n_head = config.n_head
        self.causal = config.causal
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0
                ) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C); with a cache, this layer's keys and values are appended
        to it and the T new queries attend to every cached key as well."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q = split_heads(q, self.n_head)  # (B, H, T, d)
        k = split_heads(k, self.n_head)  # (B, H, T, d)
        v = split_heads(v, self.n_head)  # (B, H, T, d)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, H, T_k, d): the cached keys, then these
        mask = None  # bidirectional: every token sees every token
        if self.causal:
            mask = causal_mask(T, k.shape[2], device=x.device)  # (T, T_k), bottom-right aligned
        y = attention(q, k, v, mask)  # (B, H, T, d)
        return self.drop(self.proj(merge_heads(y)))  # (B, T, C)


class MLP(nn.Module):
    """The per-token feed-forward part: widen 4x, GELU, project back."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(self.gelu(self.fc(x))))  # (B, T, C)


class Block(nn.Module):
    """A pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)).

    Normalising *before* each sub-layer (pre-norm, as in GPT-2 and LlamaGen) leaves the
    residual path x -> x + ... untouched from the embeddings to the head, which is what
    makes deep stacks train without warm-up tricks.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = SelfAttention(config)
        self.ln2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0
                ) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)  # (B, T, C): tokens talk
        x = x + self.mlp(self.ln2(x))  # (B, T, C): each token thinks on its own
        return x


def _init_gpt2(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class TransformerBase(nn.Module):
    """What a Transformer has besides its layers and its forward pass, written once.

    GPT-2's initialisation, the parameter count, the checks of the forward pass's inputs
    and the KV cache: Lesson 04's learner writes `Transformer(TransformerBase)`, its layers
    and forward pass, and gets these. A subclass sets `self.config` and the layers `wte`,
    `wpe`, `blocks`, `ln_f` and `head`.
    """

    config: TransformerConfig

    def init_weights(self) -> None:
        """GPT-2's initialisation: N(0, 0.02) weights, zero biases, and the projections into
        the residual stream scaled down by sqrt(2 * n_layer) (one per sub-layer)."""
        self.apply(_init_gpt2)  # children first, as nanoGPT
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layer))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def check_input(self, idx: torch.Tensor, cache: KVCache | None) -> None:
        """Clear errors naming idx or cache, instead of an index error deep inside an
        embedding, a failed cache write, or (for a cache of another batch size) a silent
        broadcast."""
        c = self.config
        validate.index_tensor(idx, "idx", c.vocab_size, dim=2)
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache (model.new_cache(B)) or None, got "
                            f"{type(cache).__name__}")
        B, T = idx.shape
        start = 0 if cache is None else cache.length  # where the new tokens begin
        if start + T > c.block_size:
            after = f" after {start} cached tokens" if cache is not None else ""
            raise ValueError(f"idx has {T} tokens{after}, more than block_size = {c.block_size} "
                             f"(the longest sequence this model reads)")
        need = (c.n_layer, B, c.n_head, c.head_dim)  # the cache this model and idx write into
        if cache is not None and cache.made_for != need:
            raise ValueError(f"cache: made for (n_layer, batch, n_head, head_dim) = "
                             f"{cache.made_for}, but this model and idx need {need}")
        if cache is not None and start + T > cache.max_len:
            raise ValueError(f"cache is full: {start} cached + {T} new > max_len {cache.max_len}")

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty KV cache for `batch_size` sequences of up to `max_len` (block_size) tokens."""
        c, weight = self.config, self.wte.weight
        if not c.causal:  # bidirectional: every key changes when a token arrives, none is reusable
            raise ValueError("new_cache: a KV cache needs causal=True")
        max_len = c.block_size if max_len is None else max_len
        validate.number(max_len, "max_len", low=1, high=c.block_size)
        return KVCache(c.n_layer, batch_size, c.n_head, max_len, c.head_dim,
                       device=weight.device, dtype=weight.dtype)


class Transformer(TransformerBase):
    """Token ids (B, T) -> next-token logits (B, T, V).

    With causal=True, logits[:, t] predicts token t+1 from tokens 0..t, for every t in one
    pass (teacher forcing). With a `cache`, idx holds only the *new* tokens: their positions
    continue after the cached ones and their keys/values are appended to the cache.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token id -> vector
        self.wpe = nn.Embedding(config.block_size, config.n_embd)  # position -> vector
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.init_weights()

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        self.check_input(idx, cache)
        B, T = idx.shape
        start = 0 if cache is None else cache.length  # positions continue after the cache
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)  # (B, T, C): every layer writes its own keys
        if cache is not None:
            cache.advance(T)  # once every layer has written its part
        return self.head(self.ln_f(x))  # (B, T, V)


# --------------------------------------------------------------------------- generation


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """The default `pick`: the most likely token of each row, (B, V) -> (B,)."""
    return logits.argmax(dim=-1)


@torch.no_grad()
def generate(model: Transformer, prompt: torch.Tensor, max_new_tokens: int,
             use_cache: bool = True, pick: Callable[[torch.Tensor], torch.Tensor] | None = None
             ) -> torch.Tensor:
    """Extend `prompt` (B, T0) by `max_new_tokens` tokens, one at a time: (B, T0 + new).

    `pick(logits (B, V)) -> (B,)` chooses each next token from the last position's logits
    (greedy argmax by default; sampling rules plug in here). With `use_cache` the prompt is
    run once (prefill) and each step then feeds only the newest token: n forward passes of
    one token. Without it every step re-runs the whole prefix (nanoGPT's `generate`): the
    same tokens, at O(T^2) token-passes instead of O(T). Call model.eval() first.
    """
    B, T0 = validate.index_tensor(prompt, "prompt", model.config.vocab_size, dim=2).shape
    if T0 + validate.positive_int(max_new_tokens, "max_new_tokens") > model.config.block_size:
        raise ValueError(f"max_new_tokens: prompt ({T0}) + max_new_tokens ({max_new_tokens}) "
                         f"exceeds the model's block_size = {model.config.block_size}")
    validate.flag(use_cache, "use_cache")
    pick = greedy if pick is None else pick
    if not callable(pick):
        raise TypeError(f"pick must be a function (B, V) logits -> (B,) ids, got {pick!r}")
    cache = model.new_cache(B, max_len=T0 + max_new_tokens) if use_cache else None
    tokens = prompt  # (B, T)
    step_input = prompt  # what the next forward pass reads: the prompt, then one token
    for _ in range(max_new_tokens):
        logits = model(step_input, cache) if use_cache else model(tokens)  # (B, T_in, V)
        next_token = pick(logits[:, -1, :])  # (B,)
        if (not isinstance(next_token, torch.Tensor) or next_token.shape != (B,)
                or next_token.is_floating_point()):
            got = (f"{next_token.dtype} {tuple(next_token.shape)}"
                   if isinstance(next_token, torch.Tensor) else repr(next_token))
            raise ValueError(f"pick must return ({B},) integer ids, got {got}"[:200])
        step_input = next_token.to(prompt.dtype)[:, None]  # (B, 1)
        tokens = torch.cat([tokens, step_input], dim=1)  # (B, T + 1)
    # the model read every id but the last: check them all once, at the end
    return validate.index_tensor(tokens, "the ids pick returned", model.config.vocab_size)
