"""The copy constraint of pocketlm.json_constraint: copied values are substrings of the request,
made of whole words (whole_words) and, with disjoint, in places that do not overlap.

The fixtures and helpers (the real sql-autocomplete tokenizer, schemas, the random drivers) are
tests/test_json_constraint.py's.
"""

import json
import random

import pytest

from pocketlm.json_schema import SchemaError
from tests.test_json_constraint import (EOS, REMINDER, SOURCES, after, assert_copied, check, index, json_index,  # noqa: F401
                                        make, random_pick, run, tok)

# ---- the copy constraint ----

@pytest.mark.parametrize("seed", range(30))
def test_copied_values_are_non_empty_substrings_of_the_source(seed, index, json_index):
    rng = random.Random(seed)
    idx = json_index if seed % 2 else index
    source = SOURCES[seed % len(SOURCES)]
    c, compiled, budget = make(idx, REMINDER, copy_source=source)
    obj = check(run(c, random_pick(rng, idx)), idx, REMINDER, compiled, budget)
    assert_copied(obj, source, compiled)


def test_copy_can_reproduce_quotes_backslashes_controls_and_emoji(json_index):
    """The whole source can be copied, token by token (longest first), escaped as json.dumps does."""
    for seed, source in enumerate(SOURCES):
        c, compiled, budget = make(json_index, REMINDER, copy_source=source)
        ids = [json_index.starting_with(b"{")[0]] + [json_index.starting_with(b'"reminder": "')[0]]
        target = json.dumps(source, ensure_ascii=False)[1:-1].encode() + b'"'
        for t in ids:
            c.advance(t)
        while target:
            fits = [t for t in c.allowed() if target.startswith(json_index.token_bytes(t))]
            ids.append(max(fits, key=lambda t: len(json_index.token_bytes(t))))
            c.advance(ids[-1])
            target = target[len(json_index.token_bytes(ids[-1])):]
        ids += run(c, random_pick(random.Random(seed), json_index))
        assert check(ids, json_index, REMINDER, compiled, budget)["reminder"] == source


@pytest.mark.parametrize("source", ["", "\x00"])
def test_a_source_with_little_or_nothing_to_copy(source, index):
    schema = {"type": "object", "properties": {"a": {"type": ["string", "null"]}, "b": {"type": "string"}},
              "required": ["a", "b"]}
    for seed in range(5):
        c, compiled, budget = make(index, schema, copy_source=source, copy_properties={"a", "b"})
        obj = check(run(c, random_pick(random.Random(seed), index)), index, schema, compiled, budget)
        assert obj["a"] is None or obj["a"] == source and source
        assert obj["b"] == source  # non-nullable: "" when nothing can be copied ("\x00" can)


@pytest.mark.parametrize("source", ["\x01\x1f", "\n\t"])
@pytest.mark.parametrize("extra", range(10))
def test_tight_budget_when_every_character_to_copy_is_an_escape(source, extra, index):
    """The budget charges an escape as 6 bytes: after a copied "\\" it may have to be "u001f"."""
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": ["string", "null"]}},
              "required": ["a", "b"]}
    for seed in range(6):
        c, compiled, budget = make(index, schema, extra, copy_source=source)
        obj = check(run(c, random_pick(random.Random(seed), index)), index, schema, compiled, budget)
        assert_copied(obj, source, compiled)


def test_copy_forbids_empty_strings_when_there_is_room(index):
    schema = {"type": "object", "properties": {"b": {"type": "string"}}, "required": ["b"]}
    c, _ = after(index, schema, b'{"b": "', copy_source="walk the dog")
    assert index.starting_with(b'"')[0] not in c.allowed()
    tight, _, _ = make(index, schema, 0, copy_source="walk the dog")  # the minimum budget: '{"b": ""}'
    for b in b'{"b": "':
        tight.advance(index.starting_with(bytes([b]))[0])
    # no room for a character and its own quote: "" is allowed, and ' "' (a character and the quote in one token)
    assert [index.token_bytes(t) for t in tight.allowed()] == [b'"', b' "']


def test_copy_properties_selects_the_copied_strings(index):
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
              "required": ["a", "b"]}
    for seed in range(10):
        c, compiled, budget = make(index, schema, copy_source="dog", copy_properties={"b"})
        obj = check(run(c, random_pick(random.Random(seed), index)), index, schema, compiled, budget)
        assert obj["b"] and obj["b"] in "dog"
    with pytest.raises(SchemaError, match=r"copy_properties \['c'\] are not string properties"):
        make(index, schema, copy_source="dog", copy_properties={"c"})


# ---- whole words: copied values start and end at word boundaries (slot values do) ----
WORD_SOURCES = ["Set up a reminder to bring Dad to doctors on Wednesday", "remind me at 7pm to walk the dog",
                'say "hi" to Zoë 🙂 at 5:30, ok?', "x", "   ", "café-au-lait_time\tnow"]


def word_bounded(value: str, source: str) -> bool:
    """value occurs in source somewhere it starts and ends on a word boundary, not on whitespace."""
    word = lambda ch: ch.isalnum() or ch == "_"  # noqa: E731
    start = source.find(value)
    while start >= 0:
        end = start + len(value)
        if (not value[0].isspace() and not value[-1].isspace()
                and (start == 0 or not (word(source[start - 1]) and word(value[0])))
                and (end == len(source) or not (word(value[-1]) and word(source[end])))):
            return True
        start = source.find(value, start + 1)
    return False


