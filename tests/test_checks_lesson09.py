"""Lesson 09's checks fail each classic mistake with the hint that names it, and pass a
learner's correct version written differently from minitok's.

What every lesson's checks must do (pass the reference, report an unfinished exercise, leave
the RNG and thread count alone) is tested once for all lessons in tests/test_checks_all.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from checking import assert_fails_with, assert_passes

from minitok.checks import lesson09 as check
from minitok.quantize import nearest_code
from minitok.sampling import cfg_logits, sample_logits

pytestmark = pytest.mark.usefixtures("transport")  # local and through the wire

# --------------------------------------------------------------------------- encode_scales


def _encoder(residual=True, phi="after", up="bicubic", down="area", reverse=False,
             upsample=True):
    """A learner's encode_scales, with one knob per classic mistake."""

    def encode_scales(f, codebook, phis, scales):
        B, D, G, _ = f.shape
        rest, ids = f.clone(), []
        order = list(enumerate(scales))
        for k, s in (order[::-1] if reverse else order):
            src = rest if residual else f
            z = F.interpolate(src, size=(s, s), mode=down) if s < G else src
            idx = nearest_code(z.permute(0, 2, 3, 1).reshape(-1, D), codebook).view(B, s * s)
            h = codebook[idx].transpose(1, 2).reshape(B, D, s, s)
            if phi == "before":
                h = phis[k](h)
            if s < G and upsample:
                h = F.interpolate(h, size=(G, G), mode=up)
            if phi == "after":
                h = phis[k](h)
            rest = rest - h
            ids.append(idx)
        return ids

    return encode_scales


def test_encode_scales_passes_a_correct_learner_version():
    assert_passes(check.encode_scales, _encoder())


@pytest.mark.parametrize(("knobs", "words"), [
    ({"residual": False}, "residual"),
    ({"phi": "none"}, "phi was skipped"),
    ({"phi": "before"}, "before upsampling"),
    ({"up": "nearest"}, "mode='nearest'"),
    ({"up": "bilinear"}, "upsampled with mode='bilinear'"),
    ({"down": "bilinear"}, "mode='area'"),
    ({"reverse": True}, "fine to coarse"),
    ({"upsample": False}, "upsample the codes"),
])
def test_encode_scales_names_each_classic_mistake(knobs, words):
    assert_fails_with(check.encode_scales, _encoder(**knobs), words)


# --------------------------------------------------------------------------- scales_to_fhat


def _fhat(phi="after", up="bicubic"):
    def scales_to_fhat(ids, codebook, phis, scales):
        G, total = scales[-1], None
        for k, s in enumerate(scales):
            B = ids[k].shape[0]
            h = codebook[ids[k]].reshape(B, s, s, -1).permute(0, 3, 1, 2)
            if phi == "before":
                h = phis[k](h)
            if s < G:
                h = F.interpolate(h, size=(G, G), mode=up)
            if phi == "after":
                h = phis[k](h)
            total = h if total is None else total + h
        return total

    return scales_to_fhat


def test_scales_to_fhat_passes_a_correct_learner_version():
    assert_passes(check.scales_to_fhat, _fhat())


@pytest.mark.parametrize(("knobs", "words"), [
    ({"phi": "none"}, "phi was skipped"),
    ({"phi": "before"}, "before upsampling"),
    ({"up": "nearest"}, "mode='nearest'"),
    ({"up": "bilinear"}, "mode='bilinear'"),
])
def test_scales_to_fhat_names_each_classic_mistake(knobs, words):
    assert_fails_with(check.scales_to_fhat, _fhat(**knobs), words)


# --------------------------------------------------------------------------- var_inputs


def _inputs(running=True, phi=True, channels_last=True, first=False, extra=False):
    def var_inputs(ids, codebook, phis, scales):
        G, f_hat, out = scales[-1], 0, []
        B, D = ids[0].shape[0], codebook.shape[1]
        if first:
            out.append(torch.zeros(B, 1, D, dtype=codebook.dtype))
        last = len(scales) if extra else len(scales) - 1
        for k in range(last):
            s = scales[k]
            h = codebook[ids[k]].reshape(B, s, s, D).permute(0, 3, 1, 2)
            h = F.interpolate(h, size=(G, G), mode="bicubic") if s < G else h
            h = phis[k](h) if phi else h
            f_hat = f_hat + h if running else h
            nxt = scales[k + 1] if k + 1 < len(scales) else G
            x = F.adaptive_avg_pool2d(f_hat, nxt).reshape(B, D, nxt * nxt)  # area == pooling
            out.append(x.transpose(1, 2) if channels_last else x)
        return torch.cat(out, dim=1 if channels_last else 2)

    return var_inputs


def test_var_inputs_passes_a_correct_learner_version():
    assert_passes(check.var_inputs, _inputs())


