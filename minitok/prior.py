"""Lesson 05: a class-conditional autoregressive prior over digit tokens.

The tokenizer (Lesson 03) turns a digit into an 8 x 8 grid of codes. Read the grid row by
row (raster order) and a digit is a sentence of 64 words. A causal transformer (Lesson 04)
then models it exactly like text:

    p(t_1 .. t_64 | class) = prod_i p(t_i | class, t_1 .. t_{i-1})

The class goes in front as one extra token, like a BOS token that says "draw a 7". The ids
of one table, laid out so that nothing collides:

    0 .. K-1          the tokenizer's K codes (the only ids the prior ever predicts)
    K .. K+9          the class tokens: class c has id K + c
    K+10              the null class (label 10): "no class given", for guidance

Training is teacher forcing: one forward pass over [class, t_1 .. t_63] predicts
[t_1 .. t_64], every position at once. Generation feeds the class token and samples one
code at a time (64 forward passes), with Lesson 04's KV cache and the sampling controls of
`minitok.sampling`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from minitok import validate
from minitok.checkpoints import Checkpointable
from minitok.sampling import cfg_logits, drop_labels, sample_logits
from minitok.training import fit
from minitok.transformer import Transformer, TransformerConfig

# --------------------------------------------------------------------------- the id table


@dataclass(frozen=True)
class TokenGridConfig:
    """What a model of token grids shares (the AR prior, MaskGIT): the ids and the size.

    num_codes: K, the tokenizer's codebook size. grid_size: G, a digit is a G x G grid.
    num_classes: how many class tokens (10 digits); label num_classes is the null class.
    The transformer reads at most 1 + G*G tokens, the class token then the grid.
    """

    num_codes: int
    grid_size: int = 8
    num_classes: int = 10
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.1
    causal = True  # the prior's transformer; MaskGIT's attends both ways

    def __post_init__(self):
        for name in ("num_codes", "grid_size", "num_classes", "n_layer", "n_head", "n_embd"):
            validate.positive_int(getattr(self, name), name)

    @property
    def null_class(self) -> int:
        """The label that means "no class" (its token id is num_codes + null_class)."""
        return self.num_classes

    @property
    def vocab_size(self) -> int:
        """K codes + the class tokens + the null class."""
        return self.num_codes + self.num_classes + 1

    @property
    def tokens_per_image(self) -> int:
        """Codes per image: G * G (64 for an 8 x 8 grid)."""
        return self.grid_size * self.grid_size

    def transformer_config(self) -> TransformerConfig:
        return TransformerConfig(vocab_size=self.vocab_size, block_size=1 + self.tokens_per_image,
                                 n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd,
                                 dropout=self.dropout, causal=self.causal)


@dataclass(frozen=True)
class PriorConfig(TokenGridConfig):
    """The prior's token layout and its transformer's size: a causal one, which reads at
    most 1 + G*G tokens (class + grid; the last code is predicted, never read, but Lesson
    04's `generate` counts it)."""


def make_sequences(codes: torch.Tensor, labels: torch.Tensor, num_codes: int,
                   num_classes: int = 10) -> torch.Tensor:
    """Token grids (N, G, G) and labels (N,) -> sequences (N, 1 + G*G): [K + label, codes].

    The class token K + label comes *after* the codes in the id table, so that it never
    collides with a code id; the G*G codes follow in raster order (row by row). A label is a
    class 0 .. num_classes - 1 or the null class num_classes. Beyond the notebook's
    version: the checks that keep every id in its part of the table.
    """
    _check_codes_and_labels(codes, labels, num_codes, num_classes)
    N = codes.shape[0]
    first = (labels.long() + num_codes)[:, None]  # (N, 1) the class token
    rest = codes.long().reshape(N, -1)  # (N, G*G) raster order, row by row
    return torch.cat([first, rest], dim=1)  # (N, 1 + G*G)


def _check_codes_and_labels(codes, labels, num_codes, num_classes) -> None:
    """make_sequences' arguments: codes in [0, K), one label in [0, num_classes] per grid
    (num_classes itself is the null class)."""
    validate.index_tensor(codes, "codes", validate.positive_int(num_codes, "num_codes"))
    validate.positive_int(num_classes, "num_classes")
    if validate.index_tensor(labels, "labels", num_classes + 1, dim=1).shape[0] != \
            codes.shape[0]:
        raise ValueError(f"labels must be ({codes.shape[0]},), one per grid of codes, got "
                         f"shape {tuple(labels.shape)}")


def prior_loss(model: nn.Module, seqs: torch.Tensor, num_codes: int) -> torch.Tensor:
    """Teacher-forcing loss: predict token i+1 from tokens 0..i, for every i in one pass.

    seqs: (B, 1 + N) = [class, t_1 .. t_N]. The model reads the first N tokens
    [class, t_1 .. t_{N-1}] and its logits at position i are scored against token i+1:
    the targets are the sequence shifted left by one. Only the K code logits are scored
    (the prior never has to predict a class token), with cross-entropy averaged over all
    B * N predictions.
    """
    inputs, targets = seqs[:, :-1], seqs[:, 1:]  # (B, N) each: [class, t_1..t_{N-1}], [t_1..t_N]
    logits = model(inputs)[..., :num_codes]  # (B, N, K)
    return F.cross_entropy(logits.reshape(-1, num_codes), targets.reshape(-1))


# --------------------------------------------------------------------------- the model


class ARPrior(Checkpointable):
    """The class-conditional prior: a causal Transformer plus the layout of its ids."""

    kind = "prior"
    config_class = PriorConfig

    def __init__(self, config: PriorConfig):
        super().__init__(config)  # a PriorConfig: a MaskGITConfig's transformer is bidirectional
        self.transformer = Transformer(config.transformer_config())

    def forward(self, idx: torch.Tensor, cache=None) -> torch.Tensor:
        """Token ids (B, T) -> logits over the whole table (B, T, V)."""
        return self.transformer(idx, cache)

    @property
    def device(self) -> torch.device:
        return self.transformer.head.weight.device


def prior_batch_loss(prior: ARPrior, codes: torch.Tensor, labels: torch.Tensor,
                     generator: torch.Generator, batch_size: int = 64, p_uncond: float = 0.1
                     ) -> torch.Tensor:
    """One training step's loss: a random mini-batch of grids (N, G, G) and labels (N,), each
    label dropped to the null class with probability `p_uncond` (classifier-free guidance
    needs the unconditional model too), the teacher-forcing loss. Draws the rows, then the
    dropped labels, from `generator` (on the CPU, where codes and labels are)."""
    rows = torch.randint(0, codes.shape[0], (batch_size,), generator=generator)  # (B,)
    dropped = drop_labels(labels[rows], p_uncond, prior.config.null_class, generator)  # (B,)
    seqs = make_sequences(codes[rows], dropped, prior.config.num_codes,
                          prior.config.num_classes)  # (B, 1 + G*G)
    return prior_loss(prior, seqs.to(prior.device), prior.config.num_codes)


def train_prior(prior: ARPrior, codes: torch.Tensor, labels: torch.Tensor, steps: int,
                batch_size: int = 64, lr: float = 3e-3, p_uncond: float = 0.1, seed: int = 0,
                progress: bool = True) -> list[float]:
    """Train on token grids (N, G, G) and their labels (N,); returns the loss of each step.

    Each step takes `prior_batch_loss`; the recipe is `training.fit`'s, shared with MaskGIT
    and any-to-any. The arguments are checked here, once: the steps trust them.
    """
    G = prior.config.grid_size
    validate.index_tensor(codes, "codes", prior.config.num_codes, dim=3)
    validate.index_tensor(labels, "labels", prior.config.num_classes, dim=1)
    if tuple(codes.shape[1:]) != (G, G) or labels.shape != codes.shape[:1]:
        raise ValueError(f"codes must be (N, {G}, {G}) token grids and labels (N,), got "
                         f"{tuple(codes.shape)} and {tuple(labels.shape)}")
    validate.positive_int(batch_size, "batch_size")
    validate.number(p_uncond, "p_uncond", low=0, high=1)
    codes, labels = codes.cpu(), labels.cpu()  # the batches are drawn on the CPU

    def batch_loss(generator: torch.Generator) -> torch.Tensor:
        return prior_batch_loss(prior, codes, labels, generator, batch_size, p_uncond)

    return fit(prior, batch_loss, steps, lr=lr, seed=seed, desc="prior", progress=progress)


# --------------------------------------------------------------------------- generation


@torch.no_grad()
def ar_generate(prior: ARPrior, labels, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, greedy: bool = False, cfg_scale: float = 1.0,
                use_cache: bool = True, generator: torch.Generator | None = None
                ) -> torch.Tensor:
    """Draw one digit per label: labels (B,) -> token grids (B, G, G) for the tokenizer.

    Each image takes G*G sequential forward passes (64), one new code each; with
    `use_cache` each pass reads only the newest token (Lesson 04's KV cache), without it
    every pass re-reads the whole prefix (same tokens, more work).
    cfg_scale: 1 is plain conditional sampling (one batch of B). Any other value runs the
    doubled batch [class; null] and samples from u + s (c - u): 0 is the unconditional
    model, > 1 pushes towards the class. A generator (on the prior's device) makes the draw
    reproducible.
    """
    config = prior.config
    labels = validate.index_tensor(torch.as_tensor(labels), "labels", config.num_classes, dim=1)
    validate.number(cfg_scale, "cfg_scale", low=0)
    validate.generator(generator)
    was_training = prior.training
    prior.eval()  # dropout off while sampling
    K, B, guided = config.num_codes, labels.shape[0], cfg_scale != 1.0
    tokens = (labels.to(prior.device) + K)[:, None]  # (B, 1) class tokens
    if guided:
        null = torch.full_like(tokens, K + config.null_class)  # (B, 1)
        tokens = torch.cat([tokens, null])  # (2B, 1): [cond; null]
    cache = prior.transformer.new_cache(tokens.shape[0]) if use_cache else None
    step_input = tokens  # what the next pass reads: the prompt, then the newest token
    for _ in range(config.tokens_per_image):
        logits = prior(step_input, cache)[:, -1, :K]  # (B or 2B, K): only codes come next
        if guided:
            logits = cfg_logits(logits[:B], logits[B:], cfg_scale)  # (B, K), before sampling
        token = sample_logits(logits, temperature, top_k, top_p, generator, greedy)  # (B,)
        if guided:
            token = torch.cat([token, token])  # (2B,) the same code to both halves
        tokens = torch.cat([tokens, token[:, None]], dim=1)  # (B or 2B, T + 1)
        step_input = token[:, None] if use_cache else tokens
    prior.train(was_training)
    return tokens[:B, 1:].reshape(B, config.grid_size, config.grid_size)  # (B, G, G)
