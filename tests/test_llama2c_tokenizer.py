"""llama2.c tokenizer.bin -> tokenizer.json (export/llama2c_tokenizer.py), held to run.c's own encoder.

The test trains a small SentencePiece-style BPE vocabulary itself (pieces, scores = -merge order; chars
and the 256 byte pieces as llama2.c's exporter stores them), writes tokenizer.bin with struct, converts it,
and compares `tokenizers` 0.22.1 `encode(text, add_special_tokens=False).ids` with `runc_encode`, a
line-by-line re-implementation of run.c's `encode` (dummy-prefix space, per-code-point lookup with byte
fallback to id byte+3, then repeatedly the adjacent pair whose concatenation is a piece of the highest
score, leftmost on ties). The corner cases where the two differ are pinned below, each with its reason.
"""

from __future__ import annotations

import json
import random
import struct
from collections import Counter

import pytest
from tokenizers import Tokenizer

from export.llama2c_tokenizer import TokenizerBinError, convert, derive_merges, hf_pieces

SPECIALS = [b"<unk>", b"\n<s>\n", b"\n</s>\n"]  # as llama2.c's tokenizer.py export writes ids 0, 1, 2
BYTES = [b"<0x%02X>" % b for b in range(256)]
WORDS = ("once upon a time there was a little girl named lily she loved to play outside in the park with her "
         "big red ball one day it was sunny and warm so they went for walk together happy friends tree dog "
         "cat bird sang song jumped ran fast slow because after before under over").split()
CJK_IN_VOCAB = "日本語中文"
CJK_OUT_OF_VOCAB = "漢字한국어"
EMOJI = "😀🐈🚀"


# ------------------------------------------------------------------------------- fixtures


def train_pieces(n_merges: int = 250, seed: int = 0) -> tuple[list[bytes], list[float]]:
    """A SentencePiece-like BPE vocabulary: specials, bytes, then merged pieces (score -rank), then chars."""
    rng = random.Random(seed)
    chunks = Counter()
    for _ in range(3000):  # "▁word" chunks (as SentencePiece splits at whitespace) and runs of spaces
        chunks[" " + rng.choice(WORDS)] += 1
        if rng.random() < 0.1:
            chunks[" " * rng.randint(2, 4)] += 1
        if rng.random() < 0.05:
            chunks[" " + "".join(rng.sample(CJK_IN_VOCAB, 2))] += 1
    words = {w: list(w) for w in chunks}
    chars = sorted({c for w in chunks for c in w} | set(".,!?'0123456789"))
    merged: list[str] = []
    for _ in range(n_merges):
        pairs = Counter()
        for w, syms in words.items():
            for a, b in zip(syms, syms[1:]):
                pairs[a, b] += chunks[w]
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merged.append(a + b)
        for w, syms in words.items():
            i, out = 0, []
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == a and syms[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            words[w] = out
    pieces = SPECIALS + BYTES + [p.encode() for p in merged] + [c.encode() for c in chars]
    scores = [0.0] * 259 + [-float(i) for i in range(len(merged))] + [-1e4 - i for i in range(len(chars))]
    return pieces, scores


def write_tokenizer_bin(path, pieces: list[bytes], scores: list[float]) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<i", max(len(p) for p in pieces)))
        for piece, score in zip(pieces, scores):
            f.write(struct.pack("<fi", score, len(piece)) + piece)


def runc_encode(text: str, pieces: list[bytes], scores: list[float]) -> list[int]:
    """run.c's encode(text, bos=0, eos=0), in Python."""
    lookup = {p: i for i, p in enumerate(pieces)}
    if not text:
        return []
    ids = [lookup[b" "]]  # add_dummy_prefix
    for ch in text:
        code = ch.encode("utf-8")
        ids += [lookup[code]] if code in lookup else [b + 3 for b in code]
    while True:
        best_score, best_at, best_id = -1e10, -1, -1
        for i in range(len(ids) - 1):
            j = lookup.get(pieces[ids[i]] + pieces[ids[i + 1]])
            if j is not None and scores[j] > best_score:  # strictly greater: the leftmost wins a tie
                best_score, best_at, best_id = scores[j], i, j
        if best_at < 0:
            return ids
        ids[best_at:best_at + 2] = [best_id]


def fuzz_text(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 14)):
        kind = rng.random()
        if kind < 0.45:
            parts.append(rng.choice(WORDS))
        elif kind < 0.55:
            parts.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCXYZ") for _ in range(rng.randint(1, 7))))
        elif kind < 0.62:
            parts.append(rng.choice(EMOJI))
        elif kind < 0.70:
            parts.append("".join(rng.choice(CJK_IN_VOCAB + CJK_OUT_OF_VOCAB) for _ in range(rng.randint(1, 4))))
        elif kind < 0.78:
            parts.append(rng.choice(["\n", "\n\n", "\t", "\r\n"]))
        elif kind < 0.88:
            parts.append(rng.choice(".,!?'\"-:;()0123456789é€"))
        else:
            parts.append(str(rng.randint(0, 99999)))
        parts.append(" " * rng.choice([0, 1, 1, 1, 2, 3, 5]))
    text = "".join(parts)
    return text.lstrip(" ")  # a leading space is a pinned difference (test_leading_space_...)


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    pieces, scores = train_pieces()
    folder = tmp_path_factory.mktemp("llama2c_tok")
    write_tokenizer_bin(folder / "tokenizer.bin", pieces, scores)
    info = convert(str(folder / "tokenizer.bin"), len(pieces), str(folder / "tokenizer.json"))
    return pieces, scores, folder / "tokenizer.json", info


