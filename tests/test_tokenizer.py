"""pocketlm.tokenizer (pure Python) against Hugging Face `tokenizers`, on tokenizers trained by
export/tokenizer_train.py from a tiny corpus built here (no ../shared data needed).

Parity on the whole training corpus is checked by every export (export/pipeline.py calls
check_parity on all training and validation texts and refuses to write a model on a mismatch).
"""

from __future__ import annotations

import ast
import doctest
import json
import os
import random
import sys
from pathlib import Path

import pytest
import tokenizers
from tokenizers import AddedToken

import pocketlm.tokenizer as tokmod
from export import tokenizer_train
from export.tokenizer_train import check_parity, save_tokenizer, train_tokenizer
from pocketlm.tokenizer import Tokenizer, TokenizerError, pretokenize

ROOT = Path(__file__).resolve().parent.parent


def build_corpus(n: int = 1500, seed: int = 0) -> list[str]:
    """SQL, English, code and some Unicode, seeded."""
    rng = random.Random(seed)
    tables, cols = ["singer", "concert", "stadium", "orders"], ["name", "age", "id", "country", "price"]
    english = ["remind me at 7pm to walk the dog", "it's raining, isn't it?", "We'll see what they've done.",
               "The quick brown fox jumps over the lazy dog.", "call mom tomorrow at 10:30am"]
    code = ["def f(x):\n    return x ** 2  # square\n", "for (let i = 0; i < n; i++) {\n\tsum += a[i];\n}",
            'print("hello, world")\n', "x = {'a': 1, \"b\": [2, 3]}\n"]
    uni = ["café naïve résumé", "東京タワーは高い。", "שלום עולם", "مرحبا ١٢٣", "Привет, мир!", "😀 👍🏽 🇫🇷",
           "e\u0301\u0302", "१२३ ٤٥٦", "\u00a0non\u3000breaking\u2028", "Ελληνικά ⅫⅣ"]
    out = []
    for _ in range(n):
        t, c = rng.choice(tables), rng.sample(cols, 2)
        out.append(f"SELECT {c[0]}, COUNT(*) FROM {t} WHERE {c[1]} > {rng.randint(0, 999)} GROUP BY {c[0]};")
        out.append(rng.choice(english) + " " + rng.choice(uni))
        out.append(rng.choice(code))
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(path, tokenizers.Tokenizer, pocketlm Tokenizer) for a tokenizer trained on build_corpus()."""
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    save_tokenizer(train_tokenizer(build_corpus(), vocab_size=500), path)
    return path, tokenizers.Tokenizer.from_file(str(path)), Tokenizer.from_file(path)


TRICKY = [
    "", " ", "  ", "   ", "\n", "  \n\n  \t", "\t\t", "a  b", "a \tb", "x\r\ny\r\n", "trailing   ",
    "a\u00a0b", " \u3000x", "x\u2028y\u2029", "\u0085\u180e\u200b\u202f\u205f", "\ufeffBOM",
    "👍", "👩\u200d👩\u200d👧\u200d👦", "🇫🇷🇯🇵", "🏳️\u200d🌈", "👋🏽 hi", "🙂" * 50,
    "東京タワーは高い。", "한국어 텍스트", "中文 SELECT",
    "שלום עולם", "مرحبا بالعالم ١٢٣", "\u202eevil\u202c",
    "e\u0301", "Z\u0334\u0321\u032aa\u0338l\u0336g\u0337o\u0335", "ñ vs n\u0303", " \u0301x",
    "\x00", "a\x00b", "\x01\x02\x1b[31mred\x1b[0m", "\x1c\x1d\x1e\x1f", "a\x1cb", "\x7f\x80\x9f",
    "0123456789", "٠١٢٣٤", "०१२", "໑໒", "①②", "Ⅻ", "𝟘𝟙", "½ ¾", "3.14e-10", "x2", " 42",
    "'s", "'LL", "it's", "don't", "we'll've", "''", "' s", "rock'n'roll", "it’s", "'", " '",
    "<eos>", "a<eos>b", "<pad><bos><eos>", "<eos", "< eos >", " <eos> ",
    "SELECT T1.name FROM singer AS T1 WHERE T1.age > 20;", "def f(x):\n    return x**2  # c\n",
    " " * 300, "a" * 1000, "=" * 500, "\ue000\U000f0000\U0010fffd", "\U0003fffd\U000e0001",
    "\u1c89\U000105c0\U00016130", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "ǅ ǈ",
]
FILES = [ROOT / "pysrc" / "pocketlm" / "manifest.py", Path(__file__)]


def _byte_level(piece: str) -> str:
    return "".join(tokmod.BYTE_TO_CHAR[b] for b in piece.encode("utf-8"))


def _texts(case: str) -> list[str]:
    """The case itself, or for "<files>" the text of whole source files."""
    return [f.read_text(encoding="utf-8") for f in FILES if f.exists()] if case == "<files>" else [case]


@pytest.mark.parametrize("case", TRICKY + ["<files>"], ids=lambda s: ascii(s)[:40])
def test_parity_encode_decode_roundtrip(pair, case):
    _, ref, ours = pair
    for text in _texts(case):
        ids = ours.encode(text)
        assert ids == ref.encode(text, add_special_tokens=False).ids
        assert ours.decode(ids) == ref.decode(ids)
        everything = ours.decode(ids, skip_special_tokens=False)
        assert everything == ref.decode(ids, skip_special_tokens=False) == text
        assert "".join(ours.pre_tokenize(text)) == text
        if "<" not in text:
            assert ours.decode(ids) == text
            pieces = [p for p, _ in ref.pre_tokenizer.pre_tokenize_str(text)]
            assert [_byte_level(p) for p in ours.pre_tokenize(text)] == pieces
        assert ours.decode_bytes(ids, skip_special_tokens=False) == text.encode("utf-8")


@pytest.mark.parametrize("text, replaced", [
    ("\ud800", "\ufffd"), ("a\udfffb", "a\ufffdb"), ("\ud83d", "\ufffd"),
    ("x\ud800\ud800y", "x\ufffd\ufffdy"), ("\ude00\ud83d", "\ufffd\ufffd"),
    ("\ud83d\ude00", "\U0001f600"), ("ok \ud83d\ude00\ud83d!", "ok \U0001f600\ufffd!"),
])
def test_lone_surrogates_become_replacement_char(pair, text, replaced):
    _, ref, ours = pair
    assert ours.encode(text) == ref.encode(replaced, add_special_tokens=False).ids
    assert ours.decode(ours.encode(text)) == replaced


def test_special_tokens(pair):
    _, ref, ours = pair
    assert [ours.token_to_id(t) for t in ("<pad>", "<bos>", "<eos>")] == [0, 1, 2]
    assert ours.encode("<eos>") == [2]  # as tokenizers does, even with add_special_tokens=False
    assert 2 not in ours.encode("plain text, no specials < eos >")
    assert [ours.is_special(i) for i in range(4)] == [True, True, True, False]
    assert ours.decode([1, ours.encode("hi")[0], 2]) == "h"
    assert ours.token_bytes(2) == b"<eos>"
    ref.encode_special_tokens = True
    try:
        for text in ("<eos>", "a<eos>b<pad>", "<bos><eos>x"):
            expected = ref.encode(text, add_special_tokens=False).ids
            assert ours.encode(text, split_special_tokens=True) == expected
            assert 2 not in ours.encode(text, split_special_tokens=True)
    finally:
        ref.encode_special_tokens = False


def test_vocab_api(pair):
    _, ref, ours = pair
    assert ours.vocab_size == ref.get_vocab_size() <= 500
    for i in range(ours.vocab_size):
        tok = ours.id_to_token(i)
        assert tok == ref.id_to_token(i) and ours.token_to_id(tok) == i
        assert ours.decode_bytes([i], skip_special_tokens=False) == ours.token_bytes(i)
    assert ours.token_to_id("no such token") is None
    assert ours.token_bytes(ours.token_to_id("Ġ")) == b" "
    for bad in (-1, ours.vocab_size, 10**9):
        with pytest.raises(TokenizerError, match="unknown token id"):
            ours.decode([bad])
        with pytest.raises(TokenizerError):
            ours.id_to_token(bad)


def test_decode_bytes_streams_partial_utf8(pair):
    _, _, ours = pair
    text = "€ 😀 東京"
    ids = ours.encode(text)
    chunks = [ours.decode_bytes([i]) for i in ids]
    assert b"".join(chunks) == text.encode("utf-8")
    assert any(c.decode("utf-8", "replace") != c.decode("utf-8", "ignore") for c in chunks)  # split chars


def test_fuzz_parity_and_decode_random_ids(pair):
    path, ref, ours = pair
    rng = random.Random(1234)
    spans = [(0, 0x80), (0x80, 0x800), (0x800, 0x10000), (0x10000, 0x110000), (0x1F300, 0x1FB00),
             (0, 0x110000)]
    pieces = list("\u00a0\u2028\u2029\u3000\u0085\u180e\u200b \t\n\r\x0b\x0c\x1c\x1f'") + [
        "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'LL", "<eos>", "<pad>", "<bos", "SELECT", " FROM",
        "\ud800"]

    def rand_str():
        out = []
        for _ in range(rng.randint(0, 24)):
            r = rng.random()
            if r < 0.35:
                out.append(rng.choice(pieces))
            else:
                out.append(chr(rng.randrange(*rng.choice(spans))))  # surrogates too: lone, or paired
        return "".join(out)

    texts = [rand_str() for _ in range(3000)]
    mismatch = check_parity(path, texts)
    assert mismatch is None, str(mismatch)
    for _ in range(2000):  # random ids: invalid UTF-8 must become U+FFFD exactly as tokenizers does
        ids = [rng.randrange(ours.vocab_size) for _ in range(rng.randint(0, 10))]
        assert ours.decode(ids) == ref.decode(ids)
        assert ours.decode(ids, skip_special_tokens=False) == ref.decode(ids, skip_special_tokens=False)


def test_pretokenize_character_classes_match_tokenizers():
    """Each code point next to a letter, a digit and a symbol: the split shows its class (Unicode
    White_Space, L*, N*, other). The BMP and plane 1 fully, the rest sampled, plus the table of
    letters newer than this Python's unicodedata."""
    cps = [*range(0x20000), *range(0x20000, 0x40000, 7), *range(0x40000, 0x110000, 4099)]
    cps += [c for lo, (hi, _) in zip(tokmod._NEWER_STARTS, tokmod._NEWER_ENDS) for c in range(lo - 2, hi + 3)]
    text = "".join(f"a{c}1{c}!{c}" for c in map(chr, cps) if not 0xD800 <= ord(c) < 0xE000)
    pre = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    ref = [p for p, _ in pre.pre_tokenize_str(text)]
    ours = [_byte_level(p) for p in pretokenize(text)]
    assert ours == ref


