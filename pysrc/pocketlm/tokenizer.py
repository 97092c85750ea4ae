"""Byte-level BPE in pure Python (CPython and Pyodide): runs tokenizer.json files like `tokenizers`.

For the files export/tokenizer_train.py writes (GPT-2 byte-level BPE, no normalizer) ids and text
are byte-identical to `tokenizers` 0.22.1 `encode(text, add_special_tokens=False).ids` and
`decode(ids)`; files with anything else (a normalizer, another model, ...) raise `TokenizerError`.
Encoding, step by step as in `tokenizers`:
1. lone surrogates (a JS string can hold them) become U+FFFD and a surrogate pair its code point,
   as the browser's TextEncoder does (`tokenizers` refuses such strings);
2. added tokens are cut out first: the literal text "<eos>" IS encoded as the special id, as
   `tokenizers` does even with add_special_tokens=False (`split_special_tokens=True` encodes it
   as plain text instead, like `tokenizers`' `encode_special_tokens`);
3. the rest is split by the GPT-2 regex, written out by hand (`pretokenize`);
4. each piece's UTF-8 bytes are merged by BPE, lowest merge rank first (`bpe_merge`).
Decoding joins the tokens' bytes (`token_bytes`), skipping special tokens by default as
`tokenizers` does, and decodes UTF-8 with U+FFFD for invalid bytes. Unknown ids raise
`TokenizerError` (`tokenizers` silently drops them).

The Llama / SentencePiece BPE family (Metaspace "▁" spaces, <0xXX> byte fallback, as llama2.c's
tokenizer converted to tokenizer.json) is run by pocketlm.tokenizer_spm.SpmTokenizer, a subclass:
`Tokenizer(spec)`, `Tokenizer.from_str` and `Tokenizer.from_file` pick the class from the file's
content (`family`), so callers never choose.
"""

from __future__ import annotations

import bisect
import heapq
import importlib
import json
import re
import unicodedata
from functools import lru_cache

class TokenizerError(ValueError):
    """A tokenizer.json that cannot be read or run faithfully, or an unknown token id."""


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters.

    Printable Latin-1 bytes stand for themselves, the others (controls, space, ...) are shifted to
    U+0100 onwards, so that every token of a byte-level vocabulary is a visible string:

    >>> m = bytes_to_unicode(); m[ord("a")], m[ord(" ")], m[ord("\\n")], m[0xE4]
    ('a', 'Ġ', 'Ċ', 'ä')
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [b for b in range(256) if b not in printable]  # in byte order: U+0100, U+0101, ...
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + k) for k, b in enumerate(others)}}


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}

# `\s` of the regex engine `tokenizers` uses (Oniguruma) is Unicode White_Space. That is NOT
# str.isspace(), which also accepts U+001C..U+001F (they are "Other" here).
_WHITESPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
                        "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")

# Letters (L) and numbers (N) assigned in Unicode 15.0-16.0. tokenizers 0.22.1 classifies by
# Unicode 16.0; CPython 3.11's unicodedata (14.0) calls these unassigned ("Cn"), so they are looked
# up here, for "Cn" only. Pyodide's Python 3.14 has Unicode 16.0 and never needs the table. (A
# Python with Unicode 17+ would call the letters added since "L" where tokenizers says "O".)
_NEWER_LN = """
L1C89-1C8A LA7CB-A7CD LA7DA-A7DC L105C0-105F3 N10D40-10D49 L10D4A-10D65 L10D6F-10D85
L10EC2-10EC4 L1123F-11240 L11380-11389 L1138B L1138E L11390-113B5 L113B7 L113D1 L113D3
N116D0-116E3 L11BC0-11BE0 N11BF0-11BF9 L11F02 L11F04-11F10 L11F12-11F33 N11F50-11F59
L1342F L13441-13446 L13460-143FA L16100-1611D N16130-16139 L16D40-16D6C N16D70-16D79
L18CFF L1B132 L1B155 N1CCF0-1CCF9 N1D2C0-1D2D3 L1DF25-1DF2A L1E030-1E06D L1E4D0-1E4EB
N1E4F0-1E4F9 L1E5D0-1E5ED L1E5F0 N1E5F1-1E5FA L2B739 L2EBF0-2EE5D L31350-323AF
""".split()
_NEWER_STARTS = [int(r[1:].split("-")[0], 16) for r in _NEWER_LN]
_NEWER_ENDS = [(int(r[1:].split("-")[-1], 16), r[0]) for r in _NEWER_LN]


