"""JsonConstraint.narrow: where a copied value ends is the model's decision by its whole probability mass.

The copy constraint removes every continuation the source does not have; `narrow` stops that from
turning a model that says "the value goes on" (spread over misspellings) into an early closing quote.
"""

import asyncio
import math

import pytest

from pocketlm.constraints import TokenBytesIndex
from pocketlm.generate import generate
from pocketlm.json_constraint import CLOSE_SHARE, JsonConstraint
from pocketlm.json_schema import compile_schema
from pocketlm.sampler import SamplingOptions

EOS = 0
SCHEMA = compile_schema({"type": "object", "properties": {"reminder": {"type": ["string", "null"]}},
                         "required": ["reminder"], "additionalProperties": False})
SOURCE = "remind me to walk the dog"
# a toy vocabulary: every byte, plus the pieces a model would write
PIECES = [b'{"reminder": "', b"walk", b" the", b" dog", b'"}', b" tha", b" thy", b" cat", b" ox"]
VOCAB = [b""] + [bytes([b]) for b in range(256)] + PIECES
ID = {piece: VOCAB.index(piece) for piece in PIECES}


def constraint_after(pieces: list[bytes]) -> JsonConstraint:
    c = JsonConstraint(TokenBytesIndex(VOCAB), SCHEMA, eos_id=EOS, max_tokens=200, copy_source=SOURCE,
                       whole_words=True)
    for piece in pieces:
        c.advance(ID[piece])
    return c


def logits_with(**probs: float) -> list[float]:
    """Log-probabilities: the named pieces get the given probability, the rest share what is left."""
    named = {ID[{"close": b'"}', "the": b" the", "tha": b" tha", "thy": b" thy", "cat": b" cat",
                 "ox": b" ox", "dog": b" dog"}[k]]: p for k, p in probs.items()}
    rest = (1.0 - sum(named.values())) / (len(VOCAB) - len(named))
    return [math.log(named.get(t, rest)) for t in range(len(VOCAB))]


def test_mass_on_misspelt_continuations_keeps_the_value_open():
    c = constraint_after([b'{"reminder": "', b"walk"])
    allowed = c.allowed()
    assert ID[b'"}'] in allowed and ID[b" the"] in allowed and ID[b" tha"] not in allowed
    # closing (0.3) beats the one correct continuation (0.1), but "goes on" holds 0.7 in total
    logits = logits_with(close=0.3, the=0.1, tha=0.3, thy=0.2, cat=0.05)
    narrowed = c.narrow(logits, allowed)
    assert ID[b" the"] in narrowed and not any(b'"' in VOCAB[t] for t in narrowed)
    assert set(narrowed) < set(allowed)


def test_a_confident_close_is_kept():
    c = constraint_after([b'{"reminder": "', b"walk"])
    allowed = c.allowed()
    logits = logits_with(close=0.6, the=0.1, tha=0.2)
    assert c.narrow(logits, allowed) == allowed


def test_a_bare_majority_for_closing_is_not_enough():
    """Closing needs CLOSE_SHARE (0.6) of the mass: at 0.55 the value stays open, at 0.65 it closes."""
    assert CLOSE_SHARE == 0.6
    c = constraint_after([b'{"reminder": "', b"walk"])
    allowed = c.allowed()
    narrowed = c.narrow(logits_with(close=0.55, the=0.1, tha=0.2), allowed)
    assert ID[b" the"] in narrowed and ID[b'"}'] not in narrowed
    assert c.narrow(logits_with(close=0.65, the=0.1, tha=0.2), allowed) == allowed


def test_nothing_changes_when_the_best_allowed_token_goes_on():
    c = constraint_after([b'{"reminder": "', b"walk"])
    allowed = c.allowed()
    logits = logits_with(close=0.2, the=0.25, cat=0.5)  # "cat" is not allowed; " the" beats the close
    assert c.narrow(logits, allowed) == allowed


def test_outside_copied_strings_allowed_is_returned_unchanged():
    c = constraint_after([])
    allowed = c.allowed()
    assert c.narrow(logits_with(close=0.9), allowed) is allowed
    c = constraint_after([b'{"reminder": "', b"walk", b" the", b" dog", b'"}'])
    assert c.narrow(logits_with(close=0.9), c.allowed()) == [EOS]


@pytest.mark.parametrize("spread, expected", [
    (True, '{"reminder": "walk the dog"}'),  # the model goes on, though never with " the" first
    (False, '{"reminder": "walk"}'),  # the model closes: its mass is on the quote
])
def test_generate_applies_the_vote(spread, expected):
    """A toy model that always rates a close above the correct next word: the vote decides the length."""
    async def forward(ids, cache):
        cache.append(ids)
        if spread:
            return logits_with(close=0.25, the=0.1, dog=0.1, tha=0.2, thy=0.2, ox=0.1)
        return logits_with(close=0.6, the=0.1, dog=0.1)

    c = constraint_after([])
    c.advance(ID[b'{"reminder": "'])
    c.advance(ID[b"walk"])
    result = asyncio.run(generate(forward, [], [1], SamplingOptions(temperature=0.0, max_new_tokens=50), eos_id=EOS,
                                  decode_bytes=lambda ids: b"".join(VOCAB[t] for t in ids), constraint=c))
    assert '{"reminder": "walk' + result.text == expected
    assert result.stop_reason == "eos"
