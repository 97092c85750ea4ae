"""Schema-constrained JSON decoding (pocketlm.json_constraint) with the real sql-autocomplete tokenizer.

Whatever the logits, every generation must decode as UTF-8, parse, validate, be canonical
(json.dumps of itself), keep the schema's key order and end with eos within the token budget.
"""

import asyncio
import copy
import json
import random
from pathlib import Path

import pytest

from pocketlm.constraints import TokenBytesIndex
from pocketlm.generate import generate
from pocketlm.json_constraint import JsonConstraint
from pocketlm.json_schema import SchemaError, compile_schema, parse_output
from pocketlm.sampler import Sampler, SamplingOptions
from pocketlm.tokenizer import Tokenizer

TOKENIZER = Path(__file__).resolve().parent.parent / "web" / "models" / "sql-autocomplete" / "tokenizer.json"
PAD, BOS, EOS = 0, 1, 2

REMINDER = {
    "type": "object",
    "properties": {k: {"type": ["string", "null"]} for k in ("reminder", "time", "recurrence")},
    "required": ["reminder", "time", "recurrence"],
    "additionalProperties": False,
}
MIXED = {  # a bounded string, an optional enum, a key that needs escaping, null, a non-nullable string
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 12},
        "priority": {"enum": ["low", "high", None]},
        'café "q"': {"type": ["null", "string"]},
        "done": {"type": "null"},
        "tag": {"type": "string", "description": "free text"},
    },
    "required": ["title", "done", "tag"],
}
OPTIONAL = {  # nothing required: "{}" is valid
    "type": "object",
    "properties": {"a": {"type": "string", "maxLength": 3}, "b": {"enum": ["x", "y z", "é", None]},
                   "c": {"type": "string"}},
}
ENUMS = {
    "type": "object",
    "properties": {"unit": {"type": "string", "enum": ["min", "h", "dd"]}, "n": {"type": "null"},
                   "e": {"type": "string", "maxLength": 0}},
    "required": ["unit", "n", "e"],
    "additionalProperties": False,
}
SCHEMAS = [REMINDER, MIXED, OPTIONAL, ENUMS]
SOURCES = [
    "remind me at 7pm to walk the dog",
    "rappelle-moi à 19h de promener le chien 🐕 demain",
    '日本語: "quoted" and back\\slash \\" tricky',
    "tab\there\nnew line\r\x01 control",
    "🎉🎉 emoji only 🐕‍🦺",
]
# tokens that span JSON structure, added to the real vocabulary (ids 2048 and up)
JSON_PIECES = [b'{"', b'": "', b'", "', b'"}', b'": null', b"null}", b'null, "', b'""', b'": ""', b'\\"', b"\\n",
               b"\\u00", b'"reminder": "', b'"time', b'"}\n', b' {"', b"\xe2\x80", b'\x9c"', b'", "time": null}',
               b"walk the", b" dog", b"\xf0\x9f", b'\\\\', b'"low"', b'high",']


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_file(TOKENIZER)


@pytest.fixture(scope="module")
def index(tok):
    return TokenBytesIndex.from_tokenizer(tok)


@pytest.fixture(scope="module")
def json_index(tok):
    """The real vocabulary plus multi-structure tokens such as '", "' and 'null}'."""
    real = [b"" if tok.is_special(i) else tok.token_bytes(i) for i in range(tok.vocab_size)]
    return TokenBytesIndex(real + JSON_PIECES)


def vocab_size(index):
    return len(index.special) + len(index.starting_with(b""))


def make(index, schema, extra=200, **kw):
    """(constraint, compiled schema, budget): a budget of `extra` tokens above the minimum."""
    compiled = compile_schema(schema)
    budget = JsonConstraint(index, compiled, eos_id=EOS, max_tokens=10**6, **kw).min_tokens + extra
    return JsonConstraint(index, compiled, eos_id=EOS, max_tokens=budget, **kw), compiled, budget


def run(constraint, pick):
    ids = []
    while not ids or ids[-1] != EOS:
        allowed = constraint.allowed()
        assert allowed, "the constraint left nothing to sample"
        token = pick(allowed)
        constraint.advance(token)
        ids.append(token)
        assert len(ids) < 5000
    return ids


def random_pick(rng, index):
    """Uniform over the allowed ids, but 1 time in 4 a token with a quote (closing strings early)."""
    def pick(allowed):
        quoting = [t for t in allowed if b'"' in index.token_bytes(t) or t == EOS]
        return rng.choice(quoting if quoting and rng.random() < 0.25 else allowed)
    return pick


