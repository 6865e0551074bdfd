"""Checks for Lesson 09: the multi-scale residual quantizer and next-scale prediction (VAR).

Each check runs the learner's function on small seeded float64 cases and compares with
minitok's reference, which follows the official VAR code (FoundationVision/VAR; tests/
test_var.py holds its transcription) token for token. Before the final comparison, each
classic mistake is computed on the same inputs so that the verdict names it: the residual
not subtracted (every scale quantizes f), phi skipped or applied before upsampling, the
wrong interpolation (area down, bicubic up), scales run fine to coarse, a coarse map
subtracted without upsampling; the teacher-forcing input one scale late or made of the last
map only; a causal or strict mask instead of the block-causal one; and in the sampler,
guidance not ramped (or ramped from the first scale), a new cache per scale, the halves
swapped, an input that forgets the coarser scales.

The phi convolutions of the cases are far from the identity, so skipping one changes tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minitok import msvq, quantize, sampling
from minitok import var as V
from minitok.checks import CheckFailed, exercise, expect, expect_close, expect_equal, expect_tensor
from minitok.checks import probe as run_probe
from minitok.checks._core import show_hint
from minitok.sampling import cfg_logits, sample_logits

# The earlier lessons' exercises that this lesson's functions call by name. The notebook binds
# the learner's own (`minitok.earlier.passed`); while a check runs they are minitok's, in the
# notebook as in the grader (which reads one notebook), so a check judges its exercise alone.
EARLIER = {"nearest_code": quantize.nearest_code, "sample_logits": sampling.sample_logits,
           "cfg_logits": sampling.cfg_logits}


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _quantizer(scales, num_codes=24, dim=5, seed=0, dtype=torch.float64):
    """A small quantizer with a spread-out codebook and phi convolutions far from identity,
    built without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        q = msvq.MultiScaleQuantizer(num_codes, dim, scales, num_phi=min(4, len(scales)))
    with torch.no_grad():
        q.codebook.copy_(torch.randn(num_codes, dim, generator=_gen(seed + 1)))
        for phi in q.phi:
            phi.conv.weight.copy_(0.4 * torch.randn(phi.conv.weight.shape, generator=_gen(seed + 2)))
    return q.to(dtype).eval()


CASES = [((1, 2, 4, 8), 0), ((1, 2, 3, 6), 3)]  # the course's scales, and a 6 x 6 grid


def _feature_map(scales, seed, dim=5, batch=3, dtype=torch.float64):
    G = scales[-1]
    return 1.5 * torch.randn(batch, dim, G, G, generator=_gen(seed + 10), dtype=dtype)


def _pyramids():
    """The quantizer exercises' cases: (scales, codebook, phis, f, f's token maps), float64."""
    for scales, seed in CASES:
        q = _quantizer(scales, seed=seed)
        codebook, phis, f = q.codebook.detach(), q.phis(), _feature_map(scales, seed)
        yield scales, codebook, phis, f, _encode(f, codebook, phis, scales)


def _on_pyramids(fn, name: str):
    """fn(ids, codebook, phis, scales) on each case's token maps (copies: fn may change
    them): (scales, codebook, phis, ids, what was called, its answer)."""
    for scales, codebook, phis, _, ids in _pyramids():
        with torch.no_grad():
            got = fn([i.clone() for i in ids], codebook, phis, scales)
        yield scales, codebook, phis, ids, f"{name}(ids, codebook, phis, scales={scales})", got


# --------------------------------------------------------------------------- the variants


def _apply(phi, h):
    with torch.no_grad():
        return phi(h)


def _scale_map(idx, codebook, phi, s, G, mistake=None):
    """One scale's share of f_hat (B, D, G, G): its codes enlarged (bicubic), then phi; or
    the classic `mistake` in that (phi first or skipped, another upsampling mode)."""
    h = msvq.lookup(idx, codebook, s)  # (B, D, s, s)
    if mistake == "phi_first":
        h = _apply(phi, h)
    if s != G:
        up = {"up_nearest": "nearest", "up_bilinear": "bilinear"}.get(mistake, "bicubic")
        h = F.interpolate(h, size=(G, G), mode=up)
    return h if mistake in ("no_phi", "phi_first") else _apply(phi, h)


