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
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.alphabet, str) or not self.alphabet:
            raise ValueError(f"alphabet must be a non-empty string, got {self.alphabet!r}")
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
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids = []
        for position, char in enumerate(text):
            index = self.alphabet.find(char)
            if index < 0:
                raise ValueError(
                    f"text: character {char!r} at position {position} of {text!r} is not in "
                    f"the text vocabulary {self.alphabet!r}"
                )
            ids.append(index)
        return torch.tensor(ids, dtype=torch.long)  # (L,)

    def decode_text(self, ids: torch.Tensor) -> str:
        """(L,) text ids -> the string. Any id that is not a text id is an error."""
        ids = _as_ids(ids, "ids")
        if ids.dim() != 1:
            raise ValueError(f"ids must be 1-D, got shape {tuple(ids.shape)}")
        bad = (ids < 0) | (ids >= self.text_size)
        if bad.any():
            where = int(bad.nonzero()[0])
            raise ValueError(
                f"ids: position {where} holds {self.name(int(ids[where]))}, not a text id "
                f"(text ids are 0..{self.text_size - 1})"
            )
        return "".join(self.alphabet[i] for i in ids.tolist())

    # ---- images

    def image_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """Image codes (any shape, values 0..K-1) -> their ids in the shared table."""
        codes = _as_ids(codes, "codes")
        if ((codes < 0) | (codes >= self.num_codes)).any():
            raise ValueError(
                f"codes must be image codes in [0, {self.num_codes - 1}], got values "
                f"from {int(codes.min())} to {int(codes.max())}"
            )
        return codes + self.image_offset

    def image_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """The inverse of image_ids: ids of image tokens -> codes 0..K-1 (other ids: error)."""
        ids = _as_ids(ids, "ids")
        if not self.is_image(ids).all():
            raise ValueError(
                f"ids must all be image ids in [{self.image_offset}, "
                f"{self.image_offset + self.num_codes - 1}], got values from "
                f"{int(ids.min())} to {int(ids.max())}"
            )
        return ids - self.image_offset

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
        ids = _as_ids(ids, "ids")
        if ((ids < 0) | (ids >= self.size)).any():
            raise ValueError(
                f"ids must be in [0, {self.size - 1}] (vocabulary size {self.size}), got "
                f"values from {int(ids.min())} to {int(ids.max())}"
            )
        modality = torch.full_like(ids, SPECIAL)
        modality[self.is_text(ids)] = TEXT
        modality[self.is_image(ids)] = IMAGE
        start = torch.tensor([0, self.image_offset, self.boi], device=ids.device)  # (3,)
        local = ids - start[modality]  # subtract where each part of the table begins
        return modality, local

    def name(self, token_id: int) -> str:
        """A readable name for one id: 'a', '<img 17>', '<boi>'."""
        modality, local = self.modality(torch.tensor([int(token_id)]))
        kind, local = int(modality), int(local)
        if kind == TEXT:
            return repr(self.alphabet[local])
        if kind == IMAGE:
            return f"<img {local}>"
        return SPECIALS[local]

    def render(self, seq: torch.Tensor, max_images_tokens: int = 3) -> str:
        """A sequence as text: characters as themselves, image spans shortened, specials named."""
        seq = _as_ids(seq, "seq")
        out, run = [], 0
        for token in seq.tolist():
            if self.is_text(torch.tensor(token)):
                out.append(self.alphabet[token])
                continue
            if token in (self.boi, self.eoi):
                if token == self.eoi and run > max_images_tokens:
                    out.append(f" ...{run - max_images_tokens} more")
                run = 0
                out.append(self.name(token))
                continue
            if self.is_image(torch.tensor(token)):
                run += 1
                if run <= max_images_tokens:
                    out.append(self.name(token))
                continue
            out.append(self.name(token))
        return "".join(out)


def _as_ids(ids, what: str) -> torch.Tensor:
    """An integer tensor of ids (lists are accepted), or a clear error."""
    if not isinstance(ids, torch.Tensor):
        ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"{what} must hold integer ids, got dtype {ids.dtype}")
    return ids.long()


# --------------------------------------------------------------------------- documents


def build_sequence(parts: list, vocab: Vocabulary) -> torch.Tensor:
    """A document as one (L,) int64 sequence of shared-vocabulary ids.

    parts: strings (text) and (G, G) integer grids of image codes, in reading order, e.g.
    ["the digit 7", grid] for a caption followed by its image. Text becomes its character
    ids; an image becomes <boi>, its G*G codes shifted by vocab.image_offset in raster order,
    <eoi>; the document ends with <eot>.
    """
    if not isinstance(vocab, Vocabulary):
        raise TypeError(f"vocab must be a Vocabulary, got {type(vocab).__name__}")
    if not isinstance(parts, (list, tuple)) or not parts:
        raise ValueError("parts must be a non-empty list of strings and (G, G) image grids")
    pieces = []
    previous_was_text = False
    for i, part in enumerate(parts):
        if isinstance(part, str):
            if not part:
                raise ValueError(f"parts[{i}] is an empty string: it would vanish from the sequence")
            if previous_was_text:
                raise ValueError(
                    f"parts[{i}] follows another text part: join adjacent strings into one, "
                    f"since nothing in the sequence would mark where one ends"
                )
            pieces.append(vocab.encode_text(part))  # (len,)
            previous_was_text = True
        elif isinstance(part, torch.Tensor):
            _check_grid(part, vocab, f"parts[{i}]")
            codes = vocab.image_ids(part.reshape(-1).cpu())  # (G*G,) raster order
            pieces += [torch.tensor([vocab.boi]), codes, torch.tensor([vocab.eoi])]
            previous_was_text = False
        else:
            raise TypeError(
                f"parts[{i}] must be a str or a (G, G) tensor of image codes, "
                f"got {type(part).__name__}"
            )
    pieces.append(torch.tensor([vocab.eot]))
    return torch.cat(pieces)  # (L,)