@pytest.mark.parametrize("seed", range(40))
def test_whole_words_copies_never_cut_a_word(seed, index):
    source = WORD_SOURCES[seed % len(WORD_SOURCES)]
    constraint, compiled, budget = make(index, REMINDER, extra=seed % 7 * 6, copy_source=source, whole_words=True)
    obj = check(run(constraint, random_pick(random.Random(seed), index)), index, REMINDER, compiled, budget)
    assert_copied(obj, source, compiled)
    for value in obj.values():
        assert value is None or word_bounded(value, source), (value, source)


def test_whole_words_turn_a_half_word_into_the_whole_word(index):
    """A model that would close the string after " do" must go on to " doctors"."""
    source = "bring Dad to doctors on Wednesday"
    constraint, _, _ = make(index, REMINDER, copy_source=source, whole_words=True, prefix=b"")
    target = b'{"reminder": "bring Dad to do'
    while target:  # feed the target, longest allowed token first
        token = max((t for t in constraint.allowed() if target.startswith(index.token_bytes(t)) and t != EOS),
                    key=lambda t: len(index.token_bytes(t)))
        constraint.advance(token)
        target = target[len(index.token_bytes(token)):]
    closing = [t for t in constraint.allowed() if b'"' in index.token_bytes(t)]
    assert closing == []  # " do" is not a word of the source: the string cannot close here
    assert any(index.token_bytes(t).startswith(b"ctor") or index.token_bytes(t) == b"c" for t in constraint.allowed())


# ---- disjoint: copied values take different places in the source (slot values never overlap) ----

def occurrences(value: str, source: str) -> list[tuple[int, int]]:
    out, start = [], source.find(value)
    while start >= 0:
        out.append((start, start + len(value)))
        start = source.find(value, start + 1)
    return out


def feed(constraint, index, target: bytes) -> None:
    """Advance through `target`, longest allowed token first."""
    while target:
        token = max((t for t in constraint.allowed() if t != EOS and target.startswith(index.token_bytes(t))),
                    key=lambda t: len(index.token_bytes(t)))
        constraint.advance(token)
        target = target[len(index.token_bytes(token)):]


@pytest.mark.parametrize("seed", range(40))
def test_disjoint_copies_never_overlap(seed, index, json_index):
    """Random generations (closing early 1 time in 4): every pair of copied values fits side by side."""
    idx = json_index if seed % 2 else index
    source = WORD_SOURCES[seed % 3]  # words that occur once each: a value has one place
    constraint, compiled, budget = make(idx, REMINDER, extra=seed % 5 * 8, copy_source=source, whole_words=True,
                                        disjoint=True)
    obj = check(run(constraint, random_pick(random.Random(seed), idx)), idx, REMINDER, compiled, budget)
    assert_copied(obj, source, compiled)
    values = [v for v in obj.values() if v is not None]
    for i, a in enumerate(values):
        for b in values[i + 1:]:
            assert any(x[1] <= y[0] or y[1] <= x[0] for x in occurrences(a, source) for y in occurrences(b, source)), \
                (a, b, source)


def test_disjoint_rules_out_what_an_earlier_value_took(index):
    source = "remind me at 7pm to walk the dog"
    constraint, _, _ = make(index, REMINDER, copy_source=source, whole_words=True, disjoint=True, prefix=b"")
    feed(constraint, index, b'{"reminder": "walk the dog", "time": "')
    starts = {index.token_bytes(t)[:1] for t in constraint.allowed() if index.token_bytes(t)[:1] != b'"'}
    assert starts == {b"r", b"m", b"a", b"7", b"t"}  # remind, me, at, 7pm, to: not walk/the/dog
    assert not [t for t in constraint.allowed() if index.token_bytes(t).startswith((b"th", b"w", b"d"))]
    # without disjoint the same prefix may copy "walk" or "the dog" again
    free, _, _ = make(index, REMINDER, copy_source=source, whole_words=True, prefix=b"")
    feed(free, index, b'{"reminder": "walk the dog", "time": "')
    assert {b"w", b"d"} <= {index.token_bytes(t)[:1] for t in free.allowed()}


def test_disjoint_allows_the_other_occurrence_of_a_repeated_word(index):
    source = "dog food for the dog"
    constraint, _, _ = make(index, REMINDER, copy_source=source, whole_words=True, disjoint=True, prefix=b"")
    # the reminder "dog" may be the first one, so the time may take the last
    feed(constraint, index, b'{"reminder": "dog", "time": "the dog", "recurrence": ')
    later, _, _ = make(index, REMINDER, copy_source=source, whole_words=True, disjoint=True, prefix=b"")
    feed(later, index, b'{"reminder": "food for the dog", "time": "')
    starts = {index.token_bytes(t)[:1] for t in later.allowed() if index.token_bytes(t)[:1] != b'"'}
    assert starts == {b"d"}  # only the first "dog" is left
    nothing_left, _, _ = make(index, REMINDER, copy_source=source, whole_words=True, disjoint=True, prefix=b"")
    feed(nothing_left, index, b'{"reminder": "dog food for the dog", "time": ')
    # every start is taken: the time cannot open a string, only be null
    assert {index.token_bytes(t)[:1] for t in nothing_left.allowed()} == {b"n"}