def _encode(f, codebook, phis, scales, mistake=None):
    """minitok's encode_scales, or the classic `mistake` in it."""
    G, rest, ids = scales[-1], f, []
    order = list(enumerate(scales))
    for k, s in (order[::-1] if mistake == "fine_to_coarse" else order):
        source = f if mistake == "no_residual" else rest
        down = "bilinear" if mistake == "down_bilinear" else "area"
        z = F.interpolate(source, size=(s, s), mode=down) if s != G else source
        idx = msvq.nearest_code(z.permute(0, 2, 3, 1), codebook).flatten(1)  # (B, s*s)
        rest = rest - _scale_map(idx, codebook, phis[k], s, G, mistake)
        ids.append(idx)
    return ids


def _fhat(ids, codebook, phis, scales, mistake=None):
    G = scales[-1]
    return sum(_scale_map(ids[k], codebook, phis[k], s, G, mistake)
               for k, s in enumerate(scales))


def _inputs(ids, codebook, phis, scales, mistake=None):
    G, f_hat, out = scales[-1], 0, []
    for k, s in enumerate(scales[:-1]):
        h = _scale_map(ids[k], codebook, phis[k], s, G, "no_phi" if mistake == "no_phi" else None)
        f_hat = f_hat + h
        source = h if mistake == "last_only" else f_hat
        out.append(F.interpolate(source, size=(scales[k + 1],) * 2, mode="area")
                   .flatten(2).transpose(1, 2))  # (B, s'^2, D)
    return torch.cat(out, dim=1)


MISTAKE_HINTS = {
    "no_residual": "every scale quantized the feature map f itself: quantize what is LEFT, the "
                   "residual rest = f - (what the coarser scales explained), and subtract "
                   "each scale's contribution from rest before the next scale",
    "no_phi": "phi was skipped: each scale's upsampled codes go through phis[k] (its own "
              "refining convolution) before they are subtracted or added",
    "phi_first": "phi was applied to the small s x s map, before upsampling: the official "
                 "order is upsample to G x G (bicubic), THEN phis[k] (a G x G convolution)",
    "up_nearest": "the codes were upsampled with mode='nearest': VAR upsamples with "
                  "mode='bicubic' (smooth planes, not blocks)",
    "up_bilinear": "the codes were upsampled with mode='bilinear': VAR upsamples with "
                   "mode='bicubic'",
    "down_bilinear": "the residual was downsampled with mode='bilinear': VAR downsamples with "
                     "mode='area' (each coarse vector is the mean of its patch)",
    "fine_to_coarse": "the scales ran fine to coarse: the 1 x 1 map comes first and explains "
                      "the most, each finer map corrects what the coarser ones left",
}
SHAPE_HINT = ("return one (B, s*s) map of int64 token ids per scale, in the order of "
              "`scales` (coarse to fine), each map in raster order")
UNUPSAMPLED_HINT = ("a coarse s x s map cannot be subtracted from the G x G residual: "
                    "upsample the codes to G x G (bicubic) and refine them with phis[k] first "
                    "(a 1 x 1 map broadcasts silently, a 2 x 2 one fails)")


def _name_mistake(got, variants, what):
    for mistake, expected in variants.items():
        if _same(got, expected):
            raise CheckFailed(f"{what}: the tokens of a classic mistake", MISTAKE_HINTS[mistake])


def _encoded(fn, f, codebook, phis, scales):
    """fn's token maps of f, without gradients; a size mismatch (a coarse map subtracted
    before it was enlarged) is named as that mistake."""
    try:
        with torch.no_grad():
            return fn(f, codebook, phis, scales)
    except RuntimeError as err:
        if "must match the size" not in str(err):
            raise
        raise CheckFailed(f"the call failed: {err}", UNUPSAMPLED_HINT) from err


