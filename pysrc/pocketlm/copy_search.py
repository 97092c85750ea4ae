"""Decoding the marked copy (pocketlm.echo_constraint), with a second look at its least certain decisions.

The marked copy is all decisions and no invention: the request's tokens are forced, and at each
boundary between two of its pre-tokens the model chooses between the next word and a marker (open a
value, close it). Greedy decoding takes each choice on its own, and a boundary chosen wrongly early
("remind me to let the dog</reminder> in in 15 minutes") is never undone, although the rest of the copy
then fits worse: the model finds the tokens it is made to copy after it less likely.

`marked_copy` decodes the copy greedily, noting each decision whose margin (its log-probability minus the
runner-up's) is below `max_margin`. Then, for each of the `flips` least certain of them, it goes back
there (the cache is truncated to that step), takes the runner-up and continues greedily. It keeps the
most likely copy as a whole: the sum of the log-probabilities (over the whole vocabulary) of every token,
forced copy tokens included — they are what tells a good boundary from a bad one (scoring the decisions
alone, among the allowed tokens, gained a quarter as much; README, "reminder-extract") — with the
greedy copy handicapped by `prefer_flip` nats: a decision that was close and whose other side reads
about as well is more often wrong as greedy took it (chosen on held-out rows, like the other settings).
The cache is left holding the prompt and the kept copy but its last token, which the next phase feeds.
With sampling (temperature > 0) the sampled copy is kept as it is.

Cost: log-probabilities need the log-sum-exp of each step's logits; it is computed only from the first
uncertain decision on, so a copy without one costs nothing more than greedy decoding.

>>> import asyncio
>>> from pocketlm.echo_constraint import EchoConstraint
>>> class Cache(list):  # the backends' cache, reduced to the fed ids
...     length = property(len)
...     def truncate(self, n): del self[n:]
>>> async def forward(ids, cache):  # a toy model: not marking "10" is a little likelier, but once
...     cache.extend(ids); marked = 90 in cache   # marked, the rest of the copy is far likelier
...     return [5.0 if marked and t in (10, 11, 91, 5) else 2.0 if t == 10 else 1.9 if t == 90 else 0.0
...             for t in range(100)]
>>> echo = lambda: EchoConstraint([[10], [11]], {"time": (90, 91)}, end=[5])
>>> asyncio.run(marked_copy(forward, Cache(), [1], echo, flips=0)).tokens  # greedy
[10, 90, 11, 91, 5]
>>> cache = Cache()
>>> c = asyncio.run(marked_copy(forward, cache, [1], echo, flips=1, prefer_flip=0.0))
>>> c.tokens, c.echo.spans, c.tried, cache == [1] + c.tokens[:-1]
([90, 10, 11, 91, 5], {'time': (0, 2)}, 2, True)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

from .sampler import Sampler, SamplingError, SamplingOptions

Forward = Callable[[list[int], Any], Awaitable[Sequence[float]]]

# Chosen on the TOPv2 rows of the training data's held-out split (484 rows, README "reminder-extract"):
FLIPS = 3  # decisions looked at again, the least certain first
MAX_MARGIN = 3.0  # ... only those with a margin below this many nats (4 and more: no better, more tokens)
PREFER_FLIP = 0.25  # a second look's copy is kept unless less likely than the best so far by more than this


@dataclass
class Decision:
    step: int  # index in the copy's tokens of the token chosen here
    margin: float  # log-probability of the chosen token minus the runner-up's (the same among any set)
    runner_up: int


@dataclass
class MarkedCopy:
    tokens: list[int]  # the copy, its end (the separator) included
    echo: Any  # the EchoConstraint advanced through `tokens` (done; its spans are the marks)
    stop_reason: str = "done"  # "done" | "cancelled"
    tried: int = 1  # copies decoded (1 + flips tried)
    search_tokens: int = 0  # tokens run beyond the kept copy: the copies not kept, and what was fed again
    prefill_ms: float = 0.0  # the prompt's forward pass


def checked_flips(flips: int | None) -> int:
    """`flips` as given (None: the default, FLIPS); anything but an integer >= 0 is refused by name (the
    one check of the option, for the Python API and the session's, so the page's).

    >>> checked_flips(None), checked_flips(0)
    (3, 0)
    """
    if flips is None:
        return FLIPS
    if isinstance(flips, bool) or not isinstance(flips, int) or flips < 0:
        raise SamplingError(f"flips must be an integer >= 0 (0 = plain greedy), got {flips!r}")
    return flips


def log_sum_exp(values: Sequence[float]) -> float:
    """log(sum(exp(v))) without overflow. A step's logits: 2 048 of them, once per scored token (in
    Pyodide, from a float32 memoryview), so the common case is one C-level pass (`map`).

    >>> round(log_sum_exp([0.0, 0.0]), 4), log_sum_exp([1000.0]), round(log_sum_exp([-800.0, -800.0]), 4)
    (0.6931, 1000.0, -799.3069)
    """
    top = max(values)
    if -700.0 < top < 700.0:  # exp(v) cannot overflow, nor exp(-top): factor the shift out of the sum
        return top + math.log(sum(map(math.exp, values)) * math.exp(-top))
    return top + math.log(sum([math.exp(v - top) for v in values]))


class _Run:
    """One copy being decoded: its tokens, its echo constraint, its decisions and the log-probability of
    each token from `scored_from` on (None before: not computed)."""

    def __init__(self, echo, tokens: list[int], scored_from: int | None):
        self.echo, self.tokens, self.scored_from = echo, tokens, scored_from
        self.decisions: list[Decision] = []
        self.logps: list[float] = []  # of tokens[scored_from:]

    def suffix_score(self, step: int) -> float:
        return math.fsum(self.logps[step - self.scored_from:])


async def _decode(forward: Forward, cache: Any, run: _Run, logits, sampler: Sampler, max_margin: float,
                  cancelled, forced: int | None = None) -> bool:
    """Decode `run` to the end of the copy from `logits` (those after its last token, fed); the first
    token is `forced` if given. Returns False if cancelled."""
    while not run.echo.done:
        allowed = list(run.echo.allowed())
        if forced is not None:
            token, forced = forced, None
        else:
            token = sampler.sample(logits, run.tokens, allowed) if len(allowed) > 1 else allowed[0]
            if len(allowed) > 1:
                runner_up = max((a for a in allowed if a != token), key=lambda a: logits[a])
                margin = float(logits[token]) - float(logits[runner_up])
                if margin < max_margin:
                    run.decisions.append(Decision(len(run.tokens), margin, runner_up))
                    if run.scored_from is None:
                        run.scored_from = len(run.tokens)
        if run.scored_from is not None:
            run.logps.append(float(logits[token]) - log_sum_exp(logits))
        run.echo.advance(token)
        run.tokens.append(token)
        if run.echo.done:
            break
        if cancelled is not None and cancelled():
            return False
        logits = await forward([token], cache)
    return True


async def marked_copy(forward: Forward, cache: Any, prompt_ids: list[int], make_echo: Callable[[], Any], *,
                      flips: int | None = None, max_margin: float = MAX_MARGIN, prefer_flip: float = PREFER_FLIP,
                      options: SamplingOptions | None = None,
                      cancelled: Callable[[], bool] | None = None) -> MarkedCopy:
    """Decode the marked copy after `prompt_ids` (not yet in `cache`); see the module docstring.
    `make_echo()` returns a fresh EchoConstraint of the request; `flips` None means FLIPS."""
    flips = checked_flips(flips)
    options = options or SamplingOptions(temperature=0.0)
    sampler = Sampler(options)
    search = options.temperature == 0.0 and flips > 0
    start = cache.length
    base = _Run(make_echo(), [], None)
    if cancelled is not None and cancelled():
        return MarkedCopy([], base.echo, "cancelled")
    t0 = time.perf_counter()
    logits = await forward(list(prompt_ids), cache)
    out = MarkedCopy(base.tokens, base.echo, prefill_ms=(time.perf_counter() - t0) * 1000.0)
    if not await _decode(forward, cache, base, logits, sampler, max_margin if search else -math.inf, cancelled):
        out.stop_reason = "cancelled"
        return out
    # gain: the kept copy's log-probability minus the greedy copy's; a flipped copy must beat -prefer_flip
    kept, gain = base, -prefer_flip
    fed = base.tokens[:-1]  # what the cache holds after the prompt

    async def go_to(tokens: list[int], logits_wanted: bool):
        """Make the cache hold the prompt and `tokens`, feeding only what differs from what it holds;
        with logits_wanted, the last token is fed again if need be, for the logits that follow it."""
        nonlocal fed
        common = next((i for i, (a, b) in enumerate(zip(fed, tokens)) if a != b), min(len(fed), len(tokens)))
        if logits_wanted:
            common = min(common, len(tokens) - 1)
        cache.truncate(start + len(prompt_ids) + common if common >= 0 else start)
        again = tokens[common:] if common >= 0 else list(prompt_ids)
        fed = list(tokens)
        if again:
            out.search_tokens += len(again)
            return await forward(again, cache)
        return None

    for d in sorted(base.decisions, key=lambda d: d.margin)[:flips] if search else []:
        if cancelled is not None and cancelled():
            out.stop_reason = "cancelled"
            return out
        prefix = base.tokens[:d.step]
        logits = await go_to(prefix, logits_wanted=True)  # back to that decision's logits
        echo = make_echo()
        for t in prefix:
            echo.advance(t)
        run = _Run(echo, list(prefix), d.step)
        finished = await _decode(forward, cache, run, logits, sampler, -math.inf, cancelled, forced=d.runner_up)
        out.tried += 1
        out.search_tokens += len(run.tokens) - d.step
        fed = run.tokens[:-1]
        if not finished:
            out.stop_reason = "cancelled"
            return out
        candidate_gain = run.suffix_score(d.step) - base.suffix_score(d.step)
        if candidate_gain > gain:
            kept, gain = run, candidate_gain
    out.tokens, out.echo = kept.tokens, kept.echo
    if fed != kept.tokens[:-1]:  # the cache holds another copy: the kept one is fed again from where they part
        await go_to(kept.tokens[:-1], logits_wanted=False)
    return out
