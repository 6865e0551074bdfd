"""Lesson 07's checks fail each classic mistake with the hint that names it.

What every lesson's checks must do (pass the reference, report an unfinished exercise, leave
the RNG and thread count alone) is tested once for all lessons in tests/test_checks_all.py.
"""

from __future__ import annotations

import functools

import pytest
import torch
from checking import assert_each_hint_is_its_own, assert_fails_with, assert_passes, verdict

from minitok import anytoany, vocab
from minitok.checks import lesson07 as check

pytestmark = pytest.mark.usefixtures("transport")  # local and through the wire

# --------------------------------------------------------------------------- build_sequence


def _build(parts, v, *, offset=True, raster=True, markers=True, eot=True, as_list=False):
    """build_sequence with one classic mistake switched on."""
    pieces = []
    for part in parts:
        if isinstance(part, str):
            pieces.append(v.encode_text(part))
            continue
        grid = part if raster else part.t()
        codes = grid.reshape(-1) + (v.image_offset if offset else 0)
        pieces += [torch.tensor([v.boi]), codes, torch.tensor([v.eoi])] if markers else [codes]
    if eot:
        pieces.append(torch.tensor([v.eot]))
    seq = torch.cat(pieces)
    return seq.tolist() if as_list else seq


@pytest.mark.parametrize(
    "mistake, hint_words",
    [
        ({"offset": False}, "image_offset"),
        ({"raster": False}, "row by row"),
        ({"markers": False}, "vocab.boi, then"),
        ({"eot": False}, "ends with one vocab.eot"),
        ({"as_list": True}, "one 1-D tensor"),
    ],
)
def test_build_sequence_catches(mistake, hint_words):
    def wrong(parts, v):
        return _build(parts, v, **mistake)

    assert_fails_with(check.build_sequence, wrong, hint_words)


def test_build_sequence_catches_float_ids_and_dropped_parts():
    def floats(parts, v):
        return _build(parts, v).float()

    def first_part_only(parts, v):
        return _build(parts[:1], v)

    assert_fails_with(check.build_sequence, floats, "int64")
    assert_fails_with(check.build_sequence, first_part_only, "handle the parts in order")


# --------------------------------------------------------------------------- masked_targets


def _targets(seqs, starts, v, *, shift=True, keep_from=1, mask_prompt=True, mask_pad=True,
             ignore=-100, clone=True, mask_eot=False, pad_from_inputs=False, one_start=False,
             mask_last=False):
    """masked_targets with one classic mistake switched on (keep_from: the right value is 1)."""
    if not shift:
        return seqs, seqs.clone()
    inputs = seqs[:, :-1]
    targets = seqs[:, 1:].clone() if clone else seqs[:, 1:]
    j = torch.arange(targets.shape[1])[None, :]
    mask = torch.zeros_like(targets, dtype=torch.bool)
    if mask_prompt:
        mask |= j + keep_from < (starts[:1, None] if one_start else starts[:, None])
    if mask_pad:
        mask |= (inputs if pad_from_inputs else targets) == v.pad
    if mask_eot:
        mask |= targets == v.eot
    if mask_last:  # a mistake no hint knows: the last target of every row dropped too
        mask[:, -1] = True
    targets[mask] = ignore
    return inputs, targets


TARGETS_MISTAKES = [
    ({"shift": False}, "position j predicts token j + 1"),
    ({"mask_prompt": False}, "prompt is given"),
    ({"keep_from": 0}, "j + 1 >= answer_start"),
    ({"keep_from": 2}, "j + 1 >= answer_start"),
    ({"mask_pad": False}, "padding is not part"),
    ({"ignore": 0}, "ignore_index"),
    ({"ignore": check.TINY.pad}, "ignore_index"),
    ({"clone": False}, "slicing shares memory"),
    ({"mask_eot": True}, "<eot> is part of the answer"),
    ({"pad_from_inputs": True}, "find the padding in the targets"),
    ({"one_start": True}, "one start per document"),
    ({"mask_last": True}, "exactly the targets of the prompt"),  # the general hint
]