ENCODE_HINTS = (
    "Go from the coarsest scale to the finest, keeping the residual `rest` (at first f): "
    "shrink it to s x s, give each vector its nearest code, turn those codes back into a "
    "G x G map exactly as the decoder will see it, and subtract that map from rest.",
    "z = area-downsample(rest) to (s, s) (not at s = G); ids = nearest_code(z as (B, s, s, D), "
    "codebook) -> (B, s*s); h = phis[k](bicubic-upsample(codebook[ids] as (B, D, s, s)) to "
    "(G, G)); rest = rest - h. Key calls: F.interpolate(x, size=(s, s), mode='area'), "
    "mode='bicubic', msvq.lookup(ids, codebook, s).",
    "rest, ids = f, []\n"
    "for k, s in enumerate(scales):\n"
    "    z = ...                             # rest at s x s (area), or rest itself at s = G\n"
    "    idx = nearest_code(____, codebook).flatten(1)   # (B, s*s): channels last first\n"
    "    h = ...                             # the codes as a map, upsampled to G x G\n"
    "    rest = rest - ...                   # what the decoder will see of this scale\n"
    "    ids.append(idx)\n"
    "return ids",
)


@exercise("encode_scales", reference=msvq.encode_scales, hints=ENCODE_HINTS)
def encode_scales(fn):
    for scales, codebook, phis, f, expected in _pyramids():
        given = f.clone()
        what = f"encode_scales(f {tuple(f.shape)}, codebook, phis, scales={scales})"
        got = _encoded(fn, f, codebook, phis, scales)
        expect(isinstance(got, (list, tuple)) and len(got) == len(scales),
               f"{what}: expected a list of {len(scales)} maps, got {type(got).__name__}"
               + (f" of {len(got)}" if isinstance(got, (list, tuple)) else ""), SHAPE_HINT)
        shapes = [tuple(g.shape) if isinstance(g, torch.Tensor) else None for g in got]
        want = [(f.shape[0], s * s) for s in scales]
        if shapes == want[::-1]:
            raise CheckFailed(f"{what}: maps of shapes {shapes}", MISTAKE_HINTS["fine_to_coarse"])
        expect(shapes == want, f"{what}: maps of shapes {shapes}, expected {want}", SHAPE_HINT)
        for g in got:
            expect_tensor(g, f"{what}: a token map", dtype=torch.long, hint=SHAPE_HINT)
        expect_equal(f, given, "f after the call", hint="do not change f in place: rest = f, "
                     "then rest = rest - h makes new tensors")
        if not _same(got, expected):  # name the mistake whose tokens these are
            _name_mistake(got, {m: _encode(f, codebook, phis, scales, m) for m in MISTAKE_HINTS
                                if m != "fine_to_coarse"}, what)
        for k, (g, e) in enumerate(zip(got, expected, strict=True)):
            expect_equal(g, e, f"{what}: the tokens of scale {scales[k]} x {scales[k]}",
                         hint=ENCODE_HINTS[0])
    return "every token of 2 x 3 feature maps (scales 1-2-4-8 and 1-2-3-6), float64"


FHAT_HINTS = (
    "The inverse of encode_scales' bookkeeping: f_hat is what all the subtracted maps add "
    "up to. Each scale's codes become a G x G map exactly as during encoding; sum them.",
    "for each scale k: h = codebook[ids[k]] as (B, D, s, s); bicubic-upsample to (G, G) "
    "(not at s = G); h = phis[k](h); f_hat = f_hat + h. Returns (B, D, G, G).",
    "f_hat = 0\n"
    "for k, s in enumerate(scales):\n"
    "    h = ...                             # scale k's codes as a (B, D, s, s) map\n"
    "    ...                                 # to G x G, as encode_scales did\n"
    "    f_hat = f_hat + ...\n"
    "return f_hat",
)


