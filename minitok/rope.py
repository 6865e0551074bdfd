"""Lesson 04 (optional part): 2D rotary position embeddings for a grid of image tokens.

A demonstration: the course's models learn their positions (the Transformer's `wpe`).

Rotary embeddings (RoPE) do not add a position vector to the token. They rotate the query
and the key of each attention head instead: the channels are taken in pairs, and pair i of
a token at position p is turned by the angle p * f_i (one frequency per pair). A rotation
by a and then the dot product with a vector rotated by b depends only on b - a, so

    score(q at p, k at p') = <R(p) q, R(p') k> = <q, R(p' - p) k>

depends on the *offset* p' - p, never on where the two tokens are.

For an image the position is a (row, column) pair. LlamaGen's 2D variant gives the first
half of the pairs the row angle and the second half the column angle, so a score depends
only on the (row, column) offset: a token "two rows up and one to the left" is treated the
same everywhere in the picture. (1D RoPE over the raster order would instead see the last
token of a row and the first of the next as neighbours.)
"""

from __future__ import annotations

import torch


def rope_angles_2d(
    height: int, width: int, head_dim: int, base: float = 10000.0, n_prefix: int = 0
) -> torch.Tensor:
    """Rotation angles for a height x width grid read in raster order: (n_prefix + H*W, head_dim/2).

    Row j of the result holds the angle of each channel pair of token j. The first quarter
    of head_dim (head_dim/4 pairs) turns with the row, the second quarter with the column,
    at frequencies base^(-i / (head_dim/4)) as in LlamaGen. `n_prefix` tokens placed before
    the grid (a class token, say) get angle 0: they are not rotated.
    """
    if head_dim % 4:  # otherwise the table would silently have too few channel pairs
        raise ValueError(f"head_dim must be divisible by 4 (2D rotary pairs), got {head_dim}")
    quarter = head_dim // 4
    freqs = base ** (-torch.arange(quarter, dtype=torch.float64) / quarter)  # (d/4,)
    rows = torch.arange(height, dtype=torch.float64).repeat_interleave(width)  # (H*W,) 0,0,..,1,1
    cols = torch.arange(width, dtype=torch.float64).repeat(height)  # (H*W,) 0,1,..,0,1
    row_angles = rows[:, None] * freqs[None, :]  # (H*W, d/4)
    col_angles = cols[:, None] * freqs[None, :]  # (H*W, d/4)
    grid = torch.cat([row_angles, col_angles], dim=1)  # (H*W, d/2)
    prefix = torch.zeros(n_prefix, 2 * quarter, dtype=torch.float64)  # angle 0: no rotation
    return torch.cat([prefix, grid], dim=0).float()  # (n_prefix + H*W, d/2)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate each channel pair (x[2i], x[2i+1]) of x (..., T, d) by angles (T, d/2).

    This is multiplication by exp(i * angle) if each pair is read as a complex number
    x[2i] + i x[2i+1]. Computed in float32 and returned in x's dtype. It runs inside every
    attention layer of a rotary model, so it trusts its shapes (the model builds `angles`).
    """
    cos, sin = angles.cos(), angles.sin()  # (T, d/2) each
    pairs = x.float().unflatten(-1, (-1, 2))  # (..., T, d/2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]  # (..., T, d/2) each
    rotated = torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1)
    return rotated.flatten(-2).to(x.dtype)  # (..., T, d)
