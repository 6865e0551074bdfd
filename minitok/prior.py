"""Lesson 05: a class-conditional autoregressive prior over digit tokens.

The tokenizer (Lesson 03) turns a digit into an 8 x 8 grid of codes. Read the grid row by
row (raster order) and a digit is a sentence of 64 words. A causal transformer (Lesson 04)
then models it exactly like text:

    p(t_1 .. t_64 | class) = prod_i p(t_i | class, t_1 .. t_{i-1})

The class goes in front as one extra token, like a BOS token that says "draw a 7". The ids
of one table, laid out so that nothing collides:

    0 .. K-1          the tokenizer's K codes (the only ids the prior ever predicts)
    K .. K+9          the class tokens: class c has id K + c
    K+10              the null class: "no class given", for classifier-free guidance

Training is teacher forcing: one forward pass over [class, t_1 .. t_63] predicts
[t_1 .. t_64], every position at once. Generation feeds the class token and samples one
code at a time (64 forward passes), with Lesson 04's KV cache and the sampling controls of
`minitok.sampling`.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from minitok.checkpoints import checkpoint_path, load_checkpoint, save_checkpoint
from minitok.sampling import cfg_logits, sample_logits
from minitok.transformer import Transformer, TransformerConfig
from minitok.transformer import generate as transformer_generate

# --------------------------------------------------------------------------- the id table


@dataclass(frozen=True)
class PriorConfig:
    """The prior's token layout and its transformer's size.

    num_codes: K, the tokenizer's codebook size. grid_size: G, a digit is a G x G grid.
    num_classes: how many class tokens (10 digits). The transformer reads at most
    1 + G*G tokens (class + grid; the last code is predicted, never read, but Lesson 04's
    `generate` counts it).
    """

    num_codes: int
    grid_size: int = 8
    num_classes: int = 10
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.1

    def __post_init__(self):
        for name in ("num_codes", "grid_size", "num_classes", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    @property
    def null_id(self) -> int:
        """The null class's id: the condition 'no class', used by guidance."""
        return self.num_codes + self.num_classes

    @property
    def vocab_size(self) -> int:
        """K codes + the class tokens + the null class."""
        return self.num_codes + self.num_classes + 1

    @property
    def num_tokens(self) -> int:
        """Codes per image: G * G (64 for an 8 x 8 grid)."""
        return self.grid_size * self.grid_size

    def transformer_config(self) -> TransformerConfig:
        return TransformerConfig(
            vocab_size=self.vocab_size,
            block_size=1 + self.num_tokens,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
            dropout=self.dropout,
            causal=True,
        )


def class_tokens(labels, num_codes: int, num_classes: int = 10) -> torch.Tensor:
    """Class labels 0..num_classes-1 -> their token ids K + label, (B,) int64.

    An unknown class (a negative label, or num_classes and up) is an error: a label of 10
    would silently be read as the null class, one above that as nothing the model knows.
    """
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class labels, got dtype {labels.dtype}")
    labels = labels.long().reshape(-1)  # (B,)
    if labels.numel() == 0:
        raise ValueError("labels is empty: give at least one class label")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(
            f"labels: unknown class {int(labels[bad][0])}; classes are 0..{num_classes - 1}"
        )
    return labels + num_codes


def make_sequences(codes: torch.Tensor, labels: torch.Tensor, num_codes: int) -> torch.Tensor:
    """Token grids (N, G, G) and labels (N,) -> training sequences (N, 1 + G*G).

    Each sequence is [class token, the G*G codes in raster order (row by row)]. The class
    token is K + label, *after* the codes, so that it never collides with a code id.
    """
    if codes.dim() != 3:
        raise ValueError(f"codes must be (N, G, G) token grids, got shape {tuple(codes.shape)}")
    if labels.shape != codes.shape[:1]:
        raise ValueError(
            f"labels must be (N,) = ({codes.shape[0]},), got shape {tuple(labels.shape)}"
        )
    if ((codes < 0) | (codes >= num_codes)).any():
        raise ValueError(f"codes must be code ids in [0, {num_codes - 1}]")
    N = codes.shape[0]
    first = (labels.long() + num_codes)[:, None]  # (N, 1) the class token
    rest = codes.long().reshape(N, -1)  # (N, G*G) raster order
    return torch.cat([first, rest], dim=1)  # (N, 1 + G*G)