def sampler_pick(seed, index, boost=()):
    """Sampler (temperature 1) over random logits; `boost` ids get +40, as a hostile model would."""
    rng, sampler, n = random.Random(seed), Sampler(SamplingOptions(temperature=1.0, seed=seed)), vocab_size(index)

    def pick(allowed):
        logits = [rng.gauss(0.0, 3.0) for _ in range(n)]
        for t in boost:
            logits[t] += 40.0
        return sampler.sample(logits, allowed=allowed)
    return pick


def check(ids, index, schema, compiled, budget):
    """The output is valid, canonical, keys in schema order, eos last and only there, within budget."""
    assert ids[-1] == EOS and EOS not in ids[:-1] and len(ids) <= budget
    assert all(index.token_bytes(t) for t in ids[:-1]), "a special token was produced"
    text = b"".join(index.token_bytes(t) for t in ids[:-1]).decode("utf-8")  # strict: valid UTF-8
    obj = parse_output(text, compiled)
    assert json.dumps(obj, ensure_ascii=False) == text
    assert list(obj) == [k for k in schema["properties"] if k in obj]
    return obj


def assert_copied(obj, source, compiled, names=None):
    """Copied values are substrings of the source, non-empty where null could have been used."""
    for p in compiled.properties:
        value = obj.get(p.name)
        if p.kind == "string" and value is not None and (names is None or p.name in names):
            assert value.encode("utf-8") in source.encode("utf-8") and (value or not p.nullable), (p, value)


# ---- sampling under the constraint ----

@pytest.mark.parametrize("seed", range(200))
def test_random_generations_are_valid_canonical_json_within_budget(seed, index, json_index):
    rng = random.Random(seed)
    schema = SCHEMAS[seed % len(SCHEMAS)]
    idx = json_index if seed % 2 else index
    source = SOURCES[seed % len(SOURCES)] if seed % 3 == 0 else None
    c, compiled, budget = make(idx, schema, rng.choice([0, 1, 3, 8, 20, 60]), copy_source=source)
    obj = check(run(c, random_pick(rng, idx)), idx, schema, compiled, budget)
    if source is not None:
        assert_copied(obj, source, compiled)


@pytest.mark.parametrize("seed", range(20))
def test_sampler_with_random_logits(seed, index):
    schema = SCHEMAS[seed % len(SCHEMAS)]
    c, compiled, budget = make(index, schema, 2 * seed)
    check(run(c, sampler_pick(seed, index)), index, schema, compiled, budget)


def hostile_ids(index):
    """Tokens that would break JSON: eos and other specials, quotes, braces, backslashes, bytes that are
    never valid UTF-8 (or not here), control characters."""
    bad = [EOS, PAD, BOS] + [t for t in index.starting_with(b"") if set(index.token_bytes(t)) & set(b'"}\\')]
    return bad + [index.starting_with(bytes([b]))[0] for b in (0xFF, 0xC0, 0xC1, 0xF5, 0x80, 0xBF, 0x00, 0x0A, 0x1F)]


@pytest.mark.parametrize("seed", range(24))
def test_adversarial_logits_still_give_valid_json(seed, index, json_index):
    idx = json_index if seed % 2 else index
    schema = SCHEMAS[seed % len(SCHEMAS)]
    source = SOURCES[seed % len(SOURCES)] if seed % 3 == 0 else None
    c, compiled, budget = make(idx, schema, seed, copy_source=source)
    obj = check(run(c, sampler_pick(seed, idx, boost=hostile_ids(idx))), idx, schema, compiled, budget)
    if source is not None:
        assert_copied(obj, source, compiled)


SHORT = {"type": "object", "properties": {"s": {"type": "string", "maxLength": 4},
                                          "t": {"type": ["string", "null"], "maxLength": 2}}, "required": ["s"]}


