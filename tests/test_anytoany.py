"""Lesson 07: the shared vocabulary, mixed sequences, the answer-only loss, constrained decoding.

Unit tests use random grids and untrained models; the tests of the shipped model at the end
check its checkpoint and its grammar. How well it reads and writes digits on the held-out
split (`evaluate.text_to_image_accuracy`, `image_to_text_accuracy`) is tested in
tests/test_evaluate.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from repo_scripts import load_script

from minitok import anytoany, checkpoints
from minitok.anytoany import (
    AnyToAny,
    AnyToAnyConfig,
    CaptionedDigits,
    allowed_next,
    caption,
    constrained_generate,
    held_out_pairs,
    image_to_text,
    masked_targets,
    read_digit,
    span_loss,
    text_to_image,
    train_anytoany,
    training_pairs,
)
from minitok.vocab import (
    IMAGE,
    SPECIAL,
    SPECIALS,
    TEXT,
    Vocabulary,
    build_sequence,
    split_sequence,
)

V = Vocabulary(num_codes=32, grid_size=4)  # 16 codes per image: quick tests


def random_parts(gen: torch.Generator, vocab: Vocabulary) -> list:
    """A random document: 1..5 parts, text and grids, no two text parts in a row."""
    parts: list = []
    for _ in range(int(torch.randint(1, 6, (1,), generator=gen))):
        if (parts and isinstance(parts[-1], str)) or torch.rand(1, generator=gen) < 0.5:
            G = vocab.grid_size
            parts.append(torch.randint(0, vocab.num_codes, (G, G), generator=gen))
        else:
            n = int(torch.randint(1, 12, (1,), generator=gen))
            chars = torch.randint(0, vocab.text_size, (n,), generator=gen)
            parts.append("".join(vocab.alphabet[i] for i in chars.tolist()))
    return parts


def same_parts(a: list, b: list) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, str) != isinstance(y, str):
            return False
        if isinstance(x, str) and x != y:
            return False
        if not isinstance(x, str) and not torch.equal(x, y):
            return False
    return True


class WrongModality(AnyToAny):
    """An untrained model whose logits strongly favour a set of ids (the wrong ones)."""

    def __init__(self, config, favoured: torch.Tensor):
        super().__init__(config)
        self.register_buffer("bias", favoured.float() * 20.0)  # (V,)

    def forward(self, idx, cache=None):
        return super().forward(idx, cache) + self.bias  # (B, T, V)


def tiny_model(vocab: Vocabulary, favoured=None, seed: int = 0) -> AnyToAny:
    """A small untrained any-to-any model over `vocab` (its context: the longest document)."""
    torch.manual_seed(seed)
    config = AnyToAnyConfig(num_codes=vocab.num_codes, grid_size=vocab.grid_size,
                            alphabet=vocab.alphabet, n_layer=1, n_head=2, n_embd=32, dropout=0.0)
    model = AnyToAny(config) if favoured is None else WrongModality(config, favoured)
    assert model.vocab == vocab
    return model.eval()


# --------------------------------------------------------------------------- vocabulary


def test_the_table_has_three_disjoint_parts_and_unique_specials():
    ids = torch.arange(V.size)
    modality, local = V.modality(ids)
    assert V.size == len(V.alphabet) + V.num_codes + len(SPECIALS)
    assert (modality == TEXT).sum() == V.text_size
    assert (modality == IMAGE).sum() == V.num_codes
    assert (modality == SPECIAL).sum() == len(SPECIALS)
    # (modality, local) -> id is one to one: no two ids share a meaning
    pairs = {(int(m), int(x)) for m, x in zip(modality, local, strict=True)}
    assert len(pairs) == V.size
    specials = [V.boi, V.eoi, V.eot, V.pad]
    assert len(set(specials)) == 4
    assert [V.name(s) for s in specials] == list(SPECIALS)
    for s in specials:
        assert not V.is_text(torch.tensor(s)) and not V.is_image(torch.tensor(s))
    # image code c is id image_offset + c, and the inverse maps it back
    codes = torch.arange(V.num_codes)
    assert torch.equal(V.image_ids(codes), codes + V.image_offset)
    assert torch.equal(V.image_codes(V.image_ids(codes)), codes)
    assert not V.is_text(V.image_ids(codes)).any()


def test_text_round_trip_and_local_ids():
    text = "the digit 7 and 0123456789"
    ids = V.encode_text(text)
    assert ids.dtype == torch.long and ids.shape == (len(text),)
    assert V.decode_text(ids) == text
    modality, local = V.modality(ids)
    assert (modality == TEXT).all() and torch.equal(local, ids)
    assert [V.alphabet[i] for i in local.tolist()] == list(text)


def test_build_split_round_trip_on_random_documents():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        parts = random_parts(gen, V)
        seq = build_sequence(parts, V)
        assert seq.dtype == torch.long and seq.dim() == 1
        assert int(seq[-1]) == V.eot
        assert same_parts(split_sequence(seq, V), parts)
        padded = torch.cat([seq, torch.full((5,), V.pad)])
        assert same_parts(split_sequence(padded, V), parts)
        # every image code went through the offset: the image ids are exactly the codes
        grids = [p for p in parts if not isinstance(p, str)]
        image_ids = seq[V.is_image(seq)]
        expected = torch.cat([g.reshape(-1) for g in grids]) if grids else torch.empty(0)
        assert torch.equal(image_ids - V.image_offset, expected.long())


def test_build_sequence_layout_of_a_captioned_image():
    grid = torch.arange(16).reshape(4, 4)
    seq = build_sequence(["seven", grid], V)
    assert V.decode_text(seq[:5]) == "seven"
    assert seq[5] == V.boi and seq[22] == V.eoi and seq[23] == V.eot and len(seq) == 24
    assert torch.equal(seq[6:22], torch.arange(16) + V.image_offset)  # raster order


def test_partial_documents_split_as_far_as_they_go():
    grid = torch.randint(0, 32, (4, 4), generator=torch.Generator().manual_seed(1))
    seq = build_sequence(["seven", grid, "ok"], V)
    parts = split_sequence(seq[:9], V, complete=False)  # "seven" <boi> 3 codes
    assert parts[0] == "seven" and torch.equal(parts[1], grid.reshape(-1)[:3])
    assert split_sequence(seq[:3], V, complete=False) == ["sev"]
    assert same_parts(split_sequence(seq[:-1], V, complete=False), ["seven", grid, "ok"])


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: V.encode_text("Seven!"), "'S' at position 0"),
        (lambda: build_sequence(["the digit é"], V), "not in the text vocabulary"),
        (lambda: build_sequence([torch.zeros(3, 4, dtype=torch.long)], V), "(4, 4) grid"),
        (lambda: build_sequence([torch.zeros(16, dtype=torch.long)], V), "(4, 4) grid"),
        (lambda: build_sequence([torch.zeros(4, 4)], V), "parts[0] must be an integer tensor"),
        (lambda: build_sequence([torch.full((4, 4), 32)], V), "[0, 31]"),
        (lambda: build_sequence(["a", "b"], V), "join adjacent strings"),
        (lambda: build_sequence([""], V), "empty string"),
        (lambda: build_sequence([], V), "non-empty list"),
        (lambda: build_sequence([3], V), "must be a str or a (G, G) tensor"),
        (lambda: V.decode_text(torch.tensor([0, V.boi])), "position 1 holds <boi>"),
        (lambda: V.image_codes(torch.tensor([0])), "image ids"),
        (lambda: V.modality(torch.tensor([V.size])), f"[0, {V.size - 1}]"),
        (lambda: Vocabulary(num_codes=0, grid_size=4), "num_codes"),
        (lambda: Vocabulary(num_codes=8, grid_size=4, alphabet="aa"), "repeat"),
        (lambda: Vocabulary(num_codes=8, grid_size=4, alphabet=""), "non-empty"),
        (lambda: build_sequence(["seven"], "vocab"), "vocab must be a Vocabulary, got str"),
        # float codes where token ids are expected: refused, never rounded
        (lambda: V.image_ids(torch.tensor([1.0, 2.7])), "codes must be an integer tensor"),
        (lambda: V.image_codes(torch.tensor([40.0])), "ids must be an integer tensor"),
        (lambda: V.decode_text(torch.tensor([1.0, 2.0])), "ids must be an integer tensor"),
        (lambda: V.decode_text([1.5]), "ids must be an integer tensor"),
        (lambda: V.decode_text(torch.zeros(2, 2, dtype=torch.long)), "ids must be a 1-d tensor"),
        (lambda: V.modality(torch.tensor([3.0])), "ids must be an integer tensor"),
        (lambda: V.name(3.0), "ids must be an integer tensor"),
        (lambda: V.render(torch.tensor([1.0, V.eot])), "seq must be an integer tensor"),
        (lambda: split_sequence(torch.tensor([1.0, float(V.eot)]), V),
         "seq must be an integer tensor"),
        (lambda: split_sequence(torch.tensor([0, V.size]), V), f"seq must lie in [0, {V.size - 1}]"),
        (lambda: split_sequence(torch.tensor([[0, V.eot]]), V), "seq must be a 1-d tensor"),
        (lambda: anytoany.image_prompt(torch.zeros(2, 4, 4), V), "grids must be an integer tensor"),
        (lambda: anytoany.image_prompt(torch.full((2, 4, 4), 32), V), "grids must lie in [0, 31]"),
        (lambda: anytoany.image_prompt(torch.zeros(4, 4, dtype=torch.long), V), "(N, 4, 4) grids"),
    ],
)
def test_bad_input_is_a_clear_error(make, words):
    with pytest.raises((ValueError, TypeError)) as info:
        make()
    assert words in str(info.value)


def _seq(*pieces) -> torch.Tensor:
    return torch.cat([torch.as_tensor(p, dtype=torch.long).reshape(-1) for p in pieces])


@pytest.mark.parametrize(
    "seq, words",
    [
        (_seq([V.boi], V.image_ids(torch.zeros(16, dtype=torch.long)), [V.eot]),
         "holds <eot> inside the image span"),
        (_seq([V.boi], V.image_ids(torch.zeros(16, dtype=torch.long))),
         "never closed by <eoi> (unterminated image span)"),
        (_seq([V.boi], V.image_ids(torch.zeros(15, dtype=torch.long)), [V.eoi, V.eot]),
         "holds 15 codes, expected grid_size**2 = 16"),
        (_seq([V.boi], V.image_ids(torch.zeros(17, dtype=torch.long)), [V.eoi, V.eot]),
         "not closed by <eoi> after grid_size**2 = 16"),
        (_seq([V.boi, 0], V.image_ids(torch.zeros(15, dtype=torch.long)), [V.eoi, V.eot]),
         "inside the image span"),
        (_seq([0, V.image_offset, V.eot]), "outside an image span"),
        (_seq([0, V.eoi, V.eot]), "<eoi> outside an image span"),
        (_seq([0, V.pad, V.eot]), "<pad> outside an image span"),
        (_seq([0, V.eot, 1]), "only <pad> may follow"),
        (_seq([0, 1]), "does not end with <eot>"),
    ],
)
def test_split_sequence_names_what_is_malformed(seq, words):
    with pytest.raises(ValueError) as info:
        split_sequence(seq, V)
    assert words in str(info.value)


# --------------------------------------------------------------------------- captions and data


def test_captions_and_the_held_out_split():
    held, train = held_out_pairs(), training_pairs()
    n_templates = len(anytoany.TEMPLATES)
    assert len(held) == 60 and len(train) == 10 * n_templates - 60
    assert set(held).isdisjoint(train)
    for d in range(10):  # six held-out wordings per digit, one per (form, suffix)
        mine = [caption(t, d) for t, d2 in held if d2 == d]
        assert len(mine) == 6
        assert sum(str(d) in text for text in mine) == 3  # numeral in three, word in three
    assert set(held) | set(train) == {(t, d) for t in range(n_templates) for d in range(10)}
    # every held-out wording and digit is seen in training, just never together
    for t, d in held:
        assert any(t2 == t for t2, _ in train) and any(d2 == d for _, d2 in train)
    # the checker reads every caption back, and every caption fits the alphabet
    vocab = Vocabulary(num_codes=8, grid_size=2)
    captions = {caption(t, d) for t in range(n_templates) for d in range(10)}
    assert len(captions) == 10 * n_templates
    for t in range(n_templates):
        for d in range(10):
            assert read_digit(caption(t, d)) == d
            assert anytoany.is_known_wording(caption(t, d))
            vocab.encode_text(caption(t, d))


@pytest.mark.parametrize("text", ["", "seven or 3", "number 17", "a handwritten", "sevens"])
def test_read_digit_refuses_captions_that_name_no_single_digit(text):
    assert read_digit(text) is None


def test_stream_never_shows_a_held_out_pair_and_marks_the_answer():
    vocab = Vocabulary(num_codes=16, grid_size=4)
    gen = torch.Generator().manual_seed(0)
    grids = torch.randint(0, 16, (30, 4, 4), generator=gen)
    labels = torch.arange(30) % 10
    data = CaptionedDigits(grids, labels, vocab)
    seqs, starts = data.batch(400, torch.Generator().manual_seed(1))
    assert seqs.shape == (400, data.max_len)
    held = {caption(t, d) for t, d in held_out_pairs()}
    directions = 0
    for seq, start in zip(seqs, starts.tolist(), strict=True):
        parts = split_sequence(seq, vocab)
        assert len(parts) == 2
        text = parts[0] if isinstance(parts[0], str) else parts[1]
        grid = parts[1] if isinstance(parts[0], str) else parts[0]
        assert text not in held
        index = [i for i in range(30) if torch.equal(grids[i], grid)][0]
        assert read_digit(text) == int(labels[index])  # the caption describes its image
        if isinstance(parts[0], str):  # text -> image: the answer starts with the first code
            directions += 1
            assert start == len(text) + 1 and seq[start - 1] == vocab.boi
        else:  # image -> text: the answer starts with the caption's first character
            assert start == vocab.tokens_per_image + 2 and seq[start - 1] == vocab.eoi
    assert 150 < directions < 250  # both directions, about half each
    again, _ = data.batch(400, torch.Generator().manual_seed(1))
    assert torch.equal(seqs, again)  # the stream is reproducible from its generator



def test_the_stream_lays_its_documents_out_with_the_build_it_is_given():
    """Lesson 07 trains on documents the learner's build_sequence writes: the stream calls
    the function it is given for every document, and a different layout shows in the batch."""
    vocab = Vocabulary(num_codes=16, grid_size=4)
    grids = torch.randint(0, 16, (10, 4, 4), generator=torch.Generator().manual_seed(0))
    calls = []

    def tracing(parts, v):
        calls.append([type(part).__name__ for part in parts])
        return build_sequence(parts, v)

    def reversed_codes(parts, v):  # a layout that differs from the reference's
        return build_sequence([p if isinstance(p, str) else p.flip(-1) for p in parts], v)

    plain = CaptionedDigits(grids, torch.arange(10), vocab)
    seqs, starts = plain.batch(8, torch.Generator().manual_seed(1))
    traced = CaptionedDigits(grids, torch.arange(10), vocab, build=tracing)
    again, again_starts = traced.batch(8, torch.Generator().manual_seed(1))
    assert torch.equal(seqs, again) and torch.equal(starts, again_starts)
    assert len(calls) == 8 and all(sorted(kinds) == ["Tensor", "str"] for kinds in calls)
    flipped, _ = CaptionedDigits(grids, torch.arange(10), vocab, build=reversed_codes).batch(
        8, torch.Generator().manual_seed(1))
    assert not torch.equal(flipped, seqs)
    with pytest.raises(TypeError, match="build must be a function"):
        CaptionedDigits(grids, torch.arange(10), vocab, build="build_sequence")


def test_caption_dropout_leaves_some_text_to_image_documents_without_a_caption():
    vocab = Vocabulary(num_codes=16, grid_size=4)
    gen = torch.Generator().manual_seed(0)
    grids = torch.randint(0, 16, (30, 4, 4), generator=gen)
    data = CaptionedDigits(grids, torch.arange(30) % 10, vocab, p_uncond=0.5)
    seqs, starts = data.batch(400, torch.Generator().manual_seed(1))
    blank = captioned_t2i = 0
    for seq, start in zip(seqs, starts.tolist(), strict=True):
        parts = split_sequence(seq, vocab)
        if len(parts) == 1:  # <boi> codes <eoi> <eot>: the answer is every code
            blank += 1
            assert start == 1 and seq[0] == vocab.boi
        elif isinstance(parts[0], str):
            captioned_t2i += 1
        else:  # image -> text always keeps its caption: it is the answer
            assert read_digit(parts[1]) is not None
    assert 60 < blank < 140 and 60 < captioned_t2i < 140  # about half of ~200 each
    plain = CaptionedDigits(grids, torch.arange(30) % 10, vocab)
    seqs, _ = plain.batch(400, torch.Generator().manual_seed(1))
    assert all(len(split_sequence(seq, vocab)) == 2 for seq in seqs)  # off by default


def test_caption_dropout_bad_input():
    vocab = Vocabulary(num_codes=16, grid_size=4)
    grids, labels = torch.zeros(10, 4, 4, dtype=torch.long), torch.arange(10)
    with pytest.raises(ValueError, match=r"p_uncond must lie in \[0, 1\], got 1.5"):
        CaptionedDigits(grids, labels, vocab, p_uncond=1.5)
    with pytest.raises(ValueError, match=r"p_text_to_image must lie in \[0, 1\]"):
        CaptionedDigits(grids, labels, vocab, p_text_to_image=-0.1)
    data = CaptionedDigits(grids, labels, vocab)
    with pytest.raises(ValueError, match="only exists for text -> image"):
        data.example(0, None, text_to_image=False)


def test_the_stream_refuses_float_codes_and_mismatched_labels():
    vocab = Vocabulary(num_codes=16, grid_size=4)
    grids, labels = torch.zeros(10, 4, 4, dtype=torch.long), torch.arange(10)
    with pytest.raises(TypeError, match="grids must be an integer tensor"):
        CaptionedDigits(grids.float(), labels, vocab)  # would be truncated to codes silently
    with pytest.raises(ValueError, match="grids must lie in"):
        CaptionedDigits(grids + 16, labels, vocab)
    with pytest.raises(ValueError, match=r"grids must be \(N, 4, 4\) grids"):
        CaptionedDigits(torch.zeros(10, 2, 8, dtype=torch.long), labels, vocab)
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        CaptionedDigits(grids, labels.float(), vocab)
    with pytest.raises(ValueError, match=r"labels must be \(10,\) digits, one per grid"):
        CaptionedDigits(grids, labels[:9], vocab)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        CaptionedDigits(grids, labels, vocab).batch(0)


# --------------------------------------------------------------------------- the loss


def test_masked_targets_keeps_exactly_the_answer():
    vocab = Vocabulary(num_codes=16, grid_size=4)
    data = CaptionedDigits(torch.randint(0, 16, (10, 4, 4)), torch.arange(10), vocab)
    seqs, starts = data.batch(64, torch.Generator().manual_seed(2))
    inputs, targets = masked_targets(seqs, starts, vocab)
    assert torch.equal(inputs, seqs[:, :-1])
    for b in range(64):
        length = int((seqs[b] != vocab.pad).sum())
        for j in range(seqs.shape[1] - 1):
            answer = starts[b] <= j + 1 < length
            assert targets[b, j] == (seqs[b, j + 1] if answer else -100)


def test_span_loss_is_cross_entropy_over_the_answer_only(device):
    vocab = Vocabulary(num_codes=16, grid_size=4)
    data = CaptionedDigits(torch.randint(0, 16, (10, 4, 4)), torch.arange(10), vocab)
    seqs, starts = data.batch(8, torch.Generator().manual_seed(3))
    seqs, starts = seqs.to(device), starts.to(device)
    model = tiny_model(vocab).to(device)
    assert model.block_size >= data.max_len
    loss = span_loss(model, seqs, starts)
    logits = model(seqs[:, :-1])  # (B, L-1, V)
    picked = []
    for b in range(8):
        length = int((seqs[b] != vocab.pad).sum())
        for j in range(int(starts[b]) - 1, length - 1):  # logits j predict token j + 1
            picked.append(-F.log_softmax(logits[b, j], dim=-1)[seqs[b, j + 1]])
    torch.testing.assert_close(loss, torch.stack(picked).mean(), atol=1e-5, rtol=1e-5)
    # no gradient flows from the prompt: changing a prompt target changes nothing
    logits = logits.detach().requires_grad_(True)
    _, targets = masked_targets(seqs, starts, vocab)
    F.cross_entropy(logits.reshape(-1, vocab.size), targets.reshape(-1)).backward()
    in_prompt = torch.arange(1, seqs.shape[1], device=device)[None, :] < starts[:, None]
    assert (logits.grad[in_prompt] == 0).all() and (logits.grad[~in_prompt].abs().sum() > 0)


def test_a_few_steps_of_training_lower_the_loss():
    vocab = Vocabulary(num_codes=8, grid_size=2)
    gen = torch.Generator().manual_seed(0)
    data = CaptionedDigits(torch.randint(0, 8, (20, 2, 2), generator=gen), torch.arange(20) % 10,
                           vocab)
    model = tiny_model(vocab)
    losses = train_anytoany(model, data, steps=60, batch_size=32, lr=3e-3, seed=0,
                            progress=False)
    assert len(losses) == 60 and sum(losses[-10:]) < 0.6 * sum(losses[:10])
    assert not model.training  # left in eval mode


# --------------------------------------------------------------------------- decoding


def _allowed_by_loop(prefix: list[int], vocab: Vocabulary) -> set[int]:
    """The grammar, re-derived by reading a prefix from the start (independent of the code)."""
    state, n = "text", 0
    for t in prefix:
        if state == "ended":
            continue
        if t == vocab.eot:
            state = "ended"
        elif t == vocab.boi:
            state, n = "image", 0
        elif t == vocab.eoi:
            state = "text"
        elif state == "image":
            n += 1
    ids = range(vocab.size)
    if state == "ended":
        return {vocab.pad}
    if state == "image":
        return {vocab.eoi} if n == vocab.tokens_per_image else {
            i for i in ids if vocab.is_image(torch.tensor(i))}
    return {i for i in ids if vocab.is_text(torch.tensor(i))} | {vocab.eot, vocab.boi}


def test_allowed_next_agrees_with_reading_every_prefix(device):
    gen = torch.Generator().manual_seed(4)
    for _ in range(15):
        seq = build_sequence(random_parts(gen, V), V)
        seq = torch.cat([seq, torch.full((2,), V.pad)])
        for k in range(1, len(seq) + 1):
            prefixes = seq[:k][None].to(device)
            allowed = allowed_next(prefixes, V)
            assert allowed.shape == (1, V.size) and allowed.dtype == torch.bool
            got = set(allowed[0].nonzero().flatten().tolist())
            assert got == _allowed_by_loop(seq[:k].tolist(), V)
            if k < len(seq):
                assert allowed[0, seq[k]]  # a real document is always allowed to continue


def model_that_prefers_text(device) -> tuple[Vocabulary, AnyToAny]:
    """An untrained model whose logits favour text ids, <eoi>, <eot> and <pad>: everything
    an image span must not contain."""
    vocab = Vocabulary(num_codes=16, grid_size=4)
    ids = torch.arange(vocab.size)
    favoured = vocab.is_text(ids) | (ids == vocab.eoi) | (ids == vocab.eot) | (ids == vocab.pad)
    return vocab, tiny_model(vocab, favoured).to(device)


def test_constrained_text_to_image_against_a_model_that_prefers_text(device):
    vocab, model = model_that_prefers_text(device)
    gen = torch.Generator(device=device).manual_seed(0)
    prompt = anytoany.text_prompt("seven", vocab).to(device).expand(50, -1)
    out = constrained_generate(model, prompt, vocab.tokens_per_image + 1, temperature=2.0,
                               generator=gen)
    span = out[:, prompt.shape[1]:]
    assert vocab.is_image(span[:, :-1]).all()  # only image ids inside the span
    assert (span[:, -1] == vocab.eoi).all()  # closed after exactly grid_size**2 codes
    for row in out.cpu():
        split_sequence(torch.cat([row, torch.tensor([vocab.eot])]), vocab)  # well formed
    codes = text_to_image(model, "seven", 8, generator=gen)
    assert codes.shape == (8, 4, 4) and ((codes >= 0) & (codes < 16)).all()
    # without the constraint the same model writes text into the image at once
    free = constrained_generate(model, prompt, 5, temperature=2.0, generator=gen,
                                constrained=False)
    assert not vocab.is_image(free[:, prompt.shape[1]:]).all()


def test_guidance_at_scale_zero_is_the_caption_less_document(device):
    """u + 0 (c - u) = u: guided drawing at scale 0 must equal continuing "<boi>" alone."""
    vocab = Vocabulary(num_codes=16, grid_size=4)
    model = tiny_model(vocab).to(device)
    prompt = anytoany.text_prompt("seven", vocab).to(device).expand(6, -1)
    guided = anytoany.guided_image(model, prompt, 0.0,
                                   generator=torch.Generator(device=device).manual_seed(5))
    blank = torch.full((6, 1), vocab.boi, dtype=torch.long, device=device)
    alone = constrained_generate(model, blank, vocab.tokens_per_image,
                                 generator=torch.Generator(device=device).manual_seed(5))
    assert torch.equal(guided, alone[:, 1:])
    # and at scale 3 the caption changes the draw (the two documents really differ)
    far = anytoany.guided_image(model, prompt, 3.0,
                                generator=torch.Generator(device=device).manual_seed(5))
    assert not torch.equal(far, guided)


def test_guided_text_to_image_keeps_the_grammar_against_a_model_that_prefers_text(device):
    vocab, model = model_that_prefers_text(device)
    gen = torch.Generator(device=device).manual_seed(0)
    prompt = anytoany.text_prompt("seven", vocab).to(device).expand(20, -1)
    span = anytoany.guided_image(model, prompt, 4.0, temperature=2.0, generator=gen)
    assert span.shape == (20, vocab.tokens_per_image) and vocab.is_image(span).all()
    codes = text_to_image(model, "seven", 8, generator=gen, cfg_scale=2.5)
    assert codes.shape == (8, 4, 4) and ((codes >= 0) & (codes < 16)).all()


def test_constrained_captioning_against_a_model_that_prefers_images(device):
    vocab = Vocabulary(num_codes=16, grid_size=4)
    ids = torch.arange(vocab.size)
    favoured = vocab.is_image(ids) | (ids == vocab.eoi) | (ids == vocab.pad)
    model = tiny_model(vocab, favoured).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    grids = torch.randint(0, 16, (50, 4, 4), generator=torch.Generator().manual_seed(0))
    prompt = anytoany.image_prompt(grids, vocab).to(device)
    out = constrained_generate(model, prompt, model.block_size - prompt.shape[1],
                               temperature=2.0, generator=gen)
    for row in out.cpu():
        # split_sequence checks the grammar: no image id outside an image span, no <eoi> or
        # <pad> in text, every image span exactly grid_size**2 codes, only <pad> after <eot>
        parts = split_sequence(row, vocab, complete=False)
        assert torch.is_tensor(parts[0])  # the prompt's image
        written = row[prompt.shape[1]:]
        first_special = int((~vocab.is_text(written)).nonzero()[0]) if (
            ~vocab.is_text(written)).any() else len(written)
        assert written[first_special:first_special + 1].tolist() in ([], [vocab.eot], [vocab.boi])
    captions = image_to_text(model, grids[:4], greedy=True)
    assert all(isinstance(c, str) for c in captions)
    free = constrained_generate(model, prompt, 3, temperature=2.0, generator=gen,
                                constrained=False)
    assert vocab.is_image(free[:, prompt.shape[1]:]).any()


def test_cached_constrained_greedy_decoding_equals_rerunning_the_prefix():
    vocab = Vocabulary(num_codes=16, grid_size=4)
    model = tiny_model(vocab, seed=3)
    prompt = anytoany.text_prompt("two", vocab).expand(3, -1)
    out = constrained_generate(model, prompt, 17, greedy=True)
    tokens = prompt
    for _ in range(17):  # nanoGPT's way: the whole prefix again every step
        allowed = anytoany.allowed_next(tokens, vocab)  # (B, V) what the grammar allows
        logits = model(tokens)[:, -1].masked_fill(~allowed, float("-inf"))
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, tokens)


def test_generation_stops_once_every_document_has_ended():
    vocab = Vocabulary(num_codes=16, grid_size=4)
    ids = torch.arange(vocab.size)
    model = tiny_model(vocab, favoured=ids == vocab.eot)
    prompt = anytoany.image_prompt(torch.zeros(2, 4, 4, dtype=torch.long), vocab)
    out = constrained_generate(model, prompt, 20, greedy=True)
    assert out.shape == (2, prompt.shape[1] + 1) and (out[:, -1] == vocab.eot).all()
    assert image_to_text(model, torch.zeros(2, 4, 4, dtype=torch.long)) == ["", ""]


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda m, v: constrained_generate(m, torch.tensor([[v.pad]]), 3),
         "outside an image span"),
        (lambda m, v: constrained_generate(m, torch.tensor([[0]]), m.block_size),
         "exceeds the model's block_size"),
        (lambda m, v: constrained_generate(m, torch.tensor([0]), 3),
         "prompt must be a 2-d tensor"),
        (lambda m, v: constrained_generate(m, torch.tensor([[v.size]]), 3),
         "prompt must lie in [0, "),
        (lambda m, v: constrained_generate(m, torch.tensor([[0]]), 0),
         "max_new_tokens must be a positive int"),
        (lambda m, v: constrained_generate(m, torch.tensor([[0.0, 1.0]]), 3),
         "prompt must be an integer tensor"),
        (lambda m, v: text_to_image(m, "Seven", 1), "'S' at position 0"),
        (lambda m, v: text_to_image(m, "", 1), "empty caption"),
        (lambda m, v: text_to_image(m, "seven", 1, cfg_scale=-1.0), "cfg_scale must"),
        (lambda m, v: text_to_image(m, "seven", 1, cfg_scale=float("inf")),
         "cfg_scale must be a finite number"),
        (lambda m, v: text_to_image(m, "seven", True), "n must be a positive int, got True"),
        (lambda m, v: text_to_image(m, "seven", 2.0), "n must be a positive int, got 2.0"),
        (lambda m, v: text_to_image(m, 7, 1), "text must be a str, got int"),
        (lambda m, v: image_to_text(m, torch.zeros(1, 3, 3, dtype=torch.long)),
         "(N, 4, 4)"),
        (lambda m, v: image_to_text(m, torch.zeros(1, 4, 4)), "grids must be an integer tensor"),
        (lambda m, v: image_to_text(m, torch.full((1, 4, 4), 16)), "grids must lie in [0, 15]"),
        (lambda m, v: image_to_text(m, torch.zeros(1, 4, 4, dtype=torch.long), max_len=99),
         "max_len must lie in [1, "),
        (lambda m, v: image_to_text(m, torch.zeros(1, 4, 4, dtype=torch.long), max_len=2.5),
         "max_len must be a positive int"),
    ],
)
def test_decoding_bad_input(call, words):
    vocab = Vocabulary(num_codes=16, grid_size=4)
    model = tiny_model(vocab)
    with pytest.raises((ValueError, TypeError)) as info:
        call(model, vocab)
    assert words in str(info.value)


# --------------------------------------------------------------------------- the shipped model

SHIPPED = checkpoints.checkpoint_path("anytoany")


def test_shipped_checkpoint_is_small_weights_only_and_pins_its_tokenizer():
    assert SHIPPED.stat().st_size < 2.5e6, "the shipped any-to-any model should stay small"
    payload = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    assert payload["kind"] == "anytoany"
    meta = payload["meta"]
    for key in ("script", "recipe", "results", "seconds", "torch", "machine",
                "tokenizer_sha256"):
        assert key in meta, f"meta lacks {key!r}"
    script = load_script("scripts/train_anytoany.py")
    assert meta["recipe"] == script.RECIPE, "the script's defaults must rebuild the shipped model"
    tokenizer = checkpoints.load("tokenizer")
    assert meta["tokenizer_sha256"] == tokenizer.checkpoint_sha256
    model = checkpoints.load("anytoany")
    checkpoints.check_tokenizer(model, tokenizer)
    vocab = model.vocab
    assert vocab.num_codes == tokenizer.num_codes
    assert vocab.grid_size == tokenizer.config.image_size // 2
    assert model.transformer.config.vocab_size == vocab.size and not model.training
    longest = max(len(caption(t, d)) for t, d in training_pairs() + held_out_pairs())
    assert model.block_size >= longest + vocab.tokens_per_image + 3


def test_the_shipped_model_refuses_another_tokenizer(tmp_path):
    tokenizer = checkpoints.load("tokenizer")
    # the same weights saved again with other meta: another checkpoint, another sha256
    other = checkpoints.load("tokenizer", checkpoints.save(tokenizer, tmp_path / "tokenizer.pt",
                                                           {"note": "retrained"}))
    assert other.checkpoint_sha256 != tokenizer.checkpoint_sha256
    model = checkpoints.load("anytoany")
    with pytest.raises(ValueError, match="trained on the tokenizer checkpoint") as info:
        checkpoints.check_tokenizer(model, other)
    assert "scripts/train_anytoany.py" in str(info.value)


def test_shipped_model_follows_the_grammar_when_sampling_freely():
    """Hot sampling with the constraint: every document is well formed, with one full image."""
    model = checkpoints.load("anytoany")
    vocab = model.vocab
    gen = torch.Generator().manual_seed(0)
    prompt = anytoany.text_prompt("the number four", vocab).expand(8, -1)
    out = constrained_generate(model, prompt, vocab.tokens_per_image + 1, temperature=3.0,
                               generator=gen)
    for row in out:
        parts = split_sequence(row, vocab, complete=False)
        assert parts[0] == "the number four" and parts[1].shape == (8, 8)
    assert (out[:, -1] == vocab.eoi).all()
    images = anytoany.image_prompt(torch.randint(0, 64, (8, 8, 8), generator=gen), vocab)
    out = constrained_generate(model, images, 20, temperature=3.0, generator=gen)
    for row in out:
        parts = split_sequence(row, vocab, complete=False)  # a malformed document raises
        assert parts[0].shape == (8, 8)
        assert all(isinstance(p, str) or p.numel() <= vocab.tokens_per_image for p in parts[1:])
    # without the constraint, the same hot sampling breaks the grammar somewhere
    free = constrained_generate(model, prompt, vocab.tokens_per_image + 1, temperature=3.0,
                                generator=torch.Generator().manual_seed(0), constrained=False)
    broken = 0
    for row in free:
        try:
            parts = split_sequence(row, vocab, complete=False)
            broken += len(parts) != 2 or parts[1].numel() != vocab.tokens_per_image
        except ValueError:
            broken += 1
    assert broken > 0
