"""llama2.c's tokenizer.bin -> a Hugging Face tokenizer.json (SentencePiece-style BPE with byte fallback).

tokenizer.bin (llama2.c's tokenizer.py `export`, read by run.c `build_tokenizer`), little-endian:

    int32   max_token_length
    then, per token id 0 .. vocab_size-1:
        float32 score     SentencePiece's piece score (higher = merged earlier)
        int32   length    bytes of the piece
        bytes   piece     UTF-8, with SentencePiece's "▁" stored as a plain " "

The token count is not stored: it is the model's vocab_size (the checkpoint header), so a file with
bytes left over, or one that ends early, belongs to another vocabulary — reported, never guessed.
Ids 0, 1, 2 are <unk>, <s>, </s> (the exporter wrote <s> / </s> as "\\n<s>\\n" / "\\n</s>\\n");
ids 3 .. 258 are the byte pieces "<0x00>" .. "<0xFF>" (run.c's byte fallback is "byte + 3").

The tokenizer.json (the contract pocketlm's pure-Python reader and `tokenizers` 0.22.1 both read):
pieces get their "▁" back; a Metaspace pre-tokenizer (prepend_scheme "first", no split) adds the
dummy-prefix "▁"; the BPE model has byte_fallback; its merges are derived from the vocabulary and the
scores the way run.c's `encode` behaves — it repeatedly merges the adjacent pair whose concatenation
is a piece with the highest score — so every split of a piece into two pieces is a merge, ranked by
the merged piece's score (highest first), ties by the merged piece's id, then by the shorter left part
(which, for overlapping equal merges like "▁"+"▁▁" vs "▁▁"+"▁", is run.c's leftmost-first choice).

Worked example: a tokenizer.bin with pieces [<unk>, \\n<s>\\n, \\n</s>\\n, <0x00>..<0xFF>, " ", "a", "b",
" a", "ab", " ab"] and scores [0]*259 + [-9, -8, -7, -1, -2, -3] gives
    vocab  {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x00>": 3, ..., "▁": 259, "a": 260, "b": 261,
            "▁a": 262, "ab": 263, "▁ab": 264}
    merges [["▁", "a"], ["a", "b"], ["▁", "ab"], ["▁a", "b"]]    (scores -1, -2, -3, -3)
and "ab" encodes to "▁ab" = [264], as run.c's encode gives.

Known differences from run.c's encode (pinned by tests/test_llama2c_tokenizer.py): text that starts with
a space (Metaspace does not prepend a second "▁"; run.c and SentencePiece do), a literal "▁" in the
text (read as a space here, byte-encoded by run.c), the literal strings "<unk>", "<s>", "</s>"
(special tokens here, plain text for run.c), and pieces with equal scores (rank order here, leftmost
position in run.c).
"""

from __future__ import annotations

import json
import os
import struct

SPACE = "▁"  # SentencePiece's whitespace marker (U+2581)
SPECIAL_PIECES = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2
BYTE_OFFSET = 3  # byte b is token id b + 3 (run.c's byte fallback)
_I32, _F32_I32 = struct.Struct("<i"), struct.Struct("<fi")


class TokenizerBinError(ValueError):
    """A tokenizer.bin that cannot be read, or does not belong to the model; the message says why."""


def require_file(path: str) -> None:
    """TokenizerBinError unless `path` is a file (llama2.c keeps the vocabulary apart from the checkpoint)."""
    if not os.path.isfile(path):
        raise TokenizerBinError(f"tokenizer file {path!r} not found (llama2.c keeps the vocabulary apart from "
                                "the checkpoint: pass --tokenizer PATH, or TOKENIZER=PATH to make)")


def read_tokenizer_bin(path: str, vocab_size: int) -> tuple[list[bytes], list[float]]:
    """(pieces as stored, scores) for exactly `vocab_size` tokens, or TokenizerBinError.

    >>> # max_token_length 1, then (score 0.0, length 1, b"a"):
    >>> import tempfile; f = tempfile.NamedTemporaryFile(delete=False); _ = f.write(b"\\1\\0\\0\\0" + struct.pack("<fi", 0.0, 1) + b"a"); f.close()
    >>> read_tokenizer_bin(f.name, 1)
    ([b'a'], [0.0])
    """
    require_file(path)
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < _I32.size:
        raise TokenizerBinError(f"{path} is {len(data)} bytes: too short for a llama2.c tokenizer.bin")
    offset, pieces, scores = _I32.size, [], []
    for token_id in range(vocab_size):
        piece, score, offset = _read_token(data, offset)
        if piece is None:
            raise TokenizerBinError(
                f"{path} ends after {token_id} tokens, the model's vocabulary has {vocab_size}: the tokenizer "
                "belongs to a model with a smaller vocabulary (or the file is truncated)")
        pieces.append(piece)
        scores.append(score)
    if offset != len(data):
        extra = _count_tokens(data, offset)
        more = f"{extra} more tokens" if extra is not None else f"{len(data) - offset} bytes"
        raise TokenizerBinError(
            f"{path} holds {more} after the model's {vocab_size} tokens: the tokenizer belongs to a model "
            "with a larger vocabulary")
    return pieces, scores