@exercise("scales_to_fhat", reference=msvq.scales_to_fhat, hints=FHAT_HINTS)
def scales_to_fhat(fn):
    for scales, codebook, phis, ids, what, got in _on_pyramids(fn, "scales_to_fhat"):
        expect_tensor(got, what, hint="return f_hat as a (B, D, G, G) float tensor")
        G = scales[-1]
        expect(tuple(got.shape) == (3, codebook.shape[1], G, G),
               f"{what}: shape {tuple(got.shape)}, expected {(3, codebook.shape[1], G, G)}",
               "f_hat has the feature map's shape (B, D, G, G): every scale is upsampled to G")
        right = torch.allclose(got.double(), _fhat(ids, codebook, phis, scales), atol=1e-9)
        for mistake in ("no_phi", "phi_first", "up_nearest", "up_bilinear"):
            if not right and torch.allclose(got.double(), _fhat(ids, codebook, phis, scales, mistake),
                              atol=1e-9):
                raise CheckFailed(f"{what}: the sum of a classic mistake", MISTAKE_HINTS[mistake])
        expect_close(got.double(), _fhat(ids, codebook, phis, scales), what, atol=1e-9,
                     rtol=1e-9, hint=FHAT_HINTS[1])
    return "f_hat of 2 x 3 token pyramids (scales 1-2-4-8 and 1-2-3-6), float64"


INPUT_HINTS = (
    "The model predicts scale k from everything coarser: the running f_hat of scales "
    "0..k-1, shrunk to scale k's size. Scale 0 has no coarser scale (the class token "
    "stands there), so there is one input vector per token of scales 1..K-1.",
    "f_hat = 0; for k < K-1: f_hat = f_hat + phis[k](bicubic-upsample(codes of scale k) to "
    "G x G); next = area-downsample(f_hat) to scales[k+1], as (B, s'^2, D) (flatten(2), "
    "then transpose(1, 2)). Concatenate along dim 1: (B, L - 1, D).",
    "f_hat, inputs = 0, []\n"
    "for k, s in enumerate(scales[:-1]):\n"
    "    h = ...                             # scale k's codes, upsampled to G x G\n"
    "    f_hat = ...                         # the scales so far\n"
    "    inputs.append(...)                  # f_hat at scales[k + 1], as (B, s'*s', D)\n"
    "return torch.cat(inputs, dim=1)",
)
INPUT_MISTAKES = {
    "last_only": "each input held only the previous scale's map: it is the RUNNING f_hat, the "
                 "sum of every coarser scale's map, downsampled to the next scale",
    "no_phi": MISTAKE_HINTS["no_phi"],
}


@exercise("var_inputs", reference=msvq.var_inputs, hints=INPUT_HINTS)
def var_inputs(fn):
    for scales, codebook, phis, ids, what, got in _on_pyramids(fn, "var_inputs"):
        expect_tensor(got, what, hint="return one (B, L - 1, D) float tensor")
        L, D = sum(s * s for s in scales), codebook.shape[1]
        if tuple(got.shape) == (3, D, L - 1):
            raise CheckFailed(f"{what}: shape {tuple(got.shape)}", "channels last: each position "
                              "is a D-vector, (B, s*s, D): flatten(2) then transpose(1, 2)")
        if tuple(got.shape) == (3, L, D):
            raise CheckFailed(f"{what}: shape {tuple(got.shape)}, one input per token",
                              "scale 0 has no input here (the class token takes its place): "
                              "inputs for scales 1..K-1 only, L - 1 positions")
        if got.dim() == 3 and got.shape[1] == L - 1 + scales[-1] ** 2:
            raise CheckFailed(f"{what}: shape {tuple(got.shape)}, an input after the last scale",
                              "no scale comes after the finest: the loop runs over "
                              "scales[:-1], each giving the input of the scale after it")
        expect(tuple(got.shape) == (3, L - 1, D),
               f"{what}: shape {tuple(got.shape)}, expected {(3, L - 1, D)}", INPUT_HINTS[1])
        right = torch.allclose(got.double(), _inputs(ids, codebook, phis, scales), atol=1e-9)
        for mistake, hint in INPUT_MISTAKES.items():
            wrong = _inputs(ids, codebook, phis, scales, mistake)
            if not right and wrong.shape == got.shape and torch.allclose(got.double(), wrong, atol=1e-9):
                raise CheckFailed(f"{what}: the inputs of a classic mistake", hint)
        expect_close(got.double(), _inputs(ids, codebook, phis, scales), what, atol=1e-9,
                     rtol=1e-9, hint=INPUT_HINTS[1])
    return "the teacher-forcing inputs of 2 x 3 token pyramids, float64"


