"""reminder-extract: an everyday request -> a JSON object with the reminder, its time, its recurrence.

Prompt format "reminders-v2": `<bos> request SEPARATOR`. The model first writes the request again,
token for token, with each value it finds between its key's marker tokens (`<time>`, `</time>`: special
tokens of the model's tokenizer), then SEPARATOR again, then the canonical JSON object (keys in the
manifest's prompt["keys"] order, KEYS by default, as `json.dumps` prints them) and `<eos>`:

>>> marked_text("remind me at 7pm to walk the dog", {"reminder": "walk the dog", "time": "at 7pm"})
'remind me<time> at 7pm</time> to<reminder> walk the dog</reminder>'
>>> target_text({"reminder": "walk the dog", "time": "at 7pm"})
'{"reminder": "walk the dog", "time": "at 7pm", "recurrence": null}'

Why the marked copy first: deciding where a value starts and ends while re-reading the request in order
is a local decision about each word, with the whole request already seen; writing the value straight into
the JSON means finding it and then copying it, where a small model drops or adds words (dev TOPv2
exact_both 0.772 with "reminders-v1", the JSON alone; README "reminder-extract"). The JSON then copies
the marked values. Every value is copied from the request or null; decoding is constrained (the marked
copy by pocketlm.echo_constraint, the JSON by pocketlm.json_constraint) so the output always parses.

Context policy: the request is cut to its whole pre-tokens within its first MAX_INPUT_TOKENS tokens (a
request states the reminder up front; what follows a very long paste is less likely to matter); the
marked copy and the JSON have the rest of the context. Marker tokens typed in the request are text.
"""

from __future__ import annotations

import json
import re

from ..tokenizer import replace_lone_surrogates

FORMAT = "reminders-v2"
SEPARATOR = "\n=>"
KEYS = ("reminder", "time", "recurrence")
SCHEMA = {
    "type": "object",
    "properties": {key: {"type": ["string", "null"]} for key in KEYS},
    "required": list(KEYS),
    "additionalProperties": False,
}
# 1 + 64 + 3 prompt tokens, then at most 64 + 6 + 3 for the marked copy and its separator, leaving >= 117
# of a 256-token context for the JSON (whose values are at most the request's 64 tokens plus ~20 of keys)
MAX_INPUT_TOKENS = 64
MAX_OUTPUT_TOKENS = 188


def markers(key: str) -> tuple[str, str]:
    """The special tokens around a value of `key` in the marked copy.

    >>> markers("time")
    ('<time>', '</time>')
    """
    return f"<{key}>", f"</{key}>"


def marker_tokens(keys=KEYS) -> list[str]:
    """Every marker of `keys`, the order the tokenizer's special tokens list them."""
    return [m for key in keys for m in markers(key)]


def target_text(row: dict, keys: tuple[str, ...] | list[str] = KEYS) -> str:
    """The canonical JSON the model is trained to write for a data row (missing keys are null).

    >>> target_text({"reminder": "walk the dog", "time": "at 7pm"}, keys=("time", "recurrence", "reminder"))
    '{"time": "at 7pm", "recurrence": null, "reminder": "walk the dog"}'
    """
    return json.dumps({key: row.get(key) for key in keys}, ensure_ascii=False)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def model_view(text: str) -> str:
    """The request as the model reads it: ASCII letters lower-cased (the same length, so each piece of
    it is the same place of the request; other scripts keep their case).

    >>> model_view("REMIND me at 7PM, Zoë")
    'remind me at 7pm, zoë'
    """
    return text.translate(_ASCII_LOWER)


class Request:
    """The request as the model reads it: the pre-tokens of its model_view (`views`), the same places
    of the request itself (`texts`) and their token `ids`: the whole pre-tokens within its first
    `max_input_tokens` tokens; `dropped` counts the tokens left out.

    >>> class Tok:  # pre-tokens of two characters, a token per character
    ...     def pre_tokenize(self, text, split_special_tokens): return [text[i:i + 2] for i in range(0, len(text), 2)]
    ...     def encode(self, piece, split_special_tokens=False): return list(piece.encode())
    >>> r = Request(Tok(), "AbCde", 4)
    >>> r.texts, r.views, r.ids, r.dropped
    (['Ab', 'Cd'], ['ab', 'cd'], [[97, 98], [99, 100]], 1)
    """

    def __init__(self, tokenizer, text: str, max_input_tokens: int):
        text = replace_lone_surrogates(text)
        self.texts, self.views, self.ids, self.dropped = [], [], [], 0
        used = at = 0
        for piece in tokenizer.pre_tokenize(model_view(text), split_special_tokens=True):
            ids = tokenizer.encode(piece, split_special_tokens=True)
            at += len(piece)
            if used + len(ids) > max_input_tokens or self.dropped:
                self.dropped += len(ids)
                continue
            used += len(ids)
            self.texts.append(text[at - len(piece):at])
            self.views.append(piece)
            self.ids.append(ids)
        self.kept = "".join(self.texts)  # the part of the request the model reads, in the request's case
        self.separator = tokenizer.encode(SEPARATOR)

    def prompt(self, bos_id: int) -> list[int]:
        """The ids of `<bos> request SEPARATOR`."""
        return [bos_id] + [t for ids in self.ids for t in ids] + self.separator


