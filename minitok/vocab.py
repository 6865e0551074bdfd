"""Lesson 07: one vocabulary for text and images, and the mixed sequences built from it.

An any-to-any model (Chameleon, and the native image output of Gemini and GPT-4o) does not
have a "text model" and an "image model". It has one table of token ids, and a document is
one sequence over it:

    "seven"  ->  s e v e n <boi> [img 12] [img 3] ... [img 40] <eoi> <eot>

Our table has three parts, laid out one after another so that no two ids ever collide:

    ids 0 .. T-1            text: one id per character of a fixed alphabet
    ids T .. T+K-1          image: the tokenizer's K codes, shifted by T (the image offset)
    ids T+K .. T+K+3        special: <boi> begin-image, <eoi> end-image, <eot> end of text
                            (the end of a document), <pad> padding after it

An image is always a full grid: <boi>, then grid_size**2 codes in raster order (row by row,
as the tokenizer's (G, G) grid flattens), then <eoi>. Chameleon does the same with a
32 x 32 grid of 8,192 codes: <boi> + 1024 image tokens + <eoi>.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from minitok import validate

ALPHABET = " abcdefghijklmnopqrstuvwxyz0123456789"
SPECIALS = ("<boi>", "<eoi>", "<eot>", "<pad>")

# What `Vocabulary.modality` returns for each id.
TEXT, IMAGE, SPECIAL = 0, 1, 2
MODALITY_NAMES = ("text", "image", "special")


@dataclass(frozen=True)
class Vocabulary:
    """The shared id table: text characters, then image codes, then the special tokens.

    num_codes: K, the size of the image tokenizer's codebook.
    grid_size: G, an image is a G x G grid of codes, so an image span holds G*G tokens.
    alphabet: the characters text may use, one id each, in this order.
    """

    num_codes: int
    grid_size: int
    alphabet: str = ALPHABET

    def __post_init__(self):
        for name in ("num_codes", "grid_size"):
            validate.positive_int(getattr(self, name), name)
        validate.instance(self.alphabet, "alphabet", str)
        if not self.alphabet:
            raise ValueError("alphabet must be a non-empty string")
        repeated = sorted({c for c in self.alphabet if self.alphabet.count(c) > 1})
        if repeated:
            raise ValueError(f"alphabet must not repeat characters, repeats {repeated}")

    # ---- the layout of the table

    @property
    def text_size(self) -> int:
        """T: the number of text ids (one per character)."""
        return len(self.alphabet)

    @property
    def image_offset(self) -> int:
        """The id of image code 0: image code c has id image_offset + c."""
        return self.text_size

    @property
    def boi(self) -> int:
        """begin-image: the next grid_size**2 tokens are image codes."""
        return self.text_size + self.num_codes

    @property
    def eoi(self) -> int:
        """end-image: closes an image span (forced after exactly grid_size**2 codes)."""
        return self.boi + 1

    @property
    def eot(self) -> int:
        """end of text: the document is finished (generation stops here)."""
        return self.boi + 2

    @property
    def pad(self) -> int:
        """padding after <eot>, so that documents of different lengths stack in a batch."""
        return self.boi + 3

    @property
    def size(self) -> int:
        """V: the number of ids, the transformer's vocab_size."""
        return self.boi + len(SPECIALS)

    @property
    def tokens_per_image(self) -> int:
        """How many codes an image span holds: grid_size**2."""
        return self.grid_size * self.grid_size

    # ---- text

    def encode_text(self, text: str) -> torch.Tensor:
        """A string -> (L,) int64 text ids, one per character. Unknown characters are errors."""
        ids = [self.alphabet.find(char) for char in validate.instance(text, "text", str)]
        if -1 in ids:
            where = ids.index(-1)
            raise ValueError(f"text: character {text[where]!r} at position {where} of {text!r} "
                             f"is not in the text vocabulary {self.alphabet!r}")
        return torch.tensor(ids, dtype=torch.long)  # (L,)

    def decode_text(self, ids: torch.Tensor) -> str:
        """(L,) text ids -> the string. Any id that is not a text id is an error."""
        ids = _as_ids(ids, "ids", dim=1)
        other = (~self.is_text(ids)).nonzero()
        if len(other):
            where = int(other[0])
            raise ValueError(f"ids: position {where} holds {self.name(ids[where])}, not a text id "
                             f"(text ids are 0..{self.text_size - 1})")
        return "".join(self.alphabet[i] for i in ids.tolist())

    # ---- images

    def image_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Image codes (any shape, values 0..K-1) -> their ids in the shared table."""
        return _as_ids(codes, "codes", size=self.num_codes) + self.image_offset

    def image_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """The inverse of image_ids: ids of image tokens -> codes 0..K-1 (other ids: error)."""
        ids = _as_ids(ids, "ids")
        if not self.is_image(ids).all():
            raise ValueError(f"ids must all be image ids in [{self.image_offset}, {self.boi - 1}], "
                             f"got values in [{int(ids.min())}, {int(ids.max())}]")
        return ids - self.image_offset

    def check_grids(self, grids: torch.Tensor, name: str, batched: bool = True) -> torch.Tensor:
        """`grids` if they are image codes in [0, K) shaped (N, G, G), or (G, G) when not
        `batched`: the model only knows images of one size, and float codes are a mistake."""
        G = self.grid_size
        validate.index_tensor(grids, name, self.num_codes)
        if grids.dim() != (3 if batched else 2) or grids.shape[-2:] != (G, G):
            want = f"(N, {G}, {G}) grids" if batched else f"a ({G}, {G}) grid"
            raise ValueError(f"{name} must be {want} of image codes (grid_size={G}), got "
                             f"shape {tuple(grids.shape)}")
        return grids

    # ---- every id

    def is_text(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids >= 0) & (ids < self.text_size)

    def is_image(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids >= self.image_offset) & (ids < self.boi)

    def modality(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map ids back to (modality, local id), both shaped like `ids`.

        modality is TEXT (0), IMAGE (1) or SPECIAL (2); the local id is the character's
        index in the alphabet, the image code, or the index into SPECIALS.
        """
        ids = _as_ids(ids, "ids", size=self.size)
        modality = torch.full_like(ids, SPECIAL)
        modality[self.is_text(ids)] = TEXT
        modality[self.is_image(ids)] = IMAGE
        start = torch.tensor([0, self.image_offset, self.boi], device=ids.device)  # (3,)
        local = ids - start[modality]  # subtract where each part of the table begins
        return modality, local

    def name(self, token_id: int) -> str:
        """A readable name for one id: 'a', '<img 17>', '<boi>'."""
        modality, local = self.modality(torch.as_tensor(token_id).reshape(1))
        kind, local = int(modality), int(local)
        if kind == TEXT:
            return repr(self.alphabet[local])
        if kind == IMAGE:
            return f"<img {local}>"
        return SPECIALS[local]

    def render(self, seq: torch.Tensor, max_images_tokens: int = 3) -> str:
        """A sequence as text: characters as themselves, image spans shortened, specials named."""
        validate.non_negative_int(max_images_tokens, "max_images_tokens")
        out, run = [], 0  # run: the image codes since the last <boi> or <eoi>
        for token in _as_ids(seq, "seq", size=self.size).tolist():
            if self.image_offset <= token < self.boi:
                run += 1
                if run <= max_images_tokens:
                    out.append(self.name(token))
                continue
            if token == self.eoi and run > max_images_tokens:
                out.append(f" ...{run - max_images_tokens} more")
            if token in (self.boi, self.eoi):
                run = 0
            out.append(self.alphabet[token] if token < self.text_size else self.name(token))
        return "".join(out)


