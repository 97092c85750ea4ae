"""Schema-constrained JSON decoding (standard library only): the output always parses and validates.

The schema subset and the canonical output format are pocketlm.json_schema's (compile_schema,
parse_output); this module masks, token by token, everything that would leave them.

Copy constraint: with `copy_source`, each copied string value, JSON-decoded, must be a non-empty
substring of the source (as UTF-8 bytes); null says "nothing to copy". A copied string that cannot
be null may be "" only when nothing can be copied or the token budget leaves no room for a character.
With `disjoint`, copied values also take disjoint places in the source, as slot annotations do (no
two values of one request overlap): a value may not overlap every occurrence of an earlier one.
"""

from __future__ import annotations

import itertools
import json
import math
import weakref
from typing import NamedTuple

from .constraints import TokenBytesIndex
from .json_schema import ObjectSchema, SchemaError, _need, compile_schema  # noqa: F401 (compile_schema: doctest)


def _dumps(value) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


# A copied value closes only if the model puts at least this share of its probability on closing
# (JsonConstraint.narrow). Chosen on the 484 TOPv2 rows of reminder-extract's own held-out training split
# (exact_both 0.50: 0.746, 0.60: 0.765, 0.65: 0.758, 0.75: 0.756), not on dev.jsonl (there 0.753 -> 0.758).
CLOSE_SHARE = 0.6

# ---- a string body as a byte automaton ----
# States between or inside characters. A UTF-8 state says how many continuation bytes are due and,
# for the first, the narrower range that rules out overlong forms, surrogates and > U+10FFFF.
BND, C1, C2, C2_E0, C2_ED, C3, C3_F0, C3_F4, ESC, U1, U2, U3, U4_0, U4_1 = range(14)
EXIT = -2  # the closing quote
# Bytes still due to reach a character boundary: an upper bound (after "\" it may be "u001f").
PENDING = (0, 1, 2, 2, 2, 3, 3, 3, 5, 4, 3, 2, 1, 1)
STEP = [[-1] * 256 for _ in range(14)]  # STEP[state][byte] -> next state, EXIT, or -1 (not allowed)
for _state, _bytes, _next in (
        (BND, range(0x20, 0x80), BND), (BND, b'"', EXIT), (BND, b"\\", ESC), (BND, range(0xC2, 0xE0), C1),
        (BND, range(0xE1, 0xF0), C2), (BND, b"\xe0", C2_E0), (BND, b"\xed", C2_ED), (BND, b"\xf1\xf2\xf3", C3),
        (BND, b"\xf0", C3_F0), (BND, b"\xf4", C3_F4), (C1, range(0x80, 0xC0), BND), (C2, range(0x80, 0xC0), C1),
        (C2_E0, range(0xA0, 0xC0), C1), (C2_ED, range(0x80, 0xA0), C1), (C3, range(0x80, 0xC0), C2),
        (C3_F0, range(0x90, 0xC0), C2), (C3_F4, range(0x80, 0x90), C2),
        # json.dumps's escapes only: \" \\ \b \f \n \r \t, other controls as \u00XX in lower-case hex
        (ESC, b'"\\bfnrt', BND), (ESC, b"u", U1), (U1, b"0", U2), (U2, b"0", U3), (U3, b"0", U4_0), (U3, b"1", U4_1),
        (U4_0, b"01234567bef", BND), (U4_1, b"0123456789abcdef", BND)):
    for _b in _bytes:
        STEP[_state][_b] = _next  # later entries win: '"' and "\\" over the ASCII range, ED over E1-EF


