"""Lesson 09, part 2: next-scale prediction (VAR), a transformer that draws a whole token map
per forward pass.

Lesson 05's prior reads a digit as 64 tokens in raster order and draws them one by one: 64
passes. VAR (Tian et al. 2024, FoundationVision/VAR) reads the multi-scale tokenizer's maps
(`minitok.msvq`: 1 x 1, 2 x 2, 4 x 4, 8 x 8) in order of scale and draws each *map* in one
pass, conditioned on all the coarser ones:

    p(r_1, .., r_K | class) = prod_k p(r_k | class, r_1 .. r_{k-1})      4 passes, 85 tokens

Sequence layout (L = 85 positions): the class token, then for each later scale s its s*s
inputs, the running f_hat of the coarser scales area-downsampled to s x s
(`msvq.var_inputs`). The logits at the positions of scale k predict the tokens of r_k, all
at once. Every position of scale k may see every position of scales <= k (`block_causal_mask`):
in training one pass with that mask; in sampling one pass per scale through a KV cache, where
the new scale's queries see the cached coarser scales and each other, the same attention.

The transformer is Lesson 04's `Transformer` (bidirectional config: the mask or the cache does
the ordering), whose `blocks`, `ln_f` and `head` VAR calls directly: its inputs are vectors,
not token ids, so VAR embeds them itself (`word_embed`, the transformer's own position table
and a per-scale `level_embed`; the class token is the transformer's token table's row
num_codes + label, the prior's id layout). Sampling uses Lesson 05's `sample_logits` and
`cfg_logits`; guidance ramps with the scale as in the official code (none at the first).

Shapes: B batch, L all positions, T positions read in a pass, C n_embd, D code_dim, K num_codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from minitok import validate
from minitok.checkpoints import Checkpointable
from minitok.msvq import SCALES, downsample, lookup, tokens_per_scale, upsample, var_inputs
from minitok.sampling import cfg_logits, drop_labels, sample_logits
from minitok.training import fit
from minitok.transformer import Transformer, TransformerConfig, attention, merge_heads, split_heads

# --------------------------------------------------------------------------- the mask


def block_causal_mask(scales=SCALES) -> torch.Tensor:
    """(L, L) bool, True where position i may attend to position j: iff scale(i) >= scale(j).

    Every token sees all tokens of its own scale and of the coarser ones, nothing finer. The
    official attn_bias_for_masking (there as 0 / -inf). Along the diagonal: blocks of s*s.
    """
    level = torch.repeat_interleave(torch.arange(len(scales)), torch.tensor(tokens_per_scale(scales)))
    return level[:, None] >= level[None, :]  # (L, L)


def cfg_ramp(cfg_scale: float, k: int, num_scales: int) -> float:
    """The guidance scale at scale k: 1 (none) at the first scale, cfg_scale at the last.

    The official sampler guides scale k with (1 + t) cond - t uncond, t = cfg * k / (K - 1);
    in this course's convention u + s (c - u) that is s = 1 + t.
    """
    return 1.0 + (cfg_scale - 1.0) * k / (num_scales - 1)


# --------------------------------------------------------------------------- the KV cache


class ScaleCache:
    """The keys and values of every scale read so far, grown one scale at a time.

    Duck-types Lesson 04's KVCache (`update`, `advance`, `length`) for a bidirectional
    transformer, whose `new_cache` refuses one: with no causal mask, the T new queries of a
    scale attend to every cached key and to each other, which is the block-causal mask.
    `torch.cat` (no storage written in place) keeps it differentiable.
    """

    def __init__(self, n_layer: int):
        self.keys: list = [None] * n_layer
        self.values: list = [None] * n_layer
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Append layer `layer`'s keys/values (B, H, T, d); return all of them so far."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def advance(self, T: int) -> None:
        self.length += T


def masked_blocks(transformer: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Run `transformer`'s blocks on x (B, L, C) in one pass with an attention `mask` (L, L).

    Lesson 04's blocks take a cache, not a mask, so this reads their weights by their names
    (ln1, attn.qkv, attn.proj, ln2, mlp; the names every checkpoint loads by) and attends
    with Lesson 04's `attention`: training's single pass. Sampling runs the blocks
    themselves, scale by scale, through a ScaleCache.
    """
    C, config = x.shape[-1], transformer.config
    for block in transformer.blocks:
        q, k, v = block.attn.qkv(block.ln1(x)).split(C, dim=2)  # 3 x (B, L, C)
        q, k, v = (split_heads(t, config.n_head) for t in (q, k, v))  # 3 x (B, H, L, d)
        y = block.attn.proj(merge_heads(attention(q, k, v, mask)))  # (B, L, C)
        x = x + F.dropout(y, config.dropout, transformer.training)
        x = x + block.mlp(block.ln2(x))
    return x


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class VARConfig:
    """The next-scale model: the tokenizer's codes and scales, and its transformer's size."""

    num_codes: int
    code_dim: int = 16
    scales: tuple = SCALES
    num_classes: int = 10
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("num_codes", "code_dim", "num_classes", "n_layer", "n_head", "n_embd"):
            validate.positive_int(getattr(self, name), name)
        object.__setattr__(self, "scales", tuple(self.scales))  # a checkpoint stores a list
        if self.scales[0] != 1 or list(self.scales) != sorted(set(self.scales)):
            raise ValueError(f"scales must increase from 1 (the class token's scale), got "
                             f"{self.scales}")

    @property
    def null_class(self) -> int:
        return self.num_classes

    @property
    def tokens_per_image(self) -> int:
        """L: the tokens of every scale (85 for 1, 2, 4, 8)."""
        return sum(tokens_per_scale(self.scales))

    def transformer_config(self) -> TransformerConfig:
        """The prior's id layout (codes, classes, null) and L positions, bidirectional."""
        return TransformerConfig(vocab_size=self.num_codes + self.num_classes + 1,
                                 block_size=self.tokens_per_image, n_layer=self.n_layer,
                                 n_head=self.n_head, n_embd=self.n_embd, dropout=self.dropout,
                                 causal=False)