def test_added_tokens_and_ignore_merges_match_tokenizers(pair):
    path, _, _ = pair
    ref = tokenizers.Tokenizer.from_file(str(path))
    ref.add_tokens(["SELECT", AddedToken("café", normalized=False), "<eos>x", " FROM",
                    AddedToken("<e", special=True)])
    spec = json.loads(ref.to_str())
    spec["model"]["ignore_merges"] = True
    for js in (ref.to_str(), json.dumps(spec)):
        ref2, ours = tokenizers.Tokenizer.from_str(js), Tokenizer.from_str(js)
        extra = ["SELECT café FROM x", "<eos>xy", "<eos", "<e", "SELECTSELECT", "cafécafé", " FROM FROM"]
        for text in extra + TRICKY:
            ids = ours.encode(text)
            assert ids == ref2.encode(text, add_special_tokens=False).ids, text
            assert ours.decode(ids) == ref2.decode(ids)  # "café" decodes as "caf\ufffd" in both!


def test_legacy_string_merges_load_the_same(pair):
    path, _, ours = pair
    spec = json.loads(path.read_text(encoding="utf-8"))
    spec["model"]["merges"] = [" ".join(m) for m in spec["model"]["merges"]]
    legacy = Tokenizer.from_str(json.dumps(spec))
    for text in TRICKY:
        assert legacy.encode(text) == ours.encode(text)