@lru_cache(maxsize=1 << 16)
def char_class(ch: str) -> str:
    """Class of one character in the GPT-2 split: "W"hitespace, "L"etter (L*), "N"umber (N*), "O"ther.

    >>> [char_class(c) for c in "a1 !\\u00a0\\u0663\\u4e2d\\u0301\\x1c\\U0001f600"]
    ['L', 'N', 'W', 'O', 'W', 'N', 'L', 'O', 'O', 'O']
    """
    if ch in _WHITESPACE:
        return "W"
    cat = unicodedata.category(ch)
    if cat[0] in "LN":
        return cat[0]
    if cat == "Cn":
        i = bisect.bisect_right(_NEWER_STARTS, ord(ch)) - 1
        if i >= 0 and ord(ch) <= _NEWER_ENDS[i][0]:
            return _NEWER_ENDS[i][1]
    return "O"


def pretokenize(text: str) -> list[str]:
    """Split text exactly as the GPT-2 regex of `tokenizers`' ByteLevel pre-tokenizer does:

        's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

    A contraction, or a run of one class (letters, numbers or other) with at most one leading
    " ", or a run of whitespace which leaves its last character to the next word:

    >>> pretokenize("it's  42 cats!!\\n\\n")
    ['it', "'s", ' ', ' 42', ' cats', '!!', '\\n\\n']
    >>> pretokenize("x\\t\\ty 'LL")
    ['x', '\\t', '\\t', 'y', " '", 'LL']
    """
    pieces = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "'" and text[i + 1:i + 2] in ("s", "t", "m", "d"):
            j = i + 2
        elif ch == "'" and text[i + 1:i + 3] in ("re", "ve", "ll"):
            j = i + 3
        else:
            start = i + 1 if ch == " " and i + 1 < n and char_class(text[i + 1]) != "W" else i
            cls = char_class(text[start])
            j = start + 1
            while j < n and char_class(text[j]) == cls:
                j += 1
            if cls == "W" and j < n and j - i > 1:
                j -= 1  # \s+(?!\S): the last space goes with the word that follows
        pieces.append(text[i:j])
        i = j
    return pieces


def bpe_merge(ids: list[int], merges: dict[tuple[int, int], tuple[int, int]]) -> list[int]:
    """Apply BPE merges to a list of token ids, as `tokenizers`' Word.merge_all does.

    `merges` maps a pair of ids to (rank, merged id). Repeatedly the adjacent pair with the lowest
    rank is merged, the leftmost on ties (a heap over linked symbols: O(n log n)). With 1="a",
    2="b", 3="c", 5="ab" (rank 0), 6="abc" (rank 1):

    >>> bpe_merge([1, 2, 3, 1, 2], {(1, 2): (0, 5), (5, 3): (1, 6)})
    [6, 5]
    """
    n = len(ids)
    if n < 2:
        return list(ids)
    syms: list[int | None] = list(ids)
    nxt, prv = list(range(1, n + 1)), list(range(-1, n - 1))
    heap = [(merges[p][0], i, merges[p][1]) for i, p in enumerate(zip(ids, ids[1:])) if p in merges]
    heapq.heapify(heap)
    while heap:
        _, i, new = heapq.heappop(heap)
        j = nxt[i]
        if syms[i] is None or j >= n or merges.get((syms[i], syms[j]), (0, None))[1] != new:
            continue  # stale entry: one side was merged away since it was pushed
        syms[i], syms[j], nxt[i] = new, None, nxt[j]
        if nxt[i] < n:
            prv[nxt[i]] = i
        for a, b in ((prv[i], i), (i, nxt[i])):
            if a >= 0 and b < n and (syms[a], syms[b]) in merges:
                rank, merged = merges[(syms[a], syms[b])]
                heapq.heappush(heap, (rank, a, merged))
    return [s for s in syms if s is not None]


