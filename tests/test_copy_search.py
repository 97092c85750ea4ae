"""pocketlm.copy_search: the marked copy decoded greedily, then its least certain decisions looked at again.

A deterministic toy model (its logits a seeded function of every id fed so far) drives the search, and a
reference scorer re-runs whole copies from scratch: the kept copy is a marked copy, never less likely
than the greedy one (less the handicap `prefer_flip`), the most likely of those tried, and the cache
holds exactly the prompt and the kept copy but its last token.
"""

from __future__ import annotations

import asyncio
import math
import random

import pytest

from pocketlm.copy_search import log_sum_exp, marked_copy
from pocketlm.echo_constraint import EchoConstraint
from pocketlm.sampler import SamplingOptions

VOCAB = 40
MARKERS = {"reminder": (3, 4), "time": (5, 6), "recurrence": (7, 8)}
END = [9, 10]


class IdsCache(list):
    """A cache reduced to the ids fed (length and truncate, as the backends' caches)."""
    length = property(len)

    def truncate(self, n):
        del self[n:]


def toy_logits(fed: list[int], seed: int) -> list[float]:
    """A model's next-token logits: a seeded function of every id fed so far (so re-running a prefix after
    a truncation gives the same numbers, as a real model does)."""
    rng = random.Random(f"{seed}:{fed}")
    return [rng.gauss(0.0, 2.0) for _ in range(VOCAB)]


def toy(seed: int, calls: list | None = None):
    async def forward(ids, cache):
        cache.extend(ids)
        if calls is not None:
            calls.append(list(ids))
        return toy_logits(list(cache), seed)
    return forward


def request(seed: int) -> list[list[int]]:
    """Pre-tokens of one to three ids from 11..39."""
    rng = random.Random(seed)
    return [[rng.randrange(11, VOCAB) for _ in range(rng.randint(1, 3))] for _ in range(rng.randint(1, 8))]


def echo_of(pieces):
    return lambda: EchoConstraint(pieces, MARKERS, end=END)


def log_prob(prompt: list[int], copy: list[int], seed: int) -> float:
    """The reference: the copy's log-probability under the toy model, token by token from scratch."""
    total = 0.0
    for i, t in enumerate(copy):
        logits = toy_logits(prompt + copy[:i], seed)
        total += logits[t] - log_sum_exp(logits)
    return total


def greedy(prompt, pieces, seed) -> list[int]:
    """The reference greedy copy: the most likely allowed token at every step (ties: lowest id)."""
    echo, out = echo_of(pieces)(), []
    while not echo.done:
        logits = toy_logits(prompt + out, seed)
        t = max(sorted(echo.allowed()), key=lambda a: logits[a])
        echo.advance(t)
        out.append(t)
    return out


def run(seed, flips, max_margin=math.inf, options=None, cancelled=None, calls=None, prefer_flip=0.0):
    cache, prompt, pieces = IdsCache(), [1, 2], request(seed)
    copy = asyncio.run(marked_copy(toy(seed, calls), cache, prompt, echo_of(pieces), flips=flips,
                                   max_margin=max_margin, prefer_flip=prefer_flip, options=options,
                                   cancelled=cancelled))
    return cache, prompt, pieces, copy


def test_log_sum_exp_is_exact_and_does_not_overflow():
    assert log_sum_exp([0.0, 0.0]) == pytest.approx(math.log(2))
    assert log_sum_exp([1000.0, 1000.0]) == pytest.approx(1000.0 + math.log(2))
    assert log_sum_exp([-5.0]) == -5.0


@pytest.mark.parametrize("seed", range(30))
def test_without_flips_the_copy_is_the_greedy_one(seed):
    cache, prompt, pieces, copy = run(seed, flips=0)
    assert copy.tokens == greedy(prompt, pieces, seed)
    assert copy.tried == 1 and copy.search_tokens == 0 and copy.stop_reason == "done"
    assert cache == prompt + copy.tokens[:-1]