MASK_HINTS = (
    "Give every position the index of its scale (0 for the 1 x 1 map, 1 for the four of "
    "the 2 x 2, ...). A position may look at another iff the other's scale is not finer.",
    "level = the scale index of each of the L positions (torch.repeat_interleave of "
    "arange(K) by the counts s*s); mask[i, j] = level[i] >= level[j]. Returns (L, L) bool.",
    "level = torch.repeat_interleave(torch.arange(len(scales)), torch.tensor([...]))\n"
    "return level[:, None] ... level[None, :]",
)


@exercise("block_causal_mask", reference=V.block_causal_mask, hints=MASK_HINTS)
def block_causal_mask(fn):
    for scales in ((1, 2, 4, 8), (1, 2, 3, 6), (2, 3)):
        expected = V.block_causal_mask(scales)
        L = expected.shape[0]
        what = f"block_causal_mask({scales})"
        got = fn(scales)
        expect_tensor(got, what, hint="return a torch.bool tensor, True where attending is "
                      "allowed (the official code's 0 / -inf bias is the same thing as floats)")
        expect(tuple(got.shape) == (L, L), f"{what}: shape {tuple(got.shape)}, expected {(L, L)} "
               f"(one row and column per token of every scale)", MASK_HINTS[1])
        expect(got.dtype == torch.bool, f"{what}: dtype {got.dtype}, expected torch.bool",
               "return a torch.bool mask, True where position i may attend to position j "
               "(the official code adds a float bias of 0 / -inf instead: the same rule)")
        if torch.equal(got, torch.ones(L, L).tril().bool()):
            raise CheckFailed(f"{what}: the causal (lower-triangular) mask",
                              "causal is token by token; block-causal lets every token see all "
                              "of its OWN scale too (its inputs are known before the pass), "
                              "so the diagonal holds full s*s blocks")
        if torch.equal(got, expected.T):
            raise CheckFailed(f"{what}: the transpose", "that is the transpose: row i is the query, column j the key: "
                              "a coarse token must not see the finer ones")
        level = torch.repeat_interleave(torch.arange(len(scales)),
                                        torch.tensor([s * s for s in scales]))
        if torch.equal(got, level[:, None] > level[None, :]):
            raise CheckFailed(f"{what}: the tokens do not see their own scale",
                              "scale(i) >= scale(j), not >: a token sees its own scale")
        expect_equal(got, expected, what, hint=MASK_HINTS[1])
    return "the masks of scales 1-2-4-8 (85 x 85), 1-2-3-6 and 2-3, as the official attn_bias"


# --------------------------------------------------------------------------- sampling

GEN_SCALES = (1, 2, 3, 4)
GEN_LABELS = [0, 3, 2]