def _as_ids(ids, name: str, size: int | None = None, dim: int | None = None) -> torch.Tensor:
    """`ids` as an int64 tensor (a list of ints is accepted): float ids, ids outside
    [0, size) or a tensor without `dim` dimensions are errors naming the argument."""
    if not isinstance(ids, torch.Tensor):
        ids = torch.tensor(ids) if len(ids) else torch.zeros(0, dtype=torch.long)
    return validate.index_tensor(ids, name, size, dim).long()


# --------------------------------------------------------------------------- documents


def build_sequence(parts: list, vocab: Vocabulary) -> torch.Tensor:
    """A document as one (L,) int64 sequence of shared-vocabulary ids.

    parts: strings (text) and (G, G) integer grids of image codes, in reading order, e.g.
    ["the digit 7", grid] for a caption followed by its image. Text becomes its character
    ids; an image becomes <boi>, its G*G codes shifted by vocab.image_offset in raster order,
    <eoi>; the document ends with <eot>.
    """
    _check_parts(parts, vocab)
    pieces = []
    for part in parts:
        if isinstance(part, str):
            pieces.append(vocab.encode_text(part))  # (len,) character ids
        else:
            codes = part.reshape(-1).long().cpu() + vocab.image_offset  # (G*G,) raster order
            pieces += [torch.tensor([vocab.boi]), codes, torch.tensor([vocab.eoi])]
    pieces.append(torch.tensor([vocab.eot]))
    return torch.cat(pieces)  # (L,)