@pytest.mark.parametrize("path_value, change, words", [
    (("normalizer",), {"type": "NFC"}, "normalizer"),
    (("model", "type"), "WordPiece", "WordPiece"),
    (("pre_tokenizer",), {"type": "Whitespace"}, "Whitespace"),
    (("pre_tokenizer",), {"type": "Sequence", "pretokenizers": []}, "Sequence"),
    (("pre_tokenizer", "add_prefix_space"), True, "add_prefix_space"),
    (("pre_tokenizer", "use_regex"), False, "use_regex"),
    (("post_processor",), {"type": "TemplateProcessing"}, "TemplateProcessing"),
    (("decoder",), {"type": "WordPiece"}, "decoder"),
    (("model", "dropout"), 0.1, "dropout"),
    (("model", "continuing_subword_prefix"), "##", "continuing_subword_prefix"),
    (("truncation",), {"max_length": 8}, "truncation"),
    (("version",), "2.0", "version"),
    (("model", "vocab"), {"a": 0}, "256 byte-level"),
    (("model", "merges"), [["Ġ", "zzz"]], "merge"),
    (("added_tokens", 0, "lstrip"), True, "lstrip"),
    (("added_tokens", 2, "id"), 7, "<eos>"),
    (("model",), [1, 2], "model"),
    (("model", "vocab"), [1, 2], "malformed"),
])
def test_rejects_what_it_cannot_run(pair, path_value, change, words):
    path, _, _ = pair
    spec = json.loads(path.read_text(encoding="utf-8"))
    node = spec
    for key in path_value[:-1]:
        node = node[key]
    node[path_value[-1]] = change
    with pytest.raises(TokenizerError, match=words):
        Tokenizer.from_str(json.dumps(spec))


