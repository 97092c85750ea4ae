"""The generate loop: wires a forward pass, a tokenizer, a sampler and an optional constraint.

It knows nothing about onnxruntime or the browser. `forward` is an async callable
`forward(token_ids: list[int], cache) -> logits of the last position ([vocab] floats)` that
appends the new positions to `cache`, an opaque handle owned by the backend (numpy buffers in
pocketlm.native, preallocated wasm memory in the browser). The same loop, sampler and tokenizer
run in both places, which is what lets the browser be checked token for token against CPython.

The greedy head. Plain greedy decoding (temperature 0, no repetition penalty, no constraint mask at
this step) needs only the argmax of the row, and scanning 32k logits in Pyodide costs as much as the
model run (bench/REPORT.md). A forward marked `@head_aware` also accepts `want="argmax"` and then
returns a `Greedy` (the graph's in-graph ArgMax + the row's sum, GraphContract) — or, when its graph
has no head (older exports), the logits as usual; the loop handles both. Unmarked callables (wrappers,
tests) are only ever called with two arguments. A non-finite sum (a NaN/inf logit) makes the loop
roll the cache back and run the same tokens again for the logits, so the sampler raises its usual
error naming the token; the same re-run gives the same numbers (same inputs, same chunk).

Greedy chunks. Each forward pass through Pyodide costs a crossing between JavaScript and Python (the
page's per-token breakdown: hand-off + Python ≈ 0.1 ms of a 3.9 M model's ≈ 0.9 ms token). A forward
marked `@chunked` also accepts `want="argmax", steps=k, ban=id` and may run up to k greedy steps itself,
feeding each step's token to the next (with `ban`, a step whose best token is `ban` takes the runner-up
instead): it returns the list of their `Greedy` results (ending early at a non-finite sum), or, when it
cannot (no head, or `ban` without the runner-up), one answer as for `want="argmax"`. The loop asks for
chunks of GREEDY_CHUNK steps only where nothing can end a generation early but `<eos>` (plain greedy, no
stop string), and when it ends inside a chunk it rolls the cache back over the steps it did not keep,
so tokens and cache are exactly those of single steps.

>>> import asyncio
>>> async def forward(ids, cache):     # a toy model that always prefers token (last + 1) % 4
...     cache.extend(ids); return [1.0 if t == (cache[-1] + 1) % 4 else 0.0 for t in range(4)]
>>> r = asyncio.run(generate(forward, [], [0], SamplingOptions(max_new_tokens=3), eos_id=99))
>>> r.token_ids, r.stop_reason
([1, 2, 3], 'max_new_tokens')
"""

from __future__ import annotations

import codecs
import math
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, NamedTuple, Protocol, Sequence

from .sampler import Sampler, SamplingOptions

Forward = Callable[[list[int], Any], Awaitable[Sequence[float]]]


class Greedy(NamedTuple):
    """What a head-aware forward returns for want="argmax": the last position's greedy token."""

    token: int  # ArgMax of the row (ties -> lowest id, as sampler.argmax)
    logits_sum: float  # sum of the row: not finite <=> some logit is NaN or inf
    runner_up: int | None = None  # the second-best id (ties -> lower id), when the graph has it


def head_aware(forward):
    """Mark an async forward that accepts `want="logits"|"argmax"` (module docstring)."""
    forward.head_aware = True
    return forward


def uses_head(forward) -> bool:
    """Whether `forward` may be called with want="argmax" (bound methods read their function's mark)."""
    return getattr(forward, "head_aware", False) is True


GREEDY_CHUNK = 8  # greedy steps per forward call where chunks apply (module docstring)


def chunked(forward):
    """Mark a head-aware forward that also accepts `steps` and `ban` (module docstring, "Greedy chunks")."""
    forward.chunked = True
    return forward


def uses_chunks(forward) -> bool:
    """Whether `forward` may be called with want="argmax", steps=k (bound methods read their function's mark)."""
    return uses_head(forward) and getattr(forward, "chunked", False) is True


