"""The Llama / SentencePiece BPE family in pure Python (CPython and Pyodide), as `tokenizers` runs it.

These are the tokenizer.json files of llama2.c's vocabulary (export/llama2c_tokenizer.py writes them)
and of Llama-style models: spaces are spelled "▁" (U+2581), a character missing from the vocabulary is
encoded as its UTF-8 bytes, the pieces "<0x00>".."<0xFF>" ("byte fallback"). For such files ids and
text are byte-identical to `tokenizers` 0.22.1 `encode(text, add_special_tokens=False).ids` and
`decode(ids)`. What is accepted (anything else raises TokenizerError saying what):

- pre_tokenizer Metaspace (any one-character replacement, prepend_scheme first/always/never, split
  true/false) with normalizer null; or the older Llama form: pre_tokenizer null and a normalizer that
  is Prepend("▁") and Replace(" " -> "▁") (a Sequence of Prepend / Replace-string steps);
- model BPE with byte_fallback, unk_token, fuse_unk, ignore_merges as the file says (no dropout);
- decoder Sequence[Replace(string -> " "), ByteFallback, Fuse, Strip(" ", start=k, stop=0)] (Strip optional);
- post_processor null or TemplateProcessing (it only acts when special tokens are added, which
  pocketlm never asks for: prompt formats put <bos> in themselves).

Encoding, as in `tokenizers`:
1. lone surrogates become U+FFFD (pocketlm.tokenizer.replace_lone_surrogates);
2. added tokens are cut out ("<s>" in the text IS id 1, unless split_special_tokens=True);
3. each remaining run of text: " " -> "▁", and a "▁" is put in front if it does not start with one,
   with prepend_scheme "first" ONLY for the run at the very start of the text: "<s>hi" gives "<s>",
   "hi" and "hi<s>hi" gives "▁hi", "<s>", "hi". (The older form's Prepend normalizer prefixes every
   run.) With split=false the whole run is one BPE word: merges may cross spaces;
4. each character is its vocab piece, else its byte pieces, else <unk> (consecutive unknown characters
   make one <unk> with fuse_unk; a character with no vocab piece and no unk_token is dropped); then
   the ranked merges are applied, lowest rank first, leftmost on ties (pocketlm.tokenizer.bpe_merge,
   a heap over linked symbols: O(n log n); measured, a 100 000-character run with llama2.c's 32 000-piece
   vocabulary encodes in 0.22 s on CPython 3.11 and 0.75 s on Pyodide under Node).
Decoding: tokens -> "▁" replaced by " " -> runs of byte pieces become their UTF-8 text, or one U+FFFD
PER BYTE of the run if it is not valid UTF-8 (tokenizers' rule, not Python's) -> joined -> one leading
space dropped (the "▁" step 3 put in front). Unknown ids raise TokenizerError.

Streaming (pocketlm.generate joins `decode_bytes([token])` chunks): a token's bytes keep their leading
space ("▁time" is b" time"), because a continuation follows text and only the first piece of a whole
text has the prepended "▁". The one exception, as llama2.c's "strip a leading space right after <s>":
text generated where nothing precedes it (prompt = just <s>) loses that space; `continuation_decoder(
prompt_ids)` returns the decode_bytes that does this, so decode(prompt + generated) == decode(prompt)
+ the streamed text (up to the number of U+FFFD for invalid UTF-8). `token_bytes` is what the
constraints' byte tries need: " " for "▁", the byte for "<0xXX>", b"<s>" for <s>.
"""

from __future__ import annotations

import re

from .tokenizer import _CACHE_MAX, Tokenizer, TokenizerError, _kind, _need, bpe_merge, replace_lone_surrogates

SPACE = "\u2581"  # "▁", SentencePiece's space
_BYTE_PIECE = re.compile(rb"<0x([0-9A-Fa-f]{2}|\+[0-9A-Fa-f])>")  # Rust's u8::from_str_radix accepts a "+"
_CACHE_PIECE = 256  # runs shorter than this are cached (their ids); a long text is not