def hf_ids(path, text: str) -> list[int]:
    return Tokenizer.from_file(str(path)).encode(text, add_special_tokens=False).ids


# ------------------------------------------------------------------------------- parity


def test_the_trained_vocabulary_exercises_merges_bytes_and_spaces(vocab):
    pieces, scores, _, info = vocab
    n_merged = sum(1 for s in scores[259:] if s > -1e4)  # pieces the training merged
    assert info["tokens"] == len(pieces) and n_merged > 150
    assert info["merges"] > n_merged  # some pieces split more than one way, as in real vocabularies
    assert b"  " in pieces and b" the" in pieces  # space runs and "▁word" pieces were learnt


def test_tokenizers_library_equals_runc_encode_on_fuzzed_text(vocab):
    pieces, scores, path, _ = vocab
    tok = Tokenizer.from_file(str(path))
    rng = random.Random(1)
    texts = ["", "a", "once upon a time", "x  y   z", "😀", "日本語 漢字", "line\nbreak\n\n", "tab\there"]
    texts += [fuzz_text(rng) for _ in range(400)]
    for text in texts:
        expected = runc_encode(text, pieces, scores)
        assert tok.encode(text, add_special_tokens=False).ids == expected, repr(text)


def test_decode_gives_the_text_back(vocab):
    _, _, path, _ = vocab
    tok = Tokenizer.from_file(str(path))
    rng = random.Random(2)
    for text in ["once upon a time", "x  y\n😀 漢字 é"] + [fuzz_text(rng) for _ in range(100)]:
        assert tok.decode(tok.encode(text, add_special_tokens=False).ids) == text, repr(text)