def greedy_steps(step: Callable[[list[int], Any], Greedy], token_ids: list[int], cache: Any, steps: int,
                 ban: int | None) -> list[Greedy]:
    """Up to `steps` greedy steps from `token_ids`, each feeding its token to the next (a chunk's meaning,
    module docstring); `step(ids, cache)` is one head-only forward pass. With `ban`, a step whose best
    token is `ban` answers its runner-up. Ends after a step whose logits are not all finite.

    >>> class Toy:  # prefers token (last fed + 1) % 4; token 2's logit is banned in the second call
    ...     def __call__(self, ids, cache): cache.extend(ids); t = (ids[-1] + 1) % 4; return Greedy(t, 1.0, (t + 1) % 4)
    >>> cache = []
    >>> greedy_steps(Toy(), [0], cache, 3, None), cache
    ([Greedy(token=1, logits_sum=1.0, runner_up=2), Greedy(token=2, logits_sum=1.0, runner_up=3), \
Greedy(token=3, logits_sum=1.0, runner_up=0)], [0, 1, 2])
    >>> [g.token for g in greedy_steps(Toy(), [0], [], 3, ban=2)]
    [1, 3, 0]
    """
    outs, ids = [], list(token_ids)
    for _ in range(steps):
        out = step(ids, cache)
        if ban is not None and out.token == ban:
            out = Greedy(out.runner_up, out.logits_sum)
        outs.append(out)
        if not math.isfinite(out.logits_sum):
            break
        ids = [out.token]
    return outs


class Constraint(Protocol):
    """Restricts which tokens may come next (token healing, JSON schemas...)."""

    def allowed(self) -> Sequence[int] | None:  # None = every token
        ...

    def advance(self, token_id: int) -> None:
        ...

    # optional: narrow(logits, allowed) -> the subset of `allowed` to sample from, given the model's
    # logits (pocketlm.json_constraint decides "value goes on" vs "closes" by the whole mass)


@dataclass
class GenerateResult:
    text: str  # decoded output, cut before a stop string; minus `skip_bytes` (see generate)
    token_ids: list[int]  # every sampled token, including one that hit a stop string
    stop_reason: str  # "eos" | "stop_string" | "max_new_tokens" | "context_full" | "cancelled"
    stats: dict[str, float] = field(default_factory=dict)  # prefill_ms, decode_ms, tokens_per_s


