"""A token n-gram model with backoff: the baseline every SQL eval reports next to the neural model.

Trained on the same training queries (token ids from the same tokenizer, schema not used), it
predicts the most frequent next token after the longest context seen in training
(ties -> lowest id), backing off to shorter contexts.

>>> lm = NgramModel(order=3)
>>> lm.fit([[5, 6, 7], [5, 6, 7], [5, 6, 8]])
>>> lm.predict([5, 6]), lm.predict([9, 6]), lm.predict([])
(7, 7, 5)
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Sequence

START = -1  # marks the start of a query in contexts


class NgramModel:
    def __init__(self, order: int = 6):
        self.order = order  # longest context = order - 1 tokens
        self.counts: dict[tuple[int, ...], Counter] = defaultdict(Counter)

    def fit(self, sequences: Iterable[Sequence[int]]) -> None:
        """Count next tokens after every context of length 0 .. order-1 (each sequence ends with its <eos>)."""
        for seq in sequences:
            padded = [START] + list(seq)
            for i in range(1, len(padded)):
                for n in range(0, self.order):
                    if i - n < 0:
                        break
                    self.counts[tuple(padded[i - n : i])][padded[i]] += 1

    def predict(self, context: Sequence[int], allowed: set[int] | None = None) -> int | None:
        """Most frequent next token after the longest known context, among `allowed` if given."""
        padded = [START] + list(context)
        for n in range(min(self.order - 1, len(padded)), -1, -1):
            counter = self.counts.get(tuple(padded[len(padded) - n :]))
            if not counter:
                continue
            best = None
            for token, count in counter.items():
                if allowed is not None and token not in allowed:
                    continue
                if best is None or count > best[0] or (count == best[0] and token < best[1]):
                    best = (count, token)
            if best is not None:
                return best[1]
        return None