class _VocabTables:
    """Per-tokenizer precomputation, shared (JsonConstraint.prepare): a byte trie over the vocabulary,
    walked in lockstep with the grammar outside strings; for each string state q, the tokens that stay
    inside a string body (end state, characters started), also as sorted lists by the bytes they leave
    due, so a free string's mask is one list copy; and the few that close the string from q."""

    def __init__(self, index: TokenBytesIndex):
        ids = index.starting_with(b"")  # every token that spells bytes (special tokens spell none)
        self.token_bytes = {i: index.token_bytes(i) for i in ids}
        self.max_len = max(map(len, self.token_bytes.values()), default=0)
        self.children: list[dict[int, int]] = [{}]
        self.ids_at: list[list[int]] = [[]]
        for i in ids:
            node = 0
            for b in self.token_bytes[i]:
                node = self.children[node].setdefault(b, len(self.children))
                if node == len(self.children):
                    self.children.append({})
                    self.ids_at.append([])
            self.ids_at[node].append(i)
        self.inside: list[dict[int, tuple[int, int]]] = [{} for _ in STEP]  # q -> id -> (end state, chars)
        self.exits: list[list[int]] = [[] for _ in STEP]
        for i, data in self.token_bytes.items():
            for q0 in range(len(STEP)):
                q, n = q0, 0
                for b in data:
                    if STEP[q][b] < 0:
                        if STEP[q][b] == EXIT:
                            self.exits[q0].append(i)
                        break
                    n, q = n + (q == BND), STEP[q][b]
                else:
                    self.inside[q0][i] = (q, n)
        self.exit_sets = [frozenset(e) for e in self.exits]
        self.longest = [max((n for _, n in inside.values()), default=0) for inside in self.inside]
        self.by_pending = [[sorted(i for i, (q2, _) in inside.items() if PENDING[q2] <= p) for p in range(6)]
                           for inside in self.inside]  # q -> most bytes due after the token -> ids
        self.by_room = [[sorted(i for i, (_, n) in inside.items() if n <= r) for r in range(longest)]
                        for inside, longest in zip(self.inside, self.longest)]  # q -> most characters -> ids


class _Str(NamedTuple):  # a string body node of the grammar
    after: int  # the node after its closing quote
    max_len: float  # maxLength, or inf
    copied: bool
    nullable: bool
    min_unit: float  # copied: budget cost (bytes, an escape 6) of the cheapest character to copy; inf if none