def test_bad_files(tmp_path):
    with pytest.raises(TokenizerError, match="cannot read"):
        Tokenizer.from_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match="not valid JSON"):
        Tokenizer.from_file(tmp_path / "bad.json")
    with pytest.raises(ValueError):  # TokenizerError is a ValueError
        Tokenizer.from_str("[]")


def test_training_is_deterministic_and_validates(tmp_path):
    corpus = build_corpus(300, seed=5)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    save_tokenizer(train_tokenizer(corpus, 400), a)
    save_tokenizer(train_tokenizer(iter(corpus), 400), b)
    assert a.read_bytes() == b.read_bytes()
    spec = json.loads(a.read_text(encoding="utf-8"))
    assert spec["normalizer"] is None and spec["post_processor"] is None
    assert [t["content"] for t in spec["added_tokens"]] == ["<pad>", "<bos>", "<eos>"]
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(corpus, 100)


def test_check_parity_reports_first_mismatch(pair, monkeypatch):
    path, _, _ = pair
    assert check_parity(path, ["ok", "fine"]) is None
    real = tokenizer_train.PyTokenizer.encode
    monkeypatch.setattr(tokenizer_train.PyTokenizer, "encode",
                        lambda self, t: real(self, t) + [0] if t == "bad" else real(self, t))
    m = check_parity(path, iter(["ok", "x", "bad", "bad"]), batch_size=2)
    assert (m.index, m.text, m.check) == (2, "bad", "encode") and "parity failed" in str(m)


def test_doctests_and_stdlib_only():
    assert doctest.testmod(tokmod).failed == 0
    tree = ast.parse(Path(tokmod.__file__).read_text(encoding="utf-8"))
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert names <= set(sys.stdlib_module_names) | {"__future__"}, names