@pytest.mark.parametrize("mistake, hint_words", TARGETS_MISTAKES)
def test_masked_targets_catches(mistake, hint_words):
    def wrong(seqs, starts, v):
        return _targets(seqs, starts, v, **mistake)

    assert_fails_with(check.masked_targets, wrong, hint_words)


def test_masked_targets_mistakes_each_get_their_own_hint():
    rows = [(functools.partial(_targets, **mistake), (words,))
            for mistake, words in TARGETS_MISTAKES]
    assert_each_hint_is_its_own(check.masked_targets, rows)


def test_masked_targets_catches_a_single_return_value():
    def targets_only(seqs, starts, v):
        return anytoany.masked_targets(seqs, starts, v)[1]

    assert_fails_with(check.masked_targets, targets_only, "return inputs, targets")


# --------------------------------------------------------------------------- allowed_next


def _allowed(tokens, v, *, images_in_text=False, specials_in_text=True, force_eoi=True,
             eoi_after=None, from_first_boi=False, after_eot_pad=True, text_in_image=False,
             as_float=False):
    """allowed_next as a row-by-row loop, with one classic mistake switched on."""
    G2 = v.tokens_per_image if eoi_after is None else eoi_after
    ids = torch.arange(v.size)
    rows = []
    for row in tokens.tolist():
        if v.eot in row and after_eot_pad:
            rows.append(ids == v.pad)
            continue
        boi_at = [i for i, t in enumerate(row) if t == v.boi]
        eoi_at = [i for i, t in enumerate(row) if t == v.eoi]
        opened = (boi_at[0] if from_first_boi else boi_at[-1]) if boi_at else -1
        closed = eoi_at[-1] if eoi_at else -1
        if opened > closed:
            n_codes = len(row) - 1 - opened
            if from_first_boi:
                n_codes = sum(1 for t in row[opened:] if v.is_image(torch.tensor(t)))
            if n_codes < G2 or not force_eoi:
                allowed = v.is_image(ids)
                if text_in_image:
                    allowed = allowed | v.is_text(ids)
                if not force_eoi and n_codes >= G2:
                    allowed = allowed | (ids == v.eoi)
            else:
                allowed = ids == v.eoi
        else:
            allowed = v.is_text(ids)
            if specials_in_text:
                allowed = allowed | (ids == v.eot) | (ids == v.boi)
            if images_in_text:
                allowed = allowed | v.is_image(ids)
        rows.append(allowed)
    out = torch.stack(rows)
    return out.float() if as_float else out


def test_the_loop_version_passes():
    """The test's own loop (no mistake switched on) is a correct learner answer."""
    result = verdict(check.allowed_next, _allowed)
    assert result.status == "passed", result.render()


ALLOWED_MISTAKES = [
    ({"images_in_text": True}, "no image id may come next"),
    ({"specials_in_text": False}, "<eot> (finish) and <boi>"),
    ({"text_in_image": True}, "only image ids may come next"),
    ({"force_eoi": False}, "force <eoi> after exactly"),
    ({"eoi_after": 3}, "one code too early"),
    ({"eoi_after": 5}, "force <eoi> after exactly"),
    ({"from_first_boi": True}, "LAST <boi>"),
    ({"after_eot_pad": False}, "only <pad> may follow"),
    ({"as_float": True}, "bool tensor"),
]


@pytest.mark.parametrize("mistake, hint_words", ALLOWED_MISTAKES)
def test_allowed_next_catches(mistake, hint_words):
    def wrong(tokens, v):
        return _allowed(tokens, v, **mistake)

    assert_fails_with(check.allowed_next, wrong, hint_words)


def test_allowed_next_mistakes_each_get_their_own_hint():
    rows = [(functools.partial(_allowed, **mistake), (words,))
            for mistake, words in ALLOWED_MISTAKES]
    assert_each_hint_is_its_own(check.allowed_next, rows)


def test_allowed_next_catches_a_batch_read_from_its_first_row():
    def first_row_for_all(tokens, v):
        return anytoany.allowed_next(tokens[:1], v).expand(tokens.shape[0], -1)

    assert_fails_with(check.allowed_next, first_row_for_all, "rows are independent")