class VAR(Checkpointable):
    """Class + coarser scales -> the logits of the next scale's tokens."""

    kind = "var"
    config_class = VARConfig

    def __init__(self, config: VARConfig):
        super().__init__(config)  # checks it: self.config
        self.transformer = Transformer(config.transformer_config())
        self.word_embed = nn.Linear(config.code_dim, config.n_embd)  # an input vector -> C
        self.level_embed = nn.Embedding(len(config.scales), config.n_embd)  # which scale
        nn.init.normal_(self.word_embed.weight, std=0.02)
        nn.init.normal_(self.level_embed.weight, std=0.02)
        sizes = tokens_per_scale(config.scales)
        self.starts = [sum(sizes[:k]) for k in range(len(sizes) + 1)]  # scale k: starts[k]..

    @property
    def device(self) -> torch.device:
        return self.word_embed.weight.device

    def embed(self, k: int, labels: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        """The vectors the transformer reads at scale k: (B, s*s, C).

        k = 0: the class token (the transformer's row num_codes + label); k > 0: inputs
        (B, s*s, D) through word_embed. Plus the positions' and the scale's embeddings.
        """
        t = self.transformer
        if k == 0:
            x = t.wte(labels + self.config.num_codes)[:, None]  # (B, 1, C)
        else:
            x = self.word_embed(inputs)  # (B, s*s, C)
        pos = torch.arange(self.starts[k], self.starts[k + 1], device=x.device)  # (s*s,)
        return x + t.wpe(pos) + self.level_embed.weight[k]  # (B, s*s, C)

    def embed_all(self, labels: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Teacher forcing's input (B, L, C): every scale's `embed`, from `var_inputs`'s (B, L-1, D)."""
        parts = [self.embed(0, labels, None)]
        for k in range(1, len(self.config.scales)):
            parts.append(self.embed(k, labels, inputs[:, self.starts[k] - 1 : self.starts[k + 1] - 1]))
        return torch.cat(parts, dim=1)  # (B, L, C)

    def forward(self, x: torch.Tensor, cache: ScaleCache | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Embedded positions x (B, T, C) -> code logits (B, T, K).

        With `mask` (training): one pass over all L positions. With `cache` (sampling): x is
        one scale, read after the cached coarser ones by the transformer's own blocks.
        """
        t = self.transformer
        if mask is not None:
            x = masked_blocks(t, x, mask)
        else:
            for layer, block in enumerate(t.blocks):
                x = block(x, cache, layer)
            if cache is not None:
                cache.advance(x.shape[1])
        return t.head(t.ln_f(x))[..., : self.config.num_codes]  # (B, T, K)

    def new_cache(self) -> ScaleCache:
        return ScaleCache(self.config.n_layer)


# --------------------------------------------------------------------------- training


def var_loss(var: VAR, tokens: torch.Tensor, labels: torch.Tensor, quantizer) -> torch.Tensor:
    """Teacher forcing: cross-entropy of every scale's tokens from one block-causal pass.

    tokens (B, L) all scales coarse to fine, labels (B,) (the null class allowed);
    `quantizer` (the tokenizer's `MultiScaleQuantizer`) makes the inputs.
    """
    scales = var.config.scales
    ids = list(tokens.split(tokens_per_scale(scales), dim=1))
    with torch.no_grad():
        inputs = var_inputs(ids, quantizer.codebook, quantizer.phis(), scales)  # (B, L-1, D)
    x = var.embed_all(labels, inputs)  # (B, L, C)
    logits = var(x, mask=block_causal_mask(scales).to(x.device))  # (B, L, K)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1))


def train_var(var: VAR, tokens: torch.Tensor, labels: torch.Tensor, quantizer, steps: int,
              batch_size: int = 64, lr: float = 3e-3, p_uncond: float = 0.1, seed: int = 0,
              progress: bool = True) -> list[float]:
    """Train on all-scale tokens (N, L) and labels (N,) with `training.fit`'s recipe, labels
    dropped to the null class with probability p_uncond (for guidance). Returns the losses."""
    c = var.config
    validate.index_tensor(tokens, "tokens", c.num_codes, dim=2)
    validate.index_tensor(labels, "labels", c.num_classes, dim=1)
    validate.number(p_uncond, "p_uncond", low=0, high=1)

    def batch_loss(generator: torch.Generator) -> torch.Tensor:
        rows = torch.randint(0, tokens.shape[0], (batch_size,), generator=generator)
        dropped = drop_labels(labels[rows], p_uncond, c.null_class, generator)
        return var_loss(var, tokens[rows].to(var.device), dropped.to(var.device), quantizer)

    return fit(var, batch_loss, steps, lr=lr, seed=seed, desc="var", progress=progress)


# --------------------------------------------------------------------------- sampling


@torch.no_grad()
def var_generate(var: VAR, quantizer, labels, cfg_scale: float = 1.0, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Draw one digit per label, one scale per forward pass: [ids (B, s*s) for each scale].

    Each pass reads one scale's inputs after the cached coarser ones and samples the whole
    map at once; its codes, upsampled and refined by phi, join f_hat, which downsampled to the
    next scale is the next pass's input (the official `get_next_autoregressive_input`).
    cfg_scale != 1 runs the doubled batch [class; null] and guides scale k with
    `cfg_ramp(cfg_scale, k, K)`. The tokenizer's `decode` turns the maps into pixels.
    """
    c = var.config
    labels = validate.index_tensor(torch.as_tensor(labels), "labels", c.num_classes, dim=1)
    validate.number(cfg_scale, "cfg_scale", low=0)
    validate.generator(generator)
    scales, G, K = c.scales, c.scales[-1], c.num_codes
    B, guided = labels.shape[0], cfg_scale != 1.0
    labels = labels.to(var.device)
    if guided:
        labels = torch.cat([labels, torch.full_like(labels, c.null_class)])  # (2B,) [cond; null]
    codebook, phis = quantizer.codebook, quantizer.phis()
    cache, f_hat, inputs, ids = var.new_cache(), 0, None, []
    for k, s in enumerate(scales):
        logits = var(var.embed(k, labels, inputs), cache)  # (B or 2B, s*s, K)
        if guided:
            logits = cfg_logits(logits[:B], logits[B:], cfg_ramp(cfg_scale, k, len(scales)))
        idx = sample_logits(logits.reshape(-1, K), temperature, top_k, top_p, generator)
        ids.append(idx.view(B, s * s))  # (B, s*s)
        if k + 1 < len(scales):
            f_hat = f_hat + phis[k](upsample(lookup(ids[-1], codebook, s), G))  # (B, D, G, G)
            inputs = downsample(f_hat, scales[k + 1]).flatten(2).transpose(1, 2)  # (B, s'^2, D)
            if guided:
                inputs = torch.cat([inputs, inputs])  # the same map to both halves
    return ids
