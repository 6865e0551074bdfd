"""Lesson 02: learning a codebook through a step that has no gradient.

Lesson 01's lookup picks an integer, and an integer has no derivative: nudge z a little and
the chosen code does not change, so d(code)/dz is zero almost everywhere (and undefined where
the choice flips). An encoder in front of a quantizer would never learn. Three ideas from
VQ-VAE (van den Oord et al., 2017) make it trainable:

1. the straight-through estimator (`straight_through`): the forward pass outputs the code q,
   the backward pass pretends the quantizer was the identity, so the decoder's gradient
   reaches z unchanged;
2. the codebook loss pulls the chosen codes towards the encoder outputs (`codebook_loss`);
3. the commitment loss keeps the encoder's outputs close to their codes, so they do not drift
   away from the codebook (`commitment_loss`, weighted by beta = 0.25 in `vq_loss`).

`VectorQuantizer` is Lesson 02's module exercise: lookup, straight-through output, loss,
usage, and EMA codebook updates through `ema_update`. Its trailing options are the tricks
that keep a codebook alive, each a few lines on top: dead-code restarts, k-means
initialisation, l2-normalised codes and a low-dimensional lookup with in/out projections
(the LlamaGen design).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from minitok import validate
from minitok.quantize import kmeans, nearest_code

KMEANS_ITERS = 10  # Lloyd iterations for the first-batch k-means initialisation


# --------------------------------------------------------------------------- the two tricks


def straight_through(z: Tensor, q: Tensor) -> Tensor:
    """The straight-through estimator: q's value going forward, z's gradient coming back.

    z and q have the same shape; the result equals q up to rounding, its gradient goes to z
    unchanged, and nothing flows into q (the codebook) through it.
    """
    validate.float_tensor(z, "z")  # integer codes would round the gradient path away
    validate.same_shape(z, validate.float_tensor(q, "q"), "z and q")  # would broadcast
    return z + (q - z).detach()


def commitment_loss(z: Tensor, q: Tensor) -> Tensor:
    """mse(z, q.detach()): moves only the encoder output z towards its (fixed) code."""
    validate.same_shape(z, q, "z and q")  # mse_loss would broadcast, with only a warning
    return F.mse_loss(z, q.detach())


def codebook_loss(z: Tensor, q: Tensor) -> Tensor:
    """mse(q, z.detach()): moves only the chosen codes q towards the (fixed) encoder output."""
    validate.same_shape(z, q, "z and q")
    return F.mse_loss(q, z.detach())


def vq_loss(z: Tensor, q: Tensor, beta: float = 0.25) -> Tensor:
    """The VQ-VAE loss, a scalar: the codebook loss plus beta times the commitment loss.

    q must be the looked-up codes (with their gradient path to the codebook), not the
    straight-through q_st. The loss value cannot tell which term carries beta; the gradients
    can (Lesson 02, section 3; tests/test_vq.py).
    """
    validate.number(beta, "beta", low=0)
    return codebook_loss(z, q) + beta * commitment_loss(z, q)


# --------------------------------------------------------------------------- EMA codebook


class EMAStep(NamedTuple):
    """The result of one EMA codebook update (see `ema_update`)."""

    indices: Tensor  # (N,) assignments, from the codebook BEFORE the update
    cluster_size: Tensor  # (K,) decayed count of vectors per code
    embed_avg: Tensor  # (K, D) decayed sum of the vectors per code
    codebook: Tensor  # (K, D) the new codebook, embed_avg / smoothed cluster_size


def laplace_smoothed(cluster_size: Tensor, eps: float = 1e-5) -> Tensor:
    """Counts nudged away from zero, keeping their total: (N_k + eps) / (sum N + K eps) * sum N.

    Dividing embed_avg by a raw count of 0 would give NaN for a code nobody uses; the
    smoothing makes every count positive while changing the used ones by a negligible amount.
    """
    validate.tensor(cluster_size, "cluster_size", dim=1)
    validate.number(eps, "eps", low=0, low_open=True)  # eps = 0 divides an unused code by 0
    total = cluster_size.sum()
    return (cluster_size + eps) / (total + cluster_size.numel() * eps) * total


def ema_update(codebook: Tensor, cluster_size: Tensor, embed_avg: Tensor, z: Tensor,
               decay: float = 0.99, eps: float = 1e-5) -> EMAStep:
    """Assign z (N, D) to the current codebook (K, D), then move the codes by EMA.

    Each code moves to the running mean of the vectors assigned to it: N_k <- d N_k +
    (1 - d) n_k, m_k <- d m_k + (1 - d) sum z_i, e_k = m_k / smoothed N_k. The assignments
    come from the codebook as it was *before* this step: they are the tokens this batch
    produced, and the update only changes what the next batch will see. The inputs are not
    changed; the new state comes back as an EMAStep.
    """
    validate.number(decay, "decay", 0, 1, low_open=True, high_open=True)
    validate.number(eps, "eps", low=0, low_open=True)  # eps = 0 divides an unused code by 0
    K, D = validate.float_tensor(codebook, "codebook", dim=2).shape
    validate.last_dim(validate.float_tensor(z, "z", dim=2), "z", D, "the codebook's D")
    # the state must be the codebook's: a (1,) count or a (1, D) sum would broadcast
    if validate.float_tensor(cluster_size, "cluster_size").shape != (K,):
        raise ValueError(f"cluster_size must be ({K},), one count per code, got shape "
                         f"{tuple(cluster_size.shape)}")
    if validate.float_tensor(embed_avg, "embed_avg").shape != (K, D):
        raise ValueError(f"embed_avg must be ({K}, {D}), the codebook's shape, got shape "
                         f"{tuple(embed_avg.shape)}")
    indices = nearest_code(z, codebook)  # (N,) from the codebook BEFORE the update
    counts = torch.bincount(indices, minlength=codebook.shape[0]).to(cluster_size.dtype)  # (K,)
    sums = torch.zeros_like(embed_avg).index_add_(0, indices, z.to(embed_avg.dtype))  # (K, D)
    new_size = decay * cluster_size + (1 - decay) * counts  # (K,)
    new_avg = decay * embed_avg + (1 - decay) * sums  # (K, D)
    return EMAStep(indices, new_size, new_avg, new_avg / laplace_smoothed(new_size, eps)[:, None])


# --------------------------------------------------------------------------- the module


class VQOutput(NamedTuple):
    """What `VectorQuantizer.forward` returns."""

    quantized: Tensor  # same shape/layout as the input z, straight-through (gradient flows to z)
    indices: Tensor  # int64: (B, H, W) for a (B, C, H, W) input, (B, N) for a (B, N, C) input
    loss: Tensor  # scalar: codebook loss + beta * commitment loss (codebook term omitted with EMA)
    perplexity: Tensor  # scalar, of this batch's code use (for logging)
    usage: Tensor  # scalar in [0, 1]: fraction of codes used in this batch


def usage_stats(indices: Tensor, num_codes: int) -> tuple[Tensor, Tensor]:
    """(perplexity, usage) of a batch of indices, as tensors that stay on the device."""
    validate.positive_int(num_codes, "num_codes")
    counts = torch.bincount(validate.int_tensor(indices, "indices").flatten(),
                            minlength=num_codes).float()  # (K,), longer for an id >= K
    if counts.shape[0] != num_codes:  # the range check, at no cost: bincount read the max
        raise ValueError(f"indices must lie in [0, {num_codes - 1}], got ids up to "
                         f"{counts.shape[0] - 1}")
    p = counts / counts.sum()  # (K,)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return entropy.exp(), (counts > 0).float().mean()


def channels_last(z: Tensor, dim: int) -> Tensor:
    """A quantizer's input, (B, C, H, W) -> (B, H, W, C) or (B, N, C) as is, with C == dim."""
    validate.float_tensor(z, "z", dim=(3, 4))  # (B, C, H, W) or (B, N, C)
    channels = z.shape[1] if z.dim() == 4 else z.shape[2]
    if channels != dim:
        raise ValueError(f"z has {channels} channels but the quantizer's dim is {dim}")
    return z.permute(0, 2, 3, 1) if z.dim() == 4 else z