def test_tiny_vocabulary_layout_is_what_the_hints_assume():
    v = check.TINY
    assert (v.text_size, v.image_offset, v.boi, v.eoi, v.eot, v.pad, v.size) == (
        4, 4, 9, 10, 11, 12, 13)
    assert vocab.build_sequence(["ab c"], v).tolist() == [0, 1, 2, 3, 11]


def _grouped(parts, v):  # all the texts first, then the images
    texts = [p for p in parts if isinstance(p, str)]
    return _build(texts + [p for p in parts if not isinstance(p, str)], v)


def _eot_each(parts, v):
    return torch.cat([_build([p], v) for p in parts])


def _last_code_dropped(parts, v):  # a mistake no hint knows: each image one code short
    pieces = []
    for part in parts:
        piece = _build([part], v, eot=False)
        if not isinstance(part, str):
            piece = torch.cat([piece[:-2], piece[-1:]])  # the last code gone, <eoi> kept
        pieces.append(piece)
    return torch.cat(pieces + [torch.tensor([v.eot])])


def test_build_sequence_catches_grouped_parts_and_an_eot_per_part():
    def shifted_in_place(parts, v):
        for part in parts:
            if not isinstance(part, str):
                part += v.image_offset  # writes into the learner's caller's grid
        return _build([p if isinstance(p, str) else p - v.image_offset for p in parts], v)

    assert_fails_with(check.build_sequence, _grouped, "order given")
    assert_fails_with(check.build_sequence, _eot_each, "not one after every part")
    assert_fails_with(check.build_sequence, shifted_in_place, "not in place")


BUILD_MISTAKES = [
    (functools.partial(_build, offset=False), ("collide with the text ids",)),
    (functools.partial(_build, raster=False), ("not column by column",)),
    (functools.partial(_build, markers=False), ("then its G*G codes, then vocab.eoi",)),
    (functools.partial(_build, eot=False), ("one vocab.eot after its last part",)),
    (functools.partial(_build, as_list=True), ("one 1-D tensor",)),
    (lambda parts, v: _build(parts, v).float(), ("int64",)),
    (_grouped, ("order given",)),
    (_eot_each, ("not one after every part",)),
    (_last_code_dropped, ("G*G codes + vocab.image_offset in raster order",)),  # the general
]


def test_build_sequence_mistakes_each_get_their_own_hint():
    assert_each_hint_is_its_own(check.build_sequence, BUILD_MISTAKES)


def test_build_sequence_written_another_way_passes():
    """A correct answer that builds a Python list of ids passes as the reference does."""
    def as_list_of_ids(parts, v):
        ids = []
        for part in parts:
            if isinstance(part, str):
                ids += v.encode_text(part).tolist()
            else:
                ids += [v.boi] + [v.image_offset + int(c) for c in part.flatten()] + [v.eoi]
        return torch.tensor(ids + [v.eot])

    assert_passes(check.build_sequence, as_list_of_ids)


def test_masked_targets_written_another_way_passes():
    """A correct answer that masks row by row, with torch.where, passes."""
    def row_by_row(seqs, starts, v):
        targets = []
        for row, start in zip(seqs, starts.tolist(), strict=True):
            keep = (torch.arange(1, len(row)) >= start) & (row[1:] != v.pad)
            targets.append(torch.where(keep, row[1:], torch.full_like(row[1:], -100)))
        return seqs[:, :-1], torch.stack(targets)

    assert_passes(check.masked_targets, row_by_row)


# --------------------------------------------------------------------------- constrained_generate


