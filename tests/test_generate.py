"""The generate loop with a toy forward pass: streaming, stop rules, cancellation, constraints."""

import asyncio

import pytest

from pocketlm.constraints import PrefixConstraint, TokenBytesIndex
from pocketlm.generate import generate
from pocketlm.sampler import SamplingOptions

# a toy vocabulary: id -> bytes; 0 = eos
VOCAB = [b"", b"SELECT", b" name", b" FROM", b" head", b";", b"\n", b" na", b"me", b"\xe2\x82", b"\xac"]


def decode_bytes(ids):
    return b"".join(VOCAB[i] for i in ids)


class Script:
    """forward() that prefers the next token of a fixed script; records the positions it saw."""

    def __init__(self, script):
        self.script, self.calls = list(script), []

    async def __call__(self, ids, cache):
        cache.extend(ids)
        self.calls.append(list(ids))
        step = len(self.calls) - 1
        want = self.script[step] if step < len(self.script) else 0
        return [5.0 if t == want else 0.0 for t in range(len(VOCAB))]


def run(script, options=SamplingOptions(max_new_tokens=10), **kw):
    return asyncio.run(generate(Script(script), [], [1], options, eos_id=0, decode_bytes=decode_bytes, **kw))


def test_streams_tokens_and_stops_at_eos():
    pieces = []
    result = run([2, 3, 4, 0], on_token=lambda t, s: pieces.append(s))
    assert result.token_ids == [2, 3, 4, 0] and result.stop_reason == "eos"
    assert result.text == " name FROM head" and "".join(pieces) == result.text


def test_stop_string_cuts_the_text_and_streams_nothing_past_it():
    pieces = []
    result = run([2, 5, 3], options=SamplingOptions(stop=(";",)), on_token=lambda t, s: pieces.append(s))
    assert result.stop_reason == "stop_string" and result.text == " name"
    assert "".join(pieces) == " name"


def test_max_new_tokens_and_context_full():
    assert run([2, 3, 4, 2, 3], options=SamplingOptions(max_new_tokens=2)).token_ids == [2, 3]
    # 3 positions: the prompt and 2 fed-back tokens; the 3rd sampled token needs no position of its own
    result = run([2, 3, 4, 2, 3], max_seq_len=3)
    assert result.stop_reason == "context_full" and result.token_ids == [2, 3, 4]


def test_cancellation_is_checked_before_every_forward():
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 2

    result = run([2, 3, 4, 2], cancelled=cancelled)
    assert result.stop_reason == "cancelled" and result.token_ids == [2, 3]


def test_partial_utf8_is_held_back_until_complete():
    pieces = []
    result = run([9, 10, 0], on_token=lambda t, s: pieces.append(s))
    assert pieces == ["€"] and result.text == "€"  # nothing is streamed for the first half of the character


def test_healing_constraint_skips_the_typed_bytes():
    # the user typed " na": the loop must produce " name" (or " na"+"me") and report only "me"
    constraint = PrefixConstraint(TokenBytesIndex(VOCAB), b" na")
    result = run([3, 2, 3, 0], constraint=constraint, skip_bytes=b" na")  # script wants " FROM" first: masked
    assert result.token_ids[0] in (2, 7)
    assert result.text.startswith("me")


def test_empty_prompt_is_an_error():
    with pytest.raises(ValueError, match="at least one prompt token"):
        asyncio.run(generate(Script([]), [], [], SamplingOptions(), eos_id=0))


def test_cache_receives_prompt_then_one_token_per_step():
    forward = Script([2, 3, 0])
    cache = []
    asyncio.run(generate(forward, cache, [1, 4], SamplingOptions(), eos_id=0, decode_bytes=decode_bytes))
    assert forward.calls == [[1, 4], [2], [3]] and cache == [1, 4, 2, 3]