async def generate(
    forward: Forward,
    cache: Any,
    prompt_ids: list[int],
    options: SamplingOptions,
    *,
    eos_id: int,
    decode_bytes: Callable[[list[int]], bytes] | None = None,
    start_pos: int = 0,
    max_seq_len: int | None = None,
    constraint: Constraint | None = None,
    skip_bytes: bytes = b"",
    on_token: Callable[[int, str], Any] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> GenerateResult:
    """Generate after `prompt_ids` (the tokens not yet in `cache`, which holds `start_pos` positions).

    - decode_bytes: token ids -> bytes (the tokenizer's); needed for text, stop strings, on_token.
    - skip_bytes: bytes the output must start with and that are not reported (token healing: the
      user's partial last word is re-generated, see pocketlm.tasks.sql); pass a constraint that
      forces them.
    - on_token(token_id, text_delta) streams text as complete UTF-8 characters arrive.
    - cancelled() is checked before every forward pass; when it returns True the loop stops.
    """
    if not prompt_ids:
        raise ValueError("generate needs at least one prompt token (a prompt always starts with <bos>)")
    sampler = Sampler(options)
    # the greedy head answers exactly what sampler.sample would for temperature 0, no penalty, no mask
    plain_greedy = options.temperature == 0.0 and options.repetition_penalty == 1.0 and uses_head(forward)
    head_steps = 0
    raw, shown = b"", 0  # raw: every generated byte; shown: characters already streamed
    generated: list[int] = []
    stats: dict[str, float] = {}
    pos, feed, stop_reason = start_pos, list(prompt_ids), "max_new_tokens"
    t0 = t_decode = time.perf_counter()
    chunks = plain_greedy and constraint is None and not options.stop and uses_chunks(forward)
    while True:
        if cancelled is not None and cancelled():
            stop_reason = "cancelled"
            break
        if max_seq_len is not None and pos + len(feed) > max_seq_len:
            stop_reason = "context_full"
            break
        # allowed() depends on the constraint's state only (advance), not on the logits: ask it first
        allowed = constraint.allowed() if constraint is not None else None
        steps = min(GREEDY_CHUNK, options.max_new_tokens - len(generated),
                    max_seq_len - pos if max_seq_len is not None else GREEDY_CHUNK) if chunks and generated else 1
        if steps > 1:  # a list of up to `steps` Greedy results, or one answer (module docstring)
            outs = await forward(feed, cache, want="argmax", steps=steps)
            outs = outs if isinstance(outs, list) and outs and isinstance(outs[0], Greedy) else [outs]
        else:
            outs = [await (forward(feed, cache, want="argmax") if plain_greedy and allowed is None
                           else forward(feed, cache))]
        ended = False
        for kept, out in enumerate(outs, 1):
            if isinstance(out, Greedy) and not math.isfinite(out.logits_sum):  # a NaN/inf logit (docstring):
                cache.truncate(cache.length - len(feed))  # run the same tokens again for the row, the sampler says why
                out = await forward(feed, cache)
            pos += len(feed)
            if not generated:
                stats["prefill_ms"] = (time.perf_counter() - t0) * 1000.0
                t_decode = time.perf_counter()
            if isinstance(out, Greedy):
                token = out.token
                head_steps += 1
            else:
                if allowed is not None and hasattr(constraint, "narrow"):
                    allowed = constraint.narrow(out, allowed)
                token = sampler.sample(out, generated, allowed)
            if constraint is not None:
                constraint.advance(token)
            generated.append(token)
            feed = [token]
            if token == eos_id:
                stop_reason, ended = "eos", True
                break
            if decode_bytes is not None:
                raw += decode_bytes([token])
                if options.stop or on_token is not None:  # else nothing reads the text before the end: decoded once, below
                    text = _visible_text(raw, skip_bytes, final=False)
                    cut = _first_stop(text, options.stop)
                    end = len(text) if cut is None else cut
                    if on_token is not None and end > shown:
                        on_token(token, text[shown:end])
                    shown = max(shown, end)
                    if cut is not None:
                        stop_reason, ended = "stop_string", True
                        break
            elif on_token is not None:
                on_token(token, "")
            if len(generated) >= options.max_new_tokens:
                ended = True
                break
        if kept < len(outs):  # ended inside a chunk: the later steps' tokens were fed, and are not kept
            cache.truncate(cache.length - (len(outs) - kept))
        if ended:
            break
    elapsed = time.perf_counter() - t0
    n_decode = max(len(generated) - 1, 0)
    if generated:
        stats["decode_ms"] = (time.perf_counter() - t_decode) * 1000.0
        stats["tokens_per_s"] = n_decode / (stats["decode_ms"] / 1000.0) if stats["decode_ms"] > 0 else 0.0
    stats["total_ms"] = elapsed * 1000.0
    stats["head_steps"] = head_steps  # steps decided by the in-graph argmax (no logits in Python)
    final = ""
    if decode_bytes is not None:
        final = _visible_text(raw, skip_bytes, final=True)
        cut = _first_stop(final, options.stop)
        if cut is not None:
            final = final[:cut]
    return GenerateResult(final, generated, stop_reason, stats)


def _visible_text(raw: bytes, skip: bytes, final: bool) -> str:
    """The generated text after the healed bytes; '' while they are still being produced.

    With final=False an incomplete UTF-8 sequence at the end is held back (not shown as U+FFFD).

    >>> _visible_text(b" name" + bytes([0xE2, 0x82]), b" na", final=False), _visible_text(b" n", b" na", final=False)
    ('me', '')
    """
    if not raw.startswith(skip):
        return ""
    return codecs.getincrementaldecoder("utf-8")(errors="replace").decode(raw[len(skip):], final=final)


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Index of the earliest stop string in text, or None.

    >>> _first_stop("SELECT a;\\nFROM", (";", "\\n"))
    8
    """
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None
