"""Lesson 04: a transformer over tokens, written from scratch, with a KV cache.

The same model serves the rest of the course:

    causal=True    the autoregressive prior (Lesson 05): token t sees tokens 0..t only
    causal=False   MaskGIT (Lesson 06): every token sees every other token
    any vocabulary the any-to-any model (Lesson 07): text and image tokens in one table

Reading order: `attention` (the one formula everything stands on), `causal_mask`,
`split_heads` / `merge_heads`, then the modules `SelfAttention`, `MLP`, `Block`,
`Transformer`, and finally `KVCache` and `generate`.

Shapes use B = batch, T = tokens, C = n_embd, H = n_head, d = C // H (head size),
V = vocab_size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from minitok.rope import apply_rope, rope_angles_2d

# --------------------------------------------------------------------------- attention

_HALF = (torch.float16, torch.bfloat16)


def causal_mask(
    T_q: int, T_k: int | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Which key each query may look at: a (T_q, T_k) bool tensor, True = may attend.

    With T_k = T_q this is the lower triangle: token i sees tokens 0..i (itself included)
    and nothing after it. With a KV cache the T_q new queries are the *last* T_q of T_k
    positions, so the triangle is aligned to the bottom-right corner: query i sits at
    position T_k - T_q + i and sees keys 0..T_k - T_q + i. A single new query (T_q = 1)
    therefore sees every cached key. (A top-left aligned mask, which is what
    `scaled_dot_product_attention(..., is_causal=True)` builds, would let it see key 0 only.)
    """
    T_k = T_q if T_k is None else T_k
    for name, value in (("T_q", T_q), ("T_k", T_k)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if T_k < T_q:
        raise ValueError(
            f"T_k ({T_k}) must be >= T_q ({T_q}): the queries are the last T_q of the "
            f"T_k positions"
        )
    ones = torch.ones(T_q, T_k, dtype=torch.bool, device=device)  # (T_q, T_k)
    return torch.tril(ones, diagonal=T_k - T_q)  # (T_q, T_k)


def _check_qk(q: torch.Tensor, k: torch.Tensor, mask) -> None:
    """Clear errors for the queries, keys and mask (the shapes are easy to get subtly wrong)."""
    for name, t in (("q", q), ("k", k)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(f"{name} must be (..., T, d), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must have the same head dimension d: q {tuple(q.shape)} has d = "
            f"{q.shape[-1]}, k {tuple(k.shape)} has d = {k.shape[-1]}"
        )
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            what = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise TypeError(f"mask must be a bool tensor (True = may attend), got {what}")
        T_q, T_k = q.shape[-2], k.shape[-2]
        if mask.dim() < 2 or mask.shape[-2] not in (1, T_q) or mask.shape[-1] not in (1, T_k):
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to the scores' "
                f"(..., T_q, T_k) = (..., {T_q}, {T_k})"
            )


def attention_weights(
    q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """How much each query looks at each key: softmax(q k^T / sqrt(d)), (..., T_q, T_k).

    Every row sums to 1. Where `mask` is False the score is set to -inf *before* the
    softmax, so that key gets a weight of exactly 0 (exp(-inf) = 0) and the other weights
    still sum to 1. A row whose mask is all False has no key to look at: its weights are
    NaN (0 / 0), so never build such a mask.
    """
    _check_qk(q, k, mask)
    dtype = q.dtype
    if dtype in _HALF:  # fp16/bf16: compute in float32, as torch's fused kernels accumulate
        q, k = q.float(), k.float()
    d = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # (..., T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # over the keys: each row sums to 1
    return weights.to(dtype)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Scaled dot-product attention, written out: (..., T_q, d) x (..., T_k, d) -> (..., T_q, d_v).

    q, k, v: (B, H, T, d) in the model (any leading dims that broadcast work).
    mask: bool, broadcastable to (..., T_q, T_k), True where a query may attend to a key
    (note: torch.nn.MultiheadAttention's bool `attn_mask` means the opposite).

    Each output row is a weighted average of the value rows, weighted by how well the query
    matches each key. Equal to torch.nn.functional.scaled_dot_product_attention(q, k, v,
    attn_mask=mask); fp16/bf16 inputs are computed in float32 and returned in their dtype.
    """
    _check_qk(q, k, mask)
    if not isinstance(v, torch.Tensor) or v.dim() < 2:
        raise ValueError("v must be a (..., T_k, d_v) tensor")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"k and v must hold the same number of keys T_k: k {tuple(k.shape)}, "
            f"v {tuple(v.shape)}"
        )
    dtype = q.dtype
    if dtype in _HALF:  # fp16/bf16: compute in float32, as torch's fused kernels accumulate
        q, k, v = q.float(), k.float(), v.float()
    weights = attention_weights(q, k, mask)  # (..., T_q, T_k)
    return (weights @ v).to(dtype)  # (..., T_q, d_v)


def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, C) -> (B, H, T, C/H): cut each token's channels into n_head heads.

    Token t's channels [h*d, (h+1)*d) become head h's vector for token t. The heads move to
    dimension 1 so that attention runs over (T, d) for every (batch, head) at once.
    """
    if x.dim() != 3:
        raise ValueError(f"x must be (B, T, C), got shape {tuple(x.shape)}")
    B, T, C = x.shape
    if not isinstance(n_head, int) or n_head < 1 or C % n_head != 0:
        raise ValueError(f"n_head must be a positive int dividing C = {C}, got {n_head!r}")
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, H, T, d)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, d) -> (B, T, H*d): the inverse of split_heads, heads side by side again."""
    if x.dim() != 4:
        raise ValueError(f"x must be (B, H, T, d), got shape {tuple(x.shape)}")
    B, H, T, d = x.shape
    return x.transpose(1, 2).reshape(B, T, H * d)  # (B, T, C)


# --------------------------------------------------------------------------- config


@dataclass
class TransformerConfig:
    """Everything that decides a Transformer's shape.

    vocab_size: number of token ids (0..V-1). block_size: the longest sequence the model
    reads (its context). causal: True for next-token prediction, False for bidirectional
    attention (MaskGIT). bias: biases in the Linear and LayerNorm layers.
    rope_grid: None for learned absolute position embeddings (nanoGPT); (rows, cols) for
    2D rotary embeddings over a token grid (LlamaGen), after `n_prefix` unrotated tokens
    (e.g. a class token); then block_size must be <= n_prefix + rows * cols.
    """

    vocab_size: int
    block_size: int
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    causal: bool = True
    bias: bool = True
    rope_grid: tuple[int, int] | None = None
    n_prefix: int = 0

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                f"each head gets n_embd // n_head channels"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.n_prefix, int) or self.n_prefix < 0:
            raise ValueError(f"n_prefix must be a non-negative int, got {self.n_prefix!r}")
        if self.rope_grid is not None:
            grid = tuple(self.rope_grid)
            if len(grid) != 2 or not all(isinstance(n, int) and n >= 1 for n in grid):
                raise ValueError(
                    f"rope_grid must be (rows, cols) of positive ints, got {self.rope_grid!r}"
                )
            self.rope_grid = grid
            rows, cols = grid
            if (self.n_embd // self.n_head) % 4 != 0:
                raise ValueError(
                    f"rope_grid needs a head size divisible by 4, got n_embd // n_head = "
                    f"{self.n_embd // self.n_head}"
                )
            if self.block_size > self.n_prefix + rows * cols:
                raise ValueError(
                    f"block_size ({self.block_size}) must be <= n_prefix + rows * cols = "
                    f"{self.n_prefix + rows * cols} with rope_grid={self.rope_grid}"
                )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def count_parameters(config: TransformerConfig) -> int:
    """The number of parameters of Transformer(config), from the config alone.

    Per block: two LayerNorms (2C each), the qkv projection (3C^2 + 3C), the output
    projection (C^2 + C) and the MLP (4C^2 + 4C, then 4C^2 + C): 12 C^2 + 13 C with biases.
    Plus the token table (V C), the position table (block_size C, unless rotary), the final
    LayerNorm (2C) and the head (C V, no bias).
    """
    C, V, b = config.n_embd, config.vocab_size, int(config.bias)
    norm = C + b * C
    per_block = 2 * norm + (3 * C * C + b * 3 * C) + (C * C + b * C)  # norms + attention
    per_block += (4 * C * C + b * 4 * C) + (4 * C * C + b * C)  # MLP
    positions = 0 if config.rope_grid is not None else config.block_size * C
    return V * C + positions + config.n_layer * per_block + norm + C * V


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
        angles = None  # learned positions are added to the embeddings instead
        if config.rope_grid is not None:
            angles = rope_angles_2d(*config.rope_grid, config.head_dim, n_prefix=config.n_prefix)
        self.register_buffer("rope", angles, persistent=False)  # (positions, d/2) or None

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C). `pos` (T,) are the tokens' positions (used by rotary
        embeddings); with a cache, this layer's keys and values are appended to it."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q = split_heads(q, self.n_head)  # (B, H, T, d)
        k = split_heads(k, self.n_head)  # (B, H, T, d)
        v = split_heads(v, self.n_head)  # (B, H, T, d)
        if self.rope is not None:
            pos = torch.arange(T, device=x.device) if pos is None else pos
            q, k = apply_rope(q, self.rope[pos]), apply_rope(k, self.rope[pos])  # (B, H, T, d)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, H, T_k, d): the cached keys, then these
        mask = None  # bidirectional: every token sees every token
        if self.causal and T > 1:  # (a single new query may see every key: nothing to hide)
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

    def forward(self, x, pos=None, cache=None, layer=0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), pos, cache, layer)  # (B, T, C): tokens talk
        x = x + self.mlp(self.ln2(x))  # (B, T, C): each token thinks on its own
        return x


class Transformer(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, V).

    With causal=True, logits[:, t] predicts token t+1 from tokens 0..t, for every t in one
    pass (teacher forcing). With a `cache`, idx holds only the *new* tokens: their positions
    continue after the cached ones and their keys/values are appended to the cache.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token id -> vector
        self.wpe = None  # position -> vector (absent with rotary embeddings)
        if config.rope_grid is None:
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed(self, idx: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Token vectors plus position vectors: idx (B, T), pos (T,) -> (B, T, C)."""
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe(pos)  # (T, C) broadcast over the batch
        return self.drop(x)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        self._check_input(idx, cache)
        B, T = idx.shape
        start = 0 if cache is None else cache.length  # positions continue after the cache
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.embed(idx, pos)  # (B, T, C)
        for layer, block in enumerate(self.blocks):
            x = block(x, pos, cache, layer)  # (B, T, C)
        if cache is not None:
            cache.advance(T)
        return self.head(self.ln_f(x))  # (B, T, V)

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty KV cache for `batch_size` sequences of up to `max_len` (block_size) tokens."""
        if not self.config.causal:
            raise ValueError(
                "new_cache: a KV cache needs causal=True. With bidirectional attention every "
                "token's keys and values change when a new token arrives, so none can be reused."
            )
        max_len = self.config.block_size if max_len is None else max_len
        if not isinstance(max_len, int) or not 1 <= max_len <= self.config.block_size:
            raise ValueError(
                f"max_len must be an int in [1, block_size={self.config.block_size}], "
                f"got {max_len!r}"
            )
        weight = self.wte.weight
        return KVCache(self.config.n_layer, batch_size, self.config.n_head, max_len,
                       self.config.head_dim, device=weight.device, dtype=weight.dtype)

    def _check_input(self, idx, cache) -> None:
        """Clear errors instead of an index error deep inside an embedding."""
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
            shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise ValueError(f"idx must be a (B, T) tensor of token ids, got {shape}")
        if idx.is_floating_point() or idx.dtype == torch.bool:
            raise TypeError(f"idx must hold integer token ids, got dtype {idx.dtype}")
        B, T = idx.shape
        if T == 0:
            raise ValueError("idx has no tokens (T = 0)")
        V = self.config.vocab_size
        if ((idx < 0) | (idx >= V)).any():
            raise ValueError(
                f"idx holds token ids outside [0, vocab_size - 1 = {V - 1}]: "
                f"min {int(idx.min())}, max {int(idx.max())}"
            )
        start = 0 if cache is None else cache.length
        if start + T > self.config.block_size:
            cached = f" after {start} cached tokens" if cache is not None else ""
            raise ValueError(
                f"idx has {T} tokens{cached}, more than block_size = "
                f"{self.config.block_size} (the longest sequence this model reads)"
            )
        if cache is not None and cache.batch_size != B:
            raise ValueError(
                f"idx has batch size {B} but the cache was made for {cache.batch_size}"
            )
        c = self.config
        n_layer, _, n_head, _, head_dim = cache.keys.shape if cache is not None else (0,) * 5
        if cache is not None and (n_layer, n_head, head_dim) != (c.n_layer, c.n_head, c.head_dim):
            raise ValueError("cache: it was made for another model (its layers, heads or head "
                             "size differ from this model's); make one with model.new_cache")


# --------------------------------------------------------------------------- KV cache


class KVCache:
    """The keys and values every layer has computed so far, so that they are not recomputed.

    During generation token t attends to the keys and values of tokens 0..t. Those of
    tokens 0..t-1 do not change when token t arrives (the mask stops them from looking
    ahead), so they are kept here: each step computes q, k, v for the new token only.

    Storage is allocated once: (n_layer, B, H, max_len, d) for keys and values, of which
    the first `length` positions are filled.
    """

    def __init__(self, n_layer: int, batch_size: int, n_head: int, max_len: int,
                 head_dim: int, device=None, dtype: torch.dtype = torch.float32):
        for name, value in (("n_layer", n_layer), ("batch_size", batch_size),
                            ("n_head", n_head), ("max_len", max_len), ("head_dim", head_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        shape = (n_layer, batch_size, n_head, max_len, head_dim)
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
        T = k.shape[2]
        end = self.length + T
        if end > self.max_len:
            raise ValueError(
                f"KV cache is full: {self.length} cached + {T} new tokens > max_len = {self.max_len}"
            )
        expected = (self.batch_size, self.keys.shape[2], T, self.keys.shape[4])
        if tuple(k.shape) != expected or tuple(v.shape) != expected:
            raise ValueError(
                f"k and v must be (B, H, T, d) = ({self.batch_size}, {self.keys.shape[2]}, T, "
                f"{self.keys.shape[4]}), got k {tuple(k.shape)}, v {tuple(v.shape)}"
            )
        self.keys[layer, :, :, self.length:end] = k
        self.values[layer, :, :, self.length:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, T: int) -> None:
        """Count T more positions as cached (the model calls this after its last layer)."""
        self.length += T

    def reset(self) -> None:
        """Forget everything (the storage is reused)."""
        self.length = 0


# --------------------------------------------------------------------------- generation


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """The default `pick`: the most likely token of each row, (B, V) -> (B,)."""
    return logits.argmax(dim=-1)


@torch.no_grad()
def generate(
    model: Transformer,
    prompt: torch.Tensor,
    max_new_tokens: int,
    use_cache: bool = True,
    pick: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Extend `prompt` (B, T0) by `max_new_tokens` tokens, one at a time: (B, T0 + new).

    `pick(logits (B, V)) -> (B,)` chooses each next token from the last position's logits
    (greedy argmax by default; sampling rules plug in here). With `use_cache` the prompt is
    run once (prefill) and each step then feeds only the newest token: n forward passes of
    one token. Without it every step re-runs the whole prefix (nanoGPT's `generate`): the
    same tokens, at O(T^2) token-passes instead of O(T). Call model.eval() first.
    """
    if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2:
        raise ValueError("prompt must be a (B, T0) tensor of token ids")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    B, T0 = prompt.shape
    limit = model.config.block_size
    if T0 + max_new_tokens > limit:
        raise ValueError(
            f"max_new_tokens: prompt ({T0}) + max_new_tokens ({max_new_tokens}) = "
            f"{T0 + max_new_tokens} tokens exceeds the model's block_size = {limit}"
        )
    pick = greedy if pick is None else pick
    cache = model.new_cache(B, max_len=T0 + max_new_tokens) if use_cache else None
    tokens = prompt  # (B, T)
    step_input = prompt  # what the next forward pass reads
    for _ in range(max_new_tokens):
        if cache is not None:
            logits = model(step_input, cache)  # (B, T_new, V): prefill, then 1 token a step
        else:
            logits = model(tokens)  # (B, T, V): the whole prefix again
        next_token = pick(logits[:, -1, :])  # (B,)
        if not isinstance(next_token, torch.Tensor) or tuple(next_token.shape) != (B,):
            got = tuple(next_token.shape) if isinstance(next_token, torch.Tensor) else next_token
            raise ValueError(f"pick must return a ({B},) tensor of token ids, got {got}")
        step_input = next_token.to(prompt.dtype)[:, None]  # (B, 1)
        tokens = torch.cat([tokens, step_input], dim=1)  # (B, T + 1)
    return tokens