def _gen_var() -> tuple[V.VAR, msvq.MultiScaleQuantizer]:
    """A small random VAR with sharp logits and its quantizer, without the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        model = V.VAR(V.VARConfig(num_codes=10, code_dim=5, scales=GEN_SCALES, num_classes=4,
                                  n_layer=2, n_head=2, n_embd=24))
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.mul_(4.0)
        model.transformer.wte.weight[10:].mul_(25.0)  # the class tokens: guidance matters
        model.transformer.head.weight.mul_(6.0)  # logits a few nats apart
    return model.eval(), _quantizer(GEN_SCALES, num_codes=10, seed=4, dtype=torch.float32)


def _loop(model, q, labels, generator, mistake=None, cfg_scale=1.0, temperature=1.0, top_k=None):
    """minitok's sampler, or the classic `mistake` in it."""
    c, B = model.config, labels.shape[0]
    scales, G, K, n = c.scales, c.scales[-1], c.num_codes, len(c.scales)
    guided = cfg_scale != 1.0
    if guided:
        labels = torch.cat([labels, torch.full_like(labels, c.null_class)])
    codebook, phis = q.codebook.detach(), q.phis()
    cache, f_hat, inputs, ids = model.new_cache(), 0, None, []
    with torch.no_grad():
        for k, s in enumerate(scales):
            if mistake == "fresh_cache":
                cache = model.new_cache()
            logits = model(model.embed(k, labels, inputs), cache)
            if guided:
                ramp = {"no_ramp": cfg_scale, "ramp_from_one": 1 + (cfg_scale - 1) * (k + 1) / n
                        }.get(mistake, V.cfg_ramp(cfg_scale, k, n))
                cond, uncond = logits[:B], logits[B:]
                if mistake == "swapped":
                    cond, uncond = uncond, cond
                logits = cfg_logits(cond, uncond, ramp)
            if mistake == "no_settings":
                idx = sample_logits(logits.reshape(-1, K), generator=generator)
            else:
                idx = sample_logits(logits.reshape(-1, K), temperature, top_k, None, generator)
            ids.append(idx.view(B, s * s))
            if k + 1 < n:
                h = _scale_map(ids[-1], codebook, phis[k], s, G)  # (B, D, G, G)
                f_hat = h if mistake == "last_only" else f_hat + h
                inputs = F.interpolate(f_hat, size=(scales[k + 1],) * 2, mode="area")
                inputs = inputs.flatten(2).transpose(1, 2)
                if guided:
                    inputs = torch.cat([inputs, inputs])
    return ids


LOOP_HINTS = {
    "fresh_cache": "make the cache once, before the loop (var.new_cache()): a new cache on "
                   "every scale forgets the coarser scales, which the next scale must attend to",
    "no_ramp": "the guidance ramps with the scale: cfg_ramp(cfg_scale, k, K) at scale k (1, "
               "no guidance, at the first scale; cfg_scale at the last), not cfg_scale everywhere",
    "ramp_from_one": "the ramp starts at the FIRST scale, k = 0 (no guidance there): "
                     "cfg_ramp(cfg_scale, k, K) with k counted from 0",
    "swapped": "the halves are swapped: the first B rows (the class labels) give the "
               "conditional logits, the last B (the null class) the unconditional ones",
    "last_only": "the next input is the RUNNING f_hat (every scale drawn so far, summed), "
                 "downsampled to the next scale, not the last scale's map alone",
    "no_settings": "pass temperature, top_k, top_p and the generator on to sample_logits: "
                   "temperature and top-k changed nothing",
}
GENERATE_HINTS = (
    "One pass per scale: embed this scale's inputs (the class token at scale 0), run the "
    "model with one cache kept across scales, draw the whole s x s map at once, then add "
    "its upsampled, phi-refined codes to f_hat and downsample f_hat to the next scale: that "
    "is the next pass's input. With guidance: the doubled batch [class; null], combined "
    "with a guidance scale that grows with k.",
    "logits = var(var.embed(k, labels, inputs), cache) (rows, s*s, K); guided: "
    "cfg_logits(logits[:B], logits[B:], cfg_ramp(cfg_scale, k, K)); idx = "
    "sample_logits(logits.reshape(-1, K), temperature, top_k, top_p, generator).view(B, "
    "s*s); f_hat += phis[k](bicubic up of codes to G x G); inputs = area-downsample(f_hat) "
    "to scales[k+1] as (B, s'^2, D), doubled when guided.",
    "cache, f_hat, inputs, ids = var.new_cache(), 0, None, []\n"
    "for k, s in enumerate(scales):\n"
    "    logits = var(var.embed(k, labels, inputs), cache)   # (rows, s*s, K)\n"
    "    if guided:\n"
    "        logits = ...                    # cfg_logits, with the scale's ramped guidance\n"
    "    idx = sample_logits(...)            # the whole s x s map at once\n"
    "    ids.append(idx.view(B, s * s))\n"
    "    if k + 1 < len(scales):\n"
    "        f_hat = ...                     # add this scale's map, as in scales_to_fhat\n"
    "        inputs = ...                    # f_hat at the next scale, (B, s'*s', D); "
    "doubled when guided\n"
    "return ids",
)