@pytest.mark.parametrize("seed, schema, source, extra", [
    (0, REMINDER, None, 12), (1, MIXED, None, 12), (2, REMINDER, SOURCES[2], 12), (3, MIXED, SOURCES[1], 12),
    (4, OPTIONAL, SOURCES[3], 12),
    (5, REMINDER, "a\tb\nc \\ é", 12),  # no letter t or n: the "t" of "\t" alone is no copy
    (6, SHORT, None, 3), (7, SHORT, None, 4), (8, SHORT, None, 5), (9, SHORT, None, 6), (10, SHORT, "\\x\"é", 4),
])
def test_allowed_is_exactly_the_tokens_advance_accepts(seed, schema, source, extra, json_index):
    """At every step, allowed() == the ids (of the whole vocabulary, specials included) whose bytes
    continue the output validly within budget, as advance() judges them byte by byte."""
    rng = random.Random(seed)
    c, _, _ = make(json_index, schema, extra, copy_source=source)
    every = range(vocab_size(json_index))
    while True:
        allowed = c.allowed()
        accepted = []
        for t in every:
            trial = copy.copy(c)
            try:
                trial.advance(t)
                accepted.append(t)
            except ValueError:
                pass
        assert allowed == accepted
        token = random_pick(rng, json_index)(allowed)
        c.advance(token)
        if token == EOS:
            break


# ---- bytes inside strings ----

def after(index, schema, prefix: bytes, **kw):
    """A constraint that has been fed `prefix` one byte at a time; returns the allowed single bytes."""
    c, _, _ = make(index, schema, **kw)
    for b in prefix:
        c.advance(index.starting_with(bytes([b]))[0])
    return c, {index.token_bytes(t)[0] for t in c.allowed() if len(index.token_bytes(t)) == 1}


def test_free_string_allows_printable_text_and_utf8_lead_bytes_only(index):
    _, single = after(index, REMINDER, b'{"reminder": "')
    expected = set(range(0x20, 0x80)) | set(range(0xC2, 0xF5))  # with '"' (close) and '\\' (escape)
    assert single == expected


@pytest.mark.parametrize("prefix, expected", [
    (b"\\", set(b'"\\bfnrtu')),  # no "\/": json.dumps never writes it
    (b"\\u", set(b"0")),
    (b"\\u00", set(b"01")),
    (b"\\u000", set(b"01234567bef")),  # \b \t \n \f \r have short forms
    (b"\\u001", set(b"0123456789abcdef")),
    (b"\xe0", set(range(0xA0, 0xC0))),  # no overlong forms
    (b"\xed", set(range(0x80, 0xA0))),  # no surrogates
    (b"\xf0", set(range(0x90, 0xC0))),
    (b"\xf4", set(range(0x80, 0x90))),  # nothing above U+10FFFF
    (b"\xc3", set(range(0x80, 0xC0))),
    (b"\xf0\x9f\x90", set(range(0x80, 0xC0))),
])
def test_escapes_and_utf8_sequences_are_json_dumps_canonical(prefix, expected, index):
    _, single = after(index, REMINDER, b'{"reminder": "' + prefix)
    assert single == expected


@pytest.mark.parametrize("schema", [SHORT, REMINDER])
def test_a_backslash_needs_room_for_the_longest_escape(schema, index):
    """After "\\" the budget charges 5 more bytes (it could become "\\u001f"), then the quote and the rest."""
    _, with_room = after(index, schema, b'{"' + next(iter(schema["properties"])).encode() + b'": "', extra=6)
    _, without = after(index, schema, b'{"' + next(iter(schema["properties"])).encode() + b'": "', extra=5)
    assert ord("\\") in with_room and ord("\\") not in without and ord("a") in without


def test_multibyte_tokens_may_split_a_character(json_index):
    c, _ = after(json_index, REMINDER, b'{"reminder": "')
    assert json_index.starting_with(b"\xe2\x80")[0] in c.allowed()
    c.advance(json_index.starting_with(b"\xe2\x80")[0])
    allowed = c.allowed()
    assert json_index.starting_with(b'\x9c"')[0] in allowed  # finishes the character and closes the string
    assert all(0x80 <= json_index.token_bytes(t)[0] < 0xC0 for t in allowed)


def test_max_length_counts_characters(index):
    c, _ = after(index, MIXED, '{"title": "0123456789é'.encode())
    c.advance(index.starting_with(b"a")[0])  # 12 characters: only the closing quote may follow
    assert [index.token_bytes(t) for t in c.allowed()] == [b'"']


# ---- the budget ----