def llama_tokenizer_json(vocab: dict[str, int], merges: list) -> dict:
    """The tokenizer.json document of llama2.c's family (the format export/llama2c_tokenizer.py writes):
    <unk>, <s>, </s> as special added tokens with ids 0, 1, 2 (they must be in `vocab`)."""
    added = [{"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for t in ("<unk>", "<s>", "</s>")]
    decoder = [{"type": "Replace", "pattern": {"String": SPACE}, "content": " "}, {"type": "ByteFallback"},
               {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]
    model = {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
             "vocab": dict(vocab), "merges": [list(m) for m in merges]}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
            "pre_tokenizer": {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "first", "split": False},
            "post_processor": None, "decoder": {"type": "Sequence", "decoders": decoder}, "model": model}


def piece_byte(token: str) -> int | None:
    """The byte a byte piece stands for, as the ByteFallback decoder reads it; None for other tokens.

    >>> piece_byte("<0x0A>"), piece_byte("<0xe4>"), piece_byte("▁a"), piece_byte("<0x+A>"), piece_byte("<0x-1>")
    (10, 228, None, 10, None)
    """
    m = _BYTE_PIECE.fullmatch(token.encode("utf-8")) if len(token) <= 6 else None
    return int(m.group(1), 16) if m else None


def byte_fallback(tokens: list[str]) -> list[str]:
    """`tokenizers`' ByteFallback decoder: each run of byte pieces becomes its UTF-8 text, or, if the run
    is not valid UTF-8, one U+FFFD per byte of the WHOLE run (Python's "replace" would keep the valid
    characters of the run):

    >>> byte_fallback(["<0xE4>", "<0xB8>", "<0xAD>", "a", "<0xE4>", "<0xB8>", "<0xAD>", "<0xE4>"])
    ['中', 'a', '�', '�', '�', '�']
    """
    out: list[str] = []
    run = bytearray()
    for token in [*tokens, None]:
        b = None if token is None else piece_byte(token)
        if b is not None:
            run.append(b)
            continue
        if run:
            try:
                out.append(run.decode("utf-8"))
            except UnicodeDecodeError:
                out += ["\ufffd"] * len(run)
            run.clear()
        if token is not None:
            out.append(token)
    return out


def _normalizer_steps(norm) -> list[tuple[str, str, str]]:
    """The older Llama normalizer as ("prepend", text, "") / ("replace", old, new) steps."""
    _need(norm is not None, "pre_tokenizer null and normalizer null (the older Llama form has a Prepend/Replace "
                            "normalizer; the newer a Metaspace pre_tokenizer)")
    steps = norm.get("normalizers") if _kind(norm) == "Sequence" else [norm]
    _need(isinstance(steps, list) and steps, f"normalizer {_kind(norm)} (only Prepend / Replace or a Sequence of them)")
    out = []
    for step in steps:
        kind = _kind(step)
        if kind == "Prepend":
            _need(isinstance(step.get("prepend"), str), "Prepend normalizer without a string")
            out.append(("prepend", step["prepend"], ""))
        else:
            pattern = step.get("pattern") if kind == "Replace" else None
            _need(isinstance(pattern, dict) and isinstance(pattern.get("String"), str) and pattern["String"],
                  f"normalizer step {kind} (only Prepend, or Replace with a string pattern)")
            _need(isinstance(step.get("content"), str), "Replace normalizer without a string content")
            out.append(("replace", pattern["String"], step["content"]))
    return out


class SpmTokenizer(Tokenizer):
    """A Llama / SentencePiece BPE tokenizer.json (see the module doc); same interface as Tokenizer,
    which builds this class itself for such files. A vocabulary with "▁", "a", "b" and their merges:

    >>> vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    >>> vocab.update({p: 259 + i for i, p in enumerate(["▁", "a", "b", "▁a", "ab", "▁ab"])})
    >>> tok = Tokenizer(llama_tokenizer_json(vocab, [["▁", "a"], ["a", "b"], ["▁", "ab"], ["▁a", "b"]]))
    >>> type(tok).__name__, tok.encode("ab ab"), tok.encode("<s>ab"), tok.encode("ab<s>ab")
    ('SpmTokenizer', [264, 264], [1, 263], [264, 1, 263])

    "é" is not a piece: its two UTF-8 bytes are; a lone byte decodes to U+FFFD:

    >>> tok.encode("é"), tok.decode([259, 198, 172]), tok.decode([198]), tok.token_bytes(198)
    ([259, 198, 172], 'é', '�', b'\\xc3')

    decode drops the first leading space; token_bytes / decode_bytes keep it (streaming):

    >>> tok.decode([264, 264]), tok.decode_bytes([264, 264]), tok.decode([1, 264], skip_special_tokens=False)
    ('ab ab', b' ab ab', '<s> ab')
    >>> after_bos, after_text = tok.continuation_decoder([1]), tok.continuation_decoder([1, 263])
    >>> after_bos([264]), after_bos([264]), after_text([264])
    (b'ab', b' ab', b' ab')
    """

    def _load(self, spec: dict) -> None:
        _need(isinstance(spec, dict), "the top level is not a JSON object")
        _need(spec.get("version") == "1.0", f"version {spec.get('version')!r} (expected '1.0')")
        for key, allowed in (("truncation", ["null"]), ("padding", ["null"]),
                             ("post_processor", ["null", "TemplateProcessing"]), ("model", ["BPE"])):
            kind = _kind(spec.get(key))
            _need(kind in allowed, f"{key} {kind} (only {' or '.join(allowed)} is supported)")
        pre, norm = spec.get("pre_tokenizer"), spec.get("normalizer")
        if pre is not None:
            _need(_kind(pre) == "Metaspace", f"pre_tokenizer {_kind(pre)} (only Metaspace, or null with a "
                                             "Prepend/Replace normalizer)")
            _need(norm is None, f"normalizer {_kind(norm)} with a Metaspace pre_tokenizer (only null is supported)")
            space, scheme, split = pre.get("replacement"), pre.get("prepend_scheme", "always"), pre.get("split", True)
            _need(isinstance(space, str) and len(space) == 1, f"Metaspace replacement {space!r} (one character)")
            _need(scheme in ("first", "always", "never"), f"Metaspace prepend_scheme {scheme!r}")
            _need(pre.get("add_prefix_space") is not False or scheme == "never",
                  "Metaspace add_prefix_space=false with a prepend_scheme other than never")
            _need(isinstance(split, bool), f"Metaspace split {split!r}")
            self._metaspace: tuple[str, str, bool] | None = (space, scheme, split)
            self._steps: list[tuple[str, str, str]] = []
        else:
            self._metaspace, self._steps = None, _normalizer_steps(norm)
            space = next((new for kind, old, new in self._steps if kind == "replace" and old == " " and len(new) == 1),
                         SPACE)
        self._word_start = re.compile(f"(?=[ {re.escape(space)}])")
        self._load_decoder(spec.get("decoder"))

        model = spec["model"]
        self._load_bpe(model)
        for key in ("byte_fallback", "fuse_unk"):
            _need(isinstance(model.get(key, False), bool), f"BPE {key} {model.get(key)!r}")
        self._byte_fallback, self._fuse_unk = model.get("byte_fallback", False), model.get("fuse_unk", False)
        self._unk_token = model.get("unk_token")
        _need(self._unk_token is None or isinstance(self._unk_token, str), f"BPE unk_token {self._unk_token!r}")
        self._unk_id = self._vocab.get(self._unk_token)
        self._byte_ids = [self._vocab.get(f"<0x{b:02X}>") for b in range(256)]
        self._load_merges(model)
        self._load_tables(spec.get("added_tokens") or [], self._piece_bytes)
        _need(not (self._steps and self._normalized_added),
              "added tokens with normalized=true next to a normalizer (tokenizers matches them normalized)")

    def _load_decoder(self, dec) -> None:
        """Sequence[Replace(string -> " "), ByteFallback, Fuse, Strip(" ", start=k, stop=0)] (Strip optional)."""
        steps = dec.get("decoders") if _kind(dec) == "Sequence" else None
        kinds = [_kind(s) for s in steps] if isinstance(steps, list) else [_kind(dec)]
        _need(kinds in (["Replace", "ByteFallback", "Fuse", "Strip"], ["Replace", "ByteFallback", "Fuse"]),
              f"decoder {'+'.join(kinds)} (only Sequence Replace+ByteFallback+Fuse+Strip)")
        replace = steps[0]
        pattern = replace.get("pattern") or {}
        _need(isinstance(pattern.get("String"), str) and pattern["String"] and replace.get("content") == " ",
              "Replace decoder other than a string -> \" \"")
        self._replace = (pattern["String"], " ")
        self._strip = 0
        if len(steps) == 4:
            strip = steps[3]
            _need(strip.get("content") == " " and strip.get("stop") == 0 and isinstance(strip.get("start"), int)
                  and strip["start"] >= 0, "Strip decoder other than content \" \", stop 0")
            self._strip = strip["start"]

    def _piece_bytes(self, token: str) -> bytes:
        """A token's bytes, as the decoder treats it alone: "▁ab" -> b" ab", "<0xC3>" -> b"\\xc3"."""
        token = token.replace(*self._replace)
        b = piece_byte(token) if token.startswith("<0x") else None  # (32 000 tokens at load: skip the regex)
        return token.encode("utf-8") if b is None else bytes([b])

    def encode(self, text: str, *, split_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`, without bos/eos (== tokenizers' encode(text, False).ids)."""
        ids: list[int] = []
        for piece in self._bpe_input(text, split_special_tokens):
            if isinstance(piece, int):
                ids.append(piece)
            else:
                ids.extend(self._bpe(piece))
        return ids

    def _bpe_input(self, text: str, split_special: bool) -> list[str | int]:
        """Added-token ids and the words BPE sees, spelled with "▁" (module doc, steps 1-3)."""
        normalize = self._normalize if self._steps else None
        parts = self._split_added(replace_lone_surrogates(text), split_special, normalize)
        if self._metaspace is None:
            return parts
        space, scheme, split = self._metaspace
        out: list[str | int] = []
        for k, part in enumerate(parts):
            if isinstance(part, int):
                out.append(part)
                continue
            part = part.replace(" ", space)
            # "first": only the run that starts the text (tokenizers: its original offset is 0)
            if (scheme == "always" or scheme == "first" and k == 0) and not part.startswith(space):
                part = space + part
            if split:
                out.extend(self._words(part))
            else:
                out.append(part)
        return out

    def _words(self, run: str) -> list[str]:
        """Metaspace split=true: a new word starts at each "▁" ("a▁▁b" -> "a", "▁", "▁b")."""
        return [w for w in self._word_start.split(run) if w]

    def _normalize(self, run: str) -> str:
        """The older form's normalizer on one run of text (between added tokens)."""
        for kind, a, b in self._steps:
            if kind == "replace":
                run = run.replace(a, b)
            elif run:  # tokenizers' Prepend leaves an empty string empty
                run = a + run
        return run

    def pre_tokenize(self, text: str, *, split_special_tokens: bool = False) -> list[str]:
        """The text cut where a word starts (before each space or "▁") and around added tokens, in the
        text's own spelling, so the pieces join back to it (with lone surrogates replaced):
        "SELECT na<s>" -> ["SELECT", " na", "<s>"]. With split=true these are BPE's words; with
        split=false BPE sees each whole run, and these serve as word boundaries (token healing)."""
        parts = self._split_added(replace_lone_surrogates(text), split_special_tokens)
        return [p for part in parts for p in ([self._tokens[part]] if isinstance(part, int) else self._words(part))]

    def _bpe(self, word: str) -> tuple[int, ...]:
        """Ids of one word: pieces, byte pieces or <unk> per character, then merged (module doc, step 4)."""
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        vocab = self._vocab
        if self._ignore_merges and word in vocab:
            ids: tuple[int, ...] = (vocab[word],)
        else:
            syms: list[int] = []
            unk = None  # a pending <unk>: fused with the next unknown character, if fuse_unk
            for ch in word:
                tid = vocab.get(ch)
                if tid is not None:
                    if unk is not None:
                        syms.append(unk)
                        unk = None
                    syms.append(tid)
                    continue
                if self._byte_fallback:
                    pieces = [self._byte_ids[b] for b in ch.encode("utf-8")]
                    if None not in pieces:
                        syms.extend(pieces)  # a pending <unk> stays pending, after these: as tokenizers does
                        continue
                if self._unk_token is None:
                    continue  # tokenizers drops the character
                if self._unk_id is None:
                    raise TokenizerError(f"cannot encode {ch!r}: unk_token {self._unk_token!r} is not in the vocab")
                if unk is not None and not self._fuse_unk:
                    syms.append(unk)
                unk = self._unk_id
            if unk is not None:
                syms.append(unk)
            ids = tuple(bpe_merge(syms, self._merges))
        if len(word) < _CACHE_PIECE:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[word] = ids
        return ids

    def decode(self, ids, *, skip_special_tokens: bool = True) -> str:
        """Text of `ids` (== tokenizers' decode(ids)): Replace, ByteFallback, Fuse, Strip (module doc)."""
        tokens = [self._lookup(self._tokens, i).replace(*self._replace)
                  for i in ids if not (skip_special_tokens and i in self._special)]
        text = "".join(byte_fallback(tokens))
        k = 0
        while k < min(self._strip, len(text)) and text[k] == " ":
            k += 1
        return text[k:]

    def continuation_decoder(self, prompt_ids):
        """decode_bytes for tokens generated after `prompt_ids`: when the prompt decodes to nothing
        (just <s>), the leading space(s) the Strip decoder would drop are dropped (module doc)."""
        head = self.decode_bytes(prompt_ids)
        todo = self._strip - len(head) if head == b" " * len(head) else 0
        if todo <= 0:
            return self.decode_bytes
        state = [todo]

        def decode_bytes(ids, *, skip_special_tokens: bool = True) -> bytes:
            data = self.decode_bytes(ids, skip_special_tokens=skip_special_tokens)
            while state[0] > 0 and data[:1] == b" ":
                data, state[0] = data[1:], state[0] - 1
            if data:
                state[0] = 0
            return data

        return decode_bytes