@pytest.mark.parametrize("seed", range(60))
@pytest.mark.parametrize("flips, prefer_flip", [(1, 0.0), (3, 0.0), (3, 0.25)])
def test_the_kept_copy_is_a_marked_copy_never_less_likely_than_greedy(seed, flips, prefer_flip):
    cache, prompt, pieces, copy = run(seed, flips, prefer_flip=prefer_flip)
    reference = greedy(prompt, pieces, seed)
    echo = echo_of(pieces)()
    for t in copy.tokens:  # raises if the copy is not one the constraint allows
        echo.advance(t)
    assert echo.done and echo.spans == copy.echo.spans
    assert log_prob(prompt, copy.tokens, seed) >= log_prob(prompt, reference, seed) - prefer_flip - 1e-9
    assert cache == prompt + copy.tokens[:-1]  # what the next phase continues from
    assert copy.tried <= 1 + flips


def test_the_search_finds_more_likely_copies_and_costs_tokens():
    """Over many requests, a flip changes some copies, each for a more likely one."""
    changed = 0
    for seed in range(60):
        _, prompt, pieces, copy = run(seed, flips=1)
        reference = greedy(prompt, pieces, seed)
        if copy.tokens != reference:
            changed += 1
            assert log_prob(prompt, copy.tokens, seed) > log_prob(prompt, reference, seed)
            assert copy.search_tokens > 0
    assert changed >= 3


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("prefer_flip", [0.0, 0.25, 1.0])
def test_the_kept_copy_is_the_most_likely_of_those_tried(seed, prefer_flip):
    """Every copy tried is a flip of one greedy decision continued greedily: rebuild them all (flips=99)
    with the reference and check the kept one scores best, the greedy one handicapped by prefer_flip."""
    _, prompt, pieces, copy = run(seed, flips=99, prefer_flip=prefer_flip)
    base = greedy(prompt, pieces, seed)
    tried = [base]
    echo = echo_of(pieces)()
    for i, t in enumerate(base):
        allowed = echo.allowed()
        if len(allowed) > 1:
            logits = toy_logits(prompt + base[:i], seed)
            runner_up = max((a for a in sorted(allowed) if a != t), key=lambda a: logits[a])
            alt_echo = echo_of(pieces)()
            alt = base[:i] + [runner_up]
            for a in alt:
                alt_echo.advance(a)
            while not alt_echo.done:
                lg = toy_logits(prompt + alt, seed)
                nxt = max(sorted(alt_echo.allowed()), key=lambda a: lg[a])
                alt_echo.advance(nxt)
                alt.append(nxt)
            tried.append(alt)
        echo.advance(t)
    assert copy.tried == len(tried)
    scores = [log_prob(prompt, c, seed) - (prefer_flip if i == 0 else 0.0) for i, c in enumerate(tried)]
    assert copy.tokens == tried[scores.index(max(scores))]


def test_max_margin_leaves_confident_decisions_alone():
    """With no decision under the margin nothing is tried again, and nothing more is run."""
    for seed in range(10):
        calls: list = []
        _, prompt, pieces, copy = run(seed, flips=3, max_margin=-1.0, calls=calls)
        assert copy.tried == 1 and copy.search_tokens == 0
        assert copy.tokens == greedy(prompt, pieces, seed)
        assert len(calls) == len(copy.tokens)  # the prompt, then one call per copy token but the last


def test_sampling_keeps_the_sampled_copy():
    """temperature > 0: no search (a sampled copy is what the caller asked for), seeded and repeatable."""
    options = SamplingOptions(temperature=1.0, seed=7)
    a = run(3, flips=3, options=options)[3]
    b = run(3, flips=3, options=options)[3]
    assert a.tokens == b.tokens and a.tried == 1


@pytest.mark.parametrize("after", [0, 1, 3, 8, 30])
def test_cancelled_stops_at_once_with_a_cancelled_result(after):
    n = {"calls": 0}

    def cancelled():
        n["calls"] += 1
        return n["calls"] > after

    copy = run(5, flips=3, cancelled=cancelled)[3]
    full = run(5, flips=3)[3]
    if copy.stop_reason == "done":  # finished before the cancel was asked
        assert copy.tokens == full.tokens
    else:
        assert copy.stop_reason == "cancelled"


@pytest.mark.parametrize("flips", [-1, True, 1.5, "3"])
def test_a_bad_flips_value_is_refused_by_name(flips):
    with pytest.raises(ValueError, match=r"flips must be an integer >= 0 \(0 = plain greedy\), got"):
        run(0, flips=flips)