def drop_labels(seqs: torch.Tensor, p: float, null_id: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Condition dropout: replace the class token with the null class with probability p.

    This is how one model learns both p(image | class) and p(image): about 10% of the
    training sequences say "no class". Returns a new tensor; `seqs` is not changed.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1), got {p!r}")
    out = seqs.clone()
    draw = torch.rand(seqs.shape[0], generator=generator, device="cpu").to(seqs.device)  # (N,)
    out[draw < p, 0] = null_id
    return out


# --------------------------------------------------------------------------- training


def prior_loss(model: nn.Module, seqs: torch.Tensor, num_codes: int) -> torch.Tensor:
    """Teacher-forcing loss: predict token i+1 from tokens 0..i, for every i in one pass.

    seqs: (B, 1 + N) = [class, t_1 .. t_N]. The model reads the first N tokens
    [class, t_1 .. t_{N-1}] and its logits at position i are scored against token i+1:
    the targets are the sequence shifted left by one. Only the K code logits are scored
    (the prior never has to predict a class token), with cross-entropy averaged over all
    B * N predictions.
    """
    inputs = seqs[:, :-1]  # (B, N): class, t_1 .. t_{N-1}
    targets = seqs[:, 1:]  # (B, N): t_1 .. t_N
    logits = model(inputs)[..., :num_codes]  # (B, N, K)
    return F.cross_entropy(logits.reshape(-1, num_codes), targets.reshape(-1))


class ARPrior(nn.Module):
    """The class-conditional prior: a causal Transformer plus the layout of its ids."""

    def __init__(self, config: PriorConfig):
        super().__init__()
        # exactly a PriorConfig: a subclass (MaskGITConfig) describes a bidirectional model
        if type(config) is not PriorConfig:
            raise TypeError(f"config must be a PriorConfig, got {type(config).__name__}")
        self.config = config
        self.transformer = Transformer(config.transformer_config())

    def forward(self, idx: torch.Tensor, cache=None) -> torch.Tensor:
        """Token ids (B, T) -> logits over the whole table (B, T, V)."""
        return self.transformer(idx, cache)

    @property
    def device(self) -> torch.device:
        return self.transformer.head.weight.device