@pytest.mark.parametrize("schema, shortest", [
    (REMINDER, '{"reminder": "", "time": "", "recurrence": ""}'),
    (MIXED, '{"title": "", "done": null, "tag": ""}'),
    (OPTIONAL, "{}"),
    (ENUMS, '{"unit": "h", "n": null, "e": ""}'),
])
def test_minimum_budget_is_the_shortest_output_and_below_it_is_an_error(schema, shortest, index):
    c, compiled, budget = make(index, schema, 0)
    assert budget == len(shortest.encode()) + 1
    for seed in range(3):  # multi-byte tokens can leave room for more than the shortest output
        c, compiled, budget = make(index, schema, 0)
        check(run(c, sampler_pick(seed, index)), index, schema, compiled, budget)
    for seed in range(3):  # one byte per token: exactly the shortest output
        c, compiled, budget = make(index, schema, 0)
        rng = random.Random(seed)
        pick = lambda allowed: rng.choice([t for t in allowed if len(index.token_bytes(t)) <= 1])  # noqa: E731
        assert check(run(c, pick), index, schema, compiled, budget) == json.loads(shortest)
    with pytest.raises(SchemaError, match=f"max_tokens={budget - 1} is too small.*takes {budget} tokens"):
        JsonConstraint(index, compiled, eos_id=EOS, max_tokens=budget - 1)


def test_copied_nullable_strings_cost_null_or_one_character(index):
    c, _, _ = make(index, REMINDER, 0, copy_source="ab")
    assert c.min_tokens == len('{"reminder": "a", "time": "a", "recurrence": "a"}') + 1
    c, _, _ = make(index, REMINDER, 0, copy_source="")
    assert c.min_tokens == len('{"reminder": null, "time": null, "recurrence": null}') + 1


@pytest.mark.parametrize("extra", range(0, 16, 3))
def test_small_budgets_still_give_valid_json(extra, index, json_index):
    for seed, schema in enumerate(SCHEMAS):
        for idx in (index, json_index):
            source = SOURCES[seed] if seed % 2 else None
            c, compiled, budget = make(idx, schema, extra, copy_source=source)
            check(run(c, random_pick(random.Random(seed * 100 + extra), idx)), idx, schema, compiled, budget)


# ---- eos ----

def test_eos_only_once_the_object_is_complete(index):
    c, _, _ = make(index, OPTIONAL)
    for t in (EOS, PAD, BOS):
        assert t not in c.allowed()
        with pytest.raises(ValueError, match="not allowed here"):
            c.advance(t)
    for b in b'{"a": "xy"':
        assert EOS not in c.allowed()
        c.advance(index.starting_with(bytes([b]))[0])
    c.advance(index.starting_with(b"}")[0])
    assert c.allowed() == [EOS]
    with pytest.raises(ValueError, match="not allowed here"):
        c.advance(index.starting_with(b" ")[0])
    c.advance(EOS)
    assert c.allowed() == [EOS]


def test_constructor_checks(index):
    compiled = compile_schema(REMINDER)
    with pytest.raises(TypeError, match="compile_schema"):
        JsonConstraint(index, REMINDER, eos_id=EOS, max_tokens=99)
    with pytest.raises(ValueError, match="not a special token"):
        JsonConstraint(index, compiled, eos_id=index.starting_with(b"a")[0], max_tokens=99)
    a = JsonConstraint(index, compiled, eos_id=EOS, max_tokens=99)
    b = JsonConstraint(index, compile_schema(MIXED), eos_id=EOS, max_tokens=99, copy_source="x")
    assert a.vocab is b.vocab is JsonConstraint.prepare(index)  # built once per tokenizer


# ---- end to end through the generate loop ----

@pytest.mark.parametrize("seed", range(4))
def test_generate_loop_with_a_random_model(seed, tok, index):
    source = SOURCES[seed]
    compiled = compile_schema(REMINDER)
    rng = random.Random(seed)

    async def forward(ids, cache):
        cache.extend(ids)
        return [rng.gauss(0.0, 4.0) for _ in range(tok.vocab_size)]

    prefix = b" " if seed % 2 else b""  # the reminders task writes " {" after its separator
    kw = dict(eos_id=EOS, copy_source=source, prefix=prefix)
    budget = JsonConstraint(index, compiled, max_tokens=10**6, **kw).min_tokens + 8 * seed
    constraint = JsonConstraint(index, compiled, max_tokens=budget, **kw)
    options = SamplingOptions(max_new_tokens=budget, temperature=1.0, seed=seed)
    result = asyncio.run(generate(forward, [], [BOS] + tok.encode(source), options, eos_id=EOS,
                                  decode_bytes=tok.decode_bytes, constraint=constraint))
    assert result.stop_reason == "eos" and len(result.token_ids) <= budget
    assert result.text.startswith(prefix.decode() + "{")
    obj = parse_output(result.text[len(prefix):], compiled)
    assert json.dumps(obj, ensure_ascii=False) == result.text[len(prefix):]
    assert_copied(obj, source, compiled)