def test_the_json_is_the_agreed_contract(vocab):
    _, _, path, _ = vocab
    doc = json.loads(path.read_text(encoding="utf-8"))
    model = doc.pop("model")
    assert doc == {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, c in enumerate(["<unk>", "<s>", "</s>"])],
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False},
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    }
    vocab_, merges = model.pop("vocab"), model.pop("merges")
    assert model == {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                     "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False}
    assert vocab_["<unk>"] == 0 and vocab_["<s>"] == 1 and vocab_["</s>"] == 2 and vocab_["<0x0A>"] == 13
    assert "▁the" in vocab_ and not any(" " in p for p in vocab_)
    assert all(isinstance(m, list) and len(m) == 2 and m[0] + m[1] in vocab_ for m in merges)


def test_merges_are_every_split_ranked_by_score_then_id_then_shorter_left():
    pieces = ["<unk>", "<s>", "</s>", "▁", "a", "b", "▁a", "ab", "▁ab", "▁▁", "▁▁▁"]
    scores = [0, 0, 0, -90, -91, -92, -1, -2, -3, -5, -5]
    assert derive_merges(pieces, scores) == [
        ("▁", "a"), ("a", "b"), ("▁", "ab"), ("▁a", "b"), ("▁", "▁"), ("▁", "▁▁"), ("▁▁", "▁")]
    assert derive_merges(pieces, scores) == derive_merges(list(pieces), list(scores))  # deterministic


# ------------------------------------------------------------------- pinned differences


def test_leading_space_gets_no_second_dummy_prefix(vocab):
    """Metaspace(prepend_scheme "first") prepends "▁" only when the text does not already start with one;
    run.c (and SentencePiece with add_dummy_prefix) always adds it. So " the" is "▁the" here but "▁▁the"
    (a space, then "▁the") in run.c: the tokenizer.json encodes " X" like run.c encodes "X"."""
    pieces, scores, path, _ = vocab
    for text in [" the", "  park", " 😀"]:
        assert hf_ids(path, text) == runc_encode(text[1:], pieces, scores) != runc_encode(text, pieces, scores)


def test_a_literal_metaspace_character_reads_as_a_space(vocab):
    """In tokenizer.json "▁" IS the space; run.c's vocabulary has plain spaces, so it byte-encodes U+2581."""
    pieces, scores, path, _ = vocab
    assert hf_ids(path, "a▁the") == hf_ids(path, "a the") == runc_encode("a the", pieces, scores)
    runc = runc_encode("a▁the", pieces, scores)
    assert runc[1:4] == [0xE2 + 3, 0x96 + 3, 0x81 + 3]  # after "▁a": U+2581's three UTF-8 bytes


def test_special_token_strings_in_the_text_are_special_tokens(vocab):
    """`tokenizers` cuts added tokens out of the text even with add_special_tokens=False ("<s>" -> id 1),
    as pocketlm's own reader does; run.c has no added tokens and encodes the characters."""
    pieces, scores, path, _ = vocab
    assert 1 in hf_ids(path, "the<s>end") and 2 in hf_ids(path, "a</s>")
    assert 1 not in runc_encode("the<s>end", pieces, scores)


def test_equal_scores_merge_in_rank_order_not_leftmost(tmp_path):
    """Two pieces with the same score: run.c merges the leftmost pair first, a BPE merge list can only
    rank them (here by id). SentencePiece vocabularies give every merged piece its own score (llama2.c's
    32000-token tokenizer.bin: the only repeated score is -1e9 on "▁" and "▁▁"), so this does not arise."""
    pieces = SPECIALS + BYTES + [b" ", b"a", b"b", b"c", b"bc", b"ab"]  # "bc" (id 263) before "ab" (264)
    scores = [0.0] * 259 + [-10.0, -11.0, -12.0, -13.0, -1.0, -1.0]
    write_tokenizer_bin(tmp_path / "t.bin", pieces, scores)
    convert(str(tmp_path / "t.bin"), len(pieces), str(tmp_path / "t.json"))
    space, a, _, c, bc, ab = range(259, 265)
    assert runc_encode("abc", pieces, scores) == [space, ab, c]
    assert hf_ids(tmp_path / "t.json", "abc") == [space, a, bc]


# ------------------------------------------------------------------------------- errors


def test_a_tokenizer_with_fewer_tokens_than_the_model_is_refused(vocab, tmp_path):
    pieces, scores, _, _ = vocab
    write_tokenizer_bin(tmp_path / "t.bin", pieces, scores)
    with pytest.raises(TokenizerBinError, match=f"ends after {len(pieces)} tokens.*has {len(pieces) + 5}.*smaller"):
        convert(str(tmp_path / "t.bin"), len(pieces) + 5, str(tmp_path / "t.json"))
    assert not (tmp_path / "t.json").exists()


def test_a_tokenizer_with_more_tokens_than_the_model_is_refused(vocab, tmp_path):
    pieces, scores, _, _ = vocab
    write_tokenizer_bin(tmp_path / "t.bin", pieces, scores)
    with pytest.raises(TokenizerBinError, match=r"holds 7 more tokens after the model's .* larger vocabulary"):
        convert(str(tmp_path / "t.bin"), len(pieces) - 7, str(tmp_path / "t.json"))


def test_a_truncated_tokenizer_and_a_missing_one_are_refused(vocab, tmp_path):
    pieces, scores, _, _ = vocab
    write_tokenizer_bin(tmp_path / "t.bin", pieces, scores)
    data = (tmp_path / "t.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[:-3])
    with pytest.raises(TokenizerBinError, match="ends after"):
        convert(str(tmp_path / "cut.bin"), len(pieces), str(tmp_path / "t.json"))
    with pytest.raises(TokenizerBinError, match="not found.*--tokenizer"):
        convert(str(tmp_path / "nowhere.bin"), len(pieces), str(tmp_path / "t.json"))


def test_pieces_that_cannot_be_a_llama2c_vocabulary_are_refused():
    good = SPECIALS + BYTES + [b" a"]
    assert hf_pieces(good)[-1] == "▁a"
    with pytest.raises(TokenizerBinError, match="not UTF-8"):
        hf_pieces(good + [b"\xff"])
    with pytest.raises(TokenizerBinError, match="not the byte piece <0x05>"):
        hf_pieces(SPECIALS + BYTES[:5] + [b"x"] + BYTES[6:])
    with pytest.raises(TokenizerBinError, match="both ' a'|both '▁a'"):
        hf_pieces(good + [b" a"])
    with pytest.raises(TokenizerBinError, match="at least 259"):
        hf_pieces(SPECIALS + [b"a"])