@torch.no_grad()
def _generate(model, prompt, max_new_tokens, temperature=1.0, top_k=None, greedy=False,
              generator=None, constrained=True, *, mask="before", use_generator=True,
              use_temperature=True, obey_constrained=True, stop="all", cache=True,
              position=-1, greedy_flag=True):
    """constrained_generate with one classic mistake switched on."""
    from minitok.sampling import sample_logits, top_k_filter

    v = model.vocab
    B, T0 = prompt.shape
    tokens = prompt
    kv = model.new_cache(B, max_len=T0 + max_new_tokens) if cache else None
    step_input, stale = tokens, tokens
    for _ in range(max_new_tokens):
        logits = model(step_input if cache else tokens, kv)[:, position, :]
        masking = constrained or not obey_constrained
        allowed = anytoany.allowed_next(stale if mask == "stale" else tokens, v)
        options = {"temperature": temperature if use_temperature else 1.0,
                   "top_k": top_k, "greedy": greedy and greedy_flag,
                   "generator": generator if use_generator else None}
        if masking and mask == "top_k_first" and top_k is not None:
            logits = top_k_filter(logits, top_k)
            options["top_k"] = None
        if masking and mask == "after_softmax":
            logits = torch.softmax(logits, dim=-1).masked_fill(~allowed, 0.0)
        elif masking and mask != "never":
            logits = logits.masked_fill(~allowed, float("-inf"))
        next_token = sample_logits(logits, **options)
        stale = tokens
        step_input = next_token[:, None]
        tokens = torch.cat([tokens, step_input], dim=1)
        ended = (tokens == v.eot).any(dim=1)
        if (stop == "all" and ended.all()) or (stop == "any" and ended.any()):
            break
    return tokens


def test_the_loop_version_and_a_loop_without_cache_pass():
    assert_passes(check.constrained_generate, _generate)

    def no_cache(model, prompt, max_new_tokens, temperature=1.0, top_k=None, greedy=False,
                 generator=None, constrained=True):
        return _generate(model, prompt, max_new_tokens, temperature, top_k, greedy, generator,
                         constrained, cache=False)

    assert_passes(check.constrained_generate, no_cache)


GENERATE_MISTAKES = [  # each with words only its own hint holds
    ({"mask": "never"}, "forbid before you draw"),  # the two unmasked draws share one hint
    ({"mask": "after_softmax"}, "forbid before you draw"),
    ({"mask": "stale"}, "from every token so far"),
    ({"position": 0}, "model(...)[:, -1]"),  # both greedy mistakes: read the last position
    ({"greedy_flag": False}, "model(...)[:, -1]"),
    ({"use_generator": False}, "never the global RNG"),
    ({"use_temperature": False}, "pass temperature on"),
    ({"mask": "top_k_first"}, "mask first, then let sample_logits apply top_k"),
    ({"obey_constrained": False}, "no mask at all"),
    ({"stop": "never"}, "stop as soon as every row"),
    ({"stop": "any"}, "EVERY row"),
]


@pytest.mark.parametrize("mistake, hint_words", GENERATE_MISTAKES)
def test_constrained_generate_catches(mistake, hint_words):
    def wrong(model, prompt, max_new_tokens, temperature=1.0, top_k=None, greedy=False,
              generator=None, constrained=True):
        return _generate(model, prompt, max_new_tokens, temperature, top_k, greedy, generator,
                         constrained, **mistake)

    assert_fails_with(check.constrained_generate, wrong, hint_words)


def test_constrained_generate_mistakes_each_get_their_own_hint():
    rows = [(functools.partial(_generate, **mistake), (words,))
            for mistake, words in GENERATE_MISTAKES]
    assert_each_hint_is_its_own(check.constrained_generate, rows)


def test_constrained_generate_catches_a_prompt_written_in_place():
    def in_place(model, prompt, max_new_tokens, temperature=1.0, top_k=None, greedy=False,
                 generator=None, constrained=True):
        out = _generate(model, prompt.clone(), max_new_tokens, temperature, top_k, greedy,
                        generator, constrained)
        prompt[:, 0] = prompt[:, 0].clone()  # harmless, then a real write:
        prompt.data[0, 0] = (int(prompt[0, 0]) + 1) % 4
        return out

    assert_fails_with(check.constrained_generate, in_place, "never write into the prompt")


def test_every_check_has_three_hints():
    for name, checker in check_exercises().items():
        assert len(checker.hints) == 3 and all(h.strip() for h in checker.hints), name


def check_exercises():
    from minitok.checks._core import exercises_in

    return exercises_in(check)