def prompt_ids(tokenizer, text: str, *, bos_id: int, max_input_tokens: int = MAX_INPUT_TOKENS) -> tuple[list[int], int]:
    """(ids of `<bos> request SEPARATOR`, tokens of the request dropped by the context policy)."""
    r = Request(tokenizer, text, max_input_tokens)
    return r.prompt(bos_id), r.dropped


def value_pieces(texts: list[str], row: dict, keys=KEYS) -> dict[str, tuple[int, int]] | None:
    """Where each value of `row` lies among the request's pre-tokens `texts`: {key: (first, last + 1)},
    from the value's first place in the text; None when a value is not in the kept text, starts or ends
    inside a pre-token, or shares one with another value (such a row cannot be written in this format).

    >>> value_pieces(["remind", " me", " at", " 7", "pm"], {"time": "at 7pm", "reminder": None})
    {'time': (2, 5)}
    """
    text = "".join(texts)
    starts = [0]
    for t in texts:
        starts.append(starts[-1] + len(t))
    out, taken = {}, set()
    for key in keys:
        value = row.get(key)
        if not value:
            continue
        at = text.find(value)
        if at < 0:
            return None
        end = at + len(value)
        # the pre-tokens holding a visible character of the value (" walk" holds "walk")
        hit = [i for i in range(len(texts)) if any(not text[c].isspace() for c in range(max(starts[i], at),
                                                                                     min(starts[i + 1], end)))]
        if not hit or taken & set(range(hit[0], hit[-1] + 1)) or \
                "".join(texts[hit[0]:hit[-1] + 1]).strip() != value.strip():  # a value ending inside a word
            return None
        taken |= set(range(hit[0], hit[-1] + 1))
        out[key] = (hit[0], hit[-1] + 1)
    return out


def with_marks(pieces: list, places: dict[str, tuple[int, int]], marks: dict[str, tuple]) -> list:
    """The pieces with each key's (open, close) marks around its place: the one layout of the marked copy,
    for its text (marked_text) and its token ids (training_ids).

    >>> with_marks(["a", "b", "c"], {"time": (1, 3)}, {"time": ("<", ">")})
    ['a', '<', 'b', 'c', '>']
    """
    out = []
    for i, piece in enumerate(pieces):
        out += [marks[k][0] for k, (first, _) in places.items() if first == i]
        out.append(piece)
        out += [marks[k][1] for k, (_, last) in places.items() if last - 1 == i]
    return out


def marked_text(text: str, row: dict, keys=KEYS) -> str | None:
    """The marked copy of `text` for the values of `row`, as text (what the model writes, decoded: its
    model_view); None when the row cannot be written (value_pieces)."""
    from ..tokenizer import pretokenize

    texts = pretokenize(model_view(text))
    places = value_pieces(texts, {key: row.get(key) and model_view(row[key]) for key in keys}, keys)
    if places is None:
        return None
    return "".join(with_marks(texts, places, {key: markers(key) for key in places}))


def training_ids(tokenizer, row: dict, *, bos_id: int, eos_id: int, keys=KEYS) -> tuple[list[int], int] | None:
    """(ids of one training example, index of its first target token), or None when the row's values
    cannot be marked in the request as the model reads it (value_pieces)."""
    p = Request(tokenizer, row["text"], MAX_INPUT_TOKENS)
    head = p.prompt(bos_id)
    row = {key: row.get(key) and model_view(row[key]) for key in keys}  # as the model reads them
    places = value_pieces(p.views, row, keys)
    if places is None:
        return None
    mark = {key: tuple([tokenizer.token_to_id(m)] for m in markers(key)) for key in places}
    if any(ids == [None] for pair in mark.values() for ids in pair):
        raise ValueError(f"the tokenizer has no marker tokens {marker_tokens(keys)}: train it with them as special tokens")
    echo = [t for ids in with_marks(p.ids, places, mark) for t in ids]
    return head + echo + p.separator + tokenizer.encode(" " + target_text(row, keys)) + [eos_id], len(head)


# ---- scoring (the eval's definitions) ----
OUTER_PUNCT = " \t\n.,;:!?\"'()[]{}"
LEADING_PREPOSITIONS = ("at", "on", "for", "by", "in")


def normalize(value: str | None) -> str | None:
    """Strict comparison form: lower-cased, whitespace collapsed, outer punctuation trimmed.

    >>> normalize("  At 7 PM. "), normalize(None)
    ('at 7 pm', None)
    """
    if value is None:
        return None
    return " ".join(value.lower().split()).strip(OUTER_PUNCT)


def normalize_time_lenient(value: str | None) -> str | None:
    """Also drops one leading preposition (at/on/for/by/in).

    >>> normalize_time_lenient("at 7pm"), normalize_time_lenient("in"), normalize_time_lenient("Tuesday")
    ('7pm', 'in', 'tuesday')
    """
    v = normalize(value)
    if v is None:
        return None
    m = re.match(r"(?:%s)\s+(.+)$" % "|".join(LEADING_PREPOSITIONS), v)
    return m.group(1) if m else v