def replace_lone_surrogates(text: str) -> str:
    """Do what the browser's TextEncoder does to a JS string: surrogate pairs become their code
    point, each lone surrogate becomes U+FFFD.

    >>> replace_lone_surrogates("a\\ud800b\\ud83d\\ude00") == "a\\ufffdb\\U0001f600"
    True
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise TokenizerError(f"unsupported tokenizer.json: {what}")


def family(spec) -> str:
    """Which implementation runs a tokenizer.json: "sentencepiece" for a Metaspace pre-tokenizer, or
    for the older Llama files without a pre-tokenizer (a normalizer, or byte_fallback, instead);
    "byte-level" for everything else (which that class then accepts or refuses with a reason).

    >>> family({"pre_tokenizer": {"type": "Metaspace"}}), family({"pre_tokenizer": {"type": "ByteLevel"}})
    ('sentencepiece', 'byte-level')
    >>> family({"pre_tokenizer": None, "normalizer": {"type": "Sequence"}}), family([])
    ('sentencepiece', 'byte-level')
    """
    if not isinstance(spec, dict):
        return "byte-level"
    pre, model = spec.get("pre_tokenizer"), spec.get("model")
    if isinstance(pre, dict) and pre.get("type") == "Metaspace":
        return "sentencepiece"
    if pre is None and (spec.get("normalizer") is not None or isinstance(model, dict) and model.get("byte_fallback")):
        return "sentencepiece"
    return "byte-level"


def _kind(obj) -> str:
    """The type of a tokenizer.json component for messages: "null", "NFC", "BPE", ..."""
    return obj.get("type") or json.dumps(obj)[:60] if isinstance(obj, dict) else json.dumps(obj)[:60]


def _token_to_bytes(token: str) -> bytes:
    """Bytes of a token as the ByteLevel decoder sees it: byte-level characters map back to their
    byte; a token with any other character (e.g. an added token "<中>") is taken as UTF-8.

    >>> _token_to_bytes("Ġcaf"), _token_to_bytes("Ã©"), _token_to_bytes("<eos>")
    (b' caf', b'\\xc3\\xa9', b'<eos>')
    """
    try:
        return bytes(CHAR_TO_BYTE[c] for c in token)
    except KeyError:
        return token.encode("utf-8")


_CACHE_MAX = 100_000  # pieces; the per-piece BPE cache is cleared when it grows past this


class Tokenizer:
    """A byte-level BPE tokenizer loaded from a `tokenizers` tokenizer.json (see the module doc).

    `vocab_size` is the highest id + 1, added and special tokens included (for our files, with
    contiguous ids, equal to `tokenizers`' get_vocab_size()). The smallest file it runs, as a dict:
    <eos>, the 256 byte-level characters and one merge, "Ġ" + "x" (" x"):

    >>> vocab = {"<eos>": 0, **{c: i + 1 for i, c in enumerate(CHAR_TO_BYTE)}, "Ġx": 257}
    >>> tok = Tokenizer({"version": "1.0", "model": {"type": "BPE", "vocab": vocab, "merges": [["Ġ", "x"]]},
    ...     "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False}, "decoder": {"type": "ByteLevel"},
    ...     "added_tokens": [{"id": 0, "content": "<eos>", "special": True, "normalized": False}]})
    >>> tok.pre_tokenize("it's<eos>  x"), tok.encode(" x<eos>"), tok.vocab_size
    (['it', "'s", '<eos>', ' ', ' x'], [257, 0], 258)
    >>> tok.decode([257, 0]), tok.decode([257, 0], skip_special_tokens=False), tok.encode("x")
    (' x', ' x<eos>', [88])
    """

    def __new__(cls, spec=None):
        if cls is Tokenizer and family(spec) == "sentencepiece":  # imported here: that module imports this one
            cls = importlib.import_module(".tokenizer_spm", __package__).SpmTokenizer
        return super().__new__(cls)

    def __init__(self, spec: dict):
        try:
            self._load(spec)
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            if isinstance(e, TokenizerError):
                raise
            raise TokenizerError(f"malformed tokenizer.json: {type(e).__name__}: {e}") from None

    @classmethod
    def from_str(cls, json_text: str) -> Tokenizer:
        """Load from the text of a tokenizer.json."""
        try:
            return cls(json.loads(json_text))
        except json.JSONDecodeError as e:
            raise TokenizerError(f"tokenizer.json is not valid JSON: {e}") from None

    @classmethod
    def from_file(cls, path) -> Tokenizer:
        """Load a tokenizer.json file (UTF-8)."""
        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_str(f.read())
        except (OSError, UnicodeDecodeError) as e:
            raise TokenizerError(f"cannot read tokenizer file {path}: {e}") from None

    def _load(self, spec: dict) -> None:
        """Refuse what we cannot run faithfully, then build the lookup tables."""
        _need(isinstance(spec, dict), "the top level is not a JSON object")
        _need(spec.get("version") == "1.0", f"version {spec.get('version')!r} (expected '1.0')")
        for key, allowed in (("truncation", ["null"]), ("padding", ["null"]), ("normalizer", ["null"]),
                             ("pre_tokenizer", ["ByteLevel"]), ("post_processor", ["null", "ByteLevel"]),
                             ("decoder", ["ByteLevel"]), ("model", ["BPE"])):
            kind = _kind(spec.get(key))
            hint = "; Llama/SentencePiece files use Metaspace" if key == "pre_tokenizer" else ""
            _need(kind in allowed, f"{key} {kind} (only {' or '.join(allowed)} is supported{hint})")
        pre, model = spec["pre_tokenizer"], spec["model"]
        _need(pre.get("add_prefix_space") is False, "ByteLevel pre_tokenizer with add_prefix_space=true")
        _need(pre.get("use_regex", True) is True, "ByteLevel pre_tokenizer with use_regex=false")
        self._load_bpe(model)
        _need(all(c in self._vocab for c in CHAR_TO_BYTE), "the vocab lacks some of the 256 byte-level characters")
        self._byte_ids = [self._vocab[BYTE_TO_CHAR[b]] for b in range(256)]
        self._load_merges(model)
        self._load_tables(spec.get("added_tokens") or [], _token_to_bytes)

    def _load_bpe(self, model: dict) -> None:
        """Checks and the vocab, shared by both families: no dropout, no subword prefix or suffix."""
        _need(model.get("dropout") in (None, 0), "BPE dropout (it makes encoding random)")
        for key in ("continuing_subword_prefix", "end_of_word_suffix"):
            _need(not model.get(key), f"BPE {key}={model.get(key)!r}")
        self._ignore_merges = bool(model.get("ignore_merges"))
        self._vocab = dict(model["vocab"])

    def _load_merges(self, model: dict) -> None:
        """Ranked merges as ids: (left, right) -> (rank, merged); a repeated pair keeps its last rank,
        as in `tokenizers`."""
        vocab, merges = self._vocab, {}
        # A page loads this in Pyodide before its model is ready (51 112 merges for a llama2.c tokenizer):
        # no per-merge message is formatted unless a merge is bad.
        for rank, merge in enumerate(model.get("merges") or []):
            a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
            left, right, merged = vocab.get(a), vocab.get(b), vocab.get(a + b)
            if left is None or right is None or merged is None:
                _need(False, f"merge {merge!r} of tokens not in the vocab")
            merges[(left, right)] = (rank, merged)
        self._merges: dict[tuple[int, int], tuple[int, int]] = merges

    def _load_tables(self, added_tokens: list, to_bytes) -> None:
        """Added tokens, then id -> token and id -> bytes (`to_bytes(token)`) for every id."""
        self._load_added(added_tokens)
        tokens = {i: t for t, i in self._vocab.items()}
        _need(len(tokens) == len(self._vocab), "two vocab entries share an id")
        tokens.update((i, t) for t, i in self._added.items())
        self.vocab_size = max(tokens) + 1
        self._tokens = [tokens.get(i) for i in range(self.vocab_size)]
        self._bytes = [None if t is None else to_bytes(t) for t in self._tokens]
        self._cache: dict[str, tuple[int, ...]] = {}

    def _load_added(self, entries: list) -> None:
        """Added tokens with the ids `tokenizers` gives them, and the patterns that cut them out of
        the text: first the non-normalized tokens, then the normalized ones, as `tokenizers` does."""
        self._added: dict[str, int] = {}
        self._special: set[int] = set()
        self._normalized_added = False
        groups: tuple[list[str], list[str]] = ([], [])
        for e in entries:
            content = e["content"]
            if not content:
                continue  # tokenizers ignores empty added tokens
            for flag in ("single_word", "lstrip", "rstrip"):
                _need(not e.get(flag), f"added token {content!r} with {flag}=true")
            tid = self._added.get(content, self._vocab.get(content))
            if tid is None:  # tokenizers ignores the file's id and numbers new tokens itself
                size, top = len(self._vocab), max(self._added.values(), default=None)
                tid = size if top is None or (top < size and size) else top + 1
            _need(tid == e.get("id"), f"added token {content!r} has id {e.get('id')}, tokenizers gives {tid}")
            self._added[content] = tid
            if e.get("special"):
                self._special.add(tid)
            groups[bool(e.get("normalized", True))].append(content)
        self._normalized_added = bool(groups[1])
        # Longest first: Python's leftmost-first alternation then finds leftmost-longest matches.
        self._patterns = [re.compile("|".join(re.escape(t) for t in sorted(g, key=lambda t: (-len(t), t))))
                          if g else None for g in groups]  # (not normalized, normalized)

    def encode(self, text: str, *, split_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`, without bos/eos (== tokenizers' encode(text, False).ids). Added tokens
        in the text ("<eos>") give their id, special ones not if `split_special_tokens` is true."""
        ids: list[int] = []
        for part in self._split_added(replace_lone_surrogates(text), split_special_tokens):
            if isinstance(part, int):
                ids.append(part)
                continue
            for piece in pretokenize(part):
                hit = self._cache.get(piece)
                if hit is None:
                    if len(self._cache) >= _CACHE_MAX:
                        self._cache.clear()
                    hit = self._cache[piece] = self._bpe(piece)
                ids.extend(hit)
        return ids

    def pre_tokenize(self, text: str, *, split_special_tokens: bool = False) -> list[str]:
        """The pieces encode() gives to BPE, in order, an added token as its own piece. They join
        back to `text` (with lone surrogates replaced), e.g. "it's<eos>" -> ["it", "'s", "<eos>"]."""
        return [p for part in self._split_added(replace_lone_surrogates(text), split_special_tokens)
                for p in ([self._tokens[part]] if isinstance(part, int) else pretokenize(part))]

    def _split_added(self, text: str, split_special: bool, normalize=None) -> list[str | int]:
        """Cut added tokens out of text, leftmost-longest: "a<eos>b" -> ["a", 2, "b"]. As in `tokenizers`,
        the non-normalized ones first, then `normalize` runs on each text part (if given), then the
        normalized ones are cut out. Empty text parts are dropped."""
        parts: list[str | int] = [text] if text else []
        for k, pattern in enumerate(self._patterns):
            if k == 1 and normalize is not None:
                parts = [p if isinstance(p, int) else normalize(p) for p in parts]
            if pattern is None:
                continue
            out: list[str | int] = []
            for part in parts:
                if isinstance(part, int):
                    out.append(part)
                    continue
                last = 0
                for m in pattern.finditer(part):
                    tid = self._added[m.group()]
                    if split_special and tid in self._special:
                        continue  # stays text, as with tokenizers' encode_special_tokens
                    out += [part[last:m.start()], tid]
                    last = m.end()
                out.append(part[last:])
            parts = [p for p in out if p != ""]
        return parts

    def _bpe(self, piece: str) -> tuple[int, ...]:
        """BPE ids of one pre-tokenized piece: its UTF-8 bytes, merged. With ignore_merges, a piece
        that is a whole vocab entry is taken as is (as tokenizers does)."""
        data = piece.encode("utf-8")
        whole = self._vocab.get("".join(BYTE_TO_CHAR[b] for b in data)) if self._ignore_merges else None
        if whole is not None:
            return (whole,)
        return tuple(bpe_merge([self._byte_ids[b] for b in data], self._merges))

    def decode(self, ids, *, skip_special_tokens: bool = True) -> str:
        """Text of `ids` (== tokenizers' decode(ids)): invalid UTF-8 becomes U+FFFD."""
        return self.decode_bytes(ids, skip_special_tokens=skip_special_tokens).decode("utf-8", "replace")

    def decode_bytes(self, ids, *, skip_special_tokens: bool = True) -> bytes:
        """The bytes of `ids` joined; for streaming, where a character may still be incomplete."""
        return b"".join(self.token_bytes(i) for i in ids if not (skip_special_tokens and i in self._special))

    def continuation_decoder(self, prompt_ids):
        """A `decode_bytes` for tokens generated after `prompt_ids` (pocketlm.generate's argument): the
        bytes they add to the text. Byte-level: decode_bytes itself; SpmTokenizer: it also drops the
        leading space the Strip decoder drops when nothing precedes it (a text starting after <s>)."""
        return self.decode_bytes

    def _lookup(self, table: list, token_id: int):
        value = table[token_id] if 0 <= token_id < self.vocab_size else None
        if value is None:
            raise TokenizerError(f"unknown token id {token_id} (vocab_size is {self.vocab_size})")
        return value

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of a token (maybe part of a UTF-8 character); b"<eos>" for <eos>."""
        return self._lookup(self._bytes, token_id)

    def id_to_token(self, token_id: int) -> str:
        """Vocabulary entry of an id, in its byte-level spelling (" the" is "Ġthe")."""
        return self._lookup(self._tokens, token_id)

    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary entry in its byte-level spelling ("Ġthe", "<eos>"), or None."""
        tid = self._added.get(token)
        return self._vocab.get(token) if tid is None else tid

    def is_special(self, token_id: int) -> bool:
        """True for special tokens (<pad>, <bos>, <eos>): decode skips them by default."""
        return token_id in self._special