def _check_parts(parts: list, vocab: Vocabulary) -> None:
    """build_sequence's input: a non-empty list of (G, G) grids of codes and non-empty
    strings, never two strings in a row (nothing in the sequence would mark where one ends)."""
    validate.instance(vocab, "vocab", Vocabulary)
    if not isinstance(parts, (list, tuple)) or not parts:
        raise ValueError("parts must be a non-empty list of strings and (G, G) image grids")
    for i, part in enumerate(parts):
        if isinstance(part, torch.Tensor):
            vocab.check_grids(part, f"parts[{i}]", batched=False)
        elif not isinstance(part, str):
            raise TypeError(f"parts[{i}] must be a str or a (G, G) tensor of image codes, got "
                            f"{type(part).__name__}")
        elif not part:
            raise ValueError(f"parts[{i}] is an empty string: it would vanish from the sequence")
        elif i and isinstance(parts[i - 1], str):
            raise ValueError(f"parts[{i}] follows another text part: join adjacent strings into "
                             "one, since nothing in the sequence would mark where one ends")


def split_sequence(seq: torch.Tensor, vocab: Vocabulary, complete: bool = True) -> list:
    """The inverse of build_sequence: (L,) ids -> [str | (G, G) grid, ...].

    With complete=True the sequence must be a finished document: it ends with <eot>,
    followed by nothing but <pad>. With complete=False it may stop anywhere (a prompt, or a
    document being generated): a text or image part still open at the end is returned as
    far as it goes (an open image as a 1-D tensor of its codes so far).
    Anything malformed is an error that says where: an image span that is not closed, is
    longer or shorter than grid_size**2, holds a non-image id, or an image id outside a span.
    """
    validate.flag(complete, "complete")
    seq = _as_ids(seq, "seq", size=validate.instance(vocab, "vocab", Vocabulary).size, dim=1).cpu()
    parts, pos = [], 0
    while pos < len(seq) and seq[pos] != vocab.eot:
        if seq[pos] == vocab.boi:
            part, pos = _read_image(seq, pos, vocab, complete)
        elif vocab.is_text(seq[pos]):
            part, pos = _read_text(seq, pos, vocab)
        else:  # an image id, <eoi> or <pad> in text
            raise ValueError(f"seq: position {pos} holds {vocab.name(seq[pos])} outside an image "
                             "span and before <eot> (an image starts with <boi>)")
        parts.append(part)
    if pos < len(seq):
        _check_padding(seq, pos, vocab)
    elif complete:
        raise ValueError("seq: the document does not end with <eot> (pass complete=False "
                         "for a prompt or a partial document)")
    return parts


def _read_text(seq: torch.Tensor, start: int, vocab: Vocabulary) -> tuple[str, int]:
    """The text part that starts at `start`: (its string, the position after it)."""
    other = (~vocab.is_text(seq[start:])).nonzero()  # the first non-text id ends it
    end = start + int(other[0]) if len(other) else len(seq)
    return vocab.decode_text(seq[start:end]), end


def _read_image(seq: torch.Tensor, start: int, vocab: Vocabulary, complete: bool
                ) -> tuple[torch.Tensor, int]:
    """The image span whose <boi> is at `start`: ((G, G) codes, the position after <eoi>).

    A span that the sequence cuts short is returned as the 1-D codes it holds so far, unless
    the document must be complete.
    """
    G2 = vocab.tokens_per_image
    span = seq[start + 1 : start + G2 + 2]  # room for G*G codes and the <eoi>
    other = (~vocab.is_image(span)).nonzero()
    n = int(other[0]) if len(other) else len(span)  # the codes before the first non-code
    if n == len(span) and n <= G2:  # the sequence ends inside the span
        if complete:
            raise ValueError(f"seq: the image span opened at position {start} is never closed "
                             "by <eoi> (unterminated image span)")
        return span - vocab.image_offset, len(seq)
    if n > G2:
        raise ValueError(f"seq: the image span opened at position {start} is not closed by "
                         f"<eoi> after grid_size**2 = {G2} codes")
    if span[n] != vocab.eoi:
        raise ValueError(f"seq: position {start + 1 + n} holds {vocab.name(span[n])} inside the "
                         f"image span opened at position {start}; only image ids (or <eoi> "
                         f"after {G2} codes) may appear there")
    if n != G2:
        raise ValueError(f"seq: the image span opened at position {start} holds {n} codes, "
                         f"expected grid_size**2 = {G2}")
    codes = span[:G2] - vocab.image_offset  # (G*G,)
    return codes.reshape(vocab.grid_size, vocab.grid_size), start + G2 + 2


def _check_padding(seq: torch.Tensor, eot: int, vocab: Vocabulary) -> None:
    """Only <pad> may follow the <eot> at position `eot`."""
    other = (seq[eot + 1 :] != vocab.pad).nonzero()
    if len(other):
        where = eot + 1 + int(other[0])
        raise ValueError(f"seq: position {where} holds {vocab.name(seq[where])} after <eot> at "
                         f"position {eot}; only <pad> may follow the end of a document")
