"""The generic "text" task: continue a text (stories, a benchmark's prompt, any model's raw continuation).

Prompt format "text-v1": `<bos> encode(text)`, and the model continues it; no task-specific
constraint, the sampling options are the usual ones (pocketlm.sampler.SamplingOptions) with the
manifest's `sampling` as defaults. One task input besides them:

- ignore_eos (default false): never stop at <eos>; its logit is pushed far below every other one
  before sampling (as Hugging Face's `min_new_tokens` does with -inf), so greedy decoding runs for
  exactly max_new_tokens (unless a stop string or the context ends it). Benchmarks use it to time
  a fixed number of tokens.

Context policy: when `<bos>` + the text + the room for the output (min(max_new_tokens,
max_seq_len // 2)) exceed max_seq_len, the text's oldest tokens are dropped (the continuation
depends most on what comes last); result.stats["truncated_tokens"] counts them.

>>> class Tok:                                   # a toy tokenizer: one token per character
...     def encode(self, text): return [ord(c) for c in text]
>>> prompt_ids(Tok(), "abcdef", bos_id=1, max_seq_len=8, reserve=4)
([1, 100, 101, 102], 3)
"""

from __future__ import annotations

from typing import Any, Callable

from ..generate import Greedy, GenerateResult, generate, uses_chunks, uses_head
from ..tokenizer import replace_lone_surrogates

FORMAT = "text-v1"
# Added to <eos>'s logit under ignore_eos: finite (the sampler's fast path stays on), yet below any real logit.
EOS_BAN = -1.0e30
# ban_token: above this share of recent rows topped by the banned token, ask for rows, not the greedy head.
# A head step whose token is banned costs a second run; a row costs its logits' copy and a scan in Python,
# about a tenth of a run at these sizes (make bench's per-token breakdown): break-even near 0.1-0.15.
ROWS_WHEN_BANNED_TOPS = 0.15


def prompt_ids(tokenizer, text: str, *, bos_id: int, max_seq_len: int, reserve: int) -> tuple[list[int], int]:
    """(`<bos> encode(text)` cut to leave `reserve` positions free, number of text tokens dropped)."""
    ids = tokenizer.encode(replace_lone_surrogates(text))
    room = max(max_seq_len - reserve - 1, 0)
    dropped = max(len(ids) - room, 0)
    return [bos_id] + ids[dropped:], dropped


def ban_token(forward, token_id: int):
    """A forward pass whose logits never let `token_id` win: its logit is set to EOS_BAN.

    With a head-aware `forward` (pocketlm.generate) it stays head-aware: a greedy token other than
    `token_id` is what the banned row's argmax would be too (banning only lowers that one logit, and
    on a tie with a lower id the head already answers the lower id); when the head picks `token_id`,
    the same tokens are run again for the row, banned, and its greedy token is answered as the head
    would (`Greedy`: ties -> lowest id, the row's sum). A graph whose head also answers the runner-up
    (GraphContract.runner_up) needs no second run: with the best token banned, the second-best is the
    banned row's argmax (both orders put the lower id first on a tie). Without it, when the banned token
    has topped many recent rows (a moving average above ROWS_WHEN_BANNED_TOPS), greedy steps ask for the
    row directly: one run a step, not two, for a model that keeps wanting to stop (a trained
    reminder-extract generating past its JSON wants <eos> at about every other step). Asked for a
    greedy chunk (`steps` > 1), it passes `ban` down, so the backend replaces the banned token by the
    runner-up inside its steps; a backend that cannot answers one step, which is then banned as above.

    >>> import asyncio
    >>> async def head(ids, cache, want="logits"): return Greedy(2, 1.5, runner_up=7)
    >>> head.head_aware = True
    >>> asyncio.run(ban_token(head, 2)([5], None, want="argmax"))
    Greedy(token=7, logits_sum=1.5, runner_up=None)
    """
    tops = 0.0  # moving average: how often the banned token topped the recent rows

    async def banned(ids, cache, want="logits", steps=1):
        nonlocal tops
        if want != "argmax":
            return _set(await forward(ids, cache), token_id, EOS_BAN)
        out = None  # one step already run, its banned token not yet replaced
        if steps > 1:  # a chunk-aware forward bans inside its steps when its graph has the runner-up
            out = await forward(ids, cache, want="argmax", steps=steps, ban=token_id)
            if isinstance(out, list):
                return out
        if tops < ROWS_WHEN_BANNED_TOPS:  # only asked when `forward` is head-aware (generate.uses_head)
            out = out if out is not None else await forward(ids, cache, want="argmax")
            if not isinstance(out, Greedy):  # a graph without the head answered with the row
                return _set(out, token_id, EOS_BAN)
            if out.token != token_id:
                tops *= 0.8
                return out
            if out.runner_up is not None:  # the banned row's argmax, from the same run
                return Greedy(out.runner_up, out.logits_sum)
            tops = 0.8 * tops + 0.2
            cache.truncate(cache.length - len(ids))  # the banned token won: the same tokens again, for the row
            row = _as_list(await forward(ids, cache))
        else:
            if out is not None:  # that one step ran already: again for the row
                cache.truncate(cache.length - len(ids))
            row = _as_list(await forward(ids, cache))
            tops = 0.8 * tops + 0.2 * (row[token_id] >= max(row))
        row[token_id] = EOS_BAN
        return Greedy(row.index(max(row)), sum(row))  # a NaN/inf makes the sum not finite: generate re-asks

    banned.head_aware = uses_head(forward)
    banned.chunked = uses_chunks(forward)
    return banned


def _as_list(row) -> list[float]:
    return row.tolist() if hasattr(row, "tolist") else list(row)


def _set(row, index: int, value: float):
    try:
        row[index] = value
    except TypeError:  # a read-only view (e.g. a memoryview over JS memory): take a copy
        row = _as_list(row)
        row[index] = value
    return row


class TextGenerator:
    """The text task wired to any backend (pocketlm.native.NativeModel or the browser's JsBackend).

    One KV cache is kept and reset per call (a prompt is run from its start every time).
    """

    def __init__(self, manifest, tokenizer, backend: Any):
        manifest.require_prompt_format(FORMAT, "a text model", default=FORMAT)
        self.manifest, self.tokenizer, self.backend = manifest, tokenizer, backend
        self._cache = backend.new_cache()

    async def generate(
        self,
        text: str,
        options,
        *,
        ignore_eos: bool = False,
        on_token: Callable[[int, str], Any] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> GenerateResult:
        """Continue `text`; result.text is the continuation (without the prompt)."""
        arch, tok = self.manifest.architecture, self.manifest.tokenizer
        ids, dropped = prompt_ids(self.tokenizer, text, bos_id=tok.bos_id, max_seq_len=arch.max_seq_len,
                                  reserve=min(options.max_new_tokens, arch.max_seq_len // 2))
        self._cache.truncate(0)
        forward = ban_token(self.backend.forward, tok.eos_id) if ignore_eos else self.backend.forward
        result = await generate(
            forward, self._cache, ids, options, eos_id=tok.eos_id, decode_bytes=self.tokenizer.continuation_decoder(ids),
            max_seq_len=arch.max_seq_len, on_token=on_token, cancelled=cancelled,
        )
        result.stats["prompt_tokens"] = len(ids)
        result.stats["truncated_tokens"] = dropped
        return result


__all__ = ["FORMAT", "TextGenerator", "prompt_ids", "ban_token", "GenerateResult"]
