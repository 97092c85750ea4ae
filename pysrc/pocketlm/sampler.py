"""Sampler: turns one position's logits into a token id (standard library only).

Order of operations (the same as Hugging Face's logits processors, minus the ones we don't ship):
repetition penalty -> constraint mask -> greedy (temperature 0) or temperature -> top-k ->
softmax -> min-p -> top-p -> draw with a seeded `random.Random`.

>>> s = Sampler(SamplingOptions(temperature=0.0))
>>> s.sample([0.1, 2.0, -1.0])
1
>>> s = Sampler(SamplingOptions(temperature=1.0, top_k=1, seed=0))
>>> s.sample([0.1, 2.0, -1.0])
1
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, fields
from typing import Any, Iterable, Sequence


class SamplingError(ValueError):
    """Sampling options out of range, or logits that cannot be sampled (NaN, all masked)."""


@dataclass(frozen=True)
class SamplingOptions:
    max_new_tokens: int = 32  # upper bound on generated tokens (also bounded by the context)
    temperature: float = 0.0  # 0 = greedy (argmax, ties -> lowest id); > 0 divides the logits
    top_k: int = 0  # keep the k most likely tokens; 0 = off
    top_p: float = 1.0  # nucleus: smallest set with cumulative probability >= top_p; 1 = off
    min_p: float = 0.0  # drop tokens with p < min_p * p_max; 0 = off
    repetition_penalty: float = 1.0  # > 1 discourages tokens already generated (not the prompt)
    stop: tuple[str, ...] = ()  # stop strings: the text is cut before the first one found
    seed: int | None = None  # same seed -> same output; None = fresh randomness

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Reject out-of-range options with a specific message (never silently clamp)."""

        def number(name, value):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise SamplingError(f"{name} must be a number, got {value!r}")
            return value

        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise SamplingError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if number("temperature", self.temperature) < 0 or math.isinf(self.temperature):
            raise SamplingError(f"temperature must be >= 0 and finite (0 = greedy), got {self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise SamplingError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not 0 < number("top_p", self.top_p) <= 1:
            raise SamplingError(f"top_p must be in (0, 1] (1 = off), got {self.top_p!r}")
        if not 0 <= number("min_p", self.min_p) <= 1:
            raise SamplingError(f"min_p must be in [0, 1] (0 = off), got {self.min_p!r}")
        if number("repetition_penalty", self.repetition_penalty) <= 0 or math.isinf(self.repetition_penalty):
            raise SamplingError(f"repetition_penalty must be > 0 and finite (1 = off), got {self.repetition_penalty!r}")
        if not isinstance(self.stop, tuple) or not all(isinstance(s, str) and s for s in self.stop):
            raise SamplingError(f"stop must be a tuple of non-empty strings, got {self.stop!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise SamplingError(f"seed must be an integer or None, got {self.seed!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, **overrides) -> "SamplingOptions":
        """Build from a (JSON) dict plus keyword overrides; unknown keys are an error, None means default.

        >>> SamplingOptions.from_dict({"temperature": 0.7, "stop": [";"]}, top_k=5).top_k
        5
        """
        merged = dict(data or {})
        merged.update({k: v for k, v in overrides.items() if v is not None})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(merged) - names)
        if unknown:
            raise SamplingError(f"unknown sampling options {unknown}; known: {sorted(names)}")
        if "stop" in merged:
            stop = merged["stop"]
            merged["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
        return cls(**{k: v for k, v in merged.items() if v is not None or k == "seed"})


def argmax(values: Sequence[float], allowed: Iterable[int] | None = None) -> int:
    """Index of the largest value (ties -> lowest index, as numpy and ONNX ArgMax).

    >>> argmax([1.0, 3.0, 3.0]), argmax([1.0, 3.0, 2.0], allowed=[0, 2])
    (1, 2)
    """
    if allowed is None and values:
        # two C-level passes; index() finds the first of equal values (3x faster than max(key=) at 32k)
        values = values if isinstance(values, list) else list(values)
        best = values.index(max(values))
        if values[best] == -math.inf:
            best = -1
    else:
        best, best_value = -1, -math.inf
        for i in (range(len(values)) if allowed is None else sorted(allowed)):
            v = values[i]
            if v > best_value:
                best, best_value = i, v
    if best < 0:
        raise SamplingError("no token can be sampled: every candidate is masked or -inf")
    return best


# Tokens whose scaled logit is this far below the best are left out of the sort: their weight,
# exp(-40) = 4e-18 of the best token's, added last to a softmax total of at least 1 does not change it
# (half an ulp of 1 is 1.1e-16), so every total and every draw is what sorting all of them gives (but
# for a draw that rounding carries past the last counted token). Sorting the whole vocabulary, its
# softmax and tuples took ~20 ms a token natively at 32 000 tokens (the story panel's default
# sampling); a trained model's row then leaves a few hundred tokens at most to sort.
NEGLIGIBLE_GAP = 40.0


class Sampler:
    """Stateful only through its random generator: one Sampler per generation."""

    def __init__(self, options: SamplingOptions):
        self.options = options
        self.rng = random.Random(options.seed)

    def sample(
        self,
        logits: Sequence[float],
        generated: Sequence[int] = (),
        allowed: Iterable[int] | None = None,
    ) -> int:
        """logits: [vocab] floats for one position; generated: ids produced so far; allowed: mask or None."""
        o = self.options
        logits, finite = _checked(logits)
        if o.repetition_penalty != 1.0 and generated:
            for t in set(generated):  # CTRL-style: shrink positive logits, grow negative ones
                v = logits[t]
                logits[t] = v / o.repetition_penalty if v > 0 else v * o.repetition_penalty
        if allowed is None and finite:  # the common case, kept to C-level loops: no mask, no -inf
            candidates: Sequence[int] = range(len(logits))
        else:
            candidates = range(len(logits)) if allowed is None else sorted(set(allowed))
            candidates = [i for i in candidates if logits[i] != -math.inf]
        if not candidates:
            raise SamplingError("no token can be sampled: every candidate is masked or -inf")
        if o.temperature == 0.0:
            return argmax(logits, None if isinstance(candidates, range) else candidates)
        # descending by scaled logit, ties -> lowest id (both are stable); top-k keeps the k first
        values = logits if o.temperature == 1.0 else [v / o.temperature for v in logits]
        if o.top_k:
            order = heapq.nlargest(o.top_k, candidates, key=values.__getitem__)
        else:
            if isinstance(candidates, range):  # every token: sort only the weights that count
                floor = max(values) - NEGLIGIBLE_GAP
                if min(values) < floor:
                    candidates = [i for i, v in enumerate(values) if v >= floor]
            order = sorted(candidates, key=values.__getitem__, reverse=True)
        # (comprehensions, not map() over builtins: in Pyodide each builtin called through map() went
        # through a JS trampoline, 2x slower than the comprehension; natively the two are close)
        top = values[order[0]]
        weights = [math.exp(values[i] - top) for i in order]  # unnormalized softmax, descending
        total = sum(weights)
        if o.min_p > 0.0:
            keep = sum(1 for w in weights if w >= o.min_p * weights[0])  # weights[0] is p_max
            weights, order = weights[:keep], order[:keep]
            total = sum(weights)
        if o.top_p < 1.0:
            cumulative, keep = 0.0, 0
            for w in weights:
                cumulative += w
                keep += 1
                if cumulative >= o.top_p * total:
                    break
            weights, order = weights[:keep], order[:keep]
            total = sum(weights)
        r = self.rng.random() * total
        for w, token in zip(weights, order):
            r -= w
            if r < 0:
                return token
        return order[-1]  # rounding left r == 0 at the end


def _checked(logits: Sequence[float]) -> tuple[list[float], bool]:
    """A mutable float copy, and whether every value is finite.

    NaN or +inf means a broken model, which is an error, not a token; -inf is a masked token.
    One C-level sum() finds out whether anything is non-finite; only then are values scanned.
    """
    values = logits.tolist() if hasattr(logits, "tolist") else list(logits)
    if math.isfinite(sum(values)):
        return values, True
    for i, v in enumerate(values):
        if v != v or v == math.inf:
            raise SamplingError(
                f"the model produced an invalid logit ({v}) at token {i}: the model file is broken "
                "or was exported wrongly; re-export it"
            )
    return values, False
