"""reminder-extract's marked copy ("reminders-v2"): the format (pocketlm.tasks.reminders) and its
constraint (pocketlm.echo_constraint), alone and followed by the JSON's (decoded by pocketlm.copy_search,
then the generate loop, as the extractor does).

A tokenizer with the marker special tokens is trained here on a few requests (export.tokenizer_train);
the constraint is driven by random and adversarial logits: whatever the model prefers, the output is
the request again, token for token, with well-formed markers, then valid JSON copied from the request.
"""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from export.tokenizer_train import save_tokenizer, train_tokenizer
from pocketlm.constraints import TokenBytesIndex
from pocketlm.copy_search import marked_copy
from pocketlm.echo_constraint import EchoConstraint, EchoError
from pocketlm.generate import generate
from pocketlm.json_constraint import JsonConstraint
from pocketlm.json_schema import compile_schema
from pocketlm.sampler import SamplingOptions
from pocketlm.tasks import reminders
from pocketlm.tokenizer import Tokenizer

REQUESTS = [
    "remind me at 7pm to walk the dog",
    "",
    "Remind me to pick up nancy's aunt saturday 10am",
    "set a reminder  every Monday  to water the plants 🌱🌱",
    "提醒我明天早上八点给妈妈打电话",
    "erinnere mich morgen an den Müll 🗑️ — bitte!",
    "type <time> and </reminder> as text \n=> {\"a\": 1}",
    "👩‍👩‍👧 family call at 8 " * 3,
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    corpus = REQUESTS + [reminders.target_text({"reminder": "walk the dog", "time": "at 7pm"})] * 3
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    save_tokenizer(train_tokenizer(corpus, 400, extra_special=tuple(reminders.marker_tokens())), path)
    return Tokenizer.from_file(path)


def markers_of(tok):
    return {key: tuple(tok.token_to_id(m) for m in reminders.markers(key)) for key in reminders.KEYS}


def check_marked_copy(tok, ids: list[int], pieces: list[list[int]], end: list[int]) -> dict[str, list[int]]:
    """The generated ids are the request's tokens with balanced, non-empty, non-nested markers of each key at
    most once, placed between pre-tokens, then `end`; returns each key's token ids."""
    marks = markers_of(tok)
    opens = {o: k for k, (o, _) in marks.items()}
    closes = {c: k for k, (_, c) in marks.items()}
    assert ids[len(ids) - len(end):] == end
    body = ids[:len(ids) - len(end)]
    assert [t for t in body if t not in opens and t not in closes] == [t for p in pieces for t in p]
    boundaries = {0}
    for p in pieces:
        boundaries.add(max(boundaries) + len(p))
    spans, open_key, seen, n = {}, None, set(), 0
    for t in body:
        if t in opens:
            assert open_key is None and opens[t] not in seen and n in boundaries
            open_key = opens[t]
            seen.add(open_key)
            spans[open_key] = []
        elif t in closes:
            assert closes[t] == open_key and spans[open_key] and n in boundaries
            open_key = None
        else:
            if open_key is not None:
                spans[open_key].append(t)
            n += 1
    assert open_key is None
    return spans


def start(tok, text):
    """(the request as the model reads it, the separator's ids, a fresh EchoConstraint over it)."""
    r = reminders.Request(tok, text, reminders.MAX_INPUT_TOKENS)
    return r, r.separator, EchoConstraint(r.ids, markers_of(tok), end=r.separator)


def drive(constraint, pick, limit=400) -> list[int]:
    out = []
    for _ in range(limit):
        if getattr(constraint, "done", False):
            return out
        allowed = constraint.allowed()
        t = pick(allowed)
        constraint.advance(t)
        out.append(t)
    raise AssertionError("the constraint never finished")


@pytest.mark.parametrize("seed", range(40))
def test_random_choices_always_give_a_marked_copy_of_the_request(tok, seed):
    rng = random.Random(seed)
    text = REQUESTS[seed % len(REQUESTS)]
    r, end, c = start(tok, text)
    pieces = r.ids
    ids = drive(c, rng.choice)
    spans = check_marked_copy(tok, ids, pieces, end)
    assert len(ids) <= c.max_tokens and set(spans) == set(c.spans)
    for key, (first, last) in c.spans.items():  # spans count pre-tokens, and are the copied tokens
        assert [t for p in pieces[first:last] for t in p] == spans[key]


@pytest.mark.parametrize("prefer", ["open", "close", "last id", "first id"])
def test_adversarial_choices_cannot_break_the_copy(tok, prefer):
    """A model that always wants a marker (or always the highest / lowest id) still writes the request."""
    marks = markers_of(tok)
    opens = {o for o, _ in marks.values()}
    closes = {c for _, c in marks.values()}
    rank = {"open": lambda t: (t in opens, t), "close": lambda t: (t in closes, t in opens, t),
            "last id": lambda t: t, "first id": lambda t: -t}[prefer]
    for text in REQUESTS:
        r, end, c = start(tok, text)
        ids = drive(c, lambda allowed: max(allowed, key=rank))
        check_marked_copy(tok, ids, r.ids, end)


def test_a_token_outside_the_allowed_ones_is_refused_by_name(tok):
    _, _, c = start(tok, "remind me at 7pm")
    with pytest.raises(EchoError, match="not allowed here"):
        c.advance(markers_of(tok)["time"][1])  # a close before any open


@pytest.mark.parametrize("text", REQUESTS)
def test_the_prompt_holds_the_request_as_its_own_tokens_and_typed_markers_stay_text(tok, text):
    ids, dropped = reminders.prompt_ids(tok, text, bos_id=1)
    specials = {tok.token_to_id(m) for m in reminders.marker_tokens()} | {0, 1, 2}
    assert ids[0] == 1 and not specials & set(ids[1:]) and dropped == 0
    assert tok.decode(ids[1:], skip_special_tokens=False) == reminders.model_view(text) + reminders.SEPARATOR


def test_a_long_request_is_cut_at_a_whole_pre_token_within_the_budget(tok):
    text = "remind me to " + "water the plants and " * 40 + "feed the cat"
    r = reminders.Request(tok, text, max_input_tokens=20)
    n = sum(map(len, r.ids))
    assert n <= 20 and r.dropped == len(tok.encode(text)) - n and r.dropped > 0
    assert text.startswith(r.kept) and tok.encode(reminders.model_view(r.kept)) == [t for p in r.ids for t in p]


@pytest.mark.parametrize("row, expected", [
    ({"text": "remind me at 7pm to walk the dog", "reminder": "walk the dog", "time": "at 7pm"},
     "remind me<time> at 7pm</time> to<reminder> walk the dog</reminder>"),
    ({"text": "Remind me to pick up nancy's aunt", "reminder": "pick up nancy's aunt", "time": None},
     "remind me to<reminder> pick up nancy's aunt</reminder>"),
    ({"text": "every Monday  water 🌱", "recurrence": "every Monday", "reminder": "water 🌱"},
     "<recurrence>every monday</recurrence> <reminder> water 🌱</reminder>"),
    ({"text": "提醒我 明天 打电话", "time": "明天", "reminder": "打电话"}, "提醒我<time> 明天</time><reminder> 打电话</reminder>"),
    ({"text": "call at 7pm", "time": "at 7", "reminder": "7pm"}, None),  # two values in one word
    ({"text": "call at 7pm", "time": "at 7p"}, None),  # a value ending inside a word
    ({"text": "call mom", "reminder": "call dad"}, None),  # not in the text
    ({"text": "no values here", "reminder": None, "time": None}, "no values here"),
])
def test_marked_text_of_tricky_rows(row, expected):
    assert reminders.marked_text(row["text"], row) == expected


def test_training_ids_are_the_prompt_the_marked_copy_and_the_json(tok):
    row = {"text": "remind me at 7pm to walk the dog", "reminder": "walk the dog", "time": "at 7pm", "recurrence": None}
    ids, start = reminders.training_ids(tok, row, bos_id=1, eos_id=2)
    head, _ = reminders.prompt_ids(tok, row["text"], bos_id=1)
    assert ids[:start] == head and ids[-1] == 2
    written = tok.decode(ids[start:-1], skip_special_tokens=False)
    assert written == reminders.marked_text(row["text"], row) + reminders.SEPARATOR + " " + reminders.target_text(row)
    assert reminders.training_ids(tok, {**row, "time": "7p"}, bos_id=1, eos_id=2) is None  # ends inside "pm"


class IdsCache(list):
    """A cache reduced to the ids fed (length and truncate, as the backends' caches)."""
    length = property(len)

    def truncate(self, n):
        del self[n:]


@pytest.mark.parametrize("seed", range(20))
def test_the_marked_copy_then_json_always_gives_valid_json_copied_from_the_request(tok, seed):
    """The whole constrained output, the copy (searched when greedy) then the JSON through the generate
    loop, with random logits: sampled for even seeds, greedy for odd ones."""
    rng = random.Random(seed)
    text = REQUESTS[seed % len(REQUESTS)]
    r, end, echo = start(tok, text)
    index = TokenBytesIndex.from_tokenizer(tok)
    schema = compile_schema(reminders.SCHEMA)
    options = SamplingOptions(max_new_tokens=180, temperature=1.0 if seed % 2 == 0 else 0.0, seed=seed)

    async def forward(ids, cache):  # a model with random preferences
        cache.extend(ids)
        return [rng.gauss(0.0, 3.0) for _ in range(tok.vocab_size)]

    async def run():
        cache = IdsCache()
        copy = await marked_copy(forward, cache, [1], lambda: start(tok, text)[2], flips=2, options=options)
        assert cache == [1] + copy.tokens[:-1]
        json_c = JsonConstraint(index, schema, eos_id=2, max_tokens=180 - len(copy.tokens), copy_source=r.kept,
                                prefix=b" ", whole_words=True, disjoint=True)
        return copy, await generate(forward, cache, copy.tokens[-1:], options, eos_id=2, start_pos=cache.length,
                                    decode_bytes=tok.decode_bytes, constraint=json_c)

    copy, result = asyncio.run(run())
    assert result.stop_reason == "eos"
    check_marked_copy(tok, copy.tokens, r.ids, end)
    obj = json.loads(result.text)
    assert list(obj) == list(reminders.KEYS)
    assert all(v is None or (v and v in r.kept) for v in obj.values())
