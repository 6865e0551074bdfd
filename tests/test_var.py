"""minitok.msvq and minitok.var against the official VAR code's behaviour (FoundationVision/VAR
models/quant.py `VectorQuantizer2`, models/var.py; docs/references.md, "VAR"), transcribed
below in float64, and against the properties the lesson states."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minitok import msvq
from minitok import var as V

# --------------------------------------------------------------------------- the official code,
# transcribed (float64): f_to_idxBl_or_fhat, embed_to_fhat and idxBl_to_var_input of
# VectorQuantizer2 with PhiPartiallyShared, as docs/references.md describes them.


def official_phi_pick(phis, at: float):
    K = len(phis)
    ticks = np.linspace(1 / 3 / K, 1 - 1 / 3 / K, K) if K == 4 else np.linspace(1 / 2 / K, 1 - 1 / 2 / K, K)
    return phis[int(np.argmin(np.abs(ticks - at)))]


def official_encode(f, embedding, phis, patch_nums, to_fhat=False):
    B, C, H, W = f.shape
    f_rest, f_hat, out = f.clone(), torch.zeros_like(f), []
    SN = len(patch_nums)
    for si, pn in enumerate(patch_nums):
        if si != SN - 1:
            z = F.interpolate(f_rest, size=(pn, pn), mode="area")
        else:
            z = f_rest
        z = z.permute(0, 2, 3, 1).reshape(-1, C)
        d = z.square().sum(1, keepdim=True) + embedding.square().sum(1)
        d = d.addmm(z, embedding.T, alpha=-2, beta=1)
        idx = d.argmin(1)
        h = embedding[idx.view(B, pn, pn)].permute(0, 3, 1, 2)
        if si != SN - 1:
            h = F.interpolate(h, size=(H, W), mode="bicubic")
        h = official_phi_pick(phis, si / (SN - 1))(h)
        f_hat = f_hat + h
        f_rest = f_rest - h
        out.append(f_hat.clone() if to_fhat else idx.reshape(B, pn * pn))
    return out


def official_fhat(ids, embedding, phis, patch_nums):
    B, H = ids[0].shape[0], patch_nums[-1]
    SN = len(patch_nums)
    f_hat = 0
    for si, pn in enumerate(patch_nums):
        h = embedding[ids[si]].transpose(1, 2).reshape(B, -1, pn, pn)
        if si < SN - 1:
            h = F.interpolate(h, size=(H, H), mode="bicubic")
        f_hat = f_hat + official_phi_pick(phis, si / (SN - 1))(h)
    return f_hat


def official_var_input(ids, embedding, phis, patch_nums):
    B, H = ids[0].shape[0], patch_nums[-1]
    SN, C = len(patch_nums), embedding.shape[1]
    f_hat, nxt, pn_next = torch.zeros(B, C, H, H, dtype=embedding.dtype), [], patch_nums[0]
    for si in range(SN - 1):
        h = embedding[ids[si]].transpose(1, 2).reshape(B, C, pn_next, pn_next)
        f_hat = f_hat + official_phi_pick(phis, si / (SN - 1))(
            F.interpolate(h, size=(H, H), mode="bicubic"))
        pn_next = patch_nums[si + 1]
        nxt.append(F.interpolate(f_hat, size=(pn_next, pn_next), mode="area").view(B, C, -1).transpose(1, 2))
    return torch.cat(nxt, dim=1)


def official_attn_mask(patch_nums):
    d = torch.cat([torch.full((pn * pn,), i) for i, pn in enumerate(patch_nums)]).view(1, -1, 1)
    dT = d.transpose(1, 2)
    return torch.where(d >= dT, 0.0, -torch.inf)  # (1, L, L): 0 where attending is allowed


def _quantizer(scales, num_phi=4, seed=0, K=32, D=6):
    torch.manual_seed(seed)
    q = msvq.MultiScaleQuantizer(K, D, scales, num_phi).double()
    with torch.no_grad():
        q.codebook.normal_()
        for phi in q.phi:
            phi.conv.weight.mul_(3.0)  # a phi far from the identity: skipping it shows
    return q


SETTINGS = [((1, 2, 4, 8), 4), ((1, 2, 3, 4, 5, 6, 8), 4), ((1, 2, 4, 8), 1), ((1, 3, 6), 2)]


@pytest.mark.parametrize(("scales", "num_phi"), SETTINGS)
def test_encode_scales_matches_the_official_token_for_token(scales, num_phi):
    q = _quantizer(scales, num_phi)
    f = torch.randn(5, 6, scales[-1], scales[-1], dtype=torch.float64,
                    generator=torch.Generator().manual_seed(1)) * 1.5
    with torch.no_grad():
        ours = msvq.encode_scales(f, q.codebook, q.phis(), scales)
        theirs = official_encode(f, q.codebook, list(q.phi), scales)
        assert [o.shape for o in ours] == [(5, s * s) for s in scales]
        for a, b in zip(ours, theirs, strict=True):
            assert torch.equal(a, b)
        fhat = msvq.scales_to_fhat(ours, q.codebook, q.phis(), scales)
        official_last = official_encode(f, q.codebook, list(q.phi), scales, to_fhat=True)[-1]
        torch.testing.assert_close(fhat, official_last, rtol=0, atol=1e-12)
        torch.testing.assert_close(fhat, official_fhat(ours, q.codebook, list(q.phi), scales),
                                   rtol=0, atol=1e-12)
        torch.testing.assert_close(msvq.var_inputs(ours, q.codebook, q.phis(), scales),
                                   official_var_input(ours, q.codebook, list(q.phi), scales),
                                   rtol=0, atol=1e-12)


def test_every_scale_explains_more_of_the_map():
    """The residual shrinks scale by scale (on average): coarse to fine is a refinement."""
    q = _quantizer((1, 2, 4, 8), K=256, D=4)
    with torch.no_grad():
        for phi in q.phi:  # phi at the identity: the plain residual VQ
            phi.conv.weight.zero_(), phi.conv.bias.zero_()
            phi.conv.weight[:, :, 1, 1] = torch.eye(4)
        f = torch.randn(8, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        fhats = official_encode(f, q.codebook, list(q.phi), (1, 2, 4, 8), to_fhat=True)
    errors = [F.mse_loss(h, f).item() for h in fhats]
    assert errors == sorted(errors, reverse=True), errors


@pytest.mark.parametrize("scales", [(1, 2, 4, 8), (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)])
def test_block_causal_mask_is_the_official_attn_bias(scales):
    mask = V.block_causal_mask(scales)
    L = sum(s * s for s in scales)
    assert mask.shape == (L, L) and mask.dtype == torch.bool
    assert torch.equal(mask, official_attn_mask(scales)[0] == 0)


def test_the_official_scales_hold_680_tokens_in_10_passes():
    scales = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    assert V.VARConfig(num_codes=8, scales=scales).tokens_per_image == 680
    assert V.VARConfig(num_codes=8).tokens_per_image == 85  # this course's 1, 2, 4, 8


def test_phi_index_follows_the_official_ticks():
    # share_quant_resi = 4 over 10 scales: ticks near 1/12, 5/12, 7/12, 11/12. Scale 2 sits at
    # 2/9, halfway between two ticks: the official float arithmetic (1/3/4) breaks the tie
    phis = list(range(4))
    got = [msvq.phi_index(k, 10, 4) for k in range(10)]
    assert got == [official_phi_pick(phis, k / 9) for k in range(10)]
    assert got[2] == 1 and sorted(got) == got and set(got) == {0, 1, 2, 3}
    assert [msvq.phi_index(k, 4, 4) for k in range(4)] == [0, 1, 2, 3]
    assert [msvq.phi_index(k, 4, 1) for k in range(4)] == [0, 0, 0, 0]


def test_cfg_ramp_is_none_at_the_first_scale_and_full_at_the_last():
    ramp = [V.cfg_ramp(3.0, k, 4) for k in range(4)]
    assert ramp[0] == 1.0 and ramp[-1] == 3.0
    # the official (1 + t) c - t u with t = cfg * k / (K - 1), cfg = cfg_scale - 1
    c, u = torch.randn(3, 7), torch.randn(3, 7)
    for k in range(4):
        t = 2.0 * k / 3
        torch.testing.assert_close(u + V.cfg_ramp(3.0, k, 4) * (c - u), (1 + t) * c - t * u)


def _var(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    model = V.VAR(V.VARConfig(num_codes=32, code_dim=6, dropout=dropout, n_embd=32, n_layer=2))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))  # larger weights than the init: sharper attention
    return model.eval()


def test_one_masked_pass_equals_one_cached_pass_per_scale():
    """Training's block-causal mask and sampling's cache give the same logits.

    In float64: the two paths sum in different orders, so they agree only to rounding
    (7.5e-15 here; 3.8e-6 in float32, too close to any tolerance float32 would allow).
    1e-10 is far above that and far below what a wrong cache changes: keys and values kept
    in float32 move the logits by 4e-7, a cache that forgets the earlier scales by 6."""
    model, q = _var().double(), _quantizer((1, 2, 4, 8))
    f = torch.randn(3, 6, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    labels = torch.tensor([0, 4, 10])
    with torch.no_grad():
        ids = msvq.encode_scales(f, q.codebook, q.phis())
        inputs = msvq.var_inputs(ids, q.codebook, q.phis())
        full = model(model.embed_all(labels, inputs), mask=V.block_causal_mask())
        cache, parts = model.new_cache(), []
        for k in range(4):
            x = None if k == 0 else inputs[:, model.starts[k] - 1 : model.starts[k + 1] - 1]
            parts.append(model(model.embed(k, labels, x), cache))
        causal = model(model.embed_all(labels, inputs), mask=torch.ones(85, 85).tril().bool())
    assert full.shape == (3, 85, 32) and full.dtype == torch.float64
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=0, atol=1e-10)
    assert (causal - full).abs().max() > 1e-2  # a plain causal mask is another model


def test_a_token_never_sees_a_finer_scale():
    model, q = _var(), _quantizer((1, 2, 4, 8)).float()
    g = torch.Generator().manual_seed(4)
    ids = [torch.randint(0, 32, (2, s * s), generator=g) for s in (1, 2, 4, 8)]
    labels = torch.tensor([1, 2])
    with torch.no_grad():
        inputs = msvq.var_inputs(ids, q.codebook, q.phis())
        base = model(model.embed_all(labels, inputs), mask=V.block_causal_mask())
        changed = inputs.clone()
        changed[:, 4:] += 1.0  # the inputs of the 4 x 4 and 8 x 8 scales (positions 5..84)
        other = model(model.embed_all(labels, changed), mask=V.block_causal_mask())
    assert torch.equal(base[:, :5], other[:, :5])
    assert not torch.allclose(base[:, 5:21], other[:, 5:21])


def _reference_generate(model, q, labels, cfg_scale, generator):
    """The official loop, step by step, without a cache: re-read every scale each pass."""
    scales, K = model.config.scales, 32
    B = len(labels)
    labels = torch.tensor(labels)
    both = torch.cat([labels, torch.full_like(labels, 10)])
    ids = []
    for k, s in enumerate(scales):
        done = ids + [torch.zeros(B, s * s, dtype=torch.long)] + [
            torch.zeros(B, t * t, dtype=torch.long) for t in scales[k + 1 :]]
        inputs = msvq.var_inputs(done, q.codebook, q.phis())
        logits = model(model.embed_all(both, torch.cat([inputs, inputs])),
                       mask=V.block_causal_mask())[:, model.starts[k] : model.starts[k + 1]]
        t = (cfg_scale - 1) * k / (len(scales) - 1)
        logits = (1 + t) * logits[:B] - t * logits[B:]
        probs = torch.softmax(logits.reshape(-1, K), -1)
        ids.append(torch.multinomial(probs, 1, generator=generator).view(B, s * s))
    return ids


def test_var_generate_is_the_official_loop_token_for_token():
    model, q = _var(), _quantizer((1, 2, 4, 8)).float()
    ours = V.var_generate(model, q, [3, 7, 1], cfg_scale=2.5,
                          generator=torch.Generator().manual_seed(5))
    theirs = _reference_generate(model, q, [3, 7, 1], 2.5, torch.Generator().manual_seed(5))
    assert [o.shape for o in ours] == [(3, 1), (3, 4), (3, 16), (3, 64)]
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


def test_var_generate_takes_four_passes():
    model, q = _var(), _quantizer((1, 2, 4, 8)).float()
    calls = []
    handle = model.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[1]))
    try:
        V.var_generate(model, q, [1, 2], cfg_scale=2.0, generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert calls == [1, 4, 16, 64]  # 85 positions in 4 passes


def test_var_generate_refuses_bad_arguments():
    model, q = _var(), _quantizer((1, 2, 4, 8)).float()
    with pytest.raises(ValueError, match="labels"):
        V.var_generate(model, q, [10])
    with pytest.raises(ValueError, match="cfg_scale"):
        V.var_generate(model, q, [1], cfg_scale=-1.0)


def test_loss_is_teacher_forcing_over_all_scales_and_trains():
    model, q = _var(), _quantizer((1, 2, 4, 8)).float()
    g = torch.Generator().manual_seed(6)
    tokens = torch.randint(0, 32, (2, 85), generator=g)
    loss = V.var_loss(model, tokens, torch.tensor([1, 10]), q)
    loss.backward()
    assert loss.ndim == 0 and model.word_embed.weight.grad.abs().sum() > 0
    assert model.level_embed.weight.grad[3].abs().sum() > 0


def test_tokenizer_round_trip_and_checkpoint(tmp_path):
    from minitok import checkpoints

    model = msvq.MultiScaleTokenizer().eval()
    images = torch.rand(3, 1, 16, 16) * 2 - 1
    ids = model.encode(images)
    assert [i.shape for i in ids] == [(3, 1), (3, 4), (3, 16), (3, 64)]
    out = model.decode(ids)
    assert out.shape == (3, 1, 16, 16)
    torch.testing.assert_close(model.decode(torch.cat(ids, 1)), out)
    with pytest.raises(ValueError, match=r"ids\[2\]"):
        model.decode([ids[0], ids[1], ids[3], ids[3]])
    path = checkpoints.save(model, tmp_path / "vt.pt")
    again = checkpoints.load("var_tokenizer", path)
    assert torch.equal(again.decode(ids), out)
    with pytest.raises(ValueError, match="scales"):
        msvq.MultiScaleConfig(scales=(8, 4, 2, 1))


def test_the_shipped_var_is_what_its_script_rebuilds():
    """scripts/train_var.py's defaults are the shipped checkpoint's recipe (the AR prior's
    size and recipe, read from prior.pt), and the checkpoint names its script and tokenizer."""
    from repo_scripts import load_script

    from minitok import checkpoints

    model, tokenizer = checkpoints.load("var"), checkpoints.load("var_tokenizer")
    checkpoints.check_tokenizer(model, tokenizer)
    script = load_script("scripts/train_var.py")
    args, recipe = script.parse_recipe(script.prior_recipe(), "var", [], "")
    assert model.meta["recipe"] == recipe and model.meta["script"] == "scripts/train_var.py"
    assert args.out == checkpoints.checkpoint_path("var")
    size = {k: getattr(model.config, k) for k in ("n_layer", "n_head", "n_embd", "dropout")}
    assert size == {k: recipe[k] for k in size}