@pytest.mark.parametrize(("knobs", "words"), [
    ({"running": False}, "RUNNING f_hat"),
    ({"phi": False}, "phi was skipped"),
    ({"channels_last": False}, "channels last"),
    ({"first": True}, "class token takes its place"),
    ({"extra": True}, "scales[:-1]"),
])
def test_var_inputs_names_each_classic_mistake(knobs, words):
    assert_fails_with(check.var_inputs, _inputs(**knobs), words)


# --------------------------------------------------------------------------- block_causal_mask


def _mask(rule="ge", dtype=torch.bool):
    def block_causal_mask(scales):
        level = torch.cat([torch.full((s * s,), k) for k, s in enumerate(scales)])
        if rule == "causal":
            n = level.shape[0]
            return torch.ones(n, n, dtype=torch.bool).tril()
        if rule == "gt":
            return level[:, None] > level[None, :]
        if rule == "le":
            return level[:, None] <= level[None, :]
        if dtype == torch.float32:  # the official additive bias
            return torch.where(level[:, None] >= level[None, :], 0.0, float("-inf"))
        return level[:, None] >= level[None, :]

    return block_causal_mask


def test_block_causal_mask_passes_a_correct_learner_version():
    assert_passes(check.block_causal_mask, _mask())


@pytest.mark.parametrize(("knobs", "words"), [
    ({"rule": "causal"}, "token by token"),
    ({"rule": "gt"}, "not >"),
    ({"rule": "le"}, "transpose"),
    ({"dtype": torch.float32}, "torch.bool"),
])
def test_block_causal_mask_names_each_classic_mistake(knobs, words):
    assert_fails_with(check.block_causal_mask, _mask(**knobs), words)


# --------------------------------------------------------------------------- var_generate


def _sampler(ramp="right", fresh_cache=False, swapped=False, running=True, rereads=False,
             ignore_settings=False):
    """A learner's next-scale sampler, with one knob per classic mistake."""

    def var_generate(var, quantizer, labels, cfg_scale=1.0, temperature=1.0, top_k=None,
                     top_p=None, generator=None):
        c = var.config
        scales, K, B, n = c.scales, c.num_codes, labels.shape[0], len(c.scales)
        G = scales[-1]
        guided = cfg_scale != 1.0
        rows = torch.cat([labels, torch.full_like(labels, c.null_class)]) if guided else labels
        codebook, phis = quantizer.codebook, quantizer.phis()
        cache = var.new_cache()
        f_hat, inputs, ids, seen = 0, None, [], []
        for k, s in enumerate(scales):
            if fresh_cache:
                cache = var.new_cache()
            x = var.embed(k, rows, inputs)
            if rereads:
                seen.append(x)
                logits = var(torch.cat(seen, 1), var.new_cache())[:, -s * s:]
            else:
                logits = var(x, cache)
            if guided:
                t = {"right": k / (n - 1), "none": 1.0, "from_one": (k + 1) / n}[ramp]
                cond, uncond = (logits[B:], logits[:B]) if swapped else (logits[:B], logits[B:])
                logits = cfg_logits(cond, uncond, 1 + (cfg_scale - 1) * t)
            flat = logits.reshape(-1, K)
            if ignore_settings:
                idx = sample_logits(flat, generator=generator)
            else:
                idx = sample_logits(flat, temperature, top_k, top_p, generator)
            ids.append(idx.view(B, s * s))
            if k + 1 < n:
                h = codebook[ids[-1]].view(B, s, s, -1).permute(0, 3, 1, 2)
                h = phis[k](F.interpolate(h, size=(G, G), mode="bicubic"))
                f_hat = f_hat + h if running else h
                nxt = F.interpolate(f_hat, size=(scales[k + 1],) * 2, mode="area")
                inputs = nxt.flatten(2).transpose(1, 2)
                inputs = torch.cat([inputs, inputs]) if guided else inputs
        return ids

    return var_generate


def test_var_generate_passes_a_correct_learner_version():
    assert_passes(check.var_generate, _sampler())


@pytest.mark.parametrize(("knobs", "words"), [
    ({"ramp": "none"}, "ramps with the scale"),
    ({"ramp": "from_one"}, "k = 0"),
    ({"swapped": True}, "swapped"),
    ({"running": False}, "RUNNING f_hat"),
    ({"fresh_cache": True}, "cache once"),
    ({"rereads": True}, "only the new scale"),
    ({"ignore_settings": True}, "temperature and top-k changed nothing"),
])
def test_var_generate_names_each_classic_mistake(knobs, words):
    assert_fails_with(check.var_generate, _sampler(**knobs), words)


def test_var_generate_catches_the_global_rng():
    def wrong(var, quantizer, labels, cfg_scale=1.0, temperature=1.0, top_k=None, top_p=None,
              generator=None):
        return _sampler()(var, quantizer, labels, cfg_scale, temperature, top_k, top_p, None)

    assert_fails_with(check.var_generate, wrong, "generator")