class JsonConstraint:
    """Decode one JSON object of `schema` within `max_tokens` tokens (counting `eos_id`).

    The output is the bytes `prefix` (normally b""), the canonical object (see the module docs),
    then eos. The budget counts one token per byte still to write, an upper bound when every byte
    is a token (byte-level BPE): pass the same number as max_new_tokens and every generation ends
    in a valid object. `copy_properties` defaults to every string property when `copy_source` is set.

    >>> vocab = [b""] + [bytes([b]) for b in range(256)] + [b'{"', b"time", b'": "', b"at 7pm", b'"}']
    >>> index = TokenBytesIndex(vocab)
    >>> schema = compile_schema({"type": "object", "properties": {"time": {"type": ["string", "null"]}}})
    >>> c = JsonConstraint(index, schema, eos_id=0, max_tokens=20, copy_source="remind me at 7pm")
    >>> [vocab[t] for t in c.allowed()]
    [b'{', b'{"']
    >>> for piece in [b'{"', b"time", b'": "']: c.advance(vocab.index(piece))
    >>> b"|".join(vocab[t] for t in c.allowed()), c.tokens_left   # the source's characters, or more of it
    (b' |7|a|d|e|i|m|n|p|r|t|at 7pm', 17)
    >>> c.advance(vocab.index(b"at 7pm")); c.advance(vocab.index(b'"}')); c.allowed()
    [0]
    """

    def __init__(self, index: TokenBytesIndex, schema: ObjectSchema, *, eos_id: int, max_tokens: int,
                 copy_source: str | None = None, copy_properties: set[str] | None = None, prefix: bytes = b"",
                 whole_words: bool = False, disjoint: bool = False):
        if not isinstance(schema, ObjectSchema):
            raise TypeError(f"schema must come from compile_schema(...), got {type(schema).__name__}")
        if index.token_bytes(eos_id) != b"":
            raise ValueError(f"eos_id {eos_id} is not a special token of this index (it spells bytes)")
        self.vocab = self.prepare(index)
        strings = {p.name for p in schema.properties if p.kind == "string"}
        _need(copy_properties is None or set(copy_properties) <= strings,
              f"copy_properties {sorted(set(copy_properties or ()) - strings)} are not string properties "
              f"of the schema; its string properties are {sorted(strings)}")
        copied = set() if copy_source is None else set(strings if copy_properties is None else copy_properties)
        # The source as spelled inside a JSON string, and where each character starts: a copy is a
        # run of whole characters, so its spelling starts at one of those positions. Lone surrogates
        # (a JS string may hold them) become U+FFFD, as the browser's TextEncoder does.
        spelled = {ch: _dumps("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch)[1:-1] for ch in set(copy_source or "")}
        units = [spelled[ch] for ch in copy_source or ""]
        self._source = b"".join(units)
        self._starts = list(itertools.accumulate(map(len, units), initial=0))[:-1]
        self._disjoint = disjoint
        self._taken: list[list[tuple[int, int]]] = []  # disjoint: each closed copied value's [start, end) places
        self._init_copy_bounds(copy_source or "", units, whole_words)
        self._build(schema, copied, bytes(prefix))
        self.min_tokens = need = self._est[self._start]  # the shortest output, one token per byte, plus eos
        _need(max_tokens >= need, f"max_tokens={max_tokens} is too small: the shortest valid output takes {need} "
                                  "tokens (one per byte, plus eos); raise max_tokens to at least that")
        self.eos_id, self.tokens_left = eos_id, max_tokens
        self._state = (self._start, BND, 0, b"")  # (grammar node, string state, characters, copied body)

    def _init_copy_bounds(self, text: str, units: list[bytes], whole_words: bool) -> None:
        """Where a copied value may start and end, as byte offsets into the spelled source.

        whole_words: a value starts and ends at word boundaries and not on whitespace, as slot values
        do ("bring Dad to doctors", never "bring Dad to do"); else any run of whole characters.
        `_to_end[p]`: bytes from offset p to the nearest offset where a value may end (inf if none).
        """
        def word(ch: str) -> bool:
            return ch.isalnum() or ch == "_"

        n, offsets = len(text), self._starts + [len(self._source)]
        starts = [i for i in range(n) if not whole_words or (
            not text[i].isspace() and (i == 0 or not (word(text[i - 1]) and word(text[i]))))]
        ends = [i + 1 for i in range(n) if not whole_words or (
            not text[i].isspace() and (i + 1 == n or not (word(text[i]) and word(text[i + 1]))))]
        self._value_starts = [offsets[i] for i in starts]
        self._value_starts_set = set(self._value_starts)
        self._value_ends = {offsets[i] for i in ends}
        self._to_end = [math.inf] * (len(self._source) + 1)
        for p in range(len(self._source), -1, -1):
            self._to_end[p] = 0 if p in self._value_ends else (1 + self._to_end[p + 1] if p < len(self._source) else math.inf)
        # the cheapest non-empty value: budget cost in bytes (an escape counts 6, as PENDING does)
        self._min_unit = min((self._start_cost(s) for s in self._value_starts), default=math.inf)

    def _start_cost(self, start: int) -> float:
        """Budget cost in bytes of the shortest value from `start` (an escape counts 6, as PENDING does)."""
        return max(self._reach(start, start + 1) + 1, 6 if self._source[start] == 0x5C else 0)

    def _reach(self, start: int, p: int) -> float:
        """Bytes from offset p to the nearest place a value that starts at `start` may end (inf if none):
        with disjoint values, before the place of an earlier value (overlap only grows with the end)."""
        d = self._to_end[p]
        return d if d == math.inf or not self._taken or self._free(start, p + d) else math.inf

    def _free(self, start: int, end: int) -> bool:
        """disjoint: [start, end) of the source misses some place of every value copied before."""
        return all(any(b <= start or a >= end for a, b in places) for places in self._taken)

    def _copy_places(self, body: bytes) -> list[tuple[int, int]]:
        """(start, end) of each occurrence of body that starts where a value may start (and is free)."""
        n = len(body)
        return [(i, i + n) for i in self._value_starts if self._source.startswith(body, i) and self._free(i, i + n)]

    def _copy_positions(self, body: bytes) -> list[int]:
        """Offsets just after each occurrence of body that starts where a value may start (and is free)."""
        return [end for _, end in self._copy_places(body)]

    def _unit(self, s: _Str) -> float:
        """s.min_unit, or with disjoint values (once one is copied) the cheapest over the starts still free."""
        if not self._taken or s.min_unit == math.inf:
            return s.min_unit
        return min((self._start_cost(i) for i in self._value_starts if self._free(i, i + 1)), default=math.inf)

    _tables: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # index -> its _VocabTables

    @classmethod
    def prepare(cls, index: TokenBytesIndex) -> _VocabTables:
        """The per-tokenizer tables, built once per index and shared (call it at model load)."""
        if index not in cls._tables:
            cls._tables[index] = _VocabTables(index)
        return cls._tables[index]

    def _build(self, schema: ObjectSchema, copied: set[str], prefix: bytes) -> None:
        """The grammar outside string bodies as a byte automaton: one trie per gap between values
        spells every way on (`, "key": ` and a literal value or a string's opening quote, or `}`);
        a literal's last byte leads to the next gap, a string body node or the end.
        `_est[node]`: bytes of the shortest way to finish from node, plus one for eos."""
        self._edges: list[dict[int, int]] = []
        self._est: list[float] = []
        self._str: list[_Str | None] = []

        def node(string=None) -> int:
            self._edges.append({})
            self._est.append(None)
            self._str.append(string)
            return len(self._edges) - 1

        def trie(alternatives: list[tuple[bytes, int]]) -> int:
            root = node()
            for literal, target in alternatives:  # prefix-free: JSON spellings of distinct things
                cur = root
                for b in literal[:-1]:
                    nxt = self._edges[cur].get(b)
                    cur = nxt if nxt is not None else self._edges[cur].setdefault(b, node())
                self._edges[cur][literal[-1]] = target
            for n in range(len(self._est) - 1, root - 1, -1):  # a node's children are newer, or targets
                self._est[n] = min(1 + self._est[c] for c in self._edges[n].values())
            return root

        props = schema.properties
        self._done = node()
        self._est[self._done] = 1
        gaps, values = [0] * (len(props) + 1), [[] for _ in props]
        for i in range(len(props), -1, -1):  # gap i: the next property written is i or a later one
            if i < len(props):  # a value: literals that lead to the next gap, or a string body
                p, after = props[i], gaps[i + 1]
                values[i] = [(b"null", after)] if p.kind == "null" or p.nullable else []
                values[i] += [(_dumps(m), after) for m in p.members]
                if p.kind == "string":
                    max_len = math.inf if p.max_length is None else p.max_length
                    min_unit = self._min_unit if p.name in copied and max_len > 0 else math.inf
                    body = node(_Str(after, max_len, p.name in copied, p.nullable, min_unit))
                    self._est[body] = self._est_state((body, BND, 0, b""))
                    values[i].append((b'"', body))
            alternatives = []
            for j in range(i, len(props)):
                key = (b", " if i else b"") + _dumps(props[j].name) + b": "
                alternatives += [(key + literal, target) for literal, target in values[j]]
                if props[j].required:
                    break
            else:
                alternatives.append((b"}", self._done))
            gaps[i] = trie(alternatives)
        self._start = trie([(prefix + b"{", gaps[0])])

    def _est_state(self, state) -> float:
        """Tokens to finish from state, one per byte plus eos (in a string: bytes due, quote, rest)."""
        node, q, chars, _ = state
        s = self._str[node]
        if s is None:
            return self._est[node]
        if q == BND and chars == 0 and s.copied and s.nullable:
            return self._unit(s) + 1 + self._est[s.after]  # "" is not allowed: copy a character first
        if s.copied and chars:  # go on to the nearest place where the value may end
            to_end = min((self._reach(a, p) for a, p in self._copy_places(state[3])), default=math.inf)
            return max(PENDING[q], to_end) + 1 + self._est[s.after]
        return PENDING[q] + 1 + self._est[s.after]

    def _step(self, state, b: int):
        """The state after one more byte, or None if no valid output goes on so."""
        node, q, chars, body = state
        s = self._str[node]
        if s is None:
            nxt = self._edges[node].get(b)
            return None if nxt is None else (nxt, BND, 0, b"")
        nq = STEP[q][b]
        if nq == EXIT:
            # An empty copied string: never if null can say it; else only when no character fits.
            empty_ok = not s.copied or (not s.nullable and self.tokens_left < self._unit(s) + 1 + self._est[s.after])
            if chars and s.copied and not any(p in self._value_ends for p in self._copy_positions(body)):
                return None  # the value would end inside a word (whole_words) or nowhere it may
            return (s.after, BND, 0, b"") if chars or empty_ok else None
        if nq < 0 or (q == BND and chars + 1 > s.max_len):
            return None
        if s.copied:  # the body must occur in the source, starting where a value may start
            body += bytes((b,))
            i = self._source.find(body)
            while i >= 0 and (i not in self._value_starts_set or not self._free(i, i + len(body))):
                i = self._source.find(body, i + 1)
            if i < 0:
                return None
        return (node, nq, chars + (q == BND), body)

    def _walk(self, state, data: bytes):
        for b in data:
            state = self._step(state, b)
            if state is None:
                return None
        return state

    def allowed(self) -> list[int]:
        """Sorted ids of the tokens that keep the output a prefix of a valid output within budget."""
        state = self._state
        if state[0] == self._done:
            return [self.eos_id]
        s = self._str[state[0]]
        return sorted(self._structural(state) if s is None else self._in_string(state, s))

    def _structural(self, state) -> list[int]:
        # Walk the vocabulary trie in lockstep with the grammar, following only the bytes the grammar
        # allows; once a token has opened a string, every byte that goes on is followed.
        left, children, ids_at, out = self.tokens_left - 1, self.vocab.children, self.vocab.ids_at, []
        stack = [(0, state)]
        while stack:
            trie, st = stack.pop()
            kids = children[trie]
            pairs = kids.items() if self._str[st[0]] else [(b, kids[b]) for b in self._edges[st[0]] if b in kids]
            for b, child in pairs:
                st2 = self._step(st, b)
                if st2 is not None:
                    if ids_at[child] and left >= self._est_state(st2):
                        out.extend(ids_at[child])
                    if children[child]:
                        stack.append((child, st2))
        return out

    def _in_string(self, state, s: _Str) -> list[int]:
        node, q, chars, body = state
        left, room, vocab = self.tokens_left - 1, s.max_len - chars, self.vocab
        rest = 1 + self._est[s.after]  # the closing quote, what follows it, eos
        if not s.copied:  # tokens that stay inside, by the budget left (bytes due after them) and maxLength
            p = min(left - rest, 5)
            ids = vocab.by_pending[q][p] if p >= 0 else []
            if vocab.longest[q] > room:  # maxLength is near
                ids = vocab.by_room[q][room] if p == 5 else [t for t in ids if vocab.inside[q][t][1] <= room]
            out = list(ids)
        else:  # tokens that spell the source's next bytes where the body so far occurs in it
            found, inside = set(), vocab.inside[q]
            for start, pos in set(self._copy_places(body)):
                trie = 0
                for k, b in enumerate(self._source[pos:pos + vocab.max_len], 1):
                    trie = vocab.children[trie].get(b)
                    if trie is None or (self._taken and not self._free(start, pos + k)):
                        break
                    for t in vocab.ids_at[trie]:
                        hit = inside.get(t)
                        if hit and hit[1] <= room and left >= max(PENDING[hit[0]], self._reach(start, pos + k)) + rest:
                            found.add(t)
            out = list(found)
        for t in vocab.exits[q]:  # tokens that close the string: walk them through the grammar
            st2 = self._walk(state, vocab.token_bytes[t])
            if st2 is not None and left >= self._est_state(st2):
                out.append(t)
        return out

    def narrow(self, logits, allowed: list[int]) -> list[int]:
        """Inside a copied string, when the best allowed token closes the value: unless the model puts at
        least CLOSE_SHARE of its probability on closing (every closing-quote token and eos) rather than
        on going on (every other token, allowed or not), drop the closing tokens.

        Why: the copy constraint removes every continuation the source does not have. A small model
        that spreads its "go on" mass over misspellings of the next word can leave the one correct
        continuation below the closing quote although it says, in total, that the value goes on; greedy
        decoding then closes the value early. Voting with the whole mass keeps the model's decision
        about where the value ends (dev exact_both, first 400 TOPv2 rows: 0.415 -> 0.505; README).
        Only a close is second-guessed: voting on every step gave the same outputs and costs a full
        scan of the logits per token; this scans only where greedy would close.
        Elsewhere `allowed` is returned unchanged.
        """
        state = self._state
        s = self._str[state[0]] if state[0] != self._done else None
        if s is None or not s.copied:
            return allowed
        exits = self.vocab.exit_sets[state[1]]
        best = max(allowed, key=logits.__getitem__)
        if best not in exits:  # the model's first choice goes on: nothing to correct (and no full scan)
            return allowed
        goes_on = [t for t in allowed if t not in exits]
        if not goes_on:
            return allowed
        top = max(logits)
        total = sum([math.exp(v - top) for v in logits])  # (map() over builtins: 2x slower in Pyodide)
        closing = sum(math.exp(logits[t] - top) for t in exits) + math.exp(logits[self.eos_id] - top)
        return allowed if closing >= CLOSE_SHARE * total else goes_on

    def advance(self, token_id: int) -> None:
        """Take the sampled token; one that allowed() would not have returned raises ValueError."""
        state, data = self._state, self.vocab.token_bytes.get(token_id)
        if token_id == self.eos_id and state[0] == self._done:
            self.tokens_left -= 1
            return
        new = None if data is None else self._walk(state, data)
        closed = self._closed_places(state, data) if new is not None and self._disjoint else None
        if closed is not None:
            self._taken.append(closed)
        if new is None or self.tokens_left - 1 < self._est_state(new):
            if closed is not None:
                self._taken.pop()
            raise ValueError(f"token {token_id} ({'eos' if token_id == self.eos_id else data!r}) is not allowed "
                             f"here: it breaks the JSON output or its budget ({self.tokens_left} tokens left)")
        self._state = new
        self.tokens_left -= 1

    def _closed_places(self, state, data: bytes) -> list[tuple[int, int]] | None:
        """If `data` closes a copied value: the [start, end) places in the source it may have been copied from."""
        for b in data:
            s = self._str[state[0]]
            if s is not None and s.copied and STEP[state[1]][b] == EXIT:
                return self._copy_places(state[3]) if state[3] else None
            state = self._step(state, b)
        return None
