"""Checks for Lesson 02: the straight-through estimator, the VQ losses, EMA updates, FSQ.

Each check runs the learner's function on small seeded cases. The cases come in the order
that makes the first failure name the likely mistake: the wrong side detached in the STE,
beta on the codebook term, the loss computed on q_st, EMA statistics gathered with the
updated codebook's assignments, rounding without a straight-through gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minitok import fsq, vq
from minitok.checks import (
    CheckFailed,
    exercise,
    expect,
    expect_close,
    expect_equal,
    expect_shape,
    expect_tensor,
)
from minitok.checks._core import show_hint
from minitok.quantize import nearest_code


def _randn(g: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * scale


# --------------------------------------------------------------------------- straight_through

WRONG_SIDE = (
    "the wrong side is detached: q + (z - q).detach() has z's value and sends the gradient "
    "to q. Write z + (q - z).detach(): q's value forward, the gradient to z."
)


@exercise("straight_through", reference=vq.straight_through)
def straight_through(fn):
    g = torch.Generator().manual_seed(0)
    codebook = _randn(g, 8, 4).requires_grad_()  # (K, D)
    z = _randn(g, 2, 3, 4).requires_grad_()  # (B, N, D)
    q = codebook[nearest_code(z.detach(), codebook.detach())]  # (B, N, D), from the codebook
    upstream = _randn(g, 2, 3, 4)

    q_st = fn(z, q)
    expect_shape(q_st, (2, 3, 4), "q_st")
    expect_close(q_st, q.detach(), "the forward value of q_st", hint=WRONG_SIDE)
    expect(
        q_st.requires_grad,
        "q_st has no gradient at all",
        hint="do not detach everything: only (q - z).",
    )

    (q_st * upstream).sum().backward()
    expect(
        z.grad is not None and z.grad.abs().sum() > 0,
        "no gradient reached z",
        hint="returning q (or z + (q - z) without .detach()) gives z no gradient: argmin is "
        "flat. Detach (q - z) so the identity's gradient flows to z.",
    )
    expect_close(
        z.grad, upstream, "dL/dz", atol=0, rtol=0, hint="dL/dz must equal dL/dq_st exactly."
    )
    leaked = codebook.grad is not None and codebook.grad.abs().sum() > 0
    expect(
        not leaked,
        "a gradient reached the codebook through q_st",
        hint="nothing should flow into q through q_st: wrap (q - z) in .detach(). "
        "The codebook learns from the codebook loss (or EMA) instead.",
    )
    return "value, dL/dz = upstream gradient, no gradient into the codebook"


# --------------------------------------------------------------------------- vq_loss

BETA_SWAPPED = (
    "beta is on the codebook term (taming's legacy orientation). The value is the same "
    "(1 + beta) * mse either way; only the gradients differ. Write "
    "mse(q, z.detach()) + beta * mse(z, q.detach())."
)


@exercise("vq_loss", reference=vq.vq_loss)
def vq_loss(fn):
    g = torch.Generator().manual_seed(1)
    beta = 0.25
    codebook = _randn(g, 16, 3).requires_grad_()  # (K, D)
    z = _randn(g, 10, 3).requires_grad_()  # (N, D)
    indices = nearest_code(z.detach(), codebook.detach())  # (N,)
    q = codebook[indices]  # (N, D): gradient reaches the used codes
    e = q.detach()
    n = z.numel()

    loss = fn(z, q, beta)
    expect_shape(loss, (), "the loss (a scalar)")
    expect_close(
        loss,
        (1 + beta) * F.mse_loss(e, z.detach()),
        "the loss value",
        hint="codebook loss mse(q, z.detach()) plus beta times commitment loss "
        "mse(z, q.detach()): the value is (1 + beta) * mse(z, q). Use means, not sums.",
    )
    loss.backward()
    expect(
        codebook.grad is not None and codebook.grad.abs().sum() > 0,
        "the codebook got no gradient",
        hint="the loss was computed on q_st (straight_through(z, q)) instead of q: q_st's "
        "codebook side is detached. Compute both terms from q and z.",
    )
    dz = 2 * beta * (z.detach() - e) / n  # commitment only
    de = torch.zeros_like(codebook).index_add_(0, indices, 2 * (e - z.detach()) / n)
    swapped = torch.allclose(z.grad, 2 * (z.detach() - e) / n) and torch.allclose(
        codebook.grad, beta * de
    )
    if swapped:
        raise CheckFailed(
            "dL/dz is 2 (z - q) / n and dL/dcodebook carries the factor beta: the other way round",
            BETA_SWAPPED,
        )
    expect_close(
        z.grad,
        dz,
        "dL/dz",
        hint="z should only feel the commitment term: dL/dz = 2 beta (z - q) / n. Detach q "
        "in the commitment term and z in the codebook term.",
    )
    expect_close(
        codebook.grad,
        de,
        "dL/dcodebook",
        hint="the codebook should only feel the codebook term: 2 (q - z) / n on the used "
        "codes, zero on the others.",
    )
    return "value (1 + beta) mse, dL/dz = 2 beta (z - q)/n, dL/de only on used codes"


# --------------------------------------------------------------------------- ema_update

UPDATED_ASSIGNMENTS = (
    "the EMA statistics were computed with the UPDATED codebook's assignments. Assign z to "
    "the codebook as it is before the step (those are this batch's tokens), and gather "
    "counts and sums from those assignments only."
)


def _ema_case():
    """A case where the update moves codes enough to change some assignments."""
    g = torch.Generator().manual_seed(2)
    K, D = 6, 2
    codebook = _randn(g, K, D)  # (K, D)
    codebook[K - 1] = 50.0  # far away: unused, and its count starts at 0
    cluster_size = torch.rand(K, generator=g) * 2  # (K,)
    cluster_size[K - 1] = 0.0
    embed_avg = codebook * cluster_size[:, None]  # (K, D)
    z = _randn(g, 40, D, scale=2.0)  # (N, D)
    return codebook, cluster_size, embed_avg, z


@exercise("ema_update", reference=vq.ema_update)
def ema_update(fn):
    decay, eps = 0.5, 1e-5
    codebook, cluster_size, embed_avg, z = _ema_case()
    inputs = [t.clone() for t in (codebook, cluster_size, embed_avg, z)]
    expected = vq.ema_update(codebook, cluster_size, embed_avg, z, decay, eps)
    # what the classic mistake gives: assignments from the codebook after one update (the
    # codebook argument of ema_update only decides the assignments)
    wrong = vq.ema_update(expected.codebook, cluster_size, embed_avg, z, decay, eps)

    got = fn(codebook, cluster_size, embed_avg, z, decay, eps)
    expect(
        isinstance(got, tuple) and len(got) == 4,
        "ema_update should return (indices, cluster_size, embed_avg, codebook)",
    )
    for before, after, name in zip(
        inputs,
        (codebook, cluster_size, embed_avg, z),
        ("codebook", "cluster_size", "embed_avg", "z"),
        strict=True,
    ):
        expect(
            torch.equal(before, after),
            f"ema_update changed its input {name} in place",
            hint="return new tensors (decay * x + ...) instead of x.mul_(...) on the inputs.",
        )
    indices, new_size, new_avg, new_codebook = got
    expect_tensor(indices, "indices", dtype=torch.int64)
    if torch.equal(indices, wrong.indices) or torch.allclose(new_size, wrong.cluster_size):
        raise CheckFailed("indices / counts come from the updated codebook", UPDATED_ASSIGNMENTS)
    expect_equal(indices, expected.indices, "indices", hint=UPDATED_ASSIGNMENTS)
    expect_close(
        new_size,
        expected.cluster_size,
        "cluster_size",
        hint="N_k <- decay * N_k + (1 - decay) * n_k, with n_k the number of vectors assigned to k.",
    )
    expect_close(
        new_avg,
        expected.embed_avg,
        "embed_avg",
        hint="m_k <- decay * m_k + (1 - decay) * (SUM of the vectors assigned to k, not their mean).",
    )
    expect(
        bool(torch.isfinite(new_codebook).all()),
        "the new codebook has inf or NaN entries (a code nobody used divides by a zero count)",
        hint="Laplace smoothing: divide by (N_k + eps) / (sum N + K eps) * sum N, never by N_k.",
    )
    expect_close(
        new_codebook,
        expected.codebook,
        "codebook",
        hint="e_k = m_k / smoothed N_k, smoothed N_k = (N_k + eps) / (sum N + K eps) * sum N.",
    )
    return "assignments from the old codebook, counts, sums, Laplace-smoothed codes"


# --------------------------------------------------------------------------- fsq_quantize


@exercise("fsq_quantize", reference=fsq.fsq_quantize)
def fsq_quantize(fn):
    g = torch.Generator().manual_seed(3)
    odd, mixed = [5, 5, 3], [8, 6, 5]
    z = _randn(g, 200, 3, scale=2.0)

    got = fn(z, odd)
    expect_shape(got, (200, 3), "fsq_quantize(z, [5, 5, 3])")
    expect_close(
        got,
        fsq.fsq_quantize(z, odd),
        "codes for odd levels [5, 5, 3]",
        hint="bound with tanh(z) * half_l, half_l = (L - 1)(1 + 1e-3) / 2, round, then divide "
        "by L // 2 so every code lies in [-1, 1].",
    )
    got = fn(z, mixed)
    expect_close(
        got,
        fsq.fsq_quantize(z, mixed),
        "codes for levels [8, 6, 5]",
        hint="even L needs the offset: tanh(z + atanh(offset / half_l)) * half_l - offset with "
        "offset = 0.5 for even L (0 for odd), so the L levels are -L/2 .. L/2 - 1.",
    )
    for i, level in enumerate(mixed):
        values = torch.unique(got[:, i].detach()).numel()
        expect(values <= level, f"channel {i} takes {values} values, more than L = {level}")

    z_leaf = z.clone().requires_grad_()
    upstream = _randn(g, 200, 3)
    codes = fn(z_leaf, mixed)
    expect(
        codes.requires_grad,
        "the codes carry no gradient",
        hint="round() has zero gradient: round with a straight-through estimator, "
        "x + (x.round() - x).detach().",
    )
    (codes * upstream).sum().backward()
    z_ref = z.clone().requires_grad_()
    (fsq.fsq_quantize(z_ref, mixed) * upstream).sum().backward()
    expect_close(
        z_leaf.grad,
        z_ref.grad,
        "dL/dz",
        hint="round() has zero gradient: round with a straight-through estimator, "
        "x + (x.round() - x).detach(), so the gradient of the bound reaches z.",
    )
    return "odd and even levels, codes in [-1, 1], straight-through gradient"


def hint(name: str, level: int | None = None) -> None:
    """The next hint for exercise `name` (1 the idea, 2 the formula, 3 near-code)."""
    show_hint(__name__, name, level)