def _generate_probe(fn, model, q, labels, seed: int, settings: dict) -> dict:
    """Runs where the learner's function lives: the passes (rows, positions) and the RNG."""
    passes, caches = [], []

    def count(_module, args, kwargs):
        passes.append(tuple(args[0].shape[:2]))
        cache = args[1] if len(args) > 1 else kwargs.get("cache")
        caches.append(cache)
        passes[-1] += (None if cache is None else cache.length,)

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    facts = {"got": None, "passes": passes}
    try:
        with torch.random.fork_rng(devices=[]):
            before = torch.get_rng_state()
            facts["got"] = fn(model, q, labels, generator=_gen(seed), **settings)
            facts["rng_moved"] = not torch.equal(before, torch.get_rng_state())
    finally:
        handle.remove()
    facts["passes"] = list(passes)
    facts["one_cache"] = all(c is caches[0] for c in caches) and caches[0] is not None
    return facts


def _run(fn, model, q, labels, seed, settings, what):
    facts = run_probe(_generate_probe, fn, model, q, labels, seed, settings)
    got, B = facts["got"], labels.shape[0]
    rows = 2 * B if settings.get("cfg_scale", 1.0) != 1.0 else B
    passes = [p[:2] for p in facts["passes"]]
    want = [(rows, s * s) for s in GEN_SCALES]
    if passes and passes[-1][1] == sum(s * s for s in GEN_SCALES):
        raise CheckFailed(f"{what}: the passes read {passes} (rows, positions)",
                          "with the cache each pass reads only the new scale's s*s positions")
    expect(passes == want, f"{what}: the passes read {passes} (rows, positions), expected "
           f"{want}", "one pass per scale reading that scale's s*s positions; a doubled "
           "batch [class; null] only with guidance")
    lengths = [p[2] for p in facts["passes"]]
    starts = [sum(s * s for s in GEN_SCALES[:k]) for k in range(len(GEN_SCALES))]
    expect(facts["one_cache"] and lengths == starts, f"{what}: the passes found "
           f"{lengths} positions in their cache, expected {starts}", LOOP_HINTS["fresh_cache"])
    expect(isinstance(got, (list, tuple)) and [tuple(g.shape) for g in got]
           == [(B, s * s) for s in GEN_SCALES],
           f"{what}: expected a list of (B, s*s) maps, got "
           f"{[tuple(g.shape) for g in got] if isinstance(got, (list, tuple)) else type(got)}",
           "return [ids (B, s*s) for each scale]: the first B rows when guided")
    expect(not facts["rng_moved"], f"{what}: the global RNG moved",
           "draw only from `generator` (pass it to sample_logits)")
    return list(got)


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@exercise("var_generate", reference=V.var_generate, hints=GENERATE_HINTS)
def var_generate(fn):
    model, q = _gen_var()
    labels = torch.tensor(GEN_LABELS)
    for seed, settings in ((0, {}), (1, {"cfg_scale": 3.0}), (2, {"cfg_scale": 0.0}),
                           (3, {"cfg_scale": 2.0, "temperature": 0.7, "top_k": 4})):
        what = f"var_generate(var, quantizer, labels, {settings})"
        got = _run(fn, model, q, labels, seed, settings, what)
        expected = _loop(model, q, labels, _gen(seed), **settings)
        for mistake, hint in LOOP_HINTS.items():  # a fresh cache per scale: caught above
            if mistake == "fresh_cache" or _same(got, expected):
                continue
            if _same(got, _loop(model, q, labels, _gen(seed), mistake, **settings)):
                raise CheckFailed(f"{what}: the tokens of a classic mistake", hint)
        for k, (g, e) in enumerate(zip(got, expected, strict=True)):
            expect_equal(g, e, f"{what}: scale {GEN_SCALES[k]} x {GEN_SCALES[k]} with seed "
                         f"{seed}", hint=GENERATE_HINTS[1])
    return ("the reference's tokens for the same seed (plain, guidance 3 and 0, temperature "
            "and top-k), one pass per scale through one cache")


def hint(name: str, level: int | None = None) -> None:
    """The next hint for exercise `name` (1 the idea, 2 the formula, 3 near-code)."""
    show_hint(__name__, name, level)