def train_prior(
    prior: ARPrior,
    seqs: torch.Tensor,
    steps: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 0.05,
    p_uncond: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train with AdamW for `steps` mini-batches of random sequences; returns the losses.

    Each batch drops its class tokens to the null class with probability `p_uncond`
    (classifier-free guidance needs the unconditional model too). The learning rate warms
    up over the first 5% of steps and then follows a cosine down to 10% of `lr`.
    Batches and dropout come from a generator seeded with `seed`: the same call gives the
    same losses on the same machine.
    """
    from tqdm.auto import tqdm

    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if seqs.dim() != 2 or seqs.shape[1] != 1 + prior.config.num_tokens:
        raise ValueError(
            f"seqs must be (N, 1 + G*G) = (N, {1 + prior.config.num_tokens}), "
            f"got shape {tuple(seqs.shape)}"
        )
    generator = torch.Generator().manual_seed(seed)
    device = prior.device
    seqs = seqs.to(device)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=lr, weight_decay=weight_decay,
                                  betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    losses = []
    prior.train()
    bar = tqdm(range(steps), desc="prior", disable=not progress)
    for step in bar:
        scale = min(1.0, (step + 1) / warmup)
        progress_frac = step / max(1, steps - 1)
        scale *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_frac))
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        rows = torch.randint(0, seqs.shape[0], (batch_size,), generator=generator)  # (B,)
        batch = drop_labels(seqs[rows.to(device)], p_uncond, prior.config.null_id, generator)
        loss = prior_loss(prior, batch, prior.config.num_codes)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    prior.eval()
    return losses


# --------------------------------------------------------------------------- generation


def _make_generator(seed, generator, device) -> torch.Generator | None:
    if seed is not None and generator is not None:
        raise ValueError("give either seed or generator, not both")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        return torch.Generator(device=device).manual_seed(seed)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def make_pick(num_codes: int, batch_size: int, cfg_scale: float = 1.0, temperature=1.0,
              top_k=None, top_p=None, greedy=False, generator=None):
    """The rule that turns the last position's logits into the next code, for `generate`.

    Without guidance (cfg_scale == 1) it gets (B, V) logits. With guidance the batch is
    doubled, [cond; null], so it gets (2B, V): it combines the halves as u + s (c - u)
    BEFORE temperature and top-k/top-p, draws one code per image, and returns that same
    code for both halves, so the conditional and unconditional sequences stay identical.
    """
    guided = cfg_scale != 1.0

    def pick(logits: torch.Tensor) -> torch.Tensor:
        logits = logits[:, :num_codes]  # (B or 2B, K): only codes can come next
        if guided:
            cond, uncond = logits[:batch_size], logits[batch_size:]  # (B, K) each
            logits = cfg_logits(cond, uncond, cfg_scale)  # (B, K)
        token = sample_logits(logits, temperature, top_k, top_p, generator, greedy)  # (B,)
        return torch.cat([token, token]) if guided else token  # (2B,) or (B,)

    return pick


@torch.no_grad()
def generate(
    prior: ARPrior,
    labels,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    cfg_scale: float = 1.0,
    use_cache: bool = True,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one digit per label: labels (B,) -> token grids (B, G, G) for the tokenizer.

    Each image takes G*G sequential forward passes (64), one new code each; with
    `use_cache` each pass reads only the newest token (Lesson 04's KV cache), without it
    every pass re-reads the whole prefix (same tokens, more work).
    cfg_scale: 1 is plain conditional sampling (one batch of B). Any other value runs the
    doubled batch [class; null] and samples from u + s (c - u): 0 is the unconditional
    model, > 1 pushes towards the class. seed or generator make the draw reproducible
    (a generator must live on the prior's device).
    """
    if not isinstance(prior, ARPrior):
        raise TypeError(f"prior must be an ARPrior, got {type(prior).__name__}")
    config = prior.config
    if isinstance(cfg_scale, bool) or not isinstance(cfg_scale, (int, float)):
        raise TypeError(f"cfg_scale must be a number, got {type(cfg_scale).__name__}")
    if not cfg_scale >= 0:
        raise ValueError(f"cfg_scale must be >= 0 (1 means no guidance), got {cfg_scale!r}")
    if not greedy:  # fail before 64 forward passes, not at the first draw
        sample_logits(torch.zeros(1, 2), temperature, top_k, top_p)
    device = prior.device
    cond = class_tokens(labels, config.num_codes, config.num_classes).to(device)  # (B,)
    B = cond.shape[0]
    generator = _make_generator(seed, generator, device)
    prompt = cond[:, None]  # (B, 1)
    if cfg_scale != 1.0:
        null = torch.full_like(prompt, config.null_id)  # (B, 1)
        prompt = torch.cat([prompt, null], dim=0)  # (2B, 1): [cond; null]
    pick = make_pick(config.num_codes, B, cfg_scale, temperature, top_k, top_p, greedy,
                     generator)
    was_training = prior.training
    prior.eval()
    try:
        seqs = transformer_generate(prior.transformer, prompt, config.num_tokens,
                                    use_cache=use_cache, pick=pick)  # (B or 2B, 1 + G*G)
    finally:
        prior.train(was_training)
    codes = seqs[:B, 1:]  # (B, G*G): the conditional half, class token dropped
    return codes.reshape(B, config.grid_size, config.grid_size)  # (B, G, G)


@contextmanager
def count_forward(model: nn.Module):
    """Count the forward passes of `model` and the token positions they read, and the time.

        with count_forward(prior.transformer) as stats:
            generate(prior, labels)
        stats["passes"], stats["positions"], stats["seconds"]

    positions = sum over passes of batch * tokens read: a cached step reads 1 token per
    sequence, an uncached step re-reads the whole prefix.
    """
    stats = {"passes": 0, "positions": 0, "seconds": 0.0}

    def hook(module, args):
        idx = args[0]  # (B, T)
        stats["passes"] += 1
        stats["positions"] += idx.numel()

    handle = model.register_forward_pre_hook(hook)
    start = time.perf_counter()
    try:
        yield stats
    finally:
        stats["seconds"] = time.perf_counter() - start
        handle.remove()


# --------------------------------------------------------------------------- honest quality


def encode_digits(tokenizer, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """The bundled digits of `split` as token grids (N, G, G) and labels (N,), on the CPU."""
    from minitok.data import load_digits

    images, labels = load_digits(split, size=tokenizer.config.image_size)
    return tokenizer.encode(images.to(tokenizer.device)).cpu(), labels


def pairwise_distance_per_class(images: torch.Tensor, labels) -> dict[int, float]:
    """For each class with two or more images: the mean Euclidean pixel distance over all
    pairs of its images (float64, so that thousands of pairs add up exactly enough)."""
    flat = images.reshape(images.shape[0], -1).double().cpu()  # (N, pixels)
    labels = torch.as_tensor(labels).cpu()
    per_class = {}
    for c in labels.unique().tolist():
        x = flat[labels == c]  # (n, pixels)
        n = x.shape[0]
        if n < 2:
            continue
        d = torch.cdist(x, x)  # (n, n), zeros on the diagonal
        per_class[c] = (d.sum() / (n * (n - 1))).item()
    return per_class


def mean_pairwise_distance(images: torch.Tensor, labels) -> float:
    """Diversity: the mean pixel distance between two images of the same class.

    For each class, the average Euclidean distance over all pairs of its images, then the
    average over classes. A model that draws the same 7 every time scores 0 however well the
    classifier likes that 7; real digits of one class differ by about as much as the value
    this gives for the real test set. (Lesson 06's `maskgit.diversity` divides each class's
    value by the real digits' before averaging.)
    """
    per_class = pairwise_distance_per_class(images, labels)
    if not per_class:
        raise ValueError("labels: need at least two images of some class to measure diversity")
    return sum(per_class.values()) / len(per_class)


def sample_quality(grids: torch.Tensor, labels: torch.Tensor, tokenizer, classifier,
                   train_grids: torch.Tensor | None = None) -> dict:
    """How good and how varied a set of generated digits is, judged without the prior.

    accuracy: the digit classifier (trained on real digits only) reads the intended class;
    per_class: the same, class by class; distinct: fraction of different token grids;
    copies: fraction that are exactly a training digit's grid (memorised, not generated);
    spread: mean_pairwise_distance of the decoded images.
    """
    labels = torch.as_tensor(labels).cpu()
    images = tokenizer.decode(grids.to(tokenizer.device)).cpu()
    predicted = classifier.predict(images)  # (N,)
    per_class = {int(c): (predicted[labels == c] == c).double().mean().item()
                 for c in labels.unique()}
    flat = grids.reshape(grids.shape[0], -1).cpu()  # (N, G*G)
    report = {
        "accuracy": (predicted == labels).double().mean().item(),
        "per_class": per_class,
        "distinct": torch.unique(flat, dim=0).shape[0] / flat.shape[0],
        "spread": mean_pairwise_distance(images, labels),
    }
    if train_grids is not None:
        seen = {tuple(row) for row in train_grids.reshape(train_grids.shape[0], -1).tolist()}
        report["copies"] = sum(tuple(row) in seen for row in flat.tolist()) / flat.shape[0]
    return report


# --------------------------------------------------------------------------- checkpoint


def save_prior(prior: ARPrior, path=None, meta: dict | None = None):
    """Write the prior as a weights-only checkpoint (see minitok/checkpoints.py)."""
    path = checkpoint_path("prior") if path is None else path
    return save_checkpoint(path, "prior", asdict(prior.config), prior, meta)


def load_prior(path=None, device=None) -> ARPrior:
    """The shipped prior (minitok/checkpoints/prior.pt, rebuilt by scripts/train_prior.py)."""
    payload = load_checkpoint(checkpoint_path("prior") if path is None else path, "prior")
    prior = ARPrior(PriorConfig(**payload["config"]))
    prior.load_state_dict(payload["state_dict"])
    prior.meta = payload["meta"]
    return prior.to(device or "cpu").eval()