def _read_token(data: bytes, offset: int) -> tuple[bytes | None, float, int]:
    """One (score, length, bytes) record at `offset`: (piece, score, next offset); piece None if cut short."""
    if offset + _F32_I32.size > len(data):
        return None, 0.0, offset
    score, length = _F32_I32.unpack_from(data, offset)
    start = offset + _F32_I32.size
    if length < 0 or start + length > len(data):
        return None, 0.0, offset
    return data[start:start + length], score, start + length


def _count_tokens(data: bytes, offset: int) -> int | None:
    """How many whole token records follow `offset` (None if the rest is not a whole number of them)."""
    count = 0
    while offset < len(data):
        piece, _, offset = _read_token(data, offset)
        if piece is None:
            return None
        count += 1
    return count


def hf_pieces(stored: list[bytes]) -> list[str]:
    """Stored pieces -> tokenizer.json pieces: "▁" back for spaces, fixed names for ids 0..2.

    >>> pieces = hf_pieces([b"<unk>", b"\\n<s>\\n", b"\\n</s>\\n"] + [b"<0x%02X>" % b for b in range(256)] + [b" the"])
    >>> pieces[:4], pieces[-1]
    (['<unk>', '<s>', '</s>', '<0x00>'], '▁the')
    """
    if len(stored) < len(SPECIAL_PIECES) + 256:
        raise TokenizerBinError(f"the vocabulary has {len(stored)} tokens; llama2.c's needs at least 259 "
                                "(<unk>, <s>, </s> and the 256 byte pieces)")
    pieces = list(SPECIAL_PIECES)
    for token_id, raw in enumerate(stored[len(SPECIAL_PIECES):], start=len(SPECIAL_PIECES)):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise TokenizerBinError(f"token {token_id} ({raw!r}) is not UTF-8: not a llama2.c tokenizer.bin") from None
        pieces.append(text.replace(" ", SPACE))
    for b in range(256):  # run.c's byte fallback is id b + 3, so those ids must be the byte pieces
        if pieces[BYTE_OFFSET + b] != f"<0x{b:02X}>":
            raise TokenizerBinError(f"token {BYTE_OFFSET + b} is {pieces[BYTE_OFFSET + b]!r}, not the byte piece "
                                    f"<0x{b:02X}> that llama2.c's byte fallback expects there")
    seen: dict[str, int] = {}
    for token_id, piece in enumerate(pieces):
        if piece in seen:
            raise TokenizerBinError(f"tokens {seen[piece]} and {token_id} are both {piece!r}: a tokenizer.json "
                                    "vocabulary needs distinct pieces")
        seen[piece] = token_id
    return pieces


def derive_merges(pieces: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """Every split of a (non-special) piece into two pieces, in merge-rank order (module docstring).

    >>> derive_merges(["<unk>", "<s>", "</s>", "a", "b", "ab"], [0.0, 0.0, 0.0, -5.0, -6.0, -1.0])
    [('a', 'b')]
    """
    ids = {p: i for i, p in enumerate(pieces)}
    ranked = []  # (-score, merged id, split position, left, right)
    for merged_id, piece in enumerate(pieces):
        if merged_id < len(SPECIAL_PIECES):  # added tokens: never the result of a merge
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in ids and right in ids:
                ranked.append((-scores[merged_id], merged_id, cut, left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def tokenizer_json(pieces: list[str], merges: list[tuple[str, str]]) -> dict:
    """The tokenizer.json document (the exact contract in the module docstring), defined once, beside its reader:
    pocketlm.tokenizer_spm.llama_tokenizer_json."""
    from pocketlm.tokenizer_spm import llama_tokenizer_json

    return llama_tokenizer_json({p: i for i, p in enumerate(pieces)}, merges)


def convert(bin_path: str, vocab_size: int, json_path: str) -> dict:
    """Write `json_path` from `bin_path` (vocab_size tokens). Returns {"tokens": n, "merges": m}."""
    stored, scores = read_tokenizer_bin(bin_path, vocab_size)
    pieces = hf_pieces(stored)
    merges = derive_merges(pieces, scores)
    tmp = json_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(pieces, merges), f, ensure_ascii=False, indent=None, separators=(",", ":"))
    os.replace(tmp, json_path)
    return {"tokens": len(pieces), "merges": len(merges)}


PROBE_TEXTS = ("Once upon a time, there was a little girl named Lily. She loved to play outside.",
               'Tom said: "Hello!" 3 cats, 4.5 dogs\n\nThe end.', "emoji 😀🐈 and 日本語 text", "tabs\tand  two  spaces")


def verify(json_path: str, vocab_size: int) -> None:
    """The tokenizer.json as both readers see it: `tokenizers` reads vocab_size tokens, and pocketlm's
    pure-Python tokenizer gives the same ids and text back on PROBE_TEXTS (so the page can use it)."""
    from tokenizers import Tokenizer

    from export.tokenizer_train import check_parity

    tok = Tokenizer.from_file(json_path)
    if tok.get_vocab_size() != vocab_size:
        raise TokenizerBinError(f"tokenizers reads {tok.get_vocab_size()} tokens from {json_path}, expected {vocab_size}")
    mismatch = check_parity(json_path, PROBE_TEXTS)
    if mismatch is not None:
        raise TokenizerBinError(f"pocketlm's pure-Python tokenizer differs from the tokenizers library on the "
                                f"converted tokenizer: {mismatch}")
