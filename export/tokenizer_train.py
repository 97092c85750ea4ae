"""Train the byte-level BPE tokenizer with Hugging Face `tokenizers`, and check that pocketlm's
pure-Python Tokenizer (the one the browser runs) gives the same ids on a corpus.

The tokenizer: GPT-2 style byte-level BPE, no normalizer, no post-processor; special tokens
<pad>=0, <bos>=1, <eos>=2, then the 256 byte-level characters, so any string encodes; then merges.

    tok = train_tokenizer(texts, vocab_size=2048)
    save_tokenizer(tok, "web/models/x/tokenizer.json")
    assert check_parity("web/models/x/tokenizer.json", texts) is None
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import islice
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from pocketlm.tokenizer import Tokenizer as PyTokenizer

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + 256


def train_tokenizer(texts: Iterable[str], vocab_size: int, extra_special: tuple[str, ...] = ()) -> Tokenizer:
    """Train on `texts`; deterministic (same texts and size -> same tokenizer.json). `extra_special`:
    more special tokens after the three (ids 3, 4, ...: reminder-extract's value markers), part of
    `vocab_size`; typed in a text they are still found unless the caller splits special tokens.

    The result has at most `vocab_size` tokens: fewer when the texts hold fewer distinct merges,
    so read the size back with `tok.get_vocab_size()`.
    """
    specials = list(SPECIAL_TOKENS) + list(extra_special)
    if len(set(specials)) != len(specials):
        raise ValueError(f"special tokens must be distinct, got {specials}")
    if vocab_size < len(specials) + 256:
        raise ValueError(f"vocab_size {vocab_size} < {len(specials) + 256} ({len(specials)} special tokens + 256 bytes)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,  # first, so they get ids 0, 1, 2, ...
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if [tok.token_to_id(t) for t in specials] != list(range(len(specials))):
        raise RuntimeError(f"special tokens got ids {[tok.token_to_id(t) for t in specials]}")
    return tok


def save_tokenizer(tok: Tokenizer, path: str | os.PathLike) -> None:
    """Write tokenizer.json (pretty, UTF-8, newline-terminated: the same bytes for the same tokenizer)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(tok.to_str(pretty=True) + "\n")


@dataclass(frozen=True, repr=False)
class ParityMismatch:
    """The first text where pocketlm's tokenizer and `tokenizers` disagree."""

    index: int  # position of the text in the iterable
    text: str
    check: str  # "encode", "decode", "decode_all" (special tokens kept) or "roundtrip"
    expected: list[int] | str  # what `tokenizers` gives (for roundtrip: the text)
    got: list[int] | str  # what pocketlm gives

    def __str__(self) -> str:
        a, b = self.expected, self.got
        k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        lo = max(k - 5, 0)  # show where they part, not all of a long text
        who = "the text" if self.check == "roundtrip" else "tokenizers"
        return (f"tokenizer parity failed ({self.check}) on text #{self.index} {self.text[:120]!r}: "
                f"from position {k}, {who} has {a[lo:k + 10]!r} (of {len(a)}), "
                f"pocketlm {b[lo:k + 10]!r} (of {len(b)})")

    __repr__ = __str__


def check_parity(tokenizer_json_path: str | os.PathLike, texts: Iterable[str],
                 batch_size: int = 1024) -> ParityMismatch | None:
    """Encode and decode every text with both implementations; return the first mismatch or None.

    Checks, per text: the ids; decode(ids) with and without special tokens; and that
    decode(ids, skip_special_tokens=False) gives the text back. Lone surrogates (which
    `tokenizers` cannot take) are given to it as U+FFFD, as pocketlm defines.
    """
    ref = Tokenizer.from_file(str(tokenizer_json_path))
    ours = PyTokenizer.from_file(tokenizer_json_path)
    it, start = iter(texts), 0
    while batch := list(islice(it, batch_size)):
        fixed = [t.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace") for t in batch]
        encodings = ref.encode_batch(fixed, add_special_tokens=False)
        for index, (text, ref_text, enc) in enumerate(zip(batch, fixed, encodings), start):
            ids = ours.encode(text)
            checks = [("encode", enc.ids, ids)]
            if ids == enc.ids:
                checks += [("decode", ref.decode(ids), ours.decode(ids)),
                           ("decode_all", ref.decode(ids, skip_special_tokens=False),
                            ours.decode(ids, skip_special_tokens=False)),
                           ("roundtrip", ref_text, ours.decode(ids, skip_special_tokens=False))]
            for check, expected, got in checks:
                if expected != got:
                    return ParityMismatch(index, text, check, expected, got)
        start += len(batch)
    return None
