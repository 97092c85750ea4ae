"""The marked copy: the model writes the request again with its values between marker tokens
(reminder-extract's "reminders-v2" format, pocketlm.tasks.reminders). Standard library only.

`EchoConstraint` allows, at each step, only what keeps the output a marked copy of the request:

- inside a pre-token of the request, its next token (the copy is of the request's own tokens);
- between two pre-tokens, the next one's first token, or, outside a value, the open marker of a key
  not used yet, or, inside a value that holds at least one pre-token, that key's close marker;
- after the last pre-token, the open value's close marker, then the `end` tokens (the separator).

So values are runs of whole pre-tokens, each key at most once, never nested or overlapping, and the
copy is always complete. Then `done` is true and the next phase (the JSON's constraint) takes over;
pocketlm.copy_search decodes the copy.

>>> c = EchoConstraint([[10], [11, 12]], {"time": (90, 91)}, end=[5])
>>> c.allowed()
[10, 90]
>>> for t in (90, 10): c.advance(t)
>>> c.allowed()
[11, 91]
>>> for t in (11, 12): c.advance(t)
>>> c.allowed(), c.max_tokens
([91], 6)
>>> for t in (91, 5): c.advance(t)
>>> c.done, c.spans
(True, {'time': (0, 2)})
"""

from __future__ import annotations

from typing import Sequence


class EchoError(ValueError):
    pass


class EchoConstraint:
    def __init__(self, pieces: Sequence[Sequence[int]], markers: dict[str, tuple[int, int]], end: Sequence[int]):
        """pieces: the token ids of each pre-token of the request, in order; markers: {key: (open id,
        close id)}; end: the ids written after the copy."""
        self.pieces = [list(p) for p in pieces]
        if not all(self.pieces):  # spans count pre-tokens: an empty one would shift them
            raise EchoError("every pre-token of the request has at least one token")
        self.markers = dict(markers)
        ids = [i for pair in self.markers.values() for i in pair]
        if len(set(ids)) != len(ids):
            raise EchoError(f"marker ids must be distinct, got {self.markers}")
        self._closes = {close: key for key, (_, close) in self.markers.items()}
        self._opens = {open_: key for key, (open_, _) in self.markers.items()}
        self.end = list(end)
        # the longest marked copy: every token, every marker, the end
        self.max_tokens = sum(map(len, self.pieces)) + 2 * len(self.markers) + len(self.end)
        self.spans: dict[str, tuple[int, int]] = {}  # key -> (first pre-token, last + 1), once closed
        self._piece = self._token = self._ended = 0
        self.used = 0  # tokens advanced
        self._open: tuple[str, int] | None = None  # (key, first pre-token) of the value being copied

    @property
    def done(self) -> bool:
        return self._ended == len(self.end) and self._piece == len(self.pieces) and self._open is None

    def allowed(self) -> list[int]:
        if self._token:  # inside a pre-token: its next token
            return [self.pieces[self._piece][self._token]]
        can_close = self._open is not None and self._piece > self._open[1]
        if self._piece == len(self.pieces):  # the whole request is written
            if self._open is not None:
                return [self.markers[self._open[0]][1]]
            if self._ended < len(self.end):
                return [self.end[self._ended]]
            raise EchoError("the marked copy is complete: nothing more to allow")
        out = [self.pieces[self._piece][0]]
        if self._open is None:
            out += [open_ for key, (open_, _) in self.markers.items() if key not in self.spans]
        elif can_close:
            out.append(self.markers[self._open[0]][1])
        return out

    def advance(self, token_id: int) -> None:
        if token_id not in self.allowed():
            raise EchoError(f"token {token_id} is not allowed here (allowed: {self.allowed()})")
        self.used += 1
        if token_id in self._opens and not self._token and self._piece < len(self.pieces) and self._open is None:
            self._open = (self._opens[token_id], self._piece)
        elif token_id in self._closes and self._open is not None and not self._token:
            key, first = self._open
            self.spans[key] = (first, self._piece)
            self._open = None
        elif self._piece == len(self.pieces):
            self._ended += 1
        else:
            self._token += 1
            if self._token == len(self.pieces[self._piece]):
                self._piece, self._token = self._piece + 1, 0

