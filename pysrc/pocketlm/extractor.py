"""ReminderExtractor: the reminder-extract task wired to any backend (native onnxruntime or the browser).

`extract(text)` builds the prompt, generates greedily (by default) and, unless asked not to,
constrains decoding to the response schema (pocketlm.json_constraint): every output parses and
validates, and every string value is copied from the request text.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from .constraints import TokenBytesIndex
from .generate import GenerateResult, generate
from .json_constraint import JsonConstraint
from .json_schema import SchemaError, compile_schema
from .manifest import Manifest
from .sampler import SamplingOptions
from .tasks import reminders
from .tokenizer import Tokenizer


class ReminderExtractor:
    def __init__(self, manifest: Manifest, tokenizer: Tokenizer, backend: Any):
        manifest.require_prompt_format(reminders.FORMAT, "a reminder-extract model")
        self.manifest, self.tokenizer, self.backend = manifest, tokenizer, backend
        self.index = TokenBytesIndex.from_tokenizer(tokenizer)
        self.default_schema = compile_schema(reminders.SCHEMA)
        JsonConstraint.prepare(self.index)  # the per-tokenizer tables, once, so the first request is fast
        # One KV cache for every request, reset per call. A cache per call leaked in the page: the engine's
        # caches live in JavaScript (2 MB each here) until dropped (make soak: +2 MB per extraction).
        self._cache = backend.new_cache()

    def options(self, **overrides) -> SamplingOptions:
        return SamplingOptions.from_dict(self.manifest.sampling, **overrides)

    async def extract(
        self,
        text: str,
        options: SamplingOptions | None = None,
        *,
        response_format: dict | None | str = "default",
        copy_input: bool = True,
        on_token: Callable[[int, str], Any] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> GenerateResult:
        """Generate the JSON for `text`. response_format: a JSON schema (the supported subset, see
        pocketlm.json_constraint), "default" (the task's schema) or None (no constraint at all).

        result.text is the JSON text; result.stats["truncated_tokens"] counts input tokens dropped.
        """
        options = options or self.options()
        arch, tok = self.manifest.architecture, self.manifest.tokenizer
        max_input = int(self.manifest.prompt.get("max_input_tokens", reminders.MAX_INPUT_TOKENS))
        ids, dropped = reminders.prompt_ids(self.tokenizer, text, bos_id=tok.bos_id, max_input_tokens=max_input)
        budget = min(options.max_new_tokens, arch.max_seq_len - len(ids))
        constraint = None
        if response_format is not None:
            schema = self.default_schema if response_format == "default" else compile_schema(response_format)
            # the model writes " {" after the separator; the constraint starts at "{"
            # values are copied whole words (slot values are), which also stops a weak copy mid-word
            try:
                constraint = JsonConstraint(self.index, schema, eos_id=tok.eos_id, max_tokens=budget,
                                            copy_source=text if copy_input else None, prefix=b" ", whole_words=True)
            except SchemaError as e:
                raise SchemaError(f"max_new_tokens={budget} cannot hold the shortest valid output ({e}); "
                                  "raise max_new_tokens") from None
        self._cache.truncate(0)
        result = await generate(
            self.backend.forward, self._cache, ids, options, eos_id=tok.eos_id, decode_bytes=self.tokenizer.decode_bytes,
            max_seq_len=len(ids) + budget, constraint=constraint, on_token=on_token, cancelled=cancelled,
        )
        result.text = result.text.lstrip(" ")
        result.stats["truncated_tokens"] = dropped
        return result


def parse_json(text: str) -> dict | None:
    """The object in a model output, or None if it does not parse as a JSON object."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


__all__ = ["ReminderExtractor", "SchemaError", "parse_json"]