def _check_grid(grid: torch.Tensor, vocab: Vocabulary, what: str) -> None:
    """A grid must be (G, G) integer codes: the model only knows images of one size."""
    G = vocab.grid_size
    if grid.is_floating_point() or grid.dtype == torch.bool:
        raise TypeError(f"{what} must hold integer image codes, got dtype {grid.dtype}")
    if tuple(grid.shape) != (G, G):
        raise ValueError(
            f"{what}: an image must be a ({G}, {G}) grid of codes (grid_size={G}), "
            f"got shape {tuple(grid.shape)}"
        )


def split_sequence(seq: torch.Tensor, vocab: Vocabulary, complete: bool = True) -> list:
    """The inverse of build_sequence: (L,) ids -> [str | (G, G) grid, ...].

    With complete=True the sequence must be a finished document: it ends with <eot>,
    followed by nothing but <pad>. With complete=False it may stop anywhere (a prompt, or a
    document being generated): a text or image part still open at the end is returned as
    far as it goes (an open image as a 1-D tensor of its codes so far).
    Anything malformed is an error that says where: an image span that is not closed, is
    longer or shorter than grid_size**2, holds a non-image id, or an image id outside a span.
    """
    seq = _as_ids(seq, "seq").cpu()
    if seq.dim() != 1:
        raise ValueError(f"seq must be 1-D (L,), got shape {tuple(seq.shape)}")
    modality, _ = vocab.modality(seq)
    G2 = vocab.tokens_per_image
    parts: list = []
    text: list[int] = []  # the characters of the text part being read
    image_start = None  # position of the open <boi>, or None when reading text
    tokens = seq.tolist()
    end = len(tokens)
    for pos, token in enumerate(tokens):
        kind = int(modality[pos])
        if image_start is not None:  # inside an image span
            n_codes = pos - image_start - 1
            if token == vocab.eoi:
                if n_codes != G2:
                    raise ValueError(
                        f"seq: the image span opened at position {image_start} holds {n_codes} "
                        f"codes, expected grid_size**2 = {G2}"
                    )
                codes = seq[image_start + 1 : pos] - vocab.image_offset  # (G*G,)
                parts.append(codes.reshape(vocab.grid_size, vocab.grid_size))
                image_start = None
            elif kind != IMAGE:
                raise ValueError(
                    f"seq: position {pos} holds {vocab.name(token)} inside the image span "
                    f"opened at position {image_start}; only image ids (or <eoi> after "
                    f"{G2} codes) may appear there"
                )
            elif n_codes >= G2:
                raise ValueError(
                    f"seq: the image span opened at position {image_start} is not closed by "
                    f"<eoi> after grid_size**2 = {G2} codes"
                )
            continue
        if kind == TEXT:
            text.append(token)
            continue
        if text:  # a text part ends at the first non-text token
            parts.append("".join(vocab.alphabet[t] for t in text))
            text = []
        if token == vocab.boi:
            image_start = pos
        elif token == vocab.eot:
            end = pos
            break
        elif kind == IMAGE:
            raise ValueError(
                f"seq: position {pos} holds image id {vocab.name(token)} outside an image span "
                f"(an image starts with <boi>)"
            )
        else:  # <eoi> without <boi>, or <pad> before <eot>
            raise ValueError(
                f"seq: position {pos} holds {vocab.name(token)} outside an image span and "
                f"before <eot>"
            )
    if end < len(tokens):  # stopped at <eot>: only padding may follow
        rest = seq[end + 1 :]
        if (rest != vocab.pad).any():
            where = end + 1 + int((rest != vocab.pad).nonzero()[0])
            raise ValueError(
                f"seq: position {where} holds {vocab.name(int(seq[where]))} after <eot> at "
                f"position {end}; only <pad> may follow the end of a document"
            )
        return parts
    if complete:
        if image_start is not None:
            raise ValueError(
                f"seq: the image span opened at position {image_start} is never closed by "
                f"<eoi> (unterminated image span)"
            )
        raise ValueError("seq: the document does not end with <eot> (pass complete=False "
                         "for a prompt or a partial document)")
    if image_start is not None:
        parts.append(seq[image_start + 1 :] - vocab.image_offset)  # (n,) the open image
    elif text:
        parts.append("".join(vocab.alphabet[t] for t in text))
    return parts
