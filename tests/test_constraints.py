"""Token constraints: healing (PrefixConstraint) and finishing a word with a name (WordConstraint)."""

import random

import pytest

from pocketlm.constraints import PrefixConstraint, TokenBytesIndex, WordConstraint
from pocketlm.sampler import Sampler, SamplingOptions
from pocketlm.tasks.sql import name_endings

WORD_BYTES = b"abcdefghijklmnopqrstuvwxyz_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def random_vocab(rng: random.Random) -> list[bytes]:
    """All single bytes (so any text can be produced) plus random multi-byte pieces."""
    vocab = [b""] + [bytes([b]) for b in range(256)]
    alphabet = b"abcdefgh_ (,.XY"
    while len(vocab) < 600:
        piece = bytes(rng.choice(alphabet) for _ in range(rng.randint(2, 6)))
        if piece not in vocab:
            vocab.append(piece)
    return vocab


def run_constraint(constraint, index, rng, steps=12, adversarial=None):
    """Sample under the constraint with random (optionally adversarial) logits; return the bytes."""
    sampler = Sampler(SamplingOptions(temperature=1.0, seed=rng.randrange(10**6)))
    out = b""
    n = len(index._token_bytes)
    for _ in range(steps):
        logits = [rng.gauss(0, 3) for _ in range(n)]
        if adversarial is not None:
            for t in adversarial:
                logits[t] = 50.0  # push hard toward tokens that would break the constraint
        allowed = constraint.allowed()
        token = sampler.sample(logits, allowed=allowed)
        constraint.advance(token)
        out += index.token_bytes(token)
    return out


@pytest.mark.parametrize("seed", range(30))
def test_word_constraint_output_always_finishes_a_word_as_one_of_the_endings(seed):
    rng = random.Random(seed)
    vocab = random_vocab(rng)
    index = TokenBytesIndex(vocab)
    heal = rng.choice([b"", b" a", b"ab", b" ", b"_b"])
    endings = sorted({bytes(rng.choice(b"abcdefgh_") for _ in range(rng.randint(0, 7))) for _ in range(rng.randint(1, 5))})
    adversarial = [i for i, b in enumerate(vocab) if b and b[:1] in (b"X", b"Y", b".")]
    out = run_constraint(WordConstraint(index, heal, endings), index, rng, adversarial=adversarial)
    ok = [e for e in endings if out.startswith(heal + e)
          and (len(out) == len(heal + e) or out[len(heal + e)] not in WORD_BYTES)]
    assert ok, (heal, endings, out)


@pytest.mark.parametrize("seed", range(20))
def test_prefix_constraint_output_always_starts_with_the_healed_bytes(seed):
    rng = random.Random(seed)
    vocab = random_vocab(rng)
    index = TokenBytesIndex(vocab)
    heal = bytes(rng.choice(b"abc _(") for _ in range(rng.randint(1, 8)))
    out = run_constraint(PrefixConstraint(index, heal), index, rng, adversarial=[vocab.index(b"X")])
    assert out.startswith(heal)


def test_word_constraint_without_endings_is_healing_only():
    index = TokenBytesIndex([b"", b" na", b" name", b"X"])
    c = WordConstraint(index, b" na", [])
    assert c.allowed() == [1, 2]
    c.advance(2)
    assert c.allowed() is None


def test_name_endings_cases():
    schema = "singer(Singer_ID, Name, Country)\nconcert(concert_ID, Theme)"
    assert "nger" in name_endings(schema, "SELECT * FROM si")
    assert "nger_ID" in name_endings(schema, "SELECT Si") and "nger_id" in name_endings(schema, "SELECT si")
    assert "ECT" in name_endings(schema, "SEL") and "ect" in name_endings(schema, "sel")  # SQL keywords too
    after_select = name_endings(schema, "SELECT ")  # a name, an aggregate, an alias, or '' (e.g. for *)
    assert {"", "Name", "name", "count", "T1", "singer"} <= set(after_select) and "FROM" not in after_select
    assert "" not in name_endings(schema, "SELECT * FROM singer WHERE ")  # a word must come
    assert name_endings(schema, "SELECT * FROM singer WHERE Name  =  ") == []  # a value: the model is free
    assert name_endings(schema, "WHERE Name = 'Co") == []  # inside a string literal
    assert name_endings(schema, "WHERE age > 5") == []  # a number is not a name
    assert name_endings(schema, "SELECT zz") == []  # nothing matches: the model is free


def test_name_endings_follow_the_grammar_where_it_is_clear():
    schema = "singer(Singer_ID, Name)\nconcert(concert_ID, Theme)"
    assert name_endings(schema, "SELECT * FROM ") == ["concert", "singer"]  # tables only, before any letter
    assert name_endings(schema, "SELECT * FROM singer JOIN c") == ["oncert"]
    assert set(name_endings(schema, "SELECT T1.")) == {"Singer_ID", "singer_id", "Name", "name", "concert_ID",
                                                      "concert_id", "Theme", "theme"}
    assert "ELECT" not in name_endings(schema, "SELECT * FROM s")  # after FROM, not a keyword


def test_sql_name_constraint_constrains_names_inside_the_suggestion():
    """After the typed word is finished, a later FROM / JOIN / alias. in the suggestion is followed by
    a schema name too, whatever the model prefers."""
    from pocketlm.tasks.sql import SqlNameConstraint

    vocab = [b"", b" FROM", b" album", b" singer", b" s", b"inger", b" AS", b" T", b"1", b".", b"Name", b" Name", b"x",
             b" WHERE", b" "]
    index = TokenBytesIndex(vocab)
    c = SqlNameConstraint(index, "singer(Name)", "SELECT Name", b" Name", finish_names=True)
    seen = b""
    for want in [b" Name", b" FROM", b" album", b" AS", b" T", b"1", b".", b"x"]:  # the "model" wants these
        allowed = c.allowed()
        token = vocab.index(want)
        if allowed is not None and token not in allowed:
            token = sorted(allowed, key=lambda t: -len(vocab[t]))[0]  # else its best allowed choice
        c.advance(token)
        seen += vocab[token]
    assert seen.startswith(b" Name FROM singer AS T1.Name"), seen
    free = SqlNameConstraint(index, "singer(Name)", "SELECT Name", b" Name", finish_names=False)
    free.advance(vocab.index(b" Name"))
    free.advance(vocab.index(b" FROM"))
    assert free.allowed() is None  # without finish_names only healing applies