class VectorQuantizer(nn.Module):
    """Nearest-code quantization with a learnable codebook and a straight-through output.

    forward(z) takes a feature map (B, C, H, W) or a sequence (B, N, C) with C == dim and
    returns a VQOutput. The codebook is an nn.Parameter trained by the codebook loss, or,
    with `ema=True`, a buffer moved by `ema_update` (decay, Laplace smoothing with eps) while
    the loss keeps only beta * commitment. Only `train()` mode changes state; in `eval()` the
    forward is the same lookup, output and loss, with the codebook left untouched.

    The trailing options are Lesson 02's remedies for codebook collapse:

    - `dead_code_threshold=t > 0`: a code whose decayed usage count falls below t is
      restarted at a random vector of the current batch.
    - `kmeans_init=True`: the codebook is fitted by k-means to the first training batch.
    - `l2_normalize=True`: z and the codes are projected onto the unit sphere, so the
      nearest code is the one with the highest cosine similarity.
    - `code_dim=d`: z is projected to d dimensions before the lookup and back to `dim`
      after it; the codebook is (num_codes, d).

    State: `codebook` (K, code_dim); with EMA, `cluster_size` (K,) and `embed_avg` (K,
    code_dim); `cluster_size` also tracks usage for dead-code restarts; `initted` exists with
    k-means initialisation.
    """

    def __init__(self, num_codes: int, dim: int, beta: float = 0.25, *, ema: bool = False,
                 decay: float = 0.99, eps: float = 1e-5, dead_code_threshold: float = 0.0,
                 kmeans_init: bool = False, l2_normalize: bool = False,
                 code_dim: int | None = None):
        super().__init__()
        self.num_codes = validate.positive_int(num_codes, "num_codes")
        self.dim = validate.positive_int(dim, "dim")
        self.beta = validate.number(beta, "beta", low=0)
        self.ema = validate.flag(ema, "ema")
        self.decay = validate.number(decay, "decay", 0, 1, low_open=True, high_open=True)
        self.eps = validate.number(eps, "eps", low=0, low_open=True)
        self.dead_code_threshold = validate.number(dead_code_threshold, "dead_code_threshold",
                                                   low=0)
        self.kmeans_init = validate.flag(kmeans_init, "kmeans_init")
        self.l2_normalize = validate.flag(l2_normalize, "l2_normalize")
        self.code_dim = dim if code_dim is None else validate.positive_int(code_dim, "code_dim")

        # The low-dimensional lookup (LlamaGen): project in, look up, project back out.
        projected = self.code_dim != dim
        self.in_proj = nn.Linear(dim, self.code_dim) if projected else nn.Identity()
        self.out_proj = nn.Linear(self.code_dim, dim) if projected else nn.Identity()

        # taming / LlamaGen initialise the codebook uniformly in [-1/K, 1/K].
        init = torch.empty(num_codes, self.code_dim).uniform_(-1.0 / num_codes, 1.0 / num_codes)
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("cluster_size", torch.ones(num_codes))  # decayed counts
            self.register_buffer("embed_avg", init.clone())  # decayed sums
        else:
            self.codebook = nn.Parameter(init)
            if self.dead_code_threshold > 0:  # the decayed counts that decide restarts
                self.register_buffer("cluster_size", torch.ones(num_codes))
        if kmeans_init:
            self.register_buffer("initted", torch.tensor(False))

    def extra_repr(self) -> str:
        return (
            f"num_codes={self.num_codes}, dim={self.dim}, code_dim={self.code_dim}, "
            f"beta={self.beta}, ema={self.ema}, decay={self.decay}, "
            f"dead_code_threshold={self.dead_code_threshold}, kmeans_init={self.kmeans_init}, "
            f"l2_normalize={self.l2_normalize}"
        )

    def _normalize(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) if self.l2_normalize else x

    def lookup_codebook(self) -> Tensor:
        """The (K, code_dim) vectors the lookup compares against (unit length with l2)."""
        return self._normalize(self.codebook)

    # ----------------------------------------------------------------- forward

    def forward(self, z: Tensor) -> VQOutput:
        z_last = channels_last(z, self.dim)  # (B, H, W, C) or (B, N, C)
        z_code = self._normalize(self.in_proj(z_last))  # (..., code_dim); options only
        if self.training and self.kmeans_init and not bool(self.initted):
            self._init_from_kmeans(z_code.detach().reshape(-1, self.code_dim))

        codebook = self.lookup_codebook()  # (K, code_dim)
        indices = nearest_code(z_code.detach(), codebook.detach())  # (B, H, W) or (B, N)
        q = codebook[indices].to(z_code.dtype)  # (..., code_dim), gradient reaches the codebook
        if self.ema:
            loss = self.beta * commitment_loss(z_code, q)  # EMA moves the codebook
        else:
            loss = vq_loss(z_code, q, self.beta)
        quantized = self.out_proj(straight_through(z_code, q))  # (..., dim)
        if z.dim() == 4:
            quantized = quantized.permute(0, 3, 1, 2)  # back to (B, C, H, W)
        perplexity, usage = usage_stats(indices, self.num_codes)

        if self.training:
            # After the output is computed: the update changes what the NEXT batch sees.
            self._update_codebook(z_code.detach().reshape(-1, self.code_dim), indices.flatten())
        return VQOutput(quantized, indices, loss, perplexity, usage)

    def codes(self, indices: Tensor) -> Tensor:
        """Decoder-side vectors of tokens: (B, H, W) -> (B, dim, H, W); (B, N) -> (B, N, dim)."""
        validate.index_tensor(indices, "indices", size=self.num_codes, dim=(2, 3))
        vectors = self.out_proj(self.lookup_codebook()[indices])  # (..., dim)
        return vectors.permute(0, 3, 1, 2) if indices.dim() == 3 else vectors

    # ----------------------------------------------------------------- training-time updates

    @torch.no_grad()
    def _init_from_kmeans(self, flat: Tensor) -> None:
        """Fit the codebook to the first training batch with k-means."""
        if flat.shape[0] < self.num_codes:
            raise ValueError(f"kmeans_init needs at least num_codes={self.num_codes} vectors "
                             f"in the first training batch, got {flat.shape[0]}")
        fitted = self._normalize(kmeans(flat.float(), self.num_codes, iters=KMEANS_ITERS))
        self.codebook.data.copy_(fitted)
        if hasattr(self, "cluster_size"):
            self.cluster_size.fill_(1.0)
        if self.ema:
            self.embed_avg.copy_(fitted)
        self.initted.fill_(True)

    @torch.no_grad()
    def _update_codebook(self, flat: Tensor, indices: Tensor) -> None:
        """EMA step (Lesson 02's ema_update), then dead-code restarts, if enabled. Training only."""
        if self.ema:
            # ema_update assigns flat again, to the codebook the forward used (the forward's
            # indices): one more lookup per step, to call the exercise rather than copy it.
            step = ema_update(self.lookup_codebook(), self.cluster_size, self.embed_avg, flat,
                              self.decay, self.eps)
            self.cluster_size.copy_(step.cluster_size)
            self.embed_avg.copy_(step.embed_avg)
            self.codebook.copy_(step.codebook)
        elif self.dead_code_threshold > 0:  # the decayed counts that decide the restarts
            counts = torch.bincount(indices, minlength=self.num_codes).to(self.cluster_size.dtype)
            self.cluster_size.mul_(self.decay).add_((1 - self.decay) * counts)
        if self.dead_code_threshold > 0:
            self._restart_dead_codes(flat)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: Tensor) -> None:
        """Move every code whose decayed count is below the threshold onto a batch vector."""
        dead = (self.cluster_size < self.dead_code_threshold).nonzero().flatten()  # (n_dead,)
        if dead.numel() == 0:
            return
        # At most one batch vector per dead code, drawn without replacement; if there are more
        # dead codes than vectors, a random subset is restarted now and the rest next step.
        dead = dead[torch.randperm(dead.numel(), device=dead.device)[: flat.shape[0]]]
        picks = torch.randperm(flat.shape[0], device=flat.device)[: dead.numel()]
        vectors = flat[picks].to(self.codebook.dtype)  # (n_dead, code_dim)
        self.codebook.data[dead] = vectors
        self.cluster_size[dead] = self.dead_code_threshold
        if self.ema:
            self.embed_avg[dead] = vectors * self.dead_code_threshold
