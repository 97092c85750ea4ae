"""SqlCompleter: the sql-autocomplete task wired to any backend (native onnxruntime or the browser).

A backend provides `new_cache()` and `async forward(token_ids, cache) -> last-position logits`;
its cache handle has `length` and `truncate(n)`. The completer keeps the schema's KV cache
between calls: while the user types, only the query prefix is re-run.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from .constraints import TokenBytesIndex
from .generate import GenerateResult, generate
from .manifest import Manifest
from .sampler import SamplingOptions
from .tasks import sql
from .tokenizer import Tokenizer


class SqlCompleter:
    def __init__(self, manifest: Manifest, tokenizer: Tokenizer, backend: Any):
        manifest.require_prompt_format(sql.FORMAT, "a sql-autocomplete model")
        self.manifest, self.tokenizer, self.backend = manifest, tokenizer, backend
        self.index = TokenBytesIndex.from_tokenizer(tokenizer)
        self._cache = backend.new_cache()
        self._cached_ids: list[int] = []  # what self._cache holds, position by position

    def options(self, **overrides) -> SamplingOptions:
        """The manifest's sampling defaults, with overrides (None = keep the default)."""
        return SamplingOptions.from_dict(self.manifest.sampling, **overrides)

    async def complete(
        self,
        schema: str,
        prefix: str,
        options: SamplingOptions | None = None,
        on_token: Callable[[int, str], Any] | None = None,
        cancelled: Callable[[], bool] | None = None,
        finish_names: bool | None = None,
    ) -> GenerateResult:
        """Complete the SQL `prefix` for `schema`; result.text is what to append to the prefix.

        finish_names: finish a half-typed word with a schema name (sql.name_endings); default: the
        manifest's prompt["finish_names"].
        """
        options = options or self.options()
        if finish_names is None:
            finish_names = bool(self.manifest.prompt.get("finish_names", False))
        arch, tok = self.manifest.architecture, self.manifest.tokenizer
        prompt = sql.build_prompt(
            self.tokenizer, schema, prefix, bos_id=tok.bos_id, max_seq_len=arch.max_seq_len,
            reserve=min(options.max_new_tokens, arch.max_seq_len // 2),
        )
        ids = prompt.ids
        # The prompt is always fed as the same two chunks: the schema (minus the separator's last
        # token), then the rest. Why: the int8 variants quantize activations with one scale per
        # forward call, so logits depend on which tokens were fed together; fixed chunks make the
        # output a function of (schema, prefix) alone, whatever was typed before. The schema chunk
        # is the part reused while the user types.
        split = len(prompt.schema_ids) - 1
        reused = common_prefix(self._cached_ids, ids) >= split
        t0 = time.perf_counter()
        self._cache.truncate(split if reused else 0)
        self._cached_ids = ids[:split] if reused else []  # what the cache surely holds if a call fails
        if not reused:
            await self.backend.forward(ids[:split], self._cache)
            self._cached_ids = ids[:split]
        schema_ms = (time.perf_counter() - t0) * 1000.0
        constraint = sql.SqlNameConstraint(self.index, schema, prefix, prompt.heal, finish_names)
        result = await generate(
            self.backend.forward, self._cache, ids[split:], options, eos_id=tok.eos_id,
            decode_bytes=self.tokenizer.decode_bytes, start_pos=split, max_seq_len=arch.max_seq_len,
            constraint=constraint, skip_bytes=prompt.heal, on_token=on_token, cancelled=cancelled,
        )
        # the cache holds every token fed: the prompt, then each generated token but the last
        self._cached_ids = (ids + result.token_ids)[: self._cache.length]
        result.stats["truncated_tokens"] = prompt.truncated
        result.stats["reused_tokens"] = split if reused else 0
        result.stats["schema_ms"] = schema_ms
        return result


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix.

    >>> common_prefix([1, 2, 3], [1, 2, 4, 5])
    2
    """
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
